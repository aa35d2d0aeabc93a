"""Blocking twins of dicomslide's async classes.

Every twin holds the async object it mirrors and runs its coroutines on the one private event
loop of :mod:`dicomslide_sync._portal`, so all threads of a process share one frame service,
one cache and one request batcher per client. Properties that need no I/O are read straight
from the async object. Twins pickle by their inputs and re-open in the receiving process.
"""

from __future__ import annotations

import os
import pickle
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
from pydicom import Dataset

import dicomslide
from dicomslide.enums import ChannelTypes
from dicomslide.frames import CacheStats
from dicomslide.pyramid import Pyramid
from dicomslide.sources.protocol import Source
from dicomslide_sync import _portal

__all__ = [
    "DICOMfileClient",
    "DICOMwebClient",
    "get_default_timeout",
    "set_default_timeout",
    "Slide",
    "TiledImage",
    "TotalPixelMatrix",
    "TotalPixelMatrixSampler",
    "find_slides",
]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_default_timeout: float | None = None


def set_default_timeout(seconds: float | None) -> None:
    """Set how long any blocking call may take before it is cancelled.

    Parameters
    ----------
    seconds: float | None
        Time limit in seconds for every call of this package; None (the default) waits for as
        long as the call takes. A call that runs out of time is cancelled and raises
        :class:`dicomslide_sync.SyncTimeoutError` (a ``TimeoutError``).
    """
    global _default_timeout
    if seconds is not None and not seconds > 0:
        raise dicomslide.RegionError(f"Timeout must be positive or None, got {seconds!r}.")
    _default_timeout = seconds


def get_default_timeout() -> float | None:
    """The time limit of blocking calls set by :func:`set_default_timeout`.

    Returns
    -------
    float | None
        Seconds, or None for no limit
    """
    return _default_timeout


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on the private loop with the default time limit."""
    return _portal.run(coro, timeout=_default_timeout)


def _twin(original: Any) -> Callable[[F], F]:
    """Give a blocking twin the documentation of the async original."""

    def decorate(fn: F) -> F:
        doc = getattr(original, "__doc__", None)
        if doc:
            fn.__doc__ = doc
        return fn

    return decorate


def _unwrap(client: Any) -> Any:
    return getattr(client, "__dicomslide_source__", None) or client


class _SourceTwin:
    """Blocking methods shared by the client twins."""

    __dicomslide_source__: Any

    def _source(self) -> Source:
        source: Source = self.__dicomslide_source__
        return source

    def search_for_studies(self, search_filters: dict[str, Any] | None = None) -> list[Dataset]:
        """Search for studies (blocking twin of the async method).

        Parameters
        ----------
        search_filters: dict[str, Any] | None, optional
            Attribute keywords mapped to values that must match

        Returns
        -------
        list[pydicom.Dataset]
            Matching studies
        """
        return run(self.__dicomslide_source__.search_for_studies(search_filters))

    def search_for_series(
        self,
        study_instance_uid: str | None = None,
        search_filters: dict[str, Any] | None = None,
    ) -> list[Dataset]:
        """Search for series (blocking twin of the async method).

        Parameters
        ----------
        study_instance_uid: str | None, optional
            Study Instance UID
        search_filters: dict[str, Any] | None, optional
            Attribute keywords mapped to values that must match

        Returns
        -------
        list[pydicom.Dataset]
            Matching series
        """
        return run(
            self.__dicomslide_source__.search_for_series(study_instance_uid, search_filters)
        )

    def search_for_instances(
        self,
        study_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
        search_filters: dict[str, Any] | None = None,
    ) -> list[Dataset]:
        """Search for instances (blocking twin of the async method).

        Parameters
        ----------
        study_instance_uid: str | None, optional
            Study Instance UID
        series_instance_uid: str | None, optional
            Series Instance UID
        search_filters: dict[str, Any] | None, optional
            Attribute keywords mapped to values that must match

        Returns
        -------
        list[pydicom.Dataset]
            Matching instances
        """
        return run(
            self.__dicomslide_source__.search_for_instances(
                study_instance_uid, series_instance_uid, search_filters
            )
        )

    def retrieve_series_metadata(
        self, study_instance_uid: str, series_instance_uid: str
    ) -> list[Dataset]:
        """Metadata of every instance of a series (blocking).

        Parameters
        ----------
        study_instance_uid: str
            Study Instance UID
        series_instance_uid: str
            Series Instance UID

        Returns
        -------
        list[pydicom.Dataset]
            Metadata without Pixel Data
        """
        return run(
            self.__dicomslide_source__.retrieve_series_metadata(
                study_instance_uid, series_instance_uid
            )
        )

    def retrieve_instance_metadata(
        self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
    ) -> Dataset:
        """Metadata of one instance (blocking).

        Parameters
        ----------
        study_instance_uid: str
            Study Instance UID
        series_instance_uid: str
            Series Instance UID
        sop_instance_uid: str
            SOP Instance UID

        Returns
        -------
        pydicom.Dataset
            Metadata without Pixel Data
        """
        return run(
            self._source().retrieve_instance_metadata(
                study_instance_uid, series_instance_uid, sop_instance_uid
            )
        )

    def close(self) -> None:
        """Release file handles and caches."""
        run(self.__dicomslide_source__.aclose())

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DICOMfileClient(_SourceTwin):
    """Blocking client for a folder of DICOM Part 10 files (twin of the async client).

    Parameters
    ----------
    url: str | os.PathLike[str]
        Folder path or ``file://`` URL
    index_dir: str | os.PathLike[str] | None, optional
        Where the folder index is kept (see :class:`dicomslide.DICOMfileClient`)
    recursive: bool, optional
        Whether sub-folders are searched
    """

    def __init__(
        self,
        url: str | os.PathLike[str],
        *,
        index_dir: str | os.PathLike[str] | None = None,
        recursive: bool = True,
    ) -> None:
        self._args = (url, index_dir, recursive)
        self.__dicomslide_source__ = dicomslide.DICOMfileClient(
            url, index_dir=index_dir, recursive=recursive
        )

    def __reduce__(self) -> tuple[Any, ...]:
        url, index_dir, recursive = self._args
        return (_reopen_file_client, (url, index_dir, recursive))

    @property
    def base_dir(self) -> Any:
        """Folder that is served.

        Returns
        -------
        pathlib.Path
            Folder
        """
        return self.__dicomslide_source__.base_dir


class DICOMwebClient(_SourceTwin):
    """Blocking DICOMweb client (twin of :class:`dicomslide.DICOMwebClient`).

    Every keyword of the async client is accepted (headers, auth, transport, timeouts,
    retries, request sizes, coalescing window, cache budget). Frame requests of all threads
    are merged on the private loop; the default ``coalesce_window`` of a few milliseconds is
    what lets requests from many threads meet.

    Parameters
    ----------
    url: str
        Base URL of the DICOMweb service
    **kwargs: Any
        Keywords of :class:`dicomslide.DICOMwebClient`
    """

    def __init__(self, url: str, **kwargs: Any) -> None:
        self._args = (url, kwargs)
        source = dicomslide.DICOMwebClient(url, **kwargs)
        self.__dicomslide_source__ = source
        # Connections live on the private loop; close them there when this twin is dropped.
        weakref.finalize(self, _portal.close_soon, source.aclose)

    def __reduce__(self) -> tuple[Any, ...]:
        url, kwargs = self._args
        return (_reopen_web_client, (url, kwargs))

    @property
    def url(self) -> str:
        """Base URL of the service.

        Returns
        -------
        str
            URL
        """
        return str(self.__dicomslide_source__.url)

    def retrieve_bulkdata(self, url: str) -> bytes:
        """Bulk data behind a BulkDataURI (blocking).

        Parameters
        ----------
        url: str
            The BulkDataURI

        Returns
        -------
        bytes
            The bulk data
        """
        return run(self._source().retrieve_bulkdata(url))


# Clients re-opened from pickles, per process and inputs: a Dask worker unpickles the same
# slide for every task and every compute, and one client per inputs keeps one frame cache
# (and one connection pool) warm across them instead of starting cold each time.
_REOPENED: OrderedDict[tuple[int, bytes], Any] = OrderedDict()
_REOPENED_MAX = 8
_REOPENED_LOCK = threading.Lock()

_C = TypeVar("_C")


def _reopened(inputs: tuple[Any, ...], open_client: Callable[[], _C]) -> _C:
    try:
        key = (os.getpid(), pickle.dumps(inputs))
    except Exception:  # inputs that do not pickle twice: no sharing, just a new client
        return open_client()
    with _REOPENED_LOCK:
        client = _REOPENED.get(key)
        source = getattr(client, "__dicomslide_source__", None)
        if client is not None and not getattr(source, "_closed", False):
            _REOPENED.move_to_end(key)
            return client  # type: ignore[no-any-return]
        client = open_client()
        _REOPENED[key] = client
        while len(_REOPENED) > _REOPENED_MAX:
            _REOPENED.popitem(last=False)  # not closed: tasks may still use it
        return client


def _reopen_web_client(url: str, kwargs: dict[str, Any]) -> DICOMwebClient:
    return _reopened(("web", url, kwargs), lambda: DICOMwebClient(url, **kwargs))


def _reopen_file_client(url: Any, index_dir: Any, recursive: bool) -> DICOMfileClient:
    return _reopened(
        ("file", url, index_dir, recursive),
        lambda: DICOMfileClient(url, index_dir=index_dir, recursive=recursive),
    )


class TotalPixelMatrix:
    """Blocking twin of :class:`dicomslide.TotalPixelMatrix`: ``matrix[...]`` is an array.

    Parameters
    ----------
    client: Any
        A dicomslide client or a ``dicomweb_client.DICOMClient``
    image_metadata: pydicom.Dataset
        Metadata of a tiled DICOM image
    channel_index: int, optional
        Zero-based channel index
    focal_plane_index: int, optional
        Zero-based focal plane index
    max_frame_cache_size: int, optional
        Accepted for compatibility (see :class:`dicomslide.TotalPixelMatrix`)
    correct_color: bool, optional
        Whether colour images are transformed from their ICC profile to sRGB
    """

    def __init__(
        self,
        client: Any,
        image_metadata: Dataset,
        channel_index: int = 0,
        focal_plane_index: int = 0,
        max_frame_cache_size: int = 9,
        correct_color: bool = True,
    ) -> None:
        self._async = dicomslide.TotalPixelMatrix(
            _unwrap(client),
            image_metadata,
            channel_index,
            focal_plane_index,
            max_frame_cache_size,
            correct_color,
        )
        self._reopen: tuple[Any, ...] = (
            TotalPixelMatrix,
            (client, image_metadata, channel_index, focal_plane_index, 9, correct_color),
        )

    @classmethod
    def _wrap(
        cls, matrix: dicomslide.TotalPixelMatrix, reopen: tuple[Any, ...]
    ) -> TotalPixelMatrix:
        obj = cls.__new__(cls)
        obj._async = matrix
        obj._reopen = reopen
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return self._reopen

    @property
    def dtype(self) -> np.dtype[Any]:
        """Data type (see :class:`dicomslide.TotalPixelMatrix`)."""
        return self._async.dtype

    @property
    def ndim(self) -> int:
        """Number of dimensions (3)."""
        return self._async.ndim

    @property
    def shape(self) -> tuple[int, int, int]:
        """Rows, columns and samples per pixel."""
        return self._async.shape

    @property
    def size(self) -> int:
        """Number of values."""
        return self._async.size

    @property
    def num_tiles(self) -> int:
        """Number of tiles."""
        return self._async.num_tiles

    @property
    def tile_shape(self) -> tuple[int, int, int]:
        """Rows, columns and samples per pixel of a tile."""
        return self._async.tile_shape

    @property
    def tile_size(self) -> int:
        """Number of values of a tile."""
        return self._async.tile_size

    @property
    def tile_grid_shape(self) -> tuple[int, int]:
        """Number of tile rows and columns."""
        return self._async.tile_grid_shape

    @property
    def tile_grid_positions(self) -> np.ndarray:
        """Grid position of every tile."""
        return self._async.tile_grid_positions

    @property
    def tile_positions(self) -> np.ndarray:
        """Pixel offset of every tile."""
        return self._async.tile_positions

    def __len__(self) -> int:
        return len(self._async)

    @_twin(dicomslide.TotalPixelMatrix.get_tile_grid_position)
    def get_tile_grid_position(self, index: int) -> tuple[int, int]:
        """Position of a tile in the tile grid."""
        return self._async.get_tile_grid_position(index)

    @_twin(dicomslide.TotalPixelMatrix.get_tile_position)
    def get_tile_position(self, index: int) -> tuple[int, int]:
        """Pixel offset of a tile."""
        return self._async.get_tile_position(index)

    @_twin(dicomslide.TotalPixelMatrix.get_tile_bounding_box)
    def get_tile_bounding_box(self, index: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """Bounding box of a tile."""
        return self._async.get_tile_bounding_box(index)

    @_twin(dicomslide.TotalPixelMatrix.get_tile_index)
    def get_tile_index(
        self,
        position: tuple[int, int] | None = None,
        frame_number: int | None = None,
    ) -> int:
        """Index of a tile."""
        return self._async.get_tile_index(position, frame_number)

    @_twin(dicomslide.TotalPixelMatrix.read_region)
    def read_region(self, offset: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        """Read a region (pixels outside are filled)."""
        return run(self._async.read_region(offset, size))

    @_twin(dicomslide.TotalPixelMatrix.read_tiles)
    def read_tiles(self, indices: Sequence[int]) -> np.ndarray:
        """Read whole tiles."""
        return run(self._async.read_tiles(indices))

    def __getitem__(self, key: Any) -> np.ndarray:
        """Index like a NumPy array (see :class:`dicomslide.TotalPixelMatrix`).

        Parameters
        ----------
        key: Any
            Pixel region (2- or 3-tuple) or tile index (int, slice, list)

        Returns
        -------
        numpy.ndarray
            Pixels
        """
        return run(self._async[key])


def _reopen_matrix(image: TiledImage, channel_index: int, focal_plane_index: int) -> Any:
    return image.get_total_pixel_matrix(channel_index, focal_plane_index)


def _reopen_label_map(image: TiledImage, focal_plane_index: int) -> Any:
    return image.get_label_map(focal_plane_index)


class TiledImage:
    """Blocking twin of :class:`dicomslide.TiledImage`.

    Parameters
    ----------
    client: Any
        A dicomslide client or a ``dicomweb_client.DICOMClient``
    image_metadata: pydicom.Dataset
        Metadata of a tiled DICOM image
    max_frame_cache_size: int, optional
        Accepted for compatibility (see :class:`dicomslide.TiledImage`)
    correct_color: bool, optional
        Whether colour images are transformed from their ICC profile to sRGB
    concatenation_parts: Sequence[pydicom.Dataset] | None, optional
        Metadata of every part of a concatenation
    """

    def __init__(
        self,
        client: Any,
        image_metadata: Dataset,
        max_frame_cache_size: int = 6,
        correct_color: bool = True,
        concatenation_parts: Sequence[Dataset] | None = None,
    ) -> None:
        self._async = dicomslide.TiledImage(
            _unwrap(client),
            image_metadata,
            max_frame_cache_size,
            correct_color,
            concatenation_parts,
        )
        self._client = client

    @classmethod
    def _wrap(cls, image: dicomslide.TiledImage, client: Any) -> TiledImage:
        obj = cls.__new__(cls)
        obj._async = image
        obj._client = client
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        state = self._async.reader
        return (
            TiledImage,
            (self._client, state.metadata, 6, state.correct_color, state.parts_metadata),
        )

    @property
    def channel_identifiers(self) -> tuple[str, ...]:
        """Identifier of each channel."""
        return self._async.channel_identifiers

    @property
    def focal_plane_offsets(self) -> tuple[float, ...]:
        """Z offset (micrometres) of each focal plane."""
        return self._async.focal_plane_offsets

    @property
    def frame_index(self) -> Any:
        """Where each tile of each channel and focal plane is stored."""
        return self._async.frame_index

    @property
    def geometry(self) -> Any:
        """Mapping between pixel indices and slide coordinates."""
        return self._async.geometry

    @property
    def pixel_spacing(self) -> tuple[float, float]:
        """Spacing between rows and between columns (mm)."""
        return self._async.pixel_spacing

    @property
    def sop_instance_uids(self) -> tuple[str, ...]:
        """SOP Instance UIDs of all parts."""
        return self._async.sop_instance_uids

    @_twin(dicomslide.TiledImage.get_channel_identifier)
    def get_channel_identifier(self, channel_index: int) -> str:
        """Identifier of a channel."""
        return self._async.get_channel_identifier(channel_index)

    @_twin(dicomslide.TiledImage.get_channel_index)
    def get_channel_index(self, channel_identifier: str) -> int:
        """Index of a channel."""
        return self._async.get_channel_index(channel_identifier)

    @_twin(dicomslide.TiledImage.get_focal_plane_offset)
    def get_focal_plane_offset(self, focal_plane_index: int) -> float:
        """Z offset of a focal plane (um)."""
        return self._async.get_focal_plane_offset(focal_plane_index)

    @_twin(dicomslide.TiledImage.get_focal_plane_index)
    def get_focal_plane_index(self, focal_plane_offset: float) -> int:
        """Index of the focal plane at a Z offset."""
        return self._async.get_focal_plane_index(focal_plane_offset)

    @_twin(dicomslide.TiledImage.get_slide_offset)
    def get_slide_offset(self, pixel_indices: tuple[int, int]) -> tuple[float, float]:
        """Slide coordinates of a pixel."""
        return self._async.get_slide_offset(pixel_indices)

    @_twin(dicomslide.TiledImage.get_pixel_indices)
    def get_pixel_indices(self, offset: tuple[float, float]) -> tuple[int, int]:
        """Pixel nearest to a slide position."""
        return self._async.get_pixel_indices(offset)

    @_twin(dicomslide.TiledImage.map_pixel_indices_to_slide_coordinates)
    def map_pixel_indices_to_slide_coordinates(self, pixel_indices: np.ndarray) -> np.ndarray:
        """Map pixel indices to slide coordinates."""
        return self._async.map_pixel_indices_to_slide_coordinates(pixel_indices)

    @_twin(dicomslide.TiledImage.map_slide_coordinates_to_pixel_indices)
    def map_slide_coordinates_to_pixel_indices(self, slide_coordinates: np.ndarray) -> np.ndarray:
        """Map slide coordinates to pixel indices."""
        return self._async.map_slide_coordinates_to_pixel_indices(slide_coordinates)

    @_twin(dicomslide.TiledImage.get_rotation)
    def get_rotation(self) -> float:
        """Angle that aligns the pixel matrix with the slide axes."""
        return self._async.get_rotation()

    @_twin(dicomslide.TiledImage.get_references)
    def get_references(self, sop_class_uid: str | None = None) -> list[tuple[str, str, str]]:
        """Instances this image references."""
        return self._async.get_references(sop_class_uid)

    @property
    def metadata(self) -> Dataset:
        """Image metadata."""
        return self._async.metadata

    @property
    def size(self) -> tuple[int, int]:
        """Total pixel matrix rows and columns."""
        return self._async.size

    @property
    def num_channels(self) -> int:
        """Number of channels."""
        return self._async.num_channels

    @property
    def num_focal_planes(self) -> int:
        """Number of focal planes."""
        return self._async.num_focal_planes

    @property
    def channel_type(self) -> ChannelTypes:
        """Type of the channels."""
        return self._async.channel_type

    @property
    def frame_of_reference_uid(self) -> str:
        """Frame of Reference UID."""
        return self._async.frame_of_reference_uid

    @property
    def physical_offset(self) -> tuple[float, float]:
        """Smallest slide X and Y covered (mm)."""
        return self._async.physical_offset

    @property
    def physical_size(self) -> tuple[float, float]:
        """Extent along slide X and Y (mm)."""
        return self._async.physical_size

    @_twin(dicomslide.TiledImage.get_total_pixel_matrix)
    def get_total_pixel_matrix(
        self, channel_index: int = 0, focal_plane_index: int = 0
    ) -> TotalPixelMatrix:
        """Total pixel matrix of a channel and focal plane."""
        return TotalPixelMatrix._wrap(
            self._async.get_total_pixel_matrix(channel_index, focal_plane_index),
            (_reopen_matrix, (self, channel_index, focal_plane_index)),
        )

    @property
    def is_label_map(self) -> bool:
        """Whether the image is a label-map Segmentation."""
        return self._async.is_label_map

    @_twin(dicomslide.TiledImage.get_label_map)
    def get_label_map(self, focal_plane_index: int = 0) -> TotalPixelMatrix:
        """Total pixel matrix of the label map itself."""
        return TotalPixelMatrix._wrap(
            self._async.get_label_map(focal_plane_index),
            (_reopen_label_map, (self, focal_plane_index)),
        )

    @_twin(dicomslide.TiledImage.get_image_region)
    def get_image_region(
        self,
        offset: tuple[int, int],
        size: tuple[int, int],
        channel_index: int = 0,
        focal_plane_index: int = 0,
    ) -> np.ndarray:
        """Read a region of the total pixel matrix."""
        return run(self._async.get_image_region(offset, size, channel_index, focal_plane_index))

    @_twin(dicomslide.TiledImage.get_slide_region)
    def get_slide_region(
        self,
        offset: tuple[float, float],
        size: tuple[float, float],
        channel_index: int = 0,
        focal_plane_index: int = 0,
    ) -> np.ndarray:
        """Read a region in slide coordinates."""
        return run(self._async.get_slide_region(offset, size, channel_index, focal_plane_index))


class Slide:
    """Blocking twin of :class:`dicomslide.Slide`.

    Parameters
    ----------
    client: Any
        A dicomslide client or a ``dicomweb_client.DICOMClient``
    image_metadata: Sequence[pydicom.Dataset]
        Metadata of the images of the slide
    max_frame_cache_size: int, optional
        Accepted for compatibility (see :class:`dicomslide.Slide`)
    pyramid_tolerance: float, optional
        Largest tolerated distance (mm) between image centres of different levels
    correct_color: bool, optional
        Whether colour images are transformed from their ICC profile to sRGB
    """

    def __init__(
        self,
        client: Any,
        image_metadata: Sequence[Dataset],
        max_frame_cache_size: int = 6,
        pyramid_tolerance: float = 0.1,
        correct_color: bool = True,
    ) -> None:
        self._client = client
        self._async = dicomslide.Slide(
            _unwrap(client), image_metadata, max_frame_cache_size, pyramid_tolerance, correct_color
        )
        self._args = (
            self._async.image_metadata,
            max_frame_cache_size,
            pyramid_tolerance,
            correct_color,
        )

    @classmethod
    def _wrap(cls, client: Any, slide: dicomslide.Slide, args: tuple[Any, ...]) -> Slide:
        obj = cls.__new__(cls)
        obj._client = client
        obj._args = args
        obj._async = slide
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (Slide, (self._client, *self._args))

    @classmethod
    def from_async(cls, slide: dicomslide.Slide) -> Slide:
        """The blocking twin of an async slide, sharing it (and its frame cache).

        Parameters
        ----------
        slide: dicomslide.Slide
            Async slide; the twin pickles as its client and its own settings, so it re-opens
            in another process only if that client pickles

        Returns
        -------
        dicomslide_sync.Slide
            Twin
        """
        return cls._wrap(
            slide.client,
            slide,
            (
                slide.image_metadata,
                slide.max_frame_cache_size,
                slide.pyramid_tolerance,
                slide.correct_color,
            ),
        )

    @property
    def max_frame_cache_size(self) -> int:
        """The ``max_frame_cache_size`` the slide was opened with."""
        return self._async.max_frame_cache_size

    @property
    def pyramid_tolerance(self) -> float:
        """Largest tolerated distance (mm) between image centres of different levels."""
        return self._async.pyramid_tolerance

    @property
    def async_slide(self) -> dicomslide.Slide:
        """The async slide this twin runs.

        Returns
        -------
        dicomslide.Slide
            Async slide
        """
        return self._async

    @property
    def client(self) -> Any:
        """The client the slide reads from."""
        return self._client

    @property
    def image_metadata(self) -> list[Dataset]:
        """Metadata of every image the slide was built from."""
        return self._async.image_metadata

    @property
    def correct_color(self) -> bool:
        """Whether colour images are transformed from their ICC profile to sRGB."""
        return self._async.correct_color

    @property
    def cache_stats(self) -> CacheStats:
        """Statistics of the client's frame cache and requests."""
        return self._async.cache_stats

    @property
    def pyramid(self) -> Pyramid:
        """Levels of the slide."""
        return self._async.pyramid

    @property
    def frame_of_reference_uid(self) -> str:
        """Frame of Reference UID."""
        return self._async.frame_of_reference_uid

    @property
    def container_id(self) -> str:
        """Container Identifier."""
        return self._async.container_id

    @property
    def num_channels(self) -> int:
        """Number of channels."""
        return self._async.num_channels

    @property
    def num_focal_planes(self) -> int:
        """Number of focal planes."""
        return self._async.num_focal_planes

    @property
    def num_levels(self) -> int:
        """Number of pyramid levels."""
        return self._async.num_levels

    @property
    def total_pixel_matrix_dimensions(self) -> tuple[tuple[int, int], ...]:
        """Total pixel matrix (rows, columns) per level."""
        return self._async.total_pixel_matrix_dimensions

    @property
    def downsampling_factors(self) -> tuple[float, ...]:
        """Downsampling factor per level."""
        return self._async.downsampling_factors

    @property
    def pixel_spacings(self) -> tuple[tuple[float, float], ...]:
        """Pixel spacing (mm) per level."""
        return self._async.pixel_spacings

    @property
    def size(self) -> tuple[int, int]:
        """Base level rows and columns."""
        return self._async.size

    @property
    def physical_offset(self) -> tuple[float, float]:
        """Smallest slide X and Y covered (mm)."""
        return self._async.physical_offset

    @property
    def physical_size(self) -> tuple[float, float]:
        """Largest extent along slide X and Y (mm)."""
        return self._async.physical_size

    @property
    def label_images(self) -> tuple[TiledImage, ...]:
        """LABEL images."""
        return tuple(TiledImage._wrap(im, self._client) for im in self._async.label_images)

    @property
    def overview_images(self) -> tuple[TiledImage, ...]:
        """OVERVIEW images."""
        return tuple(TiledImage._wrap(im, self._client) for im in self._async.overview_images)

    @property
    def thumbnail_images(self) -> tuple[TiledImage, ...]:
        """THUMBNAIL images."""
        return tuple(TiledImage._wrap(im, self._client) for im in self._async.thumbnail_images)

    @_twin(dicomslide.Slide.get_channel_type)
    def get_channel_type(self, channel_index: int) -> ChannelTypes:
        """Type of a channel."""
        return self._async.get_channel_type(channel_index)

    @_twin(dicomslide.Slide.get_channel_identifier)
    def get_channel_identifier(self, channel_index: int) -> str:
        """Identifier of a channel."""
        return self._async.get_channel_identifier(channel_index)

    @_twin(dicomslide.Slide.get_channel_index)
    def get_channel_index(
        self,
        channel_identifier: str,
        channel_type: str | ChannelTypes = ChannelTypes.OPTICAL_PATH,
    ) -> int:
        """Index of a channel."""
        return self._async.get_channel_index(channel_identifier, channel_type)

    @_twin(dicomslide.Slide.get_focal_plane_offset)
    def get_focal_plane_offset(self, focal_plane_index: int) -> float:
        """Z offset of a focal plane."""
        return self._async.get_focal_plane_offset(focal_plane_index)

    @_twin(dicomslide.Slide.get_focal_plane_index)
    def get_focal_plane_index(self, focal_plane_offset: float) -> int:
        """Index of a focal plane."""
        return self._async.get_focal_plane_index(focal_plane_offset)

    @_twin(dicomslide.Slide.find_optical_paths)
    def find_optical_paths(
        self,
        identifier: str | None = None,
        description: str | None = None,
        illumination_wavelength: float | None = None,
        specimen_stain: Any | None = None,
    ) -> tuple[int, ...]:
        """Channels that are matching optical paths."""
        return self._async.find_optical_paths(
            identifier, description, illumination_wavelength, specimen_stain
        )

    @_twin(dicomslide.Slide.find_segments)
    def find_segments(
        self,
        number: int | None = None,
        label: str | None = None,
        property_category: Any | None = None,
        property_type: Any | None = None,
    ) -> tuple[int, ...]:
        """Channels that are matching segments."""
        return self._async.find_segments(number, label, property_category, property_type)

    @_twin(dicomslide.Slide.get_volume_images)
    def get_volume_images(
        self, channel_index: int = 0, focal_plane_index: int = 0
    ) -> tuple[TiledImage, ...]:
        """VOLUME or THUMBNAIL images of a channel and focal plane."""
        return tuple(
            TiledImage._wrap(im, self._client)
            for im in self._async.get_volume_images(channel_index, focal_plane_index)
        )

    @_twin(dicomslide.Slide.get_image_region)
    def get_image_region(
        self,
        offset: tuple[int, int] | None = None,
        level: int = 0,
        size: tuple[int, int] | None = None,
        channel_index: int = 0,
        focal_plane_index: int = 0,
        *,
        pixel_indices: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Read a region of the image at a level."""
        return run(
            self._async.get_image_region(
                offset,
                level,
                size,
                channel_index,
                focal_plane_index,
                pixel_indices=pixel_indices,
            )
        )

    @_twin(dicomslide.Slide.get_label_map_region)
    def get_label_map_region(
        self,
        offset: tuple[int, int],
        level: int,
        size: tuple[int, int],
        channel_index: int,
        focal_plane_index: int = 0,
    ) -> np.ndarray:
        """Read a region of the label map that holds a segment."""
        return run(
            self._async.get_label_map_region(offset, level, size, channel_index, focal_plane_index)
        )

    @_twin(dicomslide.Slide.get_slide_region)
    def get_slide_region(
        self,
        offset: tuple[float, float],
        level: int,
        size: tuple[float, float],
        channel_index: int = 0,
        focal_plane_index: int = 0,
    ) -> np.ndarray:
        """Read a region in slide coordinates."""
        return run(
            self._async.get_slide_region(offset, level, size, channel_index, focal_plane_index)
        )

    @_twin(dicomslide.Slide.get_slide_region_for_annotation)
    def get_slide_region_for_annotation(
        self,
        annotation: Any,
        level: int,
        channel_index: int = 0,
        padding: float | tuple[float, float] | tuple[float, float, float, float] = 0.0,
    ) -> np.ndarray:
        """Read the bounding box of a graphic annotation."""
        return run(
            self._async.get_slide_region_for_annotation(annotation, level, channel_index, padding)
        )

    @_twin(dicomslide.Slide.get_pixel_indices)
    def get_pixel_indices(
        self,
        offset: tuple[float, float],
        level: int,
        channel_index: int = 0,
        focal_plane_index: int = 0,
    ) -> tuple[int, int]:
        """Pixel nearest to a slide position."""
        return self._async.get_pixel_indices(offset, level, channel_index, focal_plane_index)

    @_twin(dicomslide.Slide.get_slide_offset)
    def get_slide_offset(
        self,
        pixel_indices: tuple[int, int],
        level: int,
        channel_index: int = 0,
        focal_plane_index: int = 0,
    ) -> tuple[float, float]:
        """Slide position of a pixel."""
        return self._async.get_slide_offset(pixel_indices, level, channel_index, focal_plane_index)

    @_twin(dicomslide.Slide.map_pixel_indices_to_slide_coordinates)
    def map_pixel_indices_to_slide_coordinates(
        self,
        pixel_indices: np.ndarray,
        level: int,
        channel_index: int = 0,
        focal_plane_index: int = 0,
    ) -> np.ndarray:
        """Map pixel indices to slide coordinates."""
        return self._async.map_pixel_indices_to_slide_coordinates(
            pixel_indices, level, channel_index, focal_plane_index
        )

    @_twin(dicomslide.Slide.map_slide_coordinates_to_pixel_indices)
    def map_slide_coordinates_to_pixel_indices(
        self,
        slide_coordinates: np.ndarray,
        level: int,
        channel_index: int = 0,
        focal_plane_index: int = 0,
    ) -> np.ndarray:
        """Map slide coordinates to pixel indices."""
        return self._async.map_slide_coordinates_to_pixel_indices(
            slide_coordinates, level, channel_index, focal_plane_index
        )


class TotalPixelMatrixSampler:
    """Blocking twin of :class:`dicomslide.TotalPixelMatrixSampler`.

    Parameters
    ----------
    matrix: dicomslide_sync.TotalPixelMatrix
        Total pixel matrix
    region_dimensions: tuple[int, int]
        (rows, columns) of each region
    bounding_box: tuple[tuple[int, int], tuple[int, int]] | None, optional
        Area to sample
    tile_grid_positions: Sequence[tuple[int, int]] | numpy.ndarray | None, optional
        Tiles whose regions are sampled
    padding: int | tuple[int, int] | tuple[int, int, int, int], optional
        Padding of each region
    """

    def __init__(
        self,
        matrix: TotalPixelMatrix,
        region_dimensions: tuple[int, int],
        bounding_box: tuple[tuple[int, int], tuple[int, int]] | None = None,
        tile_grid_positions: Sequence[tuple[int, int]] | np.ndarray | None = None,
        padding: int | tuple[int, int] | tuple[int, int, int, int] = 0,
    ) -> None:
        self._matrix = matrix
        self._async = dicomslide.TotalPixelMatrixSampler(
            matrix._async, region_dimensions, bounding_box, tile_grid_positions, padding
        )

    @property
    def matrix(self) -> TotalPixelMatrix:
        """Total pixel matrix."""
        return self._matrix

    @property
    def region_shape(self) -> tuple[int, int, int]:
        """Shape of a region."""
        return self._async.region_shape

    @property
    def padded_region_shape(self) -> tuple[int, int, int]:
        """Shape of a padded region."""
        return self._async.padded_region_shape

    @property
    def padding(self) -> tuple[int, int, int, int]:
        """Padding (left, top, right, bottom)."""
        return self._async.padding

    def __len__(self) -> int:
        return len(self._async)

    @_twin(dicomslide.TotalPixelMatrixSampler.get_region_grid_position)
    def get_region_grid_position(self, index: int) -> tuple[int, int]:
        """Grid position of a sampled region."""
        return self._async.get_region_grid_position(index)

    @_twin(dicomslide.TotalPixelMatrixSampler.get_region_bounding_box)
    def get_region_bounding_box(self, index: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """Padded bounding box of a sampled region."""
        return self._async.get_region_bounding_box(index)

    def __getitem__(self, index: int) -> np.ndarray:
        """The padded region at an index.

        Parameters
        ----------
        index: int
            Zero-based region index

        Returns
        -------
        numpy.ndarray
            Pixels
        """
        return run(self._async.get(index))

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]


def find_slides(
    client: Any,
    study_instance_uid: str | None = None,
    patient_id: str | None = None,
    study_id: str | None = None,
    container_id: str | None = None,
    max_frame_cache_size: int = 6,
    pyramid_tolerance: float = 0.1,
    fail_on_error: bool = True,
    include_derived: bool = True,
    specimen_stains: Sequence[Any] | None = None,
    optical_path_ids: Sequence[str] | None = None,
    *,
    correct_color: bool = True,
) -> list[Slide]:
    """Find slides (blocking twin of :func:`dicomslide.find_slides`).

    Parameters
    ----------
    client: Any
        A dicomslide(_sync) client or a ``dicomweb_client.DICOMClient``
    study_instance_uid: str | None, optional
        Study Instance UID
    patient_id: str | None, optional
        Patient ID
    study_id: str | None, optional
        Study ID
    container_id: str | None, optional
        Container Identifier of the slide
    max_frame_cache_size: int, optional
        Accepted for compatibility with dicomslide 0.7
    pyramid_tolerance: float, optional
        Largest tolerated distance (mm) between image centres of different levels
    fail_on_error: bool, optional
        Whether an error reading one series or building one slide is raised; if False it is
        skipped with a warning. A LABEL or OVERVIEW without VOLUME images beside it is skipped
        with a warning either way
    include_derived: bool, optional
        Whether Segmentations and Parametric Maps become channels
    specimen_stains: Sequence[pydicom.sr.coding.Code | highdicom.sr.CodedConcept] | None
        Only images whose specimen description lists one of these stains
    optical_path_ids: Sequence[str] | None, optional
        Only images with one of these optical path identifiers
    correct_color: bool, optional
        Whether colour images are transformed from their ICC profile to sRGB

    Returns
    -------
    list[dicomslide_sync.Slide]
        Slides
    """
    slides = run(
        dicomslide.find_slides(
            _unwrap(client),
            study_instance_uid,
            patient_id,
            study_id,
            container_id,
            max_frame_cache_size,
            pyramid_tolerance,
            fail_on_error,
            include_derived,
            specimen_stains,
            optical_path_ids,
            correct_color=correct_color,
        )
    )
    return [
        Slide._wrap(
            client,
            s,
            (
                s.image_metadata,
                max_frame_cache_size,
                pyramid_tolerance,
                correct_color,
            ),
        )
        for s in slides
    ]

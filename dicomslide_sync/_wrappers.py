"""Blocking twins of dicomslide's async classes.

Every twin holds the async object it mirrors and runs its coroutines on the one private event
loop of :mod:`dicomslide_sync._portal`, so all threads of a process share one frame service,
one cache and one request batcher per client. Members are derived from the async class by the
helpers of :mod:`dicomslide_sync._derive` (signature and docstring included); what is written
out here is what differs: constructors, pickling, and members whose result is itself a twin.
Twins pickle by their inputs and re-open in the receiving process.
"""

from __future__ import annotations

import os
import pickle
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx
import numpy as np
from pydicom import Dataset

import dicomslide
from dicomslide._docs import borrowed_doc
from dicomslide.enums import ChannelTypes
from dicomslide.frames import CacheStats
from dicomslide.pyramid import Pyramid
from dicomslide.sources.web import (
    DEFAULT_DEADLINE,
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_INSTANCE_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUT,
    RetryPolicy,
)
from dicomslide_sync import _portal
from dicomslide_sync._derive import (
    Call,
    Returns,
    Twin,
    attribute,
    blocking,
    forward,
    get_default_timeout,
    recall,
    rewrap,
    run,
    set_default_timeout,
)

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
    "run",
]


def _unwrap(client: Any) -> Any:
    return getattr(client, "__dicomslide_source__", None) or client


_Client = TypeVar("_Client", bound="_ClientTwin")


class _ClientTwin(Twin):
    """What the two client twins share: opening, pickling, closing."""

    _args: tuple[str | os.PathLike[str], dict[str, Any]]

    def _open(self, url: Any, options: dict[str, Any]) -> None:
        self._args = (url, options)
        self._async = self._ASYNC(url, **options)
        # What dicomslide's own functions look for to reach the async source.
        self.__dicomslide_source__ = self._async

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen_client, (type(self), *self._args))

    def __enter__(self: _Client) -> _Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the client's connections or file handles and its caches."""
        run(self._async.aclose())


class DICOMfileClient(_ClientTwin):
    """Blocking client for a folder of DICOM Part 10 files (twin of the async client).

    Parameters
    ----------
    url: str | os.PathLike[str]
        Folder path or ``file://`` URL
    index_dir: str | os.PathLike[str] | None, optional
        Where the folder index is kept (see :class:`dicomslide.DICOMfileClient`)
    recursive: bool, optional
        Whether sub-folders are searched
    cache_max_bytes: int | None, optional
        Budget of the frame cache in bytes (None: the package default)
    decoded_cache_max_bytes: int | None, optional
        Budget of the decoded-tile cache in bytes (None: the package default)
    """

    _ASYNC = dicomslide.DICOMfileClient

    def __init__(
        self,
        url: str | os.PathLike[str],
        *,
        index_dir: str | os.PathLike[str] | None = None,
        recursive: bool = True,
        cache_max_bytes: int | None = None,
        decoded_cache_max_bytes: int | None = None,
    ) -> None:
        options: dict[str, Any] = {"index_dir": index_dir, "recursive": recursive}
        options.update(_budgets(cache_max_bytes, decoded_cache_max_bytes))
        self._open(url, options)

    base_dir = attribute[Any]()
    closed = attribute[bool]()
    index_summary = blocking(dicomslide.DICOMfileClient.index_summary)
    search_for_studies = blocking(dicomslide.DICOMfileClient.search_for_studies)
    search_for_series = blocking(dicomslide.DICOMfileClient.search_for_series)
    search_for_instances = blocking(dicomslide.DICOMfileClient.search_for_instances)
    retrieve_series_metadata = blocking(dicomslide.DICOMfileClient.retrieve_series_metadata)
    retrieve_instance_metadata = blocking(dicomslide.DICOMfileClient.retrieve_instance_metadata)
    retrieve_bulkdata = blocking(dicomslide.DICOMfileClient.retrieve_bulkdata)


def _budgets(cache_max_bytes: int | None, decoded_cache_max_bytes: int | None) -> dict[str, Any]:
    # Passed on only when set: None is the async clients' own default either way.
    budgets = {
        "cache_max_bytes": cache_max_bytes,
        "decoded_cache_max_bytes": decoded_cache_max_bytes,
    }
    return {name: value for name, value in budgets.items() if value is not None}


class DICOMwebClient(_ClientTwin):
    """Blocking DICOMweb client (twin of :class:`dicomslide.DICOMwebClient`).

    Frame requests of all threads are merged on the private loop; the default
    ``coalesce_window`` of a few milliseconds is what lets requests from many threads meet.

    Parameters
    ----------
    url: str
        Base URL of the DICOMweb service
    qido_url_prefix: str | None, optional
        Path prefix of the QIDO-RS service
    wado_url_prefix: str | None, optional
        Path prefix of the WADO-RS service
    headers: Mapping[str, str] | None, optional
        Headers sent with every request
    auth: httpx.Auth | tuple[str, str] | None, optional
        Credentials
    transport: httpx.AsyncBaseTransport | None, optional
        HTTP transport (tests, proxies)
    http2: bool, optional
        Whether HTTP/2 is used
    timeout: httpx.Timeout | float, optional
        Timeouts of each request
    verify: bool | str, optional
        TLS verification, or a CA bundle path
    retry: dicomslide.RetryPolicy | None, optional
        Retry policy for failed requests
    max_frames_per_request: int, optional
        Most frames in one multipart request
    max_url_length: int, optional
        Longest URL sent
    max_concurrent_requests: int, optional
        Most frame requests in flight at once
    coalesce_window: float, optional
        Seconds frame requests wait for more to merge with
    max_requests_per_instance: int | None, optional
        Most frame requests in flight for one instance
    readahead: int, optional
        Largest read-ahead window in frames (0: off)
    cache_max_bytes: int | None, optional
        Budget of the frame cache in bytes (None: the package default)
    decoded_cache_max_bytes: int | None, optional
        Budget of the decoded-tile cache in bytes (None: the package default)
    max_instance_bytes: int, optional
        Largest whole instance spooled when a server serves no frames
    max_response_bytes: int, optional
        Byte budget of one metadata, QIDO page or bulk data body, after decoding
    max_frame_bytes: int, optional
        Ceiling of the byte budget of one frame (below it, derived from the metadata)
    deadline: float | None, optional
        Seconds one operation may wait on the server, retries included (None: no limit)

    Notes
    -----
    Every option means what it means for :class:`dicomslide.DICOMwebClient`.
    """

    _ASYNC = dicomslide.DICOMwebClient

    def __init__(
        self,
        url: str,
        *,
        qido_url_prefix: str | None = None,
        wado_url_prefix: str | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http2: bool = False,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        verify: bool | str = True,
        retry: RetryPolicy | None = None,
        max_frames_per_request: int = 500,
        max_url_length: int = 8000,
        max_concurrent_requests: int = 8,
        coalesce_window: float = 0.002,
        max_requests_per_instance: int | None = 1,
        readahead: int = 256,
        cache_max_bytes: int | None = None,
        decoded_cache_max_bytes: int | None = None,
        max_instance_bytes: int = DEFAULT_MAX_INSTANCE_BYTES,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        deadline: float | None = DEFAULT_DEADLINE,
    ) -> None:
        options: dict[str, Any] = {
            "qido_url_prefix": qido_url_prefix,
            "wado_url_prefix": wado_url_prefix,
            "headers": headers,
            "auth": auth,
            "transport": transport,
            "http2": http2,
            "timeout": timeout,
            "verify": verify,
            "retry": retry,
            "max_frames_per_request": max_frames_per_request,
            "max_url_length": max_url_length,
            "max_concurrent_requests": max_concurrent_requests,
            "coalesce_window": coalesce_window,
            "max_requests_per_instance": max_requests_per_instance,
            "readahead": readahead,
            "max_instance_bytes": max_instance_bytes,
            "max_response_bytes": max_response_bytes,
            "max_frame_bytes": max_frame_bytes,
            "deadline": deadline,
        }
        options.update(_budgets(cache_max_bytes, decoded_cache_max_bytes))
        self._open(url, options)
        # Connections live on the private loop; close them there when this twin is dropped.
        weakref.finalize(self, _portal.close_soon, self._async.aclose)

    @property
    def url(self) -> str:
        """str: Base URL of the service."""
        return str(self._async.url)

    closed = attribute[bool]()
    max_instance_bytes = attribute[int]()
    max_response_bytes = attribute[int]()
    max_frame_bytes = attribute[int]()
    deadline = attribute["float | None"]()
    qido_page_size = attribute[int]()
    requests_sent = attribute[int]()
    retry = attribute[RetryPolicy]()
    search_for_studies = blocking(dicomslide.DICOMwebClient.search_for_studies)
    search_for_series = blocking(dicomslide.DICOMwebClient.search_for_series)
    search_for_instances = blocking(dicomslide.DICOMwebClient.search_for_instances)
    retrieve_series_metadata = blocking(dicomslide.DICOMwebClient.retrieve_series_metadata)
    retrieve_instance_metadata = blocking(dicomslide.DICOMwebClient.retrieve_instance_metadata)
    retrieve_bulkdata = blocking(dicomslide.DICOMwebClient.retrieve_bulkdata)


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
        if client is not None and not client.closed:
            _REOPENED.move_to_end(key)
            return client  # type: ignore[no-any-return]
        client = open_client()
        _REOPENED[key] = client
        while len(_REOPENED) > _REOPENED_MAX:
            _REOPENED.popitem(last=False)  # not closed: tasks may still use it
        return client


def _reopen_client(cls: Callable[..., _Client], url: Any, kwargs: dict[str, Any]) -> _Client:
    return _reopened((getattr(cls, "__name__", ""), url, kwargs), lambda: cls(url, **kwargs))


@borrowed_doc(dicomslide.TotalPixelMatrix)
class TotalPixelMatrix(Twin):
    """Blocking twin of :class:`dicomslide.TotalPixelMatrix`: ``matrix[...]`` is an array."""

    _ASYNC = dicomslide.TotalPixelMatrix
    _async: dicomslide.TotalPixelMatrix

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
    def _rewrap(
        cls, owner: Any, value: dicomslide.TotalPixelMatrix, call: Call | None
    ) -> TotalPixelMatrix:
        # Re-opened after pickling by asking the (pickled) owner for it again.
        assert call is not None, "a total pixel matrix is only ever returned by a method"
        obj: TotalPixelMatrix = cls.__new__(cls)
        obj._async = value
        obj._reopen = (recall, (owner, *call))
        return obj

    @property
    def async_matrix(self) -> dicomslide.TotalPixelMatrix:
        """dicomslide.TotalPixelMatrix: The async total pixel matrix this twin runs."""
        return self._async

    def __reduce__(self) -> tuple[Any, ...]:
        return self._reopen

    def __len__(self) -> int:
        return len(self._async)

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

    dtype = attribute[np.dtype[Any]]()
    ndim = attribute[int]()
    shape = attribute[tuple[int, int, int]]()
    size = attribute[int]()
    num_tiles = attribute[int]()
    tile_shape = attribute[tuple[int, int, int]]()
    tile_size = attribute[int]()
    tile_grid_shape = attribute[tuple[int, int]]()
    tile_grid_positions = attribute[np.ndarray]()
    tile_positions = attribute[np.ndarray]()
    get_tile_grid_position = forward(dicomslide.TotalPixelMatrix.get_tile_grid_position)
    get_tile_position = forward(dicomslide.TotalPixelMatrix.get_tile_position)
    get_tile_bounding_box = forward(dicomslide.TotalPixelMatrix.get_tile_bounding_box)
    get_tile_index = forward(dicomslide.TotalPixelMatrix.get_tile_index)
    read_region = blocking(dicomslide.TotalPixelMatrix.read_region)
    read_tiles = blocking(dicomslide.TotalPixelMatrix.read_tiles)


@borrowed_doc(dicomslide.TiledImage)
class TiledImage(Twin):
    """Blocking twin of :class:`dicomslide.TiledImage`."""

    _ASYNC = dicomslide.TiledImage
    _async: dicomslide.TiledImage

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
    def _rewrap(cls, owner: Slide, value: dicomslide.TiledImage, call: Call | None) -> TiledImage:
        # Images come from slides; they pickle with the client their slide was given.
        obj: TiledImage = cls.__new__(cls)
        obj._async = value
        obj._client = owner.client
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        state = self._async.reader
        return (
            TiledImage,
            (self._client, state.metadata, 6, state.correct_color, state.parts_metadata),
        )

    metadata = attribute[Dataset]()
    size = attribute[tuple[int, int]]()
    num_channels = attribute[int]()
    num_focal_planes = attribute[int]()
    channel_type = attribute[ChannelTypes]()
    channel_identifiers = attribute[tuple[str, ...]]()
    focal_plane_offsets = attribute[tuple[float, ...]]()
    frame_index = attribute[Any]()
    geometry = attribute[Any]()
    pixel_spacing = attribute[tuple[float, float]]()
    sop_instance_uids = attribute[tuple[str, ...]]()
    frame_of_reference_uid = attribute[str]()
    physical_offset = attribute[tuple[float, float]]()
    physical_size = attribute[tuple[float, float]]()
    is_label_map = attribute[bool]()
    get_channel_identifier = forward(dicomslide.TiledImage.get_channel_identifier)
    get_channel_index = forward(dicomslide.TiledImage.get_channel_index)
    get_focal_plane_offset = forward(dicomslide.TiledImage.get_focal_plane_offset)
    get_focal_plane_index = forward(dicomslide.TiledImage.get_focal_plane_index)
    get_slide_offset = forward(dicomslide.TiledImage.get_slide_offset)
    get_pixel_indices = forward(dicomslide.TiledImage.get_pixel_indices)
    map_pixel_indices_to_slide_coordinates = forward(
        dicomslide.TiledImage.map_pixel_indices_to_slide_coordinates
    )
    map_slide_coordinates_to_pixel_indices = forward(
        dicomslide.TiledImage.map_slide_coordinates_to_pixel_indices
    )
    get_rotation = forward(dicomslide.TiledImage.get_rotation)
    get_references = forward(dicomslide.TiledImage.get_references)
    get_total_pixel_matrix = forward(
        dicomslide.TiledImage.get_total_pixel_matrix, Returns[TotalPixelMatrix]()
    )
    get_label_map = forward(dicomslide.TiledImage.get_label_map, Returns[TotalPixelMatrix]())
    get_image_region = blocking(dicomslide.TiledImage.get_image_region)
    get_slide_region = blocking(dicomslide.TiledImage.get_slide_region)


@borrowed_doc(dicomslide.Slide)
class Slide(Twin):
    """Blocking twin of :class:`dicomslide.Slide`."""

    _ASYNC = dicomslide.Slide
    _async: dicomslide.Slide

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

    @classmethod
    def _rewrap(cls, owner: Any, value: dicomslide.Slide, call: Call | None) -> Slide:
        # ``owner`` is the client the slide was found with, kept as given for pickling.
        obj: Slide = cls.__new__(cls)
        obj._client = owner
        obj._async = value
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        # Re-opened with the async slide's own settings (the one place they are kept).
        a = self._async
        args = (a.image_metadata, a.max_frame_cache_size, a.pyramid_tolerance, a.correct_color)
        return (Slide, (self._client, *args))

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
        return cls._rewrap(slide.client, slide, None)

    @property
    def async_slide(self) -> dicomslide.Slide:
        """dicomslide.Slide: The async slide this twin runs."""
        return self._async

    @property
    def client(self) -> Any:
        """Any: The client the slide reads from (as given: a blocking twin stays one)."""
        return self._client

    image_metadata = attribute[list[Dataset]]()
    max_frame_cache_size = attribute[int]()
    pyramid_tolerance = attribute[float]()
    correct_color = attribute[bool]()
    cache_stats = attribute[CacheStats]()
    pyramid = attribute[Pyramid]()
    frame_of_reference_uid = attribute[str]()
    container_id = attribute[str]()
    num_channels = attribute[int]()
    num_focal_planes = attribute[int]()
    num_levels = attribute[int]()
    total_pixel_matrix_dimensions = attribute[tuple[tuple[int, int], ...]]()
    downsampling_factors = attribute[tuple[float, ...]]()
    pixel_spacings = attribute[tuple[tuple[float, float], ...]]()
    size = attribute[tuple[int, int]]()
    physical_offset = attribute[tuple[float, float]]()
    physical_size = attribute[tuple[float, float]]()
    label_images = attribute[tuple[TiledImage, ...]]()
    overview_images = attribute[tuple[TiledImage, ...]]()
    thumbnail_images = attribute[tuple[TiledImage, ...]]()
    get_channel_type = forward(dicomslide.Slide.get_channel_type)
    get_channel_identifier = forward(dicomslide.Slide.get_channel_identifier)
    get_channel_index = forward(dicomslide.Slide.get_channel_index)
    get_focal_plane_offset = forward(dicomslide.Slide.get_focal_plane_offset)
    get_focal_plane_index = forward(dicomslide.Slide.get_focal_plane_index)
    find_optical_paths = forward(dicomslide.Slide.find_optical_paths)
    find_segments = forward(dicomslide.Slide.find_segments)
    get_volume_images = forward(
        dicomslide.Slide.get_volume_images, Returns[tuple[TiledImage, ...]]()
    )
    get_pixel_indices = forward(dicomslide.Slide.get_pixel_indices)
    get_slide_offset = forward(dicomslide.Slide.get_slide_offset)
    map_pixel_indices_to_slide_coordinates = forward(
        dicomslide.Slide.map_pixel_indices_to_slide_coordinates
    )
    map_slide_coordinates_to_pixel_indices = forward(
        dicomslide.Slide.map_slide_coordinates_to_pixel_indices
    )
    get_image_region = blocking(dicomslide.Slide.get_image_region)
    get_label_map_region = blocking(dicomslide.Slide.get_label_map_region)
    get_slide_region = blocking(dicomslide.Slide.get_slide_region)
    get_slide_region_for_annotation = blocking(dicomslide.Slide.get_slide_region_for_annotation)


@borrowed_doc(
    dicomslide.TotalPixelMatrixSampler,
    {"matrix: dicomslide.TotalPixelMatrix": "matrix: dicomslide_sync.TotalPixelMatrix"},
)
class TotalPixelMatrixSampler(Twin):
    """Blocking twin of :class:`dicomslide.TotalPixelMatrixSampler`."""

    _ASYNC = dicomslide.TotalPixelMatrixSampler
    _async: dicomslide.TotalPixelMatrixSampler

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
            matrix.async_matrix, region_dimensions, bounding_box, tile_grid_positions, padding
        )

    @property
    def matrix(self) -> TotalPixelMatrix:
        """dicomslide_sync.TotalPixelMatrix: The total pixel matrix regions are sampled from."""
        return self._matrix

    def __len__(self) -> int:
        return len(self._async)

    def __getitem__(self, index: int) -> np.ndarray:
        """The padded region at `index`: an array of shape :attr:`padded_region_shape`."""
        return run(self._async.get(index))

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    region_shape = attribute[tuple[int, int, int]]()
    padded_region_shape = attribute[tuple[int, int, int]]()
    padding = attribute[tuple[int, int, int, int]]()
    get_region_grid_position = forward(dicomslide.TotalPixelMatrixSampler.get_region_grid_position)
    get_region_bounding_box = forward(dicomslide.TotalPixelMatrixSampler.get_region_bounding_box)


@borrowed_doc(dicomslide.find_slides, {"list[dicomslide.Slide]": "list[dicomslide_sync.Slide]"})
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
    """Find slides (blocking twin of :func:`dicomslide.find_slides`)."""
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
    # Each slide keeps the client as given (a blocking twin stays one) for pickling.
    return [rewrap(client, slide, None) for slide in slides]

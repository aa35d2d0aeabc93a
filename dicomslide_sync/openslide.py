"""Blocking twin of :mod:`dicomslide.openslide`: the OpenSlide interface of a slide.

:class:`OpenSlide` behaves like ``openslide.OpenSlide`` of openslide-python, so helpers such as
``openslide.deepzoom.DeepZoomGenerator`` accept it unchanged. Pixels are identical to OpenSlide
4's; see :mod:`dicomslide.openslide` for what matches and what deviates.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from PIL import Image, ImageCms

import dicomslide
from dicomslide import openslide as _aio
from dicomslide_sync._portal import run
from dicomslide_sync._wrappers import Slide

__all__ = ["OpenSlide", "open_slide"]


def _unwrap(client: Any) -> Any:
    return getattr(client, "__dicomslide_source__", None) or client


class OpenSlide:
    """One channel and focal plane of a slide, behind the API of ``openslide.OpenSlide``.

    Parameters
    ----------
    slide: dicomslide_sync.Slide | dicomslide.Slide
        The slide
    channel_index: int, optional
        Zero-based channel served; it must have 8-bit pixels (RGB, or monochrome served as grey)
    focal_plane_index: int, optional
        Zero-based focal plane served

    Raises
    ------
    dicomslide.RegionError
        If the channel or focal plane does not exist
    dicomslide.UnsupportedError
        If the channel's pixels are not 8-bit; use :meth:`dicomslide_sync.Slide.get_image_region`
    """

    def __init__(
        self,
        slide: Slide | dicomslide.Slide,
        *,
        channel_index: int = 0,
        focal_plane_index: int = 0,
    ) -> None:
        inner = slide.async_slide if isinstance(slide, Slide) else slide
        self._async = _aio.OpenSlide(
            inner, channel_index=channel_index, focal_plane_index=focal_plane_index
        )

    @classmethod
    def _wrap(cls, osr: _aio.OpenSlide) -> OpenSlide:
        obj = cls.__new__(cls)
        obj._async = osr
        return obj

    @property
    def async_openslide(self) -> _aio.OpenSlide:
        """The async object this twin runs.

        Returns
        -------
        dicomslide.OpenSlide
            Async OpenSlide
        """
        return self._async

    def __repr__(self) -> str:
        return repr(self._async)

    def close(self) -> None:
        """Close the object; every later call raises :class:`dicomslide.UsageError`."""
        run(self._async.close())

    def __enter__(self) -> OpenSlide:
        self._async._check_open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def level_count(self) -> int:
        """Number of levels.

        Returns
        -------
        int
            Number of VOLUME levels
        """
        return self._async.level_count

    @property
    def dimensions(self) -> tuple[int, int]:
        """Width and height of level 0.

        Returns
        -------
        tuple[int, int]
            (width, height)
        """
        return self._async.dimensions

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """Width and height of every level.

        Returns
        -------
        tuple[tuple[int, int], ...]
            (width, height) per level
        """
        return self._async.level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample factor of every level.

        Returns
        -------
        tuple[float, ...]
            Factor per level
        """
        return self._async.level_downsamples

    @property
    def properties(self) -> Mapping[str, str]:
        """Metadata as OpenSlide properties.

        Returns
        -------
        Mapping[str, str]
            Property names mapped to values
        """
        return self._async.properties

    @property
    def color_profile(self) -> ImageCms.ImageCmsProfile | None:
        """ICC profile of the pixels served.

        Returns
        -------
        PIL.ImageCms.ImageCmsProfile | None
            Profile or None
        """
        return self._async.color_profile

    @property
    def associated_images(self) -> dict[str, Image.Image]:
        """Associated images (``label``, ``macro``, ``thumbnail``; ``LABEL``, ``OVERVIEW``).

        Returns
        -------
        dict[str, PIL.Image.Image]
            RGBA images
        """
        return run(self._async.get_associated_images())

    def get_best_level_for_downsample(self, downsample: float) -> int:
        """Level to read for a downsample factor, as OpenSlide picks it.

        Parameters
        ----------
        downsample: float
            Desired downsample factor

        Returns
        -------
        int
            Zero-based level
        """
        return self._async.get_best_level_for_downsample(downsample)

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> Image.Image:
        """Read a region, exactly as OpenSlide renders it.

        Parameters
        ----------
        location: tuple[int, int]
            (x, y) of the top left pixel in level-0 pixels (may lie outside the image)
        level: int
            Zero-based level
        size: tuple[int, int]
            (width, height) at ``level``

        Returns
        -------
        PIL.Image.Image
            RGBA image, not premultiplied, transparent outside the image
        """
        return run(self._async.read_region(location, level, size))

    def get_thumbnail(self, size: tuple[int, int]) -> Image.Image:
        """Thumbnail of the slide, computed as openslide-python does.

        Parameters
        ----------
        size: tuple[int, int]
            Largest (width, height)

        Returns
        -------
        PIL.Image.Image
            RGB image
        """
        return run(self._async.get_thumbnail(size))


def open_slide(
    source: str | os.PathLike[str] | Any,
    *,
    channel_index: int = 0,
    focal_plane_index: int = 0,
    **kwargs: Any,
) -> OpenSlide:
    """Open the one slide of a folder or client through the OpenSlide interface (blocking).

    Parameters
    ----------
    source: str | os.PathLike[str] | Any
        Folder of DICOM files, or a (dicomslide_sync) client
    channel_index: int, optional
        Zero-based channel served
    focal_plane_index: int, optional
        Zero-based focal plane served
    **kwargs: Any
        Passed to :func:`dicomslide.find_slides`

    Returns
    -------
    dicomslide_sync.OpenSlide
        The slide

    Raises
    ------
    dicomslide.NotFoundError
        If the source holds no slide
    dicomslide.RegionError
        If it holds more than one slide
    """
    osr = run(
        _aio.open_slide(
            _unwrap(source),
            channel_index=channel_index,
            focal_plane_index=focal_plane_index,
            **kwargs,
        )
    )
    return OpenSlide._wrap(osr)

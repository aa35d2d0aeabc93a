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
from dicomslide._docs import borrowed_doc
from dicomslide._openslide_compat import (
    AssociatedImageMap,
    OpenSlideCache,
    as_openslide_error,
)
from dicomslide_sync._derive import Twin, attribute, blocking, forward, run
from dicomslide_sync._wrappers import Slide

__all__ = ["OpenSlide", "OpenSlideCache", "open_slide"]


def _unwrap(client: Any) -> Any:
    return getattr(client, "__dicomslide_source__", None) or client


class OpenSlide(Twin):
    """One channel and focal plane of a slide, behind the API of ``openslide.OpenSlide``.

    Parameters
    ----------
    slide: dicomslide_sync.Slide | dicomslide.Slide | str | os.PathLike[str]
        The slide, or what :func:`open_slide` opens (one DICOM file of the slide, as
        ``openslide.OpenSlide(filename)`` is given, a folder or a DICOMweb URL)
    channel_index: int, optional
        Zero-based channel served; it must have 8-bit pixels (RGB, or monochrome served as grey)
    focal_plane_index: int, optional
        Zero-based focal plane served
    **kwargs: Any
        When ``slide`` is a path or URL: passed to :func:`open_slide` (e.g. ``correct_color``)

    Raises
    ------
    dicomslide.RegionError
        If the channel or focal plane does not exist
    dicomslide.UnsupportedError
        If the channel's pixels are not 8-bit; use :meth:`dicomslide_sync.Slide.get_image_region`
    """

    _ASYNC = _aio.OpenSlide
    _async: _aio.OpenSlide

    def __init__(
        self,
        slide: Slide | dicomslide.Slide | str | os.PathLike[str],
        *,
        channel_index: int = 0,
        focal_plane_index: int = 0,
        **kwargs: Any,
    ) -> None:
        self._filename: Any = None
        if isinstance(slide, str | os.PathLike):
            self._async = run(
                _aio.open_slide(
                    slide,
                    channel_index=channel_index,
                    focal_plane_index=focal_plane_index,
                    **kwargs,
                )
            )
            self._filename = slide
            return
        if kwargs:
            raise as_openslide_error(
                dicomslide.RegionError(
                    f"Options {sorted(kwargs)} apply when opening a path or URL; a slide "
                    "given as an object was opened with its own options already."
                )
            )
        inner = slide.async_slide if isinstance(slide, Slide) else slide
        self._async = _aio.OpenSlide(
            inner, channel_index=channel_index, focal_plane_index=focal_plane_index
        )
        # Profiles that are bulk data (DICOMweb) are known before anyone asks for them.
        run(self._async.load_profiles())

    @classmethod
    def from_async(cls, osr: _aio.OpenSlide) -> OpenSlide:
        """The blocking twin of an async OpenSlide object, sharing it.

        Parameters
        ----------
        osr: dicomslide.OpenSlide
            Async OpenSlide object (closing either closes both)

        Returns
        -------
        dicomslide_sync.OpenSlide
            Twin
        """
        obj: OpenSlide = cls.__new__(cls)
        obj._async = osr
        obj._filename = None
        return obj

    # The same classmethod: it answers from the path alone, whichever class asks.
    detect_format = _aio.OpenSlide.detect_format

    @property
    def async_openslide(self) -> _aio.OpenSlide:
        """dicomslide.OpenSlide: The async object this twin runs."""
        return self._async

    def __repr__(self) -> str:
        if self._filename is not None:
            # openslide-python's form, which DeepZoomGenerator's repr embeds.
            return f"{type(self).__name__}({self._filename!r})"
        return repr(self._async)

    def __enter__(self) -> OpenSlide:
        self._async.check_open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def associated_images(self) -> Mapping[str, Image.Image]:
        """Mapping[str, PIL.Image.Image]: Associated images (``label``, ``macro``, ``thumbnail``),
        read when looked up: openslide-python's ``_AssociatedImageMap`` of RGBA images, which
        raises :class:`dicomslide.UsageError` once this object is closed. dicomslide 0.7's keys
        ``LABEL`` and ``OVERVIEW`` can be looked up too, but are not listed.
        """
        osr = self._async
        return AssociatedImageMap(
            osr.associated_image_names,
            lambda name: run(osr.read_associated_image(name)),
            osr.check_open,
        )

    close = blocking(_aio.OpenSlide.close)
    check_open = forward(_aio.OpenSlide.check_open)
    set_cache = forward(_aio.OpenSlide.set_cache)
    level_count = attribute[int]()
    dimensions = attribute[tuple[int, int]]()
    level_dimensions = attribute[tuple[tuple[int, int], ...]]()
    level_downsamples = attribute[tuple[float, ...]]()
    properties = attribute[Mapping[str, str]]()
    color_profile = attribute[ImageCms.ImageCmsProfile | None]()
    associated_image_names = attribute[list[str]]()
    get_best_level_for_downsample = forward(_aio.OpenSlide.get_best_level_for_downsample)
    read_region = blocking(_aio.OpenSlide.read_region)
    get_thumbnail = blocking(_aio.OpenSlide.get_thumbnail)
    read_associated_image = blocking(_aio.OpenSlide.read_associated_image)
    get_associated_images = blocking(_aio.OpenSlide.get_associated_images)


@borrowed_doc(_aio.open_slide, {"dicomslide.OpenSlide\n": "dicomslide_sync.OpenSlide\n"})
def open_slide(
    source: str | os.PathLike[str] | Any,
    *,
    channel_index: int = 0,
    focal_plane_index: int = 0,
    **kwargs: Any,
) -> OpenSlide:
    """Open the one slide of a folder or client through the OpenSlide interface (blocking)."""
    osr = run(
        _aio.open_slide(
            _unwrap(source),
            channel_index=channel_index,
            focal_plane_index=focal_plane_index,
            **kwargs,
        )
    )
    return OpenSlide.from_async(osr)

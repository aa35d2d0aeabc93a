"""The OpenSlide interface of a slide (async), pixel-identical to OpenSlide 4.

:class:`OpenSlide` exposes one channel and focal plane of a :class:`dicomslide.Slide` through
the API of ``openslide.OpenSlide`` (openslide-python), so that code and helpers written for
OpenSlide, such as ``openslide.deepzoom.DeepZoomGenerator`` (with the blocking twin
:class:`dicomslide_sync.OpenSlide`), work unchanged. Methods that read pixels are coroutines.

What is reproduced from OpenSlide 4 and its DICOM driver
---------------------------------------------------------
* Levels are the VOLUME images of the slide, largest first; THUMBNAIL images are the associated
  image ``"thumbnail"``, not a level. The downsample of level ``L`` is
  ``(h0 / hL + w0 / wL) / 2``, the best level for a downsample ``d`` is the last level whose
  downsample is not larger than ``d`` (no tolerance: OpenSlide 4.0.1 has none).
* :meth:`OpenSlide.read_region` renders exactly as OpenSlide does with cairo and pixman: the
  region's top left corner in level coordinates is ``location / downsample`` in floating point,
  so for locations that are not multiples of the downsample the tiles are drawn at a fractional
  offset and resampled bilinearly (pixman's 7-bit weights), tiles are combined with the
  SATURATE operator, pixels outside the image or in missing tiles of TILED_SPARSE images are
  transparent, negative locations are shifted by whole level pixels, and regions are painted in
  chunks of 4096 x 4096 pixels. The result is un-premultiplied like openslide-python does.
* Properties: ``dicom.*`` hold the header of the base level as OpenSlide names them (sequences
  as ``Keyword[i].Keyword``, attribute tags as group and element numbers, binary values left
  out; multi-valued attributes as ``Keyword[i]``, except for the value representations that
  OpenSlide's DICOM library reads as one string, AS, DA, IS, LO, LT, ST, UR and UT, whose values
  stay joined by backslashes under ``Keyword``), ``openslide.mpp-x`` comes from the column
  spacing (second Pixel Spacing value), ``openslide.mpp-y`` from the row spacing, and
  ``openslide.quickhash-1`` is, as in OpenSlide, the SHA-256 of the Series Instance UID followed
  by a NUL byte: stable across processes and machines, and equal to OpenSlide's.

Deviations
----------
* Pixels are delivered as the slide delivers them: if the slide was opened with
  ``correct_color=True`` (the default) and has an ICC profile, pixels are already sRGB and
  :attr:`OpenSlide.color_profile` is an sRGB profile. Open the slide with
  ``correct_color=False`` to get the stored values and the stored profile, as OpenSlide does.
* ``openslide.background-color`` (``FFFFFF``) and ``openslide.comment`` (Image Comments or
  Series Description, when present) are defined; OpenSlide's DICOM driver defines neither.
  DICOM has no bounds, so ``openslide.bounds-*`` are not defined (as in OpenSlide).
* Associated images can also be looked up under the keys ``LABEL`` and ``OVERVIEW`` of
  dicomslide 0.7 (they are not listed, so that iteration and repr equal OpenSlide's).
* Text values lose their trailing spaces (as pydicom reads them); OpenSlide keeps them.
* Errors do not latch: after a failed read the object stays usable (a transient DICOMweb
  failure must not kill it); closing twice is harmless. README.md lists every difference.

The contract around the pixels is openslide-python's (see :mod:`dicomslide._openslide_compat`):
a level that does not exist reads as a transparent image, errors are also
``openslide.OpenSlideError`` when openslide-python is installed, ``properties`` is a live
``_PropertyMap`` that fails once the object is closed, and :meth:`OpenSlide.set_cache`,
:class:`OpenSlideCache` and :meth:`OpenSlide.detect_format` exist.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageCms
from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

from dicomslide._args import int_pair
from dicomslide._openslide_compat import (
    ASSOCIATED_ALIASES,
    ClosedHandleError,
    NotACacheError,
    OpenSlideCache,
    PropertyMap,
    as_openslide_error,
    detect_format,
    translate_errors_async,
)
from dicomslide.discovery import find_slides
from dicomslide.enums import ImageFlavors
from dicomslide.errors import (
    ArgumentError,
    DicomSlideError,
    NotFoundError,
    RegionError,
    UnsupportedError,
)
from dicomslide.image import TiledImage, TotalPixelMatrix
from dicomslide.runtime import as_source
from dicomslide.slide import Slide
from dicomslide.utils import get_image_flavor

__all__ = ["OpenSlide", "OpenSlideCache", "open_slide"]

PROPERTY_NAME_COMMENT = "openslide.comment"
PROPERTY_NAME_VENDOR = "openslide.vendor"
PROPERTY_NAME_QUICKHASH1 = "openslide.quickhash-1"
PROPERTY_NAME_BACKGROUND_COLOR = "openslide.background-color"
PROPERTY_NAME_OBJECTIVE_POWER = "openslide.objective-power"
PROPERTY_NAME_MPP_X = "openslide.mpp-x"
PROPERTY_NAME_MPP_Y = "openslide.mpp-y"

# openslide_read_region paints large regions in pieces of this many pixels per side.
_CHUNK = 4096

# Headers that OpenSlide's DICOM reader (libdicom's metadata subset) does not expose.
_SKIPPED_KEYWORDS = frozenset(
    {"PerFrameFunctionalGroupsSequence", "PixelData", "FloatPixelData", "DoubleFloatPixelData"}
)
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_DECIMAL_VRS = frozenset({"FL", "FD"})
_INTEGER_VRS = frozenset({"SL", "SS", "SV", "UL", "US", "UV"})
# libdicom (OpenSlide 4.0.1) keeps the values of these as one backslash-joined string: checked
# against OpenSlide on files with two values of each string VR.
_SINGLE_STRING_VRS = frozenset({"AS", "DA", "IS", "LO", "LT", "ST", "UR", "UT"})


@functools.cache
def _srgb_profile_bytes() -> bytes:
    # One object: openslide-python hands out the same profile bytes with every image.
    return bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())


def _format_double(value: float) -> str:
    # OpenSlide formats doubles with g_ascii_dtostr, i.e. printf("%.17g").
    return f"{value:.17g}"


def _round_half_even(value: float) -> int:
    return round(value)


@dataclass
class _Level:
    image: TiledImage
    matrix: TotalPixelMatrix
    width: int
    height: int
    tile_width: int
    tile_height: int
    downsample: float
    present: npt.NDArray[np.bool_]  # (tile rows, tile columns): frame exists


class OpenSlide:
    """One channel and focal plane of a slide, behind the API of ``openslide.OpenSlide``.

    Methods that read pixels are coroutines; everything else is synchronous. See the module
    notes for what matches OpenSlide 4 exactly and what deviates.

    Parameters
    ----------
    slide: dicomslide.Slide
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
        If the channel's pixels are not 8-bit RGB or 8-bit monochrome

    Notes
    -----
    Every error raised by this class is also an ``openslide.OpenSlideError`` when
    openslide-python is installed.
    """

    def __init__(
        self, slide: Slide, *, channel_index: int = 0, focal_plane_index: int = 0
    ) -> None:
        try:
            self._setup(slide, channel_index, focal_plane_index)
        except DicomSlideError as exc:
            as_openslide_error(exc, opening=True)
            raise

    def _setup(self, slide: Slide, channel_index: int, focal_plane_index: int) -> None:
        self._slide = slide
        self._channel_index = channel_index
        self._focal_plane_index = focal_plane_index
        self._closed = False
        self._owned_client: Any = None
        identifier = slide.get_channel_identifier(channel_index)
        z_offset = slide.get_focal_plane_offset(focal_plane_index)
        levels: list[_Level] = []
        for image in slide.get_volume_images(channel_index, focal_plane_index):
            # OpenSlide serves THUMBNAIL images as the associated image "thumbnail".
            if get_image_flavor(image.metadata) is ImageFlavors.THUMBNAIL:
                continue
            c = image.get_channel_index(identifier)
            z = image.get_focal_plane_index(z_offset)
            matrix = image.get_total_pixel_matrix(c, z)
            if matrix.dtype != np.uint8 or matrix.shape[2] not in (1, 3):
                raise UnsupportedError(
                    f"Channel {channel_index} has {matrix.shape[2]} sample(s) of type "
                    f"{matrix.dtype} per pixel; the OpenSlide interface serves only 8-bit RGB "
                    "or 8-bit monochrome channels. Use the Slide API "
                    "(Slide.get_image_region) for these pixels."
                )
            rows, columns = image.size
            tile_rows, tile_columns, _ = matrix.tile_shape
            levels.append(
                _Level(
                    image=image,
                    matrix=matrix,
                    width=columns,
                    height=rows,
                    tile_width=tile_columns,
                    tile_height=tile_rows,
                    downsample=1.0,
                    present=np.asarray(image.frame_index.lookup[c, z] >= 0),
                )
            )
        if not levels:
            raise UnsupportedError(
                f"Channel {channel_index} and focal plane {focal_plane_index} have no VOLUME "
                "image; the OpenSlide interface has nothing to serve."
            )
        levels.sort(key=lambda lv: lv.width, reverse=True)
        w0, h0 = levels[0].width, levels[0].height
        for level in levels[1:]:
            level.downsample = (h0 / level.height + w0 / level.width) / 2.0
        self._levels = levels
        self._fetched_profiles: dict[int, bytes] = {}
        self._profiles_loaded = False
        self._profile_bytes = self._find_profile()
        self._properties = self._build_properties()

    # --- lifecycle ----------------------------------------------------------------------

    def check_open(self) -> None:
        """Raise unless the object is still open.

        Raises
        ------
        dicomslide.UsageError
            If :meth:`close` was called (also an ``openslide.OpenSlideError``)
        """
        if self._closed:
            raise as_openslide_error(ClosedHandleError("This OpenSlide object is closed."))

    async def close(self) -> None:
        """Close the object; every later call raises :class:`dicomslide.UsageError`.

        Like openslide-python's, the error is also a ``ctypes.ArgumentError``; unlike it,
        closing twice is harmless.

        The slide's client is closed too if :func:`open_slide` created it.
        """
        if self._closed:
            return
        self._closed = True
        client, self._owned_client = self._owned_client, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> OpenSlide:
        self.check_open()
        await self.load_profiles()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.level_count} levels"
        return f"{type(self).__name__}(container_id={self._slide.container_id!r}, {state})"

    # --- geometry -----------------------------------------------------------------------

    @property
    def slide(self) -> Slide:
        """dicomslide.Slide: The slide served."""
        return self._slide

    @property
    def level_count(self) -> int:
        """int: Number of levels (VOLUME levels)."""
        self.check_open()
        return len(self._levels)

    @property
    def dimensions(self) -> tuple[int, int]:
        """tuple[int, int]: (width, height) of level 0 in pixels."""
        self.check_open()
        return self._levels[0].width, self._levels[0].height

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """tuple[tuple[int, int], ...]: (width, height) of every level, largest first."""
        self.check_open()
        return tuple((lv.width, lv.height) for lv in self._levels)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """tuple[float, ...]: Downsample factor of every level, 1.0 for level 0 (OpenSlide's mean
        of width and height ratios).
        """
        self.check_open()
        return tuple(lv.downsample for lv in self._levels)

    def get_best_level_for_downsample(self, downsample: float) -> int:
        """Level to read for a downsample factor, as OpenSlide picks it.

        Parameters
        ----------
        downsample: float
            Desired downsample factor relative to level 0

        Returns
        -------
        int
            The last level whose downsample does not exceed ``downsample``, or 0
        """
        self.check_open()
        d = float(downsample)
        if d < self._levels[0].downsample:
            return 0
        for i in range(1, len(self._levels)):
            if d < self._levels[i].downsample:
                return i - 1
        return len(self._levels) - 1

    # --- metadata -----------------------------------------------------------------------

    @property
    def properties(self) -> Mapping[str, str]:
        """Mapping[str, str]: Metadata as OpenSlide properties (see the module notes for the
        names): openslide-python's ``_PropertyMap``, which raises :class:`dicomslide.UsageError`
        once this object is closed.
        """
        self.check_open()
        return PropertyMap(self._properties, self.check_open)

    @classmethod
    def detect_format(cls, filename: str | os.PathLike[str]) -> str | None:
        """``"dicom"`` for a DICOM slide file or folder :func:`open_slide` can open, else None.

        Parameters
        ----------
        filename: str | os.PathLike[str]
            Path of a file (or folder)

        Returns
        -------
        str | None
            ``"dicom"`` or None, as ``openslide.OpenSlide.detect_format`` answers
        """
        return detect_format(filename)

    def set_cache(self, cache: OpenSlideCache) -> None:
        """Decode into a tile cache that may be shared with other OpenSlide objects.

        The cache replaces the decoded-tile cache of the slide's client, so other slides read
        through the same client use it too (a client that :func:`open_slide` created serves
        only this object).

        Parameters
        ----------
        cache: dicomslide.OpenSlideCache
            The cache

        Raises
        ------
        TypeError
            If ``cache`` is not an :class:`OpenSlideCache` (a :class:`dicomslide.DicomSlideError`)
        """
        self.check_open()
        if not isinstance(cache, OpenSlideCache):
            raise as_openslide_error(
                NotACacheError(f"set_cache needs an OpenSlideCache, got {cache!r}.")
            )
        # Keys name the instance and frame, so one cache can serve the sources of many slides.
        as_source(self._slide.client).runtime.decoded_cache = cache.tiles

    @property
    def color_profile(self) -> ImageCms.ImageCmsProfile | None:
        """PIL.ImageCms.ImageCmsProfile | None: ICC profile of the pixels served, or None when the
        slide has none. A profile that is bulk data (DICOMweb) is known once the object was opened
        by :func:`open_slide`, entered with ``async with`` or read from.
        """
        self.check_open()
        if self._profile_bytes is None:
            return None
        return ImageCms.ImageCmsProfile(io.BytesIO(self._profile_bytes))

    def _find_profile(self, image: TiledImage | None = None) -> bytes | None:
        if image is None:
            image = self._levels[0].image
        metadata = image.metadata
        profile = self._fetched_profiles.get(id(image), b"")
        for item in [] if profile else metadata.get("OpticalPathSequence", []):
            value = item.get("ICCProfile")
            if value:
                profile = bytes(value)
                break
        if not profile and "ICCProfile" in metadata:
            profile = bytes(metadata.ICCProfile or b"")
        if not profile:
            return None
        # A slide that corrects colour already delivers sRGB, so the stored profile no longer
        # describes the pixels. Slide has no public accessor for the setting yet.
        if self._slide.correct_color and metadata.get("SamplesPerPixel") == 3:
            return _srgb_profile_bytes()
        return profile

    def adopt_client(self, client: Any) -> None:
        """Close ``client`` when this slide is closed (:func:`open_slide` gives the one it made).

        Parameters
        ----------
        client: Any
            A client with an ``aclose()`` coroutine, or None to adopt none
        """
        self._owned_client = client

    async def load_profiles(self) -> None:
        """Fetch ICC profiles that are bulk data (DICOMweb), once, before they are reported.

        :func:`open_slide` calls it; until it has run, :attr:`properties` and
        :attr:`color_profile` omit profiles that are not in the metadata.
        """
        if self._profiles_loaded:
            return
        for image in [self._levels[0].image, *self._associated_sources().values()]:
            # The image's own fetch (shared with its colour transform and equal levels).
            state = image.reader
            if state.icc_profile_uri() is not None:
                self._fetched_profiles[id(image)] = await state.shared_icc_profile()
        self._profiles_loaded = True
        if self._fetched_profiles:
            self._profile_bytes = self._find_profile()
            self._properties = self._build_properties()

    def _build_properties(self) -> dict[str, str]:
        base = self._levels[0].image.metadata
        props: dict[str, str] = {}
        file_meta = getattr(base, "file_meta", None)
        if file_meta is not None:
            _add_dicom_properties(props, "dicom", file_meta)
        _add_dicom_properties(props, "dicom", base)
        spacing_key = (
            "dicom.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing"
        )
        row_mm = _parse_double(props.get(f"{spacing_key}[0]"))
        col_mm = _parse_double(props.get(f"{spacing_key}[1]"))
        if row_mm is None or col_mm is None:
            # Per-frame spacing only: OpenSlide would leave mpp out; the slide knows it.
            row_mm, col_mm = self._slide.pixel_spacings[0]
        props[PROPERTY_NAME_MPP_X] = _format_double(col_mm * 1000.0)
        props[PROPERTY_NAME_MPP_Y] = _format_double(row_mm * 1000.0)
        power = _parse_double(props.get("dicom.OpticalPathSequence[0].ObjectiveLensPower"))
        if power is not None:
            props[PROPERTY_NAME_OBJECTIVE_POWER] = _format_double(power)
        comment = str(base.get("ImageComments", "") or base.get("SeriesDescription", "") or "")
        if comment:
            props[PROPERTY_NAME_COMMENT] = comment
        props[PROPERTY_NAME_VENDOR] = "dicom"
        props[PROPERTY_NAME_BACKGROUND_COLOR] = "FFFFFF"
        series_uid = str(base.get("SeriesInstanceUID", ""))
        props[PROPERTY_NAME_QUICKHASH1] = hashlib.sha256(
            series_uid.encode("ascii", "replace") + b"\0"
        ).hexdigest()
        if self._profile_bytes is not None:
            props["openslide.icc-size"] = str(len(self._profile_bytes))
        props["openslide.level-count"] = str(len(self._levels))
        for i, lv in enumerate(self._levels):
            props[f"openslide.level[{i}].width"] = str(lv.width)
            props[f"openslide.level[{i}].height"] = str(lv.height)
            props[f"openslide.level[{i}].downsample"] = _format_double(lv.downsample)
            props[f"openslide.level[{i}].tile-width"] = str(lv.tile_width)
            props[f"openslide.level[{i}].tile-height"] = str(lv.tile_height)
        for name, image in self._associated_sources().items():
            rows, columns = image.size
            props[f"openslide.associated.{name}.width"] = str(columns)
            props[f"openslide.associated.{name}.height"] = str(rows)
            profile = self._find_profile(image)
            if profile is not None:
                props[f"openslide.associated.{name}.icc-size"] = str(len(profile))
        return props

    # --- associated images --------------------------------------------------------------

    def _associated_sources(self) -> dict[str, TiledImage]:
        sources: dict[str, TiledImage] = {}
        for name, images in (
            ("label", self._slide.label_images),
            ("macro", self._slide.overview_images),
            ("thumbnail", self._slide.thumbnail_images),
        ):
            for image in images:
                if image.get_total_pixel_matrix().dtype == np.uint8:
                    sources[name] = image
                    break
        return sources

    @property
    def associated_image_names(self) -> list[str]:
        """list[str]: OpenSlide's names of the associated images the slide has (some of ``label``,
        ``macro`` and ``thumbnail``).
        """
        self.check_open()
        return list(self._associated_sources())

    @translate_errors_async
    async def read_associated_image(self, name: str) -> Image.Image:
        """Read one associated image, as OpenSlide does.

        Parameters
        ----------
        name: str
            ``label``, ``macro`` or ``thumbnail`` (or ``LABEL`` / ``OVERVIEW`` of dicomslide 0.7)

        Returns
        -------
        PIL.Image.Image
            Opaque RGBA image; ``info['icc_profile']`` is its profile (the very object of
            :attr:`color_profile`'s bytes when equal, as openslide-python shares it)

        Raises
        ------
        KeyError
            If the slide has no such image
        """
        self.check_open()
        await self.load_profiles()
        sources = self._associated_sources()
        source = sources.get(ASSOCIATED_ALIASES.get(name, name))
        if source is None:
            raise KeyError(name)
        array = await source.get_image_region((0, 0), source.size, 0, 0)
        image = _opaque_rgba(array)
        profile = self._find_profile(source)
        if profile is not None:
            image.info["icc_profile"] = (
                self._profile_bytes if profile == self._profile_bytes else profile
            )
        return image

    async def get_associated_images(self) -> dict[str, Image.Image]:
        """Read the associated images.

        Returns
        -------
        dict[str, PIL.Image.Image]
            RGBA images under OpenSlide's names ``label``, ``macro`` and ``thumbnail`` (those
            the slide has), plus ``LABEL`` and ``OVERVIEW`` as dicomslide 0.7 named them
        """
        names = self.associated_image_names
        images = await asyncio.gather(*(self.read_associated_image(n) for n in names))
        result = dict(zip(names, images, strict=True))
        if "label" in result:
            result["LABEL"] = result["label"]
        if "macro" in result:
            result["OVERVIEW"] = result["macro"]
        return result

    # --- pixels -------------------------------------------------------------------------

    def _attach_profile(self, image: Image.Image) -> Image.Image:
        if self._profile_bytes is not None:
            image.info["icc_profile"] = self._profile_bytes
        return image

    @translate_errors_async
    async def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> Image.Image:
        """Read a region, exactly as OpenSlide renders it.

        Parameters
        ----------
        location: tuple[int, int]
            (x, y) of the region's top left pixel in level-0 pixels; may be negative or lie
            outside the image
        level: int
            Zero-based level
        size: tuple[int, int]
            (width, height) of the region at ``level``

        Returns
        -------
        PIL.Image.Image
            RGBA image of exactly ``size`` pixels, not premultiplied; alpha is 0 outside the
            image and in missing tiles, 255 inside. A level that does not exist gives a
            transparent image, as in OpenSlide.

        Raises
        ------
        dicomslide.RegionError
            If the size is negative (also an ``openslide.OpenSlideError``)
        """
        self.check_open()
        await self.load_profiles()
        x, y = int_pair(location, "Location")
        w, h = int_pair(size, "Size")
        if isinstance(level, bool) or not isinstance(level, int | np.integer):
            raise RegionError(f"Level must be an integer, got {level!r}.")
        if w < 0 or h < 0:
            raise RegionError(
                f"read_region{(location, level, size)}: negative width ({w}) or negative "
                f"height ({h}) not allowed."
            )
        out = np.zeros((h, w, 4), dtype=np.uint8)
        if not 0 <= level < len(self._levels):
            # OpenSlide answers with transparent pixels; viewers probe levels this way.
            return self._attach_profile(Image.fromarray(out, "RGBA"))
        lv = self._levels[int(level)]
        origin = _copy_origin(lv, x, y, w, h)
        if origin is not None:
            # Painting would copy every pixel unchanged: skip the mosaic and the alpha work.
            return self._attach_profile(_opaque_rgba(await lv.matrix.read_region(origin, (h, w))))
        ds = lv.downsample
        # Same piecewise painting as openslide_read_region, including its truncation of the
        # level-0 start of each piece.
        for row in range((h + _CHUNK - 1) // _CHUNK):
            for col in range((w + _CHUNK - 1) // _CHUNK):
                sx = int(x + (col * _CHUNK) * ds)
                sy = int(y + (row * _CHUNK) * ds)
                sw = min(w - col * _CHUNK, _CHUNK)
                sh = min(h - row * _CHUNK, _CHUNK)
                piece = out[row * _CHUNK : row * _CHUNK + sh, col * _CHUNK : col * _CHUNK + sw]
                await self._paint(piece, sx, sy, lv)
        return self._attach_profile(Image.fromarray(_unpremultiply(out), "RGBA"))

    async def _paint(self, out: npt.NDArray[np.uint8], x: int, y: int, lv: _Level) -> None:
        """Paint one piece (premultiplied RGBA) the way OpenSlide's DICOM driver does."""
        h, w = out.shape[:2]
        ds = lv.downsample
        tx = ty = 0
        if x < 0:
            tx = int(-x / ds)
            x = 0
            w -= tx
        if y < 0:
            ty = int(-y / ds)
            y = 0
            h -= ty
        if w <= 0 or h <= 0:
            return
        xl = x / ds
        yl = y / ds
        tw, th = lv.tile_width, lv.tile_height
        tiles_down, tiles_across = lv.present.shape
        start_tx = int(xl / tw)
        start_ty = int(yl / th)
        end_tx = math.ceil((xl + w) / tw)
        end_ty = math.ceil((yl + h) / th)
        if end_tx <= 0 or end_ty <= 0 or start_tx > tiles_across - 1 or start_ty > tiles_down - 1:
            return
        end_tx = min(end_tx, tiles_across)
        end_ty = min(end_ty, tiles_down)
        offset_x = xl - start_tx * tw
        offset_y = yl - start_ty * th
        mosaic = await self._read_tiles(lv, start_ty, end_ty, start_tx, end_tx)
        # OpenSlide draws the tiles last to first; SATURATE makes the order matter at seams.
        for tile_y in range(end_ty - 1, start_ty - 1, -1):
            for tile_x in range(end_tx - 1, start_tx - 1, -1):
                if not lv.present[tile_y, tile_x]:
                    continue
                r0 = (tile_y - start_ty) * th
                c0 = (tile_x - start_tx) * tw
                tile = mosaic[r0 : r0 + th, c0 : c0 + tw]
                translate_x = tx + ((tile_x - start_tx) * tw - offset_x)
                translate_y = ty + ((tile_y - start_ty) * th - offset_y)
                _paint_tile(out, tile, translate_x, translate_y)

    async def _read_tiles(
        self, lv: _Level, start_ty: int, end_ty: int, start_tx: int, end_tx: int
    ) -> npt.NDArray[np.uint8]:
        """Premultiplied RGBA of whole tiles; transparent beyond the image and in gaps."""
        th, tw = lv.tile_height, lv.tile_width
        top, left = start_ty * th, start_tx * tw
        rows, cols = (end_ty - start_ty) * th, (end_tx - start_tx) * tw
        pixels = await lv.matrix.read_region((top, left), (rows, cols))
        # Slices, not boolean masks: this runs on the event loop for every tile a server sends.
        rgba = np.empty((rows, cols, 4), dtype=np.uint8)
        rgba[..., :3] = pixels[..., :3]
        rgba[..., 3] = 255
        rgba[max(0, lv.height - top) :] = 0
        rgba[:, max(0, lv.width - left) :] = 0
        present = lv.present[start_ty:end_ty, start_tx:end_tx]
        for ty, tx in np.argwhere(~present):
            rgba[ty * th : (ty + 1) * th, tx * tw : (tx + 1) * tw] = 0
        return rgba

    @translate_errors_async
    async def get_thumbnail(self, size: tuple[int, int]) -> Image.Image:
        """Thumbnail of the slide, computed as openslide-python does.

        The level is the best one for ``max(width / size[0], height / size[1])``; it is read
        whole, flattened onto the background colour and shrunk with Lanczos resampling,
        keeping the aspect ratio and never enlarging.

        Parameters
        ----------
        size: tuple[int, int]
            Largest (width, height) of the thumbnail

        Returns
        -------
        PIL.Image.Image
            RGB image
        """
        self.check_open()
        sw, sh = int_pair(size, "Size")
        if sw < 1 or sh < 1:
            raise RegionError(f"Thumbnail size must be positive, got {size!r}.")
        downsample = max(dim / want for dim, want in zip(self.dimensions, (sw, sh), strict=True))
        level = self.get_best_level_for_downsample(downsample)
        region = await self.read_region((0, 0), level, self.level_dimensions[level])
        background = "#" + self._properties.get(PROPERTY_NAME_BACKGROUND_COLOR, "ffffff")
        thumb = Image.new("RGB", region.size, background)
        thumb.paste(region, None, region)
        thumb.thumbnail((sw, sh), Image.Resampling.LANCZOS)
        return self._attach_profile(thumb)


# --- rendering like cairo and pixman ------------------------------------------------------


def _copy_origin(lv: _Level, x: int, y: int, w: int, h: int) -> tuple[int, int] | None:
    """(row, column) at `lv` of a region that painting would copy unchanged, else None.

    That is a non-empty region inside the level, starting on a whole level pixel (so every
    tile lands on whole pixels), with every tile under it present (no transparent gap).
    """
    ds = lv.downsample
    if w < 1 or h < 1 or x < 0 or y < 0 or ds != int(ds) or x % ds or y % ds:
        return None
    left, top = int(x // ds), int(y // ds)
    if left + w > lv.width or top + h > lv.height:
        return None
    th, tw = lv.tile_height, lv.tile_width
    under = lv.present[top // th : (top + h - 1) // th + 1, left // tw : (left + w - 1) // tw + 1]
    return (top, left) if bool(under.all()) else None


def _paint_tile(
    out: npt.NDArray[np.uint8],
    tile: npt.NDArray[np.uint8],
    translate_x: float,
    translate_y: float,
) -> None:
    """Composite one premultiplied tile at a device translation like cairo and pixman."""
    # cairo samples a translated surface with NEAREST when the translation is a whole pixel
    # in its 24.8 fixed point, else bilinearly at the 16.16 fixed point offset.
    px, py = -translate_x, -translate_y
    if _round_half_even(px * 256) % 256 == 0 and _round_half_even(py * 256) % 256 == 0:
        # Tiles placed on whole pixels never overlap, so the pixels are still transparent
        # and SATURATE leaves the tile's values unchanged.
        _place(out, tile, -math.ceil(py - 0.5), -math.ceil(px - 0.5))
        return
    fx = _round_half_even(px * 65536)
    fy = _round_half_even(py * 65536)
    # pixman's floating point bilinear fetcher: 16-bit weights, single precision.
    dx = np.float32(fx & 0xFFFF) / np.float32(65536.0)
    dy = np.float32(fy & 0xFFFF) / np.float32(65536.0)
    one = np.float32(1.0)
    w_tl = (one - dx) * (one - dy)
    w_tr = dx * (one - dy)
    w_bl = (one - dx) * dy
    w_br = dx * dy
    th, tw = tile.shape[:2]
    padded = np.zeros((th + 2, tw + 2, 4), dtype=np.float32)
    padded[1:-1, 1:-1] = tile.astype(np.float32) * _INV_255
    # Weights are float32 scalars, so NumPy stays in single precision as pixman does.
    sampled = cast(
        "npt.NDArray[np.float32]",
        padded[:-1, :-1] * w_tl
        + padded[:-1, 1:] * w_tr
        + padded[1:, :-1] * w_bl
        + padded[1:, 1:] * w_br,
    )
    # sampled[m, n] starts at tile pixel (m - 1, n - 1); the device pixel whose sample starts
    # at tile column k is k - floor(px).
    _saturate(out, sampled, -1 - (fy >> 16), -1 - (fx >> 16))


_INV_255 = np.float32(1.0) / np.float32(255.0)


def _place(out: npt.NDArray[np.uint8], src: npt.NDArray[np.uint8], top: int, left: int) -> None:
    h, w = out.shape[:2]
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + src.shape[0], h), min(left + src.shape[1], w)
    if r0 < r1 and c0 < c1:
        out[r0:r1, c0:c1] = src[r0 - top : r1 - top, c0 - left : c1 - left]


def _saturate(
    out: npt.NDArray[np.uint8], src: npt.NDArray[np.float32], top: int, left: int
) -> None:
    """pixman's floating point SATURATE of ``src`` with its corner at (top, left) onto out."""
    h, w = out.shape[:2]
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + src.shape[0], h), min(left + src.shape[1], w)
    if r0 >= r1 or c0 >= c1:
        return
    s = src[r0 - top : r1 - top, c0 - left : c1 - left]
    d = out[r0:r1, c0:c1].astype(np.float32) * _INV_255
    sa = s[..., 3:4]
    da = d[..., 3:4]
    one = np.float32(1.0)
    tiny = np.finfo(np.float32).tiny
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(sa < tiny, one, np.clip((one - da) / sa, 0, 1)).astype(np.float32)
    result = np.minimum(one, s * factor + d)
    # pixman_float_to_unorm: truncate f * 256, then fold 256 back to 255.
    u = (result * np.float32(256.0)).astype(np.int32)
    u -= u >> 8
    out[r0:r1, c0:c1] = u.astype(np.uint8)


def _unpremultiply(rgba: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """openslide-python's conversion: colour * 255 // alpha for partly transparent pixels."""
    alpha = rgba[..., 3]
    partial = (alpha > 0) & (alpha < 255)
    if not np.any(partial):
        return rgba
    result: npt.NDArray[np.uint8] = rgba.copy()
    a = alpha[partial].astype(np.int64)[:, None]
    result[partial, :3] = np.minimum(rgba[partial, :3].astype(np.int64) * 255 // a, 255)
    return result


def _opaque_rgba(array: npt.NDArray[Any]) -> Image.Image:
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    rgba = np.empty((*array.shape[:2], 4), dtype=np.uint8)
    rgba[..., :3] = array[..., :3]
    rgba[..., 3] = 255
    return Image.fromarray(rgba, "RGBA")


# --- properties ---------------------------------------------------------------------------


def _parse_double(value: str | None) -> float | None:
    if not value:
        return None
    try:
        result = float(value.replace(",", "."))
    except ValueError:
        return None
    return result if math.isfinite(result) else None


def _value_strings(elem: DataElement) -> list[str] | None:
    """Values of an element as OpenSlide writes them, or None for values it leaves out."""
    vr = str(elem.VR)
    if vr in _BINARY_VRS:
        return None
    raw = elem.value
    values = list(raw) if isinstance(raw, MultiValue | list | tuple) else [raw]
    if vr == "AT":
        # libdicom reads an attribute tag as two 16-bit numbers: group and element.
        out: list[str] = []
        for tag in values:
            if tag is None:
                continue
            t = BaseTag(int(tag))
            out += [str(t.group), str(t.element)]
        return out
    if raw is None or (vr not in _DECIMAL_VRS | _INTEGER_VRS and raw == ""):
        return [""]
    strings: list[str] = []
    for v in values:
        if vr in _DECIMAL_VRS:
            strings.append(_format_double(float(v)))
        elif vr in _INTEGER_VRS:
            strings.append(str(int(v)))
        elif vr in ("DS", "IS"):
            original = getattr(v, "original_string", None)
            strings.append(str(original if original is not None else v).strip())
        else:
            strings.append(str(v))
    return strings


def _add_dicom_properties(props: dict[str, str], prefix: str, dataset: Dataset) -> None:
    for elem in dataset:
        keyword = elem.keyword
        if not keyword or keyword in _SKIPPED_KEYWORDS or elem.tag.element == 0:
            continue
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value):
                _add_dicom_properties(props, f"{prefix}.{keyword}[{i}]", item)
            continue
        strings = _value_strings(elem)
        if strings is None:
            continue
        if elem.VR in _SINGLE_STRING_VRS:
            strings = ["\\".join(strings)]
        if len(strings) == 1:
            props[f"{prefix}.{keyword}"] = strings[0]
        else:
            for i, s in enumerate(strings):
                props[f"{prefix}.{keyword}[{i}]"] = s


# --- opening ------------------------------------------------------------------------------


def _split_dicomweb_url(url: str) -> tuple[str, str | None, str | None]:
    """Base URL, study and series of ``{base}[/studies/{study}[/series/{series}]]``."""
    parts = url.rstrip("/").split("/")
    study = series = None
    if "studies" in parts:
        i = parts.index("studies")
        if i + 1 < len(parts):
            study = parts[i + 1]
        if i + 3 < len(parts) and parts[i + 2] == "series":
            series = parts[i + 3]
        parts = parts[:i]
    return "/".join(parts), study, series


class _SeriesOnly:
    """A source seen through one series: what a DICOMweb series URL names."""

    def __init__(self, source: Any, series_instance_uid: str) -> None:
        self._source = source
        self._series = series_instance_uid

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    async def search_for_series(
        self, study_instance_uid: str | None = None, search_filters: Any = None
    ) -> list[Any]:
        filters = {**(search_filters or {}), "SeriesInstanceUID": self._series}
        found: list[Any] = await self._source.search_for_series(study_instance_uid, filters)
        return [ds for ds in found if str(ds.get("SeriesInstanceUID", "")) == self._series]


async def open_slide(
    source: str | os.PathLike[str] | Any,
    *,
    channel_index: int = 0,
    focal_plane_index: int = 0,
    **kwargs: Any,
) -> OpenSlide:
    """Open the one slide of a folder or client through the OpenSlide interface.

    Parameters
    ----------
    source: str | os.PathLike[str] | Any
        Folder of DICOM files, one DICOM file of a slide (as OpenSlide is given one: the
        slide is that file's series, read from the file's folder), or a DICOMweb URL
        (``{base}``, ``{base}/studies/{study}`` or ``{base}/studies/{study}/series/{series}``)
        — for these a client is created and closed with the returned object — or a client
    channel_index: int, optional
        Zero-based channel served
    focal_plane_index: int, optional
        Zero-based focal plane served
    **kwargs: Any
        Passed to :func:`dicomslide.find_slides` (e.g. ``container_id``, ``correct_color``)

    Returns
    -------
    dicomslide.OpenSlide
        The slide

    Raises
    ------
    dicomslide.NotFoundError
        If the source holds no slide (also an ``openslide.OpenSlideUnsupportedFormatError``
        when openslide-python is installed)
    dicomslide.ArgumentError
        If it holds more than one slide (a ``ValueError``, as the RegionError it was)
    """
    try:
        return await _open_slide(source, channel_index, focal_plane_index, kwargs)
    except DicomSlideError as exc:
        as_openslide_error(exc, opening=True)
        raise


def _series_of_file(path: str | os.PathLike[str]) -> tuple[Path, str] | None:
    """Folder and Series Instance UID of a file given to open; None for a folder."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    if not os.path.isfile(path):
        return None
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise NotFoundError(f"{os.fspath(path)!r} is not a readable DICOM file: {exc}") from exc
    series = str(ds.get("SeriesInstanceUID", "") or "")
    if not series:
        raise NotFoundError(f"{os.fspath(path)!r} has no Series Instance UID.")
    return Path(path).absolute().parent, series


async def _open_slide(
    source: Any, channel_index: int, focal_plane_index: int, kwargs: dict[str, Any]
) -> OpenSlide:
    owned: Any = None
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        from dicomslide.sources.web import DICOMwebClient

        base, study, series = _split_dicomweb_url(source)
        if study is not None:
            kwargs.setdefault("study_instance_uid", study)
        owned = DICOMwebClient(base)
        client: Any = owned
        if series is not None:
            client = _SeriesOnly(owned, series)
    elif isinstance(source, str | os.PathLike):
        from dicomslide.sources.local import DICOMfileClient

        found = await asyncio.to_thread(_series_of_file, source)
        if found is not None:
            owned = DICOMfileClient(found[0])
            client = _SeriesOnly(owned, found[1])
        else:
            owned = DICOMfileClient(source)
            client = owned
    else:
        client = source
    try:
        slides = await find_slides(client, **kwargs)
        if not slides:
            raise NotFoundError(f"No slide found in {source!r}.")
        if len(slides) > 1:
            ids = ", ".join(sorted(repr(s.container_id) for s in slides))
            raise ArgumentError(
                f"{source!r} holds {len(slides)} slides (container IDs {ids}); pass "
                "container_id=... to open_slide, or use find_slides(client) and "
                "OpenSlide(slide) to choose one."
            )
        osr = OpenSlide(
            slides[0], channel_index=channel_index, focal_plane_index=focal_plane_index
        )
        await osr.load_profiles()
    except BaseException:
        if owned is not None:
            await owned.aclose()
        raise
    osr.adopt_client(owned)
    return osr

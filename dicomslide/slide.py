"""Slides: every image of one glass slide, as channels x focal planes x pyramid levels (async).

How images become a slide
-------------------------
* Images are grouped into slides by Frame of Reference UID and Container Identifier. Images
  without a Frame of Reference UID (some converters omit it) are grouped by Study Instance UID,
  Series Instance UID and Container Identifier instead. Groups of one series (or Pyramid UID)
  that are levels of one pyramid are merged, and groups without a VOLUME or THUMBNAIL image
  are skipped with a warning (see :mod:`dicomslide.grouping`).
* Derived images (Segmentations, Parametric Maps) join the slides in their frame of
  reference. A slide without a Frame of Reference UID gets those that name its series in their
  Referenced Series Sequence (Common Instance Reference module), whatever their own frame of
  reference (highdicom needs one in the source to derive from a tiled image).
* Parts of a concatenation (same Concatenation UID) are merged into one :class:`TiledImage`.
* VOLUME and THUMBNAIL images form the pyramid; LABEL and OVERVIEW images are kept aside.
  Missing Image Type is handled by :mod:`dicomslide.utils` (tiled images count as VOLUME).
* Channels are the optical paths of the slide microscopy images (by Optical Path Identifier),
  followed by the segments of Segmentations (label maps included: one channel per segment,
  read as its mask) and the parameter of each Parametric Map when derived images are
  included. Focal planes are the distinct Z offsets of the volume images,
  ascending. Levels are the distinct total pixel matrix sizes, largest first.

This module holds the :class:`Slide` class; finding and grouping slides is in
:mod:`dicomslide.discovery` (``find_slides`` is importable from here too) and the region of an
annotation in :mod:`dicomslide.annotation`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import numpy as np
from pydicom import Dataset

from dicomslide._args import int_pair
from dicomslide._docs import borrowed_doc
from dicomslide._tags import (
    COLUMNS,
    CONCATENATION_UID as _CONCATENATION_UID,
    CONTAINER_IDENTIFIER as _CONTAINER_IDENTIFIER,
    IMAGE_ORIENTATION_SLIDE as _IMAGE_ORIENTATION_SLIDE,
    ROWS,
    SERIES_INSTANCE_UID as _SERIES_INSTANCE_UID,
    SOP_CLASS_UID as _SOP_CLASS_UID,
    SOP_INSTANCE_UID as _SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID as _STUDY_INSTANCE_UID,
    TOTAL_PIXEL_MATRIX_COLUMNS,
    TOTAL_PIXEL_MATRIX_ROWS,
)
from dicomslide.annotation import annotation_region
from dicomslide.enums import ChannelTypes, ImageFlavors
from dicomslide.errors import IndexRangeError, InvalidDataError, RegionError
from dicomslide.frames import CacheStats
from dicomslide.geometry import find_focal_plane_index, get_channel_items
from dicomslide.grouping import (
    describe,
)
from dicomslide.image import TiledImage
from dicomslide.perframe import first_item_decimals, get_value
from dicomslide.pyramid import Pyramid
from dicomslide.runtime import as_source, get_cache_stats
from dicomslide.sources.protocol import Source
from dicomslide.summary import summarised
from dicomslide.utils import (
    DERIVED_SOP_CLASS_UIDS as _DERIVED_SOP_CLASSES,
    VL_WHOLE_SLIDE_MICROSCOPY_SOP_CLASS_UID,
    compute_image_center_position,
    does_optical_path_item_match,
    does_segment_item_match,
    does_specimen_description_item_match,
    get_image_flavor,
    is_tiled_image,
)

# find_slides comes from dicomslide.discovery through the module __getattr__ below.
__all__ = ["ResolvedImage", "Slide", "find_slides"]  # noqa: F822


class ResolvedImage(NamedTuple):
    """Where the pixels of a slide's level, channel and focal plane are (see
    :meth:`Slide.resolve`).

    Attributes
    ----------
    image: dicomslide.TiledImage
        The image that holds them
    image_channel_index: int
        Zero-based channel index within ``image``
    image_focal_plane_index: int
        Zero-based focal plane index within ``image``
    level: int
        Zero-based level of the slide (a negative level resolved)
    """

    image: TiledImage
    image_channel_index: int
    image_focal_plane_index: int
    level: int


@dataclass
class _Channel:
    type: ChannelTypes
    identifier: str
    # The image and channel index whose item describes the channel: the item is read when a
    # search asks for it, so that opening a slide need not load sequences (dicomslide.summary).
    described_by: tuple[TiledImage, int]
    # (level, plane) -> (image, channel index in image, plane index in image)
    images: dict[tuple[int, int], tuple[TiledImage, int, int]] = field(default_factory=dict)
    _item: Dataset | None = None

    @property
    def item(self) -> Dataset:
        if self._item is None:
            image, index = self.described_by
            self._item = _channel_items(image)[index]
        return self._item


_REQUIRED_UIDS = (
    ("StudyInstanceUID", _STUDY_INSTANCE_UID),
    ("SeriesInstanceUID", _SERIES_INSTANCE_UID),
    ("SOPInstanceUID", _SOP_INSTANCE_UID),
)
_POSITIVE_INTS = (
    ("Rows", ROWS),
    ("Columns", COLUMNS),
    ("TotalPixelMatrixRows", TOTAL_PIXEL_MATRIX_ROWS),
    ("TotalPixelMatrixColumns", TOTAL_PIXEL_MATRIX_COLUMNS),
)

#: Where find_slides reports what it skips (images that cannot form a slide).
logger = logging.getLogger(__name__)

# Parameters entries of the methods that read the image of a level, channel and focal plane
# and otherwise take the parameters of the TiledImage method they call.
_LEVEL_ENTRY = """level: int
    Zero-based level index (negative counts from the top)"""
_PLANES_ENTRY = """channel_index, focal_plane_index: int, optional
    Zero-based channel and focal plane indices"""
_F = TypeVar("_F", bound=Callable[..., Any])


def _at_level(method: Callable[..., Any]) -> Callable[[_F], _F]:
    """Borrow the sections of a TiledImage method for the Slide method calling it at a level."""
    return borrowed_doc(method, after_first=_LEVEL_ENTRY, at_end=_PLANES_ENTRY)


@summarised("valid")
def validate_image_metadata(ds: Dataset) -> None:
    """Check the attributes every tiled image needs, before anything relies on them.

    Parameters
    ----------
    ds: pydicom.Dataset
        Image metadata

    Raises
    ------
    dicomslide.errors.InvalidDataError
        Naming the image and the attribute that is missing or unusable
    """
    uid = get_value(ds, _SOP_INSTANCE_UID, "(no SOP Instance UID)")
    for keyword, tag in _REQUIRED_UIDS:
        if not str(get_value(ds, tag, "") or ""):
            raise InvalidDataError(f"Image {uid} lacks the required attribute {keyword}.")
    for keyword, tag in _POSITIVE_INTS:
        try:
            value = int(get_value(ds, tag))
        except (TypeError, ValueError):
            raise InvalidDataError(
                f"Image {uid} has no usable {keyword}: {get_value(ds, tag)!r}."
            ) from None
        if not 0 < value <= 2**31 - 1:
            raise InvalidDataError(f"Image {uid} has {keyword} = {value}; it must be positive.")
    cosines = first_item_decimals(ds, (_IMAGE_ORIENTATION_SLIDE,), 6)
    if isinstance(cosines, tuple) and all(abs(v) <= 1.0 + 1e-6 for v in cosines):
        return  # read from the raw bytes; anything else is judged (and reported) below
    orientation = get_value(ds, _IMAGE_ORIENTATION_SLIDE)
    if orientation is not None:
        values = [orientation] if isinstance(orientation, str | int | float) else orientation
        try:
            ok = len(values) == 6 and all(abs(float(v)) <= 1.0 + 1e-6 for v in values)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InvalidDataError(
                f"Image {uid} has Image Orientation (Slide) {orientation!r}; it needs six "
                "direction cosines."
            )


def _share_icc_profiles(volume: Sequence[TiledImage]) -> None:
    """Let images with equal optical paths fetch one ICC profile, from the smallest of them.

    Over DICOMweb each level's profile is bulk data, and servers such as Orthanc parse the
    whole instance to answer a bulk data request (~270 ms for a 108 MB level 0, ~1 ms for the
    smallest level). Levels whose Optical Path Sequences are equal element by element (the
    profiles themselves are bulk data, so they compare as empty) describe the same optical
    path, whose ICC profile the standard defines per optical path; the profile is fetched
    once, from the smallest such image. Images whose profile is in the metadata (local
    files) use their own.
    """
    fetched = [
        (image.reader, paths)
        for image in volume
        # The URI first: it is summarised, the sequence is not (see dicomslide.summary).
        if image.reader.icc_profile_uri() is not None
        and (paths := image.reader.metadata.get("OpticalPathSequence"))
    ]
    for i, (state, paths) in enumerate(fetched):
        for other, other_paths in reversed(fetched[i + 1 :]):  # smallest first
            if other_paths == paths:
                state.icc_donor = other
                break


def _group_concatenations(metadata: Sequence[Dataset]) -> list[list[Dataset]]:
    groups: dict[str, list[Dataset]] = {}
    for ds in metadata:
        key = str(get_value(ds, _CONCATENATION_UID, "") or get_value(ds, _SOP_INSTANCE_UID, ""))
        groups.setdefault(key, []).append(ds)
    return list(groups.values())


# Channels by type: optical paths, then parameters, then segments. Fixed here, not taken from
# the iteration order of ChannelTypes (which follows 0.7), so channel indices stay as they were.
_CHANNEL_ORDER = (ChannelTypes.OPTICAL_PATH, ChannelTypes.PARAMETER, ChannelTypes.SEGMENT)


def _normalize_level(level: int, count: int) -> int:
    if not isinstance(level, int | np.integer) or isinstance(level, bool):
        raise RegionError(f"Level must be an integer, got {level!r}.")
    i = int(level)
    if not -count <= i < count:
        raise IndexRangeError(
            f"Level {i} is out of range: this slide has {count} levels, valid are "
            f"0..{count - 1} (or -{count}..-1 counting from the top)."
        )
    return i % count


class Slide:
    """A digital slide: the images of one glass slide in one frame of reference.

    Channel and focal plane indices and identifiers work as for :class:`~dicomslide.TiledImage`.

    Parameters
    ----------
    client: Any
        A dicomslide client or a ``dicomweb_client.DICOMClient``
    image_metadata: Sequence[pydicom.Dataset]
        Metadata of the VL Whole Slide Microscopy Image instances (and derived Segmentation or
        Parametric Map instances) of the slide
    max_frame_cache_size: int, optional
        Accepted for compatibility with dicomslide 0.7; frames are cached per client in a
        byte-bounded cache (see :attr:`cache_stats`)
    pyramid_tolerance: float, optional
        Largest tolerated distance (mm) between the centres of images at different levels
    correct_color: bool, optional
        Whether colour images are transformed from their ICC profile to sRGB

    Raises
    ------
    dicomslide.errors.InvalidDataError
        When an image lacks a required attribute, no image is a VOLUME or THUMBNAIL image
        (the message names their series), or levels are not aligned
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
        self._image_metadata = list(image_metadata)
        self._source: Source = as_source(client)
        self._correct_color = correct_color
        self._max_frame_cache_size = max_frame_cache_size
        self._pyramid_tolerance = pyramid_tolerance
        # A whole-slide image with unusable size attributes is an error here, not a level
        # silently left out (the next level would take its place).
        metadata = [
            ds
            for ds in image_metadata
            if is_tiled_image(ds)
            or str(get_value(ds, _SOP_CLASS_UID, "")) == VL_WHOLE_SLIDE_MICROSCOPY_SOP_CLASS_UID
        ]
        for ds in metadata:
            validate_image_metadata(ds)
        if not metadata:
            raise RegionError("A slide needs the metadata of at least one tiled image.")
        volume: list[TiledImage] = []
        derived: list[TiledImage] = []
        self._labels: list[TiledImage] = []
        self._overviews: list[TiledImage] = []
        self._thumbnails: list[TiledImage] = []
        for parts in _group_concatenations(metadata):
            try:
                flavor = get_image_flavor(parts[0])
            except InvalidDataError:
                continue
            image = TiledImage(
                self._source,
                parts[0],
                correct_color=correct_color,
                concatenation_parts=parts,
            )
            sop_class = str(get_value(parts[0], _SOP_CLASS_UID, ""))
            if flavor is ImageFlavors.LABEL:
                self._labels.append(image)
            elif flavor is ImageFlavors.OVERVIEW:
                self._overviews.append(image)
            elif sop_class in _DERIVED_SOP_CLASSES:
                derived.append(image)
            else:
                if flavor is ImageFlavors.THUMBNAIL:
                    self._thumbnails.append(image)
                volume.append(image)
        if not volume:
            # The images were given, but they cannot form a slide: bad data, not a bad argument.
            raise InvalidDataError(
                "None of the given images is a VOLUME or THUMBNAIL slide microscopy image: "
                f"{describe(metadata)}."
            )
        # Largest first; at equal size a VOLUME level before a THUMBNAIL of that size, so
        # that the level reads the same whatever order the images came in.
        thumbnails = {id(im) for im in self._thumbnails}
        volume.sort(key=lambda im: (-math.prod(im.size), id(im) in thumbnails))
        volume = _drop_unaligned_untyped(volume, pyramid_tolerance)
        self._volume = volume
        _share_icc_profiles(volume)
        self._pyramid = Pyramid(
            [im.metadata for im in volume],
            pyramid_tolerance,
        )
        sizes = [lvl.total_pixel_matrix_dimensions for lvl in self._pyramid]
        level_of = {dims: i for i, dims in enumerate(sizes)}
        planes = sorted({round(z, 6) for im in volume for z in im.focal_plane_offsets})
        self._focal_planes = tuple(planes)
        plane_of = {z: i for i, z in enumerate(planes)}
        self._channels: list[_Channel] = []
        channel_of: dict[tuple[ChannelTypes, str, int], _Channel] = {}
        for image in [*volume, *derived]:
            level = level_of.get(image.size)
            if level is None:
                continue  # a derived image at a size no slide level has
            ctype = image.channel_type
            for c, identifier in enumerate(image.channel_identifiers):
                if ctype is ChannelTypes.PARAMETER:
                    identifier = _parameter_identifier(image.metadata, c)
                keys = [(level, plane_of.get(round(z, 6), 0)) for z in image.focal_plane_offsets]
                channel, registry_key = _find_channel(channel_of, image, ctype, identifier, keys)
                if channel is None:
                    channel = _Channel(ctype, identifier, (image, c))
                    channel_of[registry_key] = channel
                    self._channels.append(channel)
                for z, key in enumerate(keys):
                    channel.images.setdefault(key, (image, c, z))
        self._channels.sort(key=lambda ch: _CHANNEL_ORDER.index(ch.type))
        self._specimens: list[Dataset] | None = None

    @property
    def _specimen_items(self) -> list[Dataset]:
        # Read on first use: opening a slide need not load the sequence (dicomslide.summary).
        if self._specimens is None:
            items = self._volume[0].metadata.get("SpecimenDescriptionSequence", [])
            self._specimens = list(items)
        return self._specimens

    # --- properties ---------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """Any: The client the slide reads from."""
        return self._client

    @property
    def correct_color(self) -> bool:
        """bool: Whether colour images are transformed from their ICC profile to sRGB (as the slide
        was opened).
        """
        return self._correct_color

    @property
    def max_frame_cache_size(self) -> int:
        """int: The ``max_frame_cache_size`` the slide was opened with (kept for re-opening)."""
        return self._max_frame_cache_size

    @property
    def pyramid_tolerance(self) -> float:
        """float: Largest tolerated distance (mm) between the centres of images at different levels
        (as the slide was opened).
        """
        return self._pyramid_tolerance

    @property
    def image_metadata(self) -> list[Dataset]:
        """list[pydicom.Dataset]: Metadata of every image the slide was built from."""
        return list(self._image_metadata)

    @property
    def cache_stats(self) -> CacheStats:
        """dicomslide.frames.CacheStats: Statistics of the client's frame cache and requests
        (shared by its slides).
        """
        return get_cache_stats(self._source)

    @property
    def pyramid(self) -> Pyramid:
        """dicomslide.Pyramid: Levels of the slide."""
        return self._pyramid

    @property
    def frame_of_reference_uid(self) -> str:
        """str: Frame of Reference UID (empty string when the images have none)."""
        return self._volume[0].frame_of_reference_uid

    @property
    def container_id(self) -> str:
        """str: Container Identifier (the slide's barcode/label text)."""
        return str(get_value(self._volume[0].metadata, _CONTAINER_IDENTIFIER, ""))

    @property
    def num_channels(self) -> int:
        """int: Number of channels: optical paths, segments and parameters of derived images."""
        return len(self._channels)

    @property
    def num_focal_planes(self) -> int:
        """int: Number of focal planes (distinct Z offsets)."""
        return len(self._focal_planes)

    @property
    def num_levels(self) -> int:
        """int: Number of pyramid levels (sorted from the base, largest, to the top, smallest)."""
        return len(self._pyramid)

    @property
    def total_pixel_matrix_dimensions(self) -> tuple[tuple[int, int], ...]:
        """tuple[tuple[int, int], ...]: Total pixel matrix (rows, columns) at each level."""
        return tuple(lvl.total_pixel_matrix_dimensions for lvl in self._pyramid)

    @property
    def downsampling_factors(self) -> tuple[float, ...]:
        """tuple[float, ...]: Downsampling factor of each level relative to the base level: the
        mean of the row and column factors, 1.0 for the base level.
        """
        return tuple(float(np.mean(lvl.downsampling_factors)) for lvl in self._pyramid)

    @property
    def pixel_spacings(self) -> tuple[tuple[float, float], ...]:
        """tuple[tuple[float, float], ...]: Spacing between rows and between columns (mm) at each
        level.
        """
        return tuple(lvl.pixel_spacing for lvl in self._pyramid)

    @property
    def size(self) -> tuple[int, int]:
        """tuple[int, int]: Total pixel matrix (rows, columns) of the base level."""
        return self._pyramid[0].total_pixel_matrix_dimensions

    @property
    def physical_offset(self) -> tuple[float, float]:
        """tuple[float, float]: Smallest (x, y) of the images' Total Pixel Matrix Origins (mm), as
        in 0.7.
        """
        offsets = np.array([im.physical_offset for im in self._volume])
        return float(offsets[:, 0].min()), float(offsets[:, 1].min())

    @property
    def physical_size(self) -> tuple[float, float]:
        """tuple[float, float]: Largest extent (width, height) of the images along the slide X and
        Y axes (mm).
        """
        sizes = np.array([im.physical_size for im in self._volume])
        return float(sizes[:, 0].max()), float(sizes[:, 1].max())

    @property
    def label_images(self) -> tuple[TiledImage, ...]:
        """tuple[dicomslide.TiledImage, ...]: LABEL images of the slide."""
        return tuple(self._labels)

    @property
    def overview_images(self) -> tuple[TiledImage, ...]:
        """tuple[dicomslide.TiledImage, ...]: OVERVIEW images of the slide."""
        return tuple(self._overviews)

    @property
    def thumbnail_images(self) -> tuple[TiledImage, ...]:
        """tuple[dicomslide.TiledImage, ...]: THUMBNAIL images of the slide (they are pyramid
        levels too).
        """
        return tuple(self._thumbnails)

    # --- channels and focal planes ----------------------------------------------------

    def _channel(self, channel_index: int) -> _Channel:
        if not isinstance(channel_index, int | np.integer) or isinstance(channel_index, bool):
            raise RegionError(f"Channel index must be an integer, got {channel_index!r}.")
        if not 0 <= channel_index < len(self._channels):
            raise IndexRangeError(
                f"Channel index {channel_index} is out of range: this slide has "
                f"{len(self._channels)} channel(s), valid are 0..{len(self._channels) - 1}."
            )
        return self._channels[int(channel_index)]

    def _check_plane(self, focal_plane_index: int) -> int:
        n = len(self._focal_planes)
        if not isinstance(focal_plane_index, int | np.integer) or isinstance(
            focal_plane_index, bool
        ):
            raise RegionError(f"Focal plane index must be an integer, got {focal_plane_index!r}.")
        if not 0 <= focal_plane_index < n:
            raise IndexRangeError(
                f"Focal plane index {focal_plane_index!r} is out of range: this slide has {n} "
                f"focal plane(s), valid are 0..{n - 1}."
            )
        return int(focal_plane_index)

    def get_channel_type(self, channel_index: int) -> ChannelTypes:
        """Type of a channel: optical path, segment or parameter (of a Parametric Map)."""
        return self._channel(channel_index).type

    def get_channel_identifier(self, channel_index: int) -> str:
        """Identifier of a channel (optical path identifier or segment number)."""
        return self._channel(channel_index).identifier

    def get_channel_index(
        self, channel_identifier: str, channel_type: str | ChannelTypes = ChannelTypes.OPTICAL_PATH
    ) -> int:
        """Index of the first channel of a type with an identifier.

        Parameters
        ----------
        channel_identifier: str
            Optical path identifier or segment number
        channel_type: str | dicomslide.ChannelTypes, optional
            Channel type

        Returns
        -------
        int
            Zero-based channel index

        Raises
        ------
        ValueError
            When no channel matches
        """
        try:
            ctype = ChannelTypes(channel_type)
        except ValueError:
            raise RegionError(
                f"Unknown channel type {channel_type!r}; valid are "
                f"{[t.value for t in ChannelTypes]}."
            ) from None
        for i, ch in enumerate(self._channels):
            if ch.type is ctype and ch.identifier == str(channel_identifier):
                return i
        known = [ch.identifier for ch in self._channels if ch.type is ctype]
        raise IndexRangeError(
            f"No {ctype.value} channel with identifier {channel_identifier!r}; "
            f"this slide has {known}."
        )

    def get_focal_plane_offset(self, focal_plane_index: int) -> float:
        """Z offset (micrometres) of a focal plane."""
        return float(self._focal_planes[self._check_plane(focal_plane_index)])

    def get_focal_plane_index(self, focal_plane_offset: float) -> int:
        """Index of the focal plane at a Z offset (micrometres, to within 1 nm)."""
        return find_focal_plane_index(self._focal_planes, focal_plane_offset, "this slide")

    def find_optical_paths(
        self,
        identifier: str | None = None,
        description: str | None = None,
        illumination_wavelength: float | None = None,
        specimen_stain: Any | None = None,
    ) -> tuple[int, ...]:
        """Channels that are optical paths matching every given criterion.

        Parameters
        ----------
        identifier: str | None, optional
            Optical path identifier
        description: str | None, optional
            Optical path description
        illumination_wavelength: float | None, optional
            Illumination wavelength (nm)
        specimen_stain: pydicom.sr.coding.Code | highdicom.sr.CodedConcept | None, optional
            Stain that the slide's specimen description must list

        Returns
        -------
        tuple[int, ...]
            Zero-based channel indices
        """
        if specimen_stain is not None and not any(
            does_specimen_description_item_match(item, specimen_stain)
            for item in self._specimen_items
        ):
            return ()
        return self._channels_matching(
            ChannelTypes.OPTICAL_PATH,
            does_optical_path_item_match,
            identifier=identifier,
            description=description,
            illumination_wavelength=illumination_wavelength,
        )

    def find_segments(
        self,
        number: int | None = None,
        label: str | None = None,
        property_category: Any | None = None,
        property_type: Any | None = None,
    ) -> tuple[int, ...]:
        """Channels that are segments matching every given criterion.

        Parameters
        ----------
        number: int | None, optional
            Segment number
        label: str | None, optional
            Segment label
        property_category, property_type: pydicom.sr.coding.Code | highdicom.sr.CodedConcept | None
            Segmented property category and type (optional)

        Returns
        -------
        tuple[int, ...]
            Zero-based channel indices
        """
        return self._channels_matching(
            ChannelTypes.SEGMENT,
            does_segment_item_match,
            number=number,
            label=label,
            property_category=property_category,
            property_type=property_type,
        )

    def _channels_matching(
        self, kind: ChannelTypes, matches: Callable[..., bool], **criteria: Any
    ) -> tuple[int, ...]:
        return tuple(
            i
            for i, ch in enumerate(self._channels)
            if ch.type is kind and matches(ch.item, **criteria)
        )

    # --- images -------------------------------------------------------------------------

    def get_volume_images(
        self, channel_index: int = 0, focal_plane_index: int = 0
    ) -> tuple[TiledImage, ...]:
        """VOLUME or THUMBNAIL images of a channel and focal plane, largest first.

        There is one image per level that has pixels for this channel and focal plane.
        """
        channel = self._channel(channel_index)
        plane = self._check_plane(focal_plane_index)
        images = []
        for level in range(self.num_levels):
            entry = channel.images.get((level, plane))
            if entry is not None and entry[0] not in images:
                images.append(entry[0])
        return tuple(images)

    def resolve(
        self, level: int = 0, channel_index: int = 0, focal_plane_index: int = 0
    ) -> ResolvedImage:
        """The image that holds the pixels of a level, channel and focal plane.

        Parameters
        ----------
        level: int, optional
            Zero-based level index (negative counts from the top)
        channel_index: int, optional
            Zero-based channel index of the slide
        focal_plane_index: int, optional
            Zero-based focal plane index of the slide

        Returns
        -------
        dicomslide.slide.ResolvedImage
            The image, its own channel and focal plane indices, and the level (non-negative)

        Raises
        ------
        dicomslide.RegionError
            When the level, channel or focal plane does not exist, or the channel has no image
            at that level and focal plane
        """
        lvl = _normalize_level(level, self.num_levels)
        channel = self._channel(channel_index)
        plane = self._check_plane(focal_plane_index)
        entry = channel.images.get((lvl, plane))
        if entry is None:
            have = sorted({lv for lv, z in channel.images if z == plane})
            raise RegionError(
                f"Channel {channel_index} ({channel.type.value} {channel.identifier!r}) has no "
                f"image at level {lvl} and focal plane {plane}; levels with pixels: {have}."
            )
        image, c, z = entry
        return ResolvedImage(image, c, z, lvl)

    async def get_image_region(
        self,
        offset: tuple[int, int] | None = None,
        level: int = 0,
        size: tuple[int, int] | None = None,
        channel_index: int = 0,
        focal_plane_index: int = 0,
        *,
        pixel_indices: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Read a region of the image at a level.

        Parameters
        ----------
        offset: tuple[int, int] | None
            Zero-based (row, column) of the region's top-left pixel in the total pixel matrix
            of the **base level** (as OpenSlide's ``location``); must lie inside it
        level: int, optional
            Zero-based level index; negative values count from the top (-1 is the smallest)
        size: tuple[int, int] | None
            (rows, columns) of the region at ``level``. Pixels beyond the bottom or right edge
            of the image are filled (white for colour, 0 otherwise).
        channel_index, focal_plane_index: int, optional
            Zero-based channel and focal plane indices
        pixel_indices: tuple[int, int] | None, optional
            Alias of ``offset`` (the name the user guide uses)

        Returns
        -------
        numpy.ndarray
            Array of shape (rows, columns, samples per pixel)
        """
        if pixel_indices is not None:
            if offset is not None:
                raise RegionError("Give either offset or pixel_indices, not both.")
            offset = pixel_indices
        if offset is None or size is None:
            raise RegionError("Both offset (or pixel_indices) and size are required.")
        image, c, z, lvl = self.resolve(level, channel_index, focal_plane_index)
        top_left, (h, w) = self._level_region(offset, size, lvl)
        matrix = image.get_total_pixel_matrix(c, z)
        return await matrix.read_region(top_left, (h, w))

    def _level_region(
        self, offset: tuple[int, int], size: tuple[int, int], lvl: int
    ) -> tuple[tuple[int, int], tuple[int, int]]:
        """Top-left pixel at a level of a region given by its base-level offset, and its size."""
        r0, c0 = int_pair(offset, "Offset")
        h, w = int_pair(size, "Size")
        base_rows, base_cols = self.size
        if not (0 <= r0 < base_rows and 0 <= c0 < base_cols):
            raise RegionError(
                f"Offset (row, column) ({r0}, {c0}) lies outside the base level: rows must be in "
                f"[0, {base_rows}) and columns in [0, {base_cols})."
            )
        if h < 1 or w < 1:
            raise RegionError(f"Region size must be positive, got (rows, columns) = ({h}, {w}).")
        factors = self._pyramid[lvl].downsampling_factors
        return (int(r0 // factors[0]), int(c0 // factors[1])), (h, w)

    async def get_label_map_region(
        self,
        offset: tuple[int, int],
        level: int,
        size: tuple[int, int],
        channel_index: int,
        focal_plane_index: int = 0,
    ) -> np.ndarray:
        """Read a region of the label map that holds a segment.

        Where :meth:`get_image_region` gives the mask of one segment of a label-map
        Segmentation, this gives the label map itself: the segment number of every pixel.

        Parameters
        ----------
        offset: tuple[int, int]
            Zero-based (row, column) of the region's top-left pixel in the total pixel matrix
            of the **base level**; must lie inside it
        level: int
            Zero-based level index; negative values count from the top
        size: tuple[int, int]
            (rows, columns) of the region at ``level``; pixels beyond the bottom or right edge
            of the image are background
        channel_index: int
            Zero-based index of any channel that is a segment of the label map (see
            :meth:`find_segments`)
        focal_plane_index: int, optional
            Zero-based focal plane index

        Returns
        -------
        numpy.ndarray
            Array of shape (rows, columns, 1) of stored values (``uint8`` or ``uint16``): segment
            numbers, and the background value (Pixel Padding Value, 0 if none) where no segment
            is and past the edges; a ``PALETTE COLOR`` label map is not looked up in its palette

        Raises
        ------
        dicomslide.errors.RegionError
            When the channel is not a segment of a label map, or the region is invalid
        """
        image, _, z, lvl = self.resolve(level, channel_index, focal_plane_index)
        if not image.is_label_map:
            channel = self._channel(channel_index)
            raise RegionError(
                f"Channel {channel_index} ({channel.type.value} {channel.identifier!r}) is not a "
                f"segment of a label-map Segmentation at level {lvl}; label maps hold the "
                f"channels {self._label_map_channels()}."
            )
        top_left, (h, w) = self._level_region(offset, size, lvl)
        return await image.get_label_map(z).read_region(top_left, (h, w))

    def _label_map_channels(self) -> list[int]:
        return [
            i
            for i, ch in enumerate(self._channels)
            if any(image.is_label_map for image, _, _ in ch.images.values())
        ]

    @_at_level(TiledImage.get_pixel_indices)
    def get_pixel_indices(
        self,
        offset: tuple[float, float],
        level: int,
        channel_index: int = 0,
        focal_plane_index: int = 0,
    ) -> tuple[int, int]:
        """Pixel nearest to a slide position at a level (may lie outside the image)."""
        image, *_ = self.resolve(level, channel_index, focal_plane_index)
        return image.get_pixel_indices(offset)

    @_at_level(TiledImage.get_slide_offset)
    def get_slide_offset(
        self,
        pixel_indices: tuple[int, int],
        level: int,
        channel_index: int = 0,
        focal_plane_index: int = 0,
    ) -> tuple[float, float]:
        """Slide position of a pixel at a level."""
        image, *_ = self.resolve(level, channel_index, focal_plane_index)
        return image.get_slide_offset(pixel_indices)

    @_at_level(TiledImage.map_pixel_indices_to_slide_coordinates)
    def map_pixel_indices_to_slide_coordinates(
        self,
        pixel_indices: np.ndarray,
        level: int,
        channel_index: int = 0,
        focal_plane_index: int = 0,
    ) -> np.ndarray:
        """Map pixel indices at a level to slide coordinates."""
        image, *_ = self.resolve(level, channel_index, focal_plane_index)
        return image.map_pixel_indices_to_slide_coordinates(pixel_indices)

    @_at_level(TiledImage.map_slide_coordinates_to_pixel_indices)
    def map_slide_coordinates_to_pixel_indices(
        self,
        slide_coordinates: np.ndarray,
        level: int,
        channel_index: int = 0,
        focal_plane_index: int = 0,
    ) -> np.ndarray:
        """Map slide coordinates to pixel indices at a level."""
        image, *_ = self.resolve(level, channel_index, focal_plane_index)
        return image.map_slide_coordinates_to_pixel_indices(slide_coordinates)

    @borrowed_doc(TiledImage.get_slide_region, after_first=_LEVEL_ENTRY)
    async def get_slide_region(
        self,
        offset: tuple[float, float],
        level: int,
        size: tuple[float, float],
        channel_index: int = 0,
        focal_plane_index: int = 0,
    ) -> np.ndarray:
        """Read a region in slide coordinates, aligned with the slide axes.

        See :meth:`dicomslide.TiledImage.get_slide_region` for the layout of the result.
        """
        image, c, z, _ = self.resolve(level, channel_index, focal_plane_index)
        return await image.get_slide_region(offset, size, c, z)

    async def get_slide_region_for_annotation(
        self,
        annotation: Any,
        level: int,
        channel_index: int = 0,
        padding: float | tuple[float, float] | tuple[float, float, float, float] = 0.0,
    ) -> np.ndarray:
        """Read the bounding box of a graphic annotation in slide coordinates.

        The box spans the smallest to the largest X and Y of the graphic data (for an ELLIPSE,
        the extent of the ellipse itself), grown by ``padding``. As for :meth:`get_slide_region`,
        columns of the result run along +X and rows along +Y, one sample per pixel spacing of
        the level: the result equals ``get_slide_region`` of that box (as in dicomslide 0.7).
        An extent of zero along an axis (a POINT, points on a line parallel to an axis) is read
        as one pixel. With several focal planes, the plane nearest to the mean Z of the
        graphic data (mm; focal plane offsets are in micrometres) is read.

        Parameters
        ----------
        annotation: highdicom.sr.Scoord3DContentItem
            Annotation whose graphic data (POINT, MULTIPOINT, POLYLINE, POLYGON, ELLIPSE) are in
            the slide's frame of reference
        level: int
            Zero-based level index (negative counts from the top)
        channel_index: int, optional
            Zero-based channel index
        padding: float | tuple[float, float] | tuple[float, float, float, float], optional
            Padding in millimetres: one value for all borders, (along X, along Y), or
            (left (-X), top (+Y), right (+X), bottom (-Y))

        Returns
        -------
        numpy.ndarray
            Array of shape (rows, columns, samples per pixel)

        Raises
        ------
        ValueError
            When the annotation is in another frame of reference, has an unsupported graphic
            type or malformed graphic data, when padding is malformed, or when the level or
            channel does not exist
        """
        lvl = _normalize_level(level, self.num_levels)
        region = annotation_region(
            annotation,
            self.frame_of_reference_uid,
            padding,
            self._focal_planes,
            float(np.mean(self._pyramid[lvl].pixel_spacing)),
        )
        return await self.get_slide_region(
            region.offset,
            lvl,
            region.size,
            channel_index=channel_index,
            focal_plane_index=region.focal_plane_index,
        )


def _drop_unaligned_untyped(volume: list[TiledImage], tolerance: float) -> list[TiledImage]:
    # Without Image Type a label or overview photo looks like a pyramid level. Such images are
    # kept only if they are aligned with the finest image; the rest are not part of the pyramid.
    if all(_has_image_type(im.metadata) for im in volume):
        return volume
    finest = min(volume, key=lambda im: min(im.pixel_spacing))
    center = np.array(compute_image_center_position(finest.metadata)[:2])
    kept = []
    for im in volume:
        if _has_image_type(im.metadata):
            kept.append(im)
            continue
        distance = float(
            np.linalg.norm(np.array(compute_image_center_position(im.metadata)[:2]) - center)
        )
        if distance <= tolerance:
            kept.append(im)
    return kept


@summarised("has_image_type")
def _has_image_type(ds: Dataset) -> bool:
    return "ImageType" in ds


def _find_channel(
    channel_of: dict[tuple[ChannelTypes, str, int], _Channel],
    image: TiledImage,
    ctype: ChannelTypes,
    identifier: str,
    keys: Sequence[tuple[int, int]],
) -> tuple[_Channel | None, tuple[ChannelTypes, str, int]]:
    """Channel an image's channel joins, or None and the key under which to register a new one.

    Optical paths are joined by identifier across all images. Segments and parameters are
    joined by identifier only within one series (segment numbers restart in every
    Segmentation series), and only while the (level, focal plane) slots they fill are free:
    two instances of one series that use the same segment number at the same level are
    different segments and become different channels.

    Parameters
    ----------
    channel_of: dict[tuple[dicomslide.ChannelTypes, str, int], _Channel]
        Channels so far by (type, key, serial)
    image: dicomslide.TiledImage
        Image the channel belongs to
    ctype: dicomslide.ChannelTypes
        Channel type
    identifier: str
        Optical path identifier, segment number or parameter label
    keys: Sequence[tuple[int, int]]
        (level, focal plane) slots the image's channel fills

    Returns
    -------
    tuple[_Channel | None, tuple[dicomslide.ChannelTypes, str, int]]
        Existing channel and its key, or None and the key of the new channel the caller must
        create
    """
    key_id = identifier
    if ctype is not ChannelTypes.OPTICAL_PATH:
        key_id = f"{get_value(image.metadata, _SERIES_INSTANCE_UID, '')}:{identifier}"
    serial = 0
    while (ctype, key_id, serial) in channel_of:
        channel = channel_of[(ctype, key_id, serial)]
        if ctype is ChannelTypes.OPTICAL_PATH or not any(
            k in channel.images and channel.images[k][0] is not image for k in keys
        ):
            return channel, (ctype, key_id, serial)
        serial += 1
    return None, (ctype, key_id, serial)


def _parameter_identifier(ds: Dataset, index: int) -> str:
    """Identifier of a Parametric Map channel: the LUT Label of its real world value mapping.

    Parameters
    ----------
    ds: pydicom.Dataset
        Parametric Map metadata
    index: int
        Zero-based channel index within the image

    Returns
    -------
    str
        LUT Label of the first Real World Value Mapping item, or the one-based channel number
        when there is none
    """
    label = _parameter_label(ds)
    return str(index + 1) if label is None else str(label)


@summarised("parameter_label")
def _parameter_label(ds: Dataset) -> str | None:
    for group in ds.get("SharedFunctionalGroupsSequence", []):
        for mapping in group.get("RealWorldValueMappingSequence", []):
            label = str(mapping.get("LUTLabel", "") or "").strip()
            if label:
                return label
    return None


def _channel_items(image: TiledImage) -> list[Dataset]:
    return get_channel_items(image.metadata)


def __getattr__(name: str) -> Any:
    # find_slides lives in dicomslide.discovery, which imports this module for Slide; loading it
    # on first use keeps `from dicomslide.slide import find_slides` working without a cycle.
    if name == "find_slides":
        from dicomslide.discovery import find_slides

        return find_slides
    raise AttributeError(f"module 'dicomslide.slide' has no attribute {name!r}")

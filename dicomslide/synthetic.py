"""Synthetic, standard-conformant DICOM VL Whole Slide Microscopy Image pyramids.

:func:`write_slide` writes one slide (one series) as DICOM Part 10 files into a folder; a
:class:`SlideSpec` selects the geometry, the pixel format, the transfer syntax and a set of
deliberately unusual but real-world layouts (sparse tiling, per-frame positions without a
Dimension Organization Type, concatenations, several optical paths or focal planes, missing
Image Type or Frame of Reference, rotated slide coordinate systems).

Pixel values encode their position, so that a reader that misplaces, reorders or shifts tiles
returns visibly wrong values. :func:`expected_pixels` is the ground truth: a pure function of the
spec that returns what the total pixel matrix of a level holds before any lossy compression, so
tests can compare reads with the truth without decoding the written files.

Geometry of the pyramid: level ``L`` has downsample factor ``f = spec.factors[L]`` and a total
pixel matrix of ``ceil(rows0 / f) x ceil(columns0 / f)`` pixels with pixel spacing
``pixel_spacing_mm * f``. Its content is *not* a filtered downsample of level 0: the same
position formula is evaluated on the level's own pixel grid (with the level index mixed in), which
keeps every level exact and cheap to compute.

Position in slide coordinates: the Total Pixel Matrix Origin is the slide position of the top
left corner of pixel (1, 1); the first triplet of Image Orientation (Slide) is the direction of
increasing column index, the second the direction of increasing row index. The top left pixel of
the tile starting at 0-based pixel ``(r0, c0)`` is at
``origin + c0 * column_spacing * row_direction + r0 * row_spacing * column_direction`` (X and Y in
millimetres), which is also what highdicom computes for TILED_FULL images. All levels share the
origin. Z offsets are in micrometres, as the standard says.

The functions below take ``spec: SlideSpec``, the slide they describe, and where they take them
``level: int`` (0-based; ``spec.num_levels`` is the THUMBNAIL image), ``channel: int`` (0-based
optical path index) and ``focal_plane: int`` (0-based focal plane index).
"""

from __future__ import annotations

import functools
import io
import itertools
import math
import os
import pathlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, cast

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageCms, ImageDraw, ImageFont
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.pixels.encoders.base import RLELosslessEncoder
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pydicom.valuerep import DSfloat

__all__ = [
    "VL_WSM_SOP_CLASS_UID",
    "SUPPORTED_TRANSFER_SYNTAXES",
    "SUPPORTED_ORIENTATIONS",
    "SlideSpec",
    "FrameInfo",
    "InstanceInfo",
    "plan_instances",
    "expected_pixels",
    "expected_tile",
    "frame_position_mm",
    "label_pixels",
    "overview_pixels",
    "write_slide",
    "write_sample_slide",
    "SAMPLE_SPEC",
    "PixelArray",
]

VL_WSM_SOP_CLASS_UID: Final = UID("1.2.840.10008.5.1.4.1.1.77.1.6")
"""SOP Class UID of VL Whole Slide Microscopy Image Storage."""

SUPPORTED_TRANSFER_SYNTAXES: Final[tuple[str, ...]] = (
    JPEGBaseline8Bit,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEG2000Lossless,
    HTJ2KLossless,
    JPEGLSLossless,
    JPEGLosslessSV1,
)
"""Transfer syntaxes :func:`write_slide` can encode."""

SUPPORTED_ORIENTATIONS: Final[tuple[tuple[float, ...], ...]] = (
    (0.0, -1.0, 0.0, -1.0, 0.0, 0.0),
    (1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
    (0.0, 1.0, 0.0, 1.0, 0.0, 0.0),
    (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
)
"""The four axis-aligned values of Image Orientation (Slide) that :class:`SlideSpec` accepts."""

_NATIVE: Final = frozenset(
    {ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian}
)
_LOSSY: Final = frozenset({JPEGBaseline8Bit})
_PHOTOMETRICS: Final = ("RGB", "YBR_FULL_422", "MONOCHROME2")
_ORGANIZATIONS: Final = ("TILED_FULL", "TILED_SPARSE", "NONE")
_PATTERNS: Final = ("auto", "position", "smooth")
_EDGE_PADDINGS: Final = ("fill", "zero", "random")
_FLUORESCENCE_NM: Final = (405, 488, 561, 640, 730, 355, 532, 594)

# Fixed dates keep repeated runs byte-identical, which makes written files cacheable in tests.
_DATE: Final = "20240102"
_TIME: Final = "030405"

PixelArray = npt.NDArray[np.uint8] | npt.NDArray[np.uint16]
"""Pixel arrays returned here: uint8, or uint16 for 16-bit monochrome specs."""


@dataclass(frozen=True)
class SlideSpec:
    """Description of one synthetic slide: geometry, encoding and file layout.

    Parameters
    ----------
    size: tuple[int, int]
        Level-0 (rows, columns) of the total pixel matrix
    tile_size: tuple[int, int]
        (rows, columns) of every frame; edge frames are padded to this size
    levels: int
        Number of pyramid levels with downsample factors 1, 2, 4, ...; ignored when
        `downsample_factors` is given
    downsample_factors: tuple[int, ...] | None
        Explicit, strictly increasing integer factors starting with 1
    photometric: str
        ``"RGB"``, ``"YBR_FULL_422"`` (JPEG baseline only) or ``"MONOCHROME2"``
    bits: int
        Bits allocated and stored, 8 or 16 (16 only for ``"MONOCHROME2"``)
    transfer_syntax_uid: str
        One of :data:`SUPPORTED_TRANSFER_SYNTAXES`
    pattern: str
        ``"position"`` (exact, position-revealing values), ``"smooth"`` (low-frequency gradients
        plus 64 x 64 pixel blocks, so that JPEG errors stay small) or ``"auto"`` (smooth for lossy
        transfer syntaxes, position otherwise)
    jpeg_quality: int
        Quality of JPEG baseline encoding
    dimension_organization: str
        ``"TILED_FULL"`` (implicit frame order, no per-frame positions), ``"TILED_SPARSE"``
        (per-frame positions) or ``"NONE"`` (per-frame positions and no Dimension Organization
        Type attribute, as some converters write)
    sparse_missing_tiles: tuple[tuple[int, int], ...]
        0-based (tile row, tile column) positions left out of level 0; not with TILED_FULL
    shuffle_frames: bool
        Store the frames of TILED_SPARSE and NONE instances in a seed-determined random order
    optical_paths: int
        Number of optical paths (channels)
    channels_in_separate_instances: bool
        One instance per optical path and level instead of one per level
    focal_planes: int
        Number of focal planes (Z)
    focal_plane_spacing_mm: float
        Distance between neighbouring focal planes
    focal_planes_in_separate_instances: bool
        One instance per focal plane and level instead of one per level; needs TILED_SPARSE
        or NONE, because TILED_FULL cannot say which plane a single-plane instance holds
    concatenation_parts: int
        Split every volume instance into this many instances of one concatenation
    label, overview, thumbnail: bool
        Also write a LABEL, an OVERVIEW or a THUMBNAIL image
    image_orientation: tuple[float, ...]
        Image Orientation (Slide), one of :data:`SUPPORTED_ORIENTATIONS`
    pixel_spacing_mm: float
        Level-0 pixel spacing (rows and columns)
    origin_mm: tuple[float, float]
        (X, Y) of the top left corner of the total pixel matrix in the slide coordinate system
    with_frame_of_reference: bool
        False leaves out Frame of Reference UID and Position Reference Indicator
    with_image_type: bool
        False leaves out Image Type (Frame Type in the functional groups stays)
    icc_profile: bool
        Embed an sRGB ICC profile in every optical path of colour images
    basic_offset_table: bool
        Fill the Basic Offset Table of encapsulated pixel data
    extended_offset_table: bool
        Write Extended Offset Table (Lengths); the Basic Offset Table is then empty, as the
        standard requires
    container_id, patient_id, study_id: str
        Identifiers written as Container Identifier, Patient ID and Study ID
    study_instance_uid, series_instance_uid, frame_of_reference_uid: str | None
        UIDs; None derives them deterministically from `seed` and the rest of the spec
    seed: int
        Seed for UIDs, the frame shuffle and random edge padding
    edge_padding: str
        What edge frames hold past the total pixel matrix: ``"fill"`` (white for colour, 0 for
        monochrome), ``"zero"`` (black, as many converters write) or ``"random"``
        (seed-determined random bytes); readers must never show any of it
    frame_of_reference_per_level: bool
        Give every pyramid level its own Frame of Reference UID, as one real converter does
        (level 0, thumbnail, label and overview keep the slide's)
    specimen_stains: tuple[tuple[str, str, str], ...]
        (code value, coding scheme designator, code meaning) of each staining substance
    """

    size: tuple[int, int] = (1000, 1500)
    tile_size: tuple[int, int] = (256, 256)
    levels: int = 3
    downsample_factors: tuple[int, ...] | None = None
    photometric: str = "RGB"
    bits: int = 8
    transfer_syntax_uid: str = JPEGBaseline8Bit
    pattern: str = "auto"
    jpeg_quality: int = 95
    dimension_organization: str = "TILED_FULL"
    sparse_missing_tiles: tuple[tuple[int, int], ...] = ()
    shuffle_frames: bool = False
    optical_paths: int = 1
    channels_in_separate_instances: bool = True
    focal_planes: int = 1
    focal_plane_spacing_mm: float = 0.001
    focal_planes_in_separate_instances: bool = False
    concatenation_parts: int = 1
    label: bool = True
    overview: bool = True
    thumbnail: bool = False
    image_orientation: tuple[float, ...] = (0.0, -1.0, 0.0, -1.0, 0.0, 0.0)
    pixel_spacing_mm: float = 0.00025
    origin_mm: tuple[float, float] = (20.0, 40.0)
    with_frame_of_reference: bool = True
    with_image_type: bool = True
    icc_profile: bool = True
    basic_offset_table: bool = True
    extended_offset_table: bool = False
    container_id: str = "SLIDE-1"
    patient_id: str = "PAT-1"
    study_id: str = "STUDY-1"
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    frame_of_reference_uid: str | None = None
    seed: int = 0
    edge_padding: str = "fill"
    frame_of_reference_per_level: bool = False
    specimen_stains: tuple[tuple[str, str, str], ...] = field(
        default=(
            ("12710003", "SCT", "hematoxylin stain"),
            ("36879007", "SCT", "water soluble eosin stain"),
        )
    )

    def __post_init__(self) -> None:
        """Reject combinations that cannot be written as valid DICOM.

        Raises
        ------
        ValueError
            When a value is out of range or the combination is not encodable
        """
        if min(self.size) < 1 or min(self.tile_size) < 1:
            raise ValueError(f"size {self.size} and tile_size {self.tile_size} must be positive")
        if max(self.tile_size) > 65535:
            raise ValueError(f"tile_size {self.tile_size} does not fit Rows/Columns (US)")
        factors = self.factors
        if factors[0] != 1 or any(b <= a for a, b in itertools.pairwise(factors)):
            raise ValueError(f"downsample factors {factors} must start at 1 and increase")
        if self.photometric not in _PHOTOMETRICS:
            raise ValueError(f"photometric {self.photometric!r} is not one of {_PHOTOMETRICS}")
        if self.bits not in (8, 16) or (self.bits == 16 and self.photometric != "MONOCHROME2"):
            raise ValueError(f"bits={self.bits} is not possible with {self.photometric}")
        ts = self.transfer_syntax_uid
        if ts not in SUPPORTED_TRANSFER_SYNTAXES:
            raise ValueError(f"transfer syntax {ts} is not supported")
        if ts == JPEGBaseline8Bit and self.bits != 8:
            raise ValueError("JPEG baseline holds 8-bit samples only")
        if self.photometric == "YBR_FULL_422" and ts != JPEGBaseline8Bit:
            raise ValueError("YBR_FULL_422 is written with JPEG baseline only")
        if self.pattern not in _PATTERNS:
            raise ValueError(f"pattern {self.pattern!r} is not one of {_PATTERNS}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality {self.jpeg_quality} is not in 1..100")
        if self.edge_padding not in _EDGE_PADDINGS:
            raise ValueError(f"edge_padding {self.edge_padding!r} is not one of {_EDGE_PADDINGS}")
        if self.dimension_organization not in _ORGANIZATIONS:
            raise ValueError(f"dimension_organization {self.dimension_organization!r} unknown")
        if (
            self.focal_planes > 1
            and self.focal_planes_in_separate_instances
            and self.dimension_organization == "TILED_FULL"
        ):
            # TILED_FULL derives Z from the frame order, so every single-plane instance would
            # claim the first plane.
            raise ValueError("focal planes in separate instances need per-frame positions")
        if self.sparse_missing_tiles and self.dimension_organization == "TILED_FULL":
            raise ValueError("sparse_missing_tiles needs TILED_SPARSE or NONE")
        grid = self.grid_shape(0)
        for r, c in self.sparse_missing_tiles:
            if not (0 <= r < grid[0] and 0 <= c < grid[1]):
                raise ValueError(f"missing tile {(r, c)} is outside the level-0 grid {grid}")
        if self.optical_paths < 1 or self.focal_planes < 1 or self.concatenation_parts < 1:
            raise ValueError("optical_paths, focal_planes and concatenation_parts must be >= 1")
        if self.optical_paths > len(_FLUORESCENCE_NM) and self.photometric == "MONOCHROME2":
            raise ValueError(f"at most {len(_FLUORESCENCE_NM)} monochrome optical paths")
        if tuple(float(v) for v in self.image_orientation) not in SUPPORTED_ORIENTATIONS:
            raise ValueError(f"image_orientation {self.image_orientation} is not axis-aligned")
        if self.pixel_spacing_mm <= 0 or self.focal_plane_spacing_mm <= 0:
            raise ValueError("spacings must be positive")
        if self.extended_offset_table and ts in _NATIVE:
            raise ValueError("an Extended Offset Table needs an encapsulated transfer syntax")
        for level in range(self.num_levels):
            frames = self.frames_per_instance(level)
            if frames < self.concatenation_parts:
                raise ValueError(
                    f"level {level} has {frames} frames per instance, fewer than "
                    f"{self.concatenation_parts} concatenation parts"
                )

    @property
    def factors(self) -> tuple[int, ...]:
        """Downsample factor of every level, level 0 first."""
        if self.downsample_factors is not None:
            return tuple(int(f) for f in self.downsample_factors)
        return tuple(2**level for level in range(self.levels))

    @property
    def num_levels(self) -> int:
        """Number of pyramid (VOLUME) levels."""
        return len(self.factors)

    @property
    def samples_per_pixel(self) -> int:
        """Samples per pixel of volume frames (3 for colour, 1 for monochrome)."""
        return 1 if self.photometric == "MONOCHROME2" else 3

    @property
    def is_lossy(self) -> bool:
        """Whether the transfer syntax loses information."""
        return self.transfer_syntax_uid in _LOSSY

    @property
    def effective_pattern(self) -> Literal["position", "smooth"]:
        """The pattern that ``pattern="auto"`` resolves to."""
        if self.pattern == "smooth" or (self.pattern == "auto" and self.is_lossy):
            return "smooth"
        return "position"

    @property
    def thumbnail_factor(self) -> int:
        """Downsample factor of the THUMBNAIL image: the smallest power of 2 fitting 512 pixels."""
        factor = 1
        while max(math.ceil(s / factor) for s in self.size) > 512:
            factor *= 2
        return factor

    def level_factor(self, level: int) -> int:
        """Downsample factor of `level` relative to level 0 (the THUMBNAIL's at `num_levels`)."""
        if level == self.num_levels:
            return self.thumbnail_factor
        if not 0 <= level < self.num_levels:
            raise ValueError(f"level {level} is not in 0..{self.num_levels}")
        return self.factors[level]

    def level_shape(self, level: int) -> tuple[int, int]:
        """(rows, columns) of the total pixel matrix of `level`: ``ceil(size / factor)`` per axis.

        `level` may be `num_levels`, the THUMBNAIL.
        """
        factor = self.level_factor(level)
        return (math.ceil(self.size[0] / factor), math.ceil(self.size[1] / factor))

    def grid_shape(self, level: int) -> tuple[int, int]:
        """(tile rows, tile columns) of `level`, partial edge tiles included."""
        rows, cols = self.level_shape(level)
        return (math.ceil(rows / self.tile_size[0]), math.ceil(cols / self.tile_size[1]))

    def pixel_spacing(self, level: int) -> float:
        """Pixel spacing of `level` in millimetres: ``pixel_spacing_mm * factor``.

        The same for rows and columns; `level` may be `num_levels`, the THUMBNAIL.
        """
        return self.pixel_spacing_mm * self.level_factor(level)

    def tile_present(self, level: int, tile_row: int, tile_column: int) -> bool:
        """Whether a tile is written (False only for `sparse_missing_tiles` of level 0).

        Parameters
        ----------
        level: int
            0-based level index
        tile_row, tile_column: int
            0-based tile position

        Returns
        -------
        bool
            True when some frame holds this tile
        """
        return level != 0 or (tile_row, tile_column) not in self.sparse_missing_tiles

    def frames_per_instance(self, level: int) -> int:
        """Frames of one volume instance of `level` before it is split into concatenation parts."""
        grid = self.grid_shape(level)
        tiles = sum(self.tile_present(level, r, c) for r in range(grid[0]) for c in range(grid[1]))
        paths = 1 if self.channels_in_separate_instances else self.optical_paths
        planes = 1 if self.focal_planes_in_separate_instances else self.focal_planes
        return tiles * paths * planes


@dataclass(frozen=True)
class FrameInfo:
    """Where one stored frame belongs.

    Parameters
    ----------
    channel: int
        0-based optical path index
    focal_plane: int
        0-based focal plane index
    tile_row, tile_column: int
        0-based tile position in the level's grid
    """

    channel: int
    focal_plane: int
    tile_row: int
    tile_column: int


@dataclass(frozen=True)
class InstanceInfo:
    """One VOLUME instance that :func:`write_slide` writes for a spec.

    Parameters
    ----------
    level: int
        0-based pyramid level
    channels: tuple[int, ...]
        0-based optical path indices held by the instance
    focal_planes: tuple[int, ...]
        0-based focal plane indices held by the instance
    frames: tuple[FrameInfo, ...]
        The instance's frames in stored order (frame number ``i + 1``)
    concatenation_part: int
        1-based In-concatenation Number, or 0 when the instance is not part of a concatenation
    frame_offset: int
        Concatenation Frame Offset Number: frames stored in earlier parts
    """

    level: int
    channels: tuple[int, ...]
    focal_planes: tuple[int, ...]
    frames: tuple[FrameInfo, ...]
    concatenation_part: int
    frame_offset: int


def plan_instances(spec: SlideSpec) -> list[InstanceInfo]:
    """List the VOLUME instances of a slide and the frames each one stores, in writing order.

    TILED_FULL frames follow the order the standard implies: columns fastest, then rows, then
    focal planes, then optical paths. TILED_SPARSE and NONE use the same order minus missing
    tiles, shuffled when `spec.shuffle_frames` is set.

    Returns
    -------
    list[InstanceInfo]
        One entry per written volume instance (concatenation parts separately)
    """
    channel_groups = (
        [(c,) for c in range(spec.optical_paths)]
        if spec.channels_in_separate_instances
        else [tuple(range(spec.optical_paths))]
    )
    plane_groups = (
        [(z,) for z in range(spec.focal_planes)]
        if spec.focal_planes_in_separate_instances
        else [tuple(range(spec.focal_planes))]
    )
    rng = np.random.default_rng(spec.seed)
    plans: list[InstanceInfo] = []
    for level in range(spec.num_levels):
        grid = spec.grid_shape(level)
        for channels in channel_groups:
            for planes in plane_groups:
                frames = [
                    FrameInfo(channel, plane, r, c)
                    for channel in channels
                    for plane in planes
                    for r in range(grid[0])
                    for c in range(grid[1])
                    if spec.tile_present(level, r, c)
                ]
                if spec.shuffle_frames and spec.dimension_organization != "TILED_FULL":
                    frames = [frames[i] for i in rng.permutation(len(frames))]
                parts = spec.concatenation_parts
                bounds = [len(frames) * i // parts for i in range(parts + 1)]
                for part in range(parts):
                    plans.append(
                        InstanceInfo(
                            level=level,
                            channels=channels,
                            focal_planes=planes,
                            frames=tuple(frames[bounds[part] : bounds[part + 1]]),
                            concatenation_part=part + 1 if parts > 1 else 0,
                            frame_offset=bounds[part],
                        )
                    )
    return plans


def _triangle(x: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    # A triangle wave has no jumps, unlike a sawtooth, so JPEG reproduces it closely.
    phase = x % 512
    return np.where(phase < 256, phase, 511 - phase)


def _pattern(
    spec: SlideSpec,
    rows: npt.NDArray[np.int64],
    cols: npt.NDArray[np.int64],
    level: int,
    focal_plane: int,
    channel: int,
) -> PixelArray:
    rr = rows[:, None]
    cc = cols[None, :]
    mix = 17 * level + 31 * focal_plane + 59 * channel
    colour = spec.samples_per_pixel == 3
    if spec.effective_pattern == "smooth":
        block = ((rr // 64) * 3 + (cc // 64) * 5 + mix) % 13
        if colour:
            red = 32 + _triangle(cc + 0 * rr) * 3 // 4
            green = 32 + _triangle(rr + 0 * cc) * 3 // 4
            blue = 48 + block * 12
            return np.stack([red, green, blue], axis=-1).astype(np.uint8)
        value = 8 + _triangle(cc) // 4 + _triangle(rr) // 4 + block * 10
        if spec.bits == 16:
            return (value * 257).astype(np.uint16)[..., None]
        return value.astype(np.uint8)[..., None]
    if colour:
        # R and G are the pixel position within a 256-pixel block and B identifies the block,
        # so (row, column) can be read back from any pixel of images up to 65536 blocks.
        red = cc & 0xFF
        green = rr & 0xFF
        blue = ((rr >> 8) * 37 + (cc >> 8) * 101 + mix) & 0xFF
        red, green = np.broadcast_arrays(red, green)
        return np.stack([red, green, blue], axis=-1).astype(np.uint8)
    if spec.bits == 16:
        low = ((rr & 0xFF) << 8) | (cc & 0xFF)
        block = (
            (rr >> 8) * 0x1F3
            + (cc >> 8) * 0x2E5
            + 0x1111 * level
            + 0x0707 * focal_plane
            + 0x3B3B * channel
        ) & 0xFFFF
        result: npt.NDArray[np.uint16] = (low ^ block).astype(np.uint16)[..., None]
        return result
    # 256 values cannot be unique per position; a quadratic form modulo a prime is only
    # invariant under shifts that are multiples of 251 pixels in both directions, so any
    # realistic tile displacement changes the values (a linear form modulo 256 would not).
    value = (rr * rr + 3 * cc * cc + rr * cc + 5 * rr + 7 * cc + mix) % 251
    grey: npt.NDArray[np.uint8] = value.astype(np.uint8)[..., None]
    return grey


def _check_indices(spec: SlideSpec, level: int, channel: int, focal_plane: int) -> None:
    if not 0 <= level <= spec.num_levels:
        raise ValueError(f"level {level} is not in 0..{spec.num_levels}")
    if not 0 <= channel < spec.optical_paths:
        raise ValueError(f"channel {channel} is not in 0..{spec.optical_paths - 1}")
    if not 0 <= focal_plane < spec.focal_planes:
        raise ValueError(f"focal plane {focal_plane} is not in 0..{spec.focal_planes - 1}")


def expected_pixels(
    spec: SlideSpec,
    level: int = 0,
    channel: int = 0,
    focal_plane: int = 0,
    row_slice: slice = slice(None),
    col_slice: slice = slice(None),
) -> PixelArray:
    """Return the true content of (part of) a level's total pixel matrix.

    The values are those before compression; lossy transfer syntaxes only approximate them.
    For YBR_FULL_422 they are the RGB values that a decoder converting to RGB should return.

    Parameters
    ----------
    row_slice, col_slice: slice
        Region of the total pixel matrix (not the padded tiles), clipped like Python slices

    Returns
    -------
    numpy.ndarray
        (rows, columns, samples) array of uint8 or uint16

    Raises
    ------
    ValueError
        When level, channel or focal plane is out of range
    """
    _check_indices(spec, level, channel, focal_plane)
    rows, cols = spec.level_shape(level)
    r = np.arange(*row_slice.indices(rows), dtype=np.int64)
    c = np.arange(*col_slice.indices(cols), dtype=np.int64)
    return _pattern(spec, r, c, level, focal_plane, channel)


def _padding_value(spec: SlideSpec) -> int:
    # Brightfield background is white; fluorescence background is dark.
    return 0 if spec.photometric == "MONOCHROME2" else 255


def expected_tile(
    spec: SlideSpec,
    level: int,
    tile_row: int,
    tile_column: int,
    channel: int = 0,
    focal_plane: int = 0,
) -> PixelArray:
    """Return one frame as stored: the tile's pixels, padded at the matrix edge.

    Padding follows ``spec.edge_padding``: by default white (255) for colour and 0 for
    monochrome images; 0, or random values determined by the seed and the tile's place.

    Parameters
    ----------
    tile_row, tile_column: int
        0-based tile position

    Returns
    -------
    numpy.ndarray
        (tile rows, tile columns, samples) array of uint8 or uint16
    """
    th, tw = spec.tile_size
    data = expected_pixels(
        spec,
        level,
        channel,
        focal_plane,
        slice(tile_row * th, (tile_row + 1) * th),
        slice(tile_column * tw, (tile_column + 1) * tw),
    )
    dtype = np.uint16 if spec.bits == 16 else np.uint8
    shape = (th, tw, spec.samples_per_pixel)
    if spec.edge_padding == "random":
        place = [spec.seed, level, tile_row, tile_column, channel, focal_plane]
        rng = np.random.default_rng(place)
        tile = rng.integers(0, np.iinfo(dtype).max + 1, size=shape, dtype=dtype)
    else:
        value = 0 if spec.edge_padding == "zero" else _padding_value(spec)
        tile = np.full(shape, value, dtype=dtype)
    tile[: data.shape[0], : data.shape[1]] = data
    return cast(PixelArray, tile)


def frame_position_mm(spec: SlideSpec, level: int, row: int, column: int) -> tuple[float, float]:
    """Slide coordinates (X, Y) of the top left corner of a pixel of a level.

    Parameters
    ----------
    row, column: int
        0-based pixel position in the total pixel matrix

    Returns
    -------
    tuple[float, float]
        X and Y offsets in millimetres
    """
    spacing = spec.pixel_spacing(level)
    o = spec.image_orientation
    x = spec.origin_mm[0] + column * spacing * o[0] + row * spacing * o[3]
    y = spec.origin_mm[1] + column * spacing * o[1] + row * spacing * o[4]
    return (x, y)


def label_pixels(spec: SlideSpec) -> npt.NDArray[np.uint8]:
    """The RGB content of the LABEL image, a (256, 512, 3) uint8 array.

    It shows the container ID and patient ID as text and the container ID as a bar code.
    """
    image = Image.new("RGB", (512, 256), (250, 250, 245))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=36)
    draw.text((24, 20), spec.container_id, fill=(10, 10, 10), font=font)
    draw.text((24, 70), spec.patient_id, fill=(40, 40, 120), font=font)
    x = 24
    for byte in spec.container_id.encode():
        for bit in range(8):
            width = 5 if (byte >> bit) & 1 else 2
            draw.rectangle((x, 150, x + width - 1, 230), fill=(0, 0, 0))
            x += width + 3
    pixels: npt.NDArray[np.uint8] = np.asarray(image, dtype=np.uint8).copy()
    return pixels


def overview_pixels(spec: SlideSpec) -> npt.NDArray[np.uint8]:
    """The RGB content of the OVERVIEW image, a (256, 768, 3) uint8 array.

    It shows a glass slide: the label on the left, the scanned area on the right.
    """
    image = np.full((256, 768, 3), 235, dtype=np.uint8)
    image[64:192, :192] = label_pixels(spec)[::2, ::2][:, :192] // 2 + 100
    smooth = SlideSpec(size=(160, 480), levels=1, pattern="smooth", label=False, overview=False)
    image[48:208, 240:720] = expected_pixels(smooth)
    return image


@functools.cache
def _srgb_profile() -> bytes:
    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    # LittleCMS stamps the creation time into the header (bytes 24-35); a fixed stamp keeps
    # written files identical across runs. The profile ID (MD5) is zero, so nothing to update.
    stamp = (2024, 1, 2, 3, 4, 5)
    data[24:36] = b"".join(v.to_bytes(2, "big") for v in stamp)
    return bytes(data)


def _uid(spec: SlideSpec, *parts: object) -> UID:
    return generate_uid(entropy_srcs=[repr(spec), *(str(p) for p in parts)])


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _content_item(name: tuple[str, str, str], value: str | tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.ConceptNameCodeSequence = DicomSequence([_code(*name)])
    if isinstance(value, str):
        item.ValueType = "TEXT"
        item.TextValue = value
    else:
        item.ValueType = "CODE"
        item.ConceptCodeSequence = DicomSequence([_code(*value)])
    return item


def _specimen_description(spec: SlideSpec) -> Dataset:
    steps = [
        _content_item(("121041", "DCM", "Specimen Identifier"), spec.container_id),
        _content_item(("111701", "DCM", "Processing type"), ("127790008", "SCT", "Staining")),
    ]
    steps += [
        _content_item(("424361007", "SCT", "Using substance"), stain)
        for stain in spec.specimen_stains
    ]
    preparation = Dataset()
    preparation.SpecimenPreparationStepContentItemSequence = DicomSequence(steps)
    description = Dataset()
    description.SpecimenIdentifier = spec.container_id
    description.SpecimenUID = _uid(spec, "specimen")
    description.IssuerOfTheSpecimenIdentifierSequence = DicomSequence()
    description.SpecimenPreparationSequence = DicomSequence(
        [preparation] if spec.specimen_stains else []
    )
    return description


def _optical_path(spec: SlideSpec, channel: int, colour: bool, identifier: str) -> Dataset:
    path = Dataset()
    path.OpticalPathIdentifier = identifier
    if colour:
        path.OpticalPathDescription = "Brightfield"
        path.IlluminationTypeCodeSequence = DicomSequence(
            [_code("111744", "DCM", "Brightfield illumination")]
        )
        path.IlluminationColorCodeSequence = DicomSequence(
            [_code("414298005", "SCT", "Full Spectrum")]
        )
        if spec.icc_profile:
            path.ICCProfile = _srgb_profile()
            path.ColorSpace = "SRGB"
    else:
        wavelength = _FLUORESCENCE_NM[channel]
        path.OpticalPathDescription = f"Fluorescence {wavelength} nm"
        path.IlluminationTypeCodeSequence = DicomSequence(
            [_code("111743", "DCM", "Epifluorescence illumination")]
        )
        path.IlluminationWaveLength = float(wavelength)
    return path


def _ds(value: float) -> DSfloat:
    return DSfloat(value, auto_format=True)


def _base_dataset(
    spec: SlideSpec, sop_instance_uid: str, instance_number: int, image_type: list[str]
) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    if spec.with_image_type:
        ds.ImageType = image_type
    ds.InstanceCreationDate = _DATE
    ds.InstanceCreationTime = _TIME
    ds.SOPClassUID = VL_WSM_SOP_CLASS_UID
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyDate = _DATE
    ds.SeriesDate = _DATE
    ds.ContentDate = _DATE
    ds.StudyTime = _TIME
    ds.SeriesTime = _TIME
    ds.ContentTime = _TIME
    ds.AcquisitionDateTime = _DATE + _TIME
    ds.AccessionNumber = ""
    ds.Modality = "SM"
    ds.Manufacturer = "dicomslide"
    ds.ReferringPhysicianName = ""
    ds.ManufacturerModelName = "synthetic"
    ds.SeriesDescription = "Synthetic slide"
    ds.PatientName = "Synthetic^Slide"
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = "dicomslide.synthetic"
    ds.StudyInstanceUID = spec.study_instance_uid or _uid(spec, "study")
    ds.SeriesInstanceUID = spec.series_instance_uid or _uid(spec, "series")
    ds.StudyID = spec.study_id
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    if spec.with_frame_of_reference:
        ds.FrameOfReferenceUID = spec.frame_of_reference_uid or _uid(spec, "frame-of-reference")
        ds.PositionReferenceIndicator = "SLIDE_CORNER"
    ds.VolumetricProperties = "VOLUME"
    ds.FocusMethod = "AUTO"
    ds.ExtendedDepthOfField = "NO"
    ds.ContainerIdentifier = spec.container_id
    ds.IssuerOfTheContainerIdentifierSequence = DicomSequence()
    ds.ContainerTypeCodeSequence = DicomSequence([_code("433466003", "SCT", "Microscope slide")])
    ds.SpecimenDescriptionSequence = DicomSequence([_specimen_description(spec)])
    ds.AcquisitionContextSequence = DicomSequence()
    return ds


@dataclass
class _Pixels:
    """Pixel format of one instance."""

    photometric: str
    bits: int
    transfer_syntax_uid: str
    jpeg_quality: int

    @property
    def samples(self) -> int:
        return 1 if self.photometric == "MONOCHROME2" else 3


def _encode_jpeg_baseline(tile: PixelArray, fmt: _Pixels) -> bytes:
    buffer = io.BytesIO()
    if fmt.samples == 1:
        Image.fromarray(tile[..., 0], "L").save(buffer, "JPEG", quality=fmt.jpeg_quality)
    elif fmt.photometric == "YBR_FULL_422":
        Image.fromarray(tile, "RGB").save(buffer, "JPEG", quality=fmt.jpeg_quality, subsampling=1)
    else:
        # keep_rgb writes an Adobe APP14 marker with transform 0 and component ids R, G, B,
        # which is what Photometric Interpretation RGB promises.
        Image.fromarray(tile, "RGB").save(
            buffer, "JPEG", quality=fmt.jpeg_quality, subsampling=0, keep_rgb=True
        )
    return buffer.getvalue()


def _encode_lossless_jpeg(tile: PixelArray, bits: int) -> bytes:
    """Encode JPEG lossless process 14 with selection value 1, as transfer syntax .4.70 needs.

    imagecodecs' ljpeg encoder always uses predictor 6 and grey images only, hence this small
    encoder. It uses one fixed Huffman table with 5-bit codes for the 17 difference categories:
    the output is larger than optimal but valid.
    """
    height, width, ncomp = tile.shape
    modulo = 1 << 16
    samples = tile.astype(np.int64)
    predicted = np.empty_like(samples)
    predicted[0, 0] = 1 << (bits - 1)
    predicted[0, 1:] = samples[0, :-1]
    predicted[1:, 0] = samples[:-1, 0]
    predicted[1:, 1:] = samples[1:, :-1]
    diff = (samples - predicted) % modulo
    diff = np.where(diff > modulo // 2, diff - modulo, diff).reshape(-1)
    magnitude = np.abs(diff)
    category = np.zeros_like(magnitude)
    nonzero = magnitude > 0
    category[nonzero] = np.floor(np.log2(magnitude[nonzero])).astype(np.int64) + 1
    extra = np.where(diff < 0, diff + (1 << category) - 1, diff) & ((1 << category) - 1)
    extra = np.where(category == 16, 0, extra)
    extra_len = np.where(category == 16, 0, category)
    value = (category << extra_len) | extra
    length = 5 + extra_len
    shifts = np.arange(31, -1, -1, dtype=np.int64)
    bits_matrix = ((value[:, None] >> shifts[None, :]) & 1).astype(np.uint8)
    keep = np.arange(32)[None, :] >= (32 - length)[:, None]
    stream = bits_matrix[keep]
    stream = np.concatenate([stream, np.ones((-stream.size) % 8, dtype=np.uint8)])
    entropy = np.packbits(stream)
    stuffed = np.insert(entropy, np.nonzero(entropy == 0xFF)[0] + 1, 0)

    def segment(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload

    sof = bytes([bits]) + height.to_bytes(2, "big") + width.to_bytes(2, "big") + bytes([ncomp])
    sof += b"".join(bytes([i + 1, 0x11, 0]) for i in range(ncomp))
    dht = bytes([0x00]) + bytes([0, 0, 0, 0, 17] + [0] * 11) + bytes(range(17))
    sos = bytes([ncomp]) + b"".join(bytes([i + 1, 0x00]) for i in range(ncomp))
    sos += bytes([1, 0, 0])
    return (
        b"\xff\xd8"
        + segment(0xC3, sof)
        + segment(0xC4, dht)
        + segment(0xDA, sos)
        + stuffed.tobytes()
        + b"\xff\xd9"
    )


def _encode_frame(tile: PixelArray, fmt: _Pixels) -> bytes:
    ts = fmt.transfer_syntax_uid
    plane = tile[..., 0] if fmt.samples == 1 else tile
    if ts in _NATIVE:
        return tile.astype("<u2" if fmt.bits == 16 else "u1").tobytes()
    if ts == JPEGBaseline8Bit:
        return _encode_jpeg_baseline(tile, fmt)
    if ts == JPEGLosslessSV1:
        return _encode_lossless_jpeg(tile, fmt.bits)
    if ts == RLELossless:
        return bytes(
            RLELosslessEncoder.encode(
                plane,
                rows=tile.shape[0],
                columns=tile.shape[1],
                samples_per_pixel=fmt.samples,
                bits_allocated=fmt.bits,
                bits_stored=fmt.bits,
                pixel_representation=0,
                photometric_interpretation=fmt.photometric,
                number_of_frames=1,
                planar_configuration=0,
            )
        )
    import imagecodecs

    if ts == JPEG2000Lossless:
        # Without the multi-component transform the stream stays RGB, matching the
        # Photometric Interpretation (with it, DICOM would require YBR_RCT).
        return bytes(
            imagecodecs.jpeg2k_encode(
                plane, level=0, codecformat="J2K", reversible=True, mct=False
            )
        )
    if ts == HTJ2KLossless:
        return bytes(imagecodecs.htj2k_encode(plane, level=0, reversible=True, rgb=False))
    if ts == JPEGLSLossless:
        return bytes(imagecodecs.jpegls_encode(plane, level=0))
    raise ValueError(f"transfer syntax {ts} is not supported")


def _set_pixel_data(ds: Dataset, frames: Sequence[bytes], spec: SlideSpec, fmt: _Pixels) -> None:
    ts = fmt.transfer_syntax_uid
    if ts in _NATIVE:
        data = b"".join(frames)
        if len(data) % 2:
            data += b"\x00"
        ds.PixelData = data
        ds["PixelData"].VR = "OW" if fmt.bits == 16 else "OB"
        return
    if spec.extended_offset_table:
        data, offsets, lengths = encapsulate_extended(list(frames))
        ds.PixelData = data
        ds.ExtendedOffsetTable = offsets
        ds.ExtendedOffsetTableLengths = lengths
    else:
        ds.PixelData = encapsulate(list(frames), has_bot=spec.basic_offset_table)
    ds["PixelData"].VR = "OB"
    if ts in _LOSSY:
        raw = sum(len(frame) for frame in frames)
        uncompressed = len(frames) * ds.Rows * ds.Columns * fmt.samples * (fmt.bits // 8)
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = _ds(round(uncompressed / max(raw, 1), 2))
        ds.LossyImageCompressionMethod = "ISO_10918_1"


def _set_image_pixel_module(
    ds: Dataset, fmt: _Pixels, rows: int, columns: int, frames: int
) -> None:
    ds.Rows = rows
    ds.Columns = columns
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel = fmt.samples
    ds.PhotometricInterpretation = fmt.photometric
    if fmt.samples > 1:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = fmt.bits
    ds.BitsStored = fmt.bits
    ds.HighBit = fmt.bits - 1
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"
    if fmt.samples == 1:
        ds.PresentationLUTShape = "IDENTITY"


def _plane_position(
    spec: SlideSpec, level: int, row: int, column: int, focal_plane: int
) -> Dataset:
    x, y = frame_position_mm(spec, level, row, column)
    item = Dataset()
    item.ColumnPositionInTotalImagePixelMatrix = column + 1
    item.RowPositionInTotalImagePixelMatrix = row + 1
    item.XOffsetInSlideCoordinateSystem = _ds(x)
    item.YOffsetInSlideCoordinateSystem = _ds(y)
    item.ZOffsetInSlideCoordinateSystem = _ds(focal_plane * spec.focal_plane_spacing_mm * 1000)
    return item


def _path_identification(identifier: str) -> Dataset:
    item = Dataset()
    item.OpticalPathIdentifier = identifier
    return item


def _set_geometry(
    ds: Dataset,
    spec: SlideSpec,
    level: int,
    shape: tuple[int, int],
    spacing: float,
    origin: tuple[float, float],
    focal_planes: int,
) -> None:
    ds.ImagedVolumeWidth = shape[1] * spacing
    ds.ImagedVolumeHeight = shape[0] * spacing
    ds.ImagedVolumeDepth = spec.focal_planes * spec.focal_plane_spacing_mm * 1000
    ds.TotalPixelMatrixColumns = shape[1]
    ds.TotalPixelMatrixRows = shape[0]
    ds.TotalPixelMatrixFocalPlanes = focal_planes
    origin_item = Dataset()
    origin_item.XOffsetInSlideCoordinateSystem = _ds(origin[0])
    origin_item.YOffsetInSlideCoordinateSystem = _ds(origin[1])
    ds.TotalPixelMatrixOriginSequence = DicomSequence([origin_item])
    ds.ImageOrientationSlide = [_ds(float(v)) for v in spec.image_orientation]


def _dimension_modules(
    ds: Dataset, spec: SlideSpec, organization_uid: str, organization: str
) -> list[str]:
    """Write the Multi-frame Dimension module; return the dimension names in index order."""
    org = Dataset()
    org.DimensionOrganizationUID = organization_uid
    ds.DimensionOrganizationSequence = DicomSequence([org])
    if organization != "NONE":
        ds.DimensionOrganizationType = organization
    names = ["column", "row"]
    if spec.focal_planes > 1:
        names.append("z")
    if spec.optical_paths > 1:
        names.append("path")
    pointers = {
        "column": ("ColumnPositionInTotalImagePixelMatrix", "PlanePositionSlideSequence"),
        "row": ("RowPositionInTotalImagePixelMatrix", "PlanePositionSlideSequence"),
        "z": ("ZOffsetInSlideCoordinateSystem", "PlanePositionSlideSequence"),
        "path": ("OpticalPathIdentifier", "OpticalPathIdentificationSequence"),
    }
    items = []
    for name in names:
        index, group = pointers[name]
        item = Dataset()
        item.DimensionOrganizationUID = organization_uid
        item.DimensionIndexPointer = tag_for_keyword(index)
        item.FunctionalGroupPointer = tag_for_keyword(group)
        item.DimensionDescriptionLabel = name
        items.append(item)
    ds.DimensionIndexSequence = DicomSequence(items)
    return names


def _file_meta(ds: Dataset, transfer_syntax_uid: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    meta.ImplementationVersionName = "DICOMSLIDE_SYN"
    ds.file_meta = meta


def _shared_group(
    spec: SlideSpec, spacing: float, image_type: list[str], path_identifier: str | None
) -> Dataset:
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [_ds(spacing), _ds(spacing)]
    measures.SliceThickness = _ds(spec.focal_plane_spacing_mm)
    if spec.focal_planes > 1:
        measures.SpacingBetweenSlices = _ds(spec.focal_plane_spacing_mm)
    shared.PixelMeasuresSequence = DicomSequence([measures])
    frame_type = Dataset()
    frame_type.FrameType = image_type
    shared.WholeSlideMicroscopyImageFrameTypeSequence = DicomSequence([frame_type])
    if path_identifier is not None:
        shared.OpticalPathIdentificationSequence = DicomSequence(
            [_path_identification(path_identifier)]
        )
    return shared


def _save(ds: Dataset, folder: pathlib.Path, name: str, transfer_syntax_uid: str) -> pathlib.Path:
    _file_meta(ds, transfer_syntax_uid)
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    return path


def _volume_instances(
    spec: SlideSpec, folder: pathlib.Path, first_instance_number: int
) -> Iterator[pathlib.Path]:
    fmt = _Pixels(spec.photometric, spec.bits, spec.transfer_syntax_uid, spec.jpeg_quality)
    colour = fmt.samples == 3
    organization = spec.dimension_organization
    per_frame = organization != "TILED_FULL"
    plans = plan_instances(spec)
    number = first_instance_number - 1
    for plan in plans:
        # All parts of a concatenation share one Instance Number, as the standard requires.
        if plan.concatenation_part <= 1:
            number += 1
        level = plan.level
        key = (level, plan.channels, plan.focal_planes)
        image_type = (
            ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
            if level == 0
            else ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
        )
        ds = _base_dataset(
            spec, _uid(spec, "instance", key, plan.concatenation_part), number, image_type
        )
        if spec.frame_of_reference_per_level and level > 0 and spec.with_frame_of_reference:
            ds.FrameOfReferenceUID = _uid(spec, "frame-of-reference", level)
        ds.BurnedInAnnotation = "NO"
        ds.SpecimenLabelInImage = "NO"
        spacing = spec.pixel_spacing(level)
        _set_geometry(
            ds,
            spec,
            level,
            spec.level_shape(level),
            spacing,
            spec.origin_mm,
            len(plan.focal_planes),
        )
        _set_image_pixel_module(ds, fmt, spec.tile_size[0], spec.tile_size[1], len(plan.frames))
        names = _dimension_modules(ds, spec, _uid(spec, "dimensions", key), organization)
        ds.NumberOfOpticalPaths = len(plan.channels)
        ds.OpticalPathSequence = DicomSequence(
            [_optical_path(spec, c, colour, str(c + 1)) for c in plan.channels]
        )
        shared_path = (
            str(plan.channels[0] + 1) if len(plan.channels) == 1 and not per_frame else None
        )
        ds.SharedFunctionalGroupsSequence = DicomSequence(
            [_shared_group(spec, spacing, image_type, shared_path)]
        )
        if plan.concatenation_part:
            ds.ConcatenationUID = _uid(spec, "concatenation", key)
            ds.SOPInstanceUIDOfConcatenationSource = _uid(spec, "concatenation-source", key)
            ds.ConcatenationFrameOffsetNumber = plan.frame_offset
            ds.InConcatenationNumber = plan.concatenation_part
            ds.InConcatenationTotalNumber = spec.concatenation_parts
        th, tw = spec.tile_size
        if per_frame:
            groups = []
            for frame in plan.frames:
                item = Dataset()
                content = Dataset()
                ordinals = {
                    "column": frame.tile_column + 1,
                    "row": frame.tile_row + 1,
                    "z": frame.focal_plane + 1,
                    "path": frame.channel + 1,
                }
                content.DimensionIndexValues = [ordinals[n] for n in names]
                item.FrameContentSequence = DicomSequence([content])
                item.PlanePositionSlideSequence = DicomSequence(
                    [
                        _plane_position(
                            spec,
                            level,
                            frame.tile_row * th,
                            frame.tile_column * tw,
                            frame.focal_plane,
                        )
                    ]
                )
                item.OpticalPathIdentificationSequence = DicomSequence(
                    [_path_identification(str(frame.channel + 1))]
                )
                groups.append(item)
            ds.PerFrameFunctionalGroupsSequence = DicomSequence(groups)
        frames = [
            _encode_frame(
                expected_tile(spec, level, f.tile_row, f.tile_column, f.channel, f.focal_plane),
                fmt,
            )
            for f in plan.frames
        ]
        _set_pixel_data(ds, frames, spec, fmt)
        name = f"{number:03d}_volume_L{level}"
        if spec.optical_paths > 1 and len(plan.channels) == 1:
            name += f"_c{plan.channels[0]}"
        if spec.focal_planes > 1 and len(plan.focal_planes) == 1:
            name += f"_z{plan.focal_planes[0]}"
        if plan.concatenation_part:
            name += f"_part{plan.concatenation_part}"
        yield _save(ds, folder, name + ".dcm", spec.transfer_syntax_uid)


def _single_frame_instance(
    spec: SlideSpec,
    kind: str,
    number: int,
    pixels: PixelArray,
    fmt: _Pixels,
    spacing: float,
    origin: tuple[float, float],
    path_identifier: str,
) -> Dataset:
    image_type = (
        ["DERIVED", "PRIMARY", kind, "RESAMPLED"]
        if kind == "THUMBNAIL"
        else ["ORIGINAL", "PRIMARY", kind, "NONE"]
    )
    ds = _base_dataset(spec, _uid(spec, "instance", kind), number, image_type)
    ds.BurnedInAnnotation = "YES" if kind in ("LABEL", "OVERVIEW") else "NO"
    ds.SpecimenLabelInImage = "YES" if kind in ("LABEL", "OVERVIEW") else "NO"
    shape = (pixels.shape[0], pixels.shape[1])
    _set_geometry(ds, spec, 0, shape, spacing, origin, 1)
    _set_image_pixel_module(ds, fmt, shape[0], shape[1], 1)
    _dimension_modules(ds, spec, _uid(spec, "dimensions", kind), "TILED_FULL")
    ds.NumberOfOpticalPaths = 1
    ds.OpticalPathSequence = DicomSequence(
        [_optical_path(spec, 0, fmt.samples == 3, path_identifier)]
    )
    ds.SharedFunctionalGroupsSequence = DicomSequence(
        [_shared_group(spec, spacing, image_type, path_identifier)]
    )
    _set_pixel_data(ds, [_encode_frame(pixels, fmt)], spec, fmt)
    return ds


def _associated_instances(
    spec: SlideSpec, folder: pathlib.Path, first_instance_number: int
) -> Iterator[pathlib.Path]:
    number = first_instance_number
    colour_photometric = "MONOCHROME2" if spec.photometric == "MONOCHROME2" else spec.photometric
    # Fluorescence slides still get brightfield RGB label and overview photographs.
    photometric = "RGB" if colour_photometric == "MONOCHROME2" else colour_photometric
    colour_fmt = _Pixels(photometric, 8, spec.transfer_syntax_uid, spec.jpeg_quality)
    colour_path = "1" if spec.samples_per_pixel == 3 else "BRIGHTFIELD"
    level = spec.num_levels
    thumb_fmt = _Pixels(spec.photometric, spec.bits, spec.transfer_syntax_uid, spec.jpeg_quality)
    thumbnail = functools.partial(expected_pixels, level=level)
    thumb_spacing = spec.pixel_spacing(level)
    # Image Type value, whether written, pixels (computed only when written), pixel format,
    # pixel spacing, origin (mm) and optical path identifier of each associated image.
    Associated = tuple[
        str, bool, Callable[[SlideSpec], PixelArray], _Pixels, float, tuple[float, float], str
    ]
    associated: list[Associated] = [
        ("THUMBNAIL", spec.thumbnail, thumbnail, thumb_fmt, thumb_spacing, spec.origin_mm, "1"),
        ("LABEL", spec.label, label_pixels, colour_fmt, 0.05, (25.0, 75.0), colour_path),
        ("OVERVIEW", spec.overview, overview_pixels, colour_fmt, 0.1, (25.6, 76.8), colour_path),
    ]
    for kind, written, pixels, fmt, spacing, origin, path in associated:
        if not written:
            continue
        ds = _single_frame_instance(spec, kind, number, pixels(spec), fmt, spacing, origin, path)
        yield _save(ds, folder, f"{number:03d}_{kind.lower()}.dcm", spec.transfer_syntax_uid)
        number += 1


def write_slide(
    folder: str | os.PathLike[str], spec: SlideSpec | None = None
) -> list[pathlib.Path]:
    """Write a synthetic slide as DICOM Part 10 files into a folder.

    Volume instances come first (level 0 first), then THUMBNAIL, LABEL and OVERVIEW. File
    names start with the zero-padded Instance Number (shared by the parts of a concatenation,
    which add a ``_partN`` suffix), so sorting them gives that order. Repeated calls with the
    same spec write byte-identical files.

    Parameters
    ----------
    folder: str | os.PathLike[str]
        Target folder, created when missing; existing files with the same names are replaced
    spec: SlideSpec | None
        The slide; None means ``SlideSpec()``

    Returns
    -------
    list[pathlib.Path]
        The written files in writing order
    """
    spec = spec or SlideSpec()
    target = pathlib.Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    paths = list(_volume_instances(spec, target, 1))
    volumes = len(paths) // spec.concatenation_parts
    paths += _associated_instances(spec, target, volumes + 1)
    return paths


SAMPLE_SPEC: Final = SlideSpec(
    size=(3072, 4096),
    tile_size=(256, 256),
    levels=3,
    photometric="YBR_FULL_422",
    transfer_syntax_uid=JPEGBaseline8Bit,
    pattern="smooth",
    jpeg_quality=90,
    label=True,
    overview=True,
    thumbnail=True,
    container_id="SAMPLE-1",
)
"""Spec of :func:`write_sample_slide`."""


def write_sample_slide(folder: str | os.PathLike[str]) -> list[pathlib.Path]:
    """Write the sample slide: 4096 x 3072 pixels, 3 levels, 256-pixel JPEG tiles, with label,
    overview and thumbnail.

    Parameters
    ----------
    folder: str | os.PathLike[str]
        Target folder, created when missing

    Returns
    -------
    list[pathlib.Path]
        The written files in writing order
    """
    return write_slide(folder, SAMPLE_SPEC)

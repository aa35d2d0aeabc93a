"""Tile and frame geometry of tiled images (sans-IO: no asyncio, no httpx).

This is the one place where DICOM's one-based frame numbers meet zero-based tile, pixel,
channel and focal-plane indices. A :class:`FrameIndex` maps
``(channel, focal plane, tile row, tile column)`` to a zero-based *global* frame index over all
parts of a concatenation, and :meth:`FrameIndex.locate` turns that into the SOP Instance UID of
the part and its one-based frame number.

How frames are placed
---------------------
* ``TILED_FULL`` (Dimension Organization Type): by arithmetic. Frames run along a tile row from
  left to right, then rows top to bottom, then focal planes, then channels (optical paths or
  segments), as the standard prescribes; no per-frame items are read. A label map has one
  frame per position whatever its number of segments: every segment's channel maps to it.
* Otherwise (``TILED_SPARSE``, or files with per-frame positions and no Dimension Organization
  Type, as written by some converters): from the Plane Position (Slide) items of each frame.
  Positions must sit on the tile grid; frames that are absent leave holes that readers fill.

Functions that take ``ds: pydicom.Dataset`` take the metadata of one image (of one instance).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydicom import Dataset

from dicomslide._tags import (
    DIMENSION_ORGANIZATION_TYPE as _DIMENSION_ORGANIZATION_TYPE,
    NUMBER_OF_FRAMES as _NUMBER_OF_FRAMES,
    OPTICAL_PATH_IDENTIFIER as _OPTICAL_PATH_IDENTIFIER,
    OPTICAL_PATH_SEQUENCE as _OPTICAL_PATH_SEQUENCE,
    SOP_CLASS_UID as _SOP_CLASS_UID,
)
from dicomslide.errors import IndexRangeError, InvalidDataError, UnsupportedError
from dicomslide.perframe import (
    FramePositions,
    extract_frame_positions,
    extract_z_offsets,
    get_value,
)
from dicomslide.summary import floats, summarised
from dicomslide.utils import (
    PARAMETRIC_MAP_SOP_CLASS_UID as _PARAMETRIC_MAP_SOP_CLASS,
    SEGMENTATION_SOP_CLASS_UID as _SEGMENTATION_SOP_CLASS,
    SEGMENTATION_SOP_CLASS_UIDS as _SEGMENTATION_SOP_CLASSES,
    get_label_map_background,
    is_label_map,
)

__all__ = [
    "FrameIndex",
    "ImagePart",
    "compute_frame_positions",
    "get_channel_identifiers",
    "get_channel_items",
    "find_focal_plane_index",
    "get_image_focal_plane_offsets",
    "get_focal_plane_offsets",
    "iter_tiles_in_region",
]


_PART_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")

#: Upper bound on frames per instance that we are willing to index; protects against
#: allocations sized by corrupt metadata.
MAX_FRAMES = 10_000_000


@dataclass(frozen=True)
class ImagePart:
    """One instance of a (possibly concatenated) tiled image.

    Attributes
    ----------
    study_instance_uid, series_instance_uid, sop_instance_uid: str
        Study, Series and SOP Instance UIDs of this part
    first_frame: int
        Zero-based global frame index of this part's frame 1
    number_of_frames: int
        Number of frames in this part
    """

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    first_frame: int
    number_of_frames: int


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int:
    value = ds.get(keyword, None)
    if value is None or value == "":
        if default is None:
            raise InvalidDataError(
                f"Image {ds.get('SOPInstanceUID', '?')} lacks the required attribute {keyword}."
            )
        return default
    return int(value)


def get_channel_items(ds: Dataset) -> list[Dataset]:
    """Items that define the channels of an image, in channel order.

    They are the Segment Sequence items for Segmentations (of a label map, all but the item
    that describes its background), one Real World Value Mapping item for Parametric Maps, and
    the Optical Path Sequence items otherwise (one empty item if absent).
    """
    sop_class = str(get_value(ds, _SOP_CLASS_UID, ""))
    if sop_class in _SEGMENTATION_SOP_CLASSES:
        items = list(ds.get("SegmentSequence", []))
        background = get_label_map_background(ds)
        if background is None:
            return items
        return [item for item in items if str(item.get("SegmentNumber", "")) != str(background)]
    if sop_class == _PARAMETRIC_MAP_SOP_CLASS:
        return [Dataset()]
    items = list(get_value(ds, _OPTICAL_PATH_SEQUENCE, []))
    return items if items else [Dataset()]


def _channel_identifier(ds: Dataset, item: Dataset) -> str:
    sop_class = str(get_value(ds, _SOP_CLASS_UID, ""))
    if sop_class in _SEGMENTATION_SOP_CLASSES:
        return str(item.get("SegmentNumber", ""))
    return str(get_value(item, _OPTICAL_PATH_IDENTIFIER, ""))


def _shared_item(ds: Dataset, sequence_keyword: str) -> Dataset | None:
    for fg in ds.get("SharedFunctionalGroupsSequence", []):
        seq = fg.get(sequence_keyword)
        if seq:
            return seq[0]  # type: ignore[no-any-return]
    return None


@summarised("channel_ids", list, tuple)
def get_channel_identifiers(ds: Dataset) -> tuple[str, ...]:
    """Identifier of each channel of an image (optical path identifier or segment number)."""
    return tuple(_channel_identifier(ds, item) for item in get_channel_items(ds))


def get_image_focal_plane_offsets(parts_metadata: Sequence[Dataset]) -> tuple[float, ...]:
    """Z offsets (micrometres) of the focal planes of an image made of one or more parts.

    Parameters
    ----------
    parts_metadata: Sequence[pydicom.Dataset]
        Metadata of each instance of the image

    Returns
    -------
    tuple[float, ...]
        Offsets, ascending
    """
    first = parts_metadata[0]
    if str(get_value(first, _DIMENSION_ORGANIZATION_TYPE, "")) == "TILED_FULL":
        return tuple(get_focal_plane_offsets(first))
    return tuple(
        sorted({round(z, 6) for ds in parts_metadata for z in get_focal_plane_offsets(ds)})
    )


#: Z offsets (micrometres) closer than this are the same focal plane (1 nm).
FOCAL_PLANE_TOLERANCE_UM = 1e-3


def find_focal_plane_index(offsets: Sequence[float], focal_plane_offset: float, owner: str) -> int:
    """Index of the focal plane at a Z offset, to within :data:`FOCAL_PLANE_TOLERANCE_UM`.

    Parameters
    ----------
    offsets: Sequence[float]
        Z offsets (micrometres) of the focal planes, in index order
    focal_plane_offset: float
        Z offset (micrometres) asked for
    owner: str
        What the planes belong to, for the message ("this slide", "this image")

    Returns
    -------
    int
        Position in ``offsets`` of the first offset that close

    Raises
    ------
    dicomslide.IndexRangeError
        When none is that close (the message lists ``offsets``)
    """
    wanted = float(focal_plane_offset)
    for i, z in enumerate(offsets):
        if abs(z - wanted) <= FOCAL_PLANE_TOLERANCE_UM:
            return i
    raise IndexRangeError(
        f"No focal plane at Z offset {focal_plane_offset} um; {owner} has {list(offsets)}."
    )


@summarised("focal_planes", decode=lambda values: list(floats(values)))
def get_focal_plane_offsets(ds: Dataset) -> list[float]:
    """Z offsets (micrometres) of the focal planes of an image, ascending.

    One offset per focal plane; ``[0.0]`` when the image does not say.
    """
    organization = str(get_value(ds, _DIMENSION_ORGANIZATION_TYPE, ""))
    if organization == "TILED_FULL":
        planes = _int(ds, "TotalPixelMatrixFocalPlanes", 1)
        measures = _shared_item(ds, "PixelMeasuresSequence")
        spacing = 0.0
        if measures is not None:
            spacing = float(measures.get("SpacingBetweenSlices", 0.0) or 0.0)
        if planes > 1 and spacing <= 0:
            raise InvalidDataError(
                f"TILED_FULL image {ds.get('SOPInstanceUID', '?')} has {planes} focal planes "
                "but no positive Spacing Between Slices to place them."
            )
        z0 = 0.0
        shared = _shared_item(ds, "PlanePositionSlideSequence")
        if shared is not None and "ZOffsetInSlideCoordinateSystem" in shared:
            z0 = float(shared.ZOffsetInSlideCoordinateSystem)
        # Z offsets are in micrometres per the standard; the spacing is in millimetres.
        return [z0 + i * spacing * 1000.0 for i in range(planes)]
    offsets = extract_z_offsets(ds, int(get_value(ds, _NUMBER_OF_FRAMES, 1) or 1))
    if not offsets:
        shared = _shared_item(ds, "PlanePositionSlideSequence")
        if shared is not None and "ZOffsetInSlideCoordinateSystem" in shared:
            offsets.add(round(float(shared.ZOffsetInSlideCoordinateSystem), 6))
    return sorted(offsets) if offsets else [0.0]


@dataclass
class FrameIndex:
    """Where each tile of each channel and focal plane of a tiled image is stored.

    Parameters
    ----------
    parts: Sequence[ImagePart]
        Instances holding the frames, in concatenation order
    tile_rows: int
        Rows per frame
    tile_columns: int
        Columns per frame
    total_rows: int
        Total Pixel Matrix Rows
    total_columns: int
        Total Pixel Matrix Columns
    lookup: numpy.ndarray
        Array of shape (channels, focal planes, grid rows, grid columns) with the zero-based
        global frame index of each tile, or -1 where the tile is absent
    channel_identifiers: tuple[str, ...]
        Identifier of each channel (optical path identifier or segment number)
    focal_plane_offsets: tuple[float, ...]
        Z offset (micrometres) of each focal plane
    """

    parts: Sequence[ImagePart]
    tile_rows: int
    tile_columns: int
    total_rows: int
    total_columns: int
    lookup: np.ndarray
    channel_identifiers: tuple[str, ...]
    focal_plane_offsets: tuple[float, ...]
    _part_starts: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._part_starts = np.array([p.first_frame for p in self.parts], dtype=np.int64)

    @property
    def grid_shape(self) -> tuple[int, int]:
        """tuple[int, int]: Number of tile rows and tile columns."""
        return int(self.lookup.shape[2]), int(self.lookup.shape[3])

    def locate(self, global_frame: int) -> tuple[ImagePart, int]:
        """Part and one-based frame number of a zero-based global frame index.

        Parameters
        ----------
        global_frame: int
            Zero-based frame index over all parts

        Returns
        -------
        tuple[ImagePart, int]
            The part holding the frame and the frame's one-based number within it
        """
        if len(self.parts) == 1:  # most images: no search per tile read
            part = self.parts[0]
        else:
            part = self.parts[int(np.searchsorted(self._part_starts, global_frame, "right")) - 1]
        return part, global_frame - part.first_frame + 1

    @classmethod
    def from_metadata(cls, parts_metadata: Sequence[Dataset]) -> FrameIndex:
        """Build the index from the metadata of every part of one image.

        Parameters
        ----------
        parts_metadata: Sequence[pydicom.Dataset]
            Metadata of each instance of the image (one, or the parts of a concatenation)

        Returns
        -------
        FrameIndex
            The frame index
        """
        parts_metadata = sorted(
            parts_metadata,
            key=lambda d: (
                int(d.get("InConcatenationNumber", 1) or 1),
                int(d.get("ConcatenationFrameOffsetNumber", 0) or 0),
            ),
        )
        first = parts_metadata[0]
        tile_rows = _int(first, "Rows")
        tile_cols = _int(first, "Columns")
        total_rows = _int(first, "TotalPixelMatrixRows", tile_rows)
        total_cols = _int(first, "TotalPixelMatrixColumns", tile_cols)
        if min(tile_rows, tile_cols, total_rows, total_cols) <= 0:
            raise InvalidDataError(
                f"Image {first.get('SOPInstanceUID', '?')} has non-positive dimensions: "
                f"frames {tile_rows}x{tile_cols}, total pixel matrix {total_rows}x{total_cols}."
            )
        grid_rows = -(-total_rows // tile_rows)
        grid_cols = -(-total_cols // tile_cols)
        channel_ids = get_channel_identifiers(first)
        planes = list(get_image_focal_plane_offsets(parts_metadata))

        parts: list[ImagePart] = []
        start = 0
        for ds in parts_metadata:
            n = _int(ds, "NumberOfFrames", 1)
            if not 0 < n <= MAX_FRAMES:
                raise InvalidDataError(
                    f"Image {ds.get('SOPInstanceUID', '?')} declares {n} frames; "
                    f"expected 1..{MAX_FRAMES}."
                )
            uids = [str(ds.get(k, "") or "") for k in _PART_UIDS]
            if not all(uids):
                missing = [k for k, v in zip(_PART_UIDS, uids, strict=True) if not v]
                raise InvalidDataError(
                    f"Image {ds.get('SOPInstanceUID', '?')} lacks {', '.join(missing)}."
                )
            parts.append(ImagePart(uids[0], uids[1], uids[2], start, n))
            start += n
        total_frames = start
        shape = (len(channel_ids), len(planes), grid_rows, grid_cols)
        if int(np.prod(shape)) > 4 * MAX_FRAMES:
            raise InvalidDataError(
                f"Image {first.get('SOPInstanceUID', '?')} would need a tile grid of {shape}; "
                "its dimensions are implausible."
            )
        label_map = is_label_map(first)
        if label_map:
            # Every segment of a label map reads the same frames (one per position); the
            # frames are placed as those of a one-channel image and shared below.
            shape = (1, *shape[1:])
        lookup = np.full(shape, -1, dtype=np.int64)
        if str(first.get("DimensionOrganizationType", "")) == "TILED_FULL":
            expected = int(np.prod(shape))
            if total_frames < expected:
                raise InvalidDataError(
                    f"TILED_FULL image {first.get('SOPInstanceUID', '?')} has {total_frames} "
                    f"frames but its tiling of {grid_rows}x{grid_cols} tiles, {len(planes)} focal "
                    f"plane(s) and {shape[0]} channel(s) needs {expected}."
                )
            lookup[...] = np.arange(expected, dtype=np.int64).reshape(shape)
        else:
            _fill_from_per_frame_items(
                lookup,
                parts_metadata,
                () if label_map else channel_ids,
                planes,
                tile_rows,
                tile_cols,
            )
        if label_map:
            lookup = np.repeat(lookup, len(channel_ids), axis=0)
        return cls(
            parts=parts,
            tile_rows=tile_rows,
            tile_columns=tile_cols,
            total_rows=total_rows,
            total_columns=total_cols,
            lookup=lookup,
            channel_identifiers=channel_ids,
            focal_plane_offsets=tuple(planes),
        )


def _fill_from_per_frame_items(
    lookup: np.ndarray,
    parts_metadata: Sequence[Dataset],
    channel_ids: tuple[str, ...],
    planes: Sequence[float],
    tile_rows: int,
    tile_cols: int,
) -> None:
    first = parts_metadata[0]
    # Frames of a label map carry no segment: they belong to its one frame channel.
    is_seg = str(first.get("SOPClassUID", "")) == _SEGMENTATION_SOP_CLASS and not is_label_map(
        first
    )
    channel_of = {cid: i for i, cid in enumerate(channel_ids)}
    plane_of = {round(z, 6): i for i, z in enumerate(planes)}
    grid_rows, grid_cols = lookup.shape[2], lookup.shape[3]
    global_frame = 0
    for ds in parts_metadata:
        uid = ds.get("SOPInstanceUID", "?")
        n = int(ds.get("NumberOfFrames", 1) or 1)
        positions = extract_frame_positions(ds, n)
        if positions is None:
            items = ds.get("PerFrameFunctionalGroupsSequence")
            raise InvalidDataError(
                f"Image {uid} has {n} frames but "
                f"{0 if items is None else len(items)} per-frame functional group items and no "
                "TILED_FULL dimension organization; frame positions are unknown."
            )
        if (positions.rows < 1).any() or (positions.columns < 1).any():
            bad = int(np.argmax((positions.rows < 1) | (positions.columns < 1)))
            raise InvalidDataError(f"Frame {bad + 1} of image {uid} has no position.")
        rows = positions.rows - 1
        cols = positions.columns - 1
        if (rows % tile_rows).any() or (cols % tile_cols).any():
            bad = int(np.argmax((rows % tile_rows != 0) | (cols % tile_cols != 0)))
            raise UnsupportedError(
                f"Frame {bad + 1} of image {uid} starts at pixel ({rows[bad]}, {cols[bad]}), "
                f"which is not on the {tile_rows}x{tile_cols} tile grid."
            )
        tr, tc = rows // tile_rows, cols // tile_cols
        outside = (tr >= grid_rows) | (tc >= grid_cols)
        if outside.any():
            bad = int(np.argmax(outside))
            raise InvalidDataError(
                f"Frame {bad + 1} of image {uid} lies outside the total pixel matrix at pixel "
                f"({rows[bad]}, {cols[bad]})."
            )
        shared_path = _shared_item(ds, "OpticalPathIdentificationSequence")
        shared_seg = _shared_item(ds, "SegmentIdentificationSequence")
        default_channel = 0
        if is_seg and shared_seg is not None:
            default_channel = channel_of.get(str(shared_seg.ReferencedSegmentNumber), 0)
        elif not is_seg and shared_path is not None:
            default_channel = channel_of.get(str(shared_path.OpticalPathIdentifier), 0)
        zi = _plane_indices(positions, plane_of)
        channels = _channel_indices(positions, channel_of, is_seg, default_channel)
        _place_frames(lookup, (channels, zi, tr, tc), global_frame)
        global_frame += n


def _plane_indices(positions: FramePositions, plane_of: dict[float, int]) -> np.ndarray | int:
    """Focal plane index of each frame (0 where its Z offset is absent or unknown)."""
    z = positions.z_offsets
    if z is None:
        return 0
    present = ~np.isnan(z)
    # Python's round on each distinct value, exactly as the frame-by-frame lookup did.
    distinct, inverse = np.unique(z[present], return_inverse=True)
    table = np.array([plane_of.get(round(v, 6), 0) for v in distinct.tolist()], dtype=np.int64)
    planes = np.zeros(z.size, dtype=np.int64)
    planes[present] = table[inverse.reshape(-1)]
    return planes


def _channel_indices(
    positions: FramePositions, channel_of: dict[str, int], is_seg: bool, default: int
) -> np.ndarray | int:
    """Channel index of each frame, from its segment or optical path, else ``default``."""
    if is_seg:
        numbers = positions.segment_numbers
        if numbers is None:
            return default
        distinct, inverse = np.unique(numbers, return_inverse=True)
        table = np.array(
            [default if v < 0 else channel_of.get(str(v), 0) for v in distinct.tolist()],
            dtype=np.int64,
        )
        return table[inverse.reshape(-1)]
    codes = positions.path_codes
    if codes is None:
        return default
    names = [channel_of.get(name, 0) for name in positions.path_names]
    table = np.array([*names, default], dtype=np.int64)  # code -1 picks the default
    picked: np.ndarray = table[codes]
    return picked


def _place_frames(
    lookup: np.ndarray, where: tuple[np.ndarray | int, ...], first_frame: int
) -> None:
    """Write frame numbers into the lookup; when frames share a cell, the later one wins."""
    shape = lookup.shape
    index = np.ravel_multi_index(tuple(np.broadcast_arrays(*where)), shape)
    frames = first_frame + np.arange(index.size, dtype=np.int64)
    flat = lookup.reshape(-1)
    flat[index] = frames
    if not np.array_equal(flat[index], frames):
        # numpy does not promise which of repeated indices is written last; do it in order.
        last = index.size - 1 - np.unique(index[::-1], return_index=True)[1]
        flat[index[last]] = frames[last]


def iter_tiles_in_region(
    offset: tuple[int, int],
    size: tuple[int, int],
    tile_shape: tuple[int, int],
    matrix_shape: tuple[int, int],
) -> list[tuple[int, int, tuple[slice, slice], tuple[slice, slice]]]:
    """Tiles that a region of the total pixel matrix touches, clipped to the matrix.

    Only pixels inside the total pixel matrix are mapped: the padding that edge frames carry
    past Total Pixel Matrix Rows or Columns is never copied (converters write black, white or
    anything there), so readers fill it like any other pixel outside the matrix.

    Parameters
    ----------
    offset: tuple[int, int]
        Zero-based (row, column) of the region's top-left pixel; may be negative
    size: tuple[int, int]
        (rows, columns) of the region
    tile_shape: tuple[int, int]
        (rows, columns) of a tile
    matrix_shape: tuple[int, int]
        (Total Pixel Matrix Rows, Total Pixel Matrix Columns)

    Returns
    -------
    list[tuple[int, int, tuple[slice, slice], tuple[slice, slice]]]
        For each touched tile: tile row, tile column, the slices into the tile, and the slices
        into the region array where those pixels go
    """
    r0, c0 = offset
    h, w = size
    th, tw = tile_shape
    rows, cols = matrix_shape
    out: list[tuple[int, int, tuple[slice, slice], tuple[slice, slice]]] = []
    top_edge, bottom_edge = max(r0, 0), min(r0 + h, rows)
    left_edge, right_edge = max(c0, 0), min(c0 + w, cols)
    if bottom_edge <= top_edge or right_edge <= left_edge:
        return out
    for tr in range(top_edge // th, (bottom_edge - 1) // th + 1):
        top = tr * th
        ys, ye = max(top_edge, top), min(bottom_edge, top + th)
        for tc in range(left_edge // tw, (right_edge - 1) // tw + 1):
            left = tc * tw
            xs, xe = max(left_edge, left), min(right_edge, left + tw)
            out.append(
                (
                    tr,
                    tc,
                    (slice(ys - top, ye - top), slice(xs - left, xe - left)),
                    (slice(ys - r0, ye - r0), slice(xs - c0, xe - c0)),
                )
            )
    return out


def compute_frame_positions(
    image: Dataset,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Compute the positions of frames.

    Parameters
    ----------
    image: pydicom.Dataset
        Metadata of a tiled image

    Returns
    -------
    total_pixel_matrix_positions: numpy.ndarray
        Zero-based (row, column) offset of the top-left pixel of each frame in the total pixel
        matrix, shape (frames, 2)
    slide_positions: numpy.ndarray
        (x, y, z) slide coordinates in millimetres of the top-left pixel of each frame (z in
        micrometres as stored), shape (frames, 3)
    channel_indices: numpy.ndarray
        Zero-based channel index of each frame
    focal_plane_indices: numpy.ndarray
        Zero-based focal plane index of each frame
    """
    from dicomslide.coordinates import ImageGeometry

    index = FrameIndex.from_metadata([image])
    n = int(image.get("NumberOfFrames", 1) or 1)
    positions = np.zeros((n, 2), dtype=np.int64)
    channels = np.zeros(n, dtype=np.int64)
    planes = np.zeros(n, dtype=np.int64)
    c_idx, z_idx, tr_idx, tc_idx = np.nonzero(index.lookup >= 0)
    frames = index.lookup[c_idx, z_idx, tr_idx, tc_idx]
    keep = frames < n
    frames = frames[keep]
    positions[frames, 0] = tr_idx[keep] * index.tile_rows
    positions[frames, 1] = tc_idx[keep] * index.tile_columns
    channels[frames] = c_idx[keep]
    planes[frames] = z_idx[keep]
    geometry = ImageGeometry.from_dataset(image)
    slide = geometry.pixel_to_slide(positions.astype(np.float64))
    slide[:, 2] = np.asarray(index.focal_plane_offsets, dtype=np.float64)[planes]
    return positions, slide, channels, planes

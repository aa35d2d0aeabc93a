"""Fast extraction of per-frame tile positions (sans-IO).

Sparse and converter-written images carry one Per-Frame Functional Groups item per frame;
walking thousands of them through pydicom's element conversion costs ~0.2 ms a frame (1.6 s
for a 7,000-frame pyramid). pydicom leaves a sequence read from a file as raw bytes until it is
first accessed, so this module reads the few values the frame index needs (row and column
position, Z offset, optical path identifier, referenced segment number) straight from those
bytes. Datasets that were already converted (or came from DICOM JSON) take the ordinary path.

Opening a slide reads a few dozen other attributes of each image, and pydicom's conversion of
a raw element (~7 µs for a number, ~30 µs for a small sequence) is most of what that costs:
:func:`get_value` reads simple values (US, UL, IS, UI, CS) and :func:`first_item_decimals` the
numbers of geometry macros from the raw bytes too, whenever that gives exactly what pydicom
would, and leaves everything else to pydicom.
"""

from __future__ import annotations

import functools
import math
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Final

import numpy as np
from pydicom import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag

from dicomslide._bytescan import (
    distinct_rows,
    find_all,
    gather,
    item_chain,
    rarest,
    take_rows,
)
from dicomslide._docs import borrowed_doc
from dicomslide._tags import (
    COLUMN_POSITION as _COLUMN_POSITION,
    OPTICAL_PATH_IDENTIFICATION_SEQUENCE as _OPTICAL_PATH_ID_SEQ,
    OPTICAL_PATH_IDENTIFIER as _OPTICAL_PATH_ID,
    PER_FRAME_FUNCTIONAL_GROUPS as _PER_FRAME,
    PLANE_POSITION_SLIDE as _PLANE_POSITION_SLIDE,
    REFERENCED_SEGMENT_NUMBER as _REFERENCED_SEGMENT,
    ROW_POSITION as _ROW_POSITION,
    SEGMENT_IDENTIFICATION_SEQUENCE as _SEGMENT_ID_SEQ,
    Z_OFFSET as _Z_OFFSET,
)
from dicomslide.errors import InvalidDataError
from dicomslide.summary import NOT_SUMMARISED, SummaryDataset, tag_value

__all__ = [
    "UNSURE",
    "FramePositions",
    "extract_frame_positions",
    "extract_z_offsets",
    "first_item_decimals",
    "first_per_frame_item",
    "get_value",
    "remember_z_offsets",
]


_CACHE_ATTRIBUTE = "_dicomslide_frame_positions"
_CHAIN_WINDOW = 1 << 20
_Z_CACHE_ATTRIBUTE = "_dicomslide_z_offsets"
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)


@dataclass
class FramePositions:
    """Per-frame values needed to place frames, as compact arrays (no object per frame).

    Attributes
    ----------
    rows: numpy.ndarray
        One-based Row Position In Total Image Pixel Matrix of each frame (0 when absent)
    columns: numpy.ndarray
        One-based Column Position In Total Image Pixel Matrix of each frame (0 when absent)
    z_offsets: numpy.ndarray | None
        Z Offset In Slide Coordinate System (micrometres) of each frame, NaN when absent;
        None when no frame has one
    path_codes: numpy.ndarray | None
        Index into `path_names` of each frame's Optical Path Identifier, -1 when absent;
        None when no frame has one
    path_names: tuple[str, ...]
        The distinct Optical Path Identifiers
    segment_numbers: numpy.ndarray | None
        Referenced Segment Number of each frame, -1 when absent; None when no frame has one
    """

    rows: np.ndarray
    columns: np.ndarray
    z_offsets: np.ndarray | None = None
    path_codes: np.ndarray | None = None
    path_names: tuple[str, ...] = ()
    segment_numbers: np.ndarray | None = None

    @classmethod
    def from_lists(
        cls,
        rows: Iterable[int],
        columns: Iterable[int],
        z: list[float | None],
        optical_paths: list[str | None],
        segments: list[int | None],
    ) -> FramePositions:
        """Values collected frame by frame (None where absent), packed into arrays.

        Parameters
        ----------
        rows, columns: Iterable[int]
            Row and column positions (0 when absent)
        z: list[float | None]
            Z offsets
        optical_paths: list[str | None]
            Optical Path Identifiers
        segments: list[int | None]
            Referenced Segment Numbers

        Returns
        -------
        FramePositions
            The same values
        """
        z_offsets = None
        if any(v is not None for v in z):
            z_offsets = np.array([math.nan if v is None else v for v in z], dtype=np.float64)
        codes: np.ndarray | None = None
        names: tuple[str, ...] = ()
        if any(v is not None for v in optical_paths):
            code_of: dict[str, int] = {}
            codes = np.array(
                [-1 if v is None else code_of.setdefault(v, len(code_of)) for v in optical_paths],
                dtype=np.int32,
            )
            names = tuple(code_of)
        numbers = None
        if any(v is not None for v in segments):
            numbers = np.array([-1 if v is None else v for v in segments], dtype=np.int64)
        return cls(
            np.asarray(list(rows), dtype=np.int64),
            np.asarray(list(columns), dtype=np.int64),
            z_offsets,
            codes,
            names,
            numbers,
        )

    @property
    def z(self) -> list[float | None]:
        """list[float | None]: Z offset of each frame, None when absent (an object a frame)."""
        if self.z_offsets is None:
            return [None] * len(self.rows)
        return [None if math.isnan(v) else v for v in self.z_offsets.tolist()]

    @property
    def optical_paths(self) -> list[str | None]:
        """list[str | None]: Optical Path Identifier of each frame, None when absent."""
        if self.path_codes is None:
            return [None] * len(self.rows)
        names = self.path_names
        return [None if c < 0 else names[c] for c in self.path_codes.tolist()]

    @property
    def segments(self) -> list[int | None]:
        """list[int | None]: Referenced Segment Number of each frame, None when absent."""
        if self.segment_numbers is None:
            return [None] * len(self.rows)
        return [None if v < 0 else v for v in self.segment_numbers.tolist()]


def _new_lists(n: int) -> tuple[list[int], list[int], list[Any], list[Any], list[Any]]:
    """Per-frame lists for the readers that go frame by frame, every value absent."""
    return [0] * n, [0] * n, [None] * n, [None] * n, [None] * n


class _Malformed(Exception):
    pass


class _Reader:
    """Walks an encoded Per-Frame Functional Groups Sequence value."""

    def __init__(self, data: bytes, implicit: bool) -> None:
        self.data = data
        self.implicit = implicit
        self.header = struct.Struct("<HHI") if implicit else struct.Struct("<HH2sH")

    def element(self, pos: int) -> tuple[int, bytes | None, int, int]:
        """Tag, VR (None if implicit), value start and value length at pos."""
        data = self.data
        if pos + 8 > len(data):
            raise _Malformed
        group, elem = struct.unpack_from("<HH", data, pos)
        tag = (group << 16) | elem
        if group == 0xFFFE or self.implicit:
            (length,) = struct.unpack_from("<I", data, pos + 4)
            return tag, None, pos + 8, length
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(data):
                raise _Malformed
            (length,) = struct.unpack_from("<I", data, pos + 8)
            return tag, vr, pos + 12, length
        (length,) = struct.unpack_from("<H", data, pos + 6)
        return tag, vr, pos + 8, length

    def skip_undefined(self, pos: int, end_tag: int) -> int:
        """Position after the delimiter closing an undefined-length value that starts at pos."""
        while True:
            tag, _vr, start, length = self.element(pos)
            if tag == end_tag:
                return start
            if length == _UNDEFINED:
                inner_end = _SEQUENCE_END if tag != _ITEM else _ITEM_END
                pos = self.skip_undefined(start, inner_end)
            else:
                pos = start + length

    def items(self, pos: int, end: int | None) -> list[tuple[int, int]]:
        """(start, end) of each item of a sequence value starting at pos."""
        out = []
        while end is None or pos < end:
            tag, _, start, length = self.element(pos)
            if tag == _SEQUENCE_END:
                break
            if tag != _ITEM:
                raise _Malformed
            if length == _UNDEFINED:
                item_end = self.skip_undefined(start, _ITEM_END)
                out.append((start, item_end - 8))
                pos = item_end
            else:
                out.append((start, start + length))
                pos = start + length
        return out

    def elements(self, start: int, end: int) -> dict[int, tuple[int, int, int]]:
        """Top-level elements of an item: tag -> (value start, value length, next position)."""
        found: dict[int, tuple[int, int, int]] = {}
        pos = start
        while pos < end:
            tag, _, vstart, length = self.element(pos)
            if tag == _ITEM_END:
                break
            if length == _UNDEFINED:
                nxt = self.skip_undefined(vstart, _SEQUENCE_END)
                found[tag] = (vstart, -1, nxt)
            else:
                nxt = vstart + length
                found[tag] = (vstart, length, nxt)
            pos = nxt
        return found

    def first_item_elements(self, value: tuple[int, int, int]) -> dict[int, tuple[int, int, int]]:
        start, length, _nxt = value
        items = self.items(start, None if length < 0 else start + length)
        if not items:
            return {}
        return self.elements(*items[0])

    def text(self, value: tuple[int, int, int]) -> str:
        start, length, _ = value
        return self.data[start : start + length].decode("ascii", "replace").strip(" \x00")

    def signed(self, value: tuple[int, int, int]) -> int:
        start, length, _ = value
        if length == 4:
            return int(struct.unpack_from("<i", self.data, start)[0])
        if length == 2:
            return int(struct.unpack_from("<H", self.data, start)[0])
        raise _Malformed


def _fast(raw: RawDataElement, n: int) -> FramePositions | None:
    if not raw.is_little_endian or not isinstance(raw.value, bytes | bytearray):
        return None
    reader = _Reader(bytes(raw.value), raw.is_implicit_VR)
    rows, columns, z, paths, segments = _new_lists(n)
    try:
        items = reader.items(0, len(reader.data))
        if len(items) != n:
            return None
        for i, (start, end) in enumerate(items):
            groups = reader.elements(start, end)
            position = groups.get(_PLANE_POSITION_SLIDE)
            if position is not None:
                values = reader.first_item_elements(position)
                if _ROW_POSITION in values:
                    rows[i] = reader.signed(values[_ROW_POSITION])
                if _COLUMN_POSITION in values:
                    columns[i] = reader.signed(values[_COLUMN_POSITION])
                if _Z_OFFSET in values:
                    z[i] = float(reader.text(values[_Z_OFFSET]))
            path = groups.get(_OPTICAL_PATH_ID_SEQ)
            if path is not None:
                values = reader.first_item_elements(path)
                if _OPTICAL_PATH_ID in values:
                    paths[i] = reader.text(values[_OPTICAL_PATH_ID])
            segment = groups.get(_SEGMENT_ID_SEQ)
            if segment is not None:
                values = reader.first_item_elements(segment)
                if _REFERENCED_SEGMENT in values:
                    segments[i] = reader.signed(values[_REFERENCED_SEGMENT])
    except (_Malformed, struct.error, ValueError):
        return None  # let pydicom parse it and report what is wrong
    return FramePositions.from_lists(rows, columns, z, paths, segments)


def _header(tag: int, vr: bytes, implicit: bool, width: int | None) -> bytes:
    """Encoded tag (and VR, and length when ``width`` is fixed) of an element."""
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if width is None:
        return head if implicit else head + vr
    return head + (struct.pack("<I", width) if implicit else vr + struct.pack("<H", width))


def _owners(starts: np.ndarray, hits: np.ndarray) -> np.ndarray | None:
    """Index of the item each hit lies in; None when an item holds two."""
    owner = np.searchsorted(starts, hits, side="right") - 1
    if owner.size > 1 and not bool((np.diff(owner) > 0).all()):
        return None
    return owner


def _numbers(
    buf: np.ndarray, starts: np.ndarray, tag: int, vr: bytes, implicit: bool, dtype: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """Owners and values of a fixed-width number element; None when an item holds two."""
    width = np.dtype(dtype).itemsize
    header = _header(tag, vr, implicit, width)
    hits = find_all(buf, header, first=rarest(buf, header))
    hits = hits[hits + len(header) + width <= buf.size]
    owner = _owners(starts, hits)
    if owner is None:
        return None
    return owner, gather(buf, hits + len(header), dtype)


def _texts(
    buf: np.ndarray, starts: np.ndarray, tag: int, vr: bytes, implicit: bool
) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """Owners, codes and distinct stripped values of a short text element, else None.

    The values of one image are nearly all equal, so each distinct encoding is decoded once.
    """
    header = _header(tag, vr, implicit, None)
    hits = find_all(buf, header, first=rarest(buf, header))
    size = 4 if implicit else 2
    hits = hits[hits + len(header) + size <= buf.size]
    owner = _owners(starts, hits)
    if owner is None:
        return None
    if not hits.size:
        return owner, np.empty(0, dtype=np.int64), []
    lengths = gather(buf, hits + len(header), "<u4" if implicit else "<u2").astype(np.int64)
    values_at = hits + len(header) + size
    longest = int(lengths.max())
    if longest > 64 or int((values_at + lengths).max()) > buf.size:
        return None  # not a short text: the element walker decides
    width = max(longest, 1)
    if int(values_at.max()) + width <= buf.size:
        # Every value's bytes at once, then what lies past each one's length cleared.
        table = take_rows(buf, values_at, width)
        table[np.arange(width) >= lengths[:, None]] = 0
    else:
        # Column by column (the last value ends the buffer).
        table = np.zeros((hits.size, width), dtype=np.uint8)
        for column in range(longest):
            inside = lengths > column
            table[inside, column] = buf[values_at[inside] + column]
    distinct, codes = distinct_rows(table)
    texts = [bytes(row).decode("ascii").strip(" \x00") for row in distinct]
    return owner, codes, texts


def _item_starts(buf: np.ndarray) -> np.ndarray | None:
    """Where each top-level item starts, proven a window at a time; None unless all are.

    A window bounds the candidates held at once (every nested item header is one): the
    whole 9 MB value of 100,000 frames at once took ~10 MB of offsets.
    """
    parts = []
    base = 0
    while base < buf.size:
        starts, lengths = item_chain(buf[base : base + _CHAIN_WINDOW], 0)
        if not starts.size:
            return None
        parts.append(starts + base)
        base += int(starts[-1] + 8 + lengths[-1])
    if base != buf.size or not parts:
        return None
    return np.concatenate(parts)


def _quick(raw: RawDataElement, n: int) -> FramePositions | None:
    """Find the values by their encoded tags at C speed; None unless that is certain.

    Per-frame items of one image share their layout, so searching the whole value for each
    wanted element's tag and header (numpy, no object per frame) is far cheaper than walking
    every element. Item boundaries are proven (see :func:`dicomslide._bytescan.item_chain`),
    and any surprise (undefined lengths, a second or missing position in an item, a value
    that is not short text) hands over to the element walker.
    """
    data = raw.value
    if not isinstance(data, bytes | bytearray) or not raw.is_little_endian:
        return None
    implicit = bool(raw.is_implicit_VR)
    buf = np.frombuffer(data, dtype=np.uint8)
    starts = _item_starts(buf)
    if starts is None or starts.size != n or n == 0:
        return None
    every = np.arange(n)
    found = []
    for tag in (_ROW_POSITION, _COLUMN_POSITION):
        numbers = _numbers(buf, starts, tag, b"SL", implicit, "<i4")
        if numbers is None or not np.array_equal(numbers[0], every):
            return None
        found.append(numbers[1].astype(np.int64))
    out = FramePositions(found[0], found[1])
    z_found = _texts(buf, starts, _Z_OFFSET, b"DS", implicit)
    path_found = _texts(buf, starts, _OPTICAL_PATH_ID, b"SH", implicit)
    segment_found = _numbers(buf, starts, _REFERENCED_SEGMENT, b"US", implicit, "<u2")
    if z_found is None or path_found is None or segment_found is None:
        return None
    owner, codes, texts = z_found
    if owner.size:
        z_values = np.array([float(text) for text in texts], dtype=np.float64)
        out.z_offsets = np.full(n, math.nan)
        out.z_offsets[owner] = z_values[codes]
    owner, codes, texts = path_found
    if owner.size:
        # Distinct encodings may strip to the same identifier: one code each.
        code_of: dict[str, int] = {}
        renumber = np.array([code_of.setdefault(t, len(code_of)) for t in texts], np.int32)
        out.path_codes = np.full(n, -1, dtype=np.int32)
        out.path_codes[owner] = renumber[codes]
        out.path_names = tuple(code_of)
    owner, values = segment_found
    if owner.size:
        out.segment_numbers = np.full(n, -1, dtype=np.int64)
        out.segment_numbers[owner] = values
    return out


def _first(item: Dataset, keyword: str) -> Any:
    seq = item.get(keyword)
    return seq[0] if seq else None


def _slow(items: Any, n: int) -> FramePositions:
    rows, columns, z, paths, segments = _new_lists(n)
    for i, item in enumerate(items):
        position = _first(item, "PlanePositionSlideSequence")
        if position is not None:
            rows[i] = int(position.get("RowPositionInTotalImagePixelMatrix", 0) or 0)
            columns[i] = int(position.get("ColumnPositionInTotalImagePixelMatrix", 0) or 0)
            if position.get("ZOffsetInSlideCoordinateSystem") is not None:
                z[i] = float(position.ZOffsetInSlideCoordinateSystem)
        path = _first(item, "OpticalPathIdentificationSequence")
        if path is not None and "OpticalPathIdentifier" in path:
            paths[i] = str(path.OpticalPathIdentifier)
        segment = _first(item, "SegmentIdentificationSequence")
        if segment is not None and "ReferencedSegmentNumber" in segment:
            segments[i] = int(segment.ReferencedSegmentNumber)
    return FramePositions.from_lists(rows, columns, z, paths, segments)


def _json_items(element: Any) -> list[Any] | None:
    """The unconverted DICOM JSON items of a lazily converted sequence, if that is what it is.

    (Duck-typed on :class:`dicomslide.sources.dicomjson.LazyJSONSequence`, so that this
    module does not depend on the sources package.)
    """
    if isinstance(element, RawDataElement):
        return None
    items = getattr(element.value, "json_items", None)
    return items if isinstance(items, list) else None


def _json_first_item(item: Any, sequence_tag: str) -> Any:
    """The first item of a sequence in a DICOM JSON object, None when absent or empty."""
    seq = item.get(sequence_tag)
    values = seq.get("Value") if seq is not None else None
    return values[0] if values else None


def _json_value(item: Any, tag: str) -> Any:
    """The first value of an attribute in a DICOM JSON object, None when absent or empty."""
    element = item.get(tag) if item is not None else None
    value = element.get("Value") if element is not None else None
    return value[0] if value else None


def json_frame_values(item: Any) -> tuple[int, int, float | None, str | None, int | None]:
    """Row, column, Z offset, optical path and segment of one DICOM JSON per-frame item.

    Parameters
    ----------
    item: Any
        A Per-Frame Functional Groups item as a DICOM JSON object

    Returns
    -------
    tuple
        ``(row, column, z, optical_path, segment)``, 0 or None where absent

    Raises
    ------
    AttributeError, TypeError, ValueError, IndexError, OverflowError
        When the item has a shape the DICOM JSON model does not allow
    """
    row = column = 0
    z: float | None = None
    position = _json_first_item(item, "0048021A")
    if position is not None:
        row = int(_json_value(position, "0048021F") or 0)
        column = int(_json_value(position, "0048021E") or 0)
        value = _json_value(position, "0040074A")
        if value is not None:
            z = float(value)
    path = _json_value(_json_first_item(item, "00480207"), "00480106")
    segment = _json_value(_json_first_item(item, "0062000A"), "0062000B")
    return (
        row,
        column,
        z,
        None if path is None else str(path),
        None if segment is None else int(segment),
    )


#: What :func:`json_frame_values` raises for an item of the wrong shape.
JSON_SHAPE_ERRORS: Final = (AttributeError, TypeError, ValueError, IndexError, OverflowError)


def positions_from_values(
    values: list[tuple[int, int, float | None, str | None, int | None]],
) -> FramePositions:
    """Pack what :func:`json_frame_values` gave for each frame.

    Parameters
    ----------
    values: list[tuple]
        One ``(row, column, z, optical_path, segment)`` per frame

    Returns
    -------
    FramePositions
        The same values as arrays
    """
    if not values:
        return FramePositions.from_lists([], [], [], [], [])
    rows, columns, z, paths, segments = (list(column) for column in zip(*values, strict=True))
    return FramePositions.from_lists(rows, columns, z, paths, segments)


def _from_json(items: list[Any], n: int) -> FramePositions | None:
    """Positions read straight from DICOM JSON items; None when anything is unexpected."""
    if len(items) != n:
        return None
    try:
        values = [json_frame_values(item) for item in items]
        # Inside the try: a value beyond int64 raises OverflowError here, not in a caller.
        return positions_from_values(values)
    except JSON_SHAPE_ERRORS:
        # A shape the JSON model does not allow: the full conversion reports it properly.
        return None


def positions_from_json(items: list[Any]) -> FramePositions | None:
    """Per-frame positions, optical paths and segments of DICOM JSON per-frame items.

    Parameters
    ----------
    items: list[Any]
        Per-Frame Functional Groups items as DICOM JSON objects, one per frame

    Returns
    -------
    FramePositions | None
        The values, or None when an item has a shape the DICOM JSON model does not allow
    """
    return _from_json(items, len(items))


def extract_frame_positions(ds: Dataset, number_of_frames: int) -> FramePositions | None:
    """Per-frame positions, optical paths and segments of an image.

    Parameters
    ----------
    ds: pydicom.Dataset
        Image metadata
    number_of_frames: int
        Expected number of per-frame items

    Returns
    -------
    FramePositions | None
        The values, or None when the image has no (or a wrong number of) per-frame items
    """
    cached: tuple[int, FramePositions | None] | None = ds.__dict__.get(_CACHE_ATTRIBUTE)
    if cached is not None and cached[0] == number_of_frames:
        return cached[1]
    element = ds.get_item(_PER_FRAME)
    result: FramePositions | None = None
    if element is not None:
        # Read when the JSON arrived (see dicomslide.sources.dicomjson.LazyJSONSequence).
        early = getattr(element.value, "frame_positions", None)
        if isinstance(early, FramePositions) and len(early.rows) == number_of_frames:
            result = early
        json_items = None if result is not None else _json_items(element)
        if json_items is not None:
            result = _from_json(json_items, number_of_frames)
        if isinstance(element, RawDataElement):
            try:
                result = _quick(element, number_of_frames)
            except (struct.error, ValueError, UnicodeDecodeError):
                result = None
            if result is None:
                result = _fast(element, number_of_frames)
        if result is None:
            try:
                items = ds.get("PerFrameFunctionalGroupsSequence")
                if items is not None and len(items) == number_of_frames:
                    result = _slow(items, number_of_frames)
            except (ValueError, TypeError, KeyError, AttributeError, NotImplementedError) as exc:
                raise InvalidDataError(
                    f"Per-Frame Functional Groups of image {ds.get('SOPInstanceUID', '?')} "
                    f"cannot be read: {type(exc).__name__}: {exc}"
                ) from exc
    # Kept on the dataset: the frame index and the focal-plane lookup both need it.
    object.__setattr__(ds, _CACHE_ATTRIBUTE, (number_of_frames, result))
    return result


def frame_positions_known(ds: Dataset) -> bool:
    """Whether :func:`extract_frame_positions` answers ``ds`` without walking its items.

    The positions are known once read, when the metadata's JSON arrived or by an earlier
    call; then building a frame index from them takes about a millisecond.
    """
    if _CACHE_ATTRIBUTE in ds.__dict__:
        return True
    element = ds.get_item(_PER_FRAME)
    return element is not None and getattr(element.value, "frame_positions", None) is not None


def first_per_frame_item(ds: Dataset) -> Dataset | None:
    """The first Per-Frame Functional Groups item, without parsing the others.

    Parameters
    ----------
    ds: pydicom.Dataset
        Image metadata

    Returns
    -------
    pydicom.Dataset | None
        The first item, or None when there is none
    """
    element = ds.get_item(_PER_FRAME)
    if element is None:
        return None
    # is_lazy, not _json_items: that would unpack every item to read the first.
    if not isinstance(element, RawDataElement) and getattr(element.value, "is_lazy", False):
        first: Dataset | None = element.value.first()
        return first
    if (
        isinstance(element, RawDataElement)
        and element.is_little_endian
        and isinstance(element.value, bytes | bytearray)
    ):
        data = bytes(element.value)
        reader = _Reader(data, element.is_implicit_VR)
        try:
            _, _, start, length = reader.element(0)
            end = (
                reader.skip_undefined(start, _ITEM_END) - 8
                if length == _UNDEFINED
                else start + length
            )
            return read_dataset(
                BytesIO(data[start:end]),
                is_implicit_VR=element.is_implicit_VR,
                is_little_endian=True,
            )
        except (_Malformed, struct.error, ValueError):
            pass
    items = ds.get("PerFrameFunctionalGroupsSequence")
    return items[0] if items else None


@functools.lru_cache(maxsize=1024)
def _tag(tag: int) -> BaseTag:
    # pydicom's Tag() returns a BaseTag unchanged at once but parses a plain int each time.
    return BaseTag(tag)


def _element(ds: Dataset, tag: int) -> Any:
    """The element at ``tag``: a raw one unconverted and unread (as stored), or None."""
    # Public API only (issue 15): reaching into pydicom's private element dict saved about
    # 0.2 us a call, about 20 ms of a warm 500-slide find_slides, below what we can measure.
    return ds.get_item(_tag(tag), keep_deferred=True)


class _Unsure:
    """Type of :data:`UNSURE`."""

    def __repr__(self) -> str:
        return "UNSURE"


#: Returned by :func:`first_item_decimals` when the raw bytes do not settle the value.
UNSURE: Final = _Unsure()


# What pydicom accepts without a validation warning (PS3.5 6.2), so that reading these values
# here, unconverted, gives exactly what pydicom would.
_UID_TEXT: Final = re.compile(rb"(?=.{1,64}\Z)(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*", re.DOTALL)
_IS_TEXT: Final = re.compile(rb"-?(0|[1-9][0-9]{0,8})")
_CS_TEXT: Final = re.compile(rb"[A-Z0-9_ ]{1,16}")


def _raw_value(element: RawDataElement) -> Any:
    """A US, UL, IS, UI or CS value of a raw element as pydicom converts it, else UNSURE."""
    data = element.value
    if (
        not isinstance(data, bytes)
        or not data
        or len(data) != element.length
        or not element.is_little_endian
    ):
        return UNSURE
    vr = element.VR
    if vr is None:
        try:
            vr = dictionary_VR(element.tag)
        except KeyError:
            return UNSURE
    if vr == "US" or vr == "UL":
        if len(data) != (2 if vr == "US" else 4):
            return UNSURE  # several values
        return int.from_bytes(data, "little")
    text = data.rstrip(b" \x00")
    if vr == "UI":
        return text.decode("ascii") if _UID_TEXT.fullmatch(text) else UNSURE
    if vr == "IS":
        return int(text) if _IS_TEXT.fullmatch(text) else UNSURE
    if vr == "CS":
        values = text.split(b"\\")
        if not all(_CS_TEXT.fullmatch(value) for value in values):
            return UNSURE
        if len(values) == 1:
            return values[0].decode("ascii")
        return [value.decode("ascii") for value in values]
    return UNSURE


def get_value(ds: Dataset, tag: int, default: Any = None) -> Any:
    """``ds.get(keyword, default)``, by tag, reading simple raw values without converting them.

    pydicom turns the keyword into a tag on every access and converts a raw element into a
    data element on first access (costs in ``benchmarks/RESULTS.md``); opening a slide reads a
    few dozen attributes of each image. A raw little-endian US, UL, IS, UI or CS value that
    pydicom would convert without a warning is read from its bytes here, leaving the element
    raw; anything else is converted by pydicom as usual.

    Parameters
    ----------
    ds: pydicom.Dataset
        Dataset
    tag: int
        Tag of the attribute
    default: Any, optional
        Returned when the dataset has no such attribute

    Returns
    -------
    Any
        The value (as pydicom would give it, except that numbers are ``int``, UIDs and code
        strings ``str``, and several code strings a ``list``), or `default`
    """
    if type(ds) is SummaryDataset:
        # Answered by the index's summary of the same bytes (see dicomslide.summary).
        found = tag_value(ds, tag)
        if found is not NOT_SUMMARISED:
            return default if found is None else found
    element = _element(ds, tag)
    if element is None:
        return default
    if isinstance(element, RawDataElement):
        value = _raw_value(element)
        if value is not UNSURE:
            return value
        element = ds[tag]
    return element.value


_DECIMAL_CHARACTERS: Final = b"0123456789+-.eE \\"


def _decimals(text: bytes, count: int) -> float | tuple[float, ...] | _Unsure:
    """``count`` well-formed DS numbers, else UNSURE (pydicom then converts and validates)."""
    if text.translate(None, _DECIMAL_CHARACTERS):
        return UNSURE
    parts = text.split(b"\\")
    if len(parts) != count:
        return UNSURE
    values = []
    for part in parts:
        # Longer than 16 characters pydicom would warn about; blank it would read as None.
        if len(part) > 16 or not part.strip():
            return UNSURE
        try:
            values.append(float(part))
        except ValueError:
            return UNSURE
    return values[0] if count == 1 else tuple(values)


def _find_last(
    reader: _Reader, start: int, end: int, tag: int
) -> tuple[bytes | None, int, int] | None:
    """VR, value start and value length of the last ``tag`` among an item's elements."""
    found = None
    pos = start
    while pos < end:
        element_tag, vr, value_start, length = reader.element(pos)
        if element_tag == _ITEM_END:
            break
        if element_tag == tag:
            found = (vr, value_start, length)
        if length == _UNDEFINED:
            pos = reader.skip_undefined(value_start, _SEQUENCE_END)
        else:
            pos = value_start + length
        if pos > end:
            raise _Malformed  # an element runs past its item: pydicom shall judge
    return found


def _first_item_span(reader: _Reader, start: int, end: int) -> tuple[int, int] | None:
    """Start and end of the first item of a sequence value, None when it has no item."""
    if start >= end:
        return None
    tag, _vr, value_start, length = reader.element(start)
    if tag == _SEQUENCE_END:
        return None
    if tag != _ITEM:
        raise _Malformed
    if length == _UNDEFINED:
        return value_start, reader.skip_undefined(value_start, _ITEM_END) - 8
    if value_start + length > end:
        raise _Malformed
    return value_start, value_start + length


def first_item_decimals(
    ds: Dataset, path: tuple[int, ...], count: int
) -> float | tuple[float, ...] | _Unsure | None:
    """A DS value reached through the first item of each of nested sequences, from raw bytes.

    pydicom converts a sequence by building a dataset per item and an element per value
    (tens of microseconds even for one small item); the geometry of an image needs a few
    numbers from such sequences. While the outermost element is still raw little-endian
    bytes, they are read here without converting anything; whatever is unusual (another VR,
    big endian, an empty or malformed value, a different number of values) is left to
    pydicom.

    Parameters
    ----------
    ds: pydicom.Dataset
        Dataset holding the outermost sequence (or the value itself when ``path`` has one tag)
    path: tuple[int, ...]
        Tags of the sequences, outermost first, then the tag of the DS element
    count: int
        Number of values the element must have

    Returns
    -------
    float | tuple[float, ...] | None | UNSURE
        The number (``count`` 1) or numbers; None when a sequence on the way is absent or
        empty or the element is absent, as ``Dataset.get`` would find; :data:`UNSURE` when
        the value must be read with pydicom
    """
    element = _element(ds, path[0])
    if element is None:
        return None
    if (
        not isinstance(element, RawDataElement)
        or not element.is_little_endian
        or not isinstance(element.value, bytes | bytearray)
    ):
        return UNSURE
    implicit = bool(element.is_implicit_VR)
    data = bytes(element.value)
    if len(path) == 1:
        if element.VR not in (None, "DS") or len(data) != element.length:
            return UNSURE
        return _decimals(data, count)
    if element.VR not in (None, "SQ"):
        return UNSURE
    reader = _Reader(data, implicit)
    start, end = 0, len(data)
    try:
        for depth, tag in enumerate(path[1:], start=2):
            span = _first_item_span(reader, start, end)
            if span is None:
                return None
            found = _find_last(reader, span[0], span[1], tag)
            if found is None:
                return None
            vr, value_start, length = found
            if depth < len(path):
                if vr not in (None, b"SQ"):
                    return UNSURE
                start = value_start
                end = (
                    reader.skip_undefined(value_start, _SEQUENCE_END) - 8
                    if length == _UNDEFINED
                    else value_start + length
                )
            else:
                if vr not in (None, b"DS") or value_start + length > len(data):
                    return UNSURE
                return _decimals(data[value_start : value_start + length], count)
    except (_Malformed, struct.error):
        return UNSURE
    return UNSURE


# A Z offset element and its value: the DS characters are matched greedily and cut to the
# encoded length afterwards, so that the ~5,000 identical values of a level collapse in
# ``set(findall(...))`` at C speed instead of being parsed one by one.
_Z_TAG: Final = struct.pack("<HH", 0x0040, 0x074A)
_Z_EXPLICIT: Final = re.compile(re.escape(_Z_TAG + b"DS") + rb"(..)([0-9+\-.eE \x00]*)", re.DOTALL)
_Z_IMPLICIT: Final = re.compile(re.escape(_Z_TAG) + rb"(....)([0-9+\-.eE \x00]*)", re.DOTALL)
_DS_CHARACTERS: Final = b"0123456789+-.eE \x00"
# Past this many distinct encodings the one-pass ``findall`` is cheaper than a search per value.
_Z_DISTINCT_SEARCHES: Final = 8


def _scan_z_values(data: bytes, implicit_vr: bool) -> set[float] | None:
    """Distinct Z offsets found in a raw little-endian per-frame sequence, or None if unsure.

    Frames of one image nearly always share a handful of Z values, so rather than collect a
    match per frame (``findall`` builds ~5,000 tuples for a 20000x17000 base level, ~2.5 ms
    over a pyramid), each distinct encoded element is read once and the search resumes for the
    first element encoded differently from all those seen: a few scans that build nothing.
    The encoded form (length and characters) is compared, so values written differently count
    as distinct encodings of possibly equal numbers, which the set then merges.
    """
    header = _Z_TAG if implicit_vr else _Z_TAG + b"DS"
    width = 4 if implicit_vr else 2
    seen: list[bytes] = []
    values: set[float] = set()
    position = data.find(header)
    while position >= 0:
        start = position + len(header)
        if start + width > len(data):
            break  # no room for a length: not an element (as ``findall`` would find)
        length = int.from_bytes(data[start : start + width], "little")
        text = data[start + width : start + width + length]
        if len(text) < length or text.translate(None, _DS_CHARACTERS):
            return None  # a character outside the DS repertoire: let the full parser decide
        try:
            values.add(round(float(text.decode("ascii").strip(" \x00")), 6))
        except ValueError:
            return None
        seen.append(data[start : start + width + length])
        if len(seen) > _Z_DISTINCT_SEARCHES:
            return _scan_z_values_all(data, implicit_vr)
        known = b"|".join(re.escape(encoded) for encoded in seen)
        others = re.compile(re.escape(header) + b"(?!" + known + b")", re.DOTALL)
        match = others.search(data, position + 1)
        position = -1 if match is None else match.start()
    return values


def _scan_z_values_all(data: bytes, implicit_vr: bool) -> set[float] | None:
    """:func:`_scan_z_values` in one ``findall`` pass, for images with many distinct Z."""
    pattern = _Z_IMPLICIT if implicit_vr else _Z_EXPLICIT
    values: set[float] = set()
    for length_bytes, text in set(pattern.findall(data)):
        length = int.from_bytes(length_bytes, "little")
        if len(text) < length:
            return None  # a character outside the DS repertoire: let the full parser decide
        try:
            values.add(round(float(text[:length].decode("ascii").strip(" \x00")), 6))
        except ValueError:
            return None
    return values


@borrowed_doc(extract_frame_positions, only=("Parameters",))
def extract_z_offsets(ds: Dataset, number_of_frames: int) -> set[float]:
    """The distinct Z offsets (micrometres, rounded to 1e-6) of an image's frames.

    Cheaper than :func:`extract_frame_positions` while the per-frame sequence is still raw:
    only the encoded Z elements are searched for, since which frame has which Z does not
    matter here.

    Returns
    -------
    set[float]
        Z offsets; empty when no frame has one
    """
    remembered: tuple[int, frozenset[float]] | None = ds.__dict__.get(_Z_CACHE_ATTRIBUTE)
    if remembered is not None and remembered[0] == number_of_frames:
        return set(remembered[1])
    cached: tuple[int, FramePositions | None] | None = ds.__dict__.get(_CACHE_ATTRIBUTE)
    element = ds.get_item(_PER_FRAME)
    if (
        cached is None
        and isinstance(element, RawDataElement)
        and element.is_little_endian
        and isinstance(element.value, bytes | bytearray)
    ):
        values = _scan_z_values(bytes(element.value), element.is_implicit_VR)
        if values is not None:
            return values
    positions = extract_frame_positions(ds, number_of_frames)
    if positions is None:
        return set()
    if positions.z_offsets is None:
        return set()
    present = positions.z_offsets[~np.isnan(positions.z_offsets)]
    if not present.size:
        return set()
    if present.min() == present.max():
        return {round(float(present[0]), 6)}  # one plane: the usual case
    # Not np.unique(present): without indices it imports numpy.ma (numpy 2.4), 10-30 ms of
    # a cold open.
    ordered = np.sort(present)
    return {round(z, 6) for z in ordered[np.append(True, ordered[1:] != ordered[:-1])].tolist()}


def remember_z_offsets(ds: Dataset, number_of_frames: int, offsets: Iterable[float]) -> None:
    """Give :func:`extract_z_offsets` the answer, found earlier from the same bytes.

    The local source keeps each file's Z offsets beside its index (keyed by path, size and
    modification time), since searching the per-frame items of a large pyramid for them is
    a tenth of opening a slide.

    Parameters
    ----------
    ds: pydicom.Dataset
        Image metadata, as read from the file the offsets were found in
    number_of_frames: int
        Number of frames they were found for
    offsets: Iterable[float]
        What :func:`extract_z_offsets` returned for the dataset
    """
    object.__setattr__(ds, _Z_CACHE_ATTRIBUTE, (number_of_frames, frozenset(offsets)))

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
    """Per-frame values needed to place frames.

    Attributes
    ----------
    rows: numpy.ndarray
        One-based Row Position In Total Image Pixel Matrix of each frame (0 when absent)
    columns: numpy.ndarray
        One-based Column Position In Total Image Pixel Matrix of each frame (0 when absent)
    z: list[float | None]
        Z Offset In Slide Coordinate System (micrometres) of each frame, None when absent
    optical_paths: list[str | None]
        Optical Path Identifier of each frame, None when absent
    segments: list[int | None]
        Referenced Segment Number of each frame, None when absent
    """

    rows: np.ndarray
    columns: np.ndarray
    z: list[float | None]
    optical_paths: list[str | None]
    segments: list[int | None]

    @classmethod
    def empty(cls, n: int) -> FramePositions:
        """Values for ``n`` frames, every one absent, to be filled in.

        Parameters
        ----------
        n: int
            Number of frames

        Returns
        -------
        FramePositions
            Zero positions and None everywhere else
        """
        return cls(
            np.zeros(n, dtype=np.int64),
            np.zeros(n, dtype=np.int64),
            [None] * n,
            [None] * n,
            [None] * n,
        )

    def fields(
        self,
    ) -> tuple[np.ndarray, np.ndarray, list[float | None], list[str | None], list[int | None]]:
        """The five containers, for filling them in through local names.

        Returns
        -------
        tuple
            ``(rows, columns, z, optical_paths, segments)``, the objects themselves
        """
        return self.rows, self.columns, self.z, self.optical_paths, self.segments


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
    out = FramePositions.empty(n)
    rows, columns, z, paths, segments = out.fields()
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
    return out


def _quick(raw: RawDataElement, n: int) -> FramePositions | None:
    """Find the values by their encoded tags; None unless every item has exactly one each.

    Per-frame items of one image share their layout, so a byte search for each wanted
    element's tag and header is far cheaper than walking every element. Item boundaries
    are walked exactly, and any surprise (undefined lengths, a second or missing match in an
    item) hands over to the element walker.
    """
    data = raw.value
    if not isinstance(data, bytes | bytearray) or not raw.is_little_endian:
        return None
    data = bytes(data)
    implicit = bool(raw.is_implicit_VR)
    starts = np.empty(n, dtype=np.int64)
    pos = 0
    unpack = struct.Struct("<II").unpack_from
    size = len(data)
    for i in range(n):
        if pos + 8 > size:
            return None
        tag, length = unpack(data, pos)
        if tag != 0xE000FFFE or length == _UNDEFINED:
            return None
        starts[i] = pos
        pos += 8 + length
    if pos != size:
        return None

    def find(
        group: int, element: int, vr: bytes, width: int | None
    ) -> tuple[np.ndarray, list[bytes]] | None:
        tag = struct.pack("<HH", group, element)
        if width is not None:
            header = tag + (
                struct.pack("<I", width) if implicit else vr + struct.pack("<H", width)
            )
            pattern = re.compile(re.escape(header) + b"(.{%d})" % width, re.DOTALL)
        else:
            header = tag + (b"" if implicit else vr)
            pattern = re.compile(re.escape(header), re.DOTALL)
        where: list[int] = []
        values: list[bytes] = []
        for match in pattern.finditer(data):
            where.append(match.start())
            if width is not None:
                values.append(match.group(1))
            else:
                at = match.end()
                if implicit:
                    (length,) = struct.unpack_from("<I", data, at)
                    at += 4
                else:
                    (length,) = struct.unpack_from("<H", data, at)
                    at += 2
                values.append(data[at : at + length])
        owner = np.searchsorted(starts, np.asarray(where, dtype=np.int64), side="right") - 1
        return owner, values

    rows_found = find(0x0048, 0x021F, b"SL", 4)
    cols_found = find(0x0048, 0x021E, b"SL", 4)
    if rows_found is None or cols_found is None:
        return None
    for owner, _ in (rows_found, cols_found):
        if len(owner) != n or not np.array_equal(owner, np.arange(n)):
            return None
    rows = np.frombuffer(b"".join(rows_found[1]), dtype="<i4").astype(np.int64)
    columns = np.frombuffer(b"".join(cols_found[1]), dtype="<i4").astype(np.int64)
    z: list[float | None] = [None] * n
    paths: list[str | None] = [None] * n
    segments: list[int | None] = [None] * n
    z_found = find(0x0040, 0x074A, b"DS", None)
    path_found = find(0x0048, 0x0106, b"SH", None)
    if z_found is None or path_found is None:
        return None
    for owner, _ in (z_found, path_found):
        if len(owner) and (np.diff(owner) == 0).any():
            return None
    for i, value in zip(z_found[0].tolist(), z_found[1], strict=True):
        z[i] = float(value.decode("ascii").strip(" \x00"))
    for i, value in zip(path_found[0].tolist(), path_found[1], strict=True):
        paths[i] = value.decode("ascii", "replace").strip(" \x00")
    seg = find(0x0062, 0x000B, b"US", 2)
    if seg is None:
        return None
    owner, values = seg
    if len(owner) and (np.diff(owner) == 0).any():
        return None
    for i, value in zip(owner.tolist(), values, strict=True):
        segments[i] = int.from_bytes(value, "little")
    return FramePositions(rows, columns, z, paths, segments)


def _first(item: Dataset, keyword: str) -> Any:
    seq = item.get(keyword)
    return seq[0] if seq else None


def _slow(items: Any, n: int) -> FramePositions:
    out = FramePositions.empty(n)
    rows, columns, z, paths, segments = out.fields()
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
    return out


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


def _from_json(items: list[Any], n: int) -> FramePositions | None:
    """Positions read straight from DICOM JSON items; None when anything is unexpected."""
    if len(items) != n:
        return None
    out = FramePositions.empty(n)
    rows, columns, z, paths, segments = out.fields()
    try:
        for i, item in enumerate(items):
            position = _json_first_item(item, "0048021A")
            if position is not None:
                rows[i] = int(_json_value(position, "0048021F") or 0)
                columns[i] = int(_json_value(position, "0048021E") or 0)
                value = _json_value(position, "0040074A")
                if value is not None:
                    z[i] = float(value)
            path = _json_value(_json_first_item(item, "00480207"), "00480106")
            if path is not None:
                paths[i] = str(path)
            segment = _json_value(_json_first_item(item, "0062000A"), "0062000B")
            if segment is not None:
                segments[i] = int(segment)
    except (AttributeError, TypeError, ValueError, IndexError, OverflowError):
        # A shape the JSON model does not allow: the full conversion reports it properly.
        return None
    return out


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
        if isinstance(early, FramePositions) and len(early.fields()[0]) == number_of_frames:
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
    return {round(z, 6) for z in positions.z if z is not None}


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

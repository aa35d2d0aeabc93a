"""Per-frame items of a DICOM JSON body read one at a time, never all held as objects.

Series metadata of a sparse image of 100,000 frames is ~70 MB of JSON (Orthanc indents it);
parsed whole it is ~2.2 KB of dicts and strings a frame, 220 MB at once before anything can
be packed. :func:`split_per_frame` instead finds each top-level Per-Frame Functional Groups
Sequence in the text, decodes its items one by one (reading positions from each and packing
them with :mod:`marshal` a thousand at a time), and leaves the rest of the body to
``json.loads`` with a marker in the sequence's place. Anything unexpected (another layout of
the element, an item that is not an object, a marker that does not come back where it was
put) returns None, and the body is parsed whole as before.
"""

from __future__ import annotations

import array
import json
import marshal
import re
import zlib
from typing import Any, Final

from dicomslide.perframe import (
    JSON_SHAPE_ERRORS,
    FramePositions,
    json_frame_values,
)

__all__ = ["RawJSONItems", "pack_items", "split_per_frame", "unpack_items"]

#: Bodies smaller than this are parsed whole (the split pays for itself on huge sequences).
MIN_BODY: Final = 1 << 20
_CHUNK: Final = 1000
_MARK: Final = "dicomslide-per-frame-items"
# The element's object, with "Value" first (Orthanc) or "vr" first, up to the array's "[".
_VALUE_FIRST: Final = re.compile(rb'"52009230"\s*:\s*\{\s*"Value"\s*:\s*\[')
_VR_FIRST: Final = re.compile(rb'"52009230"\s*:\s*\{\s*"vr"\s*:\s*"SQ"\s*,\s*"Value"\s*:\s*\[')
_VR_AFTER: Final = re.compile(rb'\s*,\s*"vr"\s*:\s*"SQ"\s*\}')
_CLOSE: Final = re.compile(rb"\s*\}")
_SPACE: Final = re.compile(r"\s*")
# Items are decoded from ASCII windows of the body: a copy of the whole body as text would
# be another 69 MB at 100,000 frames (Orthanc's JSON is ~690 bytes a frame).
_WINDOW: Final = 1 << 20
_SLACK: Final = 1 << 12


def pack_items(items: list[Any]) -> bytes:
    """JSON items packed for keeping: :mod:`marshal`, then zlib at its fastest level.

    Marshalled per-frame items are ~220 bytes a frame, 22 MB held at 100,000 frames for as
    long as the metadata lives; compressed they are ~35 bytes (~2.5 ms of CPU a thousand).

    Parameters
    ----------
    items: list[Any]
        Items as ``json.loads`` gives them

    Returns
    -------
    bytes
        What :func:`unpack_items` reads back
    """
    return zlib.compress(marshal.dumps(items), 1)


def unpack_items(packed: bytes) -> list[Any]:
    """The items :func:`pack_items` packed.

    Parameters
    ----------
    packed: bytes
        One packed list

    Returns
    -------
    list[Any]
        The items, equal to those packed
    """
    items: list[Any] = marshal.loads(zlib.decompress(packed))
    return items


class RawJSONItems(list[Any]):
    """A per-frame sequence's items, decoded once and kept packed.

    It holds only the first item as a list; the others are in :attr:`chunks`.

    Parameters
    ----------
    first: dict[str, Any]
        The first item
    chunks: list[bytes]
        Every item, packed a thousand at a time (:func:`pack_items`)
    count: int
        Number of items (kept as :attr:`total`)
    positions: FramePositions | None
        Values read from the items, None when an item has a shape the model does not allow
    """

    def __init__(
        self,
        first: dict[str, Any],
        chunks: list[bytes],
        count: int,
        positions: FramePositions | None,
    ) -> None:
        super().__init__([first])
        self.chunks = chunks
        self.total = count
        self.positions = positions


class _Window:
    """An ASCII window of the body, moved along as items are decoded."""

    def __init__(self, data: bytes, at: int) -> None:
        self.data = data
        self.base = at
        self.text = ""
        self.pos = 0
        self.move(_WINDOW)

    @property
    def at_end(self) -> bool:
        return self.base + len(self.text) >= len(self.data)

    def move(self, size: int) -> None:
        """Start the window at the current position, ``size`` bytes long (ASCII or raise)."""
        self.base += self.pos
        self.pos = 0
        self.text = self.data[self.base : self.base + size].decode("ascii")

    def skip(self) -> None:
        """Past white space (a few KB ahead are always in the window)."""
        if len(self.text) - self.pos < _SLACK and not self.at_end:
            self.move(_WINDOW)
        match = _SPACE.match(self.text, self.pos)
        self.pos = self.pos if match is None else match.end()

    def item(self) -> Any:
        """The JSON value at the position, the window grown until it holds it whole."""
        size = _WINDOW
        while True:
            try:
                value, self.pos = _DECODE(self.text, self.pos)
                return value
            except json.JSONDecodeError:
                if self.at_end:
                    raise  # not truncated by the window: malformed
                size *= 2
                self.move(size)

    def take(self, character: str) -> bool:
        """Step over ``character`` if it is next."""
        if self.text.startswith(character, self.pos):
            self.pos += 1
            return True
        return False


_DECODE: Final = json.JSONDecoder().raw_decode


class _Columns:
    """Values read from each item, kept column by column as they arrive.

    A tuple of five values a frame is ~0.15 KB more at the peak of the split (15 MB at
    100,000 frames); here rows and columns are machine integers and equal Z offsets,
    optical paths and segments are one object each.
    """

    def __init__(self) -> None:
        self.rows = array.array("q")
        self.columns = array.array("q")
        self.z: list[float | None] = []
        self.paths: list[str | None] = []
        self.segments: list[int | None] = []
        self._same: tuple[dict[Any, Any], ...] = ({}, {}, {})

    def add(self, values: tuple[int, int, float | None, str | None, int | None]) -> None:
        """Append one frame's ``(row, column, z, optical_path, segment)``."""
        row, column, z, path, segment = values
        self.rows.append(row)  # OverflowError past int64, as json_frame_values' errors
        self.columns.append(column)
        same_z, same_path, same_segment = self._same
        self.z.append(same_z.setdefault(z, z))
        self.paths.append(same_path.setdefault(path, path))
        self.segments.append(same_segment.setdefault(segment, segment))

    def positions(self) -> FramePositions:
        """The values as :class:`~dicomslide.perframe.FramePositions`."""
        return FramePositions.from_lists(
            self.rows, self.columns, self.z, self.paths, self.segments
        )


def _items(data: bytes, at: int) -> tuple[RawJSONItems, int] | None:
    """The items of the array whose first item starts at or after ``at``; and the end."""
    window = _Window(data, at)
    chunks: list[bytes] = []
    pending: list[Any] = []
    values: _Columns | None = _Columns()
    count = 0
    window.skip()
    if window.take("]"):
        return None  # empty: nothing to gain
    while True:
        item = window.item()
        if not isinstance(item, dict):
            return None
        if values is not None:
            try:
                values.add(json_frame_values(item))
            except JSON_SHAPE_ERRORS:
                values = None  # the full conversion will report it
        pending.append(item)
        count += 1
        if count == 1:
            first = item
        if len(pending) == _CHUNK:
            chunks.append(pack_items(pending))
            pending = []
        window.skip()
        if window.take(","):
            window.skip()
            continue
        if window.take("]"):
            break
        return None
    if pending:
        chunks.append(pack_items(pending))
    positions = None if values is None else values.positions()
    return RawJSONItems(first, chunks, count, positions), window.base + window.pos


def split_per_frame(data: bytes) -> list[Any] | None:
    """Parse a DICOM JSON body, its per-frame sequences item by item; None to parse it whole.

    Parameters
    ----------
    data: bytes
        Response body

    Returns
    -------
    list[Any] | None
        What ``json.loads`` would give, except that each top-level Per-Frame Functional
        Groups Sequence's ``"Value"`` is a :class:`RawJSONItems`; None when the body is
        small, not plain UTF-8, has no such sequence or anything is unexpected
    """
    if len(data) < MIN_BODY or b'"52009230"' not in data or data.startswith(b"\xef\xbb\xbf"):
        return None
    try:
        pieces: list[bytes] = []
        found: list[RawJSONItems] = []
        at = 0
        while True:
            matches = [m for m in (_VALUE_FIRST.search(data, at), _VR_FIRST.search(data, at)) if m]
            if not matches:
                break
            match = min(matches, key=lambda m: m.start())
            read = _items(data, match.end())
            if read is None:
                return None
            items, end = read
            tail = (_VR_AFTER if match.re is _VALUE_FIRST else _CLOSE).match(data, end)
            if tail is None:
                return None
            start = match.start() + len(b'"52009230"')
            marker = b':{"vr":"SQ","Value":[{"%s":%d}]}' % (_MARK.encode(), len(found))
            pieces += [data[at:start], marker]
            found.append(items)
            at = tail.end()
        if not found:
            return None
        pieces.append(data[at:])
        parsed = json.loads(b"".join(pieces))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(parsed, list):
        return None
    placed = 0
    for dataset in parsed:
        element = dataset.get("52009230") if isinstance(dataset, dict) else None
        value = element.get("Value") if isinstance(element, dict) else None
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
            index = value[0].get(_MARK)
            if index == placed and len(value[0]) == 1 and isinstance(element, dict):
                element["Value"] = found[placed]
                placed += 1
    # Every marker back where it was put, in order (else one sat inside a string, say).
    return parsed if placed == len(found) else None

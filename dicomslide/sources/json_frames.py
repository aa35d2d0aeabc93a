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

import json
import marshal
import re
from typing import Any, Final

from dicomslide.perframe import (
    JSON_SHAPE_ERRORS,
    FramePositions,
    json_frame_values,
    positions_from_values,
)

__all__ = ["RawJSONItems", "split_per_frame"]

#: Bodies smaller than this are parsed whole (the split pays for itself on huge sequences).
MIN_BODY: Final = 1 << 20
_CHUNK: Final = 1000
_MARK: Final = "dicomslide-per-frame-items"
# The element's object, with "Value" first (Orthanc) or "vr" first, up to the array's "[".
_VALUE_FIRST: Final = re.compile(r'"52009230"\s*:\s*\{\s*"Value"\s*:\s*\[')
_VR_FIRST: Final = re.compile(r'"52009230"\s*:\s*\{\s*"vr"\s*:\s*"SQ"\s*,\s*"Value"\s*:\s*\[')
_VR_AFTER: Final = re.compile(r'\s*,\s*"vr"\s*:\s*"SQ"\s*\}')
_CLOSE: Final = re.compile(r"\s*\}")
_SPACE: Final = re.compile(r"\s*")


class RawJSONItems(list[Any]):
    """A per-frame sequence's items, decoded once and kept packed.

    It holds only the first item as a list; the others are in :attr:`chunks`.

    Parameters
    ----------
    first: dict[str, Any]
        The first item
    chunks: list[bytes]
        Every item, packed with :mod:`marshal` a thousand at a time
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


def _skip(text: str, at: int) -> int:
    """Position of the first character at or after ``at`` that is not white space."""
    match = _SPACE.match(text, at)
    return at if match is None else match.end()


def _items(text: str, at: int) -> tuple[RawJSONItems, int] | None:
    """The items of the array whose first item starts at or after ``at``; and the end."""
    decode = json.JSONDecoder().raw_decode
    chunks: list[bytes] = []
    pending: list[Any] = []
    values: list[Any] | None = []
    first: Any = None
    count = 0
    at = _skip(text, at)
    if text.startswith("]", at):
        return None  # empty: nothing to gain
    while True:
        item, at = decode(text, at)
        if not isinstance(item, dict):
            return None
        if first is None:
            first = item
        if values is not None:
            try:
                values.append(json_frame_values(item))
            except JSON_SHAPE_ERRORS:
                values = None  # the full conversion will report it
        pending.append(item)
        count += 1
        if len(pending) == _CHUNK:
            chunks.append(marshal.dumps(pending))
            pending = []
        at = _skip(text, at)
        if text.startswith(",", at):
            at = _skip(text, at + 1)
            continue
        if text.startswith("]", at):
            break
        return None
    if pending:
        chunks.append(marshal.dumps(pending))
    positions = None if values is None else positions_from_values(values)
    return RawJSONItems(first, chunks, count, positions), at + 1


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
        text = data.decode("utf-8")
        pieces: list[str] = []
        found: list[RawJSONItems] = []
        at = 0
        while True:
            matches = [m for m in (_VALUE_FIRST.search(text, at), _VR_FIRST.search(text, at)) if m]
            if not matches:
                break
            match = min(matches, key=lambda m: m.start())
            read = _items(text, match.end())
            if read is None:
                return None
            items, end = read
            tail = (_VR_AFTER if match.re is _VALUE_FIRST else _CLOSE).match(text, end)
            if tail is None:
                return None
            start = match.start() + len('"52009230"')
            pieces += [text[at:start], f':{{"vr":"SQ","Value":[{{"{_MARK}":{len(found)}}}]}}']
            found.append(items)
            at = tail.end()
        if not found:
            return None
        pieces.append(text[at:])
        del text
        parsed = json.loads("".join(pieces))
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

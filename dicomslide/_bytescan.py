"""Finding encoded elements and item headers in raw little-endian bytes at C speed.

A sparse image of 100,000 frames has 100,000 per-frame items and as many pixel data
fragments; walking their headers one by one in Python costs ~2 µs each. The functions here
find every candidate at once with numpy and then prove which candidates are real, so that a
guess that happens to be wrong (a value whose bytes look like a header) is never taken as
an answer: callers fall back to an exact walk whenever the proof does not cover everything.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import as_strided

__all__ = [
    "ITEM_TAG",
    "distinct_rows",
    "find_all",
    "gather",
    "item_chain",
    "rarest",
    "take_rows",
]

#: Item tag (FFFE,E000), little endian.
ITEM_TAG: Final = b"\xfe\xff\x00\xe0"
_UNDEFINED: Final = 0xFFFFFFFF
_CHUNK: Final = 1 << 20
#: Bytes whose frequencies choose the byte to search for (see rarest).
_SAMPLE: Final = 1 << 18


def find_all(buf: npt.NDArray[np.uint8], pattern: bytes, first: int = 0) -> npt.NDArray[np.int64]:
    """Offsets of every (possibly overlapping) occurrence of ``pattern`` in ``buf``.

    Parameters
    ----------
    buf: numpy.ndarray
        The bytes, as a one-dimensional uint8 array
    pattern: bytes
        What to look for (not empty)
    first: int, optional
        Index of the pattern byte compared over the whole buffer; the others are compared
        only where it matched, so a byte that is rare in the data makes the search cheapest

    Returns
    -------
    numpy.ndarray
        Ascending int64 offsets
    """
    limit = buf.size - len(pattern) + 1
    if limit <= 0:
        return np.empty(0, dtype=np.int64)
    # A chunk at a time: a comparison over the whole of a 9 MB value would allocate 9 MB.
    parts = [
        _candidates(buf, pattern, first, at, min(limit, at + _CHUNK))
        for at in range(0, limit, _CHUNK)
    ]
    hits = np.concatenate(parts).astype(np.int64)
    if 1 < len(pattern) <= 8:
        # The whole pattern compared as one number per candidate (one gather, not one per
        # byte); candidates too near the end for an 8-byte read go byte by byte below.
        near = hits + 8 > buf.size
        inside = hits[~near]
        mask = (1 << 8 * len(pattern)) - 1
        word = gather(buf, inside, "<u8") & np.uint64(mask)
        matched = inside[word == np.uint64(int.from_bytes(pattern, "little"))]
        hits = np.concatenate([matched, _filtered(buf, hits[near], pattern, first)])
        return hits
    return _filtered(buf, hits, pattern, first)


def _candidates(
    buf: npt.NDArray[np.uint8], pattern: bytes, first: int, begin: int, end: int
) -> npt.NDArray[np.int64]:
    """Offsets in ``[begin, end)`` where byte ``first`` of the pattern matches."""
    return np.flatnonzero(buf[first + begin : first + end] == pattern[first]) + begin


def rarest(buf: npt.NDArray[np.uint8], pattern: bytes) -> int:
    """The index of the pattern byte least frequent in (the start of) ``buf``.

    For :func:`find_all`'s ``first``: each occurrence of that byte is a candidate, and a
    byte such as 0x06 is everywhere in binary values (the search for an absent optical
    path identifier of a sparse image went from ~8 ms to ~1 ms this way).

    Parameters
    ----------
    buf: numpy.ndarray
        The bytes, as a one-dimensional uint8 array
    pattern: bytes
        What will be looked for (not empty)

    Returns
    -------
    int
        An index into ``pattern``
    """
    counts = np.bincount(buf[:_SAMPLE], minlength=256)
    return min(range(len(pattern)), key=lambda k: (int(counts[pattern[k]]), k))


def _filtered(
    buf: npt.NDArray[np.uint8], hits: npt.NDArray[np.int64], pattern: bytes, first: int
) -> npt.NDArray[np.int64]:
    """The candidates whose bytes are ``pattern`` (byte ``first`` is known to match)."""
    for k, byte in enumerate(pattern):
        if k != first and hits.size:
            hits = hits[buf[hits + k] == byte]
    return hits


def gather(buf: npt.NDArray[np.uint8], at: npt.NDArray[np.int64], dtype: str) -> np.ndarray:
    """One little-endian number of type ``dtype`` read at each offset (offsets must fit).

    Parameters
    ----------
    buf: numpy.ndarray
        The bytes, as a one-dimensional uint8 array
    at: numpy.ndarray
        Offsets of the numbers
    dtype: str
        A little-endian numpy type such as ``"<u4"``

    Returns
    -------
    numpy.ndarray
        The numbers
    """
    return take_rows(buf, at, np.dtype(dtype).itemsize).view(dtype).reshape(-1)


def take_rows(
    buf: npt.NDArray[np.uint8], at: npt.NDArray[np.int64], width: int
) -> npt.NDArray[np.uint8]:
    """The ``width`` bytes at each offset, one row each (offsets must fit).

    Parameters
    ----------
    buf: numpy.ndarray
        The bytes, as a one-dimensional uint8 array (a strided view too)
    at: numpy.ndarray
        Offsets
    width: int
        Bytes per row

    Returns
    -------
    numpy.ndarray
        A new ``(len(at), width)`` uint8 array
    """
    if buf.size < width:
        return np.empty((0, width), dtype=np.uint8)
    # Rows of a view with a row at every byte: indexing it copies each row's bytes at once,
    # with no index array per byte (a quarter of the time of a masked view per alignment,
    # which was a fifth of opening a sparse image's first region).
    # The view's own stride: ``buf`` may be a strided view (every other byte, say).
    step = buf.strides[0]
    rows = as_strided(
        buf, shape=(buf.size - width + 1, width), strides=(step, step), writeable=False
    )
    return rows[at]


def item_chain(
    buf: npt.NDArray[np.uint8], origin: int = 0
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Consecutive defined-length items from ``origin``, as far as proven from ``buf``.

    Every item tag in the buffer is a candidate; an item follows another when it starts
    where the other's value ends. Candidates that start the chain or follow some candidate
    are kept, and the kept list counts only as far as each one starts exactly where the one
    before ends (so, by induction from ``origin``, each is a real item header). The chain
    stops early at anything else: a sequence delimiter, an undefined length, an item whose
    header lies past the buffer, or a coincidence among the candidates; the caller walks on
    from there.

    Parameters
    ----------
    buf: numpy.ndarray
        The bytes, as a one-dimensional uint8 array
    origin: int, optional
        Offset of the first item header

    Returns
    -------
    tuple[numpy.ndarray, numpy.ndarray]
        Offsets of the item headers and their value lengths (both int64; empty when no item
        header with a defined length starts at ``origin``)
    """
    empty = np.empty(0, dtype=np.int64)
    found = find_all(buf[origin:], ITEM_TAG, first=0) + origin
    found = found[found + 8 <= buf.size]
    if not found.size or found[0] != origin:
        return empty, empty
    lengths = gather(buf, found + 4, "<u4").astype(np.int64)
    # Which candidates start where some candidate ends (found is sorted; ends need not be).
    ends = (found + 8 + lengths)[lengths != _UNDEFINED]
    where = np.searchsorted(found, ends)
    hit = where < found.size
    hit[hit] = found[where[hit]] == ends[hit]
    keep = np.zeros(found.size, dtype=bool)
    keep[where[hit]] = True
    keep[0] = True
    del ends, where, hit
    starts, lengths = found[keep], lengths[keep]
    del found, keep
    good = (lengths[:-1] != _UNDEFINED) & (starts[:-1] + 8 + lengths[:-1] == starts[1:])
    broken = np.flatnonzero(~good)
    count = int(broken[0]) + 1 if broken.size else starts.size
    if lengths[count - 1] == _UNDEFINED:
        count -= 1
    return starts[:count], lengths[:count]


def distinct_rows(
    table: npt.NDArray[np.uint8],
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """The distinct rows of a byte table and the index of each row among them.

    ``numpy.unique(axis=0)`` sorts rows as structured values (~0.1 s for 100,000 short
    rows); here each row is folded into one 64-bit number, the numbers are sorted, and the
    rows are compared with their representative afterwards, so a collision of the folding
    only costs the slow way, never a wrong answer.

    Parameters
    ----------
    table: numpy.ndarray
        Two-dimensional uint8 array

    Returns
    -------
    tuple[numpy.ndarray, numpy.ndarray]
        The distinct rows (in no particular order) and, for each row, the index of its
        distinct row
    """
    rows, width = table.shape
    if rows and bool((table == table[0]).all()):
        return table[:1], np.zeros(rows, dtype=np.int64)  # the usual case: one encoding
    padded = np.zeros((rows, -(-width // 8) * 8), dtype=np.uint8)
    padded[:, :width] = table
    words = padded.view("<u8")
    key = np.zeros(rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(words.shape[1]):
            key = (key * np.uint64(0x100000001B3)) ^ words[:, k]
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1).astype(np.int64)
    if not np.array_equal(table[first[inverse]], table):
        distinct, inverse = np.unique(table, axis=0, return_inverse=True)
        return distinct, inverse.reshape(-1).astype(np.int64)
    return table[first], inverse

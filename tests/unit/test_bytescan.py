"""The numpy searches for item headers and elements agree with an exact walk, whatever the bytes.

Fragments and per-frame items are generated with values that contain decoy item tags (and
decoys whose length points exactly at a real item), so that the proof of
:func:`dicomslide._bytescan.item_chain` is what keeps the answers right.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from dicomslide import _bytescan
from dicomslide._bytescan import ITEM_TAG, distinct_rows, find_all, item_chain
from dicomslide.errors import InvalidDataError
from dicomslide.sources import part10

DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


def _walk(data: bytes) -> list[tuple[int, int]]:
    """Item headers from 0 by following lengths, the slow and obvious way."""
    out, pos = [], 0
    while pos + 8 <= len(data) and data[pos : pos + 4] == ITEM_TAG:
        (length,) = struct.unpack_from("<I", data, pos + 4)
        if length == 0xFFFFFFFF:
            break
        out.append((pos, length))
        pos += 8 + length
    return out


def _decoy_items(rng: np.random.Generator, count: int) -> bytes:
    """Items whose values hold item tags, some chained so that they land on a real item.

    A decoy pair (A whose length ends exactly at B, B whose length ends exactly at the next
    real item) puts B among the candidates that follow some candidate, which only the
    chain's proof rules out.
    """
    out = bytearray()
    for k in range(count):
        value = bytearray(rng.integers(0, 256, int(rng.integers(0, 48)), dtype=np.uint8))
        if len(value) >= 16 and rng.random() < 0.6:
            a = int(rng.integers(0, len(value) - 15))
            b = int(rng.integers(a + 8, len(value) - 7))
            value[a : a + 8] = ITEM_TAG + struct.pack("<I", b - a - 8)
            rest = len(value) - b - 8
            value[b : b + 8] = ITEM_TAG + struct.pack("<I", rest if k % 3 else rest + 2)
        out += ITEM_TAG + struct.pack("<I", len(value)) + value
    return bytes(out)


@pytest.mark.parametrize("seed", range(40))
def test_item_chain_is_a_prefix_of_the_true_chain(seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = _decoy_items(rng, int(rng.integers(1, 60))) + DELIMITER
    truth = _walk(data)
    starts, lengths = item_chain(np.frombuffer(data, dtype=np.uint8), 0)
    found = list(zip(starts.tolist(), lengths.tolist(), strict=True))
    assert found == truth[: len(found)]
    assert found  # the item at the origin is always proven


def test_decoys_do_stop_the_chain_early() -> None:
    # The generator above does reach the case the proof is for (else its tests prove little).
    short = 0
    for seed in range(40):
        data = _decoy_items(np.random.default_rng(seed), 60) + DELIMITER
        starts, _ = item_chain(np.frombuffer(data, dtype=np.uint8), 0)
        short += starts.size < len(_walk(data))
    assert short >= 10


def test_item_chain_stops_at_undefined_length_and_outside_items() -> None:
    data = ITEM_TAG + struct.pack("<I", 2) + b"ab" + ITEM_TAG + b"\xff\xff\xff\xff" + b"xx"
    starts, lengths = item_chain(np.frombuffer(data, dtype=np.uint8), 0)
    assert starts.tolist() == [0]
    assert lengths.tolist() == [2]
    assert item_chain(np.frombuffer(b"\x00" * 16, dtype=np.uint8), 0)[0].size == 0


def test_find_all_finds_overlapping_hits() -> None:
    buf = np.frombuffer(b"aaaXaaaa", dtype=np.uint8)
    assert find_all(buf, b"aa").tolist() == [0, 1, 4, 5, 6]
    assert find_all(buf, b"aXa", first=1).tolist() == [2]
    assert find_all(buf, b"aaaaaaaaaa").size == 0


def test_distinct_rows_survives_a_collision_of_its_folding() -> None:
    # Rows of 16 bytes: (a, b) and (c, d) fold to the same 64-bit key when
    # (a * P) ^ b == (c * P) ^ d; pick b and d to make that so.
    p = 0x100000001B3
    a, c = 1, 2
    b = 7
    d = (((a * p) & (2**64 - 1)) ^ b) ^ ((c * p) & (2**64 - 1))
    rows = np.frombuffer(struct.pack("<QQQQQQ", a, b, c, d, a, b), dtype=np.uint8).reshape(3, 16)
    distinct, index = distinct_rows(rows)
    assert len(distinct) == 2
    assert np.array_equal(distinct[index], rows)


def _read_at(data: bytes) -> part10.ReadAt:
    return lambda offset, size: data[offset : offset + size]


@pytest.mark.parametrize("window", [64, 1000, 1 << 20])
@pytest.mark.parametrize("seed", range(8))
def test_fragment_spans_equal_the_fragment_scan(
    seed: int, window: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(part10, "_SCAN_WINDOW", window)
    rng = np.random.default_rng(seed)
    data = b"\x00" * 10 + _decoy_items(rng, 200) + DELIMITER
    offsets, lengths = part10.scan_fragment_spans(_read_at(data), len(data), 10)
    fragments = part10.scan_fragments(_read_at(data), len(data), 10)
    assert offsets.tolist() == [f.offset for f in fragments]
    assert lengths.tolist() == [f.length for f in fragments]


@pytest.mark.parametrize(
    "tail",
    [
        b"",  # no sequence delimiter
        ITEM_TAG + struct.pack("<I", 1000) + b"short",  # last fragment past the end
        b"\x10\x00\x10\x00\x00\x00\x00\x00",  # not an item tag
        ITEM_TAG + b"\xff\xff\xff\xff",  # undefined length
    ],
)
def test_fragment_spans_fail_as_the_fragment_scan_does(
    tail: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(part10, "_SCAN_WINDOW", 256)
    data = _decoy_items(np.random.default_rng(1), 50) + tail
    with pytest.raises(InvalidDataError) as expected:
        part10.scan_fragments(_read_at(data), len(data), 0)
    with pytest.raises(InvalidDataError) as actual:
        part10.scan_fragment_spans(_read_at(data), len(data), 0)
    assert str(actual.value) == str(expected.value)


def test_frames_sharing_a_cell_leave_the_later_one() -> None:
    # As the frame-by-frame fill did: the last frame placed at a position is the one read.
    from dicomslide.geometry import _place_frames

    rng = np.random.default_rng(3)
    shape = (2, 1, 5, 5)
    where = tuple(rng.integers(0, size, 400) for size in shape)
    lookup = np.full(shape, -1, dtype=np.int64)
    _place_frames(lookup, where, 10)
    expected = np.full(shape, -1, dtype=np.int64)
    for i, cell in enumerate(zip(*where, strict=True)):
        expected[cell] = 10 + i
    np.testing.assert_array_equal(lookup, expected)


@pytest.mark.parametrize("seed", range(6))
def test_find_all_and_gather_agree_with_a_plain_search(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small chunks: hits across chunk borders and at the very end of the buffer.
    monkeypatch.setattr(_bytescan, "_CHUNK", 97)
    rng = np.random.default_rng(seed)
    data = bytes(rng.integers(0, 4, 3000, dtype=np.uint8))  # few symbols: many hits
    buf = np.frombuffer(data, dtype=np.uint8)
    for size in (1, 2, 4, 7, 8, 9):
        pattern = data[-size:] if seed % 2 else bytes(rng.integers(0, 4, size, dtype=np.uint8))
        expected = [i for i in range(len(data) - size + 1) if data.startswith(pattern, i)]
        for first in {0, size - 1, _bytescan.rarest(buf, pattern)}:
            assert _bytescan.find_all(buf, pattern, first).tolist() == expected
    at = rng.integers(0, len(data) - 8, 500).astype(np.int64)
    for dtype in ("<u2", "<i4", "<u8"):
        width = np.dtype(dtype).itemsize
        expected_values = [
            int.from_bytes(data[i : i + width], "little", signed="i" in dtype) for i in at
        ]
        assert _bytescan.gather(buf, at, dtype).tolist() == expected_values


@pytest.mark.parametrize("step", [2, 3, -1])
def test_take_rows_and_gather_read_a_strided_view_by_its_own_bytes(step: int) -> None:
    rng = np.random.default_rng(step + 10)
    whole = rng.integers(0, 256, 4000, dtype=np.uint8)
    view = whole[::step]
    plain = view.tobytes()  # the bytes the view shows, in its order
    at = rng.integers(0, view.size - 8, 300).astype(np.int64)
    rows = _bytescan.take_rows(view, at, 5)
    assert [bytes(row) for row in rows] == [plain[i : i + 5] for i in at]
    expected = [int.from_bytes(plain[i : i + 4], "little") for i in at]
    assert _bytescan.gather(view, at, "<u4").tolist() == expected

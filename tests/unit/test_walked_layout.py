"""Frames located on demand (:mod:`dicomslide.sources.walked_layout`) against the exact scan."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, RLELossless

from dicomslide.errors import InvalidDataError
from dicomslide.sources import part10
from dicomslide.sources.walked_layout import WalkedLayout, open_frame_layout
from tests.support.part10 import set_pixel_data, wsi_dataset

_DELIMITER = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)


def _jpeg_like(i: int, rng: np.random.Generator) -> bytes:
    """A codestream-like fragment of random length; its body may hold item-tag decoys."""
    body = bytearray(rng.integers(0, 256, int(rng.integers(4, 300)), dtype=np.uint8).tobytes())
    if i % 7 == 0 and len(body) >= 8:
        body[:4] = b"\xfe\xff\x00\xe0"  # a decoy item tag inside the value
    return b"\xff\xd8" + bytes(body) + b"\xff\xd9"


def _file(fragments: list[bytes], frames: int, syntax: str = JPEGBaseline8Bit) -> bytes:
    ds = wsi_dataset(syntax, frames, 4, 4)
    set_pixel_data(ds, encapsulate(fragments, has_bot=False), "OB")
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


class _Reads:
    """A file's bytes read at offsets, with the number of bytes read counted."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.bytes = 0

    def __call__(self, offset: int, size: int) -> bytes:
        self.bytes += size
        return self.data[offset : offset + size]


def _open(data: bytes) -> tuple[part10.FrameLayout, _Reads]:
    header = part10.read_part10_header(io.BytesIO(data), specific_tags=part10.LAYOUT_TAGS)
    assert header.dataset is not None
    assert header.pixel_data is not None
    reads = _Reads(data)
    return open_frame_layout(header, reads, len(data)), reads


def _exact(data: bytes) -> part10.FrameLayout:
    header = part10.read_part10_header(io.BytesIO(data), specific_tags=part10.LAYOUT_TAGS)
    assert header.dataset is not None
    assert header.pixel_data is not None
    return part10.build_frame_layout(
        header.dataset, header.pixel_data, header.transfer_syntax_uid, _Reads(data), len(data)
    )


@pytest.mark.parametrize(("seed", "window"), [(0, 64), (1, 4096), (2, 1 << 20), (3, 777)])
def test_walked_spans_equal_the_exact_scan(
    seed: int, window: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(part10, "_SCAN_WINDOW", window)
    rng = np.random.default_rng(seed)
    frames = 3000
    data = _file([_jpeg_like(i, rng) for i in range(frames)], frames)
    exact = _exact(data)
    layout, reads = _open(data)
    assert isinstance(layout, WalkedLayout)
    assert not layout.complete
    completed = []
    for target in [*sorted(rng.integers(1, frames, 5).tolist()), frames]:
        completed.append(layout.locate(target, reads))
        assert layout.known >= target
        for n in range(1, target + 1, 37):
            assert layout.span(n) == exact.span(n)
        assert layout.span(target) == exact.span(target)
    assert completed[-1]
    assert not any(completed[:-1])
    assert layout.complete
    assert np.array_equal(layout.starts, exact.starts)
    assert np.array_equal(layout.stops, exact.stops)
    assert not layout.locate(frames, reads)  # nothing left to do


def test_reading_the_first_frames_reads_only_their_part_of_the_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(part10, "_SCAN_WINDOW", 1 << 16)
    rng = np.random.default_rng(7)
    frames = 20_000
    data = _file([_jpeg_like(i, rng) for i in range(frames)], frames)
    layout, reads = _open(data)
    assert layout.locate(50, reads) is False
    # Two 64 KB windows at most, plus the header checks: not the 3 MB of frames.
    assert reads.bytes < 3 * (1 << 16) < len(data) // 10
    with pytest.raises(IndexError, match="not located"):
        layout.span(int(layout.known) + 1)  # type: ignore[attr-defined]


def test_frames_of_two_fragments_hand_over_to_the_exact_scan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(part10, "_SCAN_WINDOW", 4096)
    rng = np.random.default_rng(3)
    fragments = []
    for i in range(400):
        first = _jpeg_like(i, rng)
        if i == 300:  # the frame's second fragment does not start a codestream
            fragments += [first[:-2], b"\x00\x01" + first[-2:]]
        else:
            fragments.append(first)
    # 401 fragments, 400 frames: the exact scan groups them by their start markers.
    data = _file(fragments, 400)
    exact = _exact(data)
    layout, reads = _open(data)
    layout.locate(10, reads)
    assert layout.span(10) == exact.span(10)
    assert layout.locate(400, reads)
    assert np.array_equal(layout.starts, exact.starts)
    assert np.array_equal(layout.stops, exact.stops)
    offset, length = layout.span(301)
    assert len(part10.split_items(data[offset : offset + length])) == 2


@pytest.mark.parametrize("count", [99, 101])
def test_more_or_fewer_fragments_than_frames_fail_as_the_exact_scan_does(
    count: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(part10, "_SCAN_WINDOW", 1024)
    rng = np.random.default_rng(count)
    data = _file([_jpeg_like(i, rng) for i in range(count)], 100)
    with pytest.raises(InvalidDataError) as exact_error:
        _exact(data)
    layout, reads = _open(data)
    assert isinstance(layout, WalkedLayout)
    layout.locate(5, reads)  # the fault lies further on
    with pytest.raises(InvalidDataError) as walked_error:
        layout.locate(100, reads)
    assert str(walked_error.value) == str(exact_error.value)
    with pytest.raises(InvalidDataError) as again:  # and stays reported
        layout.locate(2, reads)
    with pytest.raises(InvalidDataError) as third:
        layout.locate(2, reads)
    assert not layout.complete
    # A new exception per call (threads share the layout), each saying the same.
    assert len({id(walked_error.value), id(again.value), id(third.value)}) == 3
    assert str(again.value) == str(third.value) == str(exact_error.value)
    assert again.value.__cause__ is walked_error.value


@pytest.mark.parametrize("failure", [OSError(5, "Input/output error"), MemoryError()])
def test_a_read_that_fails_mid_walk_is_not_taken_for_the_end(failure: Exception) -> None:
    # Two frames in three fragments, all large (read header by header): the second frame's
    # continuation fragment is the one whose header read fails once.
    head = b"\xff\xd8\xff" + bytes(19_997)
    data = _file([head, head, b"\x11" * 20_000], 2)
    exact = _exact(data)
    continuation = exact.span(2)[0] + 8 + len(head)
    layout, reads = _open(data)
    assert isinstance(layout, WalkedLayout)
    failed = []

    def flaky(offset: int, size: int) -> bytes:
        if offset == continuation and not failed:
            failed.append(offset)
            raise failure
        return reads(offset, size)

    with pytest.raises(type(failure)):
        layout.locate(2, flaky)
    assert failed
    assert not layout.complete
    assert layout.locate(2, flaky)  # the walk cannot go on: the exact scan answers
    assert layout.complete
    assert layout.span(2) == exact.span(2)
    assert np.array_equal(layout.stops, exact.stops)


@pytest.mark.parametrize("cut", [8, 100, 1000])
def test_a_truncated_file_is_scanned_exactly_from_the_start(cut: int) -> None:
    rng = np.random.default_rng(cut)
    data = _file([_jpeg_like(i, rng) for i in range(200)], 200)[:-cut]
    with pytest.raises(InvalidDataError, match=r"truncated|beyond the end"):
        _open(data)


def test_files_it_does_not_walk_get_the_exact_layout() -> None:
    rng = np.random.default_rng(1)
    fragments = [_jpeg_like(i, rng) for i in range(50)]
    # No codestream markers for RLE, an offset table, a single frame, data after the pixels.
    rle = _file(fragments, 50, RLELossless)
    ds = wsi_dataset(JPEGBaseline8Bit, 50, 4, 4)
    set_pixel_data(ds, encapsulate(fragments, has_bot=True), "OB")
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with_bot = buffer.getvalue()
    single = _file([b"".join(fragments)], 1)
    trailing = _file(fragments, 50) + struct.pack("<HHL", 0xFFFC, 0xFFFC, 4) + bytes(4)
    for data in (rle, with_bot, single, trailing):
        layout, _ = _open(data)
        assert not isinstance(layout, WalkedLayout)
        assert layout.complete
        assert np.array_equal(layout.starts, _exact(data).starts)

"""Blocking region reads of one frame are decoded by the calling thread.

The loop thread only fetches; the caller decodes its frames after the call returns
(dicomslide._caller_decode). These tests check that this path gives the pixels of the async
path for aligned, edge and padded tiles from many threads at once, that it is taken only
where it may be (one frame to decode, the array returned unchanged), that returned arrays never
alias the decoded-tile cache, and that errors reach the caller as on the async path.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

import dicomslide
import dicomslide_sync
from dicomslide import _caller_decode
from dicomslide.errors import DecodeError
from dicomslide.image import ImageReader
from dicomslide.synthetic import expected_pixels, write_slide
from tests.support.slides import slide_spec

# 700 x 900 in 128-pixel tiles: the last tile row and column are edge tiles (clipped).
NATIVE = slide_spec((700, 900), 128, 2, transfer_syntax_uid=ExplicitVRLittleEndian)
JPEG = slide_spec((700, 900), 128, 2, transfer_syntax_uid=JPEGBaseline8Bit)
TILE = 128


def _regions() -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(offset, size) of every aligned tile, plus unaligned, padded and larger reads."""
    tiles = [((r, c), (TILE, TILE)) for r in range(0, 700, TILE) for c in range(0, 900, TILE)]
    return [
        *tiles,
        ((60, 70), (TILE, TILE)),  # four frames, unaligned: decoded in the pool
        ((650, 850), (TILE, TILE)),  # past the bottom-right corner: filled
        ((0, 0), (300, 300)),  # nine frames: decoded in the pool
        ((699, 899), (1, 1)),
    ]


@pytest.fixture
def decode_threads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(thread name, frames pasted) of every decode_into call."""
    seen: list[tuple[str, int]] = []
    original = ImageReader.decode_into

    def spy(self: ImageReader, *args: Any, **kwargs: Any) -> None:
        # Pool threads are named dicomslide-decode_N, our callers caller_N.
        seen.append((threading.current_thread().name.split("_")[0], 1))
        original(self, *args, **kwargs)

    monkeypatch.setattr(ImageReader, "decode_into", spy)
    return seen


def _async_regions(folder: Path) -> list[np.ndarray]:
    async def main() -> list[np.ndarray]:
        async with dicomslide.DICOMfileClient(folder) as client:
            (slide,) = await dicomslide.find_slides(client)
            # One after the other: nothing shared in flight, every frame decoded in the pool.
            return [await slide.get_image_region(o, 0, s) for o, s in _regions()]

    return asyncio.run(main())


@pytest.mark.parametrize("spec", [NATIVE, JPEG], ids=["native", "jpeg"])
def test_sixteen_threads_get_the_async_pixels(
    tmp_path: Path, spec: Any, decode_threads: list[tuple[str, int]]
) -> None:
    write_slide(tmp_path, spec)
    expected = _async_regions(tmp_path)
    assert {name for name, _ in decode_threads} == {"dicomslide-decode"}
    decode_threads.clear()
    with dicomslide_sync.DICOMfileClient(tmp_path) as client:
        (slide,) = dicomslide_sync.find_slides(client)
        with ThreadPoolExecutor(16, thread_name_prefix="caller") as pool:
            got = list(pool.map(lambda q: slide.get_image_region(q[0], 0, q[1]), _regions()))
    for (offset, size), a, b in zip(_regions(), expected, got, strict=True):
        assert b.shape == (*size, 3), offset
        np.testing.assert_array_equal(b, a, err_msg=f"region at {offset}")
    if spec is NATIVE:
        np.testing.assert_array_equal(got[0], expected_pixels(spec, 0)[:TILE, :TILE])
        corner = got[-3]  # 650..778 x 850..978 of a 700 x 900 matrix: white past the edge
        np.testing.assert_array_equal(corner[:50, :50], expected_pixels(spec, 0)[650:, 850:])
        assert (corner[50:] == 255).all()
        assert (corner[:, 50:] == 255).all()
    names = [name for name, _ in decode_threads]
    # The 48 one-frame tiles in callers' threads; the later regions find their frames in
    # the decoded-tile cache (nothing is decoded twice), whoever decoded them.
    assert set(names) <= {"caller", "dicomslide-decode"}
    assert names.count("caller") >= 40
    assert names.count("dicomslide-decode") <= 9


def test_only_small_reads_that_return_the_reader_array_are_left_to_the_caller(
    tmp_path: Path, decode_threads: list[tuple[str, int]]
) -> None:
    write_slide(tmp_path, NATIVE)
    with dicomslide_sync.DICOMfileClient(tmp_path) as client:
        (slide,) = dicomslide_sync.find_slides(client)
        slide.get_image_region((0, 0), 0, (TILE, TILE))
        assert [n for n, _ in decode_threads] == ["MainThread"]
        decode_threads.clear()
        big = _caller_decode.MAX_FRAMES + 1
        slide.get_image_region((0, TILE), 0, (TILE, TILE * big))
        assert [n for n, _ in decode_threads] == ["dicomslide-decode"] * big
        decode_threads.clear()
        # A slide region post-processes the reader's array: decoded in the pool, complete.
        image = slide.get_volume_images()[0]
        x, y = image.get_slide_offset((3 * TILE, 3 * TILE))
        size = TILE * float(np.mean(image.pixel_spacing))
        region = slide.get_slide_region((x, y), 0, (size, size))
        assert region.shape[0] >= TILE - 1
        assert {n for n, _ in decode_threads} == {"dicomslide-decode"}
        decode_threads.clear()
        # The other region reads that return the reader's array take the caller's path.
        tile = image.get_image_region((2 * TILE, 0), (TILE, TILE))
        matrix = image.get_total_pixel_matrix()
        same = matrix.read_region((2 * TILE, 0), (TILE, TILE))
        assert [n for n, _ in decode_threads] == ["MainThread"]  # the second hit the cache
        for got in (tile, same):
            np.testing.assert_array_equal(got, expected_pixels(NATIVE, 0)[256:384, :TILE])
    # Nothing is left armed outside the call.
    assert _caller_decode.caller_decodes.get() is None


def test_returned_tiles_do_not_alias_the_decoded_cache(tmp_path: Path) -> None:
    write_slide(tmp_path, NATIVE)
    with dicomslide_sync.DICOMfileClient(tmp_path) as client:
        (slide,) = dicomslide_sync.find_slides(client)
        first = slide.get_image_region((TILE, TILE), 0, (TILE, TILE))
        assert first.flags.writeable
        first[:] = 7
        again = slide.get_image_region((TILE, TILE), 0, (TILE, TILE))
        assert dicomslide.get_cache_stats(client).decoded_hits >= 1
        assert again is not first
        np.testing.assert_array_equal(again, expected_pixels(NATIVE, 0)[128:256, 128:256])


def test_a_corrupt_frame_fails_the_caller_as_on_the_async_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_slide(tmp_path, JPEG)
    from dicomslide import codecs

    real = codecs.decode_frame

    def broken(data: Any, *args: Any, **kwargs: Any) -> Any:
        return real(bytes(data)[: len(data) // 2], *args, **kwargs)

    monkeypatch.setattr("dicomslide.image.decode_frame", broken)
    with dicomslide_sync.DICOMfileClient(tmp_path) as client:
        (slide,) = dicomslide_sync.find_slides(client)
        with pytest.raises(DecodeError, match="truncated"):
            slide.get_image_region((0, 0), 0, (TILE, TILE))
        assert dicomslide.get_cache_stats(client).decoded_bytes == 0

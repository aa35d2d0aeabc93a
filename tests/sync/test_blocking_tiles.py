"""Blocking tile reads from many threads: the async pixels, no aliasing, errors reach callers.

The tile-server pattern (one ``get_image_region`` per tile from 16 threads of
``dicomslide_sync``) must give exactly what the async API gives for aligned, edge and padded
tiles and for regions of several frames, whatever the interleaving of the threads; returned
arrays must be the caller's own (never a view of the decoded-tile cache); and a corrupt frame
must fail the caller that read it, leaving nothing in the cache.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

import dicomslide
import dicomslide_sync
from dicomslide.errors import DecodeError
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
        ((60, 70), (TILE, TILE)),  # four frames, unaligned
        ((650, 850), (TILE, TILE)),  # past the bottom-right corner: filled
        ((0, 0), (300, 300)),  # nine frames
        ((699, 899), (1, 1)),
    ]


def _async_regions(folder: Path) -> list[np.ndarray]:
    async def main() -> list[np.ndarray]:
        async with dicomslide.DICOMfileClient(folder) as client:
            (slide,) = await dicomslide.find_slides(client)
            # One after the other: nothing shared in flight.
            return [await slide.get_image_region(o, 0, s) for o, s in _regions()]

    return asyncio.run(main())


@pytest.mark.parametrize("spec", [NATIVE, JPEG], ids=["native", "jpeg"])
def test_sixteen_threads_get_the_async_pixels(tmp_path: Path, spec: Any) -> None:
    write_slide(tmp_path, spec)
    expected = _async_regions(tmp_path)
    with dicomslide_sync.DICOMfileClient(tmp_path) as client:
        (slide,) = dicomslide_sync.find_slides(client)
        with ThreadPoolExecutor(16) as pool:
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


def test_returned_tiles_do_not_alias_the_decoded_cache(tmp_path: Path) -> None:
    write_slide(tmp_path, NATIVE)
    with dicomslide_sync.DICOMfileClient(tmp_path) as client:
        (slide,) = dicomslide_sync.find_slides(client)
        first = slide.get_image_region((TILE, TILE), 0, (TILE, TILE))
        assert first.flags.writeable
        first[:] = 7
        # A tile read whole is cached on its second decode, served from the cache on the third.
        slide.get_image_region((TILE, TILE), 0, (TILE, TILE))
        again = slide.get_image_region((TILE, TILE), 0, (TILE, TILE))
        assert dicomslide.get_cache_stats(client).decoded_hits >= 1
        assert again is not first
        np.testing.assert_array_equal(again, expected_pixels(NATIVE, 0)[128:256, 128:256])


def test_a_corrupt_frame_fails_the_blocking_caller(
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

"""Admission to the decoded-tile cache: tiles read whole, one per read, wait for a second decode.

A scan that pastes each tile whole into its own output must not keep a cached copy of every
tile on its first pass (each copy is a freshly allocated buffer); a tile decoded a second time
is cached. Tiles only partly covered by a read, and every tile of a read of several tiles,
are cached on their first decode: reads of neighbours and warm re-reads need them. Pixels
are the same whichever path a tile takes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

import dicomslide
from dicomslide import frames
from dicomslide.frames import DecodedTileCache
from dicomslide.synthetic import expected_pixels, write_slide
from tests.support.slides import slide_spec

# 700 x 900 in 128-pixel tiles: 6 x 8 tiles, the last row and column clipped by the matrix.
NATIVE = slide_spec((700, 900), 128, 1, transfer_syntax_uid=ExplicitVRLittleEndian)
JPEG = slide_spec((700, 900), 128, 1, transfer_syntax_uid=JPEGBaseline8Bit)
TILE = 128
TILES = [(r, c) for r in range(0, 700, TILE) for c in range(0, 900, TILE)]
TILE_BYTES = TILE * TILE * 3


async def _scan(slide: Any) -> list[np.ndarray]:
    return list(await asyncio.gather(*(slide.get_image_region(o, 0, (TILE, TILE)) for o in TILES)))


@pytest.mark.parametrize("spec", [NATIVE, JPEG], ids=["native", "jpeg"])
def test_a_whole_tile_scan_is_cached_on_its_second_pass(tmp_path: Path, spec: Any) -> None:
    write_slide(tmp_path, spec)

    async def main() -> None:
        async with dicomslide.DICOMfileClient(tmp_path) as client:
            (slide,) = await dicomslide.find_slides(client)
            cache = client.runtime.decoded_cache
            first = await _scan(slide)
            assert cache.bytes == 0, "first pass of whole tiles cached something"
            second = await _scan(slide)
            assert cache.bytes == len(TILES) * TILE_BYTES
            assert dicomslide.get_cache_stats(client).decoded_hits == 0
            third = await _scan(slide)
            assert dicomslide.get_cache_stats(client).decoded_hits == len(TILES)
            whole = await slide.get_image_region((0, 0), 0, (700, 900))
        for (r, c), a, b, d in zip(TILES, first, second, third, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=f"tile at {(r, c)}")
            np.testing.assert_array_equal(a, d, err_msg=f"tile at {(r, c)}")
            rows, cols = min(TILE, 700 - r), min(TILE, 900 - c)
            np.testing.assert_array_equal(a[:rows, :cols], whole[r : r + rows, c : c + cols])
            assert (a[rows:] == 255).all()
            assert (a[:, cols:] == 255).all()
            assert a.flags.writeable
            assert d.flags.writeable
        if spec is NATIVE:
            np.testing.assert_array_equal(whole, expected_pixels(spec, 0))

    asyncio.run(main())


def test_partly_covered_tiles_are_cached_on_their_first_decode(tmp_path: Path) -> None:
    write_slide(tmp_path, NATIVE)

    async def main() -> None:
        async with dicomslide.DICOMfileClient(tmp_path) as client:
            (slide,) = await dicomslide.find_slides(client)
            cache = client.runtime.decoded_cache
            # Four frames, none of them whole: all four are cached at once.
            part = await slide.get_image_region((60, 70), 0, (TILE, TILE))
            assert cache.bytes == 4 * TILE_BYTES
            np.testing.assert_array_equal(part, expected_pixels(NATIVE, 0)[60:188, 70:198])
            # The neighbours' whole reads are served by those tiles without decoding.
            tile = await slide.get_image_region((TILE, TILE), 0, (TILE, TILE))
            assert dicomslide.get_cache_stats(client).decoded_hits == 1
            np.testing.assert_array_equal(tile, expected_pixels(NATIVE, 0)[128:256, 128:256])
            # A region of several frames caches all of them, its whole middle tile as well:
            # re-reading it decodes nothing.
            await slide.get_image_region((200, 200), 0, (300, 300))
            assert cache.bytes == (4 + 8) * TILE_BYTES
            hits = dicomslide.get_cache_stats(client).decoded_hits
            again = await slide.get_image_region((200, 200), 0, (300, 300))
            assert dicomslide.get_cache_stats(client).decoded_hits == hits + 9
            np.testing.assert_array_equal(again, expected_pixels(NATIVE, 0)[200:500, 200:500])

    asyncio.run(main())


def test_offer_remembers_a_bounded_number_of_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frames, "SEEN_MAX_KEYS", 3)
    cache = DecodedTileCache(10 * TILE_BYTES)
    tile = np.zeros((TILE, TILE, 3), np.uint8)
    assert not any(cache.offer(("uid", n, False), tile.copy()) for n in range(1, 5))
    # Keys 2-4 are cached on their second offer; key 1 was forgotten when the fourth came.
    assert [cache.offer(("uid", n, False), tile.copy()) for n in (2, 3, 4)] == [True] * 3
    assert not cache.offer(("uid", 1, False), tile.copy())
    assert cache.bytes == 3 * TILE_BYTES
    assert cache.get(("uid", 2, False)) is not None
    assert not cache.get(("uid", 2, False)).flags.writeable
    # Without a budget nothing is remembered or cached.
    empty = DecodedTileCache(0)
    assert not empty.offer(("uid", 1, False), tile)
    assert not empty.offer(("uid", 1, False), tile)
    assert tile.flags.writeable

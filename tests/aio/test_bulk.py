"""Bulk access: prefetch fills the cache in predictable requests; iter_tiles streams tiles."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import dicomslide
import dicomslide_sync
import dicomslide_sync.bulk
from dicomslide.bulk import PrefetchBudgetError, PrefetchBudgetWarning, iter_tiles, prefetch
from dicomslide.runtime import frame_service
from dicomslide.synthetic import SlideSpec, expected_pixels, write_slide
from tests.support.processes import run_python
from tests.support.slides import slide_spec

# Lossless and without ICC profile, so decoded pixels equal the synthetic truth exactly.
SPEC = slide_spec(
    (700, 1000),
    64,
    2,
    transfer_syntax_uid="1.2.840.10008.1.2.1",
    icc_profile=False,
    optical_paths=2,
    seed=31,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bulk") / "slide"
    write_slide(path, SPEC)
    return path


async def _open(folder: Path, index: Path) -> tuple[dicomslide.DICOMfileClient, dicomslide.Slide]:
    client = dicomslide.DICOMfileClient(folder, index_dir=index)
    slides = await dicomslide.find_slides(client)
    assert len(slides) == 1
    return client, slides[0]


def _grid(level: int = 0) -> tuple[int, int]:
    rows, cols = expected_pixels(SPEC, level).shape[:2]
    return math.ceil(rows / 64), math.ceil(cols / 64)


async def test_prefetch_makes_every_later_read_a_cache_hit(folder: Path, tmp_path: Path) -> None:
    client, slide = await _open(folder, tmp_path)
    service = frame_service(dicomslide.runtime.as_source(client))
    service.max_frames_per_request = 40  # several chunks per instance
    tiles = _grid()[0] * _grid()[1]
    before = dicomslide.CacheStats(**vars(slide.cache_stats))
    calls: list[tuple[int, int]] = []
    result = await prefetch(slide, 0, progress=lambda d, t: calls.append((d, t)))
    after = slide.cache_stats
    # one instance per optical path at level 0; each costs ceil(tiles / 40) requests
    predicted = 2 * math.ceil(tiles / 40)
    assert result.total_frames == result.fetched_frames == 2 * tiles
    assert result.requests == predicted
    assert after.requests - before.requests == predicted
    assert after.frames_fetched - before.frames_fetched == 2 * tiles
    assert result.complete
    assert calls[0] == (0, 2 * tiles)
    assert calls[-1] == (2 * tiles, 2 * tiles)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    hits, misses, requests = after.hits, after.misses, after.requests
    rows, cols = slide.total_pixel_matrix_dimensions[0]
    for channel in range(2):
        region = await slide.get_image_region((0, 0), 0, (rows, cols), channel)
        np.testing.assert_array_equal(region, expected_pixels(SPEC, 0, channel))
    stats = slide.cache_stats
    assert stats.requests == requests
    assert stats.misses == misses
    assert stats.hits - hits == 2 * tiles
    # a second prefetch fetches nothing; its frames count as cache hits
    hits_before = slide.cache_stats.hits
    again = await prefetch(slide, 0)
    assert again.fetched_frames == 0
    assert again.cached_frames == 2 * tiles
    assert again.requests == 0
    assert slide.cache_stats.hits - hits_before == 2 * tiles
    await client.aclose()


async def test_prefetch_chunks_of_one_instance_run_in_parallel(
    folder: Path, tmp_path: Path
) -> None:
    # Reads hold frames behind one request per instance; a prefetch bounds its own requests
    # and runs several chunks of one instance at once (a multi-core server answers them in
    # parallel).
    client, slide = await _open(folder, tmp_path)
    source = dicomslide.runtime.as_source(client)
    service = frame_service(source)
    service.max_frames_per_request = 10
    running: dict[str, int] = {}
    most: dict[str, int] = {}
    original = source.iter_frames

    async def counting(study: str, series: str, sop: str, numbers: Any) -> Any:
        running[sop] = running.get(sop, 0) + 1
        most[sop] = max(most.get(sop, 0), running[sop])
        try:
            async for item in original(study, series, sop, numbers):
                await asyncio.sleep(0)
                yield item
        finally:
            running[sop] -= 1

    source.iter_frames = counting  # type: ignore[method-assign]
    result = await prefetch(slide, 0)
    assert result.complete
    assert max(most.values()) > 1
    await client.aclose()


async def test_prefetch_region_and_channel_selection(folder: Path, tmp_path: Path) -> None:
    client, slide = await _open(folder, tmp_path)
    result = await prefetch(slide, 0, region=((60, 70), (10, 100)), channels=[1])
    # rows 60..69 touch grid rows 0 and 1; columns 70..169 touch grid columns 1 and 2
    assert result.total_frames == 4
    assert slide.cache_stats.requests == 1
    with pytest.raises(dicomslide.RegionError):
        await prefetch(slide, 0, channels=[5])
    with pytest.raises(dicomslide.RegionError):
        await prefetch(slide, 0, region=((5000, 0), (1, 1)))
    await client.aclose()


async def test_prefetch_stops_at_the_cache_budget(folder: Path, tmp_path: Path) -> None:
    tile_bytes = 64 * 64 * 3
    client = dicomslide.DICOMfileClient(
        folder, index_dir=tmp_path, cache_max_bytes=30 * tile_bytes
    )
    slide = (await dicomslide.find_slides(client))[0]
    frame_service(client).max_frames_per_request = 8
    with pytest.warns(PrefetchBudgetWarning, match="cache_max_bytes"):
        result = await prefetch(slide, 0, channels=0)
    assert not result.complete
    assert 0 < result.fetched_frames <= 30
    assert result.fetched_frames + result.skipped_frames == result.total_frames
    assert slide.cache_stats.evictions == 0
    assert slide.cache_stats.bytes <= 30 * tile_bytes
    with pytest.raises(PrefetchBudgetError):
        await prefetch(slide, 0, channels=1, strict=True)
    await client.aclose()


@pytest.mark.parametrize("ordered", [False, True])
async def test_iter_tiles_yields_every_tile_once(
    folder: Path, tmp_path: Path, ordered: bool
) -> None:
    client, slide = await _open(folder, tmp_path)
    level, channel = 1, 1
    truth = expected_pixels(SPEC, level, channel)
    out = np.zeros_like(truth)
    seen = []
    async for tile in iter_tiles(
        slide, level, channel_index=channel, ordered=ordered, max_in_flight=5
    ):
        r, c = tile.position
        assert (r, c) == (tile.grid_row * 64, tile.grid_column * 64)
        h, w = tile.pixels.shape[:2]
        np.testing.assert_array_equal(tile.pixels, truth[r : r + h, c : c + w])
        out[r : r + h, c : c + w] = tile.pixels
        seen.append((tile.grid_row, tile.grid_column))
    grid_rows, grid_cols = _grid(level)
    raster = [(r, c) for r in range(grid_rows) for c in range(grid_cols)]
    assert sorted(seen) == raster
    if ordered:
        assert seen == raster
    np.testing.assert_array_equal(out, truth)
    await client.aclose()


async def test_iter_tiles_region_and_early_exit(folder: Path, tmp_path: Path) -> None:
    client, slide = await _open(folder, tmp_path)
    positions = [
        t.position async for t in iter_tiles(slide, 0, region=((100, 100), (50, 50)), ordered=True)
    ]
    assert positions == [(64, 64), (64, 128), (128, 64), (128, 128)]
    tiles = iter_tiles(slide, 0, max_in_flight=3)
    first = await anext(tiles)
    assert first.pixels.shape == (64, 64, 3)
    await tiles.aclose()  # cancels the reads in flight without error
    with pytest.raises(dicomslide.ArgumentError, match="max_in_flight"):  # not a region
        await anext(iter_tiles(slide, 0, max_in_flight=0))
    await client.aclose()


def test_blocking_twins(folder: Path, tmp_path: Path) -> None:
    client = dicomslide_sync.DICOMfileClient(folder, index_dir=tmp_path)
    slide = dicomslide_sync.find_slides(client)[0]
    result = dicomslide_sync.bulk.prefetch(slide, 1, channels=0)
    grid_rows, grid_cols = _grid(1)
    assert result.fetched_frames == grid_rows * grid_cols
    requests = slide.cache_stats.requests
    truth = expected_pixels(SPEC, 1, 0)
    count = 0
    for tile in dicomslide_sync.bulk.iter_tiles(slide, 1, ordered=True, max_in_flight=4):
        h, w = tile.pixels.shape[:2]
        expected = truth[tile.row : tile.row + h, tile.column : tile.column + w]
        np.testing.assert_array_equal(tile.pixels, expected)
        count += 1
    assert count == grid_rows * grid_cols
    assert slide.cache_stats.requests == requests  # all from the cache
    # leaving early closes the async iterator on the private loop
    for _ in dicomslide_sync.bulk.iter_tiles(slide, 0):
        break
    client.close()


_MEMORY_SCRIPT = """
import asyncio, json, sys, tracemalloc
import dicomslide
from dicomslide.bulk import iter_tiles, prefetch

async def main():
    # the iterator's own bound is measured, not the decoded-tile cache's budget
    client = dicomslide.DICOMfileClient(
        sys.argv[1], index_dir=sys.argv[2], decoded_cache_max_bytes=0
    )
    slide = (await dicomslide.find_slides(client))[0]
    tracemalloc.start()
    result = await prefetch(slide, 0)
    _, prefetch_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    n = 0
    async for tile in iter_tiles(slide, 0, max_in_flight=8):
        n += 1
    _, tiles_peak = tracemalloc.get_traced_memory()
    print(json.dumps({"bytes": result.bytes, "prefetch_peak": prefetch_peak,
                      "tiles_peak": tiles_peak, "tiles": n,
                      "fps": result.frames_per_second}))
    await client.aclose()

asyncio.run(main())
"""


def test_peak_memory_is_bounded(tmp_path: Path) -> None:
    spec = SlideSpec(
        size=(2048, 2048),
        tile_size=(128, 128),
        levels=1,
        label=False,
        overview=False,
        icc_profile=False,  # the ICC transform's lookup table would dominate the peak
        seed=5,
    )
    write_slide(tmp_path / "big", spec)
    done = run_python("-c", _MEMORY_SCRIPT, str(tmp_path / "big"), str(tmp_path / "idx"))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    print(report)
    assert report["tiles"] == 256
    # The cache holds the encoded level; prefetch itself adds only bookkeeping and the
    # frames of the chunks in flight. Generous: encoded size + 16 MB.
    assert report["prefetch_peak"] < report["bytes"] + 16e6
    # Streaming 256 decoded tiles (48 KiB each, 12 MiB in all) with 8 in flight keeps far
    # fewer than all of them alive (decode buffers included): generous bound, half the level.
    assert report["tiles_peak"] < 6.3e6

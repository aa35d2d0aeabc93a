"""Load on one slide served by a real Orthanc: many readers, no wrong pixel, bounded memory.

* 1,000 concurrent asyncio readers on one ``dicomslide.DICOMwebClient`` read random regions
  of random levels for ``ASYNC_SECONDS``;
* then 64 threads share one ``dicomslide_sync.DICOMwebClient`` for ``SYNC_SECONDS``.

Every region is compared with the same region of a reference read of the same files from the
local folder: zero wrong pixels. The frame cache is made smaller than the slide so that frames
are evicted and fetched again under load. Resident memory is sampled during the run and its
growth must stay within the cache budget plus a stated margin (see :func:`_margin`); request
counts are printed and must be far below the number of reads (coalescing and the cache).
Durations are bounds of the loops, not asserted timings.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

import dicomslide
import dicomslide_sync
from dicomslide.synthetic import write_slide
from tests.support.orthanc import OrthancServer
from tests.support.slides import slide_spec

pytestmark = pytest.mark.integration

SPEC = slide_spec((1536, 2048), 128, 3, seed=33)
ASYNC_READERS = 1000
SYNC_THREADS = 64
ASYNC_SECONDS = 6.0
SYNC_SECONDS = 6.0
MAX_REGION = 128  # pixels per side of a random region
CACHE_BYTES = 256 << 10  # smaller than the slide's encoded frames: eviction happens
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Env:
    orthanc: OrthancServer
    study: str
    reference: list[np.ndarray]
    encoded_bytes: int


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, shared_orthanc: OrthancServer) -> Env:
    folder = tmp_path_factory.mktemp("load-slide")
    files = write_slide(folder, SPEC)
    local = dicomslide_sync.DICOMfileClient(folder, index_dir=tmp_path_factory.mktemp("idx"))
    slide = dicomslide_sync.find_slides(local)[0]
    reference = [
        slide.get_image_region((0, 0), level, (int(rows), int(cols)))
        for level, (rows, cols) in enumerate(slide.total_pixel_matrix_dimensions)
    ]
    study = str(slide.image_metadata[0].StudyInstanceUID)
    local.close()
    shared_orthanc.upload([folder])
    return Env(shared_orthanc, study, reference, sum(p.stat().st_size for p in files))


def _rss() -> int:
    with open("/proc/self/statm") as fp:
        return int(fp.read().split()[1]) * PAGE


class _PeakRss:
    """Samples the resident set size every 20 ms in a thread (bounded by ``stop``)."""

    def __init__(self) -> None:
        self.baseline = _rss()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss())

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.peak = max(self.peak, _rss())

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def _margin(readers: int) -> int:
    """Memory allowed beyond the cache budget, stated:

    * one output array per concurrent reader (MAX_REGION² RGB) plus, per reader, up to four
      decoded 128² RGB tiles in flight (a region touches at most four tiles);
    * 256 MiB for everything else that grows on first use under load: decode-pool threads'
      stacks and codec buffers, httpx connection buffers and multipart parse buffers (up to
      the frames of one response per connection), pydicom/numpy arenas and allocator
      fragmentation.
    """
    per_reader = MAX_REGION * MAX_REGION * 3 + 4 * 128 * 128 * 3
    return readers * per_reader + (256 << 20)


@dataclass
class Tally:
    reads: int = 0
    wrong: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ok: bool) -> None:
        with self.lock:
            self.reads += 1
            self.wrong += 0 if ok else 1


def _region(
    rng: random.Random, reference: list[np.ndarray]
) -> tuple[int, tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Level, offset in base-level pixels (what the API takes), offset and size in the level."""
    level = rng.randrange(len(reference))
    rows, cols = reference[level].shape[:2]
    factor = reference[0].shape[0] // rows
    size = (rng.randint(1, min(MAX_REGION, rows)), rng.randint(1, min(MAX_REGION, cols)))
    offset = (rng.randint(0, rows - size[0]), rng.randint(0, cols - size[1]))
    return level, (offset[0] * factor, offset[1] * factor), offset, size


def _check(
    reference: list[np.ndarray],
    level: int,
    offset: tuple[int, int],
    size: tuple[int, int],
    pixels: np.ndarray,
) -> bool:
    r, c = offset
    expected = reference[level][r : r + size[0], c : c + size[1]]
    return pixels.shape == expected.shape and bool(np.array_equal(pixels, expected))


def test_thousand_async_readers_get_exact_pixels_within_memory(env: Env) -> None:
    tally = Tally()

    async def main() -> dict[str, int]:
        client = dicomslide.DICOMwebClient(env.orthanc.dicomweb_url, cache_max_bytes=CACHE_BYTES)
        try:
            slide = (await dicomslide.find_slides(client, study_instance_uid=env.study))[0]
            opened = client.requests_sent
            deadline = time.monotonic() + ASYNC_SECONDS

            async def reader(seed: int) -> None:
                rng = random.Random(seed)
                for _ in range(10_000):  # bounded in count as well as in time
                    if time.monotonic() > deadline:
                        return
                    level, base, offset, size = _region(rng, env.reference)
                    pixels = await slide.get_image_region(base, level, size)
                    tally.add(_check(env.reference, level, offset, size, pixels))

            await asyncio.wait_for(
                asyncio.gather(*(reader(i) for i in range(ASYNC_READERS))),
                ASYNC_SECONDS + 60,
            )
            stats = slide.cache_stats
            return {
                "requests": client.requests_sent - opened,
                "frames_fetched": stats.frames_fetched,
                "hits": stats.hits,
                "evictions": stats.evictions,
                "cache_bytes": stats.bytes,
            }
        finally:
            await client.aclose()

    with _PeakRss() as rss:
        counts = asyncio.run(main())
    margin = _margin(ASYNC_READERS)
    print(
        f"\nasync load: {ASYNC_READERS} readers x {ASYNC_SECONDS:.0f} s: {tally.reads} reads, "
        f"{tally.wrong} wrong, {counts}, encoded slide {env.encoded_bytes} B, "
        f"RSS growth {rss.growth >> 20} MiB (allowed {(CACHE_BYTES + margin) >> 20} MiB)"
    )
    assert tally.reads >= ASYNC_READERS
    assert tally.wrong == 0
    assert counts["evictions"] > 0, "the cache was never full: the budget is not exercised"
    assert counts["cache_bytes"] <= CACHE_BYTES
    assert counts["requests"] * 10 < tally.reads
    assert rss.growth <= CACHE_BYTES + margin


def test_sixty_four_sync_threads_get_exact_pixels(env: Env) -> None:
    tally = Tally()
    client = dicomslide_sync.DICOMwebClient(env.orthanc.dicomweb_url, cache_max_bytes=CACHE_BYTES)
    try:
        slide = dicomslide_sync.find_slides(client, study_instance_uid=env.study)[0]
        source = client.__dicomslide_source__
        opened = source.requests_sent
        deadline = time.monotonic() + SYNC_SECONDS

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(100_000):  # bounded in count as well as in time
                    if time.monotonic() > deadline:
                        return
                    level, base, offset, size = _region(rng, env.reference)
                    pixels = slide.get_image_region(base, level, size)
                    tally.add(_check(env.reference, level, offset, size, pixels))
            except Exception as exc:  # reported below; a thread must not die silently
                with tally.lock:
                    tally.errors.append(repr(exc))

        with _PeakRss() as rss:
            threads = [threading.Thread(target=worker, args=(i,)) for i in range(SYNC_THREADS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(SYNC_SECONDS + 60)
        assert not any(t.is_alive() for t in threads), "a reader thread hangs"
        requests = source.requests_sent - opened
        stats = slide.cache_stats
    finally:
        client.close()
    margin = _margin(SYNC_THREADS)
    print(
        f"\nsync load: {SYNC_THREADS} threads x {SYNC_SECONDS:.0f} s: {tally.reads} reads, "
        f"{tally.wrong} wrong, {requests} requests, {stats.frames_fetched} frames fetched, "
        f"{stats.hits} hits, {stats.evictions} evictions, "
        f"RSS growth {rss.growth >> 20} MiB (allowed {(CACHE_BYTES + margin) >> 20} MiB)"
    )
    assert not tally.errors, tally.errors[:5]
    assert tally.reads >= SYNC_THREADS
    assert tally.wrong == 0
    assert requests * 10 < tally.reads
    assert rss.growth <= CACHE_BYTES + margin

"""Bulk access to a pyramid level: fill the frame cache, stream every tile (async).

:func:`prefetch` fetches the encoded frames of a level (all or some channels and focal planes,
the whole level or a region) into the client's encoded-frame cache, without decoding them, so
that later reads of that level are answered from memory. :func:`iter_tiles` streams the
decoded tiles of one channel and focal plane of a level with bounded concurrency and memory.

Cache budget
------------
The encoded-frame cache of a client is byte-bounded (``cache_max_bytes`` of the client,
512 MiB by default). Prefetching more than the budget would only evict the frames fetched
first, so :func:`prefetch` stops once the frames it prefetched fill the budget (estimated
from the mean size of the frames received so far), emits a :class:`PrefetchBudgetWarning`
naming how many frames were left out, and returns a :class:`PrefetchResult` with
``complete=False``. Pass ``strict=True`` to get a :class:`PrefetchBudgetError` instead.
Frames of other slides or levels that were cached before may be evicted by a prefetch.

Both functions accept a :class:`dicomslide.Slide` or a ``dicomslide_sync.Slide`` (its async
slide is used); the blocking twins are in :mod:`dicomslide_sync.bulk`.
"""

from __future__ import annotations

import asyncio
import math
import time
import warnings
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dicomslide.errors import ArgumentError, PrefetchBudgetError, RegionError
from dicomslide.frames import FrameService, InstanceRef
from dicomslide.image import TiledImage
from dicomslide.runtime import as_source, frame_service
from dicomslide.slide import Slide
from dicomslide.sources.protocol import EncodedFrame

__all__ = [
    "PrefetchBudgetError",
    "PrefetchBudgetWarning",
    "PrefetchResult",
    "Tile",
    "iter_tiles",
    "prefetch",
]

#: ``progress(done_frames, total_frames)``, called on the event loop that runs the prefetch.
ProgressCallback = Callable[[int, int], Any]

Region = tuple[tuple[int, int], tuple[int, int]]


class PrefetchBudgetWarning(UserWarning):
    """A prefetch stopped early because the level does not fit into the frame-cache budget."""


@dataclass(frozen=True)
class PrefetchResult:
    """What a prefetch did.

    Attributes
    ----------
    level: int
        Zero-based level (negative levels resolved)
    total_frames: int
        Distinct frames of the requested channels, planes and region
    fetched_frames: int
        Frames fetched from the source by this prefetch
    cached_frames: int
        Frames that were already cached (not fetched again)
    skipped_frames: int
        Frames left out because the cache budget was reached
    bytes: int
        Encoded bytes of the fetched and already cached frames
    requests: int
        Frame requests this prefetch made of the frame service (one per instance and chunk)
    seconds: float
        Wall-clock duration
    budget_bytes: int
        Budget of the client's encoded-frame cache
    """

    level: int
    total_frames: int
    fetched_frames: int
    cached_frames: int
    skipped_frames: int
    bytes: int
    requests: int
    seconds: float
    budget_bytes: int

    @property
    def complete(self) -> bool:
        """bool: Whether every frame is now cached (none skipped for the budget)."""
        return self.skipped_frames == 0

    @property
    def frames_per_second(self) -> float:
        """float: Fetched frames per second of wall-clock time (0.0 when nothing was fetched)."""
        return self.fetched_frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def megabytes(self) -> float:
        """float: Encoded megabytes (10**6 bytes) of the prefetched frames."""
        return self.bytes / 1e6


@dataclass(frozen=True)
class Tile:
    """One decoded tile of a level.

    Attributes
    ----------
    row: int
        Zero-based row of the tile's top-left pixel in the level's total pixel matrix
    column: int
        Zero-based column of the tile's top-left pixel
    grid_row: int
        Zero-based row of the tile in the tile grid
    grid_column: int
        Zero-based column of the tile in the tile grid
    pixels: numpy.ndarray
        Array of shape (rows, columns, samples); tiles at the bottom and right edges are cut
        to the total pixel matrix, so pasting every tile at (row, column) gives the level
    """

    row: int
    column: int
    grid_row: int
    grid_column: int
    pixels: np.ndarray

    @property
    def position(self) -> tuple[int, int]:
        """tuple[int, int]: (row, column) of the top-left pixel in the level's pixel matrix."""
        return self.row, self.column


def _as_async(slide: Any) -> Slide:
    inner = getattr(slide, "async_slide", None)
    if isinstance(inner, Slide):
        return inner
    if isinstance(slide, Slide):
        return slide
    raise ArgumentError(
        f"Expected a dicomslide.Slide or dicomslide_sync.Slide, got {type(slide).__qualname__}."
    )


def _grid_window(
    region: Region | None, tile: tuple[int, int], grid: tuple[int, int], size: tuple[int, int]
) -> tuple[range, range]:
    """Grid rows and columns of the tiles that intersect a region (level pixel coordinates)."""
    if region is None:
        return range(grid[0]), range(grid[1])
    try:
        (r0, c0), (h, w) = region
        r0, c0, h, w = int(r0), int(c0), int(h), int(w)
    except (TypeError, ValueError):
        raise RegionError(
            f"Region must be ((row, column), (rows, columns)), got {region!r}."
        ) from None
    if h < 1 or w < 1:
        raise RegionError(f"Region size must be positive, got (rows, columns) = ({h}, {w}).")
    r1, c1 = min(r0 + h, size[0]), min(c0 + w, size[1])
    r0, c0 = max(r0, 0), max(c0, 0)
    if r0 >= r1 or c0 >= c1:
        raise RegionError(
            f"Region {region!r} does not intersect the level ({size[0]} x {size[1]} px)."
        )
    return (
        range(r0 // tile[0], math.ceil(r1 / tile[0])),
        range(c0 // tile[1], math.ceil(c1 / tile[1])),
    )


def _indices(value: Sequence[int] | int | None, count: int) -> list[int]:
    if value is None:
        return list(range(count))
    if isinstance(value, int | np.integer):
        return [int(value)]
    return [int(v) for v in value]


async def _level_frames(
    slide: Slide,
    level: int,
    region: Region | None,
    channels: Sequence[int] | int | None,
    focal_planes: Sequence[int] | int | None,
) -> tuple[int, dict[str, tuple[InstanceRef, list[int]]]]:
    """Distinct frames (per instance, one-based numbers, sorted) of a level's selection."""
    chosen_channels = _indices(channels, slide.num_channels)
    chosen_planes = _indices(focal_planes, slide.num_focal_planes)
    explicit = channels is not None or focal_planes is not None
    lvl = level % slide.num_levels if -slide.num_levels <= level < slide.num_levels else level
    by_instance: dict[str, tuple[InstanceRef, set[int]]] = {}
    resolved: list[tuple[TiledImage, int, int]] = []
    for c in chosen_channels:
        for z in chosen_planes:
            try:
                where = slide.resolve(level, c, z)
            except RegionError:
                if explicit:
                    raise
                continue  # e.g. a segmentation channel without an image at this level
            lvl = where.level
            resolved.append(
                (where.image, where.image_channel_index, where.image_focal_plane_index)
            )
    if not resolved:
        # Raise the error of the first combination: it says which levels have pixels.
        slide.resolve(level, chosen_channels[0] if chosen_channels else 0, 0)
    for image, ci, zi in resolved:
        index = await image.reader.aindex()
        rows, cols = _grid_window(
            region,
            (index.tile_rows, index.tile_columns),
            index.grid_shape,
            (index.total_rows, index.total_columns),
        )
        lookup = index.lookup[ci, zi][rows.start : rows.stop, cols.start : cols.stop]
        for frame in np.unique(lookup[lookup >= 0]).tolist():
            part, number = index.locate(int(frame))
            uid = part.sop_instance_uid
            entry = by_instance.get(uid)
            if entry is None:
                ref = InstanceRef(part.study_instance_uid, part.series_instance_uid, uid)
                entry = (ref, set())
                by_instance[uid] = entry
            entry[1].add(number)
    return lvl, {uid: (ref, sorted(nums)) for uid, (ref, nums) in by_instance.items()}


async def prefetch(
    slide: Any,
    level: int = 0,
    *,
    region: Region | None = None,
    channels: Sequence[int] | int | None = None,
    focal_planes: Sequence[int] | int | None = None,
    progress: ProgressCallback | None = None,
    strict: bool = False,
) -> PrefetchResult:
    """Fetch the encoded frames of a level into the client's frame cache (no decoding).

    Frames already cached are not fetched again. The rest is asked of the source one instance
    chunk at a time (chunks of the frame service's ``max_frames_per_request``, so a level
    costs one request per instance and chunk), keeping as many chunks in flight as the
    client runs requests at once. Later reads of the level are then cache hits.

    Parameters
    ----------
    slide: dicomslide.Slide | dicomslide_sync.Slide
        The slide
    level: int, optional
        Zero-based level index (negative counts from the top)
    region: tuple[tuple[int, int], tuple[int, int]] | None, optional
        ((row, column), (rows, columns)) in the level's pixel coordinates; every tile that
        intersects it is prefetched (default: the whole level)
    channels: Sequence[int] | int | None, optional
        Channel indices (default: every channel with pixels at the level)
    focal_planes: Sequence[int] | int | None, optional
        Focal plane indices (default: all)
    progress: Callable[[int, int], Any] | None, optional
        Called as ``progress(done_frames, total_frames)`` at the start, as frames arrive and
        at the end; it runs on the event loop, so it must be quick
    strict: bool, optional
        Raise :class:`PrefetchBudgetError` instead of warning when the frames do not fit into
        the cache budget

    Returns
    -------
    PrefetchResult
        Counts, bytes and duration

    Raises
    ------
    dicomslide.RegionError
        When the level, a channel, a plane or the region is invalid
    PrefetchBudgetError
        With ``strict=True``, when the frames do not fit into the cache budget
    dicomslide.SourceError
        When the source fails (frames received before are kept in the cache)

    Warns
    -----
    PrefetchBudgetWarning
        When the prefetch stopped at the cache budget (see the module notes)
    """
    started = time.perf_counter()
    aslide = _as_async(slide)
    lvl, frames = await _level_frames(aslide, level, region, channels, focal_planes)
    service: FrameService = frame_service(as_source(aslide.client))
    cache = service.cache
    budget = cache.stats.max_bytes
    step = service.max_frames_per_request
    total = sum(len(numbers) for _, numbers in frames.values())
    # Frames already cached are touched (moved to the recent end) and not fetched again.
    cached = 0
    held = 0
    chunks: deque[tuple[InstanceRef, list[int]]] = deque()
    for uid, (ref, numbers) in frames.items():
        missing = []
        for number in numbers:
            frame = cache.get((uid, number))
            if frame is None:
                missing.append(number)
            else:
                cached += 1
                held += len(frame.data)
                cache.stats.hits += 1
        for i in range(0, len(missing), step):
            chunks.append((ref, missing[i : i + step]))
    to_fetch = sum(len(numbers) for _, numbers in chunks)
    options = as_source(aslide.client).runtime.service_options
    window = max(2, options.max_concurrent_requests + 1)

    done = cached
    fetched = 0
    fetched_bytes = 0
    requests = 0
    inflight_frames = 0
    in_flight: dict[asyncio.Future[EncodedFrame], int] = {}
    chunk_left: dict[int, int] = {}
    chunk_id = 0
    stopped = False
    # One done-callback per frame feeds a queue: waiting on all in-flight futures each time
    # one finishes would cost O(frames²) (2 million callbacks for one level 0 over DICOMweb).
    arrived: deque[asyncio.Future[EncodedFrame]] = deque()
    wake = asyncio.Event()

    def on_done(fut: asyncio.Future[EncodedFrame]) -> None:
        arrived.append(fut)
        wake.set()

    if progress is not None:
        progress(done, total)

    def may_start(size: int) -> bool:
        known = cached + fetched
        if known == 0:
            # Nothing tells the frame size yet: one chunk at a time until a frame arrives.
            return not in_flight
        mean = (held + fetched_bytes) / known
        return held + fetched_bytes + mean * (inflight_frames + size) <= budget

    try:
        while chunks or in_flight:
            while chunks and len(chunk_left) < window and not stopped:
                ref, numbers = chunks[0]
                if not may_start(len(numbers)):
                    if not in_flight:
                        stopped = True
                    break
                chunks.popleft()
                futures = service.request(ref, numbers, bulk=True)
                requests += 1
                chunk_id += 1
                chunk_left[chunk_id] = len(futures)
                inflight_frames += len(futures)
                for fut in futures:
                    in_flight[fut] = chunk_id
                    fut.add_done_callback(on_done)
            if not in_flight:
                break
            if not arrived:
                wake.clear()
                await wake.wait()
            while arrived:
                fut = arrived.popleft()
                cid = in_flight.pop(fut)
                chunk_left[cid] -= 1
                if chunk_left[cid] == 0:
                    del chunk_left[cid]
                inflight_frames -= 1
                frame = fut.result()  # raises the source's error
                fetched += 1
                fetched_bytes += len(frame.data)
            done = cached + fetched
            if progress is not None:
                progress(done, total)
    finally:
        # Never cancel the service's futures (others may share them); only stop waiting.
        for fut in in_flight:
            fut.remove_done_callback(on_done)
        in_flight.clear()
    skipped = to_fetch - fetched
    result = PrefetchResult(
        level=lvl,
        total_frames=total,
        fetched_frames=fetched,
        cached_frames=cached,
        skipped_frames=skipped,
        bytes=held + fetched_bytes,
        requests=requests,
        seconds=time.perf_counter() - started,
        budget_bytes=budget,
    )
    if skipped:
        mean = (held + fetched_bytes) / max(cached + fetched, 1)
        message = (
            f"Level {lvl} needs about {mean * total / 1e6:.1f} MB of encoded frames but the "
            f"frame cache holds {budget / 1e6:.1f} MB: prefetched {cached + fetched} of "
            f"{total} frames, {skipped} left out. Give the client a larger cache_max_bytes, "
            "or prefetch a region."
        )
        if strict:
            raise PrefetchBudgetError(message)
        warnings.warn(message, PrefetchBudgetWarning, stacklevel=2)
    return result


def _tile_jobs(
    rows: Iterable[int],
    cols: Sequence[int],
) -> Iterable[tuple[int, int]]:
    for r in rows:
        for c in cols:
            yield r, c


async def iter_tiles(
    slide: Any,
    level: int = 0,
    *,
    channel_index: int = 0,
    focal_plane_index: int = 0,
    region: Region | None = None,
    ordered: bool = False,
    max_in_flight: int = 64,
) -> AsyncIterator[Tile]:
    """Decoded tiles of one channel and focal plane of a level, as they arrive.

    At most ``max_in_flight`` tiles are being fetched, decoded or waiting to be yielded at
    any time; new tiles are started in batches (so their frames are asked for in shared
    requests) whenever half of them are done. Each tile of the grid (within ``region``) is
    yielded exactly once; tiles a sparse image does not store are filled (white for colour,
    0 otherwise), as :meth:`dicomslide.Slide.get_image_region` does.

    Parameters
    ----------
    slide: dicomslide.Slide | dicomslide_sync.Slide
        The slide
    level: int, optional
        Zero-based level index (negative counts from the top)
    channel_index, focal_plane_index: int, optional
        Zero-based channel and focal plane indices
    region: tuple[tuple[int, int], tuple[int, int]] | None, optional
        ((row, column), (rows, columns)) in the level's pixel coordinates; the whole tiles
        that intersect it are yielded (default: the whole level)
    ordered: bool, optional
        Yield in raster order (row by row) instead of as soon as each tile is ready
    max_in_flight: int, optional
        Most tiles in progress at once (bounds memory to about this many decoded tiles)

    Yields
    ------
    Tile
        Tile with its pixel and grid position

    Raises
    ------
    dicomslide.RegionError
        When the level, channel, plane or region is invalid
    dicomslide.ArgumentError
        When ``max_in_flight`` is not a positive integer, or ``slide`` is not a slide
    """
    if not isinstance(max_in_flight, int) or max_in_flight < 1:
        raise ArgumentError(f"max_in_flight must be a positive integer, got {max_in_flight!r}.")
    aslide = _as_async(slide)
    where = aslide.resolve(level, channel_index, focal_plane_index)
    image = where.image
    matrix = image.get_total_pixel_matrix(where.image_channel_index, where.image_focal_plane_index)
    index = await image.reader.aindex()
    th, tw = index.tile_rows, index.tile_columns
    total_rows, total_cols = index.total_rows, index.total_columns
    rows, cols = _grid_window(region, (th, tw), index.grid_shape, (total_rows, total_cols))
    jobs = iter(_tile_jobs(rows, list(cols)))

    async def read(gr: int, gc: int) -> Tile:
        r0, c0 = gr * th, gc * tw
        size = (min(th, total_rows - r0), min(tw, total_cols - c0))
        pixels = await matrix.read_region((r0, c0), size)
        return Tile(r0, c0, gr, gc, pixels)

    queue: deque[asyncio.Task[Tile]] = deque()  # in start (raster) order
    exhausted = False
    low_water = max_in_flight // 2

    def refill() -> None:
        nonlocal exhausted
        # Start a batch in one go: tasks started in the same tick share frame requests.
        if len(queue) > low_water:
            return
        while not exhausted and len(queue) < max_in_flight:
            job = next(jobs, None)
            if job is None:
                exhausted = True
                break
            queue.append(asyncio.ensure_future(read(*job)))

    try:
        refill()
        while queue:
            if ordered:
                task = queue[0]
                tile = await task
                queue.popleft()
                refill()
                yield tile
                continue
            done, _ = await asyncio.wait(queue, return_when=asyncio.FIRST_COMPLETED)
            ready = [t for t in queue if t in done]
            for t in ready:
                queue.remove(t)
            refill()
            for t in ready:
                yield t.result()
    finally:
        # Reading tasks are ours alone (the frame fetches they wait for are not cancelled).
        for task in queue:
            task.cancel()
        if queue:
            await asyncio.wait(queue)

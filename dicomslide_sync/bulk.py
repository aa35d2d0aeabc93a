"""Bulk access to a pyramid level, blocking (twins of :mod:`dicomslide.bulk`).

:func:`prefetch` blocks until the frames are cached. :func:`iter_tiles` is a plain iterator that
pulls each tile from the async iterator on dicomslide's private event loop: the tiles in
progress keep being fetched and decoded between pulls, but never more than ``max_in_flight``
of them, so a slow consumer holds memory for at most that many tiles.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from dicomslide import bulk as _bulk
from dicomslide._docs import borrowed_doc
from dicomslide.bulk import (
    PrefetchBudgetError,
    PrefetchBudgetWarning,
    PrefetchResult,
    ProgressCallback,
    Region,
    Tile,
)
from dicomslide_sync._wrappers import run

__all__ = [
    "PrefetchBudgetError",
    "PrefetchBudgetWarning",
    "PrefetchResult",
    "Tile",
    "iter_tiles",
    "prefetch",
]


@borrowed_doc(_bulk.prefetch)
def prefetch(
    slide: Any,
    level: int = 0,
    *,
    region: Region | None = None,
    channels: Sequence[int] | int | None = None,
    focal_planes: Sequence[int] | int | None = None,
    progress: ProgressCallback | None = None,
    strict: bool = False,
) -> PrefetchResult:
    """Fetch the encoded frames of a level into the client's frame cache (blocking).

    See :func:`dicomslide.bulk.prefetch`; ``progress`` is called on dicomslide's private
    event-loop thread, not on the calling thread.
    """
    return run(
        _bulk.prefetch(
            slide,
            level,
            region=region,
            channels=channels,
            focal_planes=focal_planes,
            progress=progress,
            strict=strict,
        )
    )


_END = object()


async def _next(tiles: AsyncIterator[Tile]) -> Any:
    # StopAsyncIteration must not cross the portal as an exception of a finished task.
    try:
        return await anext(tiles)
    except StopAsyncIteration:
        return _END


async def _close(tiles: AsyncIterator[Tile]) -> None:
    aclose = getattr(tiles, "aclose", None)
    if aclose is not None:
        await aclose()


@borrowed_doc(_bulk.iter_tiles)
def iter_tiles(
    slide: Any,
    level: int = 0,
    *,
    channel_index: int = 0,
    focal_plane_index: int = 0,
    region: Region | None = None,
    ordered: bool = False,
    max_in_flight: int = 64,
) -> Iterator[Tile]:
    """Decoded tiles of one channel and focal plane of a level (blocking iterator).

    See :func:`dicomslide.bulk.iter_tiles`. Leaving the loop early (``break``, an exception)
    cancels the tiles still in progress once the iterator is closed or collected.
    """
    tiles = _bulk.iter_tiles(
        slide,
        level,
        channel_index=channel_index,
        focal_plane_index=focal_plane_index,
        region=region,
        ordered=ordered,
        max_in_flight=max_in_flight,
    )
    try:
        while True:
            tile = run(_next(tiles))
            if tile is _END:
                return
            yield tile
    finally:
        run(_close(tiles))

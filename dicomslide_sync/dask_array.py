"""A pyramid level as a lazy Dask array (optional: ``pip install 'dicomslide[dask]'``).

:func:`to_dask` describes one channel and focal plane of a level as a
:class:`dask.array.Array` of shape (rows, columns, samples) whose chunks are whole tiles (or
blocks of tiles). Each chunk is read through this blocking facade, on the private event loop of
the process that computes it: chunks computed at the same time by the
threads of one worker share one frame cache and merged frame requests.

The slide travels to workers as a ``dicomslide_sync.Slide``, which pickles as its client's
arguments, the image metadata and the slide's own settings (pyramid tolerance, colour
correction) and re-opens itself in the worker, so process-based schedulers
(``dask.distributed`` with ``processes=True``, ``multiprocessing``) work. The slide is one node
of the task graph, so it is sent to each worker once, not once per chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

import dicomslide
from dicomslide.errors import ArgumentError, DaskNotInstalledError
from dicomslide_sync._wrappers import Slide, run

if TYPE_CHECKING:  # pragma: no cover
    import dask.array

__all__ = ["DaskNotInstalledError", "to_dask"]

#: Chunks are the multiple of the tile size closest to this many pixels per side by default.
DEFAULT_CHUNK_PIXELS = 1024


def _import_dask() -> Any:
    try:
        import dask.array as da
    except ImportError as error:
        raise DaskNotInstalledError(
            "dicomslide_sync.to_dask needs Dask, which is not installed: "
            "pip install 'dicomslide[dask]' (or pip install 'dask[array,distributed]')."
        ) from error
    return da


def _sync_slide(slide: Slide | dicomslide.Slide) -> Slide:
    if isinstance(slide, Slide):
        return slide
    if isinstance(slide, dicomslide.Slide):
        # Shares the async slide (and cache); pickles only if its client does.
        return Slide.from_async(slide)
    raise ArgumentError(
        f"Expected a dicomslide_sync.Slide or dicomslide.Slide, got {type(slide).__qualname__}."
    )


def _chunk_sizes(total: int, step: int) -> tuple[int, ...]:
    full, rest = divmod(total, step)
    return (step,) * full + ((rest,) if rest else ())


def _chunk_shape(chunks: int | Sequence[int] | None, tile: tuple[int, int]) -> tuple[int, int]:
    if chunks is None:
        return tuple(  # type: ignore[return-value]
            t * max(1, round(DEFAULT_CHUNK_PIXELS / t)) for t in tile
        )
    if isinstance(chunks, int | np.integer):
        pair = (int(chunks), int(chunks))
    else:
        values = [int(v) for v in chunks]
        if len(values) == 3:
            values = values[:2]
        if len(values) != 2:
            raise ArgumentError(f"chunks must be an int or (rows, columns), got {chunks!r}.")
        pair = (values[0], values[1])
    for value, t, axis in zip(pair, tile, ("rows", "columns"), strict=True):
        if value < 1 or value % t:
            raise ArgumentError(
                f"Chunk {axis} must be a positive multiple of the tile {axis} ({t}), got "
                f"{value}; chunks aligned to tiles let neighbouring chunks share frames."
            )
    return pair


def read_chunk(
    slide: Slide,
    level: int,
    channel_index: int,
    focal_plane_index: int,
    offset: tuple[int, int],
    size: tuple[int, int],
) -> np.ndarray:
    """Read one chunk: a region of a level in the level's own pixel coordinates (blocking).

    Parameters
    ----------
    slide: dicomslide_sync.Slide
        The slide
    level, channel_index, focal_plane_index: int
        Zero-based level, channel and focal plane indices
    offset: tuple[int, int]
        (row, column) of the chunk's top-left pixel at ``level``
    size: tuple[int, int]
        (rows, columns) of the chunk

    Returns
    -------
    numpy.ndarray
        Array of shape (rows, columns, samples)
    """
    where = slide.async_slide.resolve(level, channel_index, focal_plane_index)
    matrix = where.image.get_total_pixel_matrix(
        where.image_channel_index, where.image_focal_plane_index
    )
    region: np.ndarray = run(matrix.read_region(offset, size))
    return region


def to_dask(
    slide: Slide | dicomslide.Slide,
    level: int = 0,
    channel_index: int = 0,
    focal_plane_index: int = 0,
    chunks: int | Sequence[int] | None = None,
) -> dask.array.Array:
    """One channel and focal plane of a level as a lazy Dask array.

    Parameters
    ----------
    slide: dicomslide_sync.Slide | dicomslide.Slide
        The slide. For process-based schedulers give a ``dicomslide_sync.Slide`` opened with a
        ``dicomslide_sync`` client: it pickles and re-opens in each worker (an async slide is
        wrapped, and pickles only if its client does).
    level: int, optional
        Zero-based level index (negative counts from the top)
    channel_index, focal_plane_index: int, optional
        Zero-based channel and focal plane indices
    chunks: int | Sequence[int] | None, optional
        Chunk (rows, columns) in pixels, each a multiple of the tile size (an int is used for
        both). Default: the multiple of the tile size closest to 1024 pixels. Chunks at the
        bottom and right edges are smaller; the samples axis is one chunk.

    Returns
    -------
    dask.array.Array
        Lazy array of shape (rows, columns, samples) with the dtype of the level

    Raises
    ------
    DaskNotInstalledError
        When Dask is not installed
    dicomslide.RegionError
        When the level, channel or plane is invalid
    dicomslide.ArgumentError
        When the chunks are invalid
    """
    da = _import_dask()
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    sync_slide = _sync_slide(slide)
    where = sync_slide.async_slide.resolve(level, channel_index, focal_plane_index)
    lvl = where.level
    matrix = where.image.get_total_pixel_matrix(
        where.image_channel_index, where.image_focal_plane_index
    )
    rows, cols, samples = matrix.shape
    tile_rows, tile_cols, _ = matrix.tile_shape
    step_rows, step_cols = _chunk_shape(chunks, (tile_rows, tile_cols))
    row_chunks = _chunk_sizes(rows, step_rows)
    col_chunks = _chunk_sizes(cols, step_cols)
    token = tokenize(
        [str(ds.SOPInstanceUID) for ds in sync_slide.image_metadata],
        lvl,
        channel_index,
        focal_plane_index,
        step_rows,
        step_cols,
        sync_slide.correct_color,
        sync_slide.pyramid_tolerance,
    )
    name = f"dicomslide-level-{token}"
    slide_key = f"dicomslide-slide-{token}"
    graph: dict[Any, Any] = {slide_key: sync_slide}
    for i in range(len(row_chunks)):
        for j in range(len(col_chunks)):
            offset = (i * step_rows, j * step_cols)
            size = (row_chunks[i], col_chunks[j])
            graph[(name, i, j, 0)] = (
                read_chunk,
                slide_key,
                lvl,
                channel_index,
                focal_plane_index,
                offset,
                size,
            )
    hlg = HighLevelGraph.from_collections(name, graph, dependencies=())
    array: dask.array.Array = da.Array(
        hlg,
        name,
        chunks=(row_chunks, col_chunks, (samples,)),
        dtype=matrix.dtype,
    )
    return array

"""Regular-grid sampling of regions of a total pixel matrix (async).

Regions of ``region_dimensions`` are laid on one grid starting at the top-left corner of the
matrix; a ``bounding_box`` or ``tile_grid_positions`` selects the regions of that grid that
overlap it (as in dicomslide 0.7). Regions at the right and bottom borders and padding
that reaches beyond the matrix are filled like every read outside the image (white for colour,
0 otherwise). With ``tile_grid_positions``, only regions that overlap one of those tiles are
sampled; a ``bounding_box`` takes precedence, as documented.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence

import numpy as np

from dicomslide.errors import IndexRangeError, RegionError
from dicomslide.image import TotalPixelMatrix

__all__ = ["TotalPixelMatrixSampler"]


def _padding4(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    values = np.atleast_1d(np.asarray(padding)).astype(np.int64).tolist()
    if len(values) == 1:
        v = int(values[0])
        result = (v, v, v, v)
    elif len(values) == 2:
        result = (int(values[0]), int(values[1]), int(values[0]), int(values[1]))
    elif len(values) == 4:
        result = (int(values[0]), int(values[1]), int(values[2]), int(values[3]))
    else:
        raise RegionError(f"Padding must have 1, 2 or 4 values, got {padding!r}.")
    if min(result) < 0:
        raise RegionError(f"Padding must not be negative, got {padding!r}.")
    return result


class TotalPixelMatrixSampler:
    """Sample equally sized regions of a total pixel matrix on a regular grid.

    Use ``len(sampler)``, ``await sampler[i]`` or ``async for region in sampler``. The methods
    that take an ``index: int`` take the zero-based index of a sampled region, from 0 to
    ``len(sampler) - 1``, and raise :class:`~dicomslide.errors.IndexRangeError` for any other.

    Parameters
    ----------
    matrix: dicomslide.TotalPixelMatrix
        Total pixel matrix
    region_dimensions: tuple[int, int]
        (rows, columns) of each region
    bounding_box: tuple[tuple[int, int], tuple[int, int]] | None, optional
        ((row, column) offset, (rows, columns) size) of the area to sample
    tile_grid_positions: Sequence[tuple[int, int]] | numpy.ndarray | None, optional
        Zero-based (row, column) tile grid positions; only regions overlapping them are sampled
    padding: int | tuple[int, int] | tuple[int, int, int, int], optional
        Pixels added from neighbouring regions: one value, (left/right, top/bottom) or
        (left, top, right, bottom)
    """

    def __init__(
        self,
        matrix: TotalPixelMatrix,
        region_dimensions: tuple[int, int],
        bounding_box: tuple[tuple[int, int], tuple[int, int]] | None = None,
        tile_grid_positions: Sequence[tuple[int, int]] | np.ndarray | None = None,
        padding: int | tuple[int, int] | tuple[int, int, int, int] = 0,
    ) -> None:
        self._matrix = matrix
        rh, rw = (int(v) for v in region_dimensions)
        if rh < 1 or rw < 1:
            raise RegionError(f"Region dimensions must be positive, got {region_dimensions!r}.")
        self._region = (rh, rw)
        self._padding = _padding4(padding)
        rows, columns, _ = matrix.shape
        # One grid over the whole matrix; a bounding box or tile positions only select which of
        # its regions are sampled (those that overlap them), so both selections agree with each
        # other and with dicomslide 0.7.
        self._grid_shape = (-(-rows // rh), -(-columns // rw))
        if bounding_box is not None:
            (r0, c0), (h, w) = bounding_box
            r0, c0, h, w = int(r0), int(c0), int(h), int(w)
            if not (
                r0 >= 0 and c0 >= 0 and h > 0 and w > 0 and r0 + h <= rows and c0 + w <= columns
            ):
                raise RegionError(
                    f"Bounding box {bounding_box!r} does not lie in the {rows} x {columns} matrix."
                )
            boxes = [(r0, c0, h, w)]
        elif tile_grid_positions is not None:
            th, tw, _ = matrix.tile_shape
            tiles = np.asarray(tile_grid_positions, dtype=np.int64).reshape(-1, 2)
            grid_rows, grid_cols = matrix.tile_grid_shape
            for tr, tc in tiles.tolist():
                if not (0 <= tr < grid_rows and 0 <= tc < grid_cols):
                    raise IndexRangeError(
                        f"Tile grid position {(tr, tc)} does not exist: the tile grid has "
                        f"{grid_rows} x {grid_cols} positions."
                    )
            boxes = [(tr * th, tc * tw, th, tw) for tr, tc in tiles.tolist()]
        else:
            boxes = [(0, 0, rows, columns)]
        self._positions = self._overlapping(boxes)

    def _overlapping(self, boxes: list[tuple[int, int, int, int]]) -> list[tuple[int, int]]:
        """Grid positions, row-major, of the regions that overlap any (top, left, h, w) box."""
        rh, rw = self._region
        grid_rows, grid_cols = self._grid_shape
        wanted: set[tuple[int, int]] = set()
        for top, left, h, w in boxes:
            for i in range(max(0, top // rh), min(grid_rows, (top + h - 1) // rh + 1)):
                for j in range(max(0, left // rw), min(grid_cols, (left + w - 1) // rw + 1)):
                    wanted.add((i, j))
        return sorted(wanted)

    @property
    def matrix(self) -> TotalPixelMatrix:
        """dicomslide.TotalPixelMatrix: Total pixel matrix."""
        return self._matrix

    @property
    def region_shape(self) -> tuple[int, int, int]:
        """tuple[int, int, int]: Rows, columns and samples of a region."""
        return (*self._region, self._matrix.shape[2])

    @property
    def padding(self) -> tuple[int, int, int, int]:
        """tuple[int, int, int, int]: Padding at the left, top, right and bottom of each region."""
        return self._padding

    @property
    def padded_region_shape(self) -> tuple[int, int, int]:
        """tuple[int, int, int]: Rows, columns and samples of a region with its padding."""
        left, top, right, bottom = self._padding
        rh, rw = self._region
        return (rh + top + bottom, rw + left + right, self._matrix.shape[2])

    def __len__(self) -> int:
        return len(self._positions)

    def get_region_grid_position(self, index: int) -> tuple[int, int]:
        """Zero-based (row, column) grid position of the region at `index`."""
        if not 0 <= index < len(self._positions):
            raise IndexRangeError(
                f"Region index {index} is out of range: valid are 0..{len(self._positions) - 1}."
            )
        return self._positions[index]

    def get_region_bounding_box(self, index: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """Padded bounding box of the region at `index` in the total pixel matrix.

        The box is a zero-based (row, column) offset, negative where padding reaches past the
        matrix, and a (rows, columns) size.
        """
        i, j = self.get_region_grid_position(index)
        left, top, _, _ = self._padding
        rh, rw = self._region
        ph, pw, _ = self.padded_region_shape
        return (i * rh - top, j * rw - left), (ph, pw)

    async def get(self, index: int) -> np.ndarray:
        """Read the padded region at `index`: an array of shape :attr:`padded_region_shape`."""
        offset, size = self.get_region_bounding_box(index)
        return await self._matrix.read_region(offset, size)

    def __getitem__(self, index: int) -> Awaitable[np.ndarray]:
        """The padded region at `index`, as an awaitable of :meth:`get`'s array."""
        return self.get(index)

    async def __aiter__(self) -> AsyncIterator[np.ndarray]:
        # Read a few regions ahead so that fetching and decoding overlap.
        ahead = 4
        tasks: list[asyncio.Task[np.ndarray]] = []
        try:
            for i in range(len(self)):
                tasks.append(asyncio.ensure_future(self.get(i)))
                if len(tasks) > ahead:
                    yield await tasks.pop(0)
            while tasks:
                yield await tasks.pop(0)
        finally:
            for t in tasks:
                t.cancel()

    def __repr__(self) -> str:
        return f"TotalPixelMatrixSampler(regions={len(self)}, region_shape={self.region_shape})"

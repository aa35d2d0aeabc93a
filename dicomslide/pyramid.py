"""Multi-resolution pyramids (sans-IO).

A :class:`Pyramid` is built from the metadata of the VOLUME (and THUMBNAIL) images of one channel
and focal plane: one :class:`PyramidLevel` per distinct total pixel matrix size, largest first.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple, overload

from pydicom import Dataset

from dicomslide._tags import TOTAL_PIXEL_MATRIX_COLUMNS, TOTAL_PIXEL_MATRIX_ROWS
from dicomslide.errors import InvalidDataError, RegionError
from dicomslide.perframe import get_value
from dicomslide.utils import compute_image_center_position, get_image_pixel_spacing

__all__ = ["Pyramid", "PyramidLevel"]


class PyramidLevel(NamedTuple):
    """Image pyramid level.

    Attributes
    ----------
    total_pixel_matrix_dimensions: tuple[int, int]
        Total pixel matrix (rows, columns)
    pixel_spacing: tuple[float, float]
        Spacing between rows and between columns in millimetres
    downsampling_factors: tuple[float, float]
        Downsampling factors along rows and columns relative to the base level
    has_pixels: bool
        Whether an image with pixels exists at this level (False for levels a derived image
        only borrows from its source image)
    """

    total_pixel_matrix_dimensions: tuple[int, int]
    pixel_spacing: tuple[float, float]
    downsampling_factors: tuple[float, float]
    has_pixels: bool


def _dims(ds: Dataset) -> tuple[int, int]:
    try:
        rows = int(get_value(ds, TOTAL_PIXEL_MATRIX_ROWS))
        columns = int(get_value(ds, TOTAL_PIXEL_MATRIX_COLUMNS))
    except (TypeError, ValueError):
        rows = columns = 0
    if rows <= 0 or columns <= 0:
        raise InvalidDataError(
            f"Image {ds.get('SOPInstanceUID', '?')} has no positive Total Pixel Matrix Rows and "
            "Columns."
        )
    return rows, columns


class Pyramid(Sequence[PyramidLevel]):
    """Image pyramid: a sequence of levels from the base (largest) to the top (smallest).

    Parameters
    ----------
    metadata: Sequence[pydicom.Dataset]
        Metadata of the tiled image instances (one per level; concatenation parts and further
        instances of the same size are merged into one level)
    tolerance: float
        Largest tolerated distance (mm) between the centres of images at different levels
    ref_metadata: Sequence[pydicom.Dataset] | None, optional
        Metadata of source images that give levels a derived image lacks (``has_pixels`` is
        False for those)

    Raises
    ------
    dicomslide.errors.InvalidDataError
        When images of different levels are not aligned within ``tolerance``
    """

    def __init__(
        self,
        metadata: Sequence[Dataset],
        tolerance: float,
        ref_metadata: Sequence[Dataset] | None = None,
    ) -> None:
        if not metadata:
            raise RegionError("A pyramid needs the metadata of at least one tiled image.")
        by_size: dict[tuple[int, int], Dataset] = {}
        for ds in metadata:
            by_size.setdefault(_dims(ds), ds)
        own = set(by_size)
        for ds in ref_metadata or []:
            by_size.setdefault(_dims(ds), ds)
        sizes = sorted(by_size, key=lambda d: d[0] * d[1], reverse=True)
        base = by_size[sizes[0]]
        base_x, base_y, _ = compute_image_center_position(base)
        base_rows, base_cols = sizes[0]
        levels = []
        for dims in sizes:
            ds = by_size[dims]
            x, y, _ = compute_image_center_position(ds)
            distance = math.hypot(x - base_x, y - base_y)
            if distance > tolerance:
                raise InvalidDataError(
                    f"Image {ds.get('SOPInstanceUID', '?')} ({dims[0]} x {dims[1]}) is centred "
                    f"{distance:.4f} mm away from the base level; tolerance is {tolerance} mm."
                )
            levels.append(
                PyramidLevel(
                    dims,
                    get_image_pixel_spacing(ds),
                    (base_rows / dims[0], base_cols / dims[1]),
                    dims in own,
                )
            )
        self._levels = tuple(levels)

    @overload
    def __getitem__(self, index: int) -> PyramidLevel: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[PyramidLevel]: ...

    def __getitem__(self, index: int | slice) -> PyramidLevel | Sequence[PyramidLevel]:
        return self._levels[index]

    def __len__(self) -> int:
        return len(self._levels)

    def __iter__(self) -> Iterator[PyramidLevel]:
        return iter(self._levels)

    def __repr__(self) -> str:
        dims = ", ".join(f"{r}x{c}" for (r, c), *_ in self._levels)
        return f"Pyramid([{dims}])"

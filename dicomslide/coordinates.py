"""Plane geometry of a total pixel matrix: pixel indices <-> slide coordinates.

This module is sans-IO: it reads attributes from :class:`pydicom.Dataset` objects that are
already in memory and does arithmetic with NumPy.

Conventions
-----------
* Pixel indices are zero-based ``(row, column)`` positions in the total pixel matrix and refer
  to the *center* of a pixel, so the center of the top-left pixel is ``(0, 0)`` and fractional
  indices address points inside a pixel.
* Slide coordinates are ``(x, y, z)`` positions in the slide coordinate system (frame of
  reference) in millimeter.
* Following the DICOM standard (PS3.3, Whole Slide Microscopy Image modules), the slide
  position of pixel ``(r, c)`` is::

      origin + c * column_spacing * row_direction + r * row_spacing * column_direction

  where ``row_direction`` is ``ImageOrientationSlide[0:3]`` (the direction in which the column
  index increases along a row), ``column_direction`` is ``ImageOrientationSlide[3:6]``,
  ``row_spacing`` is ``PixelSpacing[0]`` (between rows, i.e. vertical) and ``column_spacing`` is
  ``PixelSpacing[1]`` (between columns, i.e. horizontal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom import Dataset

from dicomslide._tags import (
    IMAGE_ORIENTATION_SLIDE as _IMAGE_ORIENTATION_SLIDE,
    PER_FRAME_FUNCTIONAL_GROUPS as _PER_FRAME_FUNCTIONAL_GROUPS,
    PIXEL_MEASURES as _PIXEL_MEASURES,
    PIXEL_SPACING as _PIXEL_SPACING,
    PLANE_ORIENTATION as _PLANE_ORIENTATION,
    PLANE_POSITION_SLIDE as _PLANE_POSITION_SLIDE,
    SHARED_FUNCTIONAL_GROUPS as _SHARED_FUNCTIONAL_GROUPS,
    TOTAL_PIXEL_MATRIX_ORIGIN as _TOTAL_PIXEL_MATRIX_ORIGIN,
    X_OFFSET as _X_OFFSET,
    Y_OFFSET as _Y_OFFSET,
    Z_OFFSET as _Z_OFFSET,
)
from dicomslide.errors import InvalidDataError, RegionError
from dicomslide.perframe import UNSURE, first_item_decimals, first_per_frame_item, get_value

__all__ = ["DEFAULT_ORIENTATION", "ImageGeometry", "read_pixel_spacing"]

#: Orientation assumed when a dataset has none: rows along +X and columns along +Y, so that
#: slide coordinates grow with pixel indices and no rotation is applied for display. A
#: scanner-specific guess (such as ``(0, -1, 0, -1, 0, 0)``) would rotate images whose geometry
#: is simply unknown.
DEFAULT_ORIENTATION: tuple[float, float, float, float, float, float] = (
    1.0,
    0.0,
    0.0,
    0.0,
    1.0,
    0.0,
)


_GEOMETRY_ATTRIBUTE = "_dicomslide_geometry"


def _first_item(dataset: Dataset, tag: int) -> Dataset | None:
    """Return the first item of a sequence attribute, or ``None`` if absent or empty."""
    sequence = get_value(dataset, tag)
    if not sequence:
        return None
    item: Dataset = sequence[0]
    return item


def _nested_value(dataset: Dataset, path: tuple[int, ...], count: int) -> Any:
    """Value of a DS element through the first items of nested sequences (None if absent).

    The raw bytes are read when that is certain to give what pydicom would (see
    :func:`dicomslide.perframe.first_item_decimals`), since converting the sequences costs
    far more; otherwise pydicom reads the value.
    """
    value = first_item_decimals(dataset, path, count)
    if value is not UNSURE:
        return value
    item = dataset
    for tag in path[:-1]:
        nested = _first_item(item, tag)
        if nested is None:
            return None
        item = nested
    return get_value(item, path[-1])


def _functional_group_value(dataset: Dataset, macro_tag: int, tag: int, count: int) -> Any:
    """Look up a DS attribute of a functional group macro, shared groups first.

    Only the first per-frame item is consulted: the callers want one value per image, and
    per-frame items of large sparse images can number in the thousands.
    """
    value = _nested_value(dataset, (_SHARED_FUNCTIONAL_GROUPS, macro_tag, tag), count)
    if value is not None:
        return value
    value = first_item_decimals(dataset, (_PER_FRAME_FUNCTIONAL_GROUPS, macro_tag, tag), count)
    if value is not UNSURE:
        return value
    # Parsing all per-frame items of a large image would cost seconds.
    first = first_per_frame_item(dataset)
    macro = None if first is None else _first_item(first, macro_tag)
    return None if macro is None else get_value(macro, tag)


def read_pixel_spacing(dataset: Dataset) -> tuple[float, float]:
    """Pixel spacing (mm) of an image: shared functional groups, first per-frame item, or top.

    Parameters
    ----------
    dataset: pydicom.Dataset
        Image metadata

    Returns
    -------
    tuple[float, float]
        (between rows, between columns) in millimetres

    Raises
    ------
    dicomslide.errors.InvalidDataError
        When the image has no Pixel Spacing
    """
    cached = dataset.__dict__.get(_GEOMETRY_ATTRIBUTE)
    if isinstance(cached, ImageGeometry):
        return cached.pixel_spacing
    value = _functional_group_value(dataset, _PIXEL_MEASURES, _PIXEL_SPACING, 2)
    if value is None:
        value = _nested_value(dataset, (_PIXEL_SPACING,), 2)
    if value is None:
        raise InvalidDataError(
            "Image has no Pixel Spacing: looked in SharedFunctionalGroupsSequence, the first "
            "item of PerFrameFunctionalGroupsSequence and the top-level dataset"
        )
    spacing = tuple(float(v) for v in value)
    if len(spacing) != 2 or not all(math.isfinite(v) and v > 0 for v in spacing):
        raise InvalidDataError(
            f"Pixel Spacing must be two positive numbers in millimeter, got {list(spacing)}"
        )
    return spacing[0], spacing[1]


def _read_orientation(
    dataset: Dataset,
) -> tuple[float, float, float, float, float, float]:
    value = _nested_value(dataset, (_IMAGE_ORIENTATION_SLIDE,), 6)
    if value is None:
        # Derived images (e.g. Segmentation) may carry it only in a functional group.
        value = _functional_group_value(dataset, _PLANE_ORIENTATION, _IMAGE_ORIENTATION_SLIDE, 6)
    if value is None:
        return DEFAULT_ORIENTATION
    try:
        cosines = tuple(float(v) for v in ([value] if isinstance(value, int | float) else value))
    except (TypeError, ValueError):
        raise InvalidDataError(
            f"Image Orientation (Slide) must be six numbers, got {value!r}"
        ) from None
    if len(cosines) != 6:
        raise InvalidDataError(
            f"Image Orientation (Slide) must have 6 values, got {len(cosines)}: {list(cosines)}"
        )
    return cosines[0], cosines[1], cosines[2], cosines[3], cosines[4], cosines[5]


def _read_origin(dataset: Dataset) -> tuple[float, float, float]:
    x = float(_nested_value(dataset, (_TOTAL_PIXEL_MATRIX_ORIGIN, _X_OFFSET), 1) or 0.0)
    y = float(_nested_value(dataset, (_TOTAL_PIXEL_MATRIX_ORIGIN, _Y_OFFSET), 1) or 0.0)
    z_value = _functional_group_value(dataset, _PLANE_POSITION_SLIDE, _Z_OFFSET, 1)
    z = float(z_value) if z_value is not None else 0.0
    return x, y, z


def _as_points(values: npt.ArrayLike, widths: tuple[int, ...], name: str) -> npt.NDArray[Any]:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] not in widths:
        expected = " or ".join(f"(N, {w})" for w in widths)
        raise RegionError(f"{name} must be an array of shape {expected}, got shape {array.shape}")
    return array


@dataclass(frozen=True)
class ImageGeometry:
    """Plane geometry of one total pixel matrix in the slide coordinate system.

    Parameters
    ----------
    origin: tuple[float, float, float]
        Slide ``(x, y, z)`` coordinates in millimeter of the center of the top-left pixel of the
        total pixel matrix
    orientation: tuple[float, float, float, float, float, float]
        Image Orientation (Slide): direction cosines of the rows (direction of increasing column
        index) followed by direction cosines of the columns (direction of increasing row index)
    pixel_spacing: tuple[float, float]
        Spacing in millimeter between rows (vertical) and between columns (horizontal), in that
        order, as in the DICOM Pixel Spacing attribute

    Raises
    ------
    dicomslide.errors.RegionError
        When a tuple has the wrong length, a spacing is not positive, or a direction is zero or
        the two directions are parallel
    """

    origin: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]

    def __post_init__(self) -> None:
        if len(self.origin) != 3 or not all(math.isfinite(v) for v in self.origin):
            raise RegionError(f"origin must be 3 finite numbers (x, y, z), got {self.origin}")
        if len(self.orientation) != 6:
            raise RegionError(
                f"orientation must be 6 direction cosines, got {len(self.orientation)} values"
            )
        if len(self.pixel_spacing) != 2 or not all(
            math.isfinite(v) and v > 0 for v in self.pixel_spacing
        ):
            raise RegionError(
                "pixel_spacing must be two positive numbers (between rows, between columns) "
                f"in millimeter, got {self.pixel_spacing}"
            )
        ax, ay, az, bx, by, bz = (float(v) for v in self.orientation)
        # Parallel or zero directions would make the plane degenerate and slide_to_pixel
        # meaningless; catching it here gives one clear error instead of NaNs later. (The
        # cross product in plain floats: NumPy's costs ~10 µs per image when opening a slide.)
        if math.hypot(ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx) < 1e-6:
            raise RegionError(
                "orientation must hold two non-zero, non-parallel directions, "
                f"got {self.orientation}"
            )

    @classmethod
    def from_dataset(cls, ds: Dataset) -> ImageGeometry:
        """Read the geometry of the total pixel matrix of an image.

        Parameters
        ----------
        ds: pydicom.Dataset
            Metadata of a VL Whole Slide Microscopy Image, Segmentation or Parametric Map
            instance

        Returns
        -------
        ImageGeometry
            Geometry of the total pixel matrix

        Raises
        ------
        dicomslide.errors.InvalidDataError
            When the image has no usable Pixel Spacing or a malformed Image Orientation (Slide)

        Notes
        -----
        Attributes are looked up as follows:

        * Pixel Spacing: Shared Functional Groups Sequence > Pixel Measures Sequence, then the
          first item of the Per-Frame Functional Groups Sequence, then the top-level dataset.
          Missing everywhere is an error, because no coordinate can be computed without it.
        * Origin: X and Y from the Total Pixel Matrix Origin Sequence (``(0, 0)`` if absent);
          Z from Plane Position (Slide) Sequence > Z Offset in Slide Coordinate System in the
          shared functional groups, then in the first per-frame item (``0`` if absent). For
          images with several focal planes this is the Z of the first frame.
        * Orientation: top-level Image Orientation (Slide), then Plane Orientation Sequence in
          the functional groups. If absent, ``(1, 0, 0, 0, 1, 0)`` is assumed (rows along +X,
          columns along +Y, no rotation), because an unknown geometry should not rotate the
          image on display.
        """
        # Opening a slide asks for each image's geometry several times (image, pyramid,
        # slide); the lookups walk functional groups, so the answer is kept on the dataset.
        cached = ds.__dict__.get(_GEOMETRY_ATTRIBUTE)
        if isinstance(cached, cls):
            return cached
        geometry = cls(
            origin=_read_origin(ds),
            orientation=_read_orientation(ds),
            pixel_spacing=read_pixel_spacing(ds),
        )
        object.__setattr__(ds, _GEOMETRY_ATTRIBUTE, geometry)
        return geometry

    def _basis(self) -> npt.NDArray[np.float64]:
        """Return the 3x2 matrix mapping ``(row, column)`` offsets to slide offsets in mm."""
        row_direction = np.asarray(self.orientation[0:3], dtype=np.float64)
        column_direction = np.asarray(self.orientation[3:6], dtype=np.float64)
        row_spacing, column_spacing = self.pixel_spacing
        # Moving one row down steps along the column direction by the spacing between rows.
        return np.stack([column_direction * row_spacing, row_direction * column_spacing], axis=1)

    def pixel_to_slide(self, pixel_indices: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map total pixel matrix positions to slide coordinates.

        Parameters
        ----------
        pixel_indices: numpy.ndarray
            Zero-based ``(row, column)`` positions of shape ``(N, 2)``; fractional values are
            allowed, ``(0, 0)`` is the center of the top-left pixel

        Returns
        -------
        numpy.ndarray
            ``(x, y, z)`` slide coordinates in millimeter of shape ``(N, 3)``

        Raises
        ------
        dicomslide.errors.RegionError
            When `pixel_indices` does not have shape ``(N, 2)``
        """
        indices = _as_points(pixel_indices, (2,), "pixel_indices")
        origin = np.asarray(self.origin, dtype=np.float64)
        result: npt.NDArray[np.float64] = origin + indices @ self._basis().T
        return result

    def slide_to_pixel(self, coordinates: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map slide coordinates to (fractional) total pixel matrix positions.

        Parameters
        ----------
        coordinates: numpy.ndarray
            Slide coordinates in millimeter of shape ``(N, 2)`` for ``(x, y)`` or ``(N, 3)``
            for ``(x, y, z)``

        Returns
        -------
        numpy.ndarray
            Zero-based ``(row, column)`` positions of shape ``(N, 2)`` as floating-point
            numbers; the caller decides how to round. Positions outside the total pixel matrix
            are returned as they are (possibly negative), not clipped.

        Raises
        ------
        dicomslide.errors.RegionError
            When `coordinates` does not have shape ``(N, 2)`` or ``(N, 3)``, or when ``(x, y)``
            coordinates are given but the image plane is perpendicular to the slide

        Note
        ----
        ``(x, y)`` coordinates are solved in the XY plane, ignoring Z. ``(x, y, z)``
        coordinates are first projected orthogonally onto the image plane, so a point above
        or below the plane maps to the pixel directly beneath or above it.
        """
        points = _as_points(coordinates, (2, 3), "coordinates")
        basis = self._basis()
        origin = np.asarray(self.origin, dtype=np.float64)
        if points.shape[1] == 2:
            planar = basis[0:2, :]
            if abs(np.linalg.det(planar)) < 1e-12 * max(self.pixel_spacing) ** 2:
                raise RegionError(
                    "Cannot map (x, y) coordinates: the image plane with orientation "
                    f"{self.orientation} does not project onto the slide's XY plane; "
                    "pass (x, y, z) coordinates instead"
                )
            offsets = points - origin[0:2]
            solved = np.linalg.solve(planar, offsets.T).T
            return np.asarray(solved, dtype=np.float64)
        offsets = points - origin
        projected = offsets @ np.linalg.pinv(basis).T
        return np.asarray(projected, dtype=np.float64)

    def rotation_degrees(self) -> float:
        """Get the angle by which to rotate the pixel matrix so that it aligns with the slide.

        Returns
        -------
        float
            Counterclockwise angle in degrees, in the range ``[0, 360)``, by which the total
            pixel matrix, as displayed with rows going down and columns going right, must be
            rotated so that moving right along a row moves along the slide's +X axis. This is
            the convention of :meth:`PIL.Image.Image.rotate` and of ``numpy.rot90`` with
            ``k = angle / 90``. For the common scanner orientation ``(0, -1, 0, -1, 0, 0)``
            the angle is 270.

        Note
        ----
        A rotation cannot undo a mirrored orientation, so after rotating, the slide's Y axis
        points either down or up depending on the handedness of the orientation.
        """
        # Components of the slide X axis along increasing column (display right) and along
        # increasing row (display down).
        along_columns = self.orientation[0]
        along_rows = self.orientation[3]
        if math.hypot(along_columns, along_rows) < 1e-9:
            # The X axis is perpendicular to the image plane; no rotation can help.
            return 0.0
        # With the display's y axis pointing down, the counterclockwise angle of the X axis is
        # atan2(-down, right); rotating by its negative brings it to the right.
        degrees = math.degrees(math.atan2(along_rows, along_columns))
        degrees = round(degrees, 9) % 360.0
        return 0.0 if degrees == 360.0 else degrees

"""Annotation geometry: the slide region that a graphic annotation covers.

:meth:`dicomslide.Slide.get_slide_region_for_annotation` reads what :func:`annotation_region`
computes here: the bounding box of the graphic data (an ELLIPSE by its own extent), grown by
the padding, and the focal plane nearest to the data's mean Z. Kept apart from the slide class
because it is pure geometry on numbers: no source, no image, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from dicomslide.errors import RegionError

__all__ = ["AnnotationRegion", "annotation_bounds", "annotation_region", "padding_mm"]


class AnnotationRegion(NamedTuple):
    """The slide region of an annotation (see :func:`annotation_region`).

    Attributes
    ----------
    offset: tuple[float, float]
        (x, y) in millimetres of the corner with the smallest X and Y
    size: tuple[float, float]
        Extent (mm) along X and Y; never zero
    focal_plane_index: int
        Zero-based focal plane nearest to the mean Z of the graphic data
    """

    offset: tuple[float, float]
    size: tuple[float, float]
    focal_plane_index: int


def annotation_region(
    annotation: Any,
    frame_of_reference_uid: str,
    padding: float | tuple[float, float] | tuple[float, float, float, float],
    focal_plane_offsets: Sequence[float],
    pixel_spacing: float,
) -> AnnotationRegion:
    """The region to read for an annotation, as ``Slide.get_slide_region`` takes it.

    Parameters
    ----------
    annotation: highdicom.sr.Scoord3DContentItem
        Annotation with graphic data in slide coordinates
    frame_of_reference_uid: str
        Frame of Reference UID of the slide (empty if it has none)
    padding: float | tuple[float, float] | tuple[float, float, float, float]
        Padding in millimetres (see :func:`padding_mm`)
    focal_plane_offsets: Sequence[float]
        Z offsets (micrometres) of the slide's focal planes
    pixel_spacing: float
        Mean pixel spacing (mm) of the level read: an extent of zero becomes one pixel

    Returns
    -------
    dicomslide.annotation.AnnotationRegion
        Offset, size and focal plane

    Raises
    ------
    dicomslide.errors.RegionError
        When the annotation or padding is invalid (see :func:`annotation_bounds`), or the
        padding shrinks the box to nothing
    """
    lo, hi, z_mm = annotation_bounds(annotation, frame_of_reference_uid)
    left, top, right, bottom = padding_mm(padding)
    plane = 0
    if len(focal_plane_offsets) > 1 and z_mm is not None:
        # Annotation Z is in millimetres, focal plane offsets in micrometres.
        z_um = z_mm * 1000.0
        plane = int(np.argmin([abs(z - z_um) for z in focal_plane_offsets]))
    x0, y0 = float(lo[0]) - left, float(lo[1]) - bottom
    x1, y1 = float(hi[0]) + right, float(hi[1]) + top
    if x1 < x0 or y1 < y0:
        raise RegionError(f"Padding {padding!r} shrinks the annotation's bounding box to nothing.")
    # The box is read exactly as get_slide_region reads it (as 0.7 does), so a rectangle gives
    # the same patch size by either call; only an extent of zero (a POINT, or points on one
    # line parallel to an axis) becomes one pixel spacing wide, i.e. one pixel.
    size = (x1 - x0 if x1 > x0 else pixel_spacing, y1 - y0 if y1 > y0 else pixel_spacing)
    return AnnotationRegion((x0, y0), size, plane)


_GRAPHIC_TYPES = frozenset({"POINT", "MULTIPOINT", "POLYLINE", "POLYGON", "ELLIPSE"})


def annotation_bounds(
    annotation: Any, frame_of_reference_uid: str
) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Bounding box in slide coordinates of a 3D graphic annotation.

    Parameters
    ----------
    annotation: highdicom.sr.Scoord3DContentItem
        Annotation (any object with ``value`` or ``GraphicData``, ``graphic_type`` or
        ``GraphicType``, and optionally ``ReferencedFrameOfReferenceUID``)
    frame_of_reference_uid: str
        Frame of Reference UID of the slide (empty if it has none)

    Returns
    -------
    tuple[numpy.ndarray, numpy.ndarray, float | None]
        Smallest (x, y), largest (x, y) in millimetres, and the mean Z in millimetres (None if
        the data are 2D)

    Raises
    ------
    dicomslide.errors.RegionError
        When the annotation is in another frame of reference, its graphic type is not supported,
        or its graphic data do not fit the type
    """
    ref = str(getattr(annotation, "ReferencedFrameOfReferenceUID", "") or "")
    if ref and frame_of_reference_uid and ref != frame_of_reference_uid:
        raise RegionError(
            f"Annotation is in frame of reference {ref}, the slide in {frame_of_reference_uid}."
        )
    graphic_type = getattr(annotation, "graphic_type", None)
    if graphic_type is None:
        graphic_type = getattr(annotation, "GraphicType", "")
    graphic_type = str(getattr(graphic_type, "value", graphic_type))
    if graphic_type not in _GRAPHIC_TYPES:
        raise RegionError(
            f"Graphic type {graphic_type!r} is not supported; use one of {sorted(_GRAPHIC_TYPES)}."
        )
    data = getattr(annotation, "value", None)
    if data is None:
        data = getattr(annotation, "GraphicData", None)
    try:
        points = np.asarray(data, dtype=np.float64).reshape(-1, 3)
    except (TypeError, ValueError):
        raise RegionError(
            f"Graphic data of a {graphic_type} annotation must be (x, y, z) triplets."
        ) from None
    if len(points) == 0 or not np.isfinite(points).all():
        raise RegionError(f"The {graphic_type} annotation has no usable graphic data.")
    xy = points[:, :2]
    if graphic_type == "ELLIPSE":
        if len(points) != 4:
            raise RegionError(
                f"An ELLIPSE needs 4 points (major and minor axis end points), got {len(points)}."
            )
        center = (xy[0] + xy[1]) / 2.0
        a = (xy[1] - xy[0]) / 2.0  # half major axis
        b = (xy[3] - xy[2]) / 2.0  # half minor axis
        # Extent of center + a cos t + b sin t along each axis.
        half = np.sqrt(a**2 + b**2)
        return center - half, center + half, float(points[:, 2].mean())
    return xy.min(axis=0), xy.max(axis=0), float(points[:, 2].mean())


def padding_mm(
    padding: float | tuple[float, float] | tuple[float, float, float, float],
) -> tuple[float, float, float, float]:
    """Padding (left, top, right, bottom) in millimetres from its three accepted forms.

    Parameters
    ----------
    padding: float | tuple[float, float] | tuple[float, float, float, float]
        One value for all borders, (along X, along Y), or (left (-X), top (+Y), right (+X),
        bottom (-Y))

    Returns
    -------
    tuple[float, float, float, float]
        (left, top, right, bottom)

    Raises
    ------
    dicomslide.errors.RegionError
        When padding has another number of values or is not finite
    """
    try:
        pad = np.atleast_1d(np.asarray(padding, dtype=np.float64)).ravel()
    except (TypeError, ValueError):
        raise RegionError(f"Padding must be numbers, got {padding!r}.") from None
    if not np.isfinite(pad).all():
        raise RegionError(f"Padding must be finite, got {padding!r}.")
    if pad.size == 1:
        v = float(pad[0])
        return v, v, v, v
    if pad.size == 2:
        return float(pad[0]), float(pad[1]), float(pad[0]), float(pad[1])
    if pad.size == 4:
        return float(pad[0]), float(pad[1]), float(pad[2]), float(pad[3])
    raise RegionError(f"Padding must have 1, 2 or 4 values, got {padding!r}.")

"""Segment descriptions and parametric maps shared by the tests that write them with highdicom."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

#: Equipment attributes highdicom requires of every derived object the tests write.
EQUIPMENT: dict[str, str] = {
    "manufacturer": "test",
    "manufacturer_model_name": "test",
    "software_versions": "1",
    "device_serial_number": "1",
}


def segment_descriptions(numbers: Iterable[int], prefix: str) -> list[hd.seg.SegmentDescription]:
    """Manual segments labelled ``prefix`` + number; odd ones are nuclei, even ones tissue.

    Parameters
    ----------
    numbers: Iterable[int]
        Segment numbers
    prefix: str
        Start of each segment label
    """
    return [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=f"{prefix}{n}",
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Nucleus if n % 2 else codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for n in numbers
    ]


def segmentation(
    source: pydicom.Dataset,
    masks: np.ndarray,
    series_uid: str,
    *,
    fractional: bool = False,
    organization: str = "TILED_FULL",
    label: str = "s",
    **options: Any,
) -> hd.seg.Segmentation:
    """A Segmentation of one source image, one segment per mask channel.

    Parameters
    ----------
    source: pydicom.Dataset
        The (VOLUME) image segmented
    masks: numpy.ndarray
        (rows, columns, segments) masks, or probabilities when ``fractional``
    series_uid: str
        Series Instance UID
    fractional: bool, optional
        A FRACTIONAL (probability) instead of a BINARY segmentation
    organization: str, optional
        Dimension Organization Type; TILED_SPARSE leaves out empty frames
    label: str, optional
        Start of the segment labels (see :func:`segment_descriptions`)
    **options: Any
        Other keyword arguments of :class:`highdicom.seg.Segmentation`, :data:`EQUIPMENT`
        included (Series Number 10, SOP Instance UID new and Instance Number 1 by default)

    Returns
    -------
    highdicom.seg.Segmentation
        The segmentation
    """
    if fractional:
        options.setdefault("fractional_type", hd.seg.SegmentationFractionalTypeValues.PROBABILITY)
    defaults = {"series_number": 10, "sop_instance_uid": hd.UID(), "instance_number": 1}
    return hd.seg.Segmentation(
        source_images=[source],
        pixel_array=masks[None].copy(),
        segmentation_type="FRACTIONAL" if fractional else "BINARY",
        segment_descriptions=segment_descriptions(range(1, masks.shape[-1] + 1), label),
        series_instance_uid=series_uid,
        tile_pixel_array=True,
        dimension_organization_type=organization,
        omit_empty_frames=organization == "TILED_SPARSE",
        **{**defaults, **EQUIPMENT, **options},
    )


def parametric_map(
    source: pydicom.Dataset,
    values: np.ndarray,
    mapping: hd.pm.RealWorldValueMapping,
    window: tuple[float, float],
    series_number: int,
    **options: Any,
) -> hd.pm.ParametricMap:
    """A TILED_FULL Parametric Map of one source image, with one mapping and one VOI window.

    Parameters
    ----------
    source: pydicom.Dataset
        The (VOLUME) image the map belongs to
    values: numpy.ndarray
        Stored values, (rows, columns) of the source's total pixel matrix
    mapping: highdicom.pm.RealWorldValueMapping
        Real world value mapping
    window: tuple[float, float]
        VOI window centre and width
    series_number: int
        Series Number
    **options: Any
        Other keyword arguments of :class:`highdicom.pm.ParametricMap` (``series_instance_uid``
        and ``sop_instance_uid`` default to new UIDs)

    Returns
    -------
    highdicom.pm.ParametricMap
        The map
    """
    center, width = window
    return hd.pm.ParametricMap(
        [source],
        values[None],
        options.pop("series_instance_uid", None) or hd.UID(),
        series_number,
        options.pop("sop_instance_uid", None) or hd.UID(),
        1,
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[
            hd.VOILUTTransformation(window_center=center, window_width=width)
        ],
        tile_pixel_array=True,
        dimension_organization_type="TILED_FULL",
        **options,
    )

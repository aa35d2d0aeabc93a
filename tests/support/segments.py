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

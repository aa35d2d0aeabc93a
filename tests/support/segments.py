"""Segment descriptions shared by the tests that write segmentations with highdicom."""

from __future__ import annotations

from collections.abc import Iterable

import highdicom as hd
from pydicom.sr.codedict import codes


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

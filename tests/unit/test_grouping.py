"""dicomslide.grouping on the metadata of synthetic slides: what merges and what stays apart.

The metadata are the headers of a pyramid written by :mod:`dicomslide.synthetic` with one Frame
of Reference UID per level; each test changes one attribute that must stop the merge.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from dicomslide.grouping import describe, merge_split_pyramids, pyramid_images, slide_key
from dicomslide.synthetic import SlideSpec, write_slide
from tests.support.slides import slide_spec

SPEC = slide_spec(
    (512, 768),
    128,
    3,
    frame_of_reference_per_level=True,
    transfer_syntax_uid=ExplicitVRLittleEndian,
    container_id="G",
)


@pytest.fixture
def headers(tmp_path: Path) -> list[Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in write_slide(tmp_path, SPEC)]


def _groups(datasets: list[Dataset]) -> dict[tuple[str, ...], list[Dataset]]:
    groups: dict[tuple[str, ...], list[Dataset]] = {}
    for ds in datasets:
        groups.setdefault(slide_key(ds), []).append(ds)
    return groups


def _level(ds: Dataset) -> int | None:
    if "VOLUME" not in list(ds.ImageType):
        return None
    return {SPEC.level_shape(i): i for i in range(SPEC.num_levels)}[
        (int(ds.TotalPixelMatrixRows), int(ds.TotalPixelMatrixColumns))
    ]


def test_levels_with_own_frames_of_reference_merge(headers: list[Dataset]) -> None:
    groups = _groups(headers)
    assert len(groups) == SPEC.num_levels  # label and overview share level 0's
    merged = merge_split_pyramids(groups, 0.1)
    (images,) = merged.values()
    assert len(images) == len(headers)
    assert len(pyramid_images(images)) == SPEC.num_levels


CHANGES: dict[str, Callable[[Dataset], None]] = {
    "container": lambda ds: setattr(ds, "ContainerIdentifier", "OTHER"),
    "series": lambda ds: setattr(ds, "SeriesInstanceUID", "1.2.3.4.5"),
    "orientation": lambda ds: setattr(ds, "ImageOrientationSlide", [1, 0, 0, 0, -1, 0]),
    "imaged_volume": lambda ds: setattr(ds, "ImagedVolumeWidth", 9.0),
    "area": lambda ds: setattr(
        ds.TotalPixelMatrixOriginSequence[0], "XOffsetInSlideCoordinateSystem", 25.0
    ),
}


@pytest.mark.parametrize("what", sorted(CHANGES))
def test_level_that_does_not_line_up_stays_apart(headers: list[Dataset], what: str) -> None:
    for ds in headers:
        if _level(ds) == 2:
            CHANGES[what](ds)
    merged = merge_split_pyramids(_groups(headers), 0.1)
    levels = sorted(sorted(_level(ds) for ds in pyramid_images(g)) for g in merged.values())
    assert levels == [[0, 1], [2]]


def test_same_size_twice_is_another_scan(headers: list[Dataset], tmp_path: Path) -> None:
    again = SlideSpec(**{**SPEC.__dict__, "seed": 9})
    others = [
        pydicom.dcmread(p, stop_before_pixels=True) for p in write_slide(tmp_path / "b", again)
    ]
    for ds in others:
        ds.SeriesInstanceUID = headers[0].SeriesInstanceUID
    merged = merge_split_pyramids(_groups([*headers, *others]), 0.1)
    assert sorted(len(pyramid_images(g)) for g in merged.values()) == [3, 3]


def test_describe_names_series_and_flavors(headers: list[Dataset]) -> None:
    label = [ds for ds in headers if "LABEL" in list(ds.ImageType)]
    text = describe(label)
    assert str(label[0].SeriesInstanceUID) in text
    assert str(label[0].StudyInstanceUID) in text
    assert "LABEL" in text
    assert "'G'" in text
    assert pyramid_images(label) == []

"""Two series holding the same slide (issue 17, "stray series"), local folders.

A re-encoded copy of a slide (as wsidicom writes when transcoding) keeps study, frame of
reference and container but gets a new series. ``find_slides`` must make one slide per copy,
each reading its own pixels at every level, and say so on the ``dicomslide.slide`` logger;
a pyramid whose levels sit in several series of one frame of reference, and a concatenation,
stay one slide.

:func:`write_duplicate_folder` is shared with the Orthanc variant.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

import dicomslide
from dicomslide.synthetic import SlideSpec, expected_pixels, write_slide
from tests.support.slides import slide_spec, written_folder

STUDY = "1.2.826.0.1.3680043.8.498.17002"
FRAME = "1.2.826.0.1.3680043.8.498.17003"


@dataclass
class Duplicates:
    """Copies of one slide in two series, and single pyramids spread over series."""

    root: Path
    copies: dict[str, SlideSpec]  # series UID -> what that series holds
    copies_split: dict[str, SlideSpec]  # the same, levels with own frames of reference
    spread: SlideSpec  # one pyramid, every VOLUME level in a series of its own
    concatenated: SlideSpec  # one pyramid whose levels are concatenations of 2 parts


def _write_copies(root: Path, container: str, per_level: bool) -> dict[str, SlideSpec]:
    """One slide written twice into two series of one study, frame of reference, container."""
    one_slide = partial(
        slide_spec,
        (300, 420),
        64,
        3,
        study_instance_uid=STUDY,
        frame_of_reference_uid=FRAME,
        container_id=container,
        frame_of_reference_per_level=per_level,
    )
    original = one_slide(
        transfer_syntax_uid=ExplicitVRLittleEndian,
        pattern="position",
        series_instance_uid=generate_uid(entropy_srcs=["issue-17-original", container]),
        seed=50,
    )
    # The copy differs in transfer syntax and in pixel content, so that a read tells them apart.
    copy = one_slide(
        transfer_syntax_uid=RLELossless,
        pattern="smooth",
        series_instance_uid=generate_uid(entropy_srcs=["issue-17-copy", container]),
        concatenation_parts=2,
        seed=51,
    )
    frames: dict[int, str] = {}
    for path in write_slide(root / "original", original):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        frames[int(ds.TotalPixelMatrixRows)] = str(ds.FrameOfReferenceUID)
    for path in write_slide(root / "copy", copy):
        if per_level:
            # A re-encoder keeps each level's frame of reference.
            ds = pydicom.dcmread(path)
            ds.FrameOfReferenceUID = frames[int(ds.TotalPixelMatrixRows)]
            ds.save_as(path)
    return {str(s.series_instance_uid): s for s in (original, copy)}


def write_duplicate_folder(root: Path) -> Duplicates:
    """Write the :class:`Duplicates` layouts into subfolders of ``root``."""
    copies = _write_copies(root / "copies", "COPIED", per_level=False)
    copies_split = _write_copies(root / "copies-split", "COPIED-SPLIT", per_level=True)
    exact = partial(slide_spec, (300, 420), 64, transfer_syntax_uid=ExplicitVRLittleEndian)
    spread = exact(3, pattern="position", container_id="SPREAD", seed=52)
    for path in write_slide(root / "spread", spread):
        if "volume" in path.name:
            ds = pydicom.dcmread(path)
            # One frame of reference, every level in a series of its own.
            ds.SeriesInstanceUID = generate_uid(entropy_srcs=["issue-17-spread", path.name])
            ds.save_as(path)
    concatenated = exact(
        2, pattern="position", concatenation_parts=3, container_id="CONCAT", seed=53
    )
    write_slide(root / "concatenated", concatenated)
    return Duplicates(root, copies, copies_split, spread, concatenated)


written = written_folder(write_duplicate_folder, "duplicates")


def series_of(slide: dicomslide.Slide) -> set[str]:
    """Series UIDs of a slide's VOLUME images."""
    return {str(image.metadata.SeriesInstanceUID) for image in slide.get_volume_images()}


async def assert_copies(slides: list[dicomslide.Slide], copies: dict[str, SlideSpec]) -> None:
    """One slide per copy, each reading its own pixels at every level, with its own label."""
    assert len(slides) == 2
    assert sorted(next(iter(series_of(s))) for s in slides) == sorted(copies)
    for slide in slides:
        (series,) = series_of(slide)
        spec = copies[series]
        assert slide.container_id == spec.container_id
        assert slide.num_levels == spec.num_levels
        assert [str(im.metadata.SeriesInstanceUID) for im in slide.label_images] == [series]
        assert [str(im.metadata.SeriesInstanceUID) for im in slide.overview_images] == [series]
        for level in range(spec.num_levels):
            matrix = slide.get_volume_images()[level].get_total_pixel_matrix()
            np.testing.assert_array_equal(await matrix[:, :], expected_pixels(spec, level))


def assert_copies_logged(caplog: pytest.LogCaptureFixture, copies: dict[str, SlideSpec]) -> None:
    """One warning on dicomslide.slide naming both series and the container."""
    hits = [
        r.getMessage()
        for r in caplog.records
        if r.name == "dicomslide.slide"
        and r.levelno == logging.WARNING
        and all(s in r.getMessage() for s in copies)
    ]
    assert len(hits) == 1, [r.getMessage() for r in caplog.records]
    assert repr(next(iter(copies.values())).container_id) in hits[0]


@pytest.mark.parametrize("folder", ["copies", "copies-split"])
async def test_copies_of_one_slide_are_two_slides(
    written: Duplicates, caplog: pytest.LogCaptureFixture, folder: str
) -> None:
    copies = written.copies if folder == "copies" else written.copies_split
    container = next(iter(copies.values())).container_id
    headers = [
        pydicom.dcmread(p, stop_before_pixels=True) for p in (written.root / folder).rglob("*.dcm")
    ]
    # Both copies really share study, frames of reference and container.
    assert {(h.StudyInstanceUID, h.ContainerIdentifier) for h in headers} == {(STUDY, container)}
    assert {h.SeriesInstanceUID for h in headers} == set(copies)
    frames = [{h.FrameOfReferenceUID for h in headers if h.SeriesInstanceUID == s} for s in copies]
    assert frames[0] == frames[1]
    assert len(frames[0]) == (1 if folder == "copies" else 3)
    caplog.set_level(logging.INFO, logger="dicomslide")
    async with dicomslide.DICOMfileClient(written.root / folder) as client:
        slides = await dicomslide.find_slides(client)
        await assert_copies(slides, copies)
    assert_copies_logged(caplog, copies)


async def assert_levels_exact(slide: dicomslide.Slide, spec: SlideSpec) -> None:
    """Every level of the slide reads as the synthetic truth of ``spec``."""
    for level in range(spec.num_levels):
        matrix = slide.get_volume_images()[level].get_total_pixel_matrix()
        np.testing.assert_array_equal(await matrix[:, :], expected_pixels(spec, level))


async def assert_one_exact_slide(
    folder: Path, spec: SlideSpec, caplog: pytest.LogCaptureFixture
) -> dicomslide.Slide:
    """The folder holds one slide that reads as ``spec``, found without a warning."""
    caplog.set_level(logging.INFO, logger="dicomslide")
    async with dicomslide.DICOMfileClient(folder) as client:
        (slide,) = await dicomslide.find_slides(client)
        assert slide.num_levels == spec.num_levels
        await assert_levels_exact(slide, spec)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    return slide


async def test_pyramid_over_several_series_is_one_slide(
    written: Duplicates, caplog: pytest.LogCaptureFixture
) -> None:
    spec = written.spread
    async with dicomslide.DICOMfileClient(written.root / "spread") as client:
        assert len(await client.search_for_series()) >= spec.num_levels
    slide = await assert_one_exact_slide(written.root / "spread", spec, caplog)
    assert len(series_of(slide)) == spec.num_levels
    assert len(slide.label_images) == 1


async def test_concatenation_is_no_copy(
    written: Duplicates, caplog: pytest.LogCaptureFixture
) -> None:
    await assert_one_exact_slide(written.root / "concatenated", written.concatenated, caplog)


async def test_whole_folder(written: Duplicates, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dicomslide")
    async with dicomslide.DICOMfileClient(written.root) as client:
        slides = await dicomslide.find_slides(client)
        by_container: dict[str, list[dicomslide.Slide]] = {}
        for slide in slides:
            by_container.setdefault(slide.container_id, []).append(slide)
        assert sorted((c, len(s)) for c, s in by_container.items()) == [
            ("CONCAT", 1),
            ("COPIED", 2),
            ("COPIED-SPLIT", 2),
            ("SPREAD", 1),
        ]
        await assert_copies(by_container["COPIED"], written.copies)
        await assert_copies(by_container["COPIED-SPLIT"], written.copies_split)
    assert_copies_logged(caplog, written.copies)
    assert_copies_logged(caplog, written.copies_split)

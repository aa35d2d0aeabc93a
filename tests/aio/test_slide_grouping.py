"""Grouping images into slides on real-world layouts (issue 17, items 3 and 4), local folders.

* A pyramid whose levels carry their own Frame of Reference UID (as one converter writes) is one
  slide; two scans of one slide in one series, or two areas, stay two slides.
* LABEL-only and OVERVIEW-only series next to good slides are skipped with a warning that names
  them; the good slides are returned, with or without ``fail_on_error``.

:func:`write_stray_folder` and :func:`write_split_folder` are shared with the Orthanc variant.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import dicomslide
from dicomslide.errors import InvalidDataError, RegionError
from dicomslide.synthetic import SlideSpec, expected_pixels, write_slide
from tests.support.slides import slide_spec, written_folder

_small = partial(
    slide_spec, (400, 600), 128, transfer_syntax_uid=ExplicitVRLittleEndian, pattern="position"
)

STUDY = "1.2.826.0.1.3680043.8.498.17001"


@dataclass
class Stray:
    """A folder with two good slides, a label-only and an overview-only series."""

    root: Path
    good: dict[str, SlideSpec]
    skipped_series: dict[str, str]  # container -> series UID of the stray series


def _only(paths: list[Path], keep: str) -> list[Path]:
    """Delete every written file but those whose name contains ``keep``."""
    kept = []
    for path in paths:
        if keep in path.name:
            kept.append(path)
        else:
            path.unlink()
    assert kept, f"no {keep} file was written"
    return kept


def write_stray_folder(root: Path) -> Stray:
    """Good slides SLIDE-A and SLIDE-B, and a LABEL-only and an OVERVIEW-only series."""
    good = {
        "SLIDE-A": _small(2, container_id="SLIDE-A", seed=1),
        "SLIDE-B": _small(1, container_id="SLIDE-B", seed=2),
    }
    for name, spec in good.items():
        write_slide(root / name, spec)
    skipped = {}
    for name, kind in (("LABEL-ONLY", "label"), ("OVERVIEW-ONLY", "overview")):
        spec = _small(1, container_id=name, seed=len(skipped) + 7)
        (path,) = _only(write_slide(root / name, spec), kind)
        skipped[name] = str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
    return Stray(root, good, skipped)


@dataclass
class Split:
    """Pyramids with per-level frames of reference, and near misses that must stay apart."""

    root: Path
    split: SlideSpec  # 4 levels, each with its own frame of reference, plus a thumbnail
    by_pyramid_uid: SlideSpec  # 3 levels in 3 series linked by one Pyramid UID
    rescans: tuple[SlideSpec, SlideSpec]  # same series and container, same level sizes
    areas: tuple[SlideSpec, SlideSpec]  # same series and container, different areas


def write_split_folder(root: Path) -> Split:
    """Write the :class:`Split` layouts into subfolders of ``root``."""
    # Every level with a frame of reference of its own, as one real converter writes.
    per_level = partial(
        slide_spec,
        tile=128,
        frame_of_reference_per_level=True,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        pattern="position",
    )
    split = per_level((700, 900), levels=4, thumbnail=True, container_id="SPLIT", seed=20)
    write_slide(root / "split", split)
    linked = per_level((500, 640), levels=3, bare=True, container_id="LINKED", seed=21)
    pyramid_uid = generate_uid(entropy_srcs=["issue-17-pyramid"])
    for path in write_slide(root / "linked", linked):
        ds = pydicom.dcmread(path)
        ds.PyramidUID = pyramid_uid
        # Every level in a series of its own: only the Pyramid UID ties them together.
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=["issue-17-linked", path.name])
        ds.save_as(path)
    series = generate_uid(entropy_srcs=["issue-17-shared-series"])
    near_miss = partial(per_level, bare=True, study_instance_uid=STUDY, series_instance_uid=series)
    rescans = (
        near_miss((400, 500), levels=2, container_id="RESCAN", seed=30),
        near_miss((400, 500), levels=2, container_id="RESCAN", seed=31),
    )
    areas = (
        near_miss((400, 500), levels=2, container_id="AREAS", seed=32),
        near_miss((300, 300), levels=1, container_id="AREAS", seed=33, origin_mm=(22.0, 42.0)),
    )
    for i, spec in enumerate((*rescans, *areas)):
        write_slide(root / f"near-miss-{i}", spec)
    return Split(root, split, linked, rescans, areas)


stray = written_folder(write_stray_folder, "stray")
split = written_folder(write_split_folder, "split")


def assert_stray_warnings(caplog: pytest.LogCaptureFixture, layout: Stray) -> None:
    """One warning per stray series, naming its series UID and saying it was skipped."""
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for container, series in layout.skipped_series.items():
        hits = [m for m in messages if series in m]
        assert len(hits) == 1, (container, messages)
        assert "skips" in hits[0]
        assert container in hits[0]


@pytest.mark.parametrize("fail_on_error", [True, False])
async def test_stray_label_and_overview_are_skipped_local(
    stray: Stray, caplog: pytest.LogCaptureFixture, fail_on_error: bool
) -> None:
    caplog.set_level(logging.WARNING, logger="dicomslide")
    async with dicomslide.DICOMfileClient(stray.root) as client:
        slides = await dicomslide.find_slides(client, fail_on_error=fail_on_error)
        assert sorted(s.container_id for s in slides) == sorted(stray.good)
        for slide in slides:
            spec = stray.good[slide.container_id]
            assert slide.num_levels == spec.num_levels
            # The good slides keep their own label and overview.
            assert len(slide.label_images) == 1
            assert len(slide.overview_images) == 1
            region = await slide.get_image_region((0, 0), 0, (64, 64))
            np.testing.assert_array_equal(
                region, expected_pixels(spec, 0, 0, 0, slice(0, 64), slice(0, 64))
            )
    assert_stray_warnings(caplog, stray)


async def test_stray_alone_is_no_slide_and_not_a_region_error(stray: Stray) -> None:
    async with dicomslide.DICOMfileClient(stray.root / "LABEL-ONLY") as client:
        assert await dicomslide.find_slides(client) == []
        with pytest.raises(dicomslide.NotFoundError):
            await dicomslide.open_slide(client)
        series = await client.search_for_series()
        (metadata,) = await client.retrieve_series_metadata(
            str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID)
        )
        # Images that cannot form a slide are bad data, not a bad argument.
        with pytest.raises(InvalidDataError, match="VOLUME or THUMBNAIL") as info:
            dicomslide.Slide(client, [metadata])
        assert not isinstance(info.value, RegionError)
        assert stray.skipped_series["LABEL-ONLY"] in str(info.value)


async def test_pyramid_with_per_level_frames_of_reference_is_one_slide(split: Split) -> None:
    spec = split.split
    frames = {
        str(pydicom.dcmread(p, stop_before_pixels=True).FrameOfReferenceUID)
        for p in (split.root / "split").glob("*volume*.dcm")
    }
    assert len(frames) == spec.num_levels  # the files really carry one per level
    async with dicomslide.DICOMfileClient(split.root / "split") as client:
        (slide,) = await dicomslide.find_slides(client)
        # The thumbnail has the size of level 1, so it adds no level.
        assert slide.num_levels == spec.num_levels
        assert len(slide.thumbnail_images) == 1
        assert len(slide.label_images) == 1
        assert len(slide.overview_images) == 1
        for level in range(spec.num_levels):
            rows, cols = spec.level_shape(level)
            matrix = slide.get_volume_images()[level].get_total_pixel_matrix()
            np.testing.assert_array_equal(await matrix[:, :], expected_pixels(spec, level))
            assert matrix.shape[:2] == (rows, cols)
    # open_slide refused such folders ("holds 4 slides"); OpenSlide opens them as one slide.
    osr = await dicomslide.open_slide(split.root / "split", correct_color=False)
    try:
        assert osr.level_count == spec.num_levels
        openslide = pytest.importorskip("openslide")
        reference = openslide.OpenSlide(str(sorted((split.root / "split").glob("*.dcm"))[0]))
        try:
            assert reference.level_count == osr.level_count
            assert reference.level_dimensions == osr.level_dimensions
        finally:
            reference.close()
    finally:
        await osr.close()


async def test_pyramid_linked_by_pyramid_uid_across_series(split: Split) -> None:
    spec = split.by_pyramid_uid
    async with dicomslide.DICOMfileClient(split.root / "linked") as client:
        assert len(await client.search_for_series()) == spec.num_levels
        (slide,) = await dicomslide.find_slides(client)
        assert slide.num_levels == spec.num_levels
        for level in range(spec.num_levels):
            matrix = slide.get_volume_images()[level].get_total_pixel_matrix()
            np.testing.assert_array_equal(await matrix[:, :], expected_pixels(spec, level))


async def test_near_misses_stay_apart(split: Split) -> None:
    async with dicomslide.DICOMfileClient(split.root) as client:
        slides = await dicomslide.find_slides(client)
    by_container: dict[str, list[dicomslide.Slide]] = {}
    for slide in slides:
        by_container.setdefault(slide.container_id, []).append(slide)
    assert sorted(by_container) == ["AREAS", "LINKED", "RESCAN", "SPLIT"]
    assert [s.num_levels for s in by_container["SPLIT"]] == [split.split.num_levels]
    assert [s.num_levels for s in by_container["LINKED"]] == [3]
    # Two scans with the same level sizes: the levels of each still merge, the scans do not.
    assert sorted(s.num_levels for s in by_container["RESCAN"]) == [2, 2]
    rescan_frames = {s.frame_of_reference_uid for s in by_container["RESCAN"]}
    assert len(rescan_frames) == 2
    # Another area of the same slide in the same series is another slide.
    assert sorted(s.num_levels for s in by_container["AREAS"]) == [1, 2]

"""Segmentations, parametric maps, channel and focal plane look-ups, slide filters, annotations.

Segmentations and parametric maps are made with highdicom on top of synthetic slides written by
the package's generator; what is read back through :class:`dicomslide.Slide` is compared with
what was written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

import dicomslide
from dicomslide.enums import ChannelTypes
from dicomslide.errors import RegionError
from dicomslide.synthetic import SlideSpec, write_slide
from tests.support.segments import EQUIPMENT, parametric_map, segmentation
from tests.support.slides import written_folder

EXPLICIT = "1.2.840.10008.1.2.1"
SIZE = (300, 520)
BASE = {
    "size": SIZE,
    "tile_size": (128, 128),
    "levels": 2,
    "transfer_syntax_uid": EXPLICIT,
    "label": False,
    "overview": False,
}
ALL_SLIDES = ["SLIDE-A", "SLIDE-B", "SLIDE-C", "SLIDE-D"]
STAIN_B = (("C0000001", "DCM", "made-up stain"),)


def _spec(container: str, seed: int, **kw: Any) -> SlideSpec:
    return SlideSpec(container_id=container, seed=seed, **{**BASE, **kw})


def _source_images(paths: Sequence[Path]) -> list[pydicom.Dataset]:
    images = [pydicom.dcmread(p) for p in paths]
    images = [ds for ds in images if "VOLUME" in ds.ImageType]
    return sorted(images, key=lambda ds: -int(ds.TotalPixelMatrixRows))


def _masks(shape: tuple[int, int], seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros((*shape, n), dtype=np.uint8)
    for k in range(n):
        r0, c0 = rng.integers(0, shape[0] // 2), rng.integers(0, shape[1] // 2)
        r1, c1 = r0 + rng.integers(20, shape[0] // 2), c0 + rng.integers(20, shape[1] // 2)
        out[r0:r1, c0:c1, k] = 1
        out[(r0 + r1) // 2, :, k] = 1  # a line crossing tile borders and bit boundaries
    return out


class Written:
    """What the fixture wrote, for the tests to compare against."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.binary: np.ndarray = np.zeros(0)
        self.fractional: np.ndarray = np.zeros(0)
        self.split: list[np.ndarray] = []
        self.pm_values: np.ndarray = np.zeros(0)
        self.seg_series: dict[str, str] = {}
        self.odd_bits: np.ndarray = np.zeros(0)


def write_derived(root: Path) -> Written:
    """Write slides A (with segmentations and a parametric map), B and C under a folder.

    Parameters
    ----------
    root: pathlib.Path
        Folder; slides go to its sub-folders ``a``, ``b`` and ``c``

    Returns
    -------
    Written
        What was written
    """
    out = Written(root)
    paths_a = write_slide(root / "a", _spec("SLIDE-A", 1, focal_planes=1))
    write_slide(root / "b", _spec("SLIDE-B", 2, specimen_stains=STAIN_B))
    write_slide(
        root / "c",
        _spec("SLIDE-C", 3, optical_paths=2, photometric="MONOCHROME2", icc_profile=False),
    )
    level0, level1 = _source_images(paths_a)
    # BINARY, TILED_FULL, two segments.
    out.binary = _masks(SIZE, 0, 2)
    uid = hd.UID()
    out.seg_series["binary"] = uid
    segmentation(level0, out.binary, uid, label="bin").save_as(root / "a" / "seg_binary.dcm")
    # FRACTIONAL, TILED_SPARSE (empty frames left out), segment number 1 again.
    probabilities = np.random.default_rng(5).random((*SIZE, 1)).astype(np.float32)
    probabilities[:128, :256] = 0.0  # two whole empty tiles, left out of the file
    uid = hd.UID()
    out.seg_series["fractional"] = uid
    seg = segmentation(
        level0, probabilities, uid, fractional=True, organization="TILED_SPARSE", label="frac"
    )
    seg.save_as(root / "a" / "seg_fractional.dcm")
    out.fractional = np.round(probabilities[..., 0] * 255).astype(np.uint8)
    # One series, segments split across two instances: segment 1 in the first instance,
    # segment 2 (renumbered) in the second; and a third instance that reuses number 1.
    uid = hd.UID()
    out.seg_series["split"] = uid
    out.split = [_masks(SIZE, 10 + k, 1)[..., 0] for k in range(3)]
    for k, number in enumerate((1, 2, 1)):
        seg = segmentation(
            level0, out.split[k][..., None], uid, label=f"split{k}-", instance_number=k + 1
        )
        seg.SegmentSequence[0].SegmentNumber = number
        seg.SegmentSequence[0].SegmentLabel = f"split{k}"
        seg.save_as(root / "a" / f"seg_split_{k}.dcm")
    # Parametric map at level 1 only (16-bit integers with a real world value mapping).
    rows, cols = int(level1.TotalPixelMatrixRows), int(level1.TotalPixelMatrixColumns)
    out.pm_values = (np.arange(rows * cols).reshape(rows, cols) * 7 % 4001).astype(np.uint16)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="density",
        lut_explanation="made up",
        unit=codes.UCUM.NoUnits,
        value_range=(0, 4000),
        slope=0.5,
        intercept=-1,
    )
    pm = parametric_map(level1, out.pm_values, mapping, (2000, 4000), 20, **EQUIPMENT)
    pm.save_as(root / "a" / "pm.dcm")
    # Slide D: a BINARY segmentation with 45 x 45 frames (2025 bits: frames after the first
    # start inside a byte of the bit-packed Pixel Data).
    (d_level0,) = _source_images(write_slide(root / "d", _spec("SLIDE-D", 4, levels=1)))
    out.odd_bits = _masks(SIZE, 42, 2)
    seg = segmentation(d_level0, out.odd_bits, hd.UID(), label="bits", tile_size=(45, 45))
    assert (int(seg.Rows) * int(seg.Columns)) % 8 != 0
    seg.save_as(root / "d" / "seg.dcm")
    return out


written = written_folder(write_derived, "derived")


async def _slide(client: Any, container: str = "SLIDE-A", **kw: Any) -> dicomslide.Slide:
    slides = await dicomslide.find_slides(client, container_id=container, **kw)
    assert len(slides) == 1
    return slides[0]


def _seg_channels(slide: dicomslide.Slide, series_uid: str) -> list[int]:
    return [
        i
        for i in slide.find_segments()
        if slide.get_volume_images(i)[0].metadata.SeriesInstanceUID == series_uid
    ]


async def _read(slide: dicomslide.Slide, channel: int, level: int = 0) -> np.ndarray:
    rows, cols = slide.total_pixel_matrix_dimensions[level]
    region = await slide.get_image_region((0, 0), level, (rows, cols), channel_index=channel)
    assert region.shape[2] == 1
    return np.asarray(region[..., 0])


async def test_channels_of_derived_images(client: Any, written: Written) -> None:
    slide = await _slide(client)
    types = [slide.get_channel_type(i) for i in range(slide.num_channels)]
    # 1 optical path, 1 parameter, 2 + 1 + 3 segments (in this order of types).
    assert (
        types == [ChannelTypes.OPTICAL_PATH, ChannelTypes.PARAMETER] + [ChannelTypes.SEGMENT] * 6
    )
    assert len(slide.find_segments()) == 6
    without = await _slide(client, include_derived=False)
    assert without.num_channels == 1


async def test_binary_segmentation_reads_back(client: Any, written: Written) -> None:
    slide = await _slide(client)
    channels = _seg_channels(slide, written.seg_series["binary"])
    assert [slide.get_channel_identifier(i) for i in channels] == ["1", "2"]
    for k, channel in enumerate(channels):
        mask = await _read(slide, channel)
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, written.binary[..., k])
    # A region that starts mid-tile and mid-byte.
    part = await slide.get_image_region((37, 101), 0, (150, 333), channel_index=channels[1])
    np.testing.assert_array_equal(part[..., 0], written.binary[37:187, 101:434, 1])


async def test_fractional_sparse_segmentation_reads_back(client: Any, written: Written) -> None:
    slide = await _slide(client)
    (channel,) = _seg_channels(slide, written.seg_series["fractional"])
    np.testing.assert_array_equal(await _read(slide, channel), written.fractional)


async def test_segments_split_across_instances_and_repeated_numbers(
    client: Any, written: Written
) -> None:
    slide = await _slide(client)
    channels = _seg_channels(slide, written.seg_series["split"])
    assert len(channels) == 3
    labels = [slide.get_volume_images(i)[0] for i in channels]
    assert len({im.metadata.SOPInstanceUID for im in labels}) == 3
    by_label = {
        str(slide.get_volume_images(i)[0].metadata.SegmentSequence[0].SegmentLabel): i
        for i in channels
    }
    for k in range(3):
        np.testing.assert_array_equal(await _read(slide, by_label[f"split{k}"]), written.split[k])
    # Segment number 1 exists in three series (binary, fractional, split x2): four channels.
    assert len(slide.find_segments(number=1)) == 4
    assert slide.find_segments(number=2, label="split1") == (by_label["split1"],)


async def test_find_segments_combines_criteria(client: Any, written: Written) -> None:
    slide = await _slide(client)
    binary = _seg_channels(slide, written.seg_series["binary"])
    assert slide.find_segments(label="bin1") == (binary[0],)
    assert slide.find_segments(label="bin1", number=2) == ()
    nucleus = slide.find_segments(property_type=codes.SCT.Nucleus)
    assert binary[0] in nucleus
    assert binary[1] not in nucleus
    assert slide.find_segments(property_type=codes.SCT.Nucleus, label="bin2") == ()
    category = hd.sr.CodedConcept("85756007", "SCT", "whatever the meaning")
    assert len(slide.find_segments(property_category=category)) == 6
    with pytest.raises(ValueError, match="property_type must be"):
        slide.find_segments(property_type="Nucleus")


async def test_parametric_map_values_and_missing_level(client: Any, written: Written) -> None:
    slide = await _slide(client)
    channel = slide.get_channel_index("density", ChannelTypes.PARAMETER)
    assert slide.get_channel_type(channel) is ChannelTypes.PARAMETER
    values = await _read(slide, channel, level=1)
    assert values.dtype == np.uint16
    np.testing.assert_array_equal(values, written.pm_values)
    with pytest.raises(RegionError, match="no image at level 0"):
        await slide.get_image_region((0, 0), 0, (10, 10), channel_index=channel)


async def test_derived_level_mismatch_is_an_error(client: Any, written: Written) -> None:
    slide = await _slide(client)
    channel = _seg_channels(slide, written.seg_series["binary"])[0]
    with pytest.raises(RegionError, match="no image at level 1"):
        await slide.get_image_region((0, 0), 1, (10, 10), channel_index=channel)


async def test_channel_and_focal_plane_lookups(client: Any) -> None:
    slide = await _slide(client, "SLIDE-C")
    assert slide.num_channels == 2
    ids = [slide.get_channel_identifier(i) for i in range(2)]
    assert [slide.get_channel_index(i) for i in ids] == [0, 1]
    assert slide.get_channel_index(ids[1], "OPTICAL_PATH") == 1
    assert slide.find_optical_paths(identifier=ids[1]) == (1,)
    assert slide.find_optical_paths() == (0, 1)
    assert slide.find_optical_paths(identifier=ids[1], description="nope") == ()
    for bad in (2, -1):
        with pytest.raises(ValueError, match="out of range"):
            slide.get_channel_type(bad)
        with pytest.raises(ValueError, match="out of range"):
            slide.get_channel_identifier(bad)
    with pytest.raises(ValueError, match="No OPTICAL_PATH channel"):
        slide.get_channel_index("nope")
    with pytest.raises(ValueError, match="No SEGMENT channel"):
        slide.get_channel_index(ids[0], ChannelTypes.SEGMENT)
    with pytest.raises(ValueError, match="Unknown channel type"):
        slide.get_channel_index(ids[0], "COLOUR")
    offset = slide.get_focal_plane_offset(0)
    assert slide.get_focal_plane_index(offset) == 0
    with pytest.raises(ValueError, match="out of range"):
        slide.get_focal_plane_offset(1)
    with pytest.raises(ValueError, match="No focal plane"):
        slide.get_focal_plane_index(offset + 5.0)


async def test_find_optical_paths_by_stain(client: Any) -> None:
    a = await _slide(client, "SLIDE-A")
    b = await _slide(client, "SLIDE-B")
    hematoxylin = codes.SCT.HematoxylinStain
    made_up = hd.sr.CodedConcept(*STAIN_B[0][:2], "other meaning")
    assert a.find_optical_paths(specimen_stain=hematoxylin) == (0,)
    assert b.find_optical_paths(specimen_stain=hematoxylin) == ()
    assert b.find_optical_paths(specimen_stain=made_up) == (0,)
    assert b.find_optical_paths(specimen_stain=made_up, identifier="nope") == ()


async def test_find_slides_filters(client: Any) -> None:
    everything = await dicomslide.find_slides(client)
    assert sorted(s.container_id for s in everything) == ALL_SLIDES
    made_up = Code(STAIN_B[0][0], STAIN_B[0][1], "any meaning")
    stained = await dicomslide.find_slides(client, specimen_stains=[made_up])
    assert [s.container_id for s in stained] == ["SLIDE-B"]
    either = await dicomslide.find_slides(
        client, specimen_stains=[made_up, codes.SCT.HematoxylinStain]
    )
    assert len(either) == 4
    both = await dicomslide.find_slides(client, specimen_stains=[made_up], container_id="SLIDE-A")
    assert both == []
    c = everything[[s.container_id for s in everything].index("SLIDE-C")]
    second = c.get_channel_identifier(1)
    by_path = await dicomslide.find_slides(client, optical_path_ids=[second])
    assert [s.container_id for s in by_path] == ["SLIDE-C"]
    assert await dicomslide.find_slides(client, optical_path_ids=["nope"]) == []
    assert await dicomslide.find_slides(client, container_id="nope") == []
    assert await dicomslide.find_slides(client, patient_id="nobody") == []
    assert len(await dicomslide.find_slides(client, patient_id="PAT-1", study_id="STUDY-1")) == 4
    study = everything[0].image_metadata[0].StudyInstanceUID
    in_study = await dicomslide.find_slides(client, study_instance_uid=study)
    assert {s.container_id for s in in_study} == {everything[0].container_id}
    with pytest.raises(ValueError, match="specimen_stain must be"):
        await dicomslide.find_slides(client, specimen_stains=["hematoxylin"])


class CountingSource:
    """Delegates to a source and counts metadata requests."""

    def __init__(self, inner: Any, fail_instance_search: bool = False) -> None:
        self._inner = inner
        self._fail = fail_instance_search
        self.series_metadata_calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def iter_frames(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.iter_frames(*args, **kwargs)

    async def search_for_instances(self, *args: Any, **kwargs: Any) -> Any:
        if self._fail:
            raise dicomslide.errors.UnsupportedError("no instance search here")
        return await self._inner.search_for_instances(*args, **kwargs)

    async def retrieve_series_metadata(self, study: str, series: str) -> Any:
        self.series_metadata_calls.append(series)
        return await self._inner.retrieve_series_metadata(study, series)


async def test_container_filter_is_pushed_down(client: Any, written: Written) -> None:
    counting = CountingSource(client)
    everything = await dicomslide.find_slides(counting)
    all_calls = len(counting.series_metadata_calls)
    counting.series_metadata_calls.clear()
    (slide,) = await dicomslide.find_slides(counting, container_id="SLIDE-A")
    a_series = {ds.SeriesInstanceUID for ds in slide.image_metadata}
    # Only SLIDE-A's series (volume, three segmentations, parametric map) are fetched.
    assert set(counting.series_metadata_calls) == a_series
    assert len(counting.series_metadata_calls) == len(a_series) < all_calls
    counting.series_metadata_calls.clear()
    (b,) = await dicomslide.find_slides(counting, container_id="SLIDE-B")
    assert len(counting.series_metadata_calls) == 1
    assert b.num_channels == 1
    # Without derived images, one series for one slide among the four.
    counting.series_metadata_calls.clear()
    await dicomslide.find_slides(counting, container_id="SLIDE-A", include_derived=False)
    assert len(counting.series_metadata_calls) == 1
    # A source without instance search falls back to reading every series.
    failing = CountingSource(client, fail_instance_search=True)
    (fallback,) = await dicomslide.find_slides(failing, container_id="SLIDE-A")
    assert len(failing.series_metadata_calls) == all_calls
    assert fallback.num_channels == slide.num_channels == 8
    assert len(everything) == 4


async def test_fail_on_error_skips_broken_series(client: Any) -> None:
    class Broken(CountingSource):
        async def retrieve_series_metadata(self, study: str, series: str) -> Any:
            result = await super().retrieve_series_metadata(study, series)
            if any(ds.get("ContainerIdentifier") == "SLIDE-B" for ds in result):
                raise dicomslide.errors.SourceError("broken series")
            return result

    broken = Broken(client)
    with pytest.raises(dicomslide.errors.SourceError):
        await dicomslide.find_slides(broken, include_derived=False)
    found = await dicomslide.find_slides(broken, include_derived=False, fail_on_error=False)
    assert sorted(s.container_id for s in found) == ["SLIDE-A", "SLIDE-C", "SLIDE-D"]


# --- annotations ---------------------------------------------------------------------------


def _scoord(
    slide: dicomslide.Slide, graphic_type: str, points: np.ndarray, frame: str | None = None
) -> hd.sr.Scoord3DContentItem:
    return hd.sr.Scoord3DContentItem(
        name=codes.DCM.ImageRegion,
        graphic_type=graphic_type,
        graphic_data=np.asarray(points, dtype=np.float64),
        frame_of_reference_uid=frame or slide.frame_of_reference_uid,
    )


def _centres(slide: dicomslide.Slide, level: int, pixels: list[tuple[int, int]]) -> np.ndarray:
    xyz = slide.map_pixel_indices_to_slide_coordinates(np.array(pixels, dtype=float), level)
    xyz[:, 2] = 0.0
    return xyz


async def _expected_box(
    slide: dicomslide.Slide, level: int, rows: tuple[int, int], cols: tuple[int, int]
) -> np.ndarray:
    """Pixels [rows[0], rows[1]] x [cols[0], cols[1]] (inclusive), turned to slide axes."""
    factor = slide.pyramid[level].downsampling_factors
    offset = (int(rows[0] * factor[0]), int(cols[0] * factor[1]))
    size = (rows[1] - rows[0] + 1, cols[1] - cols[0] + 1)
    region = await slide.get_image_region(offset, level, size)
    # Default orientation: columns run along -Y, rows along -X. Slide-axis arrays have rows
    # along +Y and columns along +X.
    return np.asarray(region[::-1, ::-1].transpose(1, 0, 2))


@pytest.mark.parametrize("level", [0, 1])
async def test_annotation_regions_match_pixels(client: Any, level: int) -> None:
    slide = await _slide(client)
    corners = [(20, 30), (90, 170)]
    pts = _centres(slide, level, [(20, 30), (90, 170), (50, 100)])
    # The box runs from the low corner (pixel (90, 170): rows run along -X, columns along -Y)
    # for as many pixel spacings as it is long: rows 21..90, columns 31..170, as
    # get_slide_region of the same box (and dicomslide 0.7) gives.
    expected = await _expected_box(slide, level, (21, 90), (31, 170))
    lo, hi = pts[:, :2].min(axis=0), pts[:, :2].max(axis=0)
    direct = await slide.get_slide_region(tuple(lo), level, tuple(hi - lo))
    np.testing.assert_array_equal(direct, expected)
    for graphic_type, points in (
        ("MULTIPOINT", pts),
        ("POLYLINE", pts),
        ("POLYGON", np.vstack([pts, pts[:1]])),
    ):
        region = await slide.get_slide_region_for_annotation(
            _scoord(slide, graphic_type, points), level
        )
        np.testing.assert_array_equal(region, expected)
    del corners
    # A point (zero extent) gives one pixel: the pixel the point lies in.
    point = _centres(slide, level, [(33, 44)])
    region = await slide.get_slide_region_for_annotation(_scoord(slide, "POINT", point), level)
    expected_point = await _expected_box(slide, level, (33, 33), (44, 44))
    assert region.shape[:2] == (1, 1)
    np.testing.assert_array_equal(region, expected_point)


async def test_annotation_ellipse_and_padding(client: Any) -> None:
    slide = await _slide(client)
    spacing = slide.pixel_spacings[0][0]
    centre = _centres(slide, 0, [(100, 200)])[0]
    # Axis-aligned ellipse: 20 pixels along X, 10 along Y (half axes).
    along_x = np.array([20 * spacing, 0.0, 0.0])
    along_y = np.array([0.0, 10 * spacing, 0.0])
    major = [centre - along_x, centre + along_x]
    minor = [centre - along_y, centre + along_y]
    ellipse = _scoord(slide, "ELLIPSE", np.array([*major, *minor]))
    region = await slide.get_slide_region_for_annotation(ellipse, 0)
    assert region.shape[:2] == (20, 40)
    # Rows along -X, columns along -Y in pixel space: X is the row axis.
    expected = await _expected_box(slide, 0, (81, 120), (191, 210))
    np.testing.assert_array_equal(region, expected)
    # A rotated ellipse's box holds the ellipse, not just its axis end points.
    d = np.array([1.0, 1.0, 0.0]) / np.sqrt(2)
    e = np.array([-1.0, 1.0, 0.0]) / np.sqrt(2)
    rotated = [centre - 20 * spacing * d, centre + 20 * spacing * d]
    rotated += [centre - 10 * spacing * e, centre + 10 * spacing * e]
    region = await slide.get_slide_region_for_annotation(
        _scoord(slide, "ELLIPSE", np.array(rotated)), 0
    )
    half = np.sqrt(20**2 / 2 + 10**2 / 2)
    assert region.shape[:2] == (round(2 * half),) * 2
    # Padding in millimetres: scalar, (x, y), (left, top, right, bottom).
    point = _scoord(slide, "POINT", _centres(slide, 0, [(100, 200)]))
    cases: dict[Any, tuple[tuple[int, int], tuple[int, int]]] = {
        3 * spacing: ((98, 103), (198, 203)),
        (2 * spacing, 5 * spacing): ((99, 102), (196, 205)),
        # left (-X) 1, top (+Y) 2, right (+X) 3, bottom (-Y) 4 pixels. +X is -row, +Y -column;
        # the box starts at its low corner (row 101, column 204).
        (1 * spacing, 2 * spacing, 3 * spacing, 4 * spacing): ((98, 101), (199, 204)),
    }
    for padding, (rows, cols) in cases.items():
        region = await slide.get_slide_region_for_annotation(point, 0, padding=padding)
        np.testing.assert_array_equal(region, await _expected_box(slide, 0, rows, cols))
    bad: Any
    for bad in ((1.0, 2.0, 3.0), "wide", float("nan")):
        with pytest.raises(ValueError, match="Padding must"):
            await slide.get_slide_region_for_annotation(point, 0, padding=bad)
    with pytest.raises(ValueError, match="shrinks"):
        await slide.get_slide_region_for_annotation(point, 0, padding=-1.0)


async def test_annotation_frame_of_reference_and_channel(client: Any, written: Written) -> None:
    slide = await _slide(client)
    pts = _centres(slide, 0, [(10, 20), (60, 90)])
    other = _scoord(slide, "MULTIPOINT", pts, frame=hd.UID())
    with pytest.raises(RegionError, match="frame of reference"):
        await slide.get_slide_region_for_annotation(other, 0)
    # Segment channel: the annotation region equals the mask pixels.
    channel = _seg_channels(slide, written.seg_series["binary"])[0]
    region = await slide.get_slide_region_for_annotation(
        _scoord(slide, "MULTIPOINT", pts), 0, channel_index=channel
    )
    expected = written.binary[11:61, 21:91, 0][::-1, ::-1].T
    np.testing.assert_array_equal(region[..., 0], expected)


async def test_annotation_selects_focal_plane_by_z(tmp_path: Path) -> None:
    write_slide(tmp_path, _spec("SLIDE-Z", 7, focal_planes=3, focal_plane_spacing_mm=0.002))
    async with dicomslide.DICOMfileClient(tmp_path) as c:
        (slide,) = await dicomslide.find_slides(c)
        assert slide.num_focal_planes == 3
        offsets = [slide.get_focal_plane_offset(i) for i in range(3)]
        assert offsets[1] - offsets[0] == pytest.approx(2.0)
        for plane in range(3):
            pts = _centres(slide, 0, [(10, 20), (40, 50)])
            pts[:, 2] = offsets[plane] / 1000.0 + 0.0004  # mm; nearest plane is `plane`
            ann = _scoord(slide, "POLYLINE", pts)
            region = await slide.get_slide_region_for_annotation(ann, 0)
            direct = await slide.get_image_region((11, 21), 0, (30, 30), focal_plane_index=plane)
            np.testing.assert_array_equal(region, direct[::-1, ::-1].transpose(1, 0, 2))
        planes = [
            await slide.get_image_region((10, 20), 0, (31, 31), focal_plane_index=p)
            for p in range(3)
        ]
        assert not np.array_equal(planes[0], planes[1])


def test_written_files_are_valid(written: Written) -> None:
    seg = pydicom.dcmread(written.root / "a" / "seg_binary.dcm")
    assert seg.BitsAllocated == 1
    assert seg.DimensionOrganizationType == "TILED_FULL"
    frac = pydicom.dcmread(written.root / "a" / "seg_fractional.dcm")
    assert frac.SegmentationType == "FRACTIONAL"
    assert frac.DimensionOrganizationType == "TILED_SPARSE"
    assert int(frac.NumberOfFrames) == 13  # the empty frames were left out


async def test_binary_frames_not_on_byte_boundaries(client: Any, written: Written) -> None:
    slide = await _slide(client, "SLIDE-D")
    channels = slide.find_segments()
    assert len(channels) == 2
    for k, channel in enumerate(channels):
        np.testing.assert_array_equal(await _read(slide, channel), written.odd_bits[..., k])

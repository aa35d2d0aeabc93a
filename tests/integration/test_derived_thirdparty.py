"""Segmentations, parametric maps and annotations on third-party (OrthancWSIDicomizer) slides.

The slides are converted by ``OrthancWSIDicomizer`` (see :mod:`tests.support.thirdparty`) and
left exactly as the tool wrote them.  The derived images are made with highdicom from those
files:

* Slides with a frame of reference: FrameOfReferenceUID, PyramidUID and the patient/study
  attributes highdicom reads are passed through the tool's own ``--dataset``
  (:func:`derivable_dataset`); highdicom derives from the files as read.  Three variants:
  JPEG one instance per level, JPEG with the concatenation attributes on every level, and
  uncompressed levels split into interleaved concatenation parts.
* A slide without FrameOfReferenceUID (bare output plus a Container Identifier): highdicom
  derives from an in-memory copy patched by :func:`patch_for_highdicom`; the segmentation has
  a frame of reference the slide lacks and is attached through its Referenced Series Sequence.

Each slide gets a BINARY segmentation pyramid (two segments, one instance per level, from
``hd.seg.create_segmentation_pyramid``), a FRACTIONAL TILED_FULL segmentation at level 0 and a
16-bit Parametric Map at level 1.  Read through ``find_slides(..., include_derived=True)`` over
local files and over Orthanc's DICOMweb: masks and values equal what was written, and annotation
regions equal the pixel regions read directly.  Slide coordinates of annotations come from
highdicom's ``PixelToReferenceTransformer``, not from dicomslide.

The slides use square pixels (``imaged_size_mm``): with the tool's default 15 x 15 mm a
2000x1500 picture has 0.0100 x 0.0075 mm pixels, and slide regions are sampled at the mean
spacing, so an annotation box is then a resampled, not an identical, copy of the pixel box
(:func:`test_non_square_pixels_are_resampled`).
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

import dicomslide_sync
from dicomslide.enums import ChannelTypes
from dicomslide.errors import RegionError
from tests.support.orthanc import OrthancServer, private_orthanc
from tests.support.segments import parametric_map, segment_descriptions, segmentation
from tests.support.system import require as _require
from tests.support.thirdparty import (
    DEFAULT_SOURCE_SIZE,
    HIGHDICOM_PATCH_KEYWORDS,
    Compression,
    derivable_dataset,
    find_dicomizer,
    make_dicomizer_slide,
    patch_for_highdicom,
    stable_uid,
)

pytestmark = pytest.mark.integration

#: ``--imaged-width/--imaged-height`` giving the default 2000x1500 picture square 0.0075 mm
#: pixels (the tool's width runs along slide X, i.e. down the picture's rows).
SQUARE_MM = (0.0075 * DEFAULT_SOURCE_SIZE[1], 0.0075 * DEFAULT_SOURCE_SIZE[0])
#: (compression, --max-size): single instances, concatenation attributes on single-part
#: levels, and levels really split into interleaved concatenation parts.
CASES: dict[str, tuple[Compression, int]] = {
    "jpeg-m0": ("jpeg", 0),
    "jpeg-m1": ("jpeg", 1),
    "none-m1": ("none", 1),
}
NO_FRAME = "nofor"
#: The dicomizer's ImageOrientationSlide: columns run along -Y, rows along -X.
ORIENTATION = [0.0, -1.0, 0.0, -1.0, 0.0, 0.0]
PM_LABEL = "density"


@dataclass
class Derived:
    """One slide and what was written on top of it."""

    container: str
    frame_of_reference_uid: str  # of the slide files ("" for NO_FRAME)
    annotation_frame_uid: str  # for Scoord3D items (the SEG's for NO_FRAME)
    sources: list[pydicom.Dataset]  # first instance of each level, largest first
    binary: list[np.ndarray] = field(default_factory=list)  # per level (rows, cols, 2)
    fractional: np.ndarray | None = None  # stored values at level 0
    pm_values: np.ndarray | None = None  # stored values at level 1
    seg_series: dict[str, str] = field(default_factory=dict)


def _equipment() -> dict[str, Any]:
    return {
        "manufacturer": "dicomslide-tests",
        "manufacturer_model_name": "highdicom",
        "software_versions": hd.__version__,
        "device_serial_number": "1",
    }


def _masks(rows: int, cols: int) -> np.ndarray:
    """Two overlapping segments with edges inside tiles and lines crossing tile borders."""
    out = np.zeros((rows, cols, 2), dtype=np.uint8)
    out[100:901, 300:1517, 0] = 1
    out[517, :, 0] = 1
    yy, xx = np.mgrid[0:rows, 0:cols]
    out[(yy - 800) ** 2 + (xx - 1200) ** 2 < 350**2, 1] = 1
    out[:, 255:258, 1] = 1
    return out


def _level_sources(paths: list[Path]) -> list[pydicom.Dataset]:
    """The first instance (concatenation part) of each level, largest level first."""
    by_size: dict[tuple[int, int], pydicom.Dataset] = {}
    for path in paths:
        ds = pydicom.dcmread(path)
        key = (int(ds.TotalPixelMatrixRows), int(ds.TotalPixelMatrixColumns))
        if key not in by_size or int(ds.get("InConcatenationNumber", 1)) == 1:
            by_size[key] = ds
    return [by_size[k] for k in sorted(by_size, reverse=True)]


def _write_derived(folder: Path, name: str, sources: list[pydicom.Dataset]) -> Derived:
    level0, level1 = sources[0], sources[1]
    rows, cols = int(level0.TotalPixelMatrixRows), int(level0.TotalPixelMatrixColumns)
    frame = str(level0.get("FrameOfReferenceUID", ""))
    out = Derived(
        container=str(level0.get("ContainerIdentifier", "")),
        frame_of_reference_uid=frame,
        annotation_frame_uid=frame,
        sources=sources,
    )
    masks = _masks(rows, cols)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # highdicom warns about attributes it fills in
        # BINARY pyramid: one instance per slide level, two segments.
        uid = stable_uid("seg-binary", name)
        out.seg_series["binary"] = uid
        pyramid = hd.seg.create_segmentation_pyramid(
            sources,
            [masks[None]],
            "BINARY",
            segment_descriptions(range(1, 3), "bin"),
            uid,
            10,
            **_equipment(),
        )
        assert len(pyramid) == len(sources)
        for k, seg in enumerate(pyramid):
            assert (seg.TotalPixelMatrixRows, seg.TotalPixelMatrixColumns) == (
                sources[k].TotalPixelMatrixRows,
                sources[k].TotalPixelMatrixColumns,
            )
            seg.save_as(folder / f"seg_binary_{k}.dcm")
            # highdicom's own read-back of the level it downsampled (level 0: the input).
            out.binary.append(np.asarray(seg.get_total_pixel_matrix(combine_segments=False)))
        np.testing.assert_array_equal(out.binary[0], masks)
        # FRACTIONAL, TILED_FULL, level 0, one segment.
        probabilities = np.random.default_rng(7).random((rows, cols, 1)).astype(np.float32)
        probabilities[:256, :512] = 0.0
        uid = stable_uid("seg-fractional", name)
        out.seg_series["fractional"] = uid
        segmentation(
            level0,
            probabilities,
            uid,
            fractional=True,
            label="frac",
            series_number=11,
            sop_instance_uid=stable_uid("seg-fractional-instance", name),
            **_equipment(),
        ).save_as(folder / "seg_fractional.dcm")
        out.fractional = np.round(probabilities[..., 0] * 255).astype(np.uint8)
        # Parametric Map at level 1 only.
        pm_rows, pm_cols = int(level1.TotalPixelMatrixRows), int(level1.TotalPixelMatrixColumns)
        values = np.arange(pm_rows * pm_cols).reshape(pm_rows, pm_cols) * 7 % 4001
        out.pm_values = values.astype(np.uint16)
        mapping = hd.pm.RealWorldValueMapping(
            lut_label=PM_LABEL,
            lut_explanation="made up",
            unit=codes.UCUM.NoUnits,
            value_range=(0, 4000),
            slope=0.5,
            intercept=-1,
        )
        parametric_map(
            level1,
            out.pm_values,
            mapping,
            (2000, 4000),
            20,
            series_instance_uid=stable_uid("pm", name),
            sop_instance_uid=stable_uid("pm-instance", name),
            **_equipment(),
        ).save_as(folder / "pm.dcm")
    return out


def _write_without_frame(folder: Path, sources: list[pydicom.Dataset]) -> Derived:
    """A BINARY SEG on a slide without FrameOfReferenceUID, from an in-memory patched copy."""
    level0 = sources[0]
    assert "FrameOfReferenceUID" not in level0
    frame = stable_uid("frame-of-reference", NO_FRAME, "highdicom-only")
    patched = patch_for_highdicom(level0, frame_of_reference_uid=frame)
    rows, cols = int(level0.TotalPixelMatrixRows), int(level0.TotalPixelMatrixColumns)
    masks = _masks(rows, cols)
    uid = stable_uid("seg-binary", NO_FRAME)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = segmentation(
            patched,
            masks,
            uid,
            organization="TILED_SPARSE",
            label="nofor",
            sop_instance_uid=stable_uid("seg-binary-instance", NO_FRAME),
            **_equipment(),
        )
    assert seg.FrameOfReferenceUID == frame
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == level0.SeriesInstanceUID
    seg.save_as(folder / "seg_binary.dcm")
    return Derived(
        container=str(level0.ContainerIdentifier),
        frame_of_reference_uid="",
        annotation_frame_uid=frame,
        sources=sources,
        binary=[masks],
        seg_series={"binary": uid},
    )


@dataclass
class Written:
    root: Path
    slides: dict[str, Derived]


@pytest.fixture(scope="module")
def cache_root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require(find_dicomizer(), "OrthancWSIDicomizer (Debian package orthanc-wsi)")
    cache = getattr(request.config, "cache", None)
    return Path(cache.mkdir("dicomizer")) if cache else tmp_path_factory.mktemp("dicomizer")


@pytest.fixture(scope="module")
def written(cache_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Written:
    root = tmp_path_factory.mktemp("derived-thirdparty")
    slides: dict[str, Derived] = {}
    for name, (compression, max_size_mb) in CASES.items():
        files = make_dicomizer_slide(
            cache_root,
            compression=compression,
            max_size_mb=max_size_mb,
            dataset=derivable_dataset(name),
            imaged_size_mm=SQUARE_MM,
        )
        folder = root / name
        folder.mkdir()
        for path in files:  # the slide files as the tool wrote them
            shutil.copyfile(path, folder / path.name)
        slides[name] = _write_derived(folder, name, _level_sources(files))
    # Bare output plus a Container Identifier (so that find_slides(container_id=...) works).
    files = make_dicomizer_slide(
        cache_root,
        compression="jpeg",
        dataset={"ContainerIdentifier": f"DICOMIZER-{NO_FRAME}"},
        imaged_size_mm=SQUARE_MM,
    )
    folder = root / NO_FRAME
    folder.mkdir()
    for path in files:
        shutil.copyfile(path, folder / path.name)
    slides[NO_FRAME] = _write_without_frame(folder, _level_sources(files))
    return Written(root, slides)


@pytest.fixture(scope="module")
def orthanc(written: Written, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    with private_orthanc([written.root], tmp_path_factory.mktemp("orthanc-derived-3p")) as server:
        yield server


@pytest.fixture(params=["local", "orthanc"])
def client(
    request: pytest.FixtureRequest, written: Written, tmp_path: Path
) -> Iterator[dicomslide_sync.DICOMfileClient | dicomslide_sync.DICOMwebClient]:
    if request.param == "local":
        with dicomslide_sync.DICOMfileClient(written.root, index_dir=tmp_path / "idx") as c:
            yield c
    else:
        server: OrthancServer = request.getfixturevalue("orthanc")
        with dicomslide_sync.DICOMwebClient(server.dicomweb_url) as w:
            yield w


def _by_container(client: Any, derived: Derived) -> dicomslide_sync.Slide:
    slides = dicomslide_sync.find_slides(client, include_derived=True)
    matching = [s for s in slides if s.container_id == derived.container]
    assert len(matching) == 1, [s.container_id for s in slides]
    return matching[0]


def _segments_of(slide: dicomslide_sync.Slide, series: str) -> list[int]:
    return [
        i
        for i in slide.find_segments()
        if slide.get_volume_images(i)[0].metadata.SeriesInstanceUID == series
    ]


def _full(slide: dicomslide_sync.Slide, channel: int, level: int) -> np.ndarray:
    rows, cols = slide.total_pixel_matrix_dimensions[level]
    region = slide.get_image_region((0, 0), level, (rows, cols), channel_index=channel)
    assert region.shape == (rows, cols, 1)
    return np.asarray(region[..., 0])


def _slide_xyz(source: pydicom.Dataset, pixels: list[tuple[int, int]], frame: str) -> np.ndarray:
    """Slide coordinates (mm) of (row, column) pixel centres, computed by highdicom."""
    geometry = patch_for_highdicom(source, frame_of_reference_uid=frame)
    del geometry.PixelData  # only the geometry is needed
    transform = hd.spatial.PixelToReferenceTransformer.for_image(
        geometry, for_total_pixel_matrix=True
    )
    xyz = transform(np.array([(c, r) for r, c in pixels], dtype=np.int64))
    return np.asarray(xyz, dtype=np.float64)


def _scoord(graphic_type: str, xyz: np.ndarray, frame: str) -> hd.sr.Scoord3DContentItem:
    return hd.sr.Scoord3DContentItem(
        name=codes.DCM.ImageRegion,
        graphic_type=graphic_type,
        graphic_data=xyz,
        frame_of_reference_uid=frame,
    )


def _to_slide_axes(region: np.ndarray) -> np.ndarray:
    # ORIENTATION: rows run along -X and columns along -Y; slide-axis arrays have rows along
    # +Y and columns along +X.
    return np.asarray(region)[::-1, ::-1].transpose(1, 0, 2)


# --- tests ---------------------------------------------------------------------------------


def test_dicomizer_writes_what_highdicom_needs(written: Written) -> None:
    for name in CASES:
        derived = written.slides[name]
        expected = derivable_dataset(name)
        for ds in derived.sources:
            assert ds.FrameOfReferenceUID == expected["FrameOfReferenceUID"]
            assert ds.PyramidUID == expected["PyramidUID"]
            assert ds.ContainerIdentifier == expected["ContainerIdentifier"]
            assert [float(v) for v in ds.ImageOrientationSlide] == ORIENTATION
        level0 = derived.sources[0].SharedFunctionalGroupsSequence[0]
        spacing = [float(v) for v in level0.PixelMeasuresSequence[0].PixelSpacing]
        assert spacing == pytest.approx([0.0075, 0.0075])
    split = [
        p
        for p in (written.root / "none-m1").glob("wsi-*.dcm")
        if int(pydicom.dcmread(p, stop_before_pixels=True).TotalPixelMatrixColumns) == 2000
    ]
    assert len(split) > 1  # level 0 really is a multi-part concatenation
    # The slide without a frame of reference: as the tool writes it, highdicom cannot use it.
    bare = written.slides[NO_FRAME].sources[0]
    for keyword in (*HIGHDICOM_PATCH_KEYWORDS, "FrameOfReferenceUID"):
        assert keyword not in bare, keyword
    masks = np.zeros((1, int(bare.TotalPixelMatrixRows), int(bare.TotalPixelMatrixColumns), 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(AttributeError, match="PatientName"):
            hd.seg.Segmentation(
                [bare],
                masks.astype(np.uint8),
                "BINARY",
                segment_descriptions(range(1, 2), "x"),
                hd.UID(),
                1,
                hd.UID(),
                1,
                tile_pixel_array=True,
                **_equipment(),
            )
    # patch_for_highdicom changed a copy only.
    assert "PatientName" not in bare
    assert "FrameOfReferenceUID" not in bare


@pytest.mark.parametrize("name", list(CASES))
def test_segments_and_parameters_read_back(client: Any, written: Written, name: str) -> None:
    derived = written.slides[name]
    slide = _by_container(client, derived)
    assert slide.frame_of_reference_uid == derived.frame_of_reference_uid
    assert slide.num_levels == len(derived.sources)
    types = [slide.get_channel_type(i) for i in range(slide.num_channels)]
    assert types.count(ChannelTypes.OPTICAL_PATH) == 1
    assert types.count(ChannelTypes.SEGMENT) == 3
    assert types.count(ChannelTypes.PARAMETER) == 1
    binary = _segments_of(slide, derived.seg_series["binary"])
    assert len(binary) == 2
    for level, expected in enumerate(derived.binary):
        for k, channel in enumerate(binary):
            np.testing.assert_array_equal(
                _full(slide, channel, level), expected[..., k], err_msg=f"level {level}"
            )
    (fractional,) = _segments_of(slide, derived.seg_series["fractional"])
    np.testing.assert_array_equal(_full(slide, fractional, 0), derived.fractional)
    with pytest.raises(RegionError):
        slide.get_image_region((0, 0), 1, (4, 4), channel_index=fractional)
    pm = slide.get_channel_index(PM_LABEL, ChannelTypes.PARAMETER)
    np.testing.assert_array_equal(_full(slide, pm, 1), derived.pm_values)
    with pytest.raises(RegionError):
        slide.get_image_region((0, 0), 0, (4, 4), channel_index=pm)
    # The container filter (instance-level searches) finds the same slide and derived images.
    (alone,) = dicomslide_sync.find_slides(client, container_id=derived.container)
    assert alone.num_channels == slide.num_channels


@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("name", ["jpeg-m0", "none-m1", NO_FRAME])
def test_annotation_regions_match_pixels(
    client: Any, written: Written, name: str, level: int
) -> None:
    derived = written.slides[name]
    slide = _by_container(client, derived)
    source = derived.sources[level]
    frame = derived.annotation_frame_uid
    (r0, c0), (r1, c1) = (37, 150), (181, 290)  # level pixels, inclusive box
    corners = [(r0, c0), (r0, c1), (r1, c1), (r1, c0), (r0, c0)]
    polygon = _scoord("POLYGON", _slide_xyz(source, corners, frame), frame)
    factor = slide.pyramid[level].downsampling_factors
    offset = (round(r0 * factor[0]), round(c0 * factor[1]))  # level-0 pixels
    direct = slide.get_image_region(offset, level, (r1 - r0 + 1, c1 - c0 + 1))
    # The box is read as get_slide_region reads it: from its low (x, y) corner for as many
    # pixel spacings as it is long, so the inclusive pixel box loses its high-X/high-Y edge.
    np.testing.assert_array_equal(
        slide.get_slide_region_for_annotation(polygon, level), _to_slide_axes(direct)[:-1, :-1]
    )
    point = _scoord("POINT", _slide_xyz(source, [(r1, c0)], frame), frame)
    region = slide.get_slide_region_for_annotation(point, level)
    assert region.shape[:2] == (1, 1)
    np.testing.assert_array_equal(region[0, 0], np.asarray(direct)[-1, 0])
    if level >= len(derived.binary):
        return  # the segmentation has no image at this level
    # On a segment channel the region equals the mask written.
    channel = _segments_of(slide, derived.seg_series["binary"])[1]
    mask = slide.get_slide_region_for_annotation(polygon, level, channel_index=channel)
    expected = derived.binary[level][r0 : r1 + 1, c0 : c1 + 1, 1:2]
    np.testing.assert_array_equal(mask, _to_slide_axes(expected)[:-1, :-1])


def test_slide_without_frame_of_reference_gets_referencing_derived(
    client: Any, written: Written
) -> None:
    derived = written.slides[NO_FRAME]
    slide = _by_container(client, derived)
    assert slide.frame_of_reference_uid == ""
    # Only its own segmentation: the others reference other series.
    types = [slide.get_channel_type(i) for i in range(slide.num_channels)]
    assert types == [ChannelTypes.OPTICAL_PATH, ChannelTypes.SEGMENT, ChannelTypes.SEGMENT]
    channels = _segments_of(slide, derived.seg_series["binary"])
    for k, channel in enumerate(channels):
        np.testing.assert_array_equal(_full(slide, channel, 0), derived.binary[0][..., k])
    # Also when found by container (the derived series cannot be found by frame of reference).
    (alone,) = dicomslide_sync.find_slides(client, container_id=derived.container)
    assert alone.num_channels == 3
    (plain,) = dicomslide_sync.find_slides(
        client, container_id=derived.container, include_derived=False
    )
    assert plain.num_channels == 1


def test_non_square_pixels_are_resampled(cache_root: Path, tmp_path: Path) -> None:
    # The tool's default 15 x 15 mm for a 2000x1500 picture: 0.0100 x 0.0075 mm pixels.
    # Slide regions are sampled at the mean spacing (0.00875 mm), so the annotation box is a
    # nearest-neighbour resampling of the pixel box, not the pixel box itself.  This pins the
    # current behaviour (TiledImage.get_slide_region), it is not a requirement of the issue.
    files = make_dicomizer_slide(cache_root, compression="jpeg")
    with dicomslide_sync.DICOMfileClient(files[0].parent, index_dir=tmp_path / "idx") as c:
        (slide,) = dicomslide_sync.find_slides(c)
        row_mm, col_mm = slide.pixel_spacings[0]
        assert (row_mm, col_mm) == pytest.approx((0.01, 0.0075))
        (r0, c0), (r1, c1) = (100, 200), (180, 330)
        frame = stable_uid("any-frame")
        xyz = _slide_xyz(pydicom.dcmread(files[0]), [(r0, c0), (r1, c1)], frame)
        region = slide.get_slide_region_for_annotation(_scoord("MULTIPOINT", xyz, frame), 0)
        direct = slide.get_image_region((r0, c0), 0, (r1 - r0 + 1, c1 - c0 + 1))
        mean = (row_mm + col_mm) / 2
        # Rows of the region run along +Y (image columns), its columns along +X (image rows).
        assert region.shape[:2] == (
            round((c1 - c0) * col_mm / mean),
            round((r1 - r0) * row_mm / mean),
        )
        np.testing.assert_array_equal(region[0, 0], _to_slide_axes(direct)[0, 0])

"""Label Map Segmentations (SOP class 1.2.840.10008.5.1.4.1.1.66.7), read from a local folder.

The label maps are written by highdicom (``SegmentationTypeValues.LABELMAP``) on top of a
synthetic slide made by the package's generator: MONOCHROME2 and PALETTE COLOR, TILED_FULL and
TILED_SPARSE (frames that are all background left out), 8 and 16 bits, uncompressed, JPEG-LS
and JPEG 2000 lossless, and one label map series with an instance at each of the slide's two
levels. What :class:`dicomslide.Slide` reads is compared with the arrays that were written
and with highdicom's own reading of each file (``highdicom.seg.segread`` and
``Segmentation.get_total_pixel_matrix``), the independent oracle.

highdicom adds a segment numbered 0, labelled "Background", to every label map and marks it
with Pixel Padding Value 0; it is the background, not a segment (highdicom's
``segment_numbers`` leaves it out too).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

import dicomslide
from dicomslide.enums import ChannelTypes
from dicomslide.errors import RegionError, UsageError
from dicomslide.synthetic import SlideSpec, write_slide
from tests.support.segments import segment_descriptions
from tests.support.slides import written_folder

EXPLICIT = "1.2.840.10008.1.2.1"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
SIZE = (300, 520)  # not a multiple of the 128-pixel tiles: edge tiles are partial
TILE = 128
CONTAINER = "LABELMAP-A"
CONTAINER_NO_PADDING = "LABELMAP-B"


@dataclass
class LabelMapFile:
    """One label map instance that was written."""

    name: str
    path: Path
    series_uid: str
    numbers: tuple[int, ...]
    labels: np.ndarray
    prefix: str
    level: int = 0


@dataclass
class Written:
    """What the fixture wrote, for the tests to compare against."""

    root: Path
    files: dict[str, LabelMapFile] = field(default_factory=dict)
    no_padding: LabelMapFile | None = None
    others: dict[str, Path] = field(default_factory=dict)


def _source_images(paths: list[Path]) -> list[pydicom.Dataset]:
    images = [pydicom.dcmread(p) for p in paths]
    images = [ds for ds in images if "VOLUME" in ds.ImageType]
    return sorted(images, key=lambda ds: -int(ds.TotalPixelMatrixRows))


def _labels(shape: tuple[int, int], numbers: tuple[int, ...], seed: int) -> np.ndarray:
    """Rectangles and lines of each number; the top-left 2 x 2 tiles stay background."""
    rng = np.random.default_rng(seed)
    dtype = np.uint16 if max(numbers) > 255 else np.uint8
    out = np.zeros(shape, dtype=dtype)
    rows, cols = shape
    for number in numbers:
        r0, c0 = int(rng.integers(0, rows - 40)), int(rng.integers(0, cols - 40))
        r1 = min(rows, r0 + int(rng.integers(20, rows // 2)))
        c1 = min(cols, c0 + int(rng.integers(20, cols // 2)))
        out[r0:r1, c0:c1] = number
        # A line to the right edge, through partial edge tiles; a column to the bottom edge.
        out[int(rng.integers(2 * TILE, rows)), c0:] = number
        out[r0:, int(rng.integers(2 * TILE, cols))] = number
    # Background everywhere in the top-left tiles (so TILED_SPARSE leaves them out).
    out[: 2 * TILE, : 2 * TILE] = 0
    return out


def _write_label_map(
    source: pydicom.Dataset,
    labels: np.ndarray,
    numbers: tuple[int, ...],
    path: Path,
    *,
    series_uid: str,
    prefix: str,
    organization: str,
    palette: bool,
    transfer_syntax_uid: str = EXPLICIT,
    instance_number: int = 1,
) -> None:
    extra: dict[str, Any] = {}
    if palette:
        colors = ["black", "red", "green", "blue", "yellow", "magenta", "cyan"]
        extra["palette_color_lut_transformation"] = hd.PaletteColorLUTTransformation.from_colors(
            colors[: max(numbers) + 1], palette_color_lut_uid=hd.UID()
        )
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=labels[None],
        segmentation_type=hd.seg.SegmentationTypeValues.LABELMAP,
        segment_descriptions=segment_descriptions(numbers, prefix),
        series_instance_uid=series_uid,
        series_number=30,
        sop_instance_uid=hd.UID(),
        instance_number=instance_number,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
        tile_pixel_array=True,
        dimension_organization_type=organization,
        omit_empty_frames=organization == "TILED_SPARSE",
        transfer_syntax_uid=transfer_syntax_uid,
        **extra,
    )
    seg.save_as(path)


def write_label_maps(root: Path) -> Written:
    """Write slide A with five label map instances and slide B with one without padding value.

    Parameters
    ----------
    root: pathlib.Path
        Folder; slides go to its sub-folders ``a`` and ``b``

    Returns
    -------
    Written
        What was written
    """
    out = Written(root)
    spec = SlideSpec(
        container_id=CONTAINER,
        seed=21,
        size=SIZE,
        tile_size=(TILE, TILE),
        levels=2,
        transfer_syntax_uid=EXPLICIT,
        label=False,
        overview=False,
    )
    level0, level1 = _source_images(write_slide(root / "a", spec))
    plans: list[tuple[str, tuple[int, ...], str, bool, str]] = [
        ("full_mono", (1, 2, 3), "TILED_FULL", False, EXPLICIT),
        ("sparse_palette", (1, 2, 3), "TILED_SPARSE", True, EXPLICIT),
        # Segment numbers need not start at 1 or be consecutive; 300 needs 16 bits.
        ("sparse_16bit_j2k", (2, 7, 300), "TILED_SPARSE", False, JPEG_2000_LOSSLESS),
    ]
    for seed, (name, numbers, organization, palette, syntax) in enumerate(plans):
        labels = _labels(SIZE, numbers, seed)
        uid = hd.UID()
        path = root / "a" / f"{name}.dcm"
        _write_label_map(
            level0,
            labels,
            numbers,
            path,
            series_uid=uid,
            prefix=f"{name}-",
            organization=organization,
            palette=palette,
            transfer_syntax_uid=syntax,
        )
        out.files[name] = LabelMapFile(name, path, uid, numbers, labels, f"{name}-")
    # One series with a PALETTE COLOR, JPEG-LS label map at each level of the slide.
    uid = hd.UID()
    numbers = (1, 2)
    base = _labels(SIZE, numbers, 9)
    small = base[::2, ::2].copy()
    assert small.shape == (int(level1.TotalPixelMatrixRows), int(level1.TotalPixelMatrixColumns))
    for level, (source, labels) in enumerate(((level0, base), (level1, small))):
        name = f"pyramid_{level}"
        path = root / "a" / f"{name}.dcm"
        _write_label_map(
            source,
            labels,
            numbers,
            path,
            series_uid=uid,
            prefix="pyramid-",
            organization="TILED_FULL",
            palette=True,
            transfer_syntax_uid=JPEG_LS_LOSSLESS,
            instance_number=level + 1,
        )
        out.files[name] = LabelMapFile(name, path, uid, numbers, labels, "pyramid-", level)
    # Slide B: a sparse label map whose Pixel Padding Value was removed, so that nothing marks
    # a background and its item numbered 0 is a segment like the others.
    spec_b = dataclasses.replace(spec, container_id=CONTAINER_NO_PADDING, seed=22, levels=1)
    (b_level0,) = _source_images(write_slide(root / "b", spec_b))
    labels = _labels(SIZE, (1, 2), 11)
    path = root / "b" / "no_padding.dcm"
    uid = hd.UID()
    _write_label_map(
        b_level0,
        labels,
        (1, 2),
        path,
        series_uid=uid,
        prefix="b-",
        organization="TILED_SPARSE",
        palette=False,
    )
    ds = pydicom.dcmread(path)
    del ds.PixelPaddingValue
    ds.save_as(path)
    out.no_padding = LabelMapFile("no_padding", path, uid, (0, 1, 2), labels, "b-")
    out.others = write_other_sop_classes(root / "others", level0, level1)
    return out


#: SOP classes of instances that refer to slide A but are not part of a Slide (see README).
BULK_ANNOTATIONS = "1.2.840.10008.5.1.4.1.1.91.1"
VL_MICROSCOPIC_IMAGE = "1.2.840.10008.5.1.4.1.1.77.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CONFOCAL_TILED_PYRAMIDAL = "1.2.840.10008.5.1.4.1.1.77.1.9"


def write_other_sop_classes(
    folder: Path, level0: pydicom.Dataset, level1: pydicom.Dataset
) -> dict[str, Path]:
    """Write instances of other SOP classes that belong to slide A, in its study.

    Parameters
    ----------
    folder: pathlib.Path
        Folder to write to
    level0: pydicom.Dataset
        Base level of slide A
    level1: pydicom.Dataset
        Second level of slide A

    Returns
    -------
    dict[str, pathlib.Path]
        SOP Class UID -> file
    """
    folder.mkdir(parents=True)
    out: dict[str, Path] = {}
    # Microscopy Bulk Simple Annotations, written by highdicom.
    points = [np.array([[1.0 + i, 2.0 + i]]) for i in range(3)]
    group = hd.ann.AnnotationGroup(
        number=1,
        uid=hd.UID(),
        label="nuclei",
        annotated_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        annotated_property_type=codes.SCT.Nucleus,
        graphic_type=hd.ann.GraphicTypeValues.POINT,
        graphic_data=points,
        algorithm_type=hd.ann.AnnotationGroupGenerationTypeValues.MANUAL,
    )
    ann = hd.ann.MicroscopyBulkSimpleAnnotations(
        source_images=[level0],
        annotation_coordinate_type="2D",
        annotation_groups=[group],
        series_instance_uid=hd.UID(),
        series_number=40,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
    )
    out[BULK_ANNOTATIONS] = folder / "annotations.dcm"
    ann.save_as(out[BULK_ANNOTATIONS])
    # A Secondary Capture photograph of the slide label, written by highdicom.
    sc = hd.sc.SCImage(
        pixel_array=np.full((40, 60, 3), 200, dtype=np.uint8),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="SLIDE",
        study_instance_uid=level0.StudyInstanceUID,
        series_instance_uid=hd.UID(),
        series_number=41,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="test",
        patient_id=level0.PatientID,
        container_identifier=CONTAINER,
        specimen_descriptions=[
            hd.SpecimenDescription.from_dataset(level0.SpecimenDescriptionSequence[0])
        ],
    )
    sc.ImageType = ["ORIGINAL", "PRIMARY", "LABEL"]
    out[SECONDARY_CAPTURE] = folder / "label_sc.dcm"
    sc.save_as(out[SECONDARY_CAPTURE])
    # A VL Microscopic Image (one untiled frame) and a tiled image of the Confocal Microscopy
    # Tiled Pyramidal SOP class, both made from slide A's second level: no package here writes
    # them, so these are that level's attributes under the other SOP class.
    for sop_class, name in (
        (VL_MICROSCOPIC_IMAGE, "vl_microscopic.dcm"),
        (CONFOCAL_TILED_PYRAMIDAL, "confocal.dcm"),
    ):
        ds = pydicom.dcmread(level1.filename)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = hd.UID()
        ds.SeriesInstanceUID = hd.UID()
        if sop_class == VL_MICROSCOPIC_IMAGE:
            frame = ds.pixel_array[0]
            for keyword in (
                "TotalPixelMatrixRows",
                "TotalPixelMatrixColumns",
                "NumberOfFrames",
                "DimensionOrganizationType",
                "SharedFunctionalGroupsSequence",
                "PerFrameFunctionalGroupsSequence",
            ):
                if keyword in ds:
                    delattr(ds, keyword)
            ds.PixelData = frame.tobytes()
        out[sop_class] = folder / name
        ds.save_as(out[sop_class])
    return out


def oracle_mask(item: LabelMapFile, number: int) -> np.ndarray:
    """Mask of a segment as highdicom reads it from the file.

    highdicom 0.28 returns an empty mask from ``get_total_pixel_matrix(segment_numbers=[n])``
    for segment numbers above 255 of a 16-bit label map (its combined label map holds them):
    for those the mask is taken from highdicom's label map instead.
    """
    seg = hd.seg.segread(item.path)
    if number > 255:
        return (oracle_labels(item) == number).astype(np.uint8)
    return np.asarray(seg.get_total_pixel_matrix(segment_numbers=[number])[..., 0])


def oracle_labels(item: LabelMapFile) -> np.ndarray:
    """The label map as highdicom reads it (stored values, no palette)."""
    seg = hd.seg.segread(item.path)
    return np.asarray(seg.get_total_pixel_matrix(combine_segments=True))


def segment_channels(slide: Any, item: LabelMapFile) -> dict[int, int]:
    """Segment number -> channel index of the segments of one label map series."""
    out = {}
    for i in slide.find_segments():
        images = slide.get_volume_images(i)
        if images[0].metadata.SeriesInstanceUID == item.series_uid:
            out[int(slide.get_channel_identifier(i))] = i
    return out


written = written_folder(write_label_maps, "labelmaps")


async def _slide(client: Any, container: str = CONTAINER) -> dicomslide.Slide:
    (slide,) = await dicomslide.find_slides(client, container_id=container)
    return slide


def test_written_files_are_label_maps(written: Written) -> None:
    kinds = set()
    for item in written.files.values():
        ds = pydicom.dcmread(item.path, stop_before_pixels=True)
        assert ds.SOPClassUID == dicomslide.utils.LABEL_MAP_SEGMENTATION_SOP_CLASS_UID
        assert ds.SegmentationType == "LABELMAP"
        assert int(ds.PixelPaddingValue) == 0
        assert [int(s.SegmentNumber) for s in ds.SegmentSequence] == [0, *item.numbers]
        assert dicomslide.is_label_map(ds)
        kinds.add((ds.PhotometricInterpretation, ds.DimensionOrganizationType))
        # highdicom reads back what was written: the oracle agrees with the arrays.
        np.testing.assert_array_equal(oracle_labels(item), item.labels)
    assert kinds == {
        (p, o) for p in ("MONOCHROME2", "PALETTE COLOR") for o in ("TILED_FULL", "TILED_SPARSE")
    }
    sparse = pydicom.dcmread(written.files["sparse_palette"].path, stop_before_pixels=True)
    assert int(sparse.NumberOfFrames) < 3 * 5  # background tiles were left out


async def test_segments_become_channels(client: Any, written: Written) -> None:
    slide = await _slide(client)
    # 1 optical path; 3 + 3 + 3 segments at level 0 and 2 in the series with two levels.
    assert slide.num_channels == 1 + 11
    assert len(slide.find_segments()) == 11
    for item in written.files.values():
        channels = segment_channels(slide, item)
        assert sorted(channels) == list(item.numbers)
        for number, channel in channels.items():
            assert slide.get_channel_type(channel) is ChannelTypes.SEGMENT
            assert slide.find_segments(label=f"{item.prefix}{number}") == (channel,)
            assert slide.find_segments(number=number, label=f"{item.prefix}{number}") == (channel,)
    # The background item is no segment; criteria combine as for other Segmentations.
    assert slide.find_segments(property_type=codes.DCM.Background) == ()
    assert slide.find_segments(label="Background") == ()
    odd = slide.find_segments(property_type=codes.SCT.Nucleus)
    expected = [n for key, f in written.files.items() if key != "pyramid_1" for n in f.numbers]
    assert sorted(int(slide.get_channel_identifier(i)) for i in odd) == sorted(
        n for n in expected if n % 2
    )
    (image,) = slide.get_volume_images(odd[0])[:1]
    assert image.is_label_map
    assert image.channel_type is ChannelTypes.SEGMENT
    assert not slide.get_volume_images(0)[0].is_label_map
    without = await _slide_without_derived(client)
    assert without.num_channels == 1


async def _slide_without_derived(client: Any) -> dicomslide.Slide:
    (slide,) = await dicomslide.find_slides(client, container_id=CONTAINER, include_derived=False)
    return slide


@pytest.mark.parametrize("name", ["full_mono", "sparse_palette", "sparse_16bit_j2k", "pyramid_0"])
async def test_masks_equal_highdicom(client: Any, written: Written, name: str) -> None:
    slide = await _slide(client)
    item = written.files[name]
    for number, channel in segment_channels(slide, item).items():
        mask = await slide.get_image_region((0, 0), 0, SIZE, channel_index=channel)
        assert mask.dtype == np.uint8
        assert mask.shape == (*SIZE, 1)
        expected = oracle_mask(item, number)
        assert expected.any()
        assert not expected.all()
        np.testing.assert_array_equal(mask[..., 0], expected)
        np.testing.assert_array_equal(mask[..., 0], item.labels == number)


@pytest.mark.parametrize("name", ["full_mono", "sparse_palette", "sparse_16bit_j2k", "pyramid_0"])
async def test_label_map_equals_highdicom(client: Any, written: Written, name: str) -> None:
    slide = await _slide(client)
    item = written.files[name]
    channel = next(iter(segment_channels(slide, item).values()))
    labels = await slide.get_label_map_region((0, 0), 0, SIZE, channel_index=channel)
    assert labels.dtype == (np.uint16 if max(item.numbers) > 255 else np.uint8)
    np.testing.assert_array_equal(labels[..., 0], oracle_labels(item))
    # The same through the image's matrix: NumPy-style slicing and whole (edge) tiles.
    image = slide.get_volume_images(channel)[0]
    matrix = image.get_label_map()
    assert matrix.dtype == labels.dtype
    np.testing.assert_array_equal(
        (await matrix[37:290, 101:519])[..., 0], item.labels[37:290, 101:519]
    )
    last = matrix.num_tiles - 1
    tile = (await matrix[last])[..., 0]
    (r0, c0), (h, w) = matrix.get_tile_bounding_box(last)
    assert (h, w) == (SIZE[0] - 2 * TILE, SIZE[1] - 4 * TILE)
    np.testing.assert_array_equal(tile[:h, :w], item.labels[r0 : r0 + h, c0 : c0 + w])
    assert not tile[h:].any()
    assert not tile[:, w:].any()
    assert image.get_label_map() is matrix


async def test_regions_across_edges_and_absent_frames(client: Any, written: Written) -> None:
    slide = await _slide(client)
    item = written.files["sparse_palette"]
    channels = segment_channels(slide, item)
    # Crosses the bottom and right edges of the image and the absent top-left tiles.
    offset, size = (200, 5), (180, 600)
    labels = (await slide.get_label_map_region(offset, 0, size, channels[1]))[..., 0]
    inside = item.labels[200:, 5:]
    np.testing.assert_array_equal(labels[: inside.shape[0], : inside.shape[1]], inside)
    assert not labels[inside.shape[0] :].any()
    assert not labels[:, inside.shape[1] :].any()
    for number, channel in channels.items():
        mask = (await slide.get_image_region(offset, 0, size, channel_index=channel))[..., 0]
        np.testing.assert_array_equal(mask, labels == number)
    top_left = await slide.get_image_region((0, 0), 0, (TILE, TILE), channel_index=channels[2])
    assert not top_left.any()


async def test_label_map_pyramid_level_1(client: Any, written: Written) -> None:
    slide = await _slide(client)
    base, small = written.files["pyramid_0"], written.files["pyramid_1"]
    channels = segment_channels(slide, base)
    assert segment_channels(slide, small) == channels  # one channel per segment, two levels
    rows, cols = slide.total_pixel_matrix_dimensions[1]
    for number, channel in channels.items():
        assert len(slide.get_volume_images(channel)) == 2
        mask = await slide.get_image_region((0, 0), 1, (rows, cols), channel_index=channel)
        np.testing.assert_array_equal(mask[..., 0], oracle_mask(small, number))
    labels = await slide.get_label_map_region((0, 0), 1, (rows, cols), channels[2])
    np.testing.assert_array_equal(labels[..., 0], small.labels)
    # A base-level offset maps to the level as for every channel.
    part = await slide.get_label_map_region((100, 200), 1, (20, 30), channels[1])
    np.testing.assert_array_equal(part[..., 0], small.labels[50:70, 100:130])


async def test_segments_of_one_label_map_share_its_frames(written: Written) -> None:
    item = written.files["full_mono"]
    frames = int(pydicom.dcmread(item.path, stop_before_pixels=True).NumberOfFrames)
    async with dicomslide.DICOMfileClient(written.root) as client:
        slide = await _slide(client)
        before = slide.cache_stats.frames_fetched
        for channel in segment_channels(slide, item).values():
            await slide.get_image_region((0, 0), 0, SIZE, channel_index=channel)
        await slide.get_label_map_region((0, 0), 0, SIZE, channel)
        # Three masks and the label map: each of the 15 frames is fetched once.
        assert slide.cache_stats.frames_fetched - before == frames == 15


async def test_label_map_errors(client: Any, written: Written) -> None:
    slide = await _slide(client)
    with pytest.raises(RegionError, match=r"Channel 0 \(OPTICAL_PATH .* not a segment of a label"):
        await slide.get_label_map_region((0, 0), 0, (4, 4), 0)
    level0 = slide.get_volume_images(0)[0]
    with pytest.raises(UsageError, match="is not a label-map Segmentation"):
        level0.get_label_map()
    channel = segment_channels(slide, written.files["full_mono"])[1]
    with pytest.raises(RegionError, match="has no image at level 1"):
        await slide.get_label_map_region((0, 0), 1, (4, 4), channel)
    with pytest.raises(RegionError, match="lies outside the base level"):
        await slide.get_label_map_region((SIZE[0], 0), 0, (4, 4), channel)


async def test_label_map_without_pixel_padding_value(client: Any, written: Written) -> None:
    item = written.no_padding
    assert item is not None
    slide = await _slide(client, CONTAINER_NO_PADDING)
    channels = segment_channels(slide, item)
    # Nothing marks a background: the item numbered 0 is a segment too.
    assert sorted(channels) == [0, 1, 2]
    ds = pydicom.dcmread(item.path, stop_before_pixels=True)
    present = np.zeros((3, 5), dtype=bool)
    for frame in ds.PerFrameFunctionalGroupsSequence:
        pos = frame.PlanePositionSlideSequence[0]
        present[
            (int(pos.RowPositionInTotalImagePixelMatrix) - 1) // TILE,
            (int(pos.ColumnPositionInTotalImagePixelMatrix) - 1) // TILE,
        ] = True
    assert not present.all()
    has_frame = np.kron(present, np.ones((TILE, TILE), dtype=bool))[: SIZE[0], : SIZE[1]]
    for number, channel in channels.items():
        mask = (await slide.get_image_region((0, 0), 0, SIZE, channel_index=channel))[..., 0]
        # Pixels without a frame belong to no segment, not even to the one numbered 0.
        np.testing.assert_array_equal(mask, (item.labels == number) & has_frame)


async def test_other_sop_classes_of_the_slide_are_left_aside(
    client: Any, written: Written
) -> None:
    # They share the slide's study (and all but the annotations its frame of reference or
    # container) yet are no level, channel, label or overview of it, and break nothing.
    assert sorted(written.others) == sorted(
        [BULK_ANNOTATIONS, SECONDARY_CAPTURE, VL_MICROSCOPIC_IMAGE, CONFOCAL_TILED_PYRAMIDAL]
    )
    slides = await dicomslide.find_slides(client)
    assert sorted(s.container_id for s in slides) == [CONTAINER, CONTAINER_NO_PADDING]
    slide = next(s for s in slides if s.container_id == CONTAINER)
    used = {str(ds.SOPClassUID) for ds in slide.image_metadata}
    assert used == {
        "1.2.840.10008.5.1.4.1.1.77.1.6",
        dicomslide.utils.LABEL_MAP_SEGMENTATION_SOP_CLASS_UID,
    }
    assert slide.num_levels == 2
    assert slide.num_channels == 1 + 11
    assert slide.label_images == ()
    assert slide.overview_images == ()


async def test_bulk_tiles_give_masks(client: Any, written: Written) -> None:
    from dicomslide.bulk import iter_tiles

    slide = await _slide(client)
    item = written.files["sparse_16bit_j2k"]
    channels = segment_channels(slide, item)
    mosaic = np.zeros((*SIZE, 1), dtype=np.uint8)
    count = 0
    async for tile in iter_tiles(slide, 0, channel_index=channels[300]):
        assert tile.pixels.dtype == np.uint8
        h = min(TILE, SIZE[0] - tile.row)
        w = min(TILE, SIZE[1] - tile.column)
        mosaic[tile.row : tile.row + h, tile.column : tile.column + w] = tile.pixels[:h, :w]
        count += 1
    assert count == 3 * 5
    np.testing.assert_array_equal(mosaic[..., 0], item.labels == 300)

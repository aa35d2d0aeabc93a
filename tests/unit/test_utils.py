"""Tests of dicomslide.utils with small hand-built datasets."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pytest
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from dicomslide import utils
from dicomslide.enums import ChannelTypes, ImageFlavors
from dicomslide.errors import InvalidDataError, RegionError

WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


UIDS = {"a": "1.2.3.1", "b": "1.2.3.2", "c": "1.2.3.3", "d": "1.2.3.4", "twin": "1.2.3.5"}


def make_item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def make_code_item(value: str, scheme: str, meaning: str) -> Dataset:
    return make_item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def make_image(
    *,
    sop_class_uid: str = WSI,
    image_type: list[str] | str | None = None,
    total: tuple[int, int] | None = (1000, 2000),
    spacing: float | tuple[float, float] | None = 0.00025,
    series_description: str | None = None,
    uid: str = "1.2.3",
) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = uid
    ds.Rows = 256
    ds.Columns = 256
    ds.BitsAllocated = 8
    ds.SamplesPerPixel = 3
    if image_type is not None:
        ds.ImageType = image_type
    if total is not None:
        ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns = total
    if spacing is not None:
        pair = (spacing, spacing) if isinstance(spacing, float) else spacing
        ds.SharedFunctionalGroupsSequence = [
            make_item(PixelMeasuresSequence=[make_item(PixelSpacing=list(pair))])
        ]
    if series_description is not None:
        ds.SeriesDescription = series_description
    return ds


def volume(spacing: float | tuple[float, float], uid: str = "1.2.3") -> Dataset:
    factor = 0.00025 / (spacing if isinstance(spacing, float) else spacing[0])
    total = (max(1, int(40000 * factor)), max(1, int(80000 * factor)))
    return make_image(
        image_type=["ORIGINAL", "PRIMARY", "VOLUME", "NONE"],
        total=total,
        spacing=spacing,
        uid=uid,
    )


# ---------------------------------------------------------------------------------------------
# Enums


def test_enum_values_are_their_names() -> None:
    # In dicomslide 0.7's member order: iterating an enum is part of its API.
    assert [m.value for m in ChannelTypes] == ["OPTICAL_PATH", "SEGMENT", "PARAMETER"]
    assert [m.value for m in ImageFlavors] == ["VOLUME", "LABEL", "OVERVIEW", "THUMBNAIL"]
    assert ImageFlavors("LABEL") is ImageFlavors.LABEL


# ---------------------------------------------------------------------------------------------
# Classification


def test_is_image() -> None:
    assert utils.is_image(make_image())
    sr = Dataset()
    sr.SOPClassUID = COMPREHENSIVE_SR
    assert not utils.is_image(sr)
    no_bits = make_image()
    del no_bits.BitsAllocated
    assert utils.is_image(no_bits)  # Samples per Pixel suffices
    del no_bits.SamplesPerPixel
    assert not utils.is_image(no_bits)
    no_columns = make_image()
    del no_columns.Columns
    assert not utils.is_image(no_columns)


def test_is_tiled_image() -> None:
    assert utils.is_tiled_image(make_image())
    assert not utils.is_tiled_image(make_image(total=None))
    sr = make_item(TotalPixelMatrixRows=10, TotalPixelMatrixColumns=10)
    assert not utils.is_tiled_image(sr)


@pytest.mark.parametrize(
    ("value3", "flavor"),
    [
        ("VOLUME", ImageFlavors.VOLUME),
        ("THUMBNAIL", ImageFlavors.THUMBNAIL),
        ("LABEL", ImageFlavors.LABEL),
        ("OVERVIEW", ImageFlavors.OVERVIEW),
    ],
)
def test_flavor_from_image_type(value3: str, flavor: ImageFlavors) -> None:
    # Image Type wins over everything else, even a contradicting description.
    ds = make_image(image_type=["ORIGINAL", "PRIMARY", value3, "NONE"], series_description="x")
    assert utils.get_image_flavor(ds) is flavor


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")
def test_flavor_from_lowercase_image_type() -> None:
    # Lowercase breaks the CS rules, but such files exist and the intent is clear.
    ds = make_image(image_type=["ORIGINAL", "PRIMARY", "label", "NONE"])
    assert utils.get_image_flavor(ds) is ImageFlavors.LABEL


def test_flavor_of_tiled_image_without_image_type_is_volume() -> None:
    assert utils.get_image_flavor(make_image()) is ImageFlavors.VOLUME
    assert (
        utils.get_image_flavor(make_image(image_type=["ORIGINAL", "PRIMARY"]))
        is ImageFlavors.VOLUME
    )
    assert utils.get_image_flavor(make_image(image_type="ORIGINAL")) is ImageFlavors.VOLUME
    # An unknown third value falls through to inference.
    unknown = make_image(image_type=["ORIGINAL", "PRIMARY", "RESAMPLED"])
    assert utils.get_image_flavor(unknown) is ImageFlavors.VOLUME


def test_tiled_segmentation_described_as_label_map_is_volume() -> None:
    ds = make_image(
        sop_class_uid=SEGMENTATION,
        image_type=["DERIVED", "PRIMARY"],
        series_description="Nuclei label map",
    )
    assert utils.get_image_flavor(ds) is ImageFlavors.VOLUME
    assert utils.is_volume_image(ds)
    assert not utils.is_label_image(ds)


@pytest.mark.parametrize(
    ("series_description", "image_type", "flavor"),
    [
        ("Slide label", None, ImageFlavors.LABEL),
        ("MACRO image", None, ImageFlavors.OVERVIEW),
        ("overview", None, ImageFlavors.OVERVIEW),
        ("thumbnail", None, ImageFlavors.THUMBNAIL),
        (None, ["DERIVED", "LABEL"], ImageFlavors.LABEL),
    ],
)
def test_flavor_of_untiled_image_from_hints(
    series_description: str | None, image_type: list[str] | None, flavor: ImageFlavors
) -> None:
    ds = make_image(
        sop_class_uid=SECONDARY_CAPTURE,
        total=None,
        image_type=image_type,
        series_description=series_description,
    )
    assert utils.get_image_flavor(ds) is flavor


def test_flavor_hints_match_whole_words_only() -> None:
    ds = make_image(
        sop_class_uid=SECONDARY_CAPTURE, total=None, series_description="Unlabeled photo"
    )
    with pytest.raises(InvalidDataError, match="Cannot determine the flavor"):
        utils.get_image_flavor(ds)
    assert not utils.is_label_image(ds)
    assert not utils.is_overview_image(ds)
    assert not utils.is_thumbnail_image(ds)
    assert not utils.is_volume_image(ds)


def test_flavor_of_non_image_raises_region_error() -> None:
    sr = make_item(SOPClassUID=COMPREHENSIVE_SR, SeriesDescription="label")
    with pytest.raises(RegionError, match="not an image"):
        utils.get_image_flavor(sr)
    assert not utils.is_label_image(sr)


@pytest.mark.parametrize(
    ("ds", "volume_", "label", "overview", "thumbnail"),
    [
        (make_image(image_type=["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]), True, 0, 0, 0),
        (make_image(image_type=["DERIVED", "PRIMARY", "THUMBNAIL", "RESAMPLED"]), 1, 0, 0, 1),
        (make_image(image_type=["ORIGINAL", "PRIMARY", "LABEL", "NONE"]), 0, 1, 0, 0),
        (make_image(image_type=["ORIGINAL", "PRIMARY", "OVERVIEW", "NONE"]), 0, 0, 1, 0),
        # A label that is not tiled is still a label.
        (make_image(image_type=["ORIGINAL", "PRIMARY", "LABEL"], total=None), 0, 1, 0, 0),
        # A VOLUME that is not tiled is not a volume image.
        (make_image(image_type=["ORIGINAL", "PRIMARY", "VOLUME"], total=None), 0, 0, 0, 0),
        (make_image(sop_class_uid=PARAMETRIC_MAP, image_type=["DERIVED", "PRIMARY"]), 1, 0, 0, 0),
        (make_image(sop_class_uid=SEGMENTATION, total=None), 0, 0, 0, 0),
    ],
)
def test_predicates(ds: Dataset, volume_: int, label: int, overview: int, thumbnail: int) -> None:
    assert utils.is_volume_image(ds) is bool(volume_)
    assert utils.is_label_image(ds) is bool(label)
    assert utils.is_overview_image(ds) is bool(overview)
    assert utils.is_thumbnail_image(ds) is bool(thumbnail)


# ---------------------------------------------------------------------------------------------
# Item matching


def make_optical_path(identifier: str, description: str, wavelength: float) -> Dataset:
    return make_item(
        OpticalPathIdentifier=identifier,
        OpticalPathDescription=description,
        IlluminationWaveLength=wavelength,
    )


def test_does_optical_path_item_match() -> None:
    item = make_optical_path("1", "DAPI", 405.0)
    assert utils.does_optical_path_item_match(item)
    assert utils.does_optical_path_item_match(item, identifier="1")
    assert not utils.does_optical_path_item_match(item, identifier="2")
    assert utils.does_optical_path_item_match(item, description="DAPI")
    assert not utils.does_optical_path_item_match(item, description="FITC")
    assert utils.does_optical_path_item_match(item, illumination_wavelength=405)
    assert not utils.does_optical_path_item_match(item, illumination_wavelength=488.0)
    assert utils.does_optical_path_item_match(item, "1", "DAPI", 405.0)
    assert not utils.does_optical_path_item_match(item, "1", "DAPI", 488.0)
    assert not utils.does_optical_path_item_match(
        make_item(OpticalPathIdentifier="1"), description="x"
    )
    assert not utils.does_optical_path_item_match(
        make_item(OpticalPathIdentifier="1"), illumination_wavelength=405.0
    )


def make_segment(number: int, label: str, category: Dataset, type_: Dataset) -> Dataset:
    return make_item(
        SegmentNumber=number,
        SegmentLabel=label,
        SegmentedPropertyCategoryCodeSequence=[category],
        SegmentedPropertyTypeCodeSequence=[type_],
    )


def test_does_segment_item_match() -> None:
    item = make_segment(
        2,
        "Nuclei",
        make_code_item("91723000", "SCT", "Anatomical structure"),
        make_code_item("84640000", "SCT", "Nucleus"),
    )
    assert utils.does_segment_item_match(item)
    assert utils.does_segment_item_match(item, number=2)
    assert not utils.does_segment_item_match(item, number=1)
    assert utils.does_segment_item_match(item, label="Nuclei")
    assert not utils.does_segment_item_match(item, label="Cells")
    # Meaning does not matter, scheme and value do.
    assert utils.does_segment_item_match(
        item, property_category=Code("91723000", "SCT", "something else")
    )
    assert not utils.does_segment_item_match(item, property_category=Code("91723000", "DCM", "x"))
    assert utils.does_segment_item_match(
        item, property_type=hd.sr.CodedConcept("84640000", "SCT", "Nucleus")
    )
    assert not utils.does_segment_item_match(item, property_type=codes.SCT.Cell)
    assert not utils.does_segment_item_match(
        make_item(SegmentNumber=2), property_type=codes.SCT.Cell
    )


def test_does_segment_item_match_rejects_non_code() -> None:
    item = make_segment(1, "x", make_code_item("1", "SCT", "a"), make_code_item("2", "SCT", "b"))
    with pytest.raises(RegionError, match="property_type"):
        utils.does_segment_item_match(item, property_type="84640000")  # type: ignore[arg-type]


def make_specimen_description(*substances: Dataset, text_substance: str | None = None) -> Dataset:
    steps = []
    for substance in substances:
        content = [
            make_item(
                ValueType="CODE",
                ConceptNameCodeSequence=[make_code_item("111701", "DCM", "Processing type")],
                ConceptCodeSequence=[make_code_item("127790008", "SCT", "Staining")],
            ),
            make_item(
                ValueType="CODE",
                ConceptNameCodeSequence=[make_code_item("424361007", "SCT", "Using substance")],
                ConceptCodeSequence=[substance],
            ),
        ]
        steps.append(make_item(SpecimenPreparationStepContentItemSequence=content))
    if text_substance is not None:
        steps.append(
            make_item(
                SpecimenPreparationStepContentItemSequence=[
                    make_item(
                        ValueType="TEXT",
                        ConceptNameCodeSequence=[
                            make_code_item("424361007", "SCT", "Using substance")
                        ],
                        TextValue=text_substance,
                    )
                ]
            )
        )
    return make_item(SpecimenIdentifier="S1", SpecimenPreparationSequence=steps)


HEMATOXYLIN = make_code_item("12710003", "SCT", "hematoxylin stain")
EOSIN = make_code_item("36879007", "SCT", "water soluble eosin stain")


def test_does_specimen_description_item_match() -> None:
    item = make_specimen_description(HEMATOXYLIN, EOSIN)
    assert utils.does_specimen_description_item_match(item)
    assert utils.does_specimen_description_item_match(item, Code("12710003", "SCT", "H"))
    assert utils.does_specimen_description_item_match(
        item, hd.sr.CodedConcept("36879007", "SCT", "eosin")
    )
    assert not utils.does_specimen_description_item_match(item, codes.SCT.Cell)
    # The staining step's "Staining" code is a processing type, not a substance.
    assert not utils.does_specimen_description_item_match(
        item, Code("127790008", "SCT", "Staining")
    )


def test_does_specimen_description_item_match_maps_legacy_snomed() -> None:
    legacy = make_specimen_description(make_code_item("C-22968", "SRT", "hematoxylin"))
    assert utils.does_specimen_description_item_match(
        legacy, Code("12710003", "SCT", "hematoxylin")
    )
    modern = make_specimen_description(HEMATOXYLIN)
    assert utils.does_specimen_description_item_match(
        modern, Code("C-22968", "SRT", "hematoxylin")
    )


def test_does_specimen_description_item_match_without_coded_substances() -> None:
    assert not utils.does_specimen_description_item_match(
        make_specimen_description(text_substance="hematoxylin"), Code("12710003", "SCT", "H")
    )
    assert not utils.does_specimen_description_item_match(
        make_item(SpecimenIdentifier="S1"), Code("12710003", "SCT", "H")
    )


# ---------------------------------------------------------------------------------------------
# Size, spacing, position


def test_get_image_pixel_spacing_and_size() -> None:
    ds = make_image(spacing=(0.0005, 0.00025), total=(300, 700))
    assert utils.get_image_pixel_spacing(ds) == (0.0005, 0.00025)
    assert utils.get_image_size(ds) == 300 * 700
    assert utils.get_image_size(make_image(total=None)) == 256 * 256
    with pytest.raises(InvalidDataError, match="Pixel Spacing"):
        utils.get_image_pixel_spacing(make_image(spacing=None))


def test_compute_image_center_position() -> None:
    ds = make_image(spacing=(0.002, 0.001), total=(101, 201))
    ds.TotalPixelMatrixOriginSequence = [
        make_item(XOffsetInSlideCoordinateSystem=10.0, YOffsetInSlideCoordinateSystem=20.0)
    ]
    ds.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
    # Center pixel (50, 100): rows go along -X by 0.002, columns along -Y by 0.001.
    x, y, z = utils.compute_image_center_position(ds)
    assert x == pytest.approx(10.0 - 50 * 0.002)
    assert y == pytest.approx(20.0 - 100 * 0.001)
    assert z == 0.0


# ---------------------------------------------------------------------------------------------
# Selection and sorting


def test_select_image_at_pixel_spacing_picks_closest_and_first_of_ties() -> None:
    a, b, c = volume(0.00025, UIDS["a"]), volume(0.001, UIDS["b"]), volume(0.004, UIDS["c"])
    assert utils.select_image_at_pixel_spacing([c, a, b], (0.0009, 0.0009)) is b
    assert utils.select_image_at_pixel_spacing([c, a, b], 0.003) is c
    twin = volume(0.001, UIDS["twin"])
    assert utils.select_image_at_pixel_spacing([c, twin, b], (0.001, 0.001)) is twin


def test_select_image_at_pixel_spacing_tolerance() -> None:
    images = [volume(0.00025), volume(0.001)]
    assert (
        utils.select_image_at_pixel_spacing(images, (0.0005, 0.0005), tolerance=0.00025)
        is (images[0])
    )
    with pytest.raises(RegionError, match=r"0\.0005.*tolerance 0\.0001.*closest.*0\.00025"):
        utils.select_image_at_pixel_spacing(images, (0.0005, 0.0005), tolerance=0.0001)


@pytest.mark.parametrize(
    ("pixel_spacing", "tolerance"),
    [((0.0, 0.001), None), ((0.001,), None), ("a", None), ((0.001, 0.001), -1.0)],
)
def test_select_image_at_pixel_spacing_rejects_bad_arguments(
    pixel_spacing: object, tolerance: float | None
) -> None:
    with pytest.raises(RegionError):
        utils.select_image_at_pixel_spacing([volume(0.001)], pixel_spacing, tolerance)  # type: ignore[arg-type]


def test_select_image_at_pixel_spacing_empty_collection() -> None:
    with pytest.raises(RegionError, match="empty"):
        utils.select_image_at_pixel_spacing([], (0.001, 0.001))


@pytest.mark.parametrize(
    ("magnification", "expected"),
    [(40, UIDS["a"]), (20, UIDS["b"]), (10, UIDS["c"]), (4, UIDS["d"]), (2, UIDS["d"])],
)
def test_select_image_at_magnification(magnification: int, expected: str) -> None:
    images = [
        volume(0.00025, UIDS["a"]),
        volume(0.0005, UIDS["b"]),
        volume(0.001, UIDS["c"]),
        # 4x stands for 0.0025 mm: closer to 0.003 than to 0.001.
        volume(0.003, UIDS["d"]),
    ]
    assert utils.select_image_at_magnification(images, magnification).SOPInstanceUID == expected


def test_select_image_at_magnification_errors() -> None:
    images = [volume(0.00025), volume(0.004)]
    with pytest.raises(RegionError, match=r"one of \[2, 4, 10, 20, 40\], got 5"):
        utils.select_image_at_magnification(images, 5)
    with pytest.raises(RegionError, match="empty"):
        utils.select_image_at_magnification([], 20)
    with pytest.raises(RegionError, match="tolerance"):
        utils.select_image_at_magnification(images, 10, tolerance=0.0001)
    assert utils.select_image_at_magnification(images, 10, tolerance=0.001) is images[0]


def test_sort_images() -> None:
    a, b, c = volume(0.00025, UIDS["a"]), volume(0.001, UIDS["b"]), volume(0.004, UIDS["c"])
    assert utils.sort_images_by_pixel_spacing([b, c, a]) == [a, b, c]
    assert utils.sort_images_by_size([b, c, a]) == [a, b, c]
    # Equal keys keep their order.
    twin = volume(0.001, UIDS["twin"])
    assert utils.sort_images_by_pixel_spacing([twin, c, b]) == [twin, b, c]
    assert utils.sort_images_by_size([twin, c, b]) == [twin, b, c]


# ---------------------------------------------------------------------------------------------
# Tiling


def grid_positions(total_rows: int, total_columns: int, rows: int, columns: int) -> np.ndarray:
    return np.array(
        [(r, c) for r in range(0, total_rows, rows) for c in range(0, total_columns, columns)]
    )


@pytest.mark.parametrize("samples", [None, 3])
def test_disassemble_then_assemble_round_trip_with_edge_tiles(samples: int | None) -> None:
    total_rows, total_columns, rows, columns = 10, 13, 4, 5
    shape = (total_rows, total_columns) if samples is None else (total_rows, total_columns, 3)
    matrix = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape) + 1
    positions = grid_positions(total_rows, total_columns, rows, columns)
    tiles = utils.disassemble_total_pixel_matrix(matrix, positions, rows, columns)
    assert tiles.shape == (9, rows, columns, *shape[2:])
    assert tiles.dtype == np.uint16
    # Last tile starts at (8, 10): 2 rows and 3 columns of data, zero padding elsewhere.
    np.testing.assert_array_equal(tiles[-1, :2, :3], matrix[8:10, 10:13])
    assert np.all(tiles[-1, 2:] == 0)
    assert np.all(tiles[-1, :, 3:] == 0)
    # Tile (1, 1) starts at (4, 5).
    np.testing.assert_array_equal(tiles[4], matrix[4:8, 5:10])
    reassembled = utils.assemble_total_pixel_matrix(
        list(tiles), positions, total_rows, total_columns
    )
    np.testing.assert_array_equal(reassembled, matrix)


def test_assemble_crops_overhanging_tiles_and_zero_fills_gaps() -> None:
    tiles = [np.full((3, 3), 7, np.uint8), np.full((3, 3), 9, np.uint8)]
    result = utils.assemble_total_pixel_matrix(tiles, [(0, 0), (3, 4)], 5, 6)
    expected = np.zeros((5, 6), np.uint8)
    expected[0:3, 0:3] = 7
    expected[3:5, 4:6] = 9
    np.testing.assert_array_equal(result, expected)
    assert result.dtype == np.uint8


def test_assemble_later_tiles_win_and_positions_may_be_lists() -> None:
    tiles = [np.ones((2, 2), np.int32), np.full((2, 2), 2, np.int32)]
    result = utils.assemble_total_pixel_matrix(tiles, [[0, 0], [1, 1]], 3, 3)
    np.testing.assert_array_equal(result, [[1, 1, 0], [1, 2, 2], [0, 2, 2]])


@pytest.mark.parametrize(
    ("tiles", "positions", "match"),
    [
        ([], [], "no tiles"),
        ([np.zeros((2, 2))], [(0, 0), (0, 2)], "1 tiles but 2"),
        ([np.zeros((2, 2))], [(4, 0)], r"Tile 0 .*rows must be in \[0, 4\)"),
        ([np.zeros((2, 2)), np.zeros((2, 2))], [(0, 0), (0, -1)], "Tile 1"),
        ([np.zeros((2, 2)), np.zeros((2, 2, 3))], [(0, 0), (0, 2)], "Tile 1 has shape"),
        ([np.zeros((2, 2))], [(0.5, 0)], "whole numbers"),
        ([np.zeros((2, 2))], [(0, 0, 0)], r"\(N, 2\)"),
    ],
)
def test_assemble_rejects_bad_arguments(
    tiles: list[np.ndarray], positions: object, match: str
) -> None:
    with pytest.raises(RegionError, match=match):
        utils.assemble_total_pixel_matrix(tiles, positions, 4, 4)  # type: ignore[arg-type]


def test_assemble_rejects_bad_sizes() -> None:
    with pytest.raises(RegionError, match="total_pixel_matrix_rows"):
        utils.assemble_total_pixel_matrix([np.zeros((2, 2))], [(0, 0)], 0, 4)
    with pytest.raises(RegionError, match="total_pixel_matrix_columns"):
        utils.assemble_total_pixel_matrix([np.zeros((2, 2))], [(0, 0)], 4, 2.5)  # type: ignore[arg-type]


def test_disassemble_rejects_bad_arguments() -> None:
    matrix = np.zeros((4, 4), np.uint8)
    with pytest.raises(RegionError, match="rows"):
        utils.disassemble_total_pixel_matrix(matrix, [(0, 0)], 0, 2)
    with pytest.raises(RegionError, match=r"columns in \[0, 4\)"):
        utils.disassemble_total_pixel_matrix(matrix, [(0, 4)], 2, 2)
    with pytest.raises(RegionError, match="total_pixel_matrix"):
        utils.disassemble_total_pixel_matrix(np.zeros(4), [(0, 0)], 2, 2)


def test_disassemble_without_positions_returns_empty_stack() -> None:
    tiles = utils.disassemble_total_pixel_matrix(np.zeros((4, 4, 3), np.uint8), [], 2, 2)
    assert tiles.shape == (0, 2, 2, 3)


@pytest.mark.parametrize(
    ("sop_class", "segmentation_type", "padding", "label_map", "background"),
    [
        ("1.2.840.10008.5.1.4.1.1.66.7", "LABELMAP", 0, True, 0),
        ("1.2.840.10008.5.1.4.1.1.66.7", None, 5, True, 5),
        ("1.2.840.10008.5.1.4.1.1.66.7", "LABELMAP", None, True, None),
        # A Segmentation SOP instance that says LABELMAP is read as one too.
        ("1.2.840.10008.5.1.4.1.1.66.4", "LABELMAP", 0, True, 0),
        ("1.2.840.10008.5.1.4.1.1.66.4", "BINARY", 0, False, None),
        ("1.2.840.10008.5.1.4.1.1.77.1.6", None, 0, False, None),
    ],
)
def test_label_map_classification(
    sop_class: str,
    segmentation_type: str | None,
    padding: int | None,
    label_map: bool,
    background: int | None,
) -> None:
    from dicomslide.utils import get_label_map_background, is_label_map

    ds = Dataset()
    ds.SOPClassUID = sop_class
    if segmentation_type is not None:
        ds.SegmentationType = segmentation_type
    if padding is not None:
        ds.PixelPaddingValue = padding
    assert is_label_map(ds) is label_map
    assert get_label_map_background(ds) == background


def test_label_map_background_must_be_an_integer() -> None:
    from dicomslide.utils import get_label_map_background

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.7"
    ds.SOPInstanceUID = "1.2.3"
    ds.add_new(0x00280120, "US", None)
    assert get_label_map_background(ds) is None
    del ds[0x00280120]
    ds.add_new(0x00280120, "LO", "x")  # a broken source's value of the wrong kind
    with pytest.raises(InvalidDataError, match=r"Label map 1\.2\.3 has Pixel Padding Value"):
        get_label_map_background(ds)

"""Tests of the synthetic slide writer: validity, pixel truth, tiling layouts and geometry."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.pixels.utils import pixel_array
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from dicomslide.synthetic import (
    SUPPORTED_ORIENTATIONS,
    VL_WSM_SOP_CLASS_UID,
    SlideSpec,
    expected_pixels,
    expected_tile,
    frame_position_mm,
    plan_instances,
    write_sample_slide,
    write_slide,
)
from tests.support.slides import slide_spec

SMALL = slide_spec((300, 500), 128, 2, bare=True)


def _read(paths: list[pathlib.Path]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in paths]


def _volumes(datasets: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
    return [ds for ds in datasets if ds.ImageType[2] == "VOLUME"]


def _frame(ds: pydicom.Dataset, index: int) -> npt.NDArray[np.generic]:
    array = pixel_array(ds, index=index)
    return array[..., None] if array.ndim == 2 else array


def _tile_index(ds: pydicom.Dataset, index: int) -> tuple[int, int]:
    """0-based (tile row, tile column) of a frame from its per-frame position."""
    position = ds.PerFrameFunctionalGroupsSequence[index].PlanePositionSlideSequence[0]
    row = (position.RowPositionInTotalImagePixelMatrix - 1) // ds.Rows
    column = (position.ColumnPositionInTotalImagePixelMatrix - 1) // ds.Columns
    return int(row), int(column)


LOSSLESS = [
    (ExplicitVRLittleEndian, "RGB", 8),
    (ExplicitVRLittleEndian, "MONOCHROME2", 16),
    (ImplicitVRLittleEndian, "MONOCHROME2", 8),
    (DeflatedExplicitVRLittleEndian, "MONOCHROME2", 16),
    (RLELossless, "RGB", 8),
    (RLELossless, "MONOCHROME2", 16),
    (JPEG2000Lossless, "RGB", 8),
    (JPEG2000Lossless, "MONOCHROME2", 16),
    (HTJ2KLossless, "RGB", 8),
    (JPEGLSLossless, "RGB", 8),
    (JPEGLSLossless, "MONOCHROME2", 16),
    (JPEGLosslessSV1, "RGB", 8),
    (JPEGLosslessSV1, "MONOCHROME2", 16),
]


@pytest.mark.parametrize(("transfer_syntax", "photometric", "bits"), LOSSLESS)
def test_lossless_frames_equal_expected_pixels(
    tmp_path: pathlib.Path, transfer_syntax: str, photometric: str, bits: int
) -> None:
    spec = dataclasses.replace(
        SMALL, transfer_syntax_uid=transfer_syntax, photometric=photometric, bits=bits
    )
    datasets = _read(write_slide(tmp_path, spec))
    plans = plan_instances(spec)
    assert len(datasets) == len(plans) == 2
    for ds, plan in zip(datasets, plans, strict=True):
        assert ds.SOPClassUID == VL_WSM_SOP_CLASS_UID
        assert ds.file_meta.TransferSyntaxUID == transfer_syntax
        assert ds.LossyImageCompression == "00"
        grid = spec.grid_shape(plan.level)
        assert ds.NumberOfFrames == grid[0] * grid[1]
        assert (ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns) == spec.level_shape(
            plan.level
        )
        for index, frame in enumerate(plan.frames):
            expected = expected_tile(spec, plan.level, frame.tile_row, frame.tile_column)
            np.testing.assert_array_equal(_frame(ds, index), expected)


def test_level_geometry() -> None:
    spec = SlideSpec(size=(1001, 1500), levels=4)
    assert spec.factors == (1, 2, 4, 8)
    assert spec.level_shape(1) == (501, 750)
    assert spec.level_shape(3) == (126, 188)
    assert spec.grid_shape(0) == (4, 6)
    assert spec.pixel_spacing(2) == pytest.approx(0.001)
    custom = SlideSpec(downsample_factors=(1, 4, 16))
    assert custom.num_levels == 3
    assert custom.level_shape(2) == (63, 94)


def test_expected_pixels_slices_and_distinct_positions() -> None:
    spec = dataclasses.replace(SMALL, transfer_syntax_uid=ExplicitVRLittleEndian)
    full = expected_pixels(spec, 0)
    assert full.shape == (300, 500, 3)
    assert full.dtype == np.uint8
    part = expected_pixels(spec, 0, row_slice=slice(10, 20), col_slice=slice(490, 600))
    np.testing.assert_array_equal(part, full[10:20, 490:500])
    # In the RGB position pattern every pixel of a level is unique.
    packed = full.astype(np.int64) @ np.array([1, 256, 65536])
    assert np.unique(packed).size == packed.size
    assert not np.array_equal(expected_pixels(spec, 1)[:50, :50], full[:50, :50])
    mono = dataclasses.replace(spec, photometric="MONOCHROME2", bits=16)
    values = expected_pixels(mono, 0)
    assert values.dtype == np.uint16
    # 16 bits cannot number 150000 pixels, but every aligned 256 x 256 block is unique and no two
    # tiles are equal, which is what reveals misplaced tiles.
    assert np.unique(values[:256, :256]).size == 256 * 256
    tiles = {
        values[r : r + 64, c : c + 64].tobytes()
        for r in range(0, 256, 64)
        for c in range(0, 448, 64)
    }
    assert len(tiles) == 4 * 7
    mono8 = dataclasses.replace(mono, bits=8)
    values8 = expected_pixels(mono8, 0)
    tiles8 = {
        values8[r : r + 64, c : c + 64].tobytes()
        for r in range(0, 256, 64)
        for c in range(0, 448, 64)
    }
    assert len(tiles8) == 4 * 7
    with pytest.raises(ValueError, match="level"):
        expected_pixels(spec, 5)


def test_edge_tiles_are_padded() -> None:
    spec = dataclasses.replace(SMALL, transfer_syntax_uid=ExplicitVRLittleEndian)
    tile = expected_tile(spec, 0, 2, 3)
    assert tile.shape == (128, 128, 3)
    np.testing.assert_array_equal(tile[300 - 256 :, :], 255)
    np.testing.assert_array_equal(tile[:, 500 - 384 :], 255)
    np.testing.assert_array_equal(tile[:44, :116], expected_pixels(spec, 0)[256:, 384:])


@pytest.mark.parametrize("photometric", ["YBR_FULL_422", "RGB", "MONOCHROME2"])
def test_jpeg_baseline_is_close_to_expected(tmp_path: pathlib.Path, photometric: str) -> None:
    spec = dataclasses.replace(SMALL, photometric=photometric, label=True, overview=True)
    assert spec.effective_pattern == "smooth"
    datasets = _read(write_slide(tmp_path, spec))
    volume = _volumes(datasets)[0]
    assert volume.PhotometricInterpretation == photometric
    assert volume.LossyImageCompression == "01"
    assert volume.LossyImageCompressionMethod == "ISO_10918_1"
    for index, frame in enumerate(plan_instances(spec)[0].frames):
        decoded = _frame(volume, index).astype(np.int64)
        expected = expected_tile(spec, 0, frame.tile_row, frame.tile_column)
        assert np.abs(decoded - expected).mean() < 3
    first = pydicom.encaps.generate_frames(volume.PixelData, number_of_frames=1)
    stream = next(first)
    assert stream[:2] == b"\xff\xd8"
    if photometric == "RGB":
        assert b"Adobe" in stream
    labels = [ds for ds in datasets if ds.ImageType[2] == "LABEL"]
    assert len(labels) == 1
    assert labels[0].ImageType == ["ORIGINAL", "PRIMARY", "LABEL", "NONE"]
    assert pixel_array(labels[0]).shape == (256, 512, 3)


def test_tiled_full_attributes_and_highdicom_positions(tmp_path: pathlib.Path) -> None:
    spec = dataclasses.replace(SMALL, transfer_syntax_uid=RLELossless, thumbnail=True)
    datasets = _read(write_slide(tmp_path, spec))
    level0, level1, thumbnail = datasets
    assert level0.ImageType == ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    assert level1.ImageType == ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
    assert thumbnail.ImageType == ["DERIVED", "PRIMARY", "THUMBNAIL", "RESAMPLED"]
    np.testing.assert_array_equal(pixel_array(thumbnail), expected_pixels(spec, spec.num_levels))
    for ds in datasets:
        assert ds.DimensionOrganizationType == "TILED_FULL"
        assert "PerFrameFunctionalGroupsSequence" not in ds
        assert ds.TotalPixelMatrixFocalPlanes == 1
        assert ds.NumberOfOpticalPaths == 1
        assert len(ds.OpticalPathSequence[0].ICCProfile) > 100
        shared = ds.SharedFunctionalGroupsSequence[0]
        assert shared.OpticalPathIdentificationSequence[0].OpticalPathIdentifier == "1"
        assert shared.WholeSlideMicroscopyImageFrameTypeSequence[0].FrameType == ds.ImageType
        assert ds.FrameOfReferenceUID
        specimen = ds.SpecimenDescriptionSequence[0]
        items = specimen.SpecimenPreparationSequence[0].SpecimenPreparationStepContentItemSequence
        assert "hematoxylin stain" in {
            item.ConceptCodeSequence[0].CodeMeaning for item in items if item.ValueType == "CODE"
        }
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == 3
    for level, ds in enumerate((level0, level1)):
        positions = list(hd.utils.iter_tiled_full_frame_data(ds))
        assert len(positions) == ds.NumberOfFrames
        for _, _, column, row, x, y, _ in positions:
            expected = frame_position_mm(spec, level, row - 1, column - 1)
            assert (x, y) == pytest.approx(expected, abs=1e-9)
        image = hd.Image.from_dataset(ds)
        np.testing.assert_array_equal(image.get_total_pixel_matrix(), expected_pixels(spec, level))


def test_tiled_sparse_leaves_out_missing_tiles(tmp_path: pathlib.Path) -> None:
    missing = ((0, 1), (2, 3))
    spec = dataclasses.replace(
        SMALL,
        transfer_syntax_uid=JPEG2000Lossless,
        dimension_organization="TILED_SPARSE",
        sparse_missing_tiles=missing,
        shuffle_frames=True,
    )
    level0, level1 = _read(write_slide(tmp_path, spec))
    assert level0.DimensionOrganizationType == "TILED_SPARSE"
    assert level0.NumberOfFrames == 3 * 4 - 2
    assert level1.NumberOfFrames == 2 * 2
    tiles = [_tile_index(level0, i) for i in range(level0.NumberOfFrames)]
    assert set(tiles).isdisjoint(missing)
    assert len(set(tiles)) == len(tiles)
    assert tiles != sorted(tiles)
    for index, (row, column) in enumerate(tiles):
        np.testing.assert_array_equal(_frame(level0, index), expected_tile(spec, 0, row, column))
        item = level0.PerFrameFunctionalGroupsSequence[index]
        assert item.OpticalPathIdentificationSequence[0].OpticalPathIdentifier == "1"
        assert list(item.FrameContentSequence[0].DimensionIndexValues) == [column + 1, row + 1]
    image = hd.Image.from_dataset(level1)
    np.testing.assert_array_equal(image.get_total_pixel_matrix(), expected_pixels(spec, 1))


def test_dimension_organization_none(tmp_path: pathlib.Path) -> None:
    spec = dataclasses.replace(
        SMALL, transfer_syntax_uid=ExplicitVRLittleEndian, dimension_organization="NONE"
    )
    for ds in _read(write_slide(tmp_path, spec)):
        assert "DimensionOrganizationType" not in ds
        assert len(ds.PerFrameFunctionalGroupsSequence) == ds.NumberOfFrames
        assert ds.PerFrameFunctionalGroupsSequence[0].FrameContentSequence[0].DimensionIndexValues
        first = ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSlideSequence[0]
        assert first.RowPositionInTotalImagePixelMatrix == 1
        assert first.ColumnPositionInTotalImagePixelMatrix == 1


def test_concatenation_parts(tmp_path: pathlib.Path) -> None:
    spec = dataclasses.replace(
        SMALL,
        transfer_syntax_uid=RLELossless,
        concatenation_parts=3,
        dimension_organization="TILED_SPARSE",
    )
    datasets = _read(write_slide(tmp_path, spec))
    level0 = [ds for ds in datasets if ds.TotalPixelMatrixRows == 300]
    assert len(level0) == 3
    assert sum(ds.NumberOfFrames for ds in level0) == 12
    assert len({ds.ConcatenationUID for ds in level0}) == 1
    assert len({ds.SOPInstanceUIDOfConcatenationSource for ds in level0}) == 1
    assert level0[0].SOPInstanceUIDOfConcatenationSource not in {
        ds.SOPInstanceUID for ds in level0
    }
    assert [ds.InConcatenationNumber for ds in level0] == [1, 2, 3]
    assert {ds.InstanceNumber for ds in level0} == {1}
    assert {ds.InConcatenationTotalNumber for ds in level0} == {3}
    assert [ds.ConcatenationFrameOffsetNumber for ds in level0] == [0, 4, 8]
    tiles = [_tile_index(ds, i) for ds in level0 for i in range(ds.NumberOfFrames)]
    assert tiles == [(r, c) for r in range(3) for c in range(4)]
    level1 = [ds for ds in datasets if ds.TotalPixelMatrixRows == 150]
    assert len({ds.ConcatenationUID for ds in level1} | {level0[0].ConcatenationUID}) == 2


def test_concatenation_of_tiled_full(tmp_path: pathlib.Path) -> None:
    spec = dataclasses.replace(SMALL, transfer_syntax_uid=RLELossless, concatenation_parts=2)
    datasets = _read(write_slide(tmp_path, spec))
    part1, part2 = datasets[:2]
    assert part1.DimensionOrganizationType == "TILED_FULL"
    assert part2.ConcatenationFrameOffsetNumber == part1.NumberOfFrames == 6
    # Frame 1 of part 2 is frame 7 of the whole level: tile row 1, column 2.
    np.testing.assert_array_equal(_frame(part2, 0), expected_tile(spec, 0, 1, 2))


@pytest.mark.parametrize("orientation", SUPPORTED_ORIENTATIONS)
def test_orientation_positions(tmp_path: pathlib.Path, orientation: tuple[float, ...]) -> None:
    spec = dataclasses.replace(
        SMALL,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        dimension_organization="TILED_SPARSE",
        image_orientation=orientation,
        origin_mm=(10.0, 30.0),
        pixel_spacing_mm=0.0005,
    )
    row_direction = np.array(orientation[:3])
    column_direction = np.array(orientation[3:])
    for level, ds in enumerate(_read(write_slide(tmp_path, spec))):
        assert [float(v) for v in ds.ImageOrientationSlide] == list(orientation)
        origin = ds.TotalPixelMatrixOriginSequence[0]
        assert (origin.XOffsetInSlideCoordinateSystem, origin.YOffsetInSlideCoordinateSystem) == (
            10.0,
            30.0,
        )
        spacing = [
            float(v)
            for v in ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        ]
        assert spacing == pytest.approx([0.0005 * 2**level] * 2)
        for index in range(ds.NumberOfFrames):
            row, column = _tile_index(ds, index)
            position = ds.PerFrameFunctionalGroupsSequence[index].PlanePositionSlideSequence[0]
            corner = (
                np.array([10.0, 30.0, 0.0])
                + row_direction * column * ds.Columns * spacing[1]
                + column_direction * row * ds.Rows * spacing[0]
            )
            actual = (
                position.XOffsetInSlideCoordinateSystem,
                position.YOffsetInSlideCoordinateSystem,
            )
            assert actual == pytest.approx(tuple(corner[:2]), abs=1e-9)
            assert position.ZOffsetInSlideCoordinateSystem == 0


def test_channels_and_focal_planes_in_one_instance(tmp_path: pathlib.Path) -> None:
    spec = dataclasses.replace(
        SMALL,
        levels=1,
        size=(200, 200),
        photometric="MONOCHROME2",
        bits=16,
        transfer_syntax_uid=JPEGLSLossless,
        optical_paths=3,
        channels_in_separate_instances=False,
        focal_planes=2,
    )
    (ds,) = _read(write_slide(tmp_path, spec))
    assert ds.NumberOfFrames == 3 * 2 * 4
    assert ds.NumberOfOpticalPaths == 3
    assert ds.TotalPixelMatrixFocalPlanes == 2
    assert "OpticalPathIdentificationSequence" not in ds.SharedFunctionalGroupsSequence[0]
    assert [p.IlluminationWaveLength for p in ds.OpticalPathSequence] == [405, 488, 561]
    assert "ICCProfile" not in ds.OpticalPathSequence[0]
    index = 0
    for channel in range(3):
        for plane in range(2):
            for row in range(2):
                for column in range(2):
                    expected = expected_tile(spec, 0, row, column, channel, plane)
                    np.testing.assert_array_equal(_frame(ds, index), expected)
                    index += 1
    assert not np.array_equal(expected_tile(spec, 0, 0, 0, 1, 0), expected_tile(spec, 0, 0, 0))


def test_separate_instances_per_channel_and_plane(tmp_path: pathlib.Path) -> None:
    spec = dataclasses.replace(
        SMALL,
        levels=1,
        photometric="MONOCHROME2",
        transfer_syntax_uid=ExplicitVRLittleEndian,
        optical_paths=2,
        focal_planes=2,
        focal_planes_in_separate_instances=True,
        dimension_organization="TILED_SPARSE",
        thumbnail=True,
    )
    datasets = _read(write_slide(tmp_path, spec))
    volumes = _volumes(datasets)
    assert len(volumes) == 4
    keys = set()
    for ds in volumes:
        path = ds.OpticalPathSequence[0].OpticalPathIdentifier
        item = ds.PerFrameFunctionalGroupsSequence[0]
        z = item.PlanePositionSlideSequence[0].ZOffsetInSlideCoordinateSystem
        assert item.OpticalPathIdentificationSequence[0].OpticalPathIdentifier == path
        keys.add((path, z))
        channel, plane = int(path) - 1, round(z)
        np.testing.assert_array_equal(_frame(ds, 0), expected_tile(spec, 0, 0, 0, channel, plane))
    assert keys == {("1", 0.0), ("2", 0.0), ("1", 1.0), ("2", 1.0)}


def test_offset_tables(tmp_path: pathlib.Path) -> None:
    spec = dataclasses.replace(
        SMALL, levels=1, transfer_syntax_uid=JPEG2000Lossless, extended_offset_table=True
    )
    (ds,) = _read(write_slide(tmp_path / "eot", spec))
    assert len(ds.ExtendedOffsetTable) == 8 * ds.NumberOfFrames
    assert len(ds.ExtendedOffsetTableLengths) == 8 * ds.NumberOfFrames
    np.testing.assert_array_equal(_frame(ds, 5), expected_tile(spec, 0, 1, 1))
    no_bot = dataclasses.replace(spec, extended_offset_table=False, basic_offset_table=False)
    (ds,) = _read(write_slide(tmp_path / "nobot", no_bot))
    assert "ExtendedOffsetTable" not in ds
    # An empty Basic Offset Table item: tag (FFFE,E000) followed by length 0.
    assert ds.PixelData[:8] == b"\xfe\xff\x00\xe0\x00\x00\x00\x00"
    np.testing.assert_array_equal(_frame(ds, 11), expected_tile(spec, 0, 2, 3))


def test_real_world_omissions(tmp_path: pathlib.Path) -> None:
    spec = dataclasses.replace(
        SMALL,
        with_image_type=False,
        with_frame_of_reference=False,
        icc_profile=False,
        label=True,
    )
    for ds in _read(write_slide(tmp_path, spec)):
        assert "ImageType" not in ds
        assert "FrameOfReferenceUID" not in ds
        assert "ICCProfile" not in ds.OpticalPathSequence[0]
        assert ds.SharedFunctionalGroupsSequence[0].WholeSlideMicroscopyImageFrameTypeSequence


def test_uids_are_deterministic(tmp_path: pathlib.Path) -> None:
    spec = dataclasses.replace(SMALL, levels=1)
    (first,) = _read(write_slide(tmp_path / "a", spec))
    (second,) = _read(write_slide(tmp_path / "b", spec))
    (other,) = _read(write_slide(tmp_path / "c", dataclasses.replace(spec, seed=1)))
    assert first.SOPInstanceUID == second.SOPInstanceUID
    assert first.StudyInstanceUID != other.StudyInstanceUID
    given = dataclasses.replace(spec, study_instance_uid="1.2.3.4")
    (ds,) = _read(write_slide(tmp_path / "d", given))
    assert ds.StudyInstanceUID == "1.2.3.4"


@pytest.mark.parametrize(
    "changes",
    [
        {"photometric": "YBR_FULL_422", "transfer_syntax_uid": RLELossless},
        {"bits": 16},
        {"bits": 16, "photometric": "MONOCHROME2"},
        {"sparse_missing_tiles": ((0, 0),)},
        {"dimension_organization": "TILED_SPARSE", "sparse_missing_tiles": ((9, 0),)},
        {"image_orientation": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)},
        {"downsample_factors": (1, 3, 3)},
        {"extended_offset_table": True, "transfer_syntax_uid": ExplicitVRLittleEndian},
        {"concatenation_parts": 100},
        {"focal_planes": 2, "focal_planes_in_separate_instances": True},
        {"photometric": "RGB", "transfer_syntax_uid": JPEGLosslessSV1, "bits": 16},
    ],
)
def test_invalid_specs_are_rejected(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        dataclasses.replace(SMALL, **changes)


def test_sample_slide(tmp_path: pathlib.Path) -> None:
    datasets = _read(write_sample_slide(tmp_path))
    kinds = [ds.ImageType[2] for ds in datasets]
    assert kinds == ["VOLUME", "VOLUME", "VOLUME", "THUMBNAIL", "LABEL", "OVERVIEW"]
    level0 = datasets[0]
    assert (level0.TotalPixelMatrixRows, level0.TotalPixelMatrixColumns) == (3072, 4096)
    assert level0.NumberOfFrames == 12 * 16
    assert level0.PhotometricInterpretation == "YBR_FULL_422"
    assert pixel_array(level0, index=level0.NumberOfFrames - 1).shape == (256, 256, 3)
    for ds in datasets:
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert pixel_array(ds, index=0).dtype == np.uint8

"""Tests of dicomslide.coordinates: pixel <-> slide mapping against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from highdicom.spatial import PixelToReferenceTransformer
from pydicom import Dataset

from dicomslide.coordinates import DEFAULT_ORIENTATION, ImageGeometry
from dicomslide.errors import InvalidDataError, RegionError

ORIGIN = (10.0, 20.0, 0.5)
# Deliberately non-square so that swapped spacings show up in the expected values.
SPACING = (0.002, 0.0005)  # (between rows, between columns)


def make_geometry(orientation: tuple[float, ...]) -> ImageGeometry:
    return ImageGeometry(
        origin=ORIGIN,
        orientation=orientation,  # type: ignore[arg-type]
        pixel_spacing=SPACING,
    )


def make_item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def make_wsi_dataset(
    *,
    origin: tuple[float, float] | None = (10.0, 20.0),
    orientation: list[float] | None = None,
    shared_spacing: list[float] | None = None,
    shared_z: float | None = None,
) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.6"
    ds.Rows = 256
    ds.Columns = 256
    ds.TotalPixelMatrixRows = 1000
    ds.TotalPixelMatrixColumns = 2000
    if origin is not None:
        ds.TotalPixelMatrixOriginSequence = [
            make_item(
                XOffsetInSlideCoordinateSystem=origin[0],
                YOffsetInSlideCoordinateSystem=origin[1],
            )
        ]
    if orientation is not None:
        ds.ImageOrientationSlide = orientation
    shared = Dataset()
    if shared_spacing is not None:
        shared.PixelMeasuresSequence = [make_item(PixelSpacing=shared_spacing)]
    if shared_z is not None:
        shared.PlanePositionSlideSequence = [make_item(ZOffsetInSlideCoordinateSystem=shared_z)]
    ds.SharedFunctionalGroupsSequence = [shared]
    return ds


# (orientation, slide (x, y) of pixel (row 3, column 5), rotation in degrees)
AXIS_ALIGNED = [
    # Rows along +X, columns along +Y.
    ((1.0, 0.0, 0.0, 0.0, 1.0, 0.0), (10.0 + 5 * 0.0005, 20.0 + 3 * 0.002), 0.0),
    # The usual scanner layout: rows along -Y, columns along -X.
    ((0.0, -1.0, 0.0, -1.0, 0.0, 0.0), (10.0 - 3 * 0.002, 20.0 - 5 * 0.0005), 270.0),
    # Rows along -X, columns along -Y.
    ((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0), (10.0 - 5 * 0.0005, 20.0 - 3 * 0.002), 180.0),
    # Rows along +Y, columns along +X.
    ((0.0, 1.0, 0.0, 1.0, 0.0, 0.0), (10.0 + 3 * 0.002, 20.0 + 5 * 0.0005), 90.0),
]


@pytest.mark.parametrize(("orientation", "expected_xy", "rotation"), AXIS_ALIGNED)
def test_pixel_to_slide_axis_aligned(
    orientation: tuple[float, ...], expected_xy: tuple[float, float], rotation: float
) -> None:
    geometry = make_geometry(orientation)
    result = geometry.pixel_to_slide(np.array([[0, 0], [3, 5]]))
    assert result.shape == (2, 3)
    np.testing.assert_allclose(result[0], ORIGIN, atol=1e-12)
    np.testing.assert_allclose(result[1], (*expected_xy, 0.5), atol=1e-12)


@pytest.mark.parametrize(("orientation", "expected_xy", "rotation"), AXIS_ALIGNED)
def test_slide_to_pixel_axis_aligned(
    orientation: tuple[float, ...], expected_xy: tuple[float, float], rotation: float
) -> None:
    geometry = make_geometry(orientation)
    np.testing.assert_allclose(
        geometry.slide_to_pixel(np.array([expected_xy])), [[3.0, 5.0]], atol=1e-9
    )
    np.testing.assert_allclose(
        geometry.slide_to_pixel(np.array([(*expected_xy, 0.5)])), [[3.0, 5.0]], atol=1e-9
    )


@pytest.mark.parametrize(("orientation", "expected_xy", "rotation"), AXIS_ALIGNED)
def test_rotation_degrees_axis_aligned(
    orientation: tuple[float, ...], expected_xy: tuple[float, float], rotation: float
) -> None:
    assert make_geometry(orientation).rotation_degrees() == pytest.approx(rotation)


@pytest.mark.parametrize(
    "orientation",
    [item[0] for item in AXIS_ALIGNED]
    + [
        # Mirrored layouts: a rotation still brings rows onto +X.
        (1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
        (0.0, -1.0, 0.0, 1.0, 0.0, 0.0),
    ],
)
def test_rotation_aligns_rows_with_x_axis(orientation: tuple[float, ...]) -> None:
    # Independent of the formula: rotate a matrix of slide X values with numpy.rot90 (which
    # rotates counterclockwise as displayed) and check that X grows left to right.
    geometry = make_geometry(orientation)
    rows, columns = 4, 6
    grid = np.stack(np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij"), axis=-1)
    x = geometry.pixel_to_slide(grid.reshape(-1, 2))[:, 0].reshape(rows, columns)
    degrees = geometry.rotation_degrees()
    assert degrees % 90 == 0
    rotated = np.rot90(x, k=int(degrees // 90))
    assert np.all(np.diff(rotated, axis=1) > 0)
    assert np.allclose(np.diff(rotated, axis=0), 0)


def test_rotation_degrees_oblique() -> None:
    angle = math.radians(30)
    # Rows point 30 degrees from +X towards +Y; columns are perpendicular.
    orientation = (math.cos(angle), math.sin(angle), 0.0, -math.sin(angle), math.cos(angle), 0.0)
    # X seen in the display has components (right cos30, down -sin30): 30 degrees above the
    # horizontal, so a clockwise turn of 30 degrees aligns it, i.e. 330 counterclockwise.
    assert make_geometry(orientation).rotation_degrees() == pytest.approx(330.0)


def test_pixel_to_slide_matches_highdicom_for_oblique_orientation() -> None:
    angle = math.radians(25)
    orientation = (math.cos(angle), math.sin(angle), 0.0, -math.sin(angle), math.cos(angle), 0.0)
    geometry = make_geometry(orientation)
    pixels = np.array([[0, 0], [3, 5], [999, 17], [12, 400]])
    # highdicom takes integer (column, row) indices.
    oracle = PixelToReferenceTransformer(
        image_position=ORIGIN, image_orientation=orientation, pixel_spacing=SPACING
    )
    np.testing.assert_allclose(
        geometry.pixel_to_slide(pixels), oracle(pixels[:, ::-1]), rtol=0, atol=1e-9
    )


@pytest.mark.parametrize(
    "orientation",
    [item[0] for item in AXIS_ALIGNED]
    + [(math.cos(0.3), math.sin(0.3), 0.0, -math.sin(0.3), math.cos(0.3), 0.0)],
)
def test_round_trip(orientation: tuple[float, ...]) -> None:
    geometry = make_geometry(orientation)
    rng = np.random.default_rng(0)
    pixels = rng.uniform(-100, 5000, size=(50, 2))
    slide = geometry.pixel_to_slide(pixels)
    np.testing.assert_allclose(geometry.slide_to_pixel(slide), pixels, atol=1e-6)
    np.testing.assert_allclose(geometry.slide_to_pixel(slide[:, :2]), pixels, atol=1e-6)


def test_slide_to_pixel_projects_points_off_the_plane() -> None:
    geometry = make_geometry((1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    above = [[10.0 + 5 * 0.0005, 20.0 + 3 * 0.002, 7.0]]
    np.testing.assert_allclose(geometry.slide_to_pixel(above), [[3.0, 5.0]], atol=1e-9)


def test_slide_to_pixel_xy_of_perpendicular_plane_raises() -> None:
    geometry = make_geometry((1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    with pytest.raises(RegionError, match=r"\(x, y, z\)"):
        geometry.slide_to_pixel([[10.0, 20.0]])
    # With z given, the point can still be placed.
    np.testing.assert_allclose(
        geometry.slide_to_pixel([[10.0 + 5 * 0.0005, 20.0, 0.5 + 3 * 0.002]]),
        [[3.0, 5.0]],
        atol=1e-9,
    )


@pytest.mark.parametrize("bad", [np.zeros((3,)), np.zeros((2, 3)), np.zeros((1, 2, 2))])
def test_pixel_to_slide_rejects_bad_shapes(bad: np.ndarray) -> None:
    with pytest.raises(RegionError, match=r"pixel_indices.*\(N, 2\)"):
        make_geometry(DEFAULT_ORIENTATION).pixel_to_slide(bad)


def test_slide_to_pixel_rejects_bad_shapes() -> None:
    with pytest.raises(RegionError, match=r"\(N, 2\) or \(N, 3\)"):
        make_geometry(DEFAULT_ORIENTATION).slide_to_pixel(np.zeros((2, 4)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pixel_spacing": (0.0, 0.001)}, "pixel_spacing"),
        ({"pixel_spacing": (0.001,)}, "pixel_spacing"),
        ({"orientation": (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)}, "non-parallel"),
        ({"orientation": (1.0, 0.0, 0.0)}, "6 direction cosines"),
        ({"origin": (0.0, 0.0)}, "origin"),
    ],
)
def test_constructor_validates(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "origin": ORIGIN,
        "orientation": DEFAULT_ORIENTATION,
        "pixel_spacing": SPACING,
    }
    arguments.update(kwargs)
    with pytest.raises(RegionError, match=message):
        ImageGeometry(**arguments)  # type: ignore[arg-type]


def test_from_dataset_reads_all_attributes() -> None:
    ds = make_wsi_dataset(
        orientation=[0, -1, 0, -1, 0, 0], shared_spacing=[0.002, 0.0005], shared_z=0.5
    )
    geometry = ImageGeometry.from_dataset(ds)
    assert geometry == ImageGeometry(
        origin=(10.0, 20.0, 0.5),
        orientation=(0.0, -1.0, 0.0, -1.0, 0.0, 0.0),
        pixel_spacing=(0.002, 0.0005),
    )
    assert all(type(v) is float for v in (*geometry.origin, *geometry.pixel_spacing))


def test_from_dataset_defaults_when_origin_and_orientation_are_missing() -> None:
    ds = make_wsi_dataset(origin=None, shared_spacing=[0.001, 0.001])
    geometry = ImageGeometry.from_dataset(ds)
    assert geometry.origin == (0.0, 0.0, 0.0)
    assert geometry.orientation == DEFAULT_ORIENTATION == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert geometry.rotation_degrees() == 0.0


def test_from_dataset_falls_back_to_per_frame_items() -> None:
    ds = make_wsi_dataset(orientation=[1, 0, 0, 0, 1, 0])
    frame = Dataset()
    frame.PixelMeasuresSequence = [make_item(PixelSpacing=[0.004, 0.003])]
    frame.PlanePositionSlideSequence = [make_item(ZOffsetInSlideCoordinateSystem=1.25)]
    ds.PerFrameFunctionalGroupsSequence = [frame, Dataset()]
    geometry = ImageGeometry.from_dataset(ds)
    assert geometry.pixel_spacing == (0.004, 0.003)
    assert geometry.origin == (10.0, 20.0, 1.25)


def test_from_dataset_falls_back_to_top_level_pixel_spacing() -> None:
    ds = make_wsi_dataset()
    ds.PixelSpacing = [0.0025, 0.0025]
    assert ImageGeometry.from_dataset(ds).pixel_spacing == (0.0025, 0.0025)


def test_from_dataset_prefers_shared_pixel_spacing() -> None:
    ds = make_wsi_dataset(shared_spacing=[0.001, 0.002])
    ds.PixelSpacing = [0.5, 0.5]
    assert ImageGeometry.from_dataset(ds).pixel_spacing == (0.001, 0.002)


def test_from_dataset_reads_orientation_from_plane_orientation_sequence() -> None:
    ds = make_wsi_dataset(shared_spacing=[0.001, 0.001])
    ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence = [
        make_item(ImageOrientationSlide=[0, 1, 0, 1, 0, 0])
    ]
    assert ImageGeometry.from_dataset(ds).orientation == (0.0, 1.0, 0.0, 1.0, 0.0, 0.0)


def test_from_dataset_without_pixel_spacing_raises() -> None:
    with pytest.raises(InvalidDataError, match="Pixel Spacing"):
        ImageGeometry.from_dataset(make_wsi_dataset())


def test_from_dataset_with_bad_orientation_raises() -> None:
    ds = make_wsi_dataset(shared_spacing=[0.001, 0.001])
    ds.ImageOrientationSlide = [1, 0, 0, 0]
    with pytest.raises(InvalidDataError, match="6 values"):
        ImageGeometry.from_dataset(ds)

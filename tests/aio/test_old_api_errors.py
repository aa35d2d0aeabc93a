"""Behaviour matched to dicomslide 0.7 (issue 13): error classes, physical offset, sampler checks.

The differential harness in ``tests/parity`` compares these with 0.7.2 itself; these tests pin
them without it.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

import dicomslide
from dicomslide.synthetic import write_slide
from tests.support.slides import slide_spec

SPEC = slide_spec(
    (256, 512),
    64,
    2,
    bare=True,
    transfer_syntax_uid="1.2.840.10008.1.2.1",
    origin_mm=(21.5, 38.25),
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("old-api")
    write_slide(root, SPEC)
    return root


@pytest.fixture
async def slide(folder: Path, tmp_path: Path) -> dicomslide.Slide:
    client = dicomslide.DICOMfileClient(folder, index_dir=tmp_path / "index")
    (found,) = await dicomslide.find_slides(client)
    return found


def test_index_range_error_is_what_0_7_raised() -> None:
    error = dicomslide.IndexRangeError("Level 7 is out of range")
    for cls in (IndexError, KeyError, ValueError, dicomslide.RegionError):
        assert isinstance(error, cls)
    assert isinstance(error, dicomslide.DicomSlideError)
    # KeyError would have quoted the message.
    assert str(error) == "Level 7 is out of range"


async def test_out_of_range_arguments_raise_index_range_error(slide: dicomslide.Slide) -> None:
    calls = [
        lambda: slide.get_volume_images(channel_index=1),
        lambda: slide.get_volume_images(focal_plane_index=1),
        lambda: slide.get_channel_type(1),
        lambda: slide.get_focal_plane_offset(1),
        lambda: slide.get_focal_plane_index(12345.0),
        lambda: slide.get_slide_offset((0, 0), 2),
        lambda: slide.get_channel_index("nope", dicomslide.ChannelTypes.OPTICAL_PATH),
    ]
    for call in calls:
        with pytest.raises(dicomslide.IndexRangeError):
            call()
    with pytest.raises(IndexError, match="Level 2 is out of range"):
        await slide.get_image_region((0, 0), 2, (4, 4))
    matrix = slide.get_volume_images()[0].get_total_pixel_matrix()
    with pytest.raises(KeyError):
        matrix.get_tile_index((99, 0))
    with pytest.raises(IndexError):
        await matrix[matrix.num_tiles]
    # A wrong type is still a plain RegionError (a ValueError), not an index error.
    with pytest.raises(dicomslide.RegionError) as info:
        slide.get_focal_plane_offset("0")  # type: ignore[arg-type]
    assert not isinstance(info.value, IndexError)


def test_written_origin(folder: Path) -> None:
    for path in folder.glob("*.dcm"):
        origin = pydicom.dcmread(path, stop_before_pixels=True).TotalPixelMatrixOriginSequence[0]
        assert float(origin.XOffsetInSlideCoordinateSystem) == 21.5
        assert float(origin.YOffsetInSlideCoordinateSystem) == 38.25


async def test_physical_offset_is_the_total_pixel_matrix_origin(slide: dicomslide.Slide) -> None:
    # Not the smallest X and Y the image covers: with the default orientation rows run along
    # -X and columns along -Y, so the image lies below and left of its origin.
    for image in slide.get_volume_images():
        assert image.physical_offset == (21.5, 38.25)
    assert slide.physical_offset == (21.5, 38.25)


async def test_sampler_rejects_boxes_and_tiles_outside_the_matrix(slide: dicomslide.Slide) -> None:
    matrix = slide.get_volume_images()[0].get_total_pixel_matrix()
    with pytest.raises(ValueError, match="does not lie in"):
        dicomslide.TotalPixelMatrixSampler(matrix, (16, 16), bounding_box=((0, 0), (257, 10)))
    inside = dicomslide.TotalPixelMatrixSampler(
        matrix, (16, 16), bounding_box=((240, 500), (16, 12))
    )
    assert [inside.get_region_grid_position(i) for i in range(len(inside))] == [(15, 31)]
    with pytest.raises(IndexError, match=r"Tile grid position \(4, 0\) does not exist"):
        dicomslide.TotalPixelMatrixSampler(matrix, (16, 16), tile_grid_positions=[(4, 0)])


async def test_annotation_region_has_the_shape_of_the_slide_region(tmp_path: Path) -> None:
    # The example: a 0.05 x 0.03 mm rectangle at level 2 of a 0.001 mm slide gave one
    # row and up to two columns more than get_slide_region (and 0.7) on the same rectangle.
    import highdicom as hd
    import numpy as np
    from pydicom.sr.codedict import codes

    spec = slide_spec(
        (256, 512),
        64,
        3,
        bare=True,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        pixel_spacing_mm=0.001,
    )
    write_slide(tmp_path / "s", spec)
    client = dicomslide.DICOMfileClient(tmp_path / "s", index_dir=tmp_path / "index")
    (slide,) = await dicomslide.find_slides(client)
    x0, y0 = slide.get_slide_offset((40, 100), 2)
    x0, y0 = x0 - 0.05, y0 - 0.03  # inside the image: rows run along -X, columns along -Y
    corners = [(x0, y0), (x0 + 0.05, y0), (x0 + 0.05, y0 + 0.03), (x0, y0 + 0.03), (x0, y0)]
    polygon = hd.sr.Scoord3DContentItem(
        name=codes.DCM.ImageRegion,
        graphic_type="POLYGON",
        graphic_data=np.array([(x, y, 0.0) for x, y in corners]),
        frame_of_reference_uid=slide.frame_of_reference_uid,
    )
    region = await slide.get_slide_region_for_annotation(polygon, 2)
    # The same box, its size computed from the corners as the annotation's is.
    width, height = (x0 + 0.05) - x0, (y0 + 0.03) - y0
    direct = await slide.get_slide_region((x0, y0), 2, (width, height))
    # Not one row and column more than whole pixel spacings fit (9 x 14 before).
    # 7.5 x 12.5 spacings: rounding of the halves depends on the last bits of the coordinates.
    assert region.shape == direct.shape
    assert region.shape[0] in (7, 8)
    assert region.shape[1] in (12, 13)
    np.testing.assert_array_equal(region, direct)
    # A POINT still gives one pixel.
    point = hd.sr.Scoord3DContentItem(
        name=codes.DCM.ImageRegion,
        graphic_type="POINT",
        graphic_data=np.array([(x0, y0, 0.0)]),
        frame_of_reference_uid=slide.frame_of_reference_uid,
    )
    assert (await slide.get_slide_region_for_annotation(point, 2)).shape == (1, 1, 3)

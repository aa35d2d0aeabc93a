"""Edge frames padded with black or random bytes past the total pixel matrix (issue 17, item 1).

Converters pad the last tile row and column to full frame size with whatever they like; the
reader must show only the pixels inside Total Pixel Matrix Rows/Columns and the fill value
beyond them, on every read path. The files are written by :mod:`dicomslide.synthetic` with
``edge_padding="zero"`` or ``"random"``; ``expected_tile`` returns each frame as stored, so the
tests also check that the padding really is in the files (otherwise they could not fail).

:func:`check_edge_reads` is shared with the DICOMweb (Orthanc) variant of these tests.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

import dicomslide
from dicomslide.synthetic import SlideSpec, expected_pixels, expected_tile
from tests.support.slides import slide_spec, write_slides

# The example: 957 columns x 715 rows, 256-pixel tiles; level 1 has edges as well.
_padded_slide = partial(slide_spec, (715, 957), 256, 2, bare=True, pattern="position")

SPECS: dict[str, SlideSpec] = {
    "rgb_zero_native": _padded_slide(
        transfer_syntax_uid=ExplicitVRLittleEndian,
        edge_padding="zero",
        container_id="PAD-ZERO",
    ),
    "rgb_random_j2k": _padded_slide(
        transfer_syntax_uid=JPEG2000Lossless,
        edge_padding="random",
        container_id="PAD-RANDOM",
        seed=3,
    ),
    "mono16_random_native": _padded_slide(
        transfer_syntax_uid=ExplicitVRLittleEndian,
        photometric="MONOCHROME2",
        bits=16,
        icc_profile=False,
        edge_padding="random",
        container_id="PAD-MONO",
        seed=5,
    ),
}


def fill_of(spec: SlideSpec) -> int:
    """Fill value the README promises: white for colour, 0 for monochrome."""
    return 0 if spec.photometric == "MONOCHROME2" else 255


def assert_padding_in_files(spec: SlideSpec) -> None:
    """The stored edge frames really differ from the fill value past the matrix edge."""
    rows, cols = spec.level_shape(0)
    th, tw = spec.tile_size
    gr, gc = -(-rows // th), -(-cols // tw)
    corner = expected_tile(spec, 0, gr - 1, gc - 1)
    beyond = corner[rows - (gr - 1) * th :, cols - (gc - 1) * tw :]
    assert beyond.size > 0
    assert (beyond != fill_of(spec)).mean() > 0.9


async def check_edge_reads(slide: dicomslide.Slide, spec: SlideSpec) -> int:
    """Read across the right and bottom edges through every path; return the checks made."""
    fill = fill_of(spec)
    checks = 0
    for level in range(spec.num_levels):
        rows, cols = spec.level_shape(level)
        th, tw = spec.tile_size
        matrix = slide.get_volume_images()[level].get_total_pixel_matrix()
        if level == 0:
            # The example (get_image_region takes level-0 offsets): rows 0-50,
            # columns 857-1057 of a 957-column image.
            region = await slide.get_image_region((0, cols - 100), 0, (50, 200))
        else:
            region = await matrix.read_region((0, cols - 100), (50, 200))
        np.testing.assert_array_equal(
            region[:, :100],
            expected_pixels(spec, level, 0, 0, slice(0, 50), slice(cols - 100, cols)),
        )
        assert (region[:, 100:] == fill).all(), f"padding leaked at level {level}"
        checks += 1
        # Across the bottom-right corner.
        region = await matrix.read_region((rows - 30, cols - 40), (70, 90))
        np.testing.assert_array_equal(
            region[:30, :40],
            expected_pixels(spec, level, 0, 0, slice(rows - 30, rows), slice(cols - 40, cols)),
        )
        assert (region[30:] == fill).all()
        assert (region[:, 40:] == fill).all()
        checks += 1
        # NumPy-style slicing clips to the matrix, so it never sees padding.
        sliced = await matrix[rows - 20 :, cols - 300 :]
        np.testing.assert_array_equal(
            sliced,
            expected_pixels(spec, level, 0, 0, slice(rows - 20, rows), slice(cols - 300, cols)),
        )
        checks += 1
        # matrix[i]: edge tiles at full tile size, padded with the fill value. Read twice: the
        # second read is answered from the decoded-tile cache, which holds the padded frame.
        gr, gc = matrix.tile_grid_shape
        for tile_row, tile_col in [(0, gc - 1), (gr - 1, 0), (gr - 1, gc - 1)]:
            index = matrix.get_tile_index((tile_row, tile_col))
            (r0, c0), (h, w) = matrix.get_tile_bounding_box(index)
            for _ in range(2):
                tile = await matrix[index]
                assert tile.shape == (th, tw, spec.samples_per_pixel)
                np.testing.assert_array_equal(
                    tile[:h, :w],
                    expected_pixels(spec, level, 0, 0, slice(r0, r0 + h), slice(c0, c0 + w)),
                )
                assert (tile[h:] == fill).all()
                assert (tile[:, w:] == fill).all()
                checks += 1
        stack = await matrix[[gc - 1, gr * gc - 1]]
        assert (stack[1, rows - (gr - 1) * th :] == fill).all()
        checks += 1
        # The sampler's regions run past the edge by design.
        sampler = dicomslide.TotalPixelMatrixSampler(matrix, (200, 200))
        last = len(sampler) - 1
        (r0, c0), (h, w) = sampler.get_region_bounding_box(last)
        piece = await sampler[last]
        inside_r, inside_c = rows - r0, cols - c0
        np.testing.assert_array_equal(
            piece[:inside_r, :inside_c],
            expected_pixels(spec, level, 0, 0, slice(r0, rows), slice(c0, cols)),
        )
        assert (piece[inside_r:] == fill).all()
        assert (piece[:, inside_c:] == fill).all()
        checks += 1
        # Bulk streaming crops edge tiles to the matrix.
        async for tile in dicomslide.iter_tiles(slide, level, ordered=True):
            np.testing.assert_array_equal(
                tile.pixels,
                expected_pixels(
                    spec,
                    level,
                    0,
                    0,
                    slice(tile.row, tile.row + tile.pixels.shape[0]),
                    slice(tile.column, tile.column + tile.pixels.shape[1]),
                ),
            )
        checks += 1
    return checks


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_slides(tmp_path_factory.mktemp("edge-padding"), SPECS)


@pytest.mark.parametrize("name", sorted(SPECS))
async def test_edge_padding_local(folders: dict[str, Path], name: str) -> None:
    spec = SPECS[name]
    assert_padding_in_files(spec)
    # The file holds the padding exactly as written (lossless), so the fix is what hides it.
    level0 = sorted(folders[name].glob("*_volume_L0.dcm"))[0]
    ds = pydicom.dcmread(level0)
    assert ds.TotalPixelMatrixColumns % ds.Columns
    assert ds.TotalPixelMatrixRows % ds.Rows
    async with dicomslide.DICOMfileClient(folders[name]) as client:
        (slide,) = await dicomslide.find_slides(client)
        assert await check_edge_reads(slide, spec) == 2 * 12


def test_iter_tiles_in_region_clips_to_matrix() -> None:
    from dicomslide.geometry import iter_tiles_in_region

    # 715 x 957 matrix, 256-pixel tiles: the grid ends at 768 x 1024.
    tiles = iter_tiles_in_region((0, 857), (50, 200), (256, 256), (715, 957))
    assert [(tr, tc) for tr, tc, _, _ in tiles] == [(0, 3)]
    _, _, tile_sl, out_sl = tiles[0]
    assert tile_sl == (slice(0, 50), slice(89, 189))
    assert out_sl == (slice(0, 50), slice(0, 100))
    # Entirely in the padding of the last tile column: nothing to copy.
    assert iter_tiles_in_region((0, 960), (10, 40), (256, 256), (715, 957)) == []
    assert iter_tiles_in_region((-20, -20), (10, 10), (256, 256), (715, 957)) == []


@pytest.mark.parametrize("name", ["rgb_zero_native", "rgb_random_j2k"])
async def test_edge_padding_openslide_api_matches_openslide(
    folders: dict[str, Path], name: str
) -> None:
    openslide = pytest.importorskip("openslide")
    folder = folders[name]
    reference = openslide.OpenSlide(str(sorted(folder.glob("*.dcm"))[0]))
    ours = await dicomslide.open_slide(folder, correct_color=False)
    try:
        width, height = reference.dimensions
        compared = 0
        for level in range(reference.level_count):
            ds = reference.level_downsamples[level]
            lw, lh = reference.level_dimensions[level]
            # Regions across the right edge, the bottom edge and the corner, in level-0 pixels.
            for x, y in [(lw - 100, 0), (0, lh - 50), (lw - 70, lh - 60)]:
                location = (int(x * ds), int(y * ds))
                want = np.asarray(reference.read_region(location, level, (300, 200)))
                got = np.asarray(await ours.read_region(location, level, (300, 200)))
                np.testing.assert_array_equal(got, want)
                compared += 1
        assert compared == 3 * reference.level_count
        assert (width, height) == SPECS[name].size[::-1]
    finally:
        reference.close()
        await ours.close()

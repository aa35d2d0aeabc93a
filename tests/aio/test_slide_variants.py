"""Pixel-exact reads of every layout variant, through the async API on local folders.

Each variant is written once per session by the package's own generator, whose pixels encode
their position; reads are compared with the generator's ground truth.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

import dicomslide
from dicomslide.synthetic import SlideSpec, expected_pixels, write_slide
from tests.support.slides import write_slides

EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
RLE = "1.2.840.10008.1.2.5"
J2K = "1.2.840.10008.1.2.4.90"
JPEG = "1.2.840.10008.1.2.4.50"

SMALL = {"size": (300, 520), "tile_size": (128, 128), "levels": 2}

VARIANTS: dict[str, SlideSpec] = {
    "tiled_full_native": SlideSpec(transfer_syntax_uid=EXPLICIT, **SMALL),  # type: ignore[arg-type]
    "implicit_vr": SlideSpec(transfer_syntax_uid=IMPLICIT, **SMALL),  # type: ignore[arg-type]
    "rle": SlideSpec(transfer_syntax_uid=RLE, **SMALL),  # type: ignore[arg-type]
    "j2k_lossless": SlideSpec(transfer_syntax_uid=J2K, **SMALL),  # type: ignore[arg-type]
    "sparse_shuffled": SlideSpec(
        transfer_syntax_uid=EXPLICIT,
        dimension_organization="TILED_SPARSE",
        shuffle_frames=True,
        **SMALL,  # type: ignore[arg-type]
    ),
    "per_frame_no_dimension_org": SlideSpec(
        transfer_syntax_uid=EXPLICIT,
        dimension_organization="NONE",
        with_frame_of_reference=False,
        with_image_type=False,
        **SMALL,  # type: ignore[arg-type]
    ),
    "concatenation": SlideSpec(
        transfer_syntax_uid=EXPLICIT,
        concatenation_parts=3,
        **SMALL,  # type: ignore[arg-type]
    ),
    "multi_z_tiled_full": SlideSpec(
        transfer_syntax_uid=EXPLICIT,
        focal_planes=3,
        **SMALL,  # type: ignore[arg-type]
    ),
    "multi_z_separate": SlideSpec(
        transfer_syntax_uid=EXPLICIT,
        focal_planes=2,
        focal_planes_in_separate_instances=True,
        dimension_organization="TILED_SPARSE",
        **SMALL,  # type: ignore[arg-type]
    ),
    "fluorescence_3_paths_one_instance": SlideSpec(
        transfer_syntax_uid=EXPLICIT,
        photometric="MONOCHROME2",
        bits=16,
        optical_paths=3,
        channels_in_separate_instances=False,
        icc_profile=False,
        **SMALL,  # type: ignore[arg-type]
    ),
    "fluorescence_2_paths_separate": SlideSpec(
        transfer_syntax_uid=EXPLICIT,
        photometric="MONOCHROME2",
        optical_paths=2,
        channels_in_separate_instances=True,
        icc_profile=False,
        **SMALL,  # type: ignore[arg-type]
    ),
    "extended_offset_table": SlideSpec(
        transfer_syntax_uid=RLE,
        extended_offset_table=True,
        **SMALL,  # type: ignore[arg-type]
    ),
}


@pytest.fixture(scope="session")
def variant_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_slides(tmp_path_factory.mktemp("variants"), VARIANTS)


async def _open(folder: Path, tmp_path: Path) -> dicomslide.Slide:
    client = dicomslide.DICOMfileClient(folder, index_dir=tmp_path / "index")
    slides = await dicomslide.find_slides(client)
    assert len(slides) == 1
    return slides[0]


async def _open_native(
    variant_dirs: dict[str, Path], tmp_path: Path
) -> tuple[SlideSpec, dicomslide.Slide]:
    """The spec and the slide of the plain TILED_FULL variant, which most API tests read."""
    return VARIANTS["tiled_full_native"], await _open(variant_dirs["tiled_full_native"], tmp_path)


@pytest.mark.parametrize("name", sorted(VARIANTS))
async def test_every_level_channel_and_plane_matches_ground_truth(
    name: str, variant_dirs: dict[str, Path], tmp_path: Path
) -> None:
    spec = VARIANTS[name]
    slide = await _open(variant_dirs[name], tmp_path)
    assert slide.num_levels == spec.num_levels
    assert slide.num_channels == spec.optical_paths
    assert slide.num_focal_planes == spec.focal_planes
    assert slide.total_pixel_matrix_dimensions == tuple(
        spec.level_shape(i) for i in range(spec.num_levels)
    )
    rng = np.random.default_rng(7)
    for level in range(slide.num_levels):
        rows, cols = spec.level_shape(level)
        factor = slide.downsampling_factors[level]
        for channel in range(slide.num_channels):
            for plane in range(slide.num_focal_planes):
                # whole level, plus random interior regions
                whole = await slide.get_image_region((0, 0), level, (rows, cols), channel, plane)
                truth = expected_pixels(spec, level, channel, plane)
                np.testing.assert_array_equal(whole, truth)
                for _ in range(3):
                    r = int(rng.integers(0, rows - 1))
                    c = int(rng.integers(0, cols - 1))
                    h = int(rng.integers(1, rows - r + 1))
                    w = int(rng.integers(1, cols - c + 1))
                    region = await slide.get_image_region(
                        (int(r * factor), int(c * factor)), level, (h, w), channel, plane
                    )
                    np.testing.assert_array_equal(region, truth[r : r + h, c : c + w])


async def test_label_overview_and_flavors(variant_dirs: dict[str, Path], tmp_path: Path) -> None:
    slide = await _open(variant_dirs["tiled_full_native"], tmp_path)
    assert len(slide.label_images) == 1
    assert len(slide.overview_images) == 1
    label = slide.label_images[0]
    pixels = await label.get_image_region((0, 0), label.size)
    assert pixels.shape == (*label.size, 3)


async def test_missing_sparse_tiles_are_filled_white(tmp_path: Path) -> None:
    spec = SlideSpec(
        transfer_syntax_uid=EXPLICIT,
        dimension_organization="TILED_SPARSE",
        sparse_missing_tiles=((0, 1), (1, 2)),
        **SMALL,  # type: ignore[arg-type]
    )
    write_slide(tmp_path / "s", spec)
    slide = await _open(tmp_path / "s", tmp_path)
    region = await slide.get_image_region((0, 0), 0, (256, 384))
    truth = expected_pixels(spec, 0, 0, 0, slice(0, 256), slice(0, 384))
    assert (region[0:128, 128:256] == 255).all()
    assert (region[128:256, 256:384] == 255).all()
    np.testing.assert_array_equal(region[0:128, 0:128], truth[0:128, 0:128])
    np.testing.assert_array_equal(region[128:256, 128:256], truth[128:256, 128:256])


async def test_region_beyond_bottom_right_is_filled(
    variant_dirs: dict[str, Path], tmp_path: Path
) -> None:
    spec, slide = await _open_native(variant_dirs, tmp_path)
    rows, cols = spec.size
    region = await slide.get_image_region((rows - 10, cols - 20), 0, (30, 40))
    truth = expected_pixels(spec, 0, 0, 0, slice(rows - 10, rows), slice(cols - 20, cols))
    np.testing.assert_array_equal(region[:10, :20], truth)
    assert (region[10:, :] == 255).all()
    assert (region[:, 20:] == 255).all()


async def test_negative_level_and_pixel_indices_alias(
    variant_dirs: dict[str, Path], tmp_path: Path
) -> None:
    spec, slide = await _open_native(variant_dirs, tmp_path)
    top = await slide.get_image_region(pixel_indices=(0, 0), level=-1, size=(50, 60))
    np.testing.assert_array_equal(
        top, expected_pixels(spec, spec.num_levels - 1, 0, 0, slice(0, 50), slice(0, 60))
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"offset": (0, 0), "level": 5, "size": (10, 10)}, r"valid are 0\.\.1"),
        ({"offset": (0, 0), "level": -3, "size": (10, 10)}, "Level -3 is out of range"),
        ({"offset": (0, 0), "level": 0, "size": (10, 10), "channel_index": 1}, r"0\.\.0"),
        ({"offset": (0, 0), "level": 0, "size": (10, 10), "focal_plane_index": 2}, "focal plane"),
        ({"offset": (300, 0), "level": 0, "size": (10, 10)}, r"\[0, 300\)"),
        ({"offset": (-1, 0), "level": 0, "size": (10, 10)}, "outside the base level"),
        ({"offset": (0, 0), "level": 0, "size": (0, 10)}, "positive"),
    ],
)
async def test_bad_arguments_raise_value_errors_naming_the_range(
    variant_dirs: dict[str, Path], tmp_path: Path, kwargs: dict[str, object], match: str
) -> None:
    slide = await _open(variant_dirs["tiled_full_native"], tmp_path)
    with pytest.raises(ValueError, match=match) as info:
        await slide.get_image_region(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, dicomslide.DicomSlideError)


async def test_channel_and_focal_plane_lookups(
    variant_dirs: dict[str, Path], tmp_path: Path
) -> None:
    slide = await _open(variant_dirs["multi_z_tiled_full"], tmp_path)
    offsets = [slide.get_focal_plane_offset(i) for i in range(3)]
    assert offsets == sorted(offsets)
    assert len(set(offsets)) == 3
    for i, z in enumerate(offsets):
        assert slide.get_focal_plane_index(z) == i
    with pytest.raises(ValueError, match="No focal plane"):
        slide.get_focal_plane_index(12345.0)
    fluo = await _open(variant_dirs["fluorescence_3_paths_one_instance"], tmp_path)
    ids = [fluo.get_channel_identifier(i) for i in range(3)]
    assert len(set(ids)) == 3
    for i, ident in enumerate(ids):
        assert fluo.get_channel_index(ident, "OPTICAL_PATH") == i
        assert fluo.get_channel_type(i) is dicomslide.ChannelTypes.OPTICAL_PATH
        assert fluo.find_optical_paths(identifier=ident) == (i,)
    with pytest.raises(ValueError, match="No OPTICAL_PATH channel"):
        fluo.get_channel_index("nope", dicomslide.ChannelTypes.OPTICAL_PATH)
    with pytest.raises(ValueError, match=r"valid are 0\.\.2"):
        fluo.get_channel_identifier(3)


async def test_total_pixel_matrix_indexes_like_numpy(
    variant_dirs: dict[str, Path], tmp_path: Path
) -> None:
    spec, slide = await _open_native(variant_dirs, tmp_path)
    matrix = slide.get_volume_images()[0].get_total_pixel_matrix()
    truth = expected_pixels(spec, 0)
    assert matrix.shape == truth.shape
    assert matrix.dtype == truth.dtype
    keys = [
        (slice(None, 100), slice(200, 300)),
        (slice(-50, None), slice(-70, -3)),
        (slice(10, 200, 7), slice(500, 100, -9), slice(None)),
        (5, slice(None, 40)),
        (slice(0, 10), -1, 1),
        (slice(290, 1000), slice(510, 9999)),
        (slice(100, 50), slice(None)),
    ]
    for key in keys:
        np.testing.assert_array_equal(await matrix[key], truth[key], err_msg=str(key))
    with pytest.raises(IndexError):
        truth[400, 0]
    with pytest.raises(ValueError, match="out of bounds"):
        await matrix[400, 0]
    # one-dimensional indices are tiles
    assert len(matrix) == matrix.num_tiles == 3 * 5
    tile = await matrix[matrix.get_tile_index((2, 4))]
    assert tile.shape == matrix.tile_shape
    (r, c), (h, w) = matrix.get_tile_bounding_box(matrix.get_tile_index((2, 4)))
    np.testing.assert_array_equal(tile[:h, :w], truth[r : r + h, c : c + w])
    assert (tile[h:, :] == 255).all()
    tiles = await matrix[[0, 1, 2, 5, 6, 7]]
    assert tiles.shape == (6, *matrix.tile_shape)
    np.testing.assert_array_equal(tiles[4], truth[128:256, 128:256])
    assert (await matrix[2:6]).shape[0] == 4
    np.testing.assert_array_equal(await matrix[-1], await matrix[len(matrix) - 1])


async def test_sampler_regions_with_padding(variant_dirs: dict[str, Path], tmp_path: Path) -> None:
    spec, slide = await _open_native(variant_dirs, tmp_path)
    matrix = slide.get_volume_images()[0].get_total_pixel_matrix()
    sampler = dicomslide.TotalPixelMatrixSampler(matrix, (100, 100), padding=(5, 10))
    assert sampler.padding == (5, 10, 5, 10)
    assert sampler.padded_region_shape == (120, 110, 3)
    assert len(sampler) == 3 * 6
    truth = np.pad(expected_pixels(spec, 0), ((10, 200), (5, 200), (0, 0)), constant_values=255)
    i = 0
    async for region in sampler:
        gr, gc = sampler.get_region_grid_position(i)
        np.testing.assert_array_equal(
            region, truth[gr * 100 : gr * 100 + 120, gc * 100 : gc * 100 + 110]
        )
        i += 1
    assert i == len(sampler)
    only = dicomslide.TotalPixelMatrixSampler(matrix, (64, 64), tile_grid_positions=[(0, 0)])
    assert len(only) == 4


async def test_sampler_bounding_box_selects_from_the_matrix_grid(
    variant_dirs: dict[str, Path], tmp_path: Path
) -> None:
    # The regions of the matrix-wide grid that overlap the box (as dicomslide 0.7 samples, and
    # as tile_grid_positions selects), not a grid that starts at the box.
    spec, slide = await _open_native(variant_dirs, tmp_path)
    matrix = slide.get_volume_images()[0].get_total_pixel_matrix()
    sampler = dicomslide.TotalPixelMatrixSampler(
        matrix, (6, 10), bounding_box=((7, 7), (12, 12)), padding=(2, 4)
    )
    positions = [sampler.get_region_grid_position(i) for i in range(len(sampler))]
    assert positions == [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1)]
    truth = np.pad(expected_pixels(spec, 0), ((4, 4), (2, 2), (0, 0)), constant_values=255)
    for i, (gr, gc) in enumerate(positions):
        np.testing.assert_array_equal(
            await sampler[i], truth[gr * 6 : gr * 6 + 14, gc * 10 : gc * 10 + 14]
        )
    # A box covering one tile selects the same regions as that tile's grid position.
    (r, c), (h, w) = matrix.get_tile_bounding_box(matrix.get_tile_index((1, 2)))
    by_box = dicomslide.TotalPixelMatrixSampler(matrix, (100, 90), bounding_box=((r, c), (h, w)))
    by_tile = dicomslide.TotalPixelMatrixSampler(matrix, (100, 90), tile_grid_positions=[(1, 2)])
    grid = [by_box.get_region_grid_position(i) for i in range(len(by_box))]
    assert grid == [by_tile.get_region_grid_position(i) for i in range(len(by_tile))]
    assert grid == [(1, 2), (1, 3), (1, 4), (2, 2), (2, 3), (2, 4)]


async def test_concurrent_reads_share_requests_and_never_refetch(
    variant_dirs: dict[str, Path], tmp_path: Path
) -> None:
    spec, slide = await _open_native(variant_dirs, tmp_path)
    before = slide.cache_stats.requests
    rng = np.random.default_rng(1)
    offsets = [(int(rng.integers(0, 200)), int(rng.integers(0, 400))) for _ in range(64)]
    regions = await asyncio.gather(*(slide.get_image_region(o, 0, (100, 120)) for o in offsets))
    stats = slide.cache_stats
    touched = {
        (tr, tc)
        for r, c in offsets
        for tr in range(r // 128, (r + 99) // 128 + 1)
        for tc in range(c // 128, (c + 119) // 128 + 1)
    }
    # 64 concurrent reads of one instance coalesce into one request; no frame twice
    assert stats.requests - before == 1
    assert stats.frames_fetched == len(touched)
    truth = expected_pixels(spec, 0)
    for (r, c), region in zip(offsets, regions, strict=True):
        np.testing.assert_array_equal(region, truth[r : r + 100, c : c + 120])
    again = await slide.get_image_region((0, 0), 0, (300, 520))
    np.testing.assert_array_equal(again, truth)
    # the whole level needs only the tiles not read yet
    assert slide.cache_stats.requests - before == 2
    assert slide.cache_stats.frames_fetched == 15
    # tiles read before come from the decoded-tile cache (or the encoded one)
    assert slide.cache_stats.hits + slide.cache_stats.decoded_hits >= len(touched)


async def test_cancelled_reader_does_not_break_others(
    variant_dirs: dict[str, Path], tmp_path: Path
) -> None:
    spec, slide = await _open_native(variant_dirs, tmp_path)
    a = asyncio.ensure_future(slide.get_image_region((0, 0), 0, (300, 520)))
    b = asyncio.ensure_future(slide.get_image_region((0, 0), 0, (300, 520)))
    await asyncio.sleep(0)
    a.cancel()
    result = await b
    np.testing.assert_array_equal(result, expected_pixels(spec, 0))
    assert a.cancelled()


@pytest.mark.parametrize(
    "orientation",
    [
        (0.0, -1.0, 0.0, -1.0, 0.0, 0.0),
        (1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
        (0.0, 1.0, 0.0, 1.0, 0.0, 0.0),
        (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    ],
)
async def test_slide_region_is_aligned_with_slide_axes(
    orientation: tuple[float, ...], tmp_path: Path
) -> None:
    spec = SlideSpec(
        transfer_syntax_uid=EXPLICIT,
        image_orientation=orientation,
        **SMALL,  # type: ignore[arg-type]
    )
    write_slide(tmp_path / "s", spec)
    slide = await _open(tmp_path / "s", tmp_path)
    truth = expected_pixels(spec, 0)
    image = slide.get_volume_images()[0]
    spacing = spec.pixel_spacing_mm
    # a slide region inside the image: 40 px along X, 30 px along Y
    x0, y0 = image.get_slide_offset((100, 200))
    region = await slide.get_slide_region((x0, y0), 0, (40 * spacing, 30 * spacing))
    assert region.shape == (30, 40, 3)
    for i, j in [(0, 0), (29, 0), (0, 39), (17, 23)]:
        r, c = image.get_pixel_indices((x0 + j * spacing, y0 + i * spacing))
        np.testing.assert_array_equal(region[i, j], truth[r, c])
    # mapping round trip
    pix = np.array([[0, 0], [10, 20], [299, 519]])
    np.testing.assert_array_equal(
        slide.map_slide_coordinates_to_pixel_indices(
            slide.map_pixel_indices_to_slide_coordinates(pix, 0), 0
        ),
        pix,
    )


async def test_icc_profile_is_applied_and_can_be_switched_off(tmp_path: Path) -> None:
    import pydicom

    from tests.support.icc import wide_gamut_profile

    spec = SlideSpec(transfer_syntax_uid=EXPLICIT, label=False, overview=False, **SMALL)  # type: ignore[arg-type]
    files = write_slide(tmp_path / "s", spec)
    for path in files:
        ds = pydicom.dcmread(path)
        ds.OpticalPathSequence[0].ICCProfile = wide_gamut_profile()
        ds.save_as(path)
    client = dicomslide.DICOMfileClient(tmp_path / "s", index_dir=tmp_path / "index")
    raw = (await dicomslide.find_slides(client, correct_color=False))[0]
    managed = (await dicomslide.find_slides(client))[0]
    assert managed.correct_color
    assert not raw.correct_color
    truth = expected_pixels(spec, 0)
    as_stored = await raw.get_image_region((0, 0), 0, (300, 520))
    corrected = await managed.get_image_region((0, 0), 0, (300, 520))
    np.testing.assert_array_equal(as_stored, truth)
    assert np.abs(corrected.astype(int) - truth.astype(int)).max() > 3

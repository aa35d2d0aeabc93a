"""dicomslide_sync.OpenSlide against the real OpenSlide 4 on the same synthetic DICOM files."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

import dicomslide_sync
from dicomslide.errors import (
    ArgumentError,
    NotFoundError,
    RegionError,
    UnsupportedError,
    UsageError,
)
from dicomslide.synthetic import SlideSpec, expected_pixels, write_slide
from dicomslide_sync.openslide import OpenSlide, open_slide
from tests.support.slides import slide_spec, write_slides

openslide = pytest.importorskip("openslide")
deepzoom = pytest.importorskip("openslide.deepzoom")

VARIANTS: dict[str, SlideSpec] = {
    # TILED_FULL JPEG, RGB, with a THUMBNAIL image (OpenSlide makes it an associated image).
    "jpeg_rgb": slide_spec((1000, 1500), 256, 3, thumbnail=True),
    "jpeg_ybr": slide_spec(
        (700, 1100),
        256,
        3,
        photometric="YBR_FULL_422",
        transfer_syntax_uid=JPEGBaseline8Bit,
        container_id="YBR",
    ),
    # Sizes that are not tile multiples and a non-integer OpenSlide downsample (7.9757...).
    "native_odd": SlideSpec(
        size=(999, 1377),
        tile_size=(240, 200),
        downsample_factors=(1, 3, 8),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        container_id="ODD",
    ),
    "native_sparse": slide_spec(
        (900, 1100),
        128,
        3,
        dimension_organization="TILED_SPARSE",
        sparse_missing_tiles=((0, 0), (2, 3), (6, 8)),
        shuffle_frames=True,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        container_id="SPARSE",
    ),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_slides(tmp_path_factory.mktemp("openslide_compat"), VARIANTS)


@pytest.fixture(params=list(VARIANTS), scope="module")
def pair(
    request: pytest.FixtureRequest, folders: dict[str, Path]
) -> Iterator[tuple[str, object, OpenSlide]]:
    folder = folders[request.param]
    reference = openslide.OpenSlide(str(sorted(folder.glob("*.dcm"))[0]))
    # OpenSlide returns the stored values; so does a slide that does not correct colour.
    ours = open_slide(folder, correct_color=False)
    yield request.param, reference, ours
    ours.close()
    reference.close()


def _assert_same_image(a: object, b: object, what: str) -> None:
    x = np.asarray(a)
    y = np.asarray(b)
    assert x.shape == y.shape, what
    bad = np.argwhere(x != y)
    assert len(bad) == 0, f"{what}: {len(bad)} values differ, first at {bad[0].tolist()}"


def test_levels_match(pair: tuple[str, object, OpenSlide]) -> None:
    _, ref, ours = pair
    assert ours.level_count == ref.level_count
    assert ours.dimensions == ref.dimensions
    assert ours.level_dimensions == ref.level_dimensions
    assert ours.level_downsamples == ref.level_downsamples


def test_best_level_for_downsample(pair: tuple[str, object, OpenSlide]) -> None:
    _, ref, ours = pair
    values = [0.1, 0.5, 1.0, 1.5, 2.5, 3.0, 7.0, 8.0, 9.5, 100.0, 1e9]
    for d in ref.level_downsamples:
        values += [d, math.nextafter(d, 0.0), math.nextafter(d, math.inf), d - 1e-12]
    for d in values:
        assert ours.get_best_level_for_downsample(d) == ref.get_best_level_for_downsample(d), d


def test_read_region_random(pair: tuple[str, object, OpenSlide]) -> None:
    name, ref, ours = pair
    rng = np.random.default_rng(20240611)
    w0, h0 = ref.dimensions
    cases: list[tuple[tuple[int, int], int, tuple[int, int]]] = [
        ((0, 0), 0, (64, 64)),
        ((1, 0), 1, (5, 1)),  # half a level-1 pixel: OpenSlide resamples bilinearly
        ((3, 5), 2, (120, 90)),
        ((-7, -3), 1, (300, 200)),  # negative: shifted by whole level pixels
        ((w0 - 5, h0 - 7), 0, (20, 20)),  # bottom right corner, mostly outside
        ((w0 - 333, h0 - 41), 1, (400, 50)),
        ((w0 + 10, h0 + 10), 0, (8, 8)),  # entirely outside
        ((-10_000, 0), 0, (16, 16)),
    ]
    for _ in range(60):
        level = int(rng.integers(0, ref.level_count))
        location = (int(rng.integers(-400, w0 + 40)), int(rng.integers(-400, h0 + 40)))
        size = (int(rng.integers(1, 420)), int(rng.integers(1, 420)))
        cases.append((location, level, size))
    for location, level, size in cases:
        expected = ref.read_region(location, level, size)
        got = ours.read_region(location, level, size)
        assert got.mode == "RGBA"
        assert got.size == size
        _assert_same_image(got, expected, f"{name} read_region{(location, level, size)}")


def test_read_whole_levels(pair: tuple[str, object, OpenSlide]) -> None:
    name, ref, ours = pair
    for level in range(1, ref.level_count):
        dims = ref.level_dimensions[level]
        _assert_same_image(
            ours.read_region((0, 0), level, dims),
            ref.read_region((0, 0), level, dims),
            f"{name} level {level}",
        )


def test_thumbnail_matches(pair: tuple[str, object, OpenSlide]) -> None:
    name, ref, ours = pair
    for size in [(50, 100), (200, 200), (700, 300), (5000, 5000)]:
        got = ours.get_thumbnail(size)
        # Same level, same pixels, same Pillow resampling: identical, not just close.
        _assert_same_image(got, ref.get_thumbnail(size), f"{name} thumbnail {size}")
        assert got.mode == "RGB"
        assert got.width <= size[0]
        assert got.height <= size[1]
        assert got.width <= ours.dimensions[0]


def test_properties_match(pair: tuple[str, object, OpenSlide]) -> None:
    name, ref, ours = pair
    expected = dict(ref.properties)
    got = dict(ours.properties)
    common = set(expected) & set(got)
    differing = {k: (expected[k], got[k]) for k in common if expected[k] != got[k]}
    assert not differing, f"{name}: {differing}"
    missing = {k for k in expected if k.startswith("openslide.")} - set(got)
    assert not missing, f"{name}: OpenSlide defines {missing}"
    dicom_keys = {k for k in expected if k.startswith("dicom.")}
    # Every header value OpenSlide exposes is there under the same name, and no other.
    assert dicom_keys == {k for k in got if k.startswith("dicom.")}
    assert got["openslide.quickhash-1"] == expected["openslide.quickhash-1"]
    assert got["openslide.vendor"] == "dicom"
    assert got["openslide.background-color"] == "FFFFFF"


def test_associated_images_match(pair: tuple[str, object, OpenSlide]) -> None:
    name, ref, ours = pair
    got = ours.associated_images
    expected = ref.associated_images
    assert set(expected) <= set(got)
    for key, image in expected.items():
        _assert_same_image(got[key], image, f"{name} associated {key}")
    # dicomslide 0.7's names still work, but are not listed (iteration equals OpenSlide's).
    assert list(got) == list(expected)
    _assert_same_image(got["LABEL"], got["label"], f"{name} LABEL")
    _assert_same_image(got["OVERVIEW"], got["macro"], f"{name} OVERVIEW")


def test_color_profile(pair: tuple[str, object, OpenSlide]) -> None:
    _, ref, ours = pair
    assert ref.color_profile is not None
    assert ours.color_profile is not None
    assert ours.color_profile.tobytes() == ref.color_profile.tobytes()
    assert ours.read_region((0, 0), 0, (4, 4)).info["icc_profile"] == ref.color_profile.tobytes()


def test_deepzoom_generator_unchanged(pair: tuple[str, object, OpenSlide]) -> None:
    name, ref, ours = pair
    for tile_size, overlap in [(254, 1), (128, 0)]:
        dz_ref = deepzoom.DeepZoomGenerator(ref, tile_size=tile_size, overlap=overlap)
        dz_ours = deepzoom.DeepZoomGenerator(ours, tile_size=tile_size, overlap=overlap)
        assert dz_ours.level_count == dz_ref.level_count
        assert dz_ours.level_tiles == dz_ref.level_tiles
        for level in range(dz_ref.level_count - 4, dz_ref.level_count):
            cols, rows = dz_ref.level_tiles[level]
            for address in {(0, 0), (cols - 1, rows - 1), (cols // 2, rows // 2), (cols - 1, 0)}:
                _assert_same_image(
                    dz_ours.get_tile(level, address),
                    dz_ref.get_tile(level, address),
                    f"{name} deepzoom {tile_size}/{overlap} level {level} tile {address}",
                )


def test_missing_sparse_tiles_are_transparent(folders: dict[str, Path]) -> None:
    spec = VARIANTS["native_sparse"]
    with open_slide(folders["native_sparse"], correct_color=False) as osr:
        region = np.asarray(osr.read_region((0, 0), 0, (300, 300)))
    th, tw = spec.tile_size
    assert (region[:th, :tw] == 0).all()  # tile (0, 0) is missing
    inside = region[th : 2 * th, :tw]
    assert (inside[..., 3] == 255).all()
    np.testing.assert_array_equal(
        inside[..., :3],
        expected_pixels(spec, 0, row_slice=slice(th, 2 * th), col_slice=slice(0, tw)),
    )


def test_user_guide_snippet_runs(folders: dict[str, Path]) -> None:
    client = dicomslide_sync.DICOMfileClient(folders["jpeg_rgb"])
    slide = dicomslide_sync.find_slides(client)[0]
    openslide = OpenSlide(slide)
    print(openslide.level_count)
    print(openslide.dimensions)
    print(openslide.level_dimensions)
    print(openslide.level_downsamples)
    print(openslide.properties)
    print(openslide.associated_images)
    thumbnail = openslide.get_thumbnail(size=(50, 100))
    assert thumbnail.size == (50, 33)


def test_closed_object_refuses_every_call(folders: dict[str, Path]) -> None:
    osr = open_slide(folders["native_odd"])
    with osr as same:
        assert same is osr
    calls = [
        lambda: osr.level_count,
        lambda: osr.dimensions,
        lambda: osr.level_dimensions,
        lambda: osr.level_downsamples,
        lambda: osr.properties,
        lambda: osr.associated_images,
        lambda: osr.color_profile,
        lambda: osr.get_best_level_for_downsample(2.0),
        lambda: osr.read_region((0, 0), 0, (1, 1)),
        lambda: osr.get_thumbnail((10, 10)),
    ]
    for call in calls:
        with pytest.raises(UsageError):
            call()
    osr.close()  # closing twice is harmless


def test_bad_arguments(folders: dict[str, Path]) -> None:
    with open_slide(folders["native_odd"]) as osr:
        with pytest.raises(RegionError):
            osr.read_region((0, 0), 0, (-1, 4))
        with pytest.raises(RegionError, match="pair"):
            osr.read_region((0,), 0, (4, 4))  # type: ignore[arg-type]
        with pytest.raises(RegionError, match="Level must be an integer"):
            osr.read_region((0, 0), 0.5, (4, 4))  # type: ignore[arg-type]
        assert osr.read_region((0, 0), 0, (0, 0)).size == (0, 0)


def test_open_slide_needs_exactly_one_slide(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotFoundError):
        open_slide(empty)
    two = tmp_path / "two"
    write_slide(two / "a", SlideSpec(size=(300, 300), levels=1, container_id="A-1", seed=1))
    write_slide(two / "b", SlideSpec(size=(300, 300), levels=1, container_id="B-2", seed=2))
    # Not a region: ArgumentError (a ValueError, as the RegionError it was before issue 15).
    with pytest.raises(ArgumentError, match=r"A-1.*B-2") as info:
        open_slide(two)
    assert isinstance(info.value, ValueError)
    assert "find_slides" in str(info.value)
    with open_slide(two, container_id="B-2") as osr:
        assert osr.dimensions == (300, 300)


def test_monochrome_channels_are_served_as_grey(tmp_path: Path) -> None:
    spec = slide_spec(
        (300, 400),
        128,
        2,
        bare=True,
        photometric="MONOCHROME2",
        transfer_syntax_uid=ExplicitVRLittleEndian,
        optical_paths=2,
    )
    write_slide(tmp_path, spec)
    with open_slide(tmp_path, channel_index=1) as osr:
        region = np.asarray(osr.read_region((0, 0), 0, (400, 300)))
    grey = expected_pixels(spec, 0, channel=1)[..., 0]
    for c in range(3):
        np.testing.assert_array_equal(region[..., c], grey)
    assert (region[..., 3] == 255).all()


def test_16_bit_channels_are_refused(tmp_path: Path) -> None:
    spec = SlideSpec(
        size=(200, 200),
        levels=1,
        photometric="MONOCHROME2",
        bits=16,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        label=False,
        overview=False,
    )
    write_slide(tmp_path, spec)
    with pytest.raises(UnsupportedError, match="get_image_region"):
        open_slide(tmp_path)


def test_twin_of_an_async_object_shares_it_and_its_open_state(folders: dict[str, Path]) -> None:
    from dicomslide import openslide as aio
    from dicomslide_sync._portal import run

    inner = run(aio.open_slide(folders["native_odd"]))
    osr = OpenSlide.from_async(inner)
    assert osr.async_openslide is inner
    osr.check_open()  # open: no error
    region = osr.read_region((10, 20), 0, (30, 40))
    assert region == run(inner.read_region((10, 20), 0, (30, 40)))
    labels = osr.associated_images
    run(inner.close())  # closing the async object closes the twin
    with pytest.raises(UsageError, match="closed"):
        osr.check_open()
    with pytest.raises(UsageError, match="closed"):
        labels["thumbnail"]
    with pytest.raises(UsageError, match="closed"), osr:
        pass

"""Deep Zoom of ``dicomslide serve`` equals openslide-python's ``DeepZoomGenerator``.

The reference is ``openslide.deepzoom.DeepZoomGenerator`` run on our blocking OpenSlide class
over the same files; the service's tiles must be the same JPEG and PNG bytes as the
generator's tiles saved with the same settings (quality 75, as OpenSlide's Deep Zoom server).
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import dicomslide
from dicomslide.errors import IndexRangeError
from dicomslide.openslide import OpenSlide as AsyncOpenSlide
from dicomslide.serve.deepzoom import DeepZoom
from dicomslide_sync.openslide import open_slide

deepzoom = pytest.importorskip("openslide.deepzoom")

SETTINGS = [(254, 1, False), (256, 0, False), (240, 3, True), (100, 8, False)]


@pytest.mark.parametrize(("tile_size", "overlap", "limit_bounds"), SETTINGS)
async def test_every_tile_equals_deepzoom_generator(
    slide_root: Path, tile_size: int, overlap: int, limit_bounds: bool
) -> None:
    reference_osr = open_slide(slide_root / "a")
    try:
        reference = deepzoom.DeepZoomGenerator(
            reference_osr, tile_size=tile_size, overlap=overlap, limit_bounds=limit_bounds
        )
        async with dicomslide.DICOMfileClient(slide_root / "a") as source:
            (slide,) = await dicomslide.find_slides(source)
            ours = DeepZoom(AsyncOpenSlide(slide), tile_size, overlap, limit_bounds)
            assert ours.level_count == reference.level_count
            assert ours.level_tiles == reference.level_tiles
            assert ours.level_dimensions == reference.level_dimensions
            assert ours.tile_count == reference.tile_count
            assert ours.get_dzi("jpeg") == reference.get_dzi("jpeg")
            compared = 0
            for level in range(reference.level_count):
                across, down = reference.level_tiles[level]
                for address in [(c, r) for r in range(down) for c in range(across)]:
                    plan = ours.tile_request(level, address)
                    location, slide_level, size = reference.get_tile_coordinates(level, address)
                    assert (plan.location, plan.slide_level, plan.size) == (
                        location,
                        slide_level,
                        size,
                    ), (level, address)
                    assert plan.tile_size == reference.get_tile_dimensions(level, address)
                    # Pixel equality on every level; bytes on the HTTP side below.
                    if level >= reference.level_count - 3:
                        tile = await ours.get_tile(level, address)
                        np.testing.assert_array_equal(
                            np.asarray(tile),
                            np.asarray(reference.get_tile(level, address)),
                            err_msg=f"level {level} tile {address}",
                        )
                        compared += 1
            assert compared == sum(c * r for c, r in reference.level_tiles[-3:])
            for bad_level, bad_address in [(-1, (0, 0)), (ours.level_count, (0, 0)), (5, (9, 0))]:
                with pytest.raises(IndexRangeError):
                    ours.tile_request(bad_level, bad_address)
    finally:
        reference_osr.close()


def _encoded(tile: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "png":
        tile.save(out, "PNG")
    else:
        tile.save(out, "JPEG", quality=75)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
async def test_http_tiles_are_byte_identical(
    http: httpx.AsyncClient, ids: dict[str, str], slide_root: Path, fmt: str
) -> None:
    reference_osr = open_slide(slide_root / "a")
    try:
        reference = deepzoom.DeepZoomGenerator(reference_osr, tile_size=254, overlap=1)
        slide_id = ids["SERVE-A"]
        dzi = await http.get(f"/slides/{slide_id}.dzi")
        assert dzi.status_code == 200
        assert dzi.text == reference.get_dzi("jpeg")
        checked = 0
        for level in range(reference.level_count - 4, reference.level_count):
            across, down = reference.level_tiles[level]
            for row in range(down):
                for col in range(across):
                    response = await http.get(
                        f"/slides/{slide_id}_files/{level}/{col}_{row}.{fmt}"
                    )
                    assert response.status_code == 200
                    assert response.headers["content-type"] == f"image/{fmt}"
                    expected = _encoded(reference.get_tile(level, (col, row)), fmt)
                    assert response.content == expected, (level, col, row)
                    checked += 1
        assert checked == sum(c * r for c, r in reference.level_tiles[-4:])
    finally:
        reference_osr.close()


async def test_bad_tile_addresses_are_404(http: httpx.AsyncClient, ids: dict[str, str]) -> None:
    slide_id = ids["SERVE-A"]
    dzi = await http.get(f"/slides/{slide_id}.dzi")
    assert dzi.status_code == 200
    for path in [
        f"/slides/{slide_id}_files/99/0_0.jpeg",
        f"/slides/{slide_id}_files/11/6_0.jpeg",
        f"/slides/{slide_id}_files/11/0_4.jpeg",
        f"/slides/{slide_id}_files/11/0_0.gif",
        "/slides/0123456789abcdef_files/11/0_0.jpeg",
        "/slides/0123456789abcdef.dzi",
    ]:
        response = await http.get(path)
        assert response.status_code == 404, path
        assert "Traceback" not in response.text
        assert response.text.strip(), path


async def test_whole_pixel_copy_equals_painting(
    slide_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regions that ``read_region`` copies straight from the frames equal OpenSlide's painting.

    The painter (``_paint``, checked against OpenSlide itself by tests/parity) is forced by
    turning the copy path off; every Deep Zoom region of both test slides is compared.
    """
    import dicomslide.openslide as module

    copy_origin = module._copy_origin
    copied = 0

    def counting(*args: object) -> tuple[int, int] | None:
        nonlocal copied
        origin = copy_origin(*args)  # type: ignore[arg-type]
        copied += origin is not None
        return origin

    for name in ("a", "b"):
        async with dicomslide.DICOMfileClient(slide_root / name) as source:
            (slide,) = await dicomslide.find_slides(source)
            osr = AsyncOpenSlide(slide)
            dz = DeepZoom(osr, 254, 1)
            plans = [
                dz.tile_request(level, (c, r))
                for level in range(dz.level_count)
                for r in range(dz.level_tiles[level][1])
                for c in range(dz.level_tiles[level][0])
            ]
            for plan in plans:
                args = (plan.location, plan.slide_level, plan.size)
                monkeypatch.setattr(module, "_copy_origin", counting)
                fast = await osr.read_region(*args)
                monkeypatch.setattr(module, "_copy_origin", lambda *a: None)
                painted = await osr.read_region(*args)
                assert fast.info.get("icc_profile") == painted.info.get("icc_profile")
                np.testing.assert_array_equal(np.asarray(fast), np.asarray(painted), str(args))
    # The copy path is the common case, not a corner: most regions of these slides take it.
    assert copied > 10

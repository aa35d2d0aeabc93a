"""IIIF Image API 3.0 of ``dicomslide serve``, checked against the specification's examples.

The region examples of the specification (section 4.1, an image of 300 x 200 pixels) and the
size, rotation, quality and format rules (4.2 to 4.5) are checked on the parser; the service
is checked end to end: ``info.json`` fields, the base URI redirect, the JSON-LD media type,
and pixels against the OpenSlide interface of the same slide.
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from dicomslide.errors import IndexRangeError, RegionError
from dicomslide.serve.iiif import parse_request
from dicomslide_sync.openslide import open_slide

LIMITS = (4096, 4096, 4096 * 4096)


def _region(text: str, size: tuple[int, int] = (300, 200)) -> tuple[int, int, int, int]:
    return parse_request(text, "max", "0", "default", "jpg", size, LIMITS).region


@pytest.mark.parametrize(
    ("region", "expected"),
    [
        ("full", (0, 0, 300, 200)),
        ("square", (50, 0, 200, 200)),
        ("125,15,120,140", (125, 15, 120, 140)),
        ("pct:41.6,7.5,40,70", (125, 15, 120, 140)),
        # partly outside: cropped at the image's edges
        ("125,15,200,200", (125, 15, 175, 185)),
        ("pct:41.6,7.5,66.6,100", (125, 15, 175, 185)),
    ],
)
def test_region_examples_of_the_specification(
    region: str, expected: tuple[int, int, int, int]
) -> None:
    assert _region(region) == expected


def test_square_of_a_portrait_image() -> None:
    assert _region("square", (200, 300)) == (0, 50, 200, 200)


# size -> width x height, for the region 125,15,120,140 (120 x 140 pixels).
SIZES = """
max 120x140 | 60, 60x70 | ,70 60x70 | pct:50 60x70 | 100,50 100x50 | !60,100 60x70
!100,35 30x35 | !500,500 120x140 | ^240, 240x280 | ^pct:150 180x210 | ^max 3511x4096
^!240,560 240x280
"""


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (size, tuple(int(v) for v in dims.split("x")))
        for size, dims in (
            case.split() for case in SIZES.replace("\n", "|").split("|") if case.strip()
        )
    ],
)
def test_size_forms(size: str, expected: tuple[int, int]) -> None:
    request = parse_request("125,15,120,140", size, "0", "default", "jpg", (300, 200), LIMITS)
    assert request.size == expected


def test_size_max_respects_the_limits() -> None:
    request = parse_request("full", "max", "0", "default", "png", (8000, 2000), LIMITS)
    assert request.size == (4096, 1024)


@pytest.mark.parametrize(
    ("region", "size", "rotation", "quality", "fmt"),
    [
        ("300,0,10,10", "max", "0", "default", "jpg"),  # starts outside the image
        ("0,0,0,10", "max", "0", "default", "jpg"),  # zero width
        ("pct:0,0,0,50", "max", "0", "default", "jpg"),
        ("1,2,3", "max", "0", "default", "jpg"),
        ("-1,0,5,5", "max", "0", "default", "jpg"),
        ("full", "301,", "0", "default", "jpg"),  # upscaling without ^
        ("full", "pct:101", "0", "default", "jpg"),
        ("full", "0,", "0", "default", "jpg"),
        ("full", ",", "0", "default", "jpg"),
        ("full", "!100,", "0", "default", "jpg"),
        ("full", "^5000,", "0", "default", "jpg"),  # above maxWidth
        ("full", "max", "45", "default", "jpg"),
        ("full", "max", "abc", "default", "jpg"),
        ("full", "max", "0", "sepia", "jpg"),
        ("full", "max", "0", "default", "gif"),
    ],
)
def test_bad_parameters_raise(
    region: str, size: str, rotation: str, quality: str, fmt: str
) -> None:
    with pytest.raises(RegionError) as raised:
        parse_request(region, size, rotation, quality, fmt, (300, 200), LIMITS)
    # Not IndexRangeError: the service answers that with 404, IIIF wants 400.
    assert not isinstance(raised.value, IndexRangeError)


def test_rotation_and_mirroring() -> None:
    request = parse_request("full", "max", "!270", "gray", "png", (300, 200), LIMITS)
    assert (request.rotation, request.mirror, request.quality, request.format) == (
        270,
        True,
        "gray",
        "png",
    )


# --- the service ------------------------------------------------------------------------


async def test_info_json(http: httpx.AsyncClient, ids: dict[str, str]) -> None:
    slide_id = ids["SERVE-A"]
    response = await http.get(f"/iiif/{slide_id}/info.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["access-control-allow-origin"] == "*"
    info = response.json()
    assert info["@context"] == "http://iiif.io/api/image/3/context.json"
    assert info["id"] == f"http://testserver/iiif/{slide_id}"
    assert info["type"] == "ImageService3"
    assert info["protocol"] == "http://iiif.io/api/image"
    assert info["profile"] == "level1"
    assert (info["width"], info["height"]) == (1300, 900)
    assert {"width": 325, "height": 225} in info["sizes"]
    assert info["tiles"] == [{"width": 512, "height": 512, "scaleFactors": [1, 2, 4]}]
    assert "png" in info["extraFormats"]
    assert {"regionByPct", "sizeByConfinedWh", "rotationBy90s"} <= set(info["extraFeatures"])
    ld = await http.get(f"/iiif/{slide_id}/info.json", headers={"Accept": "application/ld+json"})
    assert ld.headers["content-type"].startswith("application/ld+json")
    assert 'profile="http://iiif.io/api/image/3/context.json"' in ld.headers["content-type"]
    base = await http.get(f"/iiif/{slide_id}")
    assert base.status_code == 303
    assert base.headers["location"].endswith(f"/iiif/{slide_id}/info.json")


def _png(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def _reference(slide_root: Path, location: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    osr = open_slide(slide_root / "a")
    try:
        region = osr.read_region(location, 0, size)
    finally:
        osr.close()
    flat = Image.new("RGB", region.size, "white")
    flat.paste(region, None, region)
    return np.asarray(flat)


async def test_full_resolution_regions_equal_the_slide(
    http: httpx.AsyncClient, ids: dict[str, str], slide_root: Path
) -> None:
    slide_id = ids["SERVE-A"]
    expected = _reference(slide_root, (1000, 700), (300, 200))
    for region in ["1000,700,300,200", "1000,700,900,900", "pct:76.923,77.778,23.077,22.222"]:
        got = _png(await http.get(f"/iiif/{slide_id}/{region}/max/0/default.png"))
        np.testing.assert_array_equal(got, expected, err_msg=region)
    rotated = _png(await http.get(f"/iiif/{slide_id}/1000,700,300,200/max/90/color.png"))
    np.testing.assert_array_equal(rotated, np.rot90(expected, k=-1))
    mirrored = _png(await http.get(f"/iiif/{slide_id}/1000,700,300,200/max/!0/default.png"))
    np.testing.assert_array_equal(mirrored, expected[:, ::-1])
    gray = _png(await http.get(f"/iiif/{slide_id}/1000,700,300,200/max/0/gray.png"))
    assert gray.shape == (200, 300)
    expected_gray = np.asarray(Image.fromarray(expected).convert("L"))
    np.testing.assert_array_equal(gray, expected_gray)


async def test_scaled_requests(
    http: httpx.AsyncClient, ids: dict[str, str], slide_root: Path
) -> None:
    slide_id = ids["SERVE-A"]
    cases = {
        "full/max/0/default.jpg": (1300, 900),
        "full/325,/0/default.jpg": (325, 225),
        "full/,450/0/default.jpg": (650, 450),
        "full/pct:10/0/default.jpg": (130, 90),
        "full/!200,200/0/default.jpg": (200, 138),
        "full/200,100/0/default.jpg": (200, 100),
        "square/100,/0/bitonal.png": (100, 100),
    }
    osr = open_slide(slide_root / "a")
    try:
        thumb = np.asarray(osr.get_thumbnail((325, 225)), dtype=np.float64)
    finally:
        osr.close()
    for path, size in cases.items():
        response = await http.get(f"/iiif/{slide_id}/{path}")
        assert response.status_code == 200, (path, response.text)
        image = Image.open(io.BytesIO(response.content))
        assert image.size == size, path
        assert image.format == ("PNG" if path.endswith("png") else "JPEG")
    # Downscaled pixels look like the OpenSlide thumbnail (resampling differs, so a bound).
    small = await http.get(f"/iiif/{slide_id}/full/325,/0/default.png")
    assert np.abs(_png(small).astype(np.float64) - thumb).mean() < 6


async def test_bad_iiif_requests_are_400(http: httpx.AsyncClient, ids: dict[str, str]) -> None:
    slide_id = ids["SERVE-A"]
    for path in [
        "2000,0,10,10/max/0/default.jpg",
        "full/2000,/0/default.jpg",
        "full/max/33/default.jpg",
        "full/max/0/default.webp",
        "full/max/0/default",
        "nonsense/max/0/default.jpg",
    ]:
        response = await http.get(f"/iiif/{slide_id}/{path}")
        assert response.status_code == 400, path
        assert "Traceback" not in response.text
    missing = await http.get("/iiif/0123456789abcdef/full/max/0/default.jpg")
    assert missing.status_code == 404

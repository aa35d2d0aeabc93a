"""Service behaviour of ``dicomslide serve``: caching headers, error mapping, logging, threads.

Over the local folder through ``httpx.ASGITransport`` and over the session's Orthanc. Upstream
failures are injected with ``httpx.MockTransport`` in front of the real Orthanc: frame requests
(and the library's whole-instance fallback) get a 500 whose body echoes the request's
``Authorization`` header, the worst an upstream can do, so that a service that passed
upstream messages on would leak the token.
"""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import dicomslide
from dicomslide.serve import ServeSettings, app as app_module, create_app
from dicomslide_sync.openslide import open_slide
from tests.support.orthanc import OrthancServer, require_dicomweb_orthanc

SECRET = "s3cr3t-token-0f-the-upstream"


async def test_slide_list(http: httpx.AsyncClient, ids: dict[str, str]) -> None:
    response = await http.get("/slides")
    assert response.headers["cache-control"] == "no-cache"
    listing = {s["container_id"]: s for s in response.json()}
    assert set(listing) == {"SERVE-A", "SERVE-B"}
    a = listing["SERVE-A"]
    assert (a["width"], a["height"], a["levels"]) == (1300, 900, 3)
    assert a["mpp"] == [0.25, 0.25]
    assert a["dzi"] == f"slides/{a['id']}.dzi"
    assert sorted(a["associated"]) == sorted(
        f"slides/{a['id']}/{n}.jpeg" for n in ("label", "macro", "thumbnail")
    )
    assert len(set(ids.values())) == 2


async def test_viewer_page_needs_no_network(http: httpx.AsyncClient) -> None:
    page = await http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    # Everything is inline: no script, style or image from another origin.
    assert "http://" not in page.text
    assert "https://" not in page.text
    assert "<canvas" in page.text
    assert "_files/" in page.text


async def test_etag_and_cache_control(http: httpx.AsyncClient, ids: dict[str, str]) -> None:
    path = f"/slides/{ids['SERVE-A']}_files/11/1_1.jpeg"
    first = await http.get(path)
    assert first.status_code == 200
    assert first.headers["cache-control"] == "public, max-age=86400, immutable"
    etag = first.headers["etag"]
    again = await http.get(path)
    assert again.headers["etag"] == etag
    assert again.content == first.content
    other = await http.get(f"/slides/{ids['SERVE-B']}_files/10/1_1.jpeg")
    assert other.headers["etag"] != etag
    cached = await http.get(path, headers={"If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["etag"] == etag
    stale = await http.get(path, headers={"If-None-Match": '"0000"'})
    assert stale.status_code == 200


async def test_associated_images_and_thumbnail(
    http: httpx.AsyncClient, ids: dict[str, str], slide_root: Path
) -> None:
    slide_id = ids["SERVE-A"]
    osr = open_slide(slide_root / "a")
    try:
        for name in ("label", "macro"):
            response = await http.get(f"/slides/{slide_id}/{name}.png")
            assert response.status_code == 200, name
            got = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
            np.testing.assert_array_equal(
                got, np.asarray(osr.associated_images[name].convert("RGB")), err_msg=name
            )
        response = await http.get(f"/slides/{slide_id}/thumbnail.png?size=300")
        got = np.asarray(Image.open(io.BytesIO(response.content)))
        np.testing.assert_array_equal(got, np.asarray(osr.get_thumbnail((300, 300))))
    finally:
        osr.close()
    assert (await http.get(f"/slides/{slide_id}/thumbnail.jpeg?size=0")).status_code == 400
    assert (await http.get(f"/slides/{slide_id}/thumbnail.jpeg?size=x")).status_code == 400
    assert (await http.get(f"/slides/{slide_id}/ruler.jpeg")).status_code == 404
    # Slide B has no label written as THUMBNAIL; its macro exists, its thumbnail is computed.
    assert (await http.get(f"/slides/{ids['SERVE-B']}/thumbnail.jpeg")).status_code == 200


async def test_one_log_line_per_request(
    http: httpx.AsyncClient, ids: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    paths = [
        f"/slides/{ids['SERVE-A']}.dzi",
        f"/slides/{ids['SERVE-A']}_files/11/0_0.jpeg",
        f"/slides/{ids['SERVE-A']}_files/99/0_0.jpeg",
        "/iiif/nope/info.json",
    ]
    with caplog.at_level(logging.INFO, logger="dicomslide.serve"):
        statuses = [(await http.get(p)).status_code for p in paths]
    lines = [
        r for r in caplog.records if r.name == "dicomslide.serve" and r.levelno == logging.INFO
    ]
    assert statuses == [200, 200, 404, 404]
    assert len(lines) == len(paths)
    for record, path, status in zip(lines, paths, statuses, strict=True):
        assert record.getMessage().startswith(f"GET {path} {status} ")


async def test_tiles_are_read_on_the_loop_and_encoded_off_it(
    slide_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: dict[str, set[str]] = {"read": set(), "encode": set()}
    read_region = dicomslide.OpenSlide.read_region
    encode = app_module._encode

    async def spy_read(self: object, *args: object) -> object:
        threads["read"].add(threading.current_thread().name)
        return await read_region(self, *args)  # type: ignore[arg-type]

    def spy_encode(*args: object) -> bytes:
        threads["encode"].add(threading.current_thread().name)
        return encode(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(dicomslide.OpenSlide, "read_region", spy_read)
    monkeypatch.setattr(app_module, "_encode", spy_encode)
    async with dicomslide.DICOMfileClient(slide_root) as source:
        app = create_app(source, ServeSettings(encode_threads=2))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            slide_id = (await http.get("/slides")).json()[0]["id"]
            before = threading.active_count()
            responses = await asyncio.gather(
                *(
                    http.get(f"/slides/{slide_id}_files/{level}/0_0.jpeg")
                    for level in range(5, 12)
                    for _ in range(8)
                )
            )
            after = threading.active_count()
    assert all(r.status_code == 200 for r in responses)
    assert threads["read"] == {threading.current_thread().name}
    assert threads["encode"]
    assert all(n.startswith("dicomslide-encode") for n in threads["encode"])
    # 56 concurrent requests, at most 2 encoding threads more (plus the library's decoders).
    assert after - before <= 2 + 4


def test_import_dicomslide_does_not_import_starlette() -> None:
    code = (
        "import sys, dicomslide, dicomslide_sync; "
        "print(any(m.split('.')[0] in ('starlette', 'uvicorn') for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"


# --- upstream failures over DICOMweb -------------------------------------------------------


@pytest.fixture(scope="module")
def orthanc_url(slide_root: Path, shared_orthanc: OrthancServer) -> str:
    require_dicomweb_orthanc()
    shared_orthanc.upload([slide_root / "a"])
    return shared_orthanc.dicomweb_url


@pytest.fixture
async def failing_frames(orthanc_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, list[str]]]:
    seen: list[str] = []
    upstream = httpx.AsyncClient()

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization", ""))
        # Frames, and whole instances (the library's fallback when frames fail) and bulk data.
        if "/instances/" in request.url.path and not request.url.path.endswith("/metadata"):
            echo = f"no frames for you, {request.headers.get('authorization')}"
            return httpx.Response(500, text=echo)
        forwarded = await upstream.send(
            upstream.build_request(
                request.method, request.url, headers=request.headers, content=request.content
            )
        )
        await forwarded.aread()
        return httpx.Response(
            forwarded.status_code,
            headers={"content-type": forwarded.headers.get("content-type", "")},
            content=forwarded.content,
        )

    source = dicomslide.DICOMwebClient(
        orthanc_url,
        headers={"Authorization": f"Bearer {SECRET}"},
        transport=httpx.MockTransport(handler),
        retry=dicomslide.RetryPolicy(attempts=1),
    )
    try:
        transport = httpx.ASGITransport(app=create_app(source))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            yield http, seen
    finally:
        await source.aclose()
        await upstream.aclose()


@pytest.mark.integration
async def test_upstream_errors_are_502_without_credentials(
    failing_frames: tuple[httpx.AsyncClient, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    http, seen = failing_frames
    with caplog.at_level(logging.INFO):
        listing = await http.get("/slides")
        assert listing.status_code == 200
        slide = next(s for s in listing.json() if s["container_id"] == "SERVE-A")
        responses = [
            await http.get(f"/slides/{slide['id']}_files/11/0_0.jpeg"),
            await http.get(f"/iiif/{slide['id']}/0,0,100,100/max/0/default.jpg"),
            await http.get(f"/slides/{slide['id']}/label.jpeg"),
        ]
        others = [
            listing,
            await http.get(f"/iiif/{slide['id']}/info.json"),
            await http.get(f"/slides/{slide['id']}.dzi"),
            await http.get("/"),
        ]
    # The token did go upstream (so it could have leaked) ...
    assert f"Bearer {SECRET}" in seen
    for response in responses:
        assert response.status_code == 502, response.text
        assert response.text.strip() == "upstream DICOMweb server answered HTTP 500"
    # ... but never came back: not in any body, header or log line.
    for response in responses + others:
        assert SECRET not in response.text
        assert all(SECRET not in v for v in response.headers.values())
    assert all(SECRET not in r.getMessage() for r in caplog.records)


async def test_settings_filter_the_slides(slide_root: Path) -> None:
    async with dicomslide.DICOMfileClient(slide_root) as source:
        app = create_app(source, ServeSettings(container_id="SERVE-B"))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            listing = (await http.get("/slides")).json()
    assert [s["container_id"] for s in listing] == ["SERVE-B"]


@pytest.mark.parametrize("budget", [64 * 2**20, 0])
async def test_encoded_tiles_are_cached_and_rendered_once(
    slide_root: Path, monkeypatch: pytest.MonkeyPatch, budget: int
) -> None:
    reads: list[tuple[object, ...]] = []
    read_region = dicomslide.OpenSlide.read_region

    async def counting_read(self: object, *args: object) -> object:
        reads.append(args)
        return await read_region(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(dicomslide.OpenSlide, "read_region", counting_read)
    async with dicomslide.DICOMfileClient(slide_root) as source:
        app = create_app(source, ServeSettings(tile_cache_bytes=budget))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            slide_id = (await http.get("/slides")).json()[0]["id"]
            path = f"/slides/{slide_id}_files/11/1_1.jpeg"
            together = await asyncio.gather(*(http.get(path) for _ in range(8)))
            after_burst = len(reads)
            again = await http.get(path)
            png = await http.get(path.replace(".jpeg", ".png"))
    assert {r.status_code for r in [*together, again, png]} == {200}
    assert len({r.content for r in [*together, again]}) == 1
    assert png.headers["content-type"] == "image/png"
    # Eight concurrent requests share one render; a later one is a cache hit unless the
    # cache is off. The PNG is another entry.
    assert after_burst == 1
    assert len(reads) == (2 if budget else 3)


async def test_mounted_under_a_prefix_with_or_without_slash(slide_root: Path) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    async with dicomslide.DICOMfileClient(slide_root) as source:
        outer = Starlette(routes=[Mount("/viewer", create_app(source))])
        transport = httpx.ASGITransport(app=outer)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            bare = await http.get("/viewer")
            page = await http.get("/viewer", follow_redirects=True)
            # The page's URLs are relative to the mount point, as a browser resolves them.
            listing = (await http.get(str(page.url.join("slides")))).json()
            dzi = await http.get(str(page.url.join(listing[0]["dzi"])))
    assert bare.status_code in (307, 308)
    assert bare.headers["location"].endswith("/viewer/")
    assert page.status_code == 200
    assert "const root = location.pathname.endsWith" in page.text
    assert dzi.status_code == 200
    assert dzi.text.startswith("<Image TileSize=")

"""The Starlette application of ``dicomslide serve``: slide list, Deep Zoom, IIIF, viewer.

Every tile handler awaits the library on the server's event loop, so the frame requests of
concurrent tiles are coalesced by the slide's frame cache instead of each taking a thread.
Only the CPU work after reading (flattening, resampling and JPEG/PNG encoding) runs in a small
thread pool. Responses of immutable resources carry a strong ETag derived from the slide's
identity and the request, and ``If-None-Match`` is answered with 304 before anything is read.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import quote

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dicomslide.discovery import find_slides
from dicomslide.errors import (
    DecodeError,
    DicomSlideError,
    DicomWebError,
    IndexRangeError,
    InvalidDataError,
    NotFoundError,
    RegionError,
    SourceError,
)
from dicomslide.frames import FrameCache
from dicomslide.openslide import OpenSlide
from dicomslide.serve.deepzoom import DeepZoom, finish_tile
from dicomslide.serve.iiif import FORMATS, info_json, parse_request
from dicomslide.slide import Slide
from dicomslide.sources.protocol import EncodedFrame

__all__ = ["ServeSettings", "create_app"]

logger = logging.getLogger("dicomslide.serve")

_TILE_FORMATS = {"jpeg": "image/jpeg", "jpg": "image/jpeg", "png": "image/png"}
_ASSOCIATED = ("label", "macro", "thumbnail")


@dataclass(frozen=True)
class ServeSettings:
    """Settings of the service.

    Parameters
    ----------
    tile_size: int
        Deep Zoom tile size (without overlap), as ``DeepZoomGenerator``'s
    overlap: int
        Deep Zoom overlap
    limit_bounds: bool
        Deep Zoom ``limit_bounds``
    jpeg_quality: int
        JPEG quality of tiles and images (75, as OpenSlide's Deep Zoom server)
    max_age: int
        Seconds browsers and proxies may keep immutable responses
    iiif_limits: tuple[int, int, int]
        maxWidth, maxHeight and maxArea of IIIF images
    iiif_tile_size: int
        Tile size advertised in ``info.json``
    encode_threads: int | None
        Threads that flatten, resample and encode (default: CPU count)
    max_concurrent_renders: int
        Tiles and images read and encoded at once; further requests wait their turn before
        allocating anything, so memory does not grow with the number of waiting clients
    study_instance_uid: str | None
        Serve only the slides of this study
    container_id: str | None
        Serve only the slides with this Container Identifier
    tile_cache_bytes: int
        Budget of the LRU of encoded Deep Zoom tiles (0 turns it off): a tile asked for again
        is sent from memory without reading or encoding anything
    """

    tile_size: int = 254
    overlap: int = 1
    limit_bounds: bool = False
    jpeg_quality: int = 75
    max_age: int = 86400
    iiif_limits: tuple[int, int, int] = (4096, 4096, 4096 * 4096)
    iiif_tile_size: int = 512
    encode_threads: int | None = None
    max_concurrent_renders: int = 64
    study_instance_uid: str | None = None
    container_id: str | None = None
    tile_cache_bytes: int = 64 * 2**20


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Entry:
    slide_id: str
    slide: Slide
    osr: OpenSlide
    deepzoom: DeepZoom


def _upstream_message(error: BaseException) -> str:
    # Only the class and status travel to the browser: messages may quote upstream bodies.
    if isinstance(error, DicomWebError):
        return f"upstream DICOMweb server answered HTTP {error.status_code}"
    return f"slide source failed ({type(error).__name__})"


class _Service:
    """State shared by the handlers: the slides, found once, and the encoding pool."""

    def __init__(self, client: Any, settings: ServeSettings) -> None:
        self.client = client
        self.settings = settings
        self._entries: dict[str, _Entry] | None = None
        self._lock = asyncio.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self.renders = asyncio.Semaphore(settings.max_concurrent_renders)
        # The frame cache's byte-bounded LRU, keyed by tile path; the media type is implied.
        self.tiles = FrameCache(settings.tile_cache_bytes)
        self._rendering: dict[tuple[str, int], asyncio.Future[bytes]] = {}

    async def entries(self) -> dict[str, _Entry]:
        if self._entries is None:
            async with self._lock:
                if self._entries is None:
                    self._entries = await self._load()
        return self._entries

    async def _load(self) -> dict[str, _Entry]:
        found: dict[str, _Entry] = {}
        s = self.settings
        slides = await find_slides(
            self.client, study_instance_uid=s.study_instance_uid, container_id=s.container_id
        )
        for slide in slides:
            try:
                osr = OpenSlide(slide)
            except DicomSlideError as error:
                logger.warning("slide %r is not served: %s", slide.container_id, error)
                continue
            slide_id = osr.properties["openslide.quickhash-1"][:16]
            found[slide_id] = _Entry(
                slide_id, slide, osr, DeepZoom(osr, s.tile_size, s.overlap, s.limit_bounds)
            )
        return found

    async def entry(self, slide_id: str) -> _Entry:
        entry = (await self.entries()).get(slide_id)
        if entry is None:
            raise _HTTPError(404, f"no slide {slide_id!r}")
        return entry

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._pool is None:
            threads = self.settings.encode_threads or os.cpu_count() or 2
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="dicomslide-encode")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def tile(self, key: tuple[str, int], render: Callable[[], Awaitable[bytes]]) -> bytes:
        """Encoded tile from the cache, or rendered once however many requests wait for it."""
        while True:
            cached = self.tiles.get(key)
            if cached is not None:
                return cached.data
            pending = self._rendering.get(key)
            if pending is None:
                break
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this request was cancelled, not the render it waited for
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._rendering[key] = future
        try:
            body = await render()
        except asyncio.CancelledError:
            future.cancel()  # the waiters render it themselves
            raise
        except Exception as error:
            future.set_exception(error)
            future.exception()  # retrieved here: the waiters, if any, re-raise it
            raise
        finally:
            del self._rendering[key]
        future.set_result(body)
        self.tiles.put(key, EncodedFrame(body, ""))
        return body

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _encode(image: Image.Image, fmt: str, quality: int) -> bytes:
    out = io.BytesIO()
    if fmt == "png":
        image.save(out, "PNG")
    else:
        # convert() copies even when the mode is right already; Deep Zoom tiles are RGB.
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        rgb.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _flatten(region: Image.Image, size: tuple[int, int], background: str) -> Image.Image:
    flat = Image.composite(region, Image.new("RGB", region.size, background), region)
    if flat.size != size:
        flat = flat.resize(size, Image.Resampling.LANCZOS)
    return flat


def _iiif_finish(
    region: Image.Image, background: str, request: Any, quality: int
) -> tuple[bytes, str]:
    image = _flatten(region, request.size, background)
    if request.mirror:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if request.rotation:
        image = image.rotate(-request.rotation, expand=True)
    if request.quality == "gray":
        image = image.convert("L")
    elif request.quality == "bitonal":
        image = image.convert("1")
    return _encode(image, "png" if request.format == "png" else "jpeg", quality), FORMATS[
        request.format
    ]


def _tile_finish(
    region: Image.Image, size: tuple[int, int], background: str, fmt: str, quality: int
) -> bytes:
    return _encode(finish_tile(region, size, background), fmt, quality)


def _etag(request: Request, entry: _Entry | None) -> str:
    identity = entry.osr.properties["openslide.quickhash-1"] if entry else ""
    digest = hashlib.sha256(
        f"{identity}\0{request.url.path}\0{request.url.query}".encode()
    ).hexdigest()
    return f'"{digest[:32]}"'


class _App:
    """Route handlers bound to one :class:`_Service`."""

    def __init__(self, service: _Service) -> None:
        self.service = service
        # Read once: the page never changes while the server runs.
        self._page = resources.files("dicomslide.serve").joinpath("viewer.html").read_text("utf-8")

    def _immutable(
        self, request: Request, entry: _Entry | None
    ) -> tuple[dict[str, str], Response | None]:
        etag = _etag(request, entry)
        headers = {
            "ETag": etag,
            "Cache-Control": f"public, max-age={self.service.settings.max_age}, immutable",
        }
        if etag in request.headers.get("if-none-match", ""):
            return headers, Response(status_code=304, headers=headers)
        return headers, None

    async def viewer(self, request: Request) -> Response:
        return Response(self._page, media_type="text/html; charset=utf-8")

    async def slides(self, request: Request) -> Response:
        listing = []
        for entry in (await self.service.entries()).values():
            osr = entry.osr
            base = f"slides/{entry.slide_id}"
            listing.append(
                {
                    "id": entry.slide_id,
                    "container_id": entry.slide.container_id,
                    "width": osr.dimensions[0],
                    "height": osr.dimensions[1],
                    "levels": osr.level_count,
                    "mpp": [
                        float(osr.properties.get("openslide.mpp-x", "nan")),
                        float(osr.properties.get("openslide.mpp-y", "nan")),
                    ],
                    "dzi": f"{base}.dzi",
                    "iiif": f"iiif/{entry.slide_id}/info.json",
                    "thumbnail": f"{base}/thumbnail.jpeg",
                    "associated": [f"{base}/{name}.jpeg" for name in osr.associated_image_names],
                }
            )
        return JSONResponse(listing, headers={"Cache-Control": "no-cache"})

    async def dzi(self, request: Request) -> Response:
        entry = await self.service.entry(request.path_params["slide"])
        headers, cached = self._immutable(request, entry)
        if cached:
            return cached
        return Response(
            entry.deepzoom.get_dzi("jpeg"), media_type="application/xml", headers=headers
        )

    async def tile(self, request: Request) -> Response:
        params = request.path_params
        fmt = params["format"]
        if fmt not in _TILE_FORMATS:
            raise _HTTPError(404, f"tile format {fmt!r} is not jpeg or png")
        entry = await self.service.entry(params["slide"])
        headers, cached = self._immutable(request, entry)
        if cached:
            return cached
        dz = entry.deepzoom
        try:
            plan = dz.tile_request(params["level"], (params["col"], params["row"]))
        except IndexRangeError as error:
            raise _HTTPError(404, str(error)) from None
        encoding = "png" if fmt == "png" else "jpeg"

        async def render() -> bytes:
            async with self.service.renders:
                region = await entry.osr.read_region(plan.location, plan.slide_level, plan.size)
                body: bytes = await self.service.run(
                    _tile_finish,
                    region,
                    plan.tile_size,
                    dz.background,
                    encoding,
                    self.service.settings.jpeg_quality,
                )
            return body

        key = (f"{entry.slide_id}/{params['level']}/{params['col']}_{params['row']}.{encoding}", 0)
        body = await self.service.tile(key, render)
        return Response(body, media_type=_TILE_FORMATS[fmt], headers=headers)

    async def associated(self, request: Request) -> Response:
        params = request.path_params
        name, fmt = params["name"], params["format"]
        if name not in _ASSOCIATED or fmt not in _TILE_FORMATS:
            raise _HTTPError(404, f"no image {name}.{fmt}; try label, macro or thumbnail")
        entry = await self.service.entry(params["slide"])
        headers, cached = self._immutable(request, entry)
        if cached:
            return cached
        size = 0
        if name == "thumbnail":
            try:
                size = int(request.query_params.get("size", "512"))
            except ValueError:
                raise _HTTPError(400, "thumbnail size must be an integer") from None
            if not 1 <= size <= 2048:
                raise _HTTPError(400, f"thumbnail size must be in 1..2048, got {size}")
        elif name not in entry.osr.associated_image_names:
            raise _HTTPError(404, f"slide {entry.slide_id} has no {name} image")
        async with self.service.renders:
            if size:
                image = await entry.osr.get_thumbnail((size, size))
            else:
                image = await entry.osr.read_associated_image(name)
            body = await self.service.run(
                _encode,
                image,
                "png" if fmt == "png" else "jpeg",
                self.service.settings.jpeg_quality,
            )
        return Response(body, media_type=_TILE_FORMATS[fmt], headers=headers)

    async def iiif_base(self, request: Request) -> Response:
        await self.service.entry(request.path_params["slide"])
        return RedirectResponse(f"{request.url.path}/info.json", status_code=303)

    async def iiif_info(self, request: Request) -> Response:
        entry = await self.service.entry(request.path_params["slide"])
        s = self.service.settings
        service_id = str(request.url).rsplit("/info.json", 1)[0]
        doc = info_json(
            service_id,
            entry.osr.dimensions,
            entry.osr.level_dimensions,
            s.iiif_limits,
            s.iiif_tile_size,
        )
        accept = request.headers.get("accept", "")
        media = (
            'application/ld+json;profile="http://iiif.io/api/image/3/context.json"'
            if "application/ld+json" in accept
            else "application/json"
        )
        return Response(
            json.dumps(doc),
            media_type=media,
            headers={"Cache-Control": f"public, max-age={s.max_age}"},
        )

    async def iiif_image(self, request: Request) -> Response:
        p = request.path_params
        entry = await self.service.entry(p["slide"])
        quality, _, fmt = p["file"].rpartition(".")
        s = self.service.settings
        iiif = parse_request(
            p["region"],
            p["size"],
            p["rotation"],
            quality,
            fmt,
            entry.osr.dimensions,
            s.iiif_limits,
        )
        headers, cached = self._immutable(request, entry)
        if cached:
            return cached
        x, y, w, h = iiif.region
        osr = entry.osr
        level = osr.get_best_level_for_downsample(min(w / iiif.size[0], h / iiif.size[1]))
        ds = osr.level_downsamples[level]
        lw, lh = osr.level_dimensions[level]
        read_w = max(1, min(-(-w // ds), lw - int(x / ds)))
        read_h = max(1, min(-(-h // ds), lh - int(y / ds)))
        async with self.service.renders:
            region = await osr.read_region((x, y), level, (int(read_w), int(read_h)))
            body, media = await self.service.run(
                _iiif_finish, region, entry.deepzoom.background, iiif, s.jpeg_quality
            )
        return Response(body, media_type=media, headers=headers)


def _guard(handler: Callable[[Request], Awaitable[Response]]) -> Callable[..., Any]:
    """Map every failure to a short plain-text answer; tracebacks stay in the server log."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except _HTTPError as error:
            status, message = error.status, error.message
        except IndexRangeError as error:
            status, message = 404, str(error)
        except RegionError as error:
            status, message = 400, str(error)
        except (SourceError, NotFoundError, InvalidDataError, DecodeError, TimeoutError) as error:
            logger.warning("%s %s: upstream failure: %s", request.method, request.url.path, error)
            status, message = 502, _upstream_message(error)
        except Exception:
            logger.exception("%s %s failed", request.method, request.url.path)
            status, message = 500, "internal server error (see the server log)"
        return PlainTextResponse(message + "\n", status_code=status)

    return endpoint


class _AccessLog:
    """ASGI middleware: one INFO line per request, and CORS for every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        size = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"access-control-allow-origin", b"*"),
                ]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = quote(scope.get("root_path", "") + scope["path"], safe="/:,!^.%_-~")
            logger.info(
                "%s %s %d %d B %.1f ms",
                scope["method"],
                path,
                status,
                size,
                (time.perf_counter() - started) * 1000,
            )


def create_app(client: Any, settings: ServeSettings | None = None) -> ASGIApp:
    """The tile service as an ASGI application, to run or mount in another service.

    Slides are found with :func:`dicomslide.find_slides` on the first request; the client is
    not closed by the application (its owner closes it).

    Parameters
    ----------
    client: Any
        A dicomslide source (``DICOMfileClient``, ``DICOMwebClient``) or a ``DICOMClient``
    settings: ServeSettings | None, optional
        Tile size, overlap, JPEG quality, cache lifetime and IIIF limits

    Returns
    -------
    starlette.types.ASGIApp
        The application; routes: ``/`` (viewer), ``/slides`` (JSON list),
        ``/slides/{id}.dzi``, ``/slides/{id}_files/{level}/{col}_{row}.{jpeg|png}``,
        ``/slides/{id}/{label|macro|thumbnail}.{jpeg|png}``, ``/iiif/{id}/info.json`` and
        ``/iiif/{id}/{region}/{size}/{rotation}/{quality}.{format}``
    """
    service = _Service(client, settings or ServeSettings())
    handlers = _App(service)
    table = {
        "/": handlers.viewer,
        "/slides": handlers.slides,
        "/slides/{slide}.dzi": handlers.dzi,
        "/slides/{slide}_files/{level:int}/{col:int}_{row:int}.{format}": handlers.tile,
        "/slides/{slide}/{name}.{format}": handlers.associated,
        "/iiif/{slide}": handlers.iiif_base,
        "/iiif/{slide}/info.json": handlers.iiif_info,
        "/iiif/{slide}/{region}/{size}/{rotation}/{file}": handlers.iiif_image,
    }
    routes = [Route(path, _guard(handler)) for path, handler in table.items()]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            service.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.service = service
    return _AccessLog(app)

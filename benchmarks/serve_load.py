"""Load benchmark of ``dicomslide serve``: random Deep Zoom tiles under concurrency.

Each cell starts a fresh server process, then ``C`` client tasks request random Deep Zoom
tiles (uniformly over the four finest Deep Zoom levels) for a bounded time: first *cold*
(nothing cached anywhere), then *warm* (the same server, tiles drawn again from those the cold
phase asked for; the client sends no ``If-None-Match``, so each tile is served again: from
dicomslide's LRU of encoded tiles, and re-read and re-encoded by the baselines, which keep only
their frame caches). Reported per phase: tiles/s, p50/p99 latency,
errors, upstream DICOMweb requests per 100 tiles (counted by the delay proxy in front of
Orthanc), and the server's peak RSS (``VmHWM``) after the cell.

Servers, all behind the same Starlette routes (``/slides``, ``/slides/{id}.dzi``,
``/slides/{id}_files/{level}/{col}_{row}.jpeg``) and run by Uvicorn:

``dicomslide``      ``dicomslide.serve.create_app`` (handlers await the library)
``dicomslide-nocache``  the same with its encoded-tile cache off (not in the default run)
``wsidicom``        the same routes; the tile handler runs ``DeepZoomGenerator`` over wsidicom
                    in Starlette's thread pool (``run_in_threadpool``, 40 threads)
``openslide``       the same routes; ``DeepZoomGenerator`` over ``openslide.OpenSlide`` (its
                    DICOM driver, local files only) in the thread pool, as OpenSlide's
                    ``deepzoom_server.py`` does with Flask's threads

DICOMweb cells run against a private Orthanc behind ``benchmarks/delay_proxy.py`` at +0 and
+20 ms round trip; local cells read the same files (made by OrthancWSIDicomizer, see
``benchmarks/data.py``). The load generator is our own asyncio HTTP/1.1 client (one process,
one keep-alive connection per client task): no load tool in Debian or PyPI draws random Deep Zoom
addresses per request and phases the proxy's counters without a scripting layer, and this
one needs nothing beyond the test dependencies.

Usage::

    python benchmarks/serve_load.py --smoke --out /tmp/serve   # seconds; run by the suite
    python benchmarks/serve_load.py                            # full matrix (~10 min)
    python benchmarks/serve_load.py --seconds 10 --concurrency 32 --rtt 20

Results: ``<out>/serve-<UTC date-time>.json`` and a markdown table (``<out>/SERVE.md``);
without ``--smoke`` and ``--out`` the table also replaces the ``serve_load`` block of
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(ROOT))

import data  # noqa: E402 - benchmarks/ is not a package
from delay_proxy import DelayProxy  # noqa: E402

MEDIUM = data.SlideSpec("serve-8192x6144-orthanc", 8192, 6144)
CONCURRENCY = (1, 8, 32, 128, 512)
RTTS = (0.0, 20.0)
BLOCK_BEGIN = "<!-- serve_load:begin -->"
BLOCK_END = "<!-- serve_load:end -->"


# --- the servers (run in a child process: --server KIND) -----------------------------------


class _WsiDicomAsOpenSlide:
    """The part of ``openslide.OpenSlide`` that ``DeepZoomGenerator`` uses, over wsidicom."""

    def __init__(self, wsi: Any) -> None:
        self.wsi = wsi
        self.level_dimensions = tuple((lv.size.width, lv.size.height) for lv in wsi.levels)
        w0, h0 = self.level_dimensions[0]
        self.level_downsamples = tuple((h0 / h + w0 / w) / 2 for w, h in self.level_dimensions)
        self.dimensions = self.level_dimensions[0]
        self.properties: dict[str, str] = {}

    def get_best_level_for_downsample(self, downsample: float) -> int:
        best = 0
        for i, d in enumerate(self.level_downsamples):
            if d <= downsample:
                best = i
        return best

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Any:
        ds = self.level_downsamples[level]
        x, y = location
        return self.wsi.read_region((int(x / ds), int(y / ds)), level, size).convert("RGBA")


def _threadpool_app(generator: Any) -> Any:
    """The service's routes with a blocking Deep Zoom tile handler in the thread pool."""
    from PIL import Image  # noqa: F401 - imported here: the parent process does not need it
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    def tile_bytes(level: int, col: int, row: int) -> bytes:
        out = io.BytesIO()
        generator.get_tile(level, (col, row)).save(out, "JPEG", quality=75)
        return out.getvalue()

    async def slides(request: Request) -> Response:
        return JSONResponse([{"id": "0", "dzi": "slides/0.dzi"}])

    async def dzi(request: Request) -> Response:
        return Response(generator.get_dzi("jpeg"), media_type="application/xml")

    async def tile(request: Request) -> Response:
        p = request.path_params
        try:
            body = await run_in_threadpool(tile_bytes, p["level"], p["col"], p["row"])
        except ValueError as error:
            return PlainTextResponse(str(error), status_code=404)
        except Exception as error:  # the baseline's upstream failures, counted as errors
            return PlainTextResponse(type(error).__name__, status_code=502)
        return Response(body, media_type="image/jpeg")

    return Starlette(
        routes=[
            Route("/slides", slides),
            Route("/slides/{slide}.dzi", dzi),
            Route("/slides/{slide}_files/{level:int}/{col:int}_{row:int}.jpeg", tile),
        ]
    )


def _make_app(kind: str, source: str, study: str, series: str, level0: str) -> tuple[Any, Any]:
    if kind in ("dicomslide", "dicomslide-nocache"):
        import dicomslide
        from dicomslide.serve import ServeSettings, create_app

        client: Any
        if source.startswith("http"):
            client = dicomslide.DICOMwebClient(source)
        else:
            client = dicomslide.DICOMfileClient(source)
        # -nocache: every tile rendered again, to compare the render path with the baselines'.
        settings = ServeSettings(tile_cache_bytes=0 if kind.endswith("-nocache") else 64 << 20)
        return create_app(client, settings), client
    from openslide.deepzoom import DeepZoomGenerator

    if kind == "wsidicom":
        from wsidicom import WsiDicom, WsiDicomWebClient

        if source.startswith("http"):
            wsi = WsiDicom.open_web(WsiDicomWebClient.create_client(source), study, [series])
        else:
            wsi = WsiDicom.open(source)
        return _threadpool_app(DeepZoomGenerator(_WsiDicomAsOpenSlide(wsi))), wsi
    if kind == "openslide":
        import openslide

        return _threadpool_app(DeepZoomGenerator(openslide.OpenSlide(level0))), None
    raise SystemExit(f"unknown server kind {kind!r}")


def run_server(args: argparse.Namespace) -> int:
    import uvicorn

    app, _keep = _make_app(args.server, args.source, args.study, args.series, args.level0)
    sock = socket.create_server(("127.0.0.1", 0), backlog=2048)
    # Nagle off, as dicomslide.serve.server does (see there): else ~40 ms per keep-alive tile.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, access_log=False, log_level="warning", backlog=2048)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


# --- the load generator --------------------------------------------------------------------


def _dz_levels(width: int, height: int, tile: int) -> list[tuple[int, int]]:
    sizes = [(width, height)]
    while sizes[-1] != (1, 1):
        w, h = sizes[-1]
        sizes.append((max(1, math.ceil(w / 2)), max(1, math.ceil(h / 2))))
    sizes.reverse()
    return [(math.ceil(w / tile), math.ceil(h / tile)) for w, h in sizes]


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _Connection:
    """One keep-alive HTTP/1.1 connection: GET, read the head and ``Content-Length`` body.

    A plain asyncio client: httpx's pool costs grow with its connection count (at 128
    connections it managed ~44 requests/s against a server that answers a constant), which
    would measure the client instead of the servers.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            sock = self.writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
            await self.reader.readexactly(length)
        except BaseException:
            self.close()
            raise
        if re.search(rb"(?i)\r\nconnection: *close", head):
            self.close()
        return int(head.split(b" ", 2)[1])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _phase(
    base: str, paths: list[str], concurrency: int, seconds: float, rng: random.Random
) -> tuple[dict[str, Any], list[str]]:
    host, port = base.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors: dict[str, int] = {}
    asked: list[str] = []
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        connection = _Connection(host, int(port))
        try:
            while time.perf_counter() < deadline:
                path = rng.choice(paths)
                started = time.perf_counter()
                try:
                    status = await asyncio.wait_for(connection.get(path), 120)
                    key = None if status == 200 else str(status)
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as error:
                    key = type(error).__name__
                if key is None:
                    latencies.append(time.perf_counter() - started)
                    asked.append(path)
                else:
                    errors[key] = errors.get(key, 0) + 1
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    result = {
        "tiles": len(latencies),
        "seconds": round(elapsed, 3),
        "tiles_per_s": round(len(latencies) / elapsed, 2),
        "p50_ms": _ms(_percentile(latencies, 0.5)),
        "p99_ms": _ms(_percentile(latencies, 0.99)),
        "errors": errors,
    }
    return result, asked


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def _counters(proxy: DelayProxy | None) -> int:
    return proxy.snapshot()["requests"] if proxy is not None else 0


def _peak_rss_mb(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"VmHWM:\s+(\d+) kB", text)
    return round(int(match.group(1)) / 1024, 1) if match else None


def run_cell(
    kind: str,
    source: str,
    plan: dict[str, Any],
    concurrency: int,
    seconds: float,
    proxy: DelayProxy | None,
) -> dict[str, Any]:
    """One fresh server, a cold and a warm phase."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--server",
        kind,
        "--source",
        source,
        "--study",
        plan["study"],
        "--series",
        plan["series"],
        "--level0",
        plan["level0"],
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.startswith("PORT "):
            return {"error": f"server did not start: {line!r}"}
        base = f"http://127.0.0.1:{int(line.split()[1])}"
        import httpx

        slide = httpx.get(f"{base}/slides", timeout=300).json()[0]
        dzi = httpx.get(f"{base}/{slide['dzi']}", timeout=60).text
        width = int(re.search(r'Width="(\d+)"', dzi).group(1))  # type: ignore[union-attr]
        height = int(re.search(r'Height="(\d+)"', dzi).group(1))  # type: ignore[union-attr]
        tiles = _dz_levels(width, height, 254)
        prefix = slide["dzi"].removesuffix(".dzi")
        paths = [
            f"/{prefix}_files/{level}/{col}_{row}.jpeg"
            for level in range(len(tiles) - 4, len(tiles))
            for col in range(tiles[level][0])
            for row in range(tiles[level][1])
        ]
        rng = random.Random(concurrency * 1000 + len(kind))
        cell: dict[str, Any] = {"server": kind, "concurrency": concurrency}
        before = _counters(proxy)
        cold, asked = asyncio.run(_phase(base, paths, concurrency, seconds, rng))
        mid = _counters(proxy)
        warm, _ = asyncio.run(_phase(base, asked or paths, concurrency, seconds, rng))
        after = _counters(proxy)
        for phase, result, upstream in (("cold", cold, mid - before), ("warm", warm, after - mid)):
            if proxy is not None:
                result["upstream_requests"] = upstream
                result["upstream_per_100_tiles"] = (
                    round(100 * upstream / result["tiles"], 1) if result["tiles"] else None
                )
            cell[phase] = result
        cell["peak_rss_mb"] = _peak_rss_mb(server.pid)
        return cell
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _upload(manifest: dict[str, Any], log: Any) -> tuple[Any, dict[str, str]]:
    import pydicom

    from tests.support.orthanc import OrthancServer

    folder = HERE / manifest["dicom_dir"]
    first = folder / manifest["instances"][0]["file"]
    ds = pydicom.dcmread(first, stop_before_pixels=True)
    server = OrthancServer(workdir=Path(tempfile.mkdtemp(prefix="serve-load-orthanc-")))
    server.start()
    t0 = time.perf_counter()
    server.upload([folder])
    log(f"Orthanc {server.port}: uploaded {folder.name} in {time.perf_counter() - t0:.1f} s")
    ids = {
        "study": str(ds.StudyInstanceUID),
        "series": str(ds.SeriesInstanceUID),
        "level0": str(first),
    }
    return server, ids


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"Run {doc['date']} ({'smoke' if doc['smoke'] else 'full'}), slide {doc['slide']}, "
        f"{doc['seconds']} s per phase, {os.cpu_count()} CPUs shared with other work; "
        "command: `python benchmarks/serve_load.py" + (" --smoke" if doc["smoke"] else "") + "`.",
        "",
        "| source | server | C | cold tiles/s | cold p50 / p99 ms | warm tiles/s "
        "| warm p50 / p99 ms | upstream req / 100 tiles (cold, warm) | errors | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in doc["cells"]:
        if "error" in cell:
            lines.append(
                f"| {cell['source']} | {cell['server']} | {cell['concurrency']} | "
                f"{cell['error']} | | | | | | |"
            )
            continue
        cold, warm = cell["cold"], cell["warm"]
        errors = sum(cold["errors"].values()) + sum(warm["errors"].values())
        upstream = (
            f"{cold.get('upstream_per_100_tiles')}, {warm.get('upstream_per_100_tiles')}"
            if "upstream_requests" in cold
            else "-"
        )
        lines.append(
            f"| {cell['source']} | {cell['server']} | {cell['concurrency']} "
            f"| {cold['tiles_per_s']} | {cold['p50_ms']} / {cold['p99_ms']} "
            f"| {warm['tiles_per_s']} | {warm['p50_ms']} / {warm['p99_ms']} "
            f"| {upstream} | {errors} | {cell['peak_rss_mb']} |"
        )
    return "\n".join(lines) + "\n"


def _replace_block(path: Path, table: str) -> None:
    text = path.read_text() if path.exists() else ""
    title = "## `dicomslide serve` under load (benchmarks/serve_load.py)"
    block = f"{BLOCK_BEGIN}\n{title}\n\n{table}{BLOCK_END}\n"
    if BLOCK_BEGIN in text and BLOCK_END in text:
        head, _, rest = text.partition(BLOCK_BEGIN)
        _, _, tail = rest.partition(BLOCK_END + "\n")
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny slide, C 1 and 8, 1 s phases")
    ap.add_argument("--seconds", type=float, help="seconds per phase (default 5, smoke 1)")
    ap.add_argument("--concurrency", type=int, nargs="+", help="default 1 8 32 128 512")
    ap.add_argument("--rtt", type=float, nargs="+", help="added round trip ms (default 0 20)")
    ap.add_argument(
        "--servers",
        nargs="+",
        default=["dicomslide", "wsidicom", "openslide"],
        help="servers to measure (default: all three; also dicomslide-nocache)",
    )
    ap.add_argument("--no-dicomweb", action="store_true", help="local cells only")
    ap.add_argument("--no-local", action="store_true", help="DICOMweb cells only")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="folder of the results")
    # child mode
    ap.add_argument("--server", help=argparse.SUPPRESS)
    ap.add_argument("--source", help=argparse.SUPPRESS)
    ap.add_argument("--study", help=argparse.SUPPRESS)
    ap.add_argument("--series", help=argparse.SUPPRESS)
    ap.add_argument("--level0", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.server:
        return run_server(args)

    def log(message: str) -> None:
        print(f"[serve_load {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    seconds = args.seconds or (1.0 if args.smoke else 5.0)
    concurrency = args.concurrency or ((1, 8) if args.smoke else CONCURRENCY)
    rtts = args.rtt or ((0.0,) if args.smoke else RTTS)
    manifest = data.ensure_slide(data.SMOKE if args.smoke else MEDIUM)
    folder = str(HERE / manifest["dicom_dir"])
    cells: list[dict[str, Any]] = []

    def measure(
        source_label: str, kind: str, source: str, plan: dict[str, Any], proxy: Any
    ) -> None:
        for c in concurrency:
            log(f"{source_label} {kind} C={c}")
            cell = run_cell(kind, source, plan, c, seconds, proxy)
            cell.update(source=source_label, server=kind, concurrency=c)
            cells.append(cell)
            if "error" not in cell:
                cold, warm = cell["cold"], cell["warm"]
                log(
                    f"  cold {cold['tiles_per_s']} tiles/s p99 {cold['p99_ms']} ms, "
                    f"warm {warm['tiles_per_s']} tiles/s, RSS {cell['peak_rss_mb']} MB"
                )

    orthanc, plan = _upload(manifest, log) if not args.no_dicomweb else (None, None)
    try:
        if orthanc is not None and plan is not None:
            for rtt in rtts:
                with DelayProxy(("127.0.0.1", orthanc.port), rtt_ms=rtt) as proxy:
                    url = f"http://127.0.0.1:{proxy.port}/dicom-web"
                    for kind in args.servers:
                        if kind != "openslide":
                            measure(f"DICOMweb +{rtt:g} ms", kind, url, plan, proxy)
        if not args.no_local:
            local_plan = plan or {"study": "", "series": "", "level0": ""}
            if not local_plan["level0"]:
                local_plan["level0"] = str(Path(folder) / manifest["instances"][0]["file"])
            for kind in args.servers:
                if kind != "wsidicom":
                    measure("local", kind, folder, local_plan, None)
    finally:
        if orthanc is not None:
            orthanc.stop()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    doc = {
        "date": stamp,
        "smoke": args.smoke,
        "slide": manifest["spec"]["name"],
        "seconds": seconds,
        "cells": cells,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"serve-{stamp}.json").write_text(json.dumps(doc, indent=1))
    table = markdown(doc)
    (args.out / "SERVE.md").write_text(table)
    # Only a full run into the default folder is the project's result; trials go elsewhere.
    if not args.smoke and args.out == HERE / "results":
        _replace_block(HERE / "RESULTS.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

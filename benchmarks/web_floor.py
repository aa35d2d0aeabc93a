"""DICOMweb reads against the server's floor: ours, wsidicom and the plain floor in one run.

Usage::

    python benchmarks/web_floor.py                    # 5 rounds, +0 ms (direct) and +20 ms
    python benchmarks/web_floor.py --reps 9 --rtt-ms 0

Talks to a private Orthanc (``benchmarks/run.py``'s, slide of ``benchmarks/data.py``)
*directly* at +0 ms, so no proxy adds CPU to any reader, and through
``benchmarks/delay_proxy.py`` for every other RTT. Every measurement is a fresh process;
the modes are interleaved round by round (ours, wsidicom, floor, ...) so that the noise of
a shared machine falls on all of them alike. Medians and ratios go to
``benchmarks/results/web-floor-<date>.json`` and between the ``web-floor`` markers of
``benchmarks/RESULTS.md``.

Modes (each one process):

- ``ours-region`` / ``wsidicom-region``: open (study and series UIDs given), the first
  cold 2048² level-0 region at x=7000, y=9000, then a second one at x=9100 on the same
  instance (its transfer syntax known to both readers by then).
- ``ours-region[star-first]``: the same without the syntax the metadata implies, so the
  first request of an instance asks for stored bytes (``transfer-syntax=*``).
- ``server-region``: the server's time for the second region's frames: one plain httpx
  request asking for them by their explicit media type, body read, no parsing.
- ``ours-gather`` / ``ours-sync16`` / ``wsidicom-sync16``: every tile of the scan level,
  one region call per tile: ``asyncio.gather`` of ``get_image_region``; ``dicomslide_sync``
  from 16 threads; wsidicom ``read_tile`` from 16 threads (opened untimed).
- ``floor``: one plain request for all the scan level's frames, then libjpeg-turbo
  (``imagecodecs.jpeg8_decode``) on all cores: fetch, then decode, no overlap.
- ``server-shape``: what the server charges per request on the second region's level-0
  instance: one request of 1, 9 or all the frames the first region did not fetch, those
  frames split over 2, 3 or 4 concurrent requests, and a request it refuses (400); wall
  time to the last byte and the server process's CPU time (``/proc``, Linux) for each.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MARK_BEGIN = "<!-- web-floor -->"
MARK_END = "<!-- /web-floor -->"
REGION = (7000, 9000, 2048)  # x, y, side (level 0)
SECOND_X = 9100
SCAN_LEVEL = 2
JPEG_ACCEPT = 'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.50'
MODES = (
    "ours-region",
    "ours-region[star-first]",
    "wsidicom-region",
    "server-region",
    "ours-gather",
    "ours-sync16",
    "floor",
    "wsidicom-sync16",
    "server-shape",
)
#: server-shape's requests, in the order they are made (see _server_shape).
SHAPES = ("1 frame", "9 frames", "new frames", "new in 2", "new in 3", "new in 4", "refused")
REFUSED_ACCEPT = (
    'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.4.50'
)


# --- workers (one mode per fresh process) --------------------------------------------------


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def _tiles(plan: dict[str, Any]) -> list[tuple[int, int, int, int]]:
    """(x, y, w, h) of every tile of the scan level, in that level's pixels."""
    w, h = plan["levels"][SCAN_LEVEL]
    t = plan["tile"]
    return [(x, y, min(t, w - x), min(t, h - y)) for y in range(0, h, t) for x in range(0, w, t)]


def _level0_offsets(plan: dict[str, Any]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """((row, col) at level 0, (rows, cols)) of every tile: ours take level-0 offsets."""
    f = plan["levels"][0][0] / plan["levels"][SCAN_LEVEL][0]
    return [((round(y * f), round(x * f)), (h, w)) for x, y, w, h in _tiles(plan)]


def _region_frames(plan: dict[str, Any], x: int, y: int, side: int) -> list[int]:
    t = plan["tile"]
    cols = -(-plan["levels"][0][0] // t)
    return [
        r * cols + c + 1
        for r in range(y // t, (y + side - 1) // t + 1)
        for c in range(x // t, (x + side - 1) // t + 1)
    ]


def _frames_url(plan: dict[str, Any], level: int, numbers: list[int]) -> str:
    sop = plan["instances"][level]["sop"]
    return (
        f"{plan['url']}/studies/{plan['study_uid']}/series/{plan['series_uid']}"
        f"/instances/{sop}/frames/{','.join(map(str, numbers))}"
    )


async def _ours_async(plan: dict[str, Any], mode: str) -> dict[str, Any]:
    import dicomslide

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    async with dicomslide.DICOMwebClient(plan["url"]) as client:
        (slide,) = await dicomslide.find_slides(client, study_instance_uid=plan["study_uid"])
        out["open"] = _ms(t0)
        if mode == "ours-region":
            x, y, side = REGION
            t1 = time.perf_counter()
            await slide.get_image_region((y, x), 0, (side, side))
            out["first"] = _ms(t1)
            out["open+first"] = _ms(t0)
            t2 = time.perf_counter()
            await slide.get_image_region((y, SECOND_X), 0, (side, side))
            out["second"] = _ms(t2)
        else:
            tiles = _level0_offsets(plan)
            t1 = time.perf_counter()
            await asyncio.gather(
                *(slide.get_image_region(offset, SCAN_LEVEL, size) for offset, size in tiles)
            )
            out["scan"] = _ms(t1)
        out["requests"] = client.requests_sent
    return out


def _ours_sync16(plan: dict[str, Any]) -> dict[str, Any]:
    import dicomslide_sync

    client = dicomslide_sync.DICOMwebClient(plan["url"])
    (slide,) = dicomslide_sync.find_slides(client, study_instance_uid=plan["study_uid"])
    tiles = _level0_offsets(plan)
    with ThreadPoolExecutor(16) as pool:
        t1 = time.perf_counter()
        list(pool.map(lambda t: slide.get_image_region(t[0], SCAN_LEVEL, t[1]), tiles))
        scan = _ms(t1)
    return {"scan": scan}


def _wsidicom(plan: dict[str, Any], mode: str) -> dict[str, Any]:
    import warnings

    import numpy as np
    from wsidicom import WsiDicom, WsiDicomWebClient

    warnings.simplefilter("ignore")
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    slide = WsiDicom.open_web(
        WsiDicomWebClient.create_client(plan["url"]), plan["study_uid"], [plan["series_uid"]]
    )
    out["open"] = _ms(t0)
    if mode == "wsidicom-region":
        x, y, side = REGION
        t1 = time.perf_counter()
        np.asarray(slide.read_region((x, y), 0, (side, side)))
        out["first"] = _ms(t1)
        out["open+first"] = _ms(t0)
        t2 = time.perf_counter()
        np.asarray(slide.read_region((SECOND_X, y), 0, (side, side)))
        out["second"] = _ms(t2)
    else:
        t = plan["tile"]
        with ThreadPoolExecutor(16) as pool:
            t1 = time.perf_counter()
            list(
                pool.map(
                    lambda q: np.asarray(slide.read_tile(SCAN_LEVEL, (q[0] // t, q[1] // t))),
                    _tiles(plan),
                )
            )
            out["scan"] = _ms(t1)
    slide.close()
    return out


def _server_region(plan: dict[str, Any]) -> dict[str, Any]:
    import httpx

    _, y, side = REGION
    numbers = _region_frames(plan, SECOND_X, y, side)
    with httpx.Client(trust_env=False, timeout=120) as client:
        t0 = time.perf_counter()
        r = client.get(_frames_url(plan, 0, numbers), headers={"accept": JPEG_ACCEPT})
        r.raise_for_status()
        return {"second": _ms(t0), "frames": len(numbers), "bytes": len(r.content)}


def _process_cpu_ms(pid: int | None) -> float | None:
    """User plus system CPU time of a process (all its threads), or None off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def _server_shape(plan: dict[str, Any]) -> dict[str, Any]:
    import httpx

    x, y, side = REGION
    seen = set(_region_frames(plan, x, y, side))
    new = [n for n in _region_frames(plan, SECOND_X, y, side) if n not in seen]
    asks: dict[str, tuple[list[list[int]], str]] = {
        "1 frame": ([new[:1]], JPEG_ACCEPT),
        "9 frames": ([new[:9]], JPEG_ACCEPT),
        "new frames": ([new], JPEG_ACCEPT),
        **{f"new in {k}": ([new[i::k] for i in range(k)], JPEG_ACCEPT) for k in (2, 3, 4)},
        "refused": ([new[:1]], REFUSED_ACCEPT),
    }
    out: dict[str, Any] = {"new": len(new)}
    pid = plan.get("orthanc_pid")
    limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
    with (
        httpx.Client(trust_env=False, timeout=120, limits=limits) as client,
        ThreadPoolExecutor(4) as pool,
    ):

        def get(numbers: list[int], accept: str) -> int:
            r = client.get(_frames_url(plan, 0, numbers), headers={"accept": accept})
            return r.status_code

        for name in SHAPES:
            lists, accept = asks[name]
            cpu0 = _process_cpu_ms(pid)
            t0 = time.perf_counter()
            statuses = list(pool.map(get, lists, [accept] * len(lists)))
            out[name] = _ms(t0)
            cpu1 = _process_cpu_ms(pid)
            if cpu0 is not None and cpu1 is not None:
                out[f"{name} cpu"] = cpu1 - cpu0
            out[f"{name} status"] = statuses
    return out


def _floor(plan: dict[str, Any]) -> dict[str, Any]:
    import httpx
    import imagecodecs

    from dicomslide.sources.multipart import MultipartParser, boundary_from_content_type

    count = plan["instances"][SCAN_LEVEL]["frames"]
    url = _frames_url(plan, SCAN_LEVEL, list(range(1, count + 1)))
    workers = os.cpu_count() or 1
    with httpx.Client(trust_env=False, timeout=120) as client, ThreadPoolExecutor(workers) as pool:
        pool.submit(int).result()  # threads started before the clock
        t0 = time.perf_counter()
        r = client.get(url, headers={"accept": JPEG_ACCEPT})
        r.raise_for_status()
        parser = MultipartParser(boundary_from_content_type(r.headers["content-type"]))
        bodies = [p.body for p in parser.feed(r.content)]
        parser.close()
        fetched = _ms(t0)
        list(pool.map(imagecodecs.jpeg8_decode, bodies))
        total = _ms(t0)
    assert len(bodies) == count, (len(bodies), count)
    return {"scan": total, "fetch": fetched, "decode": total - fetched, "threads": workers}


def worker(plan: dict[str, Any], mode: str) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    if mode == "ours-region[star-first]":
        # The first request of each instance as before issue 14: stored bytes
        # (transfer-syntax=*), the syntax learnt from that answer.
        from dicomslide.sources.web import client

        client.implied_transfer_syntax = lambda metadata: None  # type: ignore[assignment]
        mode = "ours-region"
    if mode in ("ours-region", "ours-gather"):
        return asyncio.run(_ours_async(plan, mode))
    if mode == "ours-sync16":
        return _ours_sync16(plan)
    if mode.startswith("wsidicom"):
        return _wsidicom(plan, mode)
    if mode == "server-region":
        return _server_region(plan)
    if mode == "floor":
        return _floor(plan)
    if mode == "server-shape":
        return _server_shape(plan)
    raise SystemExit(f"unknown mode {mode}")


# --- harness --------------------------------------------------------------------------------


def _run(plan: dict[str, Any], mode: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", mode, "--plan", json.dumps(plan)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:] or ["?"]}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _median(samples: list[dict[str, Any]], key: str) -> float | None:
    values = [s[key] for s in samples if key in s]
    return statistics.median(values) if values else None


def summarise(samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians per mode and the ratios the issue's targets are stated in."""
    med = {
        mode: {
            k: _median(rows, k)
            for k in ("open", "first", "open+first", "second", "scan", "fetch", "decode")
            if _median(rows, k) is not None
        }
        for mode, rows in samples.items()
    }
    shape_rows = samples.get("server-shape", [])
    shapes: dict[str, float | None] = {
        k: v
        for name in SHAPES
        for k in (name, f"{name} cpu")
        if (v := _median(shape_rows, k)) is not None
    }
    if shapes:
        med["server-shape"] = shapes

    def ratio(a: str, ka: str, b: str, kb: str) -> float | None:
        x, y = med.get(a, {}).get(ka), med.get(b, {}).get(kb)
        return x / y if x is not None and y else None

    return {
        "medians": med,
        "ratios": {
            "open+first vs wsidicom (<= 0.6)": ratio(
                "ours-region", "open+first", "wsidicom-region", "open+first"
            ),
            "first region vs wsidicom (<= 1.0)": ratio(
                "ours-region", "first", "wsidicom-region", "first"
            ),
            "first region, star-first vs implied syntax": ratio(
                "ours-region[star-first]", "first", "ours-region", "first"
            ),
            "second region vs wsidicom (<= 0.9)": ratio(
                "ours-region", "second", "wsidicom-region", "second"
            ),
            "second region vs server (<= 1.1)": ratio(
                "ours-region", "second", "server-region", "second"
            ),
            "gather scan vs floor (<= 1.2)": ratio("ours-gather", "scan", "floor", "scan"),
            "sync 16 threads scan vs floor (<= 1.4)": ratio(
                "ours-sync16", "scan", "floor", "scan"
            ),
            "wsidicom16 scan vs floor": ratio("wsidicom-sync16", "scan", "floor", "scan"),
            # The cheapest frames request the server answers on that instance: a second
            # region cannot take less, so above 0.9 that target is out of reach.
            "server's 1-frame request vs wsidicom second": ratio(
                "server-shape", "1 frame", "wsidicom-region", "second"
            ),
        },
        "shapes": shapes,
    }


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        MARK_BEGIN,
        "## DICOMweb against the server's floor (`benchmarks/web_floor.py`)",
        "",
        f"Run {doc['date']}, {doc['reps']} fresh processes per cell, modes interleaved round by "
        f"round; load average {doc['load_before']} before, {doc['load_after']} after "
        "(shared VM: read the ratios, not the absolute times). Milliseconds, medians. "
        "+0 ms talks to Orthanc directly; other RTTs go through the delay proxy.",
        "",
    ]
    if doc.get("notes"):
        lines += [doc["notes"].strip(), ""]
    for sec in doc["sections"]:
        med, ratios = sec["summary"]["medians"], sec["summary"]["ratios"]
        lines += [
            f"### +{sec['rtt_ms']:g} ms",
            "",
            "| mode | open | first | open+first | second | scan | fetch | decode |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for mode in MODES:
            if mode == "server-shape":
                continue  # its own table below
            m = med.get(mode, {})
            cells = [
                f"{m[k]:,.0f}" if k in m else ""
                for k in ("open", "first", "open+first", "second", "scan", "fetch", "decode")
            ]
            lines.append(f"| {mode} | " + " | ".join(cells) + " |")
        lines += ["", "| target | ratio |", "|---|---|"]
        lines += [f"| {name} | {'' if r is None else f'{r:.2f}x'} |" for name, r in ratios.items()]
        shapes = sec["summary"].get("shapes", {})
        if shapes:
            lines += [
                "",
                "Server request shapes on the second region's level-0 instance (`server-shape`; "
                "new = the frames the first region did not fetch; refused = 400):",
                "",
                "| request | wall ms | server CPU ms |",
                "|---|---|---|",
            ]
            for name in SHAPES:
                if name in shapes:
                    cpu = shapes.get(f"{name} cpu")
                    shown = "" if cpu is None else f"{cpu:,.0f}"
                    lines.append(f"| {name} | {shapes[name]:,.0f} | {shown} |")
        errors = {m: rows for m, rows in sec["samples"].items() if any("error" in r for r in rows)}
        if errors:
            lines += ["", f"Errors: {json.dumps(errors)[:500]}"]
        lines.append("")
    lines.append(MARK_END)
    return "\n".join(lines) + "\n"


def write_markdown(block: str, path: Path) -> None:
    text = path.read_text() if path.exists() else ""
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + block + rest.split(MARK_END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rtt-ms", default="0,20")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--markdown", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--notes", type=Path, default=None, help="markdown put above the tables")
    ap.add_argument("--render", type=Path, default=None, help="only re-render a saved JSON")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--plan", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.plan), args.worker)))
        return 0

    if args.render:
        doc = json.loads(args.render.read_text())
        doc["notes"] = args.notes.read_text() if args.notes else doc.get("notes", "")
        write_markdown(markdown(doc), args.markdown)
        return 0
    sys.path.insert(0, str(HERE))
    import data
    from delay_proxy import DelayProxy
    from run import loadavg, orthanc, slide_uids

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    modes = [m for m in args.modes.split(",") if m]
    manifest = data.ensure_slide(data.FULL)
    uids = slide_uids(manifest)
    plan: dict[str, Any] = {
        **uids,
        "levels": [(d["width"], d["height"]) for d in manifest["instances"]],
        "tile": manifest["instances"][0]["tile"][0],
    }
    doc: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "reps": args.reps,
        "load_before": loadavg(),
        "sections": [],
        "notes": args.notes.read_text() if args.notes else "",
    }
    with orthanc(manifest, log) as (server, _info):
        plan["orthanc_pid"] = server.pid
        for rtt in [float(x) for x in args.rtt_ms.split(",") if x.strip()]:
            proxy = DelayProxy(("127.0.0.1", server.port), rtt_ms=rtt) if rtt else None
            with proxy if proxy is not None else _Null():
                port = proxy.port if proxy is not None else server.port
                plan["url"] = f"http://127.0.0.1:{port}/dicom-web"
                samples: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
                _run(plan, "server-region")  # warm Orthanc's caches, untimed
                for rep in range(args.reps):
                    for mode in modes:
                        samples[mode].append(_run(plan, mode))
                    log(f"+{rtt:g} ms round {rep + 1}/{args.reps}")
                doc["sections"].append(
                    {"rtt_ms": rtt, "samples": samples, "summary": summarise(samples)}
                )
    doc["load_after"] = loadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    (args.out / f"web-floor-{stamp}.json").write_text(json.dumps(doc, indent=1))
    block = markdown(doc)
    write_markdown(block, args.markdown)
    print(block)
    return 0


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark dicomslide against peer readers on the same DICOM files; ratios in one run.

Usage::

    python benchmarks/setup_peers.py           # once: peers in benchmarks/.venv-peers
    python benchmarks/run.py                   # full slide, local + DICOMweb (0 and 20 ms)
    python benchmarks/run.py --source local    # local folder only
    python benchmarks/run.py --source dicomweb --rtt-ms 20
    python benchmarks/run.py --smoke --out /tmp/x   # tiny slide, local, 1 repetition, < 60 s

Every measurement runs in a fresh process (``benchmarks/peer_worker.py``): ours with this
interpreter, peers with the peers' env, so their pins never meet ours and every reader
starts equally cold. ``cold`` = the first call on a new reader object in a new process;
``warm`` = the next call on the same object. The OS page cache is NOT dropped (that needs
root): an untimed warm-up pass per reader reads the files first, so all readers see warm
page cache and "cold" means cold *process and reader* caches only.

DICOMweb: a private Orthanc (``tests/support/orthanc.py``, storage kept in
``benchmarks/data/orthanc-storage`` so the slide is uploaded once) behind
``benchmarks/delay_proxy.py``, which adds ``--rtt-ms`` of round-trip latency and counts
the HTTP requests of every phase.

Results: ``<out>/<UTC date-time>.json`` (raw samples) and ``benchmarks/RESULTS.md`` (or
``--markdown``; ``<out>/RESULTS.md`` with ``--smoke``) with medians, ratios and targets.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKER = HERE / "peer_worker.py"
ORTHANC_WORKDIR = HERE / "data" / "orthanc-storage"
# Overridable so tests can point at a missing or different peers env.
PEERS_PY = Path(
    os.environ.get("DICOMSLIDE_BENCH_PEERS_PYTHON", HERE / ".venv-peers" / "bin" / "python")
)
OURS = ("dicomslide", "dicomslide[no-icc]", "dicomslide_sync")
PEERS = ("wsidicom", "openslide", "dicomslide-0.7.2")
TASKS = ("open", "region", "scan", "scan_region", "random", "thumbnail", "prefetch")
CACHE_BUDGET_MB = 512 * 2**20 / 1e6  # dicomslide.runtime.DEFAULT_CACHE_BYTES, in MB
RSS_ALLOWANCE_MB = 150.0
SLIDE_KEYS = ("spec", "converter", "instances", "total_bytes", "seconds")

sys.path.insert(0, str(HERE))
import data  # noqa: E402 - benchmarks/ is not a package
from delay_proxy import DelayProxy  # noqa: E402

Log = Callable[[str], None]

# --- plan ----------------------------------------------------------------------------------


def make_plan(manifest: dict[str, Any], smoke: bool, source: str = "local") -> dict[str, Any]:
    folder = HERE / manifest["dicom_dir"]
    inst = manifest["instances"]
    levels = [(d["width"], d["height"]) for d in inst]
    w0, h0 = levels[0]
    factors = [w0 / w for w, _ in levels]
    tile = inst[0]["tile"][0]
    counts = [-(-w // tile) * -(-h // tile) for w, h in levels]
    if source == "dicomweb":
        # Fewer tiles over the network (peers fetch one tile per request): 300-1000.
        in_range = [i for i, n in enumerate(counts) if 300 <= n <= 1000]
        cap = 1000
    else:
        # 1000-5000 tiles (enough for a rate, short enough to repeat).
        in_range = [i for i, n in enumerate(counts) if 1000 <= n <= 5000]
        cap = 5000
    # The largest level under the cap when none is in range (the smoke slide).
    scan_level = in_range[0] if in_range else next(i for i, n in enumerate(counts) if n <= cap)
    side = min(2048, w0 // 2, h0 // 2)
    # Interior and deliberately not tile-aligned: a region touches partial tiles on all sides.
    x = (w0 * 2 // 5) // tile * tile + tile // 3
    y = (h0 * 2 // 5) // tile * tile + tile // 3
    return {
        "source": source,
        "folder": str(folder),
        "level0_file": str(folder / inst[0]["file"]),
        "levels": levels,
        "factors": factors,
        "tile": tile,
        "tile_counts": counts,
        "region": [x, y, side, side],
        "scan_level": scan_level,
        "random_size": 512,
        # Over DICOMweb every random region costs Orthanc a parse of the 108 MB level-0
        # instance (~0.1 s of its CPU per request on this VM): 100 regions, not 400.
        "random_count": 40 if smoke else (100 if source == "dicomweb" else 400),
        "random_seed": 1234,
        "threads": 16,
        "async_tasks": 64,
        "thumbnail": 512,
        "prefetch_level": 0,
        "prefetch_size": 2048,
        "prefetch_workers": 4,
    }


# --- running workers -----------------------------------------------------------------------


def reader_command(reader: str) -> tuple[list[str], dict[str, str]] | None:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if reader in (*OURS, "decode", "server"):
        env["PYTHONPATH"] = str(ROOT)
        return [sys.executable, "-P", str(WORKER)], env
    if not PEERS_PY.exists():
        return None
    return [str(PEERS_PY), "-P", str(WORKER)], env


def call_worker(
    reader: str,
    tasks: list[str],
    plan: dict[str, Any],
    warm: int,
    extra: list[str],
    timeout: float,
) -> dict[str, Any]:
    found = reader_command(reader)
    if found is None:
        return {"reader": reader, "skipped": "peers env missing (run benchmarks/setup_peers.py)"}
    cmd, env = found
    cmd += ["--reader", reader, "--tasks", ",".join(tasks), "--plan", json.dumps(plan)]
    cmd += ["--warm", str(warm), *extra]
    t0 = time.perf_counter()
    try:
        # cwd outside the repo: a peer must import its own dicomslide, not ours.
        res = subprocess.run(
            cmd, capture_output=True, text=True, env=env, cwd="/", timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"reader": reader, "error": f"timeout after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        return {
            "reader": reader,
            "error": f"worker exit {res.returncode}",
            "stderr": res.stderr[-4000:],
        }
    out: dict[str, Any] = json.loads(lines[-1])
    out["process_wall_s"] = wall
    return out


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def variants(source: str) -> list[tuple[str, str, list[str]]]:
    """(label, worker reader, extra worker arguments) of every measured configuration."""
    index = ["--index-dir", str(HERE / "data" / ".dicomslide-index")]
    local = source == "local"
    out: list[tuple[str, str, list[str]]] = [
        ("dicomslide", "dicomslide", index if local else []),
        ("dicomslide[no-icc]", "dicomslide", [*(index if local else []), "--no-icc"]),
        ("dicomslide_sync", "dicomslide_sync", index if local else []),
    ]
    out += [(p, p, []) for p in PEERS if local or p != "openslide"]
    return out


def run_section(
    plan: dict[str, Any], reps: int, smoke: bool, log: Log, tasks: tuple[str, ...] = TASKS
) -> dict[str, Any]:
    """Every reader configuration x task of one source, plus the limits."""
    results: dict[str, Any] = {
        "runs": {},
        "versions": {},
        "skipped": {},
        "maxrss_mb": {},
        "maxrss_mb_by_task": {},
    }
    timeout = 120 if smoke else 900
    source = plan["source"]
    configs = variants(source)
    # An extra configuration for the open task only: an empty persisted index each time.
    open_only = [("dicomslide[index-cold]", "dicomslide", ["--index-dir", "fresh"])]
    if source != "local":
        open_only = []

    def record(label: str, task: str, res: dict[str, Any]) -> None:
        if "skipped" in res:
            results["skipped"][label] = res["skipped"]
            return
        if "versions" in res:
            results["versions"][label] = res["versions"]
        if "maxrss_mb" in res:
            prev = results["maxrss_mb"].get(label, 0.0)
            results["maxrss_mb"][label] = max(prev, res["maxrss_mb"])
            by_task = results["maxrss_mb_by_task"].setdefault(label, {})
            by_task[task] = max(by_task.get(task, 0.0), res["maxrss_mb"])
        runs = results["runs"].setdefault(label, {})
        entry = runs.setdefault(task, {"cold": [], "warm": [], "errors": [], "extra": []})
        if "error" in res:
            entry["errors"].append({k: res.get(k) for k in ("error", "stderr")})
            return
        tr = res["tasks"].get(task, {})
        if "error" in tr:
            entry["errors"].append({"error": tr["error"], "traceback": tr.get("traceback")})
            return
        entry["cold"].append(tr["cold"])
        entry["warm"].extend(tr["warm"])
        entry["extra"].append({k: v for k, v in tr.items() if k not in ("cold", "warm")})

    # Untimed warm-up per reader: fills the OS page cache (and Orthanc's) and our persisted
    # index, so that every reader meets the same warm caches outside its own process.
    for label, reader, extra in configs:
        log(f"warm-up {label}")
        res = call_worker(reader, ["open", "thumbnail"], plan, 0, extra, timeout)
        if "skipped" in res:
            results["skipped"][label] = res["skipped"]

    active = [c for c in configs if c[0] not in results["skipped"]]
    if smoke:
        # One process per reader for all tasks: the smoke run must finish in seconds.
        for label, reader, extra in [*active, *open_only]:
            these = ["open"] if label in {c[0] for c in open_only} else list(tasks)
            log(f"{label}: {','.join(these)}")
            res = call_worker(reader, these, plan, 1, extra, timeout)
            for task in these:
                record(label, task, res)
    else:
        for task in tasks:
            more = open_only if task == "open" else []
            for label, reader, extra in [*active, *more]:
                for rep in range(reps):
                    log(f"{source} {task} {label} rep {rep + 1}/{reps}")
                    res = call_worker(reader, [task], plan, 1, extra, timeout)
                    record(label, task, res)
                    if res.get("error") or res.get("tasks", {}).get(task, {}).get("error"):
                        break  # a failing reader fails every repetition; save the time

    log("decode limit")
    res = call_worker("decode", ["scan", "prefetch"], plan, max(reps, 2), [], timeout)
    record("decode-limit", "scan", res)
    record("decode-limit", "prefetch", res)
    if source == "dicomweb":
        log("server limit")
        for _ in range(1 if smoke else 3):
            res = call_worker("server", ["server"], plan, 2, [], timeout)
            record("server-limit", "server", res)
    return results


# --- DICOMweb ------------------------------------------------------------------------------


def slide_uids(manifest: dict[str, Any]) -> dict[str, Any]:
    import pydicom

    folder = HERE / manifest["dicom_dir"]
    instances = []
    ds = None
    for d in manifest["instances"]:
        ds = pydicom.dcmread(folder / d["file"], stop_before_pixels=True)
        instances.append({"sop": str(ds.SOPInstanceUID), "frames": int(ds.NumberOfFrames)})
    assert ds is not None
    return {
        "study_uid": str(ds.StudyInstanceUID),
        "series_uid": str(ds.SeriesInstanceUID),
        "instances": instances,
    }


@contextlib.contextmanager
def orthanc(
    manifest: dict[str, Any], log: Log, smoke: bool = False
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """A private Orthanc holding the slide (uploaded once: the storage folder is kept).

    Readers are given the study UID (wsidicom needs study and series), so other slides on
    the server do not matter; the smoke slide still gets its own storage.
    """
    import httpx

    sys.path.insert(0, str(ROOT))
    from tests.support.orthanc import OrthancServer

    uids = slide_uids(manifest)
    workdir = ORTHANC_WORKDIR
    if smoke:
        workdir = workdir.with_name(workdir.name + "-smoke")
    with OrthancServer(workdir=workdir) as server:
        url = (
            f"{server.dicomweb_url}/studies/{uids['study_uid']}/series/{uids['series_uid']}"
            "/instances"
        )
        with httpx.Client(trust_env=False, timeout=60) as client:
            r = client.get(url)
            have = {i["00080018"]["Value"][0] for i in r.json()} if r.status_code == 200 else set()
        want = {i["sop"] for i in uids["instances"]}
        if not want <= have:
            log(f"uploading {len(want)} instances to Orthanc ({workdir})")
            t0 = time.perf_counter()
            server.upload([HERE / manifest["dicom_dir"]])
            log(f"uploaded in {time.perf_counter() - t0:.1f} s")
        version = server.system().get("Version", "?")
        yield server, {**uids, "orthanc": version}


# --- summary -------------------------------------------------------------------------------


def summarise(results: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    n_scan = plan["tile_counts"][plan["scan_level"]]
    n_prefetch = plan["tile_counts"][plan["prefetch_level"]]
    summary: dict[str, Any] = {}
    for label, tasks in results["runs"].items():
        for task, e in tasks.items():
            s: dict[str, Any] = {
                "cold_s": median(e["cold"]),
                "warm_s": median(e["warm"]),
                "n_cold": len(e["cold"]),
                "n_warm": len(e["warm"]),
                "errors": [x["error"] for x in e["errors"]],
            }
            per = {"scan": n_scan, "scan_region": n_scan, "prefetch": n_prefetch}.get(task)
            if per:
                for k in ("cold", "warm"):
                    t = s[f"{k}_s"]
                    s[f"{k}_tiles_per_s"] = per / t if t else None
            if task == "random":
                for k in ("cold", "warm"):
                    t = s[f"{k}_s"]
                    s[f"{k}_regions_per_s"] = plan["random_count"] / t if t else None
            reqs = [x.get("requests") for x in e["extra"] if x.get("requests")]
            if reqs:
                for phase in ("open", "cold"):
                    vals = [r[phase] for r in reqs if phase in r]
                    if vals:
                        s[f"requests_{phase}"] = statistics.median(vals)
            if task == "server":
                for k in ("ms_per_request_single", "ms_one_request_all", "level_frames_per_s"):
                    vals = [x[k] for x in e["extra"] if k in x]
                    s[k] = median(vals)
                s["sample_frames"] = e["extra"][0]["sample_frames"] if e["extra"] else None
            summary.setdefault(label, {})[task] = s
    return summary


def _get(summary: dict[str, Any], label: str, task: str, key: str) -> float | None:
    return summary.get(label, {}).get(task, {}).get(key)


def _check(
    name: str, value: float | None, limit: float | None, higher: bool, unit: str, why: str = ""
) -> dict[str, Any]:
    ok = None
    if value is not None and limit is not None:
        ok = value >= limit if higher else value <= limit
    return {"target": name, "value": value, "limit": limit, "pass": ok, "unit": unit, "why": why}


def prefetch_limit(sec: dict[str, Any]) -> tuple[float | None, str]:
    s = sec["summary"]
    dec = _get(s, "decode-limit", "prefetch", "warm_tiles_per_s")
    srv = _get(s, "server-limit", "server", "level_frames_per_s")
    if dec is None:
        return None, "no decode limit"
    if srv is None:
        if sec["source"] != "local":
            return None, "server limit not measured (error)"
        return dec, "decode"
    return min(dec, srv), ("decode" if dec <= srv else "server")


def targets(sections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pass/fail goals, evaluated on cold medians (a new reader per measurement)."""
    out = []
    peak = 0.0
    for sec in sections:
        s = sec["summary"]
        name = sec["name"]

        def g(label: str, task: str, key: str, s: dict[str, Any] = s) -> float | None:
            return _get(s, label, task, key)

        region = g("dicomslide", "region", "cold_s")
        wsi_region = g("wsidicom", "region", "cold_s")
        scan = g("dicomslide", "scan", "cold_tiles_per_s")
        wsi_scan = g("wsidicom", "scan", "cold_tiles_per_s")
        opened = g("dicomslide", "open", "cold_s")
        wsi_open = g("wsidicom", "open", "cold_s")
        if sec["source"] == "local":
            out += [
                _check(
                    f"{name}: 2048² region ≤ 0.7 x wsidicom",
                    region,
                    None if wsi_region is None else 0.7 * wsi_region,
                    False,
                    "s",
                ),
                _check(
                    f"{name}: 2048² region ≤ OpenSlide",
                    region,
                    g("openslide", "region", "cold_s"),
                    False,
                    "s",
                ),
                _check(f"{name}: per-tile scan ≥ 1000 tiles/s", scan, 1000.0, True, "n"),
                _check(f"{name}: open ≤ wsidicom", opened, wsi_open, False, "s"),
            ]
        else:
            one = g("dicomslide", "scan_region", "cold_s")
            scan_s = g("dicomslide", "scan", "cold_s")
            req = g("dicomslide", "open", "requests_cold")
            wreq = g("wsidicom", "open", "requests_cold")
            out += [
                _check(f"{name}: 2048² region ≤ wsidicom", region, wsi_region, False, "s"),
                _check(
                    f"{name}: per-tile scan ≥ 20 x wsidicom",
                    scan,
                    None if wsi_scan is None else 20 * wsi_scan,
                    True,
                    "n",
                ),
                _check(
                    f"{name}: per-tile scan time ≤ 2 x one-region read of the level",
                    scan_s,
                    None if one is None else 2 * one,
                    False,
                    "s",
                ),
                _check(
                    f"{name}: open ≤ 0.6 x wsidicom",
                    opened,
                    None if wsi_open is None else 0.6 * wsi_open,
                    False,
                    "s",
                    f"requests: ours {req if req is not None else '?'}, "
                    f"wsidicom {wreq if wreq is not None else '?'}",
                ),
            ]
        limit, which = prefetch_limit(sec)
        out.append(
            _check(
                f"{name}: prefetch level {sec['plan']['prefetch_level']} ≥ 0.8 x min(decode, "
                "server) limit",
                g("dicomslide", "prefetch", "cold_tiles_per_s"),
                None if limit is None else 0.8 * limit,
                True,
                "n",
                f"limit: {which}",
            )
        )
        rss = sec["results"]["maxrss_mb"]
        peak = max([peak, *(rss.get(r, 0.0) for r in OURS)])
    out.append(
        _check(
            f"peak RSS of our processes ≤ cache budget ({CACHE_BUDGET_MB:.0f} MB) + "
            f"{RSS_ALLOWANCE_MB:.0f} MB",
            peak or None,
            CACHE_BUDGET_MB + RSS_ALLOWANCE_MB,
            False,
            "mb",
        )
    )
    return out


def machine_info() -> dict[str, Any]:
    cpu = "?"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
        mem_kb = next(
            int(ln.split()[1])
            for ln in Path("/proc/meminfo").read_text().splitlines()
            if ln.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        mem_kb = 0
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def _fmt(v: float | None, unit: str = "s") -> str:
    if v is None:
        return "—"
    if unit == "s":
        return f"{v * 1000:.0f} ms" if v < 10 else f"{v:.1f} s"
    if unit == "mb":
        return f"{v:.0f} MB"
    if unit == "req":
        return f"{v:.0f}"
    return f"{v:,.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if not a or not b else f"{a / b:.2f}x"


def section_markdown(sec: dict[str, Any]) -> list[str]:
    s = sec["summary"]
    plan = sec["plan"]
    readers = [r for r in (*OURS, *PEERS) if r in s]
    peers = [r for r in readers if r in PEERS]
    n_scan = plan["tile_counts"][plan["scan_level"]]
    n_pre = plan["tile_counts"][plan["prefetch_level"]]
    lines = [
        f"## {sec['name']}",
        "",
        f"Load average before / after: {sec.get('load_before')} / {sec.get('load_after')}. "
        f"Scan level {plan['scan_level']} ({n_scan} tiles); prefetch level "
        f"{plan['prefetch_level']} ({n_pre} tiles) by {plan['prefetch_size']}² regions, "
        f"{plan['prefetch_workers']} concurrent.",
        "",
        "| workload | " + " | ".join(readers) + " | ours / best peer |",
        "|---|" + "---|" * len(readers) + "---|",
    ]

    def row(name: str, task: str, key: str, unit: str, higher_better: bool) -> None:
        vals = {r: _get(s, r, task, key) for r in readers}
        if all(v is None for v in vals.values()) and not any(
            s.get(r, {}).get(task, {}).get("errors") for r in readers
        ):
            return
        cells = []
        for r in readers:
            errs = s.get(r, {}).get(task, {}).get("errors")
            cells.append("**error**" if vals[r] is None and errs else _fmt(vals[r], unit))
        peer_vals = [vals[p] for p in peers if vals[p]]
        best = (max if higher_better else min)(peer_vals) if peer_vals else None
        ours = vals.get("dicomslide")
        ratio = _ratio(ours, best) if unit != "req" else ""
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio} |")

    for kind in ("cold", "warm"):
        row(f"open ({kind})", "open", f"{kind}_s", "s", False)
    row("open: HTTP requests", "open", "requests_cold", "req", False)
    if "dicomslide[index-cold]" in s:
        v = _get(s, "dicomslide[index-cold]", "open", "cold_s")
        lines.append(f"| open, persisted index empty (ours) | {_fmt(v)} |" + " — |" * len(readers))
    for kind in ("cold", "warm"):
        row(f"region {plan['region'][2]}² ({kind})", "region", f"{kind}_s", "s", False)
    row("region: HTTP requests (cold)", "region", "requests_cold", "req", False)
    for kind in ("cold", "warm"):
        row(f"per-tile scan, tiles/s ({kind})", "scan", f"{kind}_tiles_per_s", "n", True)
    row("per-tile scan: HTTP requests (cold)", "scan", "requests_cold", "req", False)
    row("level as one region, tiles/s (cold)", "scan_region", "cold_tiles_per_s", "n", True)
    for kind in ("cold", "warm"):
        row(f"random 512², regions/s ({kind})", "random", f"{kind}_regions_per_s", "n", True)
    for kind in ("cold", "warm"):
        row(f"thumbnail ({kind})", "thumbnail", f"{kind}_s", "s", False)
    row(f"prefetch level {plan['prefetch_level']}, tiles/s (cold)", "prefetch",
        "cold_tiles_per_s", "n", True)  # fmt: skip
    row("prefetch: HTTP requests (cold)", "prefetch", "requests_cold", "req", False)
    rss = sec["results"]["maxrss_mb"]
    lines.append(
        "| peak RSS (max over processes) | "
        + " | ".join(f"{rss[r]:.0f} MB" if r in rss else "—" for r in readers)
        + " | |"
    )
    by_task = sec["results"].get("maxrss_mb_by_task", {})
    if "dicomslide" in by_task:
        lines += [
            "",
            "Peak RSS of `dicomslide` processes by task: "
            + ", ".join(f"{t} {v:.0f} MB" for t, v in by_task["dicomslide"].items())
            + ".",
        ]

    runs = sec["results"]["runs"]
    lines.append("")
    for task, level in (("scan", plan["scan_level"]), ("prefetch", plan["prefetch_level"])):
        lim = _get(s, "decode-limit", task, "warm_tiles_per_s")
        extra = runs.get("decode-limit", {}).get(task, {}).get("extra") or [{}]
        ours = _get(s, "dicomslide", task, "cold_tiles_per_s")
        lines.append(
            f"- Decode limit, level {level} frames in memory (`{extra[0].get('best', '?')}`, "
            f"{extra[0].get('threads', 2)} threads): **{_fmt(lim, 'n')} tiles/s**; "
            f"ours ({task}, cold) / limit = {_ratio(ours, lim)}."
        )
    if "server-limit" in s:
        srv = s["server-limit"]["server"]
        ours = _get(s, "dicomslide", "prefetch", "cold_tiles_per_s")
        srv_rate = srv.get("level_frames_per_s")
        lines.append(
            f"- Server limit (Orthanc through the proxy, raw httpx, no decoding): "
            f"{srv.get('sample_frames')} level-{plan['prefetch_level']} frames one per request "
            f"{_fmt(srv.get('ms_per_request_single'), 'n')} ms/request (sequential, keep-alive) "
            f"vs. the same frames in one request {_fmt(srv.get('ms_one_request_all'), 'n')} ms; "
            f"the whole level in 100-frame requests, 4 in flight: "
            f"**{_fmt(srv_rate, 'n')} frames/s**; "
            f"ours (prefetch, cold) / server limit = {_ratio(ours, srv_rate)}."
        )
    errs = [(r, t, e) for r, ts in runs.items() for t, x in ts.items() for e in x["errors"]]
    if errs:
        lines += ["", "Errors:", ""]
        for r, t, e in errs:
            lines.append(f"- {r} / {t}: `{e['error']}`")
    lines.append("")
    return lines


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    slide = doc["slide"]
    plan = doc["sections"][0]["plan"]
    w0, h0 = plan["levels"][0]
    lines = [
        "# dicomslide benchmark results",
        "",
        f"Run {doc['date']} ({'smoke' if doc['smoke'] else 'full'}, {doc['reps']} repetitions "
        f"= fresh processes per measurement, {doc['elapsed_s'] / 60:.0f} min). Machine: "
        f"{m['nproc']} CPUs ({m['cpu']}), {m['ram_gb']} GB RAM, Python {m['python']}, "
        f"{m['platform']}. Noisy shared VM (other test runs at the same time; load averages "
        "per section): medians.",
        "",
        f"Slide: {w0}x{h0} RGB JPEG, {plan['tile']}-px tiles, {len(plan['levels'])} levels "
        f"{[tuple(x) for x in plan['levels']]}, converter: {slide['converter']}, "
        f"{slide['total_bytes'] / 2**20:.0f} MiB.",
        "",
    ]
    if doc.get("notes"):
        lines += [doc["notes"], ""]
    lines += ["## Targets", "", "| target | ours | limit | pass | note |", "|---|---|---|---|---|"]
    for t in doc["targets"]:
        verdict = {True: "PASS", False: "**FAIL**", None: "n/a"}[t["pass"]]
        lines.append(
            f"| {t['target']} | {_fmt(t['value'], t['unit'])} | {_fmt(t['limit'], t['unit'])} "
            f"| {verdict} | {t.get('why', '')} |"
        )
    lines.append("")
    for sec in doc["sections"]:
        lines += section_markdown(sec)
    lines += ["## Versions", ""]
    versions: dict[str, Any] = {}
    for sec in doc["sections"]:
        versions.update(sec["results"]["versions"])
    for label, v in versions.items():
        lines.append(f"- {label}: " + ", ".join(f"{k} {x}" for k, x in v.items()))
    if doc.get("orthanc"):
        lines.append(f"- Orthanc {doc['orthanc']} (+ DICOMweb plugin)")
    skipped = {k: v for sec in doc["sections"] for k, v in sec["results"]["skipped"].items()}
    skipped.update(doc.get("skipped_sources", {}))
    if skipped:
        lines += ["", "## Skipped", ""]
        lines += [f"- {k}: {v}" for k, v in skipped.items()]
    return "\n".join(lines) + "\n"


# --- main ----------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny slide, 1 repetition, < 60 s")
    ap.add_argument("--reps", type=int, default=5, help="fresh processes per measurement")
    ap.add_argument(
        "--source",
        choices=["local", "dicomweb", "all"],
        default=None,
        help="default: all (local with --smoke)",
    )
    ap.add_argument(
        "--rtt-ms", default="0,20", help="DICOMweb: added round trips to try, comma-separated"
    )
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="folder for the JSON")
    ap.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help="markdown report (default: benchmarks/RESULTS.md, or <out>/RESULTS.md with --smoke)",
    )
    ap.add_argument("--notes", type=Path, default=None, help="markdown put above the tables")
    ap.add_argument(
        "--render",
        type=Path,
        nargs="+",
        default=None,
        help="only re-render the markdown from saved JSONs (their sections merged)",
    )
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    if args.render:
        docs = [json.loads(p.read_text()) for p in args.render]
        doc = docs[0]
        for other in docs[1:]:
            doc["sections"] += other["sections"]
            doc["elapsed_s"] += other["elapsed_s"]
            doc["orthanc"] = doc.get("orthanc") or other.get("orthanc")
            doc["date"] += f" / {other['date']}"
        doc["targets"] = targets(doc["sections"])
        if args.notes:
            doc["notes"] = args.notes.read_text()
        md_path = args.markdown or HERE / "RESULTS.md"
        md_path.write_text(markdown(doc))
        return 0
    source = args.source or ("local" if args.smoke else "all")
    tasks = tuple(t for t in args.tasks.split(",") if t)
    if unknown := set(tasks) - set(TASKS):
        ap.error(f"unknown tasks {sorted(unknown)}")
    rtts = [float(x) for x in args.rtt_ms.split(",") if x.strip()]
    reps = 1 if args.smoke else args.reps
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    spec = data.SMOKE if args.smoke else data.FULL
    log(f"slide {spec.name}")
    try:
        manifest = data.ensure_slide(spec)
    except data.ConverterMissingError as exc:
        # The smoke run is part of the test suite: a host without the converter skips it.
        print(f"benchmark skipped: {exc}", file=sys.stderr)
        return 0 if args.smoke else 1

    sections: list[dict[str, Any]] = []
    skipped_sources: dict[str, str] = {}
    orthanc_version = None
    now = dt.datetime.now(dt.timezone.utc)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{now.strftime('%Y-%m-%dT%H%M%SZ')}{'-smoke' if args.smoke else ''}.json"

    def document() -> dict[str, Any]:
        return {
            "date": now.strftime("%Y-%m-%d %H:%M UTC"),
            "smoke": args.smoke,
            "reps": reps,
            "machine": machine_info(),
            "slide": {k: manifest[k] for k in SLIDE_KEYS},
            "orthanc": orthanc_version,
            "sections": sections,
            "skipped_sources": skipped_sources,
            "targets": targets(sections),
            "elapsed_s": time.perf_counter() - t_start,
            "notes": args.notes.read_text() if args.notes else "",
        }

    def section(name: str, plan: dict[str, Any], rtt: float | None = None) -> dict[str, Any]:
        before = loadavg()
        results = run_section(plan, reps, args.smoke, log, tasks)
        sec = {
            "name": name,
            "source": plan["source"],
            "rtt_ms": rtt,
            "plan": plan,
            "results": results,
            "summary": summarise(results, plan),
            "load_before": before,
            "load_after": loadavg(),
        }
        # Saved after every section: a long run that dies later keeps what it measured.
        path.write_text(json.dumps({**document(), "sections": [*sections, sec]}, indent=1))
        return sec

    if source in ("local", "all"):
        sections.append(section("local", make_plan(manifest, args.smoke)))
    if source in ("dicomweb", "all"):
        try:
            with orthanc(manifest, log, args.smoke) as (server, info):
                orthanc_version = info.pop("orthanc")
                for rtt in rtts:
                    with DelayProxy(("127.0.0.1", server.port), rtt_ms=rtt) as proxy:
                        plan = make_plan(manifest, args.smoke, "dicomweb")
                        plan.update(info)
                        plan["url"] = f"http://127.0.0.1:{proxy.port}/dicom-web"
                        plan["control_port"] = proxy.control_port
                        plan["rtt_ms"] = rtt
                        sections.append(section(f"DICOMweb, +{rtt:g} ms RTT", plan, rtt))
        except Exception as exc:  # Orthanc missing: report, keep the local results
            if type(exc).__name__ not in ("OrthancNotAvailableError", "OrthancStartError"):
                raise
            skipped_sources["dicomweb"] = str(exc)
            log(f"DICOMweb skipped: {exc}")
    if not sections:
        print(f"nothing measured: {skipped_sources}", file=sys.stderr)
        return 1

    doc = document()
    path.write_text(json.dumps(doc, indent=1))
    md_path = args.markdown or (args.out / "RESULTS.md" if args.smoke else HERE / "RESULTS.md")
    md_path.write_text(markdown(doc))
    log(f"wrote {path} and {md_path}")
    if not args.quiet:
        print(md_path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

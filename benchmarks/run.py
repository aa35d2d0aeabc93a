"""Benchmark dicomslide against peer readers on the same DICOM files; ratios in one run.

Usage::

    python benchmarks/setup_peers.py           # once: peers in benchmarks/.venv-peers
    python benchmarks/run.py                   # full slide, local + DICOMweb (0 and 20 ms)
    python benchmarks/run.py --source local    # local folder only
    python benchmarks/run.py --source dicomweb --rtt-ms 20
    python benchmarks/run.py --smoke --out /tmp/x   # tiny slide, local, 1 repetition, < 60 s
    python benchmarks/run.py --source local --tasks prefetch,prefetch_regions --reps 3
    python benchmarks/run.py --source local --tasks dask --reps 3       # to_dask, 1 vs 2 procs
    python benchmarks/run.py --source local --tasks progress --reps 3   # progress overhead

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
# Run over DICOMweb only when named in --tasks (one level's prefetch 5 x per round: minutes).
LOCAL_ONLY_BY_DEFAULT = ("progress",)
DASK_LABELS = ("dask[threads]", "dask[1 process]", "dask[2 processes]")
PROGRESS_LABEL = "progress"
PREFETCH_TASKS = {"prefetch", "prefetch_regions", "progress"}
CACHE_BUDGET_MB = 512 * 2**20 / 1e6  # dicomslide.runtime.DEFAULT_CACHE_BYTES, in MB
RSS_ALLOWANCE_MB = 150.0
SLIDE_KEYS = ("spec", "converter", "instances", "total_bytes", "seconds")

sys.path.insert(0, str(HERE))
import data  # noqa: E402 - benchmarks/ is not a package
from delay_proxy import DelayProxy  # noqa: E402
from peer_worker import TASKS  # noqa: E402 - one list of workloads for harness and worker

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
        # to_dask of the scan level (local: level 1, 90 chunks of 1024²; DICOMweb: level 2,
        # 25 chunks): seconds per compute, enough chunks for two workers.
        "dask_level": scan_level,
        "dask_chunk": None,
        # rounds of the five progress modes per worker process
        "progress_rounds": 1 if smoke else 3,
        # ours' "prefetch" is dicomslide.prefetch (before: 2048² regions, now "prefetch_regions")
        "prefetch_api": True,
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


def task_variants(source: str, task: str) -> list[tuple[str, str, list[str]]] | None:
    """The configurations of a task that is not run per reader (ours only), else None."""
    index = ["--index-dir", str(HERE / "data" / ".dicomslide-index")] if source == "local" else []
    if task == "dask":
        return [
            (label, "dicomslide_sync", [*index, "--dask-workers", str(n)])
            for label, n in zip(DASK_LABELS, (0, 1, 2), strict=True)
        ]
    if task == "progress":
        return [(PROGRESS_LABEL, "dicomslide", index)]
    return None


def applies(label: str, task: str) -> bool:
    """Whether a reader configuration runs a per-reader task."""
    if task_variants("local", task) is not None:
        return False
    # The region pattern is the peers' "prefetch" already; ours run it under its own name.
    return task != "prefetch_regions" or label in OURS


class OrthancGuard:
    """Notices that Orthanc has exited, records it, and starts it again behind the proxy.

    In the run of 2026-11-27 Orthanc disappeared mid-section (its log just stops, no shutdown
    message) and every later request failed at the proxy; the readers reported that as
    "server closed the connection without a response". Now the run says so, restarts
    Orthanc on the same storage (its caches are then cold) and measures the rest.
    """

    def __init__(self, server: Any, log: Log) -> None:
        self.server = server
        self.log = log
        self.proxy: DelayProxy | None = None
        self.events: list[dict[str, Any]] = []

    def check(self) -> str | None:
        if self.server.running:
            return None
        process = getattr(self.server, "_process", None)
        code = process.poll() if process is not None else None
        tail = self.server.log_tail(8)
        when = dt.datetime.now(dt.timezone.utc).strftime("%H:%M:%S UTC")
        self.log(f"Orthanc exited (code {code}) at or before {when}; restarting it")
        self.server.stop()
        self.server.start()
        if self.proxy is not None:
            self.proxy.upstream = ("127.0.0.1", self.server.port)
        self.events.append(
            {"noticed": when, "exit_code": code, "log_tail": tail, "new_port": self.server.port}
        )
        return f"Orthanc had exited with code {code} (noticed {when}; restarted)"


def run_section(
    plan: dict[str, Any],
    reps: int,
    smoke: bool,
    log: Log,
    tasks: tuple[str, ...] = TASKS,
    guard: OrthancGuard | None = None,
) -> dict[str, Any]:
    """Every reader configuration x task of one source, plus the limits."""
    results: dict[str, Any] = {
        "runs": {},
        "versions": {},
        "skipped": {},
        "maxrss_mb": {},
        "maxrss_mb_by_task": {},
    }
    first_event = len(guard.events) if guard is not None else 0
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

    def work(reader: str, these: list[str], warm: int, extra: list[str]) -> dict[str, Any]:
        """call_worker, and if Orthanc died meanwhile, say so in the worker's errors."""
        if guard is not None:
            guard.check()  # died while nothing ran: restart before measuring
            plan["server_pid"] = guard.server.pid  # workers charge Orthanc's CPU to runs
        res = call_worker(reader, these, plan, warm, extra, timeout)
        note = guard.check() if guard is not None else None
        if note:
            if "error" in res:
                res["error"] += f" [{note}]"
            for tr in res.get("tasks", {}).values():
                if "error" in tr:
                    tr["error"] += f" [{note}]"
        return res

    # Untimed warm-up per reader: fills the OS page cache (and Orthanc's) and our persisted
    # index, so that every reader meets the same warm caches outside its own process.
    for label, reader, extra in configs:
        log(f"warm-up {label}")
        res = work(reader, ["open", "thumbnail"], 0, extra)
        if "skipped" in res:
            results["skipped"][label] = res["skipped"]

    active = [c for c in configs if c[0] not in results["skipped"]]
    special = [t for t in tasks if task_variants(source, t) is not None]
    if smoke:
        # One process per reader for all its tasks: the smoke run must finish in seconds.
        for label, reader, extra in [*active, *open_only]:
            if label in {c[0] for c in open_only}:
                these = ["open"]
            else:
                these = [t for t in tasks if applies(label, t)]
            if not these:
                continue
            log(f"{label}: {','.join(these)}")
            res = work(reader, these, 1, extra)
            for task in these:
                record(label, task, res)
        for task in special:
            for label, reader, extra in task_variants(source, task) or []:
                log(f"{label}: {task}")
                record(label, task, work(reader, [task], 1, extra))
    else:
        for task in tasks:
            configs_now = task_variants(source, task)
            if configs_now is None:
                more = open_only if task == "open" else []
                configs_now = [c for c in [*active, *more] if applies(c[0], task)]
            for label, reader, extra in configs_now:
                for rep in range(reps):
                    log(f"{source} {task} {label} rep {rep + 1}/{reps}")
                    res = work(reader, [task], 1, extra)
                    record(label, task, res)
                    if res.get("error") or res.get("tasks", {}).get(task, {}).get("error"):
                        break  # a failing reader fails every repetition; save the time

    # The limits of the levels measured: scan level and prefetch level.
    limit_tasks = [
        lim
        for lim, uses in (("scan", {"scan", "scan_region"}), ("prefetch", PREFETCH_TASKS))
        if uses & set(tasks)
    ]
    if limit_tasks:
        log("decode limit")
        res = work("decode", limit_tasks, max(reps, 2), [])
        for task in limit_tasks:
            record("decode-limit", task, res)
    if source == "dicomweb" and PREFETCH_TASKS & set(tasks):
        log("server limit")
        for _ in range(1 if smoke else 3):
            res = work("server", ["server"], 2, [])
            record("server-limit", "server", res)
    if guard is not None:
        results["server_events"] = guard.events[first_event:]
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
            per = {
                "scan": n_scan,
                "scan_region": n_scan,
                "prefetch": n_prefetch,
                "prefetch_regions": n_prefetch,
            }.get(task)
            if per:
                for k in ("cold", "warm"):
                    t = s[f"{k}_s"]
                    s[f"{k}_tiles_per_s"] = per / t if t else None
            if task == "random":
                for k in ("cold", "warm"):
                    t = s[f"{k}_s"]
                    s[f"{k}_regions_per_s"] = plan["random_count"] / t if t else None
            for key, name in (("cpu_s", "cpu_cold_s"), ("server_cpu_s", "server_cpu_cold_s")):
                vals = [x[key] for x in e["extra"] if x.get(key) is not None]
                if vals:
                    s[name] = statistics.median(vals)
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
                by_batch: dict[str, list[float]] = {}
                for x in e["extra"]:
                    for b, r in x.get("level_frames_per_s_by_batch", {}).items():
                        by_batch.setdefault(b, []).append(r)
                s["level_frames_per_s_by_batch"] = {b: median(v) for b, v in by_batch.items()}
                s["sample_frames"] = e["extra"][0]["sample_frames"] if e["extra"] else None
            if task == "dask":
                s["cluster_start_s"] = median([x["cluster_start_s"] for x in e["extra"]])
                if e["extra"]:
                    s["chunks"] = e["extra"][0].get("chunks")
                    s["level"] = e["extra"][0].get("level")
                rss = [max(x["worker_maxrss_mb"]) for x in e["extra"] if x.get("worker_maxrss_mb")]
                s["worker_maxrss_mb"] = max(rss) if rss else None
            if task == "progress":
                s.update(progress_summary(e["extra"]))
            summary.setdefault(label, {})[task] = s
    return summary


def progress_summary(extra: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per progress mode over every round of every process, and their ratios."""
    pooled: dict[str, list[float]] = {}
    calls: dict[str, list[int]] = {}
    for x in extra:
        for mode, times in x.get("modes", {}).items():
            pooled.setdefault(mode, []).extend(times)
        for mode, n in x.get("calls", {}).items():
            calls.setdefault(mode, []).extend(n)
    med = {m: median(v) for m, v in pooled.items()}
    base = {"api": med.get("none"), "cli": med.get("cli-none")}

    def ratio(mode: str) -> float | None:
        b = base["cli" if mode.startswith("cli") else "api"]
        v = med.get(mode)
        return v / b if v is not None and b else None

    bar = [x["bar_call_us"] for x in extra if x.get("bar_call_us")]
    return {
        "bar_call_us": {k: median([b[k] for b in bar]) for k in ("throttled", "drawing")}
        if bar
        else None,
        "mode_median_s": med,
        "mode_n": {m: len(v) for m, v in pooled.items()},
        "mode_ratio": {m: ratio(m) for m in med},
        "mode_calls": {m: median([float(c) for c in v]) for m, v in calls.items()},
    }


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


def upgrade(sec: dict[str, Any]) -> dict[str, Any]:
    """A section saved before the prefetch API was measured, in today's terms.

    Then ours' "prefetch" was the region pattern: it becomes "prefetch_regions".
    """
    if sec["plan"].get("prefetch_api"):
        return sec
    summary = {k: dict(v) for k, v in sec["summary"].items()}
    runs = {k: dict(v) for k, v in sec["results"]["runs"].items()}
    for label in OURS:
        for table in (summary, runs):
            tasks = table.get(label, {})
            if "prefetch" in tasks:
                tasks["prefetch_regions"] = tasks.pop("prefetch")
    plan = {**sec["plan"], "prefetch_api": True}
    return {**sec, "plan": plan, "summary": summary, "results": {**sec["results"], "runs": runs}}


def targets(sections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pass/fail goals, evaluated on cold medians (a new reader per measurement)."""
    out = []
    peak = 0.0
    for sec in map(upgrade, sections):
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
        lvl = sec["plan"]["prefetch_level"]
        if "prefetch" in s.get("dicomslide", {}):
            out.append(
                _check(
                    f"{name}: prefetch level {lvl} ≥ 0.8 x min(decode, server) limit",
                    g("dicomslide", "prefetch", "cold_tiles_per_s"),
                    None if limit is None else 0.8 * limit,
                    True,
                    "n",
                    f"limit: {which}; ours: dicomslide.prefetch (fetches, does not decode)",
                )
            )
        if "prefetch_regions" in s.get("dicomslide", {}):
            out.append(
                _check(
                    f"{name}: level {lvl} by {sec['plan']['prefetch_size']}² regions (decoded) "
                    "≥ 0.8 x min(decode, server) limit",
                    g("dicomslide", "prefetch_regions", "cold_tiles_per_s"),
                    None if limit is None else 0.8 * limit,
                    True,
                    "n",
                    f"limit: {which}; extra check, not an issue target: the whole level "
                    "read and decoded through the region API",
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
    if unit == "cpu":
        return f"{v * 1000:.0f} ms"
    return f"{v:,.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if not a or not b else f"{a / b:.2f}x"


def section_markdown(sec: dict[str, Any]) -> list[str]:
    sec = upgrade(sec)
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
        f"{plan['prefetch_level']} ({n_pre} tiles): ours by `dicomslide.prefetch` (fetches "
        "the encoded frames into the frame cache, no decoding), every reader by "
        f"{plan['prefetch_size']}² regions, {plan['prefetch_workers']} concurrent (decoded; "
        "ours as task `prefetch_regions`, the peers' `prefetch`).",
        "",
        "| workload | " + " | ".join(readers) + " | ours / best peer |",
        "|---|" + "---|" * len(readers) + "---|",
    ]

    def row(
        name: str, task: str | dict[str, str], key: str, unit: str, higher_better: bool
    ) -> None:
        # task: one name, or a name per reader (the same workload under two task names)
        t = {r: task if isinstance(task, str) else task[r] for r in readers}
        vals = {r: _get(s, r, t[r], key) for r in readers}
        if all(v is None for v in vals.values()) and not any(
            s.get(r, {}).get(t[r], {}).get("errors") for r in readers
        ):
            return
        cells = []
        for r in readers:
            errs = s.get(r, {}).get(t[r], {}).get("errors")
            cells.append("**error**" if vals[r] is None and errs else _fmt(vals[r], unit))
        peer_vals = [vals[p] for p in peers if vals[p]]
        best = (max if higher_better else min)(peer_vals) if peer_vals else None
        ours = vals.get("dicomslide")
        ratio = _ratio(ours, best) if unit not in ("req", "cpu") else ""
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
    row("per-tile scan: CPU time of the reader (cold)", "scan", "cpu_cold_s", "cpu", False)
    row("per-tile scan: CPU time of Orthanc (cold)", "scan", "server_cpu_cold_s", "cpu", False)
    row("level as one region, tiles/s (cold)", "scan_region", "cold_tiles_per_s", "n", True)
    row("level as one region: CPU time of the reader", "scan_region", "cpu_cold_s", "cpu", False)
    for kind in ("cold", "warm"):
        row(f"random 512², regions/s ({kind})", "random", f"{kind}_regions_per_s", "n", True)
    for kind in ("cold", "warm"):
        row(f"thumbnail ({kind})", "thumbnail", f"{kind}_s", "s", False)
    lvl = plan["prefetch_level"]
    row(f"prefetch level {lvl}, tiles/s (cold): ours `prefetch()`, peers regions", "prefetch",
        "cold_tiles_per_s", "n", True)  # fmt: skip
    row("prefetch: HTTP requests (cold)", "prefetch", "requests_cold", "req", False)
    by_regions = {r: "prefetch" if r in PEERS else "prefetch_regions" for r in readers}
    row(f"level {lvl} by {plan['prefetch_size']}² regions, tiles/s (cold)", by_regions,
        "cold_tiles_per_s", "n", True)  # fmt: skip
    row("level by regions: HTTP requests (cold)", by_regions, "requests_cold", "req", False)
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

    def ours_vs(lim: float | None, tasks: tuple[str, ...]) -> str:
        names = {
            "scan": "per-tile scan",
            "prefetch": "`prefetch()`",
            "prefetch_regions": "regions",
        }
        parts = [
            f"{names[t]} {_ratio(_get(s, 'dicomslide', t, 'cold_tiles_per_s'), lim)}"
            for t in tasks
            if t in s.get("dicomslide", {})
        ]
        return "; ".join(parts) or "—"

    for task, level in (("scan", plan["scan_level"]), ("prefetch", plan["prefetch_level"])):
        if task not in s.get("decode-limit", {}):
            continue
        lim = _get(s, "decode-limit", task, "warm_tiles_per_s")
        extra = runs.get("decode-limit", {}).get(task, {}).get("extra") or [{}]
        ours_tasks = ("scan",) if task == "scan" else ("prefetch", "prefetch_regions")
        lines.append(
            f"- Decode limit, level {level} frames in memory (`{extra[0].get('best', '?')}`, "
            f"{extra[0].get('threads', 2)} threads): **{_fmt(lim, 'n')} tiles/s**; "
            f"ours (cold) / limit: {ours_vs(lim, ours_tasks)}"
            + (" (`prefetch()` does not decode)." if task == "prefetch" else ".")
        )
    if "server-limit" in s:
        srv = s["server-limit"]["server"]
        srv_rate = srv.get("level_frames_per_s")
        batches = ", ".join(
            f"{b}-frame requests {_fmt(r, 'n')}"
            for b, r in (srv.get("level_frames_per_s_by_batch") or {"100": srv_rate}).items()
        )
        lines.append(
            f"- Server limit (Orthanc through the proxy, raw httpx, no decoding): "
            f"{srv.get('sample_frames')} level-{plan['prefetch_level']} frames one per request "
            f"{_fmt(srv.get('ms_per_request_single'), 'n')} ms/request (sequential, keep-alive) "
            f"vs. the same frames in one request {_fmt(srv.get('ms_one_request_all'), 'n')} ms; "
            f"the whole level, 4 requests in flight: **{_fmt(srv_rate, 'n')} frames/s** "
            f"({batches}); "
            f"ours (cold) / server limit: {ours_vs(srv_rate, ('prefetch', 'prefetch_regions'))}."
        )
    lines += dask_markdown(sec) + progress_markdown(sec) + proxy_markdown(sec)
    errs = [(r, t, e) for r, ts in runs.items() for t, x in ts.items() for e in x["errors"]]
    if errs:
        lines += ["", "Errors:", ""]
        for r, t, e in errs:
            lines.append(f"- {r} / {t}: `{e['error']}`")
    lines.append("")
    return lines


def dask_markdown(sec: dict[str, Any]) -> list[str]:
    s = sec["summary"]
    labels = [x for x in DASK_LABELS if "dask" in s.get(x, {})]
    if not labels:
        return []
    d = {x: s[x]["dask"] for x in labels}
    first = d[labels[0]]
    chunks = first.get("chunks") or ["?", "?"]
    shape = sec["plan"]["levels"][first.get("level") or 0]
    lines = [
        "",
        f"Dask: `to_dask(slide, level={first.get('level')})` ({shape[0]}x{shape[1]} px, "
        f"{chunks[0]}x{chunks[1]} chunks), per-chunk means by `map_blocks`, computed with the "
        "threaded scheduler (one thread per CPU) or a `LocalCluster` of 1 or 2 processes "
        "with one thread each (cluster start-up not included). Cold = first compute (workers "
        "unpickle and re-open the slide), warm = the second.",
        "",
        "| Dask | " + " | ".join(labels) + " | 2 / 1 processes |",
        "|---|" + "---|" * len(labels) + "---|",
    ]
    one, two = d.get("dask[1 process]", {}), d.get("dask[2 processes]", {})

    def cells(key: str, unit: str) -> str:
        out = []
        for x in labels:
            v = d[x].get(key)
            out.append("**error**" if v is None and d[x].get("errors") else _fmt(v, unit))
        return " | ".join(out)

    for kind in ("cold", "warm"):
        ratio = _ratio(two.get(f"{kind}_s"), one.get(f"{kind}_s"))
        lines.append(f"| compute ({kind}) | {cells(f'{kind}_s', 's')} | {ratio} |")
    if any(d[x].get("requests_cold") is not None for x in labels):
        lines.append(f"| HTTP requests (cold) | {cells('requests_cold', 'req')} | |")
    lines.append(f"| cluster start-up | {cells('cluster_start_s', 's')} | |")
    lines.append(f"| peak RSS of a worker process | {cells('worker_maxrss_mb', 'mb')} | |")
    errs = [f"- {x}: `{e}`" for x in labels for e in d[x].get("errors", [])]
    return lines + (["", *errs] if errs else []) + [""]


PROGRESS_NAMES = {
    "none": "`prefetch()`, no progress",
    "callback": "`prefetch(progress=callback)` (counts calls)",
    "bar": "`prefetch(progress=<CLI bar>)` on stderr",
    "cli-none": "`dicomslide prefetch --progress none` (open included)",
    "cli-bar": "`dicomslide prefetch --progress bar` (open included)",
}


def progress_markdown(sec: dict[str, Any]) -> list[str]:
    p = sec["summary"].get(PROGRESS_LABEL, {}).get("progress")
    if not p:
        return []
    if not p.get("mode_median_s"):
        return ["", f"Progress overhead: **error** `{p.get('errors')}`", ""]
    plan = sec["plan"]
    lines = [
        "",
        f"Progress overhead: prefetch of level {plan['prefetch_level']} "
        f"({plan['tile_counts'][plan['prefetch_level']]} frames), the modes interleaved "
        "(rotating order), each on a new client (empty frame cache); the CLI in-process "
        "(`dicomslide._cli.main`), its bar drawn on a pipe.",
        "",
        "| mode | median | samples | ratio | progress calls |",
        "|---|---|---|---|---|",
    ]
    for mode, name in PROGRESS_NAMES.items():
        if mode not in p["mode_median_s"]:
            continue
        ratio = p["mode_ratio"].get(mode)
        calls = p["mode_calls"].get(mode)
        lines.append(
            f"| {name} | {_fmt(p['mode_median_s'][mode])} | {p['mode_n'][mode]} | "
            f"{'—' if ratio is None else f'{ratio:.2f}x'} | "
            f"{'' if not calls else f'{calls:.0f}'} |"
        )
    lines += ["", "Ratios: API modes against `prefetch()` without progress, CLI against CLI."]
    if p.get("bar_call_us"):
        b = p["bar_call_us"]
        lines.append(
            f"The CLI bar's own cost per progress call: {b['throttled']:.1f} µs when throttled "
            f"(redrawn at most every 0.1 s), {b['drawing']:.1f} µs when it draws."
        )
    lines.append("")
    return lines


def proxy_markdown(sec: dict[str, Any]) -> list[str]:
    res = sec["results"]
    out = []
    c = res.get("proxy")
    if c:
        out.append(
            f"- Delay proxy: {c.get('connections', 0):,} connections, {c.get('requests', 0):,} "
            f"requests; Orthanc closed {c.get('upstream_closed_first', 0):,} of them first "
            "(idle keep-alive, 1 s); client bytes that arrived after such a close "
            f"(the keep-alive race): {c.get('late_bytes_dropped', 0):,}; connections "
            f"Orthanc refused: {c.get('upstream_refused', 0):,}."
        )
    for e in res.get("server_events", []):
        out.append(
            f"- **Orthanc exited** (exit code {e['exit_code']}, noticed {e['noticed']}) and was "
            "restarted on the same storage; measurements around then ran against a cold Orthanc."
        )
    return [*out, ""] if out else []


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
    ap.add_argument(
        "--tasks",
        default=None,
        help=f"comma-separated subset of {','.join(TASKS)} (default: all; "
        f"{','.join(LOCAL_ONLY_BY_DEFAULT)} locally only unless named)",
    )
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
    explicit = args.tasks is not None
    tasks = tuple(t for t in args.tasks.split(",") if t) if explicit else TASKS
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

    def section(
        name: str,
        plan: dict[str, Any],
        rtt: float | None = None,
        guard: OrthancGuard | None = None,
        proxy: DelayProxy | None = None,
    ) -> dict[str, Any]:
        before = loadavg()
        these = tasks
        if not explicit and plan["source"] != "local":
            these = tuple(t for t in tasks if t not in LOCAL_ONLY_BY_DEFAULT)
        results = run_section(plan, reps, args.smoke, log, these, guard)
        if proxy is not None:
            results["proxy"] = proxy.snapshot()
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
                guard = OrthancGuard(server, log)
                for rtt in rtts:
                    with DelayProxy(("127.0.0.1", server.port), rtt_ms=rtt) as proxy:
                        guard.proxy = proxy
                        plan = make_plan(manifest, args.smoke, "dicomweb")
                        plan.update(info)
                        plan["url"] = f"http://127.0.0.1:{proxy.port}/dicom-web"
                        plan["control_port"] = proxy.control_port
                        plan["rtt_ms"] = rtt
                        name = f"DICOMweb, +{rtt:g} ms RTT"
                        sections.append(section(name, plan, rtt, guard, proxy))
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

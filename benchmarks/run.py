"""Benchmark dicomslide against peer readers on the same DICOM files; ratios in one run.

Usage::

    python benchmarks/setup_peers.py           # once: peers in benchmarks/.venv-peers
    python benchmarks/run.py                   # full slide, 5 repetitions
    python benchmarks/run.py --smoke --out /tmp/x   # tiny slide, 1 repetition, < 60 s

Every measurement runs in a fresh process (``benchmarks/peer_worker.py``): ours with this
interpreter, peers with the peers' env, so their pins never meet ours and every reader
starts equally cold. ``cold`` = the first call on a new reader object in a new process;
``warm`` = the next call on the same object. The OS page cache is NOT dropped (that needs
root): an untimed warm-up pass per reader reads the files first, so all readers see warm
page cache and "cold" means cold *process and reader* caches only.

Results: ``<out>/<UTC date-time>.json`` (raw samples) and ``<out>/../RESULTS.md`` (or
``--markdown``) with medians and ratios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKER = HERE / "peer_worker.py"
# Overridable so tests can point at a missing or different peers env.
PEERS_PY = Path(
    os.environ.get("DICOMSLIDE_BENCH_PEERS_PYTHON", HERE / ".venv-peers" / "bin" / "python")
)
OURS = ("dicomslide", "dicomslide_sync")
PEERS = ("wsidicom", "openslide", "dicomslide-0.7.2")
TASKS = ("open", "region", "scan", "random", "thumbnail")

sys.path.insert(0, str(HERE))
import data  # noqa: E402 - benchmarks/ is not a package

# --- plan ----------------------------------------------------------------------------------


def make_plan(manifest: dict[str, Any], smoke: bool) -> dict[str, Any]:
    folder = HERE / manifest["dicom_dir"]
    inst = manifest["instances"]
    levels = [(d["width"], d["height"]) for d in inst]
    w0, h0 = levels[0]
    factors = [w0 / w for w, _ in levels]
    tile = inst[0]["tile"][0]
    counts = [-(-w // tile) * -(-h // tile) for w, h in levels]
    # The scan level: 1000-5000 tiles (enough for a rate, short enough to repeat); the
    # largest level under the cap when none is in range (the smoke slide).
    in_range = [i for i, n in enumerate(counts) if 1000 <= n <= 5000]
    scan_level = in_range[0] if in_range else next(i for i, n in enumerate(counts) if n <= 5000)
    side = min(2048, w0 // 2, h0 // 2)
    # Interior and deliberately not tile-aligned: a region touches partial tiles on all sides.
    x = (w0 * 2 // 5) // tile * tile + tile // 3
    y = (h0 * 2 // 5) // tile * tile + tile // 3
    return {
        "folder": str(folder),
        "level0_file": str(folder / inst[0]["file"]),
        "levels": levels,
        "factors": factors,
        "tile": tile,
        "tile_counts": counts,
        "region": [x, y, side, side],
        "scan_level": scan_level,
        "random_size": 512,
        "random_count": 40 if smoke else 400,
        "random_seed": 1234,
        "threads": 16,
        "async_tasks": 64,
        "thumbnail": 512,
    }


# --- running workers -----------------------------------------------------------------------


def reader_command(reader: str) -> tuple[list[str], dict[str, str]] | None:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if reader in (*OURS, "decode"):
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
    index_dir: str | None,
    timeout: float,
) -> dict[str, Any]:
    found = reader_command(reader)
    if found is None:
        return {"reader": reader, "skipped": "peers env missing (run benchmarks/setup_peers.py)"}
    cmd, env = found
    cmd += [
        "--reader",
        reader,
        "--tasks",
        ",".join(tasks),
        "--plan",
        json.dumps(plan),
        "--warm",
        str(warm),
    ]
    if index_dir is not None:
        cmd += ["--index-dir", index_dir]
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


def variants(smoke: bool) -> list[tuple[str, str, str | None]]:
    """(label, reader, index_dir) of every measured reader configuration."""
    index = str(HERE / "data" / ".dicomslide-index")
    out: list[tuple[str, str, str | None]] = [
        ("dicomslide", "dicomslide", index),
        ("dicomslide_sync", "dicomslide_sync", index),
    ]
    out += [(p, p, None) for p in PEERS]
    return out


def run_all(plan: dict[str, Any], reps: int, smoke: bool, log: Any) -> dict[str, Any]:
    results: dict[str, Any] = {"runs": {}, "versions": {}, "skipped": {}, "maxrss_mb": {}}
    timeout = 120 if smoke else 900
    configs = variants(smoke)
    # An extra configuration for the open task only: an empty persisted index each time.
    open_only = [("dicomslide[index-cold]", "dicomslide", "fresh")]

    def record(label: str, task: str, res: dict[str, Any]) -> None:
        if "skipped" in res:
            results["skipped"][label] = res["skipped"]
            return
        if "versions" in res:
            results["versions"][label] = res["versions"]
        if "maxrss_mb" in res:
            prev = results["maxrss_mb"].get(label, 0.0)
            results["maxrss_mb"][label] = max(prev, res["maxrss_mb"])
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

    # Untimed warm-up per reader: fills the OS page cache and our persisted index, so that
    # every reader meets the same (warm) page cache.
    for label, reader, index_dir in configs:
        log(f"warm-up {label}")
        res = call_worker(reader, ["open", "thumbnail"], plan, 0, index_dir, timeout)
        if "skipped" in res:
            results["skipped"][label] = res["skipped"]

    active = [c for c in configs if c[0] not in results["skipped"]]
    if smoke:
        # One process per reader for all tasks: the smoke run must finish in seconds.
        for label, reader, index_dir in [*active, *open_only]:
            tasks = ["open"] if label in {c[0] for c in open_only} else list(TASKS)
            log(f"{label}: {','.join(tasks)}")
            res = call_worker(reader, tasks, plan, 1, index_dir, timeout)
            for task in tasks:
                record(label, task, res)
    else:
        for task in TASKS:
            extra = open_only if task == "open" else []
            for label, reader, index_dir in [*active, *extra]:
                for rep in range(reps):
                    log(f"{task} {label} rep {rep + 1}/{reps}")
                    res = call_worker(reader, [task], plan, 1, index_dir, timeout)
                    record(label, task, res)
                    if res.get("error") or res.get("tasks", {}).get(task, {}).get("error"):
                        break  # a failing reader fails every repetition; save the time

    log("decode limit")
    res = call_worker("decode", ["scan"], plan, max(reps, 2), None, timeout)
    record("decode-limit", "scan", res)
    return results


# --- summary -------------------------------------------------------------------------------


def summarise(results: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    n_scan = plan["tile_counts"][plan["scan_level"]]
    summary: dict[str, Any] = {}
    for label, tasks in results["runs"].items():
        for task, e in tasks.items():
            s = {
                "cold_s": median(e["cold"]),
                "warm_s": median(e["warm"]),
                "n_cold": len(e["cold"]),
                "n_warm": len(e["warm"]),
                "errors": [x["error"] for x in e["errors"]],
            }
            if task == "scan":
                for k in ("cold", "warm"):
                    t = s[f"{k}_s"]
                    s[f"{k}_tiles_per_s"] = n_scan / t if t else None
            if task == "random":
                for k in ("cold", "warm"):
                    t = s[f"{k}_s"]
                    s[f"{k}_regions_per_s"] = plan["random_count"] / t if t else None
            summary.setdefault(label, {})[task] = s
    return summary


def _get(summary: dict[str, Any], label: str, task: str, key: str) -> float | None:
    return summary.get(label, {}).get(task, {}).get(key)


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The pass/fail goals, evaluated on cold medians (a new reader per measurement)."""
    ours_region = _get(summary, "dicomslide", "region", "cold_s")
    wsi_region = _get(summary, "wsidicom", "region", "cold_s")
    os_region = _get(summary, "openslide", "region", "cold_s")
    scan = _get(summary, "dicomslide", "scan", "cold_tiles_per_s")
    ours_open = _get(summary, "dicomslide", "open", "cold_s")
    wsi_open = _get(summary, "wsidicom", "open", "cold_s")

    def check(name: str, value: float | None, limit: float | None, ok: Any) -> dict[str, Any]:
        if value is None or limit is None:
            return {"target": name, "value": value, "limit": limit, "pass": None}
        return {"target": name, "value": value, "limit": limit, "pass": bool(ok(value, limit))}

    return [
        check(
            "2048² region (cold) ≤ 0.7 x wsidicom",
            ours_region,
            None if wsi_region is None else 0.7 * wsi_region,
            lambda v, lim: v <= lim,
        ),
        check("2048² region (cold) ≤ OpenSlide", ours_region, os_region, lambda v, lim: v <= lim),
        check(
            "concurrent per-tile scan (cold) ≥ 1000 tiles/s", scan, 1000.0, lambda v, lim: v >= lim
        ),
        check(
            "open (cold process, index warm) ≤ wsidicom",
            ours_open,
            wsi_open,
            lambda v, lim: v <= lim,
        ),
    ]


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


def _fmt(v: float | None, unit: str = "s") -> str:
    if v is None:
        return "—"
    if unit == "s":
        return f"{v * 1000:.0f} ms" if v < 10 else f"{v:.1f} s"
    return f"{v:,.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if not a or not b else f"{a / b:.2f}x"


def markdown(doc: dict[str, Any]) -> str:
    s = doc["summary"]
    plan = doc["plan"]
    readers = [
        r
        for r in ("dicomslide", "dicomslide_sync", "wsidicom", "openslide", "dicomslide-0.7.2")
        if r in s
    ]
    peers = [r for r in readers if r in PEERS]
    m = doc["machine"]
    w0, h0 = plan["levels"][0]
    lines = [
        "# dicomslide benchmark results",
        "",
        f"Run {doc['date']} ({'smoke' if doc['smoke'] else 'full'}, source={doc['source']}, "
        f"{doc['reps']} repetitions). Machine: {m['nproc']} CPUs ({m['cpu']}), "
        f"{m['ram_gb']} GB RAM, Python {m['python']}. Noisy shared VM: medians.",
        "",
        f"Slide: {w0}x{h0} RGB JPEG, {plan['tile']}-px tiles, {len(plan['levels'])} levels "
        f"{[tuple(x) for x in plan['levels']]}, converter: {doc['slide']['converter']}, "
        f"{doc['slide']['total_bytes'] / 2**20:.0f} MiB.",
        "",
        "*cold* = first call on a new reader in a fresh process; *warm* = the next call on "
        "the same reader. The OS page cache is warm for every reader (not dropped; needs "
        "root). Peers run in `benchmarks/.venv-peers`.",
        "",
        "## Workloads",
        "",
        "- **open**: find the slide in the folder. Ours: `find_slides(DICOMfileClient(dir))` "
        "with the persisted index warm (`dicomslide`) and empty (`dicomslide[index-cold]`); "
        "wsidicom `WsiDicom.open(dir)`; OpenSlide `OpenSlide(level0.dcm)`; 0.7.2 "
        "`find_slides(dicomweb_client.DICOMfileClient(file://…, in_memory=True))`.",
        f"- **region**: one {plan['region'][2]}² level-0 region at (x, y) = "
        f"({plan['region'][0]}, {plan['region'][1]}) (interior, not tile-aligned).",
        f"- **scan**: every tile of level {plan['scan_level']} "
        f"({plan['tile_counts'][plan['scan_level']]} tiles) by per-tile calls: ours "
        f"{plan['async_tasks']} asyncio tasks; dicomslide_sync, wsidicom (`read_tile`), "
        f"OpenSlide {plan['threads']} threads; 0.7.2 sequential.",
        f"- **random**: {plan['random_count']} random {plan['random_size']}² level-0 regions, "
        f"{plan['threads']} concurrent readers (async tasks for ours, threads otherwise; "
        f"0.7.2 sequential).",
        "- **thumbnail**: ours and 0.7.2 read the smallest level whole; OpenSlide "
        "`get_thumbnail((512, 512))`; wsidicom `read_thumbnail((512, 512))`.",
        "",
        "## Medians",
        "",
        "Ratio column: `dicomslide` (async) divided by the best peer; for times below 1 is "
        "better, for rates (tiles/s, regions/s) above 1 is better.",
        "",
        "| workload | " + " | ".join(readers) + " | ours / best peer |",
        "|---|" + "---|" * len(readers) + "---|",
    ]

    def row(name: str, task: str, key: str, unit: str, higher_better: bool) -> None:
        vals = {r: _get(s, r, task, key) for r in readers}
        cells = []
        for r in readers:
            errs = s.get(r, {}).get(task, {}).get("errors")
            cells.append("**error**" if vals[r] is None and errs else _fmt(vals[r], unit))
        peer_vals = [vals[p] for p in peers if vals[p]]
        best = (max if higher_better else min)(peer_vals) if peer_vals else None
        ours = vals.get("dicomslide")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_ratio(ours, best)} |")

    for kind in ("cold", "warm"):
        row(f"open ({kind})", "open", f"{kind}_s", "s", False)
    if "dicomslide[index-cold]" in s:
        v = _get(s, "dicomslide[index-cold]", "open", "cold_s")
        lines.append(f"| open, index cold (ours) | {_fmt(v)} |" + " — |" * len(readers))
    for kind in ("cold", "warm"):
        row(f"region {plan['region'][2]}² ({kind})", "region", f"{kind}_s", "s", False)
    for kind in ("cold", "warm"):
        row(f"scan, tiles/s ({kind})", "scan", f"{kind}_tiles_per_s", "n", True)
    for kind in ("cold", "warm"):
        row(f"random, regions/s ({kind})", "random", f"{kind}_regions_per_s", "n", True)
    for kind in ("cold", "warm"):
        row(f"thumbnail ({kind})", "thumbnail", f"{kind}_s", "s", False)
    rss = doc["results"]["maxrss_mb"]
    lines.append(
        "| peak RSS (max over processes) | "
        + " | ".join(f"{rss[r]:.0f} MB" if r in rss else "—" for r in readers)
        + " | |"
    )

    dec = s.get("decode-limit", {}).get("scan", {})
    limit = dec.get("warm_tiles_per_s")
    ours_scan = _get(s, "dicomslide", "scan", "cold_tiles_per_s")
    extra = doc["results"]["runs"].get("decode-limit", {}).get("scan", {}).get("extra", [{}])
    best_dec = extra[0].get("best", "?") if extra else "?"
    lines += [
        "",
        f"Decode limit (frames of level {plan['scan_level']} in memory, `{best_dec}`, "
        f"{extra[0].get('threads', 2) if extra else 2} threads): **{_fmt(limit, 'n')} tiles/s**; "
        f"ours (async scan, cold) / limit = {_ratio(ours_scan, limit)}; "
        f"dicomslide_sync / limit = "
        f"{_ratio(_get(s, 'dicomslide_sync', 'scan', 'cold_tiles_per_s'), limit)}.",
        "",
        "## Targets",
        "",
        "| target | ours | limit | pass |",
        "|---|---|---|---|",
    ]
    for t in doc["targets"]:
        unit = "n" if "tiles/s" in t["target"] else "s"
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[t["pass"]]
        lines.append(
            f"| {t['target']} | {_fmt(t['value'], unit)} | {_fmt(t['limit'], unit)} | {verdict} |"
        )
    lines += ["", "## Versions", ""]
    for label, v in doc["results"]["versions"].items():
        lines.append(f"- {label}: " + ", ".join(f"{k} {x}" for k, x in v.items()))
    if doc["results"]["skipped"]:
        lines += ["", "## Skipped", ""]
        lines += [f"- {k}: {v}" for k, v in doc["results"]["skipped"].items()]
    errs = [
        (r, t, e)
        for r, ts in doc["results"]["runs"].items()
        for t, x in ts.items()
        for e in x["errors"]
    ]
    if errs:
        lines += ["", "## Errors", ""]
        for r, t, e in errs:
            lines.append(f"- {r} / {t}: `{e['error']}`")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny slide, 1 repetition, < 60 s")
    ap.add_argument("--reps", type=int, default=5, help="fresh processes per measurement")
    ap.add_argument("--source", choices=["local", "dicomweb"], default="local")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="folder for the JSON")
    ap.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help="markdown report (default: benchmarks/RESULTS.md, or <out>/RESULTS.md with --smoke)",
    )
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    if args.source == "dicomweb":
        # Planned: the same workloads against a local Orthanc (127.0.0.1) holding the same
        # slide; readers then get a DICOMweb client instead of a folder.
        print("--source dicomweb is not implemented yet", file=sys.stderr)
        return 2
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
    plan = make_plan(manifest, args.smoke)
    results = run_all(plan, reps, args.smoke, log)
    summary = summarise(results, plan)
    now = dt.datetime.now(dt.timezone.utc)
    doc = {
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "smoke": args.smoke,
        "source": args.source,
        "reps": reps,
        "machine": machine_info(),
        "slide": {
            k: manifest[k] for k in ("spec", "converter", "instances", "total_bytes", "seconds")
        },
        "plan": plan,
        "results": results,
        "summary": summary,
        "targets": targets(summary),
        "elapsed_s": time.perf_counter() - t_start,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{now.strftime('%Y-%m-%dT%H%M%SZ')}{'-smoke' if args.smoke else ''}.json"
    path.write_text(json.dumps(doc, indent=1))
    md_path = args.markdown or (args.out / "RESULTS.md" if args.smoke else HERE / "RESULTS.md")
    md_path.write_text(markdown(doc))
    log(f"wrote {path} and {md_path}")
    if not args.quiet:
        print(md_path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

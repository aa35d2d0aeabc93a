"""The scale curve: archives of S slides and sparse instances of N frames, against peers.

``python benchmarks/scale.py`` (or ``nox -s benchmarks -- --scale``) measures, each sample in
a fresh process, medians of ``--reps``:

* archives of S slides (three instances each, one sub-folder per slide; see
  ``benchmarks/scale_data.py``): ``find_slides`` on a cold index (new index folder), on a
  warm one, ``find_slides(container_id=...)`` on a warm one, and wsidicom opening every slide
  folder;
* one TILED_SPARSE instance of N 32x32 JPEG frames with per-frame positions: open plus the
  first 256x256 region, for dicomslide, wsidicom and OpenSlide, with the peak resident
  memory the open added (per frame).

Growth exponents are fitted (least squares on log-log) per reader over the sizes. Results go
to ``benchmarks/results/scale-<date>.json`` and to the "Scale" block of
``benchmarks/RESULTS.md``. ``--smoke`` runs tiny sizes once (the suite runs it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

SLIDES = (10, 100, 1000, 5000)
FRAMES = (1_000, 10_000, 50_000, 100_000)
SMOKE_SLIDES = (2, 6)
SMOKE_FRAMES = (100, 400)
ARCHIVE_TASKS = ("ours cold", "ours warm", "ours container_id", "wsidicom")
SPARSE_TASKS = ("ours cold", "ours warm", "wsidicom", "openslide")
BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"


def _rss_kb() -> int:
    with open("/proc/self/statm") as fp:
        return int(fp.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _peak_kb() -> int:
    # This process's own high-water mark: ru_maxrss keeps the parent's RSS across fork and
    # exec, and the driver that posted a 75 MB file to Orthanc peaked above our open.
    with open("/proc/self/status") as fp:
        for line in fp:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


# --------------------------------------------------------------------------------------------
# Worker side: one sample per process
# --------------------------------------------------------------------------------------------


async def _find(folder: Path, index: Path, **kwargs: Any) -> int:
    import dicomslide

    async with dicomslide.DICOMfileClient(folder, index_dir=index) as client:
        return len(await dicomslide.find_slides(client, **kwargs))


def _archive_sample(task: str, folder: Path, index: Path) -> dict[str, Any]:
    if task == "wsidicom":
        from wsidicom import WsiDicom

        started = time.perf_counter()
        count = 0
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            with WsiDicom.open(sub):
                count += 1
        return {"seconds": time.perf_counter() - started, "slides": count}
    import dicomslide  # noqa: F401 - imported before the clock starts

    kwargs = {"container_id": "SCALE-00000"} if task == "ours container_id" else {}
    started = time.perf_counter()
    cpu = time.process_time()
    count = asyncio.run(_find(folder, index, **kwargs))
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "slides": count,
    }


def _warm_imports() -> None:
    """Import every reader's decoding stack before the clock starts (same for all)."""
    import imagecodecs  # noqa: F401
    import numpy  # noqa: F401
    from PIL import Image

    Image.init()


def _ours_sample(make_client: Any) -> dict[str, Any]:
    """``find_slides`` plus the first region through the client ``make_client()`` makes."""
    import dicomslide

    async def run() -> tuple[int, Any]:
        async with make_client() as client:
            (slide,) = await dicomslide.find_slides(client)
            region = await slide.get_image_region((0, 0), 0, (256, 256))
            return int(region.mean()), slide

    baseline = _rss_kb()
    started = time.perf_counter()
    cpu = time.process_time()
    value, _ = asyncio.run(run())
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "added_peak_kb": max(0, _peak_kb() - baseline),
        "value": value,
    }


def _web_sample(url: str) -> dict[str, Any]:
    """Our open over DICOMweb; the CPU share of the wall time is what the issue asks."""
    import dicomslide

    _warm_imports()
    return _ours_sample(lambda: dicomslide.DICOMwebClient(url, timeout=600.0))


def _sparse_sample(task: str, folder: Path, index: Path) -> dict[str, Any]:
    path = folder / "sparse.dcm"
    _warm_imports()
    if task.startswith("ours"):
        import dicomslide

        return _ours_sample(lambda: dicomslide.DICOMfileClient(folder, index_dir=index))
    if task == "wsidicom":
        from wsidicom import WsiDicom

        baseline = _rss_kb()
        started = time.perf_counter()
        cpu = time.process_time()
        with WsiDicom.open(folder) as wsi:
            value = int(sum(wsi.read_region((0, 0), 0, (256, 256)).convert("L").getdata()))
    else:
        import openslide

        baseline = _rss_kb()
        started = time.perf_counter()
        cpu = time.process_time()
        with openslide.OpenSlide(str(path)) as osr:
            value = int(sum(osr.read_region((0, 0), 0, (256, 256)).convert("L").getdata()))
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "added_peak_kb": max(0, _peak_kb() - baseline),
        "value": value,
    }


def worker(kind: str, task: str, folder: str, index: str) -> None:
    """Run one sample and print its JSON result (called in a fresh process).

    Parameters
    ----------
    kind: str
        ``archive`` or ``sparse``
    task: str
        Which reader and mode
    folder: str
        The data folder (for ``ours web``: the DICOMweb URL)
    index: str
        The index folder of our client
    """
    if task == "ours web":  # folder is the DICOMweb URL
        print(json.dumps(_web_sample(folder)))
        return
    sample = _archive_sample if kind == "archive" else _sparse_sample
    print(json.dumps(sample(task, Path(folder), Path(index))))


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def _run_worker(
    kind: str, task: str, folder: Path | str, index: Path, timeout: float
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, __file__, "--worker", kind, task, str(folder), str(index)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "?"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def exponent(points: dict[int, float | None]) -> float | None:
    """Least-squares slope of log(time) over log(size).

    Parameters
    ----------
    points: dict[int, float | None]
        Median time by size (None where it failed)

    Returns
    -------
    float | None
        The growth exponent, None with fewer than two sizes
    """
    xy = [(math.log(n), math.log(t)) for n, t in points.items() if t and t > 0]
    if len(xy) < 2:
        return None
    mx = statistics.fmean(x for x, _ in xy)
    my = statistics.fmean(y for _, y in xy)
    den = sum((x - mx) ** 2 for x, _ in xy)
    return sum((x - mx) * (y - my) for x, y in xy) / den if den else None


def _summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    good = [s for s in samples if "error" not in s]
    out: dict[str, Any] = {"samples": samples}
    if not good:
        out["error"] = samples[0].get("error") if samples else "no sample"
        return out
    for key in ("seconds", "cpu_seconds", "added_peak_kb"):
        values = [s[key] for s in good if key in s]
        if values:
            out[key] = statistics.median(values)
    return out


def _progress(doc: dict[str, Any], section: str, size: int) -> None:
    cells = doc[section]
    times = (f"{t} {c[str(size)].get('seconds', math.nan):.3f} s" for t, c in cells.items())
    print(f"{section} {size}: " + ", ".join(times), flush=True)


def run_web(frames: tuple[int, ...], reps: int, timeout: float) -> dict[str, Any]:
    """Open each sparse instance over DICOMweb from a private Orthanc (fresh processes).

    Parameters
    ----------
    frames: tuple[int, ...]
        Sparse instance sizes
    reps: int
        Samples per size
    timeout: float
        Seconds one sample may take

    Returns
    -------
    dict[str, Any]
        Medians by size, with our CPU share of the wall time and memory per frame
    """
    from benchmarks.scale_data import make_data
    from tests.support.orthanc import OrthancServer

    cells: dict[str, Any] = {}
    for n in frames:
        folder = make_data("sparse", n)
        with OrthancServer() as server:
            loaded = time.perf_counter()
            # Orthanc takes minutes to store 100,000 frames: longer than upload()'s timeout.
            with server.client(timeout=1800.0) as http:
                http.post(
                    "/instances",
                    content=(folder / "sparse.dcm").read_bytes(),
                    headers={"Content-Type": "application/dicom"},
                ).raise_for_status()
            upload = time.perf_counter() - loaded
            samples = [
                _run_worker("sparse", "ours web", server.dicomweb_url, Path("-"), timeout)
                for _ in range(reps)
            ]
        cell = _summarise(samples)
        cell["upload_seconds"] = upload
        cells[str(n)] = cell
        print(
            f"web {n}: {cell.get('seconds', math.nan):.1f} s {cell.get('error', '')}", flush=True
        )
    return cells


def run(
    slides: tuple[int, ...], frames: tuple[int, ...], reps: int, timeout: float
) -> dict[str, Any]:
    """Measure every size and reader.

    Parameters
    ----------
    slides: tuple[int, ...]
        Archive sizes
    frames: tuple[int, ...]
        Sparse instance sizes
    reps: int
        Samples (fresh processes) per cell
    timeout: float
        Seconds one sample may take

    Returns
    -------
    dict[str, Any]
        Medians by section, reader and size, with exponents
    """
    from benchmarks.scale_data import make_data

    work = Path(tempfile.mkdtemp(prefix="dicomslide-scale-"))
    doc: dict[str, Any] = {"archive": {}, "sparse": {}}
    try:
        for s in slides:
            folder = make_data("archive", s)
            cells: dict[str, list[dict[str, Any]]] = {t: [] for t in ARCHIVE_TASKS}
            for rep in range(reps):
                cold_index = work / f"cold-{s}-{rep}"
                cells["ours cold"].append(
                    _run_worker("archive", "ours cold", folder, cold_index, timeout)
                )
                for task in ARCHIVE_TASKS[1:]:
                    cells[task].append(_run_worker("archive", task, folder, cold_index, timeout))
                shutil.rmtree(cold_index, ignore_errors=True)
            for task, samples in cells.items():
                doc["archive"].setdefault(task, {})[str(s)] = _summarise(samples)
            _progress(doc, "archive", s)
        for n in frames:
            folder = make_data("sparse", n)
            by_task: dict[str, list[dict[str, Any]]] = {t: [] for t in SPARSE_TASKS}
            for rep in range(reps):
                # "ours warm" reuses the index "ours cold" left (a new one per repetition).
                index = work / f"sparse-{n}-{rep}"
                for task in SPARSE_TASKS:
                    by_task[task].append(_run_worker("sparse", task, folder, index, timeout))
                shutil.rmtree(index, ignore_errors=True)
            for task, samples in by_task.items():
                doc["sparse"].setdefault(task, {})[str(n)] = _summarise(samples)
            _progress(doc, "sparse", n)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for section in ("archive", "sparse"):
        doc[f"{section}_exponents"] = {
            task: exponent({int(k): v.get("seconds") for k, v in cells_.items()})
            for task, cells_ in doc[section].items()
        }
    return doc


def _fmt(cell: dict[str, Any], key: str = "seconds") -> str:
    if "error" in cell:
        return "fails"
    value = cell.get(key)
    if value is None:
        return "-"
    if key == "added_peak_kb":
        return f"{value / 1024:.1f} MB"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def markdown(doc: dict[str, Any]) -> str:
    """The RESULTS.md block of a run.

    Parameters
    ----------
    doc: dict[str, Any]
        What :func:`run` returned, with ``meta``

    Returns
    -------
    str
        Markdown between the block markers
    """
    meta = doc["meta"]
    lines = [
        BEGIN,
        "## Scale",
        "",
        f"Run {meta['date']} ({'smoke' if meta['smoke'] else 'full'}, median of "
        f"{meta['reps']} fresh processes per cell, {meta['minutes']:.1f} min, load average "
        f"{meta['loadavg']}). Re-run: `nox -s benchmarks -- --scale` or "
        "`python benchmarks/scale.py [--reps 3] [--slides 10,100] [--frames 1000,10000]`; "
        "raw samples in `benchmarks/results/scale-<date>.json`. The machine is a shared "
        "2-core VM: compare ratios and exponents, not absolute times.",
        "",
        "**Archives of S slides** (3 instances each; `find_slides(DICOMfileClient(folder))`):",
        "",
        "| S | " + " | ".join(ARCHIVE_TASKS) + " |",
        "|---|" + "---|" * len(ARCHIVE_TASKS),
    ]
    sizes = sorted({int(k) for cells in doc["archive"].values() for k in cells})
    for s in sizes:
        row = [_fmt(doc["archive"][t].get(str(s), {"error": "-"})) for t in ARCHIVE_TASKS]
        lines.append(f"| {s} | " + " | ".join(row) + " |")
    lines.append(
        "| exponent | "
        + " | ".join(_exp(doc["archive_exponents"].get(t)) for t in ARCHIVE_TASKS)
        + " |"
    )
    lines += [
        "",
        "**One TILED_SPARSE instance of N frames** (32x32 JPEG, per-frame positions; open plus "
        "the first 256x256 region; memory: peak resident memory added by the sample):",
        "",
        "| N | " + " | ".join(f"{t} time | {t} memory" for t in SPARSE_TASKS) + " |",
        "|---|" + "---|---|" * len(SPARSE_TASKS),
    ]
    sizes = sorted({int(k) for cells in doc["sparse"].values() for k in cells})
    for n in sizes:
        row = []
        for t in SPARSE_TASKS:
            cell = doc["sparse"][t].get(str(n), {"error": "-"})
            per_frame = cell.get("added_peak_kb")
            memory = _fmt(cell, "added_peak_kb")
            if per_frame is not None:
                memory += f" ({per_frame / n:.2f} KB/frame)"
            row += [_fmt(cell), memory]
        lines.append(f"| {n} | " + " | ".join(row) + " |")
    lines.append(
        "| exponent | "
        + " | ".join(f"{_exp(doc['sparse_exponents'].get(t))} | " for t in SPARSE_TASKS)
        + " |"
    )
    if doc.get("web"):
        lines += [
            "",
            "**The same instance over DICOMweb** (a private Orthanc on 127.0.0.1; "
            "`find_slides` plus the first region; our CPU: process time of the sample):",
            "",
            "| N | wall | our CPU | our CPU share | memory |",
            "|---|---|---|---|---|",
        ]
        for n, cell in sorted(doc["web"].items(), key=lambda item: int(item[0])):
            if "error" in cell:
                lines.append(f"| {n} | fails: {cell['error']} | | | |")
                continue
            share = cell["cpu_seconds"] / cell["seconds"]
            memory = (
                f"{_fmt(cell, 'added_peak_kb')} ({cell['added_peak_kb'] / int(n):.2f} KB/frame)"
            )
            lines.append(
                f"| {n} | {_fmt(cell)} | {_fmt(cell, 'cpu_seconds')} | {share:.0%} | {memory} |"
            )
    lines += ["", END]
    return "\n".join(lines)


def _exp(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def write_results(doc: dict[str, Any], results_md: Path, out_dir: Path) -> Path:
    """Write the JSON document and replace the Scale block of RESULTS.md.

    Parameters
    ----------
    doc: dict[str, Any]
        The run
    results_md: pathlib.Path
        The markdown file (created if missing)
    out_dir: pathlib.Path
        Folder of the JSON document

    Returns
    -------
    pathlib.Path
        The JSON document
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = doc["meta"]["date"].replace(":", "").replace("-", "").replace(" ", "T")
    path = out_dir / f"scale-{stamp}.json"
    path.write_text(json.dumps(doc, indent=1))
    block = markdown(doc)
    text = results_md.read_text() if results_md.exists() else "# dicomslide benchmark results\n"
    if BEGIN in text and END in text:
        old = text[text.index(BEGIN) : text.index(END)]
        block = _keep_unmeasured(block, old, doc)
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    results_md.write_text(text)
    return path


_SPARSE_HEAD = "**One TILED_SPARSE instance"


def _keep_unmeasured(block: str, old: str, doc: dict[str, Any]) -> str:
    """The new block, with the sparse table of the old one when this run measured none."""
    if doc["sparse"] or _SPARSE_HEAD not in old or _SPARSE_HEAD not in block:
        return block
    kept = old[old.index(_SPARSE_HEAD) :].rstrip("\n")
    note = "(Not re-measured by this run: the table below is from the run before.)"
    kept = note + "\n\n" + kept
    return block[: block.index(_SPARSE_HEAD)] + kept + "\n\n" + END


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def main() -> int:
    """Command line entry point.

    Returns
    -------
    int
        Exit status
    """
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:6])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", action="store_true", help="accepted (nox passes it)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one sample")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--slides", type=_sizes, default=None)
    parser.add_argument("--frames", type=_sizes, default=None)
    parser.add_argument(
        "--web-frames", type=_sizes, default=(), help="sparse sizes to open over Orthanc too"
    )
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--out", type=Path, default=None, help="folder of RESULTS.md and JSON")
    args = parser.parse_args()
    # An empty list (``--frames ""``) measures nothing of that part.
    slides = args.slides if args.slides is not None else (SMOKE_SLIDES if args.smoke else SLIDES)
    frames = args.frames if args.frames is not None else (SMOKE_FRAMES if args.smoke else FRAMES)
    reps = 1 if args.smoke else args.reps
    started = time.perf_counter()
    doc = run(slides, frames, reps, args.timeout)
    if args.web_frames:
        doc["web"] = run_web(args.web_frames, reps, args.timeout)
    doc["meta"] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "smoke": args.smoke,
        "reps": reps,
        "minutes": (time.perf_counter() - started) / 60,
        "loadavg": [round(x, 1) for x in os.getloadavg()],
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    results_md = (args.out / "RESULTS.md") if args.out else HERE / "RESULTS.md"
    out_dir = args.out or HERE / "results"
    path = write_results(doc, results_md, out_dir)
    print(f"wrote {path} and {results_md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

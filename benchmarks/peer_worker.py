"""Run benchmark workloads for one reader in this process and print JSON timings.

Invoked by ``benchmarks/run.py`` in a fresh process per measurement: with the peers'
interpreter (``benchmarks/.venv-peers``) for wsidicom, OpenSlide and dicomslide 0.7.2,
and with the main interpreter for ours (``dicomslide`` and ``dicomslide_sync``), so every
reader starts equally cold. Only the standard library is imported at module level: the
same file must run in both environments.

Every task opens a new reader object, times the first call (``cold``) and then
``--warm`` more calls on the same object (``warm``). Errors are reported, not raised,
so one failing reader does not take the run down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

READERS = ("dicomslide", "dicomslide_sync", "wsidicom", "openslide", "dicomslide-0.7.2")
OURS_READERS = ("dicomslide", "dicomslide_sync")
TASKS = (
    "open",
    "region",
    "scan",
    "scan_region",
    "random",
    "thumbnail",
    "prefetch",
    "prefetch_regions",
    "dask",
    "progress",
)
# Frames as stored, whatever the transfer syntax (Orthanc answers this for JPEG and J2K).
FRAMES_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


class Plan:
    """Workload geometry, identical for every reader (computed by run.py)."""

    def __init__(self, d: dict[str, Any]) -> None:
        self.folder: str = d["folder"]
        self.level0_file: str = d["level0_file"]
        # (width, height) per level, largest first, and downsample factor per level
        self.levels: list[tuple[int, int]] = [tuple(x) for x in d["levels"]]
        self.factors: list[float] = d["factors"]
        self.tile: int = d["tile"]
        self.region: tuple[int, int, int, int] = tuple(d["region"])  # x, y, w, h at level 0
        self.scan_level: int = d["scan_level"]
        self.random_size: int = d["random_size"]
        self.random_count: int = d["random_count"]
        self.random_seed: int = d["random_seed"]
        self.threads: int = d["threads"]
        self.tasks_async: int = d["async_tasks"]
        self.thumbnail: int = d["thumbnail"]
        # A whole level: ours through dicomslide.prefetch ("prefetch"); every reader by
        # concurrent regions ("prefetch" for the peers, "prefetch_regions" for ours).
        self.prefetch_level: int = d.get("prefetch_level", 0)
        self.prefetch_size: int = d.get("prefetch_size", 2048)
        self.prefetch_workers: int = d.get("prefetch_workers", 4)
        # to_dask of one level, per-chunk means (None: the default chunks of to_dask).
        self.dask_level: int = d.get("dask_level", d["scan_level"])
        self.dask_chunk: int | None = d.get("dask_chunk")
        # Progress overhead: rounds of (no callback, callback, bar, CLI none, CLI bar).
        self.progress_rounds: int = d.get("progress_rounds", 3)
        # DICOMweb: URL (through the delay proxy), UIDs, the proxy's counter port.
        self.source: str = d.get("source", "local")
        # Orthanc's PID (same machine), to charge its CPU time to each cold run.
        self.server_pid: int | None = d.get("server_pid")
        self.url: str = d.get("url", "")
        self.study_uid: str = d.get("study_uid", "")
        self.series_uid: str = d.get("series_uid", "")
        self.instances: list[dict[str, Any]] = d.get("instances", [])
        self.control_port: int | None = d.get("control_port")

    def find_kwargs(self) -> dict[str, Any]:
        """find_slides filter: over DICOMweb the study is named, as wsidicom needs it to be."""
        return {"study_instance_uid": self.study_uid} if self.study_uid else {}

    def pick(self, slides: Sequence[Any]) -> Any:
        """The benchmark slide (the server may hold others); fail loudly on a wrong one."""
        want = (self.levels[0][1], self.levels[0][0])  # (rows, columns)
        for slide in slides:
            if tuple(slide.size) == want:
                return slide
        raise RuntimeError(f"no slide of size {want} among {[tuple(x.size) for x in slides]}")

    def requests(self) -> int | None:
        """HTTP requests the proxy has seen so far (None for local files)."""
        if self.control_port is None:
            return None
        # Workers run with -P (no script folder on sys.path), so name the folder.
        if str(Path(__file__).parent) not in sys.path:
            sys.path.append(str(Path(__file__).parent))
        from delay_proxy import read_counters

        return int(read_counters(self.control_port)["requests"])

    def prefetch_regions(self) -> list[tuple[int, int, int, int]]:
        """(x, y, w, h) covering the prefetch level, in level coordinates."""
        w, h = self.levels[self.prefetch_level]
        s = self.prefetch_size
        return [
            (x, y, min(s, w - x), min(s, h - y)) for y in range(0, h, s) for x in range(0, w, s)
        ]

    def scan_tiles(self) -> list[tuple[int, int, int, int]]:
        """(x, y, w, h) of every tile of the scan level, in level coordinates."""
        w, h = self.levels[self.scan_level]
        t = self.tile
        return [
            (x, y, min(t, w - x), min(t, h - y)) for y in range(0, h, t) for x in range(0, w, t)
        ]

    def random_regions(self) -> list[tuple[int, int]]:
        """Top-left (x, y) of the random level-0 regions (seeded: the same for every reader)."""
        rng = random.Random(self.random_seed)
        w, h = self.levels[0]
        s = self.random_size
        return [
            (rng.randrange(0, w - s), rng.randrange(0, h - s)) for _ in range(self.random_count)
        ]


class Requests:
    """Requests per phase (open, cold call, warm calls), counted at the delay proxy."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.last = plan.requests()
        self.phases: dict[str, Any] = {}

    def mark(self, phase: str) -> None:
        if self.last is None:
            return
        now = self.plan.requests()
        assert now is not None
        n = now - self.last
        self.last = now
        if phase == "warm":
            self.phases.setdefault("warm", []).append(n)
        else:
            self.phases[phase] = n


def _server_cpu(plan: Plan) -> float | None:
    """CPU seconds (user + system) Orthanc has used so far, if it runs here."""
    if not plan.server_pid:
        return None
    try:
        with open(f"/proc/{plan.server_pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds this process and the server spend during one measured call."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def __enter__(self) -> CpuMeter:
        self.ours0 = time.process_time()
        self.server0 = _server_cpu(self.plan)
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu_s = time.process_time() - self.ours0
        end = _server_cpu(self.plan)
        self.server_cpu_s = None if end is None or self.server0 is None else end - self.server0

    def fields(self) -> dict[str, Any]:
        return {"cpu_s": self.cpu_s, "server_cpu_s": self.server_cpu_s}


def _checksum(arr: Any) -> int:
    # Cheap proof that pixels were produced (and a sanity check across readers).
    import numpy as np

    a = np.asarray(arr)
    return int(a[..., :3].sum(dtype=np.uint64) % 1_000_003)


# --- blocking adapters ---------------------------------------------------------------------


class BlockingReader:
    """Open / region / tile / thumbnail through a blocking API."""

    name = ""
    threads_for_scan = True
    # Imported before any timing: import cost is start-up, not open cost.
    modules: tuple[str, ...] = ("numpy",)

    def __init__(self, plan: Plan, opts: dict[str, Any]) -> None:
        self.plan = plan
        self.opts = opts

    def open(self) -> Any:
        raise NotImplementedError

    def region(self, h: Any, level: int, x: int, y: int, w: int, hh: int) -> Any:
        """Region with (x, y) in level coordinates."""
        raise NotImplementedError

    def tile(self, h: Any, level: int, x: int, y: int, w: int, hh: int) -> Any:
        return self.region(h, level, x, y, w, hh)

    def thumbnail(self, h: Any) -> Any:
        lw, lh = self.plan.levels[-1]
        return self.region(h, len(self.plan.levels) - 1, 0, 0, lw, lh)

    def close(self, h: Any) -> None:
        pass

    def stats(self, h: Any) -> dict[str, Any]:
        return {}

    def prefetch(self, h: Any, level: int) -> dict[str, Any] | None:
        """A prefetch API call for the whole level, or None: no such API (regions instead)."""
        return None


class Ours(BlockingReader):
    name = "dicomslide_sync"
    modules = ("numpy", "dicomslide_sync")

    def open(self) -> Any:
        import dicomslide_sync

        if self.plan.source == "dicomweb":
            client: Any = dicomslide_sync.DICOMwebClient(self.plan.url)
        else:
            index_dir = self.opts["index_dir"]
            client = dicomslide_sync.DICOMfileClient(self.plan.folder, index_dir=index_dir)
        slides = dicomslide_sync.find_slides(
            client, correct_color=self.opts["correct_color"], **self.plan.find_kwargs()
        )
        return self.plan.pick(slides)

    def close(self, h: Any) -> None:
        h.client.close()

    def region(self, h: Any, level: int, x: int, y: int, w: int, hh: int) -> Any:
        f = self.plan.factors[level]
        return h.get_image_region(offset=(round(y * f), round(x * f)), level=level, size=(hh, w))

    def stats(self, h: Any) -> dict[str, Any]:
        return _cache_stats(h)

    def prefetch(self, h: Any, level: int) -> dict[str, Any] | None:
        import dicomslide_sync

        return _prefetch_result(dicomslide_sync.prefetch(h, level))


class WsiDicomReader(BlockingReader):
    name = "wsidicom"
    modules = ("numpy", "wsidicom")

    def open(self) -> Any:
        from wsidicom import WsiDicom

        if self.plan.source == "dicomweb":
            from wsidicom import WsiDicomWebClient

            client = WsiDicomWebClient.create_client(self.plan.url)
            return WsiDicom.open_web(client, self.plan.study_uid, [self.plan.series_uid])
        return WsiDicom.open(self.plan.folder)

    def region(self, h: Any, level: int, x: int, y: int, w: int, hh: int) -> Any:
        import numpy as np

        return np.asarray(h.read_region((x, y), level, (w, hh)))

    def tile(self, h: Any, level: int, x: int, y: int, w: int, hh: int) -> Any:
        import numpy as np

        t = self.plan.tile
        return np.asarray(h.read_tile(level, (x // t, y // t)))

    def thumbnail(self, h: Any) -> Any:
        import numpy as np

        s = self.plan.thumbnail
        return np.asarray(h.read_thumbnail((s, s)))

    def close(self, h: Any) -> None:
        h.close()


class OpenSlideReader(BlockingReader):
    name = "openslide"
    modules = ("numpy", "openslide")

    def open(self) -> Any:
        import openslide

        return openslide.OpenSlide(self.plan.level0_file)

    def region(self, h: Any, level: int, x: int, y: int, w: int, hh: int) -> Any:
        import numpy as np

        # OpenSlide takes the location in level-0 pixels.
        f = self.plan.factors[level]
        return np.asarray(h.read_region((round(x * f), round(y * f)), level, (w, hh)))

    def thumbnail(self, h: Any) -> Any:
        import numpy as np

        s = self.plan.thumbnail
        return np.asarray(h.get_thumbnail((s, s)))

    def close(self, h: Any) -> None:
        h.close()


class OldDicomslide(BlockingReader):
    name = "dicomslide-0.7.2"
    # 0.7.2's per-slide frame cache is not thread-safe; it is measured as used: sequentially.
    threads_for_scan = False
    modules = ("numpy", "dicomslide", "dicomweb_client")

    def open(self) -> Any:
        import dicomslide

        if self.plan.source == "dicomweb":
            from dicomweb_client import DICOMwebClient

            client = DICOMwebClient(self.plan.url)
            return self.plan.pick(dicomslide.find_slides(client, **self.plan.find_kwargs()))
        from dicomweb_client import DICOMfileClient

        client = DICOMfileClient(url=Path(self.plan.folder).as_uri(), in_memory=True)
        return dicomslide.find_slides(client)[0]

    def region(self, h: Any, level: int, x: int, y: int, w: int, hh: int) -> Any:
        f = self.plan.factors[level]
        return h.get_image_region(offset=(round(y * f), round(x * f)), level=level, size=(hh, w))


def _prefetch_result(r: Any) -> dict[str, Any]:
    """What a dicomslide.prefetch call reports (fails the task if it left frames out)."""
    if not r.complete:
        raise RuntimeError(f"prefetch left {r.skipped_frames} frames out (cache budget)")
    return {
        "fetched_frames": r.fetched_frames,
        "cached_frames": r.cached_frames,
        "requests": r.requests,
        "megabytes": round(r.megabytes, 1),
        "seconds": r.seconds,
    }


def _cache_stats(slide: Any) -> dict[str, Any]:
    try:
        s = slide.cache_stats
    except Exception as exc:  # a diagnostic only; never fail the measurement for it
        return {"cache_stats_error": repr(exc)}
    return _fields(s)


def _fields(s: Any) -> dict[str, Any]:
    fields = getattr(s, "_fields", None) or getattr(s, "__dataclass_fields__", {})
    return {k: getattr(s, k) for k in fields}


def _map(fn: Callable[[Any], Any], items: Sequence[Any], threads: int) -> list[Any]:
    if threads <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, items))


def run_blocking(reader: BlockingReader, task: str, warm: int) -> dict[str, Any]:
    import importlib

    plan = reader.plan
    for mod in reader.modules:
        importlib.import_module(mod)
    out: dict[str, Any] = {}
    req = Requests(plan)
    if task == "open":
        times = []
        for i in range(1 + warm):
            t0 = time.perf_counter()
            h = reader.open()
            times.append(time.perf_counter() - t0)
            req.mark("cold" if i == 0 else "warm")
            reader.close(h)
        return {"cold": times[0], "warm": times[1:], "requests": req.phases}
    h = reader.open()
    req.mark("open")
    threads = plan.threads if reader.threads_for_scan else 1

    def once() -> tuple[float, Any]:
        t0 = time.perf_counter()
        if task == "region":
            x, y, w, hh = plan.region
            res: Any = _checksum(reader.region(h, 0, x, y, w, hh))
        elif task == "scan":
            tiles = plan.scan_tiles()
            lvl = plan.scan_level
            res = len(_map(lambda t: reader.tile(h, lvl, *t).shape, tiles, threads))
        elif task == "scan_region":
            lw, lh = plan.levels[plan.scan_level]
            res = list(reader.region(h, plan.scan_level, 0, 0, lw, lh).shape)
        elif task == "random":
            s = plan.random_size
            regions = plan.random_regions()
            res = len(
                _map(lambda p: reader.region(h, 0, p[0], p[1], s, s).shape, regions, threads)
            )
        elif task in ("prefetch", "prefetch_regions"):
            lvl = plan.prefetch_level
            res = reader.prefetch(h, lvl) if task == "prefetch" else None
            if res is None:  # no prefetch API (peers), or the region pattern asked for
                n = plan.prefetch_workers if reader.threads_for_scan else 1
                regions = plan.prefetch_regions()
                res = len(_map(lambda r: reader.region(h, lvl, *r).shape, regions, n))
        elif task == "thumbnail":
            res = list(reader.thumbnail(h).shape)
        else:
            raise ValueError(task)
        return time.perf_counter() - t0, res

    with CpuMeter(plan) as meter:
        cold, out["result"] = once()
    out.update(meter.fields())
    req.mark("cold")
    warm_times = []
    for _ in range(warm):
        warm_times.append(once()[0])
        req.mark("warm")
    out.update(cold=cold, warm=warm_times, threads=threads, stats=reader.stats(h))
    out["requests"] = req.phases
    reader.close(h)
    return out


# --- ours, async ---------------------------------------------------------------------------


async def run_async(plan: Plan, opts: dict[str, Any], task: str, warm: int) -> dict[str, Any]:
    import numpy  # noqa: F401 - imported before timing, as for the blocking readers

    import dicomslide

    async def open_slide() -> Any:
        if plan.source == "dicomweb":
            client: Any = dicomslide.DICOMwebClient(plan.url)
        else:
            client = dicomslide.DICOMfileClient(plan.folder, index_dir=opts["index_dir"])
        slides = await dicomslide.find_slides(
            client, correct_color=opts["correct_color"], **plan.find_kwargs()
        )
        return plan.pick(slides), client

    async def close(client: Any) -> None:
        aclose = getattr(client, "aclose", None)
        if aclose is not None:
            await aclose()

    req = Requests(plan)
    if task == "open":
        times = []
        for i in range(1 + warm):
            t0 = time.perf_counter()
            _, client = await open_slide()
            times.append(time.perf_counter() - t0)
            req.mark("cold" if i == 0 else "warm")
            await close(client)
        return {"cold": times[0], "warm": times[1:], "requests": req.phases}

    slide, client = await open_slide()
    req.mark("open")

    async def region(level: int, x: int, y: int, w: int, h: int) -> Any:
        f = plan.factors[level]
        return await slide.get_image_region(
            offset=(round(y * f), round(x * f)), level=level, size=(h, w)
        )

    async def pool(jobs: list[tuple[int, int, int, int, int]], n: int) -> int:
        it = iter(jobs)
        done = 0

        async def worker() -> None:
            nonlocal done
            for job in it:  # one shared iterator: each job goes to exactly one task
                await region(*job)
                done += 1

        async with asyncio.TaskGroup() as tg:
            for _ in range(n):
                tg.create_task(worker())
        return done

    async def once() -> tuple[float, Any]:
        t0 = time.perf_counter()
        if task == "region":
            x, y, w, h = plan.region
            res: Any = _checksum(await region(0, x, y, w, h))
        elif task == "scan":
            lvl = plan.scan_level
            res = await pool([(lvl, *t) for t in plan.scan_tiles()], plan.tasks_async)
        elif task == "scan_region":
            lw, lh = plan.levels[plan.scan_level]
            res = list((await region(plan.scan_level, 0, 0, lw, lh)).shape)
        elif task == "random":
            s = plan.random_size
            res = await pool([(0, x, y, s, s) for x, y in plan.random_regions()], plan.threads)
        elif task == "prefetch":
            res = _prefetch_result(await dicomslide.prefetch(slide, plan.prefetch_level))
        elif task == "prefetch_regions":
            lvl = plan.prefetch_level
            jobs = [(lvl, *r) for r in plan.prefetch_regions()]
            res = await pool(jobs, plan.prefetch_workers)
        elif task == "thumbnail":
            lw, lh = plan.levels[-1]
            res = list((await region(len(plan.levels) - 1, 0, 0, lw, lh)).shape)
        else:
            raise ValueError(task)
        return time.perf_counter() - t0, res

    out: dict[str, Any] = {}
    with CpuMeter(plan) as meter:
        cold, out["result"] = await once()
    out.update(meter.fields())
    req.mark("cold")
    warm_times = []
    for _ in range(warm):
        warm_times.append((await once())[0])
        req.mark("warm")
    concurrency = {
        "scan": plan.tasks_async,
        "random": plan.threads,
        "prefetch_regions": plan.prefetch_workers,
    }.get(task, 1)
    out.update(cold=cold, warm=warm_times, tasks=concurrency, stats=_cache_stats(slide))
    if task == "prefetch":
        out["client_stats"] = _fields(dicomslide.get_cache_stats(client))
    out["requests"] = req.phases
    await close(client)
    return out


# --- ours: Dask ----------------------------------------------------------------------------


def _block_mean(block: Any) -> Any:
    """One chunk reduced to its mean per sample: the computed result stays tiny."""
    import numpy as np

    return block.mean(axis=(0, 1), keepdims=True, dtype=np.float64)


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_dask(plan: Plan, opts: dict[str, Any], warm: int, workers: int) -> dict[str, Any]:
    """``dicomslide_sync.to_dask`` of one level, per-chunk means computed by Dask.

    ``workers == 0``: the threaded scheduler (one thread per CPU) in this process; else a
    ``dask.distributed.LocalCluster`` of ``workers`` processes with one thread each (started
    before timing; its start-up is reported as ``cluster_start_s``). ``cold`` = the first
    compute (the slide is unpickled and re-opened in each worker, frames fetched),
    ``warm`` = the next computes of the same array.
    """
    import logging

    import numpy as np

    import dicomslide_sync

    for mod in ("dask.array",):
        __import__(mod)
    out: dict[str, Any] = {"workers": workers, "level": plan.dask_level}
    cluster: Any = None
    dclient: Any = None
    t0 = time.perf_counter()
    if workers:
        from dask.distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        dclient = Client(cluster)
    out["cluster_start_s"] = time.perf_counter() - t0
    reader = Ours(plan, opts)
    req = Requests(plan)
    slide = reader.open()
    req.mark("open")
    try:
        arr = dicomslide_sync.to_dask(slide, plan.dask_level, chunks=plan.dask_chunk)
        means = arr.map_blocks(_block_mean, chunks=(1, 1, arr.shape[2]), dtype=np.float64)

        def once() -> tuple[float, Any]:
            t = time.perf_counter()
            if dclient is None:
                r = means.compute(scheduler="threads")
            else:
                r = dclient.compute(means).result()
            return time.perf_counter() - t, r

        cold, result = once()
        req.mark("cold")
        warm_times = []
        for _ in range(warm):
            warm_times.append(once()[0])
            req.mark("warm")
        out.update(
            cold=cold,
            warm=warm_times,
            shape=list(arr.shape),
            chunks=list(arr.numblocks[:2]),
            result=float(np.asarray(result).mean()),
            threads=os.cpu_count() if not workers else 1,
            requests=req.phases,
        )
        if dclient is not None:
            out["worker_maxrss_mb"] = sorted(dclient.run(_maxrss_mb).values())
    finally:
        reader.close(slide)
        if dclient is not None:
            dclient.close()
        if cluster is not None:
            cluster.close()
    return out


# --- ours: progress reporting overhead ------------------------------------------------------

PROGRESS_MODES = ("none", "callback", "bar", "cli-none", "cli-bar")


def run_progress(plan: Plan, opts: dict[str, Any], rounds: int) -> dict[str, Any]:
    """A prefetch of the prefetch level with and without progress reporting, interleaved.

    Every round runs each mode once (the order rotates per round), each on a new client, so
    every prefetch starts with an empty frame cache:

    * ``none``: ``dicomslide.prefetch(slide, level)``; ``callback``: with a counting
      ``progress`` callback; ``bar``: with the CLI's progress bar (``dicomslide._cli``,
      forced to bar mode, drawn on this process's stderr);
    * ``cli-none`` / ``cli-bar``: the whole ``dicomslide prefetch SOURCE --level L
      --progress none|bar`` command, in this process (open included).
    """
    import dicomslide
    from dicomslide import _cli

    level = plan.prefetch_level
    samples: dict[str, list[float]] = {m: [] for m in PROGRESS_MODES}
    calls: dict[str, list[int]] = {m: [] for m in PROGRESS_MODES}

    async def api(mode: str) -> tuple[float, int]:
        if plan.source == "dicomweb":
            client: Any = dicomslide.DICOMwebClient(plan.url)
        else:
            client = dicomslide.DICOMfileClient(plan.folder, index_dir=opts["index_dir"])
        try:
            slide = plan.pick(await dicomslide.find_slides(client, **plan.find_kwargs()))
            n = 0
            bar = _cli._Progress("bar", stream=sys.stderr) if mode == "bar" else None

            def progress(done: int, total: int) -> None:
                nonlocal n
                n += 1
                if bar is not None:
                    bar(done, total)

            # Collected before the clock starts: otherwise the previous sample's 100 MB of
            # cached frames may be freed inside this one, whichever mode it is.
            gc.collect()
            t0 = time.perf_counter()
            r = await dicomslide.prefetch(
                slide, level, progress=None if mode == "none" else progress
            )
            elapsed = time.perf_counter() - t0
            if bar is not None:
                bar.close()
            _prefetch_result(r)
            return elapsed, n
        finally:
            await client.aclose()

    def cli(mode: str) -> tuple[float, int]:
        source = plan.url if plan.source == "dicomweb" else plan.folder
        argv = ["prefetch", source, "--level", str(level), "--progress", mode.split("-")[1]]
        if plan.study_uid:
            argv += ["--study", plan.study_uid]
        gc.collect()
        t0 = time.perf_counter()
        code = _cli.main(argv)
        elapsed = time.perf_counter() - t0
        if code != 0:
            raise RuntimeError(f"dicomslide {' '.join(argv)} exited with {code}")
        return elapsed, 0

    # Untimed: imports, thread pools, the persisted index and the ICC verdict of the first call
    # would otherwise land on whichever mode comes first.
    asyncio.run(api("none"))
    cli("cli-none")
    for i in range(rounds):
        order = (
            PROGRESS_MODES[i % len(PROGRESS_MODES) :] + PROGRESS_MODES[: i % len(PROGRESS_MODES)]
        )
        for mode in order:
            t, n = cli(mode) if mode.startswith("cli") else asyncio.run(api(mode))
            samples[mode].append(t)
            calls[mode].append(n)
    # The bar's own cost per call: throttled (a redraw at most every 0.1 s) and drawing.
    import io

    bar = _cli._Progress("bar", stream=io.StringIO())
    n = 20000
    t0 = time.perf_counter()
    for i in range(n):
        bar(i, n)
    throttled_us = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for i in range(2000):
        bar.last_time = 0.0  # defeat the throttle: every call draws
        bar(i, n)
    drawing_us = (time.perf_counter() - t0) / 2000 * 1e6
    return {
        "bar_call_us": {"throttled": throttled_us, "drawing": drawing_us},
        "modes": samples,
        "calls": calls,
        "level": level,
        "rounds": rounds,
        # For the generic record: the plain prefetch
        "cold": samples["none"][0],
        "warm": samples["none"][1:],
    }


# --- decode limit --------------------------------------------------------------------------


def run_decode(plan: Plan, task: str, warm: int) -> dict[str, Any]:
    """Decode-only rate of one level's frames: the ceiling for any reader on 2 cores.

    ``scan``: the scan level; ``prefetch``: the prefetch level.
    """
    import numpy as np
    import pydicom
    from pydicom.encaps import generate_frames

    # The instance whose total pixel matrix is the level.
    want = plan.levels[plan.prefetch_level if task == "prefetch" else plan.scan_level]
    frames: list[bytes] = []
    for f in sorted(Path(plan.folder).glob("*.dcm")):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        if (int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows)) == tuple(want):
            ds = pydicom.dcmread(f)
            frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
            break
    if not frames:
        raise RuntimeError(f"no instance with a {want} total pixel matrix")
    decoders: dict[str, Callable[[bytes], Any]] = {}
    try:
        import imagecodecs

        decoders["imagecodecs.jpeg8_decode"] = imagecodecs.jpeg8_decode
    except ImportError:
        pass
    import io

    from PIL import Image

    def pil(b: bytes) -> Any:
        return np.asarray(Image.open(io.BytesIO(b)))

    decoders["PIL"] = pil
    threads = min(2, os.cpu_count() or 1)
    out: dict[str, Any] = {"frames": len(frames), "threads": threads, "decoders": {}}
    with ThreadPoolExecutor(threads) as pool:
        for name, dec in decoders.items():
            times = []
            for _ in range(1 + warm):
                t0 = time.perf_counter()
                list(pool.map(dec, frames))
                times.append(time.perf_counter() - t0)
            out["decoders"][name] = {"cold": times[0], "warm": times[1:]}
    best = min(out["decoders"], key=lambda k: min(out["decoders"][k]["warm"] or [1e9]))
    out.update(best=best, cold=out["decoders"][best]["cold"], warm=out["decoders"][best]["warm"])
    return out


# --- server limit --------------------------------------------------------------------------


def run_server(plan: Plan, warm: int) -> dict[str, Any]:
    """What the DICOMweb server (through the proxy) costs, with raw httpx and no decoding.

    * ``per_request``: the same frames of the prefetch level one per request, sequentially
      on one keep-alive connection, vs. all of them in one multipart request;
    * ``level``: every frame of the prefetch level in requests of 100 and of 500 frames,
      4 requests in flight: the server's frame rate (the better batch size), the ceiling
      for a prefetch.
    """
    import httpx

    inst = plan.instances[plan.prefetch_level]
    base = f"{plan.url}/studies/{plan.study_uid}/series/{plan.series_uid}/instances/{inst['sop']}"
    n_frames = int(inst["frames"])
    sample = list(range(1, n_frames + 1, max(1, n_frames // 50)))[:50]
    headers = {"Accept": FRAMES_ACCEPT}

    def url(numbers: Sequence[int]) -> str:
        return f"{base}/frames/{','.join(map(str, numbers))}"

    out: dict[str, Any] = {"sample_frames": len(sample), "level_frames": n_frames}
    with httpx.Client(trust_env=False, timeout=120, headers=headers) as client:
        client.get(url([1])).raise_for_status()  # connect before timing
        single, multi = [], []
        for _ in range(1 + warm):
            t0 = time.perf_counter()
            for n in sample:
                client.get(url([n])).raise_for_status()
            single.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            r = client.get(url(sample))
            r.raise_for_status()
            multi.append(time.perf_counter() - t0)
    out["single_s"] = single
    out["multi_s"] = multi
    out["ms_per_request_single"] = min(single) / len(sample) * 1000
    out["ms_one_request_all"] = min(multi) * 1000

    # Orthanc 1.10 parses the whole instance for every request (~0.3 s for level 0 here),
    # so the batch size matters: 100 frames, and 500 (the DICOMweb client's default chunk).
    conns = 4

    async def level(batch: int) -> tuple[float, int]:
        chunks = [
            list(range(a, min(a + batch, n_frames + 1))) for a in range(1, n_frames + 1, batch)
        ]
        nbytes = 0
        it = iter(chunks)
        async with httpx.AsyncClient(trust_env=False, timeout=120, headers=headers) as ac:
            await ac.get(url([1]))

            async def worker() -> None:
                nonlocal nbytes
                for c in it:
                    r = await ac.get(url(c))
                    r.raise_for_status()
                    nbytes += len(r.content)

            t0 = time.perf_counter()
            async with asyncio.TaskGroup() as tg:
                for _ in range(conns):
                    tg.create_task(worker())
            return time.perf_counter() - t0, nbytes

    by_batch: dict[int, list[float]] = {}
    for batch in (100, 500):
        by_batch[batch] = [asyncio.run(level(batch))[0] for _ in range(1 + warm)]
    rates = {b: n_frames / statistics.median(t) for b, t in by_batch.items()}
    best = max(rates, key=lambda b: rates[b])
    out.update(batch=best, conns=conns, cold=by_batch[best][0], warm=by_batch[best][1:])
    out["level_s_by_batch"] = {str(b): t for b, t in by_batch.items()}
    out["level_frames_per_s_by_batch"] = {str(b): r for b, r in rates.items()}
    out["level_frames_per_s"] = rates[best]
    return out


# --- main ----------------------------------------------------------------------------------

BLOCKING = {
    "dicomslide_sync": Ours,
    "wsidicom": WsiDicomReader,
    "openslide": OpenSlideReader,
    "dicomslide-0.7.2": OldDicomslide,
}


def versions(reader: str) -> dict[str, str]:
    import importlib.metadata as md

    names = {
        "dicomslide": ["dicomslide", "pydicom", "numpy", "imagecodecs", "pillow", "dask"],
        "dicomslide_sync": ["dicomslide", "pydicom", "numpy", "imagecodecs", "pillow", "dask"],
        "wsidicom": ["wsidicom", "pydicom", "numpy", "imagecodecs", "pillow"],
        "openslide": ["openslide-python", "openslide-bin"],
        "dicomslide-0.7.2": ["dicomslide", "dicomweb-client", "highdicom", "pydicom"],
        "decode": ["imagecodecs", "pillow", "pydicom"],
        "server": ["httpx"],
    }[reader]
    out = {}
    for n in names:
        with contextlib.suppress(md.PackageNotFoundError):
            out[n] = md.version(n)
    if reader == "openslide":
        try:
            import openslide

            out["libopenslide"] = openslide.__library_version__
        except Exception as exc:  # version lookup is best effort
            out["libopenslide"] = repr(exc)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reader", required=True, choices=[*READERS, "decode", "server"])
    ap.add_argument("--tasks", required=True, help="comma-separated: " + ",".join(TASKS))
    ap.add_argument("--plan", required=True, help="JSON plan (see run.py)")
    ap.add_argument("--warm", type=int, default=1, help="warm calls after the cold one")
    ap.add_argument(
        "--index-dir",
        default=None,
        help="ours: persisted index folder; 'fresh' for an empty one per open",
    )
    ap.add_argument("--no-icc", action="store_true", help="ours: correct_color=False")
    ap.add_argument(
        "--dask-workers",
        type=int,
        default=0,
        help="task dask: 0 = threaded scheduler, N = LocalCluster of N one-thread processes",
    )
    args = ap.parse_args()
    plan = Plan(json.loads(args.plan))
    result: dict[str, Any] = {"reader": args.reader, "pid": os.getpid(), "tasks": {}}
    try:
        result["versions"] = versions(args.reader)
    except Exception as exc:  # reported, the run goes on
        result["versions"] = {"error": repr(exc)}
    opts: dict[str, Any] = {"index_dir": args.index_dir, "correct_color": not args.no_icc}
    with tempfile.TemporaryDirectory(prefix="dicomslide-bench-index-") as tmp:
        for task in args.tasks.split(","):
            if args.index_dir == "fresh":
                # An empty folder per task: the persisted index is cold for the first open.
                opts["index_dir"] = tempfile.mkdtemp(dir=tmp)
            try:
                if task in ("dask", "progress") and args.reader not in OURS_READERS:
                    raise ValueError(f"task {task} is for dicomslide only")
                if args.reader == "decode":
                    res = run_decode(plan, task, args.warm)
                elif task == "dask":
                    res = run_dask(plan, opts, args.warm, args.dask_workers)
                elif task == "progress":
                    res = run_progress(plan, opts, max(1, plan.progress_rounds))
                elif args.reader == "server":
                    res = run_server(plan, args.warm)
                elif args.reader == "dicomslide":
                    res = asyncio.run(run_async(plan, opts, task, args.warm))
                else:
                    res = run_blocking(BLOCKING[args.reader](plan, opts), task, args.warm)
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                res = {
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(),
                }
            result["tasks"][task] = res
    result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

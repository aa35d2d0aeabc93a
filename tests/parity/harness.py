"""Differential harness: run the same calls with dicomslide 0.7.2 and ``dicomslide_sync``.

:func:`reference_python` builds (once, cached) a virtual env with dicomslide 0.7.2 from the
package index; :func:`run_both` runs :mod:`tests.parity.worker` in that env and in this
interpreter at the same time; :func:`compare` decides, call by call, whether the two results
agree; :func:`classify` sorts the differences into known ones (listed, with the reason, in
:mod:`tests.parity.known`) and unexpected ones.

``python -m tests.parity.harness`` (and ``nox -s parity``) runs everything and prints the
summary; the exit status is 1 when there is an unexpected difference.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import time
import venv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker.py")
REFERENCE = "dicomslide==0.7.2"
# What 0.7.2 needs besides its own requirements: the file client it reads local folders with.
REFERENCE_EXTRAS = ["dicomweb-client"]


def cache_dir() -> Path:
    """Where the reference env lives: ``$DICOMSLIDE_TEST_CACHE``, else ~/.cache/dicomslide-test."""
    base = os.environ.get("DICOMSLIDE_TEST_CACHE")
    return Path(base) if base else Path.home() / ".cache" / "dicomslide-test"


def reference_python() -> tuple[Path | None, str]:
    """Interpreter of a virtual env with dicomslide 0.7.2, built on first use.

    Returns
    -------
    tuple[pathlib.Path | None, str]
        The interpreter (None when the env cannot be built) and what happened
    """
    env = cache_dir() / f"venv-{REFERENCE.replace('==', '-')}"
    python = env / "bin" / "python"
    marker = env / "complete"
    if marker.exists() and python.exists():
        return python, f"cached {env}"
    started = time.perf_counter()
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(env)
        cmd = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        res = subprocess.run(
            [*cmd, REFERENCE, *REFERENCE_EXTRAS], capture_output=True, text=True, timeout=600
        )
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"cannot build a virtual env at {env}: {error}"
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        return None, f"pip could not install {REFERENCE} into {env}: {' / '.join(tail)}"
    marker.write_text(REFERENCE)
    return python, f"built {env} in {time.perf_counter() - started:.1f} s"


@dataclass
class Run:
    """Results of one library: call id -> result, and how long the batch took."""

    lib: str
    version: str
    seconds: float
    results: dict[str, Any]
    timings: dict[str, float]


def run_both(
    calls: list[dict[str, Any]], ref_python: Path, work: Path, timeout: float = 600
) -> tuple[Run, Run]:
    """Run the calls with both libraries in two concurrent worker processes."""
    work.mkdir(parents=True, exist_ok=True)
    calls_file = work / "calls.pkl"
    calls_file.write_bytes(pickle.dumps(calls, protocol=4))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    # The reference env must not see this project's packages.
    ref_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    procs = {}
    for lib, python, penv, extra in (
        ("ref", str(ref_python), ref_env, []),
        ("ours", sys.executable, env, ["--index-dir", str(work / "index")]),
    ):
        out = work / f"{lib}.pkl"
        cmd = [python, str(WORKER), "--lib", lib, *extra, str(calls_file), str(out)]
        procs[lib] = (
            subprocess.Popen(
                cmd, env=penv, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            ),
            out,
        )
    runs = {}
    for lib, (proc, out) in procs.items():
        _, stderr = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{lib} worker failed ({proc.returncode}): {stderr.decode()[-2000:]}"
            )
        data = pickle.loads(out.read_bytes())
        runs[lib] = Run(
            data["lib"], data["version"], data["seconds"], data["results"], data["timings"]
        )
    return runs["ref"], runs["ours"]


# --- comparing ---------------------------------------------------------------------------


def _differs(a: Any, b: Any, tolerance: int, path: str = "") -> str | None:
    """Why two normalised results differ (None when they agree)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return f"{path}: array vs {type(b if isinstance(a, np.ndarray) else a).__name__}"
        if a.shape != b.shape:
            return f"{path}: shape {a.shape} vs {b.shape}"
        if a.dtype != b.dtype and not (a.dtype.kind == b.dtype.kind == "f"):
            return f"{path}: dtype {a.dtype} vs {b.dtype}"
        if a.dtype.kind == "f" or b.dtype.kind == "f":
            if not np.allclose(a, b, rtol=1e-7, atol=1e-9, equal_nan=True):
                return f"{path}: values differ (max {np.nanmax(np.abs(a - b)):.3g})"
            return None
        if a.dtype.kind in "ui" and a.size:
            diff = np.abs(a.astype(np.int64) - b.astype(np.int64))
            if diff.max() > tolerance:
                return f"{path}: {int((diff > tolerance).sum())} values differ (max {diff.max()})"
            return None
        return None if np.array_equal(a, b) else f"{path}: values differ"
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            why = _differs(x, y, tolerance, f"{path}[{i}]")
            if why:
                return why
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        if sorted(a) != sorted(b):
            return f"{path}: keys {sorted(set(a) ^ set(b))[:5]} not in both"
        for k in a:
            why = _differs(a[k], b[k], tolerance, f"{path}[{k!r}]")
            if why:
                return why
        return None
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        return _differs(list(a), list(b), tolerance, path)
    numbers = isinstance(a, (int, float)) and isinstance(b, (int, float))
    if numbers and (isinstance(a, float) or isinstance(b, float)):
        # DS values (decimal strings) parsed by different code differ in the last digits.
        return None if np.isclose(a, b, rtol=1e-7, atol=1e-12) else f"{path}: {a!r} vs {b!r}"
    if type(a) is not type(b) and not (isinstance(a, int) and isinstance(b, int)):
        return f"{path}: {type(a).__name__} {_short(a)} vs {type(b).__name__} {_short(b)}"
    return None if a == b else f"{path}: {_short(a)} vs {_short(b)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 120 else text[:117] + "..."


def compare(ref: Any, ours: Any, tolerance: int = 0) -> str | None:
    """Compare the results of one call; return why they differ, or None when they agree.

    Errors agree when ours is an instance of the builtin class 0.7's error is categorised by
    (see ``worker.category``: a ``KeyError`` from 0.7 agrees with our ``IndexRangeError``);
    values agree when their structure, shapes, dtypes and values are equal (integers within
    ``tolerance``, for lossy images decoded by different decoders; floats to a relative 1e-7).
    """
    if ref[0] == "error" and ours[0] == "error":
        return None if ref[1] in ours[5] else f"raises {ref[1]} vs {ours[1]}"
    if ref[0] == "error":
        return f"0.7 raises {ref[2]}: {ref[3][:150]}; ours returns"
    if ours[0] == "error":
        return f"ours raises {ours[2]}: {ours[3][:150]}; 0.7 returns"
    return _differs(ref[1], ours[1], tolerance)


@dataclass
class Outcome:
    """The verdict on one call."""

    call: dict[str, Any]
    why: str | None  # None: agree
    known: str | None = None  # the known difference it matches


def classify(
    calls: list[dict[str, Any]], ref: Run, ours: Run, tolerances: dict[str, int]
) -> list[Outcome]:
    """Compare every call and match each difference with the list of known ones."""
    from tests.parity.known import match

    out = []
    for call in calls:
        why = compare(
            ref.results[call["id"]], ours.results[call["id"]], tolerances.get(call["variant"], 0)
        )
        known = (
            match(call, ref.results[call["id"]], ours.results[call["id"]], ours.results)
            if why
            else None
        )
        out.append(Outcome(call, why, known))
    return out


def summary(outcomes: list[Outcome], ref: Run, ours: Run) -> str:
    """A printable summary: calls compared, agreed, known and unexpected differences."""
    variants = {o.call["variant"] for o in outcomes}
    agreed = sum(o.why is None for o in outcomes)
    known = Counter(o.known for o in outcomes if o.why and o.known)
    unexpected = [o for o in outcomes if o.why and not o.known]
    lines = [
        f"parity: dicomslide {ref.version} ({ref.seconds:.1f} s) vs dicomslide_sync "
        f"{ours.version} ({ours.seconds:.1f} s) on {len(variants)} slide variants",
        f"  calls compared: {len(outcomes)}",
        f"  agree:          {agreed}",
        f"  known differences (README 'Differences from dicomslide 0.7'): {sum(known.values())}",
    ]
    lines += [f"    {n:4d}  {key}" for key, n in sorted(known.items(), key=lambda kv: -kv[1])]
    lines.append(f"  unexpected differences: {len(unexpected)}")
    lines += [f"    {o.call['id']}: {o.why}" for o in unexpected[:200]]
    return "\n".join(lines)


def main() -> int:
    from tests.parity.suite import build_calls, prepare

    python, how = reference_python()
    print(f"reference env: {how}", flush=True)
    if python is None:
        return 2
    with tempfile.TemporaryDirectory(prefix="dicomslide-parity-") as tmp:
        work = Path(tmp)
        variants, folders = prepare(work, cache_dir() / "dicomizer")
        calls, tolerances = build_calls(variants, folders)
        ref, ours = run_both(calls, python, work / "run")
        outcomes = classify(calls, ref, ours, tolerances)
        print(summary(outcomes, ref, ours))
        return 1 if any(o.why and not o.known for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())

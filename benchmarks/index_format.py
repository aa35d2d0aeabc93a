"""Which format holds the local index: one JSON document or SQLite, measured at 5k and 50k files.

``python benchmarks/index_format.py [--files 5000,50000]`` builds, for N files, the entries
the local index keeps (searchable attributes of a real header, and the header itself as
``dicomslide.sources.header_codec`` stores it) and times, per format, in a fresh process
each: writing the whole index, a warm load of what discovery needs (attributes, without
headers), persisting one changed file, fetching the three headers of one slide, and the size
on disk. JSON keeps headers as base64 strings in the one document (a JSON index without them
would have to read the files again, which is what a warm index must avoid).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _entries(n: int) -> tuple[dict[str, Any], bytes]:
    from benchmarks.scale_data import make_data
    from dicomslide.sources.local_index import _parse_index_entry

    path = next(make_data("archive", 2).glob("slide00000/001_*.dcm"))
    st = path.stat()
    _, _, attrs, header, _, _ = _parse_index_entry(str(path), st.st_size, st.st_mtime_ns)
    assert header is not None
    return attrs, header


def _sample(fmt: str, n: int, folder: Path) -> dict[str, float]:
    attrs, header = _entries(n)
    rel = [f"slide{i // 3:05d}/{i % 3:03d}.dcm" for i in range(n)]
    out: dict[str, float] = {}
    if fmt == "json":
        path = folder / "index.json"
        t = time.perf_counter()
        doc = {
            r: [
                7000,
                1,
                2,
                3,
                "dicom",
                {**attrs, "SOPInstanceUID": r},
                base64.b64encode(header).decode(),
            ]
            for r in rel
        }
        path.write_text(json.dumps({"format": 1, "files": doc}, separators=(",", ":")))
        out["write all"] = time.perf_counter() - t
        t = time.perf_counter()
        loaded = json.loads(path.read_text())["files"]
        out["warm load"] = time.perf_counter() - t
        t = time.perf_counter()
        loaded[rel[5]][1] += 1
        tmp = folder / "index.json.tmp"
        tmp.write_text(json.dumps({"format": 1, "files": loaded}, separators=(",", ":")))
        os.replace(tmp, path)
        out["persist one change"] = time.perf_counter() - t
        t = time.perf_counter()
        [base64.b64decode(loaded[r][6]) for r in rel[30:33]]
        out["three headers"] = time.perf_counter() - t
        out["size MB"] = path.stat().st_size / 1e6
        return out
    path = folder / "index.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "CREATE TABLE files (relpath TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ino "
        "INTEGER, ctime_ns INTEGER, status TEXT, data TEXT, header BLOB)"
    )
    t = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (r, 7000, 1, 2, 3, "dicom", json.dumps({**attrs, "SOPInstanceUID": r}), header)
            for r in rel
        ],
    )
    conn.execute("COMMIT")
    out["write all"] = time.perf_counter() - t
    conn.close()
    t = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    loaded = {
        r: (s, m, i, c, st, json.loads(d))
        for r, s, m, i, c, st, d in conn.execute(
            "SELECT relpath, size, mtime_ns, ino, ctime_ns, status, data FROM files"
        )
    }
    out["warm load"] = time.perf_counter() - t
    t = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE files SET mtime_ns = 2 WHERE relpath = ?", (rel[5],))
    conn.execute("COMMIT")
    out["persist one change"] = time.perf_counter() - t
    t = time.perf_counter()
    conn.execute("SELECT header FROM files WHERE relpath IN (?, ?, ?)", rel[30:33]).fetchall()
    out["three headers"] = time.perf_counter() - t
    conn.close()
    out["size MB"] = path.stat().st_size / 1e6
    return out


def main() -> int:
    """Command line entry point.

    Returns
    -------
    int
        Exit status
    """
    if sys.argv[1:2] == ["--worker"]:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(_sample(sys.argv[2], int(sys.argv[3]), Path(tmp))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", default="5000,50000")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    print("| files | format | write all | warm load | persist one change | three headers | size |")
    print("|---|---|---|---|---|---|---|")
    for n in (int(x) for x in args.files.split(",")):
        for fmt in ("json", "sqlite"):
            runs = [
                json.loads(
                    subprocess.run(
                        [sys.executable, __file__, "--worker", fmt, str(n)],
                        capture_output=True,
                        text=True,
                        env=env,
                        check=True,
                    ).stdout
                )
                for _ in range(args.reps)
            ]
            med = {k: sorted(r[k] for r in runs)[len(runs) // 2] for k in runs[0]}
            cells = [
                f"{med[k] * 1000:.1f} ms"
                for k in ("write all", "warm load", "persist one change", "three headers")
            ]
            print(
                f"| {n} | {fmt} | " + " | ".join(cells) + f" | {med['size MB']:.0f} MB |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

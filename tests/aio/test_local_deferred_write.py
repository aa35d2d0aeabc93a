"""The index write of a sparse image's large header runs while its slide opens.

The data is the benchmark's sparse instance (``benchmarks/scale_data.py``, 20,000 frames: a
1.8 MB per-frame sequence, over the size whose write is deferred).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import dicomslide
from benchmarks.scale_data import make_data
from dicomslide.sources import local_index
from tests.support.processes import ROOT

FRAMES = 20_000


@pytest.fixture(scope="module")
def sparse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_data("sparse", FRAMES, tmp_path_factory.mktemp("deferred"))


async def _open(folder: Path, index: Path) -> tuple[Any, Any]:
    async with dicomslide.DICOMfileClient(folder, index_dir=index) as client:
        (slide,) = await dicomslide.find_slides(client)
        region = await slide.get_image_region((0, 0), 0, (256, 256))
        return region, await client.index_summary()


def test_the_first_region_does_not_wait_for_the_write(
    sparse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = tmp_path / "index"
    expected, _ = asyncio.run(_open(sparse, tmp_path / "reference"))
    release = threading.Event()
    writing = threading.Event()
    original = local_index._save_entries

    def held(*args: Any) -> None:
        writing.set()
        assert release.wait(60)
        original(*args)

    monkeypatch.setattr(local_index, "_save_entries", held)

    async def run() -> tuple[Any, Any]:
        client = dicomslide.DICOMfileClient(sparse, index_dir=index)
        (slide,) = await dicomslide.find_slides(client)
        # Everything the first region needs, while the write holds the database.
        region = await asyncio.wait_for(slide.get_image_region((0, 0), 0, (256, 256)), 30)
        assert writing.is_set()
        release.set()
        await client.aclose()  # waits for the write
        return region, await _summary(sparse, index)

    region, warm = asyncio.run(run())
    np.testing.assert_array_equal(region, expected)
    assert (warm.parsed, warm.instances) == (0, 1)  # the write reached the index


async def _summary(folder: Path, index: Path) -> Any:
    async with dicomslide.DICOMfileClient(folder, index_dir=index) as client:
        return await client.index_summary()


@pytest.mark.parametrize(
    "failure",
    [
        sqlite3.OperationalError("database is locked"),
        # Not an sqlite3.Error: what binding too large a number raises.
        OverflowError("Python int too large to convert to SQLite INTEGER"),
    ],
)
def test_a_failed_deferred_write_is_reported_and_reading_goes_on(
    failure: Exception, sparse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_args: Any) -> None:
        raise failure

    monkeypatch.setattr(local_index, "_save_entries", fail)
    index = tmp_path / "index"
    region, summary = asyncio.run(_open(sparse, index))
    assert region.shape[:2] == (256, 256)
    assert summary.persist_error == f"{type(failure).__name__}: {failure}"
    assert summary.index_file is None
    monkeypatch.undo()
    assert asyncio.run(_summary(sparse, index)).reused == 0  # nothing was stored


def test_headers_leave_memory_once_the_write_commits(sparse: Path, tmp_path: Path) -> None:
    expected, _ = asyncio.run(_open(sparse, tmp_path / "reference"))

    async def run() -> tuple[Any, Any, int]:
        async with dicomslide.DICOMfileClient(sparse, index_dir=tmp_path / "index") as client:
            await client.index_summary()  # indexes, and starts the deferred write
            store = client._store
            assert store._saving is not None
            await asyncio.to_thread(store._saving.join)
            held = len(store._fresh)  # no header was asked for yet
            (slide,) = await dicomslide.find_slides(client)  # served by the database
            region = await slide.get_image_region((0, 0), 0, (256, 256))
            return region, await client.index_summary(), held

    region, summary, held = asyncio.run(run())
    assert held == 0
    assert summary.persist_error is None
    np.testing.assert_array_equal(region, expected)


_KILLED = """
import asyncio, sys, time
import dicomslide
from dicomslide.sources import local_index, sqlite_blobs

def slow(*args):
    print("writing", flush=True)
    time.sleep(60)

local_index.insert_with_blob = slow  # inside the write's transaction

async def main():
    async with dicomslide.DICOMfileClient(sys.argv[1], index_dir=sys.argv[2]) as client:
        (slide,) = await dicomslide.find_slides(client)
        await slide.get_image_region((0, 0), 0, (256, 256))
        print("region", flush=True)

asyncio.run(main())
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_process_killed_during_the_write_leaves_a_sound_index(
    sparse: Path, tmp_path: Path
) -> None:
    index = tmp_path / "index"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-c", _KILLED, str(sparse), str(index)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        assert proc.stdout is not None
        lines = {proc.stdout.readline().strip(), proc.stdout.readline().strip()}
        assert lines == {"writing", "region"}  # the region came while the write was open
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    (index_file,) = index.glob("*.sqlite")
    with sqlite3.connect(index_file) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT COUNT(*) FROM headers").fetchone() == (0,)
    region, summary = asyncio.run(_open(sparse, index))
    assert (summary.reused, summary.persist_error) == (0, None)
    assert region.shape[:2] == (256, 256)

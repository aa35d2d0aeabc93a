"""A warm index that matches its snapshot answers from the rows it is asked for, exactly as
an index loaded in full does, and notices every change made after the snapshot.

See :mod:`dicomslide.sources.index_snapshot`. Folders here are copies of a small synthetic
archive (``benchmarks/scale_data.py``) made just now; their directories count as settled
(``RACY_NS`` is 0, as in ``tests/unit/test_folder_survey.py``), else no snapshot is stored.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest

import dicomslide
from benchmarks.scale_data import make_data
from dicomslide.sources import folder_survey, local_index
from tests.support.processes import run_python

_SLIDES = 6


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_data("archive", _SLIDES, tmp_path_factory.mktemp("archives"))


@pytest.fixture
def folder(archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(folder_survey, "RACY_NS", 0)
    copy = tmp_path / "folder"
    shutil.copytree(archive, copy)
    # What a real archive holds besides slides: a duplicate, a broken file, another file.
    shutil.copy(copy / "slide00001/002_label.dcm", copy / "slide00001/zz_copy.dcm")
    (copy / "slide00002/broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)
    (copy / "notes.txt").write_text("not DICOM")
    return copy


def _loads(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Count full loads of the index's rows (what the snapshot spares)."""
    calls: list[Any] = []
    original = local_index._load_rows

    def spy(*args: Any) -> Any:
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(local_index, "_load_rows", spy)
    return calls


async def _answers(folder: Path, index: Path) -> dict[str, Any]:
    """Everything a client tells about a folder, as plain values."""
    async with dicomslide.DICOMfileClient(folder, index_dir=index) as client:
        summary = await client.index_summary()
        series = await client.search_for_series(search_filters={"Modality": "SM"})
        out: dict[str, Any] = {
            "summary": (
                summary.instances,
                summary.non_dicom,
                sorted(summary.failures),
                list(summary.duplicates),
            ),
            "studies": [
                (ds.StudyInstanceUID, ds.NumberOfStudyRelatedInstances)
                for ds in await client.search_for_studies()
            ],
            "series": [(ds.SeriesInstanceUID, ds.NumberOfSeriesRelatedInstances) for ds in series],
            "by_patient": [
                ds.SOPInstanceUID
                for ds in await client.search_for_instances(
                    search_filters={"PatientID": "P-00001"}
                )
            ],
            "wildcard": [
                ds.SOPInstanceUID
                for ds in await client.search_for_instances(
                    search_filters={"ContainerIdentifier": "SCALE-0000[12]*", "InstanceNumber": 1}
                )
            ],
        }
        for number in range(_SLIDES + 1):
            container = f"SCALE-{number:05d}"
            found = await client.search_for_instances(
                search_filters={"ContainerIdentifier": container}
            )
            out[container] = sorted(ds.SOPInstanceUID for ds in found)
            slides = await dicomslide.find_slides(client, container_id=container)
            out[f"slides {container}"] = [
                (s.container_id, len(s.image_metadata), await _first_frame(client, s))
                for s in slides
            ]
        for ds in series[:2]:
            metadata = await client.retrieve_series_metadata(
                ds.StudyInstanceUID, ds.SeriesInstanceUID
            )
            out[f"metadata {ds.SeriesInstanceUID}"] = [str(m.SOPInstanceUID) for m in metadata]
        # Last: which file each instance is (loads every row of a warm index).
        index = await client._ensure_index()
        out["paths"] = sorted((i.relpath, i.sop_uid) for i in index.instances.values())
        return out


async def _first_frame(client: Any, slide: dicomslide.Slide) -> int:
    ds = slide.image_metadata[0]
    async for _, frame in client.iter_frames(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, [1]
    ):
        return len(frame.data)
    return -1


def test_warm_index_answers_as_a_full_load(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = tmp_path / "index"
    cold = asyncio.run(_answers(folder, index))
    loads = _loads(monkeypatch)
    warm = asyncio.run(_answers(folder, index))
    assert loads == []  # the snapshot matched: no row loaded but those asked for
    assert warm == cold
    assert cold["summary"][0] == 3 * _SLIDES
    # Non-DICOM: the notes and the archive's ".complete" mark.
    assert cold["summary"][1:] == (2, ["slide00002/broken.dcm"], ["slide00001/zz_copy.dcm"])
    assert [len(cold[f"SCALE-{n:05d}"]) for n in range(_SLIDES + 1)] == [3] * _SLIDES + [0]
    # And the same again with the rows all loaded (the snapshot not trusted).
    monkeypatch.setattr(local_index, "unchanged", lambda *args: False)
    assert asyncio.run(_answers(folder, index)) == cold


def _rewrite_container(folder: Path) -> None:
    # Same size, modification time set back: only the change time tells.
    path = folder / "slide00003/002_label.dcm"
    st = path.stat()
    path.write_bytes(path.read_bytes().replace(b"SCALE-00003", b"SCALE-00006"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _replace_by_rename(folder: Path) -> None:
    target = folder / "slide00004/003_overview.dcm"
    st = target.stat()
    staged = folder / "staged.tmp"
    staged.write_bytes(target.read_bytes().replace(b"SCALE-00004", b"SCALE-00006"))
    os.utime(staged, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(staged, target)


_CHANGES: dict[str, Callable[[Path], Any]] = {
    "changed": _rewrite_container,
    "replaced": _replace_by_rename,
    "added": lambda f: shutil.copy(f / "slide00000/002_label.dcm", f / "slide00005/copy.dcm"),
    "removed": lambda f: (f / "slide00000/001_volume_L0.dcm").unlink(),
    "moved": lambda f: (f / "slide00000/002_label.dcm").rename(f / "slide00005/label.dcm"),
    "folder-removed": lambda f: shutil.rmtree(f / "slide00002"),
    "folder-added": lambda f: shutil.copytree(f / "slide00001", f / "deep/er/slide"),
}


@pytest.mark.parametrize("change", list(_CHANGES))
def test_changes_after_the_snapshot_are_seen(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    index = tmp_path / "index"
    before = asyncio.run(_answers(folder, index))
    time.sleep(0.02)  # past the file system clock's tick: the change gets a time of its own
    _CHANGES[change](folder)
    loads = _loads(monkeypatch)
    seen = asyncio.run(_answers(folder, index))
    assert len(loads) == 1  # the snapshot did not match: the folder was surveyed
    truth = asyncio.run(_answers(folder, tmp_path / "fresh"))
    assert seen == truth
    assert seen != before
    # The survey stored a snapshot of the changed folder: trusted again next time.
    assert asyncio.run(_answers(folder, index)) == truth
    assert len(loads) == 2  # one more for the fresh index, none for the warm one


def test_container_search_loads_one_slide_of_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Counted at two sizes four times apart: a warm container search loads the rows of its
    # slide (and a series search for derived images none), whatever the archive's size.
    monkeypatch.setattr(folder_survey, "RACY_NS", 0)
    counts = {}
    for size in (10, 40):
        folder = tmp_path / f"archive-{size}"
        shutil.copytree(make_data("archive", size, tmp_path / "made"), folder)
        index = tmp_path / f"index-{size}"
        asyncio.run(_answers_of(folder, index, "SCALE-00003"))
        rows: list[int] = []
        original = local_index.StoredRows.select

        def counted(self: Any, *args: Any, _original: Any = original, _rows: Any = rows) -> Any:
            found = _original(self, *args)
            _rows.append(len(found))
            return found

        monkeypatch.setattr(local_index.StoredRows, "select", counted)
        assert asyncio.run(_answers_of(folder, index, "SCALE-00003")) == ["SCALE-00003"]
        counts[size] = sum(rows)
        monkeypatch.setattr(local_index.StoredRows, "select", original)
    assert counts[10] == counts[40] == 3 + 3, counts  # the instance search, the series'


async def _answers_of(folder: Path, index: Path, container: str) -> list[str]:
    async with dicomslide.DICOMfileClient(folder, index_dir=index) as client:
        return [
            s.container_id for s in await dicomslide.find_slides(client, container_id=container)
        ]


def _snapshots(index: Path) -> int:
    (db,) = index.glob("*.sqlite")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT count(*) FROM snapshot").fetchone()[0])


def test_no_snapshot_while_a_directory_is_to_be_listed_again(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = tmp_path / "index"
    # Changed within the racy window: its time may not move for a change made right after.
    monkeypatch.setattr(folder_survey, "RACY_NS", 3600 * 10**9)
    asyncio.run(_answers_of(folder, index, "SCALE-00000"))
    assert _snapshots(index) == 0
    loads = _loads(monkeypatch)
    asyncio.run(_answers_of(folder, index, "SCALE-00000"))
    assert len(loads) == 1
    # A link in a folder: its target may change without the folder changing.
    monkeypatch.setattr(folder_survey, "RACY_NS", 0)
    asyncio.run(_answers_of(folder, index, "SCALE-00000"))
    assert _snapshots(index) == 1
    os.symlink(folder / "slide00000/002_label.dcm", folder / "slide00005/link.dcm")
    asyncio.run(_answers_of(folder, index, "SCALE-00000"))
    assert _snapshots(index) == 0


def test_damaged_row_is_parsed_again_not_trusted(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = tmp_path / "index"
    assert asyncio.run(_answers_of(folder, index, "SCALE-00001")) == ["SCALE-00001"]
    (db,) = index.glob("*.sqlite")
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE files SET sop_uid = NULL WHERE relpath = 'slide00001/002_label.dcm'")
        conn.execute("DELETE FROM snapshot")  # as no writer would leave it
    parsed = []
    original = local_index._parse_index_entry

    def spy(path: str, *args: Any) -> Any:
        parsed.append(Path(path).relative_to(folder).as_posix())
        return original(path, *args)

    monkeypatch.setattr(local_index, "_parse_index_entry", spy)
    assert asyncio.run(_answers_of(folder, index, "SCALE-00001")) == ["SCALE-00001"]
    assert parsed == ["slide00001/002_label.dcm"]  # before: never, and the file was lost
    assert _snapshots(index) == 1
    assert asyncio.run(_answers(folder, index)) == asyncio.run(_answers(folder, tmp_path / "new"))


def test_index_of_an_old_format_is_replaced(folder: Path, tmp_path: Path) -> None:
    # Format 3 had no UID columns: today's look-ups by UID cannot even be indexed on it.
    index = tmp_path / "index"
    index.mkdir()
    db = local_index.index_file_for(folder.resolve(), True, index)
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("CREATE TABLE files (relpath TEXT PRIMARY KEY, size INTEGER, data TEXT)")
        conn.execute("INSERT INTO meta VALUES ('format', '3')")
    summary = asyncio.run(_summary(folder, index))
    assert (summary.index_file, summary.persist_error) == (db, None)
    assert summary.parsed == summary.reused + summary.parsed > 0
    assert asyncio.run(_answers(folder, index)) == asyncio.run(_answers(folder, tmp_path / "new"))
    assert _snapshots(index) == 1


async def _summary(folder: Path, index: Path) -> local_index.IndexSummary:
    async with dicomslide.DICOMfileClient(folder, index_dir=index) as client:
        return await client.index_summary()


def test_frame_reads_look_their_instance_up_once(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every frame request looks its instance up: once it was found, neither the database
    # nor a worker thread is asked again.
    index = tmp_path / "index"
    asyncio.run(_answers_of(folder, index, "SCALE-00002"))
    calls: list[str] = []
    select, off_loop = local_index.StoredRows.select, local_index.FolderIndex.off_loop

    def counted_select(self: Any, *args: Any) -> Any:
        calls.append("select")
        return select(self, *args)

    async def counted_off_loop(self: Any, function: Any, *args: Any) -> Any:
        calls.append("off_loop")
        return await off_loop(self, function, *args)

    monkeypatch.setattr(local_index.StoredRows, "select", counted_select)
    monkeypatch.setattr(local_index.FolderIndex, "off_loop", counted_off_loop)

    async def read() -> tuple[list[int], list[str]]:
        async with dicomslide.DICOMfileClient(folder, index_dir=index) as client:
            (slide,) = await dicomslide.find_slides(client, container_id="SCALE-00002")
            calls.clear()
            return [await _first_frame(client, slide) for _ in range(3)], calls

    sizes, seen = asyncio.run(read())
    assert sizes[0] > 0
    assert sizes == [sizes[0]] * 3
    assert seen == ["off_loop", "select"]  # the first read's look-up, then remembered


_WORKER = """
import asyncio, sys
import dicomslide
async def main():
    async with dicomslide.DICOMfileClient(sys.argv[1], index_dir=sys.argv[2]) as client:
        slides = await dicomslide.find_slides(client, container_id="SCALE-00004")
        s = await client.index_summary()
        on_snapshot = (await client._ensure_index()).stored is not None
        print(len(slides), s.parsed, s.instances, s.persist_error, on_snapshot)
asyncio.run(main())
"""


def _processes(folder: Path, index: Path, count: int) -> list[str]:
    """Run ``count`` worker processes at once (a thread waits for each)."""
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        done = list(
            pool.map(lambda _: run_python("-c", _WORKER, str(folder), str(index)), range(count))
        )
    assert [p.returncode for p in done] == [0] * count, [p.stderr[-2000:] for p in done]
    return [p.stdout.strip() for p in done]


def test_processes_store_one_snapshot_and_trust_it(archive: Path, tmp_path: Path) -> None:
    # Processes of their own (the racy window as shipped): the folder settles first.
    folder = tmp_path / "folder"
    shutil.copytree(archive, folder)
    time.sleep(folder_survey.RACY_NS / 1e9 + 0.1)
    index = tmp_path / "index"
    # Several index it at once, each storing its snapshot in its own transaction ...
    cold = _processes(folder, index, 3)
    # (one that starts after another's transaction may already trust its snapshot)
    found = [[line.split()[i] for i in (0, 2, 3)] for line in cold]
    assert found == [["1", f"{3 * _SLIDES}", "None"]] * 3, cold
    (db,) = index.glob("*.sqlite")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert _snapshots(index) == 1
    # ... and the next ones, at once too, trust it: nothing parsed, the same answers.
    warm = _processes(folder, index, 3)
    assert warm == [f"1 0 {3 * _SLIDES} None True"] * 3


def _db(index: Path) -> Path:
    (db,) = index.glob("*.sqlite")
    return db


def _sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_a_row_rewritten_after_the_open_is_not_mixed_in(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A warm client answers as of its open: a file another process indexed again since
    # (a new SOP Instance UID at the same path) is neither handed out under its new UID
    # nor as the object made of its old row.
    index = tmp_path / "index"
    asyncio.run(_answers_of(folder, index, "SCALE-00003"))
    path = folder / "slide00003/002_label.dcm"
    ds = pydicom.dcmread(path)
    old = str(ds.SOPInstanceUID)
    study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)

    async def run() -> tuple[Any, Any, list[str]]:
        async with dicomslide.DICOMfileClient(folder, index_dir=index) as client:
            first = await client._lookup(study, series, old)
            ds.SOPInstanceUID = old + ".2"
            ds.save_as(path)
            # Another client indexes the changed file (rewriting its row and the snapshot).
            assert await _answers_of(folder, index, "SCALE-00003") == ["SCALE-00003"]
            index_ = await client._ensure_index()
            assert index_.stored is not None
            newer = await index_.off_loop(index_.stored.instance, old + ".2")
            with pytest.raises(dicomslide.NotFoundError):
                await client._lookup(study, series, old + ".2")
            paths = [i.relpath for i in await index_.off_loop(list, index_.instances.values())]
            return first, newer, paths

    first, newer, paths = asyncio.run(run())
    assert first.sop_uid == old
    assert newer is None  # before: the object made of the old row, SOP Instance UID `old`
    assert "slide00003/002_label.dcm" not in paths
    # A new client sees the change.
    with contextlib.closing(sqlite3.connect(_db(index))) as conn:
        assert conn.execute(
            "SELECT sop_uid FROM files WHERE relpath = 'slide00003/002_label.dcm'"
        ).fetchone() == (old + ".2",)


def test_an_index_changed_under_a_search_is_a_project_error(folder: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    asyncio.run(_answers_of(folder, index, "SCALE-00001"))

    async def run() -> None:
        async with dicomslide.DICOMfileClient(folder, index_dir=index) as client:
            await client.index_summary()  # warm: nothing loaded yet
            with contextlib.closing(sqlite3.connect(_db(index))) as conn, conn:
                conn.execute("DROP TABLE terms")  # as a process rebuilding the index does
            with pytest.raises(dicomslide.InvalidDataError, match=r"index failed \(no such table"):
                await dicomslide.find_slides(client, container_id="SCALE-00001")

    asyncio.run(run())  # before: sqlite3.OperationalError "no such table: terms"


def test_a_damaged_row_is_never_made_an_instance(folder: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    asyncio.run(_answers_of(folder, index, "SCALE-00001"))
    with contextlib.closing(sqlite3.connect(_db(index))) as conn, conn:
        conn.execute(
            "UPDATE files SET study_uid = NULL WHERE relpath = 'slide00001/003_overview.dcm'"
        )
    assert _snapshots(index) == 1  # the snapshot still matches the folder

    async def run() -> tuple[list[str], list[Any]]:
        async with dicomslide.DICOMfileClient(folder, index_dir=index) as client:
            found = await _answers_of(folder, index, "SCALE-00001")
            index_ = await client._ensure_index()
            assert index_.stored is not None
            rows = await index_.off_loop(
                index_.stored.having, "ContainerIdentifier", "SCALE-00001"
            )
            return found, [i.uids for i in rows]

    found, uids = asyncio.run(run())  # before: TypeError sorting a None Study Instance UID
    assert found == ["SCALE-00001"]
    assert len(uids) == 2
    assert all(isinstance(u, str) and u for triple in uids for u in triple)


def test_a_damaged_row_of_a_removed_file_is_deleted(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = tmp_path / "index"
    asyncio.run(_answers_of(folder, index, "SCALE-00002"))
    with contextlib.closing(sqlite3.connect(_db(index))) as conn, conn:
        conn.execute(
            "UPDATE files SET sop_uid = NULL, size = NULL "
            "WHERE relpath = 'slide00002/002_label.dcm'"
        )
        conn.execute("DELETE FROM snapshot")  # as no writer would leave it
    (folder / "slide00002/002_label.dcm").unlink()
    assert asyncio.run(_answers_of(folder, index, "SCALE-00002")) == ["SCALE-00002"]
    with contextlib.closing(sqlite3.connect(_db(index))) as conn:
        left = conn.execute(
            "SELECT count(*) FROM files WHERE relpath = 'slide00002/002_label.dcm'"
        ).fetchone()
    assert left == (0,)  # before: kept for good, and no snapshot was ever stored again
    assert _snapshots(index) == 1
    loads = _loads(monkeypatch)
    assert asyncio.run(_answers_of(folder, index, "SCALE-00002")) == ["SCALE-00002"]
    assert loads == []

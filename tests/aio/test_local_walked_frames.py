"""Frames of a sparse file without offset table, located by the local client as reads need them.

The data is the benchmark's sparse instance (``benchmarks/scale_data.py``): TILED_SPARSE,
32x32 JPEG frames, an empty Basic Offset Table.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.encaps import generate_frames

import dicomslide
from benchmarks.scale_data import make_data
from dicomslide.sources import local as local_module, part10
from dicomslide.sources.walked_layout import WalkedLayout
from tests.support.processes import run_python

FRAMES = 4000


@pytest.fixture(scope="module")
def sparse(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    folder = make_data("sparse", FRAMES, tmp_path_factory.mktemp("walked"))
    ds = pydicom.dcmread(folder / "sparse.dcm")
    truth = list(generate_frames(ds.PixelData, number_of_frames=FRAMES))
    return folder, truth


async def _frames(folder: Path, index: Path, numbers: list[int]) -> tuple[dict[int, bytes], Any]:
    async with dicomslide.DICOMfileClient(folder, index_dir=index) as client:
        (found,) = await client.search_for_instances()
        uids = (found.StudyInstanceUID, found.SeriesInstanceUID, found.SOPInstanceUID)
        got = {n: f.data async for n, f in client.iter_frames(*uids, numbers)}
        index_entry = client._index.instances[found.SOPInstanceUID]  # type: ignore[union-attr]
        return got, client._store.frame_table(index_entry)


def _copy(folder: Path, tmp_path: Path, cut: int = 0) -> Path:
    """A folder with a copy of the sparse file, its last ``cut`` bytes left out."""
    copy = tmp_path / "copy"
    copy.mkdir()
    data = (folder / "sparse.dcm").read_bytes()
    (copy / "sparse.dcm").write_bytes(data[: len(data) - cut])
    return copy


def _padded(frame: bytes) -> bytes:
    return frame + b"\x00" * (len(frame) % 2)


def test_first_frames_read_only_the_start_of_the_file(
    sparse: tuple[Path, list[bytes]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, truth = sparse
    monkeypatch.setattr(part10, "_SCAN_WINDOW", 1 << 16)
    read: list[int] = []
    original = local_module._pread

    def counted(fd: int, size: int, offset: int) -> bytes:
        read.append(size)
        return original(fd, size, offset)

    monkeypatch.setattr(local_module, "_pread", counted)
    got, table = asyncio.run(_frames(folder, tmp_path / "index", [1, 2, 50]))
    assert got == {n: _padded(truth[n - 1]) for n in (1, 2, 50)}
    size = (folder / "sparse.dcm").stat().st_size
    # The header, a 64 KB window and the frames; before, every window of the file.
    assert sum(read) < size // 10
    assert table is None  # nothing remembered of a walk that did not reach the end


def test_later_reads_walk_on_and_the_whole_table_is_remembered(
    sparse: tuple[Path, list[bytes]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, truth = sparse
    monkeypatch.setattr(part10, "_SCAN_WINDOW", 1 << 16)
    index = tmp_path / "index"
    walks: list[int] = []
    original = WalkedLayout.locate

    def spy(self: WalkedLayout, frame_number: int, read_at: part10.ReadAt) -> bool:
        walks.append(frame_number)
        return original(self, frame_number, read_at)

    monkeypatch.setattr(WalkedLayout, "locate", spy)

    async def run() -> tuple[dict[int, bytes], Any]:
        async with dicomslide.DICOMfileClient(folder, index_dir=index) as client:
            (found,) = await client.search_for_instances()
            uids = (found.StudyInstanceUID, found.SeriesInstanceUID, found.SOPInstanceUID)
            got: dict[int, bytes] = {}
            for numbers in ([3], [2000, 1], [FRAMES, 7]):
                got.update({n: f.data async for n, f in client.iter_frames(*uids, numbers)})
            # Once complete, reads do not walk again.
            got.update({n: f.data async for n, f in client.iter_frames(*uids, [FRAMES - 1])})
            entry = client._index.instances[found.SOPInstanceUID]  # type: ignore[union-attr]
            return got, client._store.frame_table(entry)

    got, table = asyncio.run(run())
    assert got == {n: _padded(truth[n - 1]) for n in got}
    assert walks == [3, 2000, FRAMES]
    assert table is not None
    starts, _stops = table
    assert starts.size == FRAMES
    # A new client takes the table from the index: no walk, the same frames.
    walks.clear()
    again, _ = asyncio.run(_frames(folder, index, [5, FRAMES]))
    assert again == {n: _padded(truth[n - 1]) for n in (5, FRAMES)}
    assert walks == []


def test_a_truncated_copy_fails_on_its_first_read_as_before(
    sparse: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    copy = _copy(sparse[0], tmp_path, cut=5000)
    with pytest.raises(dicomslide.InvalidDataError, match=r"truncated|beyond the end"):
        asyncio.run(_frames(copy, tmp_path / "index", [1]))


def test_a_file_changed_between_reads_is_walked_afresh(
    sparse: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    truth = sparse[1]
    copy = _copy(sparse[0], tmp_path)
    path = copy / "sparse.dcm"

    async def run() -> dict[int, bytes]:
        async with dicomslide.DICOMfileClient(copy, index_dir=tmp_path / "index") as client:
            (found,) = await client.search_for_instances()
            uids = (found.StudyInstanceUID, found.SeriesInstanceUID, found.SOPInstanceUID)
            got = {n: f.data async for n, f in client.iter_frames(*uids, [1])}
            # The same frames moved 2 bytes on: a private element before the pixel data.
            ds = pydicom.dcmread(path)
            ds.add_new(0x00091010, "LO", "xy")
            buffer = io.BytesIO()
            ds.save_as(buffer)
            path.write_bytes(buffer.getvalue())
            got.update({n: f.data async for n, f in client.iter_frames(*uids, [FRAMES])})
            return got

    got = asyncio.run(run())
    assert got == {1: _padded(truth[0]), FRAMES: _padded(truth[-1])}


def test_a_cold_open_reads_the_per_frame_items_once(
    sparse: tuple[Path, list[bytes]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dicomslide import perframe

    folder, _ = sparse
    calls: dict[str, int] = {"_quick": 0, "_scan_z_values": 0}
    for name in calls:
        original = getattr(perframe, name)

        def counted(*args: Any, _name: str = name, _original: Any = original) -> Any:
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(perframe, name, counted)

    async def run() -> Any:
        async with dicomslide.DICOMfileClient(folder, index_dir=tmp_path / "index") as client:
            (slide,) = await dicomslide.find_slides(client)
            return await slide.get_image_region((0, 0), 0, (256, 256))

    region = asyncio.run(run())
    assert region.shape[:2] == (256, 256)
    # The positions, parsed while the metadata is read, give the Z offsets too.
    assert calls == {"_quick": 1, "_scan_z_values": 0}


_COLD_OPEN = """
import asyncio, sys
import dicomslide

async def main():
    async with dicomslide.DICOMfileClient(sys.argv[1], index_dir=sys.argv[2]) as client:
        (slide,) = await dicomslide.find_slides(client)
        await slide.get_image_region((0, 0), 0, (256, 256))

asyncio.run(main())
print("numpy.ma" in sys.modules)
"""


def test_a_cold_open_does_not_import_numpy_ma(
    sparse: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    # numpy 2.4's unique() without indices imports numpy.ma: 10-30 ms of a cold open.
    done = run_python("-c", _COLD_OPEN, str(sparse[0]), str(tmp_path / "index"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"

"""Tests of the async local-folder source :class:`dicomslide.sources.local.DICOMfileClient`."""

from __future__ import annotations

import asyncio
import io
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

from dicomslide.errors import (
    InvalidDataError,
    NotFoundError,
    RegionError,
    UnsupportedError,
    UsageError,
)
from dicomslide.sources import EncodedFrame, Source, local as local_module, local_index
from dicomslide.sources.local import DICOMfileClient
from tests.support.part10 import WSI, padded, set_pixel_data, wsi_dataset

STUDY = generate_uid()
SERIES_JPEG = generate_uid()
SERIES_NATIVE = generate_uid()


def _jpeg(seed: int, size: int = 16) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


#: Where and how the files of :func:`_jpeg` frames (16 x 16 RGB) are written.
JPEG_FILE: dict[str, Any] = {
    "syntax": JPEGBaseline8Bit,
    "rows": 16,
    "columns": 16,
    "spp": 3,
    "series": SERIES_JPEG,
}


def _write(
    path: Path,
    *,
    syntax: str,
    pixel_data: bytes,
    frames: int,
    rows: int,
    columns: int,
    spp: int = 1,
    bits: int = 8,
    series: str = SERIES_NATIVE,
    instance_number: int = 1,
    extended: tuple[bytes, bytes] | None = None,
    sop: str | None = None,
    **attrs: Any,
) -> str:
    ds = wsi_dataset(syntax, frames, rows, columns, spp, bits)
    if sop is not None:
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
    encapsulated = syntax == JPEGBaseline8Bit
    set_pixel_data(ds, pixel_data, "OW" if bits == 16 and not encapsulated else "OB", extended)
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = series
    ds.PatientID = "P-1"
    ds.PatientName = "Doe^Jane"
    ds.StudyID = "S1"
    ds.AccessionNumber = "A1"
    ds.StudyDate = "20240102"
    ds.Modality = "SM"
    ds.SeriesNumber = 1 if series == SERIES_JPEG else 2
    ds.InstanceNumber = instance_number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.ContainerIdentifier = "SLIDE-1"
    ds.FrameOfReferenceUID = "1.2.3.4"
    ds.TotalPixelMatrixRows = ds.Rows * 2
    ds.TotalPixelMatrixColumns = ds.Columns * 2
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


class Folder:
    """A folder of real Part 10 files and the frames each one holds."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.expected: dict[str, tuple[str, list[bytes], str]] = {}
        self.paths: dict[str, Path] = {}

    def add(self, name: str, frames: list[bytes], reported_syntax: str, **kwargs: Any) -> str:
        path = self.root / name
        series = kwargs.get("series", SERIES_NATIVE)
        sop = _write(path, frames=len(frames), **kwargs)
        self.expected[sop] = (series, frames, reported_syntax)
        self.paths[sop] = path
        return sop

    def add_native(
        self, name: str, frames: list[bytes], syntax: str, read_as: str = "", **kwargs: Any
    ) -> str:
        """A native file: Pixel Data is the frames back to back; they read as ``read_as``."""
        pixel_data = b"".join(frames)
        return self.add(
            name, frames, read_as or syntax, syntax=syntax, pixel_data=pixel_data, **kwargs
        )


@pytest.fixture
def folder(tmp_path: Path) -> Folder:
    f = Folder(tmp_path / "slides")
    jpegs = [_jpeg(i) for i in range(6)]
    pixel_data, offsets, lengths = encapsulate_extended(jpegs)
    f.add(
        "eot.dcm",
        [padded(j) for j in jpegs],
        JPEGBaseline8Bit,
        pixel_data=pixel_data,
        extended=(offsets, lengths),
        instance_number=1,
        **JPEG_FILE,
    )
    # The same JPEG frames with a Basic Offset Table or without, one or two fragments a frame.
    for number, (name, fragments, has_bot) in enumerate(
        [
            ("sub/bot.dcm", 1, True),
            ("sub/deeper/nobot_two_fragments.dcm", 2, False),
            ("bot_two_fragments.dcm", 2, True),
        ],
        start=2,
    ):
        f.add(
            name,
            [padded(j) for j in jpegs],
            JPEGBaseline8Bit,
            pixel_data=encapsulate(jpegs, fragments_per_frame=fragments, has_bot=has_bot),
            instance_number=number,
            **JPEG_FILE,
        )
    native = [bytes((i * 31 + k) % 256 for k in range(4 * 5 * 3)) for i in range(5)]
    f.add_native("native_rgb.dcm", native, ExplicitVRLittleEndian, rows=4, columns=5, spp=3)
    mono = [bytes((i + k) % 256 for k in range(6 * 7)) for i in range(4)]
    f.add_native(
        "implicit.dcm", mono, ImplicitVRLittleEndian, rows=6, columns=7, instance_number=2
    )
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2, size=(5, 3 * 5), dtype=np.uint8)
    packed = np.packbits(bits.ravel(), bitorder="little").tobytes()
    f.add(
        "one_bit.dcm",
        [np.packbits(b, bitorder="little").tobytes() for b in bits],
        ExplicitVRLittleEndian,
        syntax=ExplicitVRLittleEndian,
        pixel_data=packed + b"\x00" * (len(packed) % 2),
        rows=3,
        columns=5,
        bits=1,
        instance_number=3,
    )
    deflated = [bytes([i]) * 64 for i in range(3)]
    f.add_native(
        "deflated.dcm",
        deflated,
        DeflatedExplicitVRLittleEndian,
        read_as=ExplicitVRLittleEndian,  # inflated by the reader
        rows=8,
        columns=8,
        instance_number=4,
    )
    words = np.arange(2 * 4 * 4, dtype=">u2")
    f.add_native(
        "big_endian.dcm",
        [words[:16].tobytes(), words[16:].tobytes()],
        ExplicitVRBigEndian,
        rows=4,
        columns=4,
        bits=16,
        instance_number=5,
    )
    (f.root / "README.txt").write_text("not DICOM")
    (f.root / "sub" / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 40)
    return f


@pytest.fixture
def index_dir(tmp_path: Path) -> Path:
    return tmp_path / "index"


async def _all_frames(client: DICOMfileClient, series: str, sop: str, n: int) -> dict[int, Any]:
    return {
        number: frame
        async for number, frame in client.iter_frames(STUDY, series, sop, range(1, n + 1))
    }


def _module_of(name: str) -> Any:
    """The module whose global ``name`` the client calls (the index lives apart)."""
    return local_index if hasattr(local_index, name) else local_module


def _count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[Any]:
    calls: list[Any] = []
    original: Callable[..., Any] = getattr(_module_of(name), name)

    def wrapper(*args: Any) -> Any:
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(_module_of(name), name, wrapper)
    return calls


async def test_is_a_source(folder: Folder, index_dir: Path) -> None:
    async with DICOMfileClient(folder.root, index_dir=index_dir) as client:
        assert isinstance(client, Source)
        assert client.base_dir == folder.root


async def test_every_layout_returns_the_stored_frames(folder: Folder, index_dir: Path) -> None:
    async with DICOMfileClient(folder.root, index_dir=index_dir) as client:
        for sop, (series, frames, syntax) in folder.expected.items():
            got = await _all_frames(client, series, sop, len(frames))
            assert sorted(got) == list(range(1, len(frames) + 1)), folder.paths[sop]
            for number, frame in got.items():
                assert isinstance(frame, EncodedFrame)
                assert frame.transfer_syntax_uid == syntax, folder.paths[sop]
                assert frame.data == frames[number - 1], (folder.paths[sop], number)


async def test_subset_in_any_order_and_many_jobs(tmp_path: Path, index_dir: Path) -> None:
    frames = [bytes([i % 256, i // 256]) * 8 for i in range(300)]
    sop = _write(
        tmp_path / "d" / "many.dcm",
        syntax=ExplicitVRLittleEndian,
        pixel_data=b"".join(frames),
        frames=300,
        rows=4,
        columns=4,
    )
    async with DICOMfileClient(tmp_path / "d", index_dir=index_dir) as client:
        wanted = [300, 1, 150, *range(2, 100)]
        got = [
            n
            async for n, f in client.iter_frames(STUDY, SERIES_NATIVE, sop, wanted)
            if f.data == frames[n - 1]
        ]
        assert sorted(got) == sorted(wanted)
        assert got == sorted(wanted)  # file order
        assert [n async for n, _ in client.iter_frames(STUDY, SERIES_NATIVE, sop, [])] == []


async def test_index_summary_counts(folder: Folder, index_dir: Path) -> None:
    async with DICOMfileClient(folder.root, index_dir=index_dir) as client:
        summary = await client.index_summary()
    assert summary.instances == len(folder.expected)
    assert summary.non_dicom == 1
    assert list(summary.failures) == [os.path.join("sub", "broken.dcm")]
    assert summary.index_file is not None
    assert summary.index_file.parent == index_dir
    assert summary.parsed == len(folder.expected) + 2


async def test_not_recursive(folder: Folder, index_dir: Path) -> None:
    async with DICOMfileClient(folder.root, index_dir=index_dir, recursive=False) as client:
        found = await client.search_for_instances()
    assert len(found) == len(folder.expected) - 2


async def test_file_url(folder: Folder, index_dir: Path) -> None:
    async with DICOMfileClient(folder.root.as_uri(), index_dir=index_dir) as client:
        assert client.base_dir == folder.root
        assert len(await client.search_for_instances()) == len(folder.expected)


async def test_index_persistence_and_invalidation(
    folder: Folder, index_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_calls(monkeypatch, "_parse_index_entry")
    async with DICOMfileClient(folder.root, index_dir=index_dir) as client:
        assert len(await client.search_for_instances()) == len(folder.expected)
    assert len(calls) == len(folder.expected) + 2
    assert len(await asyncio.to_thread(os.listdir, index_dir)) == 1

    calls.clear()
    async with DICOMfileClient(folder.root, index_dir=index_dir) as client:
        assert len(await client.search_for_instances()) == len(folder.expected)
        summary = await client.index_summary()
    assert calls == []
    assert summary.reused == len(folder.expected) + 2
    assert summary.failures  # the broken file stays recorded without being parsed again

    touched = folder.root / "native_rgb.dcm"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    gone_sop = next(s for s, p in folder.paths.items() if p.name == "implicit.dcm")
    folder.paths[gone_sop].unlink()
    new_sop = _write(
        folder.root / "new.dcm",
        syntax=ExplicitVRLittleEndian,
        pixel_data=bytes(16),
        frames=1,
        rows=4,
        columns=4,
    )
    calls.clear()
    async with DICOMfileClient(folder.root, index_dir=index_dir) as client:
        sops = {str(ds.SOPInstanceUID) for ds in await client.search_for_instances()}
    assert sorted(Path(c[0]).name for c in calls) == ["native_rgb.dcm", "new.dcm"]
    assert gone_sop not in sops
    assert new_sop in sops
    assert len(sops) == len(folder.expected)

    calls.clear()
    async with DICOMfileClient(folder.root, index_dir=index_dir) as client:
        await client.search_for_studies()
    assert calls == []


async def test_unwritable_index_dir_keeps_index_in_memory(folder: Folder, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    async with DICOMfileClient(folder.root, index_dir=blocker / "index") as client:
        summary = await client.index_summary()
        assert summary.index_file is None
        assert summary.persist_error
        assert len(await client.search_for_instances()) == len(folder.expected)


async def test_default_index_dir_uses_xdg_cache_home(
    folder: Folder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    async with DICOMfileClient(folder.root) as client:
        summary = await client.index_summary()
    assert summary.index_file is not None
    assert summary.index_file.parent == tmp_path / "cache" / "dicomslide" / "index"
    assert summary.index_file.exists()


async def test_concurrent_first_calls_index_once(
    folder: Folder, index_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_calls(monkeypatch, "_parse_index_entry")
    walks = _count_calls(monkeypatch, "survey")
    async with DICOMfileClient(folder.root, index_dir=index_dir) as client:
        results = await asyncio.gather(*(client.search_for_series() for _ in range(20)))
    assert len(walks) == 1
    assert len(calls) == len(folder.expected) + 2
    assert all(len(r) == 2 for r in results)


async def test_searches(folder: Folder, index_dir: Path) -> None:
    async with DICOMfileClient(folder.root, index_dir=index_dir) as client:
        studies = await client.search_for_studies({"PatientID": "P-1"})
        assert [s.StudyInstanceUID for s in studies] == [STUDY]
        assert studies[0].PatientName == "Doe^Jane"
        assert studies[0].NumberOfStudyRelatedInstances == len(folder.expected)
        assert "SeriesInstanceUID" not in studies[0]
        assert await client.search_for_studies({"PatientID": "nobody"}) == []
        assert len(await client.search_for_studies({"PatientName": "Doe*"})) == 1
        assert len(await client.search_for_studies({"00100020": "P-?"})) == 1
        assert len(await client.search_for_studies({"StudyDate": "20240101-20240131"})) == 1
        assert await client.search_for_studies({"StudyDate": "20250101-"}) == []

        series = await client.search_for_series(STUDY)
        assert [s.SeriesInstanceUID for s in series] == [SERIES_JPEG, SERIES_NATIVE]
        assert series[0].Modality == "SM"
        assert series[0].NumberOfSeriesRelatedInstances == 4
        assert await client.search_for_series("1.2.3") == []
        assert len(await client.search_for_series(search_filters={"SeriesNumber": 2})) == 1
        assert len(await client.search_for_series(search_filters={"SeriesNumber": [1, 2]})) == 2

        instances = await client.search_for_instances(STUDY, SERIES_NATIVE)
        assert [int(i.InstanceNumber) for i in instances] == [1, 2, 3, 4, 5]
        first = instances[0]
        assert first.SOPClassUID == WSI
        assert first.Rows == 4
        assert first.NumberOfFrames == 5
        assert first.AvailableTransferSyntaxUID == ExplicitVRLittleEndian
        assert list(first.ImageType) == ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
        assert "PixelData" not in first
        volume = await client.search_for_instances(search_filters={"ImageType": "VOLUME"})
        assert len(volume) == len(folder.expected)
        implicit = await client.search_for_instances(
            search_filters={"TransferSyntaxUID": ImplicitVRLittleEndian}
        )
        assert len(implicit) == 1
        with pytest.raises(UnsupportedError, match="SpecimenShortDescription"):
            await client.search_for_instances(search_filters={"SpecimenShortDescription": "x"})
        # Deterministic order across calls.
        again = await client.search_for_instances()
        assert [i.SOPInstanceUID for i in again] == [
            i.SOPInstanceUID for i in await client.search_for_instances()
        ]


async def test_metadata(folder: Folder, index_dir: Path) -> None:
    sop = next(iter(folder.expected))
    async with DICOMfileClient(folder.root, index_dir=index_dir) as client:
        ds = await client.retrieve_instance_metadata(STUDY, SERIES_JPEG, sop)
        assert ds.SOPInstanceUID == sop
        assert "PixelData" not in ds
        assert "ExtendedOffsetTable" in ds
        assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
        assert await client.retrieve_instance_metadata(STUDY, SERIES_JPEG, sop) is ds
        series = await client.retrieve_series_metadata(STUDY, SERIES_NATIVE)
        assert [int(d.InstanceNumber) for d in series] == [1, 2, 3, 4, 5]
        assert all("PixelData" not in d for d in series)
        with pytest.raises(NotFoundError, match=re.escape("1.2.999")):
            await client.retrieve_instance_metadata(STUDY, SERIES_JPEG, "1.2.999")
        with pytest.raises(NotFoundError, match=re.escape(SERIES_NATIVE)):
            await client.retrieve_instance_metadata(STUDY, SERIES_NATIVE, sop)
        with pytest.raises(NotFoundError, match=re.escape("1.2.998")):
            await client.retrieve_series_metadata(STUDY, "1.2.998")


async def test_bad_frame_numbers(folder: Folder, index_dir: Path) -> None:
    sop = next(iter(folder.expected))
    async with DICOMfileClient(folder.root, index_dir=index_dir) as client:
        with pytest.raises(RegionError, match=rf"\[1, 6\].*{re.escape(sop)}"):
            await _all_frames(client, SERIES_JPEG, sop, 7)
        with pytest.raises(RegionError, match="outside"):
            [f async for f in client.iter_frames(STUDY, SERIES_JPEG, sop, [0])]
        with pytest.raises(RegionError, match="repeated"):
            [f async for f in client.iter_frames(STUDY, SERIES_JPEG, sop, [1, 1])]
        with pytest.raises(NotFoundError):
            [f async for f in client.iter_frames(STUDY, SERIES_JPEG, "1.2.3", [1])]


async def test_truncated_encapsulated_file(tmp_path: Path, index_dir: Path) -> None:
    jpegs = [_jpeg(i) for i in range(4)]
    pixel_data, offsets, lengths = encapsulate_extended(jpegs)
    path = tmp_path / "d" / "cut.dcm"
    sop = _write(path, pixel_data=pixel_data, extended=(offsets, lengths), frames=4, **JPEG_FILE)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - len(jpegs[-1]) // 2])
    async with DICOMfileClient(tmp_path / "d", index_dir=index_dir) as client:
        with pytest.raises(InvalidDataError) as excinfo:
            await _all_frames(client, SERIES_JPEG, sop, 4)
    message = str(excinfo.value)
    assert str(path) in message
    assert sop in message
    assert "frame 4" in message


@pytest.mark.parametrize("has_bot", [True, False])
async def test_truncated_file_without_eot(tmp_path: Path, index_dir: Path, has_bot: bool) -> None:
    jpegs = [_jpeg(i) for i in range(3)]
    path = tmp_path / "d" / "cut.dcm"
    sop = _write(path, pixel_data=encapsulate(jpegs, has_bot=has_bot), frames=3, **JPEG_FILE)
    data = path.read_bytes()
    path.write_bytes(data[:-20])
    async with DICOMfileClient(tmp_path / "d", index_dir=index_dir) as client:
        with pytest.raises(InvalidDataError, match=re.escape(str(path))):
            await _all_frames(client, SERIES_JPEG, sop, 3)


async def test_truncated_native_file(tmp_path: Path, index_dir: Path) -> None:
    path = tmp_path / "d" / "cut.dcm"
    sop = _write(
        path,
        syntax=ExplicitVRLittleEndian,
        pixel_data=bytes(64),
        frames=4,
        rows=4,
        columns=4,
    )
    path.write_bytes(path.read_bytes()[:-10])
    async with DICOMfileClient(tmp_path / "d", index_dir=index_dir) as client:
        with pytest.raises(InvalidDataError, match="truncated") as excinfo:
            await _all_frames(client, SERIES_NATIVE, sop, 4)
    assert str(path) in str(excinfo.value)


async def test_native_pixel_data_too_short_for_frames(tmp_path: Path, index_dir: Path) -> None:
    path = tmp_path / "d" / "short.dcm"
    sop = _write(
        path, syntax=ExplicitVRLittleEndian, pixel_data=bytes(48), frames=4, rows=4, columns=4
    )
    async with DICOMfileClient(tmp_path / "d", index_dir=index_dir) as client:
        with pytest.raises(InvalidDataError, match="need 64 bytes but Pixel Data has 48"):
            await _all_frames(client, SERIES_NATIVE, sop, 4)


async def test_concurrent_reads(
    folder: Folder, index_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds = _count_calls(monkeypatch, "_build_frame_source")
    async with DICOMfileClient(folder.root, index_dir=index_dir) as client:

        async def read(sop: str, numbers: list[int]) -> bool:
            series, frames, _ = folder.expected[sop]
            got = {n: f.data async for n, f in client.iter_frames(STUDY, series, sop, numbers)}
            return got == {n: frames[n - 1] for n in numbers}

        tasks = []
        for k in range(100):
            sop = list(folder.expected)[k % len(folder.expected)]
            n = len(folder.expected[sop][1])
            tasks.append(read(sop, [1 + (k + j) % n for j in range(min(2, n))]))
        assert all(await asyncio.gather(*tasks))
    assert len(builds) == len(folder.expected)


async def test_file_io_runs_off_the_loop(
    folder: Folder, index_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: dict[str, set[int]] = {}
    for name in ("_pread", "_parse_index_entry", "_read_metadata", "survey"):
        original: Callable[..., Any] = getattr(_module_of(name), name)

        def wrapper(*args: Any, _name: str = name, _orig: Callable[..., Any] = original) -> Any:
            threads.setdefault(_name, set()).add(threading.get_ident())
            return _orig(*args)

        monkeypatch.setattr(_module_of(name), name, wrapper)
    loop_thread = threading.get_ident()
    async with DICOMfileClient(folder.root, index_dir=index_dir) as client:
        for sop, (series, frames, _) in folder.expected.items():
            await _all_frames(client, series, sop, len(frames))
            await client.retrieve_instance_metadata(STUDY, series, sop)
    assert set(threads) == {"_pread", "_parse_index_entry", "_read_metadata", "survey"}
    assert all(loop_thread not in idents for idents in threads.values())


async def test_changed_file_gets_a_new_frame_table(tmp_path: Path, index_dir: Path) -> None:
    path = tmp_path / "d" / "x.dcm"
    kwargs: dict[str, Any] = {
        "syntax": JPEGBaseline8Bit,
        "frames": 2,
        "rows": 16,
        "columns": 16,
        "spp": 3,
        "series": SERIES_JPEG,
    }
    old = [_jpeg(1), _jpeg(2)]
    sop = _write(path, pixel_data=encapsulate(old), **kwargs)
    async with DICOMfileClient(tmp_path / "d", index_dir=index_dir) as client:
        got = await _all_frames(client, SERIES_JPEG, sop, 2)
        assert [got[n].data for n in (1, 2)] == [padded(f) for f in old]
        new = [_jpeg(3, 32), _jpeg(4, 32)]
        st = path.stat()
        _write(path, pixel_data=encapsulate(new), sop=sop, **kwargs)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        got = await _all_frames(client, SERIES_JPEG, sop, 2)
        assert [got[n].data for n in (1, 2)] == [padded(f) for f in new]


async def test_bulkdata(folder: Folder, index_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"secret")
    async with DICOMfileClient(folder.root, index_dir=index_dir) as client:
        readme = folder.root / "README.txt"
        assert await client.retrieve_bulkdata(readme.as_uri()) == b"not DICOM"
        assert await client.retrieve_bulkdata(str(readme)) == b"not DICOM"
        assert await client.retrieve_bulkdata("README.txt") == b"not DICOM"
        with pytest.raises(NotFoundError):
            await client.retrieve_bulkdata(outside.as_uri())
        with pytest.raises(NotFoundError):
            await client.retrieve_bulkdata("../outside.bin")
        with pytest.raises(NotFoundError):
            await client.retrieve_bulkdata("https://example.org/bulk/1")
        with pytest.raises(NotFoundError):
            await client.retrieve_bulkdata(str(folder.root / "missing"))


async def test_closed_client_refuses_calls(folder: Folder, index_dir: Path) -> None:
    client = DICOMfileClient(folder.root, index_dir=index_dir)
    sop = next(iter(folder.expected))
    await _all_frames(client, SERIES_JPEG, sop, 1)
    await client.aclose()
    await client.aclose()
    with pytest.raises(UsageError):
        await client.search_for_studies()
    with pytest.raises(UsageError):
        await client.retrieve_instance_metadata(STUDY, SERIES_JPEG, sop)
    with pytest.raises(UsageError):
        await _all_frames(client, SERIES_JPEG, sop, 1)
    with pytest.raises(UsageError):
        await client.retrieve_bulkdata("README.txt")


async def test_missing_folder(tmp_path: Path, index_dir: Path) -> None:
    async with DICOMfileClient(tmp_path / "nope", index_dir=index_dir) as client:
        with pytest.raises(NotFoundError, match="nope"):
            await client.search_for_studies()

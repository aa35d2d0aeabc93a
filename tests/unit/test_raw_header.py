"""The fast header reader of the cold index reads what pydicom reads, or hands over to it.

Files are synthetic slides (``dicomslide.synthetic``), some rewritten with pydicom in other
encodings or with values pydicom cannot convert cleanly. Third-party files are made at test
time by OrthancWSIDicomizer (Debian package orthanc-wsi, AGPL-3.0; ``tests/support/
thirdparty.py``, cached under ``$DICOMSLIDE_TEST_CACHE`` or ~/.cache/dicomslide-test, never
committed) when it is installed, and compared too.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

from benchmarks.scale_data import make_data
from dicomslide import synthetic
from dicomslide.sources import local_index, raw_header
from dicomslide.sources.raw_header import read_raw_header

_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


def _elements(ds: Dataset) -> list[Any]:
    out: list[Any] = []
    for tag in list(ds.keys()):
        elem = ds.get_item(tag)
        if isinstance(elem, RawDataElement):
            out.append((int(tag), elem.VR, elem.length, elem.value, elem.value_tell))
        else:
            out.append(("converted", int(tag), elem.VR, elem.value))
    return out


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _converts_silently(ds: Dataset) -> bool:
    """Whether converting every value (as opening a slide does) raises, warns or logs nothing."""
    logged = _Records()
    logger = logging.getLogger("pydicom")
    logger.addHandler(logged)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for tag in list(ds.keys()):
                if tag == 0x52009230:
                    continue
                elem = ds[tag]
                if elem.VR == "SQ":
                    for item in elem.value:
                        item.walk(lambda _ds, _elem: None)
    except Exception:
        return False
    finally:
        logger.removeHandler(logged)
    return not logged.records


def _check_same_as_pydicom(path: Path) -> bool:
    """Assert the fast reader equals dcmread when it reads; return whether it read."""
    with open(path, "rb") as fp:
        raw = read_raw_header(fp)
        fp.seek(0)
        ds = pydicom.dcmread(fp, stop_before_pixels=True)
        after = fp.read(4)
    if raw is None:
        return False
    assert _elements(raw.dataset) == _elements(ds)
    assert _elements(raw.dataset.file_meta) == _elements(ds.file_meta)
    assert raw.dataset.original_encoding == ds.original_encoding
    assert raw.dataset.original_character_set == ds.original_character_set
    expected = int.from_bytes(after[:2], "little") << 16 | int.from_bytes(after[2:], "little")
    assert raw.pixel_tag == (expected if expected in _PIXEL_TAGS else None)
    if raw.plain:
        assert _converts_silently(ds), path
    return True


@pytest.fixture(scope="module")
def slide_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("raw")
    return synthetic.write_slide(
        folder, synthetic.SlideSpec(size=(512, 768), tile_size=(128, 128), levels=2, label=True)
    )


def test_plain_files_read_as_pydicom_reads_them(slide_files: list[Path]) -> None:
    read = [_check_same_as_pydicom(p) for p in slide_files]
    assert all(read), "every synthetic file is plain Explicit VR Little Endian"
    with open(slide_files[0], "rb") as fp:
        raw = read_raw_header(fp)
    assert raw is not None
    assert raw.plain


def test_third_party_files_read_as_pydicom_reads_them() -> None:
    from tests.parity.harness import cache_dir
    from tests.support import thirdparty

    if thirdparty.find_dicomizer() is None:
        pytest.skip("OrthancWSIDicomizer (Debian package orthanc-wsi) is not installed")
    read = []
    for compression in ("jpeg", "none"):  # "none": Implicit VR output, left to pydicom
        files = thirdparty.make_dicomizer_slide(
            cache_dir() / "dicomizer", compression=compression, tile_size=128, levels=3
        )
        read += [_check_same_as_pydicom(p) for p in files]
    assert any(read)
    assert not all(read)


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian]
)
def test_other_encodings_are_left_to_pydicom(
    slide_files: list[Path], tmp_path: Path, syntax: str
) -> None:
    ds = pydicom.dcmread(slide_files[-1])
    fresh = Dataset()  # no original encoding: written in the file meta's syntax
    for elem in ds:
        fresh.add(elem)
    fresh.file_meta = ds.file_meta
    fresh.file_meta.TransferSyntaxUID = syntax
    path = tmp_path / "other.dcm"
    fresh.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).original_encoding == (
        syntax == ImplicitVRLittleEndian,
        syntax != ExplicitVRBigEndian,
    )
    with open(path, "rb") as fp:
        assert read_raw_header(fp) is None


def _rewrite(source: Path, target: Path, change: Any) -> Path:
    ds = pydicom.dcmread(source)
    change(ds)
    ds.save_as(target, enforce_file_format=True)
    return target


def _bad_nested_uid(ds: Dataset) -> None:
    item = Dataset()
    # Written as these bytes (a raw element is not converted, nor checked, on writing).
    item[0x00081150] = RawDataElement(BaseTag(0x00081150), "UI", 8, b"1.2.abc\0", 0, False, True)
    ds.add_new(0x00209999, "SQ", Sequence([item]))


def _bad_decimal(ds: Dataset) -> None:
    ds[0x00280030] = RawDataElement(BaseTag(0x00280030), "DS", 4, b"abc ", 0, False, True)


@pytest.mark.parametrize(
    ("name", "change", "complains"),
    [
        ("uid with letters", lambda ds: ds.add_new(0x00200052, "UI", "1.2.abc"), True),
        ("integer string with a fraction", lambda ds: ds.add_new(0x00200013, "IS", "1.5"), True),
        ("nested uid with letters", _bad_nested_uid, True),
        ("decimal string not a number", _bad_decimal, False),
        # Not checked further here: pydicom takes these, the reader leaves them to it.
        ("lower-case code string", lambda ds: ds.add_new(0x00080060, "CS", "sm"), False),
        ("element of VR UN", lambda ds: ds.add_new(0x00091010, "UN", b"\x01\x02"), False),
    ],
)
def test_values_that_may_not_convert_are_not_plain(
    slide_files: list[Path], tmp_path: Path, name: str, change: Any, complains: bool
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # writing the invalid values warns
        path = _rewrite(slide_files[-1], tmp_path / "odd.dcm", change)
    assert _check_same_as_pydicom(path)
    with open(path, "rb") as fp:
        raw = read_raw_header(fp)
    assert raw is not None
    assert not raw.plain, name
    if complains:
        # Not vacuous: pydicom does complain about each of these when converting.
        assert not _converts_silently(pydicom.dcmread(path, stop_before_pixels=True))


def test_undefined_length_sequence_and_truncation_are_left_to_pydicom(
    slide_files: list[Path], tmp_path: Path
) -> None:
    def undefined(ds: Dataset) -> None:
        ds["OpticalPathSequence"].is_undefined_length = True

    with_undefined = _rewrite(slide_files[-1], tmp_path / "undefined.dcm", undefined)
    with open(with_undefined, "rb") as fp:
        assert read_raw_header(fp) is None
    data = slide_files[-1].read_bytes()
    with open(slide_files[-1], "rb") as fp:
        whole = read_raw_header(fp)
    assert whole is not None
    cut = tmp_path / "cut.dcm"
    # In the middle of a value: pydicom warns of the truncation, the reader hands over.
    cut.write_bytes(data[: whole.dataset.get_item(0x00080018).value_tell + 3])
    with open(cut, "rb") as fp:
        assert read_raw_header(fp) is None


def test_index_entry_is_the_same_either_way(
    slide_files: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = slide_files[0]
    st = path.stat()
    fast = local_index._parse_index_entry(str(path), st.st_size, st.st_mtime_ns)
    monkeypatch.setattr(local_index, "read_raw_header", lambda fp: None)
    slow = local_index._parse_index_entry(str(path), st.st_size, st.st_mtime_ns)
    assert fast[:5] == slow[:5]
    # Only the fast reader knows the header converts cleanly without converting it.
    assert fast[5] is True
    assert slow[5] is False


@pytest.mark.parametrize("direct", [16, 1000])
def test_large_values_read_on_their_own_are_read_as_pydicom_reads_them(
    slide_files: list[Path], direct: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every value longer than `direct` bytes is read on its own and the buffer restarts.
    monkeypatch.setattr(raw_header, "_DIRECT", direct)
    assert all(_check_same_as_pydicom(p) for p in slide_files)


class _CountingFile(io.BytesIO):
    read_bytes = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.read_bytes += len(data)
        return data


def test_a_large_per_frame_sequence_is_read_once_and_not_the_pixels_after_it(
    tmp_path: Path,
) -> None:
    folder = make_data("sparse", 20_000, tmp_path)
    path = folder / "sparse.dcm"
    assert _check_same_as_pydicom(path)
    data = path.read_bytes()
    fp = _CountingFile(data)
    raw = read_raw_header(fp)
    assert raw is not None
    sequence = raw.dataset.get_item(0x52009230)
    assert sequence.length > raw_header._DIRECT
    header_end = sequence.value_tell + sequence.length
    # Before: the sequence was read, copied, then as many bytes of pixel data read again.
    assert fp.read_bytes < header_end + 2 * raw_header._FIRST_READ
    # Cut inside the sequence: handed over to pydicom (which reports the truncation).
    for cut in (sequence.value_tell + 10, header_end - 1):
        with io.BytesIO(data[:cut]) as short:
            assert read_raw_header(short) is None

"""The stored header (dicomslide.sources.header_codec) rebuilds what pydicom read.

Files are synthetic slides (``dicomslide.synthetic``), read by pydicom (elements it converts
on reading included) and by the fast reader of the cold index.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from dicomslide import synthetic
from dicomslide.sources.header_codec import decode_header, encode_header
from dicomslide.sources.raw_header import read_raw_header


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    spec = synthetic.SlideSpec(size=(256, 384), tile_size=(128, 128), levels=2, label=True)
    return synthetic.write_slide(tmp_path_factory.mktemp("codec"), spec)


def _check(ds: pydicom.Dataset) -> None:
    data = encode_header(ds)
    assert data is not None
    back = decode_header(data)
    assert back == ds
    assert back.file_meta == ds.file_meta
    assert [back[t].VR for t in list(back.keys())] == [ds[t].VR for t in list(ds.keys())]
    assert list(back.keys()) == list(ds.keys())
    assert back.original_encoding == ds.original_encoding
    assert back.original_character_set == ds.original_character_set


def test_round_trip_of_what_pydicom_reads(files: list[Path]) -> None:
    for path in files:
        _check(pydicom.dcmread(path, stop_before_pixels=True))


def test_round_trip_of_what_the_fast_reader_reads(files: list[Path]) -> None:
    for path in files:
        with open(path, "rb") as fp:
            raw = read_raw_header(fp)
        assert raw is not None
        _check(raw.dataset)


def test_damaged_or_other_versions_are_refused(files: list[Path]) -> None:
    data = encode_header(pydicom.dcmread(files[0], stop_before_pixels=True))
    assert data is not None
    for bad in (data[:-1], data + b"x", b"\x01" + data[1:], data[:10], b""):
        with pytest.raises(ValueError, match="header"):
            decode_header(bad)

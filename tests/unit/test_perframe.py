"""The raw-bytes reader of per-frame positions agrees with pydicom on every layout."""

from __future__ import annotations

import struct
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomslide import perframe
from dicomslide.perframe import _fast, _quick, _slow, extract_frame_positions, first_per_frame_item
from dicomslide.synthetic import write_slide
from tests.support.positions import assert_same_positions
from tests.support.slides import slide_spec

SPECS = {
    "sparse_explicit": slide_spec(
        (300, 400),
        64,
        1,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        dimension_organization="TILED_SPARSE",
        shuffle_frames=True,
        sparse_missing_tiles=((1, 2),),
    ),
    "none_implicit_multi_z_paths": slide_spec(
        (200, 260),
        64,
        1,
        transfer_syntax_uid="1.2.840.10008.1.2",
        dimension_organization="NONE",
        photometric="MONOCHROME2",
        optical_paths=2,
        channels_in_separate_instances=False,
        focal_planes=3,
        icc_profile=False,
    ),
    "sparse_rle_concatenated": slide_spec(
        (300, 400),
        64,
        1,
        transfer_syntax_uid="1.2.840.10008.1.2.5",
        dimension_organization="TILED_SPARSE",
        concatenation_parts=2,
    ),
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_fast_reader_equals_pydicom(name: str, tmp_path: Path) -> None:
    files = write_slide(tmp_path, SPECS[name])
    checked = 0
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if "PerFrameFunctionalGroupsSequence" not in ds or "TotalPixelMatrixRows" not in ds:
            continue
        fresh = pydicom.dcmread(path, stop_before_pixels=True)
        assert isinstance(fresh.get_item(0x52009230), RawDataElement)
        n = int(ds.NumberOfFrames)
        raw = fresh.get_item(0x52009230)
        slow = _slow(ds.PerFrameFunctionalGroupsSequence, n)
        for fast in (_quick(raw, n), _fast(raw, n), extract_frame_positions(fresh, n)):
            assert_same_positions(fast, slow)
            assert fast is not None
            assert (fast.rows >= 1).all()
        # the fast path did not make pydicom parse the sequence
        assert isinstance(fresh.get_item(0x52009230), RawDataElement)
        first = first_per_frame_item(fresh)
        assert first == ds.PerFrameFunctionalGroupsSequence[0]
        checked += 1
    assert checked >= 1


def test_wrong_item_count_gives_none(tmp_path: Path) -> None:
    files = write_slide(tmp_path, SPECS["sparse_explicit"])
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert extract_frame_positions(ds, int(ds.NumberOfFrames) + 1) is None


def _items_dataset(n: int, frame: Callable[[int], Dataset]) -> Dataset:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3"
    ds.NumberOfFrames = n
    ds.PerFrameFunctionalGroupsSequence = [frame(i) for i in range(n)]
    return ds


def _round_trip(ds: Dataset, implicit: bool) -> Dataset:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.6"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return pydicom.dcmread(BytesIO(out.getvalue()))


def _raw_and_reference(
    frame: Callable[[int], Dataset], n: int, implicit: bool
) -> tuple[Dataset, RawDataElement, Any]:
    """A freshly read data set, its raw per-frame element, and pydicom's reading of it."""
    fresh = _round_trip(_items_dataset(n, frame), implicit)
    raw = fresh.get_item(0x52009230)
    assert isinstance(raw, RawDataElement)
    parsed = _round_trip(_items_dataset(n, frame), implicit).PerFrameFunctionalGroupsSequence
    return fresh, raw, _slow(parsed, n)


def _varied(i: int) -> Dataset:
    # Every optional value, encoded in several ways (padding, trailing zeros), some absent.
    position = Dataset()
    position.RowPositionInTotalImagePixelMatrix = 1 + 64 * (i // 7)
    position.ColumnPositionInTotalImagePixelMatrix = 1 + 64 * (i % 7)
    if i % 5:
        position.ZOffsetInSlideCoordinateSystem = ("1.5", "1.50", "0", "-2.25e1")[i % 4]
    item = Dataset()
    item.PlanePositionSlideSequence = [position]
    if i % 3:
        path = Dataset()
        path.OpticalPathIdentifier = ("1", "2", "10")[i % 3]
        item.OpticalPathIdentificationSequence = [path]
    if i % 4:
        segment = Dataset()
        segment.ReferencedSegmentNumber = i % 4
        item.SegmentIdentificationSequence = [segment]
    return item


@pytest.mark.parametrize("window", [40, 1 << 20])
@pytest.mark.parametrize("implicit", [False, True])
def test_byte_search_reads_every_optional_value_as_pydicom(
    implicit: bool, window: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 40-byte window holds one item header at a time: the chain is proven item by item.
    monkeypatch.setattr(perframe, "_CHAIN_WINDOW", window)
    n = 50
    _, raw, expected = _raw_and_reference(_varied, n, implicit)
    quick = _quick(raw, n)
    assert_same_positions(quick, expected)
    assert quick is not None
    assert sorted(quick.path_names) == ["10", "2"]  # one code per identifier


def _with_extra(i: int) -> Dataset:
    item = _varied(i)
    if i == 3:
        # A nested sequence of two items: the second starts where the first ends, which the
        # item chain's proof does not accept as a frame boundary.
        first, second = Dataset(), Dataset()
        first.ReferencedSOPInstanceUID = second.ReferencedSOPInstanceUID = "1.2.3.4"
        item.DerivationImageSequence = [Dataset(), Dataset()]
        item.DerivationImageSequence[0].SourceImageSequence = [first, second]
    if i == 7:
        # Two positions in one frame (a second Plane Position item): not a one-per-frame layout.
        extra = Dataset()
        extra.RowPositionInTotalImagePixelMatrix = 9
        extra.ColumnPositionInTotalImagePixelMatrix = 9
        item.PlanePositionSlideSequence.append(extra)
    return item


@pytest.mark.parametrize("implicit", [False, True])
def test_irregular_items_leave_the_byte_search_for_the_walker(implicit: bool) -> None:
    n = 12
    fresh, raw, expected = _raw_and_reference(_with_extra, n, implicit)
    assert _quick(raw, n) is None
    assert_same_positions(extract_frame_positions(fresh, n), expected)


def test_a_frame_without_position_leaves_the_byte_search() -> None:
    def frame(i: int) -> Dataset:
        item = _varied(i)
        if i == 4:
            del item.PlanePositionSlideSequence[0].RowPositionInTotalImagePixelMatrix
        return item

    fresh = _round_trip(_items_dataset(9, frame), False)
    assert _quick(fresh.get_item(0x52009230), 9) is None
    positions = extract_frame_positions(fresh, 9)
    assert positions is not None
    assert int(positions.rows[4]) == 0


def test_json_position_beyond_int64_leaves_it_to_the_full_conversion() -> None:
    # A value no int64 holds is a shape error of the fast path (None), never an exception
    # escaping it: the full conversion is the one that reports it.
    from dicomslide.perframe import positions_from_json

    def item(row: int) -> dict[str, object]:
        position = {"0048021F": {"vr": "SL", "Value": [row]}}
        position["0048021E"] = {"vr": "SL", "Value": [1]}
        return {"0048021A": {"vr": "SQ", "Value": [position]}}

    assert positions_from_json([item(1), item(2**70)]) is None
    positions = positions_from_json([item(1), item(5)])
    assert positions is not None
    assert list(positions.rows) == [1, 5]


@pytest.mark.parametrize("implicit", [False, True])
def test_short_texts_read_the_same_when_the_last_value_ends_the_buffer(implicit: bool) -> None:
    # Items holding only a Z offset, the last one shorter than the longest: its row of bytes
    # would run past the buffer, so it is read column by column instead.
    values = [b"12.5 ", b"1.0 ", b"-3.25 ", b"7 "]
    items = []
    for value in values:
        head = struct.pack("<HH", 0x0040, 0x074A)
        head += (
            struct.pack("<I", len(value)) if implicit else b"DS" + struct.pack("<H", len(value))
        )
        items.append(struct.pack("<HHI", 0xFFFE, 0xE000, len(head) + len(value)) + head + value)
    data = b"".join(items)
    buf = np.frombuffer(data, dtype=np.uint8)
    starts = np.cumsum([0] + [len(item) for item in items[:-1]]).astype(np.int64)
    found = perframe._texts(buf, starts, 0x0040074A, b"DS", implicit)
    assert found is not None
    owner, codes, texts = found
    assert owner.tolist() == [0, 1, 2, 3]
    assert [texts[c] for c in codes] == ["12.5", "1.0", "-3.25", "7"]
    padded = np.frombuffer(data + bytes(16), dtype=np.uint8)  # every row fits
    again = perframe._texts(padded, starts, 0x0040074A, b"DS", implicit)
    assert again is not None
    assert [again[2][c] for c in again[1]] == ["12.5", "1.0", "-3.25", "7"]

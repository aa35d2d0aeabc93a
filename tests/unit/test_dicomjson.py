"""Tests of DICOM JSON → pydicom conversion."""

from __future__ import annotations

import copy
import json
import pickle
from typing import Any

import pytest
from hypothesis import example, given, strategies as st
from pydicom import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.sequence import Sequence

from dicomslide.errors import ProtocolError
from dicomslide.perframe import _slow, extract_frame_positions, first_per_frame_item
from dicomslide.sources.dicomjson import (
    BULKDATA_URIS_ATTR,
    LAZY_ITEMS,
    LazyJSONSequence,
    bulkdata_uris,
    datasets_from_json,
    parse_json_bytes,
)
from tests.support.positions import assert_same_positions


def reference(item: dict[str, Any]) -> Dataset:
    """What pydicom itself makes of `item` (bulk data left empty)."""
    return Dataset.from_json(item, lambda tag, vr, uri: None)


def slide_instance(frames: int) -> dict[str, Any]:
    """DICOM JSON of a TILED_SPARSE slide image with bulk data at the root and nested."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.6"
    ds.SOPInstanceUID = "1.2.3.4"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.PatientName = "Doe^Jane"
    ds.Rows = ds.Columns = 256
    ds.NumberOfFrames = frames
    ds.TotalPixelMatrixColumns = 100_000
    ds.DimensionOrganizationType = "TILED_SPARSE"
    ds.ImagedVolumeWidth = 25.5
    ds.FrameIncrementPointer = 0x00209157
    optical_path = Dataset()
    optical_path.OpticalPathIdentifier = "1"
    ds.OpticalPathSequence = Sequence([optical_path])
    items = []
    for i in range(frames):
        position = Dataset()
        position.XOffsetInSlideCoordinateSystem = 20.0 + i * 0.064
        position.YOffsetInSlideCoordinateSystem = 40.5
        position.ColumnPositionInTotalImagePixelMatrix = 1 + 256 * i
        position.RowPositionInTotalImagePixelMatrix = 1
        content = Dataset()
        content.DimensionIndexValues = [1 + i, 1]
        item = Dataset()
        item.PlanePositionSlideSequence = Sequence([position])
        item.FrameContentSequence = Sequence([content])
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(items)
    ds.LossyImageCompressionRatio = [10, 12.5]
    ds.RedPaletteColorLookupTableDescriptor = [256, 0, 16]  # "US or SS"
    ds.PixelPaddingValue = 0
    data = ds.to_json_dict()
    data["00282000"] = {"vr": "OB", "BulkDataURI": "http://x/bulk/icc"}
    data["7FE00010"] = {"vr": "OB", "BulkDataURI": ["http://x/bulk/pixels"]}
    data["00480105"]["Value"][0]["00282000"] = {"vr": "OB", "BulkDataURI": "http://x/op/icc"}
    data["00091010"] = {"vr": "OB", "InlineBinary": "AQID"}
    data["00080020"] = {"vr": "DA"}  # empty
    data["00081140"] = {"vr": "SQ", "Value": [None, {}]}
    data["00200037"] = {"vr": "DS", "Value": [1, None, 0, 0, 1, 0]}
    return data


def test_equals_pydicom_from_json() -> None:
    item = slide_instance(50)
    (converted,) = datasets_from_json([json.loads(json.dumps(item))])
    assert converted == reference(item)
    assert converted.PerFrameFunctionalGroupsSequence[49].PlanePositionSlideSequence[
        0
    ].ColumnPositionInTotalImagePixelMatrix == (1 + 256 * 49)
    assert converted.ImagedVolumeWidth == 25.5
    assert converted.ICCProfile is None
    assert converted[0x00091010].value == b"\x01\x02\x03"


def test_bulkdata_uris_are_recorded_where_they_are() -> None:
    (converted,) = datasets_from_json([slide_instance(2)])
    assert getattr(converted, BULKDATA_URIS_ATTR) == {
        "00282000": "http://x/bulk/icc",
        "7FE00010": "http://x/bulk/pixels",
    }
    assert bulkdata_uris(converted.OpticalPathSequence[0]) == {"00282000": "http://x/op/icc"}
    frame_item = converted.PerFrameFunctionalGroupsSequence[0]
    assert not hasattr(frame_item, BULKDATA_URIS_ATTR)
    assert bulkdata_uris(frame_item) == {}
    # The recorded URIs are not data elements.
    assert BULKDATA_URIS_ATTR not in converted.dir()


def test_every_root_has_the_attribute() -> None:
    datasets = datasets_from_json([{}, {"00080060": {"vr": "CS", "Value": ["SM"]}}])
    assert [getattr(ds, BULKDATA_URIS_ATTR) for ds in datasets] == [{}, {}]
    assert datasets[1].Modality == "SM"


_scalar_values = {
    "CS": st.sampled_from(["SM", "ORIGINAL", "A B"]),
    "LO": st.text(st.characters(codec="ascii", exclude_characters="\\\x00"), max_size=20),
    "UI": st.sampled_from(["1.2.3", "1.2.840.10008.1.2.4.50"]),
    "US": st.integers(0, 65535),
    "UL": st.integers(0, 2**32 - 1),
    "SS": st.integers(-32768, 32767),
    "FL": st.floats(-1e6, 1e6, width=32),
    "FD": st.floats(allow_nan=False, allow_infinity=False),
    "IS": st.integers(-(10**9), 10**9),
    "DS": st.integers(-(10**6), 10**6).map(lambda n: n / 1000),
}
element = st.sampled_from(sorted(_scalar_values)).flatmap(
    lambda vr: st.fixed_dictionaries(
        {"vr": st.just(vr), "Value": st.lists(_scalar_values[vr], max_size=3)}
    )
)
tag = st.integers(0x00080000, 0x0040FFFF).map(lambda n: f"{n:08X}")
flat_item = st.dictionaries(tag, element, max_size=6)
nested_item = st.dictionaries(
    tag,
    st.one_of(
        element,
        st.fixed_dictionaries({"vr": st.just("SQ"), "Value": st.lists(flat_item, max_size=2)}),
    ),
    max_size=6,
)


def _sequence_vr_mismatch(item: dict[str, Any]) -> bool:
    for tag_hex, mapping in item.items():
        # The items of a sequence are checked whether or not its own tag is known.
        if mapping["vr"] == "SQ" and any(map(_sequence_vr_mismatch, mapping["Value"])):
            return True
        try:
            sequence = dictionary_VR(int(tag_hex, 16)) == "SQ"
        except KeyError:
            continue
        if (mapping["vr"] == "SQ") != sequence:
            return True
    return False


@given(items=st.lists(nested_item, max_size=3))
@example(items=[{"00281101": {"vr": "CS", "Value": ["SM", "SM"]}}])
@example(items=[{"00281101": {"vr": "US", "Value": [256, 0, 16]}}])
@example(items=[{"00080000": {"vr": "SQ", "Value": [{"00221518": {"vr": "CS", "Value": []}}]}}])
def test_random_items_equal_pydicom(items: list[dict[str, Any]]) -> None:
    if any(_sequence_vr_mismatch(item) for item in items):
        # Unlike pydicom, a sequence given another VR (or the reverse) is refused: code that
        # reads the sequence would otherwise iterate a string.
        with pytest.raises(ProtocolError, match="VR"):
            datasets_from_json(items)
        return
    try:
        expected = [reference(item) for item in items]
    except ValueError:
        # pydicom refuses some values for some tags (text in a LUT descriptor, which it
        # reads as US whatever the VR): so must we, as a ProtocolError naming the tag.
        with pytest.raises(ProtocolError, match="tag"):
            datasets_from_json(items)
        return
    assert datasets_from_json(items) == expected


def test_parse_json_bytes() -> None:
    assert parse_json_bytes(b'[{"00080060": {"vr": "CS", "Value": ["SM"]}}]') == [
        {"00080060": {"vr": "CS", "Value": ["SM"]}}
    ]
    assert parse_json_bytes("[]".encode("utf-16")) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'[{"00080060": {"vr": "CS", "Value": ["SM"]},, }]', r"invalid DICOM JSON .*Value"),
        (b"<html>502 Bad Gateway</html>", "Bad Gateway"),
        (b'{"00080060": {}}', "must be an array.*dict"),
        (b"[1]", "item 0 is int"),
        (b"\xff\xfe\x00", "invalid DICOM JSON"),
        (b"", "invalid DICOM JSON"),
    ],
)
def test_parse_json_bytes_errors(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_json_bytes(data)


def test_parse_json_bytes_excerpt_is_short() -> None:
    data = b"[" + b'{"a": 1},' * 100_000 + b"oops]"
    with pytest.raises(ProtocolError) as info:
        parse_json_bytes(data)
    assert len(str(info.value)) < 300
    assert "oops" in str(info.value)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"00080060": {"Value": ["SM"]}}, "item 0, tag '00080060'.*vr"),
        ({"0008006X": {"vr": "CS", "Value": ["SM"]}}, "tag '0008006X'"),
        ({"00080060": {"vr": "CS", "Value": "SM"}}, "must be a list"),
        ({"00080060": ["SM"]}, "not an object"),
        (
            {"00081140": {"vr": "SQ", "Value": [{"00081150": {"Value": ["1.2"]}}]}},
            r"item 0 > 00081140\[0\], tag '00081150'",
        ),
        ({"00282000": {"vr": "OB", "BulkDataURI": 5}}, "BulkDataURI"),
    ],
)
def test_model_violations(item: dict[str, Any], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        datasets_from_json([item])


def test_non_object_items() -> None:
    with pytest.raises(ProtocolError, match="item 1 is list"):
        datasets_from_json([{}, []])  # type: ignore[list-item]


def _z_and_paths(item: dict[str, Any], frames: int) -> dict[str, Any]:
    """Give every other frame a Z offset and an optical path, as multi-Z slides have."""
    for i, frame in enumerate(item["52009230"]["Value"]):
        if i % 2:
            frame["0048021A"]["Value"][0]["0040074A"] = {"vr": "DS", "Value": [1.5 * i]}
            frame["00480207"] = {
                "vr": "SQ",
                "Value": [{"00480106": {"vr": "SH", "Value": [f"path{i % 3}"]}}],
            }
    return item


def test_large_per_frame_sequences_convert_lazily_and_equal_pydicom() -> None:
    frames = LAZY_ITEMS + 36
    item = _z_and_paths(slide_instance(frames), frames)
    (converted,) = datasets_from_json([json.loads(json.dumps(item))])
    seq = converted.PerFrameFunctionalGroupsSequence
    assert isinstance(seq, LazyJSONSequence)
    assert seq.json_items is not None
    assert len(seq) == frames
    # Positions and the first item come from the JSON without converting the rest ...
    positions = extract_frame_positions(converted, frames)
    first = first_per_frame_item(converted)
    assert seq.json_items is not None
    assert first is not None
    assert first.PlanePositionSlideSequence[0].ColumnPositionInTotalImagePixelMatrix == 1
    # ... and equal what the converted items give.
    expected = _slow(reference(item).PerFrameFunctionalGroupsSequence, frames)
    assert_same_positions(positions, expected)
    assert positions is not None
    assert {z for z in positions.z if z is not None} == {1.5 * i for i in range(1, frames, 2)}
    # Copies stay lazy; any list use converts once, to what pydicom makes of the JSON.
    assert copy.deepcopy(converted).PerFrameFunctionalGroupsSequence.json_items is not None
    unpickled = pickle.loads(pickle.dumps(seq))
    assert unpickled.json_items is not None
    assert converted == reference(item)
    assert seq.json_items is None
    assert list(unpickled) == list(reference(item).PerFrameFunctionalGroupsSequence)
    assert converted.to_json_dict()["52009230"] == reference(item).to_json_dict()["52009230"]


def test_small_per_frame_sequences_are_converted_at_once() -> None:
    (converted,) = datasets_from_json([slide_instance(LAZY_ITEMS)])
    assert not isinstance(converted.PerFrameFunctionalGroupsSequence, LazyJSONSequence)


def test_malformed_lazy_items_fail_as_protocol_errors_when_used() -> None:
    frames = LAZY_ITEMS + 1
    item = slide_instance(frames)
    item["52009230"]["Value"][7] = ["not", "an", "object"]
    (converted,) = datasets_from_json([item])
    # The quick JSON reader gives up on the odd item; the full conversion names it.
    with pytest.raises(ProtocolError, match=r"52009230\[7\] is list"):
        extract_frame_positions(converted, frames)


def test_lut_descriptors_pickle() -> None:
    # Palette descriptors of a PALETTE COLOR label map as Orthanc sends them; pydicom 3.0.2's
    # own conversion leaves them unpicklable (a local converter function).
    item = {
        "00280004": {"vr": "CS", "Value": ["PALETTE COLOR"]},
        "00281101": {"vr": "US", "Value": [256, 0, 16]},
        "00281102": {"vr": "US", "Value": [256, 0, 16]},
        "00281103": {"vr": "US", "Value": [256, 0, 16]},
        "00283002": {"vr": "SS", "Value": [4096, -2048, 12]},
    }
    (ds,) = datasets_from_json([item])
    assert ds == reference(item)
    copy_ = pickle.loads(pickle.dumps(ds))
    assert copy_ == ds
    assert list(copy_.RedPaletteColorLookupTableDescriptor) == [256, 0, 16]
    assert list(copy_.LUTDescriptor) == [4096, -2048, 12]
    copy_.LUTDescriptor.append(1)  # still a working MultiValue
    assert list(copy_.LUTDescriptor)[-1] == 1

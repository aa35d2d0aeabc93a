"""Per-frame items of a DICOM JSON body decoded one at a time give what parsing it whole gives.

Bodies are laid out as Orthanc 1.10 writes them (tab-indented, ``"Value"`` before ``"vr"``,
seen on the suite's server) and compactly with ``"vr"`` first (``json.dumps``).
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from typing import Any

import pytest

from dicomslide.perframe import extract_frame_positions
from dicomslide.sources import json_frames
from dicomslide.sources.dicomjson import datasets_from_json, parse_json_bytes


def _item(k: int) -> dict[str, Any]:
    position = {
        "0040072A": {"vr": "DS", "Value": [20.0 + k * 1e-4]},
        "0040074A": {"vr": "DS", "Value": [float(k % 3)]},
        "0048021E": {"vr": "SL", "Value": [(k % 50) * 32 + 1]},
        "0048021F": {"vr": "SL", "Value": [(k // 50) * 32 + 1]},
    }
    item: dict[str, Any] = {"0048021A": {"vr": "SQ", "Value": [position]}}
    if k % 2:
        path = {"00480106": {"vr": "SH", "Value": [str(k % 4)]}}
        item["00480207"] = {"vr": "SQ", "Value": [path]}
    return item


def _dataset(frames: int, uid: str) -> dict[str, Any]:
    return {
        "00080018": {"vr": "UI", "Value": [uid]},
        "00280008": {"vr": "IS", "Value": [frames]},
        "52009230": {"vr": "SQ", "Value": [_item(k) for k in range(frames)]},
    }


def _orthanc_style(value: Any) -> Any:
    """Elements with "Value" before "vr", as Orthanc orders them."""
    if isinstance(value, list):
        return [_orthanc_style(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"vr", "Value"}:
            return {"Value": _orthanc_style(value["Value"]), "vr": value["vr"]}
        return {k: _orthanc_style(v) for k, v in value.items()}
    return value


def _bodies(datasets: list[dict[str, Any]]) -> dict[str, bytes]:
    return {
        "compact": json.dumps(datasets).encode(),
        "orthanc": json.dumps(_orthanc_style(datasets), indent="\t").encode(),
    }


@pytest.mark.parametrize("window", [97, 1 << 20])
@pytest.mark.parametrize("layout", ["compact", "orthanc"])
# The transport hands on the bytearray it read the body into (no copy to bytes).
@pytest.mark.parametrize("buffer", [bytes, bytearray])
def test_items_read_one_by_one_equal_the_whole_parse(
    layout: str, window: int, buffer: type[bytes | bytearray], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 97-byte window holds no whole item: every one is decoded after growing it.
    monkeypatch.setattr(json_frames, "_WINDOW", window)
    monkeypatch.setattr(json_frames, "_SLACK", min(window // 2, 1 << 12))
    datasets = [_dataset(5000, "1.2.3.1"), _dataset(70, "1.2.3.2")]
    body = buffer(_bodies(datasets)[layout])
    split = json_frames.split_per_frame(body)
    assert split is not None
    assert [len(d["52009230"]["Value"]) for d in split] == [1, 1]  # held packed
    fast = datasets_from_json(parse_json_bytes(body))
    whole = datasets_from_json(json.loads(body))
    for got, expected, frames in zip(fast, whole, (5000, 70), strict=True):
        positions = extract_frame_positions(got, frames)
        assert positions is not None
        reference = extract_frame_positions(expected, frames)
        assert reference is not None
        assert positions.rows.tolist() == reference.rows.tolist()
        assert positions.columns.tolist() == reference.columns.tolist()
        assert positions.z == reference.z
        assert positions.optical_paths == reference.optical_paths
        # Converting the sequence gives the same items as before.
        assert got == expected


@pytest.mark.parametrize(
    "change",
    ["nested", "not_an_object", "twice", "small", "not_ascii"],
)
def test_anything_unusual_is_parsed_whole(change: str) -> None:
    datasets: list[Any] = [_dataset(5000, "1.2.3.1")]
    if change == "nested":
        # A per-frame sequence inside another sequence's item is not a top-level one.
        inner = datasets[0].pop("52009230")
        datasets[0]["00081115"] = {"vr": "SQ", "Value": [{"52009230": inner}]}
    elif change == "not_an_object":
        datasets[0]["52009230"]["Value"][7] = "7"
    elif change == "not_ascii":
        datasets[0]["52009230"]["Value"][9]["00081030"] = {"vr": "LO", "Value": ["Gewebe ü"]}
    elif change == "small":
        datasets[0]["52009230"]["Value"] = datasets[0]["52009230"]["Value"][:100]
    body = json.dumps(datasets, ensure_ascii=False).encode()
    if change == "twice":
        # Two elements with the tag in one object: JSON keeps the last, so must we.
        text = body.decode()
        key = '"52009230": '
        at = text.index(key)
        body = (text[:at] + key + '{"vr": "SQ", "Value": [{}]}, ' + text[at:]).encode()
    assert json_frames.split_per_frame(body) is None
    assert parse_json_bytes(body) == json.loads(body)


def test_an_item_that_looks_like_the_marker_is_an_item() -> None:
    # The marker is placed by position and checked in order: data that mimics it is read as
    # the item it is.
    fake = {"52009230": {"vr": "SQ", "Value": [{"dicomslide-per-frame-items": 0}]}}
    body = json.dumps([_dataset(5000, "1.2.3.1"), fake]).encode()
    split = json_frames.split_per_frame(body)
    assert split is not None
    second = split[1]["52009230"]["Value"]
    assert isinstance(second, json_frames.RawJSONItems)
    assert second.total == 1
    assert list(second) == fake["52009230"]["Value"]
    assert split[0]["52009230"]["Value"].total == 5000


def test_memory_at_the_peak_stays_below_the_whole_parse() -> None:
    # 20,000 frames in Orthanc's layout: the whole parse holds every item as dicts at once.
    body = _bodies([_dataset(20_000, "1.2.3.1")])["orthanc"]
    peaks = {}
    for name, parse in (("split", json_frames.split_per_frame), ("whole", json.loads)):
        gc.collect()
        tracemalloc.start()
        try:
            result = parse(body)
            peaks[name] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert result is not None
        del result
    # Measured: the split's peak is about a third of the whole parse's.
    assert peaks["split"] < 0.6 * peaks["whole"], peaks


def test_items_are_held_compressed() -> None:
    items = [_item(k) for k in range(3000)]
    packed = json_frames.pack_items(items)
    assert json_frames.unpack_items(packed) == items
    split = json_frames.split_per_frame(_bodies([_dataset(3000, "1.2.3.1")])["orthanc"])
    assert split is not None
    raw = split[0]["52009230"]["Value"]
    assert isinstance(raw, json_frames.RawJSONItems)
    assert [len(json_frames.unpack_items(c)) for c in raw.chunks] == [1000, 1000, 1000]
    # Measured ~40 bytes a frame held (marshal alone: ~220).
    assert sum(map(len, raw.chunks)) < 80 * 3000

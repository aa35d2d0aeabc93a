"""DICOM JSON of huge sparse instances: parsing grows linearly with the frames, and the
garbage collector paused for it is restored."""

from __future__ import annotations

import gc
import json
import math
import threading
import time

from dicomslide.perframe import extract_frame_positions
from dicomslide.sources.dicomjson import datasets_from_json, parse_json_bytes


def _series_metadata(frames: int) -> bytes:
    items = [
        {
            "0048021A": {
                "vr": "SQ",
                "Value": [
                    {
                        "0040072A": {"vr": "DS", "Value": [20.0 + k * 1e-4]},
                        "0040073A": {"vr": "DS", "Value": [40.0]},
                        "0040074A": {"vr": "DS", "Value": [0.0]},
                        "0048021E": {"vr": "SL", "Value": [k * 32 + 1]},
                        "0048021F": {"vr": "SL", "Value": [1]},
                    }
                ],
            }
        }
        for k in range(frames)
    ]
    dataset = {
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.77.1.6"]},
        "00280008": {"vr": "IS", "Value": [frames]},
        "52009230": {"vr": "SQ", "Value": items},
    }
    return json.dumps([dataset]).encode()


def test_parse_runs_no_collection_and_grows_linearly() -> None:
    # With the collector running, parsing 25k and 100k frames took 1.29 s and 4.94 s here;
    # paused, 0.14 s and 0.71 s. Counted: no collection runs while the document is parsed.
    collections: list[str] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(phase)

    bodies = [_series_metadata(25_000), _series_metadata(100_000)]
    best = [math.inf, math.inf]
    gc.callbacks.append(count)
    try:
        for _ in range(3):
            for i, body in enumerate(bodies):
                gc.collect()
                collections.clear()
                started = time.perf_counter()
                (item,) = parse_json_bytes(body)
                best[i] = min(best[i], time.perf_counter() - started)
                # At most one or two, set off by allocations just before or after the pause
                # (996 without it).
                assert len(collections) <= 2
                del item
    finally:
        gc.callbacks.remove(count)
    # Timed too, with a wide margin for the shared machine.
    assert math.log(best[1] / best[0]) / math.log(4) < 1.6, best
    (ds,) = datasets_from_json(parse_json_bytes(bodies[1]))
    positions = extract_frame_positions(ds, 100_000)
    assert positions is not None
    assert positions.columns[:3].tolist() == [1, 33, 65]
    assert int(positions.rows.max()) == 1


def test_collector_state_is_restored() -> None:
    body = _series_metadata(10)
    assert gc.isenabled()
    parse_json_bytes(body)
    assert gc.isenabled()
    gc.disable()
    try:
        parse_json_bytes(body)
        assert not gc.isenabled()  # a caller's choice is kept
    finally:
        gc.enable()
    # Parsers in several threads: running again once the last one is done.
    threads = [
        threading.Thread(target=parse_json_bytes, args=(_series_metadata(2000),)) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert gc.isenabled()

"""Pure parts of ``benchmarks/web_floor.py``: which frames a region needs, ratios, markdown."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _web_floor() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "_benchmarks_web_floor", ROOT / "benchmarks" / "web_floor.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _doc(samples: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """A one-section run document, as web_floor's main() writes it."""
    return {
        "date": "d",
        "reps": 3,
        "load_before": [1],
        "load_after": [2],
        "sections": [{"rtt_ms": 0.0, "samples": samples, "summary": summary}],
    }


PLAN = {"levels": [(20000, 17000), (10000, 8500), (5000, 4250)], "tile": 256}


def test_region_frames_are_the_81_tiles_under_the_issue_region() -> None:
    wf = _web_floor()
    frames = wf._region_frames(PLAN, 7000, 9000, 2048)
    assert len(frames) == 81
    # 79 tiles per row at level 0; the region starts in tile row 35, column 27.
    assert frames[0] == 35 * 79 + 27 + 1
    assert frames[-1] == 43 * 79 + 35 + 1


def test_per_tile_offsets_cover_the_scan_level_once_in_level_0_pixels() -> None:
    wf = _web_floor()
    tiles = wf._level0_offsets(PLAN)
    assert len(tiles) == 20 * 17
    assert tiles[1] == ((0, 1024), (256, 256))
    assert sum(rows * cols for _, (rows, cols) in tiles) == 5000 * 4250


def test_summary_ratios_and_markdown_block_replaced_in_place(tmp_path: Path) -> None:
    wf = _web_floor()
    samples = {
        "ours-region": [{"first": 100.0, "open+first": 300.0, "second": 90.0}] * 3,
        "wsidicom-region": [{"first": 200.0, "open+first": 600.0, "second": 100.0}] * 3,
        "floor": [{"scan": 50.0}, {"scan": 70.0}, {"error": ["boom"]}],
        "ours-gather": [{"scan": 60.0}],
    }
    summary = wf.summarise(samples)
    assert summary["medians"]["floor"]["scan"] == 60.0
    assert summary["ratios"]["first region vs wsidicom (<= 1.0)"] == 0.5
    assert summary["ratios"]["gather scan vs floor (<= 1.2)"] == 1.0
    doc = _doc(samples, summary)
    path = tmp_path / "RESULTS.md"
    path.write_text("# head\n\nkept\n")
    wf.write_markdown(wf.markdown(doc), path)
    wf.write_markdown(wf.markdown({**doc, "date": "later"}), path)
    text = path.read_text()
    assert text.startswith("# head\n\nkept\n")
    assert text.count(wf.MARK_BEGIN) == 1
    assert "Run later" in text
    assert "Run d," not in text
    assert "| first region vs wsidicom (<= 1.0) | 0.50x |" in text
    assert "Errors:" in text


def test_server_shapes_get_medians_a_floor_ratio_and_their_own_table() -> None:
    wf = _web_floor()
    samples = {
        "wsidicom-region": [{"second": 400.0}],
        "server-shape": [
            {"1 frame": 300.0, "1 frame cpu": 290.0, "new in 2": 600.0, "new in 2 status": [200]},
            {"1 frame": 340.0, "1 frame cpu": 310.0, "new in 2": 640.0},
        ],
    }
    summary = wf.summarise(samples)
    assert summary["shapes"] == {"1 frame": 320.0, "1 frame cpu": 300.0, "new in 2": 620.0}
    assert summary["ratios"]["server's 1-frame request vs wsidicom second"] == 0.8
    doc = _doc(samples, summary)
    text = wf.markdown(doc)
    assert "| 1 frame | 320 | 300 |" in text
    assert "| new in 2 | 620 |  |" in text
    assert "| server-shape |" not in text  # not a row of the readers' table

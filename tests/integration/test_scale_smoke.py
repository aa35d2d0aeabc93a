"""The scale benchmark's smoke size runs in the suite so that it cannot rot (no times asserted).

Data: synthetic slides copied with new UIDs and a small sparse instance
(``benchmarks/scale_data.py``), made in the test's own folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.processes import ROOT, run_python


def test_scale_smoke_writes_results(tmp_path: Path) -> None:
    done = run_python(
        str(ROOT / "benchmarks" / "scale.py"),
        "--smoke",
        "--out",
        str(tmp_path),
        env={"DICOMSLIDE_SCALE_CACHE": str(tmp_path / "data")},
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (report,) = tmp_path.glob("scale-*.json")
    doc = json.loads(report.read_text())
    for section, sizes in (("archive", ("2", "6")), ("sparse", ("100", "400"))):
        for reader, cells in doc[section].items():
            for size in sizes:
                assert "error" not in cells[size], (section, reader, size, cells[size])
                assert cells[size]["seconds"] > 0
    # Every archive reader found every slide; the container search found one.
    for reader, cells in doc["archive"].items():
        expected = 1 if reader == "ours container_id" else 6
        assert [s["slides"] for s in cells["6"]["samples"]] == [expected], reader
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## Scale" in text
    assert "| exponent |" in text

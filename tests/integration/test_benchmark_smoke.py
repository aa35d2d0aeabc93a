"""The benchmark's smoke mode runs in the suite so that it cannot rot (no times asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.thirdparty import find_dicomizer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_smoke_run_writes_results(tmp_path: Path) -> None:
    if not find_dicomizer():
        if os.environ.get("CI"):
            pytest.fail("OrthancWSIDicomizer is required when CI is set", pytrace=False)
        pytest.skip("OrthancWSIDicomizer is not installed")
    env = {**os.environ, "DICOMSLIDE_BENCH_PEERS_PYTHON": str(tmp_path / "no-peers-python")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    reports = list(tmp_path.glob("*.json"))
    assert reports, result.stdout[-2000:]
    doc = json.loads(reports[0].read_text())
    assert doc["smoke"] is True
    assert (tmp_path / "RESULTS.md").is_file()

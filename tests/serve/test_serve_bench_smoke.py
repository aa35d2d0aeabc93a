"""The load benchmark of ``dicomslide serve`` in its smoke mode, so that it cannot rot.

Runs ``benchmarks/serve_load.py --smoke`` (tiny OrthancWSIDicomizer slide, a private Orthanc
behind the delay proxy, concurrency 1 and 8, 1 s phases) and checks the report's shape and
that no request failed; no timing is asserted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.orthanc import require_dicomweb_orthanc
from tests.support.processes import ROOT, run_python
from tests.support.thirdparty import find_dicomizer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_serve_load_smoke(tmp_path: Path) -> None:
    pytest.importorskip("wsidicom")
    pytest.importorskip("openslide")
    if not find_dicomizer():
        if os.environ.get("CI"):
            pytest.fail("OrthancWSIDicomizer is required when CI is set", pytrace=False)
        pytest.skip("OrthancWSIDicomizer is not installed")
    require_dicomweb_orthanc()
    result = run_python(
        "benchmarks/serve_load.py", "--smoke", "--out", str(tmp_path), cwd=ROOT, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (report,) = tmp_path.glob("serve-*.json")
    doc = json.loads(report.read_text())
    assert doc["smoke"] is True
    cells = {(c["source"], c["server"], c["concurrency"]): c for c in doc["cells"]}
    assert set(cells) == {
        (source, server, c)
        for source, servers in (
            ("DICOMweb +0 ms", ("dicomslide", "wsidicom")),
            ("local", ("dicomslide", "openslide")),
        )
        for server in servers
        for c in (1, 8)
    }
    for key, cell in cells.items():
        assert "error" not in cell, (key, cell)
        for phase in ("cold", "warm"):
            assert cell[phase]["tiles"] > 0, (key, phase)
            assert cell[phase]["errors"] == {}, (key, phase)
        assert cell["peak_rss_mb"] > 0
        if key[0].startswith("DICOMweb"):
            # Tiles came from Orthanc through the proxy, which counted the requests.
            assert cell["cold"]["upstream_requests"] > 0, key
    table = (tmp_path / "SERVE.md").read_text()
    assert table.count("\n| ") == len(cells) + 1

"""The built wheel carries every module and data file of both packages.

A hand-written package list once left ``dicomslide.sources.web`` out of the wheel; an editable
install hides that, so this test builds the wheel the way ``pip install .`` would.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_has_every_module_and_data_file(tmp_path: Path) -> None:
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("dicomslide-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        path.relative_to(ROOT).as_posix()
        for package in ("dicomslide", "dicomslide_sync")
        for path in (ROOT / package).rglob("*")
        if path.is_file()
        and path.suffix in {".py", ".typed", ".html"}
        and "__pycache__" not in path.parts
    }
    assert len(expected) > 50
    assert expected - names == set()

"""``dicomslide serve`` as people run it: a subprocess, stopped by signals, seen by Chromium.

The browser test opens the viewer page in headless Chromium (Debian's ``chromium`` package,
installed by ``.ci/install-system.sh``), lets the page load its Deep Zoom tiles and takes a
screenshot. The slide's rectangle in the screenshot (everything that is not the page's
``#202020`` background below its 40-pixel bar) is compared with a thumbnail read through the
library: mean absolute difference below :data:`MAX_MEAN_ABS_DIFF` grey levels.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from dicomslide_sync.openslide import open_slide
from tests.support.orthanc import OrthancServer, require_dicomweb_orthanc
from tests.support.processes import ROOT, run_python

MAX_MEAN_ABS_DIFF = 6.0
TOKEN = "cli-t0ken-n3ver-printed"


@contextmanager
def serving(
    *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Run ``dicomslide serve`` on a free port; yield its base URL once it answers."""
    process = subprocess.Popen(
        [sys.executable, "-m", "dicomslide", "serve", *args, "--port", "0"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        match = re.search(r" on (http://127\.0\.0\.1:\d+/)$", line.strip())
        assert match, line + process.stderr.read() if process.poll() is not None else line
        base = match.group(1)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "slides", timeout=30).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server never answered"
            time.sleep(0.1)
        yield base, process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_stop_on_signal(slide_root: Path, sig: signal.Signals) -> None:
    with serving(str(slide_root)) as (base, process):
        # Busy when the signal arrives: a tile request in flight must not turn into a trace.
        assert httpx.get(base + "slides", timeout=30).json()
        process.send_signal(sig)
        _out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert err.rstrip().endswith("dicomslide serve: stopped")
    # One INFO line per request, from our logger (uvicorn's access log is off).
    requests = [line for line in err.splitlines() if "dicomslide.serve: GET " in line]
    assert len(requests) >= 2
    assert "uvicorn.access" not in err


@pytest.mark.integration
def test_token_is_never_printed(slide_root: Path, shared_orthanc: OrthancServer) -> None:
    require_dicomweb_orthanc()
    shared_orthanc.upload([slide_root / "a"])
    with serving(shared_orthanc.dicomweb_url, env={"DICOMSLIDE_TOKEN": TOKEN}) as (base, process):
        listing = httpx.get(base + "slides", timeout=30)
        assert listing.status_code == 200
        slide = next(s for s in listing.json() if s["container_id"] == "SERVE-A")
        tile = httpx.get(base + f"slides/{slide['id']}_files/11/0_0.jpeg", timeout=60)
        assert tile.status_code == 200
        assert TOKEN not in listing.text
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0
    assert TOKEN not in out + err


def test_bad_usage_exits_2(tmp_path: Path) -> None:
    result = run_python("-m", "dicomslide", "serve", str(tmp_path / "missing"), cwd=ROOT)
    assert result.returncode == 2
    assert "neither a folder nor an http(s):// URL" in result.stderr
    result = run_python("-m", "dicomslide", "serve", str(tmp_path), "--slide", "1", cwd=ROOT)
    assert result.returncode == 2
    assert "--slide 1 has no meaning here" in result.stderr


# --- the viewer in a real browser ----------------------------------------------------------


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("chromium is required when CI is set (.ci/install-system.sh)", pytrace=False)
    pytest.skip("chromium is not installed (apt-get install chromium; .ci/install-system.sh)")


def _screenshot(url: str, out: Path) -> np.ndarray:
    profile = out.parent / "chromium-profile"
    subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--force-device-scale-factor=1",
            f"--user-data-dir={profile}",
            "--window-size=900,700",
            # Virtual time runs until the page is idle (tiles loaded) or 20 s of it passed.
            "--virtual-time-budget=20000",
            f"--screenshot={out}",
            url,
        ],
        capture_output=True,
        timeout=180,
        check=True,
    )
    return np.asarray(Image.open(out).convert("RGB"))


def _compare_with_thumbnail(shot: np.ndarray, reference_osr_source: Path) -> float:
    below_bar = shot[40:]
    slide_pixels = np.any(below_bar != (0x20, 0x20, 0x20), axis=2)
    rows = np.flatnonzero(slide_pixels.any(axis=1))
    cols = np.flatnonzero(slide_pixels.any(axis=0))
    assert rows.size, "no slide visible in the screenshot"
    assert cols.size, "no slide visible in the screenshot"
    seen = below_bar[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float64)
    height, width = seen.shape[:2]
    # The page fits the whole 1300 x 900 slide: the rectangle keeps its aspect ratio.
    assert abs(width / height - 1300 / 900) < 0.02, (width, height)
    assert width > 400
    # The synthetic levels are drawn independently (not downsampled from level 0), so the
    # thumbnail is made from level 0, the level the viewer shows at this zoom.
    osr = open_slide(reference_osr_source)
    try:
        region = osr.read_region((0, 0), 0, osr.dimensions)
    finally:
        osr.close()
    thumb = Image.new("RGB", region.size, "white")
    thumb.paste(region, None, region)
    thumb = thumb.resize((width, height), Image.Resampling.LANCZOS)
    return float(np.abs(seen - np.asarray(thumb, dtype=np.float64)).mean())


@pytest.mark.parametrize(
    "where", ["folder", pytest.param("orthanc", marks=pytest.mark.integration)]
)
def test_viewer_in_chromium(
    where: str, slide_root: Path, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    _chromium()
    source = str(slide_root)
    if where == "orthanc":
        require_dicomweb_orthanc()
        orthanc: OrthancServer = request.getfixturevalue("shared_orthanc")
        orthanc.upload([slide_root / "a"])
        source = orthanc.dicomweb_url
    with serving(source) as (base, _):
        listing = httpx.get(base + "slides", timeout=60).json()
        slide = next(s for s in listing if s["container_id"] == "SERVE-A")
        shot = _screenshot(f"{base}?slide={slide['id']}", tmp_path / f"{where}.png")
    difference = _compare_with_thumbnail(shot, slide_root / "a")
    assert difference < MAX_MEAN_ABS_DIFF, difference

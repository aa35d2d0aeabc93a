"""Bulk prefetch and the command line against a private Orthanc server."""

from __future__ import annotations

import math
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import dicomslide
from dicomslide.bulk import iter_tiles, prefetch
from dicomslide.synthetic import write_slide
from tests.support.orthanc import OrthancServer, private_orthanc
from tests.support.processes import run_python
from tests.support.slides import slide_spec

pytestmark = pytest.mark.integration

SPEC = slide_spec((1000, 1400), 64, 2, seed=61)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    root = tmp_path_factory.mktemp("bulk-web")
    write_slide(root / "slide", SPEC)
    with private_orthanc([root], tmp_path_factory.mktemp("orthanc-bulk")) as orthanc:
        yield orthanc


async def test_prefetch_level_over_dicomweb(server: OrthancServer) -> None:
    client = dicomslide.DICOMwebClient(server.dicomweb_url, max_frames_per_request=100)
    slide = (await dicomslide.find_slides(client))[0]
    tiles = math.ceil(1000 / 64) * math.ceil(1400 / 64)  # 16 x 22 = 352
    sent = client.requests_sent
    result = await prefetch(slide, 0)
    print(f"Orthanc prefetch: {result.fetched_frames} frames, {result.frames_per_second:.0f}/s")
    assert result.fetched_frames == tiles
    # one instance at level 0, chunks of 100 frames: 4 multipart requests
    assert result.requests == math.ceil(tiles / 100)
    assert client.requests_sent - sent == math.ceil(tiles / 100)
    stats = slide.cache_stats
    hits, misses, requests = stats.hits, stats.misses, stats.requests
    sent = client.requests_sent
    count = 0
    async for tile in iter_tiles(slide, 0):
        assert tile.pixels.std() > 0
        count += 1
    assert count == tiles
    assert slide.cache_stats.requests == requests
    assert slide.cache_stats.misses == misses
    assert slide.cache_stats.hits - hits == tiles
    # at most the ICC profile (bulk data) was fetched, no frames
    assert client.requests_sent - sent <= 1
    rows, cols = slide.total_pixel_matrix_dimensions[0]
    region = await slide.get_image_region((0, 0), 0, (rows, cols))
    assert region.shape == (1000, 1400, 3)
    assert np.asarray(region).std() > 0
    await client.aclose()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_python(
        "-m", "dicomslide", *args, cwd=cwd, env={"DICOMSLIDE_TOKEN": "tok-abcdef-987"}
    )


def test_cli_info_and_prefetch_on_orthanc(server: OrthancServer, tmp_path: Path) -> None:
    done = _cli("info", server.dicomweb_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "found 1 slide(s)" in done.stdout
    assert "0: 1400 x 1000 px" in done.stdout
    assert "tok-abcdef-987" not in done.stdout + done.stderr
    done = _cli("prefetch", server.dicomweb_url, "--level", "0", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "352 frames fetched" in done.stdout
    print(done.stdout)

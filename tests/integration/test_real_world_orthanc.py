"""Issue 17 items 1, 3 and 4 over DICOMweb: one real Orthanc server holding every layout.

The server holds the edge-padded slides of :mod:`tests.aio.test_edge_padding`, the stray
LABEL-only and OVERVIEW-only series next to good slides, and the split pyramids and near misses
of :mod:`tests.aio.test_slide_grouping`. ``find_slides`` over the whole server must return every
good slide and skip (with a warning naming them) only the stray series.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

import dicomslide
from dicomslide.synthetic import expected_pixels
from tests.aio.test_edge_padding import SPECS as PADDED, assert_padding_in_files, check_edge_reads
from tests.aio.test_slide_grouping import (
    Split,
    Stray,
    assert_stray_warnings,
    write_split_folder,
    write_stray_folder,
)
from tests.support.orthanc import OrthancServer, require_dicomweb_orthanc
from tests.support.slides import write_slides

pytestmark = pytest.mark.integration


@dataclass
class Served:
    orthanc: OrthancServer
    stray: Stray
    split: Split


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    require_dicomweb_orthanc()
    root = tmp_path_factory.mktemp("real-world")
    write_slides(root / "padded", PADDED)
    stray = write_stray_folder(root / "stray")
    split = write_split_folder(root / "split")
    with OrthancServer(workdir=tmp_path_factory.mktemp("orthanc-real-world")) as orthanc:
        orthanc.upload([root])
        yield Served(orthanc, stray, split)


@pytest.mark.parametrize("name", sorted(PADDED))
async def test_edge_padding_over_dicomweb(served: Served, name: str) -> None:
    spec = PADDED[name]
    assert_padding_in_files(spec)
    async with dicomslide.DICOMwebClient(served.orthanc.dicomweb_url) as client:
        (slide,) = await dicomslide.find_slides(client, container_id=spec.container_id)
        assert await check_edge_reads(slide, spec) == 2 * 12


@pytest.mark.parametrize("fail_on_error", [True, False])
async def test_whole_server_search_skips_only_stray_series(
    served: Served, caplog: pytest.LogCaptureFixture, fail_on_error: bool
) -> None:
    caplog.set_level(logging.WARNING, logger="dicomslide")
    async with dicomslide.DICOMwebClient(served.orthanc.dicomweb_url) as client:
        slides = await dicomslide.find_slides(client, fail_on_error=fail_on_error)
        containers = sorted(s.container_id for s in slides)
        want = sorted(
            [
                *served.stray.good,
                *(spec.container_id for spec in PADDED.values()),
                "SPLIT",
                "LINKED",
                "RESCAN",
                "RESCAN",
                "AREAS",
                "AREAS",
            ]
        )
        assert containers == want
        for slide in slides:
            spec = served.stray.good.get(slide.container_id)
            if spec is not None:
                region = await slide.get_image_region((0, 0), 0, (64, 64))
                np.testing.assert_array_equal(
                    region, expected_pixels(spec, 0, 0, 0, slice(0, 64), slice(0, 64))
                )
    assert_stray_warnings(caplog, served.stray)


async def test_stray_container_alone_over_dicomweb(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dicomslide")
    async with dicomslide.DICOMwebClient(served.orthanc.dicomweb_url) as client:
        assert await dicomslide.find_slides(client, container_id="LABEL-ONLY") == []
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(served.stray.skipped_series["LABEL-ONLY"] in m for m in messages)


@pytest.mark.parametrize("container", ["SPLIT", "LINKED"])
async def test_split_pyramid_over_dicomweb(served: Served, container: str) -> None:
    spec = served.split.split if container == "SPLIT" else served.split.by_pyramid_uid
    async with dicomslide.DICOMwebClient(served.orthanc.dicomweb_url) as client:
        (slide,) = await dicomslide.find_slides(client, container_id=container)
        assert slide.num_levels == spec.num_levels
        for level in range(spec.num_levels):
            matrix = slide.get_volume_images()[level].get_total_pixel_matrix()
            np.testing.assert_array_equal(await matrix[:, :], expected_pixels(spec, level))

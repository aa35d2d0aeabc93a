"""The ``Accept`` header of frame requests against a real Orthanc (issue 14).

Orthanc 1.10 leaves Available Transfer Syntax UID out of its metadata and answers an
explicit ``image/jpeg`` request faster than ``transfer-syntax=*``. A JPEG slide written by
OrthancWSIDicomizer (third-party converter, made at test time) is uploaded to the session's
Orthanc; the client must ask for JPEG Baseline by name from the first request, get 200s
only, and return the same pixels as the local read of the same files.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

import dicomslide
from tests.support.orthanc import OrthancServer
from tests.support.system import require as _require
from tests.support.thirdparty import DICOMIZER_SAMPLE_DATASET, find_dicomizer, make_dicomizer_slide

pytestmark = pytest.mark.integration

JPEG_ACCEPT = 'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.50'


class _Recording(httpx.AsyncHTTPTransport):
    """A real transport that notes the Accept header, status and path of every frames request."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[tuple[str, int]] = []
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if "/frames/" in request.url.path:
            self.frames.append((request.headers.get("accept", ""), response.status_code))
            self.paths.append(request.url.path)
        return response


@pytest.fixture(scope="module")
def jpeg_slide(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    shared_orthanc: OrthancServer,
) -> list[Path]:
    _require(find_dicomizer(), "OrthancWSIDicomizer (Debian package orthanc-wsi)")
    cache = getattr(request.config, "cache", None)
    root = Path(cache.mkdir("dicomizer")) if cache else tmp_path_factory.mktemp("dicomizer")
    files = make_dicomizer_slide(root, compression="jpeg", dataset=DICOMIZER_SAMPLE_DATASET)
    shared_orthanc.upload(files)
    return files


async def test_jpeg_frames_are_asked_for_by_name_from_the_first_request(
    jpeg_slide: list[Path], shared_orthanc: OrthancServer, tmp_path: Path
) -> None:
    async with dicomslide.DICOMfileClient(jpeg_slide[0].parent, index_dir=tmp_path) as local:
        (truth_slide,) = await dicomslide.find_slides(local)
        study = str(truth_slide.image_metadata[0].StudyInstanceUID)
        offset, size = (100, 150), (300, 400)
        expected = [await truth_slide.get_image_region(offset, 0, size)]
        expected.append(await truth_slide.get_image_region((0, 0), 1, (200, 200)))
    transport = _Recording()
    async with dicomslide.DICOMwebClient(shared_orthanc.dicomweb_url, transport=transport) as web:
        (slide,) = await dicomslide.find_slides(web, study_instance_uid=study)
        got = [await slide.get_image_region(offset, 0, size)]
        got.append(await slide.get_image_region((0, 0), 1, (200, 200)))
        again = await slide.get_image_region((400, 500), 0, (256, 256))
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    assert again.shape == (256, 256, 3)
    assert len(transport.frames) >= 3
    assert transport.frames == [(JPEG_ACCEPT, 200)] * len(transport.frames)


async def test_second_region_is_one_request_for_the_frames_it_lacks(
    jpeg_slide: list[Path], shared_orthanc: OrthancServer, tmp_path: Path
) -> None:
    # This Orthanc reads the whole instance file for every frames request (the same cost for
    # 1 frame as for 81), so a second region costs one request: for the frames it lacks.
    async with dicomslide.DICOMfileClient(jpeg_slide[0].parent, index_dir=tmp_path) as local:
        (truth_slide,) = await dicomslide.find_slides(local)
        meta = truth_slide.image_metadata[0]
        th, tw = int(meta.Rows), int(meta.Columns)
        # 2 x 2 tiles, then 2 x 2 tiles sharing one
        first, second = ((0, 0), (2 * th, 2 * tw)), ((th, tw), (2 * th, 2 * tw))
        expected = await truth_slide.get_image_region(second[0], 0, second[1])

    def numbers(path: str) -> set[int]:
        return {int(n) for n in path.rsplit("/", 1)[1].split(",")}

    study = str(meta.StudyInstanceUID)
    alone = _Recording()  # which frames the second region needs, read cold
    async with dicomslide.DICOMwebClient(shared_orthanc.dicomweb_url, transport=alone) as web:
        (slide,) = await dicomslide.find_slides(web, study_instance_uid=study)
        await slide.get_image_region(second[0], 0, second[1])
    transport = _Recording()
    async with dicomslide.DICOMwebClient(shared_orthanc.dicomweb_url, transport=transport) as web:
        (slide,) = await dicomslide.find_slides(web, study_instance_uid=study)
        await slide.get_image_region(first[0], 0, first[1])
        got = await slide.get_image_region(second[0], 0, second[1])
    np.testing.assert_array_equal(got, expected)
    (needed,) = map(numbers, alone.paths)
    held, asked = map(numbers, transport.paths)
    assert len(needed) == 4
    assert len(needed & held) == 1
    assert asked == needed - held
    assert len(transport.paths[1].split(",")) == len(asked)
    assert transport.frames == [(JPEG_ACCEPT, 200)] * 2

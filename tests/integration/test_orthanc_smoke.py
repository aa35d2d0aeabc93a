"""Smoke test: a private Orthanc serves real OrthancWSIDicomizer slides over DICOMweb.

Checks the test infrastructure itself (server start-up, upload, QIDO, multi-frame WADO-RS)
against the local files, independently of dicomslide.  Skipped when Orthanc or the dicomizer
is missing on a developer machine; fails instead under CI (``CI`` set), where
``.ci/install-system.sh`` must have installed them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.encaps import generate_frames

from tests.support.orthanc import OrthancServer, private_orthanc
from tests.support.system import require as _require
from tests.support.thirdparty import Compression, find_dicomizer, make_dicomizer_slide

pytestmark = pytest.mark.integration

FRAMES_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
COMPRESSIONS: tuple[Compression, ...] = ("jpeg", "jpeg2000", "none")


@pytest.fixture(scope="module")
def slides(request: pytest.FixtureRequest) -> dict[Compression, list[Path]]:
    """One dicomizer slide per compression, cached in pytest's cache folder across runs."""
    _require(find_dicomizer(), "OrthancWSIDicomizer (Debian package orthanc-wsi)")
    cache_root = request.config.cache.mkdir("dicomizer") if request.config.cache else None
    if cache_root is None:
        cache_root = request.getfixturevalue("tmp_path_factory").mktemp("dicomizer")
    return {c: make_dicomizer_slide(cache_root, compression=c) for c in COMPRESSIONS}


@pytest.fixture(scope="module")
def server(slides: dict[Compression, list[Path]]) -> Iterator[OrthancServer]:
    """A private Orthanc holding all three slides."""
    with private_orthanc([f for files in slides.values() for f in files]) as orthanc:
        yield orthanc


@pytest.fixture
def client(server: OrthancServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.dicomweb_url, trust_env=False, timeout=30.0) as c:
        yield c


def _parse_multipart(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """Split a ``multipart/related`` body into (lower-cased headers, payload) parts."""
    content_type = response.headers["content-type"]
    assert content_type.startswith("multipart/related"), content_type
    boundary = content_type.split("boundary=", 1)[1].split(";", 1)[0].strip().strip('"')
    delimiter = b"--" + boundary.encode()
    chunks = response.content.split(delimiter)
    # chunks[0] is the (empty) preamble, chunks[-1] the closing "--\r\n".
    assert chunks[-1].startswith(b"--"), "missing closing delimiter"
    parts = []
    for chunk in chunks[1:-1]:
        head, sep, body = chunk.partition(b"\r\n\r\n")
        assert sep, "part without header/body separator"
        headers = {}
        for line in head.decode("latin-1").strip().split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        # The CRLF before the next delimiter belongs to the delimiter, not to the payload.
        assert body.endswith(b"\r\n")
        parts.append((headers, body[:-2]))
    return parts


def _local_frames(path: Path) -> tuple[pydicom.Dataset, list[bytes]]:
    ds = pydicom.dcmread(path)
    count = int(ds.NumberOfFrames)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return ds, list(generate_frames(ds.PixelData, number_of_frames=count))
    size = int(ds.Rows) * int(ds.Columns) * int(ds.SamplesPerPixel) * int(ds.BitsAllocated) // 8
    data = ds.PixelData
    return ds, [data[i * size : (i + 1) * size] for i in range(count)]


def test_server_reports_version(server: OrthancServer) -> None:
    system = server.system()
    assert system["Version"]
    assert server.running


def test_qido_lists_the_uploaded_study(
    client: httpx.Client, slides: dict[Compression, list[Path]]
) -> None:
    expected = pydicom.dcmread(slides["jpeg"][0], stop_before_pixels=True)
    response = client.get("/studies", headers={"Accept": "application/dicom+json"})
    assert response.status_code == 200, response.text
    study_uids = {item["0020000D"]["Value"][0] for item in response.json()}
    assert expected.StudyInstanceUID in study_uids

    response = client.get(f"/studies/{expected.StudyInstanceUID}/series")
    assert response.status_code == 200, response.text
    series_uids = {item["0020000E"]["Value"][0] for item in response.json()}
    assert series_uids == {expected.SeriesInstanceUID}

    response = client.get(
        f"/studies/{expected.StudyInstanceUID}/series/{expected.SeriesInstanceUID}/instances"
    )
    assert response.status_code == 200, response.text
    assert len(response.json()) == len(slides["jpeg"])


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_multiframe_wado_returns_stored_bytes(
    client: httpx.Client, slides: dict[Compression, list[Path]], compression: Compression
) -> None:
    ds, local = _local_frames(slides[compression][0])
    # Unordered, non-contiguous, and including the last frame.
    numbers = [3, 1, 2, len(local) // 2, len(local)]
    url = (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/frames/{','.join(map(str, numbers))}"
    )
    response = client.get(url, headers={"Accept": FRAMES_ACCEPT})
    assert response.status_code == 200, response.text

    parts = _parse_multipart(response)
    assert len(parts) == len(numbers)
    syntax = str(ds.file_meta.TransferSyntaxUID)
    for number, (headers, payload) in zip(numbers, parts, strict=True):
        assert f"transfer-syntax={syntax}" in headers["content-type"], headers
        assert payload == local[number - 1], f"frame {number} differs"

"""Whole-instance fallback of :class:`dicomslide.DICOMwebClient` for frames a server refuses.

Orthanc answers 400 "Bad file format" to WADO-RS frame requests of Float Pixel Data
instances and 500 to those of Double Float Pixel Data instances (as it does for 1-bit frames
that do not start on a byte boundary, see ``test_derived_orthanc.py``); the client then
fetches the instance once and cuts its frames out itself.

The tests against an in-process ``httpx.MockTransport`` server (no ``integration`` marker)
count requests: one whole-instance request per instance, and no frames request after it.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless

import dicomslide
import dicomslide_sync
from dicomslide.enums import ChannelTypes
from dicomslide.sources import web
from tests.aio.test_derived import Written, write_derived
from tests.aio.test_float_pm import CONTAINER, FloatWritten, write_float_maps
from tests.support.orthanc import OrthancServer
from tests.support.slides import written_folder

BASE = "http://refusing.test/dicom-web"
BOUNDARY = "instance-boundary"
_FRAMES_RE = re.compile(r"/instances/([0-9.]+)/frames/([0-9,]+)$")
_INSTANCE_RE = re.compile(r"/instances/([0-9.]+)$")


# --- against Orthanc --------------------------------------------------------------------


@pytest.fixture(scope="module")
def orthanc(
    tmp_path_factory: pytest.TempPathFactory, shared_orthanc: OrthancServer
) -> tuple[OrthancServer, FloatWritten]:
    written = write_float_maps(tmp_path_factory.mktemp("float-web"))
    shared_orthanc.upload([written.root])
    return shared_orthanc, written


@pytest.mark.integration
def test_float_maps_over_dicomweb(orthanc: tuple[OrthancServer, FloatWritten]) -> None:
    server, written = orthanc
    with dicomslide_sync.DICOMwebClient(server.dicomweb_url) as client:
        (slide,) = dicomslide_sync.find_slides(client, container_id=CONTAINER)
        for label, level, expected, view in (
            ("single", 0, written.single, np.uint32),
            ("double", 1, written.double, np.uint64),
        ):
            channel = slide.get_channel_index(label, ChannelTypes.PARAMETER)
            rows, cols = slide.total_pixel_matrix_dimensions[level]
            region = slide.get_image_region((0, 0), level, (rows, cols), channel_index=channel)
            values = np.asarray(region)[..., 0]
            assert values.dtype == expected.dtype
            np.testing.assert_array_equal(values.view(view), expected.view(view))


@pytest.mark.integration
def test_orthanc_refuses_float_frames(orthanc: tuple[OrthancServer, FloatWritten]) -> None:
    # What the fallback is for; if Orthanc ever serves these frames, this test says so.
    server, written = orthanc
    ds = pydicom.dcmread(written.root / "pm_float32.dcm", stop_before_pixels=True)
    url = (
        f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    with httpx.Client() as http:
        frames = http.get(url + "/frames/1", headers={"Accept": web.ACCEPT_STORED_FRAMES})
        whole = http.get(url, headers={"Accept": web.ACCEPT_INSTANCE})
    assert frames.status_code == 400
    assert whole.status_code == 200


# --- against a server that refuses frames (MockTransport) --------------------------------


class RefusingServer:
    """Serves whole instances of some files and refuses every frames request."""

    def __init__(self, files: list[Path], *, frames_status: int = 400) -> None:
        self.files = {
            str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in files
        }
        self.frames_status = frames_status
        self.frames_requests: list[tuple[str, str]] = []
        self.instance_requests: list[tuple[str, str]] = []
        self.part_length = True
        self.instance_status = 200

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        accept = request.headers.get("accept", "")
        frames = _FRAMES_RE.search(path)
        if frames:
            self.frames_requests.append((frames.group(1), accept))
            await asyncio.sleep(0)  # answer later: concurrent requests get to run
            return httpx.Response(self.frames_status, text="Bad file format")
        instance = _INSTANCE_RE.search(path)
        if instance:
            self.instance_requests.append((instance.group(1), accept))
            await asyncio.sleep(0)
            if self.instance_status != 200:
                return httpx.Response(self.instance_status, text="no")
            body = self.files[instance.group(1)].read_bytes()
            head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n"
            if self.part_length:
                head += f"Content-Length: {len(body)}\r\n"
            content = f"{head}\r\n".encode() + body + f"\r\n--{BOUNDARY}--\r\n".encode()
            return httpx.Response(
                200,
                content=content,
                headers={
                    "content-type": (
                        f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
                    )
                },
            )
        return httpx.Response(404, text="no route")


derived = written_folder(write_derived, "derived-mock")
floats = written_folder(write_float_maps, "float-mock")


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fake_sleep(delay: float) -> None:
        return None

    monkeypatch.setattr(web.transport, "_sleep", fake_sleep)


async def _expected(path: Path) -> tuple[str, str, str, dict[int, bytes]]:
    """UIDs and every frame of a file as the local source reads it."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    uids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    async with dicomslide.DICOMfileClient(path.parent) as local:
        numbers = list(range(1, int(ds.NumberOfFrames) + 1))
        frames = {n: f.data async for n, f in local.iter_frames(*uids, numbers)}
    return (*uids, frames)


async def _read(
    client: dicomslide.DICOMwebClient, uids: tuple[str, str, str], numbers: list[int]
) -> dict[int, bytes]:
    return {n: f.data async for n, f in client.iter_frames(*uids, numbers)}


@pytest.mark.parametrize("status", [400, 404, 406, 500])
async def test_refused_frames_cost_one_instance_request(
    derived: Written, no_sleep: None, status: int
) -> None:
    path = derived.root / "d" / "seg.dcm"
    study, series, sop, expected = await _expected(path)
    server = RefusingServer([path], frames_status=status)
    retry = dicomslide.RetryPolicy(attempts=2, backoff=0.0)
    async with dicomslide.DICOMwebClient(
        BASE, transport=server.transport(), retry=retry
    ) as client:
        uids = (study, series, sop)
        numbers = sorted(expected)
        # Concurrent first requests: one probes, the others wait for its outcome.
        parts = [numbers[k::4] for k in range(4)]
        results = await asyncio.gather(*(_read(client, uids, p) for p in parts))
        for part, got in zip(parts, results, strict=True):
            assert got == {n: expected[n] for n in part}
        probes = len(server.frames_requests)
        # The stored media type, then the explicit one (each retried once on 500); 404 is
        # not a refusal of the media type, so it is not asked again explicitly.
        assert probes == {400: 2, 404: 1, 406: 2, 500: 4}[status]
        assert {sop for sop, _ in server.frames_requests} == {sop}
        assert server.instance_requests == [(sop, web.ACCEPT_INSTANCE)]
        # Later requests are served from the instance: no frames request, no instance request.
        assert await _read(client, uids, numbers[::-1]) == expected
        assert len(server.frames_requests) == probes
        assert len(server.instance_requests) == 1


@pytest.mark.parametrize("spooled", [False, True])
@pytest.mark.parametrize("part_length", [True, False])
async def test_float_frames_from_the_whole_instance(
    floats: FloatWritten,
    no_sleep: None,
    monkeypatch: pytest.MonkeyPatch,
    spooled: bool,
    part_length: bool,
) -> None:
    if spooled:
        monkeypatch.setattr(web.instance, "_INSTANCE_MEMORY_BYTES", 1000)
    paths = [floats.root / "pm_float32.dcm", floats.root / "pm_float64.dcm"]
    server = RefusingServer(paths)
    server.part_length = part_length
    async with dicomslide.DICOMwebClient(BASE, transport=server.transport()) as client:
        for path in paths:
            study, series, sop, expected = await _expected(path)
            got = await _read(client, (study, series, sop), sorted(expected))
            assert got == expected
            assert all(len(frame) in (45 * 45 * 4, 64 * 64 * 8) for frame in got.values())
            assert client._fallback._instances[sop].in_memory is not spooled
    assert len(server.instance_requests) == 2


async def test_failed_instance_fetch_is_not_remembered(derived: Written, no_sleep: None) -> None:
    path = derived.root / "d" / "seg.dcm"
    study, series, sop, expected = await _expected(path)
    server = RefusingServer([path], frames_status=404)
    server.instance_status = 404
    retry = dicomslide.RetryPolicy(attempts=1)
    async with dicomslide.DICOMwebClient(
        BASE, transport=server.transport(), retry=retry
    ) as client:
        # The frames error is what is reported, and the next request asks for frames again.
        with pytest.raises(dicomslide.NotFoundError, match="frames"):
            await _read(client, (study, series, sop), [1])
        with pytest.raises(dicomslide.NotFoundError, match="frames"):
            await _read(client, (study, series, sop), [2])
        assert len(server.instance_requests) == 2
        assert len(server.frames_requests) == 2
        # Once the instance can be had, it is used.
        server.instance_status = 200
        assert await _read(client, (study, series, sop), [3, 1]) == {
            n: expected[n] for n in (3, 1)
        }


async def test_instance_too_large(derived: Written, no_sleep: None) -> None:
    path = derived.root / "d" / "seg.dcm"
    study, series, sop, _ = await _expected(path)
    server = RefusingServer([path])
    async with dicomslide.DICOMwebClient(
        BASE, transport=server.transport(), max_instance_bytes=10_000
    ) as client:
        with pytest.raises(dicomslide.errors.DicomWebError, match="max_instance_bytes") as info:
            await _read(client, (study, series, sop), [1])
        assert info.value.status_code == 400
    async with dicomslide.DICOMwebClient(
        BASE, transport=server.transport(), max_instance_bytes=0
    ) as client:
        with pytest.raises(dicomslide.errors.DicomWebError, match="Bad file format"):
            await _read(client, (study, series, sop), [1])
    assert len(server.instance_requests) == 1


class MislabellingServer(RefusingServer):
    """Orthanc 1.10 with a transfer syntax it does not know (seen with HTJ2K and JPEG XL).

    It refuses ``transfer-syntax=*`` and answers the explicit request for Explicit VR Little
    Endian with 200 and the stored, compressed frames, labelled native.
    """

    async def handle(self, request: httpx.Request) -> httpx.Response:
        frames = _FRAMES_RE.search(request.url.path)
        accept = request.headers.get("accept", "")
        if frames is None or "transfer-syntax=*" in accept:
            return await super().handle(request)
        self.frames_requests.append((frames.group(1), accept))
        ds = pydicom.dcmread(self.files[frames.group(1)])
        stored = list(
            pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames)
        )
        native = "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
        body = b"".join(
            f"--{BOUNDARY}\r\nContent-Type: {native}\r\n\r\n".encode()
            + stored[int(n) - 1]
            + b"\r\n"
            for n in frames.group(2).split(",")
        )
        return httpx.Response(
            200,
            content=body + f"--{BOUNDARY}--\r\n".encode(),
            headers={"content-type": f'multipart/related; type="{native}"; boundary={BOUNDARY}'},
        )


@pytest.fixture
def j2k_volume(tmp_path: Path) -> Path:
    """The level-0 file of a synthetic JPEG 2000 slide."""
    from dicomslide.synthetic import write_slide
    from tests.support.slides import slide_spec

    spec = slide_spec((300, 400), 128, 1, seed=5, transfer_syntax_uid=JPEG2000Lossless)
    write_slide(tmp_path, spec)
    for path in sorted(tmp_path.rglob("*.dcm")):
        if "VOLUME" in pydicom.dcmread(path, stop_before_pixels=True).ImageType:
            return path
    raise AssertionError("no VOLUME image written")


async def test_codestreams_labelled_native_are_read_from_the_instance(
    j2k_volume: Path, no_sleep: None
) -> None:
    path = j2k_volume
    study, series, sop, expected = await _expected(path)
    server = MislabellingServer([path])
    async with dicomslide.DICOMwebClient(BASE, transport=server.transport()) as client:
        uids = (study, series, sop)
        got = await _read(client, uids, sorted(expected))
        assert got == expected
        # The stored request (refused), one explicit request (mislabelled), one instance.
        assert len(server.frames_requests) == 2
        assert server.instance_requests == [(sop, web.ACCEPT_INSTANCE)]
        assert {f.transfer_syntax_uid async for _, f in client.iter_frames(*uids, [1])} == {
            "1.2.840.10008.1.2.4.90"
        }
        assert len(server.frames_requests) == 2

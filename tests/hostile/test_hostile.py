"""Hostile and broken servers: every case ends in a typed error or correct bytes, in bounds.

Each case runs against :class:`tests.hostile.server.HostileServer` on 127.0.0.1 (no other
address is ever contacted) and is checked by the ``bounded`` fixture: wall clock below the
case's bound, peak RSS below 1 GiB, and no credential (URL token, API key header, ``auth``
password or its Basic encoding) in any exception text, ``repr`` or log record of any logger
at DEBUG. The client is given ``deadline=2`` and small budgets unless a case is about the
defaults. The six behaviours of issue 18 are the first six sections; the rest are cases of
our own: chunked-encoding lies, Content-Length mismatches, trailers, header floods,
multipart edge cases and TLS settings.

The self-signed TLS certificate is made at test time with ``cryptography`` (skipped when it
is not installed); nothing here comes from another project.
"""

from __future__ import annotations

import asyncio
import datetime
import gzip
import inspect
import ipaddress
import json
import logging
import ssl
import zlib
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pydicom
import pytest

import dicomslide
import dicomslide_sync
from dicomslide.errors import (
    DicomSlideError,
    InvalidDataError,
    NotAcceptableError,
    NotFoundError,
    ProtocolError,
    RequestTimeoutError,
    ResponseTooLargeError,
    TransportError,
)
from dicomslide.synthetic import SlideSpec, write_slide
from tests.hostile.conftest import API_KEY, PASSWORD, TOKEN, Bound
from tests.hostile.server import HostileServer, Request

T = TypeVar("T")
DEADLINE = 2.0
# The deadline plus scheduling slack on a loaded 2-core machine.
DEADLINE_BOUND = DEADLINE + 3.0
SMALL_BUDGET = 4 << 20
STUDY, SERIES, SOP = "1.2.826.0.1.1", "1.2.826.0.1.2", "1.2.826.0.1.3"
FRAMES = f"/studies/{STUDY}/series/{SERIES}/instances/{SOP}/frames/"
META = f"/studies/{STUDY}/series/{SERIES}/instances/{SOP}/metadata"
ITEM = {"00080018": {"vr": "UI", "Value": [SOP]}}


# --- raw HTTP pieces -------------------------------------------------------------------------


def head(status: str = "200 OK", **headers: str) -> bytes:
    """A response head; ``content_type="x"`` becomes ``Content-Type: x``."""
    lines = [f"HTTP/1.1 {status}", "Connection: close"]
    lines += [f"{k.replace('_', '-').title()}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def endless(writer: asyncio.StreamWriter, piece: bytes, *, chunked: bool = True) -> None:
    """Write ``piece`` until the client hangs up."""
    data = chunk(piece) if chunked else piece
    while True:
        writer.write(data)
        await writer.drain()


async def drip(writer: asyncio.StreamWriter, data: bytes, interval: float = 0.25) -> None:
    """Write ``data`` one byte per ``interval``, then keep dripping spaces."""
    for i in range(len(data)):
        writer.write(data[i : i + 1])
        await writer.drain()
        await asyncio.sleep(interval)
    while True:
        writer.write(b" ")
        await writer.drain()
        await asyncio.sleep(interval)


def echoed(request: Request) -> str:
    """Every credential the request carried, as a careless server echoes it."""
    headers = request.headers
    return f"{headers.get('authorization')} {headers.get('x-api-key')} {request.target}"


def json_response(body: bytes, **headers: str) -> bytes:
    return (
        head(content_type="application/dicom+json", content_length=str(len(body)), **headers)
        + body
    )


# --- the client and the checks ---------------------------------------------------------------


def _accepted(options: dict[str, Any]) -> dict[str, Any]:
    # Options this version of the client knows; all of them on this branch (see
    # test_budget_and_deadline_options_exist), so the cases also run unchanged on older code.
    known = inspect.signature(dicomslide.DICOMwebClient).parameters
    return {k: v for k, v in options.items() if k in known}


def web(server: HostileServer, **options: Any) -> dicomslide.DICOMwebClient:
    """A client with every kind of credential, a short deadline and small budgets."""
    settings: dict[str, Any] = {
        "timeout": 3.0,
        "deadline": DEADLINE,
        "max_response_bytes": SMALL_BUDGET,
        "retry": dicomslide.RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.05),
        **options,
    }
    return dicomslide.DICOMwebClient(
        f"{server.url}?access_token={TOKEN}&project=p1",
        headers={"X-Api-Key": API_KEY},
        auth=("alice", PASSWORD),
        **_accepted(settings),
    )


async def raises(bound: Bound, kind: type[BaseException], awaitable: Awaitable[Any]) -> Any:
    """Await ``awaitable`` (guarded far beyond any bound) and return the typed error it raised."""
    try:
        await asyncio.wait_for(awaitable, 60.0)
    except DicomSlideError as exc:
        bound.saw(exc)
        if not isinstance(exc, kind):
            raise AssertionError(f"{type(exc).__name__}, not {kind.__name__}: {exc}") from None
        return exc
    except BaseException as exc:
        bound.saw(exc)
        raise AssertionError(f"untyped {type(exc).__name__}: {str(exc)[:300]}") from None
    raise AssertionError(f"no {kind.__name__} raised")


async def read_frames(client: dicomslide.DICOMwebClient, numbers: list[int]) -> list[bytes]:
    return [f.data async for _, f in client.iter_frames(STUDY, SERIES, SOP, numbers)]


async def frames_raise(
    server: HostileServer,
    bound: Bound,
    kind: type[BaseException],
    numbers: list[int],
    **options: Any,
) -> Any:
    """The typed error that reading ``numbers`` from a fresh client raises."""
    async with web(server, **options) as client:
        return await raises(bound, kind, read_frames(client, numbers))


async def metadata(client: dicomslide.DICOMwebClient) -> Any:
    async with client:
        return await client.retrieve_instance_metadata(STUDY, SERIES, SOP)


def answer(server: HostileServer, pattern: str, raw: bytes) -> None:
    """Answer targets matching ``pattern`` with the same bytes every time."""
    route(server, pattern, lambda request, writer: writer.write(raw))


def route(server: HostileServer, pattern: str, write: Any) -> None:
    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        result = write(request, writer)
        if inspect.isawaitable(result):
            await result

    server.route(pattern, handler)


def test_budget_and_deadline_options_exist() -> None:
    """Both packages take the options; the deadline is on by default (300 s)."""
    for cls in (dicomslide.DICOMwebClient, dicomslide_sync.DICOMwebClient):
        parameters = inspect.signature(cls).parameters
        assert parameters["deadline"].default == 300.0
        assert parameters["max_response_bytes"].default == 256 << 20
        assert parameters["max_frame_bytes"].default == 256 << 20
    client = dicomslide_sync.DICOMwebClient("http://127.0.0.1:9/dicom-web", deadline=None)
    assert client.deadline is None
    client.close()
    with pytest.raises(dicomslide.ArgumentError, match="deadline"):
        dicomslide.DICOMwebClient("http://127.0.0.1:9/dicom-web", deadline=0)
    with pytest.raises(dicomslide.ArgumentError, match="max_response_bytes"):
        dicomslide.DICOMwebClient("http://127.0.0.1:9/dicom-web", max_response_bytes=-1)


# --- 1. secrets in exception text ------------------------------------------------------------


async def test_secret_echoed_in_a_200_body_that_is_not_json(
    hostile: HostileServer, bounded: Bound
) -> None:
    route(
        hostile,
        "/metadata",
        lambda r, w: w.write(json_response(f"<html>denied for {echoed(r)}".encode())),
    )
    error = await raises(bounded, ProtocolError, metadata(web(hostile)))
    assert "invalid DICOM JSON" in str(error)
    assert "***" in str(error)  # the echo was there, redacted


async def test_secret_echoed_inside_a_json_value_that_fails_to_convert(
    hostile: HostileServer, bounded: Bound
) -> None:
    def write(request: Request, writer: asyncio.StreamWriter) -> None:
        value = request.headers["authorization"]
        body = json.dumps([{**ITEM, "00280010": {"vr": "US", "Value": [value]}}])
        writer.write(json_response(body.encode()))

    route(hostile, "/metadata", write)
    error = await raises(bounded, ProtocolError, metadata(web(hostile)))
    assert "00280010" in str(error)


async def test_secret_echoed_by_a_custom_auth_flow_is_redacted(
    hostile: HostileServer, bounded: Bound
) -> None:
    class Bearer(httpx.Auth):
        def auth_flow(self, request: httpx.Request) -> Any:
            request.headers["Authorization"] = f"Bearer {TOKEN}"
            yield request

    route(
        hostile,
        "/metadata",
        lambda r, w: w.write(json_response(f"no {r.headers['authorization']}".encode())),
    )
    client = dicomslide.DICOMwebClient(
        hostile.url, auth=Bearer(), **_accepted({"deadline": DEADLINE})
    )
    await raises(bounded, ProtocolError, metadata(client))


# --- 2. secrets in DEBUG logs ----------------------------------------------------------------


async def test_secret_echoed_in_response_headers_and_trailers_is_not_logged(
    hostile: HostileServer, bounded: Bound, caplog: pytest.LogCaptureFixture
) -> None:
    def write(request: Request, writer: asyncio.StreamWriter) -> None:
        body = json.dumps([ITEM]).encode()
        writer.write(
            head(
                content_type="application/dicom+json",
                transfer_encoding="chunked",
                trailer="X-Echo",
                x_echo=echoed(request),
                set_cookie=f"session={API_KEY}",
            )
            + chunk(body)
            + f"0\r\nX-Echo: {echoed(request)}\r\n\r\n".encode()
        )

    route(hostile, "/metadata", write)
    ds = await asyncio.wait_for(metadata(web(hostile)), 30)
    assert ds.SOPInstanceUID == SOP
    # httpcore did trace the echoing header: the check of the fixture is not vacuous.
    traced = [r.getMessage() for r in caplog.records if r.name.startswith("httpcore")]
    assert any("X-Echo" in m and "***" in m for m in traced), traced[-5:]


async def test_secrets_in_urls_are_redacted_in_httpx_info_logs(
    hostile: HostileServer, bounded: Bound, caplog: pytest.LogCaptureFixture
) -> None:
    answer(hostile, "/metadata", json_response(json.dumps([ITEM]).encode()))
    await asyncio.wait_for(metadata(web(hostile)), 30)
    logged = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert any("project=p1" in m for m in logged), logged


# --- 3. unbounded memory ---------------------------------------------------------------------


ENDLESS_JSON = b'{"00080018": {"vr": "UI", "Value": ["1.2.3"]}},' * 2000


async def test_endless_metadata_body(hostile: HostileServer, bounded: Bound) -> None:
    async def write(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(head(content_type="application/dicom+json", transfer_encoding="chunked"))
        writer.write(chunk(b"["))
        await endless(writer, ENDLESS_JSON)

    route(hostile, "/metadata", write)
    error = await raises(bounded, ResponseTooLargeError, metadata(web(hostile)))
    assert error.limit == SMALL_BUDGET
    assert str(SMALL_BUDGET) in str(error)
    assert "/metadata" in error.url
    assert "project=p1" in error.url


@pytest.mark.slow
async def test_endless_metadata_body_within_the_default_budget(
    hostile: HostileServer, bounded: Bound
) -> None:
    bounded.seconds = 120.0

    async def write(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(head(content_type="application/dicom+json"))  # no length: ends at close
        await endless(writer, ENDLESS_JSON * 8, chunked=False)

    route(hostile, "/metadata", write)
    client = web(hostile, max_response_bytes=256 << 20, deadline=100.0)
    error = await raises(bounded, ResponseTooLargeError, metadata(client))
    assert error.limit == 256 << 20


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_compressed_metadata_that_inflates_without_end(
    hostile: HostileServer, bounded: Bound, encoding: str
) -> None:
    async def write(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(
            head(
                content_type="application/dicom+json",
                content_encoding=encoding,
                transfer_encoding="chunked",
            )
        )
        packer = zlib.compressobj(9, zlib.DEFLATED, 31 if encoding == "gzip" else 15)
        writer.write(chunk(packer.compress(b"[")))
        zeros = b" " * (1 << 20)
        while True:
            data = packer.compress(zeros) + packer.flush(zlib.Z_SYNC_FLUSH)
            writer.write(chunk(data))
            await writer.drain()

    route(hostile, "/metadata", write)
    error = await raises(bounded, ResponseTooLargeError, metadata(web(hostile)))
    assert error.limit == SMALL_BUDGET


async def test_declared_length_beyond_the_budget_is_refused_before_reading(
    hostile: HostileServer, bounded: Bound
) -> None:
    answer(
        hostile,
        "/metadata",
        head(content_type="application/dicom+json", content_length=str(10 << 30)),
    )
    error = await raises(bounded, ResponseTooLargeError, metadata(web(hostile)))
    assert "declares" in str(error)


@pytest.mark.parametrize(
    "content_type", ["application/octet-stream", "multipart/related; boundary=b"]
)
async def test_endless_bulk_data(
    hostile: HostileServer, bounded: Bound, content_type: str
) -> None:
    async def write(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(head(content_type=content_type, transfer_encoding="chunked"))
        await endless(writer, b"\x00" * 65536)

    route(hostile, "/bulk/icc", write)
    client = web(hostile)
    async with client:
        error = await raises(
            bounded, ResponseTooLargeError, client.retrieve_bulkdata(f"{hostile.url}/bulk/icc")
        )
    assert error.limit == SMALL_BUDGET


async def test_error_body_that_never_ends(hostile: HostileServer, bounded: Bound) -> None:
    async def write(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(head("404 Not Found", content_type="text/plain", transfer_encoding="chunked"))
        writer.write(chunk(f"no such frame for {echoed(request)} ".encode()))
        await endless(writer, b"x" * 65536)

    route(hostile, "/instances/", write)  # frames, and the whole-instance fallback
    error = await frames_raise(hostile, bounded, NotFoundError, [1])
    assert "404" in str(error)
    assert len(str(error)) < 2000


async def test_frame_larger_than_its_metadata_allows(
    hostile: HostileServer, bounded: Bound
) -> None:
    item = {
        **ITEM,
        "00280010": {"vr": "US", "Value": [16]},
        "00280011": {"vr": "US", "Value": [16]},
        "00280002": {"vr": "US", "Value": [3]},
        "00280100": {"vr": "US", "Value": [8]},
    }
    answer(hostile, "/metadata", json_response(json.dumps([item]).encode()))

    async def frames(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(
            head(
                content_type='multipart/related; type="application/octet-stream"; boundary=b',
                transfer_encoding="chunked",
            )
        )
        writer.write(chunk(b"--b\r\nContent-Type: application/octet-stream\r\n\r\n"))
        await endless(writer, b"\x01" * 65536)

    route(hostile, "/frames/", frames)
    client = web(hostile)
    async with client:
        await client.retrieve_instance_metadata(STUDY, SERIES, SOP)
        error = await raises(bounded, ResponseTooLargeError, read_frames(client, [1]))
    # 2 * 16 * 16 * 3 bytes + 1 MiB of codec slack
    assert error.limit == 2 * 768 + (1 << 20)
    assert "/frames/1" in error.url


# --- 4. no overall deadline ------------------------------------------------------------------


async def test_slow_drip_headers(hostile: HostileServer, bounded: Bound) -> None:
    bounded.seconds = DEADLINE_BOUND
    route(hostile, "/metadata", lambda r, w: drip(w, b"HTTP/1.1 200 OK\r\nX-Slow: "))
    error = await raises(bounded, RequestTimeoutError, metadata(web(hostile)))
    assert "deadline of 2 s" in str(error)


async def test_slow_drip_metadata_body(hostile: HostileServer, bounded: Bound) -> None:
    bounded.seconds = DEADLINE_BOUND

    async def write(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(head(content_type="application/dicom+json"))
        await drip(writer, json.dumps([ITEM]).encode())

    route(hostile, "/metadata", write)
    await raises(bounded, RequestTimeoutError, metadata(web(hostile)))


async def test_slow_drip_frames(hostile: HostileServer, bounded: Bound) -> None:
    bounded.seconds = DEADLINE_BOUND

    async def write(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(head(content_type="multipart/related; boundary=b"))
        await drip(writer, b"--b\r\n\r\n" + b"\x00" * 100)

    route(hostile, "/frames/", write)
    await frames_raise(hostile, bounded, RequestTimeoutError, [1])


async def test_slow_drip_whole_instance_after_refused_frames(
    hostile: HostileServer, bounded: Bound
) -> None:
    """The whole-instance fallback's body shares the deadline of its request.

    The frames' refusal is what the caller is told (the fallback is not known to work for this
    server); the cause is the fallback's timeout.
    """
    bounded.seconds = DEADLINE_BOUND
    answer(hostile, "/metadata", json_response(json.dumps([ITEM]).encode()))
    answer(hostile, "/frames/", head("406 Not Acceptable", content_length="0"))

    async def write(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(head(content_type="application/dicom", content_length="100000"))
        await drip(writer, b"\x00" * 128 + b"DICM")

    route(hostile, f"/instances/{SOP}[?]", write)
    client = web(hostile)
    async with client:
        await client.retrieve_instance_metadata(STUDY, SERIES, SOP)
        error = await raises(bounded, NotAcceptableError, read_frames(client, [1]))
    assert isinstance(error.__cause__, RequestTimeoutError)


async def test_endless_frames_without_a_boundary(hostile: HostileServer, bounded: Bound) -> None:
    bounded.seconds = DEADLINE_BOUND

    async def write(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(
            head(
                content_type="multipart/related; boundary=never-sent", transfer_encoding="chunked"
            )
        )
        await endless(writer, b"\x00" * 65536)

    route(hostile, "/frames/", write)
    await frames_raise(hostile, bounded, RequestTimeoutError, [1, 2])


async def test_slow_qido_search_shares_one_deadline(
    hostile: HostileServer, bounded: Bound
) -> None:
    bounded.seconds = DEADLINE_BOUND

    # Each page comes in time for the per-phase timeout, but the search never ends.
    async def write(request: Request, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.3)
        offset = int(request.target.split("offset=")[1].split("&")[0])
        page = [{"0020000E": {"vr": "UI", "Value": [f"1.2.{offset + i}"]}} for i in range(2)]
        writer.write(json_response(json.dumps(page).encode()))

    route(hostile, r"/series\?", write)
    client = web(hostile)
    client.qido_page_size = 2
    async with client:
        await raises(bounded, RequestTimeoutError, client.search_for_series())


def test_the_blocking_client_has_the_deadline_too(hostile: HostileServer, bounded: Bound) -> None:
    bounded.seconds = DEADLINE_BOUND
    route(hostile, "/metadata", lambda r, w: drip(w, b"HTTP/1.1 200 OK\r\n"))
    client = dicomslide_sync.DICOMwebClient(
        f"{hostile.url}?access_token={TOKEN}", **_accepted({"deadline": DEADLINE, "timeout": 3.0})
    )
    # A guard far beyond the deadline (old code would hang); restored afterwards.
    previous = dicomslide_sync.get_default_timeout()
    dicomslide_sync.set_default_timeout(30.0)
    try:
        with pytest.raises(RequestTimeoutError) as info:
            client.retrieve_instance_metadata(STUDY, SERIES, SOP)
        bounded.saw(info.value)
    finally:
        dicomslide_sync.set_default_timeout(previous)
        client.close()


# --- 5. untyped errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b'[{"00081115": {"vr": "SQ", "Value": [' * 2_000 + b"{}" + b"]}}]" * 2_000,
        b'{"00080018": {"vr": "UI"}}',
        b"[1, 2, 3]",
        b'[{"00280010": {"vr": "US", "Value": [{"a": 1}]}}]',
        b'[{"00280010": {"vr": 7, "Value": [1]}}]',
        b'[{"0028001X": {"vr": "US", "Value": [1]}}]',
        b'[{"00280010": {"vr": "US", "Value": "16"}}]',
        b'[{"00282000": {"vr": "OB", "BulkDataURI": 5}}]',
        b'[{"00280010": {"vr": "US", "Value": [1e400]}}]',
        b"\xff\xfe\x00",
        json.dumps([ITEM, ITEM]).encode(),
    ],
    ids=[
        "100k-brackets",
        "deep-sequences",
        "object-not-array",
        "numbers",
        "object-as-number",
        "vr-not-string",
        "bad-tag",
        "value-not-list",
        "bulk-uri-not-string",
        "infinite",
        "not-utf",
        "two-items-for-one-instance",
    ],
)
async def test_malformed_metadata_gives_typed_errors(
    hostile: HostileServer, bounded: Bound, body: bytes
) -> None:
    answer(hostile, "/metadata", json_response(body))
    await raises(bounded, ProtocolError, metadata(web(hostile)))


# --- 6. endless paging -----------------------------------------------------------------------


async def test_qido_pages_rotated_by_one_end_the_search(
    hostile: HostileServer, bounded: Bound, caplog: pytest.LogCaptureFixture
) -> None:
    items = [{"0020000E": {"vr": "UI", "Value": [f"1.2.{i}"]}} for i in range(5)]

    def write(request: Request, writer: asyncio.StreamWriter) -> None:
        page = len([r for r in hostile.requests if "/series?" in r.target])
        rotated = items[page % 5 :] + items[: page % 5]
        writer.write(json_response(json.dumps(rotated).encode()))

    route(hostile, r"/series\?", write)
    client = web(hostile)
    client.qido_page_size = 5
    async with client:
        found = await asyncio.wait_for(client.search_for_series(), 30)
    assert sorted(ds.SeriesInstanceUID for ds in found) == [f"1.2.{i}" for i in range(5)]
    assert len(hostile.requests) == 2
    assert any("repeated 5 of its 5 items" in r.getMessage() for r in caplog.records)


async def test_qido_pages_that_never_end_stop_at_the_page_cap(
    hostile: HostileServer, bounded: Bound, caplog: pytest.LogCaptureFixture
) -> None:
    bounded.seconds = 30.0

    def write(request: Request, writer: asyncio.StreamWriter) -> None:
        offset = int(request.target.split("offset=")[1].split("&")[0])
        page = [{"0020000E": {"vr": "UI", "Value": [f"1.2.{offset}"]}}]
        writer.write(json_response(json.dumps(page).encode()))

    route(hostile, r"/series\?", write)
    client = web(hostile, deadline=25.0)
    client.qido_page_size = 1
    assert client._qido.max_pages == 1000  # the stated default
    client._qido.max_pages = 40
    async with client:
        found = await asyncio.wait_for(client.search_for_series(), 30)
    assert len(found) == 40
    assert len(hostile.requests) == 40
    assert any("stopped after 40 pages" in r.getMessage() for r in caplog.records)


# --- null attributes: no silent shift of levels ----------------------------------------------


@pytest.fixture(scope="module")
def slide_json(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """DICOM JSON of a synthetic three-level slide, pixel data left out."""
    folder = tmp_path_factory.mktemp("slide")
    items = []
    for path in write_slide(folder, SlideSpec(size=(256, 256), tile_size=(64, 64), levels=3)):
        ds = pydicom.dcmread(path)
        del ds.PixelData
        items.append(ds.to_json_dict())
    return items


def _serve_slide(server: HostileServer, items: list[dict[str, Any]]) -> None:
    study, series = items[0]["0020000D"]["Value"][0], items[0]["0020000E"]["Value"][0]
    entry = {"0020000D": items[0]["0020000D"], "0020000E": items[0]["0020000E"]}
    body = json.dumps(items).encode()
    answer(server, r"/series\?", json_response(json.dumps([entry]).encode()))
    answer(server, r"/instances\?", json_response(b"[]"))
    answer(server, f"/studies/{study}/series/{series}/metadata", json_response(body))


async def test_a_level_with_null_rows_is_named_never_silently_dropped(
    hostile: HostileServer,
    bounded: Bound,
    caplog: pytest.LogCaptureFixture,
    slide_json: list[dict[str, Any]],
) -> None:
    items = json.loads(json.dumps(slide_json))
    level0 = items[0]
    level0["00280010"] = {"vr": "US"}  # Rows: null
    sop = level0["00080018"]["Value"][0]
    _serve_slide(hostile, items)
    client = web(hostile, max_response_bytes=64 << 20)
    async with client:
        slides = await asyncio.wait_for(dicomslide.find_slides(client), 30)
        # The skip is logged and names the instance and the attribute.
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert any(sop in m and "Rows" in m for m in warnings), warnings
        assert [s.num_levels for s in slides] == [2]
        # Given the metadata directly, the slide refuses it with a typed error.
        metadata = await client.retrieve_series_metadata(
            items[0]["0020000D"]["Value"][0], items[0]["0020000E"]["Value"][0]
        )
        with pytest.raises(InvalidDataError, match=sop):
            dicomslide.Slide(client, metadata)


# --- chunked encoding, lengths, headers --------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        # a chunk that promises more than it sends, then the connection closes
        head(content_type="application/dicom+json", transfer_encoding="chunked") + b"100\r\n[{}",
        # a chunk size that is not hexadecimal
        head(content_type="application/dicom+json", transfer_encoding="chunked")
        + b"zz\r\n[]\r\n0\r\n\r\n",
        # Content-Length larger than the body
        head(content_type="application/dicom+json", content_length="1000") + b"[]",
        # both Content-Length and chunked (request smuggling shape)
        head(
            content_type="application/dicom+json", content_length="2", transfer_encoding="chunked"
        )
        + b"2\r\n[]\r\n0\r\n\r\n",
        # a status line that is not HTTP
        b"HTTP/9 OK\r\n\r\n[]",
        # a header line of 1 MiB
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n[]",
        # 20,000 header lines
        b"HTTP/1.1 200 OK\r\n" + b"X-Many: a\r\n" * 20_000 + b"\r\n[]",
        # nothing at all
        b"",
    ],
    ids=[
        "chunk-short",
        "chunk-size-garbage",
        "length-short",
        "length-and-chunked",
        "bad-status",
        "huge-header",
        "header-flood",
        "empty",
    ],
)
async def test_broken_http_framing_gives_typed_errors(
    hostile: HostileServer, bounded: Bound, raw: bytes
) -> None:
    answer(hostile, "/metadata", raw)
    error = await raises(bounded, DicomSlideError, metadata(web(hostile)))
    assert isinstance(error, TransportError | ProtocolError), type(error)


async def test_content_length_longer_than_the_body_is_not_accepted_as_json(
    hostile: HostileServer, bounded: Bound
) -> None:
    # Shorter: the surplus is ignored by HTTP/1.1 framing, and the JSON must still be whole.
    answer(
        hostile,
        "/metadata",
        head(content_type="application/dicom+json", content_length="5") + b'[{"00',
    )
    await raises(bounded, ProtocolError, metadata(web(hostile)))


# --- multipart edge cases ----------------------------------------------------------------------


MULTIPART = 'multipart/related; type="application/octet-stream"; boundary=b'


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"--b\r\nX-Big: " + b"a" * (200 << 10) + b"\r\n\r\nframe\r\n--b--", ProtocolError),
        (b"--b\r\nContent-Length: 999999999999\r\n\r\nframe\r\n--b--", ResponseTooLargeError),
        (b"--b\r\nContent-Length: 3\r\n\r\nframe\r\n--b--", ProtocolError),
        (b"--b\r\nbroken header line\r\n\r\nframe\r\n--b--", ProtocolError),
        (b"--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b\r\n\r\nthree\r\n--b--", ProtocolError),
    ],
    ids=[
        "huge-part-headers",
        "huge-content-length",
        "wrong-content-length",
        "bad-header",
        "extra-parts",
    ],
)
async def test_multipart_edge_cases_give_typed_errors(
    hostile: HostileServer, bounded: Bound, body: bytes, kind: type[Exception]
) -> None:
    answer(hostile, "/frames/", head(content_type=MULTIPART, content_length=str(len(body))) + body)
    await frames_raise(hostile, bounded, kind, [1, 2], max_frame_bytes=1 << 20)


async def test_missing_boundary_parameter_is_typed(hostile: HostileServer, bounded: Bound) -> None:
    answer(hostile, "/frames/", head(content_type="multipart/related", content_length="2") + b"xx")
    await frames_raise(hostile, bounded, DicomSlideError, [1])


async def test_gzip_trickled_multipart_with_nested_parts_and_trailers_gives_exact_bytes(
    hostile: HostileServer, bounded: Bound
) -> None:
    # A multipart message inside a part, and lines that start like the boundary but are not.
    nested = b"--inner\r\nContent-Type: text/plain\r\n\r\n--bx\r\n--inner--"
    frames = [bytes(range(256)) * 4, nested, b"\r\n--b-not-a-boundary\r\n"]
    body = (
        b"".join(
            f"--b\r\nContent-Type: application/octet-stream\r\nContent-Location: "
            f"{FRAMES}{i + 1}\r\n\r\n".encode()
            + frame
            + b"\r\n"
            for i, frame in enumerate(frames)
        )
        + b"--b--\r\nepilogue"
    )
    packed = gzip.compress(body)

    async def write(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(
            head(
                content_type=MULTIPART,
                content_encoding="gzip",
                transfer_encoding="chunked",
                trailer="X-Echo",
            )
        )
        for i in range(0, len(packed), 7):  # 7-byte chunks
            writer.write(chunk(packed[i : i + 7]))
            await writer.drain()
        writer.write(f"0\r\nX-Echo: {echoed(request)}\r\n\r\n".encode())

    route(hostile, "/frames/", write)
    client = web(hostile)
    async with client:
        got = await asyncio.wait_for(read_frames(client, [1, 2, 3]), 30)
    assert got == frames


# --- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made here, with cryptography)."""
    pytest.importorskip("cryptography", reason="cryptography makes the test certificate")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hostile loopback")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_server(certificate: tuple[Path, Path]) -> Iterator[HostileServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    server = HostileServer(context).start()
    answer(server, "/metadata", json_response(json.dumps([ITEM]).encode()))
    yield server
    server.stop()


async def test_self_signed_tls_is_refused_by_default(
    tls_server: HostileServer, bounded: Bound
) -> None:
    client = dicomslide.DICOMwebClient(
        f"{tls_server.url}?access_token={TOKEN}",
        auth=("alice", PASSWORD),
        **_accepted({"deadline": DEADLINE}),
    )
    error = await raises(bounded, TransportError, metadata(client))
    assert "CERTIFICATE_VERIFY_FAILED" in str(error) or "certificate" in str(error).lower()
    assert not tls_server.requests  # nothing, credentials least of all, was sent


async def test_self_signed_tls_is_accepted_with_its_ca(
    tls_server: HostileServer, bounded: Bound, certificate: tuple[Path, Path]
) -> None:
    client = dicomslide.DICOMwebClient(
        tls_server.url, verify=str(certificate[0]), **_accepted({"deadline": DEADLINE})
    )
    ds = await asyncio.wait_for(metadata(client), 30)
    assert ds.SOPInstanceUID == SOP


async def test_plain_http_where_tls_was_asked_is_a_transport_error(
    hostile: HostileServer, bounded: Bound
) -> None:
    answer(hostile, "/metadata", json_response(b"[]"))
    url = hostile.url.replace("http://", "https://")
    client = dicomslide.DICOMwebClient(
        f"{url}?access_token={TOKEN}", **_accepted({"deadline": DEADLINE})
    )
    await raises(bounded, TransportError, metadata(client))


async def test_redirect_to_a_slow_drip_is_still_bounded(
    hostile: HostileServer, bounded: Bound
) -> None:
    bounded.seconds = DEADLINE_BOUND
    answer(hostile, "/metadata", head("302 Found", location="/dicom-web/drip", content_length="0"))
    route(hostile, "/drip", lambda r, w: drip(w, b"HTTP/1.1 200 OK\r\n"))
    await raises(bounded, RequestTimeoutError, metadata(web(hostile)))


async def test_a_slow_consumer_does_not_use_up_the_deadline(
    hostile: HostileServer, bounded: Bound
) -> None:
    """Only waits on the server count: 3 x 1.2 s of consumer time exceed deadline=2."""
    bounded.seconds = 15.0
    frames = [bytes([i]) * 4096 for i in range(3)]
    body = b"".join(b"--b\r\n\r\n" + frame + b"\r\n" for frame in frames) + b"--b--\r\n"
    answer(hostile, "/frames/", head(content_type=MULTIPART) + body)
    client = web(hostile, max_concurrent_requests=1)
    got = []
    async with client:
        async for _, frame in client.iter_frames(STUDY, SERIES, SOP, [1, 2, 3]):
            got.append(frame.data)
            await asyncio.sleep(1.2)
    assert got == frames

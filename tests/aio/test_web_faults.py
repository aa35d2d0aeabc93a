"""Faults, cancellation, credentials and QIDO paging of :class:`dicomslide.DICOMwebClient`.

Uses the in-process server of ``test_web_requests.py``; no test waits for real time (retry
waits are recorded through ``dicomslide.sources.web.transport._sleep``).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import dicomslide
from dicomslide.sources import web
from tests.aio.test_web_requests import (
    BASE,
    BOUNDARY,
    OTHER_HOST,
    RLE,
    SPEC,
    BrokenStream,
    FakeDicomWeb,
    Route,
    multipart_body,
    multipart_type,
    opened,
    slide_files,  # noqa: F401  (fixture)
    truth,
)

STAR = "transfer-syntax=*"


@pytest.fixture
def server(slide_files: list[Path]) -> FakeDicomWeb:  # noqa: F811
    return FakeDicomWeb(slide_files)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retry waits, recorded instead of waited."""
    recorded: list[float] = []

    async def fake_sleep(delay: float) -> None:
        recorded.append(delay)

    monkeypatch.setattr(web.transport, "_sleep", fake_sleep)
    return recorded


def fail_times(
    kind: str,
    responses: list[httpx.Response | Exception | Callable[[httpx.Request, Route], httpx.Response]],
) -> Callable[[httpx.Request, Route], httpx.Response | None]:
    """Answer the first requests of a kind with these responses (or raise these errors).

    A callable among them builds its response from the request.
    """
    queue = list(responses)

    def hook(request: httpx.Request, route: Route) -> httpx.Response | None:
        if route.kind != kind or not queue:
            return None
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        if callable(item):
            return item(request, route)
        return item

    return hook


def first_frames_request(
    build: Callable[[httpx.Request, Route], httpx.Response],
) -> Callable[[httpx.Request, Route], httpx.Response | None]:
    """Answer the first frames request with ``build``; the fake server answers the rest."""
    return fail_times("frames", [build])


def frames_response(
    server: FakeDicomWeb, request: httpx.Request, route: Route, **kw: Any
) -> bytes:
    return multipart_body(server.frame_parts(request, route), **kw)


# --- retries ------------------------------------------------------------------------------


async def test_503_burst_is_retried(server: FakeDicomWeb, sleeps: list[float]) -> None:
    busy = [httpx.Response(503, headers={"Retry-After": "0"}) for _ in range(2)]
    server.on_request = fail_times("frames", list(busy))
    async with opened(server) as (_, slide):
        region = await slide.get_image_region((0, 0), 0, (128, 300))
    np.testing.assert_array_equal(region, truth(0, 0, (128, 300)))
    assert len(server.frame_requests) == 3
    assert server.frame_requests[0].numbers == server.frame_requests[2].numbers == [1, 2, 3]
    assert sleeps == [0.0, 0.0]


async def test_retry_after_is_honoured(server: FakeDicomWeb, sleeps: list[float]) -> None:
    server.on_request = fail_times(
        "metadata",
        [
            httpx.Response(429, headers={"Retry-After": "7"}),
            httpx.Response(503, headers={"Retry-After": "3600"}),  # capped by max_backoff
        ],
    )
    async with server.client(retry=dicomslide.RetryPolicy(attempts=3, max_backoff=30)) as c:
        inst = server.volume
        assert len(await c.retrieve_series_metadata(inst.study, inst.series)) == 2
    assert sleeps == [7.0, 30.0]


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("2", 2.0, 2.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0, 0.0),  # in the past
        ("Fri, 01 Jan 9999 00:00:00 GMT", 5.0, 5.0),  # far future: capped
        ("soon", 0.0, 0.1),  # not a number nor a date: jitter, not a crash
    ],
)
def test_retry_after_values(value: str, low: float, high: float) -> None:
    policy = dicomslide.RetryPolicy(backoff=0.05, max_backoff=5.0)
    response = httpx.Response(503, headers={"Retry-After": value})
    assert low <= policy.delay(0, response) <= high


@pytest.mark.parametrize(("status", "error"), [(404, dicomslide.NotFoundError), (400, None)])
async def test_client_errors_on_metadata_are_not_retried(
    server: FakeDicomWeb, sleeps: list[float], status: int, error: type[Exception] | None
) -> None:
    server.on_request = fail_times("metadata", [httpx.Response(status, text="nope")] * 3)
    async with server.client() as client:
        inst = server.volume
        with pytest.raises(dicomslide.DicomWebError) as info:
            await client.retrieve_series_metadata(inst.study, inst.series)
    assert len(server.requests_of("metadata")) == 1
    assert sleeps == []
    assert info.value.status_code == status
    assert info.value.url == f"{BASE}/studies/{inst.study}/series/{inst.series}/metadata"
    if error is not None:
        assert isinstance(info.value, error)
    else:
        assert not isinstance(info.value, dicomslide.NotFoundError)


async def test_exhausted_retries_raise_with_status(
    server: FakeDicomWeb, sleeps: list[float]
) -> None:
    server.on_request = fail_times("metadata", [httpx.Response(502)] * 10)
    async with server.client(retry=dicomslide.RetryPolicy(attempts=4, backoff=0.0)) as client:
        with pytest.raises(dicomslide.DicomWebError) as info:
            await client.retrieve_series_metadata(server.volume.study, server.volume.series)
    assert info.value.status_code == 502
    assert len(server.requests_of("metadata")) == 4
    assert len(sleeps) == 3


@pytest.mark.parametrize(
    ("failure", "is_timeout"),
    [(httpx.ReadTimeout("slow"), True), (httpx.ConnectError("refused"), False)],
)
async def test_transport_failures_raise_transport_error_a_timeout_only_when_one(
    server: FakeDicomWeb, sleeps: list[float], failure: httpx.TransportError, is_timeout: bool
) -> None:
    server.on_request = fail_times("metadata", [failure] * 10)
    async with server.client() as client:
        with pytest.raises(dicomslide.TransportError) as info:
            await client.retrieve_series_metadata(server.volume.study, server.volume.series)
    assert isinstance(info.value, TimeoutError) is is_timeout
    assert ("timed out" in str(info.value)) is is_timeout
    assert len(server.requests_of("metadata")) == 3


# --- broken frames responses --------------------------------------------------------------


async def test_connection_reset_mid_body_refetches_only_missing_frames(
    server: FakeDicomWeb, sleeps: list[float]
) -> None:
    def reset(request: httpx.Request, route: Route) -> httpx.Response:
        body = frames_response(server, request, route)
        # Everything up to the middle of the fourth part, then the connection drops.
        cut = body.index(f"--{BOUNDARY}".encode(), 0)
        for _ in range(4):
            cut = body.index(f"--{BOUNDARY}".encode(), cut + 1)
        stream = BrokenStream(body[: cut + 200])
        return httpx.Response(200, headers={"content-type": multipart_type()}, stream=stream)

    server.on_request = first_frames_request(reset)
    async with opened(server) as (_, slide):
        region = await slide.get_image_region((0, 0), 0, (256, 1000))
    np.testing.assert_array_equal(region, truth(0, 0, (256, 1000)))
    asked = [fr.numbers for fr in server.frame_requests]
    assert asked == [list(range(1, 17)), list(range(5, 17))]


@pytest.mark.parametrize("keep", [0, 3, 8])
async def test_truncated_multipart_refetches_only_missing_frames(
    server: FakeDicomWeb, sleeps: list[float], keep: int
) -> None:
    def truncate(request: httpx.Request, route: Route) -> httpx.Response:
        parts = server.frame_parts(request, route)[:keep]
        # Fewer parts and no closing delimiter.
        return httpx.Response(
            200,
            content=multipart_body(parts, close=False),
            headers={"content-type": multipart_type()},
        )

    server.on_request = first_frames_request(truncate)
    async with opened(server) as (_, slide):
        region = await slide.get_image_region((0, 0), 0, (128, 1000))
    np.testing.assert_array_equal(region, truth(0, 0, (128, 1000)))
    asked = [fr.numbers for fr in server.frame_requests]
    # The last part has all its Content-Length bytes: it is kept, the rest asked again (with
    # all 8 parts in, only the close delimiter is missing: nothing is asked again).
    assert asked == [list(range(1, 9))] + ([list(range(keep + 1, 9))] if keep < 8 else [])


async def test_short_but_closed_multipart_refetches_missing(
    server: FakeDicomWeb, sleeps: list[float]
) -> None:
    def short(request: httpx.Request, route: Route) -> httpx.Response:
        parts = server.frame_parts(request, route)[:5]
        return httpx.Response(
            200, content=multipart_body(parts), headers={"content-type": multipart_type()}
        )

    server.on_request = first_frames_request(short)
    async with opened(server) as (_, slide):
        region = await slide.get_image_region((0, 0), 0, (128, 1000))
    np.testing.assert_array_equal(region, truth(0, 0, (128, 1000)))
    assert [fr.numbers for fr in server.frame_requests] == [list(range(1, 9)), [6, 7, 8]]


async def test_persistent_reset_raises_transport_error(
    server: FakeDicomWeb, sleeps: list[float]
) -> None:
    def reset(request: httpx.Request, route: Route) -> httpx.Response | None:
        if route.kind != "frames":
            return None
        return httpx.Response(
            200, headers={"content-type": multipart_type()}, stream=BrokenStream(b"")
        )

    server.on_request = reset
    async with opened(server) as (_, slide):
        with pytest.raises(dicomslide.TransportError):
            await slide.get_image_region((0, 0), 0, (128, 128))
    assert len(server.frame_requests) == 3  # the policy's attempts


async def test_reordered_parts_without_location_cannot_be_detected_but_with_it_are_mapped(
    server: FakeDicomWeb,
) -> None:
    # With Content-Location naming each frame, reordered parts land where they belong.
    def reorder(request: httpx.Request, route: Route) -> httpx.Response | None:
        if route.kind != "frames":
            return None
        parts = server.frame_parts(request, route)
        locations: list[str | None] = [
            f"{request.url.path[: request.url.path.rindex('/')]}/{n}" for n in route.numbers
        ]
        return httpx.Response(
            200,
            content=multipart_body(parts[::-1], locations=locations[::-1]),
            headers={"content-type": multipart_type()},
        )

    server.on_request = reorder
    async with opened(server) as (_, slide):
        region = await slide.get_image_region((0, 0), 0, (256, 1000))
    np.testing.assert_array_equal(region, truth(0, 0, (256, 1000)))


def _bad_parts(server: FakeDicomWeb, fault: str) -> None:
    def bad(request: httpx.Request, route: Route) -> httpx.Response | None:
        if route.kind != "frames":
            return None
        parts = server.frame_parts(request, route)
        prefix = request.url.path[: request.url.path.rindex("/")]
        locations: list[str | None] = [None] * len(parts)
        if fault == "extra":
            parts = [*parts, parts[0]]
            locations.append(None)
        elif fault == "duplicate":
            locations = [f"{prefix}/{route.numbers[0]}"] * len(parts)
        else:
            locations[0] = f"{prefix}/40"
        return httpx.Response(
            200,
            content=multipart_body(parts, locations=locations),
            headers={"content-type": multipart_type()},
        )

    server.on_request = bad


@pytest.mark.parametrize("fault", ["duplicate", "unasked"])
async def test_duplicate_or_unasked_parts_raise_protocol_error(
    server: FakeDicomWeb, sleeps: list[float], fault: str
) -> None:
    _bad_parts(server, fault)
    async with opened(server) as (_, slide):
        with pytest.raises(dicomslide.ProtocolError):
            await slide.get_image_region((0, 0), 0, (128, 300))
    assert len(server.frame_requests) == 1  # a malformed answer is not retried


async def test_extra_parts_raise_protocol_error_after_the_frames(
    server: FakeDicomWeb, sleeps: list[float]
) -> None:
    # Frames are handed on as their parts arrive, so an extra trailing part can only be
    # noticed after all frames asked for were delivered: iter_frames raises then.
    _bad_parts(server, "extra")
    inst = server.volume
    got: list[int] = []

    async def collect(client: dicomslide.DICOMwebClient) -> None:
        async for number, _ in client.iter_frames(inst.study, inst.series, inst.sop, [1, 2]):
            got.append(number)

    async with server.client() as client:
        with pytest.raises(dicomslide.ProtocolError, match="more parts"):
            await collect(client)
    assert got == [1, 2]
    assert len(server.frame_requests) == 1


class _Stream(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> Any:
        for i in range(0, len(self.data), 1000):
            yield self.data[i : i + 1000]


async def test_gzip_encoded_multipart_is_decoded(server: FakeDicomWeb) -> None:
    def gzipped(request: httpx.Request, route: Route) -> httpx.Response | None:
        if route.kind != "frames":
            return None
        body = gzip.compress(frames_response(server, request, route))
        headers = {"content-type": multipart_type(), "content-encoding": "gzip"}
        return httpx.Response(200, headers=headers, stream=_Stream(body))

    server.on_request = gzipped
    async with opened(server) as (_, slide):
        region = await slide.get_image_region((0, 0), 0, (256, 300))
    np.testing.assert_array_equal(region, truth(0, 0, (256, 300)))


# --- transfer syntax fallback -------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 406, 500])
async def test_refused_wildcard_falls_back_once_per_instance(
    server: FakeDicomWeb, sleeps: list[float], status: int
) -> None:
    server.refuse_wildcard = status
    size = (200, 300)
    offsets = [(0, 0), (300, 500), (100, 600), (450, 100)]
    async with opened(server, max_frames_per_request=4) as (_, slide):
        results = await asyncio.gather(*(slide.get_image_region(o, 0, size) for o in offsets))
        for off, region in zip(offsets, results, strict=True):
            np.testing.assert_array_equal(region, truth(*off, size))
        later = await slide.get_image_region((0, 700), 0, (300, 300))
        np.testing.assert_array_equal(later, truth(0, 700, (300, 300)))
    # The metadata names the syntax: every request asks for it, the wildcard never.
    assert not [fr for fr in server.frame_requests if STAR in fr.accept]
    assert server.frame_requests
    assert all(f"transfer-syntax={RLE}" in fr.accept for fr in server.frame_requests)
    assert all('type="image/dicom-rle"' in fr.accept for fr in server.frame_requests)


@pytest.mark.parametrize("status", [400, 406])
async def test_refused_explicit_syntax_falls_back_to_stored_bytes_once(
    server: FakeDicomWeb, status: int
) -> None:
    server.refuse_explicit = status
    offsets = [(0, 0), (300, 500), (100, 600), (450, 100)]
    async with opened(server, max_frames_per_request=4) as (_, slide):
        results = await asyncio.gather(
            *(slide.get_image_region(o, 0, (200, 300)) for o in offsets)
        )
        for off, region in zip(offsets, results, strict=True):
            np.testing.assert_array_equal(region, truth(*off, (200, 300)))
    explicit = [fr for fr in server.frame_requests if STAR not in fr.accept]
    # One refused explicit request per instance read, the rest ask for stored bytes.
    assert len(explicit) == len({fr.sop for fr in server.frame_requests}) == 1
    assert server.frame_requests[0] is explicit[0]
    assert len(server.frame_requests) > 2


async def test_syntax_learnt_from_a_stored_bytes_response(server: FakeDicomWeb) -> None:
    # Like Orthanc: no Available Transfer Syntax UID, and RLE implies nothing. The first
    # request asks for stored bytes; its labelled answer makes every later one explicit.
    server.hide_syntax = True
    async with opened(server, max_frames_per_request=2) as (_, slide):
        first = await slide.get_image_region((0, 0), 0, (256, 256))
        np.testing.assert_array_equal(first, truth(0, 0, (256, 256)))
        later = await slide.get_image_region((300, 500), 0, (400, 300))
        np.testing.assert_array_equal(later, truth(300, 500, (400, 300)))
    accepts = [fr.accept for fr in server.frame_requests]
    assert STAR in accepts[0]
    assert len(accepts) > 2
    assert all(f"transfer-syntax={RLE}" in a and STAR not in a for a in accepts[1:])


async def test_failures_are_not_cached(server: FakeDicomWeb, sleeps: list[float]) -> None:
    server.on_request = fail_times("frames", [httpx.Response(404, text="gone")])
    async with opened(server) as (_, slide):
        with pytest.raises(dicomslide.NotFoundError):
            await slide.get_image_region((0, 0), 0, (128, 128))
        region = await slide.get_image_region((0, 0), 0, (128, 128))
        np.testing.assert_array_equal(region, truth(0, 0, (128, 128)))
        assert slide.cache_stats.hits == 0
    assert [fr.numbers for fr in server.frame_requests] == [[1], [1]]


# --- cancellation ---------------------------------------------------------------------------


async def test_cancelling_one_waiter_keeps_the_shared_fetch(server: FakeDicomWeb) -> None:
    size = (256, 256)
    async with opened(server) as (_, slide):
        server.gate = asyncio.Event()
        tasks = [asyncio.create_task(slide.get_image_region((0, 0), 0, size)) for _ in range(5)]
        await server.frames_arrived.wait()
        tasks[2].cancel()
        await asyncio.sleep(0)
        server.gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    for i, region in enumerate(results):
        if i != 2:
            assert isinstance(region, np.ndarray)
            np.testing.assert_array_equal(region, truth(0, 0, size))
    assert [fr.numbers for fr in server.frame_requests] == [[1, 2, 9, 10]]


async def test_cancelling_all_waiters_of_a_failing_fetch_logs_nothing(
    server: FakeDicomWeb,
) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        async with opened(server) as (_, slide):
            server.gate = asyncio.Event()
            server.on_request = fail_times("frames", [httpx.Response(404, text="gone")])
            tasks = [
                asyncio.create_task(slide.get_image_region((0, 0), 0, (256, 256)))
                for _ in range(4)
            ]
            await server.frames_arrived.wait()
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results)
            server.gate.set()
            for _ in range(20):
                await asyncio.sleep(0)
            # The failure was not cached: the next read fetches again and succeeds.
            region = await slide.get_image_region((0, 0), 0, (256, 256))
            np.testing.assert_array_equal(region, truth(0, 0, (256, 256)))
        del tasks, results
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert reported == []
    assert len(server.frame_requests) == 2


# --- credentials ----------------------------------------------------------------------------


async def test_credentials_go_to_the_origin_only(slide_files: list[Path]) -> None:  # noqa: F811
    server = FakeDicomWeb(slide_files, bulk_on_other_host=True)
    async with server.client(
        headers={"X-Api-Key": "key-SECRET"}, auth=("alice", "pw-SECRET")
    ) as c:
        slides = await dicomslide.find_slides(c, correct_color=True)
        await slides[0].get_image_region((0, 0), 0, (64, 64))
    bulk = server.requests_of("bulk")
    assert bulk
    assert all(str(r.url).startswith(OTHER_HOST) for r in bulk)
    for request in server.requests:
        own = str(request.url).startswith(BASE)
        assert ("authorization" in request.headers) == own
        assert ("x-api-key" in request.headers) == own
        if own:
            expected = base64.b64encode(b"alice:pw-SECRET").decode()
            assert request.headers["authorization"] == f"Basic {expected}"


async def test_redirect_to_other_host_drops_credentials(server: FakeDicomWeb) -> None:
    inst = server.volume

    def redirect(request: httpx.Request, route: Route) -> httpx.Response | None:
        if route.kind == "metadata" and request.url.host == "dicomweb.test":
            return httpx.Response(
                307, headers={"location": f"{OTHER_HOST}{request.url.path}?sig=abcdef"}
            )
        return None

    server.on_request = redirect
    async with server.client(headers={"Authorization": "Bearer tok-SECRET"}) as client:
        datasets = await client.retrieve_series_metadata(inst.study, inst.series)
    assert len(datasets) == 2
    first, second = server.requests_of("metadata")
    assert first.headers["authorization"] == "Bearer tok-SECRET"
    assert second.url.host == "other-host.test"
    assert "authorization" not in second.headers


async def test_errors_never_show_credentials(server: FakeDicomWeb, sleeps: list[float]) -> None:
    def echo(request: httpx.Request, route: Route) -> httpx.Response | None:
        # A server that echoes the request, credentials and all, in its error body.
        return httpx.Response(
            404, text=f"No such thing: {request.url} {request.headers.get('authorization')}"
        )

    server.on_request = echo
    url = f"{BASE}?access_token=tok-SECRET&project=p1"
    async with dicomslide.DICOMwebClient(
        url, transport=server.transport(), auth=("alice", "pw-SECRET")
    ) as client:
        with pytest.raises(dicomslide.NotFoundError) as info:
            await client.retrieve_series_metadata(server.volume.study, server.volume.series)
    request = server.requests[0]
    # The token goes with the request, after the path.
    assert request.url.path.endswith("/metadata")
    assert request.url.params["access_token"] == "tok-SECRET"
    basic = base64.b64encode(b"alice:pw-SECRET").decode()
    for text in (str(info.value), info.value.url, repr(info.value)):
        assert "SECRET" not in text
        assert basic not in text
    assert "project=p1" in info.value.url


async def test_transport_error_messages_never_show_credentials(
    server: FakeDicomWeb, sleeps: list[float]
) -> None:
    def fail(request: httpx.Request, route: Route) -> httpx.Response | None:
        raise httpx.ConnectError(f"cannot reach {request.url}")

    server.on_request = fail
    url = f"{BASE}?token=tok-SECRET"
    async with dicomslide.DICOMwebClient(url, transport=server.transport()) as client:
        with pytest.raises(dicomslide.TransportError) as info:
            await client.search_for_series()
    assert "SECRET" not in str(info.value)


# --- QIDO paging ----------------------------------------------------------------------------


def _series(uid: str, modality: str) -> dict[str, Any]:
    return {
        "0020000D": {"vr": "UI", "Value": [SPEC_STUDY]},
        "0020000E": {"vr": "UI", "Value": [uid]},
        "00080060": {"vr": "CS", "Value": [modality]},
    }


SPEC_STUDY = "1.2.3.4"


async def test_qido_pages_are_all_collected(server: FakeDicomWeb) -> None:
    server.extra_series = [_series(f"1.2.3.{i}", "SM") for i in range(6)]
    async with server.client() as client:
        client.qido_page_size = 3
        series = await client.search_for_series(search_filters={"Modality": "SM"})
    assert len(series) == 7
    assert len({s.SeriesInstanceUID for s in series}) == 7
    offsets = [r.url.params["offset"] for r in server.requests_of("qido-series")]
    assert offsets == ["0", "3", "6"]


async def test_qido_capped_pages_with_warning_are_continued(server: FakeDicomWeb) -> None:
    server.extra_series = [_series(f"1.2.3.{i}", "SM") for i in range(6)]
    server.qido_cap = 2
    async with server.client() as client:
        series = await client.search_for_series()
    assert len({s.SeriesInstanceUID for s in series}) == 7
    assert len(server.requests_of("qido-series")) == 4


@pytest.mark.parametrize("obey_limit", [True, False])
async def test_qido_server_ignoring_offset_does_not_loop(
    server: FakeDicomWeb, obey_limit: bool
) -> None:
    server.extra_series = [_series(f"1.2.3.{i}", "SM") for i in range(6)]
    server.ignore_offset = True
    async with server.client() as client:
        client.qido_page_size = 3 if obey_limit else 1000
        if not obey_limit:
            server.qido_cap = None
        series = await client.search_for_series()
    assert len(server.requests_of("qido-series")) <= 2
    assert len(series) == (3 if obey_limit else 7)
    assert len({s.SeriesInstanceUID for s in series}) == len(series)


async def test_qido_rejected_filter_falls_back_to_client_side_filtering(
    server: FakeDicomWeb,
) -> None:
    server.extra_series = [_series("1.2.3.1", "OT"), _series("1.2.3.2", "SM")]
    server.reject_filters = True
    async with server.client() as client:
        series = await client.search_for_series(search_filters={"Modality": "SM"})
    assert sorted(str(s.SeriesInstanceUID) for s in series) == sorted(
        ["1.2.3.2", server.volume.series]
    )
    queries = [dict(r.url.params) for r in server.requests_of("qido-series")]
    assert len(queries) == 2
    assert queries[0]["Modality"] == "SM"
    assert "Modality" not in queries[1]


async def test_find_slides_through_rejected_filters(server: FakeDicomWeb) -> None:
    server.reject_filters = True
    async with server.client() as client:
        slides = await dicomslide.find_slides(client, correct_color=False)
        assert len(slides) == 1
        assert slides[0].size == SPEC.size


async def test_wildcards_match_on_a_server_that_rejects_filters(server: FakeDicomWeb) -> None:
    # The client filters what the server would not; it must match as QIDO (and the local
    # folder client) does: wildcards, lists, universal matching, not exact strings only.
    server.reject_filters = True
    async with server.client() as client:
        everything = await client.search_for_instances()
        with_container = [ds for ds in everything if "ContainerIdentifier" in ds]
        assert with_container  # the server returns the attribute, so it can be judged
        assert {ds.ContainerIdentifier for ds in with_container} == {"SLIDE-1"}
        server.requests.clear()
        found = await client.search_for_instances(search_filters={"ContainerIdentifier": "S22*"})
        assert [ds for ds in found if "ContainerIdentifier" in ds] == []
        # Rejected with the filter, then asked again without it and filtered here.
        queries = server.requests_of("qido-instances")
        assert ["ContainerIdentifier" in r.url.params for r in queries] == [True, False]
        for wanted in ("SLIDE*", "SL?DE-1", "*", ["S22-0001", "SLIDE-1"], "", None):
            found = await client.search_for_instances(
                search_filters={"ContainerIdentifier": wanted}
            )
            assert len(found) == len(everything), wanted
        # A slide is still found by its exact container through the fallback.
        assert len(await dicomslide.find_slides(client, container_id="SLIDE-1")) == 1
        assert await dicomslide.find_slides(client, container_id="S22*") == []


# --- argument errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: dicomslide.DICOMwebClient("ftp://host/dicom-web"), "http"),
        (lambda: dicomslide.DICOMwebClient("http://user:pw@host/dicom-web"), "auth="),
        (lambda: web.RetryPolicy(attempts=0), "attempts"),
    ],
)
def test_bad_urls_and_retry_counts_are_argument_errors(
    make: Callable[[], object], message: str
) -> None:
    # Not regions: ArgumentError (still a ValueError), not RegionError.
    with pytest.raises(dicomslide.errors.ArgumentError, match=message) as caught:
        make()
    assert isinstance(caught.value, ValueError)
    assert not isinstance(caught.value, dicomslide.RegionError)
    # The old import names keep working.
    assert web.ServerError is dicomslide.errors.ServerError
    assert web.NotAcceptableError is dicomslide.errors.NotAcceptableError

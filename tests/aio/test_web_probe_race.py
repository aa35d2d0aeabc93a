"""A read-ahead window does not wait for a probe that guesses the transfer syntax (issue 14).

Orthanc leaves Available Transfer Syntax UID out of its metadata; for JPEG slides the client
guesses JPEG Baseline from it and asks the first frames request of each instance with that
media type (the probe). Requests sent meanwhile used to wait for the probe's answer, which
delayed a 16-thread scan's 324-frame window by the server's time for the probe. A wrong
guess must not be repeated (Orthanc then transcodes, for seconds), so one request per
instance may ask for stored bytes (``transfer-syntax=*``, never transcoded) beside the probe. A
scripted server (``httpx.MockTransport``) holds the probe's answer until the test lets it go.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx

import dicomslide
from dicomslide._syntaxes import J2K_LOSSLESS, JPEG_BASELINE
from tests.aio.test_web_requests import BOUNDARY, multipart_body

ROOT = "http://dicomweb.test/dicom-web"
STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"
EXPLICIT = f'type="image/jpeg"; transfer-syntax={JPEG_BASELINE}'
STAR = "transfer-syntax=*"


def _jpeg(number: int) -> bytes:
    # Start and end markers around a payload naming the frame: enough for the client,
    # which hands frames on undecoded.
    return b"\xff\xd8\xff\xe0" + f"frame {number}".encode() + b"\xff\xd9"


class ScriptedServer:
    """Answers frames requests with JPEG parts.

    Explicit requests wait for ``release``; requests for stored bytes for ``release_stored``
    (set from the start) or are refused with ``refuse_wildcard``.
    """

    def __init__(self, *, refuse_wildcard: int | None = None) -> None:
        self.requests: list[tuple[str, list[int]]] = []
        self.release = asyncio.Event()
        self.release_stored = asyncio.Event()
        self.release_stored.set()
        self.refuse_wildcard = refuse_wildcard

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        accept = request.headers["accept"]
        numbers = [int(n) for n in request.url.path.rsplit("/", 1)[-1].split(",")]
        self.requests.append((accept, numbers))
        if STAR in accept:
            if self.refuse_wildcard is not None:
                return httpx.Response(self.refuse_wildcard, text="not served that way")
            await self.release_stored.wait()
        else:
            await self.release.wait()
        inner = f"image/jpeg; transfer-syntax={JPEG_BASELINE}"
        body = multipart_body([(_jpeg(n), inner) for n in numbers])
        content_type = f'multipart/related; type="{inner}"; boundary={BOUNDARY}'
        return httpx.Response(200, headers={"content-type": content_type}, content=body)


async def _frames(client: dicomslide.DICOMwebClient, numbers: list[int]) -> list[int]:
    got = []
    async for number, frame in client.iter_frames(STUDY, SERIES, SOP, numbers):
        assert frame.data == _jpeg(number)
        assert frame.transfer_syntax_uid == JPEG_BASELINE
        got.append(number)
    return got


def _client(server: ScriptedServer) -> dicomslide.DICOMwebClient:
    client = dicomslide.DICOMwebClient(ROOT, transport=httpx.MockTransport(server))
    # What the client concludes from an Orthanc JPEG level's metadata (see open).
    client._negotiation.of(SOP).implied = JPEG_BASELINE
    return client


async def _until(condition: object, what: str) -> None:
    for _ in range(200):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_window_asks_for_stored_bytes_beside_a_guessing_probe() -> None:
    server = ScriptedServer()
    async with _client(server) as client:
        probe = asyncio.create_task(_frames(client, list(range(1, 17))))
        await _until(lambda: len(server.requests) == 1, "the probe")
        # The window is answered while the probe's answer is still held back.
        window = await asyncio.wait_for(_frames(client, list(range(17, 341))), 5)
        assert window == list(range(17, 341))
        assert not probe.done()
        # A third request neither guesses again nor races: stored bytes are known to be
        # served now, so it asks by the syntax the window's answer named.
        server.release.set()
        assert await asyncio.wait_for(probe, 5) == list(range(1, 17))
        assert await _frames(client, [400]) == [400]
    accepts = [accept for accept, _ in server.requests]
    assert EXPLICIT in accepts[0]
    assert STAR in accepts[1]
    assert EXPLICIT in accepts[2]
    assert [numbers for _, numbers in server.requests] == [
        list(range(1, 17)),
        list(range(17, 341)),
        [400],
    ]


async def test_only_one_request_races_the_probe() -> None:
    server = ScriptedServer()
    server.release_stored.clear()
    async with _client(server) as client:
        probe = asyncio.create_task(_frames(client, [1]))
        await _until(lambda: len(server.requests) == 1, "the probe")
        first = asyncio.create_task(_frames(client, [2, 3]))
        await _until(lambda: len(server.requests) == 2, "the raced window")
        # While that window races unanswered, a second request waits for the probe.
        second = asyncio.create_task(_frames(client, [4]))
        await asyncio.sleep(0.02)
        assert len(server.requests) == 2
        server.release_stored.set()
        assert await asyncio.wait_for(first, 5) == [2, 3]
        await asyncio.sleep(0.02)
        assert len(server.requests) == 2  # still waiting for the probe's answer
        server.release.set()
        assert await asyncio.wait_for(asyncio.gather(probe, second), 5) == [[1], [4]]
    assert [numbers for accept, numbers in server.requests if STAR in accept] == [[2, 3]]
    assert server.requests[2] == (server.requests[0][0], [4])


async def test_a_refused_wildcard_waits_for_the_probe_and_is_not_asked_again() -> None:
    # A server that refuses stored bytes refuses the raced window once; the window then
    # waits for the probe and follows its answer (the guess was right: explicit).
    server = ScriptedServer(refuse_wildcard=406)
    async with _client(server) as client:
        probe = asyncio.create_task(_frames(client, [1]))
        await _until(lambda: len(server.requests) == 1, "the probe")
        window = asyncio.create_task(_frames(client, list(range(2, 40))))
        await _until(lambda: len(server.requests) == 2, "the refused window")
        more = asyncio.create_task(_frames(client, [50]))
        await asyncio.sleep(0.02)
        assert len(server.requests) == 2  # the refusal is known: nothing more races
        server.release.set()
        await asyncio.wait_for(asyncio.gather(probe, window, more), 5)
    accepts = [accept for accept, _ in server.requests]
    assert sum(STAR in a for a in accepts) == 1
    assert all(EXPLICIT in a for a in accepts[2:])
    assert len(accepts) == 4


async def test_a_syntax_the_metadata_names_is_not_raced() -> None:
    # Not a guess: requests wait for the first answer and ask by name (a server that refuses
    # the wildcard is never asked for it).
    server = ScriptedServer(refuse_wildcard=406)
    async with dicomslide.DICOMwebClient(ROOT, transport=httpx.MockTransport(server)) as client:
        client._negotiation.of(SOP).syntax = JPEG_BASELINE
        probe = asyncio.create_task(_frames(client, [1]))
        await _until(lambda: len(server.requests) == 1, "the probe")
        window = asyncio.create_task(_frames(client, list(range(2, 40))))
        await asyncio.sleep(0.02)
        assert len(server.requests) == 1
        server.release.set()
        await asyncio.wait_for(asyncio.gather(probe, window), 5)
    assert all(EXPLICIT in accept for accept, _ in server.requests)
    assert len(server.requests) == 2


async def test_a_request_while_the_raced_answer_names_no_syntax_yet_does_not_guess_again() -> None:
    # The raced window's headers are in but its first part is not: stored bytes are served,
    # but in which syntax is still unknown. A request then must not repeat the guess (the
    # stored frames are JPEG 2000 here, which Orthanc would transcode to JPEG for seconds):
    # it waits, and once the part names the syntax, later requests ask for that one.
    inner = f"image/jp2; transfer-syntax={J2K_LOSSLESS}"
    codestream = b"\xff\x4f\xff\x51" + b"\x00" * 8
    body_gate = asyncio.Event()
    requests: list[tuple[str, list[int]]] = []
    release = asyncio.Event()

    async def held_body(numbers: list[int]) -> AsyncIterator[bytes]:
        await body_gate.wait()  # set once the raced window's body may come
        yield multipart_body([(codestream, inner) for _ in numbers])

    async def server(request: httpx.Request) -> httpx.Response:
        accept = request.headers["accept"]
        numbers = [int(n) for n in request.url.path.rsplit("/", 1)[-1].split(",")]
        requests.append((accept, numbers))
        if JPEG_BASELINE not in accept:
            content_type = f'multipart/related; type="image/jp2"; boundary={BOUNDARY}'
            return httpx.Response(
                200, headers={"content-type": content_type}, content=held_body(numbers)
            )
        await release.wait()  # the guess: never answered in this test
        return httpx.Response(503)

    async def frames(numbers: list[int]) -> list[tuple[int, str]]:
        return [
            (number, frame.transfer_syntax_uid)
            async for number, frame in client.iter_frames(STUDY, SERIES, SOP, numbers)
        ]

    client = dicomslide.DICOMwebClient(ROOT, transport=httpx.MockTransport(server))
    client._negotiation.of(SOP).implied = JPEG_BASELINE
    async with client:
        probe = asyncio.create_task(frames([1]))
        await _until(lambda: len(requests) == 1, "the probe")
        window = asyncio.create_task(frames(list(range(2, 40))))
        await _until(lambda: len(requests) == 2, "the raced window")
        gap = asyncio.create_task(frames([50]))
        await asyncio.sleep(0.05)
        assert len(requests) == 2, requests[2:]  # no second guess while the syntax is unknown
        body_gate.set()
        assert await asyncio.wait_for(window, 5) == [(n, J2K_LOSSLESS) for n in range(2, 40)]
        assert await asyncio.wait_for(frames([60]), 5) == [(60, J2K_LOSSLESS)]
        probe.cancel()
        gap.cancel()
        await asyncio.gather(probe, gap, return_exceptions=True)
    assert [numbers for _, numbers in requests] == [[1], list(range(2, 40)), [60]]
    assert J2K_LOSSLESS in requests[2][0]
    assert sum(JPEG_BASELINE in accept for accept, _ in requests) == 1

"""Frames are decoded as their multipart parts arrive, not when the response ends (issue 14).

A fake DICOMweb server (``httpx.MockTransport``) streams one part at a time with a pause
between parts and records when it sends each one; the decoder records when it starts on
each frame. Frames must be decoding while later parts are still unsent.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import dicomslide.image
from dicomslide.errors import ProtocolError
from dicomslide.runtime import as_source, frame_service
from tests.aio.test_web_requests import (
    BOUNDARY,
    FakeDicomWeb,
    Route,
    multipart_type,
    opened,
    slide_files,  # noqa: F401  (fixture)
    truth,
)

PAUSE = 0.2  # between parts: far longer than decoding one small tile


class _SlowParts(httpx.AsyncByteStream):
    def __init__(
        self, parts: list[tuple[bytes, str]], events: list[str], *, junk: int | None = None
    ) -> None:
        self.parts = parts
        self.events = events
        self.junk = junk  # this part's body is followed by 10 bytes its Content-Length omits

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i, (body, content_type) in enumerate(self.parts):
            if i:
                await asyncio.sleep(PAUSE)
            head = f"--{BOUNDARY}\r\nContent-Type: {content_type}\r\n"
            head += f"Content-Length: {len(body)}\r\n\r\n"
            self.events.append(f"sent {i}")
            if i == self.junk:
                # The declared bytes arrive first (the part is handed on), then bytes where
                # the delimiter should be.
                yield head.encode() + body
                await asyncio.sleep(PAUSE)
                yield b"0123456789\r\n"
                continue
            yield head.encode() + body + b"\r\n"
        await asyncio.sleep(PAUSE)
        self.events.append("end")
        yield f"--{BOUNDARY}--\r\n".encode()


async def test_frames_decode_while_later_parts_are_on_the_wire(
    slide_files: list[Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = FakeDicomWeb(slide_files)
    events: list[str] = []
    lock = threading.Lock()

    def streamed(request: httpx.Request, route: Route) -> httpx.Response | None:
        if route.kind != "frames":
            return None
        parts = server.frame_parts(request, route)
        stream = _SlowParts(parts, events)
        return httpx.Response(200, headers={"content-type": multipart_type()}, stream=stream)

    real = dicomslide.image.decode_frame

    def recording(*args: Any, **kwargs: Any) -> Any:
        with lock:
            events.append(f"decode {kwargs['frame_number']}")
        return real(*args, **kwargs)

    monkeypatch.setattr(dicomslide.image, "decode_frame", recording)
    server.on_request = streamed
    size = (256, 384)  # a 2 x 3 block of 128-pixel tiles: one request, six parts
    async with opened(server) as (_, slide):
        region = await slide.get_image_region((0, 0), 0, size)
    np.testing.assert_array_equal(region, truth(0, 0, size))
    sent = [e for e in events if e.startswith("sent")]
    decodes = [e for e in events if e.startswith("decode")]
    assert len(server.frame_requests) == 1
    assert len(sent) == len(decodes) == 6
    # A part is handed on as soon as its Content-Length bytes are in, before the delimiter
    # after it (sent with the next part): frame i decodes before part i + 1 is sent.
    for i in range(5):
        assert events.index(decodes[i]) < events.index(f"sent {i + 1}"), events
    assert events.index(decodes[5]) < events.index("end"), events


@pytest.mark.parametrize("short", [2, 5])  # a part in the middle, the last part
async def test_part_decoded_early_but_not_followed_by_its_delimiter(
    slide_files: list[Path],  # noqa: F811
    short: int,
) -> None:
    """A Content-Length that lies is found after the part was handed on (and decoded): the
    read fails, no cache keeps the frame, and a later read fetches it again."""
    server = FakeDicomWeb(slide_files)
    events: list[str] = []
    lying = True

    def streamed(request: httpx.Request, route: Route) -> httpx.Response | None:
        if route.kind != "frames" or not lying:
            return None
        stream = _SlowParts(server.frame_parts(request, route), events, junk=short)
        return httpx.Response(200, headers={"content-type": multipart_type()}, stream=stream)

    server.on_request = streamed
    size = (256, 384)
    async with opened(server) as (client, slide):
        with pytest.raises(ProtocolError, match=f"part {short + 1} declares Content-Length"):
            await slide.get_image_region((0, 0), 0, size)
        source = as_source(client)
        frames = frame_service(source).cache
        tiles = source.runtime.decoded_cache
        uid, number = server.frame_requests[0].sop, server.frame_requests[0].numbers[short]
        assert (uid, server.frame_requests[0].numbers[0]) in frames  # confirmed ones stay
        assert (uid, number) not in frames
        assert tiles.get((uid, number, True)) is None
        assert tiles.get((uid, number, False)) is None
        lying = False
        region = await slide.get_image_region((0, 0), 0, size)
    np.testing.assert_array_equal(region, truth(0, 0, size))
    assert len(server.frame_requests) >= 2

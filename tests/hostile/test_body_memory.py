"""A body read whole is held once: the transport hands on the buffer it read into.

A series' metadata at 100,000 sparse frames is ~60 MB; a ``bytes`` copy of the read buffer
held it twice at the peak (issue 20: DICOMweb memory per frame). Served by the hostile
server on 127.0.0.1 in 1 MB pieces (its own send buffer stays small) and measured with
tracemalloc, which sees every Python allocation of the process.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from typing import Any

import pytest

from dicomslide.errors import ResponseTooLargeError
from dicomslide.sources.web.transport import Transport
from tests.hostile.server import HostileServer, Request
from tests.hostile.test_hostile import head, route

SIZE = 48 << 20
PIECE = b"[" + b" " * ((1 << 20) - 2) + b"]"


def _serve(hostile: HostileServer, size: int) -> None:
    async def write(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(head(content_type="application/dicom+json", content_length=str(size)))
        for _ in range(size // len(PIECE)):
            writer.write(PIECE)
            await writer.drain()

    hostile.reset()
    route(hostile, "/big", write)


def _transport(hostile: HostileServer, budget: int) -> Transport:
    plain: dict[str, Any] = {"headers": None, "auth": None, "transport": None, "retry": None}
    return Transport(
        hostile.url, http2=False, timeout=30.0, verify=True, max_response_bytes=budget, **plain
    )


async def test_a_large_body_is_held_once(hostile: HostileServer) -> None:
    _serve(hostile, SIZE)
    transport = _transport(hostile, 64 << 20)
    tracemalloc.start()
    try:
        response = await transport.send(f"{hostile.url}/big", accept="application/dicom+json")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await transport.aclose()
    body = response.content
    assert len(body) == SIZE
    assert body[: len(PIECE)] == PIECE
    assert body[-len(PIECE) :] == PIECE
    # One body plus bytearray growth slack (CPython over-allocates by ~1/8); a copy to
    # bytes at the end would make the peak at least twice the body.
    assert peak < 1.4 * SIZE, f"peak {peak / SIZE:.2f} x the body"


async def test_the_budget_still_stops_a_large_body(hostile: HostileServer) -> None:
    _serve(hostile, SIZE)
    transport = _transport(hostile, 8 << 20)
    try:
        with pytest.raises(ResponseTooLargeError, match="declares"):
            await transport.send(f"{hostile.url}/big", accept="application/dicom+json")
    finally:
        await transport.aclose()

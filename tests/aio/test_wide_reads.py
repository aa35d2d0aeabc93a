"""WideReadTransport: connections ask for a megabyte per read; bytes and errors as httpx's own.

A plain asyncio HTTP server on 127.0.0.1 sends a body of several megabytes; it must arrive
unchanged and in reads of more than httpcore's 64 KiB, and a refused connection must raise
the httpx error the rest of dicomslide handles.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpcore
import httpx
import pytest

import dicomslide
from dicomslide.sources.web import wide
from dicomslide.sources.web.wide import READ_BYTES, WideReadTransport

BODY = bytes(range(256)) * (12 * 1024)  # 3 MiB


@pytest.fixture
async def http_server() -> AsyncIterator[str]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
            + BODY
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}/body"


def _transport() -> WideReadTransport:
    return WideReadTransport(verify=True, http2=False, limits=httpx.Limits())


async def test_body_arrives_whole_through_reads_larger_than_httpcores(
    http_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[int] = []
    original = httpcore.AnyIOBackend.connect_tcp

    async def recording(self: httpcore.AnyIOBackend, *args: object, **kw: object) -> object:
        stream = await original(self, *args, **kw)  # type: ignore[arg-type]
        read = stream.read

        async def counted(max_bytes: int, timeout: float | None = None) -> bytes:
            asked.append(max_bytes)
            return await read(max_bytes, timeout)

        stream.read = counted  # type: ignore[method-assign]
        return stream

    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", recording)
    async with (
        httpx.AsyncClient(transport=_transport()) as client,
        client.stream("GET", http_server) as response,
    ):
        chunks = [chunk async for chunk in response.aiter_raw()]
    assert b"".join(chunks) == BODY
    assert asked
    assert min(asked) == READ_BYTES
    # What httpcore would have asked for instead: 64 KiB (the reads' count depends on timing).
    assert READ_BYTES > httpcore.AsyncHTTP11Connection.READ_NUM_BYTES


async def test_errors_are_httpx_errors() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port now: the connection is refused.
    async with httpx.AsyncClient(transport=_transport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")


async def test_the_dicomweb_client_reads_through_it(http_server: str) -> None:
    async with dicomslide.DICOMwebClient(http_server.rsplit("/", 1)[0]) as client:
        transport = client._transport.client()._transport  # type: ignore[attr-defined]
        assert isinstance(transport, wide.WideReadTransport)


@pytest.mark.parametrize(
    ("url", "proxy"),
    [
        ("https://127.0.0.1:9/dicom-web", None),  # TLS: reads return one record whatever asked
        ("http://127.0.0.1:9/dicom-web", "http://proxy.invalid:3128"),
    ],
)
async def test_httpx_keeps_its_own_transport_for_tls_and_proxies(
    monkeypatch: pytest.MonkeyPatch, url: str, proxy: str | None
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    if proxy is not None:
        monkeypatch.setenv("HTTP_PROXY", proxy)
    async with dicomslide.DICOMwebClient(url) as client:
        httpx_client = client._transport.client()  # type: ignore[attr-defined]
        assert not isinstance(httpx_client._transport, wide.WideReadTransport)
        if proxy is not None:
            # httpx mounted its proxy transport, as it does for a client without a transport.
            assert any(mount is not None for mount in httpx_client._mounts.values())

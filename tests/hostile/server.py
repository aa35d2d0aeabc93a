"""A hostile HTTP/1.1 server on 127.0.0.1: each route writes whatever bytes its case wants.

Built on :class:`tests.support.loop_server.LoopServer` (the one server scaffold). A route is a
regular expression on the request target and a coroutine that gets the parsed request and
the stream writer, and may lie in every way HTTP allows: endless or slow bodies, wrong
lengths, broken chunking, trailers, huge headers, echoed credentials. Every response closes
its connection, so no case leaks into the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tests.support.loop_server import LoopServer

__all__ = ["HostileServer", "Request", "Route"]


@dataclass
class Request:
    """One request as the server read it."""

    method: str
    target: str
    headers: dict[str, str] = field(default_factory=dict)


Route = Callable[[Request, asyncio.StreamWriter], Awaitable[None]]


class HostileServer(LoopServer):
    """Serves the routes of the running case; 404 for anything else.

    Parameters
    ----------
    ssl_context: ssl.SSLContext | None, optional
        Serve TLS with this context
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(max_lifetime=600.0, thread_name="hostile-server")
        self._ssl = ssl_context
        self.routes: list[tuple[re.Pattern[str], Route]] = []
        self.requests: list[Request] = []
        self.port = 0

    @property
    def url(self) -> str:
        """str: Base URL (``/dicom-web``) of the service."""
        scheme = "https" if self._ssl else "http"
        return f"{scheme}://127.0.0.1:{self.port}/dicom-web"

    def route(self, pattern: str, handler: Route) -> None:
        """Answer targets matching ``pattern`` (searched) with ``handler``; later wins."""
        self.routes.insert(0, (re.compile(pattern), handler))

    def reset(self) -> None:
        """Forget the routes and requests of the previous case."""
        self.routes.clear()
        self.requests.clear()

    async def _listen(self) -> list[asyncio.Server]:
        server, self.port = await self._serve_loopback(self._serve, ssl=self._ssl)
        return [server]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.readexactly(1)
            if first == b"\x16" and self._ssl is None:
                # A TLS ClientHello on the plain port: answer as HTTP servers do.
                writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                await writer.drain()
                writer.close()
                return
            head = first + await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = ([*lines[0].split(" "), "", ""])[:3]
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        request = Request(method, target, headers)
        self.requests.append(request)
        handler: Route = _not_found
        for pattern, candidate in self.routes:
            if pattern.search(target):
                handler = candidate
                break
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await handler(request, writer)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


async def _not_found(request: Request, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

"""An HTTP/1.1-aware TCP proxy on 127.0.0.1 that injects faults between a client and Orthanc.

Every client connection gets its own upstream connection. Requests are read from the client
(head plus ``Content-Length`` body), forwarded upstream with ``Accept-Encoding`` removed (so
multipart bodies can be rewritten), and the whole response is read (``Content-Length``,
``chunked`` or close-delimited) before the active fault decides what the client gets:

``reset_before_response``
    the client connection is reset (``SO_LINGER`` 0) without a byte of the response
``reset_mid_body``
    the head and half of the body are sent, then the connection is reset
``stall``
    nothing is sent for ``stall_seconds`` (longer than the client's read timeout), then the
    connection is closed
``status``
    the upstream response is replaced by ``status`` (429, 503, ...) with an optional
    ``Retry-After``; the connection stays usable
``truncate``
    the head (with the original ``Content-Length``) and half of the body, then a clean close
``short_multipart``
    a valid HTTP response whose multipart body lacks its second half (``Content-Length``
    adjusted), so only the multipart parser can notice
``duplicate_parts`` / ``reorder_parts``
    the multipart body is parsed with :class:`dicomslide.sources.multipart.MultipartParser`
    and re-emitted with the first part repeated, or the parts reversed
``drop_keepalive``
    the response is forwarded unchanged, then the connection is closed without
    ``Connection: close`` (the client finds out when it reuses the connection)

A fault applies to requests whose path contains ``match``, ``count`` times (``None``: until
cleared). Bounded: requests and responses above ``max_message`` bytes are refused, stalls end
when the proxy stops, and the proxy stops itself after ``max_lifetime`` seconds. It runs its
own event loop in a daemon thread::

    with FaultProxy(("127.0.0.1", orthanc.port)) as proxy:
        proxy.set_fault(Fault("reset_mid_body", match="/frames/", count=1))
        url = f"http://127.0.0.1:{proxy.port}/dicom-web"
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Literal, get_args

from dicomslide.errors import ProtocolError
from dicomslide.sources.multipart import MultipartParser, Part, boundary_from_content_type
from tests.support.loop_server import LoopServer

__all__ = ["FAULT_KINDS", "Fault", "FaultProxy"]

FaultKind = Literal[
    "reset_before_response",
    "reset_mid_body",
    "stall",
    "status",
    "truncate",
    "short_multipart",
    "duplicate_parts",
    "reorder_parts",
    "drop_keepalive",
]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)
_REASONS = {429: "Too Many Requests", 503: "Service Unavailable", 500: "Internal Server Error"}


@dataclass
class Fault:
    """A fault and the requests it applies to.

    Attributes
    ----------
    kind: FaultKind
        What to do (see the module documentation)
    match: str
        Substring of the request target that selects the requests
    count: int | None
        How many requests to spoil (``None``: all until cleared)
    status: int
        Status of ``status`` faults
    retry_after: str | None
        ``Retry-After`` value of ``status`` faults
    stall_seconds: float
        Silence of ``stall`` faults
    """

    kind: FaultKind
    match: str = "/frames/"
    count: int | None = None
    status: int = 503
    retry_after: str | None = None
    stall_seconds: float = 3.0


@dataclass
class _Response:
    status_line: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def encode(self, body: bytes | None = None, *, content_length: int | None = None) -> bytes:
        body = self.body if body is None else body
        length = len(body) if content_length is None else content_length
        lines = [self.status_line]
        for key, value in self.headers:
            if key.lower() not in {b"content-length", b"transfer-encoding"}:
                lines.append(key + b": " + value)
        lines.append(b"Content-Length: " + str(length).encode())
        return b"\r\n".join(lines) + b"\r\n\r\n" + body


@dataclass
class Counters:
    """What the proxy saw.

    Attributes
    ----------
    connections: int
        Client connections accepted
    requests: int
        Requests read from clients
    faults: dict[str, int]
        Faults applied, by kind
    """

    connections: int = 0
    requests: int = 0
    faults: dict[str, int] = field(default_factory=dict)


class _Closed(Exception):
    """The peer closed the connection (or sent something unusable)."""


async def _read_head(reader: asyncio.StreamReader, limit: int) -> bytes:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise _Closed from exc
    except asyncio.LimitOverrunError as exc:
        raise _Closed from exc
    except ConnectionError as exc:
        raise _Closed from exc


def _parse_headers(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    headers = []
    for line in lines[1:]:
        key, _, value = line.partition(b":")
        headers.append((key.strip(), value.strip()))
    return lines[0], headers


def _get(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


async def _read_body(
    reader: asyncio.StreamReader, headers: list[tuple[bytes, bytes]], limit: int, *, eof_ok: bool
) -> bytes:
    try:
        length = _get(headers, b"content-length")
        if length is not None:
            size = int(length)
            if size > limit:
                raise _Closed
            return await reader.readexactly(size)
        if (_get(headers, b"transfer-encoding") or b"").lower() == b"chunked":
            out = bytearray()
            for _ in range(1 << 20):  # bounded: at most a million chunks
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    # trailers up to the empty line
                    for _ in range(100):
                        if await reader.readuntil(b"\r\n") == b"\r\n":
                            break
                    return bytes(out)
                out += await reader.readexactly(size)
                await reader.readexactly(2)
                if len(out) > limit:
                    raise _Closed
            raise _Closed
        if eof_ok:
            data = bytearray()
            while chunk := await reader.read(1 << 20):  # bounded by the size check
                data += chunk
                if len(data) > limit:
                    raise _Closed
            return bytes(data)
        return b""
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        raise _Closed from exc
    except ConnectionError as exc:
        raise _Closed from exc


def _rewrite_multipart(response: _Response, kind: FaultKind) -> bytes | None:
    """The body with its parts duplicated or reordered; None if it is not multipart."""
    content_type = (response.header(b"content-type") or b"").decode("latin-1")
    if not content_type.lower().startswith("multipart/"):
        return None
    boundary = boundary_from_content_type(content_type)
    parser = MultipartParser(boundary)
    try:
        parts = parser.feed(response.body)
        parser.close()
    except ProtocolError:
        return None
    parts = [parts[0], *parts] if kind == "duplicate_parts" else parts[::-1]
    return _emit_multipart(parts, boundary)


def _emit_multipart(parts: list[Part], boundary: str) -> bytes:
    out = bytearray()
    for part in parts:
        out += b"--" + boundary.encode("ascii") + b"\r\n"
        for key, value in part.headers.items():
            if key == "content-length":
                value = str(len(part.body))
            out += key.encode("latin-1") + b": " + value.encode("latin-1") + b"\r\n"
        out += b"\r\n" + part.body + b"\r\n"
    out += b"--" + boundary.encode("ascii") + b"--\r\n"
    return bytes(out)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy(LoopServer):
    """Fault-injecting HTTP/1.1 proxy in a background thread (see the module documentation).

    Parameters
    ----------
    upstream: tuple[str, int]
        Host and port of the server (127.0.0.1 only)
    max_lifetime: float, optional
        Seconds after which the proxy stops by itself
    max_message: int, optional
        Largest request or response handled, in bytes
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        max_lifetime: float = 300.0,
        max_message: int = 64 << 20,
    ) -> None:
        if upstream[0] not in {"127.0.0.1", "localhost"}:
            raise ValueError("the fault proxy only talks to 127.0.0.1")
        super().__init__(max_lifetime=max_lifetime, thread_name="fault-proxy")
        self.upstream = upstream
        self.max_message = max_message
        self.port = 0
        self.counters = Counters()
        self._fault: Fault | None = None
        self._lock = threading.Lock()
        self._open_connections = 0

    # --- control (any thread) ------------------------------------------------------------

    def set_fault(self, fault: Fault | None) -> None:
        """Make ``fault`` the active fault (``None``: forward faithfully)."""
        with self._lock:
            self._fault = fault

    def clear(self) -> None:
        """Forward faithfully from now on."""
        self.set_fault(None)

    @property
    def open_connections(self) -> int:
        """Client connections currently open."""
        return self._open_connections

    def _take_fault(self, target: str) -> Fault | None:
        with self._lock:
            fault = self._fault
            if fault is None or fault.match not in target:
                return None
            if fault.count is not None:
                if fault.count <= 0:
                    return None
                fault.count -= 1
            self.counters.faults[fault.kind] = self.counters.faults.get(fault.kind, 0) + 1
            return fault

    # --- the loop thread (see tests.support.loop_server) ----------------------------------

    async def _listen(self) -> list[asyncio.Server]:
        server = await asyncio.start_server(
            self._tracked(self._serve), "127.0.0.1", 0, limit=self.max_message, reuse_address=True
        )
        self.port = server.sockets[0].getsockname()[1]
        return [server]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counters.connections += 1
        self._open_connections += 1
        up_reader: asyncio.StreamReader | None = None
        up_writer: asyncio.StreamWriter | None = None
        try:
            for _ in range(100_000):  # bounded number of requests per connection
                head = await _read_head(reader, self.max_message)
                request_line, headers = _parse_headers(head)
                body = await _read_body(reader, headers, self.max_message, eof_ok=False)
                self.counters.requests += 1
                parts = request_line.split(b" ")
                target = parts[1].decode("latin-1") if len(parts) > 1 else ""
                forwarded = [request_line] + [
                    k + b": " + v for k, v in headers if k.lower() != b"accept-encoding"
                ]
                raw_request = b"\r\n".join(forwarded) + b"\r\n\r\n" + body
                head_bytes = b""
                # An idle upstream connection may have been closed by the server (Orthanc's
                # keep-alive timeout); then the request is sent once more on a new one.
                for _attempt in range(2):
                    if up_writer is None or up_writer.is_closing():
                        up_reader, up_writer = await asyncio.open_connection(
                            self.upstream[0], self.upstream[1], limit=self.max_message
                        )
                    assert up_reader is not None
                    try:
                        up_writer.write(raw_request)
                        await up_writer.drain()
                        head_bytes = await _read_head(up_reader, self.max_message)
                        break
                    except (_Closed, ConnectionError):
                        up_writer.close()
                        up_writer = None
                if not head_bytes:
                    raise _Closed
                assert up_reader is not None
                status_line, resp_headers = _parse_headers(head_bytes)
                resp_body = await _read_body(
                    up_reader, resp_headers, self.max_message, eof_ok=True
                )
                connection = (_get(resp_headers, b"connection") or b"").lower()
                response = _Response(status_line, resp_headers, resp_body, connection != b"close")
                if not response.keep_alive and up_writer is not None:
                    up_writer.close()
                    up_writer = None
                fault = self._take_fault(target)
                if not await self._answer(writer, response, fault):
                    return
        except (_Closed, ConnectionError, OSError):
            return
        finally:
            self._open_connections -= 1
            if up_writer is not None:
                up_writer.close()
            if not writer.is_closing():
                writer.close()

    async def _answer(
        self, writer: asyncio.StreamWriter, response: _Response, fault: Fault | None
    ) -> bool:
        """Send the (spoiled) response; False if the connection is finished."""
        kind = fault.kind if fault is not None else None
        half = len(response.body) // 2
        if kind == "reset_before_response":
            _reset(writer)
            return False
        if kind == "reset_mid_body":
            writer.write(response.encode()[: len(response.encode()) - len(response.body) + half])
            await writer.drain()
            await asyncio.sleep(0.01)
            _reset(writer)
            return False
        if kind == "stall":
            assert fault is not None
            assert self._stop is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), fault.stall_seconds)
            return False
        if kind == "status":
            assert fault is not None
            reason = _REASONS.get(fault.status, "Error").encode()
            lines = [f"HTTP/1.1 {fault.status} ".encode() + reason]
            if fault.retry_after is not None:
                lines.append(b"Retry-After: " + fault.retry_after.encode())
            message = b"injected fault"
            lines += [b"Content-Type: text/plain", f"Content-Length: {len(message)}".encode()]
            writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + message)
            await writer.drain()
            return response.keep_alive
        if kind == "truncate":
            data = response.encode()
            writer.write(data[: len(data) - len(response.body) + half])
            await writer.drain()
            return False
        if kind == "short_multipart":
            writer.write(response.encode(response.body[:half]))
            await writer.drain()
            return response.keep_alive
        if kind in {"duplicate_parts", "reorder_parts"}:
            assert kind is not None
            body = _rewrite_multipart(response, kind)
            writer.write(response.encode(body))
            await writer.drain()
            return response.keep_alive
        writer.write(response.encode())
        await writer.drain()
        return kind != "drop_keepalive" and response.keep_alive

"""A TCP proxy on 127.0.0.1 that adds latency and counts HTTP requests.

Used by ``benchmarks/run.py --source dicomweb`` between the readers and a private Orthanc:
every chunk read from one side is forwarded to the other ``rtt_ms / 2`` milliseconds later
(per direction, order kept, bandwidth not limited), so ``--rtt-ms 20`` adds 20 ms to every
round trip. Request counting parses the client-to-server byte stream as HTTP/1.1 (request
head, then ``Content-Length`` body bytes), so keep-alive connections are counted correctly.

The ends of a connection travel like a real path's: one upstream connection per client
connection; the server's close (FIN) or reset (RST) reaches the client ``rtt_ms / 2`` after it
happened, after the bytes sent before it. Once the server has closed, the client side is closed
completely when that close arrives, and client bytes that reach the server's end after the
close are dropped (counted as ``late_bytes_dropped``), never written into a closed socket nor
left on a half-open connection. This keeps the keep-alive race of a real path, no wider and no
narrower: Orthanc 1.10 closes a keep-alive connection idle for 1 s (``Keep-Alive: timeout=1``,
not configurable in 1.10), and a client that reuses it within one RTT of that close fails on
any network. When the server is not listening (not started, or dead), the client connection is
reset one RTT after it was accepted (``upstream_refused``), so the client reports a reset
instead of a misleading "server closed the connection without a response".

Bounded: at most ``max_buffer`` bytes are queued per direction and connection (the reading
side then waits), and the proxy stops itself after ``max_lifetime`` seconds even if nobody
calls :meth:`DelayProxy.stop`. It runs its own event loop in a daemon thread.

A second port answers every connection with the counters as one JSON line, so a worker
process can attribute requests to the phases it times::

    with DelayProxy(("127.0.0.1", 8042), rtt_ms=20) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/dicom-web"
        read_counters(proxy.control_port)  # {"requests": 0, "bytes_down": 0, ...}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import sys
from collections.abc import Callable
from pathlib import Path

# The one thread-hosted asyncio server scaffold lives with the test support of this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.loop_server import LoopServer

CHUNK = 64 * 1024


class _RequestCounter:
    """Counts HTTP/1.1 requests in one connection's client-to-server stream."""

    def __init__(self) -> None:
        self.buf = b""
        self.body_left = 0

    def feed(self, data: bytes) -> int:
        found = 0
        view = data
        while view:
            if self.body_left:
                used = min(self.body_left, len(view))
                self.body_left -= used
                view = view[used:]
                continue
            self.buf += view
            view = b""
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 1 << 20:
                    self.buf = self.buf[-4:]  # not HTTP; keep going without counting
                return found
            head, rest = self.buf[:end], self.buf[end + 4 :]
            self.buf = b""
            found += 1
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    with contextlib.suppress(ValueError):
                        self.body_left = int(value.strip())
            view = rest
        return found


class DelayProxy(LoopServer):
    """Forward ``127.0.0.1:<port>`` to ``upstream`` with ``rtt_ms / 2`` delay each way."""

    def __init__(
        self,
        upstream: tuple[str, int],
        rtt_ms: float = 0.0,
        *,
        max_buffer: int = 16 * 1024 * 1024,
        max_lifetime: float = 4 * 3600.0,
    ) -> None:
        super().__init__(max_lifetime=max_lifetime, thread_name="delay-proxy")
        self.upstream = upstream
        self.delay = max(rtt_ms, 0.0) / 2000.0
        self.rtt_ms = rtt_ms
        self.max_queue = max(2, max_buffer // CHUNK)
        self.counters = {
            "requests": 0,
            "connections": 0,
            "bytes_up": 0,
            "bytes_down": 0,
            # connections the server closed first (Orthanc 1.10: idle keep-alive > 1 s)
            "upstream_closed_first": 0,
            # client bytes that arrived after the server had closed (the keep-alive race)
            "late_bytes_dropped": 0,
            # connections the server refused (it is down): the client gets a reset
            "upstream_refused": 0,
        }
        self.last_upstream_error = ""
        self.port = 0
        self.control_port = 0

    def snapshot(self) -> dict[str, int]:
        return dict(self.counters)

    # --- the loop thread (see tests/support/loop_server.py) ------------------------------

    async def _listen(self) -> list[asyncio.Server]:
        async def on_control(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(json.dumps(self.counters).encode() + b"\n")
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(self._tracked(self._handle), "127.0.0.1", 0)
        control = await asyncio.start_server(on_control, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self.control_port = control.sockets[0].getsockname()[1]
        return [server, control]

    async def _handle(
        self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter
    ) -> None:
        self.counters["connections"] += 1
        try:
            u_reader, u_writer = await asyncio.open_connection(*self.upstream)
        except OSError as exc:
            # The server is not listening (not started, or died). On a real path the client's
            # connect would be refused one round trip later; the connection is already
            # accepted here, so the client gets a reset then, not a clean close that reads
            # as "server closed the connection without a response".
            self.counters["upstream_refused"] += 1
            self.last_upstream_error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(2 * self.delay)
            _reset(c_writer)
            return
        counter = _RequestCounter()
        # Set when the server closed or reset its end: bytes the client sends after that
        # would meet a closed socket on a real path, so they are dropped, not forwarded.
        upstream_gone = asyncio.Event()

        def up(data: bytes) -> None:
            self.counters["bytes_up"] += len(data)
            self.counters["requests"] += counter.feed(data)

        def down(data: bytes) -> None:
            self.counters["bytes_down"] += len(data)

        def late(data: bytes) -> None:
            # The keep-alive race of a real path: the client sent this before the server's
            # close reached it, and it arrives after the server closed.
            self.counters["late_bytes_dropped"] += len(data)

        client_done = False

        def client_closed() -> None:
            nonlocal client_done
            client_done = True

        def server_closed() -> None:
            if not client_done:
                self.counters["upstream_closed_first"] += 1
            upstream_gone.set()

        try:
            await asyncio.gather(
                self._pipe(
                    c_reader, u_writer, up, gone=upstream_gone, on_gone=late, on_end=client_closed
                ),
                self._pipe(u_reader, c_writer, down, on_end=server_closed, close_at_end=True),
            )
        finally:
            for w in (u_writer, c_writer):
                w.close()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        seen: Callable[[bytes], None],
        *,
        gone: asyncio.Event | None = None,
        on_gone: Callable[[bytes], None] | None = None,
        on_end: Callable[[], None] | None = None,
        close_at_end: bool = False,
    ) -> None:
        """Forward ``reader`` to ``writer``, each chunk ``delay`` after it was read, in order.

        The end of the stream travels like data: an EOF (FIN) is forwarded ``delay`` after
        it was read, a reset (RST) likewise as a reset. ``on_end`` runs the moment the end
        is read (the server's view); ``close_at_end`` then closes ``writer`` completely
        instead of half-closing it (the server is gone: nothing will answer later bytes).
        Chunks that become due once ``gone`` is set are handed to ``on_gone`` and dropped.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue(self.max_queue)

        async def pump() -> None:
            while True:
                data: bytes | None
                try:
                    data = await reader.read(CHUNK)
                except OSError:
                    data = None  # reset by the peer
                if data:
                    seen(data)
                else:
                    if on_end is not None:
                        on_end()
                await queue.put((loop.time() + self.delay, data))
                if not data:
                    return

        async def sink() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    _reset(writer)
                    return
                if not data:
                    with contextlib.suppress(OSError, RuntimeError):
                        if close_at_end:
                            writer.close()
                        elif writer.can_write_eof():
                            writer.write_eof()
                    return
                if gone is not None and gone.is_set():
                    if on_gone is not None:
                        on_gone(data)
                    continue
                try:
                    writer.write(data)
                    await writer.drain()
                except (OSError, RuntimeError):
                    return  # the receiving side is gone; its own pipe ends on its EOF

        pumping = asyncio.ensure_future(pump())
        try:
            await sink()
        finally:
            pumping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumping


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close a connection with a TCP reset (SO_LINGER 0), as a closed or crashed peer does."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def read_counters(control_port: int) -> dict[str, int]:
    """The proxy's counters, from any process."""
    with socket.create_connection(("127.0.0.1", control_port), timeout=5) as sock:
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    result: dict[str, int] = json.loads(data)
    return result

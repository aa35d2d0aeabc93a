"""The one scaffold for a test or benchmark server: asyncio on 127.0.0.1, in a daemon thread.

A subclass opens its listening sockets in :meth:`LoopServer._listen` (with handlers wrapped
by :meth:`LoopServer._tracked`) and serves connections with asyncio streams. This class
owns the rest: the event loop and its thread, start-up errors reported to the caller of
:meth:`LoopServer.start`, a stop that may come from any thread, a lifetime after which the
server stops itself even if nobody calls stop, and cancelling open connections at the end.
Used by :mod:`tests.support.fault_proxy`, ``benchmarks/delay_proxy.py`` and the keep-alive
server of ``tests/integration/test_benchmark_smoke.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tests.support.lifecycle import StartStop

__all__ = ["LoopServer"]

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

_S = TypeVar("_S", bound="LoopServer")

# How long start() waits for the sockets, and stop() for the thread.
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0
# How long open connections get to finish cancelling when the server stops.
_CANCEL_GRACE = 5.0


class LoopServer(StartStop):
    """Base class: an asyncio server running on its own loop in a daemon thread.

    Parameters
    ----------
    max_lifetime: float
        Seconds after which the server stops by itself
    thread_name: str
        Name of the thread (shows in thread dumps)
    """

    def __init__(self, *, max_lifetime: float, thread_name: str) -> None:
        self.max_lifetime = max_lifetime
        self._thread_name = thread_name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    # --- what a subclass provides ------------------------------------------------------------

    async def _listen(self) -> list[asyncio.Server]:
        """Open the listening sockets (on the loop thread); record ports on ``self``."""
        raise NotImplementedError

    def _tracked(self, handler: Handler) -> Handler:
        """``handler`` as a connection callback whose task is cancelled when the server stops."""

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._connections.add(task)
            try:
                await handler(reader, writer)
            except asyncio.CancelledError:
                writer.close()  # stopping: end quietly (a cancelled callback task is logged)
            finally:
                self._connections.discard(task)

        return serve

    async def _serve_loopback(
        self, handler: Handler, **options: Any
    ) -> tuple[asyncio.Server, int]:
        """A tracked server for ``handler`` on 127.0.0.1 at a free port, and that port."""
        server = await asyncio.start_server(
            self._tracked(handler), "127.0.0.1", 0, reuse_address=True, **options
        )
        return server, server.sockets[0].getsockname()[1]

    # --- lifecycle (any thread) --------------------------------------------------------------

    def start(self: _S) -> _S:
        """Start serving; returns once the sockets listen.

        Returns
        -------
        LoopServer
            This server
        """
        self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise RuntimeError(f"{self._thread_name} did not start within {_START_TIMEOUT} s")
        if self._error is not None:
            raise RuntimeError(f"{self._thread_name} failed to start") from self._error
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread (bounded)."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(_STOP_TIMEOUT)
            self._thread = None

    # --- the loop thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start() when it happens before ready
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        servers = await self._listen()
        self._ready.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.max_lifetime)
        finally:
            for server in servers:
                server.close()
            for task in list(self._connections):
                task.cancel()
            if self._connections:
                await asyncio.wait(list(self._connections), timeout=_CANCEL_GRACE)
            for server in servers:
                await server.wait_closed()

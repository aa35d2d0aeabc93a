"""Running the service with Uvicorn until SIGINT or SIGTERM (the ``dicomslide serve`` command)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn

from dicomslide.serve.app import ServeSettings, create_app

__all__ = ["serve"]


class _Server(uvicorn.Server):
    """Uvicorn's server, stopping gracefully on SIGINT and SIGTERM without re-raising them.

    Uvicorn re-delivers a caught signal after its shutdown, which ends the process with
    the signal's status; a service stopped on purpose should exit 0.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        wanted = (signal.SIGINT, signal.SIGTERM)
        for sig in wanted:
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in wanted:
                loop.remove_signal_handler(sig)


async def serve(
    client: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServeSettings | None = None,
    source: str = "",
) -> None:
    """Serve until SIGINT or SIGTERM, then stop gracefully.

    Parameters
    ----------
    client: Any
        The slides' source; not closed here
    host: str, optional
        Address to bind (loopback unless told otherwise)
    port: int, optional
        TCP port (0: any free port; the one chosen is printed)
    settings: ServeSettings | None, optional
        Tile and cache settings
    source: str, optional
        What to print as the source (already without credentials)
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    logging.getLogger("dicomslide.serve").setLevel(logging.INFO)
    config = uvicorn.Config(
        create_app(client, settings),
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    # Bound here, before serving, so that the port chosen for port 0 can be printed and
    # connections made right after the line is printed wait in the backlog.
    sock = socket.create_server((host, port))
    # asyncio turns Nagle off only on sockets whose proto is IPPROTO_TCP, and create_server
    # leaves proto 0; accepted sockets inherit the option from the listener. Without it every
    # keep-alive response (head and body written separately) waits ~40 ms for a delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    bound = sock.getsockname()[1]
    print(f"dicomslide serve: {source} on http://{host}:{bound}/", file=sys.stderr, flush=True)
    try:
        await _Server(config).serve(sockets=[sock])
    finally:
        sock.close()
    print("dicomslide serve: stopped", file=sys.stderr, flush=True)

"""An httpx transport whose connections read up to a megabyte per receive.

httpcore asks its network stream for 64 KiB per read, while asyncio reads up to 256 KiB from
the socket at once. anyio then hands each socket read out in 64 KiB slices (copying the rest
every time) and pauses and resumes the socket reader around every receive. For a 7 MB
frames response that was 115 receives and 21 ms of the event loop's CPU for the transfer
alone; asked for a megabyte per read, the same transfer takes 30 receives and 12 ms (one
plain request of the 340 frames of a level, 9 runs).

httpx offers no way to choose httpcore's network backend, so :class:`WideReadTransport` makes
httpcore's connection pool itself, with a network backend that is httpcore's anyio backend
whose streams ask for at least :data:`READ_BYTES` whatever httpcore asks. httpcore feeds what
a read returns straight to its HTTP/1.1 or HTTP/2 state machine, which takes any amount.

The DICOMweb client uses it only for plain ``http://`` servers when no proxy is configured in
the environment: over TLS each read returns one TLS record (at most 16 KiB) whatever it asks
for, and httpx applies proxies from the environment only to clients that bring no transport.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, Final

import httpcore
import httpx

__all__ = ["READ_BYTES", "WideReadTransport"]

#: Fewest bytes each read of a connection asks for.
READ_BYTES: Final = 1024 * 1024


class _WideStream(httpcore.AsyncNetworkStream):
    """A network stream whose reads ask for at least :data:`READ_BYTES`."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max(max_bytes, READ_BYTES), timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _WideStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _WideReadBackend(httpcore.AsyncNetworkBackend):
    """httpcore's anyio network backend with streams that read up to :data:`READ_BYTES`."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _WideStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _WideStream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@contextlib.contextmanager
def _as_httpx_errors() -> Iterator[None]:
    """Raise httpcore's errors as the httpx errors of the same name, as httpx's own does."""
    try:
        yield
    except Exception as exc:
        for cls in type(exc).__mro__:
            if not cls.__module__.startswith("httpcore"):
                continue
            twin = getattr(httpx, cls.__name__, None)
            if isinstance(twin, type) and issubclass(twin, httpx.TransportError):
                raise twin(str(exc)) from exc
        raise


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            with _as_httpx_errors():
                await close()


class WideReadTransport(httpx.AsyncBaseTransport):
    """httpx transport over httpcore's connection pool, its connections reading wide.

    Parameters
    ----------
    verify: bool | ssl.SSLContext
        Certificate verification, as ``httpx.AsyncClient`` takes it
    http2: bool
        Whether HTTP/2 may be negotiated
    limits: httpx.Limits
        Connection limits
    """

    def __init__(
        self, *, verify: bool | ssl.SSLContext, http2: bool, limits: httpx.Limits
    ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=http2,
            network_backend=_WideReadBackend(),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send a request through the pool (see ``httpx.AsyncBaseTransport``).

        Parameters
        ----------
        request: httpx.Request
            The request

        Returns
        -------
        httpx.Response
            The response, its body not read yet
        """
        url = request.url
        core = httpcore.Request(
            request.method,
            httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx_errors():
            answer = await self._pool.handle_async_request(core)
        return httpx.Response(
            answer.status,
            headers=answer.headers,
            stream=_Body(answer.stream),
            extensions=answer.extensions,
        )

    async def aclose(self) -> None:
        """Close every connection of the pool."""
        await self._pool.aclose()

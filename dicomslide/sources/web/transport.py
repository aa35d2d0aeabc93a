"""Transport and credentials of the DICOMweb client: one ``httpx.AsyncClient`` per loop.

:class:`Transport` sends GET requests with retries (capped exponential backoff with full
jitter, ``Retry-After`` honoured), follows redirects itself so that headers, ``auth`` and the
configured URL's query parameters reach the configured origin only, and scrubs credential
values from every error message it makes.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import email.utils
import inspect
import os
import random
import ssl
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx

from dicomslide._docs import borrowed_doc
from dicomslide.errors import (
    ArgumentError,
    DicomWebError,
    NotAcceptableError,
    NotFoundError,
    RequestTimeoutError,
    ResponseTooLargeError,
    ServerError,
    SourceError,
    TransportError,
    UsageError,
)
from dicomslide.sources.dicomweb_urls import is_credential_name, redact_url
from dicomslide.sources.web.redaction import (
    SecretSet,
    install_log_redaction,
    redact,
)
from dicomslide.sources.web.wide import WideReadTransport

__all__ = [
    "DEFAULT_DEADLINE",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_TIMEOUT",
    "RETRY_STATUSES",
    "OperationClock",
    "RetryPolicy",
    "Transport",
]

#: Connect within 10 s; no read, write or pool wait longer than 60 s.
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
#: Statuses retried by default.
RETRY_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
#: Seconds one operation (a metadata read, a QIDO search, a frames request, a bulk data read)
#: may spend waiting on the server, retries included; ``deadline=None`` turns it off.
DEFAULT_DEADLINE: Final = 300.0
#: Largest body read into memory for metadata, a QIDO page or bulk data (after decoding).
DEFAULT_MAX_RESPONSE_BYTES: Final = 256 << 20
_MAX_REDIRECTS = 5
# Bytes of an error body kept for the message; no more than this is read.
_ERROR_EXCERPT = 300
# Header names whose values sent to the origin are secrets (besides credential names).
_SECRET_HEADERS: Final = frozenset({"authorization", "cookie", "proxy-authorization"})

# Waits between retries go through this name so tests can record them instead of waiting.
_sleep = asyncio.sleep


install_log_redaction()


def _ssl_context_for(path: str) -> ssl.SSLContext:
    """A verifying TLS context trusting the CA bundle file or CA folder at ``path``."""
    if os.path.isdir(path):
        return ssl.create_default_context(capath=path)
    return ssl.create_default_context(cafile=path)


class _NotFound(DicomWebError, NotFoundError):
    """404: the resource does not exist."""


def _error_for(status: int, message: str, url: str) -> DicomWebError:
    table: dict[int, type[DicomWebError]] = {404: _NotFound, 406: NotAcceptableError}
    cls = table.get(status, ServerError if status >= 500 else DicomWebError)
    return cls(message, status, url)


class RetryPolicy:
    """When and how long to wait before a request is sent again.

    Parameters
    ----------
    attempts: int, optional
        Total attempts per request (1 = no retries)
    backoff: float, optional
        Base delay in seconds; attempt n waits a random time in [0, backoff * 2**n]
    max_backoff: float, optional
        Cap of one delay in seconds (also caps ``Retry-After``)
    """

    def __init__(self, attempts: int = 4, backoff: float = 0.2, max_backoff: float = 10.0) -> None:
        if attempts < 1:
            raise ArgumentError(f"Retry attempts must be >= 1, got {attempts}.")
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff

    def delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1``.

        Parameters
        ----------
        attempt: int
            Zero-based number of the attempt that failed
        response: httpx.Response | None, optional
            The failed response, whose ``Retry-After`` is honoured

        Returns
        -------
        float
            Delay in seconds
        """
        if response is not None:
            retry_after = response.headers.get("retry-after")
            if retry_after:
                seconds = _retry_after_seconds(retry_after)
                if seconds is not None:
                    return max(0.0, min(seconds, self.max_backoff))
        # Full jitter: spreads the retries of many clients hitting one busy server.
        return random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))


def _retry_after_seconds(value: str) -> float | None:
    """Seconds a ``Retry-After`` value asks for, or None if it is neither a number nor a date."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:  # "-0000": UTC by RFC 5322
        return parsed.replace(tzinfo=datetime.timezone.utc).timestamp() - time.time()
    return parsed.timestamp() - time.time()


_T = TypeVar("_T")


def _with_body(response: httpx.Response, body: bytearray) -> httpx.Response:
    """``response`` with its body read: what ``aread()`` gives, but read within a budget."""
    # The body is already decoded, so the encoding headers go (httpx would decode it again).
    headers = [
        (key, value)
        for key, value in response.headers.multi_items()
        if key.lower() not in {"content-encoding", "content-length", "transfer-encoding"}
    ]
    read = httpx.Response(
        response.status_code,
        headers=headers,
        request=response.request,
        extensions=response.extensions,
    )
    # The buffer as read, not a bytes copy of it: a series' metadata at 100,000 sparse frames
    # is ~60 MB, held twice at the peak by a copy. Its readers only parse it (JSON, multipart).
    read._content = body  # type: ignore[assignment]  # noqa: SLF001
    return read


class OperationClock:
    """Time one operation may still spend waiting on the server (its deadline).

    Only time spent awaiting the server counts: a caller that consumes frames slowly does not
    use up the deadline of the request that delivers them. One timer serves all the waits of
    an operation (armed on the first, moved on only when it fires early), so a wait around
    every body chunk of a frames response costs two clock reads, not a timer each.

    Parameters
    ----------
    deadline: float | None
        Seconds the whole operation may wait, retries included; None: no limit
    what: str
        The operation, for the error message (a URL in it must already be redacted)
    """

    def __init__(self, deadline: float | None, what: str) -> None:
        self.deadline = deadline
        self.left = deadline
        self.what = what
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._since = 0.0
        self._fired = False

    async def wait(self, awaitable: Awaitable[_T]) -> _T:
        """Await ``awaitable`` within what is left of the deadline.

        Parameters
        ----------
        awaitable: Awaitable[_T]
            A wait on the server

        Returns
        -------
        _T
            Its result

        Raises
        ------
        dicomslide.errors.RequestTimeoutError
            When the deadline runs out first
        """
        if self.left is None:
            return await awaitable
        if self.left <= 0:
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            raise self._expired()
        self._task = asyncio.current_task()
        self._since = time.monotonic()
        self._fired = False
        if self._timer is None:
            self._arm(self.left)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self._fired:
                if sys.version_info >= (3, 11) and self._task is not None:
                    self._task.uncancel()  # ours, answered below
                raise self._expired() from None
            raise
        finally:
            self.left -= time.monotonic() - self._since
            self._task = None

    def close(self) -> None:
        """Drop the timer: the operation is over (a later wait arms a new one)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, seconds: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(seconds, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        task = self._task
        if task is None or self.left is None:
            return  # between waits: the next wait re-arms with what is left
        remaining = self.left - (time.monotonic() - self._since)
        if remaining > 0:
            self._arm(remaining)  # early, because time between waits did not count
            return
        self._fired = True
        task.cancel()

    def _expired(self) -> RequestTimeoutError:
        return RequestTimeoutError(
            f"{self.what} did not complete within its deadline of {self.deadline:g} s "
            "(deadline= of the client)."
        )


class Transport:
    """Sends the GET requests of one DICOMweb client, with its credentials and retries.

    Parameters
    ----------
    url: str
        Base URL of the DICOMweb service; its query parameters go with every request to its
        origin
    headers: Mapping[str, str] | None
        Headers sent to the origin only
    auth: httpx.Auth | tuple[str, str] | None
        Authentication for the origin only
    transport: httpx.AsyncBaseTransport | None
        Custom httpx transport
    http2: bool
        Use HTTP/2
    timeout: httpx.Timeout | float
        Timeouts
    verify: bool | str
        TLS verification or a CA bundle path
    retry: RetryPolicy | None
        Retry policy (default: :class:`RetryPolicy`)
    max_response_bytes: int, optional
        Largest body (after decoding) read into memory whole: metadata, QIDO pages, bulk data
    deadline: float | None, optional
        Seconds one operation may spend waiting on the server; None: no limit
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None,
        auth: httpx.Auth | tuple[str, str] | None,
        transport: httpx.AsyncBaseTransport | None,
        http2: bool,
        timeout: httpx.Timeout | float,
        verify: bool | str,
        retry: RetryPolicy | None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        deadline: float | None = DEFAULT_DEADLINE,
    ) -> None:
        if isinstance(max_response_bytes, bool) or not (
            isinstance(max_response_bytes, int) and max_response_bytes > 0
        ):
            raise ArgumentError(
                "max_response_bytes must be a positive number of bytes, got "
                f"{max_response_bytes!r}."
            )
        if deadline is not None and not (
            isinstance(deadline, int | float) and not isinstance(deadline, bool) and deadline > 0
        ):
            raise ArgumentError(
                f"deadline must be a positive number of seconds or None, got {deadline!r}."
            )
        #: Largest body read into memory whole (metadata, QIDO pages, bulk data), in bytes.
        self.max_response_bytes = max_response_bytes
        #: Seconds one operation may wait on the server (None: no limit).
        self.deadline: float | None = None if deadline is None else float(deadline)
        install_log_redaction()
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ArgumentError(
                f"DICOMweb URL must be http(s)://host/path, got {redact_url(url)}."
            )
        if parts.username or parts.password:
            raise ArgumentError(
                "Put credentials in auth=, not in the URL (they would end up in logs)."
            )
        # Query parameters of the URL (e.g. an access token) go with every request to the
        # origin, after the path segments the client appends.
        self._base_params = parse_qsl(parts.query, keep_blank_values=True)
        #: The base URL without its query.
        self.url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")).rstrip("/")
        self._origin = (parts.scheme, parts.netloc)
        self._headers = dict(headers or {})
        self._auth = auth
        secrets = [v for k, v in self._base_params if is_credential_name(k)]
        secrets += [
            v
            for k, v in self._headers.items()
            if is_credential_name(k) or k.lower() in _SECRET_HEADERS
        ]
        if isinstance(auth, tuple):
            # The password, and the Basic credentials a server may echo back.
            secrets.append(auth[1])
            secrets.append(base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
        # Known to redact() (messages and every log record) while this transport lives.
        self._secrets = SecretSet(secrets)
        self._transport = transport
        self._http2 = http2
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        # httpx deprecates verify=<path>; a CA bundle (file) or CA folder becomes a context.
        self._verify: bool | ssl.SSLContext = (
            _ssl_context_for(verify) if isinstance(verify, str) else verify
        )
        self.retry = retry or RetryPolicy()
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._closed = False
        #: Requests sent so far, retries and redirect hops included.
        self.requests_sent = 0

    @property
    def closed(self) -> bool:
        """bool: Whether :meth:`aclose` was called."""
        return self._closed

    def client(self) -> httpx.AsyncClient:
        """The httpx client of the running loop (made on first use).

        Returns
        -------
        httpx.AsyncClient
            Belongs to the running loop
        """
        if self._closed:
            raise UsageError(f"DICOMweb client for {redact_url(self.url)} is closed.")
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            # An httpx.AsyncClient belongs to the loop it was made on.
            for other in list(self._clients):
                if other.is_closed():
                    del self._clients[other]
            kwargs: dict[str, Any] = {
                "timeout": self._timeout,
                "follow_redirects": False,
                "http2": self._http2,
                "verify": self._verify,
                "limits": httpx.Limits(max_connections=32, max_keepalive_connections=16),
            }
            if self._transport is not None:
                kwargs["transport"] = self._transport
            elif self._origin[0] == "http" and not _proxy_in_environment():
                kwargs["transport"] = WideReadTransport(
                    verify=self._verify, http2=self._http2, limits=kwargs["limits"]
                )
            client = httpx.AsyncClient(**kwargs)
            self._clients[loop] = client
        return client

    def scrub(self, text: str) -> str:
        """Replace credential values in a text by ``***`` (:func:`.redaction.redact`).

        Parameters
        ----------
        text: str
            A message, URL or response body

        Returns
        -------
        str
            The text without credentials
        """
        return redact(text)

    def shown(self, url: str) -> str:
        """A URL as errors show it: credential parameters redacted, secrets scrubbed.

        Parameters
        ----------
        url: str
            The URL

        Returns
        -------
        str
            The URL fit for messages
        """
        return redact(redact_url(url))

    def clock(self, what: str) -> OperationClock:
        """A fresh deadline for one operation.

        Parameters
        ----------
        what: str
            The operation, for the error message (URLs already redacted)

        Returns
        -------
        OperationClock
            With this transport's ``deadline``
        """
        return OperationClock(self.deadline, what)

    async def chunks(
        self, response: httpx.Response, clock: OperationClock
    ) -> AsyncIterator[bytes]:
        """The decoded body of a streamed response, each wait bounded by ``clock``.

        Parameters
        ----------
        response: httpx.Response
            A streamed response
        clock: OperationClock
            The operation's deadline

        Yields
        ------
        bytes
            Body chunks, ``Content-Encoding`` undone
        """
        # aiter_bytes, not aiter_raw: gzip and deflate are undone, so budgets count what
        # ends up in memory.
        body = response.aiter_bytes()
        try:
            while True:
                chunk = await clock.wait(anext(body, None))
                if chunk is None:
                    return
                yield chunk
        finally:
            clock.close()

    async def read_body(
        self, response: httpx.Response, limit: int, clock: OperationClock | None = None
    ) -> bytearray:
        """Read a streamed body into memory, at most ``limit`` bytes after decoding; closes it.

        Parameters
        ----------
        response: httpx.Response
            A streamed 2xx response
        limit: int
            Byte budget
        clock: OperationClock | None, optional
            Deadline of the operation (default: a fresh one)

        Returns
        -------
        bytearray
            The body (not copied to ``bytes``: it may be tens of megabytes)

        Raises
        ------
        dicomslide.errors.ResponseTooLargeError
            When the body (or its declared length) exceeds ``limit``
        """
        clock = clock or self.clock(f"GET {self.shown(str(response.request.url))}")
        try:
            declared = response.headers.get("content-length", "")
            encoded = response.headers.get("content-encoding")
            if declared.isdigit() and not encoded and int(declared) > limit:
                raise self._too_large(response, limit, f"declares {int(declared)} bytes")
            body = bytearray()
            async for chunk in self.chunks(response, clock):
                body += chunk
                if len(body) > limit:
                    raise self._too_large(response, limit, "goes on past that")
            return body
        except httpx.TransportError as exc:
            shown = self.shown(str(response.request.url))
            raise self.transport_error(
                exc, shown, timeout=isinstance(exc, httpx.TimeoutException)
            ) from exc
        finally:
            await response.aclose()

    def _too_large(self, response: httpx.Response, limit: int, what: str) -> ResponseTooLargeError:
        shown = self.shown(str(response.request.url))
        return ResponseTooLargeError(
            f"GET {shown}: the response body {what}; the budget is {limit} bytes "
            "(max_response_bytes= of the client).",
            shown,
            limit,
        )

    @borrowed_doc(RetryPolicy.delay, only=("Parameters",))
    async def pause(self, attempt: int, response: httpx.Response | None = None) -> None:
        """Wait as the retry policy says before attempt ``attempt + 1``."""
        await _sleep(self.retry.delay(attempt, response))

    async def send(
        self,
        url: str,
        *,
        accept: str,
        params: Sequence[tuple[str, str]] | None = None,
        stream: bool = False,
        retry_statuses: frozenset[int] = RETRY_STATUSES,
        clock: OperationClock | None = None,
    ) -> httpx.Response:
        """GET a URL, following redirects and retrying as the policy says.

        Parameters
        ----------
        url: str
            Absolute URL
        accept: str
            The Accept header
        params: Sequence[tuple[str, str]] | None, optional
            Query parameters (the base URL's are added for the origin)
        stream: bool, optional
            Return before the body is read (else it is read, within ``max_response_bytes``)
        retry_statuses: frozenset[int], optional
            Statuses retried
        clock: OperationClock | None, optional
            Deadline of the operation this request belongs to (default: a fresh one)

        Returns
        -------
        httpx.Response
            A 2xx response

        Raises
        ------
        dicomslide.errors.DicomWebError
            For an error status, after retries
        dicomslide.errors.TransportError
            When the connection failed, after retries
        dicomslide.errors.RequestTimeoutError
            When the deadline ran out
        """
        client = self.client()
        query: list[tuple[str, Any]] = list(params or ())
        if self._same_origin(url):
            query = self._base_params + query
        request = client.build_request("GET", url, params=query or None)
        if clock is None:
            clock = self.clock(f"GET {self.shown(str(request.url))}")
            try:
                return await self._send(request, accept, stream, retry_statuses, clock)
            finally:
                clock.close()
        return await self._send(request, accept, stream, retry_statuses, clock)

    async def _send(
        self,
        request: httpx.Request,
        accept: str,
        stream: bool,
        retry_statuses: frozenset[int],
        clock: OperationClock,
    ) -> httpx.Response:
        client = self.client()
        attempt = 0
        hops = 0
        while True:
            # Credentials are decided per hop: a redirect may leave the origin.
            headers = {"Accept": accept}
            auth: Any = None
            if self._same_origin(str(request.url)):
                headers = {**self._headers, **headers}
                auth = self._auth
            request = client.build_request("GET", request.url, headers=headers)
            shown = self.shown(str(request.url))
            self.requests_sent += 1
            try:
                response = await clock.wait(client.send(request, auth=auth, stream=True))
            except httpx.TransportError as exc:
                timeout = isinstance(exc, httpx.TimeoutException)
                if attempt + 1 >= self.retry.attempts:
                    raise self.transport_error(exc, shown, timeout=timeout) from exc
                await clock.wait(_sleep(self.retry.delay(attempt)))
                attempt += 1
                continue
            self._learn_sent_secrets(response.request)
            if response.is_redirect:
                location = response.headers["location"]
                await response.aclose()
                if hops >= _MAX_REDIRECTS:
                    raise DicomWebError(
                        f"GET {shown} was redirected more than {_MAX_REDIRECTS} times.",
                        response.status_code,
                        shown,
                    )
                hops += 1
                request = client.build_request("GET", request.url.join(location))
                continue
            if response.status_code < 300:
                if not stream:
                    body = await self.read_body(response, self.max_response_bytes, clock)
                    return _with_body(response, body)
                return response
            if response.status_code in retry_statuses and attempt + 1 < self.retry.attempts:
                await response.aclose()
                await clock.wait(_sleep(self.retry.delay(attempt, response)))
                attempt += 1
                continue
            text = self.scrub(await self._excerpt(response, clock))
            raise _error_for(
                response.status_code,
                f"GET {shown} answered {response.status_code} {response.reason_phrase}: {text}",
                shown,
            )

    async def _excerpt(self, response: httpx.Response, clock: OperationClock) -> str:
        """The start of an error body; the rest is never read (it may not end)."""
        body = bytearray()
        try:
            async for chunk in self.chunks(response, clock):
                body += chunk
                if len(body) >= _ERROR_EXCERPT:
                    break
        except httpx.TransportError:
            pass  # the status is the error; a broken body only shortens the excerpt
        finally:
            await response.aclose()
        return bytes(body[:_ERROR_EXCERPT]).decode("utf-8", "replace").strip()

    def _learn_sent_secrets(self, request: httpx.Request) -> None:
        # Custom httpx.Auth flows (Digest, tokens) put values we were never told about into
        # the request; a server may echo them, so they are secrets too.
        for name, value in request.headers.items():
            lowered = name.lower()
            if lowered in _SECRET_HEADERS or is_credential_name(lowered):
                self._secrets.add(value, value.partition(" ")[2])

    def transport_error(self, exc: Exception, shown_url: str, *, timeout: bool) -> SourceError:
        """The error for a request that failed before or while the server answered.

        Parameters
        ----------
        exc: Exception
            The httpx error
        shown_url: str
            The URL as errors show it
        timeout: bool
            Whether it timed out

        Returns
        -------
        dicomslide.errors.SourceError
            A :class:`~dicomslide.errors.RequestTimeoutError` or
            :class:`~dicomslide.errors.TransportError`
        """
        what = "timed out" if timeout else "failed"
        cls = RequestTimeoutError if timeout else TransportError
        return cls(self.scrub(f"GET {shown_url} {what}: {type(exc).__name__}: {exc}"))

    async def aclose(self) -> None:
        """Close the connections of the running loop; later requests raise UsageError."""
        self._closed = True
        loop = asyncio.get_running_loop()
        for client_loop, client in list(self._clients.items()):
            if client_loop is loop:
                await client.aclose()
        self._clients.clear()

    def _same_origin(self, url: str) -> bool:
        parts = urlsplit(url)
        return (parts.scheme, parts.netloc) == self._origin


def _proxy_in_environment() -> bool:
    """Whether the environment configures a proxy (what httpx reads, ``no`` aside).

    :class:`WideReadTransport` serves only plain ``http://`` without one: over TLS every read
    returns one record of at most 16 KiB whatever it asks for, and httpx applies proxies from
    the environment only to clients without a transport of their own.
    """
    return any(scheme != "no" for scheme in urllib.request.getproxies())

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
import logging
import os
import random
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx

from dicomslide.errors import (
    ArgumentError,
    DicomWebError,
    NotAcceptableError,
    NotFoundError,
    RequestTimeoutError,
    ServerError,
    SourceError,
    TransportError,
    UsageError,
)
from dicomslide.sources.dicomweb_urls import is_credential_name, redact_url

__all__ = ["DEFAULT_TIMEOUT", "RETRY_STATUSES", "RetryPolicy", "Transport"]

#: Connect within 10 s; no read, write or pool wait longer than 60 s.
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
#: Statuses retried by default.
RETRY_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
_MAX_REDIRECTS = 5
# Values shorter than this are not scrubbed from messages (they would mangle them).
_MIN_SECRET_LENGTH = 4

# Waits between retries go through this name so tests can record them instead of waiting.
_sleep = asyncio.sleep


class _RedactLoggedURLs(logging.Filter):
    """Drops credential query parameters from URLs in httpx's own log records.

    httpx logs every request at INFO as ``HTTP Request: GET <url> ...``, with the query string;
    a token in the configured URL (``?access_token=...``) would otherwise reach the logs of any
    application that enables INFO logging. Only ``httpx.URL`` arguments are touched, with
    :func:`~dicomslide.sources.dicomweb_urls.redact_url` (other parameters are kept).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, httpx.URL) for a in args):
            record.args = tuple(
                redact_url(str(a)) if isinstance(a, httpx.URL) else a for a in args
            )
        return True


def _install_log_redaction() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactLoggedURLs) for f in logger.filters):
        logger.addFilter(_RedactLoggedURLs())


_install_log_redaction()


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
    ) -> None:
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
            if is_credential_name(k) or k.lower() in {"cookie", "proxy-authorization"}
        ]
        if isinstance(auth, tuple):
            # The password, and the Basic credentials a server may echo back.
            secrets.append(auth[1])
            secrets.append(base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
        self._secrets = sorted(
            {s for s in secrets if len(s) >= _MIN_SECRET_LENGTH}, key=len, reverse=True
        )
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
            client = httpx.AsyncClient(**kwargs)
            self._clients[loop] = client
        return client

    def scrub(self, text: str) -> str:
        """Replace credential values in a text by ``***``.

        Parameters
        ----------
        text: str
            A message, URL or response body

        Returns
        -------
        str
            The text without credentials
        """
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

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
        return self.scrub(redact_url(url))

    async def pause(self, attempt: int, response: httpx.Response | None = None) -> None:
        """Wait as the retry policy says before attempt ``attempt + 1``.

        Parameters
        ----------
        attempt: int
            Zero-based number of the attempt that failed
        response: httpx.Response | None, optional
            The failed response, whose ``Retry-After`` is honoured
        """
        await _sleep(self.retry.delay(attempt, response))

    async def send(
        self,
        url: str,
        *,
        accept: str,
        params: Sequence[tuple[str, str]] | None = None,
        stream: bool = False,
        retry_statuses: frozenset[int] = RETRY_STATUSES,
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
            Return before the body is read
        retry_statuses: frozenset[int], optional
            Statuses retried

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
        """
        client = self.client()
        query: list[tuple[str, Any]] = list(params or ())
        if self._same_origin(url):
            query = self._base_params + query
        request = client.build_request("GET", url, params=query or None)
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
            shown = self.scrub(redact_url(str(request.url)))
            self.requests_sent += 1
            try:
                response = await client.send(request, auth=auth, stream=stream)
            except httpx.TransportError as exc:
                timeout = isinstance(exc, httpx.TimeoutException)
                if attempt + 1 >= self.retry.attempts:
                    raise self.transport_error(exc, shown, timeout=timeout) from exc
                await _sleep(self.retry.delay(attempt))
                attempt += 1
                continue
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
                return response
            if response.status_code in retry_statuses and attempt + 1 < self.retry.attempts:
                await response.aclose()
                await _sleep(self.retry.delay(attempt, response))
                attempt += 1
                continue
            body = b""
            try:
                body = (await response.aread())[:300]
            finally:
                await response.aclose()
            text = self.scrub(body.decode("utf-8", "replace").strip())
            raise _error_for(
                response.status_code,
                f"GET {shown} answered {response.status_code} {response.reason_phrase}: {text}",
                shown,
            )

    def _transport_error(self, exc: Exception, shown_url: str, *, timeout: bool) -> SourceError:
        what = "timed out" if timeout else "failed"
        cls = RequestTimeoutError if timeout else TransportError
        return cls(self.scrub(f"GET {shown_url} {what}: {type(exc).__name__}: {exc}"))

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

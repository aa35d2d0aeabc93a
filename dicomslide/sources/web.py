"""Async DICOMweb client on httpx: QIDO-RS, WADO-RS metadata, bulk data and frames.

Frame requests reach this client already coalesced per instance by
:class:`dicomslide.frames.FrameService` (which also caches and de-duplicates them); here they
are chunked to ``max_frames_per_request`` and ``max_url_length``, sent as one multipart
request per chunk, and parsed incrementally so that each frame is handed on as its part
arrives.

Transfer syntax
---------------
Stored bytes are asked for with one media range,
``multipart/related; type="application/octet-stream"; transfer-syntax=*``. The syntax of each
frame is taken from its part's Content-Type, else the response's, else the instance metadata,
else the bytes. A server that refuses that request (400, 406, or 500 after retries — all seen
in the wild) is asked once more per instance with an explicit media type, and the answer is
remembered for the instance. While that first request of an instance is unanswered, other
requests for frames of the same instance wait for its outcome, so the refusal costs one round
(not one per concurrent request).

Whole-instance fallback
-----------------------
Some servers cannot cut some frames out of their instances: Orthanc answers 400 "Bad file
format" for 1-bit frames that do not start on a byte boundary and for Float Pixel Data, and
500 for Double Float Pixel Data. When a frames request is answered 400, 404, 406 or 500 even
with the explicit media type, the client asks once for the whole instance
(``GET .../instances/{sop}`` with :data:`ACCEPT_INSTANCE`) and cuts the frames out itself,
as the local source does (:mod:`dicomslide.sources.part10`: native, 1-bit re-packed to start
at bit 0, encapsulated through the offset tables, float). Requests for the same instance
that arrive meanwhile wait for that one fetch. Once an instance has been fetched, its frames
always come from it (no more frames requests); if the fetch fails, the frames error is raised
and nothing is remembered. Only instances up to ``max_instance_bytes`` (256 MiB by default) are
fetched; up to 16 MiB they are kept in memory, larger ones in an anonymous temporary file. The
last 8 are kept; one dropped from that cache is fetched again when its frames are next read.

Frames and parts
----------------
PS3.18 requires the parts in the order the frames were asked for, so parts are matched to
frame numbers by position, unless a part's ``Content-Location`` names one frame
(``.../frames/7``), which is then believed. A part for a frame that was not asked for, or for
one already delivered, or more parts than frames, raise
:class:`~dicomslide.errors.ProtocolError`. The body is read with its ``Content-Encoding``
undone (servers may gzip multipart responses).

Robustness
----------
Connect and read timeouts; retries with capped exponential backoff and full jitter for
connection errors and 408/429/500/502/503/504, honouring ``Retry-After`` (seconds or an HTTP
date; capped by ``max_backoff``), never for other 4xx. A truncated or short multipart
response, or a connection dropped mid-body, is retried for the missing frames only; when the
retries run out the error is a :class:`~dicomslide.errors.TransportError` (dropped
connection) or a :class:`~dicomslide.errors.ProtocolError` (malformed body). Timeouts raise a
:class:`~dicomslide.errors.TransportError` that is also a :class:`TimeoutError`. QIDO-RS
searches are paged with ``limit``/``offset`` (``qido_page_size`` per page); a short page ends
the search unless the server's ``Warning`` says more results can be requested, and a server
that ignores ``offset`` is noticed and not asked for ever.

Credentials
-----------
Headers, ``auth`` and the query parameters of the configured URL (e.g. ``?access_token=...``)
are only sent to the configured origin (scheme, host and port): not to bulk data or redirects
on other hosts. Redirects (up to 5) are followed by this client, not by httpx, so that this
holds for every hop. Errors carry the status and the URL without credentials, and their
messages never contain the values of credential headers, the ``auth`` password or credential
query parameters (even when a server echoes them in its error body).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import email.utils
import io
import logging
import os
import random
import re
import ssl
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any, BinaryIO, Final, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx
from pydicom import Dataset

from dicomslide.codecs import sniff_transfer_syntax
from dicomslide.errors import (
    DicomWebError,
    InvalidDataError,
    NotFoundError,
    ProtocolError,
    RegionError,
    RequestTimeoutError,
    SourceError,
    TransportError,
    UnsupportedError,
    UsageError,
)
from dicomslide.sources import part10
from dicomslide.sources.dicomjson import datasets_from_json, parse_json_bytes
from dicomslide.sources.dicomweb_urls import (
    ACCEPT_STORED_FRAMES,
    _is_credential_name,
    accept_for_transfer_syntax,
    chunk_frame_numbers,
    frames_url,
    instance_metadata_url,
    qido_params,
    qido_url,
    redact_url,
    series_metadata_url,
)
from dicomslide.sources.foreign import looks_like_rle
from dicomslide.sources.multipart import (
    MultipartParser,
    boundary_from_content_type,
    transfer_syntax_from_content_type,
)
from dicomslide.sources.protocol import EncodedFrame

__all__ = ["DICOMwebClient", "RetryPolicy", "ServerError"]

#: Connect within 10 s; no read, write or pool wait longer than 60 s.
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_REFUSAL_STATUSES = frozenset({400, 406, 500})
# Frames requests answered with these (after the explicit media type was tried too) make the
# client fetch the whole instance instead.
_INSTANCE_FALLBACK_STATUSES = frozenset({400, 404, 406, 500})
ACCEPT_INSTANCE: Final = 'multipart/related; type="application/dicom"; transfer-syntax=*'
#: Largest instance fetched whole when a server refuses its frames (``max_instance_bytes``).
DEFAULT_MAX_INSTANCE_BYTES: Final = 256 << 20
# Whole instances up to this size stay in memory; larger ones are spooled to a temporary file.
_INSTANCE_MEMORY_BYTES: Final = 16 << 20
# Whole instances kept (least recently used dropped first).
_INSTANCE_CACHE_SIZE: Final = 8
_INSTANCE_READ_BATCH: Final = 64
_MAX_PART_HEADER_BYTES: Final = 64 * 1024
_HEADER_END_RE: Final = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH_RE: Final = re.compile(rb"(?im)^content-length[ \t]*:[ \t]*([0-9]+)[ \t]*\r?$")
_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
_RLE_LOSSLESS = "1.2.840.10008.1.2.5"
_MAX_REDIRECTS = 5
_FRAME_LOCATION_RE = re.compile(r"/frames/([0-9]+)/?$")
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


class ServerError(DicomWebError):
    """The server answered with a 5xx status."""


class _IncompleteResponse(ProtocolError):
    """A frames response ended early; the missing frames may be asked for again."""

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


class NotAcceptableError(DicomWebError):
    """The server cannot give the representation asked for (406, or 400 for media types)."""


class _NotFound(DicomWebError, NotFoundError):
    """404: the resource does not exist."""


class _FramesRefused(Exception):
    """The frames of this instance are to be read from the whole instance."""


class _InstanceEvicted(Exception):
    """A whole instance was dropped from the cache while its frames were being read."""


class _InstanceTooLarge(Exception):
    """A whole-instance response is larger than ``max_instance_bytes``."""


class _InstanceSpool:
    """The body of a whole-instance response, without its multipart framing.

    Fed the (decoded) response body chunk by chunk. For ``multipart/related`` the first part is
    kept: bytes before its header block are dropped as they arrive, and the part ends at its
    ``Content-Length`` or else at the last delimiter. Bytes stay in memory up to
    ``memory_limit`` and move to an anonymous temporary file beyond; more than ``limit`` bytes
    raise :class:`_InstanceTooLarge`.
    """

    def __init__(self, boundary: str | None, *, limit: int, memory_limit: int) -> None:
        self.fp: BinaryIO = io.BytesIO()
        self.size = 0
        self.in_memory = True
        self.limit = limit
        self._memory_limit = memory_limit
        self._delimiter = None if boundary is None else b"--" + boundary.encode("latin-1")
        self._head: bytearray | None = None if boundary is None else bytearray()
        self._part_length: int | None = None

    def feed(self, chunk: bytes) -> None:
        if self._head is not None:
            self._head += chunk
            start = self._body_start()
            if start is None:
                if len(self._head) > _MAX_PART_HEADER_BYTES:
                    raise ProtocolError("whole-instance response: no part header block found")
                return
            chunk = bytes(self._head[start:])
            self._head = None
            if self._part_length is not None and self._part_length > self.limit:
                raise _InstanceTooLarge
        if not chunk:
            return
        if self.size + len(chunk) > self.limit:
            raise _InstanceTooLarge
        if self.in_memory and self.size + len(chunk) > self._memory_limit:
            spooled: BinaryIO = tempfile.TemporaryFile()  # noqa: SIM115 - owned by the cache
            spooled.write(self.fp.getbuffer() if isinstance(self.fp, io.BytesIO) else b"")
            self.fp = spooled
            self.in_memory = False
        self.fp.write(chunk)
        self.size += len(chunk)

    def _body_start(self) -> int | None:
        head, delimiter = self._head, self._delimiter
        if head is None or delimiter is None:
            return 0
        at = head.find(delimiter)
        if at < 0:
            return None
        match = _HEADER_END_RE.search(head, at + len(delimiter))
        if match is None:
            return None
        length = _CONTENT_LENGTH_RE.search(head, at, match.end())
        if length is not None:
            self._part_length = int(length.group(1))
        return match.end()

    def finish(self) -> None:
        """Cut the framing after the part and rewind; raise if the body is malformed."""
        if self._delimiter is not None:
            if self._head is not None:
                raise ProtocolError("whole-instance response has no part")
            if self._part_length is not None:
                if self._part_length > self.size:
                    raise ProtocolError(
                        f"whole-instance response ended after {self.size} of "
                        f"{self._part_length} bytes"
                    )
                end = self._part_length
            else:
                tail_size = min(self.size, 4096 + len(self._delimiter))
                self.fp.seek(self.size - tail_size)
                tail = self.fp.read(tail_size)
                at = tail.rfind(b"\n" + self._delimiter + b"--")
                if at < 0:
                    raise ProtocolError("whole-instance response has no close delimiter")
                end = self.size - tail_size + at - (1 if at and tail[at - 1 : at] == b"\r" else 0)
            self.fp.truncate(end)
            self.size = end
        self.fp.seek(0)

    def close(self) -> None:
        self.fp.close()


class _WholeInstance:
    """A Part 10 instance held by the client, and where its frames are."""

    def __init__(
        self,
        fp: BinaryIO,
        layout: part10.FrameLayout,
        transfer_syntax_uid: str,
        *,
        nbytes: int,
        in_memory: bool,
    ) -> None:
        self._fp = fp
        self._lock = threading.Lock()
        self._closed = False
        self.layout = layout
        self.transfer_syntax_uid = transfer_syntax_uid
        self.nbytes = nbytes
        self.in_memory = in_memory

    def read_frames(self, numbers: Sequence[int]) -> list[tuple[int, bytes]]:
        """Read and extract frames (blocking; run in a worker thread for spooled files)."""
        out: list[tuple[int, bytes]] = []
        with self._lock:
            if self._closed:
                raise _InstanceEvicted
            for number in numbers:
                offset, length = self.layout.span(number)
                self._fp.seek(offset)
                out.append((number, self.layout.extract(number, self._fp.read(length))))
        return out

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._fp.close()


def _open_whole_instance(spool: _InstanceSpool, sop: str) -> _WholeInstance:
    """Locate the frames of a spooled Part 10 instance, as the local source does."""
    fp = spool.fp

    def read_at(offset: int, size: int) -> bytes:
        fp.seek(offset)
        return fp.read(size)

    size = spool.size
    in_memory = spool.in_memory
    try:
        try:
            header = part10.read_part10_header(fp, specific_tags=part10.LAYOUT_TAGS)
        except part10.NotDicomError as exc:
            raise ProtocolError(f"whole instance {sop} is not a DICOM Part 10 file") from exc
        syntax = header.transfer_syntax_uid
        dataset, pixel_data = header.dataset, header.pixel_data
        if syntax == part10.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
            inflated: BinaryIO = tempfile.TemporaryFile()  # noqa: SIM115 - owned by the cache
            try:
                size = part10.inflate_body(fp, inflated, header.body_offset, max_size=spool.limit)
                inflated.seek(0)
                dataset, pixel_data = part10.read_body_header(
                    inflated,
                    implicit_vr=False,
                    little_endian=True,
                    specific_tags=part10.LAYOUT_TAGS,
                )
            except BaseException:
                inflated.close()
                raise
            fp.close()
            fp = inflated
            in_memory = False
            syntax = part10.EXPLICIT_VR_LITTLE_ENDIAN
        if dataset is None or pixel_data is None:
            raise InvalidDataError(f"whole instance {sop} has no pixel data element")
        found = str(dataset.get("SOPInstanceUID", "")).strip("\0 ")
        if found != sop:
            raise ProtocolError(f"asked for instance {sop}, the server sent {found or 'another'}")
        layout = part10.build_frame_layout(dataset, pixel_data, syntax, read_at, size)
    except BaseException:
        fp.close()
        raise
    return _WholeInstance(fp, layout, syntax, nbytes=size, in_memory=in_memory)


class _InstanceFetch:
    """One whole-instance request in flight, which other requests of the instance wait for."""

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.instance: _WholeInstance | None = None
        self.error: Exception | None = None


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
            raise RegionError(f"Retry attempts must be >= 1, got {attempts}.")
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


class DICOMwebClient:
    """Async DICOMweb client (QIDO-RS and WADO-RS) on one ``httpx.AsyncClient`` per loop.

    Parameters
    ----------
    url: str
        Base URL of the DICOMweb service, e.g. ``http://host:8042/dicom-web``
    qido_url_prefix: str | None, optional
        Path segment appended to ``url`` for QIDO-RS requests (some servers need one)
    wado_url_prefix: str | None, optional
        Path segment appended to ``url`` for WADO-RS requests
    headers: Mapping[str, str] | None, optional
        Headers sent with every request to ``url``'s origin (never to other hosts)
    auth: httpx.Auth | tuple[str, str] | None, optional
        Authentication for requests to ``url``'s origin
    transport: httpx.AsyncBaseTransport | None, optional
        Custom transport (e.g. ``httpx.MockTransport`` in tests)
    http2: bool, optional
        Use HTTP/2 (needs ``pip install 'dicomslide[http2]'``)
    timeout: httpx.Timeout | float, optional
        Timeouts; a number sets all of them
    verify: bool | str, optional
        TLS verification (on by default) or a CA bundle path
    retry: RetryPolicy | None, optional
        Retry policy
    max_frames_per_request: int, optional
        Most frames in one multipart request
    max_url_length: int, optional
        Longest URL sent (frame lists are split to stay below it)
    max_concurrent_requests: int, optional
        Most frame requests in flight at once
    coalesce_window: float, optional
        Seconds frame requests wait for more to merge with (helps blocking callers on many
        threads; 0 merges only what arrives in the same event-loop tick)
    max_requests_per_instance: int | None, optional
        Most frame requests in flight for one instance; frames asked for meanwhile wait and
        go out together in the next request. Servers that parse the whole instance for each
        request (Orthanc does) answer a stream of one-tile reads far faster this way (figures
        in ``benchmarks/RESULTS.md``, "Figures behind defaults"). ``None`` sends every tick's
        frames at once.
    readahead: int, optional
        Largest read-ahead window in frames (0: off). Readers that together ask for a run
        of consecutive frames of an instance (a tile scan in frame order, one call per tile)
        get the next frames fetched ahead in a few large requests, instead of paying one
        round trip per batch of tiles; random reads and single region reads never trigger it
        (see :class:`dicomslide.frames.FrameService`).
    cache_max_bytes: int | None, optional
        Budget of the encoded-frame cache shared by all slides of this client
    max_instance_bytes: int, optional
        Largest instance fetched whole when the server refuses to send its frames (see
        *Whole-instance fallback* in the module documentation); 0 turns the fallback off
    """

    def __init__(
        self,
        url: str,
        *,
        qido_url_prefix: str | None = None,
        wado_url_prefix: str | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http2: bool = False,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        verify: bool | str = True,
        retry: RetryPolicy | None = None,
        max_frames_per_request: int = 500,
        max_url_length: int = 8000,
        max_concurrent_requests: int = 8,
        coalesce_window: float = 0.002,
        max_requests_per_instance: int | None = 1,
        readahead: int = 256,
        cache_max_bytes: int | None = None,
        max_instance_bytes: int = DEFAULT_MAX_INSTANCE_BYTES,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise RegionError(f"DICOMweb URL must be http(s)://host/path, got {redact_url(url)}.")
        if parts.username or parts.password:
            raise RegionError(
                "Put credentials in auth=, not in the URL (they would end up in logs)."
            )
        # Query parameters of the URL (e.g. an access token) go with every request to the
        # origin, after the path segments this client appends.
        self._base_params = parse_qsl(parts.query, keep_blank_values=True)
        self.url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")).rstrip("/")
        self._origin = (parts.scheme, parts.netloc)
        self.qido_root = self.url + ("/" + qido_url_prefix.strip("/") if qido_url_prefix else "")
        self.wado_root = self.url + ("/" + wado_url_prefix.strip("/") if wado_url_prefix else "")
        self._headers = dict(headers or {})
        self._auth = auth
        secrets = [v for k, v in self._base_params if _is_credential_name(k)]
        secrets += [
            v
            for k, v in self._headers.items()
            if _is_credential_name(k) or k.lower() in {"cookie", "proxy-authorization"}
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
        self.max_url_length = max_url_length
        self.max_frames_per_request = max_frames_per_request
        self.frame_service_options: dict[str, Any] = {
            # chunking happens here, by URL length too; the service only bounds memory
            "max_frames_per_request": max(max_frames_per_request, 1),
            "max_concurrent_requests": max_concurrent_requests,
            "coalesce_window": coalesce_window,
            "max_requests_per_instance": max_requests_per_instance,
            "readahead": readahead,
        }
        if cache_max_bytes is not None:
            self.cache_max_bytes = cache_max_bytes
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._syntax_of: dict[str, str] = {}
        self._refuses_stored: set[str] = set()
        self._serves_stored: set[str] = set()
        self._probes: dict[str, asyncio.Future[None]] = {}
        self.max_instance_bytes = max_instance_bytes
        # SOP Instance UID -> the error that refused its frames (tentative until the whole
        # instance has been fetched once, then for good).
        self._frames_refused: dict[str, DicomWebError] = {}
        self._refusal_confirmed: set[str] = set()
        self._instance_fetches: dict[str, _InstanceFetch] = {}
        self._instances: OrderedDict[str, _WholeInstance] = OrderedDict()
        self._closed = False
        self.requests_sent = 0
        #: QIDO-RS ``limit`` of one page of search results.
        self.qido_page_size = 1000

    # --- plumbing -----------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
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

    def _same_origin(self, url: str) -> bool:
        parts = urlsplit(url)
        return (parts.scheme, parts.netloc) == self._origin

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def _send(
        self,
        url: str,
        *,
        accept: str,
        params: Sequence[tuple[str, str]] | None = None,
        stream: bool = False,
        retry_statuses: frozenset[int] = _RETRY_STATUSES,
    ) -> httpx.Response:
        client = self._client()
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
            shown = self._scrub(redact_url(str(request.url)))
            self.requests_sent += 1
            try:
                response = await client.send(request, auth=auth, stream=stream)
            except httpx.TransportError as exc:
                timeout = isinstance(exc, httpx.TimeoutException)
                if attempt + 1 >= self.retry.attempts:
                    raise self._transport_error(exc, shown, timeout=timeout) from exc
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
            text = self._scrub(body.decode("utf-8", "replace").strip())
            raise _error_for(
                response.status_code,
                f"GET {shown} answered {response.status_code} {response.reason_phrase}: {text}",
                shown,
            )

    def _transport_error(self, exc: Exception, shown_url: str, *, timeout: bool) -> SourceError:
        what = "timed out" if timeout else "failed"
        cls = RequestTimeoutError if timeout else TransportError
        return cls(self._scrub(f"GET {shown_url} {what}: {type(exc).__name__}: {exc}"))

    async def _json(
        self, url: str, params: Sequence[tuple[str, str]] | None = None
    ) -> list[dict[str, Any]]:
        return (await self._json_page(url, params))[0]

    async def _json_page(
        self, url: str, params: Sequence[tuple[str, str]] | None = None
    ) -> tuple[list[dict[str, Any]], bool]:
        """Items of a JSON response, and whether the server says it holds back more."""
        response = await self._send(url, accept="application/dicom+json", params=params)
        # PS3.18 8.3.4.4: a server that returns fewer results than matched says so with
        # "Warning: 299 <agent>: There are additional results that can be requested".
        warning = " ".join(response.headers.get_list("warning")).lower()
        more = "additional results" in warning
        if response.status_code == 204 or not response.content:
            return [], more
        # Series metadata of sparse images runs to megabytes: parse it off the loop.
        return await asyncio.to_thread(parse_json_bytes, response.content), more

    async def _datasets(self, items: list[dict[str, Any]]) -> list[Dataset]:
        _drop_inline_pixel_values(items)
        if len(items) > 50:
            return await asyncio.to_thread(datasets_from_json, items)
        return datasets_from_json(items)

    # --- QIDO-RS ------------------------------------------------------------------------

    async def _search(
        self,
        level: Literal["studies", "series", "instances"],
        study_instance_uid: str | None,
        series_instance_uid: str | None,
        search_filters: Mapping[str, Any] | None,
        page_size: int | None = None,
    ) -> list[Dataset]:
        url = qido_url(self.qido_root, level, study_instance_uid, series_instance_uid)
        filters = dict(search_filters or {})
        try:
            items = await self._paged(url, filters, page_size)
        except DicomWebError as exc:
            if exc.status_code != 400 or not filters:
                raise
            # Some stores reject filters on attributes they do not index: ask without them
            # and filter here.
            items = await self._paged(url, {}, page_size)
            datasets = await self._datasets(items)
            return [ds for ds in datasets if _matches(ds, filters)]
        return await self._datasets(items)

    async def _paged(
        self, url: str, filters: Mapping[str, Any], page_size: int | None = None
    ) -> list[dict[str, Any]]:
        page_size = page_size or self.qido_page_size
        out: list[dict[str, Any]] = []
        offset = 0
        previous_first: Any = None
        while True:
            params = qido_params(filters, limit=page_size, offset=offset)
            page, more = await self._json_page(url, params)
            if not page or page[0] == previous_first:
                break  # the server ignores offset: do not loop for ever
            out.extend(page)
            # A full page may be followed by more; so may a short one if the server capped
            # it below our limit and said so.
            if len(page) < page_size and not more:
                break
            if len(page) > page_size:
                break  # the server ignores limit: this was everything
            previous_first = page[0]
            offset += len(page)
        return out

    async def search_for_studies(
        self, search_filters: Mapping[str, Any] | None = None
    ) -> list[Dataset]:
        """Search for studies (QIDO-RS, all pages).

        Parameters
        ----------
        search_filters: Mapping[str, Any] | None, optional
            Attribute keywords mapped to values that must match

        Returns
        -------
        list[pydicom.Dataset]
            Matching studies
        """
        return await self._search("studies", None, None, search_filters)

    async def search_for_series(
        self,
        study_instance_uid: str | None = None,
        search_filters: Mapping[str, Any] | None = None,
    ) -> list[Dataset]:
        """Search for series (QIDO-RS, all pages).

        Parameters
        ----------
        study_instance_uid: str | None, optional
            Study Instance UID
        search_filters: Mapping[str, Any] | None, optional
            Attribute keywords mapped to values that must match

        Returns
        -------
        list[pydicom.Dataset]
            Matching series
        """
        return await self._search("series", study_instance_uid, None, search_filters)

    async def search_for_instances(
        self,
        study_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
        search_filters: Mapping[str, Any] | None = None,
    ) -> list[Dataset]:
        """Search for instances (QIDO-RS, all pages).

        Parameters
        ----------
        study_instance_uid: str | None, optional
            Study Instance UID
        series_instance_uid: str | None, optional
            Series Instance UID
        search_filters: Mapping[str, Any] | None, optional
            Attribute keywords mapped to values that must match

        Returns
        -------
        list[pydicom.Dataset]
            Matching instances
        """
        return await self._search(
            "instances", study_instance_uid, series_instance_uid, search_filters
        )

    # --- WADO-RS metadata and bulk data -------------------------------------------------

    def _remember(self, datasets: list[Dataset]) -> None:
        for ds in datasets:
            syntax = ds.get("AvailableTransferSyntaxUID")
            if syntax and "SOPInstanceUID" in ds:
                self._syntax_of[str(ds.SOPInstanceUID)] = str(syntax)

    async def retrieve_series_metadata(
        self, study_instance_uid: str, series_instance_uid: str
    ) -> list[Dataset]:
        """Metadata of every instance of a series, in one request.

        Parameters
        ----------
        study_instance_uid: str
            Study Instance UID
        series_instance_uid: str
            Series Instance UID

        Returns
        -------
        list[pydicom.Dataset]
            Metadata without Pixel Data
        """
        url = series_metadata_url(self.wado_root, study_instance_uid, series_instance_uid)
        datasets = await self._datasets(await self._json(url))
        self._remember(datasets)
        return datasets

    async def retrieve_instance_metadata(
        self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
    ) -> Dataset:
        """Metadata of one instance.

        Parameters
        ----------
        study_instance_uid: str
            Study Instance UID
        series_instance_uid: str
            Series Instance UID
        sop_instance_uid: str
            SOP Instance UID

        Returns
        -------
        pydicom.Dataset
            Metadata without Pixel Data
        """
        url = instance_metadata_url(
            self.wado_root, study_instance_uid, series_instance_uid, sop_instance_uid
        )
        datasets = await self._datasets(await self._json(url))
        if len(datasets) != 1:
            raise ProtocolError(
                f"Metadata of instance {sop_instance_uid} had {len(datasets)} items, expected 1."
            )
        self._remember(datasets)
        return datasets[0]

    async def retrieve_bulkdata(self, url: str) -> bytes:
        """Bulk data behind a BulkDataURI (e.g. an ICC profile).

        Parameters
        ----------
        url: str
            The BulkDataURI (absolute, or relative to the WADO-RS root)

        Returns
        -------
        bytes
            The bulk data (of the first part when the server answers multipart)
        """
        if not urlsplit(url).scheme:
            url = self.wado_root + "/" + url.lstrip("/")
        response = await self._send(
            url, accept='multipart/related; type="application/octet-stream"'
        )
        content_type = response.headers.get("content-type", "")
        if content_type.lower().startswith("multipart/"):
            parser = MultipartParser(boundary_from_content_type(content_type))
            parts = parser.feed(response.content)
            parser.close()
            if not parts:
                raise ProtocolError(f"Bulk data response of {redact_url(url)} had no parts.")
            return parts[0].body
        return response.content

    # --- frames -------------------------------------------------------------------------

    async def iter_frames(
        self,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_instance_uid: str,
        frame_numbers: Sequence[int],
    ) -> AsyncIterator[tuple[int, EncodedFrame]]:
        """Frames of one instance, each yielded as soon as its part has arrived.

        Parameters
        ----------
        study_instance_uid: str
            Study Instance UID
        series_instance_uid: str
            Series Instance UID
        sop_instance_uid: str
            SOP Instance UID
        frame_numbers: Sequence[int]
            One-based frame numbers

        Returns
        -------
        AsyncIterator[tuple[int, dicomslide.sources.EncodedFrame]]
            Frame number and frame, in the order the server sends them
        """
        prefix = len(
            frames_url(
                self.wado_root, study_instance_uid, series_instance_uid, sop_instance_uid, [1]
            )
        )
        chunks = chunk_frame_numbers(
            list(frame_numbers),
            max_frames=self.max_frames_per_request,
            max_url_length=self.max_url_length,
            url_prefix_length=prefix - 1,
        )
        from_instance: list[int] = []
        for index, chunk in enumerate(chunks):
            remaining = list(chunk)
            attempt = 0
            try:
                while remaining:
                    try:
                        frames = self._frames_once(
                            study_instance_uid,
                            series_instance_uid,
                            sop_instance_uid,
                            list(remaining),
                        )
                        # Closed here even when our consumer stops early, so the response is
                        # released now rather than whenever the generator is collected.
                        async with contextlib.aclosing(frames):
                            async for number, frame in frames:
                                remaining.remove(number)
                                yield number, frame
                    except _IncompleteResponse as exc:
                        # A truncated body or a connection dropped mid-body: ask again for
                        # the frames still missing, never for those already delivered.
                        attempt += 1
                        if attempt >= self.retry.attempts:
                            cause = exc.__cause__
                            if isinstance(cause, httpx.TransportError):
                                raise self._transport_error(
                                    cause,
                                    exc.url,
                                    timeout=isinstance(cause, httpx.TimeoutException),
                                ) from exc
                            raise
                        await _sleep(self.retry.delay(attempt - 1))
            except (_FramesRefused, DicomWebError) as exc:
                if isinstance(exc, DicomWebError) and sop_instance_uid not in self._frames_refused:
                    raise
                from_instance = remaining + [n for rest in chunks[index + 1 :] for n in rest]
                break
        if from_instance:
            async for number, frame in self._frames_from_instance(
                study_instance_uid, series_instance_uid, sop_instance_uid, from_instance
            ):
                yield number, frame

    async def _frames_response(self, sop: str, url: str) -> httpx.Response:
        loop = asyncio.get_running_loop()
        while True:
            if sop in self._frames_refused:
                raise _FramesRefused
            if sop in self._refuses_stored or sop in self._serves_stored:
                return await self._frames_or_refusal(sop, url)
            probe = self._probes.get(sop)
            if probe is not None and not probe.done() and probe.get_loop() is loop:
                # The first request of this instance will tell whether the server refuses
                # stored bytes (or frames altogether); wait for that rather than be refused
                # too. (asyncio.wait does not cancel the shared future when this waiter is
                # cancelled.)
                await asyncio.wait([probe])
                continue
            probe = loop.create_future()
            self._probes[sop] = probe
            try:
                return await self._frames_or_refusal(sop, url)
            finally:
                if self._probes.get(sop) is probe:
                    del self._probes[sop]
                probe.set_result(None)

    async def _frames_or_refusal(self, sop: str, url: str) -> httpx.Response:
        try:
            return await self._stored_or_explicit(sop, url)
        except DicomWebError as exc:
            if exc.status_code in _INSTANCE_FALLBACK_STATUSES and self.max_instance_bytes > 0:
                # Refused even with an explicit media type: frames of this instance come from
                # the whole instance (for good once that has been fetched).
                self._frames_refused.setdefault(sop, exc)
            raise

    async def _stored_or_explicit(self, sop: str, url: str) -> httpx.Response:
        if sop not in self._refuses_stored:
            try:
                response = await self._send(url, accept=ACCEPT_STORED_FRAMES, stream=True)
            except DicomWebError as exc:
                if exc.status_code not in _REFUSAL_STATUSES:
                    raise
                # The server cannot send stored bytes as asked; remember and ask explicitly.
                self._refuses_stored.add(sop)
            else:
                self._serves_stored.add(sop)
                return response
        accept = accept_for_transfer_syntax(self._syntax_of.get(sop, _EXPLICIT_VR_LITTLE_ENDIAN))
        return await self._send(url, accept=accept, stream=True)

    async def _frames_once(
        self, study: str, series: str, sop: str, numbers: list[int]
    ) -> AsyncGenerator[tuple[int, EncodedFrame], None]:
        url = frames_url(self.wado_root, study, series, sop, numbers)
        response = await self._frames_response(sop, url)
        shown = self._scrub(redact_url(str(response.request.url)))
        try:
            content_type = response.headers.get("content-type", "")
            outer_syntax = transfer_syntax_from_content_type(content_type)
            parser = MultipartParser(boundary_from_content_type(content_type))
            wanted = set(numbers)
            delivered: set[int] = set()
            index = 0
            try:
                # aiter_bytes, not aiter_raw: a gzip Content-Encoding must be undone.
                async for chunk in response.aiter_bytes():
                    for part in parser.feed(chunk):
                        if index >= len(numbers):
                            raise ProtocolError(
                                f"Server returned more parts than the {len(numbers)} frames "
                                f"asked of instance {sop}."
                            )
                        number = _frame_from_location(part.content_location) or numbers[index]
                        if number not in wanted or number in delivered:
                            what = "twice" if number in delivered else "without being asked for"
                            raise ProtocolError(
                                f"Server returned frame {number} of instance {sop} {what} "
                                f"(part {index + 1} of a response for {len(numbers)} frames)."
                            )
                        delivered.add(number)
                        frame = self._frame(part.body, part.content_type, outer_syntax, sop)
                        self._check_not_mislabelled(frame, sop, shown)
                        index += 1
                        yield number, frame
                parser.close()
            except httpx.TransportError as exc:
                raise _IncompleteResponse(
                    f"Response for {len(numbers)} frames of instance {sop} broke off after "
                    f"{index} parts: {type(exc).__name__}: {self._scrub(str(exc))}",
                    shown,
                ) from exc
            except ProtocolError as exc:
                if (
                    isinstance(exc, _IncompleteResponse)
                    or parser.finished
                    or index >= len(numbers)
                ):
                    raise
                raise _IncompleteResponse(
                    f"Response for {len(numbers)} frames of instance {sop} ended after {index} "
                    f"parts: {exc}",
                    shown,
                ) from exc
            if index < len(numbers):
                raise _IncompleteResponse(
                    f"Server returned {index} parts for the {len(numbers)} frames asked of "
                    f"instance {sop}.",
                    shown,
                )
        finally:
            await response.aclose()

    # --- whole-instance fallback ----------------------------------------------------------

    async def _frames_from_instance(
        self, study: str, series: str, sop: str, numbers: list[int]
    ) -> AsyncGenerator[tuple[int, EncodedFrame], None]:
        pending = list(numbers)
        while pending:
            instance = await self._whole_instance(study, series, sop)
            bad = [n for n in pending if not 1 <= n <= instance.layout.number_of_frames]
            if bad:
                raise RegionError(
                    f"frame numbers {bad} outside the valid range "
                    f"[1, {instance.layout.number_of_frames}] of instance {sop}"
                )
            batch = pending[:_INSTANCE_READ_BATCH]
            try:
                if instance.in_memory:
                    frames = instance.read_frames(batch)
                else:
                    frames = await asyncio.to_thread(instance.read_frames, batch)
            except _InstanceEvicted:
                continue
            except InvalidDataError as exc:
                raise InvalidDataError(f"whole instance {sop}: {exc}") from exc
            del pending[: len(batch)]
            for number, data in frames:
                yield number, EncodedFrame(data, instance.transfer_syntax_uid)

    async def _whole_instance(self, study: str, series: str, sop: str) -> _WholeInstance:
        loop = asyncio.get_running_loop()
        while True:
            cached = self._instances.get(sop)
            if cached is not None:
                self._instances.move_to_end(sop)
                return cached
            fetch = self._instance_fetches.get(sop)
            if fetch is not None and not fetch.done.done() and fetch.done.get_loop() is loop:
                # One whole-instance request per instance, however many want its frames.
                await asyncio.wait([fetch.done])
                if fetch.instance is not None:
                    return fetch.instance
                if fetch.error is not None:
                    raise fetch.error
                continue  # the fetching task was cancelled: try again
            fetch = _InstanceFetch(loop.create_future())
            self._instance_fetches[sop] = fetch
            try:
                try:
                    instance = await self._fetch_instance(study, series, sop)
                except Exception as exc:
                    error = self._instance_failure(sop, exc)
                    fetch.error = error
                    if sop not in self._refusal_confirmed:
                        # Not known to work: the next request asks for frames again.
                        self._frames_refused.pop(sop, None)
                    raise error from exc
                self._refusal_confirmed.add(sop)
                self._store_instance(sop, instance)
                fetch.instance = instance
                return instance
            finally:
                if self._instance_fetches.get(sop) is fetch:
                    del self._instance_fetches[sop]
                fetch.done.set_result(None)

    def _instance_failure(self, sop: str, exc: Exception) -> Exception:
        """The error to raise when the whole instance could not be had either."""
        refused = self._frames_refused.get(sop)
        if isinstance(exc, _InstanceTooLarge):
            limit = f"larger than max_instance_bytes ({self.max_instance_bytes})"
            if refused is None:
                return UnsupportedError(f"instance {sop} is {limit}; its frames cannot be read")
            return type(refused)(
                f"{refused} The instance is {limit}, so it was not fetched whole instead.",
                refused.status_code,
                refused.url,
            )
        if sop in self._refusal_confirmed or refused is None:
            return exc
        # Not known to work: report the frames error, which says what the server did not do.
        return type(refused)(str(refused), refused.status_code, refused.url)

    async def _fetch_instance(self, study: str, series: str, sop: str) -> _WholeInstance:
        url = instance_metadata_url(self.wado_root, study, series, sop).removesuffix("/metadata")
        response = await self._send(url, accept=ACCEPT_INSTANCE, stream=True)
        shown = self._scrub(redact_url(str(response.request.url)))
        spool: _InstanceSpool | None = None
        try:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_instance_bytes + (1 << 16):
                raise _InstanceTooLarge
            content_type = response.headers.get("content-type", "")
            boundary = (
                boundary_from_content_type(content_type)
                if content_type.lower().startswith("multipart/")
                else None
            )
            spool = _InstanceSpool(
                boundary, limit=self.max_instance_bytes, memory_limit=_INSTANCE_MEMORY_BYTES
            )
            try:
                async for chunk in response.aiter_bytes():
                    spool.feed(chunk)
            except httpx.TransportError as exc:
                raise self._transport_error(
                    exc, shown, timeout=isinstance(exc, httpx.TimeoutException)
                ) from exc
            spool.finish()
        except BaseException:
            if spool is not None:
                spool.close()
            raise
        finally:
            await response.aclose()
        if spool.in_memory:
            return _open_whole_instance(spool, sop)
        return await asyncio.to_thread(_open_whole_instance, spool, sop)

    def _store_instance(self, sop: str, instance: _WholeInstance) -> None:
        old = self._instances.pop(sop, None)
        if old is not None and old is not instance:
            old.close()
        self._instances[sop] = instance
        while len(self._instances) > _INSTANCE_CACHE_SIZE:
            _, evicted = self._instances.popitem(last=False)
            evicted.close()

    def _check_not_mislabelled(self, frame: EncodedFrame, sop: str, url: str) -> None:
        """Fall back to the whole instance when a server sends stored bytes labelled native.

        Orthanc 1.10 refuses stored bytes of transfer syntaxes it does not know (HTJ2K,
        JPEG XL) and then answers the request for Explicit VR Little Endian with 200 and the
        compressed frames unchanged, labelled native.  Only frames asked for explicitly after
        such a refusal are checked; a native frame that merely starts like a codestream costs
        one whole-instance request, never wrong pixels.
        """
        if (
            sop not in self._refuses_stored
            or frame.transfer_syntax_uid not in part10.NATIVE_TRANSFER_SYNTAXES
        ):
            return
        found = sniff_transfer_syntax(frame.data[:4096])
        if found is None:
            return
        self._frames_refused.setdefault(
            sop,
            DicomWebError(
                f"The server labelled frames of instance {sop} {frame.transfer_syntax_uid} "
                f"but sent a {found} codestream.",
                200,
                url,
            ),
        )
        raise _FramesRefused

    def _frame(
        self, body: bytes, part_type: str | None, outer_syntax: str | None, sop: str
    ) -> EncodedFrame:
        syntax = (
            (transfer_syntax_from_content_type(part_type) if part_type else None)
            or outer_syntax
            or self._syntax_of.get(sop)
            or sniff_transfer_syntax(body)
        )
        if syntax is None:
            syntax = _RLE_LOSSLESS if looks_like_rle(body) else _EXPLICIT_VR_LITTLE_ENDIAN
        return EncodedFrame(body, syntax)

    async def aclose(self) -> None:
        """Close connections; later calls raise :class:`~dicomslide.errors.UsageError`."""
        self._closed = True
        for instance in self._instances.values():
            instance.close()
        self._instances.clear()
        loop = asyncio.get_running_loop()
        for client_loop, client in list(self._clients.items()):
            if client_loop is loop:
                await client.aclose()
        self._clients.clear()

    async def __aenter__(self) -> DICOMwebClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


_PIXEL_DATA_TAGS: Final = ("7FE00008", "7FE00009", "7FE00010")


def _drop_inline_pixel_values(items: list[dict[str, Any]]) -> None:
    """Keep pixel data elements of metadata as markers, without a value.

    Orthanc sends Float Pixel Data as ``{"vr": "OF", "Value": [0]}`` (likewise Double Float
    Pixel Data), which is not valid DICOM JSON for a binary VR. Metadata never carries pixel
    values, so whatever value a pixel data element has is dropped; the element stays (empty,
    as for a ``BulkDataURI``) because it tells which kind of pixel data the instance has.
    """
    for item in items:
        if not isinstance(item, dict):
            continue
        for tag in _PIXEL_DATA_TAGS:
            element = item.get(tag)
            if isinstance(element, dict) and "Value" in element:
                item[tag] = {k: v for k, v in element.items() if k != "Value"}


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


def _frame_from_location(location: str | None) -> int | None:
    """The frame number a part's Content-Location names, if it names exactly one."""
    if not location:
        return None
    match = _FRAME_LOCATION_RE.search(urlsplit(location).path)
    return int(match.group(1)) if match else None


def _matches(ds: Dataset, filters: Mapping[str, Any]) -> bool:
    for keyword, wanted in filters.items():
        if keyword in {"includefield", "limit", "offset", "fuzzymatching"}:
            continue
        value = ds.get(keyword)
        if value is None:
            continue  # not returned by the server: cannot judge, keep
        values = wanted if isinstance(wanted, list | tuple) else [wanted]
        if str(value) not in {str(v) for v in values}:
            return False
    return True

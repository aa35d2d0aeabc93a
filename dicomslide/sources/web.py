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
remembered for the instance.

Robustness
----------
Connect and read timeouts; retries with capped exponential backoff and full jitter for
connection errors and 408/429/500/502/503/504, honouring ``Retry-After``, never for other
4xx. A truncated or short multipart response is retried for the missing frames only. Headers
and ``auth`` are only sent to the configured origin (not to bulk data or redirects on other
hosts); redirects are not followed automatically. Errors carry the status and the URL without
credentials.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydicom import Dataset

from dicomslide.codecs import sniff_transfer_syntax
from dicomslide.errors import (
    DicomWebError,
    NotFoundError,
    ProtocolError,
    RegionError,
    SourceError,
    TransportError,
    UsageError,
)
from dicomslide.sources.dicomjson import datasets_from_json, parse_json_bytes
from dicomslide.sources.dicomweb_urls import (
    ACCEPT_STORED_FRAMES,
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
_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
_RLE_LOSSLESS = "1.2.840.10008.1.2.5"


class ServerError(DicomWebError):
    """The server answered with a 5xx status."""


class _IncompleteResponse(ProtocolError):
    """A frames response ended early; the missing frames may be asked for again."""


class NotAcceptableError(DicomWebError):
    """The server cannot give the representation asked for (406, or 400 for media types)."""


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
                try:
                    seconds = float(retry_after)
                except ValueError:
                    parsed = email.utils.parsedate_to_datetime(retry_after)
                    seconds = parsed.timestamp() - time.time() if parsed else 0.0
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
    cache_max_bytes: int | None, optional
        Budget of the encoded-frame cache shared by all slides of this client
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
        cache_max_bytes: int | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise RegionError(f"DICOMweb URL must be http(s)://host/path, got {redact_url(url)}.")
        if parts.username or parts.password:
            raise RegionError(
                "Put credentials in auth=, not in the URL (they would end up in logs)."
            )
        self.url = url.rstrip("/")
        self._origin = (parts.scheme, parts.netloc)
        self.qido_root = self.url + ("/" + qido_url_prefix.strip("/") if qido_url_prefix else "")
        self.wado_root = self.url + ("/" + wado_url_prefix.strip("/") if wado_url_prefix else "")
        self._headers = dict(headers or {})
        self._auth = auth
        self._transport = transport
        self._http2 = http2
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._verify = verify
        self.retry = retry or RetryPolicy()
        self.max_url_length = max_url_length
        self.max_frames_per_request = max_frames_per_request
        self.frame_service_options: dict[str, Any] = {
            # chunking happens here, by URL length too; the service only bounds memory
            "max_frames_per_request": max(max_frames_per_request, 1),
            "max_concurrent_requests": max_concurrent_requests,
            "coalesce_window": coalesce_window,
        }
        if cache_max_bytes is not None:
            self.cache_max_bytes = cache_max_bytes
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._syntax_of: dict[str, str] = {}
        self._refuses_stored: set[str] = set()
        self._closed = False
        self.requests_sent = 0

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
        headers = {"Accept": accept}
        auth: Any = None
        if self._same_origin(url):
            headers = {**self._headers, **headers}
            auth = self._auth
        attempt = 0
        while True:
            request = client.build_request(
                "GET", url, params=list(params) if params else None, headers=headers
            )
            self.requests_sent += 1
            try:
                response = await client.send(request, auth=auth, stream=stream)
            except httpx.TimeoutException as exc:
                if attempt + 1 >= self.retry.attempts:
                    raise _transport_error(exc, url, timeout=True) from exc
                await asyncio.sleep(self.retry.delay(attempt))
                attempt += 1
                continue
            except httpx.TransportError as exc:
                if attempt + 1 >= self.retry.attempts:
                    raise _transport_error(exc, url, timeout=False) from exc
                await asyncio.sleep(self.retry.delay(attempt))
                attempt += 1
                continue
            if response.status_code < 400:
                return response
            if response.status_code in retry_statuses and attempt + 1 < self.retry.attempts:
                await response.aclose()
                await asyncio.sleep(self.retry.delay(attempt, response))
                attempt += 1
                continue
            body = b""
            try:
                body = (await response.aread())[:300]
            finally:
                await response.aclose()
            raise _error_for(
                response.status_code,
                f"GET {redact_url(str(request.url))} answered {response.status_code} "
                f"{response.reason_phrase}: {body.decode('utf-8', 'replace').strip()}",
                redact_url(str(request.url)),
            )

    async def _json(
        self, url: str, params: Sequence[tuple[str, str]] | None = None
    ) -> list[dict[str, Any]]:
        response = await self._send(url, accept="application/dicom+json", params=params)
        if response.status_code == 204 or not response.content:
            return []
        # Series metadata of sparse images runs to megabytes: parse it off the loop.
        return await asyncio.to_thread(parse_json_bytes, response.content)

    async def _datasets(self, items: list[dict[str, Any]]) -> list[Dataset]:
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
        page_size: int = 1000,
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
        self, url: str, filters: Mapping[str, Any], page_size: int
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        offset = 0
        previous_first: Any = None
        while True:
            params = qido_params(filters, limit=page_size, offset=offset)
            page = await self._json(url, params)
            if not page or page[0] == previous_first:
                break  # the server ignores offset: do not loop for ever
            out.extend(page)
            if len(page) < page_size:
                break
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
        for chunk in chunks:
            remaining = list(chunk)
            attempt = 0
            while remaining:
                try:
                    async for number, frame in self._frames_once(
                        study_instance_uid, series_instance_uid, sop_instance_uid, list(remaining)
                    ):
                        remaining.remove(number)
                        yield number, frame
                except _IncompleteResponse:
                    # A truncated body or a connection dropped mid-body: ask again for the
                    # frames still missing, never for those already delivered.
                    attempt += 1
                    if attempt >= self.retry.attempts:
                        raise
                    await asyncio.sleep(self.retry.delay(attempt - 1))

    async def _frames_once(
        self, study: str, series: str, sop: str, numbers: list[int]
    ) -> AsyncIterator[tuple[int, EncodedFrame]]:
        url = frames_url(self.wado_root, study, series, sop, numbers)
        if sop in self._refuses_stored:
            accept = accept_for_transfer_syntax(
                self._syntax_of.get(sop, _EXPLICIT_VR_LITTLE_ENDIAN)
            )
            response = await self._send(url, accept=accept, stream=True)
        else:
            try:
                response = await self._send(
                    url,
                    accept=ACCEPT_STORED_FRAMES,
                    stream=True,
                    retry_statuses=_RETRY_STATUSES,
                )
            except DicomWebError as exc:
                if exc.status_code not in _REFUSAL_STATUSES:
                    raise
                # The server cannot send stored bytes as asked; remember and ask explicitly.
                self._refuses_stored.add(sop)
                accept = accept_for_transfer_syntax(
                    self._syntax_of.get(sop, _EXPLICIT_VR_LITTLE_ENDIAN)
                )
                response = await self._send(url, accept=accept, stream=True)
        try:
            content_type = response.headers.get("content-type", "")
            outer_syntax = transfer_syntax_from_content_type(content_type)
            parser = MultipartParser(boundary_from_content_type(content_type))
            index = 0
            try:
                async for chunk in response.aiter_raw():
                    for part in parser.feed(chunk):
                        if index >= len(numbers):
                            raise ProtocolError(
                                f"Server returned more parts than the {len(numbers)} frames "
                                f"asked of instance {sop}."
                            )
                        frame = self._frame(part.body, part.content_type, outer_syntax, sop)
                        yield numbers[index], frame
                        index += 1
                parser.close()
            except httpx.TransportError as exc:
                raise _IncompleteResponse(
                    f"Response for {len(numbers)} frames of instance {sop} broke off after "
                    f"{index} parts: {type(exc).__name__}: {exc}"
                ) from exc
            except ProtocolError as exc:
                if parser.finished or index >= len(numbers):
                    raise
                raise _IncompleteResponse(
                    f"Response for {len(numbers)} frames of instance {sop} ended after {index} "
                    f"parts: {exc}"
                ) from exc
            if index < len(numbers):
                raise _IncompleteResponse(
                    f"Server returned {index} parts for the {len(numbers)} frames asked of "
                    f"instance {sop}."
                )
        finally:
            await response.aclose()

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
        loop = asyncio.get_running_loop()
        for client_loop, client in list(self._clients.items()):
            if client_loop is loop:
                await client.aclose()
        self._clients.clear()

    async def __aenter__(self) -> DICOMwebClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _transport_error(exc: Exception, url: str, *, timeout: bool) -> SourceError:
    what = "timed out" if timeout else "failed"
    error = TransportError(f"GET {redact_url(url)} {what}: {type(exc).__name__}: {exc}")
    return error


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

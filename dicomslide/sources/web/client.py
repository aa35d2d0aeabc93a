"""Async DICOMweb client on httpx: QIDO-RS, WADO-RS metadata, bulk data and frames.

The client composes its parts: :mod:`~dicomslide.sources.web.transport` (requests,
credentials, retries), :mod:`~dicomslide.sources.web.negotiation` (what it learnt per
instance), :mod:`~dicomslide.sources.web.qido` (searches) and
:mod:`~dicomslide.sources.web.instance` (the whole-instance fallback).

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
(not one per concurrent request). One exception: when that first request guesses the syntax
from the metadata, one other request per instance asks for stored bytes at once instead of
waiting (a read-ahead window should not wait a round trip; stored bytes are never a wrong
guess); if that is refused, it waits like the others.

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
import contextlib
import re
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from pydicom import Dataset

from dicomslide._docs import borrowed_doc
from dicomslide._syntaxes import EXPLICIT_VR_LITTLE_ENDIAN, NATIVE, RLE_LOSSLESS
from dicomslide.codecs import sniff_transfer_syntax
from dicomslide.errors import (
    ArgumentError,
    DicomWebError,
    ProtocolError,
    ResponseTooLargeError,
)
from dicomslide.sources.dicomweb_urls import (
    ACCEPT_STORED_FRAMES,
    accept_for_transfer_syntax,
    chunk_frame_numbers,
    frames_url,
    instance_metadata_url,
    redact_url,
    series_metadata_url,
)
from dicomslide.sources.foreign import looks_like_rle
from dicomslide.sources.multipart import (
    MultipartParser,
    Part,
    boundary_from_content_type,
    transfer_syntax_from_content_type,
)
from dicomslide.sources.protocol import EncodedFrame, Source
from dicomslide.sources.runtime import FrameServiceOptions, SourceRuntime
from dicomslide.sources.web.instance import (
    DEFAULT_MAX_INSTANCE_BYTES,
    FramesRefusedError,
    WholeInstanceFallback,
)
from dicomslide.sources.web.negotiation import Negotiation, implied_transfer_syntax
from dicomslide.sources.web.qido import QidoSearch, json_items, to_datasets
from dicomslide.sources.web.redaction import redacted_errors, redacted_stream_errors
from dicomslide.sources.web.transport import (
    DEFAULT_DEADLINE,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUT,
    RetryPolicy,
    Transport,
)

__all__ = ["DICOMwebClient"]

_REFUSAL_STATUSES = frozenset({400, 406, 500})
# Frames requests answered with these (after the explicit media type was tried too) make the
# client fetch the whole instance instead.
_INSTANCE_FALLBACK_STATUSES = frozenset({400, 404, 406, 500})
# Matched against the whole Content-Location, ending the path at any query or fragment as
# urlsplit() would: urlsplit per part cost ~7x the match (1 ms for 340 parts).
_FRAME_LOCATION_RE = re.compile(r"[^?#]*/frames/([0-9]+)/?(?:[?#]|$)")
#: Ceiling of the byte budget of one frame (``max_frame_bytes``).
DEFAULT_MAX_FRAME_BYTES = 256 << 20
# A compressed frame can exceed its raw size (noise, codec headers); the derived budget
# allows twice the raw size plus this.
_FRAME_SLACK = 1 << 20


class _IncompleteResponse(ProtocolError):
    """A frames response ended early; the missing frames may be asked for again."""

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


#: Bytes of a body the multipart parser is given at a time: what httpcore's reads returned
#: before connections read a megabyte at once (see dicomslide.sources.web.wide).
PARSE_BYTES: Final = 64 * 1024


def _parsed(parser: MultipartParser, chunk: bytes) -> Iterator[Part]:
    """Parts a body chunk completes, fed to the parser :data:`PARSE_BYTES` at a time.

    Whether a wrong part is retried depends on whether the close delimiter was parsed with
    it (see ``_frames_once``), so the pieces stay those of 64 KiB reads: a one-chunk
    response with a duplicated part is asked again as before, not failed.
    """
    if len(chunk) <= PARSE_BYTES:
        yield from parser.feed(chunk)
        return
    view = memoryview(chunk)
    for start in range(0, len(chunk), PARSE_BYTES):
        yield from parser.feed(view[start : start + PARSE_BYTES])


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
        Read-ahead window in frames (0: off). Readers that together ask for a run
        of consecutive frames of an instance (a tile scan in frame order, one call per tile)
        get the next frames fetched ahead in a few large requests, instead of paying one
        round trip per batch of tiles; random reads and single region reads never trigger it
        (see :class:`dicomslide.frames.FrameService`).
    cache_max_bytes: int | None, optional
        Budget of the encoded-frame cache shared by all slides of this client (``None``: the
        default, 512 MiB)
    decoded_cache_max_bytes: int | None, optional
        Budget of the decoded-tile cache (``None``: the default, 128 MiB; 0 turns it off)
    max_instance_bytes: int, optional
        Largest instance fetched whole when the server refuses to send its frames (see
        *Whole-instance fallback* in the module documentation); 0 turns the fallback off
    max_response_bytes: int, optional
        Byte budget of one body read into memory whole (metadata, a QIDO page, bulk data),
        counted after gzip/deflate are undone (default 256 MiB)
    max_frame_bytes: int, optional
        Ceiling of the byte budget of one frame. Frames of an instance whose metadata this
        client has read get ``2 * Rows * Columns * Samples per Pixel * bytes per sample +
        1 MiB`` (below the ceiling); other frames get the ceiling (default 256 MiB)
    deadline: float | None, optional
        Seconds one operation (a metadata read, a QIDO search with all its pages, a frames
        request, a bulk data read) may spend waiting on the server, retries included, on top
        of the per-phase ``timeout``; ``None`` turns it off (default 300 s)
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
        decoded_cache_max_bytes: int | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        deadline: float | None = DEFAULT_DEADLINE,
    ) -> None:
        if isinstance(max_frame_bytes, bool) or not (
            isinstance(max_frame_bytes, int) and max_frame_bytes > 0
        ):
            raise ArgumentError(
                f"max_frame_bytes must be a positive number of bytes, got {max_frame_bytes!r}."
            )
        self._max_frame_bytes = max_frame_bytes
        # SOP Instance UID -> byte budget of one frame, from the instance's metadata.
        self._frame_budgets: dict[str, int] = {}
        self._transport = Transport(
            url,
            headers=headers,
            auth=auth,
            transport=transport,
            http2=http2,
            timeout=timeout,
            verify=verify,
            retry=retry,
            max_response_bytes=max_response_bytes,
            deadline=deadline,
        )
        self.url = self._transport.url
        self.qido_root = self.url + ("/" + qido_url_prefix.strip("/") if qido_url_prefix else "")
        self.wado_root = self.url + ("/" + wado_url_prefix.strip("/") if wado_url_prefix else "")
        self.max_url_length = max_url_length
        self.max_frames_per_request = max_frames_per_request
        self._runtime = SourceRuntime(
            self,
            cache_max_bytes=cache_max_bytes,
            decoded_cache_max_bytes=decoded_cache_max_bytes,
            service_options=FrameServiceOptions(
                # chunking happens here, by URL length too; the service only bounds memory
                max_frames_per_request=max(max_frames_per_request, 1),
                max_concurrent_requests=max_concurrent_requests,
                coalesce_window=coalesce_window,
                max_requests_per_instance=max_requests_per_instance,
                readahead=readahead,
            ),
        )
        self._negotiation = Negotiation()
        self._qido = QidoSearch(self._transport, self.qido_root)
        self._fallback = WholeInstanceFallback(
            self._transport, self.wado_root, max_instance_bytes, self._negotiation
        )

    @property
    def runtime(self) -> SourceRuntime:
        """dicomslide.sources.runtime.SourceRuntime: This client's caches and frame services."""
        return self._runtime

    @property
    def retry(self) -> RetryPolicy:
        """RetryPolicy: When and how long to wait before a request is sent again."""
        return self._transport.retry

    @retry.setter
    def retry(self, policy: RetryPolicy) -> None:
        self._transport.retry = policy

    @property
    def closed(self) -> bool:
        """bool: Whether :meth:`aclose` was called (every later call raises)."""
        return self._transport.closed

    @property
    def requests_sent(self) -> int:
        """int: Requests sent so far, retries and redirect hops included."""
        return self._transport.requests_sent

    @property
    def qido_page_size(self) -> int:
        """int: QIDO-RS ``limit`` of one page of search results."""
        return self._qido.page_size

    @qido_page_size.setter
    def qido_page_size(self, size: int) -> None:
        self._qido.page_size = size

    @property
    def max_response_bytes(self) -> int:
        """int: Byte budget of one metadata, QIDO page or bulk data body (after decoding)."""
        return self._transport.max_response_bytes

    @property
    def max_frame_bytes(self) -> int:
        """int: Ceiling of the byte budget of one frame."""
        return self._max_frame_bytes

    @property
    def deadline(self) -> float | None:
        """float | None: Seconds one operation may wait on the server (None: no limit)."""
        return self._transport.deadline

    def _frame_budget(self, sop_instance_uid: str) -> int:
        # Derived from the instance's metadata if this client read it, else the ceiling.
        return self._frame_budgets.get(sop_instance_uid, self._max_frame_bytes)

    @property
    def max_instance_bytes(self) -> int:
        """int: Largest instance fetched whole when the server refuses its frames."""
        return self._fallback.max_instance_bytes

    # --- JSON ---------------------------------------------------------------------------

    async def _json(
        self, url: str, params: Sequence[tuple[str, str]] | None = None
    ) -> list[dict[str, Any]]:
        return (await json_items(self._transport, url, params))[0]

    # --- QIDO-RS ------------------------------------------------------------------------

    @redacted_errors
    @borrowed_doc(Source.search_for_studies)
    async def search_for_studies(
        self, search_filters: Mapping[str, Any] | None = None
    ) -> list[Dataset]:
        """Search for studies (QIDO-RS, all pages)."""
        return await self._qido.search("studies", None, None, search_filters)

    @redacted_errors
    @borrowed_doc(Source.search_for_series)
    async def search_for_series(
        self,
        study_instance_uid: str | None = None,
        search_filters: Mapping[str, Any] | None = None,
    ) -> list[Dataset]:
        """Search for series (QIDO-RS, all pages)."""
        return await self._qido.search("series", study_instance_uid, None, search_filters)

    @redacted_errors
    @borrowed_doc(Source.search_for_instances)
    async def search_for_instances(
        self,
        study_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
        search_filters: Mapping[str, Any] | None = None,
    ) -> list[Dataset]:
        """Search for instances (QIDO-RS, all pages)."""
        return await self._qido.search(
            "instances", study_instance_uid, series_instance_uid, search_filters
        )

    # --- WADO-RS metadata and bulk data -------------------------------------------------

    def _remember(self, datasets: list[Dataset]) -> None:
        for ds in datasets:
            if "SOPInstanceUID" not in ds:
                continue
            state = self._negotiation.of(str(ds.SOPInstanceUID))
            syntax = ds.get("AvailableTransferSyntaxUID")
            if syntax:
                state.syntax = str(syntax)
            else:
                state.implied = implied_transfer_syntax(ds)
            raw = _raw_frame_bytes(ds)
            if raw is not None:
                budget = min(self._max_frame_bytes, 2 * raw + _FRAME_SLACK)
                self._frame_budgets[str(ds.SOPInstanceUID)] = budget

    @redacted_errors
    @borrowed_doc(Source.retrieve_series_metadata)
    async def retrieve_series_metadata(
        self, study_instance_uid: str, series_instance_uid: str
    ) -> list[Dataset]:
        """Metadata of every instance of a series, in one request."""
        url = series_metadata_url(self.wado_root, study_instance_uid, series_instance_uid)
        datasets = await to_datasets(await self._json(url))
        self._remember(datasets)
        return datasets

    @redacted_errors
    @borrowed_doc(Source.retrieve_instance_metadata)
    async def retrieve_instance_metadata(
        self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
    ) -> Dataset:
        """Metadata of one instance."""
        url = instance_metadata_url(
            self.wado_root, study_instance_uid, series_instance_uid, sop_instance_uid
        )
        datasets = await to_datasets(await self._json(url))
        if len(datasets) != 1:
            raise ProtocolError(
                f"Metadata of instance {sop_instance_uid} had {len(datasets)} items, expected 1."
            )
        self._remember(datasets)
        return datasets[0]

    @redacted_errors
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
        response = await self._transport.send(
            url, accept='multipart/related; type="application/octet-stream"'
        )
        content_type = response.headers.get("content-type", "")
        if content_type.lower().startswith("multipart/"):
            parser = MultipartParser(boundary_from_content_type(content_type))
            parts = parser.feed(response.content)
            parser.close()
            if not parts:
                raise ProtocolError(f"Bulk data response of {redact_url(url)} had no parts.")
            return bytes(parts[0].body)
        return bytes(response.content)  # the transport hands on the buffer it read into

    # --- frames -------------------------------------------------------------------------

    @redacted_stream_errors
    @borrowed_doc(Source.iter_frames)
    async def iter_frames(
        self,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_instance_uid: str,
        frame_numbers: Sequence[int],
    ) -> AsyncIterator[tuple[int, EncodedFrame]]:
        """Frames of one instance, each yielded as soon as its part has arrived.

        Frames come in the order the server sends them.
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
                                raise self._transport.transport_error(
                                    cause,
                                    exc.url,
                                    timeout=isinstance(cause, httpx.TimeoutException),
                                ) from exc
                            raise
                        await self._transport.pause(attempt - 1)
            except (FramesRefusedError, DicomWebError) as exc:
                refused = self._negotiation.of(sop_instance_uid).refused
                if isinstance(exc, DicomWebError) and refused is None:
                    raise
                from_instance = remaining + [n for rest in chunks[index + 1 :] for n in rest]
                break
        if from_instance:
            async for number, frame in self._fallback.frames(
                study_instance_uid, series_instance_uid, sop_instance_uid, from_instance
            ):
                yield number, frame

    async def _frames_response(self, sop: str, url: str) -> httpx.Response:
        loop = asyncio.get_running_loop()
        state = self._negotiation.of(sop)
        while True:
            if state.refused is not None:
                raise FramesRefusedError
            if state.settled:
                return await self._frames_or_refusal(sop, url)
            probe = state.probe
            if probe is not None and not probe.done() and probe.get_loop() is loop:
                if state.may_race():
                    response = await self._race_probe(sop, url)
                    if response is not None:
                        return response
                # The first request of this instance will tell whether the server refuses
                # stored bytes (or frames altogether); wait for that rather than be refused
                # too. (asyncio.wait does not cancel the shared future when this waiter is
                # cancelled.)
                await asyncio.wait([probe])
                continue
            probe = loop.create_future()
            state.probe = probe
            try:
                return await self._frames_or_refusal(sop, url)
            finally:
                if state.probe is probe:
                    state.probe = None
                probe.set_result(None)

    async def _race_probe(self, sop: str, url: str) -> httpx.Response | None:
        # Stored bytes beside a probe that guesses the syntax (InstanceNegotiation.may_race);
        # None when refused: the caller then waits for the probe like any other request
        # (the refusal settles the instance, but only the probe's answer confirms the guess).
        # Served, it settles the instance only once its first part names the syntax
        # (_learn): settled sooner, a request in between would repeat the guess.
        state = self._negotiation.of(sop)
        state.raced = True
        try:
            response = await self._transport.send(url, accept=ACCEPT_STORED_FRAMES, stream=True)
        except DicomWebError as exc:
            if exc.status_code not in _REFUSAL_STATUSES:
                raise
            return None  # not recorded: stored=False would settle the unconfirmed guess
        return response

    async def _frames_or_refusal(self, sop: str, url: str) -> httpx.Response:
        try:
            return await self._stored_or_explicit(sop, url)
        except DicomWebError as exc:
            if exc.status_code in _INSTANCE_FALLBACK_STATUSES and self.max_instance_bytes > 0:
                # Refused even with an explicit media type: frames of this instance come from
                # the whole instance (for good once that has been fetched).
                self._negotiation.of(sop).refuse(exc)
            raise

    async def _stored_or_explicit(self, sop: str, url: str) -> httpx.Response:
        state = self._negotiation.of(sop)
        explicit = state.explicit_syntax()
        refused: DicomWebError | None = None
        if explicit is not None:
            try:
                response = await self._transport.send(
                    url, accept=accept_for_transfer_syntax(explicit), stream=True
                )
            except DicomWebError as exc:
                if exc.status_code not in _REFUSAL_STATUSES:
                    raise
                # Not served that way (or a wrong guess): stored bytes from now on.
                state.explicit = False
                refused = exc
            else:
                state.explicit = True
                return response
        if state.stored is not False:
            try:
                response = await self._transport.send(
                    url, accept=ACCEPT_STORED_FRAMES, stream=True
                )
            except DicomWebError as exc:
                if exc.status_code not in _REFUSAL_STATUSES:
                    raise
                # The server cannot send stored bytes as asked; remember and ask explicitly.
                state.stored = False
            else:
                if state.stored is None:
                    state.stored = True
                return response
        if refused is not None and explicit == (state.syntax or EXPLICIT_VR_LITTLE_ENDIAN):
            raise refused  # that explicit request was refused already
        accept = accept_for_transfer_syntax(state.syntax or EXPLICIT_VR_LITTLE_ENDIAN)
        return await self._transport.send(url, accept=accept, stream=True)

    async def _frames_once(
        self, study: str, series: str, sop: str, numbers: list[int]
    ) -> AsyncGenerator[tuple[int, EncodedFrame], None]:
        url = frames_url(self.wado_root, study, series, sop, numbers)
        clock = self._transport.clock(f"GET {self._transport.shown(url)}")
        response = await clock.wait(self._frames_response(sop, url))
        shown = self._transport.shown(str(response.request.url))
        try:
            content_type = response.headers.get("content-type", "")
            outer_syntax = transfer_syntax_from_content_type(content_type)
            learn = response.request.headers.get("accept") == ACCEPT_STORED_FRAMES
            # early: frames go to decoders before the delimiter after them has arrived;
            # FrameService keeps them out of its cache until the next part (or the end).
            parser = MultipartParser(
                boundary_from_content_type(content_type),
                max_part_size=self._frame_budget(sop),
                early=True,
            )
            wanted = set(numbers)
            delivered: set[int] = set()
            index = 0
            try:
                async for chunk in self._transport.chunks(response, clock):
                    for part in _parsed(parser, chunk):
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
                        if learn:
                            self._learn(part.content_type, outer_syntax, sop)
                            learn = False
                        index += 1
                        yield number, frame
                parser.close()
            except httpx.TransportError as exc:
                raise _IncompleteResponse(
                    f"Response for {len(numbers)} frames of instance {sop} broke off after "
                    f"{index} parts: {type(exc).__name__}: {self._transport.scrub(str(exc))}",
                    shown,
                ) from exc
            except ResponseTooLargeError as exc:
                raise ResponseTooLargeError(f"GET {shown}: {exc}", shown, exc.limit) from None
            except ProtocolError as exc:
                if parser.unconfirmed and not parser.rejected_part and index >= len(numbers):
                    # Every part arrived whole by its Content-Length and nothing after the
                    # last contradicts it; only the close delimiter is missing.
                    pass
                elif (
                    isinstance(exc, _IncompleteResponse)
                    or parser.rejected_part  # a frame already handed on is wrong: no retry
                    or parser.finished
                    or index >= len(numbers)
                ):
                    raise
                else:
                    raise _IncompleteResponse(
                        f"Response for {len(numbers)} frames of instance {sop} ended after "
                        f"{index} parts: {exc}",
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

    def _check_not_mislabelled(self, frame: EncodedFrame, sop: str, url: str) -> None:
        """Fall back to the whole instance when a server sends stored bytes labelled native.

        Orthanc 1.10 refuses stored bytes of transfer syntaxes it does not know (HTJ2K,
        JPEG XL) and then answers the request for Explicit VR Little Endian with 200 and the
        compressed frames unchanged, labelled native.  Only frames asked for explicitly after
        such a refusal are checked; a native frame that merely starts like a codestream costs
        one whole-instance request, never wrong pixels.
        """
        state = self._negotiation.of(sop)
        if state.stored is not False or frame.transfer_syntax_uid not in NATIVE:
            return
        found = sniff_transfer_syntax(frame.data[:4096])
        if found is None:
            return
        state.refuse(
            DicomWebError(
                f"The server labelled frames of instance {sop} {frame.transfer_syntax_uid} "
                f"but sent a {found} codestream.",
                200,
                url,
            )
        )
        raise FramesRefusedError

    def _learn(self, part_type: str | None, outer_syntax: str | None, sop: str) -> None:
        """Remember the syntax a response for stored bytes was labelled with.

        Later requests of the instance then name it (see
        :meth:`~dicomslide.sources.web.negotiation.InstanceNegotiation.explicit_syntax`).
        Only a label counts, never a sniffed guess.
        """
        state = self._negotiation.of(sop)
        if state.syntax is None:
            label = (transfer_syntax_from_content_type(part_type) if part_type else None) or (
                outer_syntax
            )
            if label is not None:
                state.syntax = label
                if state.stored is None:  # a request beside the probe (_race_probe)
                    state.stored = True

    def _frame(
        self, body: bytes, part_type: str | None, outer_syntax: str | None, sop: str
    ) -> EncodedFrame:
        syntax = (
            (transfer_syntax_from_content_type(part_type) if part_type else None)
            or outer_syntax
            or self._negotiation.of(sop).syntax
            or sniff_transfer_syntax(body)
        )
        if syntax is None:
            syntax = RLE_LOSSLESS if looks_like_rle(body) else EXPLICIT_VR_LITTLE_ENDIAN
        return EncodedFrame(body, syntax)

    async def aclose(self) -> None:
        """Close connections; later calls raise :class:`~dicomslide.errors.UsageError`."""
        self._fallback.close()
        await self._transport.aclose()

    async def __aenter__(self) -> DICOMwebClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _frame_from_location(location: str | None) -> int | None:
    """The frame number a part's Content-Location names, if it names exactly one."""
    if not location:
        return None
    match = _FRAME_LOCATION_RE.match(location)
    return int(match.group(1)) if match else None


def _raw_frame_bytes(ds: Dataset) -> int | None:
    """Bytes of one uncompressed frame as the metadata describes it, None if it cannot tell."""
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 8) or 8)
    except (AttributeError, TypeError, ValueError):
        return None
    if min(rows, columns, samples, bits) <= 0:
        return None
    return rows * columns * samples * -(-bits // 8)

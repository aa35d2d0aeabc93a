"""Whole-instance fallback of the DICOMweb client: frames cut out of the whole instance.

Some servers cannot cut some frames out of their instances (Orthanc: 1-bit frames that do not
start on a byte boundary, Float and Double Float Pixel Data, some transfer syntaxes). Then the
client asks once for the whole instance (``GET .../instances/{sop}`` with
:data:`ACCEPT_INSTANCE`), spools it (in memory up to 16 MiB, else in an anonymous temporary
file; at most ``max_instance_bytes``), locates its frames as the local source does
(:mod:`dicomslide.sources.part10`) and keeps the last few instances.
"""

from __future__ import annotations

import asyncio
import io
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, Sequence
from typing import BinaryIO, Final

import httpx

from dicomslide.errors import (
    FramesRefusedError,
    InvalidDataError,
    ProtocolError,
    RegionError,
    UnsupportedError,
)
from dicomslide.sources import part10
from dicomslide.sources.dicomweb_urls import instance_metadata_url
from dicomslide.sources.multipart import boundary_from_content_type
from dicomslide.sources.protocol import EncodedFrame
from dicomslide.sources.web.negotiation import Negotiation
from dicomslide.sources.web.transport import Transport

__all__ = [
    "ACCEPT_INSTANCE",
    "DEFAULT_MAX_INSTANCE_BYTES",
    "FramesRefusedError",
    "WholeInstanceFallback",
]

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
            # The temporary file is owned by the cache from here on.
            inflated, size, dataset, pixel_data = part10.inflate_layout(
                fp, header.body_offset, max_size=spool.limit
            )
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


class WholeInstanceFallback:
    """Fetches, keeps and reads whole instances whose frames the server will not send.

    Parameters
    ----------
    transport: Transport
        The client's transport
    wado_root: str
        WADO-RS root URL
    max_instance_bytes: int
        Largest instance fetched (0: never)
    negotiation: Negotiation
        The client's per-instance records (refusals are read and confirmed here)
    """

    def __init__(
        self,
        transport: Transport,
        wado_root: str,
        max_instance_bytes: int,
        negotiation: Negotiation,
    ) -> None:
        self._transport = transport
        self._wado_root = wado_root
        self.max_instance_bytes = max_instance_bytes
        self._negotiation = negotiation
        self._instance_fetches: dict[str, _InstanceFetch] = {}
        self._instances: OrderedDict[str, _WholeInstance] = OrderedDict()

    def close(self) -> None:
        """Close and forget every instance kept."""
        for instance in self._instances.values():
            instance.close()
        self._instances.clear()

    async def frames(
        self, study: str, series: str, sop: str, numbers: list[int]
    ) -> AsyncGenerator[tuple[int, EncodedFrame], None]:
        """Frames of an instance, cut out of the whole instance (fetched once).

        Parameters
        ----------
        study: str
            Study Instance UID
        series: str
            Series Instance UID
        sop: str
            SOP Instance UID
        numbers: list[int]
            One-based frame numbers

        Returns
        -------
        AsyncGenerator[tuple[int, dicomslide.sources.EncodedFrame], None]
            Frame number and frame, in the order asked for
        """
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
        state = self._negotiation.of(sop)
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
                    if not state.refusal_confirmed:
                        # Not known to work: the next request asks for frames again.
                        state.refused = None
                    raise error from exc
                state.refusal_confirmed = True
                self._store_instance(sop, instance)
                fetch.instance = instance
                return instance
            finally:
                if self._instance_fetches.get(sop) is fetch:
                    del self._instance_fetches[sop]
                fetch.done.set_result(None)

    def _instance_failure(self, sop: str, exc: Exception) -> Exception:
        """The error to raise when the whole instance could not be had either."""
        state = self._negotiation.of(sop)
        refused = state.refused
        if isinstance(exc, _InstanceTooLarge):
            limit = f"larger than max_instance_bytes ({self.max_instance_bytes})"
            if refused is None:
                return UnsupportedError(f"instance {sop} is {limit}; its frames cannot be read")
            return type(refused)(
                f"{refused} The instance is {limit}, so it was not fetched whole instead.",
                refused.status_code,
                refused.url,
            )
        if state.refusal_confirmed or refused is None:
            return exc
        # Not known to work: report the frames error, which says what the server did not do.
        return type(refused)(str(refused), refused.status_code, refused.url)

    async def _fetch_instance(self, study: str, series: str, sop: str) -> _WholeInstance:
        url = instance_metadata_url(self._wado_root, study, series, sop).removesuffix("/metadata")
        # One deadline for the request and its whole body: a server that drips the instance
        # must not hold the caller past it (memory is bounded by the spool's limit).
        clock = self._transport.clock(f"GET {self._transport.shown(url)}")
        try:
            response = await self._transport.send(
                url, accept=ACCEPT_INSTANCE, stream=True, clock=clock
            )
        except BaseException:
            clock.close()
            raise
        shown = self._transport.shown(str(response.request.url))
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
                async for chunk in self._transport.chunks(response, clock):
                    spool.feed(chunk)
            except httpx.TransportError as exc:
                raise self._transport.transport_error(
                    exc, shown, timeout=isinstance(exc, httpx.TimeoutException)
                ) from exc
            spool.finish()
        except BaseException:
            if spool is not None:
                spool.close()
            raise
        finally:
            clock.close()
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

"""Encoded-frame access shared by every slide of a source: cache, single-flight, coalescing.

One :class:`FrameService` sits in front of each :class:`~dicomslide.sources.Source`. Readers ask
it for futures of frames; it

* answers from a byte-bounded LRU of encoded frames keyed by (SOP Instance UID, frame number);
* joins frames already in flight, so no frame is ever fetched twice at the same time;
* queues the rest, and at the end of the current event-loop tick (or after a short, configurable
  window, so that blocking callers on many threads merge too) asks the source for all frames
  queued per instance at once, chunked to ``max_frames_per_request``;
* resolves each future as its frame arrives, so decoding starts before a long response ends.

Fetches run as tasks owned by the service, not by the reader: a reader that is cancelled stops
waiting but never cancels a fetch that others share. Failures resolve the affected futures with
the error and are never cached. The service is confined to the event loop it was created on.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dicomslide.errors import DicomSlideError, DicomWebError, ProtocolError, SourceError
from dicomslide.sources.protocol import EncodedFrame, Source

__all__ = ["CacheStats", "DecodedTileCache", "FrameCache", "FrameService", "InstanceRef"]


@dataclass(frozen=True)
class InstanceRef:
    """Address of one instance.

    Attributes
    ----------
    study_instance_uid, series_instance_uid, sop_instance_uid: str
        Study, Series and SOP Instance UIDs
    number_of_frames: int | None
        Frames in the instance, if known: read-ahead never asks beyond it (and stays off
        without it); not part of the identity
    max_frame_bytes: int | None
        Bytes of one uncompressed frame, if known: an upper bound before any frame arrives
        that lets read-ahead fetch the rest of a small instance whole (and it does not
        without it); not part of the identity
    """

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    number_of_frames: int | None = field(default=None, compare=False)
    max_frame_bytes: int | None = field(default=None, compare=False)


@dataclass
class CacheStats:
    """Counters of a frame service.

    Attributes
    ----------
    hits: int
        Frames answered from the cache
    misses: int
        Frames that were not cached when asked for
    joined: int
        Frames that were already in flight and were joined instead of fetched again
    bytes: int
        Bytes currently held by the cache
    max_bytes: int
        Budget of the cache in bytes
    evictions: int
        Frames evicted to stay within budget
    requests: int
        Calls to the source (one per instance and chunk)
    frames_fetched: int
        Frames received from the source
    decoded_hits: int
        Tiles answered from the decoded-tile cache (no fetch, no decode)
    decoded_bytes: int
        Bytes held by the decoded-tile cache
    readahead: int
        Frames fetched ahead of sequential readers, before anybody asked for them (included in
        ``frames_fetched`` but not in ``misses``)
    """

    hits: int = 0
    misses: int = 0
    joined: int = 0
    bytes: int = 0
    max_bytes: int = 0
    evictions: int = 0
    requests: int = 0
    frames_fetched: int = 0
    decoded_hits: int = 0
    decoded_bytes: int = 0
    readahead: int = 0

    @property
    def frames_per_request(self) -> float:
        """Mean number of frames per source request.

        Returns
        -------
        float
            ``frames_fetched / requests`` (0.0 before the first request)
        """
        return self.frames_fetched / self.requests if self.requests else 0.0


class FrameCache:
    """Byte-bounded LRU of encoded frames.

    Parameters
    ----------
    max_bytes: int
        Budget in bytes; a frame larger than the budget is never cached
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"Cache budget must be >= 0 bytes, got {max_bytes}.")
        self._items: OrderedDict[tuple[str, int], EncodedFrame] = OrderedDict()
        self.stats = CacheStats(max_bytes=max_bytes)

    def get(self, key: tuple[str, int]) -> EncodedFrame | None:
        """Look up a frame and mark it as recently used.

        Parameters
        ----------
        key: tuple[str, int]
            (SOP Instance UID, one-based frame number)

        Returns
        -------
        dicomslide.sources.EncodedFrame | None
            The cached frame, if any
        """
        frame = self._items.get(key)
        if frame is not None:
            self._items.move_to_end(key)
        return frame

    def put(self, key: tuple[str, int], frame: EncodedFrame) -> None:
        """Store a frame, evicting the least recently used ones beyond the budget.

        Parameters
        ----------
        key: tuple[str, int]
            (SOP Instance UID, one-based frame number)
        frame: dicomslide.sources.EncodedFrame
            The frame
        """
        size = len(frame.data)
        if size > self.stats.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.stats.bytes -= len(old.data)
        self._items[key] = frame
        self.stats.bytes += size
        while self.stats.bytes > self.stats.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self.stats.bytes -= len(evicted.data)
            self.stats.evictions += 1

    def __contains__(self, key: object) -> bool:
        # A membership test, unlike get(), leaves the LRU order alone.
        return key in self._items

    def clear(self) -> None:
        """Drop every cached frame."""
        self._items.clear()
        self.stats.bytes = 0

    def __len__(self) -> int:
        return len(self._items)


# Keys a DecodedTileCache remembers as decoded once (about 200 bytes each): enough for every
# tile of a level a scan revisits, small beside the tiles' own budget.
SEEN_MAX_KEYS = 8192


class DecodedTileCache:
    """Byte-bounded LRU of decoded tiles, shared by the decode threads.

    Warm reads and overlapping regions then skip decoding (and colour management). Tiles are
    stored read-only; readers copy them into their own output arrays.

    The one tile of a one-tile read that pastes it whole is only cached when it is decoded a
    second time (:meth:`offer`): a scan that reads each tile once would otherwise keep a second
    freshly allocated buffer per tile, about 15% of a cold scan's CPU. Other tiles are cached
    at once (:meth:`put`): reads of neighbours and warm re-reads of regions need them.

    Parameters
    ----------
    max_bytes: int
        Budget in bytes; 0 disables the cache
    stats: CacheStats | None, optional
        Counters to report hits and bytes in (those of the client's frame cache)
    """

    def __init__(self, max_bytes: int, stats: CacheStats | None = None) -> None:
        if max_bytes < 0:
            raise ValueError(f"Decoded-tile cache budget must be >= 0 bytes, got {max_bytes}.")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.evictions = 0
        self._items: OrderedDict[tuple[str, int, bool], Any] = OrderedDict()
        # Keys of whole tiles decoded once and not cached; bounded, oldest forgotten first.
        self._seen: OrderedDict[tuple[str, int, bool], None] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = stats if stats is not None else CacheStats()

    def get(self, key: tuple[str, int, bool]) -> Any:
        """The cached tile, or None.

        Parameters
        ----------
        key: tuple[str, int, bool]
            (SOP Instance UID, frame number, colour managed)

        Returns
        -------
        numpy.ndarray | None
            Read-only tile
        """
        if not self.max_bytes:
            return None
        with self._lock:
            tile = self._items.get(key)
            if tile is not None:
                self._items.move_to_end(key)
                self.hits += 1
                self.stats.decoded_hits += 1
            return tile

    def put(self, key: tuple[str, int, bool], tile: Any) -> None:
        """Store a tile (made read-only), evicting the least recently used beyond budget.

        Parameters
        ----------
        key: tuple[str, int, bool]
            (SOP Instance UID, frame number, colour managed)
        tile: numpy.ndarray
            Decoded tile
        """
        size = int(tile.nbytes)
        if not self.max_bytes or size > self.max_bytes:
            return
        tile.flags.writeable = False
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= int(old.nbytes)
            self._items[key] = tile
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self.bytes -= int(evicted.nbytes)
                self.evictions += 1
            self.stats.decoded_bytes = self.bytes

    def offer(self, key: tuple[str, int, bool], tile: Any, *, copy: bool = False) -> bool:
        """Cache a tile that a read pasted whole only if it was offered before.

        Parameters
        ----------
        key: tuple[str, int, bool]
            Key of the tile, as :meth:`put` takes it
        tile: numpy.ndarray
            Decoded tile, the only one of a read that pasted it whole
        copy: bool, optional
            Cache a copy: ``tile`` is the reader's own output (decoded straight into it)

        Returns
        -------
        bool
            Whether the tile was cached (then it, or its copy, is read-only)
        """
        if not self.max_bytes or tile.nbytes > self.max_bytes:
            return False
        with self._lock:
            if key not in self._seen:
                self._seen[key] = None
                if len(self._seen) > SEEN_MAX_KEYS:
                    self._seen.popitem(last=False)
                return False
            del self._seen[key]
        self.put(key, tile.copy() if copy else tile)
        return True


def _dense(numbers: Sequence[int]) -> bool:
    """Whether sorted frame numbers miss at most every other frame of their span."""
    return numbers[-1] - numbers[0] + 1 <= 2 * len(numbers)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
        # A fetch error may have no waiter left (all cancelled); retrieving it at once keeps
        # asyncio from logging "exception was never retrieved" for a failure somebody already
        # handled (a done callback on every future did it at the cost of a loop callback per
        # frame fetched).
        future.exception()


@dataclass
class _Pending:
    instance: InstanceRef
    numbers: list[int] = field(default_factory=list)
    unlimited: bool = False
    reads: int = 0  # request() calls that added frames
    held: int = 0  # the first `held` numbers were held back by the limit (_flush)


# A stream of flushes that together ask for at least this many (nearly) consecutive frames of
# one instance, gathered from at least READAHEAD_MIN_READS separate reads, marks sequential
# readers (a tile scan): fewer frames would catch the rows of ordinary regions, and single
# reads (one region, however wide) get exactly the frames they cover.
READAHEAD_MIN_RUN = 16
READAHEAD_MIN_READS = 4
# Instances with at most this many read-ahead bounds of frames left when a run is seen are
# read ahead to their end in one window (_detect_sequential).
READAHEAD_WHOLE_WINDOWS = 2
# Seconds the first flush of an instance waits once more when several readers on threads
# look like the start of a run that is still short (_straggling): the interpreter's switch
# interval, about how late a thread ready to call may get the GIL. Stragglers of a 16-thread
# scan (13 calls, then 3 more 4.4 ms later) otherwise split it into two requests.
STRAGGLER_WAIT = 0.005


@dataclass
class _Stream:
    """Frames recent flushes sent for one instance, while they look like one sequential run."""

    end: int  # highest frame number so far
    frames: int
    reads: int


def _may_be_a_frame(exc: BaseException) -> bool:
    """Whether a failed request's error may come from one frame it asked for.

    A malformed answer or a 4xx refusal may; a dropped connection, a timeout, 5xx, 408 and
    429 may not, and the transport has already retried those (asking again doubles the
    wait).
    """
    if isinstance(exc, ProtocolError):
        return True
    return isinstance(exc, DicomWebError) and (
        400 <= exc.status_code < 500 and exc.status_code not in (408, 429)
    )


@dataclass
class _Readahead:
    """Read-ahead state of one instance: what was fetched ahead and when to go on."""

    instance: InstanceRef
    next_start: int  # first frame number not fetched ahead yet
    window_start: int  # first frame of the latest window: asking for it sends the next one
    stream: _Stream | None = None  # the run it follows: the next window only while it goes on


class FrameService:
    """Cache, single-flight and request coalescing in front of one source.

    Parameters
    ----------
    source: dicomslide.sources.Source
        Where frames come from
    cache: FrameCache
        Cache of encoded frames (may outlive the service, e.g. across event loops)
    max_frames_per_request: int, optional
        Most frames asked of the source in one call
    max_concurrent_requests: int, optional
        Most source calls running at once
    coalesce_window: float, optional
        Seconds to wait for more frame requests before sending; 0 sends at the end of the
        current event-loop tick
    max_requests_per_instance: int | None, optional
        Most source calls running at once for one instance; frames asked for meanwhile wait
        and go out together in the next call. ``None`` (no limit) sends every tick's frames
        at once. A limit makes a stream of small reads (one tile per task, say) coalesce into
        few large requests, which pays off wherever a request has a fixed cost: a DICOMweb
        server that parses the instance for each request, or a thread hop per local read.
    readahead: int, optional
        Read-ahead window in frames; 0 turns read-ahead off. When at least
        ``READAHEAD_MIN_READS`` reads, over one or more flushes, ask for ``READAHEAD_MIN_RUN``
        or more nearly consecutive frames of an instance whose frame count is known, the
        next frames (twice the run at first, then ``readahead``; fewer at the instance's end;
        the whole rest of an instance with at most ``READAHEAD_WHOLE_WINDOWS`` bounds left)
        are fetched at once, outside the per-instance limit, together with the frames of
        that flush and any the limit holds back (asked for again alone should that request
        fail); a reader reaching a window sends the next one while its run goes on, as
        operating systems read files ahead. A
        tile scan then costs a few pipelined requests instead of one round trip per batch of
        readers; random reads and single region reads never trigger it. Frames read ahead
        go to the cache like any other (its budget holds).
    """

    def __init__(
        self,
        source: Source,
        cache: FrameCache,
        *,
        max_frames_per_request: int = 256,
        max_concurrent_requests: int = 8,
        coalesce_window: float = 0.0,
        max_requests_per_instance: int | None = 1,
        readahead: int = 0,
    ) -> None:
        if readahead < 0:
            raise ValueError(f"readahead must be >= 0 frames, got {readahead}.")
        if max_requests_per_instance is not None and max_requests_per_instance < 1:
            raise ValueError(
                f"max_requests_per_instance must be >= 1 or None, got {max_requests_per_instance}."
            )
        if max_frames_per_request < 1:
            raise ValueError(f"max_frames_per_request must be >= 1, got {max_frames_per_request}.")
        if max_concurrent_requests < 1:
            raise ValueError(
                f"max_concurrent_requests must be >= 1, got {max_concurrent_requests}."
            )
        # Weakly: the source owns its runtime, which owns this service; a strong reference
        # back would make every client a reference cycle, freed only by the cycle collector.
        try:
            self._source: Callable[[], Source | None] = weakref.ref(source)
        except TypeError:  # a source that cannot be weakly referenced: keep it
            self._source = lambda: source
        self.cache = cache
        self.max_frames_per_request = max_frames_per_request
        self.coalesce_window = coalesce_window
        self.loop = asyncio.get_running_loop()
        self._semaphore = asyncio.Semaphore(max_concurrent_requests)
        self._inflight: dict[tuple[str, int], asyncio.Future[EncodedFrame]] = {}
        # Frames handed to waiters before the source confirmed them (a multipart part is
        # confirmed by the delimiter after it); a future exists once a reader asks (settled).
        self._unsettled: dict[tuple[str, int], asyncio.Future[None] | None] = {}
        self._pending: dict[str, _Pending] = {}
        self.max_requests_per_instance = max_requests_per_instance
        self._active: dict[str, int] = {}  # source calls running per SOP Instance UID
        self.readahead = readahead
        self._readahead: dict[str, _Readahead] = {}
        self._streams: dict[str, _Stream] = {}
        # Instances whose first flush waits for stragglers (True) or did (False)
        self._waited: dict[str, bool] = {}
        self._closed = False
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def source(self) -> Source:
        """The source frames come from.

        Returns
        -------
        dicomslide.sources.Source
            The source

        Raises
        ------
        dicomslide.errors.SourceError
            When the source no longer exists
        """
        source = self._source()
        if source is None:
            raise SourceError("The client of this frame service no longer exists.")
        return source

    @property
    def stats(self) -> CacheStats:
        """Statistics of the cache and the requests.

        Returns
        -------
        CacheStats
            Live counters
        """
        return self.cache.stats

    def request(
        self, instance: InstanceRef, frame_numbers: Sequence[int], *, bulk: bool = False
    ) -> list[asyncio.Future[EncodedFrame]]:
        """Futures for frames of one instance; fetching is scheduled, not awaited.

        Parameters
        ----------
        instance: InstanceRef
            The instance
        frame_numbers: Sequence[int]
            One-based frame numbers
        bulk: bool, optional
            Send these frames now, whatever ``max_requests_per_instance`` says: a bulk reader
            (:func:`dicomslide.prefetch`) bounds its own requests, and a server with several
            cores answers a few large requests for one instance faster in parallel

        Returns
        -------
        list[asyncio.Future[dicomslide.sources.EncodedFrame]]
            One future per frame number, in the same order. Await them with
            :func:`asyncio.wait` (never cancel them: others may share them).
        """
        uid = instance.sop_instance_uid
        stats = self.cache.stats
        futures: list[asyncio.Future[EncodedFrame]] = []
        ahead = self._readahead.get(uid) if self._readahead else None
        entry: _Pending | None = None
        for number in frame_numbers:
            if ahead is not None and ahead.window_start <= number < ahead.next_start:
                if self._streams.get(uid) is ahead.stream:
                    self._read_ahead(ahead)
                else:  # another run (or none) since: a viewport, not a scan, came back
                    del self._readahead[uid]
                ahead = None
                if entry is not None and self._pending.get(uid) is not entry:
                    entry = None  # the window took this call's frames so far along
            key = (uid, number)
            cached = self.cache.get(key)
            if cached is not None:
                stats.hits += 1
                fut: asyncio.Future[EncodedFrame] = self.loop.create_future()
                fut.set_result(cached)
                futures.append(fut)
                continue
            stats.misses += 1
            inflight = self._inflight.get(key)
            if inflight is not None:
                stats.joined += 1
                futures.append(inflight)
                continue
            fut = self._in_flight(key)
            if entry is None:
                entry = self._pending.setdefault(uid, _Pending(instance))
                entry.reads += 1
            entry.numbers.append(number)
            entry.unlimited = entry.unlimited or bulk
            futures.append(fut)
        self._schedule_flush()
        return futures

    async def get(self, instance: InstanceRef, frame_numbers: Sequence[int]) -> list[EncodedFrame]:
        """The frames ``frame_numbers`` (one-based) of ``instance``: :meth:`request`, awaited.

        Returns
        -------
        list[dicomslide.sources.EncodedFrame]
            The frames
        """
        futures = self.request(instance, frame_numbers)
        if futures:
            await asyncio.wait(futures)
        return [f.result() for f in futures]

    def settled(self, keys: Iterable[tuple[str, int]]) -> list[asyncio.Future[None]]:
        """Futures for frames handed out but not yet confirmed by their source.

        A reader awaits them before it returns pixels: a frame whose multipart part turns out
        to be malformed fails its future (and never enters the cache).

        Parameters
        ----------
        keys: Iterable[tuple[str, int]]
            (SOP Instance UID, frame number) of frames the caller has received

        Returns
        -------
        list[asyncio.Future[None]]
            One future per frame still unconfirmed (often none); never cancel them
        """
        unsettled = self._unsettled
        if not unsettled:
            return []
        return [self._settle_future(key) for key in keys if key in unsettled]

    def is_unsettled(self, key: tuple[str, int]) -> bool:
        """Whether a frame was handed out but not yet confirmed by its source.

        Parameters
        ----------
        key: tuple[str, int]
            (SOP Instance UID, frame number)

        Returns
        -------
        bool
            True until the source confirms (or fails) it
        """
        return key in self._unsettled

    def _settle_future(self, key: tuple[str, int]) -> asyncio.Future[None]:
        fut = self._unsettled.get(key)
        if fut is None:
            fut = self._unsettled[key] = self.loop.create_future()
        return fut

    def _settle(self, key: tuple[str, int], frame: EncodedFrame) -> None:
        self.cache.put(key, frame)
        self._inflight.pop(key, None)
        fut = self._unsettled.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _schedule_flush(self) -> None:
        if self._pending and not self._flush_scheduled:
            self._flush_scheduled = True
            if self.coalesce_window > 0:
                self.loop.call_later(self.coalesce_window, self._flush)
            else:
                self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._closed:
            self._fail_pending(SourceError("The frame service is closed."))
            return
        pending, self._pending = self._pending, {}
        limit = self.max_requests_per_instance
        for uid, entry in pending.items():
            numbers = sorted(set(entry.numbers))
            if self._straggling(uid, entry, numbers):
                # Not a scheduled flush: a late reader schedules one as usual and the run
                # leaves a coalescing window after it; else the wait ends it.
                self._pending[uid] = entry
                continue
            chunks = self._chunks(numbers)
            if limit is not None and not entry.unlimited:
                free = max(limit - self._active.get(uid, 0), 0)
                if free < len(chunks):
                    # The rest waits for a running call of this instance to end (see _fetch),
                    # gathering whatever else is asked for meanwhile.
                    held = [n for chunk in chunks[free:] for n in chunk]
                    self._pending[uid] = _Pending(
                        entry.instance, held, reads=entry.reads, held=len(held)
                    )
                    chunks = chunks[:free]
            if self.readahead and not entry.unlimited:
                lead = [n for chunk in chunks for n in chunk]
                if self._detect_sequential(entry.instance, numbers, entry.reads, lead):
                    continue  # this flush's frames left with the first window
            for chunk in chunks:
                self._start(entry.instance, chunk)

    def _flush_waited(self, uid: str) -> None:
        self._waited[uid] = False
        if uid in self._pending and not self._flush_scheduled:
            self._flush()

    def _straggling(self, uid: str, entry: _Pending, numbers: list[int]) -> bool:
        """Whether an instance's first flush should wait for more readers.

        Only for readers on threads (a coalescing window), an instance that can be read
        ahead and has nothing in flight, and frames from READAHEAD_MIN_READS or more reads
        that are dense but fewer than a run: the start of a scan whose other threads are
        late. Flushes wait until STRAGGLER_WAIT after the first that did, or until the
        frames make a run. A scan then goes out as one request with its first window
        instead of two (at +20 ms RTT, 254 against 239 ms for a 340-tile scan, medians of
        5 and 3).
        """
        waiting = self._waited.get(uid)
        if waiting is False:
            return False
        if (
            not self.readahead
            or self.coalesce_window <= 0
            or entry.unlimited
            or entry.held
            or entry.instance.number_of_frames is None
            or uid in self._streams
            or self._active.get(uid)
            or entry.reads < READAHEAD_MIN_READS
            or len(numbers) >= READAHEAD_MIN_RUN
            or not _dense(numbers)
        ):
            return False
        if waiting is None:
            self._waited[uid] = True
            self.loop.call_later(STRAGGLER_WAIT, self._flush_waited, uid)
        return True

    def _start(
        self,
        instance: InstanceRef,
        numbers: list[int],
        *,
        limited: bool = True,
        asked: frozenset[int] = frozenset(),
    ) -> None:
        uid = instance.sop_instance_uid
        if limited:
            self._active[uid] = self._active.get(uid, 0) + 1
        task = self.loop.create_task(self._fetch(instance, numbers, limited, asked))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _detect_sequential(
        self, instance: InstanceRef, numbers: list[int], reads: int, lead: list[int]
    ) -> bool:
        """Follow the frames each flush sends for an instance; start read-ahead for a stream.

        A flush continues the instance's stream when its frames are dense (at most every
        other frame missing: readers on many threads leave small gaps that the next flush
        fills) and start at or shortly after where the stream ended. ``lead`` are the frames
        of the flush that the per-instance limit lets go now: a first window takes them
        along (:meth:`_read_ahead`). Returns whether it did (they are then in flight).
        """
        uid = instance.sop_instance_uid
        total = instance.number_of_frames
        if total is None:
            return False
        lo, hi, count = numbers[0], numbers[-1], len(numbers)
        dense = _dense(numbers)
        stream = self._streams.get(uid)
        if (
            dense
            and stream is not None
            and stream.end < hi
            and lo <= stream.end + max(count, READAHEAD_MIN_RUN)
        ):
            stream.end, stream.frames, stream.reads = (
                hi,
                stream.frames + count,
                stream.reads + reads,
            )
        elif dense:
            stream = _Stream(hi, count, reads)
            self._streams[uid] = stream
        else:
            self._streams.pop(uid, None)
            return False
        if stream.frames < READAHEAD_MIN_RUN or stream.reads < READAHEAD_MIN_READS or hi >= total:
            return False
        current = self._readahead.get(uid)
        if current is not None and hi < current.next_start:
            return False  # within what is read ahead already; a reader past it starts over
        ahead = _Readahead(instance, hi + 1, hi + 1, stream)
        self._readahead[uid] = ahead
        left = total - hi
        # The first window is small: a viewport's rows also look like short runs (16 tiles
        # asked, 256 read ahead per row); the run that reaches it gets whole-bound windows.
        # An instance with at most READAHEAD_WHOLE_WINDOWS bounds left is read to its end at
        # once: a scan would fetch that in two windows anyway, the second only when readers
        # reach the first (one server parse and a round trip later: issue 14), while a run
        # that stops wastes no more than a first window and the next bound would. Only if
        # the rest fits one request and a quarter of the cache (by the uncompressed size):
        # 512 frames of 1 MB would be the whole default cache for 16 one-frame reads.
        frame_bytes = instance.max_frame_bytes
        if (
            frame_bytes is not None
            and left <= min(READAHEAD_WHOLE_WINDOWS * self.readahead, self.max_frames_per_request)
            and left * frame_bytes <= self.cache.stats.max_bytes // 4
        ):
            size = left
        else:
            size = min(2 * stream.frames, self.readahead)
        self._read_ahead(ahead, size, lead)
        return True

    def _read_ahead(
        self, ahead: _Readahead, size: int | None = None, lead: Sequence[int] = ()
    ) -> None:
        """Fetch the next window of a sequential reader: ``size`` frames, else ``readahead``.

        Windows after the first are the whole bound: windows that grew from the run (twice
        the last) cost a scan of 340 tiles from 16 threads three more requests, each one a
        parse of the instance on the server and about 1.4 ms of our CPU (issue 14).

        The window's request also carries ``lead`` (frames a flush lets go now, counted
        against the per-instance limit) and the frames the limit holds back: one request
        instead of two or three, each a parse of the instance on the server, and no wait
        for the instance's first answer (the window would queue behind it in the DICOMweb
        client). Should that request fail with an error a frame may cause (a malformed
        answer, a 4xx other than 408 and 429), the frames readers asked for that it did not
        deliver yet are asked for once more on their own (:meth:`_fetch`), so a window frame
        the server rejects fails none of them. The one frame delivered right before the
        broken part is not confirmed by it and fails with the request, as in any request
        (asking for it again would cost a request of one frame). After any other error
        (a dropped connection; 5xx, 408 or 429, which the transport retried already) they
        fail with the request.
        """
        instance = ahead.instance
        uid = instance.sop_instance_uid
        total = instance.number_of_frames or 0
        start = ahead.next_start
        if start > total:
            del self._readahead[uid]
            return
        stop = min(start + (size or self.readahead), total + 1)
        if (
            total + 1 - stop < self.readahead // 2
            and total + 1 - start <= self.max_frames_per_request
        ):
            # A tail shorter than half a bound joins this window: on its own it would cost
            # a request, and Orthanc parses the whole instance for each one (~10 ms of CPU
            # for a level of 340 frames, ~300 ms for one of 5,000). Not if the joined window
            # would be split into two requests anyway.
            stop = total + 1
        ahead.window_start, ahead.next_start = start, stop
        if self._closed:  # never with a lead: a flush checks first
            return
        numbers: list[int] = []
        for number in range(start, stop):
            key = (uid, number)
            if key in self._inflight or key in self.cache:
                continue
            self._in_flight(key)
            numbers.append(number)
        self.cache.stats.readahead += len(numbers)
        asked = list(lead)
        entry = self._pending.get(uid)
        if entry is not None and entry.held and not entry.unlimited:
            # Frames readers asked for but the per-instance limit holds back leave with the
            # window: behind the running request they waited a round trip and then the
            # server's time for the window too (12 of 16 threads stalled 150 ms at +20 ms).
            # Frames added since the hold stay: they go through the limit and the run check.
            asked += entry.numbers[: entry.held]
            entry.numbers, entry.held = entry.numbers[entry.held :], 0
            if not entry.numbers:
                del self._pending[uid]
        # Sent at once, past the per-instance limit (like prefetch): the window is what makes
        # the reader's next requests unnecessary, so it must not queue behind them.
        # Nor does it count against that limit: readers' frames held back behind a chain of
        # windows would otherwise wait for the whole scan (a 200 ms stall in a 340-tile scan).
        # Only a request with frames of ``lead`` does: the flush counted them against it.
        mine = frozenset(asked)
        first = frozenset(lead)
        for chunk in self._chunks(sorted(mine.union(numbers))):
            self._start(
                instance,
                chunk,
                limited=not first.isdisjoint(chunk),
                asked=mine.intersection(chunk),
            )

    def _in_flight(self, key: tuple[str, int]) -> asyncio.Future[EncodedFrame]:
        """A new future for a frame about to be fetched, joinable until it arrives."""
        fut: asyncio.Future[EncodedFrame] = self.loop.create_future()
        self._inflight[key] = fut
        return fut

    def _chunks(self, numbers: list[int]) -> list[list[int]]:
        step = self.max_frames_per_request
        return [numbers[i : i + step] for i in range(0, len(numbers), step)]

    def _release(self, uid: str) -> None:
        left = self._active.get(uid, 0) - 1
        if left > 0:
            self._active[uid] = left
        else:
            self._active.pop(uid, None)
        if uid in self._pending:
            self._schedule_flush()

    async def _fetch(
        self, instance: InstanceRef, numbers: list[int], limited: bool, asked: frozenset[int]
    ) -> None:
        try:
            again = await self._fetch_frames(instance, numbers, asked)
        finally:
            if limited:
                self._release(instance.sop_instance_uid)
        if again and not self._closed:
            # Readers' frames of a failed read-ahead request: once more, on their own.
            self._start(instance, again, limited=False)
        elif again:  # e.g. a source that turned aclose's cancellation into its own error
            error = SourceError("The frame service is closed.")
            for number in again:
                fut = self._inflight.pop((instance.sop_instance_uid, number), None)
                if fut is not None:
                    _fail(fut, error)

    async def _fetch_frames(
        self, instance: InstanceRef, numbers: list[int], asked: frozenset[int] = frozenset()
    ) -> list[int]:
        """Fetch frames; on failure, fail them, except ``asked`` frames of a request that
        also read ahead: those not delivered are returned, to be asked for on their own."""
        uid = instance.sop_instance_uid
        remaining = set(numbers)
        last: tuple[tuple[str, int], EncodedFrame] | None = None
        try:
            async with self._semaphore:
                self.cache.stats.requests += 1
                frames = self.source.iter_frames(
                    instance.study_instance_uid,
                    instance.series_instance_uid,
                    uid,
                    numbers,
                )
                # aclosing: a failed or cancelled fetch closes the source's response at once
                async with contextlib.aclosing(frames):  # type: ignore[type-var]
                    async for number, frame in frames:
                        if number not in remaining:
                            raise ProtocolError(
                                f"Source returned frame {number} of instance {uid}, which was not "
                                f"asked for (or twice); asked for {len(numbers)} frames."
                            )
                        remaining.discard(number)
                        self.cache.stats.frames_fetched += 1
                        # The source confirms a frame by going on to the next (or ending):
                        # only then may it be cached; waiters get it now, to decode early.
                        if last is not None:
                            self._settle(*last)
                        key = (uid, number)
                        last = (key, frame)
                        self._unsettled[key] = None
                        fut = self._inflight.get(key)
                        if fut is not None and not fut.done():
                            fut.set_result(frame)
                if last is not None:
                    self._settle(*last)
                    last = None
            if remaining:
                raise ProtocolError(
                    f"Source returned {len(numbers) - len(remaining)} of {len(numbers)} frames "
                    f"asked of instance {uid}; missing: {sorted(remaining)[:10]}."
                )
        except (Exception, asyncio.CancelledError) as exc:
            error: BaseException
            if isinstance(exc, asyncio.CancelledError):
                error = SourceError(f"Fetching frames of instance {uid} was cancelled.")
            elif isinstance(exc, DicomSlideError):
                error = exc
            else:
                error = SourceError(
                    f"Fetching frames {numbers[:10]} of instance {uid} failed: {exc!r}"
                )
                error.__cause__ = exc
            again: list[int] = []
            if asked and len(asked) < len(numbers) and _may_be_a_frame(exc):
                # Maybe a read-ahead frame the server rejects.
                again = sorted(remaining.intersection(asked))
                remaining.difference_update(again)
            for number in remaining:
                fut = self._inflight.pop((uid, number), None)
                if fut is not None:
                    _fail(fut, error)
            if last is not None:
                # Handed out but never confirmed: its waiters must not use it. The failed
                # future stays (until the frame is fetched again) for readers that took the
                # frame but have not asked about it yet.
                self._inflight.pop(last[0], None)
                _fail(self._settle_future(last[0]), error)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return again
        return []

    async def aclose(self) -> None:
        """Cancel running fetches; waiters get a :class:`~dicomslide.errors.SourceError`."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        self._fail_pending(
            SourceError("The frame service was closed before these frames were fetched.")
        )

    def _fail_pending(self, error: BaseException) -> None:
        pending, self._pending = self._pending, {}
        for uid, entry in pending.items():
            for number in entry.numbers:
                fut = self._inflight.pop((uid, number), None)
                if fut is not None:
                    _fail(fut, error)

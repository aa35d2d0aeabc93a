"""Per-process plumbing: which source serves a client, the decode pool and its queues.

Clients given by users are resolved to a :class:`~dicomslide.sources.Source` once:

* dicomslide's own sources are used as they are;
* objects with a ``__dicomslide_source__`` attribute (the blocking twins in ``dicomslide_sync``)
  hand over the async source they wrap, so both packages share one cache;
* foreign ``dicomweb_client.DICOMClient`` objects get one adapter each, kept on the client
  as long as it lives; a ``dicomweb_client.DICOMfileClient`` is served by dicomslide's own
  local source for the same folder (its SQLite handle cannot be used from worker threads).

Caches and frame services are not kept here: each source owns them in its
:class:`~dicomslide.sources.runtime.SourceRuntime` (``source.runtime``); the functions below
only reach through to it. Frames are decoded in one process-wide thread pool that is
recreated after ``fork``.
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

from dicomslide.errors import InvalidClientError
from dicomslide.frames import CacheStats, FrameService
from dicomslide.sources.foreign import ForeignClientSource, is_foreign_client
from dicomslide.sources.protocol import Source
from dicomslide.sources.runtime import DEFAULT_CACHE_BYTES, DEFAULT_DECODED_CACHE_BYTES

T = TypeVar("T")

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_DECODED_CACHE_BYTES",
    "as_source",
    "DecodeQueue",
    "LoopInbox",
    "decode_executor",
    "decode_queue",
    "frame_service",
    "get_cache_stats",
]

_lock = threading.Lock()
_ADAPTER_ATTRIBUTE = "_dicomslide_source_adapter"
_executor: ThreadPoolExecutor | None = None


def as_source(client: Any) -> Source:
    """The async source that serves a client.

    Parameters
    ----------
    client: Any
        A dicomslide source, a ``dicomslide_sync`` client, or a ``dicomweb_client.DICOMClient``

    Returns
    -------
    dicomslide.sources.Source
        The source

    Raises
    ------
    dicomslide.errors.InvalidClientError
        When the object is none of these
    """
    inner = getattr(client, "__dicomslide_source__", None)
    if inner is not None:
        client = inner
    if callable(getattr(client, "iter_frames", None)):
        if getattr(client, "runtime", None) is None:
            raise InvalidClientError(
                f"Expected a source with a runtime property (see dicomslide.sources.Source), "
                f"got {type(client).__module__}.{type(client).__qualname__} without one."
            )
        return client  # type: ignore[no-any-return]
    if is_foreign_client(client):
        attrs = getattr(client, "__dict__", None)
        if attrs is None:
            # Nowhere to keep it (__slots__): each call gets its own adapter and cache.
            return _adapt(client)
        with _lock:
            # Kept on the client itself: the adapter wraps the client, so the pair is an
            # ordinary collectable cycle and the adapter's caches go with the client.
            adapter = attrs.get(_ADAPTER_ATTRIBUTE)
            if adapter is None:
                adapter = _adapt(client)
                attrs[_ADAPTER_ATTRIBUTE] = adapter
        return adapter  # type: ignore[no-any-return]
    raise InvalidClientError(
        f"Expected a dicomslide client or a dicomweb_client.DICOMClient, got "
        f"{type(client).__module__}.{type(client).__qualname__}."
    )


def _adapt(client: Any) -> Source:
    cls = type(client)
    if cls.__module__.startswith("dicomweb_client") and cls.__name__ == "DICOMfileClient":
        # dicomweb_client's file client keeps an SQLite connection that only the thread that
        # opened it may use, so it cannot serve calls from worker threads. The same folder is
        # read with dicomslide's own local source instead; the user's object is left untouched.
        # ``url_prefix`` is the public name of the folder (the path of its file:// URL).
        from dicomslide.sources.local import DICOMfileClient

        return DICOMfileClient(Path(client.url_prefix))
    return ForeignClientSource(client)


def frame_service(source: Source) -> FrameService:
    """The frame service of a source on the running event loop.

    Parameters
    ----------
    source: dicomslide.sources.Source
        The source

    Returns
    -------
    dicomslide.frames.FrameService
        The service bound to the running loop
    """
    return source.runtime.service()


def get_cache_stats(client: Any) -> CacheStats:
    """Statistics of the encoded-frame cache and requests of a client.

    Parameters
    ----------
    client: Any
        A client accepted by :func:`dicomslide.find_slides`

    Returns
    -------
    dicomslide.frames.CacheStats
        Live counters: hits, misses, bytes, evictions, requests, frames per request
    """
    return as_source(client).runtime.stats


def decode_executor() -> ThreadPoolExecutor:
    """The process-wide thread pool that decodes frames.

    Returns
    -------
    concurrent.futures.ThreadPoolExecutor
        One worker per CPU
    """
    global _executor
    if _executor is None:
        with _lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(
                    max_workers=os.cpu_count() or 2, thread_name_prefix="dicomslide-decode"
                )
    return _executor


class LoopInbox(Generic[T]):
    """Items posted from any thread, handled on an event loop, with one wake-up per burst.

    Each ``loop.call_soon_threadsafe`` writes to the loop's self-pipe: a syscall that also
    hands the GIL to another thread. Items posted while a wake-up is on its way ride with
    it, so threads posting together (16 blocking readers, two decode threads) cost the
    loop one wake-up instead of one each.

    Parameters
    ----------
    loop: asyncio.AbstractEventLoop
        The loop that handles the items
    handle: Callable[[T], None]
        Called on the loop thread with each item, in the order posted
    """

    __slots__ = ("_handle", "_items", "_loop", "_wake_pending")

    def __init__(self, loop: asyncio.AbstractEventLoop, handle: Callable[[T], None]) -> None:
        self._loop = loop
        self._handle = handle
        self._items: collections.deque[T] = collections.deque()
        self._wake_pending = False

    def __len__(self) -> int:
        return len(self._items)

    def post(self, item: T) -> None:
        """Queue ``item`` and wake the loop unless a wake-up is on its way (any thread).

        Parameters
        ----------
        item: T
            What ``handle`` gets; dropped quietly once the loop is closed
        """
        self._items.append(item)
        if self._wake_pending:
            return
        # Two threads may both see the flag down: one wake-up too many, never one short.
        try:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # a closed loop: nobody handles anything any more
            pass
        except BaseException:
            # Ctrl-C before the wake-up left: the next post must send one.
            self._wake_pending = False
            raise

    def _drain(self) -> None:
        # Cleared before popping: an item posted after this line is either popped below or
        # finds the flag down and wakes the loop again.
        self._wake_pending = False
        items, handle = self._items, self._handle
        while items:
            handle(items.popleft())


#: Longest a decode thread keeps finished jobs before handing them to the event loop.
RESULT_BATCH_SECONDS: Final = 0.002


class DecodeQueue:
    """Runs an event loop's decode jobs on the decode pool with few thread hops.

    ``loop.run_in_executor`` costs a pool submission, a ``concurrent.futures.Future`` and a
    wake-up of the event loop (a write to its self-pipe) per job: for 256-pixel tiles that
    was a third of the event loop's time in a per-tile scan. Here jobs wait in one queue that
    at most ``workers`` pool threads drain, and each thread hands back what it finished in
    one wake-up, at the latest every :data:`RESULT_BATCH_SECONDS` (so a lone job is not
    delayed, and a burst costs a few wake-ups instead of one per tile).

    Parameters
    ----------
    loop: asyncio.AbstractEventLoop
        The loop whose futures the jobs resolve
    executor: concurrent.futures.ThreadPoolExecutor
        The pool that runs the jobs
    workers: int
        Most pool threads draining this queue at once
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor, workers: int
    ) -> None:
        self.loop = loop
        self._executor = executor
        self._workers = max(1, workers)
        self._jobs: collections.deque[
            tuple[asyncio.Future[Any], Callable[..., Any], tuple[Any, ...]]
        ] = collections.deque()
        self._draining = 0
        self._lock = threading.Lock()
        # Decode threads finishing together share one wake-up of the loop.
        self._finished: LoopInbox[list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = (
            LoopInbox(loop, _resolve_all)
        )

    def submit(
        self, fn: Callable[..., Any], *args: Any, into: asyncio.Future[Any] | None = None
    ) -> asyncio.Future[Any]:
        """Queue ``fn(*args)``; call from the event loop's thread.

        Parameters
        ----------
        fn: Callable[..., Any]
            The job, run in a pool thread
        *args: Any
            Its arguments
        into: asyncio.Future[Any] | None, optional
            A future of the loop to resolve instead of a new one: a read of one tile hands
            its own, so its decode costs no second future and callback on the loop

        Returns
        -------
        asyncio.Future[Any]
            ``into`` or a new future; resolves with the job's result or exception (unless
            already done by then); cancelling it before the job starts skips the job
        """
        fut: asyncio.Future[Any] = self.loop.create_future() if into is None else into
        self._jobs.append((fut, fn, args))
        with self._lock:
            start = self._draining < self._workers
            if start:
                self._draining += 1
        if start:
            try:
                self._executor.submit(self._drain)
            except BaseException:
                with self._lock:
                    self._draining -= 1
                raise
        return fut

    def _drain(self) -> None:
        finished: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        since = time.monotonic()
        while True:
            try:
                fut, fn, args = self._jobs.popleft()
            except IndexError:
                with self._lock:
                    # Checked under the lock that submit() takes after appending, so a job
                    # queued right now either is seen here or starts a drainer itself.
                    if not self._jobs:
                        self._draining -= 1
                        break
                continue
            if fut.done():  # cancelled, or a caller's own future that failed meanwhile
                continue
            try:
                finished.append((fut, fn(*args), None))
            except BaseException as exc:  # handed to the waiter, whatever it is
                finished.append((fut, None, exc))
            now = time.monotonic()
            if now - since >= RESULT_BATCH_SECONDS:
                self._hand_back(finished)
                finished, since = [], now
        if finished:
            self._hand_back(finished)

    def _hand_back(
        self, finished: list[tuple[asyncio.Future[Any], Any, BaseException | None]]
    ) -> None:
        self._finished.post(finished)


def _resolve_all(finished: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, result, exc in finished:
        if fut.done():  # cancelled by its reader meanwhile
            continue
        if exc is None:
            fut.set_result(result)
        else:
            fut.set_exception(exc)


_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DecodeQueue] = (
    weakref.WeakKeyDictionary()
)


def decode_queue() -> DecodeQueue:
    """The decode queue of the running event loop.

    Returns
    -------
    DecodeQueue
        One per event loop, feeding the process-wide decode pool
    """
    loop = asyncio.get_running_loop()
    queue = _queues.get(loop)
    if queue is None:
        queue = DecodeQueue(loop, decode_executor(), os.cpu_count() or 2)
        _queues[loop] = queue
    return queue


def _after_fork_in_child() -> None:
    global _executor, _lock
    # The parent's worker threads do not exist in the child; a fresh pool is made on demand.
    _executor = None
    _lock = threading.Lock()
    _queues.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)

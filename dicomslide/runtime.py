"""Per-process plumbing: which source serves a client, its frame service, the decode pool.

Clients given by users are resolved to a :class:`~dicomslide.sources.Source` once:

* dicomslide's own sources are used as they are;
* objects with a ``__dicomslide_source__`` attribute (the blocking twins in ``dicomslide_sync``)
  hand over the async source they wrap, so both packages share one cache;
* foreign ``dicomweb_client.DICOMClient`` objects get one adapter each, kept as long as the
  client lives; a ``dicomweb_client.DICOMfileClient`` is served by dicomslide's own local
  source for the same folder (its SQLite handle cannot be used from worker threads).

Each source has one encoded-frame cache for its lifetime and one :class:`FrameService` per
event loop (a service's futures belong to one loop; the cache is plain data and is shared).
Frames are decoded in one process-wide thread pool that is recreated after ``fork``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dicomslide.errors import InvalidClientError
from dicomslide.frames import CacheStats, DecodedTileCache, FrameCache, FrameService
from dicomslide.sources.foreign import ForeignClientSource, is_foreign_client
from dicomslide.sources.protocol import Source

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "as_source",
    "decode_executor",
    "decoded_tile_cache",
    "frame_service",
    "get_cache_stats",
]

#: Default budget of the encoded-frame cache of one client.
DEFAULT_CACHE_BYTES = 512 * 1024 * 1024
#: Default budget of the decoded-tile cache of one client (about 680 RGB 256-px tiles).
DEFAULT_DECODED_CACHE_BYTES = 128 * 1024 * 1024

_adapters: weakref.WeakKeyDictionary[Any, ForeignClientSource] = weakref.WeakKeyDictionary()
_caches: weakref.WeakKeyDictionary[Any, FrameCache] = weakref.WeakKeyDictionary()
_services: weakref.WeakKeyDictionary[Any, FrameService] = weakref.WeakKeyDictionary()
_decoded: weakref.WeakKeyDictionary[Any, DecodedTileCache] = weakref.WeakKeyDictionary()
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
        return client  # type: ignore[no-any-return]
    if is_foreign_client(client):
        with _lock:
            # Kept on the client itself where possible: an adapter that wraps the client,
            # stored as a value keyed by that client in a WeakKeyDictionary, would keep it
            # alive forever; on the client the pair is an ordinary collectable cycle.
            attrs = getattr(client, "__dict__", None)
            adapter = attrs.get(_ADAPTER_ATTRIBUTE) if attrs is not None else None
            if adapter is None:
                adapter = _adapters.get(client)
            if adapter is None:
                adapter = _adapt(client)
                if attrs is not None:
                    attrs[_ADAPTER_ATTRIBUTE] = adapter
                else:
                    _adapters[client] = adapter
        return adapter
    raise InvalidClientError(
        f"Expected a dicomslide client or a dicomweb_client.DICOMClient, got "
        f"{type(client).__module__}.{type(client).__qualname__}."
    )


def _adapt(client: Any) -> Any:
    cls = type(client)
    if cls.__module__.startswith("dicomweb_client") and cls.__name__ == "DICOMfileClient":
        # dicomweb_client's file client keeps an SQLite connection that only the thread that
        # opened it may use, so it cannot serve calls from worker threads. The same folder is
        # read with dicomslide's own local source instead; the user's object is left untouched.
        from dicomslide.sources.local import DICOMfileClient

        return DICOMfileClient(client._db_manager.base_dir)
    return ForeignClientSource(client)


def _cache_for(source: Source) -> FrameCache:
    with _lock:
        cache = _caches.get(source)
        if cache is None:
            budget = int(getattr(source, "cache_max_bytes", DEFAULT_CACHE_BYTES))
            cache = FrameCache(budget)
            _caches[source] = cache
        return cache


def decoded_tile_cache(source: Source) -> DecodedTileCache:
    """The decoded-tile cache of a source.

    Parameters
    ----------
    source: dicomslide.sources.Source
        The source; its ``decoded_cache_max_bytes`` attribute, if any, sets the budget

    Returns
    -------
    dicomslide.frames.DecodedTileCache
        The cache
    """
    with _lock:
        cache = _decoded.get(source)
        if cache is None:
            budget = int(getattr(source, "decoded_cache_max_bytes", DEFAULT_DECODED_CACHE_BYTES))
            stats = _caches[source].stats if source in _caches else None
            cache = DecodedTileCache(budget, stats)
            _decoded[source] = cache
        return cache


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
    loop = asyncio.get_running_loop()
    service = _services.get(source)
    if service is None or service.loop is not loop:
        options = getattr(source, "frame_service_options", {})
        service = FrameService(source, _cache_for(source), **options)
        _services[source] = service
    return service


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
    return _cache_for(as_source(client)).stats


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


def _after_fork_in_child() -> None:
    global _executor, _lock
    # The parent's worker threads do not exist in the child; a fresh pool is made on demand.
    _executor = None
    _lock = threading.Lock()
    _services.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)

"""What one source owns for reading frames: its caches and its frame services.

Every source (DICOMweb, local folder, foreign-client adapter) builds one :class:`SourceRuntime`
from its constructor options and exposes it as its ``runtime`` property. The caches live as
long as the source; dropping the source frees them. Services are made one per event loop
(a service's futures and tasks belong to one loop), so reading from a second loop never
replaces the first loop's service or its coalescing and read-ahead state.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass

from dicomslide.frames import CacheStats, DecodedTileCache, FrameCache, FrameService
from dicomslide.sources.protocol import Source

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_DECODED_CACHE_BYTES",
    "FrameServiceOptions",
    "SourceRuntime",
]

#: Default budget of the encoded-frame cache of one client.
DEFAULT_CACHE_BYTES = 512 * 1024 * 1024
#: Default budget of the decoded-tile cache of one client (about 680 RGB 256-px tiles).
DEFAULT_DECODED_CACHE_BYTES = 128 * 1024 * 1024


@dataclass(frozen=True)
class FrameServiceOptions:
    """How a source's :class:`~dicomslide.frames.FrameService` batches frame requests.

    Parameters
    ----------
    max_frames_per_request: int, optional
        Most frames in one source call
    max_concurrent_requests: int, optional
        Most source calls in flight at once
    coalesce_window: float, optional
        Seconds a request waits for more to merge with (0: only the same event-loop tick)
    max_requests_per_instance: int | None, optional
        Most source calls in flight for one instance; ``None``: no limit
    readahead: int, optional
        Largest read-ahead window in frames (0: off)
    """

    max_frames_per_request: int = 256
    max_concurrent_requests: int = 8
    coalesce_window: float = 0.0
    max_requests_per_instance: int | None = 1
    readahead: int = 0


class SourceRuntime:
    """The frame cache, decoded-tile cache and per-loop frame services of one source.

    Parameters
    ----------
    source: dicomslide.sources.Source
        The source that owns this runtime (held weakly: the source holds the runtime)
    cache_max_bytes: int | None, optional
        Budget of the encoded-frame cache; ``None``: :data:`DEFAULT_CACHE_BYTES`
    decoded_cache_max_bytes: int | None, optional
        Budget of the decoded-tile cache; ``None``: :data:`DEFAULT_DECODED_CACHE_BYTES`
    service_options: FrameServiceOptions | None, optional
        Options of the frame services; ``None``: the defaults
    """

    def __init__(
        self,
        source: Source,
        *,
        cache_max_bytes: int | None = None,
        decoded_cache_max_bytes: int | None = None,
        service_options: FrameServiceOptions | None = None,
    ) -> None:
        try:
            self._source: Callable[[], Source | None] = weakref.ref(source)
        except TypeError:  # a source that cannot be weakly referenced: keep it
            self._source = lambda: source
        self.service_options = service_options or FrameServiceOptions()
        self.frame_cache = FrameCache(
            DEFAULT_CACHE_BYTES if cache_max_bytes is None else cache_max_bytes
        )
        self._decoded = DecodedTileCache(
            DEFAULT_DECODED_CACHE_BYTES
            if decoded_cache_max_bytes is None
            else decoded_cache_max_bytes,
            self.frame_cache.stats,
        )
        # A plain dict: a service holds its loop, so weak keys would never be dropped anyway;
        # services of closed loops are pruned when a new loop asks instead.
        self._services: dict[asyncio.AbstractEventLoop, FrameService] = {}
        self._pid = os.getpid()
        self._lock = threading.Lock()

    @property
    def stats(self) -> CacheStats:
        """dicomslide.frames.CacheStats: Live counters of the frame cache and requests."""
        return self.frame_cache.stats

    @property
    def decoded_cache(self) -> DecodedTileCache:
        """dicomslide.frames.DecodedTileCache: Where reads keep decoded tiles.

        Settable: keys name the instance and frame, so one cache can serve several sources
        (openslide's shared ``OpenSlideCache``).
        """
        return self._decoded

    @decoded_cache.setter
    def decoded_cache(self, cache: DecodedTileCache) -> None:
        self._decoded = cache

    def service(self) -> FrameService:
        """The frame service of this source on the running event loop.

        Returns
        -------
        dicomslide.frames.FrameService
            Made on first use on each loop, kept while the loop is open and the source lives
        """
        loop = asyncio.get_running_loop()
        # Every region read asks: the common case (this loop's service exists, no fork since)
        # needs no lock, as a dict look-up is atomic.
        service = self._services.get(loop)
        if service is not None and self._pid == os.getpid():
            return service
        with self._lock:
            if self._pid != os.getpid():
                # A forked child inherits services whose tasks and futures it cannot run.
                self._services = {}
                self._pid = os.getpid()
            service = self._services.get(loop)
            if service is None:
                for other in [other for other in self._services if other.is_closed()]:
                    del self._services[other]
                source = self._source()
                if source is None:  # pragma: no cover - the owner calls through itself
                    raise RuntimeError("The source of this runtime is gone.")
                service = FrameService(source, self.frame_cache, **asdict(self.service_options))
                self._services[loop] = service
            return service

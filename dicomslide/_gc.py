"""Pausing Python's cyclic garbage collector around bursts of allocation (private).

Parsing a large DICOM JSON document or building thousands of data sets and slides allocates
millions of containers; every allocation burst sets off collections, and the oldest
generation's walk visits every live object, so the cost grows faster than the work (parsing
a 100,000-frame series took 6.2 s instead of 1.2 s; a warm search of 500 local slides spent
a third of its time collecting). These bursts form no garbage cycles worth collecting
mid-way, so the collector is paused for them and resumes after.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["collector_paused"]

_lock = threading.Lock()
_pausers = 0
_was_enabled = True


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block.

    Several threads (or tasks) may pause at once: the collector resumes when the last one is
    done, and only if it was running before the first one paused it.

    Yields
    ------
    None
        Inside the block, the collector is paused
    """
    global _pausers, _was_enabled
    with _lock:
        if _pausers == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pausers += 1
    try:
        yield
    finally:
        with _lock:
            _pausers -= 1
            if _pausers == 0 and _was_enabled:
                gc.enable()

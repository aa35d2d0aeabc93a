"""Decoding in the thread that asked for a region (the blocking facade's tile reads).

A blocking call of :mod:`dicomslide_sync` runs its coroutine on the private event-loop
thread while the calling thread waits. For a read of one frame (a tile), decoding it in the
decode pool costs two more thread hops per call (loop to pool, pool back to loop) on top of
the two the call already pays, each with a future and a wake-up that compete with decoding
for the GIL. The caller's thread is idle meanwhile, so it can decode its own frame: the loop
then only fetches bytes, and decoding still stays off the event loop.

The facade arms a :class:`CallerDecodes` in :data:`caller_decodes` around one region call;
the context variable reaches the coroutine's task (a task copies the context it is created
in, and the portal creates it from the caller's). The region reader takes it at most once,
only where the array it returns is the one the caller gets unchanged, and only for reads of
at most :data:`MAX_FRAMES` frames (larger reads decode on all cores while their response
streams in). After the call returns, the caller runs :meth:`CallerDecodes.run`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Final

__all__ = ["MAX_FRAMES", "CallerDecodes", "caller_decodes", "take"]

#: Most frames a region read leaves to its caller; more go to the decode pool, whose threads
#: decode them in parallel (one caller would decode them one after the other).
MAX_FRAMES: Final = 1


class CallerDecodes:
    """Decode jobs of one blocking region call, run by the thread that made the call."""

    __slots__ = ("jobs", "taken")

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.taken = False

    def run(self) -> None:
        """Run the jobs in the calling thread (each decodes a frame and pastes it)."""
        jobs, self.jobs = self.jobs, []
        for fn, args in jobs:
            fn(*args)


#: Armed by the blocking facade around one region call; None everywhere else.
caller_decodes: ContextVar[CallerDecodes | None] = ContextVar(
    "dicomslide_caller_decodes", default=None
)


def take() -> CallerDecodes | None:
    """The armed jobs of the current call, once: later readers of the call get None.

    Returns
    -------
    CallerDecodes | None
        The collector the reader may hand its decode jobs to
    """
    jobs = caller_decodes.get()
    if jobs is None or jobs.taken:
        return None
    jobs.taken = True
    # Tasks created from here on (fetches started by this read) no longer see it.
    caller_decodes.set(None)
    return jobs

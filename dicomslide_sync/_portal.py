"""The one private event loop that runs dicomslide's coroutines for the blocking API.

Every blocking call in :mod:`dicomslide_sync` hands its coroutine to :func:`run`, which runs
it on a single asyncio event loop owned by a daemon thread named ``"dicomslide-loop"`` and
blocks the calling thread until the coroutine is done. Sharing one loop means that
connection pools, caches and other loop-bound objects created by one blocking call can be
used by the next one, from whichever thread it comes.

The loop thread is started lazily on first use, restarted lazily after :func:`shutdown`,
and forgotten in the child after :func:`os.fork`, whose first call starts a fresh one.

Notes
-----
A blocking call made from a thread that runs its own event loop (for example a Jupyter
cell, or a coroutine calling :func:`run`) blocks that loop for the duration of the call,
exactly like any other blocking function would. That is what the blocking API promises;
code that wants to keep its own loop responsive should use the async :mod:`dicomslide`
package instead. The coroutine must not depend on the caller's loop, because that loop
cannot make progress until the call returns.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import sys
import threading
import time
from _thread import allocate_lock
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar, cast

# SyncTimeoutError lives in the one error tree; imported here so the old name keeps working.
from dicomslide.errors import RegionError, SyncTimeoutError, UsageError
from dicomslide.runtime import LoopInbox

if sys.version_info < (3, 11):  # pragma: no cover - the backport ships with anyio on 3.10
    from exceptiongroup import BaseExceptionGroup

__all__ = ["SyncTimeoutError", "get_loop", "in_loop_thread", "run", "shutdown"]

T = TypeVar("T")

_THREAD_NAME = "dicomslide-loop"

# Waiting in slices keeps the waiting thread responsive to Ctrl-C: a lock wait is only
# interrupted by a signal that the kernel delivers to that very thread (never on Windows),
# and ``_thread.interrupt_main`` or a signal delivered to another thread only takes effect
# once the main thread runs Python code again.
_POLL_INTERVAL = 0.1

# How long a caller waits for a task it cancelled (timeout, Ctrl-C) to finish cancelling.
# Bounded because a coroutine may swallow cancellation; the caller must still get control.
_CANCEL_GRACE = 1.0

# Bound on waiting for the loop thread in :func:`shutdown`: the thread itself waits at most
# ``_CANCEL_GRACE`` for its tasks and again for async generators before it closes the loop.
_SHUTDOWN_JOIN = 4 * _CANCEL_GRACE + 1.0

# At interpreter exit the loop thread is a daemon, so nothing forces us to wait for it;
# a short join only gives well-behaved tasks the chance to run their cleanup.
_EXIT_JOIN = 0.5


class _Latch:
    """A one-shot flag that one thread sets and one caller thread waits for.

    What :class:`threading.Event` does for this use, on one bare lock: an Event builds a
    Condition, whose waits and notifications run in Python and make a new lock per wait.
    With 16 threads of per-tile reads that was a measurable share of the GIL's traffic.
    """

    __slots__ = ("_is_set", "_lock")

    def __init__(self) -> None:
        self._is_set = False
        self._lock = allocate_lock()
        self._lock.acquire()

    def set(self) -> None:
        # Only ever called on the loop thread, so the flag needs no lock of its own.
        if not self._is_set:
            self._is_set = True
            self._lock.release()

    def is_set(self) -> bool:
        return self._is_set

    def wait(self, timeout: float) -> bool:
        if self._lock.acquire(timeout=max(timeout, 0.0)):
            self._lock.release()  # left open: any later wait returns at once
            return True
        return self._is_set


class _Outcome(Generic[T]):
    """How a call ended: with a value, an exception, or without either (cancelled)."""

    __slots__ = ("error", "value")

    def __init__(self, value: T | None = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error


class _Portal:
    """One event loop, the daemon thread running it, and the calls submitted to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = _LoopThread(self)
        # Guards ``closing`` and ``calls`` so that no call can be queued behind ``loop.stop``
        # and wait forever for a loop that will never run it.
        self.lock = threading.Lock()
        self.closing = False
        self.calls: set[_Call[Any]] = set()
        self.ready = threading.Event()
        # Calls waiting for the loop to start them: callers arriving together share one
        # wake-up of the loop. Posted outside ``lock``, which the loop's bookkeeping would
        # otherwise wait on for the length of the write to its self-pipe; registered calls
        # are abandoned when the loop ends, so a closed loop just means that.
        self.queued: LoopInbox[_Call[Any]] = LoopInbox(self.loop, _Call.start)

    def serve(self) -> None:
        """Run the loop until stopped, then cancel what is left and close it (loop thread)."""
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.call_soon(self.ready.set)
            loop.run_forever()
        finally:
            # Also reached if ``run_forever`` died, so a starter never waits on ``ready``.
            self.ready.set()
            with self.lock:
                self.closing = True
            try:
                _drain(loop)
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                with self.lock:
                    orphans = list(self.calls)
                    self.calls.clear()
                # Calls whose task ignored cancellation are abandoned with the loop; their
                # callers must not wait forever.
                for call in orphans:
                    call.abandon()

    def stop(self) -> None:
        """Ask the loop to stop; safe from any thread and if the loop is already closed."""
        with self.lock:
            self.closing = True
        # RuntimeError: already closed, the loop thread has finished on its own.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.loop.stop)


class _LoopThread(threading.Thread):
    """The daemon thread of a portal; its type is how :func:`in_loop_thread` knows it."""

    def __init__(self, portal: _Portal) -> None:
        super().__init__(name=_THREAD_NAME, daemon=True)
        self._portal = portal

    def run(self) -> None:
        self._portal.serve()


def _drain(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel every task left on ``loop`` and give them a bounded time to finish."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=_CANCEL_GRACE))
    # An async generator that refuses to close must not hold up shutdown.
    with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
        loop.run_until_complete(asyncio.wait_for(loop.shutdown_asyncgens(), _CANCEL_GRACE))


class _Call(Generic[T]):
    """One coroutine submitted by :func:`run`, as seen from both threads."""

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self.coro = coro
        self.name = getattr(coro, "__qualname__", type(coro).__name__)
        # Set by ``submit`` once ``start`` may have been queued on that portal's loop.
        self.portal: _Portal | None = None
        self.task: asyncio.Task[_Outcome[T]] | None = None
        self.started = False
        self.outcome: _Outcome[T] | None = None
        self.shut_down = False
        self.done = _Latch()

    # -- caller thread ----------------------------------------------------------------------

    def submit(self) -> None:
        """Queue the coroutine on the current portal, starting one if needed."""
        while True:
            portal = _current_portal()
            with portal.lock:
                registered = not portal.closing
                if registered:
                    self.portal = portal
                    portal.calls.add(self)
            if registered:
                portal.queued.post(self)
                return
            # Lost a race with shutdown(): the next round starts a new loop.

    def cancel_and_wait(self) -> bool:
        """Cancel the call and wait up to the grace period; return whether it finished.

        Also correct when a KeyboardInterrupt cut ``submit`` short at any point.
        """
        portal = self.portal
        if portal is None:
            self.coro.close()
            return True
        try:
            portal.loop.call_soon_threadsafe(self.cancel_in_loop)
        except RuntimeError:
            # Loop closed: its thread released every call it knew. One it never started
            # is still ours to close.
            if self.task is None:
                self.coro.close()
            return True
        return _wait(self.done, time.monotonic() + _CANCEL_GRACE)

    # -- loop thread ------------------------------------------------------------------------

    def start(self) -> None:
        assert self.portal is not None
        if self.done.is_set():
            # Cancelled before the loop got to it: the cancellation, queued by this caller
            # after the shared wake-up of another, ran first and closed the coroutine.
            return
        if self.portal.closing:
            # Queued after the loop was told to stop (submit no longer holds the lock
            # while queueing): never started, like a call that lost the race in submit.
            self.coro.close()
            self._finish()
            return
        self.task = self.portal.loop.create_task(self._main())
        self.task.add_done_callback(self._on_done)

    async def _main(self) -> _Outcome[T]:
        self.started = True
        try:
            return _Outcome(value=await self.coro)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            # Boxed rather than raised: a task re-raises KeyboardInterrupt and SystemExit
            # out of ``run_forever``, which would kill the loop shared by every caller.
            return _Outcome(error=exc)

    def _on_done(self, task: asyncio.Task[_Outcome[T]]) -> None:
        if not self.started:
            # Cancelled before its first step: the wrapper never awaited the coroutine, so
            # close it here to avoid a "coroutine was never awaited" warning.
            self.coro.close()
        if not task.cancelled():
            self.outcome = task.result()
        self._finish()

    def cancel_in_loop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        else:
            # Not started: still queued behind a wake-up that another caller sent (``start``
            # will skip it), or a KeyboardInterrupt in ``submit`` stopped it from being queued.
            self.coro.close()
            self._finish()

    def _finish(self) -> None:
        assert self.portal is not None
        # No lock: this runs on the loop thread, like the only other reader of ``calls``
        # (the loop's own shutdown), and callers' ``calls.add`` is atomic.
        self.shut_down = self.outcome is None and self.portal.closing
        self.portal.calls.discard(self)
        self.done.set()

    # -- any thread -------------------------------------------------------------------------

    def abandon(self) -> None:
        """Release the caller of a call whose loop is gone."""
        if not self.done.is_set():
            self.shut_down = True
            self.done.set()

    def result(self) -> T:
        """Return the value or raise the exception of a finished call (caller thread)."""
        outcome = self.outcome
        if outcome is None:
            if self.shut_down:
                raise UsageError(
                    f"{self.name}() was cancelled because dicomslide's event loop was shut "
                    "down while it was running"
                )
            raise concurrent.futures.CancelledError(
                f"{self.name}() was cancelled inside dicomslide's event loop"
            )
        if outcome.error is not None:
            error = _single_leaf(outcome.error)
            try:
                raise error
            finally:
                # Break the cycle frame -> error -> traceback -> frame.
                del error, outcome
        return cast(T, outcome.value)


def _single_leaf(error: BaseException) -> BaseException:
    """Return the only leaf of an exception group, or ``error`` itself."""
    leaf = error
    while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
        leaf = leaf.exceptions[0]
    return error if isinstance(leaf, BaseExceptionGroup) else leaf


def _wait(event: _Latch, deadline: float | None) -> bool:
    """Wait for ``event`` in short slices until ``deadline``; return whether it is set."""
    while True:
        if deadline is None:
            slice_ = _POLL_INTERVAL
        else:
            slice_ = min(_POLL_INTERVAL, deadline - time.monotonic())
            if slice_ <= 0:
                return event.is_set()
        if event.wait(slice_):
            return True


_lock = threading.Lock()
_portal: _Portal | None = None
# Portals inherited through fork. Kept referenced forever: closing (or garbage collecting)
# them in the child would unregister file descriptors from an epoll instance that the
# parent's still running loop shares with us.
_inherited: list[_Portal] = []


def _current_portal() -> _Portal:
    """Return the running portal, starting a new one if there is none (double-checked)."""
    global _portal
    portal = _portal
    if portal is not None and not portal.closing:
        return portal
    with _lock:
        portal = _portal
        if portal is None or portal.closing:
            portal = _Portal()
            portal.thread.start()
            # Published before waiting: a KeyboardInterrupt during the wait must not leave
            # a running loop thread that nobody knows about.
            _portal = portal
            portal.ready.wait()
        return portal


def get_loop() -> asyncio.AbstractEventLoop:
    """Return dicomslide's private event loop, starting its thread if needed.

    Returns
    -------
    asyncio.AbstractEventLoop
        The running loop that :func:`run` submits coroutines to. Schedule work on it only
        with thread-safe methods (``call_soon_threadsafe``,
        :func:`asyncio.run_coroutine_threadsafe`); never stop or close it, use
        :func:`shutdown` instead.
    """
    return _current_portal().loop


def in_loop_thread() -> bool:
    """Tell whether the calling thread is dicomslide's private event-loop thread.

    Returns
    -------
    bool
        ``True`` in the thread running the private loop (also while it shuts down), where
        :func:`run` would deadlock and therefore refuses to run.
    """
    return isinstance(threading.current_thread(), _LoopThread)


def run(coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
    """Run a coroutine on dicomslide's private event loop and block until it is done.

    Safe to call from any thread and from many threads at once. It also works from a thread
    that is running its own event loop (a Jupyter cell, a coroutine): that thread, and so
    its loop, is blocked until the call returns, like with any other blocking function.

    Parameters
    ----------
    coro: Coroutine[Any, Any, T]
        The coroutine to run; it is always either run or closed, so it never triggers a
        "coroutine was never awaited" warning.
    timeout: float | None, optional
        Seconds to wait for the result. When they run out, the coroutine is cancelled and,
        after a short bounded wait for it to finish cancelling, :class:`SyncTimeoutError`
        is raised. ``None`` (default) waits as long as it takes.

    Returns
    -------
    T
        What the coroutine returned.

    Raises
    ------
    dicomslide.errors.UsageError
        If called from the private loop thread itself (which would deadlock), if ``coro`` is
        not a coroutine, or if :func:`shutdown` cancelled the coroutine while it ran.
    dicomslide.errors.RegionError
        If ``timeout`` is not a positive number.
    SyncTimeoutError
        If the coroutine did not finish within ``timeout`` seconds.
    KeyboardInterrupt
        On Ctrl-C while waiting; the coroutine is cancelled first.
    concurrent.futures.CancelledError
        If the coroutine was cancelled from inside the loop rather than by ``timeout``,
        Ctrl-C or :func:`shutdown` (for example it raised ``CancelledError`` itself).
    BaseException
        Whatever the coroutine raised, the very same object. An exception group with
        exactly one leaf exception (for example from a task group in which one task
        failed) is replaced by that leaf, so callers can catch the error they expect.
    """
    if not asyncio.iscoroutine(coro):
        raise UsageError(
            f"run() expects a coroutine object, got {type(coro).__name__}; "
            "call the async function and pass its result"
        )
    if in_loop_thread():
        coro.close()
        raise UsageError(
            "blocking dicomslide_sync calls cannot run on dicomslide's own event loop, it "
            "would wait for itself forever (deadlock); in async code use the async "
            "'dicomslide' package and await its coroutines instead"
        )
    if timeout is not None and not timeout > 0:
        coro.close()
        raise RegionError(f"timeout must be a positive number of seconds or None, got {timeout}")

    call = _Call(coro)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        call.submit()
        finished = _wait(call.done, deadline)
    except BaseException:
        # KeyboardInterrupt (or another asynchronous exception) while submitting or
        # waiting: do not leave the coroutine running, or never closed, behind our back.
        call.cancel_and_wait()
        raise
    if not finished:
        cancelled_in_time = call.cancel_and_wait()
        if call.outcome is None:
            message = f"{call.name}() did not finish within {timeout:g} seconds and was cancelled"
            if not cancelled_in_time:
                message += (
                    f"; it had not finished cancelling after another {_CANCEL_GRACE:g} "
                    "seconds and is left to finish in the background"
                )
            raise SyncTimeoutError(message)
        # It finished just before the cancellation reached it: its outcome stands.
    return call.result()


def shutdown() -> None:
    """Stop the private event loop and its thread; the next :func:`run` starts a new one.

    Tasks still running on the loop are cancelled and given a bounded time to finish;
    callers blocked in :func:`run` on them get :class:`~dicomslide.errors.UsageError`.
    Meant for tests and for applications that want to release the thread early.

    Raises
    ------
    dicomslide.errors.UsageError
        If called from the private loop thread itself, which cannot wait for itself.
    """
    global _portal
    if in_loop_thread():
        raise UsageError(
            "shutdown() cannot be called from dicomslide's own event loop thread, which "
            "would wait for itself to stop"
        )
    with _lock:
        portal = _portal
        _portal = None
    if portal is None:
        return
    portal.stop()
    portal.thread.join(_SHUTDOWN_JOIN)


def _stop_at_exit() -> None:
    """Stop the loop at interpreter exit without waiting for long-running tasks."""
    portal = _portal
    if portal is None:
        return
    portal.stop()
    portal.thread.join(_EXIT_JOIN)


def _forget_after_fork() -> None:
    """Give a forked child its own lazily started loop (runs in the child only)."""
    global _lock, _portal
    # The parent's loop thread does not exist in the child, and the lock may have been held
    # by a parent thread at the moment of the fork.
    _lock = threading.Lock()
    if _portal is not None:
        _inherited.append(_portal)
    _portal = None


atexit.register(_stop_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def close_soon(aclose: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    """Schedule an async close on the private loop without waiting (for finalizers).

    Parameters
    ----------
    aclose: Callable[[], Coroutine[Any, Any, Any]]
        Function returning the closing coroutine; called on the loop thread

    Notes
    -----
    Finalizers must never block: nothing is awaited here, and nothing happens if the loop is
    not running (then the resources die with it).
    """
    portal = _portal
    if portal is None or portal.closing:
        return

    def start() -> None:
        task = portal.loop.create_task(aclose())
        _closing_tasks.add(task)
        task.add_done_callback(_closing_tasks.discard)

    with contextlib.suppress(RuntimeError):
        portal.loop.call_soon_threadsafe(start)


_closing_tasks: set[asyncio.Task[Any]] = set()

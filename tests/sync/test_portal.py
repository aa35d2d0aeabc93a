"""Tests of the private event-loop thread behind the blocking API."""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import contextvars
import gc
import inspect
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from dicomslide.errors import DicomSlideError, RegionError, UsageError
from dicomslide_sync import _portal
from dicomslide_sync._portal import (
    SyncTimeoutError,
    get_loop,
    in_loop_thread,
    run,
    shutdown,
)

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import ExceptionGroup

REPO_ROOT = Path(__file__).resolve().parents[2]

# Every test gets a deadline, so that a deadlock fails the test instead of hanging the run.
pytestmark = pytest.mark.timeout(20)


@pytest.fixture(autouse=True)
def fresh_loop() -> Iterator[None]:
    """Give each test its own loop thread, so one test's leftovers cannot mask another's."""
    shutdown()
    yield
    shutdown()


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "dicomslide-loop"]


async def double(value: int) -> int:
    await asyncio.sleep(0)
    return 2 * value


class LongCall:
    """A 30 s coroutine that says when it has started and whether it was cancelled."""

    def __init__(self) -> None:
        self.running = threading.Event()
        self.cancelled = threading.Event()

    async def __call__(self) -> None:
        self.running.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


def test_returns_the_coroutine_result() -> None:
    assert run(double(21)) == 42


def test_propagates_the_same_exception_object() -> None:
    error = ValueError("bad level")

    async def fail() -> None:
        await asyncio.sleep(0)
        raise error

    with pytest.raises(ValueError, match="bad level") as info:
        run(fail())
    assert info.value is error


def test_keyboard_interrupt_raised_by_the_coroutine_reaches_caller_and_loop_survives() -> None:
    async def interrupt() -> None:
        raise KeyboardInterrupt

    loop = get_loop()
    with pytest.raises(KeyboardInterrupt):
        run(interrupt())
    assert get_loop() is loop
    assert loop.is_running()
    assert run(double(1)) == 2


def test_runs_on_one_private_loop_thread() -> None:
    async def where() -> tuple[asyncio.AbstractEventLoop, threading.Thread, bool]:
        return asyncio.get_running_loop(), threading.current_thread(), in_loop_thread()

    loop, thread, inside = run(where())
    assert loop is get_loop()
    assert thread.name == "dicomslide-loop"
    assert thread.daemon
    assert inside
    assert thread is not threading.current_thread()
    assert not in_loop_thread()


def test_concurrent_calls_from_sixteen_threads_share_one_loop() -> None:
    n = 16
    barrier = threading.Barrier(n)

    async def work(i: int) -> tuple[int, asyncio.AbstractEventLoop]:
        await asyncio.sleep(0.01 * (i % 4))
        return i * i, asyncio.get_running_loop()

    def call(i: int) -> tuple[int, asyncio.AbstractEventLoop]:
        barrier.wait()
        return run(work(i))

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(call, range(n)))

    assert [value for value, _ in results] == [i * i for i in range(n)]
    loops = {id(loop) for _, loop in results}
    assert len(loops) == 1
    assert results[0][1] is get_loop()
    assert len(loop_threads()) == 1


def test_works_from_a_thread_running_its_own_loop() -> None:
    async def outer() -> tuple[int, bool]:
        own_loop = asyncio.get_running_loop()
        # Blocks this loop on purpose: that is what a blocking API does in e.g. Jupyter.
        value = run(double(5))
        return value, own_loop is get_loop()

    value, same_loop = asyncio.run(outer())
    assert value == 10
    assert not same_loop


async def test_works_from_inside_a_running_test_loop() -> None:
    assert run(double(4)) == 8


def test_refuses_to_run_on_its_own_loop_thread_and_closes_the_coroutine() -> None:
    async def reentrant() -> tuple[str, str]:
        inner = double(1)
        try:
            run(inner)
        except UsageError as error:
            return str(error), inspect.getcoroutinestate(inner)
        raise AssertionError("run() did not refuse to run on its own loop")

    message, state = run(reentrant())
    assert "deadlock" in message
    assert "dicomslide" in message
    assert state == inspect.CORO_CLOSED


def test_shutdown_is_refused_on_the_loop_thread() -> None:
    async def stop() -> None:
        shutdown()

    with pytest.raises(UsageError, match="shutdown"):
        run(stop())


def test_rejects_a_coroutine_function() -> None:
    with pytest.raises(UsageError, match="coroutine object"):
        run(double)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan")])
def test_rejects_a_bad_timeout_and_closes_the_coroutine(timeout: float) -> None:
    coro = double(1)
    with pytest.raises(RegionError, match="timeout"):
        run(coro, timeout=timeout)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


def test_timeout_cancels_the_coroutine() -> None:
    slow_call = LongCall()
    started = time.monotonic()
    with pytest.raises(
        SyncTimeoutError, match=r"LongCall.__call__\(\) did not finish within 0.2 s"
    ) as info:
        run(slow_call(), timeout=0.2)
    assert time.monotonic() - started < 5
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, DicomSlideError)
    # run() waits for the cancellation, so the flag is already set.
    assert slow_call.cancelled.is_set()
    assert run(double(3)) == 6


def test_timeout_does_not_wait_forever_for_a_coroutine_ignoring_cancellation() -> None:
    release = threading.Event()

    async def stubborn() -> None:
        while not release.is_set():
            # Swallowing cancellation is the misbehaviour under test.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)

    started = time.monotonic()
    with pytest.raises(SyncTimeoutError, match="background"):
        run(stubborn(), timeout=0.1)
    assert time.monotonic() - started < 5
    release.set()


def test_result_within_timeout_is_returned() -> None:
    assert run(double(7), timeout=10) == 14


@pytest.mark.parametrize("how", ["interrupt_main", "sigint"])
def test_keyboard_interrupt_while_waiting_cancels_the_coroutine(how: str) -> None:
    assert threading.current_thread() is threading.main_thread()
    # Ctrl-C as a terminal user has it: a process started in the background by a
    # non-interactive shell (nohup, `cmd &`) inherits SIGINT ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _interrupt_while_waiting(how)
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupt_while_waiting(how: str) -> None:
    long_call = LongCall()

    def interrupt() -> None:
        long_call.running.wait(10)
        if how == "interrupt_main":
            _thread.interrupt_main()
        else:
            os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Thread(target=interrupt)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            run(long_call())
    finally:
        timer.join()
    assert time.monotonic() - started < 5
    assert long_call.cancelled.is_set()


@pytest.mark.parametrize("queued", [False, True])
def test_keyboard_interrupt_during_submission_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch, queued: bool
) -> None:
    # The window between queueing the coroutine and waiting for it is too short to hit with
    # a real signal reliably, so the interrupt is raised from inside the submission.
    loop = get_loop()
    original = loop.call_soon_threadsafe
    interrupted: list[bool] = []

    def call_soon_threadsafe(callback: Any, *args: Any, **kwargs: Any) -> asyncio.Handle:
        if not interrupted:
            interrupted.append(True)
            if queued:
                original(callback, *args, **kwargs)
            raise KeyboardInterrupt
        return original(callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", call_soon_threadsafe)
    coro = LongCall()()
    with pytest.raises(KeyboardInterrupt):
        run(coro)
    assert interrupted
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    monkeypatch.undo()
    assert run(double(2)) == 4
    assert not _portal._current_portal().calls


def test_exception_group_with_one_leaf_is_unwrapped() -> None:
    leaf = LookupError("no such frame")

    async def nested_group() -> None:
        raise ExceptionGroup("outer", [ExceptionGroup("inner", [leaf])])

    with pytest.raises(LookupError) as info:
        run(nested_group())
    assert info.value is leaf


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.TaskGroup is new in 3.11")
def test_task_group_failure_raises_the_failing_tasks_error() -> None:
    error = OSError("connection reset")

    async def failing() -> None:
        await asyncio.sleep(0)
        raise error

    async def grouped() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(failing())
            group.create_task(asyncio.sleep(30))

    with pytest.raises(OSError, match="connection reset") as info:
        run(grouped())
    assert info.value is error


def test_exception_group_with_several_leaves_is_kept() -> None:
    group = ExceptionGroup("two", [ValueError("a"), ExceptionGroup("inner", [KeyError("b")])])

    async def fail() -> None:
        raise group

    with pytest.raises(ExceptionGroup) as info:
        run(fail())
    assert info.value is group


def test_context_variables_of_the_caller_are_visible() -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    request_id.set("abc")

    async def read() -> str:
        return request_id.get("unset")

    assert run(read()) == "abc"


def test_shutdown_stops_the_thread_and_run_restarts_it() -> None:
    first = get_loop()
    (thread,) = loop_threads()
    shutdown()
    assert not thread.is_alive()
    assert first.is_closed()
    assert loop_threads() == []

    assert run(double(2)) == 4
    second = get_loop()
    assert second is not first
    assert second.is_running()
    assert len(loop_threads()) == 1


def test_shutdown_without_a_loop_is_harmless() -> None:
    shutdown()
    shutdown()
    assert loop_threads() == []


def start_caller(
    coroutine_function: Callable[[], Coroutine[Any, Any, None]],
) -> tuple[threading.Thread, list[BaseException]]:
    """Start a thread that runs a new coroutine through run(); the list gets what it raises."""
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            run(coroutine_function())
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=caller)
    thread.start()
    return thread, errors


def test_shutdown_releases_a_waiting_caller() -> None:
    forever = LongCall()
    thread, errors = start_caller(forever)
    assert forever.running.wait(10)
    shutdown()
    thread.join(10)
    assert not thread.is_alive()
    assert forever.cancelled.is_set()
    assert len(errors) == 1
    assert isinstance(errors[0], UsageError)
    assert "shut down" in str(errors[0])


def test_shutdown_releases_a_caller_whose_coroutine_ignores_cancellation() -> None:
    running = threading.Event()
    release = threading.Event()

    async def stubborn() -> None:
        running.set()
        while not release.is_set():
            # Swallowing cancellation is the misbehaviour under test.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)

    thread, errors = start_caller(stubborn)
    try:
        assert running.wait(10)
        started = time.monotonic()
        shutdown()
        thread.join(10)
        assert time.monotonic() - started < 8
        assert not thread.is_alive()
    finally:
        release.set()
        thread.join(10)
    assert len(errors) == 1
    assert isinstance(errors[0], UsageError)


def test_pending_calls_are_cancelled_without_never_awaited_warnings() -> None:
    # A call cancelled before its first step must still close its coroutine.
    gate = threading.Event()

    async def block_loop() -> None:
        gate.wait(10)  # blocks the loop thread on purpose, so the next call stays queued

    blocker = threading.Thread(target=run, args=(block_loop(),))
    blocker.start()
    coro = double(1)
    with pytest.raises(SyncTimeoutError):
        run(coro, timeout=0.1)
    gate.set()
    blocker.join(10)
    # The cancel request reached the task before it ever ran.
    deadline = time.monotonic() + 5
    while inspect.getcoroutinestate(coro) != inspect.CORO_CLOSED and time.monotonic() < deadline:
        time.sleep(0.01)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


def test_calls_arriving_together_share_one_wake_up_of_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each wake-up is a write to the loop's self-pipe; callers that arrive while one is on
    # its way must not send their own.
    gate = threading.Event()
    blocking_now = threading.Event()

    async def block_loop() -> None:
        blocking_now.set()
        gate.wait(10)

    blocker = threading.Thread(target=run, args=(block_loop(),))
    blocker.start()
    assert blocking_now.wait(5)
    portal = _portal._current_portal()
    loop = portal.loop
    original = loop.call_soon_threadsafe
    wakes: list[object] = []

    def counting(callback: Any, *args: Any, **kwargs: Any) -> asyncio.Handle:
        wakes.append(callback)
        return original(callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counting)
    with ThreadPoolExecutor(8) as pool:
        results = [pool.submit(run, double(n)) for n in range(8)]
        deadline = time.monotonic() + 5
        while len(portal.queued) < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # lets the last caller finish deciding whether to wake the loop
        assert len(portal.queued) == 8  # none started yet: the loop is still blocked
        assert len(wakes) == 1
        gate.set()
        assert [r.result(10) for r in results] == [2 * n for n in range(8)]
    blocker.join(10)


def test_a_call_queued_while_the_loop_stops_never_starts() -> None:
    # The caller queues its start outside the portal's lock, so a start can reach the loop
    # after shutdown began: it must close the coroutine unstarted and release the caller.
    gate = threading.Event()
    started = threading.Event()

    blocking_now = threading.Event()

    async def block_loop() -> None:
        blocking_now.set()
        gate.wait(10)  # blocks the loop thread on purpose, so the next call stays queued

    async def late() -> None:
        started.set()

    def blocking() -> None:
        # Finishing just as the loop stops may cost the blocker its result: not under test.
        with contextlib.suppress(UsageError):
            run(block_loop())

    blocker = threading.Thread(target=blocking)
    blocker.start()
    portal = _portal._current_portal()
    assert blocking_now.wait(5)
    deadline = time.monotonic() + 5
    coro = late()
    thread, errors = start_caller(lambda: coro)
    while len(portal.calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(portal.calls) == 2
    stopper = threading.Thread(target=shutdown)
    stopper.start()
    while not portal.closing and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.set()
    for t in (thread, stopper, blocker):
        t.join(10)
    assert not started.is_set()
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    assert len(errors) == 1
    assert isinstance(errors[0], UsageError)
    assert "shut down" in str(errors[0])


def _child_main(parent_loop_id: int) -> int:
    """Body of a forked child; return its exit status."""
    loop = get_loop()
    if id(loop) == parent_loop_id:
        return 2
    if run(double(21), timeout=10) != 42:
        return 3
    if len(loop_threads()) != 1:
        return 4
    return 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_forked_child_gets_a_fresh_loop() -> None:
    parent_loop = get_loop()
    assert run(double(1)) == 2
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        status = 1
        try:
            status = _child_main(id(parent_loop))
        finally:
            os._exit(status)
    deadline = time.monotonic() + 15
    while True:
        done, wait_status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("forked child hung in run()")
        time.sleep(0.02)
    assert os.waitstatus_to_exitcode(wait_status) == 0
    # The parent's loop is untouched by the child.
    assert get_loop() is parent_loop
    assert run(double(3)) == 6


def _mp_child(queue: multiprocessing.Queue[int]) -> None:
    queue.put(run(double(50), timeout=10))


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork start method"
)
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_multiprocessing_fork_child_gets_a_fresh_loop() -> None:
    assert run(double(1)) == 2
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[int] = context.Queue()
    process = context.Process(target=_mp_child, args=(queue,))
    process.start()
    try:
        assert queue.get(timeout=15) == 100
    finally:
        process.join(15)
        if process.is_alive():
            process.kill()
            process.join()
    assert process.exitcode == 0
    queue.close()
    queue.join_thread()


def test_interpreter_exit_does_not_wait_for_long_tasks() -> None:
    script = textwrap.dedent(
        """
        import asyncio
        from dicomslide_sync._portal import get_loop, run

        async def stubborn():
            while True:
                try:
                    await asyncio.sleep(1000)
                except asyncio.CancelledError:
                    pass

        async def spawn():
            global task
            task = asyncio.get_running_loop().create_task(stubborn())
            await asyncio.sleep(0)
            return 7

        assert run(spawn()) == 7
        print("ready", flush=True)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ready"
    # Bounded by the atexit join, not by the task that ignores cancellation.
    assert elapsed < 10


def test_module_exports() -> None:
    assert set(_portal.__all__) == {
        "SyncTimeoutError",
        "get_loop",
        "in_loop_thread",
        "run",
        "shutdown",
    }


def test_no_loop_threads_leak_after_many_restarts() -> None:
    for _ in range(5):
        assert run(double(1)) == 2
        shutdown()
    gc.collect()
    assert loop_threads() == []

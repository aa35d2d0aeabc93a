"""DecodeQueue: jobs run on pool threads, results come back in batches, nothing is lost."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from dicomslide import runtime
from dicomslide.runtime import DecodeQueue, decode_queue


async def test_every_job_resolves_with_its_own_result_on_at_most_workers_threads() -> None:
    loop = asyncio.get_running_loop()
    threads: set[str] = set()
    running = 0
    most = 0
    lock = threading.Lock()

    def job(i: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            threads.add(threading.current_thread().name)
        time.sleep(0.0005)
        with lock:
            running -= 1
        return i * i

    with ThreadPoolExecutor(4) as pool:
        queue = DecodeQueue(loop, pool, workers=2)
        futures = [queue.submit(job, i) for i in range(200)]
        assert await asyncio.gather(*futures) == [i * i for i in range(200)]
    assert most <= 2
    assert threading.current_thread().name not in threads


async def test_a_burst_is_handed_back_in_few_wakeups() -> None:
    loop = asyncio.get_running_loop()
    wakeups = 0
    original = runtime._resolve_all

    def counting(finished: list[tuple[asyncio.Future[object], object, object]]) -> None:
        nonlocal wakeups
        wakeups += 1
        original(finished)  # type: ignore[arg-type]

    runtime._resolve_all = counting  # type: ignore[assignment]
    try:
        with ThreadPoolExecutor(2) as pool:
            queue = DecodeQueue(loop, pool, workers=2)
            # 500 jobs of ~20 µs: one wake-up per job would be 500.
            futures = [queue.submit(sum, range(300)) for _ in range(500)]
            await asyncio.gather(*futures)
    finally:
        runtime._resolve_all = original
    assert wakeups < 100


async def test_exceptions_reach_their_waiter_only_and_the_queue_goes_on() -> None:
    loop = asyncio.get_running_loop()

    def job(i: int) -> int:
        if i == 3:
            raise ValueError("frame 3 is corrupt")
        return i

    with ThreadPoolExecutor(2) as pool:
        queue = DecodeQueue(loop, pool, workers=2)
        futures = [queue.submit(job, i) for i in range(8)]
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert isinstance(results[3], ValueError)
        assert [r for i, r in enumerate(results) if i != 3] == [0, 1, 2, 4, 5, 6, 7]
        assert await queue.submit(job, 9) == 9


async def test_cancelled_jobs_that_have_not_started_are_skipped() -> None:
    loop = asyncio.get_running_loop()
    gate = threading.Event()
    ran: list[int] = []

    def job(i: int) -> int:
        gate.wait(5)
        ran.append(i)
        return i

    with ThreadPoolExecutor(1) as pool:
        queue = DecodeQueue(loop, pool, workers=1)
        futures = [queue.submit(job, i) for i in range(5)]
        for fut in futures[2:]:
            fut.cancel()
        gate.set()
        assert await asyncio.gather(*futures[:2]) == [0, 1]
        await asyncio.sleep(0.05)
    assert ran == [0, 1]


async def test_one_queue_per_event_loop() -> None:
    first = decode_queue()
    assert decode_queue() is first
    assert first.loop is asyncio.get_running_loop()

    async def get() -> DecodeQueue:
        return decode_queue()

    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(asyncio.run, get()).result(5)
    assert other is not first


def test_results_after_the_loop_closed_are_dropped_quietly() -> None:
    gate = threading.Event()
    done = threading.Event()

    def job() -> int:
        gate.wait(5)
        return 1

    with ThreadPoolExecutor(1) as pool:

        async def start() -> None:
            DecodeQueue(asyncio.get_running_loop(), pool, workers=1).submit(job)

        asyncio.run(start())  # closes the loop with the job still running
        gate.set()
        pool.submit(done.set).result(5)  # the drainer finished without raising
    assert done.is_set()


@pytest.mark.parametrize("workers", [0, -3])
async def test_at_least_one_worker(workers: int) -> None:
    with ThreadPoolExecutor(1) as pool:
        queue = DecodeQueue(asyncio.get_running_loop(), pool, workers=workers)
        assert await queue.submit(int, "7") == 7


async def test_a_job_resolves_the_future_it_is_given_and_skips_one_already_done() -> None:
    loop = asyncio.get_running_loop()
    ran: list[int] = []

    def job(i: int) -> int:
        ran.append(i)
        if i == 2:
            raise ValueError("frame 2 is corrupt")
        return i * 10

    with ThreadPoolExecutor(1) as pool:
        queue = DecodeQueue(loop, pool, workers=1)
        mine: asyncio.Future[int] = loop.create_future()
        assert queue.submit(job, 1, into=mine) is mine
        assert await mine == 10
        failing: asyncio.Future[int] = loop.create_future()
        queue.submit(job, 2, into=failing)
        with pytest.raises(ValueError, match="frame 2"):
            await failing
        # A read that failed before its decode ran (its frame's error set its future).
        failed: asyncio.Future[int] = loop.create_future()
        failed.set_exception(LookupError("frame fetch failed"))
        queue.submit(job, 3, into=failed)
        assert await queue.submit(job, 4) == 40
    assert ran == [1, 2, 4]
    with pytest.raises(LookupError):
        failed.result()


async def test_batches_finished_while_the_loop_is_busy_share_one_wake_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    wakes: list[object] = []
    original = loop.call_soon_threadsafe

    def counting(callback: object, *args: object, **kwargs: object) -> asyncio.Handle:
        wakes.append(callback)
        return original(callback, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "call_soon_threadsafe", counting)
    with ThreadPoolExecutor(2) as pool:
        queue = DecodeQueue(loop, pool, workers=2)
        # Two drainers, each handing back its own batch, 30 ms apart.
        futures = [queue.submit(time.sleep, 0.01), queue.submit(time.sleep, 0.04)]
        time.sleep(0.2)  # noqa: ASYNC251 - the loop is kept busy on purpose: both batches arrive before it looks
        assert len(wakes) == 1
        await asyncio.wait_for(asyncio.gather(*futures), 5)

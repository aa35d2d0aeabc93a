"""FrameService on a scripted source: per-instance request limit, held frames, closing."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

import dicomslide
from dicomslide import frames as frames_module, runtime
from dicomslide.errors import DicomWebError, ProtocolError, SourceError, TransportError
from dicomslide.frames import FrameCache, FrameService, InstanceRef
from dicomslide.sources.protocol import EncodedFrame
from dicomslide.synthetic import write_slide
from tests.support.slides import slide_spec

SYNTAX = "1.2.840.10008.1.2.1"
A = InstanceRef("1.2", "1.2.3", "1.2.3.4")
B = InstanceRef("1.2", "1.2.3", "1.2.3.5")


class GatedSource:
    """Answers frame calls only when its gate opens; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.gate = asyncio.Event()
        self.running: dict[str, int] = {}
        self.most_running: dict[str, int] = {}

    async def iter_frames(
        self, study: str, series: str, sop: str, numbers: Sequence[int]
    ) -> AsyncIterator[tuple[int, EncodedFrame]]:
        self.calls.append((sop, list(numbers)))
        self.running[sop] = self.running.get(sop, 0) + 1
        self.most_running[sop] = max(self.most_running.get(sop, 0), self.running[sop])
        try:
            await self.gate.wait()
            for n in numbers:
                yield n, EncodedFrame(f"{sop}:{n}".encode(), SYNTAX)
        finally:
            self.running[sop] -= 1


async def _ticks(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_held_frames_leave_together_and_instances_do_not_wait_for_each_other() -> None:
    source = GatedSource()
    service = FrameService(source, FrameCache(1 << 20))  # type: ignore[arg-type]
    first = service.request(A, [1, 2])
    await _ticks()
    later = [service.request(A, [n]) for n in (3, 4, 5)]  # held behind the running call
    await _ticks()
    other = service.request(B, [1])  # another instance is not held
    await _ticks()
    assert source.calls == [(A.sop_instance_uid, [1, 2]), (B.sop_instance_uid, [1])]
    source.gate.set()
    frames = await asyncio.gather(*first, *[f for futs in later for f in futs], *other)
    assert [f.data for f in frames] == [
        b"1.2.3.4:1",
        b"1.2.3.4:2",
        b"1.2.3.4:3",
        b"1.2.3.4:4",
        b"1.2.3.4:5",
        b"1.2.3.5:1",
    ]
    assert source.calls[2:] == [(A.sop_instance_uid, [3, 4, 5])]
    assert source.most_running[A.sop_instance_uid] == 1  # A's two calls never overlapped
    assert service.stats.requests == 3


async def test_closing_fails_running_and_held_frames_and_sends_nothing_more() -> None:
    source = GatedSource()
    service = FrameService(source, FrameCache(1 << 20))  # type: ignore[arg-type]
    running = service.request(A, [1])
    await _ticks()
    held = service.request(A, [2])
    await _ticks()
    await service.aclose()
    await _ticks()
    for fut in (*running, *held):
        assert fut.done()
        with pytest.raises(SourceError):
            fut.result()
    assert source.calls == [(A.sop_instance_uid, [1])]


def test_request_limit_is_validated() -> None:
    async def make() -> None:
        FrameService(GatedSource(), FrameCache(1), max_requests_per_instance=0)  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="max_requests_per_instance"):
        asyncio.run(make())


async def test_dropped_clients_free_their_caches(tmp_path: Path) -> None:
    # The runtime keeps caches and services per source in WeakKeyDictionaries; a service or
    # adapter that referenced its source strongly kept every client and its (up to 512 MiB)
    # cache alive for the life of the process.
    write_slide(tmp_path / "slide", slide_spec((300, 400), 64, 1))
    client = dicomslide.DICOMfileClient(tmp_path / "slide", index_dir=tmp_path / "index")
    (slide,) = await dicomslide.find_slides(client)
    await slide.get_image_region((0, 0), 0, (128, 128))
    source = runtime.as_source(client)
    refs = [
        weakref.ref(client),
        weakref.ref(source.runtime.frame_cache),
        weakref.ref(runtime.frame_service(source)),
        weakref.ref(source.runtime.decoded_cache),
    ]
    await client.aclose()
    del client, slide, source
    await _ticks()  # let finished decode / read futures drop their references
    gc.collect()  # a leak through the runtime's dictionaries would survive this
    assert [r() for r in refs] == [None] * len(refs)


async def test_a_second_event_loop_gets_its_own_service(tmp_path: Path) -> None:
    # One service per loop: reading from another loop (a blocking twin's private loop, a
    # thread running asyncio.run) must not replace this loop's service, whose coalescing and
    # read-ahead state would be lost.
    write_slide(tmp_path / "slide", slide_spec((300, 400), 64, 1))
    client = dicomslide.DICOMfileClient(tmp_path / "slide", index_dir=tmp_path / "index")
    (slide,) = await dicomslide.find_slides(client)
    here = runtime.frame_service(client)

    async def read_elsewhere() -> object:
        await slide.get_image_region((0, 0), 0, (64, 64))
        return runtime.frame_service(client)

    there = await asyncio.to_thread(asyncio.run, read_elsewhere())
    assert there is not here
    assert runtime.frame_service(client) is here
    # Both loops share the client's caches: what was read over there is not fetched again.
    assert slide.cache_stats.frames_fetched == 1
    await slide.get_image_region((0, 0), 0, (64, 64))
    assert slide.cache_stats.frames_fetched == 1
    assert here.cache is there.cache is client.runtime.frame_cache  # type: ignore[attr-defined]
    # The other loop is closed now: the next new loop's service replaces its service, so
    # short-lived loops (asyncio.run per call) do not pile up.
    third = await asyncio.to_thread(asyncio.run, read_elsewhere())
    assert set(client.runtime._services.values()) == {here, third}
    await client.aclose()


def test_cache_budgets_come_from_the_constructor(tmp_path: Path) -> None:
    client = dicomslide.DICOMfileClient(tmp_path, cache_max_bytes=12345, decoded_cache_max_bytes=0)
    assert dicomslide.get_cache_stats(client).max_bytes == 12345
    assert client.runtime.decoded_cache.max_bytes == 0
    web = dicomslide.DICOMwebClient(
        "http://127.0.0.1:9/dicom-web", cache_max_bytes=777, readahead=3, coalesce_window=0.5
    )
    assert dicomslide.get_cache_stats(web).max_bytes == 777
    assert web.runtime.service_options.readahead == 3
    assert web.runtime.service_options.coalesce_window == 0.5


def test_dropped_foreign_clients_free_their_adapters() -> None:
    from dicomweb_client import DICOMwebClient as ForeignWebClient

    foreign = ForeignWebClient("http://dicomweb.invalid/dicom-web")
    adapter = runtime.as_source(foreign)
    assert runtime.as_source(foreign) is adapter
    refs = [weakref.ref(foreign), weakref.ref(adapter), weakref.ref(adapter.runtime.frame_cache)]
    del foreign, adapter
    gc.collect()  # the client and its adapter reference each other
    assert [r() for r in refs] == [None] * len(refs)


# --- read-ahead -------------------------------------------------------------------------------

SEQ = InstanceRef("1.2", "1.2.3", "1.2.3.9", number_of_frames=100, max_frame_bytes=100)
# Too long to be read ahead whole (READAHEAD_WHOLE_WINDOWS) with the bounds these tests use.
LONG = InstanceRef("1.2", "1.2.3", "1.2.3.7", number_of_frames=1000)


class FailingSource(GatedSource):
    """Fails every call that includes a frame in `bad`, after the gate opens."""

    def __init__(self, bad: set[int], error: Exception | None = None) -> None:
        super().__init__()
        self.bad = bad
        self.error = error or ProtocolError("A part of the multipart answer is malformed.")

    async def iter_frames(
        self, study: str, series: str, sop: str, numbers: Sequence[int]
    ) -> AsyncIterator[tuple[int, EncodedFrame]]:
        if self.bad & set(numbers):
            self.calls.append((sop, list(numbers)))
            await self.gate.wait()
            raise self.error
        async for item in super().iter_frames(study, series, sop, numbers):
            yield item


def _ask(
    service: FrameService, numbers: list[int], instance: InstanceRef = SEQ
) -> list[asyncio.Future[EncodedFrame]]:
    """One read per frame, all in the same event-loop tick (as many tile readers)."""
    return [fut for n in numbers for fut in service.request(instance, [n])]


async def _scan(
    service: FrameService,
    source: GatedSource,
    tasks: int,
    total: int,
    instance: InstanceRef = SEQ,
) -> None:
    """One frame per call, `tasks` readers taking frames in order: a tile scan."""
    source.gate.set()
    numbers = iter(range(1, total + 1))

    async def reader() -> None:
        for n in numbers:
            (fut,) = service.request(instance, [n])
            frame = await fut
            assert frame.data == f"{instance.sop_instance_uid}:{n}".encode()

    await asyncio.gather(*(reader() for _ in range(tasks)))


async def test_a_sequential_scan_is_read_ahead_in_whole_windows() -> None:
    source = GatedSource()
    service = FrameService(source, FrameCache(1 << 20), readahead=40)  # type: ignore[arg-type]
    await _scan(service, source, tasks=16, total=100)
    sent = [numbers for _, numbers in source.calls]
    # 16 asked for and, in the same request, a first window of twice the run (a viewport's
    # row is a short run too); then the whole 40-frame bound at once (issue 14: windows that
    # kept doubling cost a 16-thread scan more requests) and with it the rest of the
    # instance, 12 frames, less than half a bound (a request of their own would cost a
    # parse of the instance on the server); never beyond frame 100, every frame once.
    assert sent[0] == list(range(1, 49))
    assert sent[1] == list(range(49, 101))
    assert len(sent) == 2
    stats = service.stats
    assert stats.frames_fetched == 100
    assert stats.readahead == 84
    # Only the first tick's frames were fetched because somebody asked; the rest were read
    # ahead and then joined in flight or found in the cache.
    assert stats.misses - stats.joined == 16
    assert stats.frames_fetched == stats.misses - stats.joined + stats.readahead


@pytest.mark.parametrize(("left", "whole"), [(80, True), (81, False)])
async def test_a_scan_of_a_small_instance_asks_for_all_of_it_at_once(
    left: int, whole: bool
) -> None:
    # 16 readers show the run; an instance with at most two bounds (2 x 40) of frames left
    # after it is read to its end in the readers' request (the gather's one request,
    # issue 14); one frame more and the first window is twice the run, as for a viewport.
    total = 16 + left
    level = InstanceRef("1.2", "1.2.3", "1.2.3.8", number_of_frames=total, max_frame_bytes=100)
    source = GatedSource()
    service = FrameService(source, FrameCache(1 << 20), readahead=40)  # type: ignore[arg-type]
    await _scan(service, source, tasks=16, total=total, instance=level)
    sent = [numbers for _, numbers in source.calls]
    if whole:
        assert sent == [list(range(1, total + 1))]
    else:
        assert sent[0] == list(range(1, 49))
        assert len(sent) == 2  # then a bound, and the tail of 9 frames with it
    assert service.stats.readahead == total - 16
    assert service.stats.frames_fetched == total


@pytest.mark.parametrize(
    ("total", "frame_bytes", "whole"),
    [
        (340, 196_608, True),  # Orthanc level 2: 324 x 192 KiB = 63.7 MB <= 512 MB / 4
        (512, 1 << 20, False),  # 496 MB for 16 one-frame reads: the first window instead
        (340, 1_660_000, False),  # 324 x 1.66 MB = 538 MB > 128 MB
        (517, 1_000, False),  # 501 frames left: a request of 500 and one of 1
        (340, None, False),  # no bound on the bytes: never whole
    ],
)
async def test_the_rest_is_read_whole_only_if_it_fits_one_request_and_a_quarter_of_the_cache(
    total: int, frame_bytes: int | None, whole: bool
) -> None:
    # Default budgets of a DICOMweb client: 512 MB of cache, 256-frame bound, 500 a request.
    level = InstanceRef(
        "1.2", "1.2.3", "1.2.3.8", number_of_frames=total, max_frame_bytes=frame_bytes
    )
    source = GatedSource()
    service = FrameService(
        source,  # type: ignore[arg-type]
        FrameCache(512 << 20),
        readahead=256,
        max_frames_per_request=500,
    )
    futures = _ask(service, list(range(1, 17)), level)
    await _ticks()
    source.gate.set()
    await asyncio.wait_for(asyncio.gather(*futures), 5)
    sent = [numbers for _, numbers in source.calls]
    assert sent[0] == list(range(1, total + 1) if whole else range(1, 49))
    assert service.stats.readahead == (total - 16 if whole else 32)


@pytest.mark.parametrize(("tail", "merged"), [(19, True), (20, False)])
async def test_a_tail_shorter_than_half_a_bound_joins_the_last_window(
    tail: int, merged: bool
) -> None:
    total = 88 + tail  # 16 asked, windows 17..48 and 49..88, then the tail
    level = InstanceRef("1.2", "1.2.3", "1.2.3.8", number_of_frames=total)
    source = GatedSource()
    service = FrameService(source, FrameCache(1 << 20), readahead=40)  # type: ignore[arg-type]
    await _scan(service, source, tasks=16, total=total, instance=level)
    sent = [numbers for _, numbers in source.calls]
    assert sent[0] == list(range(1, 49))
    if merged:
        assert sent[1:] == [list(range(49, total + 1))]
    else:
        assert sent[1:] == [list(range(49, 89)), list(range(89, total + 1))]


@pytest.mark.parametrize(("per_request", "joined"), [(500, True), (256, False)])
async def test_a_tail_joins_the_last_window_only_if_that_fits_one_request(
    per_request: int, joined: bool
) -> None:
    # 687 frames: 16 asked and 17..48, then 49..304 and 305..560, and a tail of 127 frames
    # (less than half of 256). Joined to 305..560 it is one request of 383 frames; with 256
    # a request it would be split off again, so it waits for readers to reach 305..560.
    total = 687
    level = InstanceRef("1.2", "1.2.3", "1.2.3.8", number_of_frames=total)
    source = GatedSource()
    service = FrameService(
        source,  # type: ignore[arg-type]
        FrameCache(512 << 20),
        readahead=256,
        max_frames_per_request=per_request,
    )
    futures = _ask(service, list(range(1, 17)), level)
    await _ticks()
    for reached in (17, 49):  # each reaches the latest window: the next one leaves
        futures += service.request(level, [reached])
        await _ticks()
    sent = [numbers for _, numbers in source.calls]
    assert sent[:2] == [list(range(1, 49)), list(range(49, 305))]
    if joined:
        assert sent[2:] == [list(range(305, total + 1))]
    else:
        assert sent[2:] == [list(range(305, 561))]
        futures += service.request(level, [305])
        await _ticks()
        assert [n for _, n in source.calls][3:] == [list(range(561, total + 1))]
    source.gate.set()
    await asyncio.wait_for(asyncio.gather(*futures), 5)
    assert service.stats.frames_fetched == total


class DroppingSource(GatedSource):
    """Fails every call with a dropped connection after the gate opens."""

    async def iter_frames(
        self, study: str, series: str, sop: str, numbers: Sequence[int]
    ) -> AsyncIterator[tuple[int, EncodedFrame]]:
        self.calls.append((sop, list(numbers)))
        await self.gate.wait()
        raise TransportError(f"Connection to the server dropped while reading {sop}.")
        yield  # an async generator, like a real source


async def test_a_failed_transport_is_not_waited_for_twice_by_readers() -> None:
    # The readers' frames went out with the first window; a dropped connection fails them
    # at once (the transport's own retries are over), it does not ask for them again.
    source = DroppingSource()
    service = FrameService(source, FrameCache(1 << 20), readahead=40)  # type: ignore[arg-type]
    futures = _ask(service, list(range(1, 17)), LONG)
    await _ticks()
    source.gate.set()
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, TransportError) for r in results)
    assert [n for _, n in source.calls] == [list(range(1, 49))]


async def test_without_read_ahead_the_same_scan_costs_one_request_per_batch() -> None:
    source = GatedSource()
    service = FrameService(source, FrameCache(1 << 20))  # type: ignore[arg-type]
    await _scan(service, source, tasks=16, total=100)
    assert len(source.calls) >= 100 // 16
    assert service.stats.readahead == 0


@pytest.mark.parametrize(
    "numbers",
    [
        list(range(1, 16)),  # a run shorter than READAHEAD_MIN_RUN
        [n for r in range(4) for n in range(r * 20 + 1, r * 20 + 6)],  # rows of a region
        list(range(85, 101)),  # a run that ends at the last frame
        None,  # a run of 40 frames asked for by one read (one region, however wide)
        [3, 17, 42, 5, 88, 61, 29, 70, 11, 54, 97, 36, 23, 64, 8, 77, 45],  # random tiles
    ],
)
async def test_region_random_and_short_reads_are_not_read_ahead(
    numbers: list[int] | None,
) -> None:
    source = GatedSource()
    service = FrameService(source, FrameCache(1 << 20), readahead=64)  # type: ignore[arg-type]
    if numbers is None:
        numbers = list(range(1, 41))
        futures = service.request(SEQ, numbers)
    else:
        futures = _ask(service, numbers)
    source.gate.set()
    await asyncio.gather(*futures)
    assert [sorted(n) for _, n in source.calls] == [sorted(numbers)]
    assert service.stats.readahead == 0


async def test_unknown_frame_count_turns_read_ahead_off() -> None:
    source = GatedSource()
    service = FrameService(source, FrameCache(1 << 20), readahead=64)  # type: ignore[arg-type]
    source.gate.set()
    await asyncio.gather(*[f for n in range(1, 33) for f in service.request(A, [n])])
    assert len(source.calls) == 1
    assert service.stats.readahead == 0


async def test_read_ahead_is_not_held_by_the_per_instance_limit_and_joins_readers() -> None:
    source = GatedSource()
    service = FrameService(source, FrameCache(1 << 20), readahead=64)  # type: ignore[arg-type]
    first = _ask(service, list(range(1, 21)), LONG)
    await _ticks()
    # The run and its first read-ahead window (twice the run) leave in one request.
    assert [n for _, n in source.calls] == [list(range(1, 61))]
    joined = service.request(LONG, [30, 84])
    assert service.stats.joined == 2
    await _ticks()
    # Joined, not fetched again; reaching the window sent the next one (the whole bound)
    # although the limit is 1 and the readers' request is running.
    assert [n for _, n in source.calls][1:] == [list(range(61, 125))]
    source.gate.set()
    await asyncio.gather(*first, *joined)
    assert service.stats.frames_fetched == 124


async def test_a_failed_read_ahead_is_not_cached_and_readers_fetch_again() -> None:
    source = FailingSource(bad={25})
    service = FrameService(source, FrameCache(1 << 20), readahead=64)  # type: ignore[arg-type]
    first = _ask(service, list(range(1, 21)))
    await _ticks()
    source.gate.set()
    await asyncio.gather(*first)
    await _ticks()  # the window 21..60 failed with nobody waiting: no warning, nothing kept
    assert (SEQ.sop_instance_uid, 30) not in service.cache
    source.bad = set()
    (fut,) = service.request(SEQ, [30])
    assert (await fut).data == f"{SEQ.sop_instance_uid}:30".encode()


async def _held_behind_a_scan(
    source: GatedSource, readahead: int
) -> tuple[FrameService, list[asyncio.Future[EncodedFrame]], list[asyncio.Future[EncodedFrame]]]:
    """Frames 1-4 in a running request, then 5-20 held back by the limit: a scan starts."""
    service = FrameService(source, FrameCache(1 << 20), readahead=readahead)  # type: ignore[arg-type]
    first = _ask(service, [1, 2, 3, 4], LONG)
    await _ticks()
    held = _ask(service, list(range(5, 21)), LONG)
    await _ticks()
    window = list(range(21, 21 + min(40, readahead)))  # twice the 20-frame run at most
    assert [n for _, n in source.calls] == [[1, 2, 3, 4], [*range(5, 21), *window]]
    return service, first, held


async def test_frames_held_by_the_limit_leave_with_the_read_ahead_window() -> None:
    # Threads of a tile scan start a few at a time: the first reads' request is running
    # when the rest arrive, and the limit holds those back. The flush that shows the scan
    # sends them at once, in the window's request, not after the running request ends.
    source = GatedSource()
    service, first, held = await _held_behind_a_scan(source, readahead=40)
    assert service.stats.readahead == 40  # the held frames were asked for, not read ahead
    # A call reaching the window (30) sends the next one, which 70 then joins; the frame
    # it asked for before (65) was never held back: it waits for the running request like
    # any other, and every request asks for its frames in ascending order.
    call = service.request(LONG, [65, 30, 70])
    await _ticks()
    assert [n for _, n in source.calls][2:] == [[*range(61, 65), *range(66, 101)]]
    source.gate.set()
    frames = await asyncio.wait_for(asyncio.gather(*first, *held, *call), 5)
    assert [f.data for f in frames] == [
        f"{LONG.sop_instance_uid}:{n}".encode() for n in [*range(1, 21), 65, 30, 70]
    ]
    assert [n for _, n in source.calls][3:] == [[65]]
    assert all(numbers == sorted(numbers) for _, numbers in source.calls)


def _refused(status: int) -> DicomWebError:
    return DicomWebError(f"The server answered {status}.", status, "http://127.0.0.1/frames")


@pytest.mark.parametrize(
    ("error", "again"),
    [
        (ProtocolError("A part of the multipart answer is malformed."), True),
        (_refused(404), True),
        (_refused(400), True),
        (_refused(503), False),
        (_refused(429), False),
        (_refused(408), False),
        (OSError("The source failed."), False),
    ],
)
async def test_a_rejected_read_ahead_frame_does_not_fail_frames_readers_asked_for(
    error: Exception, again: bool
) -> None:
    # The server rejects frame 35, which nobody asked for, and with it the request that
    # carried the held frames (5..20) and the window: those readers wait for are asked for
    # once more on their own and arrive; only the window's frames fail. Only for errors a
    # frame may cause: 5xx, 408 and 429 the transport has retried already (a second cycle
    # doubles the wait), so the readers' frames fail with them.
    source = FailingSource(bad={35}, error=error)
    service, first, held = await _held_behind_a_scan(source, readahead=20)
    source.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*first, *held, return_exceptions=True), 5)
    arrived = [r.data for r in results if isinstance(r, EncodedFrame)]
    expected = range(1, 21) if again else range(1, 5)
    assert arrived == [f"{LONG.sop_instance_uid}:{n}".encode() for n in expected]
    assert [n for _, n in source.calls][2:] == ([list(range(5, 21))] if again else [])
    if not again:
        failed = results[4:]
        assert all(isinstance(r, SourceError) for r in failed)
        assert all(r is error or r.__cause__ is error for r in failed)
    assert all((LONG.sop_instance_uid, n) not in service.cache for n in range(21, 41))


class CancelledIntoErrorSource(GatedSource):
    """Turns the cancellation of a call into an error of its own (as some sources do)."""

    async def iter_frames(
        self, study: str, series: str, sop: str, numbers: Sequence[int]
    ) -> AsyncIterator[tuple[int, EncodedFrame]]:
        self.calls.append((sop, list(numbers)))
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            raise ProtocolError(f"The answer for {sop} was cut short.") from None
        for n in numbers:
            yield n, EncodedFrame(f"{sop}:{n}".encode(), SYNTAX)


async def test_closing_fails_readers_frames_a_failed_read_ahead_would_ask_for_again() -> None:
    # Closing cancels the request of the readers' frames and a window; the source answers
    # with an error a window frame could cause, so the readers' frames would be asked for
    # again: the service is closed, so they fail instead of waiting forever.
    source = CancelledIntoErrorSource()
    service, first, held = await _held_behind_a_scan(source, readahead=20)
    await asyncio.wait_for(service.aclose(), 5)
    results = await asyncio.wait_for(asyncio.gather(*held, return_exceptions=True), 5)
    assert all(isinstance(r, SourceError) for r in results)
    assert {str(r) for r in results} == {"The frame service is closed."}
    # The readers' own request (1..4) fails with the source's error, as any request does.
    results = await asyncio.wait_for(asyncio.gather(*first, return_exceptions=True), 5)
    assert all(isinstance(r, ProtocolError) for r in results)
    assert len(source.calls) == 2
    assert not any(key[0] == LONG.sop_instance_uid for key in service._inflight)


async def test_a_viewport_read_row_by_row_is_not_read_ahead_a_whole_window_per_row() -> None:
    # A viewer reading 8 rows of a 16-tile-wide viewport of a 100-column level, one tile
    # per call: every row looks like a short run. A whole 256-frame window per row fetched
    # 1,040 frames for 128 tiles; a first window of twice the run stays within 3x.
    level = InstanceRef("1.2", "1.2.3", "1.2.3.7", number_of_frames=5000)
    source = GatedSource()
    source.gate.set()
    service = FrameService(source, FrameCache(1 << 30), readahead=256)  # type: ignore[arg-type]
    asked = 0
    for row in range(8):
        start = 1 + (20 + row) * 100 + 10
        futures = [f for n in range(start, start + 16) for f in service.request(level, [n])]
        asked += len(futures)
        await asyncio.gather(*futures)
    await _ticks()
    assert asked == 128
    assert service.stats.frames_fetched <= 3 * asked


async def test_the_next_window_goes_only_while_the_run_goes_on() -> None:
    source = GatedSource()
    source.gate.set()
    service = FrameService(source, FrameCache(1 << 20), readahead=40)  # type: ignore[arg-type]
    await asyncio.gather(*_ask(service, list(range(1, 17))))
    await _ticks()
    assert [n for _, n in source.calls] == [list(range(1, 49))]
    # Random reads end the run; a reader then reaching the window (17..48) gets its frame
    # from the cache, and no further window is sent.
    await asyncio.gather(*_ask(service, [90, 60, 75]))
    await _ticks()
    await asyncio.gather(*service.request(SEQ, [20]))
    await _ticks()
    assert [n for _, n in source.calls][1:] == [[60, 75, 90]]
    assert service.stats.readahead == 32


async def test_one_read_per_tick_is_a_stream_too() -> None:
    # Blocking callers on many threads, or one task reading tile after tile: every flush
    # carries one or a few frames; together they are one sequential run.
    source = GatedSource()
    service = FrameService(source, FrameCache(1 << 20), readahead=64)  # type: ignore[arg-type]
    source.gate.set()
    for n in range(1, 101):
        (fut,) = service.request(LONG, [n])
        assert (await fut).data == f"{LONG.sop_instance_uid}:{n}".encode()
    sent = [numbers for _, numbers in source.calls]
    # The 16th read shows the run: its frame and the first window leave together.
    assert sent[:15] == [[n] for n in range(1, 16)]
    assert sent[15:] == [list(range(16, 49)), list(range(49, 113)), list(range(113, 177))]
    assert service.stats.readahead == 32 + 64 + 64


async def test_a_stream_with_small_gaps_is_followed() -> None:
    # Each tick: a block of 8 frames but one, plus the one the previous tick left out.
    source = GatedSource()
    service = FrameService(source, FrameCache(1 << 20), readahead=64)  # type: ignore[arg-type]
    source.gate.set()
    left_out: list[int] = []
    for block in range(4):
        numbers = [block * 8 + i for i in range(1, 9) if i != 4]
        futures = _ask(service, numbers + left_out)
        left_out = [block * 8 + 4]
        await asyncio.gather(*futures)
    assert service.stats.readahead > 0
    await asyncio.gather(*_ask(service, list(range(1, 101))))
    asked = sorted(n for _, numbers in source.calls for n in numbers)
    assert asked == list(range(1, 101))  # every frame once


async def test_consecutive_region_reads_are_not_a_stream_of_readers() -> None:
    # Two wide regions, one after the other: each gets exactly the frames it covers.
    source = GatedSource()
    service = FrameService(source, FrameCache(1 << 20), readahead=64)  # type: ignore[arg-type]
    source.gate.set()
    await asyncio.gather(*service.request(SEQ, list(range(1, 41))))
    await asyncio.gather(*service.request(SEQ, list(range(41, 81))))
    assert [numbers for _, numbers in source.calls] == [
        list(range(1, 41)),
        list(range(41, 81)),
    ]
    assert service.stats.readahead == 0


def test_read_ahead_bound_is_validated() -> None:
    async def make() -> None:
        FrameService(GatedSource(), FrameCache(1), readahead=-1)  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="readahead must be >= 0"):
        asyncio.run(make())


class RejectingSource:
    """Yields frames 1 and 2, then fails as a multipart source does when the delimiter after
    frame 2 does not come; between frames it waits for its step event."""

    def __init__(self) -> None:
        self.step = asyncio.Event()

    async def iter_frames(
        self, study: str, series: str, sop: str, numbers: Sequence[int]
    ) -> AsyncIterator[tuple[int, EncodedFrame]]:
        for n in (1, 2):
            yield n, EncodedFrame(f"{sop}:{n}".encode(), SYNTAX)
            await self.step.wait()
            self.step.clear()
        raise ProtocolError("part 2 declares Content-Length 9 but the boundary does not follow")


async def test_frames_are_cached_only_once_the_source_moves_past_them() -> None:
    source = RejectingSource()
    service = FrameService(source, FrameCache(1 << 20))  # type: ignore[arg-type]
    futures = service.request(A, [1, 2, 3])
    await asyncio.wait([futures[0]])
    uid = A.sop_instance_uid
    # Frame 1 is handed out but not confirmed: not cached, and a reader can wait for it.
    assert futures[0].result().data == f"{uid}:1".encode()
    assert (uid, 1) not in service.cache
    (first,) = service.settled([(uid, 1)])
    source.step.set()
    await asyncio.wait([futures[1]])
    assert first.done()
    assert first.exception() is None
    assert (uid, 1) in service.cache
    assert service.settled([(uid, 1)]) == []
    (second,) = service.settled([(uid, 2)])
    source.step.set()
    await asyncio.wait([second, futures[2]])
    # The source failed while frame 2 was unconfirmed: frame 2 fails its readers and is
    # not cached, even for a reader that asks only now; frame 3 fails as usual.
    assert isinstance(second.exception(), ProtocolError)
    assert isinstance(futures[2].exception(), ProtocolError)
    assert (uid, 2) not in service.cache
    (late,) = service.settled([(uid, 2)])
    assert late.exception() is second.exception()


class CallGatedSource(GatedSource):
    """Like GatedSource, but each call waits for the gate of its own first frame number."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: dict[int, asyncio.Event] = {}

    async def iter_frames(
        self, study: str, series: str, sop: str, numbers: Sequence[int]
    ) -> AsyncIterator[tuple[int, EncodedFrame]]:
        self.calls.append((sop, list(numbers)))
        gate = self.gates.setdefault(numbers[0], asyncio.Event())
        self.running[sop] = self.running.get(sop, 0) + 1
        try:
            await gate.wait()
            for n in numbers:
                yield n, EncodedFrame(f"{sop}:{n}".encode(), SYNTAX)
        finally:
            self.running[sop] -= 1


async def test_frames_held_by_the_limit_do_not_wait_for_read_ahead_windows() -> None:
    # A reader's frames held behind the instance's running call go out when that call ends,
    # even while read-ahead windows (outside the limit) are still in flight; counted against
    # the limit, a chain of windows held them until the whole scan was read.
    source = CallGatedSource()
    service = FrameService(source, FrameCache(1 << 20), readahead=16)  # type: ignore[arg-type]
    first = _ask(service, list(range(1, 21)), LONG)
    await _ticks()
    # The readers' frames and the first window in one call; reaching it sends the next.
    assert [n for _, n in source.calls] == [list(range(1, 37))]
    reached = service.request(LONG, [21])
    await _ticks()
    assert [n for _, n in source.calls][1:] == [list(range(37, 53))]
    held = service.request(LONG, [500])
    await _ticks()
    assert len(source.calls) == 2  # held: the readers' call is still running
    source.gates[1].set()
    await asyncio.gather(*first, *reached)
    await _ticks()
    # Sent while the window (its gate still shut) is in flight: both calls are running.
    assert [n for _, n in source.calls][2:] == [[500]]
    assert source.running[LONG.sop_instance_uid] == 2
    source.gates[500].set()
    (frame,) = await asyncio.gather(*held)
    assert frame.data == b"1.2.3.7:500"
    source.gates[37].set()
    await _ticks()
    assert service.stats.frames_fetched == 53


async def _until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def test_the_first_flush_of_threads_starting_a_scan_waits_once_for_stragglers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Blocking callers on 16 threads: 12 calls arrive within the coalescing window, 4
    # threads come late (the GIL, the scheduler). The first flush waits once more (a long
    # wait here, so that the test does not race the clock), and the scan leaves as one
    # request: the readers' 16 frames and the rest of the small instance.
    monkeypatch.setattr(frames_module, "STRAGGLER_WAIT", 60.0)
    source = GatedSource()
    source.gate.set()
    service = FrameService(  # type: ignore[arg-type]
        source, FrameCache(1 << 20), readahead=64, coalesce_window=0.002
    )
    early = _ask(service, list(range(1, 13)))
    await _until(lambda: SEQ.sop_instance_uid in service._waited, "the first flush")
    assert source.calls == []
    late = _ask(service, list(range(13, 17)))
    # The four late reads make the run: the flush they schedule (a coalescing window on)
    # sends it, long before the wait would have ended.
    await asyncio.wait_for(asyncio.gather(*early, *late), 5)
    assert [n for _, n in source.calls] == [list(range(1, 101))]


@pytest.mark.parametrize(
    ("numbers", "window"),
    [
        ([1, 2, 3], 0.002),  # fewer reads than a run needs: one region, a few tiles
        (list(range(1, 13)), 0.0),  # tasks on the loop: they are all there in one tick
        ([1, 5, 9, 13, 17, 21, 25], 0.002),  # not dense: random tiles
    ],
)
async def test_other_first_flushes_do_not_wait(
    monkeypatch: pytest.MonkeyPatch, numbers: list[int], window: float
) -> None:
    monkeypatch.setattr(frames_module, "STRAGGLER_WAIT", 60.0)
    source = GatedSource()
    source.gate.set()
    service = FrameService(  # type: ignore[arg-type]
        source, FrameCache(1 << 20), readahead=64, coalesce_window=window
    )
    await asyncio.wait_for(asyncio.gather(*_ask(service, numbers)), 5)
    assert [n for _, n in source.calls] == [numbers]

"""FrameService on a scripted source: per-instance request limit, held frames, closing."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

import dicomslide
from dicomslide import runtime
from dicomslide.errors import SourceError
from dicomslide.frames import FrameCache, FrameService, InstanceRef
from dicomslide.sources.protocol import EncodedFrame
from dicomslide.synthetic import SlideSpec, write_slide

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
    write_slide(tmp_path / "slide", SlideSpec(size=(300, 400), tile_size=(64, 64), levels=1))
    client = dicomslide.DICOMfileClient(tmp_path / "slide", index_dir=tmp_path / "index")
    (slide,) = await dicomslide.find_slides(client)
    await slide.get_image_region((0, 0), 0, (128, 128))
    source = runtime.as_source(client)
    refs = [
        weakref.ref(client),
        weakref.ref(runtime._cache_for(source)),
        weakref.ref(runtime.frame_service(source)),
        weakref.ref(runtime.decoded_tile_cache(source)),
    ]
    await client.aclose()
    del client, slide, source
    await _ticks()  # let finished decode / read futures drop their references
    gc.collect()  # a leak through the runtime's dictionaries would survive this
    assert [r() for r in refs] == [None] * len(refs)


def test_dropped_foreign_clients_free_their_adapters() -> None:
    from dicomweb_client import DICOMwebClient as ForeignWebClient

    foreign = ForeignWebClient("http://dicomweb.invalid/dicom-web")
    adapter = runtime.as_source(foreign)
    assert runtime.as_source(foreign) is adapter
    refs = [weakref.ref(foreign), weakref.ref(adapter), weakref.ref(runtime._cache_for(adapter))]
    del foreign, adapter
    gc.collect()  # the client and its adapter reference each other
    assert [r() for r in refs] == [None] * len(refs)

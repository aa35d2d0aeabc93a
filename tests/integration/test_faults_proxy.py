"""The real DICOMweb client against a real Orthanc behind a fault-injecting proxy.

For every fault of :mod:`tests.support.fault_proxy`, transient (the first requests only) and
persistent (every frames request until cleared): each read either returns exactly the pixels
of a local read of the same files, or raises a typed :class:`~dicomslide.errors.DicomSlideError`
well within a bound derived from the client's timeouts and retry policy (the bound is a hang
guard, not a performance assertion). After the fault is cleared the same client reads both
levels again and gets exactly the right pixels (nothing wrong was cached). Every scenario runs
in its own event loop; afterwards no task is left on the loop, and the process has no more file
descriptors and threads than before (see :func:`_settled` for the tolerance).

The in-process MockTransport tests of the same code paths are in ``tests/aio/test_web_faults.py``;
these use real sockets, real HTTP framing and Orthanc's real multipart bodies.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest

import dicomslide
from dicomslide.errors import (
    DicomSlideError,
    DicomWebError,
    ProtocolError,
    RequestTimeoutError,
    TransportError,
)
from dicomslide.synthetic import write_slide
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.orthanc import OrthancServer
from tests.support.slides import slide_spec

pytestmark = pytest.mark.integration

SPEC = slide_spec((400, 700), 128, 2, seed=91)
READ_TIMEOUT = 1.0
ATTEMPTS = 3
MAX_BACKOFF = 0.2
# Worst case: ATTEMPTS retries of missing frames, each with ATTEMPTS sends that may each wait
# for the read timeout and a backoff; plus a few seconds for decoding on a loaded machine.
HANG_GUARD = ATTEMPTS * ATTEMPTS * (READ_TIMEOUT + MAX_BACKOFF) + 10.0
# Threads that are pools bounded for the whole process, or short-lived by design.
_POOL_PREFIXES = ("dicomslide-decode", "dicomslide-icc-check", "asyncio_", "ThreadPoolExecutor")


@dataclass
class Env:
    orthanc: OrthancServer
    proxy: FaultProxy
    study: str
    reference: list[np.ndarray]
    sizes: list[tuple[int, int]]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}/dicom-web"


async def _read_all(slide: dicomslide.Slide, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    return [await slide.get_image_region((0, 0), level, size) for level, size in enumerate(sizes)]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, shared_orthanc: OrthancServer) -> Iterator[Env]:
    folder = tmp_path_factory.mktemp("fault-slide")
    write_slide(folder, SPEC)

    async def reference() -> tuple[str, list[np.ndarray], list[tuple[int, int]]]:
        async with dicomslide.DICOMfileClient(
            folder, index_dir=tmp_path_factory.mktemp("fault-index")
        ) as local:
            slide = (await dicomslide.find_slides(local))[0]
            sizes = [(int(r), int(c)) for r, c in slide.total_pixel_matrix_dimensions]
            study = str(slide.image_metadata[0].StudyInstanceUID)
            return study, await _read_all(slide, sizes), sizes

    study, pixels, sizes = asyncio.run(reference())
    orthanc = shared_orthanc
    with FaultProxy(("127.0.0.1", orthanc.port), max_lifetime=600) as proxy:
        orthanc.upload([folder])
        yield Env(orthanc, proxy, study, pixels, sizes)


@dataclass(frozen=True)
class Case:
    fault: Fault
    # None: every read must succeed; else reads may fail, but only with these errors.
    errors: tuple[type[DicomSlideError], ...] | None


def _case(
    kind: str, count: int | None, errors: tuple[type[DicomSlideError], ...] | None, **kw: object
) -> Case:
    return Case(Fault(kind, count=count, **kw), errors)  # type: ignore[arg-type]


CASES = {
    # transient: survived by retries
    "reset_before_response-once": _case("reset_before_response", 1, None),
    "reset_mid_body-once": _case("reset_mid_body", 1, None),
    "stall-once": _case("stall", 1, None, stall_seconds=READ_TIMEOUT * 3),
    "503-burst": _case("status", 2, None, status=503),
    "429-burst-retry-after": _case("status", 2, None, status=429, retry_after="0.1"),
    "503-retry-after-date": _case(
        "status", 1, None, status=503, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"
    ),
    "truncate-once": _case("truncate", 1, None),
    "short-multipart-once": _case("short_multipart", 1, None),
    "duplicate-parts-once": _case("duplicate_parts", 1, None),
    # harmless even when persistent
    "reorder-parts": _case("reorder_parts", None, None),
    "drop-keepalive": _case("drop_keepalive", None, None),
    # persistent: a typed error within the bound, then recovery
    "reset_before_response-always": _case("reset_before_response", None, (TransportError,)),
    "reset_mid_body-always": _case("reset_mid_body", None, (TransportError,)),
    "stall-always": _case("stall", None, (RequestTimeoutError,), stall_seconds=READ_TIMEOUT * 3),
    "503-always": _case("status", None, (DicomWebError,), status=503),
    "429-always-retry-after": _case("status", None, (DicomWebError,), status=429, retry_after="1"),
    "truncate-always": _case("truncate", None, (TransportError, ProtocolError)),
    "short-multipart-always": _case("short_multipart", None, (ProtocolError,)),
    "duplicate-parts-always": _case("duplicate_parts", None, (ProtocolError,)),
}


def _threads() -> int:
    return sum(1 for t in threading.enumerate() if not t.name.startswith(_POOL_PREFIXES))


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _settled(proxy: FaultProxy, fds: int, threads: int) -> tuple[int, int]:
    """File descriptors and threads once the proxy has closed its side (waits at most 5 s).

    The proxy notices a closed client connection (and closes its upstream connection) only
    when it next reads from it, and a stalled connection ends after ``stall_seconds``; worker
    threads of a finished loop exit asynchronously. So the counts are polled, bounded, until
    they are back to the baseline; no tolerance is then needed for descriptors. Threads of
    the process-wide decode pool (bounded by the CPU count) and asyncio's default executor
    are excluded from the count.
    """
    deadline = time.monotonic() + 5.0
    while True:
        now_fds, now_threads = _fds(), _threads()
        done = now_fds <= fds and now_threads <= threads and proxy.open_connections == 0
        if done or time.monotonic() > deadline:
            return now_fds, now_threads
        time.sleep(0.05)


async def _scenario(env: Env, case: Case) -> dict[str, object]:
    client = dicomslide.DICOMwebClient(
        env.url,
        timeout=httpx.Timeout(READ_TIMEOUT, connect=READ_TIMEOUT),
        retry=dicomslide.RetryPolicy(attempts=ATTEMPTS, backoff=0.02, max_backoff=MAX_BACKOFF),
    )
    outcome: dict[str, object] = {"ok": 0, "errors": []}
    try:
        slide = (await dicomslide.find_slides(client, study_instance_uid=env.study))[0]
        env.proxy.set_fault(case.fault)
        try:
            for level, size in enumerate(env.sizes):
                error: DicomSlideError | None = None
                try:
                    pixels = await asyncio.wait_for(
                        slide.get_image_region((0, 0), level, size), HANG_GUARD
                    )
                except DicomSlideError as exc:
                    error = exc
                if error is None:
                    np.testing.assert_array_equal(pixels, env.reference[level])
                    outcome["ok"] += 1  # type: ignore[operator]
                    continue
                assert case.errors is not None, f"read failed under a transient fault: {error!r}"
                assert isinstance(error, case.errors), repr(error)
                outcome["errors"].append(type(error).__name__)  # type: ignore[attr-defined]
        finally:
            env.proxy.clear()
        # Nothing wrong was cached: the same client (and its frame cache) reads correctly now.
        for level, pixels in enumerate(await _read_all(slide, env.sizes)):
            np.testing.assert_array_equal(pixels, env.reference[level])
        outcome["requests"] = client.requests_sent
    finally:
        await client.aclose()
    # Fetch tasks of the frame service must all have ended.
    for _ in range(100):
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if not left:
            break
        await asyncio.sleep(0.01)
    assert not left, left
    return outcome


@pytest.mark.parametrize("name", sorted(CASES))
def test_fault_gives_right_pixels_or_typed_error_and_leaves_nothing(env: Env, name: str) -> None:
    case = CASES[name]
    # Warm the decode pool and asyncio's machinery once, so the baseline is steady.
    asyncio.run(_scenario(env, Case(Fault("drop_keepalive", count=0), None)))
    fds, threads = _settled(env.proxy, _fds(), _threads())
    faults_before = dict(env.proxy.counters.faults)

    outcome = asyncio.run(_scenario(env, case))

    applied = env.proxy.counters.faults.get(case.fault.kind, 0) - faults_before.get(
        case.fault.kind, 0
    )
    assert applied >= 1, "the fault was never injected"
    if case.errors is not None:
        # A persistent fault that spoils the frames must have made the reads fail.
        assert outcome["errors"], outcome
    now_fds, now_threads = _settled(env.proxy, fds, threads)
    assert now_fds <= fds, f"file descriptors leaked: {fds} -> {now_fds}"
    assert now_threads <= threads, f"threads leaked: {threads} -> {now_threads}"
    print(f"{name}: injected {applied}x, outcome {outcome}")

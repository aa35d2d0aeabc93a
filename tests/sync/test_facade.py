"""The blocking facade: signature parity, threads sharing one batcher, pickling, fork."""

from __future__ import annotations

import inspect
import multiprocessing
import os
import pickle
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from pydicom.uid import ExplicitVRLittleEndian

import dicomslide
import dicomslide_sync
from dicomslide.synthetic import expected_pixels, write_slide
from dicomslide_sync import _portal
from tests.support.slides import slide_spec

_R = TypeVar("_R")

SPEC = slide_spec((700, 900), 128, 2, transfer_syntax_uid=ExplicitVRLittleEndian)

# Every public class of dicomslide_sync that mirrors an async class of dicomslide.
TWINS = [
    "Slide",
    "TiledImage",
    "TotalPixelMatrix",
    "TotalPixelMatrixSampler",
    "DICOMwebClient",
    "DICOMfileClient",
    "OpenSlide",
]

# Async members a twin has under another name or, being the async seam itself, not at all.
NO_TWIN = {
    "__aiter__": "__iter__",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "aclose": "close",
    "iter_frames": None,  # the async Source seam that slides read frames through
    # The clients' caches and frame services, which work on the async side (the private loop):
    "runtime": None,
    "slide": "async_openslide",  # OpenSlide.slide is the async slide; the twin names it so
    # Seams between async modules (issue 15), not user API to mirror:
    "reader": None,  # TiledImage.reader, the image's frame reader
    "resolve": None,  # Slide.resolve, which image holds a level/channel/plane
    "get": None,  # TotalPixelMatrixSampler.get, the awaitable behind sampler[i]
    "load_profiles": None,  # OpenSlide.load_profiles, done by the blocking constructor
    "adopt_client": None,  # OpenSlide.adopt_client, used by open_slide
}

# Members whose twin says something else, because it returns something else.
OWN_DOCSTRING = {
    "__init__",  # documented by the class docstring
    "__getitem__",  # the async one returns an awaitable, the twin the array
    "client",  # Slide.client: the twin returns the client it was given (blocking)
    "matrix",  # TotalPixelMatrixSampler.matrix: the twin returns the blocking matrix
}

# The blocking OpenSlide also opens paths, as ``openslide.OpenSlide(filename)`` does, and takes
# open_slide's options for them; the async class only wraps slides.
EXTRA_SYNC_PARAMETERS = {("OpenSlide", "__init__"): {"kwargs"}}

DUNDERS = {"__init__", "__getitem__", "__len__", "__iter__", "__aiter__"}
DUNDERS |= {"__enter__", "__exit__", "__aenter__", "__aexit__"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("facade")
    write_slide(out, SPEC)
    return out


def _public(cls: type) -> list[str]:
    return [name for name in dir(cls) if not name.startswith("_") or name in DUNDERS]


def _parameters(fn: object) -> tuple[list[tuple[str, object, object]], dict[str, object]]:
    """Positional parameters in order, keyword-only ones by name (their order is no API)."""
    params = [p for p in inspect.signature(fn).parameters.values()]  # type: ignore[arg-type]
    positional = [
        (p.name, p.kind, p.default)
        for p in params
        if p.kind is not p.KEYWORD_ONLY and not p.name.startswith("_")
    ]
    keyword = {
        p.name: p.default
        for p in params
        if p.kind is p.KEYWORD_ONLY and not p.name.startswith("_")
    }
    return positional, keyword


@pytest.mark.parametrize("name", TWINS)
def test_every_public_member_has_a_twin_with_the_same_signature_and_docstring(
    name: str,
) -> None:
    async_cls = getattr(dicomslide, name)
    sync_cls = getattr(dicomslide_sync, name)
    checked = 0
    for member in _public(async_cls):
        if member in NO_TWIN:
            twin_name = NO_TWIN[member]
            if twin_name is not None:
                assert hasattr(sync_cls, twin_name), f"dicomslide_sync.{name}.{twin_name}"
            continue
        assert hasattr(sync_cls, member), f"dicomslide_sync.{name}.{member} is missing"
        a = inspect.getattr_static(async_cls, member)
        s = inspect.getattr_static(sync_cls, member)
        if member not in OWN_DOCSTRING:
            assert inspect.getdoc(getattr(async_cls, member)) == inspect.getdoc(
                getattr(sync_cls, member)
            ), f"{name}.{member}: the twin's docstring differs from the async one"
        if callable(getattr(async_cls, member)) and not isinstance(a, property):
            a_pos, a_kw = _parameters(getattr(async_cls, member))
            s_pos, s_kw = _parameters(getattr(sync_cls, member))
            extra = EXTRA_SYNC_PARAMETERS.get((name, member), set())
            s_pos = [p for p in s_pos if p[0] not in extra]
            if member != "__getitem__":
                assert a_pos == s_pos, f"{name}.{member}: {a_pos} != {s_pos}"
            assert a_kw == s_kw, f"{name}.{member}: {a_kw} != {s_kw}"
            # The twin blocks: it is never a coroutine or async generator function.
            assert not inspect.iscoroutinefunction(s), f"{name}.{member} is async"
            assert not inspect.isasyncgenfunction(s), f"{name}.{member} is async"
        checked += 1
    assert checked >= 7, f"{name}: only {checked} members compared"


def test_client_constructors_spell_out_every_option() -> None:
    for name in ("DICOMwebClient", "DICOMfileClient"):
        params = inspect.signature(getattr(dicomslide_sync, name).__init__).parameters
        kinds = {p.kind for p in params.values()}
        assert inspect.Parameter.VAR_KEYWORD not in kinds, f"{name}(**kwargs) hides options"
        assert inspect.Parameter.VAR_POSITIONAL not in kinds
        assert set(params) >= {"cache_max_bytes", "decoded_cache_max_bytes"}


def test_client_twins_answer_like_the_async_clients(folder: Path, tmp_path: Path) -> None:
    client = dicomslide_sync.DICOMfileClient(folder, index_dir=tmp_path)
    source = dicomslide.DICOMfileClient(folder, index_dir=tmp_path)

    async def answers() -> tuple[list[str], int]:
        try:
            series = await source.search_for_series()
            summary = await source.index_summary()
            return [ds.SeriesInstanceUID for ds in series], summary.instances
        finally:
            await source.aclose()

    expected_series, expected_instances = _portal.run(answers())
    assert [ds.SeriesInstanceUID for ds in client.search_for_series()] == expected_series
    assert client.index_summary().instances == expected_instances > 0
    client.close()


def test_module_functions_are_the_same_or_twins() -> None:
    for name in dicomslide.__all__:
        assert hasattr(dicomslide_sync, name), f"dicomslide_sync.{name} is missing"
        a, s = getattr(dicomslide, name), getattr(dicomslide_sync, name)
        if inspect.iscoroutinefunction(a):
            assert inspect.signature(a) == inspect.signature(s)
            assert not inspect.iscoroutinefunction(s)


def test_many_threads_read_one_slide_through_one_batcher(folder: Path, tmp_path: Path) -> None:
    client = dicomslide_sync.DICOMfileClient(folder, index_dir=tmp_path)
    slide = dicomslide_sync.find_slides(client)[0]
    truth = expected_pixels(SPEC, 0)
    rng = np.random.default_rng(3)
    offsets = [(int(rng.integers(0, 600)), int(rng.integers(0, 800))) for _ in range(96)]

    def read(offset: tuple[int, int]) -> np.ndarray:
        return slide.get_image_region(offset, 0, (100, 100))

    with ThreadPoolExecutor(16) as pool:
        regions = list(pool.map(read, offsets))
    for (r, c), region in zip(offsets, regions, strict=True):
        np.testing.assert_array_equal(region, truth[r : r + 100, c : c + 100])
    stats = slide.cache_stats
    total_tiles = 6 * 8
    # every frame came from the source at most once, whatever the interleaving of threads
    assert stats.frames_fetched <= total_tiles
    assert stats.frames_fetched == stats.misses - stats.joined + stats.readahead


def test_facade_works_inside_a_running_event_loop(folder: Path, tmp_path: Path) -> None:
    import asyncio

    async def notebook_cell() -> np.ndarray:
        client = dicomslide_sync.DICOMfileClient(folder, index_dir=tmp_path)
        slide = dicomslide_sync.find_slides(client)[0]
        return slide.get_image_region((0, 0), 1, (50, 60))

    region = asyncio.run(notebook_cell())
    np.testing.assert_array_equal(region, expected_pixels(SPEC, 1)[:50, :60])


def test_blocking_call_from_the_loop_thread_is_refused(folder: Path, tmp_path: Path) -> None:
    client = dicomslide_sync.DICOMfileClient(folder, index_dir=tmp_path)
    slide = dicomslide_sync.find_slides(client)[0]

    async def inside_loop() -> None:
        slide.get_image_region((0, 0), 0, (10, 10))

    with pytest.raises(dicomslide.UsageError, match="deadlock"):
        _portal.run(inside_loop())


def _in_spawned_process(client: Any, read: Callable[[bytes], _R]) -> _R:
    """Pickle the client's slide and call ``read`` on the pickle in a fresh (spawned) process."""
    payload = pickle.dumps(dicomslide_sync.find_slides(client)[0])
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(read, (payload,))


def _read_pickled(payload: bytes) -> bytes:
    slide = pickle.loads(payload)
    return bytes(slide.get_image_region((128, 256), 0, (64, 64)).tobytes())


def test_slides_pickle_and_reopen_in_another_process(folder: Path, tmp_path: Path) -> None:
    client = dicomslide_sync.DICOMfileClient(folder, index_dir=tmp_path)
    data = _in_spawned_process(client, _read_pickled)
    region = np.frombuffer(data, dtype=np.uint8).reshape(64, 64, 3)
    np.testing.assert_array_equal(region, expected_pixels(SPEC, 0)[128:192, 256:320])


def _read_twice_pickled(payload: bytes) -> tuple[int, int, bool]:
    first = pickle.loads(payload)
    first.get_image_region((128, 256), 0, (64, 64))
    second = pickle.loads(payload)  # a Dask worker unpickles the slide for every task
    second.get_image_region((128, 256), 0, (64, 64))
    stats = second.cache_stats
    return stats.frames_fetched, stats.hits + stats.decoded_hits, first.client is second.client


def test_reopened_slides_share_one_client_per_process(folder: Path, tmp_path: Path) -> None:
    client = dicomslide_sync.DICOMfileClient(folder, index_dir=tmp_path)
    fetched, hits, same = _in_spawned_process(client, _read_twice_pickled)
    assert same
    assert fetched > 0
    assert hits >= fetched  # the second read was answered from the first one's cache
    # A closed re-opened client is not handed out again.
    reopened = pickle.loads(pickle.dumps(client))
    assert pickle.loads(pickle.dumps(client)) is reopened
    reopened.close()
    assert pickle.loads(pickle.dumps(client)) is not reopened


def test_forked_child_reads_with_a_fresh_loop(folder: Path, tmp_path: Path) -> None:
    client = dicomslide_sync.DICOMfileClient(folder, index_dir=tmp_path)
    slide = dicomslide_sync.find_slides(client)[0]
    expected = slide.get_image_region((0, 0), 0, (32, 32))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            again = slide.get_image_region((0, 0), 0, (32, 32))
            os._exit(0 if np.array_equal(again, expected) else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


def test_total_pixel_matrix_and_sampler_twins(folder: Path, tmp_path: Path) -> None:
    client = dicomslide_sync.DICOMfileClient(folder, index_dir=tmp_path)
    slide = dicomslide_sync.find_slides(client)[0]
    matrix = slide.get_volume_images()[0].get_total_pixel_matrix()
    truth = expected_pixels(SPEC, 0)
    np.testing.assert_array_equal(matrix[10:300, -200:], truth[10:300, -200:])
    sampler = dicomslide_sync.TotalPixelMatrixSampler(matrix, (256, 256))
    regions = list(sampler)
    assert len(regions) == len(sampler) == 3 * 4
    np.testing.assert_array_equal(regions[5], truth[256:512, 256:512])


def test_default_timeout_cancels_blocking_calls(folder: Path, tmp_path: Path) -> None:
    import asyncio

    client = dicomslide_sync.DICOMfileClient(folder, index_dir=tmp_path)
    slide = dicomslide_sync.find_slides(client)[0]
    source = slide.async_slide._source
    original = source.iter_frames
    cancelled = []

    async def stuck(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        yield  # pragma: no cover

    source.iter_frames = stuck  # type: ignore[method-assign]
    dicomslide_sync.set_default_timeout(0.3)
    try:
        with pytest.raises(TimeoutError):
            slide.get_image_region((0, 0), 0, (10, 10))
    finally:
        dicomslide_sync.set_default_timeout(None)
        source.iter_frames = original  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="positive"):
        dicomslide_sync.set_default_timeout(0)


def test_images_and_matrices_pickle_too(folder: Path, tmp_path: Path) -> None:
    client = dicomslide_sync.DICOMfileClient(folder, index_dir=tmp_path)
    slide = dicomslide_sync.find_slides(client)[0]
    image = slide.get_volume_images()[0]
    matrix = image.get_total_pixel_matrix()
    image2 = pickle.loads(pickle.dumps(image))
    matrix2 = pickle.loads(pickle.dumps(matrix))
    np.testing.assert_array_equal(image2.get_image_region((5, 7), (40, 50)), matrix[5:45, 7:57])
    np.testing.assert_array_equal(matrix2[100:140, 200:260], matrix[100:140, 200:260])


def test_twin_attributes_read_and_write_the_async_object(folder: Path, tmp_path: Path) -> None:
    # Nothing is sent: a client makes no request until it is asked for something.
    client = dicomslide_sync.DICOMwebClient("http://127.0.0.1:9/dicomweb", max_instance_bytes=7)
    source = client.__dicomslide_source__
    assert client.max_instance_bytes == source.max_instance_bytes == 7
    assert client.requests_sent == 0
    client.qido_page_size = 13  # settable on the async client, so on the twin too
    assert source.qido_page_size == 13
    policy = dicomslide.RetryPolicy(attempts=2)
    client.retry = policy
    assert source.retry is policy
    client.close()
    slide = dicomslide_sync.find_slides(
        dicomslide_sync.DICOMfileClient(folder, index_dir=tmp_path)
    )[0]
    assert (slide.max_frame_cache_size, slide.pyramid_tolerance) == (6, 0.1)
    with pytest.raises(AttributeError):
        slide.num_levels = 1  # read-only on the async slide: the twin does not shadow it
    assert slide.num_levels == slide.async_slide.num_levels == 2


def test_a_closed_reopened_client_is_not_handed_out_again() -> None:
    # Both clients say whether they are closed; before the DICOMweb one did, a closed re-opened
    # DICOMweb client was handed to the next unpickling. Nothing is sent: no request is made.
    client = dicomslide_sync.DICOMwebClient("http://127.0.0.1:9/dicomweb", readahead=3)
    reopened = pickle.loads(pickle.dumps(client))
    assert reopened is not client
    assert pickle.loads(pickle.dumps(client)) is reopened
    assert not reopened.closed
    reopened.close()
    assert reopened.closed
    assert reopened.__dicomslide_source__.closed
    again = pickle.loads(pickle.dumps(client))
    assert again is not reopened
    assert not again.closed
    again.close()
    client.close()

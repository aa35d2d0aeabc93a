"""Slides built from the local index's summaries equal slides built from the headers.

A warm ``find_slides`` over an indexed folder builds every slide from per-instance summaries
(see :mod:`dicomslide.summary`), loading no header. Each variant below is opened twice with
one index: cold (headers read and converted, the path every other source takes) and warm
(summaries), and every public property of the slides and of their images is compared, then
the metadata element by element.

Variants: the parity suite's slides (``tests.parity.suite.prepare``: synthetic orientations,
tilings, focal planes, optical paths, pixel formats, concatenations, thumbnails; highdicom
Segmentations, label maps and a Parametric Map; OrthancWSIDicomizer conversions when the tool
is installed, else those are left out) and a small archive.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

import dicomslide
from dicomslide.summary import SummaryDataset
from tests.parity.suite import prepare
from tests.support.thirdparty import find_dicomizer

# Properties left out of the comparison: the client differs by construction, the cache
# statistics are the client's, metadata and images are compared by their own parts.
_SLIDE_SKIPPED = {"client", "cache_stats", "image_metadata"}
_IMAGE_SKIPPED = {"reader", "metadata", "frame_index"}


def _plain(value: Any) -> Any:
    """A value as comparable data (images by their own properties, arrays as lists)."""
    if isinstance(value, dicomslide.TiledImage):
        return _image(value)
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tolist())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, _plain(dataclasses.astuple(value)))
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dicomslide.Pyramid):
        return [_plain(level) for level in value]
    return (type(value).__name__, value)


def _properties(obj: Any, skipped: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, member in inspect.getmembers(type(obj)):
        if name.startswith("_") or name in skipped or not isinstance(member, property):
            continue
        try:
            out[name] = _plain(getattr(obj, name))
        except dicomslide.DicomSlideError as error:
            out[name] = ("error", type(error).__name__, str(error))
    return out


def _image(image: dicomslide.TiledImage) -> dict[str, Any]:
    described = _properties(image, _IMAGE_SKIPPED)
    described["channels"] = [
        image.get_channel_index(identifier) for identifier in image.channel_identifiers
    ]
    return described


def _slide(slide: dicomslide.Slide) -> dict[str, Any]:
    described = _properties(slide, _SLIDE_SKIPPED)
    described["volume"] = _plain(slide.get_volume_images())
    described["channels"] = [
        (slide.get_channel_type(i), slide.get_channel_identifier(i))
        for i in range(slide.num_channels)
    ]
    described["planes"] = [slide.get_focal_plane_offset(i) for i in range(slide.num_focal_planes)]
    described["resolved"] = [
        _plain(slide.resolve(level, channel, plane)[1:])
        for level in range(slide.num_levels)
        for channel in range(slide.num_channels)
        for plane in range(slide.num_focal_planes)
        if _resolvable(slide, level, channel, plane)
    ]
    return described


def _resolvable(slide: dicomslide.Slide, level: int, channel: int, plane: int) -> bool:
    try:
        slide.resolve(level, channel, plane)
    except dicomslide.DicomSlideError:
        return False
    return True


def _searches(slide: dicomslide.Slide) -> list[Any]:
    """Answers that read channel and specimen items (they load the headers when summarised)."""
    return [slide.find_optical_paths(), slide.find_segments()]


async def _open(folder: Path, index: Path) -> list[dicomslide.Slide]:
    async with dicomslide.DICOMfileClient(folder, index_dir=index) as client:
        return await dicomslide.find_slides(client)


def _loaded(slides: list[dicomslide.Slide]) -> int:
    return sum(
        1
        for slide in slides
        for ds in slide.image_metadata
        if type(ds) is SummaryDataset and ds.is_loaded
    )


@pytest.fixture(scope="module")
def folders(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    cache = getattr(request.config, "cache", None)
    dicomizer = Path(cache.mkdir("dicomizer")) if cache else tmp_path_factory.mktemp("dicomizer")
    work = tmp_path_factory.mktemp("summaries")
    _, found = prepare(work, dicomizer if find_dicomizer() else None)
    return found


def _compare(folder: Path, index: Path) -> tuple[int, int]:
    """Open ``folder`` cold then warm and compare; return the slides and the warm loads."""
    cold = asyncio.run(_open(folder, index))
    warm = asyncio.run(_open(folder, index))
    summarised = [ds for s in warm for ds in s.image_metadata]
    assert summarised, folder
    assert all(type(ds) is SummaryDataset for ds in summarised)
    # Finding and building the slides loaded no header.
    assert _loaded(warm) == 0
    assert [_slide(s) for s in warm] == [_slide(s) for s in cold]
    loads = _loaded(warm)
    assert [_searches(s) for s in warm] == [_searches(s) for s in cold]
    for a, b in zip(cold, warm, strict=True):
        assert len(a.image_metadata) == len(b.image_metadata)
        for x, y in zip(a.image_metadata, b.image_metadata, strict=True):
            assert y == x
            assert x == y
            assert y.file_meta == x.file_meta
            assert y.original_encoding == x.original_encoding
        top = a.num_levels - 1
        size = a.total_pixel_matrix_dimensions[top]
        region = asyncio.run(_region(b, top, size))
        assert np.array_equal(region, asyncio.run(_region(a, top, size)))
    return len(cold), loads


async def _region(slide: dicomslide.Slide, level: int, size: tuple[int, int]) -> np.ndarray:
    async with dicomslide.DICOMfileClient(slide.client.base_dir) as client:
        again = dicomslide.Slide(client, slide.image_metadata)
        return await again.get_image_region((0, 0), level, (min(size[0], 64), min(size[1], 64)))


def test_warm_slides_equal_cold_slides(folders: dict[str, Path], tmp_path: Path) -> None:
    compared = {}
    for name, folder in sorted(folders.items()):
        compared[name] = _compare(folder, tmp_path / f"index-{name}")
    # Every parity variant was compared, each with at least one slide.
    assert len(compared) >= 17
    assert ("dicomizer" in compared) == ("dicomizer-bare" in compared) == bool(find_dicomizer())
    assert all(count >= 1 for count, _ in compared.values()), compared
    # Properties alone never load a header: only the searches above may.
    assert all(loads == 0 for _, loads in compared.values()), compared


def test_summary_is_kept_for_the_file_identity(tmp_path: Path) -> None:
    from dicomslide.synthetic import write_slide
    from tests.support.slides import slide_spec

    folder = tmp_path / "slide"
    write_slide(folder, slide_spec((200, 260), 64, 2))
    index = tmp_path / "index"
    (first,) = asyncio.run(_open(folder, index))
    (path,) = index.glob("*.sqlite")
    with sqlite3.connect(path) as conn:
        stored = conn.execute("SELECT count(*) FROM summaries").fetchone()[0]
    assert stored == len(first.image_metadata)
    # The same content rewritten (a new identity): its summary is not used, the header is.
    level0 = next(folder.glob("*.dcm"))
    level0.write_bytes(level0.read_bytes())
    (again,) = asyncio.run(_open(folder, index))
    kinds = sorted(
        (Path(str(ds.filename)).name if ds.is_loaded else "summary")
        for ds in again.image_metadata
        if type(ds) is SummaryDataset
    )
    assert len(kinds) == len(first.image_metadata) - 1
    assert _slide(again) == _slide(first)


def test_loaded_metadata_behaves_as_any_data_set(tmp_path: Path) -> None:
    import copy
    import pickle

    from dicomslide._tags import TOTAL_PIXEL_MATRIX_ROWS
    from dicomslide.perframe import get_value
    from dicomslide.synthetic import write_slide
    from dicomslide.utils import get_image_size
    from tests.support.slides import slide_spec

    folder = tmp_path / "slide"
    write_slide(folder, slide_spec((200, 260), 64, 2))
    index = tmp_path / "index"
    asyncio.run(_open(folder, index))
    (slide,) = asyncio.run(_open(folder, index))
    ds = slide.get_volume_images()[0].metadata
    assert type(ds) is SummaryDataset
    assert not ds.is_loaded
    assert get_image_size(ds) == 200 * 260  # from the summary: nothing loaded
    assert not ds.is_loaded
    # Copies and pickles are the plain data set it stands for (loading it first).
    plain = pickle.loads(pickle.dumps(ds))
    assert ds.is_loaded
    assert type(plain) is pydicom.Dataset
    assert plain == ds
    assert type(copy.deepcopy(ds)) is pydicom.Dataset
    # Changed in place once loaded: the answers follow the elements, not the summary.
    ds.TotalPixelMatrixRows = 100
    assert get_value(ds, TOTAL_PIXEL_MATRIX_ROWS) == 100
    assert get_image_size(ds) == 100 * 260
    assert dicomslide.Slide(slide.client, [ds]).size == (100, 260)


def _summarised_slide(tmp_path: Path) -> tuple[Path, Path]:
    from dicomslide.synthetic import write_slide
    from tests.support.slides import slide_spec

    folder = tmp_path / "slide"
    write_slide(folder, slide_spec((200, 260), 64, 2))
    index = tmp_path / "index"
    asyncio.run(_open(folder, index))
    return folder, index


def test_a_summary_of_another_version_is_written_anew(tmp_path: Path) -> None:
    folder, index = _summarised_slide(tmp_path)
    (path,) = index.glob("*.sqlite")
    with sqlite3.connect(path) as conn:
        texts = [t for (t,) in conn.execute("SELECT summary FROM summaries")]
        # Summaries name the release that computed them: an upgrade does not trust them.
        assert texts
        assert all(t.startswith(f'["1/{dicomslide.__version__}",') for t in texts)
        conn.execute("UPDATE summaries SET summary = replace(summary, ?, ?)", ("/", "/0.0.1+"))
    (older,) = asyncio.run(_open(folder, index))
    # Not used: every image's header was read, and the summaries were written again.
    assert all(ds.is_loaded for ds in older.image_metadata if type(ds) is SummaryDataset)
    (again,) = asyncio.run(_open(folder, index))
    assert _loaded([again]) == 0
    assert all(type(ds) is SummaryDataset for ds in again.image_metadata)
    assert _slide(again) == _slide(older)


def test_summarised_values_are_not_shared_with_callers(tmp_path: Path) -> None:
    from dicomslide._tags import IMAGE_TYPE
    from dicomslide.perframe import get_value

    folder, index = _summarised_slide(tmp_path)
    (slide,) = asyncio.run(_open(folder, index))
    ds = slide.get_volume_images()[0].metadata
    first = get_value(ds, IMAGE_TYPE)
    assert isinstance(first, list)
    first.append("CHANGED")
    assert "CHANGED" not in get_value(ds, IMAGE_TYPE)
    assert not ds.is_loaded


def test_the_collector_pause_spans_only_local_searches(tmp_path: Path) -> None:
    import gc

    folder, index = _summarised_slide(tmp_path)
    seen: list[bool] = []

    async def watch(done: asyncio.Event) -> None:
        while not done.is_set():
            seen.append(gc.isenabled())
            await asyncio.sleep(0)

    async def search(client: Any) -> int:
        done = asyncio.Event()
        watcher = asyncio.ensure_future(watch(done))
        try:
            return len(await dicomslide.find_slides(client))
        finally:
            done.set()
            await watcher

    async def local() -> int:
        async with dicomslide.DICOMfileClient(folder, index_dir=index) as client:
            return await search(client)

    assert gc.isenabled()
    assert asyncio.run(local()) == 1
    assert seen
    assert not any(seen)
    seen.clear()

    class ServerLike:
        """The same source, waiting as a server's answer would (no burst declared)."""

        _search_in_one_burst = False

        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        async def retrieve_series_metadata(self, *args: Any) -> Any:
            await asyncio.sleep(0.005)
            return await self._inner.retrieve_series_metadata(*args)

    async def remote() -> int:
        async with dicomslide.DICOMfileClient(folder, index_dir=index) as client:
            return await search(ServerLike(client))

    assert asyncio.run(remote()) == 1
    # Waiting on a server, the collector runs (it pauses only around synchronous bursts).
    assert seen
    assert any(seen)
    assert gc.isenabled()

"""Request accounting of :class:`dicomslide.DICOMwebClient` against an in-process DICOMweb server.

:class:`FakeDicomWeb` serves real synthetic DICOM files (written by
:func:`dicomslide.synthetic.write_slide`) through ``httpx.MockTransport``: QIDO-RS searches
with ``limit``/``offset`` paging, series and instance metadata (ICC profiles as BulkDataURIs),
bulk data and frames as ``multipart/related`` with a per-part transfer syntax. It records every
request and the frame numbers each frames request asked for, and lets tests inject faults per
request (``on_request``) or hold frames responses back (``gate``).

The fault tests in ``test_web_faults.py`` reuse it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames

import dicomslide
from dicomslide.runtime import frame_service
from dicomslide.sources.dicomweb_urls import frames_url
from dicomslide.synthetic import expected_pixels, write_slide
from tests.support.slides import slide_spec

BASE = "http://dicomweb.test/dicom-web"
OTHER_HOST = "http://other-host.test"
RLE = "1.2.840.10008.1.2.5"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
BOUNDARY = "fake-dicomweb-boundary"

#: Level 0 is 6 x 8 = 48 tiles of 128 x 128 in one instance; lossless, so reads are exact.
SPEC = slide_spec((700, 1000), 128, 2, bare=True, transfer_syntax_uid=RLE, seed=7)

_FRAMES_RE = re.compile(r"/instances/([^/]+)/frames/([0-9,]+)$")
_ICC_TAG = "00282000"


@dataclass
class Instance:
    """One stored instance: its metadata as DICOM JSON and its frames as stored."""

    study: str
    series: str
    sop: str
    syntax: str
    metadata: dict[str, Any]
    frames: list[bytes]
    icc: bytes | None


@dataclass
class FrameRequest:
    """One frames request as the server saw it."""

    sop: str
    numbers: list[int]
    accept: str
    url: str


@dataclass
class Route:
    """What a request asks for."""

    kind: str  # qido-studies, qido-series, qido-instances, metadata, frames, bulk
    sop: str | None = None
    numbers: list[int] = field(default_factory=list)


def multipart_body(
    parts: list[tuple[bytes, str]],
    *,
    close: bool = True,
    locations: list[str | None] | None = None,
) -> bytes:
    """Build a ``multipart/related`` body from (body, content type) pairs."""
    out = bytearray()
    for i, (body, content_type) in enumerate(parts):
        out += f"--{BOUNDARY}\r\nContent-Type: {content_type}\r\n".encode()
        if locations and locations[i]:
            out += f"Content-Location: {locations[i]}\r\n".encode()
        out += f"Content-Length: {len(body)}\r\n\r\n".encode()
        out += body + b"\r\n"
    if close:
        out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out)


def multipart_type(inner: str = "application/octet-stream") -> str:
    return f'multipart/related; type="{inner}"; boundary={BOUNDARY}'


class BrokenStream(httpx.AsyncByteStream):
    """A response body that sends some bytes and then drops the connection."""

    def __init__(self, data: bytes, *, chunk: int = 997) -> None:
        self.data = data
        self.chunk = chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.data), self.chunk):
            yield self.data[i : i + self.chunk]
            await asyncio.sleep(0)
        raise httpx.ReadError("connection reset by peer")


def _load(path: Path, icc_host: str) -> Instance:
    ds = pydicom.dcmread(path)
    syntax = str(ds.file_meta.TransferSyntaxUID)
    count = int(ds.get("NumberOfFrames", 1))
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        frames = list(generate_frames(ds.PixelData, number_of_frames=count))
    else:
        size = len(ds.PixelData) // count
        frames = [bytes(ds.PixelData[i * size : (i + 1) * size]) for i in range(count)]
    study, series, sop = (
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
        str(ds.SOPInstanceUID),
    )
    del ds.PixelData
    icc: bytes | None = None
    for item in ds.get("OpticalPathSequence", []):
        if "ICCProfile" in item:
            icc = bytes(item.ICCProfile)
            del item.ICCProfile
    ds.AvailableTransferSyntaxUID = syntax
    metadata = ds.to_json_dict()
    if icc is not None:
        uri = f"{icc_host}/bulk/{sop}/icc"
        for item in metadata["00480105"]["Value"]:
            item[_ICC_TAG] = {"vr": "OB", "BulkDataURI": uri}
    return Instance(study, series, sop, syntax, metadata, frames, icc)


class FakeDicomWeb:
    """An in-process DICOMweb server over ``httpx.MockTransport``.

    Parameters
    ----------
    paths: list[Path]
        DICOM files to serve
    bulk_on_other_host: bool, optional
        Give ICC profiles BulkDataURIs on another host (not the configured origin)
    """

    def __init__(self, paths: list[Path], *, bulk_on_other_host: bool = False) -> None:
        host = OTHER_HOST if bulk_on_other_host else BASE
        self.instances = {inst.sop: inst for inst in (_load(p, host) for p in paths)}
        self.requests: list[httpx.Request] = []
        self.frame_requests: list[FrameRequest] = []
        #: Called first for every request; a response it returns is sent instead.
        self.on_request: Callable[[httpx.Request, Route], httpx.Response | None] | None = None
        #: When set, frames responses wait for it (cancellation tests).
        self.gate: asyncio.Event | None = None
        #: Set when a frames request arrives.
        self.frames_arrived = asyncio.Event()
        #: Status returned for ``transfer-syntax=*`` (a server that refuses it), or None.
        self.refuse_wildcard: int | None = None
        #: Status returned for frames asked for by an explicit syntax, or None.
        self.refuse_explicit: int | None = None
        #: Leave Available Transfer Syntax UID out of the metadata (as Orthanc does).
        self.hide_syntax = False
        #: Most QIDO results in one response, whatever ``limit`` says (None: obey limit).
        self.qido_cap: int | None = None
        #: Whether QIDO responses that were capped carry a Warning header.
        self.qido_cap_warning = True
        #: Ignore the QIDO ``offset`` parameter.
        self.ignore_offset = False
        #: Answer 400 to QIDO searches with any filter other than limit/offset.
        self.reject_filters = False
        #: Extra series shown by QIDO (DICOM JSON), e.g. of other modalities.
        self.extra_series: list[dict[str, Any]] = []

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def client(self, **kwargs: Any) -> dicomslide.DICOMwebClient:
        kwargs.setdefault("retry", dicomslide.RetryPolicy(attempts=3, backoff=0.0))
        return dicomslide.DICOMwebClient(BASE, transport=self.transport(), **kwargs)

    @property
    def volume(self) -> Instance:
        """The level-0 instance."""
        return next(iter(self.instances.values()))

    # --- counting ---------------------------------------------------------------------

    def requests_of(self, kind: str) -> list[httpx.Request]:
        return [r for r in self.requests if self.route(r).kind == kind]

    def frames_asked(self) -> list[tuple[str, int]]:
        return [(fr.sop, n) for fr in self.frame_requests for n in fr.numbers]

    # --- routing ----------------------------------------------------------------------

    def route(self, request: httpx.Request) -> Route:
        path = request.url.path
        match = _FRAMES_RE.search(path)
        if match:
            return Route("frames", match.group(1), [int(n) for n in match.group(2).split(",")])
        if "/bulk/" in path:
            return Route("bulk", path.split("/bulk/")[1].split("/")[0])
        if path.endswith("/metadata"):
            return Route(
                "metadata",
                path.split("/instances/")[1].split("/")[0] if "/instances/" in path else None,
            )
        for kind in ("studies", "series", "instances"):
            if path.endswith("/" + kind):
                return Route("qido-" + kind)
        return Route("unknown")

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = self.route(request)
        if route.kind == "frames":
            assert route.sop is not None
            self.frame_requests.append(
                FrameRequest(
                    route.sop, route.numbers, request.headers.get("accept", ""), str(request.url)
                )
            )
            self.frames_arrived.set()
            if self.gate is not None:
                await self.gate.wait()
            # Like a real server, answer later: other requests get to run in between.
            for _ in range(3):
                await asyncio.sleep(0)
        if self.on_request is not None:
            response = self.on_request(request, route)
            if response is not None:
                return response
        if route.kind == "frames":
            return self._frames(request, route)
        if route.kind == "bulk":
            inst = self.instances.get(route.sop or "")
            if inst is None or inst.icc is None:
                return httpx.Response(404, text="no such bulk data")
            return httpx.Response(
                200,
                content=multipart_body([(inst.icc, "application/octet-stream")]),
                headers={"content-type": multipart_type()},
            )
        if route.kind == "metadata":
            return self._metadata(request, route)
        if route.kind.startswith("qido-"):
            return self._qido(request, route)
        return httpx.Response(404, text=f"no route for {request.url.path}")

    def _metadata(self, request: httpx.Request, route: Route) -> httpx.Response:
        path = request.url.path
        if route.sop is not None:
            items = [i.metadata for i in self.instances.values() if i.sop == route.sop]
        else:
            series = path.split("/series/")[1].split("/")[0]
            items = [i.metadata for i in self.instances.values() if i.series == series]
        if not items:
            return httpx.Response(404, text=f"Unknown resource {request.url}")
        if self.hide_syntax:
            items = [{k: v for k, v in i.items() if k != "00083002"} for i in items]
        return httpx.Response(200, json=items, headers={"content-type": "application/dicom+json"})

    def _qido(self, request: httpx.Request, route: Route) -> httpx.Response:
        params = parse_qsl(urlsplit(str(request.url)).query)
        limit = offset = None
        filters: dict[str, str] = {}
        for key, value in params:
            if key == "limit":
                limit = int(value)
            elif key == "offset":
                offset = int(value)
            elif key not in {"includefield", "fuzzymatching"}:
                filters[key] = value
        if filters and self.reject_filters:
            return httpx.Response(400, text=f"Unsupported query key {next(iter(filters))}")
        items: list[dict[str, Any]] = []
        if route.kind == "qido-series":
            seen = set()
            for inst in self.instances.values():
                if inst.series not in seen:
                    seen.add(inst.series)
                    items.append(
                        {k: inst.metadata[k] for k in ("0020000D", "0020000E", "00080060")}
                    )
            items += self.extra_series
        elif route.kind == "qido-instances":
            # Container Identifier too, so that client-side filtering has something to judge.
            items = [
                {
                    k: i.metadata[k]
                    for k in ("0020000D", "0020000E", "00080018", "00080016", "00400512")
                    if k in i.metadata
                }
                for i in self.instances.values()
            ]
        keywords = {"Modality": "00080060", "SeriesInstanceUID": "0020000E"}
        for key, value in filters.items():
            tag = keywords.get(key, key)
            items = [
                it for it in items if tag not in it or value in map(str, it[tag].get("Value", []))
            ]
        start = 0 if self.ignore_offset or offset is None else offset
        count = len(items) if limit is None else limit
        warning = False
        if self.qido_cap is not None and count > self.qido_cap:
            count = self.qido_cap
            warning = len(items) - start > count and self.qido_cap_warning
        page = items[start : start + count]
        headers = {"content-type": "application/dicom+json"}
        if warning:
            headers["warning"] = "299 fake: There are additional results that can be requested"
        if not page:
            return httpx.Response(204, headers=headers)
        return httpx.Response(200, json=page, headers=headers)

    def frame_parts(self, request: httpx.Request, route: Route) -> list[tuple[bytes, str]]:
        """Parts answering a frames request; empty if the Accept header cannot be served."""
        inst = self.instances[route.sop or ""]
        accept = request.headers.get("accept", "")
        if "transfer-syntax=*" not in accept and f"transfer-syntax={inst.syntax}" not in accept:
            return []
        content_type = f"application/octet-stream; transfer-syntax={inst.syntax}"
        return [(inst.frames[n - 1], content_type) for n in route.numbers]

    def _frames(self, request: httpx.Request, route: Route) -> httpx.Response:
        inst = self.instances.get(route.sop or "")
        if inst is None:
            return httpx.Response(404, text="no such instance")
        if any(n < 1 or n > len(inst.frames) for n in route.numbers):
            return httpx.Response(404, text="no such frame")
        accept = request.headers.get("accept", "")
        if "transfer-syntax=*" in accept and self.refuse_wildcard is not None:
            return httpx.Response(self.refuse_wildcard, text="transfer-syntax=* not supported")
        if "transfer-syntax=*" not in accept and self.refuse_explicit is not None:
            return httpx.Response(self.refuse_explicit, text=f"cannot serve {accept}")
        parts = self.frame_parts(request, route)
        if not parts:
            return httpx.Response(406, text=f"cannot transcode to {accept}")
        return httpx.Response(
            200, content=multipart_body(parts), headers={"content-type": multipart_type()}
        )


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slide_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_slide(tmp_path_factory.mktemp("web-slide"), SPEC)


@pytest.fixture
def server(slide_files: list[Path]) -> FakeDicomWeb:
    return FakeDicomWeb(slide_files)


@contextlib.asynccontextmanager
async def opened(
    server: FakeDicomWeb, **kwargs: Any
) -> AsyncIterator[tuple[dicomslide.DICOMwebClient, dicomslide.Slide]]:
    async with server.client(**kwargs) as client:
        slides = await dicomslide.find_slides(client, correct_color=False)
        assert len(slides) == 1
        yield client, slides[0]


def truth(row: int, col: int, size: tuple[int, int], level: int = 0) -> np.ndarray:
    return expected_pixels(
        SPEC, level, row_slice=slice(row, row + size[0]), col_slice=slice(col, col + size[1])
    )


def regions(
    count: int, seed: int, size: tuple[int, int] = (200, 300)
) -> Iterator[tuple[int, int]]:
    rng = random.Random(seed)
    rows, cols = SPEC.size
    for _ in range(count):
        yield rng.randrange(0, rows - size[0]), rng.randrange(0, cols - size[1])


def tiles_touched(row: int, col: int, size: tuple[int, int]) -> set[int]:
    th, tw = SPEC.tile_size
    per_row = -(-SPEC.size[1] // tw)
    return {
        tr * per_row + tc + 1
        for tr in range(row // th, (row + size[0] - 1) // th + 1)
        for tc in range(col // tw, (col + size[1] - 1) // tw + 1)
    }


# --- tests ----------------------------------------------------------------------------------


async def test_fake_server_serves_exact_pixels(server: FakeDicomWeb) -> None:
    async with opened(server) as (_, slide):
        region = await slide.get_image_region((100, 130), 0, (300, 400))
    np.testing.assert_array_equal(region, truth(100, 130, (300, 400)))
    assert len(server.requests_of("metadata")) == 1


async def test_concurrent_overlapping_reads_fetch_each_frame_once(server: FakeDicomWeb) -> None:
    size = (200, 300)
    offsets = list(regions(64, seed=1, size=size))
    async with opened(server) as (_, slide):
        results = await asyncio.gather(*(slide.get_image_region(off, 0, size) for off in offsets))
        for off, region in zip(offsets, results, strict=True):
            np.testing.assert_array_equal(region, truth(*off, size))
        asked = server.frames_asked()
        # One instance per level and fewer frames than max_frames_per_request: one chunk.
        assert len(server.frame_requests) <= 1
        assert len(asked) == len(set(asked))
        wanted = set().union(*(tiles_touched(*off, size) for off in offsets))
        assert {n for _, n in asked} == wanted

        stats = slide.cache_stats
        touched = sum(len(tiles_touched(*off, size)) for off in offsets)
        assert stats.requests == len(server.frame_requests)
        assert stats.frames_fetched == len(wanted)
        assert stats.hits + stats.misses == touched
        assert stats.frames_per_request == len(wanted) / len(server.frame_requests)
        before = (
            stats.hits + stats.decoded_hits,
            stats.misses,
            stats.requests,
            len(server.frame_requests),
        )

        # The same reads again come from the cache: not one request.
        again = await asyncio.gather(*(slide.get_image_region(off, 0, size) for off in offsets))
        for off, region in zip(offsets, again, strict=True):
            np.testing.assert_array_equal(region, truth(*off, size))
        assert len(server.frame_requests) == before[3]
        assert stats.requests == before[2]
        assert stats.misses == before[1]
        # from the decoded-tile cache, or the encoded one where a tile was evicted
        assert stats.hits + stats.decoded_hits == before[0] + touched


def _contiguous_cover(requests: list[FrameRequest], total: int) -> None:
    numbers = [n for fr in requests for n in fr.numbers]
    assert sorted(numbers) == list(range(1, total + 1))
    for fr in requests:
        assert fr.numbers == list(range(fr.numbers[0], fr.numbers[-1] + 1))


async def test_max_frames_per_request_chunks(server: FakeDicomWeb) -> None:
    async with opened(server, max_frames_per_request=10) as (_, slide):
        rows, cols = SPEC.size
        region = await slide.get_image_region((0, 0), 0, (rows, cols))
        np.testing.assert_array_equal(region, truth(0, 0, (rows, cols)))
        assert [len(fr.numbers) for fr in server.frame_requests] == [10, 10, 10, 10, 8]
        _contiguous_cover(server.frame_requests, 48)
        assert slide.cache_stats.requests == 5
        assert slide.cache_stats.frames_per_request == 48 / 5


async def test_max_url_length_chunks(server: FakeDicomWeb) -> None:
    inst = server.volume
    prefix = len(frames_url(BASE, inst.study, inst.series, inst.sop, [1])) - 1
    limit = prefix + 20  # "1,2,3,4,5,6,7,8,9,10" is exactly 20 characters
    async with opened(server, max_url_length=limit) as (_, slide):
        rows, cols = SPEC.size
        region = await slide.get_image_region((0, 0), 0, (rows, cols))
    np.testing.assert_array_equal(region, truth(0, 0, (rows, cols)))
    assert all(len(fr.url) <= limit for fr in server.frame_requests)
    # Greedy packing of "n,n,n" into 20 characters: 1-10, 11-17, 18-24, ..., 46-48.
    lengths = [len(fr.numbers) for fr in server.frame_requests]
    assert lengths == [10, 7, 7, 7, 7, 7, 3]
    _contiguous_cover(server.frame_requests, 48)


async def test_iter_frames_chunks_in_order(server: FakeDicomWeb) -> None:
    inst = server.volume
    async with server.client(max_frames_per_request=4) as client:
        got = [
            (n, f)
            async for n, f in client.iter_frames(
                inst.study, inst.series, inst.sop, [5, 6, 7, 8, 9, 40, 41]
            )
        ]
    assert [n for n, _ in got] == [5, 6, 7, 8, 9, 40, 41]
    assert all(f.data == inst.frames[n - 1] and f.transfer_syntax_uid == RLE for n, f in got)
    assert [fr.numbers for fr in server.frame_requests] == [[5, 6, 7, 8], [9, 40, 41]]


async def test_byte_bounded_cache_stays_within_budget(server: FakeDicomWeb) -> None:
    frame_bytes = sorted(len(f) for f in server.volume.frames)
    budget = frame_bytes[-1] * 5  # room for at least five frames
    size = (150, 150)
    async with opened(server, cache_max_bytes=budget) as (_, slide):
        stats = slide.cache_stats
        assert stats.max_bytes == budget
        rng = random.Random(3)
        rows, cols = SPEC.size
        for round_ in range(12):
            offsets = [
                (rng.randrange(0, rows - size[0]), rng.randrange(0, cols - size[1]))
                for _ in range(1 + round_ % 4)
            ]
            results = await asyncio.gather(
                *(slide.get_image_region(off, 0, size) for off in offsets)
            )
            for off, region in zip(offsets, results, strict=True):
                np.testing.assert_array_equal(region, truth(*off, size))
            assert 0 <= stats.bytes <= budget
            service = frame_service(slide.client)
            assert stats.bytes == sum(len(f.data) for f in service.cache._items.values())
        assert stats.evictions > 0
        # Evicted frames were fetched again: more frames than the level has distinct tiles
        # touched would be impossible without eviction.
        assert stats.frames_fetched > len(service.cache)


async def test_second_client_has_its_own_cache(server: FakeDicomWeb) -> None:
    async with opened(server) as (_, slide):
        await slide.get_image_region((0, 0), 0, (128, 128))
    async with opened(server) as (_, slide):
        await slide.get_image_region((0, 0), 0, (128, 128))
    assert [fr.numbers for fr in server.frame_requests] == [[1], [1]]


@pytest.mark.parametrize("limit", [1, 2, None])
async def test_per_instance_request_limit_merges_a_stream_of_tile_reads(
    server: FakeDicomWeb, limit: int | None
) -> None:
    # The tile-server pattern: one-tile reads arriving one after another (each in its own
    # event-loop tick). With a limit of requests in flight per instance (default 1), reads
    # that arrive meanwhile wait and leave together; without it each tick sends a request.
    tile = SPEC.tile_size[0]
    rows, cols = SPEC.size
    offsets = [(r, c) for r in range(0, rows - tile, tile) for c in range(0, cols - tile, tile)]
    async with opened(
        server,
        max_requests_per_instance=limit,
        coalesce_window=0,
        max_concurrent_requests=64,
        readahead=0,  # this stream is sequential: read-ahead would fetch it (tested below)
    ) as (_, slide):
        # Warm up (frame index, colour) with a tile the stream does not read.
        last_row = (rows - 1) // tile * tile
        assert all(r < last_row for r, _ in offsets)
        await slide.get_image_region((last_row, 0), 0, (rows - last_row, tile))
        server.frame_requests.clear()
        before = slide.cache_stats.requests
        server.gate = asyncio.Event()
        tasks = []
        for off in offsets:
            tasks.append(asyncio.create_task(slide.get_image_region(off, 0, (tile, tile))))
            for _ in range(5):
                await asyncio.sleep(0)  # the read reaches the frame service and flushes
        in_flight = len(server.frame_requests)
        server.gate.set()
        results = await asyncio.gather(*tasks)
        for off, region in zip(offsets, results, strict=True):
            np.testing.assert_array_equal(region, truth(*off, (tile, tile)))
        asked = server.frames_asked()
        assert len(asked) == len(set(asked)) == len(offsets)
        if limit is None:
            assert in_flight == len(server.frame_requests) == len(offsets)
        else:
            assert in_flight == limit
            # the held reads: one request (fewer frames than max_frames_per_request)
            assert len(server.frame_requests) == limit + 1
            assert slide.cache_stats.requests - before == limit + 1


@pytest.mark.parametrize("readahead", [256, 0])
async def test_tile_scan_is_read_ahead_in_a_few_requests(
    server: FakeDicomWeb, readahead: int
) -> None:
    # The tile-server / data-loader pattern: 16 tasks reading every tile of level 0 in frame
    # order, one call per tile. Read-ahead sends the next frames before they are asked for:
    # this level is small (48 frames, within two windows), so the first batch and the rest of
    # the level leave in one request instead of one request per batch.
    tile = SPEC.tile_size[0]
    rows, cols = SPEC.size
    offsets = [(r, c) for r in range(0, rows, tile) for c in range(0, cols, tile)]
    async with opened(server, readahead=readahead, coalesce_window=0) as (_, slide):
        it = iter(offsets)
        results: dict[tuple[int, int], np.ndarray] = {}

        async def reader() -> None:
            for r, c in it:
                size = (min(tile, rows - r), min(tile, cols - c))
                results[r, c] = await slide.get_image_region((r, c), 0, size)

        await asyncio.gather(*(reader() for _ in range(16)))
        for (r, c), region in results.items():
            np.testing.assert_array_equal(region, truth(r, c, region.shape[:2]))
        asked = server.frames_asked()
        assert sorted(n for _, n in asked) == list(range(1, len(offsets) + 1))  # each once
        stats = slide.cache_stats
        if readahead:
            assert [fr.numbers for fr in server.frame_requests] == [
                list(range(1, len(offsets) + 1))
            ]
            assert stats.readahead == len(offsets) - 16
        else:
            assert len(server.frame_requests) >= len(offsets) // 16
            assert stats.readahead == 0
        assert stats.frames_fetched == stats.misses - stats.joined + stats.readahead


async def test_per_instance_request_limit_is_validated(server: FakeDicomWeb) -> None:
    async with opened(server, max_requests_per_instance=0) as (_, slide):
        with pytest.raises(ValueError, match="max_requests_per_instance must be >= 1 or None"):
            await slide.get_image_region((0, 0), 0, (10, 10))


def _bulk_sops(server: FakeDicomWeb) -> list[str]:
    return [r.url.path.split("/bulk/")[1].split("/")[0] for r in server.requests_of("bulk")]


@pytest.mark.parametrize("same_optical_path", [True, False])
async def test_levels_with_equal_optical_paths_fetch_one_icc_profile(
    server: FakeDicomWeb, same_optical_path: bool
) -> None:
    # Servers parse the whole instance to answer a bulk data request, so the profile of
    # levels describing the same optical path is fetched once, from the smallest level.
    by_size = sorted(server.instances.values(), key=lambda inst: len(inst.frames), reverse=True)
    largest, smallest = by_size[0], by_size[-1]
    if not same_optical_path:
        item = smallest.metadata["00480105"]["Value"][0]
        item["00480107"] = {"vr": "ST", "Value": ["another optical path"]}
    async with server.client() as client:
        (slide,) = await dicomslide.find_slides(client, correct_color=True)
        region = await slide.get_image_region((0, 0), 0, (200, 300))
        np.testing.assert_array_equal(region, truth(0, 0, (200, 300)))
        await slide.get_image_region((0, 0), 1, (100, 100))
    if same_optical_path:
        assert _bulk_sops(server) == [smallest.sop]
    else:
        assert sorted(_bulk_sops(server)) == sorted([largest.sop, smallest.sop])

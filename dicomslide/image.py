"""Tiled images and their total pixel matrices (async).

A :class:`TiledImage` is one DICOM image (a pyramid level, a label, an overview, a segmentation
level...) — one instance, or the parts of a concatenation. A :class:`TotalPixelMatrix` is the
2-D pixel matrix of one channel and focal plane of it, read tile by tile.

Reading a region: the tiles it touches are looked up in the image's
:class:`~dicomslide.geometry.FrameIndex`, their frames are asked of the client's
:class:`~dicomslide.frames.FrameService` (cache, single-flight, coalescing), and each frame is
decoded in the thread pool as soon as it arrives and pasted straight into the output array.

Fill values
-----------
Pixels with no frame (missing tiles of TILED_SPARSE images, slide regions outside the scanned
area) are white (255 or the maximum value) for colour images and 0 for monochrome images,
segmentations and parametric maps. So are pixels past Total Pixel Matrix Rows/Columns inside
edge frames: converters pad those frames with black, white or leftovers, and that padding is
never copied (:func:`dicomslide.geometry.iter_tiles_in_region` clips to the matrix).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import numpy as np
from pydicom import Dataset

from dicomslide._args import int_pair
from dicomslide._tags import (
    DIMENSION_ORGANIZATION_TYPE,
    FRAME_OF_REFERENCE_UID,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    TOTAL_PIXEL_MATRIX_COLUMNS,
    TOTAL_PIXEL_MATRIX_ROWS,
)
from dicomslide.codecs import PixelFormat, decode_frame
from dicomslide.color import ColorTransform, get_color_transform
from dicomslide.coordinates import ImageGeometry
from dicomslide.enums import ChannelTypes
from dicomslide.errors import IndexRangeError, InvalidDataError, RegionError, UsageError
from dicomslide.frames import DecodedTileCache, FrameService, InstanceRef
from dicomslide.geometry import (
    FrameIndex,
    find_focal_plane_index,
    get_channel_identifiers,
    get_channel_items,
    get_image_focal_plane_offsets,
    iter_tiles_in_region,
)
from dicomslide.perframe import frame_positions_known, get_value
from dicomslide.runtime import as_source, decode_queue, frame_service
from dicomslide.sources.dicomjson import BULKDATA_URIS_ATTR as BULKDATA_URIS_ATTRIBUTE
from dicomslide.sources.protocol import EncodedFrame, Source
from dicomslide.summary import cached, floats, register, restored, summarised
from dicomslide.utils import (
    PARAMETRIC_MAP_SOP_CLASS_UID as _PARAMETRIC_MAP_SOP_CLASS,
    SEGMENTATION_SOP_CLASS_UIDS as _SEGMENTATION_SOP_CLASSES,
    get_label_map_background,
    is_label_map,
)

__all__ = ["ImageReader", "TiledImage", "TotalPixelMatrix"]

#: Largest region one read may allocate; larger requests raise RegionError instead of
#: exhausting memory.
MAX_REGION_BYTES = 4 * 2**30


def _check_index(value: int, count: int, what: str, where: str) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool):
        raise RegionError(f"{what} must be an integer, got {value!r}.")
    if not 0 <= value < count:
        raise IndexRangeError(
            f"{what} {value} is out of range for {where}: valid is 0..{count - 1}."
        )
    return int(value)


@summarised("icc_uri")
def _icc_profile_uri(ds: Dataset) -> str | None:
    uri = None
    for item in ds.get("OpticalPathSequence", []):
        if item.get("ICCProfile"):
            return None
        uri = uri or getattr(item, BULKDATA_URIS_ATTRIBUTE, {}).get("00282000")
    if uri is None and not ds.get("ICCProfile"):
        uri = getattr(ds, BULKDATA_URIS_ATTRIBUTE, {}).get("00282000")
    return uri


@summarised("channel_count")
def _channel_count(ds: Dataset) -> int:
    return len(get_channel_items(ds))


def _geometry_fields(geometry: ImageGeometry) -> list[Any]:
    return [geometry.origin, geometry.orientation, geometry.pixel_spacing]


def _geometry_of(fields: list[Any]) -> ImageGeometry:
    return restored(ImageGeometry, map(floats, fields))


def _format_fields(fmt: PixelFormat) -> list[Any]:
    return [getattr(fmt, name) for name in PixelFormat.__dataclass_fields__]


# What opening an image reads from its metadata, answered by the local index's summaries
# (see dicomslide.summary).
# The pixel format is checked again (it sizes buffers), the geometry is not (see restored).
register("format", PixelFormat.from_dataset, _format_fields, lambda v: PixelFormat(*v))
register("geometry", ImageGeometry.from_dataset, _geometry_fields, _geometry_of)


class ImageReader:
    """Reads a tiled image: what the image and all its total pixel matrices share.

    Holds the image's source, metadata of every concatenation part, pixel format, frame index,
    colour transform and ICC profile, each computed once. :attr:`TiledImage.reader` gives it;
    prefetching, tile iteration and the OpenSlide layer use it to reach the frame index and
    the profile without a second copy.

    Parameters
    ----------
    source: dicomslide.sources.protocol.Source
        Where the frames and bulk data come from
    parts_metadata: Sequence[pydicom.Dataset]
        Metadata of every part of the image (one unless it is a concatenation)
    correct_color: bool
        Whether colour frames are transformed from their ICC profile to sRGB
    """

    def __init__(
        self,
        source: Source,
        parts_metadata: Sequence[Dataset],
        correct_color: bool,
    ) -> None:
        self.source = source
        self.parts_metadata = list(parts_metadata)
        self.metadata = self.parts_metadata[0]
        self.format = cached(self.metadata, "format", PixelFormat.from_dataset)
        self.correct_color = correct_color
        self.label_map = is_label_map(self.metadata)
        # What label-map pixels without a frame or outside the matrix hold: no segment.
        self.background = get_label_map_background(self.metadata) or 0
        self._index: FrameIndex | None = None
        self._channel_ids: tuple[str, ...] | None = None
        self._planes: tuple[float, ...] | None = None
        self._icc_loaded = False
        self._color: ColorTransform | None = None
        # Another image of the same slide whose profile stands for this one's (see
        # Slide: equal optical path descriptions, smaller instance, cheaper bulk request).
        self.icc_donor: ImageReader | None = None
        self._done: dict[str, Any] = {}
        self._refs: dict[str, InstanceRef] = {}  # per part: made once, not per tile read
        self._running: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = {}
        # Fixed for the image's life; computed once instead of per region read.
        self._fill = self.fill_value()
        self._managed = correct_color and self.is_color()

    def channel_identifiers(self) -> tuple[str, ...]:
        if self._channel_ids is None:
            self._channel_ids = get_channel_identifiers(self.metadata)
        return self._channel_ids

    def focal_plane_offsets(self) -> tuple[float, ...]:
        if self._planes is None:
            self._planes = get_image_focal_plane_offsets(self.parts_metadata)
        return self._planes

    def index(self) -> FrameIndex:
        if self._index is None:
            self._index = FrameIndex.from_metadata(self.parts_metadata)
        return self._index

    def _quick_index(self) -> FrameIndex | None:
        # Without per-frame items to walk (TILED_FULL, or their positions read when the JSON
        # arrived) the index takes 0.2-1.2 ms (5,293 frames), less than the hop to a thread,
        # which cost each of a gather's 340 first reads a shield and a step more (~4 ms).
        if str(get_value(self.metadata, DIMENSION_ORGANIZATION_TYPE, "")) == "TILED_FULL" or all(
            map(frame_positions_known, self.parts_metadata)
        ):
            return self.index()
        return None

    async def aindex(self) -> FrameIndex:
        if self._index is None:
            # Per-frame functional groups of large sparse images take a while to walk.
            self._index = await asyncio.to_thread(FrameIndex.from_metadata, self.parts_metadata)
        return self._index

    async def once(self, key: str, factory: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Result of ``factory``, computed once however many readers ask at the same time."""
        if key in self._done:
            return self._done[key]
        # shield: a reader that is cancelled must not cancel the work others wait for
        return await asyncio.shield(self._once_task(key, factory))

    def _once_task(
        self, key: str, factory: Callable[[], Coroutine[Any, Any, Any]]
    ) -> asyncio.Task[Any]:
        """The running loop's task computing ``key`` (see :meth:`once`); never cancel it."""
        loop = asyncio.get_running_loop()
        entry = self._running.get(key)
        if entry is None or entry[0] is not loop:
            task = loop.create_task(factory())
            entry = self._running[key] = (loop, task)
            # Registered before any waiter's: the value is in _done when they resume.
            task.add_done_callback(functools.partial(self._once_done, key))
        return entry[1]

    def _once_done(self, key: str, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is not None:
            # The next reader tries again.
            if self._running.get(key, (None, None))[1] is task:
                del self._running[key]
        else:
            self._done[key] = task.result()

    def is_color(self) -> bool:
        return self.format.samples_per_pixel == 3

    def fill_value(self) -> int | float:
        if self.label_map:
            return self.background
        if self.is_color():
            return int(np.iinfo(self.format.dtype).max) if self.format.dtype.kind == "u" else 0
        return 0

    async def color_transform(self) -> ColorTransform | None:
        if not (self.correct_color and self.is_color()):
            return None
        if not self._icc_loaded:
            profile = await self.shared_icc_profile()
            self._color = await asyncio.to_thread(get_color_transform, profile)
            self._icc_loaded = True
        return self._color

    async def shared_icc_profile(self) -> bytes:
        """This image's ICC profile, or its donor's, fetched once for every reader.

        Returns
        -------
        bytes
            Profile (empty when the image has none)
        """
        owner = self.icc_donor or self
        profile: bytes = await owner.once("icc", owner.icc_profile)
        return profile

    def icc_profile_uri(self) -> str | None:
        """The BulkDataURI of this image's ICC profile when it is not in the metadata."""
        return _icc_profile_uri(self.metadata)

    async def icc_profile(self) -> bytes:
        """This image's ICC profile bytes (empty when it has none)."""
        uri = self.icc_profile_uri()
        if uri:
            # Over DICOMweb the profile is bulk data, fetched only now that it is needed.
            return bytes(await self.source.retrieve_bulkdata(uri))
        for item in self.metadata.get("OpticalPathSequence", []):
            value = item.get("ICCProfile")
            if value:
                return bytes(value)
        return bytes(self.metadata.get("ICCProfile") or b"")

    def decode_into(
        self,
        frame: EncodedFrame,
        sop_instance_uid: str,
        frame_number: int,
        color: ColorTransform | None,
        out: np.ndarray,
        pastes: Sequence[tuple[tuple[slice, slice], tuple[slice, slice]]],
        decoded: DecodedTileCache | None = None,
        whole: bool = False,
    ) -> None:
        # A tile that fills a contiguous block of the output whole (a one-tile read) is
        # decoded straight into it: no array of its own, no copy (a seventh of a scan's
        # decoding CPU). Caching such a tile needs a copy, so only one-tile reads, whose
        # tiles are cached on their second decode, do it.
        target = None
        if (color is None or color.is_identity) and whole:
            target = _whole_block(out, pastes, self.format)
        tile = decode_frame(
            frame.data,
            frame.transfer_syntax_uid,
            self.format,
            sop_instance_uid=sop_instance_uid,
            frame_number=frame_number,
            out=target,
        )
        if color is not None:
            tile = color.apply(tile)
        if decoded is not None:
            key = (sop_instance_uid, frame_number, self._managed)
            # A tile this read pastes whole waits for a second decode to be cached.
            if whole:
                decoded.offer(key, tile, copy=tile is target)
            else:
                decoded.put(key, tile)
        # A colour transform found not to be the identity after all (checked on a thread)
        # returns a new, corrected array: that one is pasted over the uncorrected pixels.
        if target is None or tile is not target:
            for tile_slices, out_slices in pastes:
                out[out_slices] = tile[tile_slices]

    def segment_number(self, channel: int) -> int:
        identifier = self.channel_identifiers()[channel]
        try:
            return int(identifier)
        except ValueError:
            raise InvalidDataError(
                f"Label map {self.metadata.get('SOPInstanceUID', '?')} has segment "
                f"{channel + 1} with Segment Number {identifier!r}; it must be an integer."
            ) from None

    async def read(
        self,
        channel: int,
        plane: int,
        offset: tuple[int, int],
        size: tuple[int, int],
        *,
        raw: bool = False,
    ) -> np.ndarray:
        """Pixels of a region; pixels outside the matrix or without a frame are filled.

        A channel of a label map is the mask of its segment (1 where the label map holds the
        segment's number, else 0) unless ``raw`` asks for the label map itself.
        """
        if not self.label_map or raw:
            return await self._read_stored(channel, plane, offset, size, self._fill)
        number = self.segment_number(channel)
        # Pixels without a frame must not join the segment, even one numbered like the
        # background when the label map names none (no Pixel Padding Value).
        fill = self.background if number != self.background else number ^ 1
        labels = await self._read_stored(channel, plane, offset, size, fill)
        # Masks are uint8 0/1 like BINARY Segmentations, whatever the label map's bit depth.
        mask: np.ndarray = np.equal(labels, number).view(np.uint8)
        return mask

    async def _read_stored(
        self,
        channel: int,
        plane: int,
        offset: tuple[int, int],
        size: tuple[int, int],
        fill: int | float,
    ) -> np.ndarray:
        # Awaiting once() costs a coroutine per read; the index exists after the first.
        index = self._index
        if index is None:
            index = self._quick_index() or await self.once("index", self.aindex)
        fmt = self.format
        out_samples = 3 if fmt.samples_per_pixel == 3 else fmt.samples_per_pixel
        nbytes = size[0] * size[1] * out_samples * fmt.dtype.itemsize
        if nbytes > MAX_REGION_BYTES:
            raise RegionError(
                f"A region of {size[0]} x {size[1]} pixels would need {nbytes / 2**30:.1f} GiB; "
                f"the limit is {MAX_REGION_BYTES / 2**30:.0f} GiB "
                "(dicomslide.image.MAX_REGION_BYTES). Read it in parts or at a lower level."
            )
        lookup = index.lookup[channel, plane]
        by_frame: dict[int, list[tuple[tuple[slice, slice], tuple[slice, slice]]]] = {}
        covered = 0
        th, tw = index.tile_rows, index.tile_columns
        for tr, tc, tile_sl, out_sl in iter_tiles_in_region(
            offset, size, (th, tw), (index.total_rows, index.total_columns)
        ):
            frame = int(lookup[tr, tc])
            if frame >= 0:
                by_frame.setdefault(frame, []).append((tile_sl, out_sl))
                covered += (out_sl[0].stop - out_sl[0].start) * (out_sl[1].stop - out_sl[1].start)
                last = (tr, tc, tile_sl)
        # Only the tile of a one-tile read (the tile-server pattern) that lands whole in the
        # output waits for a second decode to be cached: a warm re-read of a 2048² region
        # would decode its tiles again (31 against 9 ms).
        whole = -1
        if len(by_frame) == 1:
            tr, tc, (rows, cols) = last
            if rows.stop - rows.start == min(th, index.total_rows - tr * th) and (
                cols.stop - cols.start == min(tw, index.total_columns - tc * tw)
            ):
                whole = next(iter(by_frame))
        shape = (size[0], size[1], out_samples)
        if covered == size[0] * size[1]:
            # Tiles cover every pixel (they never overlap): filling first would write the
            # array twice; for one-tile reads the fill was a third of the main thread's time.
            out = np.empty(shape, dtype=fmt.dtype)
        else:
            out = np.full(shape, fill, dtype=fmt.dtype)
        if not by_frame:
            return out
        decoded = self.source.runtime.decoded_cache
        managed = self._managed
        by_part: dict[str, list[int]] = {}
        parts = {}
        for frame in list(by_frame):
            part, number = index.locate(frame)
            tile = decoded.get((part.sop_instance_uid, number, managed))
            if tile is not None:
                for tile_sl, out_sl in by_frame.pop(frame):
                    out[out_sl] = tile[tile_sl]
                continue
            parts[part.sop_instance_uid] = part
            by_part.setdefault(part.sop_instance_uid, []).append(frame)
        if not by_part:  # every tile came from the decoded cache
            return out
        service: FrameService = frame_service(self.source)
        waiting: dict[asyncio.Future[EncodedFrame], tuple[str, int, int]] = {}
        for uid, frames in by_part.items():
            part = parts[uid]
            numbers = [frame - part.first_frame + 1 for frame in frames]
            ref = self._refs.get(uid)
            if ref is None:  # the index, and so each part, never changes once built
                ref = self._refs[uid] = InstanceRef(
                    part.study_instance_uid,
                    part.series_instance_uid,
                    uid,
                    part.number_of_frames,
                    self.format.frame_nbytes,
                )
            for fut, frame, number in zip(
                service.request(ref, numbers), frames, numbers, strict=True
            ):
                waiting[fut] = (uid, frame, number)
        # The colour transform (an ICC profile that may be bulk data on a server) is needed
        # only to decode: it is loaded while the frames are already being fetched, and a
        # frame that arrives before it waits for it in arrived(). The read itself never
        # awaits it: a shield and a step more for each of a gather's first reads.
        done = self._done
        color: ColorTransform | None = done.get("color")
        loading: asyncio.Task[Any] | None = None
        if "color" not in done:
            loading = self._once_task("color", self.color_transform)
        loop = asyncio.get_running_loop()
        queue = decode_queue()
        finished: asyncio.Future[None] = loop.create_future()
        left = len(waiting)
        # The decode of a read's only frame resolves the read itself: one loop callback
        # and future less per tile of a per-tile scan.
        into = finished if left == 1 else None
        # Made only when a frame arrives unconfirmed (rare): a cache object per read was a
        # lock, two dicts and counters the loop thread built for nothing.
        held: _HeldTiles | None = None

        def decoded_one(job: asyncio.Future[None]) -> None:
            nonlocal left
            if finished.done():
                return
            exc = None if job.cancelled() else job.exception()
            if exc is not None:
                finished.set_exception(exc)
                return
            left -= 1
            if not left:
                finished.set_result(None)

        def arrived(fut: asyncio.Future[EncodedFrame]) -> None:
            # Runs on the loop as each frame arrives: decoding starts at once, without a
            # task per frame or a wait over every frame still missing.
            nonlocal color, loading, held
            if finished.done():  # failed already, or the reader was cancelled
                return
            if loading is not None:  # done: frames are watched once it is (start)
                if loading.cancelled():
                    finished.cancel()
                    return
                exc = loading.exception()
                if exc is not None:  # as awaiting it first would have raised
                    finished.set_exception(exc)
                    return
                color, loading = loading.result(), None
            exc = fut.exception()
            if exc is not None:
                finished.set_exception(exc)
                return
            uid, frame, number = waiting[fut]
            # A frame its source has not confirmed yet decodes now, but its tile is cached
            # only once it is confirmed (below).
            cache: DecodedTileCache = decoded
            if service.is_unsettled((uid, number)):
                if held is None:
                    held = _HeldTiles(decoded.max_bytes)
                cache = held
            job = queue.submit(
                self.decode_into,
                fut.result(),
                uid,
                number,
                color,
                out,
                by_frame[frame],
                cache,
                frame == whole,
                into=into,
            )
            if into is None:
                job.add_done_callback(decoded_one)

        def start(_: object = None) -> None:
            for fut in waiting:
                # Callbacks, never cancellation: other readers may share these futures.
                fut.add_done_callback(arrived)

        # Not from arrived() itself: a closure that refers to itself is a reference cycle
        # that kept every read's output array alive until the cycle collector ran (local
        # 64-task scan of 1,360 tiles: peak RSS 120 -> 212 MB).
        if loading is None or loading.done():
            start()
        else:
            loading.add_done_callback(start)
        await finished
        keys = [(uid, number) for uid, _, number in waiting.values()]
        unsettled = service.settled(keys)
        if unsettled:
            # Frames were decoded before their source confirmed them (FrameService.settled):
            # a frame that turned out wrong fails the read and leaves no decoded tile behind.
            await asyncio.wait(unsettled)
            failed = next((f.exception() for f in unsettled if f.exception() is not None), None)
            if failed is not None:
                raise failed
        if held is not None:
            for key, tile in held.tiles:
                decoded.put(key, tile)
            for key, tile, copy in held.whole:
                decoded.offer(key, tile, copy=copy)
        return out


def _whole_block(
    out: np.ndarray,
    pastes: Sequence[tuple[tuple[slice, slice], tuple[slice, slice]]],
    fmt: PixelFormat,
) -> np.ndarray | None:
    """The block of ``out`` a tile fills whole when it is C-contiguous (full rows), or None."""
    if len(pastes) != 1:
        return None
    (rows, cols), out_slices = pastes[0]
    if rows.start or cols.start or rows.stop != fmt.rows or cols.stop != fmt.columns:
        return None
    block = out[out_slices]
    if not block.flags.c_contiguous or block.shape[2] != fmt.samples_per_pixel:
        return None
    return block


class _HeldTiles(DecodedTileCache):
    """Decoded tiles kept aside until their frames are confirmed (then put in the cache)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self.tiles: list[tuple[tuple[str, int, bool], Any]] = []
        self.whole: list[tuple[tuple[str, int, bool], Any, bool]] = []

    def put(self, key: tuple[str, int, bool], tile: Any) -> None:
        """Keep the tile aside instead of caching it (as :meth:`DecodedTileCache.put` takes).

        Decode threads call this; appending to a list needs no lock.
        """
        self.tiles.append((key, tile))

    def offer(self, key: tuple[str, int, bool], tile: Any, *, copy: bool = False) -> bool:
        """Keep aside a tile pasted whole (as :meth:`DecodedTileCache.offer` takes).

        Returns
        -------
        bool
            Always False: whether it is cached is decided once its frame is confirmed
        """
        self.whole.append((key, tile, copy))
        return False


class TotalPixelMatrix:
    """Total pixel matrix of one channel and focal plane of a tiled image.

    Instances index like NumPy arrays, asynchronously: ``await matrix[:256, 256:512, :]`` gives a
    region (negative indices and clipping exactly as NumPy), while a one-dimensional index gives
    tiles of the flattened tile grid: ``await matrix[0]`` is one tile,
    ``await matrix[[0, 1, 5]]`` and ``await matrix[2:6]`` are stacks of tiles. Tiles at the right
    and bottom edges are returned at full tile size, padded with the fill value (not with the
    padding stored in the frame).

    The matrix of a channel of a label-map Segmentation is the mask of that segment (``uint8``,
    1 where the label map holds the segment's number); :meth:`TiledImage.get_label_map` gives
    the label map itself.

    Methods that take a tile ``index: int`` take the zero-based index of the tile in the
    flattened grid (row by row), from 0 to ``num_tiles - 1``; another integer raises
    :class:`~dicomslide.errors.IndexRangeError`.

    Parameters
    ----------
    client: Any
        A dicomslide client or a ``dicomweb_client.DICOMClient``
    image_metadata: pydicom.Dataset
        Metadata of a tiled DICOM image
    channel_index, focal_plane_index: int, optional
        Zero-based channel and focal plane indices
    max_frame_cache_size: int, optional
        Accepted for compatibility with dicomslide 0.7; frames are cached per client in a
        byte-bounded cache instead (see :func:`dicomslide.get_cache_stats`)
    correct_color: bool, optional
        Whether colour images are transformed from their ICC profile to sRGB
    """

    def __init__(
        self,
        client: Any,
        image_metadata: Dataset,
        channel_index: int = 0,
        focal_plane_index: int = 0,
        max_frame_cache_size: int = 9,
        correct_color: bool = True,
        *,
        _state: ImageReader | None = None,
        _label_map: bool = False,
    ) -> None:
        if _state is None:
            _state = ImageReader(as_source(client), [image_metadata], correct_color)
        self._state = _state
        # The label map itself rather than the mask of one of its segments.
        self._raw = _label_map
        self._channel = _check_index(
            channel_index, len(_state.channel_identifiers()), "Channel index", "this image"
        )
        self._plane = _check_index(
            focal_plane_index,
            len(_state.focal_plane_offsets()),
            "Focal plane index",
            "this image",
        )

    @property
    def _index(self) -> FrameIndex:
        # Built on first use (reads build it off the event loop before they get here).
        return self._state.index()

    @property
    def dtype(self) -> np.dtype[Any]:
        """numpy.dtype: Data type of the pixels (``uint8`` for the segment masks of label maps)."""
        if self._state.label_map and not self._raw:
            return np.dtype(np.uint8)
        return self._state.format.dtype

    @property
    def ndim(self) -> int:
        """int: Number of dimensions (always 3)."""
        return 3

    @property
    def shape(self) -> tuple[int, int, int]:
        """tuple[int, int, int]: Rows, columns and samples per pixel of the whole matrix."""
        return (self._index.total_rows, self._index.total_columns, self._samples)

    @property
    def _samples(self) -> int:
        return self._state.format.samples_per_pixel

    @property
    def size(self) -> int:
        """int: Number of values (rows x columns x samples)."""
        rows, columns, samples = self.shape
        return rows * columns * samples

    @property
    def num_tiles(self) -> int:
        """int: Number of tiles of the tile grid (grid rows x grid columns)."""
        rows, columns = self._index.grid_shape
        return rows * columns

    def __len__(self) -> int:
        return self.num_tiles

    @property
    def tile_shape(self) -> tuple[int, int, int]:
        """tuple[int, int, int]: Rows, columns and samples per pixel of one tile."""
        return (self._index.tile_rows, self._index.tile_columns, self._samples)

    @property
    def tile_size(self) -> int:
        """int: Number of values of one tile."""
        rows, columns, samples = self.tile_shape
        return rows * columns * samples

    @property
    def tile_grid_shape(self) -> tuple[int, int]:
        """tuple[int, int]: Number of tile rows and tile columns."""
        return self._index.grid_shape

    @property
    def tile_grid_positions(self) -> np.ndarray:
        """numpy.ndarray: Zero-based (row, column) grid position of every tile, in flattened order
        (shape (num_tiles, 2)).
        """
        rows, columns = self.tile_grid_shape
        r, c = np.divmod(np.arange(rows * columns), columns)
        return np.stack([r, c], axis=1)

    @property
    def tile_positions(self) -> np.ndarray:
        """numpy.ndarray: Zero-based (row, column) pixel offset of every tile, in flattened order
        (shape (num_tiles, 2)).
        """
        return self.tile_grid_positions * np.array(  # type: ignore[no-any-return]
            [self._index.tile_rows, self._index.tile_columns]
        )

    def _check_tile_index(self, index: int) -> int:
        return _check_index(index, self.num_tiles, "Tile index", "this total pixel matrix")

    def get_tile_grid_position(self, index: int) -> tuple[int, int]:
        """Zero-based (row, column) position of tile `index` in the tile grid."""
        i = self._check_tile_index(index)
        r, c = divmod(i, self.tile_grid_shape[1])
        return r, c

    def get_tile_position(self, index: int) -> tuple[int, int]:
        """Pixel offset of tile `index`: zero-based (row, column) in the total pixel matrix."""
        r, c = self.get_tile_grid_position(index)
        return r * self._index.tile_rows, c * self._index.tile_columns

    def get_tile_bounding_box(self, index: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """Bounding box of tile `index`, clipped to the matrix.

        The box is a zero-based (row, column) offset and a (rows, columns) size.
        """
        r, c = self.get_tile_position(index)
        rows = min(self._index.tile_rows, self._index.total_rows - r)
        columns = min(self._index.tile_columns, self._index.total_columns - c)
        return (r, c), (rows, columns)

    def get_tile_index(
        self,
        position: tuple[int, int] | None = None,
        frame_number: int | None = None,
    ) -> int:
        """Index of a tile given its grid position or its frame number.

        Parameters
        ----------
        position: tuple[int, int] | None, optional
            Zero-based (row, column) grid position
        frame_number: int | None, optional
            One-based frame number in the image (over all parts of a concatenation)

        Returns
        -------
        int
            Zero-based tile index in the flattened grid
        """
        rows, columns = self.tile_grid_shape
        if position is not None:
            r, c = int_pair(position, "Tile grid position")
            _check_index(r, rows, "Tile grid row", "this total pixel matrix")
            _check_index(c, columns, "Tile grid column", "this total pixel matrix")
            return r * columns + c
        if frame_number is not None:
            lookup = self._index.lookup[self._channel, self._plane]
            hits = np.argwhere(lookup == int(frame_number) - 1)
            if len(hits) == 0:
                raise RegionError(
                    f"Frame {frame_number} does not belong to channel {self._channel} and "
                    f"focal plane {self._plane} of this image."
                )
            return int(hits[0][0]) * columns + int(hits[0][1])
        raise RegionError("Either position or frame_number must be given.")

    async def read_region(self, offset: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        """Read a region; pixels outside the matrix are filled (see module notes).

        Parameters
        ----------
        offset: tuple[int, int]
            Zero-based (row, column) of the top-left pixel (may be negative)
        size: tuple[int, int]
            (rows, columns) of the region

        Returns
        -------
        numpy.ndarray
            Array of shape (rows, columns, samples)
        """
        return await self._state.read(self._channel, self._plane, offset, size, raw=self._raw)

    async def read_tiles(self, indices: Sequence[int]) -> np.ndarray:
        """Read whole tiles (edge tiles padded to full size with the fill value).

        Parameters
        ----------
        indices: Sequence[int]
            Zero-based tile indices

        Returns
        -------
        numpy.ndarray
            Array of shape (len(indices), tile rows, tile columns, samples)
        """
        th, tw, _ = self.tile_shape
        tiles = await asyncio.gather(
            *(self.read_region(self.get_tile_position(i), (th, tw)) for i in indices)
        )
        if not tiles:
            return np.empty((0, *self.tile_shape), dtype=self.dtype)
        return np.stack(tiles)

    async def _getitem(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            if not 1 <= len(key) <= 3 or Ellipsis in key:
                raise RegionError(
                    f"Index {key!r} must have 2 or 3 components (rows, columns[, samples])."
                )
            if len(key) == 1:
                return await self._getitem(key[0])
            rows_key, cols_key = key[0], key[1]
            samples_key = key[2] if len(key) == 3 else slice(None)
            row_slice = self._as_slice(rows_key, self.shape[0], "row")
            col_slice = self._as_slice(cols_key, self.shape[1], "column")
            r0, r1, rs = row_slice.indices(self.shape[0])
            c0, c1, cs = col_slice.indices(self.shape[1])
            rows = range(r0, r1, rs)
            cols = range(c0, c1, cs)
            if len(rows) == 0 or len(cols) == 0:
                region = np.empty((len(rows), len(cols), self.shape[2]), dtype=self.dtype)
            else:
                top, bottom = min(rows[0], rows[-1]), max(rows[0], rows[-1]) + 1
                left, right = min(cols[0], cols[-1]), max(cols[0], cols[-1]) + 1
                region = await self.read_region((top, left), (bottom - top, right - left))
                if rs != 1:
                    region = region[np.asarray(rows) - top]
                if cs != 1:
                    region = region[:, np.asarray(cols) - left]
            squeeze = []
            if isinstance(rows_key, int | np.integer):
                squeeze.append(0)
            if isinstance(cols_key, int | np.integer):
                squeeze.append(1)
            region = region[:, :, samples_key]
            if squeeze:
                region = np.squeeze(region, axis=tuple(squeeze))
            return np.ascontiguousarray(region)
        if isinstance(key, int | np.integer) and not isinstance(key, bool):
            i = int(key)
            if i < 0:
                i += self.num_tiles
            tiles = await self.read_tiles([self._check_tile_index(i)])
            return np.asarray(tiles[0])
        if isinstance(key, slice):
            indices = list(range(*key.indices(self.num_tiles)))
            return await self.read_tiles(indices)
        if isinstance(key, list | np.ndarray):
            indices = [
                self._check_tile_index(int(i) + (self.num_tiles if int(i) < 0 else 0))
                for i in np.asarray(key).ravel()
            ]
            return await self.read_tiles(indices)
        raise RegionError(f"Unsupported index {key!r} for a total pixel matrix.")

    @staticmethod
    def _as_slice(key: Any, length: int, what: str) -> slice:
        if isinstance(key, slice):
            return key
        if isinstance(key, int | np.integer) and not isinstance(key, bool):
            i = int(key)
            if not -length <= i < length:
                raise IndexRangeError(
                    f"Index {i} is out of bounds for the {what} axis with size {length}."
                )
            i %= length
            return slice(i, i + 1)
        raise RegionError(f"Unsupported {what} index {key!r}: use an integer or a slice.")

    def __getitem__(self, key: Any) -> Any:
        """Index the matrix; returns an awaitable that resolves to a NumPy array.

        Parameters
        ----------
        key: Any
            A 2- or 3-component tuple of ints/slices (pixel region) or a 1-D tile index (int,
            slice, list of ints)

        Returns
        -------
        Awaitable[numpy.ndarray]
            The pixels
        """
        return self._getitem(key)


class TiledImage:
    """A tiled DICOM image (one instance, or the parts of one concatenation).

    Channels (optical paths, or the segments of a Segmentation) and focal planes are numbered
    from zero. An index or identifier that matches no channel or focal plane raises
    :class:`~dicomslide.errors.IndexRangeError`, a ``ValueError``.

    Parameters
    ----------
    client: Any
        A dicomslide client or a ``dicomweb_client.DICOMClient``
    image_metadata: pydicom.Dataset
        Metadata of a tiled DICOM image
    max_frame_cache_size: int, optional
        Accepted for compatibility with dicomslide 0.7; frames are cached per client in a
        byte-bounded cache instead (see :func:`dicomslide.get_cache_stats`)
    correct_color: bool, optional
        Whether colour images are transformed from their ICC profile to sRGB
    concatenation_parts: Sequence[pydicom.Dataset] | None, optional
        Metadata of every part when the image is a concatenation (``image_metadata`` is then
        one of them)
    """

    def __init__(
        self,
        client: Any,
        image_metadata: Dataset,
        max_frame_cache_size: int = 6,
        correct_color: bool = True,
        concatenation_parts: Sequence[Dataset] | None = None,
    ) -> None:
        parts = list(concatenation_parts) if concatenation_parts else [image_metadata]
        self._state = ImageReader(as_source(client), parts, correct_color)
        self._geometry = cached(self._state.metadata, "geometry", ImageGeometry.from_dataset)
        self._matrices: dict[tuple[int, int], TotalPixelMatrix] = {}

    @property
    def metadata(self) -> Dataset:
        """pydicom.Dataset: Image metadata (of the first part of a concatenation)."""
        return self._state.metadata

    @property
    def reader(self) -> ImageReader:
        """dicomslide.image.ImageReader: Reader shared by the image and its pixel matrices."""
        return self._state

    @property
    def channel_identifiers(self) -> tuple[str, ...]:
        """tuple[str, ...]: Identifier of each channel (optical path identifier or segment number),
        in channel order.
        """
        return self._state.channel_identifiers()

    @property
    def focal_plane_offsets(self) -> tuple[float, ...]:
        """tuple[float, ...]: Z offset (micrometres) of each focal plane, ascending."""
        return self._state.focal_plane_offsets()

    @property
    def frame_index(self) -> FrameIndex:
        """dicomslide.geometry.FrameIndex: Where each tile of each channel and focal plane is
        stored.
        """
        return self._state.index()

    @property
    def sop_instance_uids(self) -> tuple[str, ...]:
        """tuple[str, ...]: SOP Instance UIDs of all parts, in concatenation order."""
        # By tag: answered by a summary without loading the header (dicomslide.summary).
        uids = [get_value(d, SOP_INSTANCE_UID) for d in self._state.parts_metadata]
        return tuple(
            str(d.SOPInstanceUID if uid is None else uid)
            for d, uid in zip(self._state.parts_metadata, uids, strict=True)
        )

    @property
    def frame_of_reference_uid(self) -> str:
        """str: Frame of Reference UID (empty string when the image has none)."""
        return str(get_value(self.metadata, FRAME_OF_REFERENCE_UID, ""))

    @property
    def channel_type(self) -> ChannelTypes:
        """dicomslide.ChannelTypes: Type of the channels of this image."""
        sop_class = str(get_value(self.metadata, SOP_CLASS_UID, ""))
        if sop_class in _SEGMENTATION_SOP_CLASSES:
            return ChannelTypes.SEGMENT
        if sop_class == _PARAMETRIC_MAP_SOP_CLASS:
            return ChannelTypes.PARAMETER
        return ChannelTypes.OPTICAL_PATH

    @property
    def num_channels(self) -> int:
        """int: Number of channels: optical paths, segments or parameters."""
        return _channel_count(self.metadata)

    @property
    def num_focal_planes(self) -> int:
        """int: Number of focal planes."""
        return len(self._state.focal_plane_offsets())

    @property
    def size(self) -> tuple[int, int]:
        """tuple[int, int]: Number of total pixel matrix rows and columns."""
        # By tag, raw values unconverted: opening a slide asks every image for its size a
        # dozen times, and pydicom's keyword lookup costs more than reading the value.
        metadata = self.metadata
        rows = get_value(metadata, TOTAL_PIXEL_MATRIX_ROWS)
        columns = get_value(metadata, TOTAL_PIXEL_MATRIX_COLUMNS)
        return (
            int(metadata.Rows if rows is None else rows),
            int(metadata.Columns if columns is None else columns),
        )

    @property
    def pixel_spacing(self) -> tuple[float, float]:
        """tuple[float, float]: Spacing between rows and between columns in millimetres."""
        return self._geometry.pixel_spacing

    @property
    def geometry(self) -> ImageGeometry:
        """dicomslide.coordinates.ImageGeometry: Mapping between pixel indices and slide
        coordinates.
        """
        return self._geometry

    def _corners(self) -> np.ndarray:
        rows, columns = self.size
        corners = np.array(
            [[-0.5, -0.5], [-0.5, columns - 0.5], [rows - 0.5, -0.5], [rows - 0.5, columns - 0.5]]
        )
        return self._geometry.pixel_to_slide(corners)[:, :2]

    @property
    def physical_offset(self) -> tuple[float, float]:
        """tuple[float, float]: Offset (x, y) in millimetres of the total pixel matrix from the
        origin of the slide coordinate system: the X and Y of the Total Pixel Matrix Origin, as in
        dicomslide 0.7; with the usual orientations this is not the smallest X and Y the image
        covers.
        """
        x, y, _ = self._geometry.origin
        return float(x), float(y)

    @property
    def physical_size(self) -> tuple[float, float]:
        """tuple[float, float]: Extent (width along X, height along Y) of the total pixel matrix
        along the slide X and Y axes in millimetres.
        """
        corners = self._corners()
        extent = corners.max(axis=0) - corners.min(axis=0)
        return float(extent[0]), float(extent[1])

    def get_channel_identifier(self, channel_index: int) -> str:
        """Identifier of a channel: its optical path identifier or segment number."""
        ids = self._state.channel_identifiers()
        return ids[_check_index(channel_index, len(ids), "Channel index", "this image")]

    def get_channel_index(self, channel_identifier: str) -> int:
        """Index of the channel with an identifier (optical path identifier or segment number)."""
        ids = self._state.channel_identifiers()
        try:
            return ids.index(str(channel_identifier))
        except ValueError:
            raise IndexRangeError(
                f"No channel with identifier {channel_identifier!r}; this image has {list(ids)}."
            ) from None

    def get_focal_plane_offset(self, focal_plane_index: int) -> float:
        """Z offset of a focal plane in micrometres."""
        offsets = self._state.focal_plane_offsets()
        i = _check_index(focal_plane_index, len(offsets), "Focal plane index", "this image")
        return offsets[i]

    def get_focal_plane_index(self, focal_plane_offset: float) -> int:
        """Index of the focal plane at a Z offset in micrometres (to within 1 nm)."""
        return find_focal_plane_index(
            self._state.focal_plane_offsets(), focal_plane_offset, "this image"
        )

    def get_total_pixel_matrix(
        self, channel_index: int = 0, focal_plane_index: int = 0
    ) -> TotalPixelMatrix:
        """The :class:`TotalPixelMatrix` of a channel and focal plane."""
        key = (channel_index, focal_plane_index)
        matrix = self._matrices.get(key)
        if matrix is None:
            matrix = TotalPixelMatrix(
                None,
                self.metadata,
                channel_index,
                focal_plane_index,
                _state=self._state,
            )
            self._matrices[key] = matrix
        return matrix

    @property
    def is_label_map(self) -> bool:
        """bool: Whether the image is a Label Map Segmentation, whose pixels are segment numbers
        (or its background value) and whose channels are the masks of its segments.
        """
        return self._state.label_map

    def get_label_map(self, focal_plane_index: int = 0) -> TotalPixelMatrix:
        """Total pixel matrix of the label map itself: the segment number of every pixel.

        Parameters
        ----------
        focal_plane_index: int, optional
            Zero-based focal plane index

        Returns
        -------
        dicomslide.TotalPixelMatrix
            Matrix of stored values (``uint8`` or ``uint16``): segment numbers, and the
            background value (Pixel Padding Value, 0 if none) where no segment is and for
            pixels without a frame; a ``PALETTE COLOR`` label map is not looked up in its
            palette

        Raises
        ------
        dicomslide.errors.UsageError
            When the image is not a label map (see :attr:`is_label_map`)
        """
        if not self._state.label_map:
            raise UsageError(
                f"Image {self.metadata.get('SOPInstanceUID', '?')} (SOP Class UID "
                f"{self.metadata.get('SOPClassUID', '?')}) is not a label-map Segmentation; "
                "only those have a label map."
            )
        key = (-1, focal_plane_index)
        matrix = self._matrices.get(key)
        if matrix is None:
            matrix = TotalPixelMatrix(
                None, self.metadata, 0, focal_plane_index, _state=self._state, _label_map=True
            )
            self._matrices[key] = matrix
        return matrix

    def _check_region(self, offset: Sequence[int], size: Sequence[int]) -> tuple[Any, Any]:
        r, c = int_pair(offset, "Offset")
        h, w = int_pair(size, "Size")
        rows, columns = self.size
        if h < 1 or w < 1:
            raise RegionError(f"Region size must be positive, got (rows, columns) = ({h}, {w}).")
        if not (r >= 0 and c >= 0 and r + h <= rows and c + w <= columns):
            raise RegionError(
                f"Region at (row, column) ({r}, {c}) of size ({h}, {w}) does not fit the "
                f"{rows} x {columns} total pixel matrix: rows must lie in [0, {rows}) and "
                f"columns in [0, {columns})."
            )
        return (r, c), (h, w)

    async def get_image_region(
        self,
        offset: tuple[int, int],
        size: tuple[int, int],
        channel_index: int = 0,
        focal_plane_index: int = 0,
    ) -> np.ndarray:
        """Read a region of the total pixel matrix.

        Parameters
        ----------
        offset: tuple[int, int]
            Zero-based (row, column) of the region's top-left pixel
        size: tuple[int, int]
            (rows, columns) of the region; the region must lie inside the matrix
        channel_index, focal_plane_index: int, optional
            Zero-based channel and focal plane indices

        Returns
        -------
        numpy.ndarray
            Array of shape (rows, columns, samples per pixel)
        """
        matrix = self.get_total_pixel_matrix(channel_index, focal_plane_index)
        (r, c), (h, w) = self._check_region(offset, size)
        return await matrix.read_region((r, c), (h, w))

    def get_slide_offset(self, pixel_indices: tuple[int, int]) -> tuple[float, float]:
        """Slide coordinates of a pixel.

        Parameters
        ----------
        pixel_indices: tuple[int, int]
            Zero-based (row, column) in the total pixel matrix

        Returns
        -------
        tuple[float, float]
            (x, y) in millimetres
        """
        xyz = self._geometry.pixel_to_slide(np.array([int_pair(pixel_indices, "Pixel indices")]))
        return float(xyz[0, 0]), float(xyz[0, 1])

    def get_pixel_indices(self, offset: tuple[float, float]) -> tuple[int, int]:
        """Pixel nearest to a slide position (may lie outside the matrix).

        Parameters
        ----------
        offset: tuple[float, float]
            (x, y) in millimetres

        Returns
        -------
        tuple[int, int]
            Zero-based (row, column)
        """
        rc = self._geometry.slide_to_pixel(np.array([[float(offset[0]), float(offset[1])]]))
        return int(np.rint(rc[0, 0])), int(np.rint(rc[0, 1]))

    def map_pixel_indices_to_slide_coordinates(self, pixel_indices: np.ndarray) -> np.ndarray:
        """Map pixel indices to slide coordinates.

        Parameters
        ----------
        pixel_indices: numpy.ndarray
            Array of shape (n, 2) of zero-based (row, column) indices

        Returns
        -------
        numpy.ndarray
            Array of shape (n, 3) of (x, y, z) coordinates in millimetres
        """
        return self._geometry.pixel_to_slide(np.asarray(pixel_indices, dtype=np.float64))

    def map_slide_coordinates_to_pixel_indices(self, slide_coordinates: np.ndarray) -> np.ndarray:
        """Map slide coordinates to (nearest) pixel indices.

        Parameters
        ----------
        slide_coordinates: numpy.ndarray
            Array of shape (n, 2) or (n, 3) of (x, y[, z]) in millimetres

        Returns
        -------
        numpy.ndarray
            Array of shape (n, 2) of zero-based (row, column) integer indices
        """
        rc = self._geometry.slide_to_pixel(np.asarray(slide_coordinates, dtype=np.float64))
        return np.rint(rc).astype(np.int64)

    def get_rotation(self) -> float:
        """Counterclockwise angle (degrees) that aligns the pixel matrix with the slide axes.

        Returns
        -------
        float
            Angle in degrees
        """
        return self._geometry.rotation_degrees()

    def get_references(self, sop_class_uid: str | None = None) -> list[tuple[str, str, str]]:
        """Instances this image references (source images of derived images).

        Parameters
        ----------
        sop_class_uid: str | None, optional
            Only references to instances of this SOP class

        Returns
        -------
        list[tuple[str, str, str]]
            (Study, Series, SOP Instance UID) of each referenced instance
        """
        ds = self.metadata
        study = str(ds.get("StudyInstanceUID", ""))
        refs: list[tuple[str, str, str]] = []
        for series in ds.get("ReferencedSeriesSequence", []):
            for inst in series.get("ReferencedInstanceSequence", []):
                if sop_class_uid is None or inst.ReferencedSOPClassUID == sop_class_uid:
                    refs.append(
                        (study, str(series.SeriesInstanceUID), str(inst.ReferencedSOPInstanceUID))
                    )
        for keyword in ("ReferencedImageSequence", "SourceImageSequence"):
            for inst in ds.get(keyword, []):
                if sop_class_uid is None or inst.ReferencedSOPClassUID == sop_class_uid:
                    ref = (study, "", str(inst.ReferencedSOPInstanceUID))
                    if ref[2] not in {r[2] for r in refs}:
                        refs.append(ref)
        return refs

    async def get_slide_region(
        self,
        offset: tuple[float, float],
        size: tuple[float, float],
        channel_index: int = 0,
        focal_plane_index: int = 0,
    ) -> np.ndarray:
        """Read a region given in slide coordinates, aligned with the slide axes.

        The returned array's columns run along +X and its rows along +Y of the slide coordinate
        system, one output pixel per image pixel spacing (nearest neighbour). Output pixel
        (i, j) shows the image pixel nearest to slide position (x + j * s, y + i * s).
        Parts outside the scanned area are filled (see module notes).

        Parameters
        ----------
        offset: tuple[float, float]
            (x, y) of the region's corner in millimetres
        size: tuple[float, float]
            Width (along X) and height (along Y) in millimetres
        channel_index, focal_plane_index: int, optional
            Zero-based channel and focal plane indices

        Returns
        -------
        numpy.ndarray
            Array of shape (rows, columns, samples per pixel)
        """
        matrix = self.get_total_pixel_matrix(channel_index, focal_plane_index)
        x0, y0 = float(offset[0]), float(offset[1])
        width, height = float(size[0]), float(size[1])
        if not (width > 0 and height > 0):
            raise RegionError(f"Slide region size must be positive, got {size!r} mm.")
        spacing = float(np.mean(self._geometry.pixel_spacing))
        n_cols = max(1, round(width / spacing))
        n_rows = max(1, round(height / spacing))
        if n_rows * n_cols > 1 << 30:
            raise RegionError(
                f"Slide region of {width} x {height} mm would have {n_rows} x {n_cols} pixels at "
                "this level; choose a lower-resolution level."
            )
        xs = x0 + np.arange(n_cols) * spacing
        ys = y0 + np.arange(n_rows) * spacing
        # Pixel index = A @ (x, y) + b is affine, so its value along each output axis follows
        # from two probes per axis; axis-aligned orientations need only 1-D index vectors.
        probe = self._geometry.slide_to_pixel(
            np.array([[x0, y0], [x0 + spacing, y0], [x0, y0 + spacing]])
        )
        d_col = probe[1] - probe[0]  # change of (row, col) per output column
        d_row = probe[2] - probe[0]  # change of (row, col) per output row
        grid_r = probe[0][0] + np.arange(n_rows)[:, None] * d_row[0] + np.arange(n_cols) * d_col[0]
        grid_c = probe[0][1] + np.arange(n_rows)[:, None] * d_row[1] + np.arange(n_cols) * d_col[1]
        del xs, ys
        ri = np.rint(grid_r).astype(np.int64)
        ci = np.rint(grid_c).astype(np.int64)
        top, bottom = int(ri.min()), int(ri.max()) + 1
        left, right = int(ci.min()), int(ci.max()) + 1
        region = await matrix.read_region((top, left), (bottom - top, right - left))
        return np.ascontiguousarray(region[ri - top, ci - left])

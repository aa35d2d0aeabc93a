"""Adapter that lets any ``dicomweb_client.DICOMClient`` serve as an async :class:`Source`.

``dicomweb_client.DICOMwebClient`` and ``dicomweb_client.DICOMfileClient`` are blocking; each
call runs in a worker thread so the event loop stays free. Frame requests arrive here already
coalesced by :class:`dicomslide.frames.FrameService`, so one ``retrieve_instance_frames`` call
serves many concurrent readers.

The stored bytes are asked for (``application/octet-stream`` with ``transfer-syntax=*``); the
transfer syntax of the answer comes from the instance metadata (Available Transfer Syntax UID or
the file meta information) and, failing both, from the bytes themselves.

A server that cannot cut frames out of an instance (HTTP 400, 406 or 500: Orthanc 1.10 for
HTJ2K, JPEG XL and deflated instances) is asked once for the whole instance
(``retrieve_instance``), whose frames are then cut out here; the last few such instances are
kept, and later frames of them are never asked for again.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import anyio.to_thread
from pydicom import Dataset

from dicomslide._syntaxes import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    RLE_LOSSLESS,
)
from dicomslide.codecs import sniff_transfer_syntax
from dicomslide.errors import NotFoundError, RegionError, SourceError, UnsupportedError
from dicomslide.sources.dicomjson import BULKDATA_URIS_ATTR
from dicomslide.sources.protocol import EncodedFrame
from dicomslide.sources.runtime import SourceRuntime

__all__ = ["ForeignClientSource", "is_foreign_client", "looks_like_rle"]

_STORED_BYTES = (("application/octet-stream", "*"),)
_WHOLE_INSTANCE = (("application/dicom", "*"),)
_INSTANCE_FALLBACK_STATUSES = frozenset({400, 406, 500})
# Whole instances kept for their frames (each as large as the instance).
_INSTANCE_CACHE_SIZE = 4


def looks_like_rle(data: bytes) -> bool:
    """Whether bytes start with a plausible DICOM RLE header.

    The header is 16 little-endian uint32: the segment count (1..15), then each segment's
    offset, the first being 64, ascending and inside the data.

    Parameters
    ----------
    data: bytes
        Frame bytes

    Returns
    -------
    bool
        True for a plausible RLE frame
    """
    if len(data) < 66:
        return False
    header = [int.from_bytes(data[i : i + 4], "little") for i in range(0, 64, 4)]
    count = header[0]
    if not 1 <= count <= 15 or header[1] != 64:
        return False
    offsets = header[1 : count + 1]
    if any(b <= a for a, b in itertools.pairwise(offsets)) or offsets[-1] >= len(data):
        return False
    return all(v == 0 for v in header[count + 1 :])


def is_foreign_client(obj: object) -> bool:
    """Whether an object looks like a ``dicomweb_client.DICOMClient``.

    Parameters
    ----------
    obj: object
        Candidate client

    Returns
    -------
    bool
        True if it has the methods the adapter uses
    """
    return all(
        callable(getattr(obj, name, None))
        for name in (
            "search_for_series",
            "retrieve_series_metadata",
            "retrieve_instance_metadata",
            "retrieve_instance_frames",
        )
    )


def _to_dataset(item: Mapping[str, Any]) -> Dataset:
    uris: dict[str, str] = {}

    def handler(tag: str, vr: str, value: str) -> Any:
        # Bulk data (e.g. the ICC profile) is fetched lazily, not during searches.
        uris[tag.upper()] = value
        return b""

    ds = Dataset.from_json(dict(item), bulk_data_uri_handler=handler)
    if uris:
        # Kept on the dataset so that domain objects can fetch e.g. the ICC profile later.
        object.__setattr__(ds, BULKDATA_URIS_ATTR, uris)
    return ds


def _wrap(error: Exception, what: str) -> SourceError:
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status == 404:
        err: SourceError = NotFoundError(f"{what}: not found ({error})")  # type: ignore[assignment]
    else:
        err = SourceError(f"{what} failed: {error!r}")
    err.__cause__ = error
    return err


def _status(error: SourceError) -> int | None:
    status = getattr(getattr(error.__cause__, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _cut_frames(ds: Dataset, numbers: Sequence[int]) -> list[EncodedFrame]:
    """Frames of a whole instance as stored (deflated data sets come inflated)."""
    from pydicom.encaps import get_frame

    sop = str(ds.get("SOPInstanceUID", ""))
    syntax = str(ds.file_meta.TransferSyntaxUID)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    bad = [n for n in numbers if not 1 <= n <= count]
    if bad:
        raise RegionError(f"frame numbers {bad} outside the valid range [1, {count}] of {sop}")
    if "PixelData" not in ds:
        raise UnsupportedError(f"whole instance {sop} has no Pixel Data element")
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        offsets = None
        if "ExtendedOffsetTable" in ds:
            offsets = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
        return [
            EncodedFrame(
                get_frame(ds.PixelData, n - 1, extended_offsets=offsets, number_of_frames=count),
                syntax,
            )
            for n in numbers
        ]
    bits = int(ds.Rows) * int(ds.Columns) * int(ds.SamplesPerPixel) * int(ds.BitsAllocated)
    if bits % 8:
        raise UnsupportedError(f"frames of {sop} do not start on byte boundaries")
    size = bits // 8
    if syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        syntax = EXPLICIT_VR_LITTLE_ENDIAN  # pydicom inflated the data set
    data = bytes(ds.PixelData)
    return [EncodedFrame(data[(n - 1) * size : n * size], syntax) for n in numbers]


class ForeignClientSource:
    """Async :class:`~dicomslide.sources.Source` over a blocking ``DICOMClient``.

    Parameters
    ----------
    client: dicomweb_client.DICOMClient
        A ``DICOMwebClient``, ``DICOMfileClient`` or any object with the same methods
    cache_max_bytes: int | None, optional
        Budget of the encoded-frame cache (``None``: the default)
    decoded_cache_max_bytes: int | None, optional
        Budget of the decoded-tile cache (``None``: the default)
    """

    def __init__(
        self,
        client: Any,
        *,
        cache_max_bytes: int | None = None,
        decoded_cache_max_bytes: int | None = None,
    ) -> None:
        self.client = client
        self._runtime = SourceRuntime(
            self,
            cache_max_bytes=cache_max_bytes,
            decoded_cache_max_bytes=decoded_cache_max_bytes,
        )
        self._transfer_syntaxes: dict[str, str] = {}
        self._instances: OrderedDict[str, Dataset] = OrderedDict()

    @property
    def runtime(self) -> SourceRuntime:
        """dicomslide.sources.runtime.SourceRuntime: This adapter's caches and frame services."""
        return self._runtime

    async def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        def call() -> Any:
            return fn(*args, **kwargs)

        try:
            return await anyio.to_thread.run_sync(call)
        except Exception as error:  # the foreign client's own error types are unknown here
            raise _wrap(error, what) from error

    async def _search(
        self, level: str, search_filters: Mapping[str, Any] | None, **uids: str | None
    ) -> list[Dataset]:
        # The three QIDO levels differ only in the client method and the UIDs that scope them.
        items = await self._call(
            f"Searching {level}",
            getattr(self.client, f"search_for_{level}"),
            search_filters=dict(search_filters or {}),
            **uids,
        )
        return [_to_dataset(i) for i in items]

    async def search_for_studies(
        self, search_filters: Mapping[str, Any] | None = None
    ) -> list[Dataset]:
        """Search for studies (see :class:`~dicomslide.sources.Source`)."""
        return await self._search("studies", search_filters)

    async def search_for_series(
        self,
        study_instance_uid: str | None = None,
        search_filters: Mapping[str, Any] | None = None,
    ) -> list[Dataset]:
        """Search for series (see :class:`~dicomslide.sources.Source`)."""
        return await self._search("series", search_filters, study_instance_uid=study_instance_uid)

    async def search_for_instances(
        self,
        study_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
        search_filters: Mapping[str, Any] | None = None,
    ) -> list[Dataset]:
        """Search for instances (see :class:`~dicomslide.sources.Source`)."""
        return await self._search(
            "instances",
            search_filters,
            study_instance_uid=study_instance_uid,
            series_instance_uid=series_instance_uid,
        )

    def _remember_syntax(self, ds: Dataset) -> None:
        uid = str(ds.get("SOPInstanceUID", ""))
        syntax = ds.get("AvailableTransferSyntaxUID") or getattr(
            getattr(ds, "file_meta", None), "TransferSyntaxUID", None
        )
        if uid and syntax:
            self._transfer_syntaxes[uid] = str(syntax)

    async def retrieve_series_metadata(
        self, study_instance_uid: str, series_instance_uid: str
    ) -> list[Dataset]:
        """Metadata of every instance of a series (see :class:`~dicomslide.sources.Source`)."""
        items = await self._call(
            f"Retrieving metadata of series {series_instance_uid}",
            self.client.retrieve_series_metadata,
            study_instance_uid,
            series_instance_uid,
        )
        out = [_to_dataset(i) for i in items]
        for ds in out:
            self._remember_syntax(ds)
        return out

    async def retrieve_instance_metadata(
        self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
    ) -> Dataset:
        """Metadata of one instance (see :class:`~dicomslide.sources.Source`)."""
        item = await self._call(
            f"Retrieving metadata of instance {sop_instance_uid}",
            self.client.retrieve_instance_metadata,
            study_instance_uid,
            series_instance_uid,
            sop_instance_uid,
        )
        ds = _to_dataset(item)
        self._remember_syntax(ds)
        return ds

    async def iter_frames(
        self,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_instance_uid: str,
        frame_numbers: Sequence[int],
    ) -> AsyncIterator[tuple[int, EncodedFrame]]:
        """Frames of one instance (see :class:`~dicomslide.sources.Source`)."""
        numbers = list(frame_numbers)
        uids = (study_instance_uid, series_instance_uid, sop_instance_uid)
        instance = self._instances.get(sop_instance_uid)
        if instance is not None:
            self._instances.move_to_end(sop_instance_uid)
            for number, frame in zip(numbers, _cut_frames(instance, numbers), strict=True):
                yield number, frame
            return
        try:
            frames = await self._call(
                f"Retrieving frames {numbers[:10]} of instance {sop_instance_uid}",
                self.client.retrieve_instance_frames,
                *uids,
                frame_numbers=numbers,
                media_types=_STORED_BYTES,
            )
        except SourceError as error:
            if _status(error) not in _INSTANCE_FALLBACK_STATUSES or not callable(
                getattr(self.client, "retrieve_instance", None)
            ):
                raise
            instance = await self._whole_instance(uids, error)
            for number, frame in zip(numbers, _cut_frames(instance, numbers), strict=True):
                yield number, frame
            return
        if len(frames) != len(numbers):
            raise SourceError(
                f"Client returned {len(frames)} frames of instance {sop_instance_uid}; "
                f"asked for {len(numbers)}."
            )
        known = self._transfer_syntaxes.get(sop_instance_uid)
        for number, data in zip(numbers, frames, strict=True):
            # Foreign clients drop the part headers that name the syntax; the metadata rarely
            # carries it, so the bytes are the last resort.
            syntax = known or sniff_transfer_syntax(data)
            if syntax is None:
                syntax = RLE_LOSSLESS if looks_like_rle(data) else EXPLICIT_VR_LITTLE_ENDIAN
            yield number, EncodedFrame(bytes(data), syntax)

    async def _whole_instance(self, uids: tuple[str, str, str], refused: SourceError) -> Dataset:
        sop = uids[2]
        try:
            ds: Dataset = await self._call(
                f"Retrieving instance {sop}",
                self.client.retrieve_instance,
                *uids,
                media_types=_WHOLE_INSTANCE,
            )
        except SourceError as error:
            raise SourceError(
                f"{refused} Retrieving the whole instance instead failed too: {error}"
            ) from error
        self._instances[sop] = ds
        while len(self._instances) > _INSTANCE_CACHE_SIZE:
            self._instances.popitem(last=False)
        return ds

    async def retrieve_bulkdata(self, url: str) -> bytes:
        """Bulk data behind a URI (see :class:`~dicomslide.sources.Source`)."""
        parts = await self._call(
            f"Retrieving bulk data {url}",
            self.client.retrieve_bulkdata,
            url,
            media_types=("application/octet-stream",),
        )
        return b"".join(parts)

    async def aclose(self) -> None:
        """Nothing to release: the foreign client belongs to the caller."""

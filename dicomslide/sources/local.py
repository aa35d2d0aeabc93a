"""Async source of DICOM data stored as Part 10 files in a local folder.

:class:`DICOMfileClient` implements :class:`dicomslide.sources.Source` for a folder. Every
file operation (walking the folder, ``stat``, header parsing, frame reads) runs in a worker
thread through :func:`asyncio.to_thread` (the loop's default executor; importing anyio's
thread machinery costs ~13 ms on first use, a third of opening a slide); the event loop never
blocks on the disk.

Index
-----
On first use (once, however many tasks ask concurrently) the client surveys the folder
(recursively unless ``recursive=False``; see :mod:`dicomslide.sources.folder_survey`) and
reads the header of each new or changed file (:mod:`dicomslide.sources.raw_header`, or
``pydicom.dcmread(stop_before_pixels=True)`` for anything unusual), keeping the UIDs, the
transfer syntax, the attributes searches can filter on and the header itself (see
:mod:`dicomslide.sources.header_codec`). Files without the ``DICM`` prefix are skipped and
counted; files that fail to parse are recorded with the reason (see
:meth:`DICOMfileClient.index_summary`); neither stops the indexing.

The index is persisted as one SQLite database in ``index_dir`` (default:
``$XDG_CACHE_HOME/dicomslide/index``, else ``~/.cache/dicomslide/index``), named by a SHA-256
of the resolved folder path and the ``recursive`` flag (see
:mod:`dicomslide.sources.local_index`). If that directory is not writable the index lives in
memory only. Several processes may open the same folder at once: writes are transactions
under SQLite's lock, and each names the file identity it was computed for. A large header
(a sparse image's per-frame items) is written while the slide opens, in one transaction as
well (see :meth:`dicomslide.sources.local_index.IndexStore.save_later`).

Invalidation: every client lists the directories that changed and ``stat``\\ s every file
once when it indexes; a file whose identity (size, modification time, inode, status-change
time) differs from the persisted entry, or that is new, is parsed again; entries of files
that no longer exist are dropped. When every directory and file is as the index's snapshot
holds it (:mod:`dicomslide.sources.index_snapshot`), no row is loaded up front: searches and
slides load the rows they ask for (an exact filter on a few keywords through an SQLite index,
a series or an instance by its UIDs), in worker threads; only rows as the snapshot holds
them are used: a file another process indexed again since the open (it changed) is left out,
as is a row damaged since, so a client never mixes the folder at its open with later rows.
Unchanged files are never read again to find or open slides. After that the client works on
this snapshot; when frames are read the file is ``fstat``\\ ed again, and a changed file gets
its frame table rebuilt.

Metadata
--------
Metadata comes from the headers stored in the index, all files of one request in one
worker-thread job (from the files themselves when the index is not persisted). The index also
remembers, per file identity, which headers converted cleanly (they are not converted again)
and the distinct Z offsets of images with per-frame items (searching thousands of per-frame
items for them is a good part of opening a slide).

A file whose pixel data is Float Pixel Data (7FE0,0008) or Double Float Pixel Data
(7FE0,0009) gets that element, with an empty value, in its metadata (as DICOM JSON metadata
has it with a BulkDataURI), so that :meth:`dicomslide.codecs.PixelFormat.from_dataset` knows
the samples are floats.

Frames
------
Frames are located without reading the whole file (see :mod:`dicomslide.sources.part10`):
offset tables or one scan of item headers for encapsulated pixel data (without an offset
table, only as far as the frames read so far: :mod:`dicomslide.sources.walked_layout`),
arithmetic for native pixel data (Float and Double Float Pixel Data included). The frame
table of an instance is cached in memory, keyed by SOP Instance UID and the file's
``(size, mtime_ns)``, and that of an encapsulated file also in the index, by file identity
(once complete). Deflated files are inflated once into an anonymous temporary file (a
bounded number are kept). Frames of one request are read in file order with ``os.pread``,
several per worker-thread job.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
import os
import re
import threading
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, ClassVar, Final

import pydicom
from pydicom import DataElement, Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag

from dicomslide._docs import borrowed_doc
from dicomslide._gc import collector_paused
from dicomslide._tags import (
    DIMENSION_ORGANIZATION_TYPE as _DIMENSION_ORGANIZATION_TYPE,
    NUMBER_OF_FRAMES as _NUMBER_OF_FRAMES,
    PER_FRAME_FUNCTIONAL_GROUPS as _PER_FRAME_FUNCTIONAL_GROUPS,
    SOP_INSTANCE_UID as _SOP_INSTANCE_UID,
)
from dicomslide.errors import (
    DicomSlideError,
    InvalidDataError,
    NotFoundError,
    RegionError,
    UnsupportedError,
    UsageError,
)
from dicomslide.perframe import (
    extract_frame_positions,
    extract_z_offsets,
    get_value,
    remember_z_offsets,
)
from dicomslide.sources import part10
from dicomslide.sources.header_codec import decode_header
from dicomslide.sources.local_index import (
    INDEX_KEYWORDS,
    SEARCHABLE,
    SERIES_KEYWORDS,
    STUDY_KEYWORDS,
    FolderIndex,
    IndexedInstance,
    IndexStore,
    IndexSummary,
    ZOffsets,
    build_index,
    next_pixel_tag,
)
from dicomslide.sources.protocol import EncodedFrame, Source
from dicomslide.sources.qido_match import is_exact, normalize_keyword, value_matches
from dicomslide.sources.runtime import SourceRuntime
from dicomslide.sources.stored_rows import AsAsked
from dicomslide.sources.walked_layout import open_frame_layout
from dicomslide.summary import SummaryDataset, parse_summary, summarize

__all__ = ["DICOMfileClient", "IndexSummary"]

_METADATA_CACHE_SIZE: Final = 256
_FRAME_TABLE_CACHE_SIZE: Final = 1024
_INFLATED_CACHE_SIZE: Final = 4
_READ_JOB_BYTES: Final = 16 << 20
_READ_JOB_FRAMES: Final = 64
_COALESCE_GAP: Final = 4096
_COALESCE_BYTES: Final = 8 << 20
#: Series looked up one by one in a warm index's database; more are loaded all at once.
_FEW_SERIES: Final = 16


@dataclass
class _FrameSource:
    stat_key: tuple[int, int]
    layout: part10.FrameLayout
    transfer_syntax_uid: str
    inflated: BinaryIO | None = None


@dataclass
class _ReadState:
    """Per-request file handle, touched only by one worker thread at a time."""

    path: str
    sop_uid: str
    source: _FrameSource
    fd: int | None = None
    owns_fd: bool = False


class _StaleFrameTableError(Exception):
    """The file changed since its frame table was built."""


# --------------------------------------------------------------------------------------------
# Blocking helpers, run in worker threads. Module-level so tests can observe them.
# --------------------------------------------------------------------------------------------

_seek_lock = threading.Lock()


def _pread(fd: int, size: int, offset: int) -> bytes:
    """Read up to ``size`` bytes at ``offset``; short only at the end of the file."""
    if not hasattr(os, "pread"):  # pragma: no cover - Windows
        with _seek_lock:
            os.lseek(fd, offset, os.SEEK_SET)
            return os.read(fd, size)
    data = os.pread(fd, size, offset)
    if len(data) == size or not data:
        return data
    # Regular files only return short reads at EOF, but signals may interrupt large reads.
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _read_metadata(
    path: str,
    validated: tuple[int, int] | None = None,
    stored: tuple[bytes, int | None] | None = None,
) -> tuple[Dataset, bool]:
    """Read a file's metadata; return it and whether every value was converted (validated).

    ``validated`` is the ``(size, mtime_ns)`` at which this file's header last converted
    cleanly; when the open file still has that size and time the conversion is skipped.
    ``stored`` is the header the index holds for the file as indexed, and the tag after it:
    then the file is not read at all (the index checked its identity when it was built).
    """
    decoded = None
    if stored is not None:
        try:
            decoded = decode_header(stored[0])
        except ValueError:
            validated = None  # a damaged index entry: the file is read (and checked) instead
    if decoded is not None and stored is not None:
        ds, pixel_tag = decoded, stored[1]
        current = validated
    else:
        with open(path, "rb") as fp:
            st = os.fstat(fp.fileno())
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
            pixel_tag = next_pixel_tag(fp, ds)
        current = (st.st_size, st.st_mtime_ns)
    float_bits = None if pixel_tag is None else part10.FLOAT_BITS_ALLOCATED.get(pixel_tag)
    if pixel_tag is not None and float_bits is not None and pixel_tag not in ds:
        # The metadata has no pixel data, but whether samples are floats is known only from
        # which pixel data element the file has. Record it as DICOM JSON metadata does for a
        # BulkDataURI: the element, with an empty value (see PixelFormat.from_dataset).
        ds.add_new(pixel_tag, "OF" if float_bits == 32 else "OD", b"")
    if validated is not None and validated == current:
        # The same bytes converted cleanly before (remembered in the index): converting
        # them again would cost ~1 ms per instance, most of opening a slide.
        return ds, False
    # pydicom parses element values lazily: convert them all now, so that a corrupt element
    # (an unknown VR, say) fails here as InvalidDataError, not later as NotImplementedError
    # or ValueError in whatever code reads the attribute first. The per-frame functional
    # groups are the exception: thousands of items that dicomslide.perframe reads from the
    # raw bytes (converting them would cost about 0.2 ms a frame) and validates itself.
    for tag in list(ds.keys()):
        if tag == _PER_FRAME_FUNCTIONAL_GROUPS:
            continue
        element = ds[tag]
        if element.VR == "SQ":
            for item in element.value:
                item.walk(lambda _ds, _elem: None)
    return ds, True


def _find_z_offsets(ds: Dataset) -> ZOffsets | None:
    """An image's distinct Z offsets as the slide will ask for them, if worth remembering.

    Only images whose per-frame items are still raw bytes are searched (the slow case);
    anything that fails is left to be reported where the offsets are needed.
    """
    if not isinstance(ds.get_item(_PER_FRAME_FUNCTIONAL_GROUPS), RawDataElement):
        return None
    if str(get_value(ds, _DIMENSION_ORGANIZATION_TYPE, "")) == "TILED_FULL":
        return None  # planes come from the shared groups (see get_focal_plane_offsets)
    try:
        # As dicomslide.geometry.get_focal_plane_offsets asks.
        number_of_frames = int(get_value(ds, _NUMBER_OF_FRAMES, 1) or 1)
        # The slide needs every frame's position of such an image: parsed now (and kept on
        # the data set), the Z offsets come from them instead of a search of their own.
        extract_frame_positions(ds, number_of_frames)
        offsets = sorted(extract_z_offsets(ds, number_of_frames))
    except (DicomSlideError, TypeError, ValueError):
        return None
    if not all(math.isfinite(z) for z in offsets):
        return None
    return number_of_frames, tuple(offsets)


def _build_frame_source(path: str) -> _FrameSource:
    with open(path, "rb") as fp:
        st = os.fstat(fp.fileno())
        fd = fp.fileno()
        header = part10.read_part10_header(fp, specific_tags=part10.LAYOUT_TAGS)
        if header.transfer_syntax_uid != part10.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
            # Frames are located as reads need them when that is exact (see walked_layout).
            layout = open_frame_layout(
                header, lambda offset, size: _pread(fd, size, offset), st.st_size
            )
            return _FrameSource((st.st_size, st.st_mtime_ns), layout, header.transfer_syntax_uid)
        # The temporary file lives in the cache with the layout that points into it.
        inflated, inflated_size, dataset, pixel_data = part10.inflate_layout(
            fp, header.body_offset
        )
        try:
            if pixel_data is None:
                raise InvalidDataError("no Pixel Data element")
            tmp_fd = inflated.fileno()
            layout = part10.build_frame_layout(
                dataset,
                pixel_data,
                part10.EXPLICIT_VR_LITTLE_ENDIAN,
                lambda offset, size: _pread(tmp_fd, size, offset),
                inflated_size,
            )
        except BaseException:
            inflated.close()
            raise
        return _FrameSource(
            (st.st_size, st.st_mtime_ns), layout, part10.EXPLICIT_VR_LITTLE_ENDIAN, inflated
        )


def _read_frames(
    state: _ReadState, reads: Sequence[tuple[int, int, list[tuple[int, int, int]]]]
) -> list[tuple[int, bytes]]:
    """Read a group of coalesced ranges and cut them into frames (in a worker thread)."""
    source = state.source
    if state.fd is None:
        if source.inflated is not None:
            st = os.stat(state.path)
            state.fd = source.inflated.fileno()
            size = os.fstat(state.fd).st_size
        else:
            state.fd = os.open(state.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            state.owns_fd = True
            st = os.fstat(state.fd)
            size = st.st_size
        if (st.st_size, st.st_mtime_ns) != source.stat_key:
            raise _StaleFrameTableError
    else:
        size = os.fstat(state.fd).st_size
    out: list[tuple[int, bytes]] = []
    for offset, length, members in reads:
        if offset + length > size:
            numbers = ", ".join(str(m[0]) for m in members)
            raise InvalidDataError(
                f"{state.path}, SOP Instance UID {state.sop_uid}, frame {numbers}: bytes "
                f"{offset}-{offset + length} lie beyond the end of the file ({size} bytes); "
                "file truncated?"
            )
        data = _pread(state.fd, length, offset)
        for number, frame_offset, frame_length in members:
            start = frame_offset - offset
            raw = data if len(members) == 1 else data[start : start + frame_length]
            try:
                out.append((number, source.layout.extract(number, raw)))
            except InvalidDataError as exc:
                raise InvalidDataError(
                    f"{state.path}, SOP Instance UID {state.sop_uid}, frame {number}: {exc}"
                ) from exc
    return out


# --------------------------------------------------------------------------------------------
# Search helpers
# --------------------------------------------------------------------------------------------


def _compile_filters(search_filters: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    filters: list[tuple[str, Any]] = []
    for key, wanted in (search_filters or {}).items():
        keyword = normalize_keyword(str(key))
        if keyword not in SEARCHABLE:
            raise UnsupportedError(
                f"cannot search a local folder on {key!r}; supported keywords: "
                f"{', '.join(sorted(SEARCHABLE))}"
            )
        filters.append((keyword, wanted))
    return filters


def _matches(instance: IndexedInstance, filters: Sequence[tuple[str, Any]]) -> bool:
    return all(
        value_matches(keyword, instance.attrs.get(keyword), wanted) for keyword, wanted in filters
    )


def _preselect(index: FolderIndex, filters: Sequence[tuple[str, Any]]) -> list[IndexedInstance]:
    """The instances an exact filter allows (all of them without one); still to be matched.

    May read the index's database (see :meth:`FolderIndex.off_loop`).
    """
    for keyword, wanted in filters:
        if is_exact(keyword, wanted):
            return index.having(keyword, wanted)
    return list(index.instances.values())


def _series_members(
    index: FolderIndex, keys: Iterable[tuple[str, str]]
) -> list[list[IndexedInstance]]:
    """The instances of each series (may read the index's database, as above)."""
    keys = list(keys)
    if index.stored is not None and len(keys) > _FEW_SERIES:
        index.stored.all_series()  # one query, not one per series (~0.2 ms each)
    return [index.series[key] for key in keys]


def _none_last(value: Any) -> tuple[bool, Any]:
    return (value is None, value if value is not None else 0)


def _instance_sort_key(instance: IndexedInstance) -> tuple[Any, ...]:
    return (
        instance.study_uid,
        instance.series_uid,
        _none_last(instance.attrs.get("InstanceNumber")),
        instance.sop_uid,
    )


#: VRs whose plain ASCII values are handed to pydicom as read (converted on first access).
_RAW_VRS: Final = frozenset({"UI", "CS", "SH", "LO", "IS"})
_ELEMENT_INFO: Final = {k: (int(tag_for_keyword(k) or 0), dictionary_VR(k)) for k in SEARCHABLE}


def _put(dataset: Dataset, attrs: Mapping[str, Any], keywords: Iterable[str]) -> None:
    for keyword in keywords:
        value = attrs.get(keyword)
        if value is None:
            continue
        tag, vr = _ELEMENT_INFO[keyword]
        text = None if isinstance(value, list) else str(value)
        if vr in _RAW_VRS and text is not None and text.isascii() and text.isprintable():
            # Search results are built for every matching series (thousands in an archive)
            # and mostly only their UIDs are read: an element as read costs a tuple, a
            # converted one ~20 µs. The value is what the file held.
            data = text.encode("ascii")
            if len(data) % 2:
                data += b"\0" if vr == "UI" else b" "
            dataset[tag] = RawDataElement(BaseTag(tag), vr, len(data), data, 0, False, True)
            continue
        # The values are what the file holds; validating them again here would turn an
        # invalid one (a TM of "\x0030405", say) into a warning per search, and into an
        # untyped UserWarning exception where warnings are errors.
        dataset[tag] = DataElement(tag, vr, value, validation_mode=pydicom.config.IGNORE)


def _to_path(url: str | os.PathLike[str]) -> Path:
    text = os.fspath(url)
    if text.startswith("file:"):
        parsed = urllib.parse.urlsplit(text)
        if parsed.netloc not in ("", "localhost"):
            raise UnsupportedError(f"file URL with a remote host is not supported: {text}")
        return Path(urllib.request.url2pathname(parsed.path))
    return Path(text)


class DICOMfileClient:
    """Async :class:`~dicomslide.sources.Source` reading DICOM Part 10 files in a folder.

    Parameters
    ----------
    url: str | os.PathLike[str]
        The folder, as a path or a ``file:///`` URL
    index_dir: str | os.PathLike[str] | None, optional
        Folder for the persisted index (default: ``$XDG_CACHE_HOME/dicomslide/index`` or
        ``~/.cache/dicomslide/index``)
    recursive: bool, optional
        Whether to index sub-folders too
    cache_max_bytes: int | None, optional
        Budget of the encoded-frame cache shared by all slides of this client (``None``: the
        default, 512 MiB)
    decoded_cache_max_bytes: int | None, optional
        Budget of the decoded-tile cache (``None``: the default, 128 MiB; 0 turns it off)

    Notes
    -----
    Use as ``async with DICOMfileClient(path) as client: ...`` or call :meth:`aclose`.
    Datasets returned by the metadata methods are cached and shared between calls: do not
    modify them. See the module documentation for how the index is kept up to date.
    """

    #: find_slides pauses the cyclic collector for the whole search of this source: its
    #: waits are short hops to worker threads, never the network (see dicomslide.discovery).
    _search_in_one_burst: ClassVar[bool] = True

    def __init__(
        self,
        url: str | os.PathLike[str],
        *,
        index_dir: str | os.PathLike[str] | None = None,
        recursive: bool = True,
        cache_max_bytes: int | None = None,
        decoded_cache_max_bytes: int | None = None,
    ) -> None:
        self._runtime = SourceRuntime(
            self,
            cache_max_bytes=cache_max_bytes,
            decoded_cache_max_bytes=decoded_cache_max_bytes,
        )
        # abspath, not resolve(): no file system access outside worker threads.
        self._base_dir = Path(os.path.abspath(_to_path(url).expanduser()))
        self._index_dir = Path(index_dir) if index_dir is not None else None
        self._recursive = recursive
        self._index: FolderIndex | None = None
        self._index_lock = asyncio.Lock()
        self._closed = False
        self._metadata: OrderedDict[str, Dataset] = OrderedDict()
        # The persisted index: stored headers, which converted cleanly, Z offsets found.
        self._store = IndexStore(None, None, set(), {})
        self._frame_sources: OrderedDict[str, _FrameSource] = OrderedDict()
        self._frame_source_locks: dict[str, asyncio.Lock] = {}
        # Summaries to look up, and the job looking them up (see _read_summaries).
        self._summaries_wanted: list[IndexedInstance] = []
        self._summaries_job: asyncio.Future[None] | None = None

    @property
    def runtime(self) -> SourceRuntime:
        """dicomslide.sources.runtime.SourceRuntime: This client's caches and frame services."""
        return self._runtime

    @property
    def closed(self) -> bool:
        """bool: Whether :meth:`aclose` was called (every later call raises)."""
        return self._closed

    @property
    def base_dir(self) -> Path:
        """pathlib.Path: The (absolute) folder this client reads."""
        return self._base_dir

    async def __aenter__(self) -> DICOMfileClient:
        """Enter the context; indexing still happens lazily on first use.

        Returns
        -------
        DICOMfileClient
            This client
        """
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the client (see :meth:`aclose`).

        Parameters
        ----------
        exc_type: type[BaseException] | None
            Exception type, if the block raised
        exc: BaseException | None
            Exception, if the block raised
        tb: types.TracebackType | None
            Traceback, if the block raised
        """
        await self.aclose()

    async def aclose(self) -> None:
        """Drop caches and temporary files; any later call raises :class:`UsageError`."""
        self._closed = True
        self._metadata.clear()
        # Writes what the store batched; a transaction may wait for another process's lock.
        await asyncio.to_thread(self._store.close)
        sources = list(self._frame_sources.values())
        self._frame_sources.clear()
        for source in sources:
            if source.inflated is not None:
                source.inflated.close()

    async def index_summary(self) -> IndexSummary:
        """Index the folder if not done yet and report what was found.

        Returns
        -------
        IndexSummary
            Counts, failures and where the index is persisted
        """
        summary = (await self._ensure_index()).summary
        if self._store.save_error is not None:  # the write deferred by build_index failed
            return dataclasses.replace(
                summary, index_file=None, persist_error=self._store.save_error
            )
        return summary

    # ----------------------------------------------------------------------------------------
    # Searches
    # ----------------------------------------------------------------------------------------

    async def search_for_studies(
        self, search_filters: Mapping[str, Any] | None = None
    ) -> list[Dataset]:
        """Search for studies.

        A study matches if any of its instances matches every filter (exact string match,
        ``*`` and ``?`` wildcards, ``"low-high"`` ranges for dates and times, a list for
        any-of).

        Parameters
        ----------
        search_filters: Mapping[str, Any] | None, optional
            Attribute keywords (or tags as ``"00100020"``) mapped to values that must match

        Returns
        -------
        list[pydicom.Dataset]
            One dataset per matching study with study-level attributes, ordered by
            Study Instance UID

        Raises
        ------
        dicomslide.errors.UnsupportedError
            If a keyword is not in the index
        """
        filters = _compile_filters(search_filters)
        index = await self._ensure_index()
        candidates = await index.off_loop(_preselect, index, filters)
        matching = {i.study_uid for i in candidates if _matches(i, filters)}
        studies: dict[str, list[IndexedInstance]] = {}
        everything = await index.off_loop(_preselect, index, [])
        found = (i for i in everything if i.study_uid in matching)
        for instance in sorted(found, key=_instance_sort_key):
            studies.setdefault(instance.study_uid, []).append(instance)
        results = []
        for members in studies.values():
            ds = Dataset()
            _put(ds, members[0].attrs, STUDY_KEYWORDS)
            modalities = sorted(
                {str(m.attrs["Modality"]) for m in members if "Modality" in m.attrs}
            )
            if modalities:
                ds.ModalitiesInStudy = modalities
            ds.NumberOfStudyRelatedSeries = len({m.series_uid for m in members})
            ds.NumberOfStudyRelatedInstances = len(members)
            results.append(ds)
        return results

    @borrowed_doc(search_for_studies, only=("Raises",))
    @borrowed_doc(Source.search_for_series, only=("Parameters",))
    async def search_for_series(
        self,
        study_instance_uid: str | None = None,
        search_filters: Mapping[str, Any] | None = None,
    ) -> list[Dataset]:
        """Search for series, optionally within one study.

        A series matches if any of its instances matches every filter (see
        :meth:`search_for_studies`).

        Returns
        -------
        list[pydicom.Dataset]
            One dataset per matching series with study- and series-level attributes, ordered
            by Study Instance UID, Series Number and Series Instance UID
        """
        filters = _compile_filters(search_filters)
        index = await self._ensure_index()
        candidates = await index.off_loop(_preselect, index, filters)
        matching = {
            (i.study_uid, i.series_uid)
            for i in candidates
            if (study_instance_uid is None or i.study_uid == study_instance_uid)
            and _matches(i, filters)
        }
        series = await index.off_loop(_series_members, index, matching)
        ordered = sorted(
            (sorted(members, key=_instance_sort_key) for members in series),
            key=lambda m: (
                m[0].study_uid,
                _none_last(m[0].attrs.get("SeriesNumber")),
                m[0].series_uid,
            ),
        )
        results = []
        for members in ordered:
            ds = Dataset()
            _put(ds, members[0].attrs, (*STUDY_KEYWORDS, *SERIES_KEYWORDS))
            ds.NumberOfSeriesRelatedInstances = len(members)
            results.append(ds)
        return results

    @borrowed_doc(search_for_studies, only=("Raises",))
    @borrowed_doc(Source.search_for_instances, only=("Parameters",))
    async def search_for_instances(
        self,
        study_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
        search_filters: Mapping[str, Any] | None = None,
    ) -> list[Dataset]:
        """Search for instances, optionally within one study or series.

        Filters match as in :meth:`search_for_studies`.

        Returns
        -------
        list[pydicom.Dataset]
            One dataset per matching instance with study-, series- and instance-level
            attributes and Available Transfer Syntax UID, ordered by Study and Series
            Instance UID, Instance Number and SOP Instance UID
        """
        filters = _compile_filters(search_filters)
        index = await self._ensure_index()
        candidates = await index.off_loop(_preselect, index, filters)
        found = sorted(
            (
                i
                for i in candidates
                if (study_instance_uid is None or i.study_uid == study_instance_uid)
                and (series_instance_uid is None or i.series_uid == series_instance_uid)
                and _matches(i, filters)
            ),
            key=_instance_sort_key,
        )
        results = []
        for instance in found:
            ds = Dataset()
            _put(ds, instance.attrs, INDEX_KEYWORDS)
            if instance.attrs.get("TransferSyntaxUID"):
                ds.AvailableTransferSyntaxUID = instance.attrs["TransferSyntaxUID"]
            results.append(ds)
        return results

    # ----------------------------------------------------------------------------------------
    # Metadata
    # ----------------------------------------------------------------------------------------

    @borrowed_doc(Source.retrieve_series_metadata, only=("Parameters",))
    async def retrieve_series_metadata(
        self, study_instance_uid: str, series_instance_uid: str
    ) -> list[Dataset]:
        """Retrieve the metadata of every instance of a series.

        Returns
        -------
        list[pydicom.Dataset]
            Metadata of each instance as read (with ``file_meta``), without Pixel Data,
            ordered by Instance Number and SOP Instance UID

        Raises
        ------
        dicomslide.errors.NotFoundError
            If the series is not in the folder
        dicomslide.errors.InvalidDataError
            If a file cannot be parsed (any more)
        """
        index = await self._ensure_index()
        key = (study_instance_uid, series_instance_uid)
        members = sorted(await index.off_loop(index.series.get, key, ()), key=_instance_sort_key)
        if not members:
            raise NotFoundError(
                f"series {series_instance_uid} of study {study_instance_uid} not found in "
                f"{self._base_dir}"
            )
        known = {
            i.sop_uid: self._metadata[i.sop_uid] for i in members if i.sop_uid in self._metadata
        }
        missing = [i for i in members if i.sop_uid not in known]
        if missing and self._store.path is not None:
            # Images summarised in the index are built from their summaries; their headers
            # are loaded when something asks for them (see dicomslide.summary).
            await self._read_summaries(missing)
            with collector_paused():  # thousands of small containers: see dicomslide._gc
                for instance in missing:
                    summary = self._store.summary(instance)
                    parsed = None if summary is None else parse_summary(summary)
                    if parsed is None and summary is not None:
                        # Another version's (or damaged): replaced once the header is read.
                        self._store.forget_summary(instance)
                    if parsed is not None:
                        loader = functools.partial(self._load_summarised, instance)
                        known[instance.sop_uid] = SummaryDataset(parsed, loader)
                        self._remember_metadata(instance.sop_uid, known[instance.sop_uid])
            missing = [i for i in missing if i.sop_uid not in known]
        if missing:
            read = await asyncio.to_thread(self._read_many_metadata, missing)
            self._check_open()
            for instance, ds in zip(missing, read, strict=True):
                known[instance.sop_uid] = ds
                self._remember_metadata(instance.sop_uid, ds)
        return [known[i.sop_uid] for i in members]

    @borrowed_doc(Source.retrieve_instance_metadata, only=("Parameters",))
    async def retrieve_instance_metadata(
        self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
    ) -> Dataset:
        """Retrieve the metadata of one instance.

        Returns
        -------
        pydicom.Dataset
            Metadata as read (with ``file_meta``), without Pixel Data

        Raises
        ------
        dicomslide.errors.NotFoundError
            If the instance is not in that series and study
        dicomslide.errors.InvalidDataError
            If the file cannot be parsed (any more)
        """
        instance = await self._lookup(study_instance_uid, series_instance_uid, sop_instance_uid)
        return await self._instance_metadata(instance)

    # ----------------------------------------------------------------------------------------
    # Frames and bulk data
    # ----------------------------------------------------------------------------------------

    @borrowed_doc(Source.iter_frames, only=("Parameters",))
    async def iter_frames(
        self,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_instance_uid: str,
        frame_numbers: Sequence[int],
    ) -> AsyncIterator[tuple[int, EncodedFrame]]:
        """Read frames of one instance, yielding them in file order.

        Yields
        ------
        tuple[int, dicomslide.sources.EncodedFrame]
            Frame number and frame as stored (deflated data comes inflated, as Explicit VR
            Little Endian; 1-bit frames are re-packed to start at bit 0)

        Raises
        ------
        dicomslide.errors.NotFoundError
            If the instance is not in that series and study
        dicomslide.errors.RegionError
            If a frame number is outside ``[1, NumberOfFrames]`` or repeated
        dicomslide.errors.InvalidDataError
            If offset tables, item tags or lengths contradict the metadata or the file size
        """
        instance = await self._lookup(study_instance_uid, series_instance_uid, sop_instance_uid)
        numbers = [int(n) for n in frame_numbers]
        _check_frame_numbers(numbers, instance.number_of_frames, sop_instance_uid)
        if not numbers:
            return
        state: _ReadState | None = None
        try:
            for attempt in range(2):
                source = await self._frame_source(instance, rebuild=attempt > 0)
                _check_frame_numbers(numbers, source.layout.number_of_frames, sop_instance_uid)
                state = _ReadState(instance.path, sop_instance_uid, source)
                try:
                    if not source.layout.complete:
                        await asyncio.to_thread(
                            self._locate_frames, instance, source, max(numbers)
                        )
                    jobs = _plan_reads(source.layout, numbers)
                    first = await asyncio.to_thread(_read_frames, state, jobs[0])
                except _StaleFrameTableError:
                    _close_state(state)
                    continue
                break
            else:
                raise InvalidDataError(
                    f"{instance.path}, SOP Instance UID {sop_instance_uid}: file keeps "
                    "changing while its frames are read"
                )
            for number, data in first:
                yield number, EncodedFrame(data, source.transfer_syntax_uid)
            for job in jobs[1:]:
                self._check_open()
                batch = await asyncio.to_thread(_read_frames, state, job)
                for number, data in batch:
                    yield number, EncodedFrame(data, source.transfer_syntax_uid)
        finally:
            if state is not None:
                _close_state(state)

    async def retrieve_bulkdata(self, url: str) -> bytes:
        """Read a file of the folder named by a ``file://`` URL or path.

        Local files carry their bulk data inline, so only whole files inside
        :attr:`base_dir` can be retrieved.

        Parameters
        ----------
        url: str
            ``file://`` URL or path (relative paths are relative to :attr:`base_dir`)

        Returns
        -------
        bytes
            Content of the file

        Raises
        ------
        dicomslide.errors.NotFoundError
            If ``url`` is not a file inside :attr:`base_dir`
        """
        self._check_open()
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+://", url) and not url.startswith("file:"):
            raise NotFoundError(f"a local folder has no bulk data at {url}")
        path = _to_path(url)
        base = self._base_dir

        def read() -> bytes:
            root = base.resolve()
            target = (base / path).resolve()
            if not target.is_relative_to(root) or not target.is_file():
                raise NotFoundError(f"no file {url} inside {base}")
            return target.read_bytes()

        return await asyncio.to_thread(read)

    # ----------------------------------------------------------------------------------------
    # Internals
    # ----------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError(f"DICOMfileClient for {self._base_dir} is closed")

    async def _ensure_index(self) -> FolderIndex:
        self._check_open()
        if self._index is None:
            async with self._index_lock:
                if self._index is None:
                    self._index, self._store = await build_index(
                        self._base_dir, self._recursive, self._index_dir
                    )
        self._check_open()
        return self._index

    async def _lookup(self, study_uid: str, series_uid: str, sop_uid: str) -> IndexedInstance:
        index = await self._ensure_index()
        # Every frame request looks its instance up: once found, without a thread hop.
        instance: IndexedInstance | None = None
        if isinstance(index.instances, AsAsked):
            instance = index.instances.known(sop_uid)
        if instance is None:
            instance = await index.off_loop(index.instances.get, sop_uid)
        if instance is None or instance.uids != (study_uid, series_uid, sop_uid):
            raise NotFoundError(
                f"instance {sop_uid} of series {series_uid} of study {study_uid} not found in "
                f"{self._base_dir}"
            )
        return instance

    def _remember_metadata(self, sop_uid: str, ds: Dataset) -> None:
        self._metadata[sop_uid] = ds
        self._metadata.move_to_end(sop_uid)
        while len(self._metadata) > _METADATA_CACHE_SIZE:
            self._metadata.popitem(last=False)

    def _read_many_metadata(self, instances: Sequence[IndexedInstance]) -> list[Dataset]:
        # Thousands of data sets at once: see dicomslide._gc.
        with collector_paused():
            return self._read_many_metadata_now(instances)

    def _read_many_metadata_now(self, instances: Sequence[IndexedInstance]) -> list[Dataset]:
        datasets = []
        remembered = []
        found: dict[str, ZOffsets] = {}
        # The index holds the headers: opening slides of an unchanged folder reads no file.
        headers = self._store.headers(instances)
        for instance in instances:
            header = headers.get(instance.relpath)
            stored = None if header is None else (header, instance.pixel_tag)
            ds, did_convert = self._read_checked_metadata(instance, stored)
            datasets.append(ds)
            z_offsets = self._store.remembered(instance)[1]
            if z_offsets is None:
                # Found once (here, in the worker thread) and remembered for the next time.
                z_offsets = _find_z_offsets(ds)
                if z_offsets is not None:
                    found[instance.relpath] = z_offsets
            if did_convert or instance.relpath in found:
                remembered.append(instance)
            if z_offsets is not None:
                # Searching the per-frame items of a large pyramid for these is ~0.5 ms of a
                # slide's ~7 ms opening (the key changes with the file's size or time); the
                # slide must not search them again on the event loop.
                remember_z_offsets(ds, *z_offsets)
        if remembered:
            self._store.remember(remembered, found)
        if self._store.path is not None:
            # Summaries for the next client, which then reads no header to build slides.
            self._store.read_summaries(instances)
            self._store.remember_summaries(
                [
                    (instance, summarize(ds, get_value))
                    for instance, ds in zip(instances, datasets, strict=True)
                    if self._store.summary(instance) is None
                ]
            )
        return datasets

    async def _read_summaries(self, instances: Sequence[IndexedInstance]) -> None:
        """Look the summaries of ``instances`` up, together with those other tasks want.

        find_slides asks for every series at once: the requests that arrive before the job
        runs share one job (a query per 500 files) instead of a worker thread each.
        """
        self._summaries_wanted += self._store.unread_summaries(instances)
        loop = asyncio.get_running_loop()
        while self._store.unread_summaries(instances):
            job = self._summaries_job
            if job is None or job.done() or job.get_loop() is not loop:
                job = self._summaries_job = asyncio.ensure_future(self._summaries_now())
            await asyncio.shield(job)

    async def _summaries_now(self) -> None:
        wanted, self._summaries_wanted = self._summaries_wanted, []
        await asyncio.to_thread(self._store.read_summaries, wanted)

    def _load_summarised(self, instance: IndexedInstance) -> Dataset:
        """The full header of a summarised image, when something first asks for it."""
        (ds,) = self._read_many_metadata([instance])
        return ds

    def _read_checked_metadata(
        self, instance: IndexedInstance, stored: tuple[bytes, int | None] | None
    ) -> tuple[Dataset, bool]:
        trusted = None
        if self._store.remembered(instance)[0]:
            trusted = (instance.size, instance.mtime_ns)
        try:
            ds, converted = _read_metadata(instance.path, trusted, stored)
        except FileNotFoundError as exc:
            raise NotFoundError(
                f"{instance.path} (SOP Instance UID {instance.sop_uid}) was deleted"
            ) from exc
        except Exception as exc:
            raise InvalidDataError(
                f"{instance.path} (SOP Instance UID {instance.sop_uid}) cannot be read: {exc}"
            ) from exc
        if str(get_value(ds, _SOP_INSTANCE_UID, "")) != instance.sop_uid:
            raise InvalidDataError(
                f"{instance.path} no longer holds SOP Instance UID {instance.sop_uid}; "
                "open a new client to re-index"
            )
        return ds, converted

    async def _instance_metadata(self, instance: IndexedInstance) -> Dataset:
        cached = self._metadata.get(instance.sop_uid)
        if cached is not None:
            self._metadata.move_to_end(instance.sop_uid)
            return cached
        (ds,) = await asyncio.to_thread(self._read_many_metadata, [instance])
        self._check_open()
        self._remember_metadata(instance.sop_uid, ds)
        return ds

    async def _frame_source(self, instance: IndexedInstance, *, rebuild: bool) -> _FrameSource:
        sop_uid = instance.sop_uid
        if not rebuild:
            cached = self._frame_sources.get(sop_uid)
            if cached is not None:
                self._frame_sources.move_to_end(sop_uid)
                return cached
        # One build per instance at a time: concurrent first reads must not all scan or
        # inflate the same file.
        lock = self._frame_source_locks.setdefault(sop_uid, asyncio.Lock())
        async with lock:
            cached = self._frame_sources.get(sop_uid)
            if cached is not None and not rebuild:
                return cached
            try:
                source = await asyncio.to_thread(self._load_frame_source, instance, rebuild)
            except FileNotFoundError as exc:
                raise NotFoundError(
                    f"{instance.path} (SOP Instance UID {sop_uid}) was deleted"
                ) from exc
            except (InvalidDataError, UnsupportedError) as exc:
                raise type(exc)(f"{instance.path}, SOP Instance UID {sop_uid}: {exc}") from exc
            except Exception as exc:
                raise InvalidDataError(
                    f"{instance.path}, SOP Instance UID {sop_uid}: cannot locate frames: {exc}"
                ) from exc
            if self._closed:
                if source.inflated is not None:
                    source.inflated.close()
                self._check_open()
            self._store_frame_source(sop_uid, source)
            return source

    def _load_frame_source(self, instance: IndexedInstance, rebuild: bool) -> _FrameSource:
        """The frame table from the index when it holds one for these bytes, else built.

        Scanning the item headers of 100,000 small frames costs ~0.3 s; an encapsulated
        file's table is remembered in the index by file identity (in a worker thread).
        """
        syntax = str(instance.attrs.get("TransferSyntaxUID", ""))
        encapsulated = syntax not in part10.NATIVE_TRANSFER_SYNTAXES
        if encapsulated and not rebuild:
            table = self._store.frame_table(instance)
            if table is not None:
                st = os.stat(instance.path)
                if (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns) == instance.identity:
                    layout = part10.FrameLayout(*table, encapsulated=True)
                    return _FrameSource((st.st_size, st.st_mtime_ns), layout, syntax)
        source = _build_frame_source(instance.path)
        self._remember_frame_table(instance, source)
        return source

    def _remember_frame_table(self, instance: IndexedInstance, source: _FrameSource) -> None:
        if (
            source.inflated is None
            and source.layout.encapsulated
            and source.layout.complete
            and source.stat_key == instance.identity[:2]
        ):
            self._store.remember_frame_table(instance, source.layout.starts, source.layout.stops)

    def _locate_frames(
        self, instance: IndexedInstance, source: _FrameSource, frame_number: int
    ) -> None:
        """Walk a walked layout's fragments up to a frame (in a worker thread)."""
        try:
            with open(instance.path, "rb") as fp:
                fd = fp.fileno()
                st = os.fstat(fd)
                if (st.st_size, st.st_mtime_ns) != source.stat_key:
                    raise _StaleFrameTableError
                located = source.layout.locate(
                    frame_number, lambda offset, size: _pread(fd, size, offset)
                )
        except FileNotFoundError as exc:
            raise NotFoundError(
                f"{instance.path} (SOP Instance UID {instance.sop_uid}) was deleted"
            ) from exc
        except InvalidDataError as exc:
            raise InvalidDataError(
                f"{instance.path}, SOP Instance UID {instance.sop_uid}: {exc}"
            ) from exc
        if located:
            self._remember_frame_table(instance, source)

    def _store_frame_source(self, sop_uid: str, source: _FrameSource) -> None:
        # Evicted temporary files close once the last reader drops its reference.
        self._frame_sources.pop(sop_uid, None)
        self._frame_sources[sop_uid] = source
        while len(self._frame_sources) > _FRAME_TABLE_CACHE_SIZE:
            self._frame_sources.popitem(last=False)
        inflated = [k for k, v in self._frame_sources.items() if v.inflated is not None]
        for key in inflated[: max(0, len(inflated) - _INFLATED_CACHE_SIZE)]:
            del self._frame_sources[key]


def _check_frame_numbers(numbers: Sequence[int], number_of_frames: int, sop_uid: str) -> None:
    bad = [n for n in numbers if not 1 <= n <= number_of_frames]
    if bad:
        raise RegionError(
            f"frame numbers {bad} outside the valid range [1, {number_of_frames}] of "
            f"instance {sop_uid}"
        )
    if len(set(numbers)) != len(numbers):
        raise RegionError(f"repeated frame numbers requested from instance {sop_uid}")


def _plan_reads(
    layout: part10.FrameLayout, numbers: Sequence[int]
) -> list[list[tuple[int, int, list[tuple[int, int, int]]]]]:
    spans = sorted(((n, *layout.span(n)) for n in numbers), key=lambda span: (span[1], span[0]))
    reads = part10.coalesce_spans(spans, max_gap=_COALESCE_GAP, max_size=_COALESCE_BYTES)
    jobs: list[list[tuple[int, int, list[tuple[int, int, int]]]]] = []
    job_bytes = job_frames = 0
    for read in reads:
        if jobs and (
            job_bytes + read[1] <= _READ_JOB_BYTES
            and job_frames + len(read[2]) <= _READ_JOB_FRAMES
        ):
            jobs[-1].append(read)
            job_bytes += read[1]
            job_frames += len(read[2])
        else:
            jobs.append([read])
            job_bytes, job_frames = read[1], len(read[2])
    return jobs


def _close_state(state: _ReadState) -> None:
    # Closing a regular file's descriptor does not block, so it may happen on the loop.
    if state.owns_fd and state.fd is not None:
        os.close(state.fd)
    state.fd = None
    state.owns_fd = False

"""The index of a local folder: what discovery and slide construction need, without the files.

See :mod:`dicomslide.sources.local` for what is indexed and how it is kept up to date. Here
are the survey, the parse of new or changed files, and the persisted index: one SQLite database
per folder (standard library; chosen by measurement over one JSON document, see README
"Scale"), holding for each file its identity (size, modification and change time, inode),
the searchable attributes, its header as :mod:`dicomslide.sources.header_codec` stores it,
whether that header converted cleanly and the distinct Z offsets of images with per-frame
items. Writers take SQLite's write lock, and every update names the file identity it was
computed for, so that processes sharing an index never store an answer for the wrong bytes.
An unchanged folder is told by one comparison with a snapshot of all identities, and its rows
are then loaded as asked (:mod:`dicomslide.sources.stored_rows`, and
:mod:`dicomslide.sources.index_snapshot`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final, NamedTuple, TypeGuard, TypeVar

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.multival import MultiValue

from dicomslide._gc import collector_paused
from dicomslide.errors import NotFoundError, UsageError
from dicomslide.perframe import get_value
from dicomslide.sources import frame_tables, part10
from dicomslide.sources.folder_survey import DirRecord, identity_of, survey, unchanged
from dicomslide.sources.header_codec import encode_header
from dicomslide.sources.index_snapshot import (
    FILE_INDEXES,
    SCHEMA as SNAPSHOT_SCHEMA,
    TABLES as SNAPSHOT_TABLES,
    TERM_KEYWORDS,
    WHOLE,
    FileTally,
    Snapshot,
    delete_terms,
    read_snapshot,
    terms_of,
    write_snapshot,
)
from dicomslide.sources.qido_match import value_candidates
from dicomslide.sources.raw_header import read_raw_header
from dicomslide.sources.sqlite_blobs import insert_with_blob
from dicomslide.sources.stored_rows import StoredRows, mappings
from dicomslide.sources.summary_table import load_summaries, save_summaries

__all__ = [
    "INDEX_KEYWORDS",
    "SEARCHABLE",
    "SERIES_KEYWORDS",
    "STUDY_KEYWORDS",
    "FolderIndex",
    "IndexStore",
    "IndexSummary",
    "IndexedInstance",
    "StoredAttrs",
    "ZOffsets",
    "build_index",
    "gather_all",
    "index_file_for",
]

# 6: frame tables created with the other tables (an index of format 5 may lack theirs).
# 7: a snapshot of the folder and terms to look instances up by (see .index_snapshot).
# 8: per-instance summaries (dicomslide.summary) in a table of their own.
_INDEX_FORMAT: Final = 8
_DICOMDIR_SOP_CLASS: Final = "1.2.840.10008.1.3.10"

STUDY_KEYWORDS: Final = (
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "AccessionNumber",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "ReferringPhysicianName",
)
SERIES_KEYWORDS: Final = (
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "FrameOfReferenceUID",
    "ContainerIdentifier",
)
_INSTANCE_KEYWORDS: Final = (
    "SOPInstanceUID",
    "SOPClassUID",
    "InstanceNumber",
    "ImageType",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "TotalPixelMatrixRows",
    "TotalPixelMatrixColumns",
    "TotalPixelMatrixFocalPlanes",
    "NumberOfOpticalPaths",
)
INDEX_KEYWORDS: Final = STUDY_KEYWORDS + SERIES_KEYWORDS + _INSTANCE_KEYWORDS
SEARCHABLE: Final = frozenset((*INDEX_KEYWORDS, "TransferSyntaxUID"))
_REQUIRED: Final = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
_INT_VRS: Final = frozenset({"IS", "US", "UL", "SS", "SL", "SV", "UV"})
_INDEX_TAGS: Final = {k: (int(tag_for_keyword(k) or 0), dictionary_VR(k)) for k in INDEX_KEYWORDS}

_T = TypeVar("_T")
_PARSE_THREADS: Final = 4
_PARSE_CHUNK: Final = 32

#: Number of Z planes and their distinct offsets, as remembered by the index.
ZOffsets = tuple[int, tuple[float, ...]]


@dataclass(frozen=True)
class IndexSummary:
    """What indexing a folder found and did.

    Attributes
    ----------
    base_dir: pathlib.Path
        The indexed folder
    index_file: pathlib.Path | None
        Where the index is persisted, ``None`` if it is kept in memory only
    instances: int
        Number of DICOM instances indexed
    non_dicom: int
        Number of files skipped because they are not DICOM Part 10 instances
    failures: Mapping[str, str]
        Files (relative to ``base_dir``) that could not be parsed, with the reason
    duplicates: Sequence[str]
        Files skipped because an earlier file (in path order) has the same SOP Instance UID
    parsed: int
        Number of file headers parsed by this client (new or changed files)
    reused: int
        Number of files whose persisted entry was reused without parsing
    persist_error: str | None
        Why the index could not be written, if it could not
    seconds: float
        Wall time of indexing
    """

    base_dir: Path
    index_file: Path | None
    instances: int
    non_dicom: int
    failures: Mapping[str, str]
    duplicates: Sequence[str]
    parsed: int
    reused: int
    persist_error: str | None
    seconds: float


#: A file's identity: size, modification time, inode and status-change time (ns). A file
#: rewritten to the same size with its modification time set back still gets a new change
#: time, and a file replaced by a rename gets a new inode: either is parsed again.
Identity = tuple[int, int, int, int]

#: What parsing one file gives: identity, status (``"dicom"``, ``"other"`` or ``"error"``),
#: attributes (or the reason of the error), stored header, the tag after the header and
#: whether the header is known to convert cleanly (see :mod:`.raw_header`).
Entry = tuple[Identity, str, Any, bytes | None, int | None, bool]


class StoredAttrs(Mapping[str, Any]):
    """Searchable attributes as the index stores them (JSON), decoded on first use.

    A warm index of thousands of files decodes only the attributes a search looks at: a
    search on a container finds its candidates by the text alone (see
    :meth:`FolderIndex.having`).

    Parameters
    ----------
    text: str
        The stored JSON object
    """

    __slots__ = ("_value", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._value: dict[str, Any] | None = None

    def _decoded(self) -> dict[str, Any]:
        if self._value is None:
            try:
                value = json.loads(self.text)
            except ValueError:
                value = None
            # A damaged entry offers nothing to searches (its UIDs are stored apart).
            self._value = value if isinstance(value, dict) else {}
        return self._value

    def __getitem__(self, key: str) -> Any:
        return self._decoded()[key]

    def get(self, key: str, default: Any = None) -> Any:
        """The attribute's stored value, or ``default``.

        Parameters
        ----------
        key: str
            Keyword
        default: Any, optional
            Returned when the attribute is not stored

        Returns
        -------
        Any
            The value as stored (JSON types)
        """
        # Called ~30 times per instance of a search: no second call once decoded.
        value = self._value
        return (value if value is not None else self._decoded()).get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())


class IndexedInstance(NamedTuple):
    """One indexed DICOM file (a tuple: a warm index makes thousands at once)."""

    relpath: str
    path: str
    identity: Identity
    attrs: Mapping[str, Any]
    pixel_tag: int | None
    #: Study, series and SOP Instance UID (stored apart from the attributes: every instance
    #: of a warm index needs them, few need their attributes decoded).
    uids: tuple[str, str, str]

    @property
    def study_uid(self) -> str:
        return self.uids[0]

    @property
    def series_uid(self) -> str:
        return self.uids[1]

    @property
    def sop_uid(self) -> str:
        return self.uids[2]

    @property
    def size(self) -> int:
        return self.identity[0]

    @property
    def mtime_ns(self) -> int:
        return self.identity[1]

    @property
    def number_of_frames(self) -> int:
        return int(self.attrs.get("NumberOfFrames") or 1)


@dataclass
class FolderIndex:
    instances: Mapping[str, IndexedInstance]
    summary: IndexSummary
    series: Mapping[tuple[str, str], list[IndexedInstance]] = field(default_factory=dict)
    #: Where the instances come from when the folder matched the index's snapshot: rows are
    #: then loaded as asked (see dicomslide.sources.index_snapshot), else all are in memory.
    stored: StoredRows[IndexedInstance] | None = field(default=None, repr=False)
    _tables: dict[str, dict[str, list[IndexedInstance]]] = field(default_factory=dict, repr=False)
    #: Each instance's stored JSON text (None: decoded already), made on first search.
    _texts: list[str | None] | None = field(default=None, repr=False)
    #: What :meth:`having` found by text, by keyword and value (one find_slides asks thrice).
    _found: dict[tuple[str, str], list[IndexedInstance]] = field(default_factory=dict, repr=False)

    def having(self, keyword: str, text: str) -> list[IndexedInstance]:
        """Instances whose ``keyword`` (or one of its values) is exactly ``text``.

        A search on a container or a modality must not test every instance of an archive:
        a table per keyword is made on its first use.

        Parameters
        ----------
        keyword: str
            An indexed keyword
        text: str
            The value, without wildcards or ranges

        Returns
        -------
        list[IndexedInstance]
            The instances, in index order
        """
        if self.stored is not None and not self.stored.loaded and keyword in TERM_KEYWORDS:
            found = self._found.get((keyword, text))
            if found is None:
                found = self._found[(keyword, text)] = self.stored.having(keyword, text)
            return list(found)
        table = self._tables.get(keyword)
        if table is None and _findable_as_text(text):
            # Only instances whose stored JSON holds the text can match: the others are
            # not decoded (an archive's container search decodes a slide's worth).
            found = self._found.get((keyword, text))
            if found is None:
                if self._texts is None:
                    self._texts = [getattr(i.attrs, "text", None) for i in self.instances.values()]
                found = self._found[(keyword, text)] = [
                    instance
                    for instance, stored in zip(self.instances.values(), self._texts, strict=True)
                    if (stored is None or text in stored)
                    and _offers(instance.attrs.get(keyword), text)
                ]
            return list(found)
        if table is None:
            table = {}
            for instance in self.instances.values():
                value = instance.attrs.get(keyword)
                if isinstance(value, str):
                    table.setdefault(value, []).append(instance)
                    continue
                for candidate in dict.fromkeys(value_candidates(value)):
                    table.setdefault(candidate, []).append(instance)
            self._tables[keyword] = table
        return table.get(text, [])

    async def off_loop(self, function: Callable[..., _T], *args: Any) -> _T:
        """Call ``function``, in a worker thread when it may read the index's database.

        Parameters
        ----------
        function: Callable
            Something that looks at this index
        *args: Any
            Its arguments

        Returns
        -------
        Any
            What it returns
        """
        if self.stored is None or self.stored.loaded:
            return function(*args)
        return await asyncio.to_thread(function, *args)

    def __post_init__(self) -> None:
        if self.stored is not None:
            self.instances, self.series = mappings(self.stored)
            return
        # One pass: looking a series up must not scan every instance of the folder.
        series: dict[tuple[str, str], list[IndexedInstance]] = {}
        self.series = series
        for instance in self.instances.values():
            key = instance.uids[:2]
            members = series.get(key)
            if members is None:
                series[key] = [instance]
            else:
                members.append(instance)


#: The columns an instance is made of, and which of them the store remembers.
_INSTANCE_COLUMNS: Final = (
    "SELECT relpath, size, mtime_ns, ino, ctime_ns, data, pixel_tag, validated, z_offsets, "
    "study_uid, series_uid, sop_uid "
)


def _stored_rows(store: IndexStore, root: Path, snapshot: Snapshot) -> StoredRows[IndexedInstance]:
    """The instances of an index that matched its snapshot, loaded from it as asked."""
    prefix = str(root).rstrip(os.sep) + os.sep

    def make(row: Sequence[Any]) -> IndexedInstance:
        relpath, size, mtime, ino, ctime, data, pixel_tag, valid, z, study, series, sop = row
        instance = IndexedInstance(
            relpath,
            prefix + relpath,
            (size, mtime, ino, ctime),
            StoredAttrs(data),
            pixel_tag,
            (study, series, sop),
        )
        store.learn(instance, valid == 1, _z_value(z) if z else None)
        return instance

    return StoredRows(
        store.reading,
        _INSTANCE_COLUMNS,
        make,
        snapshot.duplicates,
        snapshot.files,
        snapshot.file_ids,
    )


def _findable_as_text(text: str) -> bool:
    """Whether a stored value equal to ``text`` shows it verbatim in the stored JSON."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def _offers(value: Any, text: str) -> bool:
    """Whether a stored value (or one of its values) is exactly ``text``."""
    if isinstance(value, str):
        return value == text
    return text in value_candidates(value)


def _json_value(value: Any, vr: str) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, MultiValue | list | tuple):
        items = [_json_value(v, vr) for v in value]
        return [v for v in items if v is not None] or None
    if vr in _INT_VRS:
        return int(value)
    return str(value)


def _pixel_tag_kept(syntax: str) -> bool:
    # Encapsulated data is never float; a deflated body is not positioned in the file.
    return syntax in part10.NATIVE_TRANSFER_SYNTAXES - {part10.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN}


def next_pixel_tag(fp: BinaryIO, ds: Dataset) -> int | None:
    """The tag at which ``dcmread(fp, stop_before_pixels=True)`` stopped, if it can be told.

    Parameters
    ----------
    fp: BinaryIO
        The file, where pydicom left it
    ds: pydicom.Dataset
        What pydicom read

    Returns
    -------
    int | None
        The tag (a Pixel Data element), or None at the end or for encapsulated or deflated
        data (never float)
    """
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if not _pixel_tag_kept(syntax):
        return None
    # pydicom leaves the file at the tag of the element it stopped before (or at the end).
    head = fp.read(4)
    if len(head) < 4:
        return None
    endian = ">" if syntax == part10.EXPLICIT_VR_BIG_ENDIAN else "<"
    group, element = struct.unpack(f"{endian}HH", head)
    return int(group << 16 | element)


def _index_attrs(ds: Dataset) -> dict[str, Any]:
    """The searchable attributes of a header, as plain JSON values."""
    attrs: dict[str, Any] = {}
    for keyword, (tag, vr) in _INDEX_TAGS.items():
        try:
            # Simple raw values are read from their bytes (pydicom converts the rest).
            value = _json_value(get_value(ds, tag), vr)
        except (ValueError, TypeError):
            # An unreadable optional attribute must not hide the instance.
            continue
        if value is not None:
            attrs[keyword] = value
    return attrs


def _parse_index_entry(path: str, size: int, mtime_ns: int) -> Entry:
    """Parse one file's header into an index entry (see :data:`Entry`)."""
    identity: Identity = (size, mtime_ns, 0, 0)
    try:
        with open(path, "rb") as fp:
            identity = identity_of(os.fstat(fp.fileno()))
            if not part10.is_part10(fp.read(132)):
                return identity, "other", None, None, None, False
            raw = read_raw_header(fp)
            if raw is not None:
                ds, pixel_tag, plain = raw.dataset, raw.pixel_tag, raw.plain
                if not _pixel_tag_kept(str(ds.file_meta.get("TransferSyntaxUID", ""))):
                    pixel_tag = None  # as next_pixel_tag tells it
            else:
                fp.seek(0)
                ds = pydicom.dcmread(fp, stop_before_pixels=True)
                pixel_tag, plain = next_pixel_tag(fp, ds), False
        meta = ds.file_meta
        if str(meta.get("MediaStorageSOPClassUID", "")) == _DICOMDIR_SOP_CLASS:
            return identity, "other", None, None, None, False
        # Stored before any value is converted: the store keeps elements as read.
        header = encode_header(ds)
        attrs = _index_attrs(ds)
        missing = [k for k in _REQUIRED if k not in attrs]
        if missing:
            return identity, "error", f"missing {', '.join(missing)}", None, None, False
        attrs["TransferSyntaxUID"] = str(meta.get("TransferSyntaxUID", ""))
        return identity, "dicom", attrs, header, pixel_tag, plain and header is not None
    except Exception as exc:  # a broken file is recorded, not fatal
        return identity, "error", f"{type(exc).__name__}: {exc}", None, None, False


async def gather_all(coroutines: list[Coroutine[Any, Any, None]]) -> None:
    """Run ``coroutines`` concurrently; on the first failure cancel the rest and re-raise."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _default_index_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache) if cache else Path.home() / ".cache"
    return base / "dicomslide" / "index"


# --------------------------------------------------------------------------------------------
# The persisted index (SQLite)
# --------------------------------------------------------------------------------------------

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS files (relpath TEXT PRIMARY KEY, size INTEGER, mtime_ns "
    "INTEGER, ino INTEGER, ctime_ns INTEGER, status TEXT, data TEXT, pixel_tag "
    "INTEGER, validated INTEGER NOT NULL DEFAULT 0, z_offsets TEXT, "
    "study_uid TEXT, series_uid TEXT, sop_uid TEXT)",
    # Directories as last listed (see dicomslide.sources.folder_survey).
    "CREATE TABLE IF NOT EXISTS dirs (relpath TEXT PRIMARY KEY, mtime_ns INTEGER, ino "
    "INTEGER, ctime_ns INTEGER, again INTEGER)",
    # Headers apart: a row of a few KB keeps only its first ~500 bytes in the table's page,
    # so reading the identities of every file would follow each header's overflow pages.
    "CREATE TABLE IF NOT EXISTS headers (relpath TEXT PRIMARY KEY, header BLOB)",
    frame_tables.SCHEMA,
    *SNAPSHOT_SCHEMA,
    # Per-instance summaries (see dicomslide.summary), each for the file identity it was
    # computed from; one that names another identity than the file's row is never used.
    "CREATE TABLE IF NOT EXISTS summaries (relpath TEXT PRIMARY KEY, size INTEGER, "
    "mtime_ns INTEGER, ino INTEGER, ctime_ns INTEGER, summary TEXT)",
)
_SAME_FILE: Final = frame_tables.SAME_FILE
#: The status of a loaded row whose stored instance is not whole (the file is parsed again).
_DAMAGED: Final = "damaged"
_SQL_CHUNK: Final = 500
#: Stored headers longer than this are written through a blob handle (see _save_entries).
_LARGE_HEADER: Final = 1 << 20
#: Files whose remembered conversion or Z offsets are written together.
_FLUSH_AFTER: Final = 512
#: Writers wait this long for another process's write lock (SQLite's busy timeout).
_LOCK_SECONDS: Final = 60.0

#: A persisted row: identity, status, data (for an instance: its attributes, study, series
#: and SOP Instance UID), pixel tag, validated, Z offsets.
_Row = tuple[Identity, str, Any, int | None, bool, "ZOffsets | None"]


def _z_value(text: str | None) -> ZOffsets | None:
    """Stored Z offsets, or None when absent or malformed."""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    if (
        isinstance(value, list)
        and len(value) == 2
        and type(value[0]) is int
        and isinstance(value[1], list)
        and all(type(z) is float and math.isfinite(z) for z in value[1])
    ):
        return value[0], tuple(value[1])
    return None


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Autocommit mode: transactions are opened explicitly with BEGIN IMMEDIATE (the write
    # lock first, so two writers never deadlock upgrading their read locks).
    return sqlite3.connect(
        path, timeout=_LOCK_SECONDS, isolation_level=None, check_same_thread=False
    )


def _prepare_store(conn: sqlite3.Connection, root: Path, recursive: bool) -> None:
    wanted = {"format": str(_INDEX_FORMAT), "root": str(root), "recursive": str(recursive)}
    try:
        if dict(conn.execute("SELECT key, value FROM meta").fetchall()) == wanted:
            return
    except sqlite3.OperationalError:
        pass  # no tables yet
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA:
            conn.execute(statement)
        if dict(conn.execute("SELECT key, value FROM meta").fetchall()) != wanted:
            # Another folder, flag or format: the table may not even have today's columns.
            conn.execute("DROP TABLE files")
            conn.execute("DROP TABLE dirs")
            conn.execute("DROP TABLE headers")
            conn.execute("DROP TABLE frame_tables")
            for table in SNAPSHOT_TABLES:
                conn.execute(f"DROP TABLE {table}")
            conn.execute("DROP TABLE IF EXISTS summaries")
            for statement in _SCHEMA[1:]:
                conn.execute(statement)
            conn.execute("DELETE FROM meta")
            conn.executemany("INSERT INTO meta VALUES (?, ?)", wanted.items())
        for statement in FILE_INDEXES:
            conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _load_rows(conn: sqlite3.Connection) -> tuple[dict[str, _Row], dict[str, DirRecord]]:
    # A tuple per file, thousands of them: see dicomslide._gc. One read transaction: the
    # directories and the files are one process's consistent snapshot.
    with collector_paused():
        conn.execute("BEGIN")
        try:
            return _load_rows_now(conn), _load_dirs(conn)
        finally:
            conn.execute("COMMIT")


def _load_dirs(conn: sqlite3.Connection) -> dict[str, DirRecord]:
    dirs: dict[str, DirRecord] = {}
    for relpath, mtime, ino, ctime, again in conn.execute(
        "SELECT relpath, mtime_ns, ino, ctime_ns, again FROM dirs"
    ):
        if isinstance(relpath, str) and all(type(v) is int for v in (mtime, ino, ctime, again)):
            dirs[relpath] = (mtime, ino, ctime, again)
    return dirs


def _load_rows_now(conn: sqlite3.Connection) -> dict[str, _Row]:
    rows: dict[str, _Row] = {}
    # SQLite tells which stored instances are whole (checking in Python is ~1 µs a row), and
    # those that are not are parsed again. They are kept as rows all the same: an unchanged
    # folder's files are those of its rows (see folder_survey), and left out they were lost.
    cursor = conn.execute(
        "SELECT relpath, size, mtime_ns, ino, ctime_ns, status, data, pixel_tag, validated, "
        f"z_offsets, study_uid, series_uid, sop_uid, {WHOLE} FROM files"
    )
    for row in cursor:
        relpath, size, mtime, ino, ctime, status, data, pixel_tag, validated, z, *uids, whole = row
        if not whole:
            rows[relpath] = ((size, mtime, ino, ctime), _DAMAGED, None, None, False, None)
            continue
        rows[relpath] = (
            (size, mtime, ino, ctime),
            status,
            # Decoded when a search or a slide looks at it (see StoredAttrs).
            (StoredAttrs(data), *uids) if status == "dicom" else data,
            pixel_tag,
            validated == 1,
            _z_value(z) if z else None,
        )
    return rows


def _open_store(
    index_file: Path, root: Path, recursive: bool
) -> tuple[
    sqlite3.Connection | None, dict[str, _Row], dict[str, DirRecord], str | None, Snapshot | None
]:
    """Open (or create) the index; a broken database is replaced.

    Connection, rows, directories, error, and the snapshot when the folder matches it (then
    no row is loaded: see dicomslide.sources.index_snapshot).
    """
    error: str | None = None
    for attempt in range(2):
        conn: sqlite3.Connection | None = None
        try:
            conn = _connect(index_file)
            _prepare_store(conn, root, recursive)
            snapshot = read_snapshot(conn)
            if snapshot is not None and unchanged(
                root, snapshot.dirs, snapshot.dir_ids, snapshot.files, snapshot.file_ids
            ):
                return conn, {}, {}, None, snapshot
            return conn, *_load_rows(conn), None, None
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            error = f"{type(exc).__name__}: {exc}"
            if attempt == 0 and not isinstance(exc, sqlite3.OperationalError):
                # Not a database (any more): start afresh rather than never persist again.
                with contextlib.suppress(OSError):
                    os.unlink(index_file)
        except OSError as exc:
            if conn is not None:
                conn.close()
            return None, {}, {}, f"{type(exc).__name__}: {exc}", None
    return None, {}, {}, error, None


def _uids(entry: Entry) -> tuple[str | None, ...]:
    if entry[1] != "dicom":
        return (None, None, None)
    return tuple(str(entry[2][k]) for k in _REQUIRED[:3])


def _is_large(header: bytes | None) -> TypeGuard[bytes]:
    """Whether a stored header is worth writing through a blob handle."""
    return header is not None and len(header) > _LARGE_HEADER


def _save_entries(
    conn: sqlite3.Connection,
    parsed: Sequence[tuple[str, Entry]],
    removed: Sequence[tuple[str, Identity]],
    dirs: Mapping[str, DirRecord] | None,
) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        if dirs is not None:
            # This process's listing, with the files it found: another process's newer one
            # may be replaced, which costs only a listing (its directories differ now).
            conn.execute("DELETE FROM dirs")
            conn.executemany(
                "INSERT INTO dirs VALUES (?, ?, ?, ?, ?)", [(k, *v) for k, v in dirs.items()]
            )
        # Only the entry this client saw goes: another process may have stored a newer one.
        conn.executemany(
            f"DELETE FROM files WHERE {_SAME_FILE}", [(rel, *ident) for rel, ident in removed]
        )
        # A damaged row may lack its identity (never equal to anything): by path alone.
        conn.executemany(
            f"DELETE FROM files WHERE relpath = ? AND {WHOLE} IS NOT 1",
            [(rel,) for rel, _ in removed],
        )
        delete_terms(conn, [rel for rel, _ in parsed], [rel for rel, _ in removed])
        conn.executemany(
            "INSERT INTO terms VALUES (?, ?, ?)",
            [t for rel, entry in parsed if entry[1] == "dicom" for t in terms_of(rel, entry[2])],
        )
        # A header is handed out only with its file's row of the same identity (see
        # IndexStore.headers): one left by a removed file is never used.
        # Large headers (per-frame sequences of sparse instances) go in through a blob
        # handle: a plain insert makes SQLite copy the value twice (+20 MB at 100k frames).
        conn.executemany(
            "INSERT OR REPLACE INTO headers VALUES (?, ?)",
            [(rel, entry[3]) for rel, entry in parsed if not _is_large(entry[3])],
        )
        for rel, entry in parsed:
            if _is_large(entry[3]):
                insert_with_blob(conn, "headers", {"relpath": rel}, "header", entry[3])
        conn.executemany(
            "INSERT OR REPLACE INTO files (relpath, size, mtime_ns, ino, ctime_ns, status, "
            "data, pixel_tag, validated, study_uid, series_uid, sop_uid) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    rel,
                    *ident,
                    status,
                    json.dumps(data, separators=(",", ":")) if status == "dicom" else data,
                    pixel_tag,
                    int(plain),
                    *_uids(entry),
                )
                for rel, entry in parsed
                for ident, status, data, _, pixel_tag, plain in (entry,)
            ],
        )
        write_snapshot(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _key(instance: IndexedInstance) -> tuple[str, Identity]:
    return instance.relpath, instance.identity


class IndexStore:
    """The persisted index of one folder, as the client reads and updates it after indexing.

    Holds which headers converted cleanly and the Z offsets found (by file and identity), and
    hands out stored headers, so that opening slides reads no file. All methods may be
    called from worker threads.

    Parameters
    ----------
    path: pathlib.Path | None
        The database (``None``: nothing is persisted and headers come from the files)
    conn: sqlite3.Connection | None
        Its open connection
    validated: set[tuple[str, Identity]]
        Files whose headers converted cleanly
    z_offsets: dict[tuple[str, Identity], ZOffsets]
        Z offsets by file
    """

    def __init__(
        self,
        path: Path | None,
        conn: sqlite3.Connection | None,
        validated: set[tuple[str, Identity]],
        z_offsets: dict[tuple[str, Identity], ZOffsets],
    ) -> None:
        self.path = path
        self._conn = conn
        self._validated = validated
        self._z_offsets = z_offsets
        self._pending_validated: list[IndexedInstance] = []
        self._pending_z: list[tuple[IndexedInstance, ZOffsets]] = []
        self._lock = threading.Lock()
        self._memo_lock = threading.Lock()
        #: Headers parsed by this client and being written (see save_later), by file.
        self._fresh: dict[str, tuple[Identity, bytes]] = {}
        self._written_later: dict[str, Identity] = {}
        self._saving: threading.Thread | None = None
        self._saving_now = False
        self._later_tables: list[tuple[IndexedInstance, tuple[np.ndarray, np.ndarray]]] = []
        #: Why the deferred write failed, if it did.
        self.save_error: str | None = None
        # Per-instance summaries (dicomslide.summary) read so far; None: looked up, none kept.
        self._summaries: dict[tuple[str, Identity], str | None] = {}
        self._pending_summaries: list[tuple[tuple[str, Identity], str]] = []
        self._summaries_saved = False

    def save_later(
        self,
        parsed: Sequence[tuple[str, Entry]],
        removed: Sequence[tuple[str, Identity]],
        dirs: Mapping[str, DirRecord] | None,
    ) -> None:
        """Write what indexing found in a thread of its own, while the slides open.

        Writing the 9 MB header of a sparse image of 100,000 frames costs ~25 ms, and
        SQLite releases the GIL while it writes, so the first region need not wait for
        it. It is the same single transaction as an immediate write: a process that exits
        or dies before it commits leaves the index as it was (the files are parsed again
        next time), never half written. The headers are handed out from memory meanwhile;
        everything else that needs the database waits for the write (it holds the lock),
        and :meth:`close` waits for it too. Python waits for the thread at exit.

        Parameters
        ----------
        parsed: Sequence[tuple[str, Entry]]
            Files parsed now
        removed: Sequence[tuple[str, Identity]]
            Indexed files that are gone
        dirs: Mapping[str, DirRecord] | None
            The directories as listed now (None: unchanged)
        """
        self._fresh = {rel: (e[0], e[3]) for rel, e in parsed if e[3] is not None}
        self._written_later = {rel: e[0] for rel, e in parsed}

        def save() -> None:
            try:
                with self._lock:
                    if self._conn is not None:
                        try:
                            _save_entries(self._conn, parsed, removed, dirs)
                        except Exception as exc:  # not only sqlite3: any failure is reported
                            self.save_error = f"{type(exc).__name__}: {exc}"
                            with contextlib.suppress(sqlite3.Error):
                                self._conn.close()
                            self._conn = None
                        else:  # the database serves the headers now: memory need not
                            with self._memo_lock:
                                self._fresh = {}
                    while True:  # then the frame tables found meanwhile
                        with self._memo_lock:
                            tables, self._later_tables = self._later_tables, []
                            if not tables:
                                return
                        for instance, table in tables:
                            if self._conn is not None:
                                frame_tables.save_frame_table(self._conn, instance, table)
            finally:
                # Whatever happened, later tables are written directly from now on; any
                # still queued are dropped (only a speed-up: the frames are walked again).
                with self._memo_lock:
                    self._saving_now = False
                    self._later_tables = []

        self._saving_now = True
        self._saving = threading.Thread(target=save, name="dicomslide-index-write")
        self._saving.start()

    def _is_being_saved(self, instance: IndexedInstance) -> bool:
        return self._saving_now and self._written_later.get(instance.relpath) == instance.identity

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, held for the block (from a worker thread).

        Yields
        ------
        sqlite3.Connection
            The open database

        Raises
        ------
        dicomslide.errors.UsageError
            If the store was closed
        """
        with self._lock:
            if self._conn is None:
                raise UsageError(f"the index {self.path} was closed")
            yield self._conn

    def learn(
        self, instance: IndexedInstance, validated: bool, z_offsets: ZOffsets | None
    ) -> None:
        """Take what the index row of a file remembers (as loaded with it; lock held).

        Parameters
        ----------
        instance: IndexedInstance
            The file
        validated: bool
            Whether its header converted cleanly
        z_offsets: ZOffsets | None
            Its Z offsets, when found
        """
        key = _key(instance)
        if validated:
            self._validated.add(key)
        if z_offsets is not None:
            self._z_offsets[key] = z_offsets

    def summary(self, instance: IndexedInstance) -> str | None:
        """The summary of a file as indexed (see :mod:`dicomslide.summary`), if read and kept.

        Parameters
        ----------
        instance: IndexedInstance
            The file as indexed (a summary of other bytes is never handed out)

        Returns
        -------
        str | None
            The summary text (None: none kept, or not read yet, see :meth:`read_summaries`)
        """
        return self._summaries.get(_key(instance))

    def forget_summary(self, instance: IndexedInstance) -> None:
        """Treat a file's stored summary as absent (unusable: it is written anew).

        Parameters
        ----------
        instance: IndexedInstance
            The file as indexed
        """
        self._summaries[_key(instance)] = None

    def unread_summaries(self, instances: Sequence[IndexedInstance]) -> list[IndexedInstance]:
        """The files whose summaries have not been looked up yet.

        Parameters
        ----------
        instances: Sequence[IndexedInstance]
            The files asked for

        Returns
        -------
        list[IndexedInstance]
            Those of them not looked up
        """
        known = self._summaries
        return [i for i in instances if _key(i) not in known]

    def read_summaries(self, instances: Sequence[IndexedInstance]) -> None:
        """Look the summaries of files up in the index (a query per 500 files).

        Parameters
        ----------
        instances: Sequence[IndexedInstance]
            The files
        """
        wanted = []
        for instance in self.unread_summaries(instances):
            if self._is_being_saved(instance):
                # Just parsed, so none is stored; the deferred write holds the lock.
                self._summaries.setdefault(_key(instance), None)
            else:
                wanted.append(instance)
        if not wanted:
            return
        with self._lock:
            found: dict[tuple[str, Identity], str] = {}
            if self._conn is not None and wanted:
                try:
                    found = load_summaries(self._conn, [i.relpath for i in wanted])
                except sqlite3.Error:
                    found = {}  # slides are then built from the headers
            for instance in wanted:
                key = _key(instance)
                self._summaries.setdefault(key, found.get(key))

    def remember_summaries(self, rows: Sequence[tuple[IndexedInstance, str]]) -> None:
        """Remember summaries computed from headers as indexed (written in batches).

        Parameters
        ----------
        rows: Sequence[tuple[IndexedInstance, str]]
            Each file and its summary text
        """
        # Not the database's lock: a deferred write (see save_later) may hold it.
        with self._memo_lock:
            for instance, text in rows:
                self._pending_summaries.append((_key(instance), text))
                self._summaries[_key(instance)] = text
            if self._saving_now or len(self._pending_summaries) < _FLUSH_AFTER:
                return
        with self._lock:
            self._flush_summaries(prune=False)

    def _flush_summaries(self, prune: bool) -> None:
        """Write the pending summaries (with the lock held)."""
        with self._memo_lock:
            rows, self._pending_summaries = self._pending_summaries, []
        if self._conn is None or not (rows or (prune and self._summaries_saved)):
            return
        try:
            save_summaries(self._conn, rows, prune)
            self._summaries_saved = True
        except sqlite3.Error:
            pass  # only a speed-up is lost: the next client reads the headers

    def remembered(self, instance: IndexedInstance) -> tuple[bool, ZOffsets | None]:
        """What is remembered about a file's header.

        Parameters
        ----------
        instance: IndexedInstance
            The file

        Returns
        -------
        tuple[bool, ZOffsets | None]
            Whether it converted cleanly before (it need not be converted again), and its Z
            offsets when known
        """
        key = _key(instance)
        return key in self._validated, self._z_offsets.get(key)

    def headers(self, instances: Sequence[IndexedInstance]) -> dict[str, bytes]:
        """Stored headers of files, by relative path (only those stored for that identity).

        Parameters
        ----------
        instances: Sequence[IndexedInstance]
            The files

        Returns
        -------
        dict[str, bytes]
            What :func:`dicomslide.sources.header_codec.encode_header` stored
        """
        wanted = {i.relpath: i.identity for i in instances}
        found: dict[str, bytes] = {}
        with self._memo_lock:  # worker threads ask at once, and the write clears it
            for rel in [r for r in self._fresh if r in wanted]:
                # Parsed by this client: handed out once from memory (the write may be running).
                identity, header = self._fresh.pop(rel)
                if identity == wanted[rel]:
                    found[rel] = header
                    del wanted[rel]
        if not wanted:
            return found
        paths = list(wanted)
        with self._lock:
            conn, reopened = self._conn, None
            if conn is None and self.path is not None:
                # Closed, and a summarised image asks for its header (dicomslide.summary).
                with contextlib.suppress(sqlite3.Error):
                    conn = reopened = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True)
            if conn is None:
                return found
            try:
                for start in range(0, len(paths), _SQL_CHUNK):
                    chunk = paths[start : start + _SQL_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    for rel, size, mtime, ino, ctime, header in conn.execute(
                        "SELECT relpath, size, mtime_ns, ino, ctime_ns, header FROM files "
                        f"JOIN headers USING (relpath) WHERE relpath IN ({marks})",
                        chunk,
                    ):
                        if header is not None and wanted.get(rel) == (size, mtime, ino, ctime):
                            found[rel] = bytes(header)
            except sqlite3.Error:
                return {k: v for k, v in found.items() if k not in wanted}  # files are read
            finally:
                if reopened is not None:
                    reopened.close()
        return found

    def remember(
        self, instances: Sequence[IndexedInstance], z_offsets: Mapping[str, ZOffsets]
    ) -> None:
        """Remember which headers converted cleanly and the Z offsets found.

        Writes are batched (one transaction costs a few disk syncs, a slide's series are
        many): they reach the database every :data:`_FLUSH_AFTER` files and on :meth:`close`.

        Parameters
        ----------
        instances: Sequence[IndexedInstance]
            Files whose headers just converted cleanly, and files with ``z_offsets``
        z_offsets: Mapping[str, ZOffsets]
            Z offsets just found, by relative path
        """
        by_path = {i.relpath: i for i in instances}
        # Not the database's lock: a deferred write (see save_later) may hold it.
        with self._memo_lock:
            for instance in instances:
                if _key(instance) not in self._validated:
                    self._validated.add(_key(instance))
                    self._pending_validated.append(instance)
            for rel, value in z_offsets.items():
                owner = by_path.get(rel)
                if owner is not None and self._z_offsets.get(_key(owner)) != value:
                    self._z_offsets[_key(owner)] = value
                    self._pending_z.append((owner, value))
            full = len(self._pending_validated) + len(self._pending_z) >= _FLUSH_AFTER
        if full:
            with self._lock:
                self._flush()

    def _flush(self) -> None:
        """Write what :meth:`remember` collected (with the lock held)."""
        with self._memo_lock:
            validated, self._pending_validated = self._pending_validated, []
            found, self._pending_z = self._pending_z, []
        if self._conn is None or not (validated or found):
            return
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            # Each update names the identity it was found for: a file another process
            # re-indexed meanwhile keeps its own answer.
            self._conn.executemany(
                f"UPDATE files SET validated = 1 WHERE {_SAME_FILE}",
                [(i.relpath, *i.identity) for i in validated],
            )
            self._conn.executemany(
                f"UPDATE files SET z_offsets = ? WHERE {_SAME_FILE}",
                [(json.dumps([n, list(z)]), i.relpath, *i.identity) for i, (n, z) in found],
            )
            self._conn.execute("COMMIT")
        except sqlite3.Error:
            # Only a speed-up is lost: the headers are converted again next time.
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")

    def frame_table(
        self, instance: IndexedInstance
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None:
        """Where each frame of an encapsulated file lies, as remembered for its identity.

        Parameters
        ----------
        instance: IndexedInstance
            The file; the table is kept for its identity only

        Returns
        -------
        tuple[numpy.ndarray, numpy.ndarray] | None
            Start and stop offsets per frame (see :class:`dicomslide.sources.part10.FrameLayout`),
            None when not remembered
        """
        if self._is_being_saved(instance):
            return None  # just parsed: none was remembered for it (do not wait for the write)
        with self._lock:  # kept in a table of its own: see dicomslide.sources.frame_tables
            if self._conn is None:
                return None
            return frame_tables.load_frame_table(self._conn, instance)

    def remember_frame_table(
        self,
        instance: IndexedInstance,
        starts: npt.NDArray[np.int64],
        stops: npt.NDArray[np.int64],
    ) -> None:
        """Remember where each frame of an encapsulated file lies (scanning them is slow).

        Parameters
        ----------
        instance: IndexedInstance
            The file, as indexed
        starts, stops: numpy.ndarray
            Start and stop offsets per frame
        """
        with self._memo_lock:
            if self._saving_now:  # written after the deferred write, not waiting for it
                self._later_tables.append((instance, (starts, stops)))
                return
        with self._lock:
            if self._conn is not None:
                frame_tables.save_frame_table(self._conn, instance, (starts, stops))

    def close(self) -> None:
        """Write what is pending and close the database connection."""
        if self._saving is not None:
            self._saving.join()
        self._fresh = {}
        with self._lock:
            self._flush()
            self._flush_summaries(prune=True)
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def index_file_for(root: Path, recursive: bool, index_dir: Path | None) -> Path:
    """Where the index of a folder is persisted.

    Parameters
    ----------
    root: pathlib.Path
        The resolved folder
    recursive: bool
        Whether sub-folders are indexed (a separate index)
    index_dir: pathlib.Path | None
        The folder of indexes (``None``: the default)

    Returns
    -------
    pathlib.Path
        ``<index_dir>/<sha256 of the folder and flag>.sqlite``
    """
    digest = hashlib.sha256(f"{root}\0{recursive}".encode()).hexdigest()[:32]
    folder = index_dir if index_dir is not None else _default_index_dir()
    return folder / f"{digest}.sqlite"


async def build_index(
    base: Path, recursive: bool, index_dir: Path | None
) -> tuple[FolderIndex, IndexStore]:
    """Index a folder (files in worker threads), reusing and updating the persisted index.

    Parameters
    ----------
    base: pathlib.Path
        The folder
    recursive: bool
        Whether sub-folders are indexed
    index_dir: pathlib.Path | None
        The folder of indexes (``None``: the default)

    Returns
    -------
    tuple[FolderIndex, IndexStore]
        The index and its persisted store
    """
    started = time.perf_counter()

    def prepare() -> tuple[
        Path,
        Path,
        sqlite3.Connection | None,
        dict[str, _Row],
        str | None,
        list[tuple[str, Identity]],
        dict[str, DirRecord] | None,
        Snapshot | None,
        bool,
    ]:
        if not base.is_dir():
            raise NotFoundError(f"folder {base} does not exist")
        root = base.resolve()
        index_file = index_file_for(root, recursive, index_dir)
        conn, rows, known_dirs, error, snapshot = _open_store(index_file, root, recursive)
        if snapshot is not None:  # nothing changed: no survey, no rows
            return root, index_file, conn, rows, error, [], None, snapshot, False
        # Unchanged directories are not listed again: their indexed files are stat-ed. A
        # tuple per file: see dicomslide._gc (the first survey of a process took twice as
        # long as the next ones, walking the rows just loaded).
        with collector_paused():
            files, dirs, _ = survey(root, recursive, index_file, known_dirs, rows)
        # A snapshot is stored (by the save below) once no directory is to be listed again.
        settled = not any(record[3] for record in dirs.values())
        changed = None if dirs == known_dirs else dirs
        return root, index_file, conn, rows, error, files, changed, None, settled

    (
        root,
        index_file,
        conn,
        rows,
        persist_error,
        files,
        dirs,
        snapshot,
        settled,
    ) = await asyncio.to_thread(prepare)
    if snapshot is not None and conn is not None:
        store = IndexStore(index_file, conn, set(), {})
        stored = _stored_rows(store, root, snapshot)
        # Instances, non-DICOM files, failures and duplicates as the snapshot counted them.
        counts = snapshot[4:8]
        elapsed = time.perf_counter() - started
        summary = IndexSummary(base, index_file, *counts, 0, len(snapshot.files), None, elapsed)
        return FolderIndex({}, summary, stored=stored), store
    with collector_paused():  # a tuple per file, see above
        entries: dict[str, Entry] = {}
        to_parse: list[tuple[str, Identity]] = []
        validated: set[tuple[str, Identity]] = set()
        z_offsets: dict[tuple[str, Identity], ZOffsets] = {}
        for relpath, identity in files:
            old = rows.get(relpath)
            if old is not None and old[0] == identity and old[1] != _DAMAGED:
                _, status, data, pixel_tag, is_validated, z = old
                entries[relpath] = (identity, status, data, None, pixel_tag, is_validated)
                if is_validated:
                    validated.add((relpath, identity))
                if z is not None:
                    z_offsets[(relpath, identity)] = z
            else:
                to_parse.append((relpath, identity))
    reused = len(entries)
    parsed: list[tuple[str, Entry]] = []

    def parse_chunk(chunk: Sequence[tuple[str, Identity]]) -> list[Entry]:
        return [_parse_index_entry(str(root / rel), ident[0], ident[1]) for rel, ident in chunk]

    async def run_chunk(chunk: Sequence[tuple[str, Identity]]) -> None:
        async with limiter:
            done = await asyncio.to_thread(parse_chunk, chunk)
        for (relpath, _identity), entry in zip(chunk, done, strict=True):
            entries[relpath] = entry
            parsed.append((relpath, entry))
            if entry[5]:
                # Known from the bytes to convert cleanly: opening the slide skips converting.
                validated.add((relpath, entry[0]))

    limiter = asyncio.Semaphore(_PARSE_THREADS)
    if to_parse:
        await gather_all(
            [
                run_chunk(to_parse[start : start + _PARSE_CHUNK])
                for start in range(0, len(to_parse), _PARSE_CHUNK)
            ]
        )

    removed = [(rel, row[0]) for rel, row in rows.items() if rel not in entries]
    # A large header (a sparse image's per-frame items) is written while the slide opens:
    # see IndexStore.save_later.
    deferred = any(_is_large(entry[3]) for _, entry in parsed)
    if conn is not None and (parsed or removed or dirs is not None or settled) and not deferred:
        try:
            await asyncio.to_thread(_save_entries, conn, parsed, removed, dirs)
        except sqlite3.Error as exc:
            persist_error = f"{type(exc).__name__}: {exc}"
            conn.close()
            conn = None

    with collector_paused():
        instances: dict[str, IndexedInstance] = {}
        tally = FileTally()
        # A string join: os.path.join is ~2 µs a file, 30 ms of a warm 15,000-file index.
        prefix = str(root).rstrip(os.sep) + os.sep
        for relpath in sorted(entries):
            identity, status, data, _, pixel_tag, _ = entries[relpath]
            if status != "dicom":
                tally.first(relpath, status, data, None)
                continue
            if isinstance(data, dict):  # parsed now
                attrs, study, series, sop = data, *(str(data[k]) for k in _REQUIRED[:3])
            else:  # as stored: attributes still encoded
                attrs, study, series, sop = data
            if tally.first(relpath, status, data, sop):
                instances[sop] = IndexedInstance(
                    relpath, prefix + relpath, identity, attrs, pixel_tag, (study, series, sop)
                )
    summary = IndexSummary(
        base_dir=base,
        index_file=None if conn is None else index_file,
        instances=len(instances),
        non_dicom=tally.non_dicom,
        failures=tally.failures,
        duplicates=tally.duplicates,
        parsed=len(to_parse),
        reused=reused,
        persist_error=persist_error,
        seconds=time.perf_counter() - started,
    )
    store = IndexStore(None if conn is None else index_file, conn, validated, z_offsets)
    if conn is not None and deferred:
        store.save_later(parsed, removed, dirs)
    with collector_paused():  # a list per series
        return FolderIndex(instances, summary), store

"""Where each frame of an encapsulated file lies, kept in a table of its own in the index.

Finding the frames of a file without an offset table means reading every fragment header
(the whole pixel data), so the local index remembers the answer. It is kept apart from the
``files`` rows on purpose: SQLite rewrites a whole row on any update, and a sparse image's
row holds its header (9 MB at 100,000 frames), so writing the table into that row cost
~170 ms of copying and journalling where writing it alone costs a few.

A table is keyed by the file's identity (path, size, modification and change times, inode):
one found for other bytes is never used, and the next scan replaces it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from dicomslide.sources.sqlite_blobs import insert_with_blob

__all__ = ["SAME_FILE", "SCHEMA", "load_frame_table", "save_frame_table"]

#: The table, created with the index's others (see dicomslide.sources.local_index).
SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS frame_tables (relpath TEXT PRIMARY KEY, size INTEGER, "
    "mtime_ns INTEGER, ino INTEGER, ctime_ns INTEGER, frames BLOB)"
)
#: The row of exactly these bytes of a file (path and identity), for every index table.
SAME_FILE: Final = "relpath = ? AND size = ? AND mtime_ns = ? AND ino = ? AND ctime_ns = ?"


class _File(Protocol):
    """What is needed of an indexed file (see ``IndexedInstance``)."""

    @property
    def relpath(self) -> str: ...

    @property
    def identity(self) -> tuple[int, int, int, int]: ...

    @property
    def number_of_frames(self) -> int: ...


def load_frame_table(
    conn: sqlite3.Connection, file: _File
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None:
    """The frame table remembered for exactly these bytes of the file, if any.

    Parameters
    ----------
    conn: sqlite3.Connection
        The index database (the caller holds its lock)
    file: IndexedInstance
        The file as indexed

    Returns
    -------
    tuple[numpy.ndarray, numpy.ndarray] | None
        Start and stop offsets per frame, None when none is remembered for this identity or
        it does not fit the file's number of frames
    """
    try:
        row = conn.execute(
            f"SELECT frames FROM frame_tables WHERE {SAME_FILE}",
            (file.relpath, *file.identity),
        ).fetchone()
    except sqlite3.Error:
        return None  # no table yet (or an unreadable index): the frames are scanned
    if row is None or not isinstance(row[0], bytes) or len(row[0]) % 16:
        return None
    both = np.frombuffer(row[0], dtype="<i8").astype(np.int64)
    n = both.size // 2
    starts, stops = both[:n], both[n:]
    if n != file.number_of_frames or bool((stops <= starts).any()):
        return None
    return starts, stops


def save_frame_table(
    conn: sqlite3.Connection,
    file: _File,
    table: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]],
) -> None:
    """Remember a file's frame table for its identity; a failure only loses the speed-up.

    Parameters
    ----------
    conn: sqlite3.Connection
        Where to write (in one ``BEGIN IMMEDIATE`` transaction, the lock held by the caller)
    file: IndexedInstance
        Whose identity the table is kept for
    table: tuple[numpy.ndarray, numpy.ndarray]
        Where each frame's bytes begin and where they end
    """
    # One array handed to SQLite as a buffer: no bytes copy (at 100,000 frames each copy
    # of the table is 1.6 MB that the process keeps as peak memory).
    data = np.concatenate(table).astype("<i8", copy=False).data
    try:
        conn.execute("BEGIN IMMEDIATE")
        names = ("relpath", "size", "mtime_ns", "ino", "ctime_ns")
        row = dict(zip(names, (file.relpath, *file.identity), strict=True))
        insert_with_blob(conn, "frame_tables", row, "frames", data)
        conn.execute("COMMIT")
    except sqlite3.Error:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")

"""The local index's table of per-instance summaries (see :mod:`dicomslide.summary`).

Each summary is stored with the identity (size, modification time, inode, status-change time)
of the file it was computed from, and handed out only while the file's own row in the index
names the same identity: a file changed, replaced or removed since never gets a summary of
other bytes. All of a folder's summaries are read with one query a warm search over
thousands of slides asks for all of them at once, a search for one container for three).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final

from dicomslide.sources.frame_tables import SAME_FILE

__all__ = ["load_summaries", "save_summaries"]

#: A file's relative path and identity.
FileKey = tuple[str, tuple[int, int, int, int]]

#: A summaries row ({t}) naming the identity its file's row (f) still has.
_SAME_AS_FILE: Final = " AND ".join(
    f"f.{c} = {{t}}.{c}" for c in ("relpath", "size", "mtime_ns", "ino", "ctime_ns")
)
_LOAD: Final = (
    "SELECT s.relpath, s.size, s.mtime_ns, s.ino, s.ctime_ns, s.summary FROM summaries s "
    f"JOIN files f ON {_SAME_AS_FILE.format(t='s')} WHERE typeof(s.summary) = 'text' "
    "AND s.relpath IN ({marks})"
)
_CHUNK: Final = 500
# Only for the identity the file's row still names: another process may have re-indexed it.
_SAVE: Final = (
    "INSERT OR REPLACE INTO summaries (relpath, size, mtime_ns, ino, ctime_ns, summary) "
    f"SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM files WHERE {SAME_FILE})"
)
# Rows of files no longer indexed (their own row gone or replaced) are dropped with a write.
_PRUNE: Final = (
    "DELETE FROM summaries WHERE NOT EXISTS (SELECT 1 FROM files f WHERE "
    f"{_SAME_AS_FILE.format(t='summaries')})"
)


def load_summaries(conn: sqlite3.Connection, relpaths: Sequence[str]) -> dict[FileKey, str]:
    """The stored summaries of files whose identity matches their file's row.

    Parameters
    ----------
    conn: sqlite3.Connection
        The index
    relpaths: Sequence[str]
        The files, relative to the folder

    Returns
    -------
    dict[tuple[str, tuple[int, int, int, int]], str]
        Summary text by relative path and identity
    """
    found: dict[FileKey, str] = {}
    for start in range(0, len(relpaths), _CHUNK):
        chunk = relpaths[start : start + _CHUNK]
        query = _LOAD.format(marks=",".join("?" * len(chunk)))
        for rel, size, mtime, ino, ctime, text in conn.execute(query, chunk):
            found[(rel, (size, mtime, ino, ctime))] = text
    return found


def save_summaries(
    conn: sqlite3.Connection, rows: Sequence[tuple[FileKey, str]], prune: bool
) -> None:
    """Store summaries, each for the identity it was computed from (one transaction).

    Parameters
    ----------
    conn: sqlite3.Connection
        The index, in autocommit mode
    rows: Sequence[tuple[tuple[str, tuple[int, int, int, int]], str]]
        File key and summary text
    prune: bool
        Whether rows of files no longer indexed are dropped too (a pass over the table:
        done once per client, when it closes)
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(_SAVE, [(rel, *ident, text, rel, *ident) for (rel, ident), text in rows])
        if prune:
            conn.execute(_PRUNE)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise

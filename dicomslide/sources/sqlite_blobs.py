"""Large values written into the index a megabyte at a time.

Binding a blob to an ``INSERT`` makes SQLite copy it twice before it reaches the database
(the bound value, then the record built from it): storing the 9 MB header of a sparse image
of 100,000 frames raised the peak memory of a cold open by ~18 MB, a fifth of its budget.
A row inserted with a zero-filled blob of the right length and then filled through an
incremental blob handle costs one megabyte of buffer instead (measured: +2 MB).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Final

__all__ = ["insert_with_blob"]

#: Bytes written per call on the blob handle.
_PIECE: Final = 1 << 20


def insert_with_blob(
    conn: sqlite3.Connection,
    table: str,
    values: Mapping[str, object],
    column: str,
    data: bytes | memoryview,
) -> None:
    """``INSERT OR REPLACE`` a row whose ``column`` holds ``data``, without copying ``data``.

    Call it inside the caller's transaction: the row and its blob are written together.

    Parameters
    ----------
    conn: sqlite3.Connection
        The database
    table: str
        A rowid table (the names are the caller's constants, never user input)
    values: Mapping[str, object]
        The row's other columns
    column: str
        The blob column
    data: bytes | memoryview
        The blob (a contiguous buffer)
    """
    view = memoryview(data).cast("B")
    names = ", ".join([*values, column])
    marks = ", ".join("?" * len(values))
    blobopen = getattr(conn, "blobopen", None)  # Python 3.11 and later
    if blobopen is None or view.nbytes <= _PIECE:
        conn.execute(
            f"INSERT OR REPLACE INTO {table} ({names}) VALUES ({marks}, ?)",
            (*values.values(), view),
        )
        return
    cursor = conn.execute(
        f"INSERT OR REPLACE INTO {table} ({names}) VALUES ({marks}, zeroblob(?))",
        (*values.values(), view.nbytes),
    )
    with blobopen(table, column, cursor.lastrowid) as blob:
        for start in range(0, view.nbytes, _PIECE):
            blob.write(view[start : start + _PIECE])

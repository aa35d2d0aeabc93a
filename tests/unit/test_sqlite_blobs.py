"""Blobs written through an incremental handle read back exactly, and replace as INSERT does."""

from __future__ import annotations

import sqlite3
from typing import Any

import numpy as np
import pytest

from dicomslide.sources.frame_tables import SCHEMA, load_frame_table, save_frame_table
from dicomslide.sources.sqlite_blobs import insert_with_blob


class _NoBlobOpen:
    """A connection as Python 3.10 has it (no ``blobopen``)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, *args: Any) -> sqlite3.Cursor:
        return self._conn.execute(*args)


def _db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (key TEXT PRIMARY KEY, n INTEGER, value BLOB)")
    return conn


@pytest.mark.parametrize("size", [0, 5, (1 << 20) - 1, (3 << 20) + 7])
@pytest.mark.parametrize("blobopen", [True, False])
def test_blobs_read_back_and_replace(size: int, blobopen: bool) -> None:
    conn = _db()
    target: Any = conn if blobopen else _NoBlobOpen(conn)
    first = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    insert_with_blob(target, "t", {"key": "a", "n": 1}, "value", first)
    insert_with_blob(target, "t", {"key": "b", "n": 2}, "value", b"other")
    assert conn.execute("SELECT n, value FROM t WHERE key = 'a'").fetchone() == (1, first)
    # The same key again replaces the row (a longer value, from a typed buffer).
    second = np.arange(size // 8 + 3, dtype="<i8")
    insert_with_blob(target, "t", {"key": "a", "n": 3}, "value", second.data)
    rows = conn.execute("SELECT key, n, value FROM t ORDER BY key").fetchall()
    assert rows == [("a", 3, second.tobytes()), ("b", 2, b"other")]


class _File:
    relpath = "sparse.dcm"
    identity = (10, 20, 30, 40)
    number_of_frames = 100_000


def test_a_frame_table_of_100000_frames_round_trips() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute(SCHEMA)  # the index creates its tables when it opens
    starts = np.arange(100_000, dtype=np.int64) * 700 + 1000
    stops = starts + 650
    save_frame_table(conn, _File(), (starts, stops))
    loaded = load_frame_table(conn, _File())
    assert loaded is not None
    assert np.array_equal(loaded[0], starts)
    assert np.array_equal(loaded[1], stops)
    # Kept for this identity only.
    other = _File()
    other.identity = (10, 20, 30, 41)
    assert load_frame_table(conn, other) is None

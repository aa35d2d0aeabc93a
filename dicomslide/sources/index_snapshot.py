"""What a warm index checks and looks up without loading a row per file.

Checking an unchanged folder of thousands of files against its index needs every file's
path and identity; loading them as rows costs a Python tuple per file, more than the
``stat`` calls themselves. So every transaction that changes the files or directories of an
index also stores one *snapshot*: all paths as one string, all identities as one array, the
directories likewise, and the counts the index summary reports. A client whose folder
matches the snapshot (see :func:`dicomslide.sources.folder_survey.unchanged`) then loads
only the rows a search or a slide asks for.

Those asks are by value: *terms* hold, for a few keywords searches filter on exactly
(:data:`TERM_KEYWORDS`), each value an instance offers a match (see
:func:`dicomslide.sources.qido_match.value_candidates`), with an SQLite index on them.

No snapshot is stored while a directory is to be listed again (a link, an unreadable entry,
a change too recent to trust its time) or a row is damaged: such a folder is surveyed, and
its rows loaded, every time.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, NamedTuple

from dicomslide.sources.folder_survey import identity_bytes
from dicomslide.sources.qido_match import value_candidates

__all__ = [
    "FILE_INDEXES",
    "SCHEMA",
    "TABLES",
    "TERM_KEYWORDS",
    "WHOLE",
    "FileTally",
    "Snapshot",
    "delete_terms",
    "read_snapshot",
    "terms_of",
    "write_snapshot",
]

#: Keywords whose values are looked up through the terms (the exact filters of find_slides).
TERM_KEYWORDS: Final = ("ContainerIdentifier", "Modality", "PatientID", "StudyID")

SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS snapshot (id INTEGER PRIMARY KEY CHECK (id = 0), files BLOB, "
    "file_ids BLOB, dirs BLOB, dir_ids BLOB, summary TEXT)",
    "CREATE TABLE IF NOT EXISTS terms (keyword TEXT, value TEXT, relpath TEXT)",
    # Covering, in path order: a look-up reads the index alone and sorts nothing.
    "CREATE INDEX IF NOT EXISTS terms_by_value ON terms (keyword, value, relpath)",
    "CREATE INDEX IF NOT EXISTS terms_by_file ON terms (relpath)",
)
#: Look-ups of the index's files by UIDs (made once the files table has today's columns).
FILE_INDEXES: Final = (
    "CREATE INDEX IF NOT EXISTS files_by_sop ON files (sop_uid)",
    "CREATE INDEX IF NOT EXISTS files_by_series ON files (study_uid, series_uid)",
)
#: The tables above (dropped with the index's others when its format changes).
TABLES: Final = ("snapshot", "terms")

#: A stored instance is whole (the condition the index's row loading applies).
WHOLE: Final = (
    "(status != 'dicom' OR (typeof(data) = 'text' AND typeof(study_uid) = 'text' "
    "AND typeof(series_uid) = 'text' AND typeof(sop_uid) = 'text' AND study_uid != '' "
    "AND series_uid != '' AND sop_uid != ''))"
)


class Snapshot(NamedTuple):
    """The folder as its index last stored it (see the module documentation)."""

    #: Paths relative to the folder, encoded by os.fsencode (what stat takes fastest).
    files: list[bytes]
    file_ids: bytes
    dirs: list[bytes]
    dir_ids: bytes
    #: Instances, non-DICOM files, failures (path: reason) and duplicates, as
    #: :class:`dicomslide.sources.local_index.IndexSummary` reports them.
    instances: int
    non_dicom: int
    failures: dict[str, str]
    duplicates: list[str]


class FileTally:
    """The counts an index summary reports, of files taken in path order.

    The one place that decides which files are duplicates: a warm index's snapshot and an
    index loaded in full count alike.
    """

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.non_dicom = 0
        self.failures: dict[str, str] = {}
        self.duplicates: list[str] = []

    def first(self, relpath: str, status: str, detail: Any, sop_uid: str | None) -> bool:
        """Count one file; whether it is an instance whose SOP Instance UID is new.

        Parameters
        ----------
        relpath: str
            The file (after every file counted before)
        status: str
            ``"dicom"``, ``"other"`` or ``"error"``
        detail: Any
            Why it failed (``"error"`` only)
        sop_uid: str | None
            Its SOP Instance UID (``"dicom"`` only)

        Returns
        -------
        bool
            True for an instance no earlier file has
        """
        if status == "other":
            self.non_dicom += 1
        elif status == "error":
            self.failures[relpath] = str(detail)
        elif sop_uid in self.seen:
            self.duplicates.append(relpath)
        else:
            self.seen.add(str(sop_uid))
            return True
        return False

    def counts(self) -> dict[str, Any]:
        """dict[str, Any]: Instances, non-DICOM files, failures, duplicates (as stored)."""
        return {
            "instances": len(self.seen),
            "non_dicom": self.non_dicom,
            "failures": self.failures,
            "duplicates": self.duplicates,
        }


def terms_of(relpath: str, attrs: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """The term rows of one instance's attributes.

    Parameters
    ----------
    relpath: str
        The file
    attrs: Mapping[str, Any]
        Its searchable attributes (JSON values)

    Returns
    -------
    list[tuple[str, str, str]]
        Keyword, value, path; each value that matches the keyword exactly, once
    """
    return [
        (keyword, value, relpath)
        for keyword in TERM_KEYWORDS
        for value in dict.fromkeys(value_candidates(attrs.get(keyword)))
    ]


def write_snapshot(conn: sqlite3.Connection) -> None:
    """Store the snapshot of the index as its tables are now (inside a write transaction).

    Parameters
    ----------
    conn: sqlite3.Connection
        The index, with its write lock held
    """
    conn.execute("DELETE FROM snapshot")
    dir_rows = conn.execute(
        "SELECT relpath, mtime_ns, ino, ctime_ns, again FROM dirs ORDER BY relpath"
    ).fetchall()
    if not dir_rows or any(row[4] != 0 for row in dir_rows):
        return  # to be listed again next time: surveyed, not compared
    files: list[str] = []
    numbers: list[int] = []
    tally = FileTally()
    # Computed from the tables, not from what this process found: another process's rows
    # are part of the index too.
    for relpath, size, mtime, ino, ctime, status, reason, sop, whole in conn.execute(
        "SELECT relpath, size, mtime_ns, ino, ctime_ns, status, "
        f"CASE WHEN status = 'error' THEN data END, sop_uid, {WHOLE} FROM files ORDER BY relpath"
    ):
        if not whole:
            return  # parsed again next time
        files.append(relpath)
        numbers.extend((size, mtime, ino, ctime))
        tally.first(relpath, status, reason, sop)
    try:
        file_ids = identity_bytes(numbers)
        dir_ids = identity_bytes(v for row in dir_rows for v in row[1:4])
    except TypeError:
        return  # a damaged identity: surveyed next time
    conn.execute(
        "INSERT INTO snapshot VALUES (0, ?, ?, ?, ?, ?)",
        (
            b"\0".join(map(os.fsencode, files)),
            file_ids,
            # The folder itself ("") sorts first: never an empty list.
            b"\0".join(os.fsencode(row[0]) for row in dir_rows),
            dir_ids,
            json.dumps(tally.counts()),
        ),
    )


def read_snapshot(conn: sqlite3.Connection) -> Snapshot | None:
    """The stored snapshot, or None when there is none (or it is damaged).

    Parameters
    ----------
    conn: sqlite3.Connection
        The index

    Returns
    -------
    Snapshot | None
        What the last writer stored
    """
    try:
        row = conn.execute(
            "SELECT files, file_ids, dirs, dir_ids, summary FROM snapshot WHERE id = 0"
        ).fetchone()
        if row is None:
            return None
        files, file_ids, dirs, dir_ids, summary = row
        info = json.loads(summary)
        snapshot = Snapshot(
            bytes(files).split(b"\0") if files else [],
            bytes(file_ids),
            bytes(dirs).split(b"\0"),
            bytes(dir_ids),
            int(info["instances"]),
            int(info["non_dicom"]),
            {str(k): str(v) for k, v in info["failures"].items()},
            [str(v) for v in info["duplicates"]],
        )
    except (sqlite3.Error, ValueError, TypeError, KeyError, AttributeError):
        return None
    if len(snapshot.file_ids) != 32 * len(snapshot.files) or len(snapshot.dir_ids) != 24 * len(
        snapshot.dirs
    ):
        return None
    return snapshot


def delete_terms(conn: sqlite3.Connection, parsed: Sequence[str], removed: Iterable[str]) -> None:
    """Drop the terms of files parsed again, and of removed files whose row is gone.

    Parameters
    ----------
    conn: sqlite3.Connection
        The index, with its write lock held
    parsed: Sequence[str]
        Files whose rows were just replaced
    removed: Iterable[str]
        Files whose rows this process deleted (another process may have stored a newer one)
    """
    conn.executemany("DELETE FROM terms WHERE relpath = ?", [(rel,) for rel in parsed])
    conn.executemany(
        "DELETE FROM terms WHERE relpath = ? AND NOT EXISTS "
        "(SELECT 1 FROM files WHERE files.relpath = terms.relpath)",
        [(rel,) for rel in removed],
    )

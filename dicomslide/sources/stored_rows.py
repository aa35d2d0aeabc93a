"""The instances of a warm index, loaded from its database as a search or a slide asks.

When a folder matches its index's snapshot (see :mod:`dicomslide.sources.index_snapshot`)
nothing is loaded up front: a container search loads one slide's rows through the terms, a
slide its series' rows, a frame read its instance's row. What asks for a good part of the
folder (every slide's modality, every study) loads all rows in one pass, once. The rows are
made into instances by the index (:mod:`dicomslide.sources.local_index`), the same object for
the same file every time. Only whole rows whose file identity is the snapshot's are used: the
others describe the folder after the open (or are damaged), which a full load never saw.

Every method that may read the database must run in a worker thread (see
``FolderIndex.off_loop``); once every row is loaded nothing is read any more.
"""

from __future__ import annotations

import os
import sqlite3
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Final, Generic, Protocol, TypeVar

from dicomslide._gc import collector_paused
from dicomslide.errors import InvalidDataError
from dicomslide.sources.index_snapshot import WHOLE

__all__ = ["FEW_ROWS", "AsAsked", "Loaded", "StoredRows", "mappings"]

#: Rows looked up one by one; more are found in one pass over all rows (a third of the cost).
FEW_ROWS: Final = 256


class Loaded(Protocol):
    """What is needed of an instance made from a row."""

    @property
    def relpath(self) -> str:
        """str: The file, relative to the folder."""
        ...

    @property
    def uids(self) -> tuple[str, str, str]:
        """tuple[str, str, str]: Study, Series and SOP Instance UID."""
        ...


_I = TypeVar("_I", bound=Loaded)


class StoredRows(Generic[_I]):
    """The instances of one index, loaded from its ``files`` table as asked.

    Parameters
    ----------
    reading: Callable[[], AbstractContextManager[sqlite3.Connection]]
        Holds the index's connection for a block
    columns: str
        ``SELECT`` and the columns ``make`` takes: the path, its four identity numbers
        first, the Study, Series and SOP Instance UID last
    make: Callable[[Sequence[Any]], _I]
        Makes an instance of a row (called once per file, with the connection held)
    duplicates: Iterable[str]
        Files whose SOP Instance UID an earlier file has (never handed out)
    files: Sequence[bytes]
        The snapshot's paths (see :class:`dicomslide.sources.index_snapshot.Snapshot`)
    file_ids: bytes
        Their identities (see :func:`dicomslide.sources.folder_survey.identity_bytes`)
    """

    def __init__(
        self,
        reading: Callable[[], AbstractContextManager[sqlite3.Connection]],
        columns: str,
        make: Callable[[Sequence[Any]], _I],
        duplicates: Iterable[str],
        files: Sequence[bytes],
        file_ids: bytes,
    ) -> None:
        self._reading = reading
        self._columns = columns
        self._make = make
        self._duplicates = frozenset(duplicates)
        self._files = files
        # As identity_bytes stored them: four int64s a file.
        self._ids = memoryview(file_ids).cast("q")
        self._made: dict[str, _I] = {}
        self._all: dict[str, _I] | None = None
        self._series: dict[tuple[str, str], list[_I]] | None = None

    @property
    def loaded(self) -> bool:
        """bool: Whether every row is loaded (nothing more is read from the database)."""
        return self._all is not None

    def _as_opened(self, relpath: str, identity: Sequence[int]) -> bool:
        """Whether a row is the one the snapshot holds for its file.

        Another process indexes a file again once it changed: its new row describes the
        folder after this index was opened, which an index loaded in full never sees.
        """
        path = os.fsencode(relpath)
        at = bisect_left(self._files, path)
        if at == len(self._files) or self._files[at] != path:
            return False
        ids, at = self._ids, 4 * at
        return (ids[at], ids[at + 1], ids[at + 2], ids[at + 3]) == tuple(identity)

    def _query(self, what: str, sql: str, params: Sequence[Any]) -> list[Any]:
        """All rows of a query, the connection held meanwhile.

        Raises
        ------
        dicomslide.errors.InvalidDataError
            If the index cannot be read (another process replaced it, or kept it locked)
        """
        with self._reading() as conn:
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise InvalidDataError(
                    f"looking up {what} in the folder's index failed ({exc}); open a new "
                    "client to index the folder again"
                ) from exc

    def select(self, what: str, where: str, params: Sequence[Any]) -> list[_I]:
        """Instances of the whole DICOM rows a condition selects, in path order.

        Rows of files that changed since the snapshot, and duplicates, are left out.

        Parameters
        ----------
        what: str
            What is looked up (for an error message)
        where: str
            The condition on the ``files`` table
        params: Sequence[Any]
            Its parameters

        Returns
        -------
        list
            One per row (the same object for the same file each time)

        Raises
        ------
        dicomslide.errors.InvalidDataError
            If the index cannot be read any more (another process replaced it)
        """
        out: list[_I] = []
        with collector_paused():
            rows = self._query(
                what,
                # A damaged row is no instance (its file was parsed again before a
                # snapshot was stored: one damaged since is left out).
                f"{self._columns}FROM files WHERE status = 'dicom' AND {WHOLE} AND ({where}) "
                "ORDER BY relpath",
                params,
            )
            made, duplicates, make = self._made, self._duplicates, self._make
            for row in rows:
                relpath = row[0]
                if relpath in duplicates or not self._as_opened(relpath, row[1:5]):
                    continue
                instance = made.get(relpath)
                if instance is None or instance.uids != row[-3:]:
                    instance = made[relpath] = make(row)
                out.append(instance)
        return out

    def having(self, keyword: str, text: str) -> list[_I]:
        """Instances whose ``keyword`` offers ``text``, as the index's terms hold them.

        Parameters
        ----------
        keyword: str
            One of :data:`dicomslide.sources.index_snapshot.TERM_KEYWORDS`
        text: str
            The exact value

        Returns
        -------
        list
            In path order
        """
        what = f"{keyword} {text!r}"
        paths = [
            rel
            for (rel,) in self._query(
                what,
                "SELECT relpath FROM terms WHERE keyword = ? AND value = ? ORDER BY relpath",
                (keyword, text),
            )
        ]
        if len(paths) > FEW_ROWS:
            wanted = set(paths)
            return [i for i in self.everything().values() if i.relpath in wanted]
        return self.select(what, f"relpath IN ({','.join('?' * len(paths))})", paths)

    def instance(self, sop_uid: str) -> _I | None:
        """The instance of a SOP Instance UID (its row alone, unless all are loaded).

        Parameters
        ----------
        sop_uid: str
            The UID

        Returns
        -------
        Loaded | None
            None when the folder has none
        """
        if self._all is not None:
            return self._all.get(sop_uid)
        found = self.select(f"SOP Instance UID {sop_uid}", "sop_uid = ?", (sop_uid,))
        return found[0] if found else None

    def members(self, key: tuple[str, str]) -> list[_I]:
        """The instances of one series (its rows alone, unless all are loaded).

        Parameters
        ----------
        key: tuple[str, str]
            Study and Series Instance UID

        Returns
        -------
        list
            In path order, empty when the folder has no such series
        """
        if self._all is not None:
            return self.all_series().get(key, [])
        return self.select(
            f"series {key[1]} of study {key[0]}", "study_uid = ? AND series_uid = ?", key
        )

    def everything(self) -> dict[str, _I]:
        """Every instance, by SOP Instance UID, in path order (loaded once).

        Returns
        -------
        dict
            As an index loaded in full holds them
        """
        if self._all is None:
            found = self.select("every instance", "1", ())
            self._all = {i.uids[2]: i for i in found}
        return self._all

    def all_series(self) -> dict[tuple[str, str], list[_I]]:
        """Every series' instances (loaded once).

        Returns
        -------
        dict
            By Study and Series Instance UID
        """
        if self._series is None:
            series: dict[tuple[str, str], list[_I]] = {}
            for instance in self.everything().values():
                series.setdefault(instance.uids[:2], []).append(instance)
            self._series = series
        return self._series


_K = TypeVar("_K")
_V = TypeVar("_V")


class AsAsked(Mapping[_K, _V]):
    """A mapping that looks one key up when asked for it, and loads all when iterated.

    Parameters
    ----------
    find: Callable[[_K], _V | None]
        One key's value (None: no such key), kept once found (a miss is asked again: the
        key's file may be indexed since)
    whole: Callable[[], Mapping[_K, _V]]
        Every key's value
    """

    def __init__(self, find: Callable[[_K], _V | None], whole: Callable[[], Mapping[_K, _V]]):
        self._find = find
        self._whole = whole
        self._found: dict[_K, _V] = {}

    def __getitem__(self, key: _K) -> _V:
        value = self._found.get(key)
        if value is None:
            value = self._find(key)
            if value is None:
                raise KeyError(key)
            self._found[key] = value
        return value

    def known(self, key: _K) -> _V | None:
        """The value of a key looked up before (never reads anything).

        Parameters
        ----------
        key: _K
            A key (a SOP Instance UID, say) that the caller would otherwise look up in a
            worker thread

        Returns
        -------
        _V | None
            What looking it up gave; None when not looked up yet, or not there
        """
        return self._found.get(key)

    def __iter__(self) -> Iterator[_K]:
        return iter(self._whole())

    def __len__(self) -> int:
        return len(self._whole())


def mappings(
    stored: StoredRows[_I],
) -> tuple[AsAsked[str, _I], AsAsked[tuple[str, str], list[_I]]]:
    """The instances by SOP Instance UID and by series, each loaded when asked for.

    Parameters
    ----------
    stored: StoredRows
        Where they come from

    Returns
    -------
    tuple[AsAsked, AsAsked]
        By SOP Instance UID, and by Study and Series Instance UID (a series without
        instances is not in it)
    """
    return (
        AsAsked(stored.instance, stored.everything),
        AsAsked(lambda key: stored.members(key) or None, stored.all_series),
    )

"""The instances of a warm index, loaded from its database as a search or a slide asks.

When a folder matches its index's snapshot (see :mod:`dicomslide.sources.index_snapshot`)
nothing is loaded up front: a container search loads one slide's rows through the terms, a
slide its series' rows, a frame read its instance's row. What asks for a good part of the
folder (every slide's modality, every study) loads all rows in one pass, once. The rows are
made into instances by the index (:mod:`dicomslide.sources.local_index`), the same object for
the same file every time.

Every method that may read the database must run in a worker thread (see
``FolderIndex.off_loop``); once every row is loaded nothing is read any more.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Final, Generic, Protocol, TypeVar

from dicomslide._gc import collector_paused
from dicomslide.errors import InvalidDataError

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
        ``SELECT`` and the columns ``make`` takes, the path first
    make: Callable[[Sequence[Any]], _I]
        Makes an instance of a row (called once per file, with the connection held)
    duplicates: Iterable[str]
        Files whose SOP Instance UID an earlier file has (never handed out)
    """

    def __init__(
        self,
        reading: Callable[[], AbstractContextManager[sqlite3.Connection]],
        columns: str,
        make: Callable[[Sequence[Any]], _I],
        duplicates: Iterable[str],
    ) -> None:
        self._reading = reading
        self._columns = columns
        self._make = make
        self._duplicates = frozenset(duplicates)
        self._made: dict[str, _I] = {}
        self._all: dict[str, _I] | None = None
        self._series: dict[tuple[str, str], list[_I]] | None = None

    @property
    def loaded(self) -> bool:
        """bool: Whether every row is loaded (nothing more is read from the database)."""
        return self._all is not None

    def select(self, tail: str, params: Sequence[Any]) -> list[_I]:
        """Instances of the rows ``SELECT <columns> <tail>`` gives, duplicates left out.

        Parameters
        ----------
        tail: str
            From ``FROM files`` on; rows in path order
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
        with self._reading() as conn, collector_paused():
            try:
                rows = conn.execute(self._columns + tail, params).fetchall()
            except sqlite3.Error as exc:
                raise InvalidDataError(
                    f"the folder's index can no longer be read ({exc}); open a new client "
                    "to index the folder again"
                ) from exc
            made, duplicates, make = self._made, self._duplicates, self._make
            for row in rows:
                relpath = row[0]
                if relpath in duplicates:
                    continue
                instance = made.get(relpath)
                if instance is None:
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
        with self._reading() as conn:
            paths = [
                rel
                for (rel,) in conn.execute(
                    "SELECT relpath FROM terms WHERE keyword = ? AND value = ? ORDER BY relpath",
                    (keyword, text),
                )
            ]
        if len(paths) > FEW_ROWS:
            wanted = set(paths)
            return [i for i in self.everything().values() if i.relpath in wanted]
        marks = ",".join("?" * len(paths))
        return self.select(
            f"FROM files WHERE relpath IN ({marks}) AND status = 'dicom' ORDER BY relpath", paths
        )

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
        found = self.select(
            "FROM files WHERE sop_uid = ? AND status = 'dicom' ORDER BY relpath", (sop_uid,)
        )
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
            "FROM files WHERE study_uid = ? AND series_uid = ? AND status = 'dicom' "
            "ORDER BY relpath",
            key,
        )

    def everything(self) -> dict[str, _I]:
        """Every instance, by SOP Instance UID, in path order (loaded once).

        Returns
        -------
        dict
            As an index loaded in full holds them
        """
        if self._all is None:
            found = self.select("FROM files WHERE status = 'dicom' ORDER BY relpath", ())
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
        One key's value (None: no such key), kept once found
    whole: Callable[[], Mapping[_K, _V]]
        Every key's value
    """

    def __init__(self, find: Callable[[_K], _V | None], whole: Callable[[], Mapping[_K, _V]]):
        self._find = find
        self._whole = whole
        self._found: dict[_K, _V | None] = {}

    def __getitem__(self, key: _K) -> _V:
        if key not in self._found:
            self._found[key] = self._find(key)
        value = self._found[key]
        if value is None:
            raise KeyError(key)
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

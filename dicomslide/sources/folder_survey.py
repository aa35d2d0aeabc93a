"""Which files a folder holds now, and their identities, without listing unchanged folders.

Adding, removing or renaming an entry of a directory changes its modification and status
change times (POSIX). A directory whose identity (modification time, inode, change time) is
the one remembered in the index therefore holds the same entries as when it was listed: its
files are the indexed ones, and only they are ``stat``-ed (a file changed in place changes its
own identity, not its directory's). A directory whose identity differs, or that is new, is
listed again. Always listed again: directories holding a symbolic link (its target may
appear, vanish or change without the directory changing), directories with an entry that
could not be read, and directories changed within :data:`RACY_NS` of being listed (their
time may not have moved yet for a change made right after the listing).
"""

from __future__ import annotations

import array
import concurrent.futures
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

__all__ = [
    "RACY_NS",
    "DirRecord",
    "FileIdentity",
    "identity_bytes",
    "identity_of",
    "survey",
    "unchanged",
]

#: A directory's modification time, inode, status change time (ns) and whether it must be
#: listed again next time (1) whatever its identity.
DirRecord = tuple[int, int, int, int]
#: A file's size, modification time, inode and status change time (ns).
FileIdentity = tuple[int, int, int, int]

#: Changes closer than this to the listing may not have moved the directory's time (coarse
#: file system clocks); such directories are listed again next time.
RACY_NS: Final = 2_000_000_000
_STAT_THREADS: Final = 4
_STAT_CHUNK: Final = 512


def identity_of(st: os.stat_result) -> FileIdentity:
    """The identity the index keeps of a file: size, mtime, inode and ctime.

    Parameters
    ----------
    st: os.stat_result
        The file's status

    Returns
    -------
    tuple[int, int, int, int]
        Its identity
    """
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def _inside(path: str, root: str) -> bool:
    """Whether the real path ``path`` is ``root`` or below it (both absolute, resolved)."""
    return os.path.commonpath([path, root]) == root


def _stat_files(root: str, relpaths: list[str]) -> list[tuple[str, FileIdentity]]:
    """Identities of files that still exist (``os.stat`` releases the GIL: a few threads)."""

    # A string join and no helper calls: ~1.5 µs a file less than os.path.join and
    # identity_of, which the threads would spend holding the GIL.
    prefix = root.rstrip(os.sep) + os.sep
    stat = os.stat

    def run(chunk: list[str]) -> list[tuple[str, FileIdentity]]:
        out = []
        for rel in chunk:
            try:
                st = stat(prefix + rel)
            except OSError:
                continue  # gone: dropped from the index
            out.append((rel, (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)))
        return out

    chunks = [relpaths[i : i + _STAT_CHUNK] for i in range(0, len(relpaths), _STAT_CHUNK)]
    if len(chunks) <= 1:
        return run(relpaths)
    with concurrent.futures.ThreadPoolExecutor(_STAT_THREADS) as pool:
        return [item for part in pool.map(run, chunks) for item in part]


def survey(
    root: Path,
    recursive: bool,
    skip: Path | None,
    known_dirs: Mapping[str, DirRecord],
    known_files: Iterable[str],
) -> tuple[list[tuple[str, FileIdentity]], dict[str, DirRecord], int]:
    """List the regular files under ``root`` with their identities.

    Parameters
    ----------
    root: pathlib.Path
        The resolved folder
    recursive: bool
        Whether sub-folders count
    skip: pathlib.Path | None
        Files whose path starts with this are left out (the index and its journal)
    known_dirs: Mapping[str, DirRecord]
        Directories (relative, ``""`` for ``root``) as remembered
    known_files: Iterable[str]
        Files (relative paths) as remembered

    Returns
    -------
    tuple[list[tuple[str, FileIdentity]], dict[str, DirRecord], int]
        The files (sorted by relative path), the directories to remember and how many
        directories were listed
    """
    root_text = str(root)
    skip_text = str(skip) if skip is not None else None
    # Relative paths are joined with os.sep here: their folder is what precedes the last one.
    sep = os.sep
    children: dict[str, list[str]] = {}
    if recursive:
        for rel in known_dirs:
            if rel:
                children.setdefault(rel.rpartition(sep)[0], []).append(rel)
    files_in: dict[str, list[str]] = {}
    for rel in known_files:
        files_in.setdefault(rel.rpartition(sep)[0], []).append(rel)
    found: list[tuple[str, FileIdentity]] = []
    to_stat: list[str] = []
    dirs: dict[str, DirRecord] = {}
    listed = 0
    pending = [""]
    while pending:
        rel = pending.pop()
        path = os.path.join(root_text, rel) if rel else root_text
        parent = rel.rpartition(sep)[0]
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            if rel and parent in dirs:
                dirs[parent] = (*dirs[parent][:3], 1)
            continue
        ident = (st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        old = known_dirs.get(rel)
        if old is not None and old[:3] == ident and not old[3]:
            dirs[rel] = old
            pending.extend(children.get(rel, ()))
            to_stat.extend(files_in.get(rel, ()))
            continue
        listed += 1
        again = time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < RACY_NS
        try:
            entries = list(os.scandir(path))
        except OSError:
            entries, again = [], True
        for entry in entries:
            try:
                if entry.is_symlink():
                    again = True
                # Not following directory links keeps cyclic links from looping forever.
                if entry.is_dir(follow_symlinks=False):
                    if recursive:
                        pending.append(os.path.join(rel, entry.name) if rel else entry.name)
                    continue
                if not entry.is_file() or (
                    skip_text is not None and entry.path.startswith(skip_text)
                ):
                    continue
                # A link to a file outside the folder is not the folder's (and could point
                # anywhere, e.g. at another patient's data): never index or read it.
                if entry.is_symlink() and not _inside(os.path.realpath(entry.path), root_text):
                    continue
                entry_st = entry.stat()
            except OSError:
                again = True
                continue
            name = os.path.join(rel, entry.name) if rel else entry.name
            found.append((name, identity_of(entry_st)))
        dirs[rel] = (*ident, int(again))
    found += _stat_files(root_text, to_stat)
    found.sort()
    return found, dirs, listed


def identity_bytes(values: Iterable[int]) -> bytes:
    """Identities flattened to 64-bit integers, as :func:`unchanged` compares them.

    Parameters
    ----------
    values: Iterable[int]
        The identities' numbers, one after the other

    Returns
    -------
    bytes
        Native-endian int64s (compared on this machine only)
    """
    return array.array("q", values).tobytes()


def unchanged(
    root: Path,
    dirs: Sequence[bytes],
    dir_ids: bytes,
    files: Sequence[bytes],
    file_ids: bytes,
) -> bool:
    """Whether a folder holds exactly the directories and files remembered, unchanged.

    The same decision as a :func:`survey` that lists no directory and finds every file's
    identity as remembered, for a fraction of its cost: one ``stat`` per entry and one
    comparison of all identities at once (C speed), no tuple per file.

    Parameters
    ----------
    root: pathlib.Path
        The resolved folder
    dirs: Sequence[bytes]
        Every directory the last survey walked (relative, ``b""`` for ``root``, encoded by
        :func:`os.fsencode`), none of them to be listed again whatever its identity
    dir_ids: bytes
        Their modification times, inodes and status change times, by :func:`identity_bytes`
    files: Sequence[bytes]
        Every file the last survey found (relative, encoded likewise)
    file_ids: bytes
        Their sizes, modification times, inodes and status change times, likewise

    Returns
    -------
    bool
        True when nothing was added, removed, replaced, moved or changed
    """
    stat = os.stat
    numbers: list[int] = []
    extend = numbers.extend
    # Encoded paths relative to an open folder: the per-file cost is mostly Python's, and
    # this spares encoding each path and the kernel walking the folder's path (~15 %).
    relative = stat in os.supports_dir_fd and stat in os.supports_follow_symlinks
    prefix = os.fsencode(root) + os.fsencode(os.sep)
    try:
        fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if relative else None
    except OSError:
        return False
    try:
        # An unchanged directory holds the entries it was listed with (see the module
        # documentation): the directories remembered are then all there are.
        for rel in dirs:
            if fd is not None:
                st = stat(rel or b".", dir_fd=fd, follow_symlinks=False)
            else:
                st = stat(prefix + rel if rel else prefix, follow_symlinks=False)
            extend((st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
        if identity_bytes(numbers) != dir_ids:
            return False
        numbers.clear()
        # One thread: the GIL-holding part of a stat is most of its ~2 µs, so threads lose.
        if fd is not None:
            for rel in files:
                st = stat(rel, dir_fd=fd)
                extend((st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
        else:
            for rel in files:
                st = stat(prefix + rel)
                extend((st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
    except OSError:
        return False  # gone, or unreadable: the survey tells what
    finally:
        if fd is not None:
            os.close(fd)
    return identity_bytes(numbers) == file_ids

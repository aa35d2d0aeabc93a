"""The index of a local folder, and the sidecar that remembers validated headers.

See :mod:`dicomslide.sources.local` for what is indexed and how it is kept up to date. Here
are the index itself (walk, parse, persist as one JSON file written atomically) and, beside
it, the sidecar (``<index>.json.validated``) that remembers by each file's path, size and
modification time which headers converted cleanly and the distinct Z offsets of images with
per-frame items.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.multival import MultiValue

from dicomslide._docs import borrowed_doc
from dicomslide.errors import NotFoundError
from dicomslide.sources import part10

__all__ = [
    "INDEX_KEYWORDS",
    "SEARCHABLE",
    "SERIES_KEYWORDS",
    "STUDY_KEYWORDS",
    "FolderIndex",
    "IndexSummary",
    "IndexedInstance",
    "Sidecar",
    "ZOffsets",
    "build_index",
    "gather_all",
    "index_file_for",
    "sidecar_key",
]

_INDEX_FORMAT: Final = 1
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
_INDEX_TAGS: Final[list[int]] = [int(tag_for_keyword(k) or 0) for k in INDEX_KEYWORDS]
SEARCHABLE: Final = frozenset((*INDEX_KEYWORDS, "TransferSyntaxUID"))
_REQUIRED: Final = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
_INT_VRS: Final = frozenset({"IS", "US", "UL", "SS", "SL", "SV", "UV"})

_PARSE_THREADS: Final = 4
_PARSE_CHUNK: Final = 32

#: Number of Z planes and their distinct offsets, as remembered by the sidecar.
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


@dataclass(frozen=True, slots=True)
class IndexedInstance:
    relpath: str
    path: str
    size: int
    mtime_ns: int
    attrs: Mapping[str, Any]

    @property
    def study_uid(self) -> str:
        return str(self.attrs["StudyInstanceUID"])

    @property
    def series_uid(self) -> str:
        return str(self.attrs["SeriesInstanceUID"])

    @property
    def sop_uid(self) -> str:
        return str(self.attrs["SOPInstanceUID"])

    @property
    def number_of_frames(self) -> int:
        return int(self.attrs.get("NumberOfFrames") or 1)


@dataclass
class FolderIndex:
    instances: dict[str, IndexedInstance]
    summary: IndexSummary


def _json_value(value: Any, vr: str) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, MultiValue | list | tuple):
        items = [_json_value(v, vr) for v in value]
        return [v for v in items if v is not None] or None
    if vr in _INT_VRS:
        return int(value)
    return str(value)


def _parse_index_entry(path: str, size: int, mtime_ns: int) -> list[Any]:
    """Parse one file's header into a persisted index entry ``[size, mtime_ns, status, data]``.

    ``status`` is ``"dicom"`` (data: attributes), ``"other"`` (not a DICOM instance) or
    ``"error"`` (data: reason).
    """
    try:
        with open(path, "rb") as fp:
            st = os.fstat(fp.fileno())
            size, mtime_ns = st.st_size, st.st_mtime_ns
            if not part10.is_part10(fp.read(132)):
                return [size, mtime_ns, "other", None]
            fp.seek(0)
            ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=_INDEX_TAGS)
        meta = ds.file_meta
        if str(meta.get("MediaStorageSOPClassUID", "")) == _DICOMDIR_SOP_CLASS:
            return [size, mtime_ns, "other", None]
        attrs: dict[str, Any] = {}
        for keyword in INDEX_KEYWORDS:
            elem = ds.get(keyword)
            if elem is None:
                continue
            try:
                value = _json_value(ds[keyword].value, dictionary_VR(keyword))
            except (ValueError, TypeError):
                # An unreadable optional attribute must not hide the instance.
                continue
            if value is not None:
                attrs[keyword] = value
        missing = [k for k in _REQUIRED if k not in attrs]
        if missing:
            return [size, mtime_ns, "error", f"missing {', '.join(missing)}"]
        attrs["TransferSyntaxUID"] = str(meta.get("TransferSyntaxUID", ""))
        return [size, mtime_ns, "dicom", attrs]
    except Exception as exc:  # a broken file is recorded, not fatal
        return [size, mtime_ns, "error", f"{type(exc).__name__}: {exc}"]


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


def _walk(root: Path, recursive: bool, skip: Path | None) -> list[tuple[str, int, int]]:
    """List ``(relative path, size, mtime_ns)`` of the regular files under ``root``."""
    found: list[tuple[str, int, int]] = []
    pending = [root]
    skip_str = str(skip) if skip is not None else None
    root_str = os.path.realpath(root)
    while pending:
        folder = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                # Not following directory links keeps cyclic links from looping forever.
                if entry.is_dir(follow_symlinks=False):
                    if recursive:
                        pending.append(Path(entry.path))
                    continue
                # The index, its sidecar and their temporary files all start with its name.
                if not entry.is_file() or (
                    skip_str is not None and entry.path.startswith(skip_str)
                ):
                    continue
                # A link to a file outside the folder is not the folder's (and could point
                # anywhere, e.g. at another patient's data): never index or read it.
                if entry.is_symlink() and not _inside(os.path.realpath(entry.path), root_str):
                    continue
                st = entry.stat()
            except OSError:
                continue
            found.append((os.path.relpath(entry.path, root), st.st_size, st.st_mtime_ns))
    found.sort()
    return found


def _inside(path: str, root: str) -> bool:
    """Whether the real path ``path`` is ``root`` or below it (both absolute, resolved)."""
    return os.path.commonpath([path, root]) == root


def _default_index_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache) if cache else Path.home() / ".cache"
    return base / "dicomslide" / "index"


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object of this index format from ``path``; None if absent, broken or older."""
    try:
        with open(path, encoding="utf-8") as fp:
            data = json.load(fp)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != _INDEX_FORMAT:
        return None
    return data


def _write_json(path: Path, payload: Mapping[str, Any]) -> str | None:
    """Write ``payload`` (plus the format) to ``path`` atomically; the error text, or None."""
    tmp_name: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=path.name, dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fp:
            json.dump({"format": _INDEX_FORMAT, **payload}, fp, separators=(",", ":"))
        # Atomic replace: concurrent clients never see a half-written file.
        os.replace(tmp_name, path)
    except OSError as exc:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
        return f"{type(exc).__name__}: {exc}"
    return None


def _load_index(index_file: Path, root: Path, recursive: bool) -> dict[str, list[Any]]:
    data = _read_json(index_file)
    if (
        data is None
        or data.get("root") != str(root)
        or data.get("recursive") != recursive
        or not isinstance(data.get("files"), dict)
    ):
        return {}
    files: dict[str, list[Any]] = data["files"]
    return {k: v for k, v in files.items() if isinstance(v, list) and len(v) == 4}


def _save_index(
    index_file: Path, root: Path, recursive: bool, files: Mapping[str, list[Any]]
) -> str | None:
    return _write_json(index_file, {"root": str(root), "recursive": recursive, "files": files})


#: Number of frames and the distinct Z offsets found for them (see _find_z_offsets).
def sidecar_key(instance: IndexedInstance) -> str:
    """The sidecar's key of a file: its path, size and modification time.

    Parameters
    ----------
    instance: IndexedInstance
        The indexed file

    Returns
    -------
    str
        Changes whenever the file does
    """
    return f"{instance.relpath}\0{instance.size}\0{instance.mtime_ns}"


def _validated_path(index_file: Path) -> Path:
    return index_file.parent / (index_file.name + ".validated")


def _load_validated(path: Path) -> tuple[set[str], dict[str, ZOffsets]]:
    """Validated keys and the remembered Z offsets from the sidecar (empty if unusable)."""
    data = _read_json(path)
    keys = data.get("validated") if data is not None else None
    validated = {k for k in keys if isinstance(k, str)} if isinstance(keys, list) else set()
    stored = data.get("z_offsets") if data is not None else None
    z_offsets: dict[str, ZOffsets] = {}
    for key, value in (stored if isinstance(stored, dict) else {}).items():
        if (
            isinstance(value, list)
            and len(value) == 2
            and type(value[0]) is int
            and isinstance(value[1], list)
            and all(type(z) is float and math.isfinite(z) for z in value[1])
        ):
            z_offsets[key] = (value[0], tuple(value[1]))
    return validated, z_offsets


class Sidecar:
    """Which headers converted cleanly, and the Z offsets found, by :func:`sidecar_key`.

    Parameters
    ----------
    path: pathlib.Path | None
        Where it is persisted (``None``: in memory only)
    validated: set[str]
        Keys of files whose headers converted cleanly
    z_offsets: dict[str, ZOffsets]
        Z offsets by key
    """

    def __init__(
        self, path: Path | None, validated: set[str], z_offsets: dict[str, ZOffsets]
    ) -> None:
        self._path = path
        self._validated = validated
        self._z_offsets = z_offsets
        self._lock = threading.Lock()

    def is_validated(self, key: str) -> bool:
        """Whether the file's header converted cleanly before.

        Parameters
        ----------
        key: str
            Its :func:`sidecar_key`

        Returns
        -------
        bool
            True when it need not be converted again
        """
        return key in self._validated

    @borrowed_doc(is_validated, only=("Parameters",))
    def z_offsets(self, key: str) -> ZOffsets | None:
        """The Z offsets remembered for a file.

        Returns
        -------
        ZOffsets | None
            The offsets, or None when not known
        """
        return self._z_offsets.get(key)

    def remember(
        self,
        instances: Sequence[IndexedInstance],
        z_offsets: Mapping[str, ZOffsets],
        known: Iterable[IndexedInstance],
    ) -> None:
        """Persist which headers converted cleanly and the Z offsets found (in a worker thread).

        Parameters
        ----------
        instances: Sequence[IndexedInstance]
            Files whose headers just converted cleanly
        z_offsets: Mapping[str, ZOffsets]
            Z offsets just found, by key
        known: Iterable[IndexedInstance]
            Every file the index knows (the sidecar keeps only those, so it cannot grow
            without end)
        """
        if self._path is None:
            return
        with self._lock:
            new = {sidecar_key(i) for i in instances} - self._validated
            new_z = {k: v for k, v in z_offsets.items() if self._z_offsets.get(k) != v}
            if not new and not new_z:
                return
            # Keep only files the index still knows, so the sidecar cannot grow without end.
            keys = {sidecar_key(i) for i in known}
            self._validated = (self._validated | new) & keys
            self._z_offsets = {k: v for k, v in {**self._z_offsets, **new_z}.items() if k in keys}
            # Only a speed-up is lost if this fails: the headers are converted again next time.
            _write_json(
                self._path,
                {
                    "validated": sorted(self._validated),
                    "z_offsets": {
                        k: [n, list(z)] for k, (n, z) in sorted(self._z_offsets.items())
                    },
                },
            )


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
        ``<index_dir>/<sha256 of the folder and flag>.json``
    """
    digest = hashlib.sha256(f"{root}\0{recursive}".encode()).hexdigest()[:32]
    folder = index_dir if index_dir is not None else _default_index_dir()
    return folder / f"{digest}.json"


async def build_index(
    base: Path, recursive: bool, index_dir: Path | None
) -> tuple[FolderIndex, Sidecar]:
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
    tuple[FolderIndex, Sidecar]
        The index and the sidecar beside it
    """
    started = time.perf_counter()

    def prepare() -> tuple[
        Path,
        Path,
        dict[str, list[Any]],
        list[tuple[str, int, int]],
        tuple[set[str], dict[str, ZOffsets]],
    ]:
        if not base.is_dir():
            raise NotFoundError(f"folder {base} does not exist")
        root = base.resolve()
        index_file = index_file_for(root, recursive, index_dir)
        persisted = _load_index(index_file, root, recursive)
        files = _walk(root, recursive, index_file)
        # In the same worker-thread job: each hop to a thread and back costs ~0.1 ms.
        sidecar = _load_validated(_validated_path(index_file))
        return root, index_file, persisted, files, sidecar

    root, index_file, persisted, files, sidecar = await asyncio.to_thread(prepare)
    validated, z_offsets = sidecar
    entries: dict[str, list[Any]] = {}
    to_parse: list[tuple[str, int, int]] = []
    for relpath, size, mtime_ns in files:
        old = persisted.get(relpath)
        if old is not None and old[0] == size and old[1] == mtime_ns:
            entries[relpath] = old
        else:
            to_parse.append((relpath, size, mtime_ns))
    reused = len(entries)

    def parse_chunk(chunk: Sequence[tuple[str, int, int]]) -> list[list[Any]]:
        return [_parse_index_entry(str(root / rel), size, mtime) for rel, size, mtime in chunk]

    async def run_chunk(chunk: Sequence[tuple[str, int, int]]) -> None:
        async with limiter:
            parsed = await asyncio.to_thread(parse_chunk, chunk)
        for (relpath, _, _), entry in zip(chunk, parsed, strict=True):
            entries[relpath] = entry

    limiter = asyncio.Semaphore(_PARSE_THREADS)
    if to_parse:
        await gather_all(
            [
                run_chunk(to_parse[start : start + _PARSE_CHUNK])
                for start in range(0, len(to_parse), _PARSE_CHUNK)
            ]
        )

    persist_error: str | None = None
    if to_parse or len(entries) != len(persisted):
        ordered = dict(sorted(entries.items()))
        persist_error = await asyncio.to_thread(_save_index, index_file, root, recursive, ordered)

    instances: dict[str, IndexedInstance] = {}
    failures: dict[str, str] = {}
    duplicates: list[str] = []
    non_dicom = 0
    for relpath in sorted(entries):
        size, mtime_ns, status, data = entries[relpath]
        if status == "other":
            non_dicom += 1
        elif status == "error":
            failures[relpath] = str(data)
        else:
            instance = IndexedInstance(relpath, str(root / relpath), size, mtime_ns, data)
            if instance.sop_uid in instances:
                duplicates.append(relpath)
            else:
                instances[instance.sop_uid] = instance
    summary = IndexSummary(
        base_dir=base,
        index_file=None if persist_error else index_file,
        instances=len(instances),
        non_dicom=non_dicom,
        failures=failures,
        duplicates=duplicates,
        parsed=len(to_parse),
        reused=reused,
        persist_error=persist_error,
        seconds=time.perf_counter() - started,
    )
    return FolderIndex(instances, summary), Sidecar(
        _validated_path(index_file), validated, z_offsets
    )

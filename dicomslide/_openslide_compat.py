"""openslide-python's contract around the pixels: errors, mappings, cache, format detection.

Code written for ``openslide.OpenSlide`` catches ``openslide.OpenSlideError``, iterates
``properties`` and ``associated_images`` as live mappings of the open handle, shares an
``OpenSlideCache`` between handles and asks ``OpenSlide.detect_format`` which files it can
open. This module gives :class:`dicomslide.OpenSlide` the same contract while keeping
openslide-python optional: its exception classes are only looked up when an error is raised.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, ParamSpec, TypeVar, cast

from PIL import Image

from dicomslide.errors import (
    CacheArgumentError,
    ClosedHandleError,
    DicomSlideError,
    InvalidDataError,
    NotACacheError,
    NotFoundError,
    UnsupportedError,
)
from dicomslide.frames import DecodedTileCache
from dicomslide.utils import VL_WHOLE_SLIDE_MICROSCOPY_SOP_CLASS_UID

__all__ = [
    "OpenSlideCache",
    "ClosedHandleError",
    "CacheArgumentError",
    "NotACacheError",
    "as_openslide_error",
    "translate_errors",
    "translate_errors_async",
    "PropertyMap",
    "AssociatedImageMap",
    "ASSOCIATED_ALIASES",
    "detect_format",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")

VL_WSM_SOP_CLASS_UID = VL_WHOLE_SLIDE_MICROSCOPY_SOP_CLASS_UID

#: dicomslide 0.7's names of associated images, still accepted, mapped to OpenSlide's.
ASSOCIATED_ALIASES: Mapping[str, str] = MappingProxyType({"LABEL": "label", "OVERVIEW": "macro"})


# Errors raised while opening map to OpenSlideUnsupportedFormatError, the rest to
# OpenSlideError (its base class), as openslide-python raises them.
_OPEN_ERRORS = (NotFoundError, UnsupportedError, InvalidDataError)
_compat_classes: dict[tuple[type[BaseException], bool], type[BaseException]] = {}
_openslide_module: Any = None
_openslide_checked = False


def _openslide() -> Any:
    """openslide-python, imported on first need; None if it (or its library) is missing."""
    global _openslide_module, _openslide_checked
    if not _openslide_checked:
        try:
            _openslide_module = importlib.import_module("openslide")
        except Exception:  # ImportError, or OSError when the OpenSlide library is missing
            _openslide_module = None
        _openslide_checked = True
    return _openslide_module


def as_openslide_error(exc: DicomSlideError, *, opening: bool = False) -> DicomSlideError:
    """Make an error also an ``openslide.OpenSlideError`` when openslide-python is installed.

    The object keeps its type, message and attributes: its class is swapped for a subclass of
    both its own class and openslide-python's (created once per class), so ``except
    dicomslide.RegionError`` and ``except openslide.OpenSlideError`` both catch it.

    Parameters
    ----------
    exc: dicomslide.DicomSlideError
        The error
    opening: bool, optional
        Whether it was raised while opening a slide (then it is also an
        ``openslide.OpenSlideUnsupportedFormatError`` when it says the slide cannot be read)

    Returns
    -------
    dicomslide.DicomSlideError
        The same object
    """
    module = _openslide()
    if module is None:
        return exc
    base: type[BaseException] = module.OpenSlideError
    if isinstance(exc, base):
        return exc
    unsupported = opening and isinstance(exc, _OPEN_ERRORS)
    if unsupported:
        base = module.OpenSlideUnsupportedFormatError
    cls: type[BaseException] = type(exc)
    compat = _compat_classes.get((cls, unsupported))
    if compat is None:
        compat = type(
            cls.__name__,
            (cls, base),
            {
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "__doc__": cls.__doc__,
            },
        )
        _compat_classes[(cls, unsupported)] = compat
    exc.__class__ = cast("type[DicomSlideError]", compat)
    return exc


def translate_errors(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Decorate a method so that the errors it raises are also ``openslide.OpenSlideError``."""

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return func(*args, **kwargs)
        except DicomSlideError as exc:
            as_openslide_error(exc)
            raise

    return wrapper


def translate_errors_async(
    func: Callable[_P, Coroutine[Any, Any, _R]],
) -> Callable[_P, Coroutine[Any, Any, _R]]:
    """Decorate a coroutine function like :func:`translate_errors`."""

    @functools.wraps(func)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return await func(*args, **kwargs)
        except DicomSlideError as exc:
            as_openslide_error(exc)
            raise

    return wrapper


class OpenSlideCache:
    """A decoded-tile cache that OpenSlide objects can share, as in openslide-python.

    It is dicomslide's byte-bounded decoded-tile cache: attached with
    :meth:`dicomslide.OpenSlide.set_cache`, it holds the decoded tiles that the object's reads
    decode, up to ``capacity`` bytes, least recently used first out.

    Parameters
    ----------
    capacity: int
        Budget in bytes; 0 caches nothing

    Raises
    ------
    dicomslide.RegionError
        If ``capacity`` is not a non-negative integer (also a ``ctypes.ArgumentError``, as
        openslide-python raises)
    """

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise as_openslide_error(
                CacheArgumentError(
                    f"Cache capacity must be a non-negative integer number of bytes, "
                    f"got {capacity!r}."
                )
            )
        self._capacity = capacity
        self._tiles = DecodedTileCache(capacity)

    @property
    def capacity(self) -> int:
        """int: Budget in bytes, as given at creation."""
        return self._capacity

    @property
    def tiles(self) -> DecodedTileCache:
        """dicomslide.frames.DecodedTileCache: The decoded-tile cache behind this object (its
        ``bytes`` and ``hits`` tell how it is used).
        """
        return self._tiles

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._capacity!r})"


class _LiveMap(Mapping[str, Any]):
    """A read-only mapping that works only while its OpenSlide object is open."""

    def __init__(self, keys: list[str], check_open: Callable[[], None]) -> None:
        self._keys = keys
        self._check_open = check_open

    def _check(self) -> None:
        try:
            self._check_open()
        except DicomSlideError as exc:
            raise as_openslide_error(exc) from None

    def __len__(self) -> int:
        self._check()
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        self._check()
        return iter(list(self._keys))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {dict(self)!r}>"


class PropertyMap(_LiveMap):
    """Properties of an OpenSlide object, valid while it is open (openslide-python's class).

    Parameters
    ----------
    values: dict[str, str]
        Property names mapped to values
    check_open: Callable[[], None]
        Raises if the object is closed
    """

    def __init__(self, values: dict[str, str], check_open: Callable[[], None]) -> None:
        super().__init__(list(values), check_open)
        self._values = values

    def __getitem__(self, key: str) -> str:
        self._check()
        return self._values[key]


# openslide-python's repr names the class; so must ours.
PropertyMap.__name__ = PropertyMap.__qualname__ = "_PropertyMap"


class AssociatedImageMap(_LiveMap):
    """Associated images of an OpenSlide object, read when looked up, as in openslide-python.

    Parameters
    ----------
    names: list[str]
        OpenSlide's names of the images the slide has
    read: Callable[[str], PIL.Image.Image]
        Reads one image by name
    check_open: Callable[[], None]
        Raises if the object is closed
    aliases: Mapping[str, str], optional
        Further names that can be looked up but are not listed, so that iteration, length and
        repr equal openslide-python's (default: dicomslide 0.7's ``LABEL`` and ``OVERVIEW``)
    """

    def __init__(
        self,
        names: list[str],
        read: Callable[[str], Image.Image],
        check_open: Callable[[], None],
        aliases: Mapping[str, str] = ASSOCIATED_ALIASES,
    ) -> None:
        super().__init__(names, check_open)
        self._read = read
        self._aliases = aliases

    def __getitem__(self, key: str) -> Image.Image:
        self._check()
        name = key if key in self._keys else self._aliases.get(key)
        if name is None or name not in self._keys:
            raise KeyError(key)
        return self._read(name)


AssociatedImageMap.__name__ = AssociatedImageMap.__qualname__ = "_AssociatedImageMap"


def _is_wsm_file(path: Path) -> bool:
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except (InvalidDicomError, OSError, ValueError, EOFError, TypeError, KeyError):
        return False
    sop_class = ds.get("SOPClassUID")
    if sop_class is None:
        meta = getattr(ds, "file_meta", None)
        sop_class = meta.get("MediaStorageSOPClassUID") if meta is not None else None
    return str(sop_class or "") == VL_WSM_SOP_CLASS_UID


def detect_format(filename: str | os.PathLike[str]) -> str | None:
    """``"dicom"`` for a path :func:`dicomslide.open_slide` can open, else None.

    Parameters
    ----------
    filename: str | os.PathLike[str]
        A DICOM file of a slide (OpenSlide's way), or a folder of them

    Returns
    -------
    str | None
        ``"dicom"`` if the file is a VL Whole Slide Microscopy Image, or the folder holds one;
        None for anything else, including missing paths
    """
    try:
        path = Path(os.fsdecode(filename))
    except TypeError:
        return None
    if path.is_file():
        return "dicom" if _is_wsm_file(path) else None
    if path.is_dir():
        for root, _, files in os.walk(path):
            for name in sorted(files):
                if _is_wsm_file(Path(root) / name):
                    return "dicom"
    return None

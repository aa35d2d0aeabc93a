"""One docstring source for a callable that takes the parameters of another.

A blocking twin, or a method that forwards to another object's method, keeps its own summary
and borrows the sections (Parameters, Returns, Raises, ...) of the docstring it would otherwise
repeat, so that the two cannot drift apart while ``help()`` still shows every parameter.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from typing import TypeVar

__all__ = ["borrowed_doc", "sections_of"]

T = TypeVar("T")

# A numpydoc section starts with a title line underlined by dashes.
_SECTION = re.compile(r"^[A-Z][A-Za-z ]*\n-{3,}$", re.MULTILINE)


def sections_of(source: object, replace: Mapping[str, str] | None = None) -> str:
    """The numpydoc sections of an object's docstring, without its summary and description.

    Parameters
    ----------
    source: object
        Function, method or class whose docstring has numpydoc sections
    replace: Mapping[str, str] | None, optional
        Text replaced in the sections (e.g. an async type name by its blocking twin's)

    Returns
    -------
    str
        The sections, dedented, from the first section title on

    Raises
    ------
    ValueError
        If the docstring has no section (a programming error in this package)
    """
    doc = inspect.cleandoc(source.__doc__ or "")
    match = _SECTION.search(doc)
    if match is None:
        raise ValueError(f"The docstring of {source!r} has no numpydoc section to borrow.")
    text = doc[match.start() :]
    for old, new in (replace or {}).items():
        text = text.replace(old, new)
    return text


def borrowed_doc(source: object, replace: Mapping[str, str] | None = None) -> Callable[[T], T]:
    """Append the numpydoc sections of another object to the decorated one's own docstring.

    The decorated function or class keeps its summary (and any description) in its source;
    at runtime its docstring also carries the Parameters, Returns, ... of ``source``.

    Parameters
    ----------
    source: object
        Object whose numpydoc sections apply unchanged to the decorated one
    replace: Mapping[str, str] | None, optional
        Text replaced in the borrowed sections

    Returns
    -------
    Callable[[T], T]
        Decorator setting ``__doc__`` and returning the decorated object itself
    """

    def decorate(obj: T) -> T:
        own = inspect.cleandoc(obj.__doc__ or "").strip()
        obj.__doc__ = own + "\n\n" + sections_of(source, replace)
        return obj

    return decorate

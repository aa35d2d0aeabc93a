"""One docstring source for a callable that takes the parameters of another.

A blocking twin, or a method that forwards to another object's method, keeps its own summary
and borrows the sections (Parameters, Returns, Raises, ...) of the docstring it would otherwise
repeat, so that the two cannot drift apart while ``help()`` still shows every parameter.
"""

from __future__ import annotations

import inspect
import itertools
import re
from collections.abc import Callable, Collection, Mapping
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


def _only(sections: str, titles: Collection[str]) -> str:
    """Keep the sections whose title is in ``titles``."""
    starts = [m.start() for m in _SECTION.finditer(sections)] + [len(sections)]
    kept = [sections[a:b].strip() for a, b in itertools.pairwise(starts)]
    return "\n\n".join(k for k in kept if k.split("\n", 1)[0] in titles)


def _add_parameters(sections: str, after_first: str, at_end: str) -> str:
    """Insert Parameters entries after the first entry and at the end of that section."""
    title = "Parameters\n----------\n"
    start = sections.index(title) + len(title)
    end = sections.find("\n\n", start)
    end = len(sections) if end < 0 else end
    entries: list[list[str]] = []
    for line in sections[start:end].split("\n"):
        # An entry starts with its unindented "name: type" line; its description is indented.
        if line[:1].isspace() and entries:
            entries[-1].append(line)
        else:
            entries.append([line])
    lines = ["\n".join(entry) for entry in entries]
    lines[1:1] = [after_first] if after_first else []
    lines += [at_end] if at_end else []
    return sections[:start] + "\n".join(lines) + sections[end:]


def borrowed_doc(
    source: object,
    replace: Mapping[str, str] | None = None,
    *,
    after_first: str = "",
    at_end: str = "",
    only: Collection[str] = (),
) -> Callable[[T], T]:
    """Append the numpydoc sections of another object to the decorated one's own docstring.

    The decorated function or class keeps its summary (and any description) in its source;
    at runtime its docstring also carries the Parameters, Returns, ... of ``source``.

    Parameters
    ----------
    source: object
        Object whose numpydoc sections apply to the decorated one
    replace: Mapping[str, str] | None, optional
        Text replaced in the borrowed sections
    after_first, at_end: str, optional
        Parameters entries (``"name: type\\n    description"``) that the decorated callable
        takes and ``source`` does not: inserted after the first entry, and at the end
    only: Collection[str], optional
        Titles of the sections to borrow (e.g. ``("Parameters",)``), all when empty; the
        borrowed sections go before the decorated one's own (say its Returns and Raises)

    Returns
    -------
    Callable[[T], T]
        Decorator setting ``__doc__`` and returning the decorated object itself
    """

    def decorate(obj: T) -> T:
        own = inspect.cleandoc(obj.__doc__ or "").strip()
        sections = sections_of(source, replace)
        if only:
            sections = _only(sections, only)
        if after_first or at_end:
            sections = _add_parameters(sections, after_first, at_end)
        # numpydoc orders Parameters before Returns and Raises: borrowed sections go first.
        match = _SECTION.search(own)
        split = len(own) if match is None else match.start()
        obj.__doc__ = "\n\n".join(p for p in (own[:split].strip(), sections, own[split:]) if p)
        return obj

    return decorate

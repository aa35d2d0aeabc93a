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


# numpydoc's order of sections; a title not listed here sorts last.
_ORDER = (
    "Parameters",
    "Attributes",
    "Returns",
    "Yields",
    "Receives",
    "Other Parameters",
    "Raises",
    "Warns",
    "Warnings",
    "See Also",
    "Notes",
    "References",
    "Examples",
)


def _split(sections: str) -> list[str]:
    """The sections of a text that starts with a section title, one string each."""
    starts = [m.start() for m in _SECTION.finditer(sections)] + [len(sections)]
    return [sections[a:b].strip() for a, b in itertools.pairwise(starts)]


def _rank(section: str) -> int:
    title = section.split("\n", 1)[0]
    return _ORDER.index(title) if title in _ORDER else len(_ORDER)


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
        Titles of the sections to borrow (e.g. ``("Parameters",)``), all when empty; own
        and borrowed sections are put in numpydoc's order

    Returns
    -------
    Callable[[T], T]
        Decorator setting ``__doc__`` and returning the decorated object itself
    """

    def decorate(obj: T) -> T:
        own = inspect.cleandoc(obj.__doc__ or "").strip()
        sections = sections_of(source, replace)
        if after_first or at_end:
            sections = _add_parameters(sections, after_first, at_end)
        borrowed = [b for b in _split(sections) if not only or b.split("\n", 1)[0] in only]
        match = _SECTION.search(own)
        split = len(own) if match is None else match.start()
        # Own and borrowed sections interleave in numpydoc's order (sorted() is stable).
        merged = sorted(_split(own[split:]) + borrowed, key=_rank)
        obj.__doc__ = "\n\n".join([own[:split].strip(), *merged]).strip()
        return obj

    return decorate

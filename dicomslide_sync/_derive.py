"""How a blocking twin is derived from an async class, member by member.

A twin is a :class:`Twin`: it holds the async object it mirrors in ``_async`` and names the
async class in ``_ASYNC``. Each member is one line in the twin's class body:

- :func:`blocking` turns a coroutine method into a method that runs it on the private loop of
  :mod:`dicomslide_sync._portal` (with the default time limit) and returns its result;
- :func:`forward` turns a plain method into one that calls the async object's method;
- :class:`attribute` is a descriptor reading the async object's attribute of the same name.

All three take signature and docstring from the async member, so the twin cannot drift from
it, and pass results through :func:`rewrap`, which turns async objects that have a twin
(slides, images, total pixel matrices) into that twin. A twin class that defines a ``_rewrap``
classmethod is registered for this when it is defined (:func:`register_rewrap`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, Concatenate, Generic, ParamSpec, TypeVar, overload

from dicomslide.errors import RegionError
from dicomslide_sync import _portal

__all__ = [
    "Returns",
    "Twin",
    "attribute",
    "blocking",
    "forward",
    "get_default_timeout",
    "register_rewrap",
    "rewrap",
    "run",
    "set_default_timeout",
]

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")
T = TypeVar("T")

#: How a call was made: member name, positional and keyword arguments. Kept with a re-wrapped
#: result so that the result can be re-made (by calling the member again) after pickling.
Call = tuple[str, tuple[Any, ...], dict[str, Any]]

_default_timeout: float | None = None


def set_default_timeout(seconds: float | None) -> None:
    """Set how long any blocking call may take before it is cancelled.

    Parameters
    ----------
    seconds: float | None
        Time limit in seconds for every call of this package; None (the default) waits for as
        long as the call takes. A call that runs out of time is cancelled and raises
        :class:`dicomslide_sync.SyncTimeoutError` (a ``TimeoutError``).
    """
    global _default_timeout
    if seconds is not None and not seconds > 0:
        raise RegionError(f"Timeout must be positive or None, got {seconds!r}.")
    _default_timeout = seconds


def get_default_timeout() -> float | None:
    """The time limit of blocking calls set by :func:`set_default_timeout`.

    Returns
    -------
    float | None
        Seconds, or None for no limit
    """
    return _default_timeout


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on the private loop with the default time limit.

    Parameters
    ----------
    coro: Coroutine
        Coroutine to run

    Returns
    -------
    Any
        What the coroutine returned
    """
    return _portal.run(coro, timeout=_default_timeout)


# Async class -> function making its twin from (owner twin, async value, call or None).
_REWRAP: dict[type, Callable[[Any, Any, Call | None], Any]] = {}


def register_rewrap(async_cls: type, make: Callable[[Any, Any, Call | None], Any]) -> None:
    """Declare how results of type ``async_cls`` become twins.

    Parameters
    ----------
    async_cls: type
        Async class whose instances are returned by async members
    make: Callable[[Any, Any, Call | None], Any]
        Called with the twin that made the call, the async value and the call (None for an
        attribute read); returns the twin of the value
    """
    _REWRAP[async_cls] = make


def rewrap(owner: Any, value: Any, call: Call | None) -> Any:
    """The value a twin returns for what its async object returned.

    Parameters
    ----------
    owner: Any
        Twin whose member was used
    value: Any
        What the async member returned
    call: Call | None
        How the member was called (None for an attribute)

    Returns
    -------
    Any
        ``value`` itself, or its twin (element by element for tuples and lists)
    """
    make = _REWRAP.get(type(value))
    if make is not None:
        return make(owner, value, call)
    if isinstance(value, (tuple, list)) and value and type(value[0]) in _REWRAP:
        return type(value)(rewrap(owner, item, call) for item in value)
    return value


def recall(owner: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call a member of a twin again (how a re-wrapped result re-opens after pickling).

    Parameters
    ----------
    owner: Any
        Twin
    name: str
        Member name
    args: tuple[Any, ...]
        Positional arguments
    kwargs: dict[str, Any]
        Keyword arguments

    Returns
    -------
    Any
        What the member returns
    """
    return getattr(owner, name)(*args, **kwargs)


def _face(twin: Callable[..., Any], original: Callable[..., Any]) -> None:
    # Name, docstring and signature of the async member; no ``__wrapped__``, so nothing
    # (inspect, IDEs) mistakes the twin for the coroutine function itself.
    twin.__name__ = original.__name__
    twin.__qualname__ = original.__qualname__
    twin.__doc__ = original.__doc__
    twin.__signature__ = inspect.signature(original)  # type: ignore[attr-defined]


class Returns(Generic[T]):
    """Marker naming the type a derived member returns after re-wrapping.

    ``forward(dicomslide.Slide.get_volume_images, Returns[tuple[TiledImage, ...]]())`` types
    the twin as returning twins, where the async member returns async images.
    """


@overload
def blocking(
    method: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[Any, P], R]: ...


@overload
def blocking(
    method: Callable[Concatenate[Any, P], Coroutine[Any, Any, Any]], returns: Returns[S]
) -> Callable[Concatenate[Any, P], S]: ...


def blocking(method: Any, returns: Any = None) -> Any:
    """The blocking twin of a coroutine method.

    Parameters
    ----------
    method: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]
        Coroutine function defined on the async class
    returns: Returns | None, optional
        Type of the re-wrapped result, if it is not the async one

    Returns
    -------
    Callable[Concatenate[Any, P], R]
        Method running the coroutine of the twin's async object on the private loop
    """
    return _twin_method(method, run)


def _twin_method(method: Any, finish: Callable[[Any], Any]) -> Any:
    """A twin method: the async method of the same name, its value finished and re-wrapped."""
    name = method.__name__

    def twin(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        value = finish(getattr(self._async, name)(*args, **kwargs))
        return rewrap(self, value, (name, args, kwargs))

    _face(twin, method)
    return twin


@overload
def forward(method: Callable[Concatenate[Any, P], R]) -> Callable[Concatenate[Any, P], R]: ...


@overload
def forward(
    method: Callable[Concatenate[Any, P], Any], returns: Returns[S]
) -> Callable[Concatenate[Any, P], S]: ...


def forward(method: Any, returns: Any = None) -> Any:
    """A method calling the async object's method of the same name (it needs no I/O).

    Takes what :func:`blocking` takes, for a plain method of the async class instead of a
    coroutine function, and returns the forwarding method.
    """
    return _twin_method(method, lambda value: value)


class attribute(Generic[T]):
    """Descriptor reading (and writing) the async object's attribute of the same name.

    Writing is allowed where the async attribute allows it (``qido_page_size``); otherwise the
    async object raises ``AttributeError``. The docstring is the async attribute's (set by
    :class:`Twin` when the twin class is made). ``num_levels = attribute[int]()`` in a twin's
    class body types the attribute for checkers and IDEs.
    """

    _read: Callable[[Twin], Any]
    _write: Callable[[Twin, Any], None]

    def __set_name__(self, owner: type, name: str) -> None:
        # Written like the methods of blocking() and forward(): a function of the twin.
        def read(self: Twin) -> Any:
            return rewrap(self, getattr(self._async, name), None)

        def write(self: Twin, value: Any) -> None:
            setattr(self._async, name, value)

        self._read = read
        self._write = write

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> attribute[T]: ...

    @overload
    def __get__(self, obj: Twin, owner: type | None = None) -> T: ...

    def __get__(self, obj: Twin | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return self._read(obj)

    def __set__(self, obj: Twin, value: T) -> None:
        self._write(obj, value)


class Twin:
    """Base of the blocking twins: the async object mirrored and the async class it is of.

    When a subclass is defined, each of its :class:`attribute` members takes the docstring of
    the async attribute of the same name, and a ``_rewrap(owner, value, call)`` classmethod,
    if the subclass defines one, is registered with :func:`register_rewrap` for ``_ASYNC``.
    """

    _ASYNC: ClassVar[type]
    _async: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        members = vars(cls)
        for name, member in members.items():
            if isinstance(member, attribute):
                member.__doc__ = inspect.getattr_static(cls._ASYNC, name).__doc__
        if "_rewrap" in members:
            register_rewrap(cls._ASYNC, cls._rewrap)

    @classmethod
    def _rewrap(cls, owner: Any, value: Any, call: Call | None) -> Any:
        raise NotImplementedError(f"{cls.__name__} does not wrap async results")

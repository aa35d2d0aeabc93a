"""The one redaction rule for every text that may carry a credential.

A hostile or careless server echoes what it was sent: the ``Authorization`` value in an error
body, a token inside a JSON value that then fails to convert, a cookie in a response header
that httpcore's DEBUG trace prints. :func:`redact` is applied to all of these texts alike:

* the values of the credentials each live DICOMweb client holds (configured credential
  headers, the ``auth`` password and its Basic encoding, credential query parameters of its
  URL, and the credential header values it actually sent, which covers custom ``httpx.Auth``
  flows), each replaced by ``***``;
* credential query parameters of any URL in the text (:func:`redact_url`);
* anything shaped like an HTTP authorization value (``Bearer ...``, ``Basic ...``).

:func:`redact_exception` applies it to an exception and its whole cause/context chain (their
``args``, hence ``str`` and ``repr``, and a ``url`` attribute); :class:`RedactingFilter`
applies it to log records of our loggers and those of httpx, httpcore, h2 and hpack, at every
level (logger filters do not reach child loggers, so it sits on each of them).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from typing import Any, Final, ParamSpec, TypeVar

from dicomslide.sources.dicomweb_urls import redact_url

__all__ = [
    "RedactingFilter",
    "SecretSet",
    "install_log_redaction",
    "redact",
    "redact_exception",
    "redacted_errors",
    "redacted_stream_errors",
]

_P = ParamSpec("_P")
_T = TypeVar("_T")

# Values shorter than this are not scrubbed (replacing "a" everywhere would mangle every text).
MIN_SECRET_LENGTH: Final = 4
_URL_RE: Final = re.compile(r"https?://[^\s'\"<>\\]+", re.IGNORECASE)
_SCHEME_VALUE_RE: Final = re.compile(
    r"\b(Bearer|Basic|Digest|Token|Negotiate)(\s+)[A-Za-z0-9._~+/=:,\"-]{4,}", re.IGNORECASE
)
# Loggers whose records may quote URLs, headers or bodies; children listed as filters on a
# logger do not apply to records of its children.
_LOGGER_PREFIXES: Final = ("dicomslide", "httpx", "httpcore", "h2", "hpack")
_KNOWN_LOGGERS: Final = (
    "dicomslide",
    "dicomslide.slide",
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
    "h2",
    "hpack",
    "hpack.hpack",
)


class SecretSet:
    """The credential values of one client, known to :func:`redact` while the set lives."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        self.add(*values)
        with _LOCK:
            _HOLDERS.add(self)

    def add(self, *values: str) -> None:
        """Add credential values (too short ones are ignored).

        Parameters
        ----------
        *values: str
            Values to keep out of every text
        """
        new = {v for v in values if len(v) >= MIN_SECRET_LENGTH} - self._values
        if new:
            with _LOCK:
                self._values |= new
                _invalidate()

    @property
    def values(self) -> frozenset[str]:
        """frozenset[str]: The values held."""
        return frozenset(self._values)


_LOCK = threading.Lock()
_HOLDERS: weakref.WeakSet[SecretSet] = weakref.WeakSet()
_sorted_cache: list[tuple[str, ...]] = []


def _invalidate() -> None:
    _sorted_cache.clear()


def _all_secrets() -> tuple[str, ...]:
    cached = _sorted_cache[0] if _sorted_cache else None
    if cached is not None:
        return cached
    with _LOCK:
        values = {v for holder in list(_HOLDERS) for v in holder.values}
    # Longest first, so that a secret containing another is replaced whole.
    ordered = tuple(sorted(values, key=len, reverse=True))
    _sorted_cache[:] = [ordered]
    return ordered


def redact(text: str) -> str:
    """``text`` without credentials: the rule of the module documentation.

    Parameters
    ----------
    text: str
        A message, URL, header, body excerpt or log line

    Returns
    -------
    str
        The text with every known secret, credential query parameter and authorization
        value replaced by ``***``
    """
    for secret in _all_secrets():
        if secret in text:
            text = text.replace(secret, "***")
    if "://" in text:
        text = _URL_RE.sub(lambda m: redact_url(m.group(0)), text)
    return _SCHEME_VALUE_RE.sub(r"\1\2***", text)


def redact_exception(exc: BaseException) -> None:
    """Redact an exception and every exception chained to it, in place.

    Parameters
    ----------
    exc: BaseException
        The exception about to propagate
    """
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        with contextlib.suppress(AttributeError, TypeError):  # read-only args
            current.args = tuple(redact(a) if isinstance(a, str) else a for a in current.args)
        url = getattr(current, "url", None)
        if isinstance(url, str):
            with contextlib.suppress(AttributeError):
                current.url = redact(url)  # type: ignore[attr-defined]
        notes = getattr(current, "__notes__", None)
        if isinstance(notes, list):
            notes[:] = [redact(n) if isinstance(n, str) else n for n in notes]
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        grouped = getattr(current, "exceptions", None)  # an exception group
        if isinstance(grouped, tuple):
            todo += [e for e in grouped if isinstance(e, BaseException)]


class RedactingFilter(logging.Filter):
    """Rewrites every log record through :func:`redact` (message, arguments and traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; never drops it.

        Parameters
        ----------
        record: logging.LogRecord
            The record

        Returns
        -------
        bool
            Always True
        """
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler's error path
            return True
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER: Final = RedactingFilter()


def install_log_redaction() -> None:
    """Put the redacting filter on our, httpx's, httpcore's, h2's and hpack's loggers.

    Idempotent; also covers loggers of those packages created since the last call.
    """
    names = set(_KNOWN_LOGGERS)
    names |= {
        name
        for name in list(logging.root.manager.loggerDict)
        if name.split(".", 1)[0] in _LOGGER_PREFIXES
    }
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


@contextlib.contextmanager
def _redacting() -> Iterator[None]:
    try:
        yield
    except BaseException as exc:
        redact_exception(exc)
        raise


def redacted_errors(
    fn: Callable[_P, Coroutine[Any, Any, _T]],
) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """Decorate a coroutine function so that whatever it raises is redacted first.

    Parameters
    ----------
    fn: Callable[_P, Coroutine[Any, Any, _T]]
        A public coroutine function of a client

    Returns
    -------
    Callable[_P, Coroutine[Any, Any, _T]]
        The same function, raising redacted exceptions
    """

    @functools.wraps(fn)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        with _redacting():
            return await fn(*args, **kwargs)

    return wrapper


def redacted_stream_errors(
    fn: Callable[_P, AsyncIterator[_T]],
) -> Callable[_P, AsyncIterator[_T]]:
    """Decorate an async generator function so that whatever it raises is redacted first.

    Parameters
    ----------
    fn: Callable[_P, AsyncIterator[_T]]
        A public async generator function of a client

    Returns
    -------
    Callable[_P, AsyncIterator[_T]]
        The same generator, raising redacted exceptions; closing it closes the inner one
        at once (so its response is released)
    """

    @functools.wraps(fn)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> AsyncIterator[_T]:
        inner = fn(*args, **kwargs)
        try:
            with _redacting():
                async for item in inner:
                    yield item
        finally:
            aclose = getattr(inner, "aclose", None)
            if aclose is not None:
                await aclose()

    return wrapper

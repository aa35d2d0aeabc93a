"""Per-instance summaries: what building slides reads from an image, kept beside its header.

Opening a slide reads a few dozen values from each image's metadata (sizes, UIDs, flavor,
geometry, pixel format, channels, focal planes), each found by Python code walking pydicom
elements: about 0.5 ms an instance, most of a warm search over an indexed folder. The local
index stores, per file identity, a summary of those answers (JSON, computed from the header
with the very functions that answer them, see :func:`summarize`); a warm open then builds
slides from summaries and does not decode the stored headers at all.

:class:`SummaryDataset` is how a summary travels: a :class:`pydicom.Dataset` whose elements
are loaded on first use (``loader`` gives the full header, from the index or the file). The
functions marked with :func:`summarised` and :func:`get_value <dicomslide.perframe.get_value>`
answer from the summary while it holds the answer; anything else loads the header first, so
a summary never changes what is read, only when.

Only the local index makes summaries; every other source passes plain data sets and the
marked functions cost one type check more.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeVar

from pydicom import Dataset

from dicomslide import _tags

__all__ = [
    "ANSWER_KEYS",
    "NOT_SUMMARISED",
    "SUMMARY_TAGS",
    "SummaryDataset",
    "cached",
    "floats",
    "parse_summary",
    "register",
    "restored",
    "summarised",
    "summarize",
    "tag_value",
]

#: Bumped whenever what a key means changes: older summaries are then ignored. The package
#: version is part of it too (see _version): the index folder outlives upgrades, and an
#: answer such as "valid" is computed by code a release may change.
_FORMAT: Final = 1
_MISSING: Final = object()
#: Stored for an answer left out (no answer is a JSON object) or a value not summarised (no
#: value is a JSON boolean): asked of the header instead.
_LEFT_OUT: Final[dict[str, Any]] = {}
_NOT_KEPT: Final = False
_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")

#: Tags whose values :func:`dicomslide.perframe.get_value` answers from a summary (those that
#: finding, grouping and opening slides ask for by tag).
SUMMARY_TAGS: Final = (
    _tags.SOP_CLASS_UID,
    _tags.SOP_INSTANCE_UID,
    _tags.STUDY_INSTANCE_UID,
    _tags.SERIES_INSTANCE_UID,
    _tags.FRAME_OF_REFERENCE_UID,
    _tags.CONTAINER_IDENTIFIER,
    _tags.PYRAMID_UID,
    _tags.CONCATENATION_UID,
    _tags.ROWS,
    _tags.COLUMNS,
    _tags.TOTAL_PIXEL_MATRIX_COLUMNS,
    _tags.TOTAL_PIXEL_MATRIX_ROWS,
    _tags.DIMENSION_ORGANIZATION_TYPE,
    _tags.NUMBER_OF_FRAMES,
    _tags.MODALITY,
    _tags.IMAGE_TYPE,
)

#: The answers a summary holds, in stored order (a summary is a JSON array: version, the
#: values of SUMMARY_TAGS, then these; positions parse faster than a JSON object's keys).
ANSWER_KEYS: Final = (
    "is_image",
    "is_tiled_image",
    "flavor",
    "is_label_map",
    "label_map_background",
    "pixel_spacing",
    "center",
    "channel_ids",
    "focal_planes",
    "format",
    "geometry",
    "icc_uri",
    "channel_count",
    "valid",
    "has_image_type",
    "parameter_label",
)
_POSITION: Final = {key: i for i, key in enumerate(ANSWER_KEYS)}
_TAG_POSITION: Final = {tag: i for i, tag in enumerate(SUMMARY_TAGS)}

#: How each marked function's answer is stored (JSON) and given back: key, encode, decode.
_CODECS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {}
#: The marked functions by key, each taking one data set (see summarize).
_FUNCTIONS: dict[str, Callable[[Dataset], Any]] = {}
#: The summary of a loaded data set: nothing kept, everything asked of the elements.
_NOTHING: Final = ([_NOT_KEPT] * len(SUMMARY_TAGS), [_LEFT_OUT] * len(ANSWER_KEYS))


@functools.cache
def _version() -> str:
    from dicomslide import __version__  # imported by the time any summary is made or read

    return f"{_FORMAT}/{__version__}"


def _same(value: Any) -> Any:
    return value


def _plain_value(value: Any) -> bool:
    """Whether JSON gives ``value`` back as it is (type included), None and bools excluded."""
    return type(value) in (int, str) or (
        type(value) is list and all(type(v) is str for v in value)
    )


class SummaryDataset(Dataset):
    """A data set whose elements are loaded on first use; its summary answers until then.

    Built by the local source (see :mod:`dicomslide.sources.local`). Until an element,
    keyword or any other :class:`pydicom.Dataset` state is asked for, the instance holds only
    its summary; the first such request calls ``loader`` and the data set becomes the loaded
    one (same elements, encoding and file meta), in place, and its summary is dropped: a
    loaded data set may be changed, so every later answer is computed from its elements.

    The load runs on the thread that first asks (on the event loop, from async code): it
    reads one index row, or the file. When it fails (the file was removed or changed since
    the search), the error comes out of that first request, ``hasattr`` and ``getattr`` with
    a default included, while the answers the summary holds keep working.

    Parameters
    ----------
    summary: tuple[list[Any], list[Any]]
        What :func:`summarize` returned for the same bytes (parsed with :func:`parse_summary`)
    loader: Callable[[], pydicom.Dataset]
        Gives the full data set (called at most once, possibly from a worker thread)
    """

    def __init__(
        self, summary: tuple[list[Any], list[Any]], loader: Callable[[], Dataset]
    ) -> None:
        # Dataset.__init__ is not run: the loaded data set's state is taken over instead.
        object.__setattr__(self, "summary", summary)
        object.__setattr__(self, "_loader", loader)
        # One per data set: a slow load must not hold up the first use of the others.
        object.__setattr__(self, "_load_lock", threading.Lock())

    def __getattr__(self, name: str) -> Any:
        if name in ("summary", "_loader", "_load_lock"):
            raise AttributeError(name)
        if self.__dict__.get("_loader") is not None:
            self._load()
            return getattr(self, name)
        return Dataset.__getattr__(self, name)

    def _load(self) -> None:
        with self.__dict__["_load_lock"]:
            loader = self.__dict__.get("_loader")
            if loader is None:
                return  # another thread loaded it meanwhile
            loaded = loader()
            state = dict(loaded.__dict__)
            state.update({k: v for k, v in self.__dict__.items() if k not in state})
            state["_loader"] = None
            # Loaded, the data set can be changed in place: from now on every answer is
            # computed from its elements, as for any data set.
            state["summary"] = _NOTHING
            self.__dict__.update(state)

    @property
    def is_loaded(self) -> bool:
        """bool: Whether the full data set has been loaded."""
        return self.__dict__.get("_loader") is None

    def __reduce_ex__(self, protocol: Any) -> Any:
        # Pickled (and copied) as the plain data set it stands for: the loader may hold a
        # client that cannot travel.
        if not self.is_loaded:
            self._load()
        plain = Dataset.__new__(Dataset)
        own = ("summary", "_loader", "_load_lock")
        state = {k: v for k, v in self.__dict__.items() if k not in own}
        plain.__dict__.update(state)
        return _as_is, (plain,)


def _as_is(ds: Dataset) -> Dataset:
    """What a pickled or copied SummaryDataset becomes: the plain data set it stands for."""
    return ds


def summarised(
    key: str,
    encode: Callable[[Any], Any] = _same,
    decode: Callable[[Any], Any] = _same,
) -> Callable[[_F], _F]:
    """Mark a function of one data set as answered by summaries (see the module notes).

    Parameters
    ----------
    key: str
        Name of the answer in a summary
    encode, decode: Callable[[Any], Any], optional
        The answer to JSON and back (the same answer, type included)

    Returns
    -------
    Callable
        Decorator keeping the function's signature
    """

    position = _POSITION[key]

    def decorate(function: _F) -> _F:
        _CODECS[key] = (encode, decode)
        _FUNCTIONS[key] = function

        @functools.wraps(function)
        def wrapper(ds: Dataset, *args: Any, **kwargs: Any) -> Any:
            if type(ds) is SummaryDataset and not args and not kwargs:
                stored = ds.summary[1][position]
                if stored != _LEFT_OUT:
                    return decode(stored)
            return function(ds, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def cached(ds: Dataset, key: str, function: Callable[[Dataset], _T]) -> _T:
    """``function(ds)``, answered by the summary when ``ds`` has one (see :func:`summarised`).

    For answers computed by methods (a class's constructor from a data set, say), which the
    decorator cannot mark; ``key`` must have been registered with :func:`register`.

    Parameters
    ----------
    ds: pydicom.Dataset
        The image's data set
    key: str
        Name of the answer in a summary
    function: Callable[[pydicom.Dataset], Any]
        Computes the answer from the data set

    Returns
    -------
    Any
        The answer
    """
    if type(ds) is SummaryDataset:
        stored = ds.summary[1][_POSITION[key]]
        if stored != _LEFT_OUT:
            answer: _T = _CODECS[key][1](stored)
            return answer
    return function(ds)


def register(
    key: str,
    function: Callable[[Dataset], Any],
    encode: Callable[[Any], Any] = _same,
    decode: Callable[[Any], Any] = _same,
) -> None:
    """Make :func:`summarize` store ``function``'s answer under ``key`` (see :func:`cached`).

    Parameters
    ----------
    key: str
        Name of the answer in a summary
    function: Callable[[pydicom.Dataset], Any]
        Computes the answer from a data set
    encode, decode: Callable[[Any], Any], optional
        The answer to JSON and back
    """
    if key not in _POSITION:
        raise ValueError(f"{key!r} is not one of the summary's ANSWER_KEYS")
    _CODECS[key] = (encode, decode)
    _FUNCTIONS[key] = function


def restored(cls: type[_T], fields: Iterable[Any]) -> _T:
    """An instance of a dataclass from the fields of one built (and checked) before.

    Its checks ran when the summary was made, on the same values: ``__post_init__`` is not
    run again (opening 15,000 images would check 30,000 objects again).

    Parameters
    ----------
    cls: type
        The dataclass
    fields: Iterable[Any]
        Its field values, in order

    Returns
    -------
    Any
        The instance
    """
    instance = object.__new__(cls)
    for name, value in zip(cls.__dataclass_fields__, fields, strict=True):  # type: ignore[attr-defined]
        object.__setattr__(instance, name, value)
    return instance


def tag_value(ds: SummaryDataset, tag: int) -> Any:
    """The summarised value of a tag, None when absent, or a sentinel when not summarised."""
    position = _TAG_POSITION.get(tag)
    if position is None:
        return _MISSING
    value = ds.summary[0][position]
    if value is _NOT_KEPT:
        return _MISSING
    # A list is the summary's own: the caller gets a copy, as from the header.
    return list(value) if type(value) is list else value


#: Returned by :func:`tag_value` for a tag the summary does not hold.
NOT_SUMMARISED: Final = _MISSING


def summarize(ds: Dataset, get_value: Callable[[Dataset, int, Any], Any]) -> str:
    """The summary of an image's header, as stored beside it (JSON text).

    Every marked answer is computed from ``ds`` by the function that gives it; one that
    raises is left out (asking for it later loads the header and raises there, as before).

    Parameters
    ----------
    ds: pydicom.Dataset
        The full header
    get_value: Callable
        :func:`dicomslide.perframe.get_value` (passed in: that module imports this one)

    Returns
    -------
    str
        JSON text for :func:`parse_summary`
    """
    # Importing the modules that mark their functions fills the registry.
    import dicomslide.image
    import dicomslide.slide  # noqa: F401

    values: list[Any] = []
    for tag in SUMMARY_TAGS:
        try:
            value = get_value(ds, tag, _MISSING)
        except Exception:  # a value that does not convert is left to fail where it is read
            value = _NOT_KEPT
        if value is _MISSING:
            values.append(None)  # absent: get_value gives its default
        elif _plain_value(value):
            values.append(value)
        else:
            values.append(_NOT_KEPT)
    answers: list[Any] = []
    expected: list[Any] = []
    for key in ANSWER_KEYS:
        answers.append(_LEFT_OUT)
        expected.append(_MISSING)
        if key not in _FUNCTIONS:
            continue
        try:
            expected[-1] = _FUNCTIONS[key](ds)
            answers[-1] = _CODECS[key][0](expected[-1])
        except Exception:  # an answer that raises is left to raise later
            answers[-1], expected[-1] = _LEFT_OUT, _MISSING
    while True:
        try:
            text = json.dumps([_version(), values, answers], separators=(",", ":"))
        except (TypeError, ValueError):
            return json.dumps([_version(), [_NOT_KEPT] * len(values), [_LEFT_OUT] * len(answers)])
        # What a reader will get back must be the answer itself, type included; one that is
        # not is left out (asked of the header again).
        stored = json.loads(text)[2]
        wrong = [
            i for i, key in enumerate(ANSWER_KEYS) if not _faithful(key, stored[i], expected[i])
        ]
        if not wrong:
            return text
        for i in wrong:
            answers[i] = _LEFT_OUT
            expected[i] = _MISSING


def _faithful(key: str, stored: Any, answer: Any) -> bool:
    if answer is _MISSING:
        return bool(stored == _LEFT_OUT)
    if stored == _LEFT_OUT:
        return False
    try:
        back = _CODECS[key][1](stored)
    except Exception:
        return False
    return type(back) is type(answer) and bool(back == answer)


def parse_summary(text: str) -> tuple[list[Any], list[Any]] | None:
    """A stored summary, or None when it is damaged or of another version.

    Parameters
    ----------
    text: str
        The text as stored (made by :func:`summarize`)

    Returns
    -------
    tuple[list[Any], list[Any]] | None
        The values of :data:`SUMMARY_TAGS` and the answers of :data:`ANSWER_KEYS`
    """
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if (
        type(value) is not list
        or len(value) != 3
        or value[0] != _version()
        or type(value[1]) is not list
        or type(value[2]) is not list
        or len(value[1]) != len(SUMMARY_TAGS)
        or len(value[2]) != len(ANSWER_KEYS)
    ):
        return None
    return value[1], value[2]


def floats(values: Iterable[Any]) -> tuple[float, ...]:
    """JSON numbers back to a tuple of floats (answers that are float tuples)."""
    return tuple(map(float, values))

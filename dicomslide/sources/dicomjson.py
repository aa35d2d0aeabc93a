"""Sans-IO conversion of DICOM JSON metadata (PS3.18 Annex F) into pydicom data sets.

Series metadata of a whole-slide image can hold thousands of per-frame functional group items
(TILED_SPARSE images have one per tile), and :meth:`pydicom.Dataset.from_json` spends most of
its time on per-element machinery rather than on the values: with a bulk data handler it even
calls :func:`inspect.signature` on the handler once per element. :func:`datasets_from_json`
therefore converts the common case itself, elements with a ``"Value"`` of a plain string,
number or sequence VR, building each :class:`~pydicom.dataelem.DataElement` through its normal
constructor (so values are converted and validated exactly as pydicom does), and hands every
other element (PN, AT, binary VRs, ``InlineBinary``, ``BulkDataURI``, empty or unusual values)
to :meth:`pydicom.DataElement.from_json`. The result equals what ``Dataset.from_json`` returns.

Bulk data is not fetched here. Elements given by ``BulkDataURI`` get an empty value, and their
URIs are kept on the data set that holds them, in a ``dict`` attribute named
:data:`BULKDATA_URIS_ATTR` (``"dicomslide_bulkdata_uris"``) that maps the upper-case tag
(``"00282000"``) to the URI. Every returned root data set has that attribute, possibly empty;
a nested item (an Optical Path Sequence item with an ICC profile, say) has it only if it holds
bulk data itself. :func:`bulkdata_uris` reads it.

Per-Frame Functional Groups Sequences of more than :data:`LAZY_ITEMS` items are not converted
up front: the element's value is a :class:`LazyJSONSequence`, a :class:`pydicom.Sequence` that
converts its items on first use. Converting the 5,000 items of one 20000x17000 level costs
about a second of CPU, while what opening a slide and placing frames needs (positions, Z
offsets, optical paths, segments) is read straight from the JSON by
:mod:`dicomslide.perframe`; a user who reads the sequence gets the same Datasets as before.
"""

from __future__ import annotations

import functools
import inspect
import json
from typing import Any, Final

from pydicom import DataElement, Dataset
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import empty_value_for_VR
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from dicomslide._gc import collector_paused
from dicomslide._tags import (
    LUT_DESCRIPTORS as _LUT_DESCRIPTORS,
    PER_FRAME_FUNCTIONAL_GROUPS as _PER_FRAME_FUNCTIONAL_GROUPS,
)
from dicomslide.errors import ProtocolError
from dicomslide.perframe import FramePositions, positions_from_json
from dicomslide.sources.json_frames import RawJSONItems, pack_items, split_per_frame, unpack_items

__all__ = [
    "BULKDATA_URIS_ATTR",
    "LAZY_ITEMS",
    "LazyJSONSequence",
    "bulkdata_uris",
    "datasets_from_json",
    "parse_json_bytes",
]

BULKDATA_URIS_ATTR: Final = "dicomslide_bulkdata_uris"
"""Name of the data set attribute mapping upper-case tags to their BulkDataURI."""

# VRs whose JSON values are taken as they are (strings) or as int/float, as pydicom's own JSON
# reader does before the DataElement constructor converts them to IS/DS/MultiValue etc.
_STRING_VRS: Final = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
_INT_VRS: Final = frozenset({"IS", "SL", "SS", "SV", "UL", "US", "UV", "US or SS"})
_FLOAT_VRS: Final = frozenset({"DS", "FD", "FL"})
_VALUE_KEYS: Final = ("Value", "InlineBinary", "BulkDataURI")
_EXCERPT: Final = 80

LAZY_ITEMS: Final = 64
"""Per-frame sequences with more items than this are converted lazily."""


def _pass_through(value: Any) -> Any:
    """Converter of LUT descriptor values, which pydicom takes as they are.

    For LUT Descriptor and the Red/Green/Blue Palette Color Lookup Table Descriptors (PALETTE
    COLOR images, label maps among them) pydicom 3.0 keeps the values in a MultiValue whose
    converter is a local function, which cannot be pickled (pydicom issue 2160, fixed after
    3.0.2); the blocking facade pickles image metadata for process pools.
    """
    return value


class LazyJSONSequence(Sequence):
    """A Sequence whose items are converted from DICOM JSON when first used.

    Every list operation (indexing, iteration, ``len`` aside) converts all items once, exactly
    as :func:`datasets_from_json` would have; :attr:`json_items` gives the unconverted JSON
    until then, so that readers of a few values per item can skip the conversion.

    Parameters
    ----------
    json_items: list[dict[str, Any]]
        The sequence's items as DICOM JSON objects
    where: str
        Where the sequence is, for error messages
    """

    def __init__(self, json_items: list[dict[str, Any]], where: str) -> None:
        super().__init__()
        # Unarmed until arm(): adding the element to a Dataset walks the items (to pass on
        # Pixel Representation, which JSON's explicit VRs never need), which would convert
        # them all.
        self.__dict__["_lazy_pending"] = json_items
        self.__dict__["_lazy_where"] = where

    def arm(self) -> None:
        """Hold the JSON items unconverted from now on (once the element is in its Dataset)."""
        pending = self.__dict__.pop("_lazy_pending", None)
        if pending is None:
            return
        if isinstance(pending, RawJSONItems):  # read and packed as they arrived
            held = (pending.chunks, pending.total, pending[0], pending.positions)
        else:
            # Held packed: a per-frame item as JSON objects is ~2.2 KB of dicts and strings,
            # packed and compressed ~0.04 KB (see README Scale); unpacked at C speed on
            # use. The first item stays unpacked for first().
            first = pending[0] if pending else None
            held = ([pack_items(pending)], len(pending), first, positions_from_json(pending))
        state = self.__dict__
        keys = ("_lazy_json", "_lazy_count", "_lazy_first_json", "_lazy_positions")
        state.update(zip(keys, held, strict=True))
        state.pop("_lazy_items", None)

    @property
    def is_lazy(self) -> bool:
        """bool: Whether the JSON items are still unconverted (a look-up, not an unpack)."""
        return self.__dict__.get("_lazy_json") is not None

    @property
    def json_items(self) -> list[dict[str, Any]] | None:
        """The JSON items if they have not been converted yet, else None.

        Returns
        -------
        list[dict[str, Any]] | None
            Unconverted items
        """
        packed: list[bytes] | None = self.__dict__.get("_lazy_json")
        if packed is None:
            return None
        items: list[dict[str, Any]] = []
        with collector_paused():  # thousands of dicts at once: see dicomslide._gc
            for chunk in packed:
                items += unpack_items(chunk)
        return items

    @property
    def frame_positions(self) -> FramePositions | None:
        """Positions read from the items when they arrived, None if they could not be.

        Returns
        -------
        dicomslide.perframe.FramePositions | None
            Rows, columns, z offsets, optical paths and segments of every frame
        """
        positions: FramePositions | None = self.__dict__.get("_lazy_positions")
        return positions

    def first(self) -> Dataset | None:
        """The first item, converting only that one while the rest is still JSON.

        Returns
        -------
        pydicom.Dataset | None
            The first item, None for an empty sequence
        """
        if self.__dict__.get("_lazy_json") is None:
            return self._list[0] if self._list else None
        item = self.__dict__.get("_lazy_first_json")
        if item is None:
            return None
        first: Dataset | None = self.__dict__.get("_lazy_first")
        if first is None:
            first = _convert_item(item, f"{self.__dict__['_lazy_where']}[0]")
            self.__dict__["_lazy_first"] = first
        return first

    @property
    def _list(self) -> list[Dataset]:
        converted: list[Dataset] | None = self.__dict__.get("_lazy_items")
        if converted is None:
            items = self.json_items or []
            where = self.__dict__.get("_lazy_where", "sequence")
            converted = [_convert_item(item, f"{where}[{i}]") for i, item in enumerate(items)]
            # Two threads converting at once both get equal lists; one is kept.
            self.__dict__["_lazy_items"] = converted
            self.__dict__["_lazy_json"] = None
        return converted

    @_list.setter
    def _list(self, value: list[Dataset]) -> None:
        self.__dict__["_lazy_items"] = value
        self.__dict__["_lazy_json"] = None

    def __len__(self) -> int:
        if self.__dict__.get("_lazy_json") is not None:
            count: int = self.__dict__["_lazy_count"]
            return count
        return len(self._list)


def _convert_item(value: Any, where: str) -> Dataset:
    if not isinstance(value, dict):
        raise ProtocolError(f"DICOM JSON {where} is {type(value).__name__}, not an object")
    return _convert_dataset(value, where)


def parse_json_bytes(data: bytes) -> list[dict[str, Any]]:
    """Parse a DICOM JSON response body: a JSON array of data set objects.

    Parameters
    ----------
    data: bytes
        Response body (UTF-8, or UTF-16/32 with or without a byte order mark)

    Returns
    -------
    list[dict[str, Any]]
        The data set objects

    Raises
    ------
    ProtocolError
        If `data` is not JSON, not an array, or holds something other than objects; the
        message quotes a short excerpt around the problem
    """
    try:
        # Millions of containers: see dicomslide._gc.
        with collector_paused():
            # Huge per-frame sequences item by item (see dicomslide.sources.json_frames).
            parsed = split_per_frame(data)
            if parsed is None:
                parsed = json.loads(data)
    except json.JSONDecodeError as exc:
        start = max(0, exc.pos - _EXCERPT // 2)
        excerpt = exc.doc[start : start + _EXCERPT]
        raise ProtocolError(
            f"invalid DICOM JSON ({exc.msg} at character {exc.pos} of {len(exc.doc)}): {excerpt!r}"
        ) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"invalid DICOM JSON ({exc}): {bytes(data[:_EXCERPT])!r}") from None
    except RecursionError:
        # A body of 100,000 "[" exhausts the parser's stack: hostile, not DICOM.
        raise ProtocolError(
            f"invalid DICOM JSON: nested too deeply to parse ({len(data)} bytes)"
        ) from None
    if not isinstance(parsed, list):
        raise ProtocolError(
            f"DICOM JSON must be an array of data sets, got {type(parsed).__name__}: "
            f"{bytes(data[:_EXCERPT])!r}"
        )
    for index, item in enumerate(parsed):
        if not isinstance(item, dict):
            raise ProtocolError(
                f"DICOM JSON array item {index} is {type(item).__name__}, not an object: "
                f"{json.dumps(item)[:_EXCERPT]!r}"
            )
    return parsed


def bulkdata_uris(dataset: Dataset) -> dict[str, str]:
    """Return the BulkDataURIs recorded on a data set by :func:`datasets_from_json`.

    Parameters
    ----------
    dataset: pydicom.Dataset
        A root data set or sequence item

    Returns
    -------
    dict[str, str]
        Upper-case tag (``"00282000"``) → URI; empty if none were recorded
    """
    uris: dict[str, str] | None = getattr(dataset, BULKDATA_URIS_ATTR, None)
    return uris if uris is not None else {}


def datasets_from_json(items: list[dict[str, Any]]) -> list[Dataset]:
    """Convert DICOM JSON data set objects to pydicom data sets.

    Parameters
    ----------
    items: list[dict[str, Any]]
        Data set objects, e.g. from :func:`parse_json_bytes`

    Returns
    -------
    list[pydicom.Dataset]
        One data set per object, equal to what :meth:`pydicom.Dataset.from_json` returns;
        BulkDataURIs are recorded as described in the module documentation

    Raises
    ------
    ProtocolError
        If an object breaks the DICOM JSON model (no ``vr``, a tag that is not hex, a value
        of the wrong JSON type, ...); the message names the item and the tag
    """
    if not isinstance(items, list):
        raise ProtocolError(f"DICOM JSON must be a list of objects, not {type(items).__name__}")
    datasets: list[Dataset] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ProtocolError(f"DICOM JSON item {index} is {type(item).__name__}, not an object")
        try:
            dataset = _convert_dataset(item, f"item {index}")
        except RecursionError:
            raise ProtocolError(
                f"DICOM JSON item {index}: sequences nested too deeply to convert"
            ) from None
        if not hasattr(dataset, BULKDATA_URIS_ATTR):
            object.__setattr__(dataset, BULKDATA_URIS_ATTR, {})
        datasets.append(dataset)
    return datasets


def _ignore_bulk_data(tag: str, vr: str, uri: str) -> None:
    """Give bulk data elements an empty value; the URI is recorded separately."""
    return None


# pydicom inspects the handler's signature for every element it converts; a precomputed
# ``__signature__`` turns that lookup from microseconds of introspection into an attribute read.
_ignore_bulk_data.__signature__ = inspect.signature(  # type: ignore[attr-defined]
    _ignore_bulk_data
)


def _convert_dataset(item: dict[str, Any], where: str) -> Dataset:
    dataset = Dataset()
    uris: dict[str, str] | None = None
    for tag_hex, mapping in item.items():
        try:
            element, uri = _convert_element(tag_hex, mapping, where)
        except ProtocolError:
            raise
        except Exception as exc:
            # pydicom reports model violations as KeyError/TypeError/ValueError and friends.
            raise ProtocolError(
                f"DICOM JSON {where}, tag {str(tag_hex)[:16]!r}: {type(exc).__name__}: {exc}"
            ) from exc
        dataset.add(element)
        if isinstance(element.value, LazyJSONSequence):
            element.value.arm()
        if uri is not None:
            if uris is None:
                uris = {}
            uris[tag_hex.upper()] = uri
    if uris is not None:
        object.__setattr__(dataset, BULKDATA_URIS_ATTR, uris)
    return dataset


@functools.lru_cache(maxsize=4096)
def _is_sequence(tag: int) -> bool | None:
    """Whether the data dictionary makes ``tag`` a sequence (None: private or unknown)."""
    try:
        return bool(dictionary_VR(tag) == "SQ")
    except KeyError:
        return None


def _convert_element(tag_hex: str, mapping: Any, where: str) -> tuple[DataElement, str | None]:
    if not isinstance(mapping, dict):
        raise ProtocolError(
            f"DICOM JSON {where}, tag {tag_hex!r}: attribute is {type(mapping).__name__}, "
            "not an object"
        )
    vr = mapping.get("vr")
    if not isinstance(vr, str):
        raise ProtocolError(f"DICOM JSON {where}, tag {tag_hex!r}: missing or invalid 'vr'")
    tag = int(tag_hex, 16)
    sequence = _is_sequence(tag)
    if vr != "UN" and sequence is not None and (vr == "SQ") != sequence:
        # Code reading a sequence would iterate a string's characters (or the reverse).
        raise ProtocolError(
            f"DICOM JSON {where}, tag {tag_hex!r}: VR {vr!r} "
            f"{'for an attribute that is not a sequence' if vr == 'SQ' else 'for a sequence'}"
        )
    values = mapping.get("Value")
    if values is not None and isinstance(values, list) and values and len(mapping) == 2:
        # len(mapping) == 2: only "vr" and "Value", so no conflicting value keys to resolve.
        if vr == "SQ":
            if tag == _PER_FRAME_FUNCTIONAL_GROUPS and (
                len(values) > LAZY_ITEMS or isinstance(values, RawJSONItems)
            ):
                return DataElement(tag, vr, LazyJSONSequence(values, f"{where} > {tag_hex}")), None
            if all(isinstance(value, dict) for value in values):
                sub_where = f"{where} > {tag_hex}"
                items = [
                    _convert_dataset(value, f"{sub_where}[{i}]") for i, value in enumerate(values)
                ]
                return DataElement(tag, vr, items), None
        elif None not in values:
            if vr in _STRING_VRS:
                if all(isinstance(value, str) for value in values):
                    return DataElement(tag, vr, values[0] if len(values) == 1 else values), None
            elif vr in _INT_VRS:
                numbers: list[Any] = [int(value) for value in values]
                if tag in _LUT_DESCRIPTORS and len(numbers) > 1:
                    # Given already converted, so pydicom keeps this picklable MultiValue.
                    lut = MultiValue(_pass_through, numbers)
                    return DataElement(tag, vr, lut, already_converted=True), None
                element = DataElement(tag, vr, numbers[0] if len(numbers) == 1 else numbers)
                return element, None
            elif vr in _FLOAT_VRS:
                numbers = [float(value) for value in values]
                return DataElement(tag, vr, numbers[0] if len(numbers) == 1 else numbers), None
    # Everything else takes pydicom's own path, which knows the rarer cases.
    keys = [key for key in _VALUE_KEYS if key in mapping]
    if not keys:
        return DataElement(tag, vr, empty_value_for_VR(vr)), None
    value_key = keys[0]
    value = mapping[value_key]
    uri: str | None = None
    if value_key == "BulkDataURI":
        # PS3.18 shows a plain string; some servers wrap it in a list, as pydicom accepts.
        uri = value[0] if isinstance(value, list) and value else value
        if not isinstance(uri, str):
            raise ProtocolError(f"DICOM JSON {where}, tag {tag_hex!r}: BulkDataURI {value!r}")
    element = DataElement.from_json(Dataset, tag_hex, vr, value, value_key, _ignore_bulk_data)
    return element, uri

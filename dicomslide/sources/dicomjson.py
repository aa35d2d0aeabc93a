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
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Final

from pydicom import DataElement, Dataset
from pydicom.dataelem import empty_value_for_VR

from dicomslide.errors import ProtocolError

__all__ = [
    "BULKDATA_URIS_ATTR",
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
        parsed = json.loads(data)
    except json.JSONDecodeError as exc:
        start = max(0, exc.pos - _EXCERPT // 2)
        excerpt = exc.doc[start : start + _EXCERPT]
        raise ProtocolError(
            f"invalid DICOM JSON ({exc.msg} at character {exc.pos} of {len(exc.doc)}): {excerpt!r}"
        ) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"invalid DICOM JSON ({exc}): {bytes(data[:_EXCERPT])!r}") from None
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
        dataset = _convert_dataset(item, f"item {index}")
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
        if uri is not None:
            if uris is None:
                uris = {}
            uris[tag_hex.upper()] = uri
    if uris is not None:
        object.__setattr__(dataset, BULKDATA_URIS_ATTR, uris)
    return dataset


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
    values = mapping.get("Value")
    if values is not None and isinstance(values, list) and values and len(mapping) == 2:
        # len(mapping) == 2: only "vr" and "Value", so no conflicting value keys to resolve.
        if vr == "SQ":
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
                return DataElement(tag, vr, numbers[0] if len(numbers) == 1 else numbers), None
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

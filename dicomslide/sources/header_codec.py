"""A compact, safe serialisation of a parsed Part 10 header, for the local index.

Re-parsing a header with pydicom costs about 0.4 ms; rebuilding the same :class:`Dataset` of
raw (not yet converted) elements from this format costs a fraction of that (every step runs
in C over whole arrays), and reads no file. Each element is stored as it was read: tag, VR,
flags and the value bytes, the tags, VRs, flags and lengths of all elements as four arrays
followed by the values. The few simple values pydicom converts while reading (the first file
meta element, the transfer syntax, the character set) are stored as their bytes, anything
else it had converted as JSON. Nothing is executed on load (unlike pickle), so an index
written by someone else can at worst give wrong values, which the checks on the SOP Instance
UID and the file's identity catch or the slide reports.
"""

from __future__ import annotations

import functools
import itertools
import json
import struct
from typing import Any, Final

from pydicom import Dataset, config
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.multival import MultiValue

from dicomslide.perframe import _tag as shared_tag

__all__ = ["decode_header", "encode_header"]

_VERSION: Final = 2
# Version, dataset flags, length of the charset JSON (<256), number of elements; then the
# charset JSON, the elements' tags (uint32), VRs (2 bytes), flags (1 byte) and value lengths
# (uint32), each as one array, then the values one after another. Columns, not records: a
# warm open decodes thousands of headers, and arrays unpack at C speed.
_HEAD = struct.Struct("<BBBI")
_IMPLICIT: Final = 1
_LITTLE: Final = 2
_CONVERTED: Final = 4
_META: Final = 8


class _VrNames(dict[str, str | None]):
    """Stored VRs and their names."""

    def __missing__(self, vr: str) -> str | None:
        name = vr.rstrip("\0") or None
        if len(self) < 256:
            self[vr] = name
        return name


#: Tags as the slide code looks them up (dicomslide.perframe): the same objects, so that a
#: look-up in a rebuilt data set matches by identity, not by BaseTag.__eq__ (Python-level,
#: about a quarter of a million calls in a warm 500-slide search).
_TAGS: Final = shared_tag
_MAX_ELEMENTS: Final = 1 << 16
#: Stored VR (two characters, NUL-padded) to pydicom's VR name, None for none.
_VR_OF: Final[dict[str, str | None]] = _VrNames()
_EVEN: Final = range(0, 2 * _MAX_ELEMENTS, 2)
_ODD: Final = range(2, 2 * _MAX_ELEMENTS + 2, 2)
_ZEROS: Final = (0,) * _MAX_ELEMENTS
_TRUES: Final = (True,) * _MAX_ELEMENTS
_FALSES: Final = (False,) * _MAX_ELEMENTS
#: Per flags byte: the element's flags as booleans, and tables counting flag bits.
_IMPLICIT_OF: Final = tuple(bool(f & _IMPLICIT) for f in range(256))
_LITTLE_OF: Final = tuple(bool(f & _LITTLE) for f in range(256))
_CONVERTED_OF: Final = bytes(int(bool(f & _CONVERTED)) for f in range(256))
_META_OF: Final = bytes(int(bool(f & _META)) for f in range(256))
_CHARSETS: dict[bytes, Any] = {}


#: RawDataElement from its nine fields, without a Python-level call per element.
_new_raw: Final = functools.partial(tuple.__new__, RawDataElement)


def _charset(text: bytes) -> Any:
    """The stored character set (JSON); the few distinct ones are decoded once."""
    found = _CHARSETS.get(text)
    if found is None:
        found = json.loads(text)
        if len(_CHARSETS) < 64:
            _CHARSETS[text] = found
    return list(found) if isinstance(found, list) else found


def _plain(value: Any) -> Any:
    """``value`` as JSON can hold it (str, int, float, lists of them), or raise TypeError."""
    if isinstance(value, MultiValue | list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    raise TypeError(value)


def _as_read(elem: DataElement, implicit: bool) -> bytes | None:
    """The little-endian bytes of a simple value pydicom converted on reading, else None.

    dcmread converts the first file meta element, the transfer syntax and the character set
    as it reads them; stored as bytes they decode as fast as the rest (a converted element
    costs about 20 us to rebuild) and convert to the same value when read.
    """
    value = elem.value
    if elem.VR == "UL" and type(value) is int and 0 <= value < 1 << 32:
        return struct.pack("<I", value)
    if elem.VR in ("UI", "CS") and not implicit:
        items = list(value) if isinstance(value, MultiValue | list) else [value]
        if not all(isinstance(v, str) for v in items):
            return None
        text = "\\".join(str(v) for v in items)
        if not text.isascii() or not text.isprintable():
            return None
        data = text.encode("ascii")
        return data + (b"\0" if elem.VR == "UI" else b" ") * (len(data) % 2)
    return None


def _columns(
    container: Dataset, meta: bool, little: bool, implicit: bool, columns: tuple[list[Any], ...]
) -> None:
    tags, vrs, flags, values = columns
    for tag in list(container.keys()):
        elem = container.get_item(tag)  # as read: get_item does not convert
        if isinstance(elem, RawDataElement):
            if not isinstance(elem.value, bytes | None):
                raise TypeError(f"element {tag} holds a buffered value")
            value = bytes(elem.value or b"")
            flag = (_IMPLICIT if elem.is_implicit_VR else 0) | (
                _LITTLE if elem.is_little_endian else 0
            )
            vr = (elem.VR or "").encode("ascii")
        else:
            vr = str(elem.VR).encode("ascii")
            as_read = _as_read(elem, implicit) if little else None
            if as_read is not None:
                value, flag = as_read, _LITTLE | (_IMPLICIT if implicit else 0)
            else:
                value = json.dumps(_plain(elem.value), separators=(",", ":")).encode()
                flag = _CONVERTED
        if len(vr) > 2:
            raise ValueError(f"element {tag}: VR {elem.VR!r}")
        tags.append(int(tag))
        vrs.append(vr.ljust(2, b"\0"))
        flags.append(flag | (_META if meta else 0))
        values.append(value)


def encode_header(ds: Dataset) -> bytes | None:
    """Serialise a header read by ``pydicom.dcmread(..., stop_before_pixels=True)``.

    Parameters
    ----------
    ds: pydicom.Dataset
        The header, its elements still as read (raw) or simple converted values

    Returns
    -------
    bytes | None
        The serialisation, or None when an element cannot be stored (the header is then
        read from the file when needed)
    """
    implicit, little = ds.original_encoding
    charset = json.dumps(_plain(ds.original_character_set)).encode()
    if len(charset) > 255:
        return None
    flags = (_IMPLICIT if implicit else 0) | (_LITTLE if little else 0)
    columns: tuple[list[Any], ...] = ([], [], [], [])
    try:
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            _columns(meta, True, True, False, columns)
        _columns(ds, False, bool(little), bool(implicit), columns)
        tags, vrs, element_flags, values = columns
        n = len(tags)
        return b"".join(
            [
                _HEAD.pack(_VERSION, flags, len(charset), n),
                charset,
                struct.pack(f"<{n}I", *tags),
                *vrs,
                bytes(element_flags),
                struct.pack(f"<{n}I", *(len(v) for v in values)),
                *values,
            ]
        )
    except (TypeError, UnicodeEncodeError, ValueError, struct.error):
        return None


def decode_header(data: bytes) -> Dataset:
    """Rebuild the header :func:`encode_header` stored.

    Parameters
    ----------
    data: bytes
        What :func:`encode_header` returned

    Returns
    -------
    pydicom.Dataset
        Raw elements as pydicom read them, with ``file_meta`` and the original encoding

    Raises
    ------
    ValueError
        If ``data`` is not such a serialisation
    """
    try:
        version, flags, charset_length, n = _HEAD.unpack_from(data, 0)
        if version != _VERSION:
            raise ValueError(f"stored header format {version}, expected {_VERSION}")
        pos = _HEAD.size
        charset = _charset(data[pos : pos + charset_length])
        pos += charset_length
        tag_values = struct.unpack_from(f"<{n}I", data, pos)
        pos += 4 * n
        vr_text = data[pos : pos + 2 * n].decode("ascii")
        pos += 2 * n
        element_flags = data[pos : pos + n]
        pos += n
        lengths = struct.unpack_from(f"<{n}I", data, pos)
        pos += 4 * n
        if len(element_flags) != n or pos + sum(lengths) != len(data) or n > _MAX_ELEMENTS:
            raise ValueError("not a stored header: element table and values disagree")
        # Every step below runs in C over the whole header (map, zip, slices, dict look-ups):
        # a warm open rebuilds thousands of headers of ~70 elements each.
        keys = list(map(_TAGS, tag_values))
        vrs = list(map(_VR_OF.__getitem__, map(vr_text.__getitem__, map(slice, _EVEN, _ODD[:n]))))
        starts = list(itertools.accumulate(lengths, initial=pos))
        values = map(data.__getitem__, map(slice, starts, starts[1:]))
        elements: list[Any] = list(
            map(
                _new_raw,
                zip(
                    keys,
                    vrs,
                    lengths,
                    values,
                    _ZEROS[:n],
                    map(_IMPLICIT_OF.__getitem__, element_flags),
                    map(_LITTLE_OF.__getitem__, element_flags),
                    _TRUES[:n],
                    _FALSES[:n],
                    strict=False,
                ),
            )
        )
        if element_flags.translate(_CONVERTED_OF).count(1):
            for i, f in enumerate(element_flags):
                if f & _CONVERTED:
                    # Values pydicom had converted (and checked) when the file was read.
                    elements[i] = DataElement(
                        keys[i],
                        vrs[i] or "UN",
                        json.loads(elements[i].value),
                        validation_mode=config.IGNORE,
                    )
        # The file meta elements come first.
        meta_count = element_flags.translate(_META_OF).count(1)
        if element_flags[:meta_count].translate(_META_OF).count(1) != meta_count:
            raise ValueError("not a stored header: file meta elements after the data set's")
        meta = dict(zip(keys[:meta_count], elements[:meta_count], strict=True))
        body = dict(zip(keys[meta_count:], elements[meta_count:], strict=True))
    except (struct.error, UnicodeDecodeError, json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"not a stored header: {exc}") from exc
    ds = Dataset(body)
    ds.set_original_encoding(bool(flags & _IMPLICIT), bool(flags & _LITTLE), charset)
    ds.file_meta = FileMetaDataset(meta)
    return ds

"""A compact, safe serialisation of a parsed Part 10 header, for the local index.

Re-parsing a header with pydicom costs about 0.4 ms; rebuilding the same :class:`Dataset` of
raw (not yet converted) elements from this format costs about a quarter of that, and reads no
file. Each element is stored as it was read: tag, VR, flags and the value bytes (elements
pydicom had already converted, such as Specific Character Set, as JSON). Nothing is executed
on load (unlike pickle), so an index written by someone else can at worst give wrong values,
which the checks on the SOP Instance UID and the file's identity catch or the slide reports.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Final

from pydicom import Dataset, config
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import VR

__all__ = ["decode_header", "encode_header"]

_VERSION: Final = 1
_HEAD = struct.Struct("<BBB")  # version, dataset flags, length of the charset JSON (<256)
_RECORD = struct.Struct("<I2sBI")  # tag, VR, flags, length of the payload
_IMPLICIT: Final = 1
_LITTLE: Final = 2
_CONVERTED: Final = 4
_META: Final = 8
#: VRs as stored (two bytes) and their names; others are decoded when met.
_VR_NAMES: Final = {name.encode("ascii"): name for name in (v.value for v in VR) if len(name) == 2}


class _TagCache(dict[int, BaseTag]):
    """Tags met so far (the same few hundred in every header), bounded."""

    def get_tag(self, tag: int) -> BaseTag:
        found = self.get(tag)
        if found is None:
            found = BaseTag(tag)
            if len(self) < 4096:
                self[tag] = found
        return found


_TAGS: Final = _TagCache()


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


def _records(container: Dataset, meta: bool, out: list[bytes]) -> None:
    for tag in list(container.keys()):
        elem = container.get_item(tag)  # as read: get_item does not convert
        if isinstance(elem, RawDataElement):
            if not isinstance(elem.value, bytes | None):
                raise TypeError(f"element {tag} holds a buffered value")
            payload = bytes(elem.value or b"")
            flags = (_IMPLICIT if elem.is_implicit_VR else 0) | (
                _LITTLE if elem.is_little_endian else 0
            )
            vr = (elem.VR or "").encode("ascii")
        else:
            payload = json.dumps(_plain(elem.value), separators=(",", ":")).encode()
            flags = _CONVERTED
            vr = str(elem.VR).encode("ascii")
        out.append(
            _RECORD.pack(
                int(tag), vr.ljust(2, b"\0"), flags | (_META if meta else 0), len(payload)
            )
        )
        out.append(payload)


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
    out = [_HEAD.pack(_VERSION, flags, len(charset)), charset]
    try:
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            _records(meta, True, out)
        _records(ds, False, out)
    except (TypeError, UnicodeEncodeError, ValueError, struct.error):
        return None
    return b"".join(out)


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
        version, flags, charset_length = _HEAD.unpack_from(data, 0)
        if version != _VERSION:
            raise ValueError(f"header format {version}, expected {_VERSION}")
        pos = _HEAD.size
        charset = json.loads(data[pos : pos + charset_length])
        pos += charset_length
        meta: dict[BaseTag, Any] = {}
        body: dict[BaseTag, Any] = {}
        # A warm open decodes thousands of headers of ~70 elements: names bound locally, VRs
        # and tags looked up instead of decoded and built per element.
        unpack = _RECORD.unpack_from
        size = _RECORD.size
        end = len(data)
        vrs = _VR_NAMES
        tags = _TAGS
        raw = RawDataElement
        while pos < end:
            tag, vr_bytes, elem_flags, length = unpack(data, pos)
            pos += size
            stop = pos + length
            if stop > end:
                raise ValueError("truncated element")
            payload = data[pos:stop]
            pos = stop
            key = tags.get(tag) or tags.get_tag(tag)
            vr = vrs.get(vr_bytes)
            if vr is None:
                vr = vr_bytes.rstrip(b"\0").decode("ascii") or None
            element: Any
            if elem_flags & _CONVERTED:
                # Values pydicom had converted (and checked) when the file was read.
                element = DataElement(
                    key, vr or "UN", json.loads(payload), validation_mode=config.IGNORE
                )
            else:
                element = raw(
                    key,
                    vr,
                    length,
                    payload,
                    0,
                    bool(elem_flags & _IMPLICIT),
                    bool(elem_flags & _LITTLE),
                )
            (meta if elem_flags & _META else body)[key] = element
    except (struct.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a stored header: {exc}") from exc
    ds = Dataset(body)
    ds.set_original_encoding(bool(flags & _IMPLICIT), bool(flags & _LITTLE), charset)
    ds.file_meta = FileMetaDataset(meta)
    return ds

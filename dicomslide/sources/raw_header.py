"""A fast reader of plain Part 10 headers, for indexing a folder cold.

Indexing reads every file's header once. ``pydicom.dcmread(stop_before_pixels=True)`` reads
it element by element from the file object, and opening a slide then converts every element
once to learn whether the header converts cleanly. For the common file (Explicit VR Little
Endian file meta and data set, every element of a known VR and a defined length) this module
reads the bytes before the Pixel Data at once, cuts them into the same raw elements pydicom
would make, and checks from the bytes that every value would convert without error, so that
the conversion is skipped when the slide is opened.

Anything unusual (implicit VR, big endian, deflate, a command group, an undefined length at
the top level, an unknown VR, a truncated element) returns None: the caller then reads the
file with pydicom as before. The check is one-sided: a header called plain converts cleanly;
one not called plain is converted (and judged) by pydicom.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO, Final, cast

from pydicom import Dataset
from pydicom.charset import convert_encodings, default_encoding, python_encoding
from pydicom.dataelem import RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.dataset import FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.valuerep import BYTE_VR_REGEXES

from dicomslide._tags import PER_FRAME_FUNCTIONAL_GROUPS

# Item tags, the undefined length and the VRs with a 4-byte length: perframe's raw walk too.
from dicomslide.perframe import (
    _ITEM,
    _ITEM_END,
    _LONG_VRS as _LONG,
    _SEQUENCE_END,
    _UNDEFINED,
    _tag as shared_tag,
)
from dicomslide.sources import part10

__all__ = ["RawHeader", "read_raw_header"]

_PREAMBLE: Final = 132
_FIRST_READ: Final = 1 << 16
#: Values longer than this not yet read are read on their own (see _Buffer.value).
_DIRECT: Final = 1 << 20
_CHARSET, _TRANSFER_SYNTAX = 0x00080005, 0x00020010
_PIXEL_TAGS: Final = frozenset({0x7FE00010, *part10.FLOAT_BITS_ALLOCATED})
#: Syntaxes pydicom does not read as Explicit VR Little Endian: implicit, big endian, deflate.
_OTHER_ENCODINGS: Final = frozenset(
    {
        part10.IMPLICIT_VR_LITTLE_ENDIAN,
        part10.EXPLICIT_VR_BIG_ENDIAN,
        part10.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    }
)

_BINARY_SIZE: Final = {
    b"US": 2,
    b"SS": 2,
    b"UL": 4,
    b"SL": 4,
    b"FL": 4,
    b"FD": 8,
    b"AT": 4,
    b"SV": 8,
    b"UV": 8,
    b"OB": 1,
    b"OW": 2,
    b"OF": 4,
    b"OD": 8,
    b"OL": 4,
    b"OV": 8,
}
_KNOWN: Final = frozenset(
    {*_BINARY_SIZE, *b"AE AS CS DA DS DT IS LO LT PN SH SQ ST TM UC UI UN UR UT".split()}
)
_PRINTABLE: Final = rb"[\x20-\x5b\x5d-\x7e]"  # no backslash: it separates values
_FREE_TEXT: Final = rb"[\t\n\f\r\x20-\x7e]"


def _pattern(body: bytes) -> re.Pattern[bytes]:
    return re.compile(body, re.DOTALL)


#: Per VR: (several values, longest value, pattern of one value), a subset of what pydicom
#: converts without an error or a validation warning (its checks on reading, in ASCII: the
#: same in every character set it reads, no ISO 2022 escape).
_TEXT_RULES: Final[dict[bytes, tuple[bool, int, re.Pattern[bytes]]]] = {
    b"AE": (True, 16, _pattern(_PRINTABLE + b"*")),
    b"AS": (True, 4, _pattern(rb"[0-9]{3}[DWMY]")),
    b"CS": (True, 16, _pattern(rb"[A-Z0-9 _]*")),
    b"DS": (True, 16, _pattern(rb" *[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)? *")),
    b"IS": (True, 12, _pattern(rb" *[+-]?[0-9]+ *")),
    # pydicom's own patterns for dates and times (ranges included); no length limit there.
    b"DA": (True, 1 << 16, BYTE_VR_REGEXES["DA"]),
    b"DT": (True, 1 << 16, BYTE_VR_REGEXES["DT"]),
    b"TM": (True, 1 << 16, BYTE_VR_REGEXES["TM"]),
    b"UI": (True, 64, _pattern(rb"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")),
    b"LO": (True, 64, _pattern(_PRINTABLE + b"*")),
    b"SH": (True, 16, _pattern(_PRINTABLE + b"*")),
    b"PN": (True, 64, _pattern(rb"[\x20-\x3c\x3e-\x5b\x5d-\x7e]*")),
    b"UC": (True, 1 << 30, _pattern(_PRINTABLE + b"*")),
    b"LT": (False, 10240, _pattern(_FREE_TEXT + b"*")),
    b"ST": (False, 1024, _pattern(_FREE_TEXT + b"*")),
    b"UT": (False, 1 << 32, _pattern(_FREE_TEXT + b"*")),
}
_ELEMENT: Final = struct.Struct("<HH2sH")
_LENGTH: Final = struct.Struct("<I")
_TAG_LENGTH: Final = struct.Struct("<HHI")


@dataclass(frozen=True, slots=True)
class RawHeader:
    """A header read by :func:`read_raw_header`.

    Attributes
    ----------
    dataset: pydicom.Dataset
        The data set up to the pixel data, raw elements as ``dcmread`` makes them, with
        ``file_meta`` and the original encoding
    pixel_tag: int | None
        The Pixel Data element the header stopped before, None at the end of the file
    plain: bool
        Whether every value (nested ones included, the per-frame functional groups
        excepted, as when a slide is opened) converts with pydicom without an error
    """

    dataset: Dataset
    pixel_tag: int | None
    plain: bool


class _Unusual(Exception):
    """Something pydicom shall read."""


class _Buffer:
    """The header's bytes from ``base`` on, read further only when an element runs past them.

    A large value (the 9 MB per-frame sequence of a sparse image) is read on its own, into
    the bytes object that becomes its value, and the buffer starts again after it: reading
    it into the buffer and copying it out, and then doubling the buffer for the next element
    (9 MB of pixel data), cost ~25 ms of a cold open where reading it costs ~6.
    """

    def __init__(self, fp: BinaryIO) -> None:
        self.fp = fp
        self.base = 0
        self.data = bytearray(fp.read(_FIRST_READ))
        self.eof = len(self.data) < _FIRST_READ

    def need(self, end: int) -> bool:
        """Whether the file has ``end`` bytes (reading more if needed)."""
        while self.base + len(self.data) < end and not self.eof:
            more = self.fp.read(max(end - self.base - len(self.data), _FIRST_READ))
            self.eof = not more
            self.data += more
        return self.base + len(self.data) >= end

    def value(self, start: int, length: int) -> bytes:
        """The ``length`` bytes at ``start`` (at or after ``base``), as one bytes object."""
        if length > _DIRECT and self.base + len(self.data) < start + length:
            self.fp.seek(start)
            value = self.fp.read(length)
            if len(value) != length:
                raise _Unusual
            self.base, self.data, self.eof = start + length, bytearray(), False
            return value
        if not self.need(start + length):
            raise _Unusual
        with memoryview(self.data) as view:
            return bytes(view[start - self.base : start - self.base + length])


def _element(buf: _Buffer, pos: int) -> tuple[int, bytes, int, int]:
    """Tag, VR, value start and length of the explicit VR element at ``pos``."""
    if not buf.need(pos + 8):
        raise _Unusual
    group, elem, vr, short = _ELEMENT.unpack_from(buf.data, pos - buf.base)
    if vr not in _KNOWN:
        raise _Unusual
    if vr in _LONG:
        if not buf.need(pos + 12):
            raise _Unusual
        length = _LENGTH.unpack_from(buf.data, pos + 8 - buf.base)[0]
        return group << 16 | elem, vr, pos + 12, length
    return group << 16 | elem, vr, pos + 8, short


def _raw(tag: int, vr: bytes, start: int, length: int, buf: _Buffer) -> RawDataElement:
    name = vr.decode("ascii")
    # A raw element's empty value is b"" or None, as dcmread makes it.
    value = buf.value(start, length) if length else empty_value_for_VR(name, raw=True)
    return RawDataElement(
        shared_tag(tag), name, length, cast(bytes | None, value), start, False, True
    )


def _plain_value(vr: bytes, value: bytes) -> bool:
    """Whether pydicom converts this value without an error or warning (False when unsure)."""
    size = _BINARY_SIZE.get(vr)
    if size is not None:
        return len(value) % size == 0
    rule = _TEXT_RULES.get(vr)
    if rule is None:
        return False  # UR, UN, SQ: left to pydicom
    several, longest, pattern = rule
    text = value.rstrip(b"\x00 ") if vr != b"UI" else value.rstrip(b"\x00")
    for one in text.split(b"\\") if several else (text,):
        if len(one) > longest or (one and not pattern.fullmatch(one)):
            return False
    return True


def _plain_items(data: bytes, start: int, end: int, depth: int) -> bool:
    """Whether a sequence value of defined length holds plain items only."""
    pos = start
    while pos < end:
        if pos + 8 > end:
            return False
        group, elem, length = _TAG_LENGTH.unpack_from(data, pos)
        if group << 16 | elem != _ITEM:
            return False
        pos += 8
        if length == _UNDEFINED:
            pos = _plain_elements(data, pos, end, depth, until_item_end=True)
            if pos < 0:
                return False
            continue
        if pos + length > end or _plain_elements(data, pos, pos + length, depth) != pos + length:
            return False
        pos += length
    return pos == end


def _plain_elements(
    data: bytes, start: int, end: int, depth: int, *, until_item_end: bool = False
) -> int:
    """Walk explicit VR elements; the position after them (or after the item end), -1 if odd."""
    if depth > 16:
        return -1
    pos = start
    while pos < end:
        if pos + 8 > end:
            return -1
        group, elem, vr, short = _ELEMENT.unpack_from(data, pos)
        tag = group << 16 | elem
        if tag == _ITEM_END and until_item_end:
            return pos + 8
        if vr not in _KNOWN or vr == b"UN" or group == 0xFFFE:
            return -1
        if vr in _LONG:
            if pos + 12 > end:
                return -1
            length = _LENGTH.unpack_from(data, pos + 8)[0]
            pos += 12
        else:
            length = short
            pos += 8
        if length == _UNDEFINED:
            if vr != b"SQ":
                return -1
            pos = _plain_undefined_sequence(data, pos, end, depth + 1)
            if pos < 0:
                return -1
            continue
        if pos + length > end:
            return -1
        if vr == b"SQ":
            if not _plain_items(data, pos, pos + length, depth + 1):
                return -1
        elif not _plain_value(vr, data[pos : pos + length]):
            return -1
        pos += length
    return -1 if until_item_end else pos


def _plain_undefined_sequence(data: bytes, start: int, end: int, depth: int) -> int:
    """Walk the items of a nested sequence of undefined length; position after its end."""
    pos = start
    while pos + 8 <= end:
        group, elem, length = _TAG_LENGTH.unpack_from(data, pos)
        tag = group << 16 | elem
        pos += 8
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM:
            return -1
        if length == _UNDEFINED:
            pos = _plain_elements(data, pos, end, depth, until_item_end=True)
            if pos < 0:
                return -1
        elif pos + length > end or _plain_elements(data, pos, pos + length, depth) != pos + length:
            return -1
        else:
            pos += length
    return -1


def _read(buf: _Buffer) -> RawHeader:
    data_meta: dict[BaseTag, Any] = {}
    pos = _PREAMBLE
    while True:
        if not buf.need(pos + 2):
            raise _Unusual  # no data set
        if int.from_bytes(buf.data[pos - buf.base : pos - buf.base + 2], "little") != 2:
            break
        tag, vr, start, length = _element(buf, pos)
        if length == _UNDEFINED:
            raise _Unusual
        element = _raw(tag, vr, start, length, buf)
        data_meta[element.tag] = element
        pos = start + length
    syntax_element = data_meta.get(BaseTag(_TRANSFER_SYNTAX))
    syntax_bytes = b"" if syntax_element is None else syntax_element.value or b""
    syntax = syntax_bytes.decode("ascii", "replace").strip("\0 ")
    if not syntax or syntax in _OTHER_ENCODINGS:
        raise _Unusual
    body: dict[BaseTag, Any] = {}
    plain = True
    pixel_tag: int | None = None
    first = True
    while buf.need(pos + 1):
        tag, vr, start, length = _element(buf, pos)
        if first and tag >> 16 == 0:
            raise _Unusual  # a command group
        first = False
        if tag in _PIXEL_TAGS:
            pixel_tag = tag
            break
        if length == _UNDEFINED or tag >> 16 == 0xFFFE:
            raise _Unusual
        element = _raw(tag, vr, start, length, buf)
        body[element.tag] = element
        if plain and length and tag != PER_FRAME_FUNCTIONAL_GROUPS:
            if vr == b"UN":
                plain = False
            elif vr == b"SQ":
                plain = _plain_items(cast(bytes, element.value), 0, length, 0)
            else:
                plain = _plain_value(vr, cast(bytes, element.value))
        pos = start + length
    if first:
        raise _Unusual  # no data set: pydicom guesses its encoding
    encoding: Any = default_encoding
    charset = body.get(BaseTag(_CHARSET))
    if charset is not None:
        # Only one character set pydicom knows by name: it converts them without a warning.
        if (charset.value or b"").strip(b"\x00 ").decode("ascii") not in python_encoding:
            raise _Unusual
        encoding = convert_encodings(convert_raw_data_element(charset).value)
    ds = Dataset(body)
    ds.set_original_encoding(False, True, encoding)
    meta = FileMetaDataset(data_meta)
    meta.set_original_encoding(False, True, default_encoding)
    # Converted in place as dcmread converts them: the first element of the file meta (it
    # checks the encoding with it), the transfer syntax and the character set (it reads them).
    first_meta = next(iter(data_meta), None)
    converted: list[tuple[Dataset, int | None]] = [
        (meta, first_meta),
        (meta, _TRANSFER_SYNTAX),
        (ds, _CHARSET),
    ]
    for container, key in converted:
        if key is not None and key in container:
            container[key]
    ds.file_meta = meta
    return RawHeader(ds, pixel_tag, plain)


def read_raw_header(fp: BinaryIO) -> RawHeader | None:
    """Read a plain Part 10 header from the start of ``fp``, or None if it is not plain.

    Parameters
    ----------
    fp: BinaryIO
        The file, positioned anywhere (read from its start); it must start with a preamble
        and ``DICM``

    Returns
    -------
    RawHeader | None
        What ``pydicom.dcmread(fp, stop_before_pixels=True)`` would read, the tag it would
        stop before and whether every value converts cleanly; None when the header is not
        Explicit VR Little Endian throughout or has anything unusual (read it with pydicom)
    """
    fp.seek(0)
    try:
        return _read(_Buffer(fp))
    except (_Unusual, struct.error, UnicodeDecodeError, ValueError, LookupError):
        return None

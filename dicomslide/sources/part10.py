"""Sans-IO parsing of the DICOM Part 10 file structure needed to locate frames.

Nothing here knows about event loops: every function works on ``bytes``, on a synchronous
binary file object, or on a :data:`ReadAt` callable (``read_at(offset, size) -> bytes``) that
the caller backs with ``os.pread`` on a file, a slice of an in-memory buffer, or anything else.
That keeps the byte-level logic unit-testable without a loop and lets the async local source
decide where the (blocking) reads run.

What is located
---------------
* :func:`read_part10_header` reads the preamble, the File Meta Information and the data set up
  to (not including) the top-level Pixel Data element, and returns where that element's value
  starts in the file.
* :func:`build_frame_layout` turns that into a :class:`FrameLayout`: for every frame the byte
  range to read and how to turn those bytes into the frame.

  - Native pixel data: arithmetic, ``value_offset + (n - 1) * frame_nbytes``. For
    ``BitsAllocated == 1`` frames are bit-packed back to back, so a frame may start inside a
    byte; :meth:`FrameLayout.extract` re-packs its bits to start at bit 0.
  - Float Pixel Data (7FE0,0008) and Double Float Pixel Data (7FE0,0009): native, so the
    same arithmetic with 4- or 8-byte samples; they are never encapsulated.
  - Encapsulated pixel data: the Extended Offset Table if present, else the Basic Offset Table
    if not empty, else one scan of the fragment item headers (8 bytes each, plus a 4-byte peek
    at the fragment start; fragment data is never read). Without an offset table, fragments
    map to frames one to one when their counts agree; otherwise, for JPEG-family syntaxes,
    a frame starts at every fragment that starts with the codestream's start marker.

Every length read from the file is checked against the file size before anything is read or
allocated with it; violations raise :class:`dicomslide.errors.InvalidDataError`.
"""

from __future__ import annotations

import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

import numpy as np
import numpy.typing as npt
from pydicom import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag

from dicomslide._bytescan import item_chain
from dicomslide._docs import borrowed_doc
from dicomslide._syntaxes import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    J2K_FAMILY,
    JPEG_FAMILY,
    JPEG_XL_FAMILY,
    NATIVE,
)
from dicomslide.errors import InvalidDataError, NotDicomError, UnsupportedError

__all__ = [
    "DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN",
    "EXPLICIT_VR_BIG_ENDIAN",
    "EMPTY_ITEM",
    "PIXEL_DATA",
    "EXPLICIT_VR_LITTLE_ENDIAN",
    "FLOAT_BITS_ALLOCATED",
    "FRAME_START_MARKERS",
    "IMPLICIT_VR_LITTLE_ENDIAN",
    "LAYOUT_TAGS",
    "NATIVE_TRANSFER_SYNTAXES",
    "SEQUENCE_DELIMITER_ITEM",
    "ElementHeader",
    "FragmentInfo",
    "FragmentRun",
    "FrameLayout",
    "NotDicomError",
    "Part10Header",
    "PixelDataElement",
    "ReadAt",
    "build_encapsulated_layout",
    "build_frame_layout",
    "build_native_layout",
    "fragment_runs",
    "coalesce_spans",
    "inflate_body",
    "inflate_layout",
    "is_part10",
    "parse_element_header",
    "read_body_header",
    "read_part10_header",
    "scan_fragment_spans",
    "scan_fragments",
    "split_items",
]

ReadAt = Callable[[int, int], bytes]
"""``read_at(offset, size)``: up to ``size`` bytes starting at absolute ``offset``."""

NATIVE_TRANSFER_SYNTAXES: Final = NATIVE

#: The Pixel Data tag (its float variants below).
PIXEL_DATA: Final = 0x7FE00010
_FLOAT_PIXEL_DATA: Final = 0x7FE00008
_DOUBLE_FLOAT_PIXEL_DATA: Final = 0x7FE00009
_ITEM: Final = 0xFFFEE000
_SEQUENCE_DELIMITER: Final = 0xFFFEE0DD
_UNDEFINED_LENGTH: Final = 0xFFFFFFFF
_LONG_VRS: Final = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)

FLOAT_BITS_ALLOCATED: Final[dict[int, int]] = {
    _FLOAT_PIXEL_DATA: 32,
    _DOUBLE_FLOAT_PIXEL_DATA: 64,
}
"""Bits per sample of Float Pixel Data (7FE0,0008) and Double Float Pixel Data (7FE0,0009)."""

LAYOUT_TAGS: Final[tuple[int, ...]] = (
    0x00080018,  # SOPInstanceUID
    0x00280002,  # SamplesPerPixel
    0x00280008,  # NumberOfFrames
    0x00280010,  # Rows
    0x00280011,  # Columns
    0x00280100,  # BitsAllocated
    0x7FE00001,  # ExtendedOffsetTable
    0x7FE00002,  # ExtendedOffsetTableLengths
)
"""Tags :func:`build_frame_layout` needs; pass them as ``specific_tags`` to read less."""

# Start-of-codestream markers by transfer syntax; a fragment that starts with one starts a frame.
_SOI: Final = (b"\xff\xd8",)
_SOC: Final = (b"\xff\x4f",)
_JXL: Final = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")
#: Codestream start markers per transfer syntax, for telling frames of several fragments apart.
FRAME_START_MARKERS: Final[dict[str, tuple[bytes, ...]]] = {
    **dict.fromkeys(JPEG_FAMILY, _SOI),
    **dict.fromkeys(J2K_FAMILY, _SOC),
    **dict.fromkeys(JPEG_XL_FAMILY, _JXL),
}
_PEEK: Final = 12
#: Fragments shorter than this have their headers read a window at a time (see _ReadWindow).
_SMALL_FRAGMENT: Final = 16 << 10
_WINDOW: Final = 256 << 10
#: Window searched at once for item headers by scan_fragment_spans.
_SCAN_WINDOW: Final = 1 << 20
_ITEM_HEADER: Final = struct.Struct("<HHL")
#: The empty Basic Offset Table item, and the sequence delimiter item that ends Pixel Data.
EMPTY_ITEM: Final = _ITEM_HEADER.pack(_ITEM >> 16, _ITEM & 0xFFFF, 0)
SEQUENCE_DELIMITER_ITEM: Final = _ITEM_HEADER.pack(
    _SEQUENCE_DELIMITER >> 16, _SEQUENCE_DELIMITER & 0xFFFF, 0
)


@dataclass(frozen=True, slots=True)
class ElementHeader:
    """The tag, VR and length of one encoded data element.

    Attributes
    ----------
    tag: int
        Tag as ``group << 16 | element``
    vr: str | None
        Value Representation, ``None`` for implicit VR
    length: int
        Value length (``0xFFFFFFFF`` for undefined length)
    header_length: int
        Number of bytes of the header (8 or 12)
    """

    tag: int
    vr: str | None
    length: int
    header_length: int

    @property
    def undefined_length(self) -> bool:
        """bool: Whether the value has undefined length."""
        return self.length == _UNDEFINED_LENGTH


@dataclass(frozen=True, slots=True)
class PixelDataElement:
    """Where the top-level pixel data element is in the file.

    Attributes
    ----------
    tag: int
        Tag of the element (normally Pixel Data, ``0x7FE00010``)
    tag_offset: int
        Absolute offset of the element's tag
    value_offset: int
        Absolute offset of the first byte of the element's value
    length: int | None
        Value length in bytes, ``None`` for undefined length (encapsulated)
    """

    tag: int
    tag_offset: int
    value_offset: int
    length: int | None


@dataclass(frozen=True, slots=True)
class Part10Header:
    """The parsed structure of a Part 10 file up to its pixel data.

    Attributes
    ----------
    file_meta: pydicom.Dataset
        File Meta Information (group 0002)
    transfer_syntax_uid: str
        Transfer Syntax UID of the data set
    body_offset: int
        Absolute offset of the first byte after the File Meta Information
    dataset: pydicom.Dataset | None
        Data set up to the pixel data; ``None`` for the deflated transfer syntax, whose body
        must be inflated (:func:`inflate_body`) and read with :func:`read_body_header`
    pixel_data: PixelDataElement | None
        Location of the pixel data element, ``None`` if absent or deflated
    """

    file_meta: Dataset
    transfer_syntax_uid: str
    body_offset: int
    dataset: Dataset | None
    pixel_data: PixelDataElement | None


@dataclass(frozen=True, slots=True)
class FragmentInfo:
    """One item of an encapsulated pixel data sequence, as found by :func:`scan_fragments`.

    Attributes
    ----------
    offset: int
        Absolute offset of the item tag
    length: int
        Item value length
    head: bytes
        First bytes of the item value (at most 12), to recognize codestream markers
    """

    offset: int
    length: int
    head: bytes


class FrameLayout:
    """Byte ranges of the frames of one instance and how to turn them into frames.

    Build with :func:`build_frame_layout` (or :func:`build_native_layout` /
    :func:`build_encapsulated_layout`).

    Parameters
    ----------
    starts: numpy.ndarray
        Absolute offset of the first byte to read per frame (index 0 is frame 1)
    stops: numpy.ndarray
        Absolute offset one past the last byte to read per frame
    encapsulated: bool
        Whether each range holds items (headers and values) rather than raw bytes
    bit_offsets: numpy.ndarray | None, optional
        For bit-packed native data (``BitsAllocated == 1``): bit in the first byte at which
        the frame starts
    frame_bits: int, optional
        For bit-packed native data: number of bits per frame
    """

    __slots__ = ("bit_offsets", "encapsulated", "frame_bits", "starts", "stops")

    def __init__(
        self,
        starts: npt.NDArray[np.int64],
        stops: npt.NDArray[np.int64],
        *,
        encapsulated: bool,
        bit_offsets: npt.NDArray[np.int64] | None = None,
        frame_bits: int = 0,
    ) -> None:
        if starts.shape != stops.shape:
            raise ValueError("starts and stops must have the same shape")
        self.starts = starts
        self.stops = stops
        self.encapsulated = encapsulated
        self.bit_offsets = bit_offsets
        self.frame_bits = frame_bits

    @property
    def number_of_frames(self) -> int:
        """int: Number of frames."""
        return int(self.starts.shape[0])

    @property
    def complete(self) -> bool:
        """bool: Whether every frame is located (a walked layout locates them on demand)."""
        return True

    def locate(self, frame_number: int, read_at: ReadAt) -> bool:
        """Locate the frames up to ``frame_number`` (one-based) before :meth:`span` is asked.

        ``read_at`` reads the file the layout was built from. Returns whether this call
        located the last frames: never here, where every frame is located from the start.
        """
        return False

    def span(self, frame_number: int) -> tuple[int, int]:
        """Return the byte range to read for one frame.

        Parameters
        ----------
        frame_number: int
            One-based frame number

        Returns
        -------
        tuple[int, int]
            Absolute start offset and length in bytes
        """
        index = self._index(frame_number)
        start = int(self.starts[index])
        return start, int(self.stops[index]) - start

    def extract(self, frame_number: int, raw: bytes) -> bytes:
        """Turn the bytes of :meth:`span` into the frame.

        Parameters
        ----------
        frame_number: int
            One-based frame number
        raw: bytes
            Exactly the bytes of the frame's span

        Returns
        -------
        bytes
            The frame: item values concatenated for encapsulated data, the bits re-packed to
            start at bit 0 for bit-packed native data, else ``raw`` itself

        Raises
        ------
        dicomslide.errors.InvalidDataError
            If the span does not hold exactly a run of items (encapsulated) or is short
        """
        index = self._index(frame_number)
        expected = int(self.stops[index] - self.starts[index])
        if len(raw) != expected:
            raise InvalidDataError(
                f"frame {frame_number}: read {len(raw)} bytes, expected {expected} "
                "(file truncated?)"
            )
        if self.encapsulated:
            values = split_items(raw, frame_number=frame_number)
            if len(values) == 1:
                return bytes(values[0])
            return b"".join(values)
        if self.bit_offsets is not None:
            return _repack_bits(raw, int(self.bit_offsets[index]), self.frame_bits)
        return raw

    def _index(self, frame_number: int) -> int:
        if not 1 <= frame_number <= self.number_of_frames:
            raise IndexError(f"frame number {frame_number} outside [1, {self.number_of_frames}]")
        return frame_number - 1


def is_part10(prefix: bytes) -> bool:
    """Return whether the first 132 bytes of a file mark it as DICOM Part 10.

    Parameters
    ----------
    prefix: bytes
        At least the first 132 bytes of the file

    Returns
    -------
    bool
        Whether ``prefix[128:132] == b"DICM"``
    """
    return len(prefix) >= 132 and prefix[128:132] == b"DICM"


def parse_element_header(
    data: bytes, *, implicit_vr: bool, little_endian: bool = True
) -> ElementHeader:
    """Parse the header of one data element.

    Parameters
    ----------
    data: bytes
        At least the 8 (or, for explicit VR with a long VR, 12) bytes of the header
    implicit_vr: bool
        Whether the encoding is implicit VR
    little_endian: bool, optional
        Whether the encoding is little endian

    Returns
    -------
    ElementHeader
        Tag, VR, length and header size

    Raises
    ------
    dicomslide.errors.InvalidDataError
        If ``data`` is too short
    """
    endian = "<" if little_endian else ">"
    if len(data) < 8:
        raise InvalidDataError(f"element header truncated: {len(data)} of 8 bytes")
    group, element = struct.unpack_from(f"{endian}HH", data)
    tag = group << 16 | element
    if implicit_vr or group == 0xFFFE:
        # Items and delimiters never carry a VR, even in explicit VR encodings.
        (length,) = struct.unpack_from(f"{endian}L", data, 4)
        return ElementHeader(tag, None, length, 8)
    vr = data[4:6].decode("latin-1")
    if vr in _LONG_VRS:
        if len(data) < 12:
            raise InvalidDataError(f"element header truncated: {len(data)} of 12 bytes")
        (length,) = struct.unpack_from(f"{endian}L", data, 8)
        return ElementHeader(tag, vr, length, 12)
    (length,) = struct.unpack_from(f"{endian}H", data, 6)
    return ElementHeader(tag, vr, length, 8)


def _stop_at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag in (PIXEL_DATA, _FLOAT_PIXEL_DATA, _DOUBLE_FLOAT_PIXEL_DATA)


def _not_group_0002(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag >> 16 != 2


def read_body_header(
    fp: BinaryIO,
    *,
    implicit_vr: bool,
    little_endian: bool,
    specific_tags: Sequence[int] | None = None,
) -> tuple[Dataset, PixelDataElement | None]:
    """Read a data set from the current position up to its top-level pixel data element.

    Parameters
    ----------
    fp: BinaryIO
        Seekable file positioned at the first element of the data set
    implicit_vr: bool
        Whether the data set is implicit VR
    little_endian: bool
        Whether the data set is little endian
    specific_tags: Sequence[int] | None, optional
        Only keep these tags (others are skipped, not parsed)

    Returns
    -------
    tuple[pydicom.Dataset, PixelDataElement | None]
        The data set without pixel data, and where the pixel data element is (``None`` if
        the data set has none); offsets are absolute positions in ``fp``
    """
    tags = list(specific_tags) if specific_tags is not None else None
    dataset = read_dataset(
        fp,
        implicit_vr,
        little_endian,
        stop_when=_stop_at_pixel_data,
        specific_tags=tags,
    )
    # read_dataset rewinds to the tag of the element it stopped at (or stays at the end).
    tag_offset = fp.tell()
    head = fp.read(12)
    if len(head) < 8:
        return dataset, None
    header = parse_element_header(head, implicit_vr=implicit_vr, little_endian=little_endian)
    if header.tag not in (PIXEL_DATA, _FLOAT_PIXEL_DATA, _DOUBLE_FLOAT_PIXEL_DATA):
        return dataset, None
    return dataset, PixelDataElement(
        tag=header.tag,
        tag_offset=tag_offset,
        value_offset=tag_offset + header.header_length,
        length=None if header.undefined_length else header.length,
    )


def read_part10_header(
    fp: BinaryIO, *, specific_tags: Sequence[int] | None = None
) -> Part10Header:
    """Read a Part 10 file up to its pixel data and locate the pixel data element.

    Parameters
    ----------
    fp: BinaryIO
        Seekable file; read from its start
    specific_tags: Sequence[int] | None, optional
        Only keep these tags of the data set (e.g. :data:`LAYOUT_TAGS`)

    Returns
    -------
    Part10Header
        File meta, transfer syntax, data set and pixel data location

    Raises
    ------
    NotDicomError
        If the file has no ``DICM`` prefix
    dicomslide.errors.InvalidDataError
        If the File Meta Information has no Transfer Syntax UID
    """
    fp.seek(0)
    if not is_part10(fp.read(132)):
        raise NotDicomError("no DICM prefix after the 128-byte preamble")
    file_meta = read_dataset(fp, False, True, stop_when=_not_group_0002)
    body_offset = fp.tell()
    transfer_syntax_uid = str(file_meta.get("TransferSyntaxUID", "")).strip("\0 ")
    if not transfer_syntax_uid:
        raise InvalidDataError("File Meta Information has no Transfer Syntax UID")
    if transfer_syntax_uid == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        return Part10Header(file_meta, transfer_syntax_uid, body_offset, None, None)
    dataset, pixel_data = read_body_header(
        fp,
        implicit_vr=transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN,
        little_endian=transfer_syntax_uid != EXPLICIT_VR_BIG_ENDIAN,
        specific_tags=specific_tags,
    )
    return Part10Header(file_meta, transfer_syntax_uid, body_offset, dataset, pixel_data)


def inflate_body(
    src: BinaryIO,
    dst: BinaryIO,
    body_offset: int,
    *,
    chunk_size: int = 1 << 20,
    max_size: int | None = None,
) -> int:
    """Stream-inflate the deflated data set of a Part 10 file.

    Memory use is bounded by ``chunk_size``, whatever the compression ratio.

    Parameters
    ----------
    src: BinaryIO
        The deflated Part 10 file
    dst: BinaryIO
        Where the inflated data set (Explicit VR Little Endian, no preamble) is written
    body_offset: int
        Offset of the deflated stream in ``src`` (:attr:`Part10Header.body_offset`)
    chunk_size: int, optional
        Bytes read and at most written per step
    max_size: int | None, optional
        Refuse to inflate more than this many bytes

    Returns
    -------
    int
        Number of bytes written to ``dst``

    Raises
    ------
    dicomslide.errors.InvalidDataError
        If the stream is corrupt or inflates to more than ``max_size`` bytes
    """
    src.seek(body_offset)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    written = 0

    def emit(block: bytes) -> None:
        nonlocal written
        written += len(block)
        if max_size is not None and written > max_size:
            raise InvalidDataError(f"deflated data set inflates to more than {max_size} bytes")
        dst.write(block)

    try:
        while not inflater.eof:
            chunk = src.read(chunk_size)
            if not chunk:
                break
            pending = inflater.decompress(chunk, chunk_size)
            emit(pending)
            # max_length keeps each output block bounded; drain what did not fit. Once the
            # stream has ended, leftover bytes (writers pad to even length) are not data.
            while inflater.unconsumed_tail and not inflater.eof:
                emit(inflater.decompress(inflater.unconsumed_tail, chunk_size))
        emit(inflater.flush())
    except zlib.error as exc:
        raise InvalidDataError(f"corrupt deflated data set: {exc}") from exc
    return written


def inflate_layout(
    src: BinaryIO, body_offset: int, *, max_size: int | None = None
) -> tuple[BinaryIO, int, Dataset, PixelDataElement | None]:
    """Inflate a deflated data set into a temporary file and read its layout attributes.

    Parameters
    ----------
    src: BinaryIO
        The deflated Part 10 file
    body_offset: int
        Offset of the deflated stream in ``src`` (:attr:`Part10Header.body_offset`)
    max_size: int | None, optional
        Refuse to inflate more than this many bytes

    Returns
    -------
    tuple[BinaryIO, int, pydicom.Dataset, PixelDataElement | None]
        The temporary file holding the Explicit VR Little Endian data set (the caller closes
        it), its size, the :data:`LAYOUT_TAGS` of the data set, and where its pixel data
        element is (``None`` if it has none)

    Raises
    ------
    dicomslide.errors.InvalidDataError
        If the stream is corrupt, inflates to more than ``max_size`` bytes or the inflated
        data set cannot be parsed
    """
    inflated: BinaryIO = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the caller
    try:
        size = inflate_body(src, inflated, body_offset, max_size=max_size)
        inflated.seek(0)  # also flushes, so that reads through the descriptor see it all
        dataset, pixel_data = read_body_header(
            inflated, implicit_vr=False, little_endian=True, specific_tags=LAYOUT_TAGS
        )
    except BaseException:
        inflated.close()
        raise
    return inflated, size, dataset, pixel_data


def split_items(raw: bytes, *, frame_number: int | None = None) -> list[memoryview]:
    """Split a run of encapsulated items into their values.

    Parameters
    ----------
    raw: bytes
        Bytes holding one or more complete items (8-byte header and value each)
    frame_number: int | None, optional
        Frame number to name in error messages

    Returns
    -------
    list[memoryview]
        Item values, in order (views into ``raw``)

    Raises
    ------
    dicomslide.errors.InvalidDataError
        If a tag is not (FFFE,E000) or an item does not end exactly at the end of ``raw``
    """
    where = f"frame {frame_number}: " if frame_number is not None else ""
    view = memoryview(raw)
    values: list[memoryview] = []
    pos = 0
    end = len(raw)
    while pos < end:
        if end - pos < 8:
            raise InvalidDataError(f"{where}item header truncated at byte {pos} of {end}")
        group, element, length = struct.unpack_from("<HHL", raw, pos)
        tag = group << 16 | element
        if tag != _ITEM:
            raise InvalidDataError(
                f"{where}expected item tag (FFFE,E000) at byte {pos}, found "
                f"({group:04X},{element:04X})"
            )
        if length > end - pos - 8:
            raise InvalidDataError(
                f"{where}item at byte {pos} has length {length} but only {end - pos - 8} "
                "bytes remain in the frame"
            )
        values.append(view[pos + 8 : pos + 8 + length])
        pos += 8 + length
    if not values:
        raise InvalidDataError(f"{where}no fragment")
    return values


def _read_exact(read_at: ReadAt, offset: int, size: int, file_size: int, what: str) -> bytes:
    if offset < 0 or offset + size > file_size:
        raise InvalidDataError(
            f"{what} at byte {offset} (+{size}) lies beyond the end of the file ({file_size} "
            "bytes); file truncated?"
        )
    data = read_at(offset, size)
    if len(data) != size:
        raise InvalidDataError(f"{what} at byte {offset}: read {len(data)} of {size} bytes")
    return data


def _read_item_header(
    read_at: ReadAt, offset: int, file_size: int, *, peek: int = 0
) -> tuple[int, int, bytes]:
    size = min(8 + peek, file_size - offset) if offset < file_size else 8
    data = _read_exact(read_at, offset, max(size, 8), file_size, "item header")
    group, element, length = struct.unpack_from("<HHL", data)
    return group << 16 | element, length, data[8:]


def _beyond_end(index: int, offset: int, length: int, file_size: int) -> InvalidDataError:
    return InvalidDataError(
        f"fragment {index + 1} at byte {offset} has length {length}, beyond the "
        f"end of the file ({file_size} bytes); file truncated?"
    )


def _check_fragment(tag: int, length: int, offset: int, index: int, file_size: int) -> None:
    """Raise unless the header at ``offset`` is a fragment item that fits in the file."""
    if tag != _ITEM:
        raise InvalidDataError(
            f"expected item tag (FFFE,E000) at byte {offset}, found "
            f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        )
    if length == _UNDEFINED_LENGTH or offset + 8 + length > file_size:
        raise _beyond_end(index, offset, length, file_size)


def scan_fragments(read_at: ReadAt, file_size: int, first_item_offset: int) -> list[FragmentInfo]:
    """Find every fragment item by reading item headers only, up to the sequence delimiter.

    Parameters
    ----------
    read_at: ReadAt
        Random access to the file
    file_size: int
        Size of the file in bytes
    first_item_offset: int
        Absolute offset of the first fragment item (just after the Basic Offset Table)

    Returns
    -------
    list[FragmentInfo]
        Fragments in file order

    Raises
    ------
    dicomslide.errors.InvalidDataError
        If a tag is neither an item nor the sequence delimiter, or an item runs past the end
        of the file, or the file ends before the sequence delimiter
    """
    fragments: list[FragmentInfo] = []
    pos = first_item_offset
    # Item headers are parsed from a window of the file while fragments are small: one read
    # per header costs a system call and several Python calls per frame (about 5 µs, half a
    # second for 100,000 frames). Large fragments are still read header by header (a window
    # would read the frames too).
    buffer, buffer_start, small = b"", 0, False
    unpack = _ITEM_HEADER.unpack_from
    while True:
        at = pos - buffer_start
        end = buffer_start + len(buffer)
        if at < 0 or pos + 8 > end or (pos + 8 + _PEEK > end and end < file_size):
            if pos + 8 > file_size:
                _read_exact(read_at, pos, 8, file_size, "item header")  # raises
            want = min(_WINDOW if small else 8 + _PEEK, file_size - pos)
            buffer = _read_exact(read_at, pos, want, file_size, "item header")
            buffer_start, at = pos, 0
        group, element, length = unpack(buffer, at)
        tag = group << 16 | element
        if tag == _SEQUENCE_DELIMITER:
            return fragments
        _check_fragment(tag, length, pos, len(fragments), file_size)
        fragments.append(FragmentInfo(pos, length, buffer[at + 8 : at + 8 + min(length, _PEEK)]))
        pos += 8 + length
        small = length < _SMALL_FRAGMENT


FragmentRun = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_] | None]
"""Offsets of item tags, value lengths and (when markers were asked for) whether each value
starts with one of them, of consecutive fragment items."""


def _starts_with(
    window: npt.NDArray[np.uint8],
    at: npt.NDArray[np.int64],
    sizes: npt.NDArray[np.int64],
    markers: tuple[bytes, ...],
) -> npt.NDArray[np.bool_]:
    """Whether the value at each offset of ``window`` (of each size) starts with a marker."""
    found = np.zeros(at.size, dtype=bool)
    last = window.size - 1
    for marker in markers:
        hit = (sizes >= len(marker)) & (at + len(marker) <= window.size)
        for k, byte in enumerate(marker):
            hit &= window[np.minimum(at + k, last)] == byte
        found |= hit
    return found


def fragment_runs(
    read_at: ReadAt,
    file_size: int,
    first_item_offset: int,
    markers: tuple[bytes, ...] | None = None,
) -> Iterator[FragmentRun]:
    """Fragment items in file order, a run at a time, up to the sequence delimiter.

    Walking 100,000 item headers one by one costs ~3 µs each in Python; while fragments are
    small, a window of the file is searched for item headers at once and the chain of
    items through it is proven (:func:`dicomslide._bytescan.item_chain`). Anything the
    proof does not cover (the sequence delimiter, an error, large fragments) is read header
    by header, exactly as :func:`scan_fragments` does. The walk goes only as far as the
    caller takes runs, so that locating the first frames reads only their part of the file.

    Parameters
    ----------
    read_at: ReadAt
        Random access to the file (called only while a run is being taken)
    file_size: int
        Size of the file in bytes
    first_item_offset: int
        Absolute offset of the first fragment item (just after the Basic Offset Table)
    markers: tuple[bytes, ...] | None, optional
        Codestream start markers to test each fragment's first bytes for

    Yields
    ------
    FragmentRun
        Consecutive items: offsets, lengths and (with ``markers``) which start a codestream

    Raises
    ------
    dicomslide.errors.InvalidDataError
        As :func:`scan_fragments` does, when the walk reaches the fault
    """
    count, pos, small = 0, first_item_offset, False
    while True:
        if small and file_size - pos >= 8:
            window = np.frombuffer(
                _read_exact(
                    read_at, pos, min(_SCAN_WINDOW, file_size - pos), file_size, "item header"
                ),
                dtype=np.uint8,
            )
            starts, sizes = item_chain(window, 0)
            if starts.size > 1 and int(starts[-1]) + 8 + _PEEK > window.size:
                # The first bytes of the last value may lie past the window: the next
                # window starts with it.
                starts, sizes = starts[:-1], sizes[:-1]
            if starts.size:
                marked = None
                if markers is not None:
                    marked = _starts_with(window, starts + 8, sizes, markers)
                starts = starts + pos
                ends = starts + 8 + sizes
                if int(ends[-1]) > file_size:  # ends ascend: only the last can be past
                    bad = int(np.argmax(ends > file_size))
                    raise _beyond_end(count + bad, int(starts[bad]), int(sizes[bad]), file_size)
                count += starts.size
                pos = int(ends[-1])
                small = int(sizes[-1]) < _SMALL_FRAGMENT
                yield starts, sizes, marked
                continue
        # One header the exact way: the delimiter, an error, or a large fragment.
        tag, length, head = _read_item_header(
            read_at, pos, file_size, peek=0 if markers is None else _PEEK
        )
        if tag == _SEQUENCE_DELIMITER:
            return
        _check_fragment(tag, length, pos, count, file_size)
        marked = None if markers is None else np.array([head[:length].startswith(markers)])
        yield np.array([pos], dtype=np.int64), np.array([length], dtype=np.int64), marked
        count += 1
        pos += 8 + length
        small = length < _SMALL_FRAGMENT


@borrowed_doc(scan_fragments, only=("Parameters", "Raises"))
def scan_fragment_spans(
    read_at: ReadAt, file_size: int, first_item_offset: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Offsets and lengths of every fragment item, as :func:`scan_fragments` finds them.

    The items are found a window at a time (see :func:`fragment_runs`).

    Returns
    -------
    tuple[numpy.ndarray, numpy.ndarray]
        Absolute offsets of the item tags and the item value lengths (int64), in file order
    """
    runs = list(fragment_runs(read_at, file_size, first_item_offset))
    if not runs:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate([r[0] for r in runs]), np.concatenate([r[1] for r in runs])


def build_native_layout(
    *,
    value_offset: int,
    value_length: int,
    number_of_frames: int,
    rows: int,
    columns: int,
    samples_per_pixel: int,
    bits_allocated: int,
    file_size: int,
) -> FrameLayout:
    """Lay out native (uncompressed) frames by arithmetic.

    Parameters
    ----------
    value_offset: int
        Absolute offset of the Pixel Data value
    value_length: int
        Pixel Data value length
    number_of_frames: int
        Number of Frames
    rows: int
        Rows
    columns: int
        Columns
    samples_per_pixel: int
        Samples per Pixel
    bits_allocated: int
        Bits Allocated (1 or a multiple of 8)
    file_size: int
        Size of the file (or inflated data set) in bytes

    Returns
    -------
    FrameLayout
        The layout

    Raises
    ------
    dicomslide.errors.InvalidDataError
        If the frames need more bytes than the value has, or the value runs past the file
    dicomslide.errors.UnsupportedError
        If Bits Allocated is neither 1 nor a multiple of 8
    """
    if min(rows, columns, samples_per_pixel, number_of_frames) < 1:
        raise InvalidDataError(
            f"invalid image size: Rows={rows}, Columns={columns}, "
            f"SamplesPerPixel={samples_per_pixel}, NumberOfFrames={number_of_frames}"
        )
    if bits_allocated != 1 and (bits_allocated < 8 or bits_allocated % 8):
        raise UnsupportedError(f"native pixel data with BitsAllocated={bits_allocated}")
    frame_bits = rows * columns * samples_per_pixel * bits_allocated
    needed = (number_of_frames * frame_bits + 7) // 8
    if needed > value_length:
        raise InvalidDataError(
            f"{number_of_frames} frames of {rows}x{columns}x{samples_per_pixel} at "
            f"{bits_allocated} bits need {needed} bytes but Pixel Data has {value_length}"
        )
    if value_offset + value_length > file_size:
        raise InvalidDataError(
            f"Pixel Data value ({value_length} bytes at byte {value_offset}) runs past the end "
            f"of the file ({file_size} bytes); file truncated?"
        )
    first_bits = np.arange(number_of_frames, dtype=np.int64) * frame_bits
    if bits_allocated == 1:
        starts = value_offset + first_bits // 8
        stops = value_offset + (first_bits + frame_bits + 7) // 8
        return FrameLayout(
            starts, stops, encapsulated=False, bit_offsets=first_bits % 8, frame_bits=frame_bits
        )
    starts = value_offset + first_bits // 8
    return FrameLayout(starts, starts + frame_bits // 8, encapsulated=False)


def _parse_extended_table(data: Any, name: str) -> npt.NDArray[np.int64]:
    raw = bytes(data)
    if len(raw) % 8:
        raise InvalidDataError(f"{name} has {len(raw)} bytes, not a multiple of 8")
    table = np.frombuffer(raw, dtype="<u8")
    if table.size and int(table.max()) >= 1 << 62:
        raise InvalidDataError(f"{name} holds an impossible value {int(table.max())}")
    return table.astype(np.int64)


def build_encapsulated_layout(
    read_at: ReadAt,
    *,
    file_size: int,
    value_offset: int,
    number_of_frames: int,
    transfer_syntax_uid: str,
    extended_offset_table: bytes | None = None,
    extended_offset_table_lengths: bytes | None = None,
) -> FrameLayout:
    """Locate the frames of encapsulated pixel data.

    Parameters
    ----------
    read_at: ReadAt
        Random access to the file
    file_size: int
        Size of the file in bytes
    value_offset: int
        Absolute offset of the Pixel Data value (the Basic Offset Table item)
    number_of_frames: int
        Number of Frames
    transfer_syntax_uid: str
        Transfer Syntax UID, to recognize frame starts when fragments and frames differ
    extended_offset_table: bytes | None, optional
        Value of Extended Offset Table (7FE0,0001)
    extended_offset_table_lengths: bytes | None, optional
        Value of Extended Offset Table Lengths (7FE0,0002)

    Returns
    -------
    FrameLayout
        The layout; each frame's span covers its items, headers included

    Raises
    ------
    dicomslide.errors.InvalidDataError
        If an offset table contradicts Number of Frames, points outside the file or is not
        increasing, an item tag is wrong, or frames cannot be told apart
    """
    if number_of_frames < 1:
        raise InvalidDataError(f"NumberOfFrames is {number_of_frames}")
    tag, bot_length, _ = _read_item_header(read_at, value_offset, file_size)
    if tag != _ITEM:
        raise InvalidDataError(
            f"expected Basic Offset Table item (FFFE,E000) at byte {value_offset}, found "
            f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        )
    if bot_length % 4 or value_offset + 8 + bot_length > file_size:
        raise InvalidDataError(
            f"Basic Offset Table length {bot_length} is not a multiple of 4 or runs past the "
            f"end of the file ({file_size} bytes)"
        )
    first_item = value_offset + 8 + bot_length

    if extended_offset_table is not None and extended_offset_table_lengths is not None:
        offsets = _parse_extended_table(extended_offset_table, "Extended Offset Table")
        lengths = _parse_extended_table(
            extended_offset_table_lengths, "Extended Offset Table Lengths"
        )
        if offsets.size != number_of_frames or lengths.size != number_of_frames:
            raise InvalidDataError(
                f"Extended Offset Table has {offsets.size} offsets and {lengths.size} lengths "
                f"but NumberOfFrames is {number_of_frames}"
            )
        starts = first_item + offsets
        # Items are padded to even length; a table may give the unpadded length.
        stops = starts + 8 + lengths + (lengths & 1)
        _check_spans(starts, stops, file_size, "Extended Offset Table")
        return FrameLayout(starts, stops, encapsulated=True)

    if bot_length:
        raw = _read_exact(read_at, value_offset + 8, bot_length, file_size, "Basic Offset Table")
        offsets = np.frombuffer(raw, dtype="<u4").astype(np.int64)
        if offsets.size != number_of_frames:
            raise InvalidDataError(
                f"Basic Offset Table has {offsets.size} entries but NumberOfFrames is "
                f"{number_of_frames}"
            )
        if offsets[0] != 0 or np.any(np.diff(offsets) <= 0):
            raise InvalidDataError(
                "Basic Offset Table does not start at 0 or is not strictly increasing"
            )
        starts = first_item + offsets
        last = scan_fragments(read_at, file_size, int(starts[-1]))
        if not last:
            raise InvalidDataError(f"frame {number_of_frames}: no fragment")
        end = last[-1].offset + 8 + last[-1].length
        stops = np.append(starts[1:], end).astype(np.int64)
        _check_spans(starts, stops, file_size, "Basic Offset Table")
        return FrameLayout(starts, stops, encapsulated=True)

    # One walk; each fragment's first bytes are tested as it goes, for frames of several.
    markers = FRAME_START_MARKERS.get(transfer_syntax_uid)
    runs = list(fragment_runs(read_at, file_size, first_item, markers))
    if not runs:
        raise InvalidDataError("encapsulated Pixel Data has no fragments")
    offsets = np.concatenate([run[0] for run in runs])
    lengths = np.concatenate([run[1] for run in runs])
    if offsets.size == number_of_frames:
        starts = offsets
    elif number_of_frames == 1:
        starts = offsets[:1]
    else:
        # Frames of several fragments: their first bytes tell where each frame starts.
        marked = None if markers is None else np.concatenate([run[2] for run in runs])
        starts = offsets[
            _frame_firsts(marked, offsets.size, number_of_frames, transfer_syntax_uid)
        ]
    end = int(offsets[-1] + 8 + lengths[-1])
    stops = np.append(starts[1:], end).astype(np.int64)
    return FrameLayout(starts, stops, encapsulated=True)


def _frame_firsts(
    marked: npt.NDArray[np.bool_] | None,
    fragments: int,
    number_of_frames: int,
    transfer_syntax_uid: str,
) -> npt.NDArray[np.intp]:
    """The index of the first fragment of each frame, from which fragments start a codestream.

    ``marked`` is None when the transfer syntax has no start markers (frames of several
    fragments cannot be told apart then).
    """
    if marked is None:
        raise InvalidDataError(
            f"{fragments} fragments for {number_of_frames} frames without an offset "
            f"table; cannot tell frames apart for transfer syntax {transfer_syntax_uid}"
        )
    firsts = np.flatnonzero(marked)
    if firsts.size != number_of_frames or firsts[0] != 0:
        raise InvalidDataError(
            f"{fragments} fragments, of which {firsts.size} start a codestream, for "
            f"{number_of_frames} frames without an offset table"
        )
    return firsts


def _check_spans(
    starts: npt.NDArray[np.int64], stops: npt.NDArray[np.int64], file_size: int, table: str
) -> None:
    if starts.size and (int(starts.min()) < 0 or int(stops.max()) > file_size):
        bad = int(np.argmax((starts < 0) | (stops > file_size)))
        raise InvalidDataError(
            f"frame {bad + 1}: {table} points to bytes {int(starts[bad])}-{int(stops[bad])}, "
            f"beyond the end of the file ({file_size} bytes); file truncated?"
        )


def build_frame_layout(
    dataset: Dataset,
    pixel_data: PixelDataElement,
    transfer_syntax_uid: str,
    read_at: ReadAt,
    file_size: int,
) -> FrameLayout:
    """Locate the frames of an instance from its header.

    Parameters
    ----------
    dataset: pydicom.Dataset
        Data set up to the pixel data, with at least the :data:`LAYOUT_TAGS`
    pixel_data: PixelDataElement
        Where the pixel data element is
    transfer_syntax_uid: str
        Transfer Syntax UID of the pixel data (for the deflated syntax: of the inflated
        data set, which is what ``read_at`` reads)
    read_at: ReadAt
        Random access to the file (or to the inflated data set)
    file_size: int
        Size of what ``read_at`` reads

    Returns
    -------
    FrameLayout
        The layout

    Raises
    ------
    dicomslide.errors.InvalidDataError
        If attributes are missing or contradict the pixel data
    dicomslide.errors.UnsupportedError
        For an unknown pixel data element or Bits Allocated value
    """
    if pixel_data.tag not in (PIXEL_DATA, _FLOAT_PIXEL_DATA, _DOUBLE_FLOAT_PIXEL_DATA):
        raise UnsupportedError(
            f"pixel data element ({pixel_data.tag >> 16:04X},"
            f"{pixel_data.tag & 0xFFFF:04X}) is not supported"
        )
    try:
        number_of_frames = int(dataset.get("NumberOfFrames") or 1)
        float_bits = FLOAT_BITS_ALLOCATED.get(pixel_data.tag)
        if float_bits is not None:
            return _build_float_layout(
                dataset, pixel_data, transfer_syntax_uid, number_of_frames, float_bits, file_size
            )
        if transfer_syntax_uid in NATIVE_TRANSFER_SYNTAXES:
            if pixel_data.length is None:
                raise InvalidDataError("native Pixel Data has undefined length")
            return build_native_layout(
                value_offset=pixel_data.value_offset,
                value_length=pixel_data.length,
                number_of_frames=number_of_frames,
                rows=int(dataset.Rows),
                columns=int(dataset.Columns),
                samples_per_pixel=int(dataset.get("SamplesPerPixel") or 1),
                bits_allocated=int(dataset.BitsAllocated),
                file_size=file_size,
            )
    except AttributeError as exc:
        raise InvalidDataError(f"missing image attribute: {exc}") from exc
    if pixel_data.length is not None:
        raise InvalidDataError(
            f"encapsulated Pixel Data (transfer syntax {transfer_syntax_uid}) has defined "
            f"length {pixel_data.length}"
        )
    eot = dataset.get("ExtendedOffsetTable")
    eot_lengths = dataset.get("ExtendedOffsetTableLengths")
    return build_encapsulated_layout(
        read_at,
        file_size=file_size,
        value_offset=pixel_data.value_offset,
        number_of_frames=number_of_frames,
        transfer_syntax_uid=transfer_syntax_uid,
        extended_offset_table=None if eot is None else bytes(eot),
        extended_offset_table_lengths=None if eot_lengths is None else bytes(eot_lengths),
    )


def _build_float_layout(
    dataset: Dataset,
    pixel_data: PixelDataElement,
    transfer_syntax_uid: str,
    number_of_frames: int,
    float_bits: int,
    file_size: int,
) -> FrameLayout:
    # Float Pixel Data (OF) and Double Float Pixel Data (OD) are never encapsulated: frames
    # lie back to back, rows * columns * samples * 4 (or 8) bytes each.
    tag = f"({pixel_data.tag >> 16:04X},{pixel_data.tag & 0xFFFF:04X})"
    if transfer_syntax_uid not in NATIVE_TRANSFER_SYNTAXES:
        raise InvalidDataError(
            f"pixel data element {tag} with the encapsulated transfer syntax {transfer_syntax_uid}"
        )
    if pixel_data.length is None:
        raise InvalidDataError(f"pixel data element {tag} has undefined length")
    declared = dataset.get("BitsAllocated")
    if declared is not None and int(declared) != float_bits:
        raise InvalidDataError(
            f"pixel data element {tag} holds {float_bits}-bit floats but BitsAllocated is "
            f"{int(declared)}"
        )
    return build_native_layout(
        value_offset=pixel_data.value_offset,
        value_length=pixel_data.length,
        number_of_frames=number_of_frames,
        rows=int(dataset.Rows),
        columns=int(dataset.Columns),
        samples_per_pixel=int(dataset.get("SamplesPerPixel") or 1),
        bits_allocated=float_bits,
        file_size=file_size,
    )


def _repack_bits(raw: bytes, bit_offset: int, nbits: int) -> bytes:
    # DICOM packs 1-bit pixels starting at the least significant bit of each byte.
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
    return np.packbits(bits[bit_offset : bit_offset + nbits], bitorder="little").tobytes()


def coalesce_spans(
    spans: Sequence[tuple[int, int, int]], *, max_gap: int = 0, max_size: int = 1 << 24
) -> list[tuple[int, int, list[tuple[int, int, int]]]]:
    """Merge byte ranges that (nearly) touch into fewer, larger reads.

    Parameters
    ----------
    spans: Sequence[tuple[int, int, int]]
        ``(key, offset, length)`` per range, sorted by offset
    max_gap: int, optional
        Merge ranges separated by at most this many bytes
    max_size: int, optional
        Do not grow a merged read beyond this many bytes (a single range may exceed it)

    Returns
    -------
    list[tuple[int, int, list[tuple[int, int, int]]]]
        ``(offset, length, members)`` per read, where members are the merged
        ``(key, offset, length)`` ranges
    """
    reads: list[tuple[int, int, list[tuple[int, int, int]]]] = []
    for key, offset, length in spans:
        if reads:
            start, size, members = reads[-1]
            end = start + size
            new_end = max(end, offset + length)
            if offset >= start and offset - end <= max_gap and new_end - start <= max_size:
                members.append((key, offset, length))
                reads[-1] = (start, new_end - start, members)
                continue
        reads.append((offset, length, [(key, offset, length)]))
    return reads

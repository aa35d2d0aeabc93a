"""Unit tests of the sans-IO Part 10 parsing in :mod:`dicomslide.sources.part10`."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from pydicom import Dataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from dicomslide.errors import InvalidDataError, UnsupportedError
from dicomslide.sources import part10
from tests.support.part10 import padded, set_pixel_data, wsi_dataset


def _jpeg_like(i: int, size: int = 40) -> bytes:
    """Bytes that start and end like a JPEG codestream; odd sizes exercise padding."""
    body = bytes((i * 7 + k) % 251 for k in range(size))
    return b"\xff\xd8" + body + b"\xff\xd9"


def _part10_bytes(
    transfer_syntax: str,
    pixel_data: bytes,
    *,
    frames: int,
    rows: int = 4,
    columns: int = 4,
    spp: int = 1,
    bits: int = 8,
    extended: tuple[bytes, bytes] | None = None,
) -> bytes:
    ds = wsi_dataset(transfer_syntax, frames, rows, columns, spp, bits)
    encapsulated = transfer_syntax not in part10.NATIVE_TRANSFER_SYNTAXES
    set_pixel_data(ds, pixel_data, "OB" if encapsulated or bits == 1 else "OW", extended)
    # A sequence with an icon that has its own Pixel Data must not be mistaken for the image's.
    icon = Dataset()
    icon.Rows = 1
    icon.Columns = 2
    icon.BitsAllocated = 8
    icon.add_new(0x7FE00010, "OB", b"\x01\x02")
    ds.IconImageSequence = [icon]
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _reader(data: bytes, log: list[tuple[int, int]] | None = None) -> part10.ReadAt:
    def read_at(offset: int, size: int) -> bytes:
        if log is not None:
            log.append((offset, size))
        return data[offset : offset + size]

    return read_at


def _layout_from_file(data: bytes) -> tuple[part10.Part10Header, part10.FrameLayout]:
    header = part10.read_part10_header(io.BytesIO(data), specific_tags=part10.LAYOUT_TAGS)
    assert header.dataset is not None
    assert header.pixel_data is not None
    layout = part10.build_frame_layout(
        header.dataset, header.pixel_data, header.transfer_syntax_uid, _reader(data), len(data)
    )
    return header, layout


def _frames(data: bytes, layout: part10.FrameLayout) -> list[bytes]:
    out = []
    for n in range(1, layout.number_of_frames + 1):
        offset, length = layout.span(n)
        out.append(layout.extract(n, data[offset : offset + length]))
    return out


# ------------------------------------------------------------------------------------------
# Element headers
# ------------------------------------------------------------------------------------------


def test_parse_element_header_variants() -> None:
    implicit = struct.pack("<HHL", 0x7FE0, 0x0010, 100)
    header = part10.parse_element_header(implicit, implicit_vr=True)
    assert (header.tag, header.vr, header.length, header.header_length) == (
        0x7FE00010,
        None,
        100,
        8,
    )
    long_vr = struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
    header = part10.parse_element_header(long_vr, implicit_vr=False)
    assert header.vr == "OB"
    assert header.undefined_length
    assert header.header_length == 12
    short_vr = struct.pack("<HH2sH", 0x0028, 0x0010, b"US", 2)
    header = part10.parse_element_header(short_vr, implicit_vr=False)
    assert (header.tag, header.vr, header.length, header.header_length) == (0x00280010, "US", 2, 8)
    big = struct.pack(">HH2sHL", 0x7FE0, 0x0010, b"OW", 0, 32)
    header = part10.parse_element_header(big, implicit_vr=False, little_endian=False)
    assert (header.tag, header.length, header.header_length) == (0x7FE00010, 32, 12)
    with pytest.raises(InvalidDataError):
        part10.parse_element_header(b"\x00" * 7, implicit_vr=True)
    with pytest.raises(InvalidDataError):
        part10.parse_element_header(long_vr[:10], implicit_vr=False)


# ------------------------------------------------------------------------------------------
# Header location on real files
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_native_pixel_data_offset(syntax: str) -> None:
    frames = [bytes(range(i, i + 16)) for i in range(3)]
    data = _part10_bytes(syntax, b"".join(frames), frames=3)
    header, layout = _layout_from_file(data)
    assert header.pixel_data is not None
    assert header.pixel_data.length == 48
    assert data[header.pixel_data.value_offset : header.pixel_data.value_offset + 48] == b"".join(
        frames
    )
    # The icon's nested Pixel Data is before the image's; the image's must be found.
    assert header.pixel_data.value_offset > data.index(b"\x01\x02")
    assert _frames(data, layout) == frames


def test_header_without_dicm_prefix_is_not_dicom() -> None:
    with pytest.raises(part10.NotDicomError):
        part10.read_part10_header(io.BytesIO(b"\x00" * 200))
    assert not part10.is_part10(b"\x00" * 131)


def test_header_without_pixel_data() -> None:
    data = _part10_bytes(ExplicitVRLittleEndian, b"", frames=1)
    cut = data[: data.rindex(b"\xe0\x7f\x10\x00")]
    header = part10.read_part10_header(io.BytesIO(cut))
    assert header.pixel_data is None


def test_big_endian_native_is_returned_as_stored() -> None:
    values = np.arange(2 * 16, dtype=">u2")
    data = _part10_bytes(ExplicitVRBigEndian, values.tobytes(), frames=2, bits=16)
    header, layout = _layout_from_file(data)
    assert header.transfer_syntax_uid == ExplicitVRBigEndian
    assert _frames(data, layout) == [values[:16].tobytes(), values[16:].tobytes()]


@pytest.mark.parametrize("has_bot", [True, False])
@pytest.mark.parametrize("sizes", [[40, 41, 42], [41]])
def test_encapsulated_one_fragment_per_frame(has_bot: bool, sizes: list[int]) -> None:
    frames = [_jpeg_like(i, size) for i, size in enumerate(sizes)]
    data = _part10_bytes(
        JPEGBaseline8Bit, encapsulate(frames, has_bot=has_bot), frames=len(frames)
    )
    _, layout = _layout_from_file(data)
    assert _frames(data, layout) == [padded(f) for f in frames]


def test_extended_offset_table() -> None:
    frames = [_jpeg_like(i, 40 + i) for i in range(5)]
    pixel_data, offsets, lengths = encapsulate_extended(frames)
    data = _part10_bytes(JPEGBaseline8Bit, pixel_data, frames=5, extended=(offsets, lengths))
    header, layout = _layout_from_file(data)
    assert header.dataset is not None
    assert "ExtendedOffsetTable" in header.dataset
    assert _frames(data, layout) == [padded(f) for f in frames]


def test_extended_offset_table_is_used_without_scanning() -> None:
    frames = [_jpeg_like(i, 40) for i in range(50)]
    pixel_data, offsets, lengths = encapsulate_extended(frames)
    data = _part10_bytes(JPEGBaseline8Bit, pixel_data, frames=50, extended=(offsets, lengths))
    header = part10.read_part10_header(io.BytesIO(data), specific_tags=part10.LAYOUT_TAGS)
    assert header.dataset is not None
    assert header.pixel_data is not None
    log: list[tuple[int, int]] = []
    part10.build_frame_layout(
        header.dataset, header.pixel_data, JPEGBaseline8Bit, _reader(data, log), len(data)
    )
    assert len(log) == 1  # only the Basic Offset Table item header


@pytest.mark.parametrize("has_bot", [True, False])
def test_two_fragments_per_frame(has_bot: bool) -> None:
    frames = [_jpeg_like(i, 60 + 2 * i) for i in range(4)]
    pixel_data = encapsulate(frames, fragments_per_frame=2, has_bot=has_bot)
    data = _part10_bytes(JPEGBaseline8Bit, pixel_data, frames=4)
    _, layout = _layout_from_file(data)
    assert _frames(data, layout) == frames


@pytest.mark.parametrize(
    ("fragment_size", "max_read", "reads"), [(20_000, 20, 21), (2000, 1 << 18, 2)]
)
def test_fragment_scan_reads_item_headers_or_windows(
    fragment_size: int, max_read: int, reads: int
) -> None:
    # Large fragments: item headers only (20 items and the sequence delimiter). Small ones:
    # after the first header, a window at a time (here the rest in one read), not a read per
    # frame.
    frames = [_jpeg_like(i, fragment_size) for i in range(20)]
    data = _part10_bytes(JPEGBaseline8Bit, encapsulate(frames, has_bot=False), frames=20)
    header = part10.read_part10_header(io.BytesIO(data))
    assert header.pixel_data is not None
    log: list[tuple[int, int]] = []
    fragments = part10.scan_fragments(
        _reader(data, log), len(data), header.pixel_data.value_offset + 8
    )
    assert [f.length for f in fragments] == [len(f) + len(f) % 2 for f in frames]
    assert max(size for _, size in log) <= max_read
    assert len(log) == reads


def test_multiple_fragments_without_offsets_for_rle_is_invalid() -> None:
    frames = [bytes(64) for _ in range(2)]
    data = _part10_bytes(
        RLELossless, encapsulate(frames, fragments_per_frame=2, has_bot=False), frames=2
    )
    with pytest.raises(InvalidDataError, match="cannot tell frames apart"):
        _layout_from_file(data)


def test_single_frame_many_fragments() -> None:
    frame = b"\x00\x01" * 50
    data = _part10_bytes(RLELossless, encapsulate([frame], fragments_per_frame=3), frames=1)
    _, layout = _layout_from_file(data)
    assert _frames(data, layout) == [frame]


def test_j2k_frame_starts() -> None:
    frames = [b"\xff\x4f\xff\x51" + bytes(range(i, i + 30)) for i in range(3)]
    data = _part10_bytes(
        JPEG2000Lossless, encapsulate(frames, fragments_per_frame=3, has_bot=False), frames=3
    )
    _, layout = _layout_from_file(data)
    assert _frames(data, layout) == frames


# ------------------------------------------------------------------------------------------
# Contradictions
# ------------------------------------------------------------------------------------------


def _bot(offsets: list[int]) -> bytes:
    return struct.pack("<HHL", 0xFFFE, 0xE000, 4 * len(offsets)) + struct.pack(
        f"<{len(offsets)}L", *offsets
    )


def _item(value: bytes, tag: tuple[int, int] = (0xFFFE, 0xE000)) -> bytes:
    return struct.pack("<HHL", *tag, len(value)) + value


_DELIMITER = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)


def _layout(
    value: bytes,
    frames: int,
    syntax: str = JPEGBaseline8Bit,
    eot: tuple[list[int], list[int]] | None = None,
) -> part10.FrameLayout:
    """The layout of an encapsulated Pixel Data ``value``; ``eot`` is (offsets, lengths)."""
    tables: dict[str, bytes] = {}
    if eot is not None:
        offsets, lengths = eot
        tables["extended_offset_table"] = struct.pack(f"<{len(offsets)}Q", *offsets)
        tables["extended_offset_table_lengths"] = struct.pack(f"<{len(lengths)}Q", *lengths)
    return part10.build_encapsulated_layout(
        _reader(value),
        file_size=len(value),
        value_offset=0,
        number_of_frames=frames,
        transfer_syntax_uid=syntax,
        **tables,
    )


def test_bot_count_contradicts_number_of_frames() -> None:
    value = _bot([0, 16]) + _item(b"\xff\xd8" + bytes(6)) + _item(b"\xff\xd8" + bytes(6))
    with pytest.raises(InvalidDataError, match="2 entries but NumberOfFrames is 3"):
        _layout(value + _DELIMITER, 3)


def test_bot_not_increasing() -> None:
    value = _bot([0, 0]) + _item(bytes(8)) + _item(bytes(8)) + _DELIMITER
    with pytest.raises(InvalidDataError, match="strictly increasing"):
        _layout(value, 2)


def test_bot_pointing_beyond_file() -> None:
    value = _bot([0, 4000]) + _item(bytes(8)) + _DELIMITER
    with pytest.raises(InvalidDataError, match="beyond the end of the file"):
        _layout(value, 2)


def test_wrong_item_tag() -> None:
    value = _bot([]) + _item(bytes(8)) + _item(bytes(8), (0x0008, 0x0018)) + _DELIMITER
    with pytest.raises(InvalidDataError, match=r"\(0008,0018\)"):
        _layout(value, 2)


def test_truncated_fragment() -> None:
    value = _bot([]) + _item(bytes(8)) + _item(bytes(100))[:50]
    with pytest.raises(InvalidDataError, match="truncated"):
        _layout(value, 2)


def test_missing_delimiter_is_truncation() -> None:
    value = _bot([]) + _item(bytes(8)) + _item(bytes(8))
    with pytest.raises(InvalidDataError, match="beyond the end"):
        _layout(value, 2)


def test_missing_bot_item() -> None:
    with pytest.raises(InvalidDataError, match="Basic Offset Table item"):
        _layout(_item(bytes(8), (0x0008, 0x0016)) + _DELIMITER, 1)


def test_eot_count_contradicts_number_of_frames() -> None:
    value = _bot([]) + _item(bytes(8)) + _DELIMITER
    with pytest.raises(InvalidDataError, match="Extended Offset Table has 1"):
        _layout(value, 2, eot=([0], [8]))


def test_eot_item_that_disagrees_with_lengths_is_invalid_when_read() -> None:
    value = _bot([]) + _item(bytes(8)) + _item(bytes(8)) + _DELIMITER
    layout = _layout(value, 2, eot=([0, 16], [4, 8]))
    offset, length = layout.span(1)
    with pytest.raises(InvalidDataError, match="frame 1"):
        layout.extract(1, value[offset : offset + length])
    offset, length = layout.span(2)
    assert layout.extract(2, value[offset : offset + length]) == bytes(8)


def test_jpeg_marker_count_contradicts_frames() -> None:
    value = (
        _bot([]) + _item(b"\xff\xd8" + bytes(6)) + _item(bytes(8)) + _item(bytes(8)) + _DELIMITER
    )
    with pytest.raises(InvalidDataError, match="1 start a codestream, for 2 frames"):
        _layout(value, 2)


def test_extract_checks_length() -> None:
    value = _bot([]) + _item(bytes(8)) + _DELIMITER
    layout = _layout(value, 1)
    with pytest.raises(InvalidDataError, match="read 3 bytes"):
        layout.extract(1, b"abc")
    with pytest.raises(IndexError):
        layout.span(2)


def test_split_items() -> None:
    values = part10.split_items(_item(b"ab") + _item(b"cdef"))
    assert [bytes(v) for v in values] == [b"ab", b"cdef"]
    with pytest.raises(InvalidDataError, match="frame 7"):
        part10.split_items(_item(b"abcd")[:-1], frame_number=7)
    with pytest.raises(InvalidDataError, match="no fragment"):
        part10.split_items(b"")


# ------------------------------------------------------------------------------------------
# Native layouts
# ------------------------------------------------------------------------------------------


# A native layout of 3 frames of 4 x 4 one-byte pixels (48 bytes) at the file's start.
_NATIVE = {
    "value_offset": 0,
    "value_length": 48,
    "number_of_frames": 3,
    "rows": 4,
    "columns": 4,
    "samples_per_pixel": 1,
    "bits_allocated": 8,
    "file_size": 1000,
}


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"value_length": 47}, InvalidDataError, "need 48 bytes but Pixel Data has 47"),
        ({"value_offset": 10, "file_size": 50}, InvalidDataError, "truncated"),
        ({"number_of_frames": 1, "bits_allocated": 12, "file_size": 50}, UnsupportedError, "=12"),
    ],
)
def test_native_layouts_that_cannot_be_read(
    change: dict[str, int], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        part10.build_native_layout(**{**_NATIVE, **change})


@pytest.mark.parametrize(("rows", "columns", "frames"), [(3, 5, 7), (1, 1, 9), (8, 8, 2)])
def test_one_bit_frames_are_repacked(rows: int, columns: int, frames: int) -> None:
    rng = np.random.default_rng(rows * columns)
    bits = rng.integers(0, 2, size=(frames, rows * columns), dtype=np.uint8)
    packed = np.packbits(bits.ravel(), bitorder="little").tobytes()
    packed += b"\x00" * (len(packed) % 2)
    data = _part10_bytes(
        ExplicitVRLittleEndian, packed, frames=frames, rows=rows, columns=columns, bits=1
    )
    _, layout = _layout_from_file(data)
    got = _frames(data, layout)
    for i, frame in enumerate(got):
        assert len(frame) == (rows * columns + 7) // 8
        unpacked = np.unpackbits(np.frombuffer(frame, np.uint8), bitorder="little")
        np.testing.assert_array_equal(unpacked[: rows * columns], bits[i])
        assert not unpacked[rows * columns :].any()


# ------------------------------------------------------------------------------------------
# Deflate and helpers
# ------------------------------------------------------------------------------------------


def test_inflate_body_round_trip() -> None:
    frames = [bytes([i]) * 16 for i in range(4)]
    data = _part10_bytes(DeflatedExplicitVRLittleEndian, b"".join(frames), frames=4)
    header = part10.read_part10_header(io.BytesIO(data))
    assert header.dataset is None
    assert header.pixel_data is None
    inflated = io.BytesIO()
    size = part10.inflate_body(io.BytesIO(data), inflated, header.body_offset, chunk_size=64)
    assert size == len(inflated.getvalue())
    inflated.seek(0)
    ds, pixel_data = part10.read_body_header(inflated, implicit_vr=False, little_endian=True)
    assert pixel_data is not None
    body = inflated.getvalue()
    layout = part10.build_frame_layout(
        ds, pixel_data, ExplicitVRLittleEndian, _reader(body), len(body)
    )
    assert _frames(body, layout) == frames
    with pytest.raises(InvalidDataError, match="more than 10 bytes"):
        part10.inflate_body(io.BytesIO(data), io.BytesIO(), header.body_offset, max_size=10)


def test_inflate_corrupt_stream() -> None:
    compressed = zlib.compress(b"x" * 100)[2:-4]
    broken = b"\x00" * 10 + compressed[:5] + b"\xff" * 20
    with pytest.raises(InvalidDataError, match="corrupt"):
        part10.inflate_body(io.BytesIO(broken), io.BytesIO(), 10)


def test_coalesce_spans() -> None:
    spans = [(1, 0, 10), (2, 10, 10), (3, 30, 5), (4, 100, 10)]
    reads = part10.coalesce_spans(spans, max_gap=10, max_size=1000)
    assert [(o, n, [m[0] for m in ms]) for o, n, ms in reads] == [
        (0, 35, [1, 2, 3]),
        (100, 10, [4]),
    ]
    reads = part10.coalesce_spans(spans, max_gap=0, max_size=15)
    assert [[m[0] for m in ms] for _, _, ms in reads] == [[1], [2], [3], [4]]


def test_eot_with_unpadded_odd_lengths() -> None:
    frames = [b"\xff\xd8abc", b"\xff\xd8defgh"]
    value = _bot([]) + _item(frames[0] + b"\x00") + _item(frames[1] + b"\x00") + _DELIMITER
    layout = _layout(value, 2, eot=([0, 14], [5, 7]))
    assert _frames(value, layout) == [f + b"\x00" for f in frames]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("size", [64, 128, 640, 1000])
def test_inflate_ignores_padding_after_the_stream(size: int) -> None:
    body = bytes(range(256)) * 4
    body = body[:size]
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = packer.compress(body) + packer.flush() + b"\x00"
    out = io.BytesIO()
    assert part10.inflate_body(io.BytesIO(b"HDR" + deflated), out, 3, chunk_size=64) == size
    assert out.getvalue() == body

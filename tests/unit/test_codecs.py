"""Tests of dicomslide.codecs with frames made by real encoders.

Test images encode the pixel position in their values, so a transposed, shifted, planar
instead of interleaved or colour-converted-twice result is caught. Lossless syntaxes must
decode exactly, lossy ones within a small mean error; a wrong colour conversion produces
errors of 30 and more.
"""

from __future__ import annotations

import ast
import io
import json
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image

from dicomslide import codecs
from dicomslide.codecs import PixelFormat, decode_frame, sniff_transfer_syntax
from dicomslide.errors import (
    DecodeError,
    InvalidDataError,
    MissingCodecError,
    RegionError,
    UnsupportedError,
)
from tests.support.processes import run_python

imagecodecs = pytest.importorskip("imagecodecs")

IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_FRAME = "1.2.840.10008.1.2.8.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR = "1.2.840.10008.1.2.4.81"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
J2K = "1.2.840.10008.1.2.4.91"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
HTJ2K = "1.2.840.10008.1.2.4.203"
RLE = "1.2.840.10008.1.2.5"

SIZE = 256
ROWS, COLS = np.mgrid[0:SIZE, 0:SIZE]

RGB8 = np.stack([COLS % 256, ROWS % 256, ((ROWS + COLS) // 2) % 256], axis=-1).astype(np.uint8)
MONO8 = ((ROWS * 3 + COLS) % 256).astype(np.uint8)
MONO16 = (ROWS * 256 + COLS).astype(np.uint16)
RED = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
RED[..., 0] = 255

FMT_RGB = PixelFormat(SIZE, SIZE, 3, 8, 8, 0, "RGB")
FMT_YBR422 = PixelFormat(SIZE, SIZE, 3, 8, 8, 0, "YBR_FULL_422")
FMT_MONO8 = PixelFormat(SIZE, SIZE, 1, 8, 8, 0, "MONOCHROME2")
FMT_MONO16 = PixelFormat(SIZE, SIZE, 1, 16, 16, 0, "MONOCHROME2")

UNRAISABLE_OK = pytest.mark.filterwarnings(
    # OpenJPH reports some errors through an unraisable exception before raising its own.
    "ignore::pytest.PytestUnraisableExceptionWarning"
)


# ---------------------------------------------------------------------------------------------
# Helpers


def rgb_to_ybr(rgb: np.ndarray) -> np.ndarray:
    """Forward YCbCr (ITU-R BT.601 full range) transform, independent of the decoder's."""
    f = rgb.astype(np.float64)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
    return np.clip(np.rint(np.stack([y, cb, cr], axis=-1)), 0, 255).astype(np.uint8)


def pillow_jpeg(arr: np.ndarray, **options: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each segment before the first scan."""
    out = []
    pos = 2
    while True:
        marker = data[pos + 1]
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        out.append((marker, pos, pos + 2 + length))
        if marker == 0xDA:
            return out
        pos += 2 + length


def strip_app_markers(data: bytes) -> bytes:
    out = bytearray(data[:2])
    for marker, start, end in jpeg_segments(data):
        if not 0xE0 <= marker <= 0xEF:
            out += data[start:end]
    out += data[jpeg_segments(data)[-1][2] :]
    return bytes(out)


def set_component_ids(data: bytes, ids: tuple[int, int, int]) -> bytes:
    out = bytearray(data)
    for marker, start, _ in jpeg_segments(data):
        if marker in (0xC0, 0xC1, 0xC3):
            for k in range(out[start + 9]):
                out[start + 10 + 3 * k] = ids[k]
        if marker == 0xDA:
            for k in range(out[start + 4]):
                out[start + 5 + 2 * k] = ids[k]
    return bytes(out)


def rle_encode(arr: np.ndarray, fmt: PixelFormat) -> bytes:
    from pydicom.pixels.encoders.base import RLELosslessEncoder

    encoded: bytes = RLELosslessEncoder.encode(
        arr,
        encoding_plugin="pydicom",
        **codecs._pydicom_frame_keywords(fmt),
    )
    return encoded


def as3d(arr: np.ndarray) -> np.ndarray:
    return arr if arr.ndim == 3 else arr[:, :, np.newaxis]


def mean_error(decoded: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(decoded.astype(np.int64) - as3d(expected).astype(np.int64)).mean())


def assert_fresh(decoded: np.ndarray, fmt: PixelFormat) -> None:
    assert decoded.shape == (fmt.rows, fmt.columns, fmt.samples_per_pixel)
    assert decoded.dtype == fmt.dtype
    assert decoded.flags.c_contiguous
    assert decoded.flags.writeable


def decoders_of(uid: str) -> list[Any]:
    names = codecs.decoder_names(uid)
    assert names, f"no decoder installed for {uid}"
    return [pytest.param(name, id=name) for name in names]


def only(monkeypatch: pytest.MonkeyPatch, uid: str, name: str) -> None:
    """Leave one decoder registered for uid, to test each library through decode_frame."""
    chosen = tuple(d for d in codecs._DECODERS[uid] if d.name == name)
    assert chosen
    monkeypatch.setitem(codecs._DECODERS, uid, chosen)


# ---------------------------------------------------------------------------------------------
# PixelFormat


@pytest.mark.parametrize(
    ("bits_allocated", "pixel_representation", "is_float", "expected"),
    [
        (1, 0, False, np.uint8),
        (8, 0, False, np.uint8),
        (8, 1, False, np.int8),
        (16, 0, False, np.uint16),
        (16, 1, False, np.int16),
        (32, 0, False, np.uint32),
        (32, 1, False, np.int32),
        (32, 0, True, np.float32),
        (64, 0, True, np.float64),
    ],
)
def test_pixel_format_dtype(
    bits_allocated: int, pixel_representation: int, is_float: bool, expected: type
) -> None:
    fmt = PixelFormat(
        4, 4, 1, bits_allocated, 1 if bits_allocated == 1 else bits_allocated,
        pixel_representation, "MONOCHROME2", is_float=is_float,
    )  # fmt: skip
    assert fmt.dtype == np.dtype(expected)


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        (PixelFormat(3, 5, 1, 1, 1, 0, "MONOCHROME2"), 2),  # 15 bits
        (PixelFormat(4, 4, 1, 1, 1, 0, "MONOCHROME2"), 2),
        (PixelFormat(10, 20, 3, 8, 8, 0, "RGB"), 600),
        (PixelFormat(10, 20, 1, 16, 12, 0, "MONOCHROME2"), 400),
        (PixelFormat(10, 20, 3, 8, 8, 0, "YBR_FULL_422"), 400),
        (PixelFormat(10, 20, 1, 32, 32, 0, "MONOCHROME2", is_float=True), 800),
    ],
)
def test_pixel_format_frame_nbytes(fmt: PixelFormat, expected: int) -> None:
    assert fmt.frame_nbytes == expected


def _dataset(**attributes: object) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize(
    ("attributes", "expected", "dtype"),
    [
        pytest.param(
            {
                "Rows": 10,
                "Columns": 20,
                "SamplesPerPixel": 3,
                "BitsAllocated": 8,
                "PhotometricInterpretation": "YBR_FULL_422 ",
            },
            PixelFormat(10, 20, 3, 8, 8, 0, "YBR_FULL_422", 0),
            np.uint8,
            id="defaults",
        ),
        pytest.param(
            {
                "Rows": 7,
                "Columns": 9,
                "SamplesPerPixel": 1,
                "BitsAllocated": 16,
                "BitsStored": 12,
                "PixelRepresentation": 1,
                "PlanarConfiguration": 1,
                "PhotometricInterpretation": "MONOCHROME1",
            },
            PixelFormat(7, 9, 1, 16, 12, 1, "MONOCHROME1", 1),
            np.int16,
            id="reads_all",
        ),
    ],
)
def test_pixel_format_from_dataset(
    attributes: dict[str, object], expected: PixelFormat, dtype: type
) -> None:
    fmt = PixelFormat.from_dataset(_dataset(**attributes))
    assert fmt == expected
    assert fmt.dtype == dtype


def test_pixel_format_from_dataset_missing_attribute() -> None:
    with pytest.raises(InvalidDataError, match="Columns"):
        PixelFormat.from_dataset(_dataset(Rows=7, SamplesPerPixel=1))


@pytest.mark.parametrize(
    "args",
    [
        (0, 4, 1, 8, 8, 0, "MONOCHROME2"),
        (4, 4, 1, 12, 12, 0, "MONOCHROME2"),
        (4, 4, 1, 8, 9, 0, "MONOCHROME2"),
        (4, 4, 1, 8, 8, 2, "MONOCHROME2"),
    ],
)
def test_pixel_format_rejects_invalid(args: tuple[Any, ...]) -> None:
    with pytest.raises(InvalidDataError):
        PixelFormat(*args)


# ---------------------------------------------------------------------------------------------
# Native


@pytest.mark.parametrize("uid", [IMPLICIT, EXPLICIT, DEFLATED])
@pytest.mark.parametrize(
    ("image", "fmt"), [(RGB8, FMT_RGB), (MONO8, FMT_MONO8), (MONO16, FMT_MONO16)]
)
def test_native_little_endian(uid: str, image: np.ndarray, fmt: PixelFormat) -> None:
    data = image.astype(image.dtype.newbyteorder("<")).tobytes()
    decoded = decode_frame(data, uid, fmt)
    assert_fresh(decoded, fmt)
    np.testing.assert_array_equal(decoded, as3d(image))


def test_native_big_endian_swaps_bytes() -> None:
    data = MONO16.astype(">u2").tobytes()
    decoded = decode_frame(data, BIG_ENDIAN, FMT_MONO16)
    np.testing.assert_array_equal(decoded[:, :, 0], MONO16)
    assert decoded.dtype == np.dtype("uint16")


def test_native_planar_configuration_1() -> None:
    fmt = PixelFormat(SIZE, SIZE, 3, 8, 8, 0, "RGB", planar_configuration=1)
    data = np.ascontiguousarray(RGB8.transpose(2, 0, 1)).tobytes()
    np.testing.assert_array_equal(decode_frame(data, EXPLICIT, fmt), RGB8)


def test_native_signed_bits_stored_sign_extended() -> None:
    fmt = PixelFormat(1, 4, 1, 16, 12, 1, "MONOCHROME2")
    # 12-bit two's complement values with garbage in the four unused high bits
    stored = np.array([0x0FFF, 0xF800, 0x07FF, 0xA001], dtype="<u2")
    decoded = decode_frame(stored.tobytes(), EXPLICIT, fmt)
    assert decoded.ravel().tolist() == [-1, -2048, 2047, 1]


def test_native_unsigned_bits_stored_masked() -> None:
    fmt = PixelFormat(1, 3, 1, 16, 12, 0, "MONOCHROME2")
    stored = np.array([0xF123, 0x0FFF, 0x1000], dtype="<u2")
    decoded = decode_frame(stored.tobytes(), EXPLICIT, fmt)
    assert decoded.ravel().tolist() == [0x123, 0xFFF, 0]


def test_native_ybr_full_converted_to_rgb() -> None:
    fmt = PixelFormat(SIZE, SIZE, 3, 8, 8, 0, "YBR_FULL")
    decoded = decode_frame(rgb_to_ybr(RGB8).tobytes(), EXPLICIT, fmt)
    assert np.abs(decoded.astype(int) - RGB8).max() <= 2


def test_native_ybr_full_422_upsampled_and_converted() -> None:
    # Use an image that is constant over horizontal pixel pairs in chroma.
    ybr = rgb_to_ybr(RGB8)
    pairs = np.empty((SIZE, SIZE // 2, 4), dtype=np.uint8)
    pairs[..., 0] = ybr[:, 0::2, 0]
    pairs[..., 1] = ybr[:, 1::2, 0]
    pairs[..., 2] = ybr[:, 0::2, 1]
    pairs[..., 3] = ybr[:, 0::2, 2]
    decoded = decode_frame(pairs.tobytes(), EXPLICIT, FMT_YBR422)
    expected_ybr = ybr.copy()
    expected_ybr[:, 1::2, 1:] = ybr[:, 0::2, 1:]
    reference = decode_frame(expected_ybr.tobytes(), EXPLICIT, PixelFormat(
        SIZE, SIZE, 3, 8, 8, 0, "YBR_FULL"))  # fmt: skip
    np.testing.assert_array_equal(decoded, reference)
    assert mean_error(decoded, RGB8) < 2


def test_native_float() -> None:
    fmt = PixelFormat(2, 3, 1, 32, 32, 0, "MONOCHROME2", is_float=True)
    values = np.array([[0.5, -1.25, 3e9], [np.inf, 0.0, -0.0]], dtype="<f4")
    decoded = decode_frame(values.tobytes(), EXPLICIT, fmt)
    np.testing.assert_array_equal(decoded[:, :, 0], values)


@pytest.mark.parametrize("delta", [-1, 2, 1])
def test_native_wrong_length(delta: int) -> None:
    data = bytes(FMT_MONO8.frame_nbytes + delta)
    with pytest.raises(DecodeError, match="bytes") as info:
        decode_frame(data, EXPLICIT, FMT_MONO8, sop_instance_uid="1.2.3", frame_number=7)
    assert info.value.sop_instance_uid == "1.2.3"
    assert info.value.frame_number == 7
    assert "1.2.3" in str(info.value)


def test_native_odd_length_padding_accepted() -> None:
    fmt = PixelFormat(3, 3, 1, 8, 8, 0, "MONOCHROME2")
    decoded = decode_frame(bytes(range(9)) + b"\x00", EXPLICIT, fmt)
    assert decoded.ravel().tolist() == list(range(9))


def test_native_result_is_owned_copy() -> None:
    buffer = bytearray(RGB8.tobytes())
    first = decode_frame(buffer, EXPLICIT, FMT_RGB)
    second = decode_frame(buffer, EXPLICIT, FMT_RGB)
    first[:] = 0
    buffer[:] = bytes(len(buffer))
    np.testing.assert_array_equal(second, RGB8)
    assert not np.shares_memory(first, second)


def test_deflated_image_frame() -> None:
    raw = MONO16.astype("<u2").tobytes()
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    data = compressor.compress(raw) + compressor.flush()
    np.testing.assert_array_equal(decode_frame(data, DEFLATED_FRAME, FMT_MONO16)[..., 0], MONO16)
    with pytest.raises(DecodeError):
        decode_frame(data[: len(data) // 2], DEFLATED_FRAME, FMT_MONO16)


# ---------------------------------------------------------------------------------------------
# Single-bit frames


def test_single_bit_least_significant_bit_first() -> None:
    fmt = PixelFormat(1, 8, 1, 1, 1, 0, "MONOCHROME2")
    decoded = decode_frame(bytes([0b0000_0101]), EXPLICIT, fmt)
    assert decoded.dtype == np.uint8
    assert decoded.shape == (1, 8, 1)
    assert decoded.ravel().tolist() == [1, 0, 1, 0, 0, 0, 0, 0]


def test_single_bit_frame() -> None:
    mask = ((ROWS // 7 + COLS // 3) % 2).astype(np.uint8)
    fmt = PixelFormat(SIZE, SIZE, 1, 1, 1, 0, "MONOCHROME2")
    data = np.packbits(mask.ravel(), bitorder="little").tobytes()
    decoded = decode_frame(data, EXPLICIT, fmt)
    assert_fresh(decoded, fmt)
    np.testing.assert_array_equal(decoded[..., 0], mask)


def test_single_bit_frames_not_on_byte_boundaries() -> None:
    fmt = PixelFormat(5, 5, 1, 1, 1, 0, "MONOCHROME2")  # 25 bits per frame
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 2, size=(4, 5, 5), dtype=np.uint8)
    pixel_data = np.packbits(frames.ravel(), bitorder="little").tobytes()
    for index, frame in enumerate(frames):
        start, end = index * 25, (index + 1) * 25
        chunk = pixel_data[start // 8 : -(-end // 8)]
        decoded = decode_frame(chunk, EXPLICIT, fmt, bit_offset=start % 8)
        np.testing.assert_array_equal(decoded[..., 0], frame)


@pytest.mark.parametrize(
    ("uid", "fmt", "bit_offset"),
    [
        (EXPLICIT, PixelFormat(5, 5, 1, 1, 1, 0, "MONOCHROME2"), 8),
        (EXPLICIT, PixelFormat(5, 5, 1, 1, 1, 0, "MONOCHROME2"), -1),
        (EXPLICIT, PixelFormat(5, 5, 1, 8, 8, 0, "MONOCHROME2"), 1),
        (JPEG_BASELINE, PixelFormat(5, 5, 1, 8, 8, 0, "MONOCHROME2"), 1),
    ],
)
def test_bit_offset_rejected(uid: str, fmt: PixelFormat, bit_offset: int) -> None:
    with pytest.raises(RegionError):
        decode_frame(bytes(40), uid, fmt, bit_offset=bit_offset)


# ---------------------------------------------------------------------------------------------
# JPEG baseline and extended


JPEG_YBR = pillow_jpeg(RGB8, quality=90, subsampling="4:2:2")
JPEG_RGB = pillow_jpeg(RGB8, quality=90, keep_rgb=True)


@pytest.mark.parametrize("name", decoders_of(JPEG_BASELINE))
@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        pytest.param(JPEG_YBR, FMT_YBR422, id="ybr422-jfif"),
        pytest.param(strip_app_markers(JPEG_YBR), FMT_YBR422, id="ybr422-no-app"),
        # Some converters label YCbCr streams RGB; the JFIF marker says what they are.
        pytest.param(JPEG_YBR, FMT_RGB, id="ybr422-jfif-labelled-rgb"),
        pytest.param(JPEG_RGB, FMT_RGB, id="rgb-adobe"),
        pytest.param(set_component_ids(JPEG_RGB, (1, 2, 3)), FMT_RGB, id="rgb-adobe-ids-123"),
        pytest.param(strip_app_markers(JPEG_RGB), FMT_RGB, id="rgb-ids-RGB"),
        # Markers that say RGB win over a header that says YBR_FULL_422.
        pytest.param(
            set_component_ids(JPEG_RGB, (1, 2, 3)), FMT_YBR422, id="rgb-adobe-labelled-ybr422"
        ),
        pytest.param(strip_app_markers(JPEG_RGB), FMT_YBR422, id="rgb-ids-RGB-labelled-ybr422"),
        # No marker at all: only the Photometric Interpretation can tell.
        pytest.param(
            set_component_ids(strip_app_markers(JPEG_RGB), (1, 2, 3)), FMT_RGB, id="rgb-unmarked"
        ),
        pytest.param(JPEG_YBR + b"\x00", FMT_YBR422, id="padded-one-byte"),
        pytest.param(JPEG_YBR + b"\x00" * 9, FMT_YBR422, id="padded-nine-bytes"),
        pytest.param(JPEG_RGB + b"\xff\x00", FMT_RGB, id="padded-ff"),
    ],
)
def test_jpeg_baseline_colour(
    monkeypatch: pytest.MonkeyPatch, name: str, data: bytes, fmt: PixelFormat
) -> None:
    only(monkeypatch, JPEG_BASELINE, name)
    decoded = decode_frame(data, JPEG_BASELINE, fmt)
    assert_fresh(decoded, fmt)
    assert mean_error(decoded, RGB8) < 1.5


@pytest.mark.parametrize("name", decoders_of(JPEG_BASELINE))
@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        pytest.param(pillow_jpeg(RED, quality=90, subsampling="4:2:2"), FMT_YBR422, id="ybr"),
        pytest.param(pillow_jpeg(RED, quality=90, keep_rgb=True), FMT_RGB, id="rgb"),
    ],
)
def test_jpeg_pure_red_stays_red(
    monkeypatch: pytest.MonkeyPatch, name: str, data: bytes, fmt: PixelFormat
) -> None:
    only(monkeypatch, JPEG_BASELINE, name)
    decoded = decode_frame(data, JPEG_BASELINE, fmt)
    assert decoded[..., 0].min() >= 245
    assert decoded[..., 1:].max() <= 10


@pytest.mark.parametrize("name", decoders_of(JPEG_BASELINE))
def test_jpeg_baseline_monochrome(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    only(monkeypatch, JPEG_BASELINE, name)
    decoded = decode_frame(pillow_jpeg(MONO8, quality=95), JPEG_BASELINE, FMT_MONO8)
    assert_fresh(decoded, FMT_MONO8)
    assert mean_error(decoded, MONO8) < 1.5


def test_jpeg_baseline_prefers_imagecodecs() -> None:
    assert codecs.decoder_names(JPEG_BASELINE)[:2] == ("imagecodecs.jpeg8", "pillow")


@pytest.mark.parametrize(
    "name",
    [n for n in codecs.decoder_names(JPEG_EXTENDED) if n != "pillow"],
)
def test_jpeg_extended_12_bit(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    only(monkeypatch, JPEG_EXTENDED, name)
    image = (MONO16 % 4096).astype(np.uint16)
    data = imagecodecs.jpeg8_encode(image, level=95, bitspersample=12)
    fmt = PixelFormat(SIZE, SIZE, 1, 16, 12, 0, "MONOCHROME2")
    decoded = decode_frame(data, JPEG_EXTENDED, fmt)
    assert_fresh(decoded, fmt)
    assert mean_error(decoded, image) < 2


def test_jpeg_12_bit_does_not_fit_8_bits() -> None:
    image = (MONO16 % 4096).astype(np.uint16)
    data = imagecodecs.jpeg8_encode(image, level=95, bitspersample=12)
    with pytest.raises(DecodeError, match="BitsAllocated"):
        decode_frame(data, JPEG_EXTENDED, FMT_MONO8)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(JPEG_YBR[: len(JPEG_YBR) // 2], id="truncated"),
        pytest.param(JPEG_YBR[:-2], id="no-eoi"),
        pytest.param(JPEG_YBR[:300], id="truncated-header"),
        pytest.param(b"\xff\xd8\xff" + bytes(range(256)) * 4, id="garbage-after-soi"),
        pytest.param(b"not a jpeg at all", id="not-jpeg"),
        pytest.param(
            JPEG_YBR[:200] + b"\xff\xd9" + JPEG_YBR[202:600] + b"\xff\xd9", id="bad-tables"
        ),
    ],
)
def test_jpeg_corrupt(data: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode_frame(data, JPEG_BASELINE, FMT_YBR422, sop_instance_uid="1.2.3", frame_number=2)
    assert info.value.frame_number == 2
    assert info.value.sop_instance_uid == "1.2.3"


def test_jpeg_wrong_shape() -> None:
    fmt = PixelFormat(128, 256, 3, 8, 8, 0, "YBR_FULL_422")
    with pytest.raises(DecodeError, match="shape") as info:
        decode_frame(JPEG_YBR, JPEG_BASELINE, fmt, sop_instance_uid="1.2.9", frame_number=4)
    assert info.value.sop_instance_uid == "1.2.9"
    assert info.value.frame_number == 4


def test_jpeg_wrong_samples_per_pixel() -> None:
    with pytest.raises(DecodeError):
        decode_frame(JPEG_YBR, JPEG_BASELINE, FMT_MONO8)


# ---------------------------------------------------------------------------------------------
# JPEG lossless


def lossless_rgb_unmarked() -> bytes:
    # Component ids 1, 2, 3 and no markers make libjpeg guess YCbCr: a decoder that follows
    # the guess instead of the Photometric Interpretation converts the RGB samples.
    data = imagecodecs.jpeg8_encode(RGB8, lossless=True, predictor=1)
    return set_component_ids(data, (1, 2, 3))


def lossless_16_bit(name: str) -> bytes:
    if name == "pylibjpeg-libjpeg":
        # pylibjpeg-libjpeg 2.5 misdecodes 16-bit streams written by libjpeg-turbo, so this
        # fallback is tested with the stream of another encoder.
        data: bytes = imagecodecs.ljpeg_encode(MONO16)
        return data
    data = imagecodecs.jpeg8_encode(MONO16, lossless=True, predictor=1)
    return data


LOSSLESS_CASES: dict[str, tuple[Callable[[str], bytes], np.ndarray, PixelFormat]] = {
    "rgb": (
        lambda name: imagecodecs.jpeg8_encode(RGB8, lossless=True, predictor=1),
        RGB8,
        FMT_RGB,
    ),
    "rgb-unmarked": (lambda name: lossless_rgb_unmarked(), RGB8, FMT_RGB),
    "rgb-predictor-7": (
        lambda name: imagecodecs.jpeg8_encode(RGB8, lossless=True, predictor=7),
        RGB8,
        FMT_RGB,
    ),
    "mono8": (
        lambda name: imagecodecs.jpeg8_encode(MONO8, lossless=True, predictor=6),
        MONO8,
        FMT_MONO8,
    ),
    "mono16": (lossless_16_bit, MONO16, FMT_MONO16),
}


@pytest.mark.parametrize("uid", [JPEG_LOSSLESS, JPEG_LOSSLESS_SV1])
@pytest.mark.parametrize("name", decoders_of(JPEG_LOSSLESS))
@pytest.mark.parametrize("kind", sorted(LOSSLESS_CASES))
def test_jpeg_lossless_exact(
    monkeypatch: pytest.MonkeyPatch, uid: str, name: str, kind: str
) -> None:
    only(monkeypatch, uid, name)
    encode, image, fmt = LOSSLESS_CASES[kind]
    decoded = decode_frame(encode(name) + b"\x00", uid, fmt)
    assert_fresh(decoded, fmt)
    np.testing.assert_array_equal(decoded, as3d(image))


def _without_adobe_marker(data: bytes) -> bytes:
    # libjpeg-turbo writes APP14 "Adobe" (transform 0) right after SOI in lossless mode.
    assert data[2:4] == b"\xff\xee"
    length = int.from_bytes(data[4:6], "big")
    return data[:2] + data[4 + length :]


def test_jpeg_lossless_ybr_full_converted() -> None:
    # Without colour markers the DICOM label says how the components are stored.
    data = imagecodecs.jpeg8_encode(rgb_to_ybr(RGB8), lossless=True, predictor=1)
    data = _without_adobe_marker(data)
    fmt = PixelFormat(SIZE, SIZE, 3, 8, 8, 0, "YBR_FULL")
    decoded = decode_frame(data, JPEG_LOSSLESS_SV1, fmt)
    assert np.abs(decoded.astype(int) - RGB8).max() <= 2


def test_jpeg_lossless_adobe_rgb_wins_over_ybr_label() -> None:
    # wsidicom 0.36's JpegLosslessSettings (default channels YBR) writes RGB samples with an
    # Adobe marker saying "no transform" and labels them YBR_FULL; pydicom and wsidicom
    # decode such frames to the stored RGB, as libjpeg does.
    data = imagecodecs.jpeg8_encode(RGB8, lossless=True, predictor=1)
    assert data[2:4] == b"\xff\xee"
    fmt = PixelFormat(SIZE, SIZE, 3, 8, 8, 0, "YBR_FULL")
    np.testing.assert_array_equal(decode_frame(data, JPEG_LOSSLESS_SV1, fmt), RGB8)


def test_jpeg_lossless_truncated() -> None:
    data = imagecodecs.jpeg8_encode(MONO8, lossless=True, predictor=1)
    with pytest.raises(DecodeError, match="truncated"):
        decode_frame(data[: len(data) // 2], JPEG_LOSSLESS_SV1, FMT_MONO8)


# ---------------------------------------------------------------------------------------------
# JPEG-LS


@pytest.mark.parametrize("name", decoders_of(JPEG_LS))
@pytest.mark.parametrize(
    ("image", "fmt"), [(RGB8, FMT_RGB), (MONO8, FMT_MONO8), (MONO16, FMT_MONO16)]
)
def test_jpeg_ls_lossless(
    monkeypatch: pytest.MonkeyPatch, name: str, image: np.ndarray, fmt: PixelFormat
) -> None:
    only(monkeypatch, JPEG_LS, name)
    data = imagecodecs.jpegls_encode(image) + b"\x00"
    decoded = decode_frame(data, JPEG_LS, fmt)
    assert_fresh(decoded, fmt)
    np.testing.assert_array_equal(decoded, as3d(image))


@pytest.mark.parametrize("name", decoders_of(JPEG_LS_NEAR))
def test_jpeg_ls_near_lossless(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    only(monkeypatch, JPEG_LS_NEAR, name)
    data = imagecodecs.jpegls_encode(RGB8, level=2)
    decoded = decode_frame(data, JPEG_LS_NEAR, FMT_RGB)
    assert np.abs(decoded.astype(int) - RGB8).max() <= 2
    assert mean_error(decoded, RGB8) > 0  # really lossy, so the tolerance above matters


def test_jpeg_ls_ybr_full_converted() -> None:
    data = imagecodecs.jpegls_encode(rgb_to_ybr(RGB8))
    fmt = PixelFormat(SIZE, SIZE, 3, 8, 8, 0, "YBR_FULL")
    decoded = decode_frame(data, JPEG_LS, fmt)
    assert np.abs(decoded.astype(int) - RGB8).max() <= 2


def test_jpeg_ls_corrupt() -> None:
    data = imagecodecs.jpegls_encode(MONO8)
    garbled = data[:100] + bytes(range(256)) * 8 + data[100 + 2048 :]
    with pytest.raises(DecodeError):
        decode_frame(garbled, JPEG_LS, FMT_MONO8)


# ---------------------------------------------------------------------------------------------
# JPEG 2000 and HTJ2K


def j2k(
    image: np.ndarray, *, reversible: bool = True, mct: bool = True, jp2: bool = False
) -> bytes:
    data: bytes = imagecodecs.jpeg2k_encode(
        image,
        level=0 if reversible else 40,
        reversible=reversible,
        mct=mct,
        codecformat="JP2" if jp2 else "J2K",
    )
    return data


@pytest.mark.parametrize("name", decoders_of(J2K_LOSSLESS))
@pytest.mark.parametrize(
    ("data", "photometric"),
    [
        pytest.param(j2k(RGB8), "YBR_RCT", id="rct"),
        # Converters sometimes write YBR_FULL_422 for MCT codestreams: not converted again.
        pytest.param(j2k(RGB8), "YBR_FULL_422", id="rct-labelled-ybr422"),
        pytest.param(j2k(RGB8), "RGB", id="rct-labelled-rgb"),
        pytest.param(j2k(RGB8, mct=False), "RGB", id="no-mct"),
        pytest.param(j2k(RGB8, jp2=True), "YBR_RCT", id="jp2-file"),
        pytest.param(j2k(RGB8) + b"\x00", "YBR_RCT", id="padded"),
    ],
)
def test_j2k_lossless_rgb(
    monkeypatch: pytest.MonkeyPatch, name: str, data: bytes, photometric: str
) -> None:
    only(monkeypatch, J2K_LOSSLESS, name)
    fmt = PixelFormat(SIZE, SIZE, 3, 8, 8, 0, photometric)
    decoded = decode_frame(data, J2K_LOSSLESS, fmt)
    assert_fresh(decoded, fmt)
    np.testing.assert_array_equal(decoded, RGB8)


@pytest.mark.parametrize("name", decoders_of(J2K))
def test_j2k_lossy_ict(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    only(monkeypatch, J2K, name)
    fmt = PixelFormat(SIZE, SIZE, 3, 8, 8, 0, "YBR_ICT")
    decoded = decode_frame(j2k(RGB8, reversible=False), J2K, fmt)
    assert mean_error(decoded, RGB8) < 3


def test_j2k_without_mct_ybr_full_converted() -> None:
    fmt = PixelFormat(SIZE, SIZE, 3, 8, 8, 0, "YBR_FULL")
    decoded = decode_frame(j2k(rgb_to_ybr(RGB8), mct=False), J2K_LOSSLESS, fmt)
    assert np.abs(decoded.astype(int) - RGB8).max() <= 2


@pytest.mark.parametrize("name", decoders_of(J2K_LOSSLESS))
@pytest.mark.parametrize(
    ("image", "fmt"),
    [
        (MONO8, FMT_MONO8),
        (MONO16, FMT_MONO16),
        (
            (MONO16.astype(np.int32) - 32768).astype(np.int16),
            PixelFormat(SIZE, SIZE, 1, 16, 16, 1, "MONOCHROME2"),
        ),
    ],
    ids=["mono8", "mono16", "signed16"],
)
def test_j2k_monochrome(
    monkeypatch: pytest.MonkeyPatch, name: str, image: np.ndarray, fmt: PixelFormat
) -> None:
    only(monkeypatch, J2K_LOSSLESS, name)
    decoded = decode_frame(j2k(image), J2K_LOSSLESS, fmt)
    assert_fresh(decoded, fmt)
    np.testing.assert_array_equal(decoded, as3d(image))


def test_j2k_8_bit_codestream_widened_to_bits_allocated_16() -> None:
    fmt = PixelFormat(SIZE, SIZE, 1, 16, 8, 0, "MONOCHROME2")
    decoded = decode_frame(j2k(MONO8), J2K_LOSSLESS, fmt)
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded[..., 0], MONO8)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(j2k(RGB8)[: len(j2k(RGB8)) // 2], id="truncated"),
        pytest.param(b"\xff\x4f\xff\x51" + bytes(60), id="bad-siz"),
        pytest.param(b"\x00" * 100, id="not-j2k"),
    ],
)
def test_j2k_corrupt(data: bytes) -> None:
    fmt = PixelFormat(SIZE, SIZE, 3, 8, 8, 0, "YBR_RCT")
    with pytest.raises(DecodeError):
        decode_frame(data, J2K_LOSSLESS, fmt, frame_number=3)


def test_htj2k_prefers_openjph() -> None:
    assert codecs.decoder_names(HTJ2K_LOSSLESS)[0] == "imagecodecs.htj2k"


@pytest.mark.parametrize("name", decoders_of(HTJ2K_LOSSLESS))
@pytest.mark.parametrize(
    ("image", "fmt"),
    [(RGB8, PixelFormat(SIZE, SIZE, 3, 8, 8, 0, "YBR_RCT")), (MONO16, FMT_MONO16)],
    ids=["rgb", "mono16"],
)
def test_htj2k_lossless(
    monkeypatch: pytest.MonkeyPatch, name: str, image: np.ndarray, fmt: PixelFormat
) -> None:
    only(monkeypatch, HTJ2K_LOSSLESS, name)
    data = imagecodecs.htj2k_encode(image, reversible=True) + b"\x00"
    decoded = decode_frame(data, HTJ2K_LOSSLESS, fmt)
    assert_fresh(decoded, fmt)
    np.testing.assert_array_equal(decoded, as3d(image))


@pytest.mark.parametrize(
    "name", [n for n in codecs.decoder_names(HTJ2K) if n != "imagecodecs.htj2k"]
)
def test_htj2k_lossy(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    only(monkeypatch, HTJ2K, name)
    data = imagecodecs.htj2k_encode(RGB8, level=0.5, reversible=False)
    fmt = PixelFormat(SIZE, SIZE, 3, 8, 8, 0, "YBR_ICT")
    decoded = decode_frame(data, HTJ2K, fmt)
    assert mean_error(decoded, RGB8) < 3


def test_htj2k_lossy_white_stays_white() -> None:
    # The irreversible wavelet overshoots 255 near white; OpenJPH wraps such samples to 0.
    rng = np.random.default_rng(3)
    white = np.clip(250 + rng.normal(0, 6, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    data = imagecodecs.htj2k_encode(white, level=0.01, reversible=False)
    fmt = PixelFormat(SIZE, SIZE, 3, 8, 8, 0, "YBR_ICT")
    decoded = decode_frame(data, HTJ2K, fmt)
    assert np.abs(decoded.astype(int) - white).max() < 40


def test_htj2k_openjph_alone_refuses_irreversible(monkeypatch: pytest.MonkeyPatch) -> None:
    only(monkeypatch, HTJ2K, "imagecodecs.htj2k")
    data = imagecodecs.htj2k_encode(RGB8, level=0.01, reversible=False)
    fmt = PixelFormat(SIZE, SIZE, 3, 8, 8, 0, "YBR_ICT")
    with pytest.raises(MissingCodecError, match="pylibjpeg-openjpeg"):
        decode_frame(data, HTJ2K, fmt)


@UNRAISABLE_OK
def test_htj2k_corrupt() -> None:
    data = imagecodecs.htj2k_encode(RGB8, reversible=True)
    fmt = PixelFormat(SIZE, SIZE, 3, 8, 8, 0, "YBR_RCT")
    with pytest.raises(DecodeError):
        decode_frame(data[: len(data) // 3], HTJ2K_LOSSLESS, fmt)


@UNRAISABLE_OK
def test_htj2k_falls_back_when_openjph_fails() -> None:
    # A part 1 codestream labelled HTJ2K: OpenJPH rejects it, OpenJPEG decodes it.
    fmt = PixelFormat(SIZE, SIZE, 3, 8, 8, 0, "YBR_RCT")
    decoded = decode_frame(j2k(RGB8), HTJ2K_LOSSLESS, fmt)
    np.testing.assert_array_equal(decoded, RGB8)


# ---------------------------------------------------------------------------------------------
# RLE


@pytest.mark.parametrize("name", decoders_of(RLE))
@pytest.mark.parametrize(
    ("image", "fmt"), [(RGB8, FMT_RGB), (MONO8, FMT_MONO8), (MONO16, FMT_MONO16)]
)
def test_rle(
    monkeypatch: pytest.MonkeyPatch, name: str, image: np.ndarray, fmt: PixelFormat
) -> None:
    only(monkeypatch, RLE, name)
    decoded = decode_frame(rle_encode(image, fmt), RLE, fmt)
    assert_fresh(decoded, fmt)
    np.testing.assert_array_equal(decoded, as3d(image))


def test_rle_ybr_full_converted() -> None:
    fmt = PixelFormat(SIZE, SIZE, 3, 8, 8, 0, "YBR_FULL")
    decoded = decode_frame(rle_encode(rgb_to_ybr(RGB8), fmt), RLE, fmt)
    assert np.abs(decoded.astype(int) - RGB8).max() <= 2


def test_rle_single_bit() -> None:
    rle_utils = pytest.importorskip("rle.utils")
    mask = ((ROWS // 5 + COLS // 3) % 2).astype(np.uint8)
    data = rle_utils.encode_pixel_data(
        np.packbits(mask.ravel(), bitorder="little").tobytes(),
        rows=SIZE, columns=SIZE, samples_per_pixel=1, bits_allocated=1, byteorder="<",
    )  # fmt: skip
    fmt = PixelFormat(SIZE, SIZE, 1, 1, 1, 0, "MONOCHROME2")
    np.testing.assert_array_equal(decode_frame(data, RLE, fmt)[..., 0], mask)


@pytest.mark.parametrize("name", decoders_of(RLE))
def test_rle_corrupt(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    only(monkeypatch, RLE, name)
    data = rle_encode(RGB8, FMT_RGB)
    with pytest.raises(DecodeError):
        decode_frame(data[: len(data) // 2], RLE, FMT_RGB)
    with pytest.raises(DecodeError):
        decode_frame(b"\x00" * 10, RLE, FMT_RGB)


# ---------------------------------------------------------------------------------------------
# Registry, missing codecs, unsupported syntaxes


def test_unknown_syntax_unsupported() -> None:
    assert not codecs.is_supported("1.2.3.4")
    with pytest.raises(UnsupportedError):
        decode_frame(b"\x00" * 16, "1.2.3.4", FMT_MONO8)


def test_float_jpeg_unsupported() -> None:
    fmt = PixelFormat(SIZE, SIZE, 1, 32, 32, 0, "MONOCHROME2", is_float=True)
    with pytest.raises(UnsupportedError) as info:
        decode_frame(JPEG_YBR, JPEG_BASELINE, fmt)
    assert not isinstance(info.value, MissingCodecError)


@pytest.mark.parametrize("uid", [JPEG_BASELINE, J2K_LOSSLESS, HTJ2K_LOSSLESS, JPEG_LS, RLE])
def test_missing_codec(monkeypatch: pytest.MonkeyPatch, uid: str) -> None:
    assert codecs.is_supported(uid)
    monkeypatch.setitem(codecs._DECODERS, uid, ())
    assert not codecs.is_supported(uid)
    assert codecs.decoder_names(uid) == ()
    with pytest.raises(MissingCodecError, match="pip install"):
        decode_frame(JPEG_YBR, uid, FMT_YBR422)


def test_missing_codec_names_fast_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(codecs._DECODERS, HTJ2K_LOSSLESS, ())
    with pytest.raises(MissingCodecError) as info:
        decode_frame(b"", HTJ2K_LOSSLESS, FMT_MONO8)
    assert "dicomslide[fast]" in str(info.value)
    assert "pylibjpeg-openjpeg" in str(info.value)


def test_broken_installation_is_missing_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    def unimportable(job: Any) -> np.ndarray:
        raise ImportError("simulated broken install")

    broken = tuple(
        codecs._Decoder(d.name, d.requirement, d.module, unimportable, d.accepts)
        for d in codecs._DECODERS[JPEG_BASELINE]
    )
    monkeypatch.setitem(codecs._DECODERS, JPEG_BASELINE, broken)
    with pytest.raises(MissingCodecError):
        decode_frame(JPEG_YBR, JPEG_BASELINE, FMT_YBR422)


def test_next_decoder_after_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing(job: Any) -> np.ndarray:
        calls.append(len(job.data))
        raise RuntimeError("library error")

    first = codecs._Decoder(
        "failing", "nothing", "nothing", failing, lambda fmt: True, may_reject_valid=True
    )
    monkeypatch.setitem(codecs._DECODERS, JPEG_BASELINE, (first, *codecs._DECODERS[JPEG_BASELINE]))
    decoded = decode_frame(JPEG_YBR, JPEG_BASELINE, FMT_YBR422)
    assert calls == [len(JPEG_YBR)]
    assert mean_error(decoded, RGB8) < 1.5


def test_library_error_is_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(job: Any) -> np.ndarray:
        raise RuntimeError("library error")

    fake = codecs._Decoder("fake", "nothing", "nothing", failing, lambda fmt: True)
    # A decoder that never rejects valid frames ends the search: the frame is corrupt.
    monkeypatch.setitem(codecs._DECODERS, JPEG_BASELINE, (fake, *codecs._DECODERS[JPEG_BASELINE]))
    with pytest.raises(DecodeError, match="library error") as info:
        decode_frame(JPEG_YBR, JPEG_BASELINE, FMT_YBR422, sop_instance_uid="9.8", frame_number=1)
    assert isinstance(info.value.__cause__, RuntimeError)


@pytest.mark.parametrize(
    "uid", [IMPLICIT, EXPLICIT, DEFLATED, BIG_ENDIAN, JPEG_BASELINE, J2K, HTJ2K, RLE]
)
def test_is_supported(uid: str) -> None:
    assert codecs.is_supported(uid)
    assert codecs.is_supported(uid + "\x00")


def test_module_is_sans_io() -> None:
    tree = ast.parse(Path(codecs.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "numpy" in imported
    assert not imported & {"asyncio", "httpx", "anyio"}


# ---------------------------------------------------------------------------------------------
# Sniffing


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(JPEG_YBR, JPEG_BASELINE, id="baseline"),
        pytest.param(JPEG_RGB, JPEG_BASELINE, id="baseline-rgb"),
        pytest.param(
            imagecodecs.jpeg8_encode(MONO16 % 4096, level=90, bitspersample=12),
            JPEG_BASELINE,
            id="extended-sof1",
        ),
        pytest.param(
            imagecodecs.jpeg8_encode(MONO8, lossless=True, predictor=1),
            JPEG_LOSSLESS_SV1,
            id="lossless",
        ),
        pytest.param(imagecodecs.jpegls_encode(MONO8), JPEG_LS, id="jpeg-ls"),
        pytest.param(j2k(RGB8), J2K_LOSSLESS, id="j2k"),
        pytest.param(j2k(RGB8, jp2=True), J2K_LOSSLESS, id="jp2"),
        pytest.param(imagecodecs.htj2k_encode(MONO8), HTJ2K_LOSSLESS, id="htj2k"),
        pytest.param(pillow_jpeg(MONO8, progressive=True), None, id="progressive"),
        pytest.param(MONO8.tobytes(), None, id="native"),
        pytest.param(b"", None, id="empty"),
        pytest.param(b"\xff\xd8", None, id="soi-only"),
        pytest.param(rle_encode(MONO8, FMT_MONO8), None, id="rle"),
    ],
)
def test_sniff(data: bytes, expected: str | None) -> None:
    assert sniff_transfer_syntax(data) == expected


def test_sniff_reads_only_header() -> None:
    assert sniff_transfer_syntax(JPEG_YBR[:700]) == JPEG_BASELINE
    htj2k = imagecodecs.htj2k_encode(MONO8)
    assert sniff_transfer_syntax(htj2k[:200]) == HTJ2K_LOSSLESS


# ---------------------------------------------------------------------------------------------
# Without the optional imagecodecs

WITHOUT_IMAGECODECS = """
import importlib.abc, json, pathlib, sys
import numpy as np

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "imagecodecs":
            raise ImportError("blocked")
        return None

sys.meta_path.insert(0, Block())
from dicomslide import codecs

folder = pathlib.Path(sys.argv[1])
result = {}
for case in json.loads((folder / "cases.json").read_text()):
    fmt = codecs.PixelFormat(*case["fmt"])
    decoded = codecs.decode_frame((folder / case["file"]).read_bytes(), case["uid"], fmt)
    expected = np.load(folder / (case["file"] + ".npy"))
    error = float(np.abs(decoded.astype(np.int64) - expected.astype(np.int64)).max())
    result[case["file"]] = [codecs.decoder_names(case["uid"])[0], error]
print(json.dumps(result))
"""


def test_works_without_imagecodecs(tmp_path: Path) -> None:
    cases = {
        "baseline": (JPEG_BASELINE, pillow_jpeg(RGB8, quality=95), FMT_YBR422, RGB8),
        "lossless": (
            JPEG_LOSSLESS_SV1,
            imagecodecs.jpeg8_encode(RGB8, lossless=True, predictor=1),
            FMT_RGB,
            RGB8,
        ),
        "jpegls": (JPEG_LS, imagecodecs.jpegls_encode(MONO16), FMT_MONO16, MONO16),
        "j2k": (J2K_LOSSLESS, j2k(RGB8), PixelFormat(SIZE, SIZE, 3, 8, 8, 0, "YBR_RCT"), RGB8),
        "htj2k": (HTJ2K_LOSSLESS, imagecodecs.htj2k_encode(MONO16), FMT_MONO16, MONO16),
        "rle": (RLE, rle_encode(RGB8, FMT_RGB), FMT_RGB, RGB8),
    }
    spec = []
    for name, (uid, data, fmt, image) in cases.items():
        (tmp_path / name).write_bytes(data)
        np.save(tmp_path / f"{name}.npy", as3d(image))
        fields = [
            fmt.rows, fmt.columns, fmt.samples_per_pixel, fmt.bits_allocated,
            fmt.bits_stored, fmt.pixel_representation, fmt.photometric_interpretation,
        ]  # fmt: skip
        spec.append({"file": name, "uid": uid, "fmt": fields})
    (tmp_path / "cases.json").write_text(json.dumps(spec))
    root = Path(codecs.__file__).parent.parent
    completed = run_python("-c", WITHOUT_IMAGECODECS, str(tmp_path), cwd=root)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["baseline"][0] == "pillow"
    assert result["baseline"][1] < 40  # lossy: max error, a colour bug gives > 100
    assert result["lossless"] == ["pylibjpeg-libjpeg", 0.0]
    assert result["jpegls"][1] == 0.0
    assert result["j2k"] == ["pylibjpeg-openjpeg", 0.0]
    assert result["htj2k"] == ["pylibjpeg-openjpeg", 0.0]
    assert result["rle"] == ["pylibjpeg-rle", 0.0]


def test_j2k_labelled_ybr_full_422_without_mct_is_stored_rgb() -> None:
    # OrthancWSIDicomizer writes RGB JPEG 2000 codestreams (no colour transform) and labels
    # them YBR_FULL_422, a label J2K cannot have; converting would ruin every colour.
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    data = imagecodecs.jpeg2k_encode(rgb, level=0, mct=False)
    decoded = decode_frame(data, "1.2.840.10008.1.2.4.90", FMT_YBR422)
    np.testing.assert_array_equal(decoded, rgb)
    ybr_full = PixelFormat(SIZE, SIZE, 3, 8, 8, 0, "YBR_FULL")
    converted = decode_frame(data, "1.2.840.10008.1.2.4.90", ybr_full)
    assert not np.array_equal(converted, rgb)


# ---------------------------------------------------------------------------------------------
# JPEG XL (DICOM 2024: 1.2.840.10008.1.2.4.110 / .111 / .112)

JPEG_XL_LOSSLESS = "1.2.840.10008.1.2.4.110"
JPEG_XL = "1.2.840.10008.1.2.4.112"


@pytest.mark.parametrize(
    ("image", "fmt"), [(RGB8, FMT_RGB), (MONO8, FMT_MONO8), (MONO16, FMT_MONO16)]
)
def test_jpeg_xl_lossless(image: np.ndarray, fmt: PixelFormat) -> None:
    if not getattr(imagecodecs.JPEGXL, "available", False):
        pytest.skip("imagecodecs built without JPEG XL")
    data = imagecodecs.jpegxl_encode(image, lossless=True)
    assert codecs.is_supported(JPEG_XL_LOSSLESS)
    assert sniff_transfer_syntax(data) == JPEG_XL_LOSSLESS
    decoded = decode_frame(data, JPEG_XL_LOSSLESS, fmt)
    assert_fresh(decoded, fmt)
    np.testing.assert_array_equal(decoded, as3d(image))


def test_jpeg_xl_lossy_close() -> None:
    if not getattr(imagecodecs.JPEGXL, "available", False):
        pytest.skip("imagecodecs built without JPEG XL")
    data = imagecodecs.jpegxl_encode(RGB8, level=95)
    decoded = decode_frame(data, JPEG_XL, FMT_RGB)
    assert np.abs(decoded.astype(int) - RGB8).mean() < 3


def test_jpeg_xl_not_a_codestream() -> None:
    with pytest.raises(DecodeError, match="not a JPEG XL"):
        decode_frame(b"\xff\xd8\xff\xe0" + bytes(60), JPEG_XL, FMT_RGB)

"""Decoding of single DICOM image frames into numpy arrays.

This module is sans-IO: it turns the bytes of one frame, its transfer syntax and its pixel
format into an array and never reads files or sockets.

Every decoded frame has the shape ``(rows, columns, samples_per_pixel)``. Colour frames are
returned as RGB, whatever colour space the frame was stored in; monochrome frames are returned
as stored (``MONOCHROME1`` is not inverted, ``PALETTE COLOR`` indices are not looked up).

For each compressed transfer syntax the installed decoders are ranked at import time, fastest
first (see ``benchmarks/decoders.py``). Optional libraries are imported only when a frame
first needs them. Decoders known to reject some valid frames, or to decode some wrongly, pass
such frames on to the next decoder; a failure of any other decoder means the frame is corrupt.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, cached_property, partial
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from dicomslide._docs import borrowed_doc
from dicomslide._syntaxes import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    DEFLATED_IMAGE_FRAME,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    HTJ2K,
    HTJ2K_LOSSLESS,
    HTJ2K_LOSSLESS_RPCL,
    IMPLICIT_VR_LITTLE_ENDIAN,
    J2K,
    J2K_LOSSLESS,
    J2K_PART2,
    J2K_PART2_LOSSLESS,
    JPEG_BASELINE,
    JPEG_EXTENDED,
    JPEG_FAMILY,
    JPEG_LOSSLESS,
    JPEG_LOSSLESS_SV1,
    JPEG_LS_LOSSLESS,
    JPEG_LS_NEAR_LOSSLESS,
    JPEG_XL,
    JPEG_XL_FAMILY,
    JPEG_XL_LOSSLESS,
    JPEG_XL_RECOMPRESSION,
    NATIVE,
    RLE_LOSSLESS,
)
from dicomslide.errors import (
    DecodeError,
    InvalidDataError,
    MissingCodecError,
    RegionError,
    UnsupportedError,
)

if TYPE_CHECKING:
    import pydicom

__all__ = [
    "PixelFormat",
    "decode_frame",
    "decoder_names",
    "is_supported",
    "sniff_transfer_syntax",
]


_SYNTAX_NAMES: dict[str, str] = {
    IMPLICIT_VR_LITTLE_ENDIAN: "Implicit VR Little Endian",
    EXPLICIT_VR_LITTLE_ENDIAN: "Explicit VR Little Endian",
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: "Deflated Explicit VR Little Endian",
    EXPLICIT_VR_BIG_ENDIAN: "Explicit VR Big Endian",
    DEFLATED_IMAGE_FRAME: "Deflated Image Frame Compression",
    JPEG_BASELINE: "JPEG Baseline",
    JPEG_EXTENDED: "JPEG Extended",
    JPEG_LOSSLESS: "JPEG Lossless",
    JPEG_LOSSLESS_SV1: "JPEG Lossless SV1",
    JPEG_LS_LOSSLESS: "JPEG-LS Lossless",
    JPEG_LS_NEAR_LOSSLESS: "JPEG-LS Near-Lossless",
    J2K_LOSSLESS: "JPEG 2000 Lossless",
    J2K: "JPEG 2000",
    J2K_PART2_LOSSLESS: "JPEG 2000 Part 2 Lossless",
    J2K_PART2: "JPEG 2000 Part 2",
    HTJ2K_LOSSLESS: "HTJ2K Lossless",
    HTJ2K_LOSSLESS_RPCL: "HTJ2K Lossless RPCL",
    HTJ2K: "HTJ2K",
    RLE_LOSSLESS: "RLE Lossless",
    JPEG_XL_LOSSLESS: "JPEG XL Lossless",
    JPEG_XL_RECOMPRESSION: "JPEG XL JPEG Recompression",
    JPEG_XL: "JPEG XL",
}

_JPEG_LOSSY = frozenset({JPEG_BASELINE, JPEG_EXTENDED})

# Deflated Explicit VR Little Endian deflates the whole data set, so by the time a frame
# reaches this module it has been inflated by the reader and is plain native data.

_YBR_TO_RGB = np.array(
    [[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]], dtype=np.float32
).T


_PARAMETRIC_MAP_STORAGE = "1.2.840.10008.5.1.4.1.1.30"


def _has_float_pixels(ds: pydicom.Dataset, bits_allocated: int) -> bool:
    """Whether the samples of ``ds`` are IEEE floats.

    Metadata carries no pixel values, so the Float Pixel Data or Double Float Pixel Data
    element is present only as a marker (DICOM JSON with a BulkDataURI or without a value; the
    local source adds it with an empty value). For metadata without any pixel data element,
    Bits Allocated decides for Parametric Maps, which store integers in Pixel Data with at
    most 16 bits and floats with 32 (Float Pixel Data) or 64 (Double Float Pixel Data).
    """
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        return True
    return (
        "PixelData" not in ds
        and bits_allocated in (32, 64)
        and str(ds.get("SOPClassUID", "")) == _PARAMETRIC_MAP_STORAGE
    )


@dataclass(frozen=True)
class PixelFormat:
    """Attributes of the Image Pixel module that a decoder needs.

    Parameters
    ----------
    rows: int
        Number of rows of a frame
    columns: int
        Number of columns of a frame
    samples_per_pixel: int
        Number of samples (channels) per pixel
    bits_allocated: int
        Bits allocated per sample: 1, 8, 16, 32 or 64
    bits_stored: int
        Bits stored per sample, at most `bits_allocated`
    pixel_representation: int
        0 for unsigned, 1 for two's complement signed samples
    photometric_interpretation: str
        Photometric Interpretation, e.g. ``"RGB"``, ``"YBR_FULL_422"``, ``"MONOCHROME2"``
    planar_configuration: int
        0 for colour-by-pixel, 1 for colour-by-plane native frames
    is_float: bool
        Whether samples are IEEE floats (Float Pixel Data or Double Float Pixel Data)

    Raises
    ------
    dicomslide.errors.InvalidDataError
        If an attribute is outside the range the standard allows
    """

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int = 0
    is_float: bool = False

    def __post_init__(self) -> None:
        # Values that reach here usually come from files, so bad ones are data errors.
        problems = []
        if self.rows < 1 or self.columns < 1:
            problems.append(f"Rows {self.rows} and Columns {self.columns} must be positive")
        # Rows and Columns are US (at most 65535); SamplesPerPixel is 1 or 3 (4 in retired
        # ARGB/CMYK). Unchecked, absurd values from metadata would size buffers of terabytes.
        if self.rows > 0xFFFF or self.columns > 0xFFFF:
            problems.append(f"Rows {self.rows} and Columns {self.columns} must be at most 65535")
        if self.samples_per_pixel not in (1, 3, 4):
            problems.append(f"SamplesPerPixel {self.samples_per_pixel} is not 1, 3 or 4")
        if self.bits_allocated not in (1, 8, 16, 32, 64):
            problems.append(f"BitsAllocated {self.bits_allocated} is not 1, 8, 16, 32 or 64")
        if not 1 <= self.bits_stored <= self.bits_allocated:
            problems.append(
                f"BitsStored {self.bits_stored} is not in 1..BitsAllocated ({self.bits_allocated})"
            )
        if self.pixel_representation not in (0, 1):
            problems.append(f"PixelRepresentation {self.pixel_representation} is not 0 or 1")
        if self.planar_configuration not in (0, 1):
            problems.append(f"PlanarConfiguration {self.planar_configuration} is not 0 or 1")
        if self.is_float and self.bits_allocated not in (32, 64):
            problems.append(
                f"float pixel data needs BitsAllocated 32 or 64, not {self.bits_allocated}"
            )
        if problems:
            raise InvalidDataError("invalid pixel format: " + "; ".join(problems))
        normalized = self.photometric_interpretation.strip(" \x00").upper()
        if normalized != self.photometric_interpretation:
            object.__setattr__(self, "photometric_interpretation", normalized)

    @classmethod
    def from_dataset(cls, ds: pydicom.Dataset) -> PixelFormat:
        """Read the pixel format from the Image Pixel module of a data set.

        Parameters
        ----------
        ds: pydicom.Dataset
            Data set with at least Rows, Columns, SamplesPerPixel, BitsAllocated and
            PhotometricInterpretation; PlanarConfiguration defaults to 0, BitsStored to
            BitsAllocated and PixelRepresentation to 0

        Returns
        -------
        PixelFormat
            Pixel format of every frame of the data set

        Raises
        ------
        dicomslide.errors.InvalidDataError
            If a required attribute is missing or a value is invalid
        """
        # Imported here: this module imports pydicom (through perframe) only when needed.
        from dicomslide.perframe import get_value

        # By tag, and raw values unconverted where that is exact: opening a slide reads this
        # for every image, and pydicom's keyword lookup and conversion cost more than the
        # values themselves.
        values_by_keyword = {
            keyword: get_value(ds, tag)
            for keyword, tag in (
                ("Rows", 0x00280010),
                ("Columns", 0x00280011),
                ("SamplesPerPixel", 0x00280002),
                ("BitsAllocated", 0x00280100),
                ("PhotometricInterpretation", 0x00280004),
                ("BitsStored", 0x00280101),
                ("PixelRepresentation", 0x00280103),
                ("PlanarConfiguration", 0x00280006),
            )
        }
        required = ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated")
        missing = [
            k for k in (*required, "PhotometricInterpretation") if values_by_keyword[k] is None
        ]
        if missing:
            raise InvalidDataError(
                "data set lacks Image Pixel module attributes: " + ", ".join(missing)
            )
        bits_stored = values_by_keyword["BitsStored"]
        pixel_representation = values_by_keyword["PixelRepresentation"]
        planar_configuration = values_by_keyword["PlanarConfiguration"]
        try:
            # Values from DICOM JSON are not validated: '' or a sequence must not get through
            # as a bare ValueError/TypeError.
            bits_allocated = int(values_by_keyword["BitsAllocated"])
            values = {
                "rows": int(values_by_keyword["Rows"]),
                "columns": int(values_by_keyword["Columns"]),
                "samples_per_pixel": int(values_by_keyword["SamplesPerPixel"]),
                "bits_stored": bits_allocated if bits_stored is None else int(bits_stored),
                "pixel_representation": (
                    0 if pixel_representation is None else int(pixel_representation)
                ),
                "planar_configuration": (
                    0 if planar_configuration is None else int(planar_configuration)
                ),
            }
        except (TypeError, ValueError) as exc:
            raise InvalidDataError(f"invalid Image Pixel module value: {exc}") from exc
        return cls(
            bits_allocated=bits_allocated,
            photometric_interpretation=str(values_by_keyword["PhotometricInterpretation"]),
            is_float=_has_float_pixels(ds, bits_allocated),
            **values,
        )

    # Cached (the dataclass is frozen): every region read asks for it several times.
    @cached_property
    def dtype(self) -> np.dtype[Any]:
        """numpy.dtype: Native-endian dtype of the decoded samples.

        ``uint8`` for BitsAllocated 1 and 8 (``int8`` if signed), ``uint16``/``int16`` for 16,
        ``uint32``/``int32``/``float32`` for 32 and ``uint64``/``int64``/``float64`` for 64.
        """
        if self.is_float:
            return np.dtype(f"float{self.bits_allocated}")
        bits = max(self.bits_allocated, 8)
        return np.dtype(f"int{bits}" if self.pixel_representation else f"uint{bits}")

    @property
    def frame_nbytes(self) -> int:
        """int: Size in bytes of one native (uncompressed) frame.

        For BitsAllocated 1 this is ``ceil(rows * columns * samples / 8)``; for
        ``YBR_FULL_422`` the chroma samples are subsampled horizontally, so a frame holds
        two samples per pixel.
        """
        if self.bits_allocated == 1:
            return math.ceil(self.rows * self.columns * self.samples_per_pixel / 8)
        samples = self.samples_per_pixel
        if self.is_native_422:
            samples = 2
        return self.rows * self.columns * samples * (self.bits_allocated // 8)

    @property
    def is_native_422(self) -> bool:
        """bool: Whether native frames hold YBR_FULL_422 (two samples per pixel stored)."""
        return self.photometric_interpretation == "YBR_FULL_422" and self.samples_per_pixel == 3

    @property
    def is_colour(self) -> bool:
        """bool: Whether pixels have three samples."""
        return self.samples_per_pixel == 3


@dataclass(frozen=True)
class _JpegHeader:
    """What the marker segments before the first scan say about a JPEG or JPEG-LS stream."""

    sof: int
    component_ids: tuple[int, ...]
    jfif: bool
    adobe_transform: int | None
    scan_end: int
    #: (rows, columns, precision) from the frame header
    size: tuple[int, int, int]


@dataclass(frozen=True)
class _J2kHeader:
    """What the main header of a JPEG 2000 codestream says."""

    start: int
    end: int
    mct: bool
    high_throughput: bool
    reversible: bool


@dataclass(frozen=True)
class _Job:
    """One frame prepared for the decoders of its transfer syntax.

    ``ycbcr`` says the decoded components are YCbCr and must become RGB: decoders that
    convert themselves do so, the others leave it to :func:`_finish`.
    """

    data: bytes
    fmt: PixelFormat
    ycbcr: bool
    jpeg: _JpegHeader | None = None
    j2k: _J2kHeader | None = None
    out: npt.NDArray[Any] | None = None


class _Refused(Exception):
    """A decoder declines a frame it is known to decode wrongly; the next one is tried."""


@dataclass(frozen=True)
class _Decoder:
    """One way to decode the frames of a transfer syntax.

    A decoder that ``may_reject_valid`` frames hands a failed frame on to the next decoder;
    the failure of any other decoder means the frame is corrupt. Lenient fallbacks would
    otherwise turn detectably corrupt frames into garbage pixels.
    """

    name: str
    requirement: str
    module: str
    decode: Callable[[_Job], npt.NDArray[Any]]
    accepts: Callable[[PixelFormat], bool]
    converts_ycbcr: bool = False
    may_reject_valid: bool = False


# ---------------------------------------------------------------------------------------------
# Lazy imports


@cache
def _import(name: str) -> ModuleType:
    return importlib.import_module(name)


def _imagecodecs(codec: str) -> ModuleType:
    module = _import("imagecodecs")
    # imagecodecs can be built without any of its codecs; a missing one acts like a missing
    # package so that the next decoder is tried and the error names what to install.
    if not getattr(getattr(module, codec, None), "available", False):
        raise ImportError(f"imagecodecs was built without the {codec} codec")
    return module


def _imagecodecs_decode(codec: str, job: _Job) -> npt.NDArray[Any]:
    # imagecodecs names each decoder after its codec attribute: LJPEG has ljpeg_decode.
    arr: npt.NDArray[Any] = getattr(_imagecodecs(codec), f"{codec.lower()}_decode")(job.data)
    return arr


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# Decoders. Each returns an array of shape (rows, columns) or (rows, columns, samples).


def _jpeg8_lossy(job: _Job) -> npt.NDArray[Any]:
    module = _imagecodecs("JPEG8")
    if job.fmt.samples_per_pixel == 3:
        colorspace = "YCBCR" if job.ycbcr else "RGB"
        arr: npt.NDArray[Any] = module.jpeg8_decode(
            job.data, colorspace=colorspace, outcolorspace="RGB", out=_writable_out(job)
        )
    else:
        arr = module.jpeg8_decode(job.data)
    return arr


def _writable_out(job: _Job) -> npt.NDArray[Any] | None:
    """The caller's array when libjpeg-turbo can decode this stream straight into it.

    Only 8-bit colour streams of exactly the frame's size (greyscale ones never get here):
    any other stream decodes into a new array, so that :func:`_finish` still reports a
    wrong shape as before.
    """
    out, header, fmt = job.out, job.jpeg, job.fmt
    if out is None or header is None or out.dtype != np.uint8:
        return None
    return out if header.size == (fmt.rows, fmt.columns, 8) else None


def _jpeg8_lossless(job: _Job) -> npt.NDArray[Any]:
    module = _imagecodecs("JPEG8")
    if job.fmt.samples_per_pixel == 3:
        # Same colour space in and out: lossless frames must come back as stored.
        arr: npt.NDArray[Any] = module.jpeg8_decode(
            job.data, colorspace="RGB", outcolorspace="RGB"
        )
    else:
        arr = module.jpeg8_decode(job.data)
    return arr


def _libjpeg_turbo_assumes_ycbcr(header: _JpegHeader) -> bool:
    # Mirrors the colour space guess libjpeg(-turbo) makes for three-component streams.
    if header.jfif:
        return True
    if header.adobe_transform is not None:
        return header.adobe_transform != 0
    return header.component_ids != (0x52, 0x47, 0x42)


def _pillow_jpeg(job: _Job) -> npt.NDArray[Any]:
    image_module = _import("PIL.Image")
    header = job.jpeg
    if header is None:
        raise _Refused("Pillow needs the parsed JPEG header")
    colour = job.fmt.samples_per_pixel == 3
    with image_module.open(io.BytesIO(job.data), formats=["JPEG"]) as image:
        expected_mode = "RGB" if colour else "L"
        if colour and _libjpeg_turbo_assumes_ycbcr(header) != job.ycbcr:
            if job.ycbcr:
                raise _Refused("Pillow cannot force YCbCr decoding of this stream")
            # Asking for YCbCr output makes libjpeg-turbo skip its colour conversion, so the
            # RGB components come out untouched.
            image.draft("YCbCr", image.size)
            expected_mode = "YCbCr"
        if image.mode != expected_mode:
            raise RuntimeError(f"Pillow decodes this stream as {image.mode}")
        image.load()
        buffer = image.tobytes()
    shape = (image.size[1], image.size[0], job.fmt.samples_per_pixel)
    return np.frombuffer(buffer, dtype=np.uint8).reshape(shape)


def _libjpeg_lossy(job: _Job) -> npt.NDArray[Any]:
    arr: npt.NDArray[Any] = _import("libjpeg").decode(job.data, 1 if job.ycbcr else 0)
    return arr


def _libjpeg_raw(job: _Job) -> npt.NDArray[Any]:
    arr: npt.NDArray[Any] = _import("libjpeg").decode(job.data, 0)
    return arr


_ljpeg = partial(_imagecodecs_decode, "LJPEG")


_jpegsof3 = partial(_imagecodecs_decode, "JPEGSOF3")


_jpegls_imagecodecs = partial(_imagecodecs_decode, "JPEGLS")


def _jpegls_pyjpegls(job: _Job) -> npt.NDArray[Any]:
    arr: npt.NDArray[Any] = _import("jpeg_ls").jlsread(job.data)
    return arr


_jpeg2k_imagecodecs = partial(_imagecodecs_decode, "JPEG2K")


def _htj2k_imagecodecs(job: _Job) -> npt.NDArray[Any]:
    if job.j2k is None or not job.j2k.reversible:
        # OpenJPH (imagecodecs 2026.3) wraps samples that the irreversible wavelet pushes
        # past the maximum around to 0, which turns white background black.
        raise _Refused("OpenJPH decodes irreversible codestreams wrongly")
    return _imagecodecs_decode("HTJ2K", job)


def _jpeg2k_openjpeg(job: _Job) -> npt.NDArray[Any]:
    # Format 0 is a bare codestream, which _prepare has cut out of any JP2 wrapper.
    arr: npt.NDArray[Any] = _import("openjpeg").decode(job.data, j2k_format=0)
    return arr


_jpegxl_imagecodecs = partial(_imagecodecs_decode, "JPEGXL")


def _rle_pylibjpeg(job: _Job) -> npt.NDArray[Any]:
    fmt = job.fmt
    decoded = _import("rle.utils").decode_frame(
        job.data, fmt.rows * fmt.columns, fmt.bits_allocated, "<"
    )
    if fmt.bits_allocated == 1:
        # pylibjpeg-rle unpacks single-bit frames to one byte per pixel.
        flat = np.frombuffer(decoded, dtype=np.uint8)
        bits: npt.NDArray[Any] = flat.reshape(fmt.samples_per_pixel, fmt.rows, fmt.columns)
        bytes_: npt.NDArray[Any] = bits.transpose(1, 2, 0)
        return bytes_
    # RLE stores one segment per sample plane, so the result is colour-by-plane.
    flat = np.frombuffer(decoded, dtype=fmt.dtype.newbyteorder("<"))
    planes: npt.NDArray[Any] = flat.reshape(fmt.samples_per_pixel, fmt.rows, fmt.columns)
    pixels: npt.NDArray[Any] = planes.transpose(1, 2, 0)
    return pixels


def _pydicom_frame_keywords(fmt: PixelFormat) -> dict[str, Any]:
    # pydicom's encoders and decoders take the Image Pixel attributes of one frame as keywords.
    return {
        "rows": fmt.rows,
        "columns": fmt.columns,
        "samples_per_pixel": fmt.samples_per_pixel,
        "bits_allocated": fmt.bits_allocated,
        "bits_stored": fmt.bits_stored,
        "pixel_representation": fmt.pixel_representation,
        "photometric_interpretation": fmt.photometric_interpretation,
        "planar_configuration": 0,
        "number_of_frames": 1,
    }


def _rle_pydicom(job: _Job) -> npt.NDArray[Any]:
    encaps = _import("pydicom.encaps")
    decoder = _import("pydicom.pixels").get_decoder(RLE_LOSSLESS)
    arr, _ = decoder.as_array(
        encaps.encapsulate([job.data]),
        decoding_plugin="pydicom",
        as_rgb=False,
        **_pydicom_frame_keywords(job.fmt),
    )
    result: npt.NDArray[Any] = arr
    return result


def _integer_samples(fmt: PixelFormat) -> bool:
    return not fmt.is_float and fmt.bits_allocated in (8, 16)


def _eight_bit(fmt: PixelFormat) -> bool:
    return not fmt.is_float and fmt.bits_allocated == 8 and fmt.samples_per_pixel in (1, 3)


def _rle_samples(fmt: PixelFormat) -> bool:
    return not fmt.is_float and fmt.bits_allocated in (1, 8, 16, 32)


def _pydicom_rle_samples(fmt: PixelFormat) -> bool:
    return not fmt.is_float and fmt.bits_allocated in (8, 16, 32)


def _j2k_samples(fmt: PixelFormat) -> bool:
    return not fmt.is_float and fmt.bits_allocated in (1, 8, 16, 32)


_IC = "imagecodecs"
_LIBJPEG = "pylibjpeg-libjpeg"

_JPEG_LOSSY_DECODERS = (
    _Decoder(
        "imagecodecs.jpeg8", _IC, "imagecodecs", _jpeg8_lossy, _integer_samples,
        converts_ycbcr=True,
    ),
    # Pillow cannot be told the colour space of every stream.
    _Decoder(
        "pillow", "pillow", "PIL", _pillow_jpeg, _eight_bit,
        converts_ycbcr=True, may_reject_valid=True,
    ),
    _Decoder(
        "pylibjpeg-libjpeg", _LIBJPEG, "libjpeg", _libjpeg_lossy, _integer_samples,
        converts_ycbcr=True,
    ),
)  # fmt: skip
# Lossless JPEG encoders of the past wrote streams with quirks that only some decoders
# accept, so each one defers to the next.
_JPEG_LOSSLESS_DECODERS = (
    _Decoder(
        "imagecodecs.jpeg8", _IC, "imagecodecs", _jpeg8_lossless, _integer_samples,
        may_reject_valid=True,
    ),
    _Decoder(
        "imagecodecs.ljpeg", _IC, "imagecodecs", _ljpeg, _integer_samples,
        may_reject_valid=True,
    ),
    _Decoder(
        "imagecodecs.jpegsof3", _IC, "imagecodecs", _jpegsof3, _integer_samples,
        may_reject_valid=True,
    ),
    _Decoder("pylibjpeg-libjpeg", _LIBJPEG, "libjpeg", _libjpeg_raw, _integer_samples),
)  # fmt: skip
_JPEG_LS_DECODERS = (
    _Decoder("imagecodecs.jpegls", _IC, "imagecodecs", _jpegls_imagecodecs, _integer_samples),
    _Decoder("pyjpegls", "pyjpegls", "jpeg_ls", _jpegls_pyjpegls, _integer_samples),
    _Decoder("pylibjpeg-libjpeg", _LIBJPEG, "libjpeg", _libjpeg_raw, _integer_samples),
)
_J2K_DECODERS = (
    _Decoder("imagecodecs.jpeg2k", _IC, "imagecodecs", _jpeg2k_imagecodecs, _j2k_samples),
    _Decoder(
        "pylibjpeg-openjpeg", "pylibjpeg-openjpeg", "openjpeg", _jpeg2k_openjpeg, _j2k_samples
    ),
)
# OpenJPH decodes HTJ2K about twice as fast as OpenJPEG but implements only part of it
# (no JPEG 2000 part 1 code-blocks, for example), so OpenJPEG >= 2.5 stays as the fallback.
_HTJ2K_DECODERS = (
    _Decoder(
        "imagecodecs.htj2k", _IC, "imagecodecs", _htj2k_imagecodecs, _j2k_samples,
        may_reject_valid=True,
    ),
    *_J2K_DECODERS,
)  # fmt: skip
_RLE_DECODERS = (
    _Decoder("pylibjpeg-rle", "pylibjpeg-rle", "rle", _rle_pylibjpeg, _rle_samples),
    _Decoder("pydicom", "pydicom", "pydicom", _rle_pydicom, _pydicom_rle_samples),
)

# pydicom 3.0 and pylibjpeg have no JPEG XL decoder; imagecodecs (libjxl) is the only one.
_JPEG_XL_DECODERS = (
    _Decoder("imagecodecs.jpegxl", _IC, "imagecodecs", _jpegxl_imagecodecs, _integer_samples),
)

_ALL_DECODERS: dict[str, tuple[_Decoder, ...]] = {
    JPEG_BASELINE: _JPEG_LOSSY_DECODERS,
    JPEG_EXTENDED: _JPEG_LOSSY_DECODERS,
    JPEG_LOSSLESS: _JPEG_LOSSLESS_DECODERS,
    JPEG_LOSSLESS_SV1: _JPEG_LOSSLESS_DECODERS,
    JPEG_LS_LOSSLESS: _JPEG_LS_DECODERS,
    JPEG_LS_NEAR_LOSSLESS: _JPEG_LS_DECODERS,
    J2K_LOSSLESS: _J2K_DECODERS,
    J2K: _J2K_DECODERS,
    J2K_PART2_LOSSLESS: _J2K_DECODERS,
    J2K_PART2: _J2K_DECODERS,
    HTJ2K_LOSSLESS: _HTJ2K_DECODERS,
    HTJ2K_LOSSLESS_RPCL: _HTJ2K_DECODERS,
    HTJ2K: _HTJ2K_DECODERS,
    RLE_LOSSLESS: _RLE_DECODERS,
    JPEG_XL_LOSSLESS: _JPEG_XL_DECODERS,
    JPEG_XL_RECOMPRESSION: _JPEG_XL_DECODERS,
    JPEG_XL: _JPEG_XL_DECODERS,
}

_DECODERS: dict[str, tuple[_Decoder, ...]] = {
    uid: tuple(d for d in decoders if _installed(d.module))
    for uid, decoders in _ALL_DECODERS.items()
}

_INSTALL_HINTS = {
    _IC: "pip install 'dicomslide[fast]' (or pip install imagecodecs)",
    "pillow": "pip install pillow",
    _LIBJPEG: "pip install pylibjpeg pylibjpeg-libjpeg",
    "pyjpegls": "pip install pyjpegls",
    "pylibjpeg-openjpeg": "pip install pylibjpeg pylibjpeg-openjpeg",
    "pylibjpeg-rle": "pip install pylibjpeg pylibjpeg-rle",
    "pydicom": "pip install pydicom",
}


# ---------------------------------------------------------------------------------------------
# Public functions


def is_supported(transfer_syntax_uid: str) -> bool:
    """Tell whether frames of a transfer syntax can be decoded with the installed packages.

    Parameters
    ----------
    transfer_syntax_uid: str
        Transfer Syntax UID

    Returns
    -------
    bool
        True for native syntaxes and for compressed syntaxes with at least one installed
        decoder; False for unknown syntaxes and for those whose decoders are missing
    """
    uid = _normalize_uid(transfer_syntax_uid)
    return uid in NATIVE or uid == DEFLATED_IMAGE_FRAME or bool(_DECODERS.get(uid))


@borrowed_doc(is_supported, only=("Parameters",))
def decoder_names(transfer_syntax_uid: str) -> tuple[str, ...]:
    """Name the installed decoders of a transfer syntax in the order they are tried.

    Returns
    -------
    tuple[str, ...]
        Decoder names, first choice first; ``("numpy",)`` for native syntaxes and an
        empty tuple for unknown syntaxes or when no decoder is installed
    """
    uid = _normalize_uid(transfer_syntax_uid)
    if uid in NATIVE:
        return ("numpy",)
    if uid == DEFLATED_IMAGE_FRAME:
        return ("zlib",)
    return tuple(d.name for d in _DECODERS.get(uid, ()))


def decode_frame(
    data: bytes | bytearray | memoryview,
    transfer_syntax_uid: str,
    fmt: PixelFormat,
    *,
    sop_instance_uid: str | None = None,
    frame_number: int | None = None,
    bit_offset: int = 0,
    out: npt.NDArray[Any] | None = None,
) -> npt.NDArray[Any]:
    """Decode one frame into a new array, or into ``out``.

    Parameters
    ----------
    data: bytes | bytearray | memoryview
        The frame: native pixel bytes or one compressed frame (a JPEG, JPEG-LS,
        JPEG 2000 or RLE stream; trailing padding after the end of a JPEG stream is allowed)
    transfer_syntax_uid: str
        Transfer Syntax UID of the frame; frames of Deflated Explicit VR Little Endian data
        sets must already be inflated
    fmt: PixelFormat
        Pixel format of the frame
    sop_instance_uid: str | None
        SOP Instance UID of the image, used in error messages
    frame_number: int | None
        One-based frame number, used in error messages
    bit_offset: int
        For native frames with BitsAllocated 1: the bit (0 to 7, counted from the least
        significant bit) of the first byte of `data` at which the frame starts, because
        frames of single-bit multi-frame images need not start on a byte boundary
    out: numpy.ndarray | None
        C-contiguous, writable array of shape ``(rows, columns, samples_per_pixel)`` and
        dtype ``fmt.dtype`` to hold the pixels. Lossy 8-bit colour JPEG frames decode
        straight into it (no array of their own, no copy); other frames are decoded, then
        copied in. After an error its contents are undefined.

    Returns
    -------
    numpy.ndarray
        C-contiguous, writable array of shape ``(rows, columns, samples_per_pixel)`` and
        dtype ``fmt.dtype`` that shares memory with nothing else (``out`` itself when
        given); colour frames are RGB and single-bit frames hold 0 and 1

    Raises
    ------
    dicomslide.errors.UnsupportedError
        If the transfer syntax, or this pixel format in it, is not supported
    dicomslide.errors.MissingCodecError
        If no decoder for the transfer syntax is installed; the message says what to install
    dicomslide.errors.DecodeError
        If the frame is corrupt, has the wrong length or decodes to the wrong shape
    dicomslide.errors.RegionError
        If `bit_offset` is out of range or used with a format that has no bit offsets, or
        if `out` is not an array the frame fits
    """
    if out is not None:
        _check_out(out, fmt)
        arr = _decode(
            data, transfer_syntax_uid, fmt, sop_instance_uid, frame_number, bit_offset, out
        )
        if arr is not out:
            out[...] = arr
        return out
    return _decode(data, transfer_syntax_uid, fmt, sop_instance_uid, frame_number, bit_offset)


def _check_out(out: npt.NDArray[Any], fmt: PixelFormat) -> None:
    shape = (fmt.rows, fmt.columns, fmt.samples_per_pixel)
    if not (
        isinstance(out, np.ndarray)
        and out.shape == shape
        and out.dtype == fmt.dtype
        and out.flags.c_contiguous
        and out.flags.writeable
    ):
        got = (
            f"shape {out.shape}, dtype {out.dtype}, C-contiguous {out.flags.c_contiguous}, "
            f"writable {out.flags.writeable}"
            if isinstance(out, np.ndarray)
            else type(out).__name__
        )
        raise RegionError(
            f"out must be a C-contiguous, writable array of shape {shape} and dtype "
            f"{fmt.dtype} for this frame; got {got}."
        )


def _decode(
    data: bytes | bytearray | memoryview,
    transfer_syntax_uid: str,
    fmt: PixelFormat,
    sop_instance_uid: str | None,
    frame_number: int | None,
    bit_offset: int,
    out: npt.NDArray[Any] | None = None,
) -> npt.NDArray[Any]:
    uid = _normalize_uid(transfer_syntax_uid)
    context = _Context(uid, sop_instance_uid, frame_number)
    if not 0 <= bit_offset <= 7:
        raise RegionError(f"bit_offset must be in 0..7, not {bit_offset}")
    if bit_offset and not (fmt.bits_allocated == 1 and uid in NATIVE):
        raise RegionError("bit_offset applies only to native frames with BitsAllocated 1")
    if uid in NATIVE:
        return _decode_native(
            bytes(data) if isinstance(data, memoryview) else data,
            fmt,
            big_endian=uid == EXPLICIT_VR_BIG_ENDIAN,
            bit_offset=bit_offset,
            context=context,
        )
    if uid == DEFLATED_IMAGE_FRAME:
        return _decode_native(
            _inflate(data, context), fmt, big_endian=False, bit_offset=0, context=context
        )
    decoders = _candidates(uid, fmt)
    job = _prepare(bytes(data), uid, fmt, context, out)
    return _run(decoders, job, context)


def sniff_transfer_syntax(data: bytes | bytearray | memoryview) -> str | None:
    """Guess the transfer syntax of a compressed frame from its first bytes.

    This is a last resort for frames whose transfer syntax is unknown; it cannot tell
    lossless from lossy variants apart and never recognizes native or RLE frames.

    Parameters
    ----------
    data: bytes | bytearray | memoryview
        The start of the frame (the header; a few hundred bytes usually suffice)

    Returns
    -------
    str | None
        JPEG Baseline for SOF0/SOF1 JPEG, JPEG Lossless SV1 for SOF3, JPEG-LS Lossless for
        SOF55, HTJ2K Lossless for a JPEG 2000 codestream with a CAP marker, JPEG 2000
        Lossless for other JPEG 2000 codestreams or JP2 files, JPEG XL Lossless for JPEG XL
        codestreams or containers; None otherwise
    """
    raw = bytes(data)
    header = _scan_jpeg(raw)
    if header is not None:
        if header.sof in (0xC0, 0xC1):
            return JPEG_BASELINE
        if header.sof == 0xC3:
            return JPEG_LOSSLESS_SV1
        if header.sof == 0xF7:
            return JPEG_LS_LOSSLESS
        return None
    j2k = _scan_j2k(raw)
    if j2k is not None:
        return HTJ2K_LOSSLESS if j2k.high_throughput else J2K_LOSSLESS
    if _is_jpeg_xl(raw):
        return JPEG_XL_LOSSLESS
    return None


def _is_jpeg_xl(data: bytes) -> bool:
    # A bare codestream starts with FF 0A, the ISO BMFF container with its signature box.
    return data[:2] == b"\xff\x0a" or data[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n"


# ---------------------------------------------------------------------------------------------
# Internals


@dataclass(frozen=True)
class _Context:
    uid: str
    sop_instance_uid: str | None
    frame_number: int | None

    def error(self, message: str) -> DecodeError:
        where = "frame"
        if self.frame_number is not None:
            where += f" {self.frame_number}"
        if self.sop_instance_uid is not None:
            where += f" of {self.sop_instance_uid}"
        name = _SYNTAX_NAMES.get(self.uid, self.uid)
        return DecodeError(
            f"cannot decode {where} ({name}): {message}",
            self.sop_instance_uid,
            self.frame_number,
        )


def _normalize_uid(uid: str) -> str:
    # UIDs read from files can keep their NUL or space padding.
    return str(uid).strip(" \x00")


def _candidates(uid: str, fmt: PixelFormat) -> list[_Decoder]:
    if uid not in _ALL_DECODERS:
        raise UnsupportedError(f"transfer syntax {uid} is not supported")
    installed = [d for d in _DECODERS.get(uid, ()) if d.accepts(fmt)]
    if installed:
        return installed
    name = _SYNTAX_NAMES[uid]
    wanted = [d for d in _ALL_DECODERS[uid] if d.accepts(fmt)]
    if not wanted:
        raise UnsupportedError(f"{name} ({uid}) frames with {_describe(fmt)} are not supported")
    raise MissingCodecError(_missing_message(name, uid, wanted))


def _missing_message(name: str, uid: str, wanted: list[_Decoder]) -> str:
    hints: list[str] = []
    for decoder in wanted:
        hint = _INSTALL_HINTS.get(decoder.requirement, f"pip install {decoder.requirement}")
        if hint not in hints:
            hints.append(hint)
    return f"decoding {name} ({uid}) needs a codec that is not installed: " + " or ".join(hints)


def _describe(fmt: PixelFormat) -> str:
    kind = "float" if fmt.is_float else ("signed" if fmt.pixel_representation else "unsigned")
    return (
        f"{fmt.samples_per_pixel} sample(s) of {fmt.bits_allocated} bits ({kind}), "
        f"{fmt.photometric_interpretation}"
    )


def _inflate(data: bytes | bytearray | memoryview, context: _Context) -> bytes:
    # The standard asks for raw deflate; a zlib or gzip wrapper is accepted as well.
    try:
        return _inflate_with(data, -zlib.MAX_WBITS)
    except zlib.error:
        pass
    try:
        return _inflate_with(data, zlib.MAX_WBITS | 32)
    except zlib.error as exc:
        raise context.error(f"deflate stream is corrupt: {exc}") from exc


def _inflate_with(data: bytes | bytearray | memoryview, wbits: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    inflated = inflater.decompress(data) + inflater.flush()
    if not inflater.eof:
        raise zlib.error("stream ends before its end marker")
    return inflated


def _decode_native(
    data: bytes | bytearray,
    fmt: PixelFormat,
    *,
    big_endian: bool,
    bit_offset: int,
    context: _Context,
) -> npt.NDArray[Any]:
    shape = (fmt.rows, fmt.columns, fmt.samples_per_pixel)
    if fmt.bits_allocated == 1:
        count = fmt.rows * fmt.columns * fmt.samples_per_pixel
        expected = math.ceil((bit_offset + count) / 8)
    else:
        expected = fmt.frame_nbytes
    # A frame of odd length can keep the padding byte that evens out the Pixel Data value.
    if len(data) != expected and not (expected % 2 and len(data) == expected + 1):
        raise context.error(f"native frame has {len(data)} bytes, expected {expected}")

    if fmt.bits_allocated == 1:
        packed = np.frombuffer(data, dtype=np.uint8, count=expected)
        bits = np.unpackbits(packed, bitorder="little")
        return bits[bit_offset : bit_offset + count].reshape(shape)

    stored = fmt.dtype.newbyteorder(">" if big_endian else "<")
    if fmt.is_native_422:
        if fmt.columns % 2 or fmt.planar_configuration:
            raise context.error(
                "YBR_FULL_422 native frames need an even number of columns and "
                "PlanarConfiguration 0"
            )
        pairs = np.frombuffer(data, dtype=stored, count=fmt.rows * fmt.columns * 2)
        return _ybr_to_rgb(_upsample_422(pairs.reshape(fmt.rows, fmt.columns // 2, 4)), fmt)

    samples = np.frombuffer(data, dtype=stored, count=math.prod(shape))
    if fmt.planar_configuration and fmt.samples_per_pixel > 1:
        view = samples.reshape(shape[2], shape[0], shape[1]).transpose(1, 2, 0)
    else:
        view = samples.reshape(shape)
    # The copy is also the byte swap and detaches the result from the caller's buffer.
    arr: npt.NDArray[Any] = view.astype(fmt.dtype, order="C", copy=True)
    _clear_unused_bits(arr, fmt)
    if fmt.is_colour and fmt.photometric_interpretation == "YBR_FULL":
        return _ybr_to_rgb(arr, fmt)
    return arr


def _clear_unused_bits(arr: npt.NDArray[Any], fmt: PixelFormat) -> None:
    # Bits above BitsStored are not pixel data (they once held overlays) and signed samples
    # need their sign bit extended to the full width of the dtype.
    unused = fmt.bits_allocated - fmt.bits_stored
    if fmt.is_float or unused == 0:
        return
    if fmt.pixel_representation:
        np.left_shift(arr, unused, out=arr)
        np.right_shift(arr, unused, out=arr)
    else:
        np.bitwise_and(arr, arr.dtype.type((1 << fmt.bits_stored) - 1), out=arr)


def _upsample_422(pairs: npt.NDArray[Any]) -> npt.NDArray[Any]:
    # Each group of four samples is Y0 Y1 Cb Cr for two horizontally adjacent pixels.
    rows, half, _ = pairs.shape
    out = np.empty((rows, half * 2, 3), dtype=pairs.dtype.newbyteorder("="))
    out[:, 0::2, 0] = pairs[:, :, 0]
    out[:, 1::2, 0] = pairs[:, :, 1]
    out[:, :, 1] = np.repeat(pairs[:, :, 2], 2, axis=1)
    out[:, :, 2] = np.repeat(pairs[:, :, 3], 2, axis=1)
    return out


def _ybr_to_rgb(arr: npt.NDArray[Any], fmt: PixelFormat) -> npt.NDArray[Any]:
    offset = float(1 << (fmt.bits_stored - 1))
    top = float((1 << fmt.bits_stored) - 1)
    ycbcr = arr.astype(np.float32)
    ycbcr[..., 1:] -= offset
    rgb = ycbcr @ _YBR_TO_RGB
    np.rint(rgb, out=rgb)
    np.clip(rgb, 0.0, top, out=rgb)
    out: npt.NDArray[Any] = rgb.astype(fmt.dtype)
    return out


_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
# SOF0..SOF15 without DHT (C4), JPG (C8) and DAC (CC), plus SOF55 of JPEG-LS.
_JPEG_SOF_MARKERS = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC} | {0xF7})


def _scan_jpeg(data: bytes) -> _JpegHeader | None:
    """Read the marker segments up to the first scan, or return None if malformed."""
    size = len(data)
    if size < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    pos = 2
    sof = -1
    ids: tuple[int, ...] = ()
    jfif = False
    adobe: int | None = None
    dims = (0, 0, 0)
    while pos + 1 < size:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        pos += 2
        if marker in _JPEG_STANDALONE_MARKERS:
            continue
        if pos + 2 > size:
            return None
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2 or pos + length > size:
            return None
        segment = data[pos + 2 : pos + length]
        if marker in _JPEG_SOF_MARKERS and len(segment) >= 6:
            sof = marker
            ids = tuple(segment[6 : 6 + 3 * segment[5] : 3])
            dims = (
                int.from_bytes(segment[1:3], "big"),
                int.from_bytes(segment[3:5], "big"),
                segment[0],
            )
        elif marker == 0xE0 and segment.startswith(b"JFIF\x00"):
            jfif = True
        elif marker == 0xEE and segment.startswith(b"Adobe") and len(segment) >= 12:
            adobe = segment[11]
        elif marker == 0xDA:
            if sof < 0:
                return None
            return _JpegHeader(sof, ids, jfif, adobe, pos + length, dims)
        pos += length
    return None


def _jpeg_stream_is_ycbcr(header: _JpegHeader, fmt: PixelFormat) -> bool:
    if len(header.component_ids) != 3:
        return False
    # Markers in the stream describe the data better than the DICOM header, which some
    # converters fill in without looking at the stream; only a stream without any colour
    # markers is interpreted according to the Photometric Interpretation.
    if header.adobe_transform is not None:
        return header.adobe_transform != 0
    if header.component_ids == (0x52, 0x47, 0x42):  # 'R', 'G', 'B'
        return False
    if header.jfif:
        return True
    return fmt.photometric_interpretation.startswith("YBR")


def _scan_j2k(data: bytes) -> _J2kHeader | None:
    """Find the codestream and read its main header, or return None if malformed."""
    start, end = 0, len(data)
    if data[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n":
        box = _find_jp2_codestream(data)
        if box is None:
            return None
        start, end = box
    if data[start : start + 4] != b"\xff\x4f\xff\x51":
        return None
    pos = start + 2
    mct = high_throughput = reversible = False
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker in (0x90, 0x93):  # SOT or SOD: the main header is over
            return _J2kHeader(start, end, mct, high_throughput, reversible)
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2 or pos + 2 + length > end:
            return None
        if marker == 0x50:  # CAP is mandatory in HTJ2K codestreams
            high_throughput = True
        elif marker == 0x52 and length >= 12:  # COD
            mct = data[pos + 8] != 0
            reversible = data[pos + 13] == 1  # 5/3 wavelet
        pos += 2 + length
    return None


def _find_jp2_codestream(data: bytes) -> tuple[int, int] | None:
    pos = 0
    size = len(data)
    while pos + 8 <= size:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        header = 8
        if length == 1:
            if pos + 16 > size:
                return None
            length = int.from_bytes(data[pos + 8 : pos + 16], "big")
            header = 16
        elif length == 0:
            length = size - pos
        if length < header:
            return None
        if kind == b"jp2c":
            return pos + header, min(pos + length, size)
        pos += length
    return None


def _prepare(
    data: bytes,
    uid: str,
    fmt: PixelFormat,
    context: _Context,
    out: npt.NDArray[Any] | None = None,
) -> _Job:
    colour = fmt.is_colour
    if uid in JPEG_FAMILY:
        header = _scan_jpeg(data)
        if header is None:
            raise context.error("not a JPEG stream, or its header is truncated or corrupt")
        # Markers cannot occur inside entropy-coded data, so a stream without EOI after its
        # first scan is truncated; libjpeg-turbo would silently fill it with grey.
        if data.rfind(b"\xff\xd9", header.scan_end) < 0:
            raise context.error("JPEG stream is truncated (no EOI marker)")
        if uid in _JPEG_LOSSY:
            ycbcr = colour and _jpeg_stream_is_ycbcr(header, fmt)
        elif colour and header.adobe_transform is not None:
            # An Adobe marker states the colour transform outright, and every JPEG decoder
            # (and pydicom) obeys it; wsidicom writes RGB lossless frames with transform 0
            # under a YBR_FULL label.
            ycbcr = header.adobe_transform != 0
        else:
            # Lossless streams are stored in the colour space the DICOM header names.
            ycbcr = colour and fmt.photometric_interpretation.startswith("YBR_FULL")
        # Only JPEG decoders write into the caller's array; other frames are copied in.
        return _Job(data, fmt, ycbcr, header, out=out)
    if uid == RLE_LOSSLESS:
        if len(data) < 64:
            raise context.error(f"RLE frame of {len(data)} bytes is shorter than its header")
        return _Job(data, fmt, colour and fmt.photometric_interpretation == "YBR_FULL")
    if uid in JPEG_XL_FAMILY:
        if not _is_jpeg_xl(data):
            raise context.error("not a JPEG XL codestream or container")
        # libjxl hands out the colour samples it was given (an XYB transform inside the
        # codestream is undone by the decoder), so there is nothing to convert.
        return _Job(data, fmt, False)
    j2k = _scan_j2k(data)
    if j2k is None:
        raise context.error("not a JPEG 2000 codestream, or its main header is corrupt")
    if j2k.start or j2k.end != len(data):
        data = data[j2k.start : j2k.end]
    # The decoders undo a multiple component transform themselves; without one the
    # components are as stored, which the Photometric Interpretation describes. YBR_FULL_422
    # cannot describe a JPEG 2000 codestream (it has no 4:2:2 chroma); converters that write
    # it (OrthancWSIDicomizer) store RGB, so only YBR_FULL means stored YCbCr.
    ycbcr = colour and not j2k.mct and fmt.photometric_interpretation == "YBR_FULL"
    return _Job(data, fmt, ycbcr, j2k=j2k)


def _run(decoders: list[_Decoder], job: _Job, context: _Context) -> npt.NDArray[Any]:
    failures: list[tuple[_Decoder, Exception]] = []
    for decoder in decoders:
        try:
            raw = decoder.decode(job)
        except _Refused as exc:
            failures.append((decoder, exc))
            continue
        except MemoryError:
            raise
        except Exception as exc:  # libraries raise all kinds of exceptions
            failures.append((decoder, exc))
            if isinstance(exc, ImportError) or decoder.may_reject_valid:
                continue
            break
        return _finish(raw, job, decoder, context)
    first_decoder, first_error = next(
        ((d, e) for d, e in failures if not isinstance(e, (ImportError, _Refused))),
        failures[0],
    )
    if all(isinstance(exc, (ImportError, _Refused)) for _, exc in failures):
        name = _SYNTAX_NAMES[context.uid]
        refused = {d.name for d, exc in failures if isinstance(exc, _Refused)}
        wanted = [
            d for d in _ALL_DECODERS[context.uid] if d.accepts(job.fmt) and d.name not in refused
        ]
        if not wanted:
            raise UnsupportedError(
                f"no decoder handles this {name} frame correctly: {first_error}"
            ) from first_error
        raise MissingCodecError(_missing_message(name, context.uid, wanted)) from first_error
    tried = ", ".join(d.name for d, _ in failures)
    raise context.error(
        f"{first_decoder.name}: {first_error} (decoders tried: {tried})"
    ) from first_error


def _finish(
    arr: npt.NDArray[Any], job: _Job, decoder: _Decoder, context: _Context
) -> npt.NDArray[Any]:
    fmt = job.fmt
    shape = (fmt.rows, fmt.columns, fmt.samples_per_pixel)
    if arr.ndim == 2:
        arr = arr[:, :, np.newaxis]
    if arr.shape != shape:
        raise context.error(
            f"{decoder.name} decoded an array of shape {arr.shape}, expected {shape} "
            f"from the pixel format"
        )
    target = fmt.dtype
    if arr.dtype != target:
        if arr.dtype.kind not in "uib" or arr.dtype.itemsize > target.itemsize:
            raise context.error(
                f"{decoder.name} decoded {arr.dtype} samples, which do not fit "
                f"BitsAllocated {fmt.bits_allocated}"
            )
        arr = arr.astype(target)
    if job.ycbcr and not decoder.converts_ycbcr:
        return _ybr_to_rgb(arr, fmt)
    # Decoders hand out new arrays, but some are read-only or strided views of them.
    if not (arr.flags.c_contiguous and arr.flags.writeable):
        arr = np.array(arr, order="C", copy=True)
    return arr

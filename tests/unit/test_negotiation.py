"""Which transfer syntax the DICOMweb client asks for first (``sources/web/negotiation``)."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from dicomslide._syntaxes import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    J2K,
    JPEG_BASELINE,
    RLE_LOSSLESS,
)
from dicomslide.sources.web.negotiation import InstanceNegotiation, implied_transfer_syntax


def _jpeg_metadata(**changes: object) -> Dataset:
    # What OrthancWSIDicomizer writes for JPEG tiles, and Orthanc serves without
    # Available Transfer Syntax UID.
    values: dict[str, object] = {
        "LossyImageCompression": "01",
        "LossyImageCompressionMethod": "ISO_10918_1",
        "PhotometricInterpretation": "YBR_FULL_422",
        "SamplesPerPixel": 3,
        "BitsStored": 8,
    }
    values.update(changes)
    ds = Dataset()
    for key, value in values.items():
        if value is not None:
            setattr(ds, key, value)
    return ds


def test_jpeg_baseline_is_implied_by_lossy_ybr_422_8_bit() -> None:
    assert implied_transfer_syntax(_jpeg_metadata()) == JPEG_BASELINE
    # The latest of several compressions counts.
    ds = _jpeg_metadata(LossyImageCompressionMethod=["ISO_15444_1", "ISO_10918_1"])
    assert implied_transfer_syntax(ds) == JPEG_BASELINE


@pytest.mark.parametrize(
    "changes",
    [
        {"LossyImageCompression": "00"},
        {"LossyImageCompression": None},
        {"LossyImageCompressionMethod": None},
        {"LossyImageCompressionMethod": ["ISO_10918_1", "ISO_15444_1"]},
        {"PhotometricInterpretation": "RGB"},  # could be stored decompressed
        {"PhotometricInterpretation": "YBR_ICT"},  # JPEG 2000, lossless or not
        {"BitsStored": 12},
        {"SamplesPerPixel": 1, "PhotometricInterpretation": "MONOCHROME2"},
    ],
)
def test_nothing_ambiguous_is_implied(changes: dict[str, object]) -> None:
    assert implied_transfer_syntax(_jpeg_metadata(**changes)) is None


def test_explicit_syntax_prefers_what_the_server_said() -> None:
    state = InstanceNegotiation(implied=JPEG_BASELINE)
    assert state.explicit_syntax() == JPEG_BASELINE
    state.syntax = J2K
    assert state.explicit_syntax() == J2K
    assert not state.settled
    state.explicit = False  # refused: stored bytes from now on
    assert state.explicit_syntax() is None


@pytest.mark.parametrize("syntax", [EXPLICIT_VR_LITTLE_ENDIAN, "1.2.3.4.5", None])
def test_native_and_unknown_syntaxes_ask_for_stored_bytes(syntax: str | None) -> None:
    assert InstanceNegotiation(syntax=syntax).explicit_syntax() is None
    assert InstanceNegotiation(syntax=RLE_LOSSLESS).explicit_syntax() == RLE_LOSSLESS

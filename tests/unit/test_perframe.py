"""The raw-bytes reader of per-frame positions agrees with pydicom on every layout."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement

from dicomslide.perframe import _fast, _quick, _slow, extract_frame_positions, first_per_frame_item
from dicomslide.synthetic import write_slide
from tests.support.positions import assert_same_positions
from tests.support.slides import slide_spec

SPECS = {
    "sparse_explicit": slide_spec(
        (300, 400),
        64,
        1,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        dimension_organization="TILED_SPARSE",
        shuffle_frames=True,
        sparse_missing_tiles=((1, 2),),
    ),
    "none_implicit_multi_z_paths": slide_spec(
        (200, 260),
        64,
        1,
        transfer_syntax_uid="1.2.840.10008.1.2",
        dimension_organization="NONE",
        photometric="MONOCHROME2",
        optical_paths=2,
        channels_in_separate_instances=False,
        focal_planes=3,
        icc_profile=False,
    ),
    "sparse_rle_concatenated": slide_spec(
        (300, 400),
        64,
        1,
        transfer_syntax_uid="1.2.840.10008.1.2.5",
        dimension_organization="TILED_SPARSE",
        concatenation_parts=2,
    ),
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_fast_reader_equals_pydicom(name: str, tmp_path: Path) -> None:
    files = write_slide(tmp_path, SPECS[name])
    checked = 0
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if "PerFrameFunctionalGroupsSequence" not in ds or "TotalPixelMatrixRows" not in ds:
            continue
        fresh = pydicom.dcmread(path, stop_before_pixels=True)
        assert isinstance(fresh.get_item(0x52009230), RawDataElement)
        n = int(ds.NumberOfFrames)
        raw = fresh.get_item(0x52009230)
        slow = _slow(ds.PerFrameFunctionalGroupsSequence, n)
        for fast in (_quick(raw, n), _fast(raw, n), extract_frame_positions(fresh, n)):
            assert_same_positions(fast, slow)
            assert fast is not None
            assert (fast.rows >= 1).all()
        # the fast path did not make pydicom parse the sequence
        assert isinstance(fresh.get_item(0x52009230), RawDataElement)
        first = first_per_frame_item(fresh)
        assert first == ds.PerFrameFunctionalGroupsSequence[0]
        checked += 1
    assert checked >= 1


def test_wrong_item_count_gives_none(tmp_path: Path) -> None:
    files = write_slide(tmp_path, SPECS["sparse_explicit"])
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert extract_frame_positions(ds, int(ds.NumberOfFrames) + 1) is None

"""Hostile and broken input: typed errors naming the file, instance and frame; no crash, hang
or allocation sized by unchecked metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

import dicomslide
from dicomslide.synthetic import write_slide
from tests.support.slides import slide_spec

SPEC = slide_spec((300, 400), 128, 1, bare=True)
NATIVE = slide_spec((300, 400), 128, 1, bare=True, transfer_syntax_uid=ExplicitVRLittleEndian)


async def _read_all(folder: Path, index: Path) -> np.ndarray:
    client = dicomslide.DICOMfileClient(folder, index_dir=index)
    try:
        slide = (await dicomslide.find_slides(client))[0]
        rows, cols = slide.size
        return await slide.get_image_region((0, 0), 0, (rows, cols))
    finally:
        await client.aclose()


async def test_truncated_file_names_file_and_frame(tmp_path: Path) -> None:
    files = write_slide(tmp_path / "s", SPEC)
    data = files[0].read_bytes()
    files[0].write_bytes(data[: len(data) - 3000])
    with pytest.raises(dicomslide.DicomSlideError) as info:
        await _read_all(tmp_path / "s", tmp_path / "i")
    message = str(info.value)
    assert isinstance(info.value, dicomslide.InvalidDataError)
    assert files[0].name in message
    assert str(pydicom.dcmread(files[0], stop_before_pixels=True).SOPInstanceUID) in message


async def test_corrupt_jpeg_frame_is_a_decode_error_naming_instance_and_frame(
    tmp_path: Path,
) -> None:
    files = write_slide(tmp_path / "s", SPEC)
    ds = pydicom.dcmread(files[0])
    frames = list(
        pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames))
    )
    broken = bytearray(frames[4])
    broken[200:400] = b"\x00" * 200  # inside the entropy-coded data and headers
    broken[2:20] = b"\xff" * 18
    frames[4] = bytes(broken)
    ds.PixelData = pydicom.encaps.encapsulate(frames, has_bot=True)
    ds.save_as(files[0])
    with pytest.raises(dicomslide.DecodeError) as info:
        await _read_all(tmp_path / "s", tmp_path / "i")
    assert info.value.frame_number == 5
    assert info.value.sop_instance_uid == ds.SOPInstanceUID
    assert isinstance(info.value, ValueError)


async def test_frame_count_larger_than_pixel_data(tmp_path: Path) -> None:
    files = write_slide(tmp_path / "s", NATIVE)
    ds = pydicom.dcmread(files[0])
    ds.NumberOfFrames = int(ds.NumberOfFrames) + 5
    ds.save_as(files[0])
    client = dicomslide.DICOMfileClient(tmp_path / "s", index_dir=tmp_path / "i")
    try:
        slide = (await dicomslide.find_slides(client))[0]
        # the last frames do not exist in the file
        with pytest.raises(dicomslide.DicomSlideError) as info:
            await slide.get_image_region((0, 0), 0, slide.size)
        assert ds.SOPInstanceUID in str(info.value) or files[0].name in str(info.value)
    finally:
        await client.aclose()


async def test_native_frame_size_contradicting_rows_and_columns(tmp_path: Path) -> None:
    files = write_slide(tmp_path / "s", NATIVE)
    ds = pydicom.dcmread(files[0])
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.save_as(files[0])
    with pytest.raises(dicomslide.DicomSlideError) as info:
        await _read_all(tmp_path / "s", tmp_path / "i")
    assert "frame" in str(info.value).lower()


async def test_implausible_frame_count_is_rejected_without_allocating(tmp_path: Path) -> None:
    files = write_slide(tmp_path / "s", SPEC)
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    ds.NumberOfFrames = 2_000_000_000
    with pytest.raises(dicomslide.InvalidDataError, match="frames"):
        dicomslide.TiledImage(dicomslide.DICOMfileClient(tmp_path / "s"), ds).frame_index  # noqa: B018


async def test_huge_declared_matrix_is_rejected(tmp_path: Path) -> None:
    files = write_slide(tmp_path / "s", SPEC)
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    ds.TotalPixelMatrixRows = 2**31 - 1
    ds.TotalPixelMatrixColumns = 2**31 - 1
    with pytest.raises(dicomslide.InvalidDataError):
        dicomslide.TiledImage(dicomslide.DICOMfileClient(tmp_path / "s"), ds).frame_index  # noqa: B018


async def test_garbage_files_in_the_folder_are_skipped(tmp_path: Path) -> None:
    write_slide(tmp_path / "s", SPEC)
    (tmp_path / "s" / "notes.txt").write_text("not dicom")
    (tmp_path / "s" / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 50)
    region = await _read_all(tmp_path / "s", tmp_path / "i")
    assert region.shape == (300, 400, 3)


async def test_non_client_objects_are_rejected_with_a_type_error() -> None:
    with pytest.raises(TypeError, match="DICOMClient"):
        await dicomslide.find_slides(object())


async def test_region_too_large_to_allocate_is_refused(tmp_path: Path) -> None:
    write_slide(tmp_path / "s", SPEC)
    client = dicomslide.DICOMfileClient(tmp_path / "s", index_dir=tmp_path / "i")
    try:
        slide = (await dicomslide.find_slides(client))[0]
        with pytest.raises(dicomslide.RegionError, match="GiB"):
            await slide.get_image_region((0, 0), 0, (60000, 60000))
    finally:
        await client.aclose()

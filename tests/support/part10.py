"""Hand-built VL Whole Slide Microscopy Part 10 datasets for tests of the file readers."""

from __future__ import annotations

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import generate_uid

WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"


def padded(frame: bytes) -> bytes:
    """A frame as encapsulated Pixel Data stores it: with a zero byte added to an odd length."""
    return frame + b"\x00" * (len(frame) % 2)


def wsi_dataset(
    syntax: str, frames: int, rows: int, columns: int, spp: int = 1, bits: int = 8
) -> Dataset:
    """A WSI dataset with file meta and image pixel module, but no Pixel Data yet.

    Parameters
    ----------
    syntax: str
        Transfer Syntax UID
    frames, rows, columns, spp, bits: int
        Number of Frames, Rows, Columns, Samples per Pixel, Bits Allocated (and Stored)

    Returns
    -------
    pydicom.Dataset
        The dataset, with new SOP Instance, Study and Series UIDs
    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = WSI
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = WSI
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Rows = rows
    ds.Columns = columns
    ds.SamplesPerPixel = spp
    ds.PhotometricInterpretation = "MONOCHROME2" if spp == 1 else "RGB"
    if spp > 1:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = frames
    return ds


def set_pixel_data(
    ds: Dataset, value: bytes, vr: str, extended: tuple[bytes, bytes] | None = None
) -> None:
    """Add Pixel Data (and an Extended Offset Table), encapsulated unless the syntax is native.

    Parameters
    ----------
    ds: pydicom.Dataset
        Dataset made by :func:`wsi_dataset`
    value: bytes
        Encapsulated items, or native frames back to back
    vr: str
        ``"OB"`` or ``"OW"``
    extended: tuple[bytes, bytes] | None
        Extended Offset Table and its Lengths
    """
    if extended is not None:
        ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = extended
    ds.add_new(0x7FE00010, vr, value)
    ds["PixelData"].is_undefined_length = ds.file_meta.TransferSyntaxUID.is_encapsulated

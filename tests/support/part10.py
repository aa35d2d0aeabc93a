"""Hand-built VL Whole Slide Microscopy Part 10 datasets for tests of the file readers."""

from __future__ import annotations

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import generate_uid

WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"


def padded(frame: bytes) -> bytes:
    """A frame as encapsulated Pixel Data stores it: padded to an even length.

    Parameters
    ----------
    frame: bytes
        Encoded frame

    Returns
    -------
    bytes
        The frame, with one zero byte added when its length is odd
    """
    return frame + b"\x00" * (len(frame) % 2)


def wsi_dataset(
    syntax: str,
    pixel_data: bytes,
    *,
    encapsulated: bool,
    pixel_vr: str,
    frames: int,
    rows: int,
    columns: int,
    spp: int = 1,
    bits: int = 8,
    extended: tuple[bytes, bytes] | None = None,
    sop: str | None = None,
) -> Dataset:
    """A WSI dataset with file meta, image pixel module and Pixel Data, ready to be saved.

    Parameters
    ----------
    syntax: str
        Transfer Syntax UID
    pixel_data: bytes
        Value of Pixel Data (encapsulated items, or native frames back to back)
    encapsulated: bool
        Whether Pixel Data is encapsulated (undefined length)
    pixel_vr: str
        VR of Pixel Data (``"OB"`` or ``"OW"``)
    frames, rows, columns, spp, bits: int
        Number of Frames, Rows, Columns, Samples per Pixel, Bits Allocated and Stored
    extended: tuple[bytes, bytes] | None
        Extended Offset Table and its Lengths
    sop: str | None
        SOP Instance UID (a new one when None)

    Returns
    -------
    pydicom.Dataset
        The dataset; study and series UIDs are new, callers add what else they need
    """
    sop = sop or generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = WSI
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = WSI
    ds.SOPInstanceUID = sop
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
    if extended is not None:
        ds.ExtendedOffsetTable = extended[0]
        ds.ExtendedOffsetTableLengths = extended[1]
    ds.add_new(0x7FE00010, pixel_vr, pixel_data)
    if encapsulated:
        ds["PixelData"].is_undefined_length = True
    return ds

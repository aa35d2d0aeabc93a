"""Test data of the scale benchmark: archives of many slides and instances of many frames.

Both are made fast and cached under ``~/.cache/dicomslide-test/scale`` (or
``$DICOMSLIDE_SCALE_CACHE``): an archive is one small synthetic slide (three instances: one
volume level, label and overview, written by :func:`dicomslide.synthetic.write_slide`) copied
``S`` times with new study, series, instance and frame of reference UIDs and container
identifier; a sparse instance of ``N`` frames repeats one 32x32 JPEG tile with one
Per-Frame Functional Groups item per frame.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit

from dicomslide.synthetic import SlideSpec, write_slide

__all__ = ["cache_root", "make_archive", "make_sparse_instance"]

_TEMPLATE_SPEC = SlideSpec(
    size=(128, 128), tile_size=(64, 64), levels=1, label=True, overview=True
)


def cache_root() -> Path:
    """Where generated scale data is kept between runs.

    Returns
    -------
    pathlib.Path
        ``$DICOMSLIDE_SCALE_CACHE`` or ``~/.cache/dicomslide-test/scale``
    """
    env = os.environ.get("DICOMSLIDE_SCALE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "dicomslide-test" / "scale"


def _uid(prefix: str, *parts: int) -> str:
    return prefix + ".".join(str(p) for p in parts)


def make_archive(slides: int, root: Path | None = None) -> Path:
    """A folder of ``slides`` slides, one sub-folder per slide, three instances each.

    Parameters
    ----------
    slides: int
        Number of slides
    root: pathlib.Path | None
        Parent folder (default: :func:`cache_root`)

    Returns
    -------
    pathlib.Path
        The folder (reused when already complete)
    """
    folder = (root or cache_root()) / f"archive-{slides}"
    done = folder / ".complete"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    template_dir = folder.parent / f".template-{os.getpid()}"
    shutil.rmtree(template_dir, ignore_errors=True)
    templates = []
    for path in write_slide(template_dir, _TEMPLATE_SPEC):
        templates.append((path.name, pydicom.dcmread(path)))
    shutil.rmtree(template_dir, ignore_errors=True)
    base = "1.2.826.0.1.3680043.10.1499.9."
    for s in range(slides):
        target = folder / f"slide{s:05d}"
        target.mkdir(parents=True)
        for i, (name, ds) in enumerate(templates):
            ds.StudyInstanceUID = _uid(base, 1, s)
            ds.SeriesInstanceUID = _uid(base, 2, s)
            ds.FrameOfReferenceUID = _uid(base, 3, s)
            ds.SOPInstanceUID = _uid(base, 4, s, i)
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.ContainerIdentifier = f"SCALE-{s:05d}"
            ds.PatientID = f"P-{s:05d}"
            ds.save_as(target / name, enforce_file_format=True)
    done.write_text("")
    return folder


def _jpeg_tile() -> bytes:
    from PIL import Image

    rgb = np.zeros((32, 32, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_sparse_instance(frames: int, root: Path | None = None) -> Path:
    """A folder with one TILED_SPARSE instance of ``frames`` 32x32 JPEG frames.

    Frames form a square-ish grid; each has a Per-Frame Functional Groups item with its
    Plane Position (Slide) (row and column position, X/Y/Z offsets).

    Parameters
    ----------
    frames: int
        Number of frames
    root: pathlib.Path | None
        Parent folder (default: :func:`cache_root`)

    Returns
    -------
    pathlib.Path
        The folder (reused when already complete)
    """
    folder = (root or cache_root()) / f"sparse-{frames}"
    done = folder / ".complete"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    tile = 32
    grid = int(np.ceil(np.sqrt(frames)))
    spacing = 0.0005
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.6"
    base = f"1.2.826.0.1.3680043.10.1499.8.{frames}."
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.6"
    ds.SOPInstanceUID = base + "4"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = base + "1"
    ds.SeriesInstanceUID = base + "2"
    ds.FrameOfReferenceUID = base + "3"
    ds.Modality = "SM"
    ds.PatientID = "SCALE"
    ds.PatientName = "Scale^Sparse"
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ContainerIdentifier = f"SPARSE-{frames}"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.ContentDate = "20240101"
    ds.ContentTime = "120000"
    ds.AcquisitionDateTime = "20240101120000"
    ds.Manufacturer = "dicomslide"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.Rows = tile
    ds.Columns = tile
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01"
    ds.NumberOfFrames = frames
    ds.TotalPixelMatrixRows = grid * tile
    ds.TotalPixelMatrixColumns = grid * tile
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.NumberOfOpticalPaths = 1
    ds.DimensionOrganizationType = "TILED_SPARSE"
    ds.ImagedVolumeWidth = grid * tile * spacing
    ds.ImagedVolumeHeight = grid * tile * spacing
    ds.ImagedVolumeDepth = 0.001
    origin = Dataset()
    origin.XOffsetInSlideCoordinateSystem = 20.0
    origin.YOffsetInSlideCoordinateSystem = 40.0
    ds.TotalPixelMatrixOriginSequence = [origin]
    ds.ImageOrientationSlide = [0.0, -1.0, 0.0, -1.0, 0.0, 0.0]
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [spacing, spacing]
    measures.SliceThickness = 0.001
    measures.SpacingBetweenSlices = 0.001
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    op = Dataset()
    op.OpticalPathIdentifier = "1"
    illum = Dataset()
    illum.CodeValue = "414298005"
    illum.CodingSchemeDesignator = "SCT"
    illum.CodeMeaning = "Full Spectrum"
    op.IlluminationTypeCodeSequence = [illum]
    op.IlluminationWaveLength = 400
    ds.OpticalPathSequence = [op]
    items = []
    for k in range(frames):
        r, c = divmod(k, grid)
        item = Dataset()
        pos = Dataset()
        pos.RowPositionInTotalImagePixelMatrix = r * tile + 1
        pos.ColumnPositionInTotalImagePixelMatrix = c * tile + 1
        pos.XOffsetInSlideCoordinateSystem = round(20.0 + r * tile * spacing, 6)
        pos.YOffsetInSlideCoordinateSystem = round(40.0 + c * tile * spacing, 6)
        pos.ZOffsetInSlideCoordinateSystem = 0.0
        item.PlanePositionSlideSequence = [pos]
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = items
    ds.PixelData = encapsulate([_jpeg_tile()] * frames, has_bot=False)
    ds["PixelData"].VR = "OB"
    ds.save_as(folder / "sparse.dcm", enforce_file_format=True)
    done.write_text("")
    return folder

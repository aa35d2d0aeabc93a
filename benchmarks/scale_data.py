"""Test data of the scale benchmark: archives of many slides and instances of many frames.

Both are made fast and cached under ``~/.cache/dicomslide-test/scale`` (or
``$DICOMSLIDE_SCALE_CACHE``): an archive is one small synthetic slide (three instances: one
volume level, label and overview, written by :func:`dicomslide.synthetic.write_slide`) copied
``S`` times with new study, series, instance and frame of reference UIDs and container
identifier; a sparse instance of ``N`` frames repeats one 32x32 JPEG tile with one
Per-Frame Functional Groups item per frame.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames

from dicomslide.synthetic import SlideSpec, frame_position_mm, write_slide

__all__ = ["cache_root", "make_data"]

_TEMPLATE_SPEC = SlideSpec(size=(128, 128), tile_size=(64, 64), levels=1)


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


def _cached(name: str, root: Path | None, build: Callable[[Path], None]) -> Path:
    """``root/name`` (default root: :func:`cache_root`), built by ``build`` unless complete."""
    folder = (root or cache_root()) / name
    done = folder / ".complete"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        build(folder)
        done.write_text("")
    return folder


def make_data(kind: str, size: int, root: Path | None = None) -> Path:
    """A folder of scale data, made once and reused.

    Parameters
    ----------
    kind: str
        ``"archive"``: ``size`` slides, one sub-folder per slide, three instances each;
        ``"sparse"``: one TILED_SPARSE instance of ``size`` 32x32 JPEG frames in a
        square-ish grid, each with a Per-Frame Functional Groups item (Plane Position)
    size: int
        Number of slides or frames
    root: pathlib.Path | None
        Parent folder (default: :func:`cache_root`)

    Returns
    -------
    pathlib.Path
        The folder
    """
    write = _write_archive if kind == "archive" else _write_sparse
    return _cached(f"{kind}-{size}", root, lambda folder: write(folder, size))


def _write_archive(folder: Path, slides: int) -> None:
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


def _write_sparse(folder: Path, frames: int) -> None:
    # The header comes from a small synthetic TILED_SPARSE slide; only the frame count, the
    # matrix size, the per-frame items and the (repeated) first tile change.
    tile, grid = 32, math.isqrt(frames - 1) + 1
    spec = SlideSpec(
        size=(64, 64),
        tile_size=(tile, tile),
        levels=1,
        dimension_organization="TILED_SPARSE",
        label=False,
        overview=False,
        container_id=f"SPARSE-{frames}",
    )
    template_dir = folder / ".template"
    (path,) = write_slide(template_dir, spec)
    ds = pydicom.dcmread(path)
    shutil.rmtree(template_dir)
    first_tile = next(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    ds.NumberOfFrames = frames
    ds.TotalPixelMatrixRows = ds.TotalPixelMatrixColumns = grid * tile
    ds.ImagedVolumeWidth = ds.ImagedVolumeHeight = grid * tile * spec.pixel_spacing(0)
    items = []
    for k in range(frames):
        r, c = divmod(k, grid)
        x, y = frame_position_mm(spec, 0, r * tile, c * tile)
        position = Dataset()
        position.RowPositionInTotalImagePixelMatrix = r * tile + 1
        position.ColumnPositionInTotalImagePixelMatrix = c * tile + 1
        position.XOffsetInSlideCoordinateSystem = round(x, 6)
        position.YOffsetInSlideCoordinateSystem = round(y, 6)
        position.ZOffsetInSlideCoordinateSystem = 0.0
        item = Dataset()
        item.PlanePositionSlideSequence = [position]
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = items
    ds.PixelData = encapsulate([first_tile] * frames, has_bot=False)
    ds.save_as(folder / "sparse.dcm", enforce_file_format=True)

"""Produce real third-party WSI DICOM files with ``OrthancWSIDicomizer`` (Debian ``orthanc-wsi``).

Our own writer's files can share our own misreadings of the standard; these files come from an
independent implementation.  :func:`make_dicomizer_slide` converts a source picture (by default
a built-in one, see :func:`make_source_image`) and caches the result under a folder keyed by
every argument, so repeated test runs reuse it (a conversion takes 0.1-0.7 s anyway).

What OrthancWSIDicomizer 1.1 (bookworm package ``1.1-4``) writes, from a PNG, *without*
``--dataset`` (facts checked on its output; they are the interesting cases for a reader):

* One VL Whole Slide Microscopy Image instance per pyramid level (``wsi-000000.dcm`` ...), all
  in one series; the level count goes down until the level fits in one tile
  (2048x1536 / 256 px tiles: 2048, 1024, 512, 256 wide), or ``--levels`` many (levels smaller
  than a tile are kept, e.g. 64x48 in a 256x256 frame).  No label, no overview, no thumbnail.
* **ImageType is absent** (type 1 in the IOD), as are FrameOfReferenceUID,
  DimensionOrganizationType, TotalPixelMatrixFocalPlanes, ContainerIdentifier, Specimen
  module, FocusMethod, ExtendedDepthOfField, SpecimenLabelInImage, BurnedInAnnotation.
  ``VolumetricProperties`` is ``VOLUME``.  With ``--dataset`` (e.g. the tool's own
  ``--sample-dataset``, :data:`DICOMIZER_SAMPLE_DATASET`), ImageType becomes
  ``DERIVED\\PRIMARY\\VOLUME\\NONE`` and the container/specimen attributes appear.
* Concatenation attributes depend on ``--max-size`` (MB per file; the tool's default is 10):
  with ``0`` (unlimited, our default) there are none.  With any other value **every**
  instance carries ConcatenationUID, ``InConcatenationNumber`` (1-based),
  ``ConcatenationFrameOffsetNumber`` and ``SOPInstanceUIDOfConcatenationSource``, even a
  level that is one instance; ``InConcatenationTotalNumber`` is never written.  A level that
  does not fit is split by bytes, so parts hold unequal frame counts (e.g. 18, 20, 10 JPEG
  frames), and the files of different levels interleave (level 0 parts 1-4, level 1 part 1,
  level 0 parts 5-8, level 1 part 2, ...).  InstanceNumber counts files in writing order.
* Level sizes halve rounding up: 2000x1500 -> 1000x750 -> 500x375 -> 250x188.
* Per-frame ``PlanePositionSlideSequence`` with Column/RowPositionInTotalImagePixelMatrix
  (1-based) and X/Y/Z offsets; DimensionIndexSequence points at those two positions.
  **Frames are not in row-major order**: they follow a recursive 2x2 (quadtree / Z-order)
  walk, e.g. (1,1) (257,1) (1,257) (257,257) (513,1) (769,1)...  A reader that assumes
  TILED_FULL order gets a scrambled image.
* The last row/column of tiles is padded to the full frame size with white (255).
* ``TotalPixelMatrixOriginSequence`` = the ``--offset-x/--offset-y`` (20 mm, 40 mm);
  ``ImageOrientationSlide`` = ``[0, -1, 0, -1, 0, 0]``; PixelSpacing = imaged size / pixels
  (15 mm square by default, so non-square pixels for a non-square picture).  PixelSpacing is
  ``(--imaged-width / rows, --imaged-height / columns)``: the width is measured along slide X,
  which runs down the picture (e.g. 11.25 x 15 mm gives 2000x1500 square 0.0075 mm pixels).
  The per-frame X/Y offsets *decrease* along columns/rows respectively, i.e. they contradict
  the written ImageOrientationSlide (which says columns run along -Y): do not cross-check them
  strictly.
* ``--compression jpeg``: JPEG baseline ``1.2.840.10008.1.2.4.50``, JFIF, 4:2:0 chroma
  subsampling, labelled ``YBR_FULL_422``; LossyImageCompression ``01``, ratio ``10``.
* ``--compression jpeg2000``: ``1.2.840.10008.1.2.4.90`` (lossless), raw J2K codestreams
  (``FF4F``), 5-3 reversible wavelet, **no MCT: the components are plain RGB**, yet
  PhotometricInterpretation says ``YBR_FULL_422``.  Decoding gives the source pixels exactly;
  applying a YCbCr->RGB conversion because of the label gives wrong colours.  Odd-length
  frames carry the even-length padding byte ``00`` after ``FFD9``.
* ``--compression none``: **Implicit VR Little Endian** ``1.2.840.10008.1.2``, RGB,
  PlanarConfiguration 0, Pixel Data ``OW``; pixels equal the source.
* Encapsulated Pixel Data has a full Basic Offset Table, no Extended Offset Table.
* Each instance has its own Optical Path (brightfield) with a default sRGB ICC profile.
* Every attribute of ``--dataset`` is copied verbatim into every instance, including ones the
  tool never writes itself: FrameOfReferenceUID, PyramidUID, PositionReferenceIndicator,
  Study/Series Instance UIDs, DimensionOrganizationType (checked with ``orthanc-wsi`` 1.1-4).
  Bare output has PatientID, StudyDate and StudyTime, but no PatientName, PatientBirthDate,
  PatientSex, StudyID, AccessionNumber or ReferringPhysicianName (all Type 2).

Deriving images with highdicom 0.28 (:func:`derivable_dataset`, :func:`patch_for_highdicom`):

* ``hd.seg.Segmentation`` / ``hd.pm.ParametricMap`` read PatientName, PatientBirthDate,
  PatientSex, StudyID and AccessionNumber from the source (``AttributeError`` on bare output)
  and, for a multi-frame tiled source, need FrameOfReferenceUID ("Only a single frame is
  supported when the source image has no Frame of Reference UID").
  ``hd.seg.create_segmentation_pyramid`` also needs a PyramidUID shared by the levels.
* So :func:`derivable_dataset` passes those through ``--dataset`` (the realistic route: the
  slide files carry them as written by the tool).  For bare output, :func:`patch_for_highdicom`
  adds them to an in-memory *copy* used only as highdicom's source; the derived image then has
  a Frame of Reference UID that the slide files lack, and references the slide's series (and
  instances) in ReferencedSeriesSequence / SourceImageSequence.

Independent pixel oracles on these files (checked with openslide-bin 4.0.1 / wsidicom 0.36):

* OpenSlide 4.0.1 needs ImageType ("Couldn't get image flavor" without it), so bare output
  never opens.  With ``dataset=DICOMIZER_SAMPLE_DATASET`` it opens JPEG with
  ``max_size_mb=0``; with ``max_size_mb>0`` it fails on "Found only one SOP instance in
  concatenation" (it rejects a ConcatenationUID on a single-instance level).  It never reads
  this JPEG 2000 ("Unsupported photometric interpretation YBR_FULL_422 for
  1.2.840.10008.1.2.4.90") nor the uncompressed files ("Unsupported transfer syntax
  1.2.840.10008.1.2").  :func:`make_openslide_compatible` rewrites only metadata (adds
  ImageType, drops the concatenation attributes of single-instance levels); OpenSlide then
  reads every JPEG variant, single-instance and concatenated, bare or not, with the expected
  level dimensions and pixels equal to wsidicom's.
* wsidicom 0.36.1 (``pip install wsidicom``; not a declared test dependency) opens jpeg,
  jpeg2000 and none, single-instance and concatenated, if ImageType is present ("Level files
  not found" without it; the :func:`make_openslide_compatible` copy works too), and decodes
  JPEG 2000 and uncompressed to exactly the source RGB.
* Pixel agreement with the 2000x1500 source at level 0: JPEG default quality max |diff| 26,
  mean 2.2; ``jpeg_quality=100`` max 18, mean 0.7; JPEG 2000 and none exact.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "DICOMIZER_SAMPLE_DATASET",
    "HIGHDICOM_PATCH_KEYWORDS",
    "Compression",
    "DicomizerNotAvailableError",
    "derivable_dataset",
    "find_dicomizer",
    "make_dicomizer_slide",
    "make_openslide_compatible",
    "make_source_image",
    "patch_for_highdicom",
    "publish_folder",
    "stable_uid",
]

Compression = Literal["jpeg", "jpeg2000", "none"]
SourceKind = Literal["auto", "skimage", "synthetic"]

#: Environment variable overriding where ``OrthancWSIDicomizer`` is.
DICOMIZER_ENV = "DICOMSLIDE_ORTHANC_WSI_DICOMIZER"
#: Default size of the built-in source picture: not a multiple of 256 on purpose, so that the
#: right and bottom tiles of most levels are partial.
DEFAULT_SOURCE_SIZE = (2000, 1500)

#: What ``OrthancWSIDicomizer --sample-dataset`` prints (minus patient name/birth date/sex and
#: referring physician); passing it as ``dataset`` adds ImageType and the specimen module.
DICOMIZER_SAMPLE_DATASET: Mapping[str, Any] = {
    "PatientID": "C123456789",
    "StudyID": "NONE",
    "SeriesNumber": "1",
    "AccessionNumber": "123456789",
    "Manufacturer": "MyManufacturer",
    "ManufacturerModelName": "MyModel",
    "DeviceSerialNumber": "MySerialNumber",
    "SoftwareVersions": "MyVersion",
    "ImageType": "DERIVED\\PRIMARY\\VOLUME\\NONE",
    "FocusMethod": "AUTO",
    "ExtendedDepthOfField": "NO",
    "AcquisitionContextSequence": [],
    "AcquisitionDuration": "100",
    "ContainerIdentifier": "CI_12345",
    "IssuerOfTheContainerIdentifierSequence": [],
    "ContainerTypeCodeSequence": [],
    "SpecimenDescriptionSequence": [
        {
            "SpecimenIdentifier": "Specimen^Identifier",
            "SpecimenUID": "1.2.276.0.7230010.3.1.4.3252829876.4112.1426166133.871",
            "IssuerOfTheSpecimenIdentifierSequence": [],
            "SpecimenPreparationSequence": [],
        }
    ],
    "SpecimenLabelInImage": "NO",
    "BurnedInAnnotation": "NO",
}

#: Type 2 attributes that bare dicomizer output lacks and highdicom 0.28 reads from a source
#: image (with the empty value :func:`patch_for_highdicom` gives them).
HIGHDICOM_PATCH_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "AccessionNumber",
)


def stable_uid(*parts: str) -> str:
    """A deterministic ``2.25.`` UID for ``parts`` (stable across runs, so caches are reused)."""
    material = "\x1f".join(("dicomslide-tests", *parts)).encode()
    return "2.25." + str(int.from_bytes(hashlib.sha256(material).digest()[:16], "big"))


def derivable_dataset(name: str) -> dict[str, Any]:
    """A ``--dataset`` for slides that highdicom can derive Segmentations / Parametric Maps from.

    :data:`DICOMIZER_SAMPLE_DATASET` (ImageType, container, specimen) plus the patient
    attributes highdicom reads, and a FrameOfReferenceUID and PyramidUID derived from ``name``
    (distinct names give distinct slides: without it, slides converted with the same dataset
    would share a frame of reference and container and be taken for one slide).

    Args:
        name: Distinguishes the slide; also used in its ContainerIdentifier.
    """
    return {
        **DICOMIZER_SAMPLE_DATASET,
        "PatientName": "Dicomizer^Test",
        "PatientBirthDate": "19700101",
        "PatientSex": "O",
        "ReferringPhysicianName": "Some^Physician",
        "ContainerIdentifier": f"DICOMIZER-{name}",
        "FrameOfReferenceUID": stable_uid("frame-of-reference", name),
        "PositionReferenceIndicator": "SLIDE_CORNER",
        "PyramidUID": stable_uid("pyramid", name),
    }


def patch_for_highdicom(source: Any, *, frame_of_reference_uid: str | None = None) -> Any:
    """Copy of a bare dicomizer dataset with what highdicom needs to derive from it.

    Only the copy is changed (the files and ``source`` are not): the Type 2 attributes of
    :data:`HIGHDICOM_PATCH_KEYWORDS` are added empty where absent, FrameOfReferenceUID is set
    (``frame_of_reference_uid``, default a new one) where absent.  Pixel Data is kept.

    Args:
        source: A ``pydicom.Dataset`` read from a dicomizer file.
        frame_of_reference_uid: UID for the copy when the source has none.

    Returns:
        The patched copy (a ``pydicom.Dataset``).
    """
    import copy

    import pydicom.uid

    patched = copy.deepcopy(source)
    for keyword in HIGHDICOM_PATCH_KEYWORDS:
        if keyword not in patched:
            setattr(patched, keyword, "")
    if not patched.get("FrameOfReferenceUID"):
        patched.FrameOfReferenceUID = frame_of_reference_uid or pydicom.uid.generate_uid()
    return patched


# Bump when the generated output would change for the same arguments (new source picture...).
_CACHE_VERSION = 1
_DONE_MARKER = "dicomizer.json"


class DicomizerNotAvailableError(RuntimeError):
    """``OrthancWSIDicomizer`` is not installed."""


def find_dicomizer() -> str | None:
    """Return the path of ``OrthancWSIDicomizer``, or ``None`` if it is not installed."""
    override = os.environ.get(DICOMIZER_ENV)
    if override:
        return override if Path(override).is_file() else None
    return shutil.which("OrthancWSIDicomizer")


def _skimage_picture() -> np.ndarray | None:
    try:
        from skimage import data  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    try:
        # Ships inside the scikit-image wheel: no download.
        picture = data.immunohistochemistry()  # type: ignore[no-untyped-call, unused-ignore]
        return np.asarray(picture, dtype=np.uint8)
    except Exception:  # a build without the bundled data would try the network
        return None


def _synthetic_picture(width: int, height: int) -> np.ndarray:
    """Smooth colour gradients, stain-like blobs, sharp shapes and fine texture (seeded)."""
    rng = np.random.default_rng(20240601)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / width, y / height
    base = np.stack(
        [
            225 - 60 * u + 15 * np.sin(6.0 * v),
            200 - 80 * v + 20 * np.cos(5.0 * u),
            215 - 40 * u * v + 25 * np.sin(4.0 * (u + v)),
        ],
        axis=-1,
    )
    # Purple/brown nuclei-like blobs, so that JPEG has real chroma detail to lose.
    for _ in range(120):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        radius = rng.uniform(8, 60)
        colour = np.asarray(rng.choice([[120, 60, 150], [150, 90, 60], [90, 40, 110]]), np.float32)
        # Only a 4-sigma window: the Gaussian is ~0 beyond, and full-image blobs are slow.
        x0, x1 = max(int(cx - 4 * radius), 0), min(int(cx + 4 * radius) + 1, width)
        y0, y1 = max(int(cy - 4 * radius), 0), min(int(cy + 4 * radius) + 1, height)
        win = (slice(y0, y1), slice(x0, x1))
        weight = np.exp(-((x[win] - cx) ** 2 + (y[win] - cy) ** 2) / (2 * radius**2))[..., None]
        base[win] = base[win] * (1 - 0.8 * weight) + colour * 0.8 * weight
    base += rng.normal(0, 4, size=base.shape)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for index in range(40):
        x0, y0 = int(rng.uniform(0, width - 80)), int(rng.uniform(0, height - 80))
        size = int(rng.uniform(20, 80))
        fill = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if index % 2:
            draw.ellipse((x0, y0, x0 + size, y0 + size), outline=fill, width=3)
        else:
            draw.rectangle((x0, y0, x0 + size, y0 + size // 2), fill=fill)
    return np.asarray(image)


def _unique_everywhere(tile: np.ndarray, width: int, height: int) -> np.ndarray:
    """Mirror-tile ``tile`` over width x height and tint it with a global low-frequency ramp.

    Mirror tiling keeps full-resolution texture without seams; the ramp makes tiles that the
    mirroring would repeat differ, so a reader that swaps two frames cannot go unnoticed.
    """
    th, tw = tile.shape[:2]
    reps_y, reps_x = -(-height // th), -(-width // tw)
    rows = []
    for ry in range(reps_y):
        row = []
        for rx in range(reps_x):
            block = tile[::-1] if ry % 2 else tile
            row.append(block[:, ::-1] if rx % 2 else block)
        rows.append(np.concatenate(row, axis=1))
    mosaic = np.concatenate(rows, axis=0)[:height, :width].astype(np.float32)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = np.stack([1.0 - 0.25 * x / width, 1.0 - 0.25 * y / height, 0.8 + 0.2 * x / width], -1)
    tinted: np.ndarray = np.clip(mosaic * ramp, 0, 255).astype(np.uint8)
    return tinted


def make_source_image(
    path: str | os.PathLike[str],
    *,
    size: tuple[int, int] = DEFAULT_SOURCE_SIZE,
    kind: SourceKind = "auto",
) -> Path:
    """Write a deterministic RGB PNG of ``size`` (width, height) to ``path``; return the path.

    ``kind="skimage"`` uses scikit-image's bundled immunohistochemistry photo (512x512, a real
    microscopy image; works offline), mirror-tiled to ``size``; ``"synthetic"`` draws gradients,
    blobs and shapes with numpy/Pillow; ``"auto"`` prefers scikit-image when installed.

    Raises:
        RuntimeError: If ``kind="skimage"`` but scikit-image (or its data) is unavailable.
    """
    width, height = size
    picture = _skimage_picture() if kind in ("auto", "skimage") else None
    if picture is None and kind == "skimage":
        raise RuntimeError("scikit-image with its bundled data is not installed")
    pixels = (
        _unique_everywhere(picture, width, height)
        if picture is not None
        else _synthetic_picture(width, height)
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(out, format="PNG")
    return out


@functools.cache
def _resolved_source_kind() -> Literal["skimage", "synthetic"]:
    return "skimage" if _skimage_picture() is not None else "synthetic"


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@functools.cache
def _dicomizer_version(binary: str) -> str:
    # First stdout line, e.g. "OrthancWSIDicomizer 1.1"; stderr has timestamped log lines.
    completed = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=False, timeout=30
    )
    lines = completed.stdout.strip().splitlines()
    return lines[0] if lines else "unknown"


def publish_folder(work: Path, target: Path, marker: str, record: Mapping[str, Any]) -> None:
    """Mark a finished build folder as done and rename it to its cached place.

    Concurrent runs never see half a folder: they look for ``target / marker``, which exists
    only once the rename is done. If another process published ``target`` first, its copy
    stands and ``work`` is left for the caller to remove.

    Parameters
    ----------
    work: pathlib.Path
        Private folder holding the finished build
    target: pathlib.Path
        Cached folder the build is published as
    marker: str
        Name of the JSON file that marks a finished folder
    record: Mapping[str, Any]
        What the marker file records (JSON-serialisable)
    """
    (work / marker).write_text(json.dumps(record, indent=2), encoding="utf-8")
    try:
        os.rename(work, target)
    except OSError:
        # Another process finished the same folder first; use theirs.
        if not (target / marker).is_file():
            raise


def make_dicomizer_slide(
    out_dir: str | os.PathLike[str],
    *,
    compression: Compression,
    tile_size: int = 256,
    max_size_mb: int = 0,
    levels: int | None = None,
    source: str | os.PathLike[str] | None = None,
    dataset: Mapping[str, Any] | None = None,
    jpeg_quality: int | None = None,
    imaged_size_mm: tuple[float, float] | None = None,
) -> list[Path]:
    """Convert a picture to a DICOM WSI pyramid with OrthancWSIDicomizer; return the files.

    Results are cached: ``out_dir`` is a cache root (e.g. ``tests/.data/dicomizer`` or a pytest
    ``cache.mkdir()`` folder) and each distinct set of arguments gets its own sub-folder, named
    after the arguments plus a hash of the source bytes, the dataset and the tool's version.
    A finished folder holds ``dicomizer.json`` (arguments, command, timing) and is reused as is.

    Args:
        out_dir: Cache root; created if missing.
        compression: ``--compression`` (``jpeg``, ``jpeg2000`` or ``none``).
        tile_size: ``--tile-width`` and ``--tile-height``.
        max_size_mb: ``--max-size`` in MB per instance; ``0`` = one instance per level, small
            values (1) split big levels into concatenations.
        levels: ``--levels``; ``None`` lets the tool go down to a single tile.
        source: Picture to convert (PNG, JPEG or TIFF); default: a built-in one from
            :func:`make_source_image`, cached under ``out_dir/sources``.
        dataset: JSON dataset passed with ``--dataset`` (e.g. :data:`DICOMIZER_SAMPLE_DATASET`
            to get ImageType, which OpenSlide and wsidicom need); ``None`` = the tool's bare
            output.
        jpeg_quality: ``--jpeg-quality`` (0-100) for ``compression="jpeg"``.
        imaged_size_mm: ``--imaged-width`` and ``--imaged-height`` in mm; ``None`` keeps the
            tool's 15 x 15 mm (non-square pixels for a non-square picture).  The tool divides
            the width by the picture's *rows* and the height by its columns (its slide X axis
            runs down the picture), so ``(11.25, 15)`` gives a 2000x1500 picture square
            0.0075 mm pixels.

    Returns:
        The ``.dcm`` files in the order the tool wrote them (``wsi-000000.dcm`` ...).

    Raises:
        DicomizerNotAvailableError: If ``OrthancWSIDicomizer`` is not installed.
        RuntimeError: If the conversion fails (the message carries the tool's output).
    """
    binary = find_dicomizer()
    if binary is None:
        raise DicomizerNotAvailableError(
            f"OrthancWSIDicomizer not found (install the Debian package 'orthanc-wsi' or set "
            f"{DICOMIZER_ENV})"
        )
    if compression not in ("jpeg", "jpeg2000", "none"):
        raise ValueError(f"unknown compression {compression!r}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)

    if source is None:
        kind = _resolved_source_kind()
        width, height = DEFAULT_SOURCE_SIZE
        source_path = root / "sources" / f"{kind}-{width}x{height}-v{_CACHE_VERSION}.png"
        if not source_path.is_file():
            tmp_source = source_path.with_suffix(f".{os.getpid()}.tmp.png")
            make_source_image(tmp_source, kind=kind)
            os.replace(tmp_source, source_path)
    else:
        source_path = Path(source)

    args: dict[str, Any] = {
        "compression": compression,
        "tile_size": tile_size,
        "max_size_mb": max_size_mb,
        "levels": levels,
        "jpeg_quality": jpeg_quality,
    }
    if imaged_size_mm is not None:
        # Only when given, so that the cache keys of existing calls stay the same.
        args["imaged_size_mm"] = [float(v) for v in imaged_size_mm]
    key_material = json.dumps(
        {
            **args,
            "cache_version": _CACHE_VERSION,
            "source_sha256": _file_digest(source_path),
            "dataset": dataset,
            "tool": _dicomizer_version(binary),
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key_material.encode()).hexdigest()[:12]
    name = f"{compression}-t{tile_size}-m{max_size_mb}-l{levels or 'auto'}"
    if jpeg_quality is not None:
        name += f"-q{jpeg_quality}"
    if imaged_size_mm is not None:
        name += f"-mm{imaged_size_mm[0]:g}x{imaged_size_mm[1]:g}"
    target = root / f"{name}-{digest}"
    if (target / _DONE_MARKER).is_file():
        return sorted(target.glob("*.dcm"))

    # Convert into a private folder, then rename: concurrent runs never see half a slide.
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        command = [
            binary,
            "--folder",
            str(work),
            "--compression",
            compression,
            "--tile-width",
            str(tile_size),
            "--tile-height",
            str(tile_size),
            "--max-size",
            str(max_size_mb),
        ]
        if levels is not None:
            command += ["--levels", str(levels)]
        if jpeg_quality is not None:
            command += ["--jpeg-quality", str(jpeg_quality)]
        if imaged_size_mm is not None:
            command += ["--imaged-width", f"{imaged_size_mm[0]:g}"]
            command += ["--imaged-height", f"{imaged_size_mm[1]:g}"]
        if dataset is not None:
            dataset_path = work.with_suffix(".dataset.json")
            dataset_path.write_text(json.dumps(dataset), encoding="utf-8")
            command += ["--dataset", str(dataset_path)]
        command.append(str(source_path))
        started = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
        elapsed = time.perf_counter() - started
        outputs = sorted(work.glob("*.dcm"))
        # The tool logs errors but may still exit 0 with nothing (or too little) written.
        if (
            completed.returncode != 0
            or not outputs
            or "Terminating on exception" in (completed.stderr)
        ):
            raise RuntimeError(
                f"OrthancWSIDicomizer failed (exit {completed.returncode}): {command}\n"
                f"{completed.stderr[-4000:]}"
            )
        record = {
            **args,
            "source": str(source_path),
            "dataset": dataset,
            "command": command,
            "seconds": round(elapsed, 3),
            "files": [p.name for p in outputs],
        }
        publish_folder(work, target, _DONE_MARKER, record)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        work.with_suffix(".dataset.json").unlink(missing_ok=True)
    return sorted(target.glob("*.dcm"))


def make_openslide_compatible(
    paths: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]
) -> list[Path]:
    """Copy dicomizer output to ``out_dir`` with the metadata OpenSlide 4.0 insists on.

    Pixel data is untouched.  ImageType ``DERIVED\\PRIMARY\\VOLUME\\NONE`` is added where absent,
    and the concatenation attributes are dropped from levels that are a single instance
    (OpenSlide rejects "only one SOP instance in concatenation").  Only helps JPEG slides:
    OpenSlide 4.0.1 reads neither this J2K (labelled YBR_FULL_422) nor Implicit VR Little
    Endian.  Reuses ``out_dir`` if it already holds the same file names.

    Returns:
        The rewritten files, in the order of ``paths``.
    """
    import pydicom

    sources = [Path(p) for p in paths]
    target = Path(out_dir)
    outputs = [target / p.name for p in sources]
    if all(p.is_file() for p in outputs):
        return outputs
    target.mkdir(parents=True, exist_ok=True)
    datasets = [pydicom.dcmread(p) for p in sources]
    parts = Counter(ds.get("ConcatenationUID") for ds in datasets)
    for ds, out in zip(datasets, outputs, strict=True):
        if "ImageType" not in ds:
            ds.ImageType = ["DERIVED", "PRIMARY", "VOLUME", "NONE"]
        if parts[ds.get("ConcatenationUID")] == 1:
            for keyword in (
                "ConcatenationUID",
                "InConcatenationNumber",
                "InConcatenationTotalNumber",
                "ConcatenationFrameOffsetNumber",
                "SOPInstanceUIDOfConcatenationSource",
            ):
                if keyword in ds:
                    delattr(ds, keyword)
        tmp = out.with_suffix(".tmp")
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, out)
    return outputs

"""A fidelity corpus of WSI DICOM files written by other projects' converters and encoders.

Nothing here is committed data: every file is produced at test time, from pictures made by
:func:`tests.support.thirdparty.make_source_image`, by four independent writers, and cached
under a folder keyed by the tools' versions (a full build takes ~10 s, a cached one ~0 s).

Writers (origin and licence):

* **PixelMed** ``TIFFToDicom`` (Debian package ``pixelmed-apps`` 20220618+dfsg-1, David
  Clunie's PixelMed Java DICOM toolkit, BSD-3-Clause), run with the
  WSI JSON template the package ships (``/etc/pixelmed/TIFFToDicom.WSI.json``) on tiled TIFFs
  written by ``tifffile`` (BSD-3-Clause).  It copies JPEG tiles unchanged and writes
  uncompressed or deflated (``1.2.840.10008.1.2.1.99``) frames otherwise, TILED_FULL without
  per-frame positions, one instance per TIFF page; an OME-TIFF with channels becomes one
  instance per channel with its own Optical Path (identifier ``0``, ``1``..., description =
  the OME channel name), the layout of fluorescence scanners.
* **wsidicom** ``WsiDicom.save(transcoding=...)`` (PyPI ``wsidicom`` 0.36, Sectra AB,
  Apache-2.0), re-encoding the PixelMed slides with its encoders (imagecodecs: libjpeg-turbo,
  CharLS, OpenJPEG, OpenJPH, libjxl; pylibjpeg-rle), TILED_FULL without per-frame positions;
  also with an Extended Offset Table, with an empty Basic Offset Table, and as a concatenation.
* **OrthancWSIDicomizer** (Debian ``orthanc-wsi``, AGPL-3.0+; see :mod:`tests.support.thirdparty`):
  JPEG and Implicit VR Little Endian concatenations, TILED_SPARSE with per-frame positions in
  quadtree order, edge tiles padded white.
* **DCMTK** ``dcmcjpls`` / ``dcmcrle`` / ``dcmcjpeg`` (Debian package ``dcmtk`` 3.6.7,
  OFFIS e.V., BSD-style OFFIS licence; its own JPEG-LS and IJG-based JPEG code), re-encoding
  each PixelMed instance (one level at a time).  Lossless output keeps the SOP Instance UID;
  lossy output gets a new one and LossyImageCompression ``01``.  JPEG extended on the 16-bit
  slide writes 12-bit samples (BitsStored 12); JPEG baseline on it rescales to 8 bits (not in
  the corpus).

Facts checked on their output (wsidicom 0.36.1, imagecodecs 2026.3.6, pixelmed 20220618):

* PixelMed JPEG: tifffile's JPEG tiles are YCbCr 4:2:0 without JFIF or Adobe markers,
  labelled ``YBR_FULL_422``.  pydicom's Pillow plugin decodes them within 1 of libjpeg-turbo
  (pydicom converts YCbCr itself); pylibjpeg-libjpeg differs by up to 11 (its own upsampling).
* wsidicom ``JpegLosslessSettings`` (default ``channels=YBR``) stores the RGB samples with an
  Adobe marker "transform 0" and labels them ``YBR_FULL``; pydicom and wsidicom decode them to
  the stored RGB.  ``RleSettings(channels=YBR)`` likewise stores RGB labelled ``YBR_FULL``;
  there pydicom (no codestream marker to go by) converts to wrong colours, as we do, and only
  wsidicom's own reader returns the source: not in the corpus (a writer bug, not a reader's).
* wsidicom J2K/HTJ2K with ``channels=YBR`` are ``YBR_RCT`` (lossless) / ``YBR_ICT``; JPEG-LS
  and JPEG XL with ``YBR`` are written as ``RGB`` / ``YBR_FULL`` samples the decoder returns
  as RGB.  16-bit ``MONOCHROME2`` frames are written by every encoder but JPEG baseline.
* Edge tiles: tifffile pads them with 0, PixelMed and DCMTK copy that, wsidicom re-encodes it;
  so colour slides have black padding past the image edge (issue 17 item 1).
* Orthanc 1.10 + DICOMweb 1.7 store every file but cannot serve frames of HTJ2K, JPEG XL or
  deflated instances with ``transfer-syntax=*`` (HTTP 500); asked for Explicit VR Little
  Endian it answers 200 with the stored HTJ2K / JPEG XL codestreams labelled native.
* pydicom 3.0 has no JPEG XL decoder, so JPEG XL frames are decoded by the reference with
  ``imagecodecs.jpegxl_decode`` (the same library dicomslide uses: the placement is still
  independent, and lossless files are also compared with the source picture).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.thirdparty import (
    derivable_dataset,
    make_dicomizer_slide,
    make_source_image,
    publish_folder,
)

__all__ = [
    "decode_reference_frame",
    "find_dcmtk",
    "CORPUS",
    "CorpusEntry",
    "build_entry",
    "find_tiff_to_dicom",
    "reference_planes",
]

#: Where Debian's ``pixelmed-apps`` puts its WSI attribute template.
PIXELMED_WSI_TEMPLATE = Path("/etc/pixelmed/TIFFToDicom.WSI.json")
VL_WSI_STORAGE = "1.2.840.10008.5.1.4.1.1.77.1.6"
#: Level 0 size (width, height): not a multiple of the 256-px tiles, so edge tiles are partial.
SOURCE_SIZE = (1000, 760)
TILE = 256
# Bump when the generated output would change for the same tools.
_CACHE_VERSION = 1
_DONE = "corpus.json"


@dataclass(frozen=True)
class CorpusEntry:
    """One slide of the corpus.

    ``writer`` makes the files from the PixelMed ``source`` entry (None: from a TIFF).
    ``max_diff`` is how far dicomslide may differ from the reference decode (0: lossless);
    ``matches_source`` says level 0 must also equal the picture written into the TIFF.
    """

    name: str
    writer: str
    exercises: str
    source: str | None = None
    transcoding: tuple[str, dict[str, Any]] | None = None
    max_diff: int = 0
    matches_source: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def find_tiff_to_dicom() -> str | None:
    """Path of PixelMed's ``TIFFToDicom`` (Debian ``pixelmed-apps``), or None."""
    found = shutil.which("TIFFToDicom")
    return found if found and PIXELMED_WSI_TEMPLATE.is_file() else None


def find_dcmtk() -> str | None:
    """Path of DCMTK's ``dcmcjpls`` (Debian ``dcmtk``; ``dcmcrle``, ``dcmcjpeg`` beside it)."""
    return shutil.which("dcmcjpls")


def _pixelmed(name: str, exercises: str, **kw: Any) -> CorpusEntry:
    return CorpusEntry(name, "pixelmed", exercises, **kw)


def _dcmtk(
    name: str,
    source: str,
    command: tuple[str, ...],
    exercises: str,
    max_diff: int = 0,
    lossy: bool = False,
) -> CorpusEntry:
    return CorpusEntry(
        name,
        "dcmtk",
        exercises,
        source=source,
        max_diff=max_diff,
        matches_source=not lossy,
        extra={"command": command},
    )


def _wsidicom(
    name: str,
    source: str,
    settings: str,
    exercises: str,
    max_diff: int = 0,
    save: dict[str, Any] | None = None,
    **params: Any,
) -> CorpusEntry:
    return CorpusEntry(
        name,
        "wsidicom",
        exercises,
        source=source,
        transcoding=(settings, params),
        max_diff=max_diff,
        matches_source=max_diff == 0,
        extra={"save": save or {}},
    )


_RGB = {"channels": "RGB"}
_YBR = {"channels": "YBR"}
_MONO16 = {"bits": 16, "channels": "GRAYSCALE"}

#: The corpus, by name.  Lossy entries state their tolerance: the reference decodes the same
#: codestream with another library, and lossy decoders may round colour conversion and
#: upsampling differently (JPEG: pydicom converts YCbCr -> RGB itself; J2K/HTJ2K ICT: float
#: inverse transform).  Measured maxima: JPEG 1, J2K/HTJ2K 1, JPEG-LS near-lossless 0.
CORPUS: dict[str, CorpusEntry] = {
    e.name: e
    for e in [
        _pixelmed("pixelmed-rgb-native", "Explicit VR LE RGB, 2 levels from 2 TIFF pages"),
        _pixelmed(
            "pixelmed-rgb-jpeg",
            "JPEG baseline tiles copied from TIFF, YBR_FULL_422 4:2:0 without JFIF",
            max_diff=2,
            matches_source=False,
        ),
        _pixelmed(
            "pixelmed-rgb-deflated",
            "Deflated Explicit VR Little Endian (whole data set deflated)",
            extra={"transfer_syntax": "1.2.840.10008.1.2.1.99"},
        ),
        _pixelmed("pixelmed-mono16", "16-bit MONOCHROME2, one level", extra={"kind": "mono16"}),
        _pixelmed(
            "pixelmed-fluorescence",
            "3-channel 16-bit OME-TIFF: one instance per optical path (DAPI, FITC, TRITC)",
            extra={"kind": "fluorescence"},
        ),
        _wsidicom(
            "wsidicom-jpegls",
            "pixelmed-rgb-native",
            "JpegLsSettings",
            "JPEG-LS lossless RGB",
            level=0,
            **_RGB,
        ),
        _wsidicom(
            "wsidicom-jpegls-near",
            "pixelmed-rgb-native",
            "JpegLsSettings",
            "JPEG-LS near-lossless (NEAR=2)",
            max_diff=1,
            level=2,
            **_RGB,
        ),
        _wsidicom(
            "wsidicom-htj2k-lossless",
            "pixelmed-rgb-native",
            "HTJpeg2000Settings",
            "HTJ2K lossless, YBR_RCT",
            levels=0,
            **_YBR,
        ),
        _wsidicom(
            "wsidicom-htj2k",
            "pixelmed-rgb-native",
            "HTJpeg2000Settings",
            "HTJ2K irreversible, YBR_ICT",
            max_diff=2,
            levels=80,
            **_YBR,
        ),
        _wsidicom(
            "wsidicom-j2k-lossless",
            "pixelmed-rgb-native",
            "Jpeg2kSettings",
            "JPEG 2000 lossless, YBR_RCT",
            levels=0,
            **_YBR,
        ),
        _wsidicom(
            "wsidicom-j2k",
            "pixelmed-rgb-native",
            "Jpeg2kSettings",
            "JPEG 2000 irreversible, YBR_ICT",
            max_diff=2,
            levels=80,
            **_YBR,
        ),
        _wsidicom(
            "wsidicom-j2k-rgb",
            "pixelmed-rgb-native",
            "Jpeg2kSettings",
            "JPEG 2000 lossless without MCT, RGB",
            levels=0,
            **_RGB,
        ),
        _wsidicom(
            "wsidicom-rle",
            "pixelmed-rgb-native",
            "RleSettings",
            "RLE lossless RGB",
            **_RGB,
        ),
        _wsidicom(
            "wsidicom-jpeg-lossless",
            "pixelmed-rgb-native",
            "JpegLosslessSettings",
            "JPEG lossless (process 14), RGB stored under a YBR_FULL label with an Adobe marker",
            predictor=1,
            **_YBR,
        ),
        _wsidicom(
            "wsidicom-jpeg",
            "pixelmed-rgb-native",
            "JpegSettings",
            "JPEG baseline by wsidicom (libjpeg-turbo), YBR_FULL_422",
            max_diff=2,
            quality=90,
            **_YBR,
        ),
        _wsidicom(
            "wsidicom-jpegxl-lossless",
            "pixelmed-rgb-native",
            "JpegXlSettings",
            "JPEG XL lossless (1.2.840.10008.1.2.4.110)",
            level=100,
            **_RGB,
        ),
        _wsidicom(
            "wsidicom-jpegxl",
            "pixelmed-rgb-native",
            "JpegXlSettings",
            "JPEG XL lossy (1.2.840.10008.1.2.4.112)",
            max_diff=1,
            level=90,
            **_YBR,
        ),
        _wsidicom(
            "wsidicom-mono16-jpegls",
            "pixelmed-mono16",
            "JpegLsSettings",
            "16-bit JPEG-LS lossless",
            level=0,
            **_MONO16,
        ),
        _wsidicom(
            "wsidicom-mono16-htj2k",
            "pixelmed-mono16",
            "HTJpeg2000Settings",
            "16-bit HTJ2K lossless",
            levels=0,
            **_MONO16,
        ),
        _wsidicom(
            "wsidicom-mono16-j2k",
            "pixelmed-mono16",
            "Jpeg2kSettings",
            "16-bit JPEG 2000 lossless",
            levels=0,
            **_MONO16,
        ),
        _wsidicom(
            "wsidicom-mono16-rle",
            "pixelmed-mono16",
            "RleSettings",
            "16-bit RLE",
            **_MONO16,
        ),
        _wsidicom(
            "wsidicom-mono16-jpeg-lossless",
            "pixelmed-mono16",
            "JpegLosslessSettings",
            "16-bit JPEG lossless (process 14)",
            predictor=1,
            **_MONO16,
        ),
        _wsidicom(
            "wsidicom-mono16-jpegxl",
            "pixelmed-mono16",
            "JpegXlSettings",
            "16-bit JPEG XL lossless",
            level=100,
            **_MONO16,
        ),
        _wsidicom(
            "wsidicom-eot",
            "pixelmed-rgb-native",
            "JpegLsSettings",
            "Extended Offset Table (and empty Basic Offset Table), JPEG-LS",
            save={"offset_table": "eot"},
            level=0,
            **_RGB,
        ),
        _wsidicom(
            "wsidicom-no-offset-table",
            "pixelmed-rgb-native",
            "Jpeg2kSettings",
            "empty Basic Offset Table and no Extended one, JPEG 2000",
            save={"offset_table": "empty"},
            levels=0,
            **_YBR,
        ),
        _wsidicom(
            "wsidicom-concatenated",
            "pixelmed-rgb-native",
            "RleSettings",
            "level 0 as a concatenation of 3 instances (5, 5, 2 frames), RLE",
            save={"concatenation_frames": 5},
            **_RGB,
        ),
        CorpusEntry(
            "dicomizer-jpeg-sparse",
            "dicomizer",
            "OrthancWSIDicomizer JPEG: TILED_SPARSE frames in quadtree order, placed by position",
            max_diff=2,
            matches_source=False,
            extra={"compression": "jpeg", "max_size_mb": 0},
        ),
        CorpusEntry(
            "dicomizer-native-concatenated",
            "dicomizer",
            "OrthancWSIDicomizer Implicit VR LE, sparse, level 0 split into unequal concatenation "
            "parts interleaved with other levels",
            matches_source=False,
            extra={"compression": "none", "max_size_mb": 1},
        ),
        _dcmtk(
            "dcmtk-jpegls",
            "pixelmed-rgb-native",
            ("dcmcjpls", "+el"),
            "JPEG-LS lossless by DCMTK (its own CharLS fork), RGB",
        ),
        _dcmtk(
            "dcmtk-jpegls-near",
            "pixelmed-mono16",
            ("dcmcjpls", "+en", "+md", "2"),
            "16-bit JPEG-LS near-lossless (NEAR=2) by DCMTK",
            lossy=True,
        ),
        _dcmtk("dcmtk-rle", "pixelmed-rgb-native", ("dcmcrle",), "RLE lossless by DCMTK"),
        _dcmtk(
            "dcmtk-jpeg-lossless-16",
            "pixelmed-mono16",
            ("dcmcjpeg", "+e1"),
            "16-bit JPEG lossless SV1 (1.2.840.10008.1.2.4.70) by DCMTK (IJG 16-bit)",
        ),
        _dcmtk(
            "dcmtk-jpeg-extended-12",
            "pixelmed-mono16",
            ("dcmcjpeg", "+ee"),
            "12-bit JPEG extended (1.2.840.10008.1.2.4.51) by DCMTK, BitsAllocated 16",
            max_diff=2,
            lossy=True,
        ),
        _dcmtk(
            "dcmtk-jpeg",
            "pixelmed-rgb-native",
            ("dcmcjpeg", "+eb"),
            "JPEG baseline by DCMTK (IJG), YBR_FULL_422",
            max_diff=2,
            lossy=True,
        ),
    ]
}


# ---------------------------------------------------------------------------------------------
# Source pictures and TIFFs


def _rgb_picture(root: Path) -> np.ndarray:
    from PIL import Image

    path = root / "sources" / f"rgb-{SOURCE_SIZE[0]}x{SOURCE_SIZE[1]}.png"
    if not path.is_file():
        tmp = path.with_suffix(f".{os.getpid()}.png")
        make_source_image(tmp, size=SOURCE_SIZE)
        os.replace(tmp, path)
    return np.asarray(Image.open(path).convert("RGB"))


def source_planes(root: Path, kind: str) -> list[np.ndarray]:
    """The pictures a PixelMed entry of ``kind`` is made from, one per channel, at level 0."""
    rgb = _rgb_picture(root)
    if kind == "rgb":
        return [rgb]
    wide = rgb.astype(np.uint16)
    # Use all 16 bits: a reader that drops the high byte, or swaps bytes, cannot pass.
    mono = (wide[..., 0] << 8) | wide[..., 1]
    if kind == "mono16":
        return [mono[..., None]]
    return [
        (wide[..., 0] * 257)[..., None],
        ((wide[..., 1] << 8) | wide[..., 2])[..., None],
        (65535 - mono)[..., None],
    ]


def _write_tiff(path: Path, planes: list[np.ndarray], kind: str, compression: str | None) -> None:
    import tifffile

    resolution = {"resolution": (40000.0, 40000.0), "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(path, ome=kind == "fluorescence") as tif:
        if kind == "fluorescence":
            stack = np.stack([p[..., 0] for p in planes])
            tif.write(
                stack,
                tile=(TILE, TILE),
                photometric="minisblack",
                metadata={"axes": "CYX", "Channel": {"Name": ["DAPI", "FITC", "TRITC"]}},
                **resolution,
            )
            return
        picture = planes[0] if kind == "rgb" else planes[0][..., 0]
        photometric = "rgb" if kind == "rgb" else "minisblack"
        tif.write(
            picture, tile=(TILE, TILE), photometric=photometric, compression=compression,
            **resolution,
        )  # fmt: skip
        if kind == "rgb":
            # A second page at half size becomes the second pyramid level.
            tif.write(
                np.ascontiguousarray(picture[::2, ::2]), tile=(TILE, TILE),
                photometric=photometric, compression=compression, subfiletype=1,
            )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Writers


def _run_pixelmed(entry: CorpusEntry, root: Path, work: Path) -> None:
    binary = find_tiff_to_dicom()
    assert binary is not None
    kind = entry.extra.get("kind", "rgb")
    compression = "jpeg" if entry.name.endswith("-jpeg") else None
    tiff = work / ("source.ome.tif" if kind == "fluorescence" else "source.tif")
    _write_tiff(tiff, source_planes(root, kind), kind, compression)
    command = [binary, str(PIXELMED_WSI_TEMPLATE), str(tiff), str(work / "pixelmed"), "SM"]
    command.append(VL_WSI_STORAGE)
    if "transfer_syntax" in entry.extra:
        command.append(entry.extra["transfer_syntax"])
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    tiff.unlink()
    # TIFFToDicom exits 0 after logging exceptions; a missing output is the failure signal.
    if (
        completed.returncode != 0
        or not list(work.glob("*.dcm"))
        or "Exception" in (completed.stderr)
    ):
        raise RuntimeError(f"TIFFToDicom failed: {command}\n{completed.stderr[-3000:]}")


def _run_dcmtk(entry: CorpusEntry, source: Path, work: Path) -> None:
    command = entry.extra["command"]
    for path in sorted(source.glob("*.dcm")):
        # One instance at a time: DCMTK's compressors know nothing of pyramids.
        full = [*command, str(path), str(work / path.name)]
        completed = subprocess.run(full, capture_output=True, text=True, timeout=300)
        if completed.returncode != 0:
            raise RuntimeError(f"{full} failed: {completed.stderr[-3000:]}")


def _run_wsidicom(entry: CorpusEntry, source: Path, work: Path) -> None:
    import wsidicom
    from wsidicom.codec import settings as codec_settings

    assert entry.transcoding is not None
    name, params = entry.transcoding
    params = dict(params)
    params["channels"] = getattr(codec_settings.Channels, params["channels"])
    settings = getattr(codec_settings, name)(**params)
    save = dict(entry.extra.get("save", {}))
    if "concatenation_frames" in save:
        from wsidicom.options import ConcatenationByFrames

        save["concatenation"] = ConcatenationByFrames(save.pop("concatenation_frames"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with wsidicom.WsiDicom.open(source) as slide:
            slide.save(work, transcoding=settings, **save)


@functools.cache
def _tool_versions() -> str:
    from importlib.metadata import version

    packages = ("wsidicom", "imagecodecs", "tifffile", "pylibjpeg-rle")
    found = []
    for package in packages:
        try:
            found.append(f"{package}={version(package)}")
        except Exception:
            found.append(f"{package}=missing")
    dcmtk = shutil.which("dcmcjpls")
    if dcmtk:
        first = subprocess.run([dcmtk, "--version"], capture_output=True, text=True, timeout=60)
        found.append(f"dcmtk={(first.stdout.splitlines() or ['?'])[0]}")
    jar = Path("/usr/share/java/pixelmed.jar")
    found.append(f"pixelmed={jar.resolve().name if jar.exists() else 'missing'}")
    return ",".join(found)


def build_entry(root: str | os.PathLike[str], name: str) -> Path:
    """Produce the files of corpus entry ``name`` under cache ``root``; return their folder.

    Reuses a finished folder (marked by ``corpus.json``).  Builds the entry's source first.

    Raises:
        RuntimeError: If a converter fails.
    """
    entry = CORPUS[name]
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(f"{_CACHE_VERSION}|{_tool_versions()}|{entry}".encode()).hexdigest()
    target = base / f"{name}-{key[:12]}"
    if (target / _DONE).is_file():
        return target
    source = build_entry(base, entry.source) if entry.source else None
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=base))
    try:
        if entry.writer == "dicomizer":
            files = make_dicomizer_slide(
                base / "dicomizer",
                compression=entry.extra["compression"],
                max_size_mb=entry.extra["max_size_mb"],
                levels=3,
                dataset=derivable_dataset(f"corpus-{name}"),
            )
            for path in files:
                shutil.copy2(path, work / path.name)
        elif source is None:
            _run_pixelmed(entry, base, work)
        elif entry.writer == "dcmtk":
            _run_dcmtk(entry, source, work)
        else:
            _run_wsidicom(entry, source, work)
        files = sorted(p.name for p in work.glob("*.dcm"))
        record = {"entry": entry.name, "exercises": entry.exercises, "files": files}
        publish_folder(work, target, _DONE, record)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------------
# Independent decode


def decode_reference_frame(ds: Any, index: int) -> np.ndarray:
    """Frame ``index`` of ``ds`` decoded by pydicom (JPEG XL: imagecodecs), 3-D."""
    from pydicom.pixels import pixel_array

    uid = str(ds.file_meta.TransferSyntaxUID)
    if uid.startswith("1.2.840.10008.1.2.4.11"):  # JPEG XL: pydicom 3.0 has no decoder
        import imagecodecs
        from pydicom.encaps import get_frame

        data = get_frame(ds.PixelData, index, number_of_frames=int(ds.NumberOfFrames))
        frame: np.ndarray = imagecodecs.jpegxl_decode(data)
    elif uid in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51") and ds.BitsAllocated == 8:
        # Pillow uses libjpeg-turbo like the reader; pylibjpeg-libjpeg upsamples chroma its
        # own way (up to 11 apart on 4:2:0 frames), which says nothing about the reader.
        frame = pixel_array(ds, index=index, decoding_plugin="pillow")
    else:
        frame = pixel_array(ds, index=index)
    return frame if frame.ndim == 3 else frame[..., None]


def reference_planes(
    path: str | os.PathLike[str],
    into: dict[tuple[str, int], np.ndarray] | None = None,
) -> dict[tuple[str, int], np.ndarray]:
    """Decode a tiled instance frame by frame with pydicom and place each frame.

    Frames are placed by their Plane Position (Slide) when the instance has per-frame
    functional groups, else in TILED_FULL order (columns fastest, then rows, focal planes,
    optical paths), counted from the instance's ConcatenationFrameOffsetNumber.  Edge frames
    are cropped to the total pixel matrix.

    Args:
        path: The instance.
        into: Planes to paste into (the other parts of a concatenation); default new ones.

    Returns:
        ``{(optical path identifier, focal plane index): array (rows, columns, samples)}``.
    """
    import pydicom

    ds = pydicom.dcmread(path)
    rows, cols = int(ds.TotalPixelMatrixRows), int(ds.TotalPixelMatrixColumns)
    tile_rows, tile_cols = int(ds.Rows), int(ds.Columns)
    per_row = -(-cols // tile_cols)
    per_plane = per_row * -(-rows // tile_rows)
    planes_z = int(ds.get("TotalPixelMatrixFocalPlanes", 1) or 1)
    paths = [str(item.OpticalPathIdentifier) for item in ds.OpticalPathSequence]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    first = int(ds.get("ConcatenationFrameOffsetNumber", 0) or 0)
    out: dict[tuple[str, int], np.ndarray] = {} if into is None else into
    for index in range(int(ds.get("NumberOfFrames", 1))):
        frame = decode_reference_frame(ds, index)
        if per_frame is not None:
            position = per_frame[index].PlanePositionSlideSequence[0]
            r0 = int(position.RowPositionInTotalImagePixelMatrix) - 1
            c0 = int(position.ColumnPositionInTotalImagePixelMatrix) - 1
            groups = per_frame[index]
            path = (
                str(groups.OpticalPathIdentificationSequence[0].OpticalPathIdentifier)
                if "OpticalPathIdentificationSequence" in groups
                else paths[0]
            )
            key = (path, 0)
        else:
            tile = (first + index) % per_plane
            r0, c0 = (tile // per_row) * tile_rows, (tile % per_row) * tile_cols
            plane = (first + index) // per_plane
            key = (paths[plane // planes_z], plane % planes_z)
        canvas = out.get(key)
        if canvas is None:
            canvas = out[key] = np.zeros((rows, cols, frame.shape[-1]), frame.dtype)
        h, w = min(tile_rows, rows - r0), min(tile_cols, cols - c0)
        canvas[r0 : r0 + h, c0 : c0 + w] = frame[:h, :w]
    return out

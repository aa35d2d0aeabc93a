"""Make the benchmark test slides (cached in ``benchmarks/data/<name>/``).

A tissue-like RGB image is synthesised with numpy + Pillow, written as a tiled,
JPEG-compressed pyramidal TIFF (tifffile) and converted to DICOM by a third-party
converter, ``OrthancWSIDicomizer`` (Debian ``orthanc-wsi``), so our reader is measured
on files it did not write. The converter copies the TIFF's JPEG tiles as they are
(no re-encoding) when given a hierarchical TIFF, which keeps conversion fast.

Usage::

    python benchmarks/data.py            # full slide: 20000 x 17000 (width x height)
    python benchmarks/data.py --smoke    # 2048 x 1536, for tests
    python benchmarks/data.py --force    # regenerate even when cached
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "data"
TILE = 256
MANIFEST = "manifest.json"


class ConverterMissingError(RuntimeError):
    """The third-party converter is not installed."""


@dataclass(frozen=True)
class SlideSpec:
    name: str
    width: int
    height: int
    tile: int = TILE
    jpeg_quality: int = 90
    seed: int = 20240601


FULL = SlideSpec("wsi-20000x17000-orthanc", 20000, 17000)
SMOKE = SlideSpec("smoke-2048x1536-orthanc", 2048, 1536)


def _level_sizes(width: int, height: int, tile: int) -> list[tuple[int, int]]:
    # Halve until the whole level fits in about two tiles: the top level is the thumbnail.
    sizes = [(width, height)]
    while max(sizes[-1]) > 2 * tile:
        w, h = sizes[-1]
        sizes.append(((w + 1) // 2, (h + 1) // 2))
    return sizes


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], octaves: int) -> np.ndarray:
    """Fractal value noise in [0, 1] at low resolution (upsampled later by Pillow)."""
    from PIL import Image

    h, w = shape
    out = np.zeros(shape, np.float32)
    amp = 1.0
    total = 0.0
    for o in range(octaves):
        cells = (max(2, h >> (octaves - o + 1)), max(2, w >> (octaves - o + 1)))
        coarse = rng.random(cells, dtype=np.float32)
        img = Image.fromarray(coarse, mode="F").resize((w, h), Image.Resampling.BICUBIC)
        out += amp * np.asarray(img)
        total += amp
        amp *= 0.5
    out /= total
    out -= out.min()
    out /= max(float(out.max()), 1e-6)
    return out


def synthesise(spec: SlideSpec) -> np.ndarray:
    """Tissue-like H&E image: stained islands on white glass, nuclei, fibres and grain.

    JPEG tile sizes, and so read and decode costs, depend on image content; flat colour
    would flatter every reader, so the image has texture at several scales.
    """
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(spec.seed)
    w, h = spec.width, spec.height
    # Fields at 1/16 scale, upsampled: smooth shapes need no full-resolution noise.
    lw, lh = max(w // 16, 8), max(h // 16, 8)
    tissue = _smooth_field(rng, (lh, lw), 6)
    mask = np.clip((tissue - 0.35) * 6.0, 0.0, 1.0)
    hema = _smooth_field(rng, (lh, lw), 5)
    eosin = _smooth_field(rng, (lh, lw), 4)

    def up(field: np.ndarray) -> np.ndarray:
        img = Image.fromarray((field * 255).astype(np.uint8), mode="L")
        return np.asarray(img.resize((w, h), Image.Resampling.BILINEAR))

    mask_u8 = up(mask)
    hema_u8 = up(hema)
    eosin_u8 = up(eosin)
    del tissue, mask, hema, eosin

    # Nuclei and fibres are drawn at full resolution: they make the high frequencies.
    nuclei = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(nuclei)
    n_nuclei = int(w * h / 500)
    xs = rng.integers(0, w, n_nuclei)
    ys = rng.integers(0, h, n_nuclei)
    rs = rng.integers(3, 9, n_nuclei)
    shade = rng.integers(120, 255, n_nuclei)
    for x, y, r, s in zip(xs.tolist(), ys.tolist(), rs.tolist(), shade.tolist(), strict=True):
        draw.ellipse((x - r, y - r * 0.8, x + r, y + r * 0.8), fill=s)
    n_fibres = int(w * h / 40000)
    for x, y, dx, dy in zip(
        rng.integers(0, w, n_fibres).tolist(),
        rng.integers(0, h, n_fibres).tolist(),
        rng.integers(-60, 60, n_fibres).tolist(),
        rng.integers(-60, 60, n_fibres).tolist(),
        strict=True,
    ):
        draw.line((x, y, x + dx, y + dy), fill=90, width=2)
    nuclei = nuclei.filter(ImageFilter.GaussianBlur(1.2))
    nuc = np.asarray(nuclei)

    rgb = np.empty((h, w, 3), np.uint8)
    # Absorbance (optical density) per stain and channel, roughly H&E.
    h_od = np.array([0.65, 0.70, 0.29], np.float32)
    e_od = np.array([0.07, 0.99, 0.11], np.float32)
    rows = 512
    for r0 in range(0, h, rows):
        sl = slice(r0, min(h, r0 + rows))
        m = mask_u8[sl].astype(np.float32) / 255.0
        hd = (0.15 + 0.5 * hema_u8[sl] / 255.0 + 1.6 * nuc[sl] / 255.0) * m
        ed = (0.10 + 0.6 * eosin_u8[sl] / 255.0) * m
        od = hd[..., None] * h_od + ed[..., None] * e_od
        grain = rng.normal(0.0, 0.04, od.shape[:2]).astype(np.float32)
        od += (grain * (0.3 + m))[..., None]
        val = 245.0 * np.exp(-od)
        rgb[sl] = np.clip(val, 0, 255).astype(np.uint8)
    return rgb


def write_pyramidal_tiff(rgb: np.ndarray, path: Path, spec: SlideSpec) -> list[tuple[int, int]]:
    """Tiled JPEG pyramid, one IFD per level (the layout OrthancWSIDicomizer reads)."""
    import tifffile
    from PIL import Image

    sizes = _level_sizes(spec.width, spec.height, spec.tile)
    level = rgb
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for i, (w, h) in enumerate(sizes):
            if i > 0:
                level = np.asarray(Image.fromarray(level).resize((w, h), Image.Resampling.BOX))
            tif.write(
                level,
                tile=(spec.tile, spec.tile),
                compression="jpeg",
                compressionargs={"level": spec.jpeg_quality},
                photometric="rgb",
                subfiletype=0 if i == 0 else 1,
                maxworkers=2,
            )
    return sizes


def _dataset_json(spec: SlideSpec) -> dict[str, Any]:
    # orthanc-wsi 1.1 writes neither Image Type nor Frame of Reference UID by default;
    # readers need both to build a pyramid, so they come in through --dataset.
    from pydicom.uid import generate_uid

    return {
        "PatientID": "BENCH-0001",
        "PatientName": "BENCHMARK^SLIDE",
        "StudyID": "BENCH",
        "SeriesNumber": "1",
        "AccessionNumber": "BENCH0001",
        "Manufacturer": "dicomslide benchmarks",
        "ImageType": "ORIGINAL\\PRIMARY\\VOLUME\\NONE",
        "FrameOfReferenceUID": generate_uid(entropy_srcs=[spec.name, str(spec.seed)]),
        "FocusMethod": "AUTO",
        "ExtendedDepthOfField": "NO",
        "ContainerIdentifier": spec.name,
        "IssuerOfTheContainerIdentifierSequence": [],
        "ContainerTypeCodeSequence": [],
        "SpecimenDescriptionSequence": [
            {
                "SpecimenIdentifier": "S1",
                "SpecimenUID": generate_uid(entropy_srcs=[spec.name, "specimen"]),
                "IssuerOfTheSpecimenIdentifierSequence": [],
                "SpecimenPreparationSequence": [],
            }
        ],
        "SpecimenLabelInImage": "NO",
        "BurnedInAnnotation": "NO",
    }


def convert_orthanc(tiff: Path, out: Path, spec: SlideSpec) -> None:
    exe = shutil.which("OrthancWSIDicomizer")
    if exe is None:
        raise ConverterMissingError("OrthancWSIDicomizer not found (apt-get install orthanc-wsi).")
    dataset = tiff.with_suffix(".dataset.json")
    dataset.write_text(json.dumps(_dataset_json(spec), indent=1))
    cmd = [
        exe,
        "--dataset",
        str(dataset),
        "--folder",
        str(out),
        "--max-size",
        "0",  # one instance per level: the layout most readers expect
        "--tile-width",
        str(spec.tile),
        "--tile-height",
        str(spec.tile),
        "--threads",
        "2",
        str(tiff),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"OrthancWSIDicomizer failed ({res.returncode}):\n{res.stderr[-4000:]}")


def describe(folder: Path) -> list[dict[str, Any]]:
    """Per-instance structure of a converted slide (sorted largest level first)."""
    import pydicom

    out = []
    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        out.append(
            {
                "file": f.name,
                "bytes": f.stat().st_size,
                "image_type": list(ds.get("ImageType", [])),
                "width": int(ds.TotalPixelMatrixColumns),
                "height": int(ds.TotalPixelMatrixRows),
                "tile": [int(ds.Columns), int(ds.Rows)],
                "frames": int(ds.NumberOfFrames),
                "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
                "dimension_organization": str(ds.get("DimensionOrganizationType", "")),
                "photometric": str(ds.PhotometricInterpretation),
            }
        )
    out.sort(key=lambda d: d["width"] * d["height"], reverse=True)
    return out


def ensure_slide(spec: SlideSpec, force: bool = False, keep_tiff: bool = False) -> dict[str, Any]:
    """Create the slide unless cached; return its manifest."""
    folder = DATA_DIR / spec.name
    manifest_path = folder / MANIFEST
    if manifest_path.exists() and not force:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("spec") == asdict(spec):
            return manifest
    if shutil.which("OrthancWSIDicomizer") is None:
        # Checked before synthesising: that takes minutes for the full slide.
        raise ConverterMissingError("OrthancWSIDicomizer not found (apt-get install orthanc-wsi).")
    if importlib.util.find_spec("tifffile") is None:
        raise ConverterMissingError(
            "tifffile is not installed (pip install tifffile, or run benchmarks/setup_peers.py)."
        )
    if folder.exists():
        shutil.rmtree(folder)
    dicom = folder / "dicom"
    dicom.mkdir(parents=True)
    tiff = folder / "source.tiff"
    t0 = time.perf_counter()
    rgb = synthesise(spec)
    t1 = time.perf_counter()
    sizes = write_pyramidal_tiff(rgb, tiff, spec)
    del rgb
    t2 = time.perf_counter()
    convert_orthanc(tiff, dicom, spec)
    t3 = time.perf_counter()
    if not keep_tiff:
        tiff.unlink()
    instances = describe(dicom)
    manifest = {
        "spec": asdict(spec),
        "converter": _orthanc_version(),
        "dicom_dir": str(dicom.relative_to(HERE)),
        "tiff_levels": sizes,
        "instances": instances,
        "total_bytes": sum(d["bytes"] for d in instances),
        "seconds": {
            "synthesise": round(t1 - t0, 2),
            "tiff": round(t2 - t1, 2),
            "convert": round(t3 - t2, 2),
        },
    }
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return manifest


def _orthanc_version() -> str:
    res = subprocess.run(
        ["OrthancWSIDicomizer", "--version"], capture_output=True, text=True, check=False
    )
    text = (res.stdout + res.stderr).strip().splitlines()
    return text[0] if text else "?"


def main() -> int:
    ap = argparse.ArgumentParser(description="Make the benchmark test slide.")
    ap.add_argument("--smoke", action="store_true", help="tiny 2048x1536 slide for tests")
    ap.add_argument("--force", action="store_true", help="regenerate even when cached")
    ap.add_argument("--keep-tiff", action="store_true", help="keep the source TIFF")
    args = ap.parse_args()
    spec = SMOKE if args.smoke else FULL
    manifest = ensure_slide(spec, force=args.force, keep_tiff=args.keep_tiff)
    print(json.dumps(manifest, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

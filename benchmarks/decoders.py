"""Measure frame decoding speed per transfer syntax and per decoder library.

Encodes a set of synthetic 256x256 RGB tiles that look roughly like H&E stained tissue
(smooth blobs of pink and purple with fine grain), then decodes all of them through
:func:`dicomslide.codecs.decode_frame` once for every installed decoder of each transfer
syntax, so the numbers include the small overhead of dicomslide itself. Each measurement is
the median of several runs over all tiles; the decoder that ``dicomslide.codecs`` picks first
is marked.

Usage::

    python benchmarks/decoders.py [--tiles 200] [--runs 5] [--json out.json] [--markdown out.md]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dicomslide import codecs
from dicomslide.codecs import PixelFormat, decode_frame
from dicomslide.errors import UnsupportedError

TILE = 256


@dataclass(frozen=True)
class Encoding:
    """A transfer syntax with the encoder that makes its test frames."""

    uid: str
    label: str
    photometric_interpretation: str
    encode: Callable[[np.ndarray], bytes]
    lossless: bool


@dataclass(frozen=True)
class Result:
    """Decoding speed of one library for one transfer syntax."""

    transfer_syntax_uid: str
    transfer_syntax: str
    decoder: str
    chosen: bool
    tiles_per_second: float
    milliseconds_per_tile: float
    mean_bytes_per_tile: float
    max_abs_error: float | None
    note: str = ""


def make_tiles(count: int, seed: int = 0) -> list[np.ndarray]:
    """Make `count` tissue-like RGB tiles."""
    rng = np.random.default_rng(seed)
    background = np.array([240, 235, 240], dtype=np.float32)
    stroma = np.array([225, 150, 190], dtype=np.float32)
    nuclei = np.array([90, 60, 150], dtype=np.float32)
    tiles = []
    for _ in range(count):
        fields = []
        for cells in (8, 32):
            small = rng.random((cells, cells), dtype=np.float32)
            image = Image.fromarray(small, mode="F").resize((TILE, TILE), Image.Resampling.BICUBIC)
            fields.append(np.asarray(image))
        tissue = np.clip((fields[0] - 0.35) * 4, 0, 1)[..., None]
        nucleus = np.clip((fields[1] - 0.7) * 6, 0, 1)[..., None] * tissue
        rgb = background + tissue * (stroma - background) + nucleus * (nuclei - stroma)
        rgb += rng.normal(0, 5, rgb.shape).astype(np.float32)
        tiles.append(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))
    return tiles


def pillow_jpeg(tile: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(tile).save(buffer, format="JPEG", quality=90, subsampling="4:2:2")
    return buffer.getvalue()


def pillow_j2k(tile: np.ndarray, *, lossless: bool) -> bytes:
    buffer = io.BytesIO()
    options: dict[str, Any] = {"no_jp2": True, "mct": 1, "irreversible": not lossless}
    if not lossless:
        options.update(quality_mode="dB", quality_layers=[40])
    Image.fromarray(tile).save(buffer, format="JPEG2000", **options)
    return buffer.getvalue()


def rle(tile: np.ndarray) -> bytes:
    from pydicom.pixels.encoders.base import RLELosslessEncoder

    encoded: bytes = RLELosslessEncoder.encode(
        tile,
        encoding_plugin="pydicom",
        **codecs._pydicom_frame_keywords(PixelFormat(TILE, TILE, 3, 8, 8, 0, "RGB")),
    )
    return encoded


def encodings() -> list[Encoding]:
    """The transfer syntaxes to measure, with the best encoders installed."""
    found = [
        Encoding("1.2.840.10008.1.2.4.50", "JPEG Baseline q90 4:2:2", "YBR_FULL_422",
                 pillow_jpeg, lossless=False),
    ]  # fmt: skip
    try:
        import imagecodecs
    except ImportError:
        found += [
            Encoding("1.2.840.10008.1.2.4.91", "JPEG 2000 lossy 40 dB", "YBR_ICT",
                     lambda t: pillow_j2k(t, lossless=False), lossless=False),
            Encoding("1.2.840.10008.1.2.4.90", "JPEG 2000 lossless", "YBR_RCT",
                     lambda t: pillow_j2k(t, lossless=True), lossless=True),
        ]  # fmt: skip
    else:
        ic: Any = imagecodecs
        found += [
            Encoding("1.2.840.10008.1.2.4.91", "JPEG 2000 lossy 40 dB", "YBR_ICT",
                     lambda t: ic.jpeg2k_encode(t, level=40, reversible=False,
                                                codecformat="J2K"), lossless=False),
            Encoding("1.2.840.10008.1.2.4.90", "JPEG 2000 lossless", "YBR_RCT",
                     lambda t: ic.jpeg2k_encode(t, level=0, reversible=True,
                                                codecformat="J2K"), lossless=True),
        ]  # fmt: skip
        if ic.HTJ2K.available:
            found += [
                Encoding("1.2.840.10008.1.2.4.203", "HTJ2K lossy (qstep 0.01)", "YBR_ICT",
                         lambda t: ic.htj2k_encode(t, level=0.01, reversible=False),
                         lossless=False),
                Encoding("1.2.840.10008.1.2.4.201", "HTJ2K lossless", "YBR_RCT",
                         lambda t: ic.htj2k_encode(t, reversible=True), lossless=True),
            ]  # fmt: skip
        found += [
            Encoding("1.2.840.10008.1.2.4.70", "JPEG lossless SV1", "RGB",
                     lambda t: ic.jpeg8_encode(t, lossless=True, predictor=1), lossless=True),
            Encoding("1.2.840.10008.1.2.4.80", "JPEG-LS lossless", "RGB",
                     lambda t: ic.jpegls_encode(t), lossless=True),
        ]  # fmt: skip
    found.append(Encoding("1.2.840.10008.1.2.5", "RLE lossless", "RGB", rle, lossless=True))
    return found


@contextmanager
def only_decoder(uid: str, name: str) -> Iterator[None]:
    """Leave a single decoder registered for `uid` while measuring it."""
    saved = codecs._DECODERS[uid]
    codecs._DECODERS[uid] = tuple(d for d in saved if d.name == name)
    try:
        yield
    finally:
        codecs._DECODERS[uid] = saved


def measure(
    encoding: Encoding, tiles: list[np.ndarray], frames: list[bytes], runs: int
) -> list[Result]:
    fmt = PixelFormat(TILE, TILE, 3, 8, 8, 0, encoding.photometric_interpretation)
    names = codecs.decoder_names(encoding.uid)
    mean_size = statistics.fmean(len(f) for f in frames)
    results = []
    for name in names:
        with only_decoder(encoding.uid, name):
            try:
                error = max(
                    float(np.abs(decode_frame(f, encoding.uid, fmt).astype(int) - t).max())
                    for f, t in zip(frames[:10], tiles[:10], strict=True)
                )
            except UnsupportedError as exc:
                # dicomslide declines this library for these frames (see codecs.py).
                results.append(
                    Result(encoding.uid, encoding.label, name, False, 0.0, 0.0,
                           round(mean_size), None, f"declined: {exc}")
                )  # fmt: skip
                print(f"{encoding.label:28s} {name:22s}  declined", file=sys.stderr)
                continue
            timings = []
            for _ in range(runs):
                start = time.perf_counter()
                for frame in frames:
                    decode_frame(frame, encoding.uid, fmt)
                timings.append(time.perf_counter() - start)
        seconds = statistics.median(timings) / len(frames)
        results.append(
            Result(
                transfer_syntax_uid=encoding.uid,
                transfer_syntax=encoding.label,
                decoder=name,
                chosen=False,
                tiles_per_second=round(1 / seconds, 1),
                milliseconds_per_tile=round(seconds * 1000, 3),
                mean_bytes_per_tile=round(mean_size),
                max_abs_error=error,
            )
        )
        print(f"{encoding.label:28s} {name:22s} {1 / seconds:9.1f} tiles/s", file=sys.stderr)
    # decode_frame uses the first decoder in rank order that does not decline the frames.
    for index, result in enumerate(results):
        if not result.note:
            results[index] = replace(result, chosen=True)
            break
    return results


def markdown(results: list[Result]) -> str:
    lines = [
        "| Transfer syntax | UID | Decoder | Tiles/s | ms/tile | KiB/tile | Max error | Chosen |",
        "|---|---|---|---:|---:|---:|---:|:---:|",
    ]
    for r in results:
        if r.note:
            lines.append(
                f"| {r.transfer_syntax} | {r.transfer_syntax_uid} | {r.decoder} | "
                f"declined | | {r.mean_bytes_per_tile / 1024:.1f} | | |"
            )
            continue
        lines.append(
            f"| {r.transfer_syntax} | {r.transfer_syntax_uid} | {r.decoder} | "
            f"{r.tiles_per_second:.0f} | {r.milliseconds_per_tile:.2f} | "
            f"{r.mean_bytes_per_tile / 1024:.1f} | {r.max_abs_error:.0f} | "
            f"{'yes' if r.chosen else ''} |"
        )
    return "\n".join(lines)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "machine": platform.machine()}
    for package in (
        "numpy", "pillow", "imagecodecs", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg",
        "pylibjpeg-rle", "pyjpegls", "pydicom",
    ):  # fmt: skip
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", type=int, default=200, help="number of tiles (200)")
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (5)")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the markdown table here")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.tiles < 1:
        parser.error("--tiles and --runs must be positive")

    tiles = make_tiles(args.tiles)
    results: list[Result] = []
    for encoding in encodings():
        frames = [encoding.encode(tile) for tile in tiles]
        results += measure(encoding, tiles, frames, args.runs)

    table = markdown(results)
    print(table)
    report = {
        "tiles": args.tiles,
        "tile_size": [TILE, TILE, 3],
        "runs": args.runs,
        "statistic": "median over runs of the time to decode all tiles, single thread",
        "versions": versions(),
        "results": [asdict(r) for r in results],
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

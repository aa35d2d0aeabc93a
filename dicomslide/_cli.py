"""The ``dicomslide`` command: find slides in a folder and read from them.

Without a source it writes the package's sample slide into a local folder and reads that, so a
fresh install can show that everything works. With a folder it lists the slides found and can
write a region or a thumbnail as PNG.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

import dicomslide
from dicomslide.errors import DicomSlideError

__all__ = ["main"]

DEFAULT_SAMPLE_DIR = Path("sample-slide")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicomslide",
        description="Find DICOM whole-slide images in a folder and read regions from them.",
    )
    parser.add_argument(
        "source",
        nargs="?",
        help="folder of DICOM files (default: write and read the sample slide)",
    )
    parser.add_argument(
        "--sample-dir",
        type=Path,
        default=DEFAULT_SAMPLE_DIR,
        help="where the sample slide is written when no source is given (default: %(default)s)",
    )
    parser.add_argument("--container-id", help="only the slide with this Container Identifier")
    parser.add_argument("--slide", type=int, default=0, help="index of the slide to read from")
    parser.add_argument("--level", type=int, default=-1, help="level to read (default: top)")
    parser.add_argument(
        "--region",
        type=int,
        nargs=4,
        metavar=("ROW", "COLUMN", "ROWS", "COLUMNS"),
        help="region to read: base-level offset and size at --level",
    )
    parser.add_argument("--channel", type=int, default=0, help="channel index")
    parser.add_argument("--focal-plane", type=int, default=0, help="focal plane index")
    parser.add_argument("--out", type=Path, help="write the region (or thumbnail) as PNG here")
    parser.add_argument(
        "--thumbnail", type=int, metavar="PIXELS", help="write a thumbnail this many pixels wide"
    )
    return parser


def _describe(index: int, slide: dicomslide.Slide) -> str:
    lines = [
        f"slide {index}: container {slide.container_id!r}, "
        f"frame of reference {slide.frame_of_reference_uid or '(none)'}",
        f"  channels: {slide.num_channels} "
        + ", ".join(
            f"{slide.get_channel_type(c).value}:{slide.get_channel_identifier(c)}"
            for c in range(slide.num_channels)
        ),
        f"  focal planes: {slide.num_focal_planes} (um: "
        + ", ".join(f"{slide.get_focal_plane_offset(z):g}" for z in range(slide.num_focal_planes))
        + ")",
        f"  label images: {len(slide.label_images)}, overview images: "
        f"{len(slide.overview_images)}, thumbnail images: {len(slide.thumbnail_images)}",
        "  levels:",
    ]
    for level, ((rows, cols), spacing, factor) in enumerate(
        zip(
            slide.total_pixel_matrix_dimensions,
            slide.pixel_spacings,
            slide.downsampling_factors,
            strict=True,
        )
    ):
        lines.append(
            f"    {level}: {cols} x {rows} px (w x h), {spacing[1] * 1000:.4f} x "
            f"{spacing[0] * 1000:.4f} um/px, downsample {factor:g}"
        )
    return "\n".join(lines)


def _to_image(region: np.ndarray) -> Image.Image:
    if region.shape[2] == 1:
        plane = region[:, :, 0]
        if plane.dtype != np.uint8:
            top = float(plane.max()) or 1.0
            plane = (plane.astype(np.float64) * (255.0 / top)).astype(np.uint8)
        return Image.fromarray(plane, mode="L")
    return Image.fromarray(region.astype(np.uint8), mode="RGB")


def _prepare_source(args: argparse.Namespace) -> Path | None:
    if args.source is None:
        from dicomslide.synthetic import write_sample_slide

        folder = Path(args.sample_dir)
        if not any(folder.glob("*.dcm")):
            started = time.perf_counter()
            files = write_sample_slide(folder)
            print(
                f"wrote sample slide: {len(files)} files in {folder} "
                f"({time.perf_counter() - started:.2f} s)"
            )
        return folder
    source = Path(args.source)
    if not source.is_dir():
        print(f"dicomslide: {source} is not a folder", file=sys.stderr)
        return None
    return source


async def _run(args: argparse.Namespace, source: Path) -> int:
    client = dicomslide.DICOMfileClient(source)
    started = time.perf_counter()
    slides = await dicomslide.find_slides(client, container_id=args.container_id)
    print(f"found {len(slides)} slide(s) in {source} ({time.perf_counter() - started:.2f} s)")
    for i, slide in enumerate(slides):
        print(_describe(i, slide))
    if not slides:
        return 1
    if not 0 <= args.slide < len(slides):
        print(f"dicomslide: --slide must be in 0..{len(slides) - 1}", file=sys.stderr)
        return 2
    slide = slides[args.slide]
    started = time.perf_counter()
    if args.thumbnail:
        level = slide.num_levels - 1
        rows, cols = slide.total_pixel_matrix_dimensions[level]
        region = await slide.get_image_region(
            (0, 0), level, (rows, cols), args.channel, args.focal_plane
        )
        image = _to_image(region)
        image.thumbnail((args.thumbnail, args.thumbnail * rows // max(cols, 1) + 1))
        what = f"thumbnail {image.width} x {image.height} px from level {level}"
    else:
        level = args.level
        if args.region:
            row, col, rows, cols = args.region
        else:
            row, col = 0, 0
            rows, cols = (min(v, 512) for v in slide.total_pixel_matrix_dimensions[level])
        region = await slide.get_image_region(
            (row, col), level, (rows, cols), args.channel, args.focal_plane
        )
        image = _to_image(region)
        what = (
            f"region {region.shape[1]} x {region.shape[0]} px at level {level % slide.num_levels}"
        )
    elapsed = time.perf_counter() - started
    stats = slide.cache_stats
    print(
        f"read {what} in {elapsed * 1000:.1f} ms "
        f"({stats.frames_fetched} frames in {stats.requests} request(s)); "
        f"mean pixel value {float(np.asarray(image).mean()):.1f}"
    )
    if args.out:
        image.save(args.out)
        print(f"wrote {args.out}")
    await client.aclose()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv: Sequence[str] | None, optional
        Arguments (default: ``sys.argv[1:]``)

    Returns
    -------
    int
        Exit status
    """
    args = _parser().parse_args(argv)
    source = _prepare_source(args)
    if source is None:
        return 2
    try:
        return asyncio.run(_run(args, source))
    except DicomSlideError as error:
        print(f"dicomslide: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

"""The ``dicomslide`` command: find slides in a folder or on a DICOMweb server and read them.

Without a source it writes the package's sample slide into a local folder and reads that, so a
fresh install can show that everything works. With a folder it lists the slides found and can
write a region or a thumbnail as PNG (``dicomslide FOLDER [--region ...] [--thumbnail N]``).

Subcommands work on a folder or a DICOMweb URL::

    dicomslide info SOURCE
    dicomslide region SOURCE --level L --offset ROW COL --size ROWS COLS --out x.png|x.tif
    dicomslide thumbnail SOURCE --size N --out x.png
    dicomslide prefetch SOURCE --level L
    dicomslide serve SOURCE [--host H] [--port P]   (needs dicomslide[serve])

DICOMweb credentials: ``--header 'Name: value'`` (repeatable) and ``--bearer-token TOKEN`` or
the environment variable ``DICOMSLIDE_TOKEN``; their values are never printed. Exit status:
0 success, 1 nothing found or a runtime error (one line on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import dicomslide
from dicomslide.errors import DicomSlideError, RegionError

__all__ = ["main"]

DEFAULT_SAMPLE_DIR = Path("sample-slide")


# One line per subcommand, shared by the subcommand parser and the top-level --help, so the
# list a user sees cannot drift from the commands that exist.
_COMMAND_HELP = {
    "info": "list slides: levels, sizes, spacing, channels",
    "region": "write a region as PNG or TIFF",
    "thumbnail": "write a thumbnail as PNG or TIFF",
    "prefetch": "fetch every frame of a level into the cache",
    "serve": "serve Deep Zoom, IIIF and a viewer over HTTP (dicomslide[serve])",
}


def _commands_epilog() -> str:
    width = max(len(name) for name in _COMMAND_HELP)
    lines = [f"  {name:<{width}}  {text}" for name, text in _COMMAND_HELP.items()]
    return (
        "subcommands (work on a folder or a DICOMweb URL; "
        "'dicomslide COMMAND --help' for options):\n" + "\n".join(lines)
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicomslide",
        usage="%(prog)s [SOURCE] [options]\n       %(prog)s COMMAND SOURCE [options]",
        description="Find DICOM whole-slide images in a folder and read regions from them.",
        epilog=_commands_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
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


def _legacy_main(argv: Sequence[str]) -> int:
    """Run the command line without a subcommand (sample slide or folder listing).

    Parameters
    ----------
    argv: Sequence[str]
        Arguments

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


# --- subcommands ---------------------------------------------------------------------------

SUBCOMMANDS = tuple(_COMMAND_HELP)
TOKEN_ENV = "DICOMSLIDE_TOKEN"


class _UsageError(Exception):
    """A bad argument found after parsing (exit status 2)."""


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="folder of DICOM files or DICOMweb base URL")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="HTTP header sent to the DICOMweb server (repeatable; values are never printed)",
    )
    parser.add_argument(
        "--bearer-token",
        help=f"OAuth bearer token for the DICOMweb server (default: ${TOKEN_ENV})",
    )
    parser.add_argument("--study", help="only slides of this Study Instance UID")
    parser.add_argument("--container-id", help="only slides with this Container Identifier")
    parser.add_argument("--slide", type=int, default=0, help="index of the slide to use")
    parser.add_argument("--timeout", type=float, default=30.0, help="DICOMweb timeout in seconds")


def _subparser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicomslide",
        description="Read DICOM whole-slide images from a folder or a DICOMweb server.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = commands.add_parser("info", help=_COMMAND_HELP["info"])
    _add_source_options(info)
    region = commands.add_parser("region", help=_COMMAND_HELP["region"])
    _add_source_options(region)
    region.add_argument("--level", type=int, default=0, help="level (default: %(default)s)")
    region.add_argument(
        "--offset",
        type=int,
        nargs=2,
        default=(0, 0),
        metavar=("ROW", "COLUMN"),
        help="top-left pixel in base-level coordinates (default: 0 0)",
    )
    region.add_argument(
        "--size",
        type=int,
        nargs=2,
        required=True,
        metavar=("ROWS", "COLUMNS"),
        help="size of the region at --level",
    )
    region.add_argument("--channel", type=int, default=0, help="channel index")
    region.add_argument("--focal-plane", type=int, default=0, help="focal plane index")
    region.add_argument("--out", type=Path, required=True, help="output file (.png, .tif)")
    thumb = commands.add_parser("thumbnail", help=_COMMAND_HELP["thumbnail"])
    _add_source_options(thumb)
    thumb.add_argument("--size", type=int, required=True, help="width and height limit (px)")
    thumb.add_argument("--channel", type=int, default=0, help="channel index")
    thumb.add_argument("--focal-plane", type=int, default=0, help="focal plane index")
    thumb.add_argument("--out", type=Path, required=True, help="output file (.png, .tif)")
    pre = commands.add_parser("prefetch", help=_COMMAND_HELP["prefetch"])
    _add_source_options(pre)
    pre.add_argument("--level", type=int, default=0, help="level (default: %(default)s)")
    pre.add_argument(
        "--channel", type=int, action="append", help="channel index (repeatable; default all)"
    )
    pre.add_argument("--cache-mb", type=float, help="frame cache budget in MB (default 512 MiB)")
    pre.add_argument(
        "--progress",
        choices=("auto", "bar", "plain", "none"),
        default="auto",
        help="progress on stderr: a bar on a terminal, lines otherwise (default: auto)",
    )
    _add_serve_parser(commands.add_parser("serve", help=_COMMAND_HELP["serve"]))
    return parser


def _add_serve_parser(serve: argparse.ArgumentParser) -> None:
    _add_source_options(serve)
    serve.set_defaults(slide=None)  # serve shows every slide; None tells "not given"
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default: %(default)s)")
    serve.add_argument("--tile-size", type=int, default=254, help="Deep Zoom tile size")
    serve.add_argument("--overlap", type=int, default=1, help="Deep Zoom tile overlap")
    serve.add_argument("--limit-bounds", action="store_true", help="Deep Zoom limit_bounds")
    serve.add_argument("--quality", type=int, default=75, help="JPEG quality (default: 75)")
    serve.add_argument("--cache-mb", type=float, help="frame cache budget in MB (default 512 MiB)")


async def _serve_command(args: argparse.Namespace) -> int:
    try:
        from dicomslide.serve.app import ServeSettings
        from dicomslide.serve.server import serve
    except ImportError as error:
        raise _UsageError(
            f"serve needs Starlette and Uvicorn: pip install 'dicomslide[serve]' ({error})"
        ) from None
    if args.slide is not None:
        raise _UsageError(
            f"serve serves every slide it finds, so --slide {args.slide} has no meaning here; "
            "choose slides with --study or --container-id"
        )
    if args.tile_size < 1 or args.overlap < 0 or not 1 <= args.quality <= 100:
        raise _UsageError("--tile-size must be >= 1, --overlap >= 0, --quality in 1..100")
    client = _open_client(args)
    settings = ServeSettings(
        tile_size=args.tile_size,
        overlap=args.overlap,
        limit_bounds=args.limit_bounds,
        jpeg_quality=args.quality,
        study_instance_uid=args.study,
        container_id=args.container_id,
    )
    try:
        await serve(
            client,
            host=args.host,
            port=args.port,
            settings=settings,
            source=_display_source(args.source),
        )
    finally:
        await client.aclose()
    return 0


def _secrets(args: argparse.Namespace) -> list[str]:
    values = [h.partition(":")[2].strip() for h in args.header]
    if args.bearer_token:
        values.append(args.bearer_token)
    return sorted({v for v in values if v}, key=len, reverse=True)


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _open_client(args: argparse.Namespace) -> Any:
    source = str(args.source)
    cache = getattr(args, "cache_mb", None)
    if source.startswith(("http://", "https://")):
        headers: dict[str, str] = {}
        for header in args.header:
            name, sep, value = header.partition(":")
            if not sep or not name.strip():
                raise _UsageError("--header must look like 'Name: value'")
            headers[name.strip()] = value.strip()
        if args.bearer_token:
            headers["Authorization"] = f"Bearer {args.bearer_token}"
        return dicomslide.DICOMwebClient(
            source,
            headers=headers,
            timeout=args.timeout,
            cache_max_bytes=int(cache * 1e6) if cache else None,
        )
    folder = Path(source)
    if not folder.is_dir():
        raise _UsageError(f"{source} is neither a folder nor an http(s):// URL")
    if args.header or args.bearer_token:
        raise _UsageError("--header and --bearer-token apply to DICOMweb URLs only")
    return dicomslide.DICOMfileClient(folder, cache_max_bytes=int(cache * 1e6) if cache else None)


def _transfer_syntaxes(slide: dicomslide.Slide, level: int) -> str:
    from pydicom.uid import UID

    names = set()
    for c in range(slide.num_channels):
        for z in range(slide.num_focal_planes):
            try:
                image = slide.resolve(level, c, z).image
            except DicomSlideError:
                continue
            ds = image.metadata
            uid = ds.get("AvailableTransferSyntaxUID") or getattr(
                getattr(ds, "file_meta", None), "TransferSyntaxUID", None
            )
            names.add(UID(str(uid)).name if uid else "unknown")
    return ", ".join(sorted(names)) or "unknown"


def _info(index: int, slide: dicomslide.Slide) -> str:
    out = _describe(index, slide).splitlines()
    levels_at = out.index("  levels:")
    for level in range(slide.num_levels):
        i = levels_at + 1 + level
        out[i] += f", {_transfer_syntaxes(slide, level)}"
    return "\n".join(out)


class _Progress:
    """Progress of a prefetch on stderr: a redrawn bar on a terminal, else plain lines."""

    def __init__(self, mode: str, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "plain"
        self.mode = mode
        self.last_time = 0.0
        self.last_decile = -1
        self.started = time.perf_counter()
        self.finished = False

    def __call__(self, done: int, total: int) -> None:
        if self.mode == "none":
            return
        now = time.perf_counter()
        fraction = done / total if total else 1.0
        if self.mode == "bar":
            if done < total and now - self.last_time < 0.1:
                return
            self.last_time = now
            width = 30
            filled = int(fraction * width)
            rate = done / max(now - self.started, 1e-9)
            self.stream.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {fraction * 100:5.1f}% "
                f"{done}/{total} frames {rate:,.0f} frames/s"
            )
            self.finished = done >= total
            if self.finished:
                self.stream.write("\n")
            self.stream.flush()
            return
        decile = int(fraction * 10)
        if decile != self.last_decile:
            self.last_decile = decile
            print(f"prefetch: {done}/{total} frames ({fraction * 100:.0f}%)", file=self.stream)

    def close(self) -> None:
        # A bar left unfinished (an error, Ctrl-C) gets its line ended; a finished one has.
        if self.mode == "bar" and self.last_time and not self.finished:
            self.stream.write("\n")
            self.stream.flush()


async def _pick_slide(args: argparse.Namespace, client: Any) -> tuple[list[Any], Any]:
    slides = await dicomslide.find_slides(
        client, study_instance_uid=args.study, container_id=args.container_id
    )
    if not slides:
        raise LookupError(f"no slides found in {_display_source(args.source)}")
    if args.command != "info" and not 0 <= args.slide < len(slides):
        raise _UsageError(f"--slide must be in 0..{len(slides) - 1}")
    return slides, slides[args.slide] if args.command != "info" else None


def _display_source(source: str) -> str:
    from dicomslide.sources.dicomweb_urls import redact_url

    if source.startswith(("http://", "https://")):
        return str(redact_url(source))
    return source


def _save(image: Image.Image, out: Path) -> None:
    if out.suffix.lower() not in {".png", ".tif", ".tiff", ".jpg", ".jpeg"}:
        raise _UsageError(f"--out must end in .png, .tif or .tiff, got {out.name}")
    image.save(out)


async def _run_command(args: argparse.Namespace) -> int:
    client = _open_client(args)
    try:
        started = time.perf_counter()
        slides, slide = await _pick_slide(args, client)
        if args.command == "info":
            print(
                f"found {len(slides)} slide(s) in {_display_source(args.source)} "
                f"({time.perf_counter() - started:.2f} s)"
            )
            for i, found in enumerate(slides):
                print(_info(i, found))
            return 0
        if args.command == "region":
            region = await slide.get_image_region(
                tuple(args.offset), args.level, tuple(args.size), args.channel, args.focal_plane
            )
            image = _to_image(region)
            _save(image, args.out)
            print(f"wrote {args.out}: {image.width} x {image.height} px (w x h)")
            return 0
        if args.command == "thumbnail":
            if args.size < 1:
                raise _UsageError("--size must be positive")
            level = slide.num_levels - 1
            rows, cols = slide.total_pixel_matrix_dimensions[level]
            region = await slide.get_image_region(
                (0, 0), level, (rows, cols), args.channel, args.focal_plane
            )
            image = _to_image(region)
            image.thumbnail((args.size, args.size))
            _save(image, args.out)
            print(f"wrote {args.out}: {image.width} x {image.height} px from level {level}")
            return 0
        from dicomslide.bulk import prefetch

        progress = _Progress(args.progress)
        try:
            result = await prefetch(slide, args.level, channels=args.channel, progress=progress)
        finally:
            progress.close()
        print(
            f"prefetched level {result.level}: {result.fetched_frames} frames fetched "
            f"({result.cached_frames} already cached, {result.skipped_frames} over budget), "
            f"{result.megabytes:.1f} MB in {result.seconds:.2f} s, "
            f"{result.frames_per_second:.0f} frames/s, {result.requests} request(s)"
        )
        return 0
    finally:
        await client.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv: Sequence[str] | None, optional
        Arguments (default: ``sys.argv[1:]``)

    Returns
    -------
    int
        Exit status: 0 success, 1 nothing found or runtime error, 2 usage error
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0] not in SUBCOMMANDS:
        try:
            return _legacy_main(arguments)
        except SystemExit as exit_:
            return exit_.code if isinstance(exit_.code, int) else 2
    try:
        args = _subparser().parse_args(arguments)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.bearer_token is None:
        args.bearer_token = os.environ.get(TOKEN_ENV) or None
    secrets = _secrets(args)
    try:
        return asyncio.run(_serve_command(args) if args.command == "serve" else _run_command(args))
    except (_UsageError, RegionError) as error:
        print(f"dicomslide {args.command}: error: {_redact(str(error), secrets)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except LookupError as error:
        message = error.args[0] if error.args else str(error)
        print(f"dicomslide: {_redact(str(message), secrets)}", file=sys.stderr)
        return 1
    except Exception as error:  # one line, never a traceback, never a credential
        text = " ".join(str(error).split()) or type(error).__name__
        print(f"dicomslide: error: {_redact(text, secrets)}", file=sys.stderr)
        return 1

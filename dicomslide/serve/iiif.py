"""Parsing of IIIF Image API 3.0 requests and the ``info.json`` of a slide.

Only arithmetic lives here; reading and encoding are the service's. Supported: level 1 of the
specification (regions ``full``, ``square``, ``x,y,w,h``; sizes ``max``, ``w,``, ``,h``,
``w,h``; rotation 0; quality ``default``; format ``jpg``) plus ``pct:`` regions and sizes,
``!w,h``, upscaling (``^``), rotations by multiples of 90 with mirroring (``!``), the
``color``, ``gray`` and ``bitonal`` qualities and ``png``. Every malformed or impossible
request raises :class:`dicomslide.RegionError` (a bad argument; not its subclass
``IndexRangeError``, which the service answers with 404), answered with 400 as the
specification asks.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from dicomslide.errors import RegionError

__all__ = ["FORMATS", "IIIFRequest", "info_json", "parse_request"]

CONTEXT = "http://iiif.io/api/image/3/context.json"
FORMATS = {"jpg": "image/jpeg", "png": "image/png"}
QUALITIES = ("default", "color", "gray", "bitonal")
FEATURES = (
    "baseUriRedirect",
    "cors",
    "jsonldMediaType",
    "mirroring",
    "regionByPct",
    "regionByPx",
    "regionSquare",
    "rotationBy90s",
    "sizeByConfinedWh",
    "sizeByH",
    "sizeByPct",
    "sizeByW",
    "sizeByWh",
    "sizeUpscaling",
)
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PCT4 = re.compile(rf"pct:({_NUMBER}),({_NUMBER}),({_NUMBER}),({_NUMBER})")
_INT4 = re.compile(r"(\d+),(\d+),(\d+),(\d+)")


@dataclass(frozen=True)
class IIIFRequest:
    """A parsed IIIF image request.

    Parameters
    ----------
    region: tuple[int, int, int, int]
        (x, y, width, height) in full-resolution pixels, inside the image
    size: tuple[int, int]
        (width, height) of the image before rotation
    rotation: int
        Clockwise degrees, 0, 90, 180 or 270
    mirror: bool
        Mirror horizontally before rotating
    quality: str
        ``default``, ``color``, ``gray`` or ``bitonal``
    format: str
        ``jpg`` or ``png``
    """

    region: tuple[int, int, int, int]
    size: tuple[int, int]
    rotation: int
    mirror: bool
    quality: str
    format: str


def _round(value: float) -> int:
    return math.floor(value + 0.5)


def _parse_region(text: str, width: int, height: int) -> tuple[int, int, int, int]:
    if text == "full":
        return 0, 0, width, height
    if text == "square":
        side = min(width, height)
        return (width - side) // 2, (height - side) // 2, side, side
    if match := _PCT4.fullmatch(text):
        px, py, pw, ph = (float(v) for v in match.groups())
        x, y = _round(px * width / 100), _round(py * height / 100)
        w, h = _round(pw * width / 100), _round(ph * height / 100)
    elif match := _INT4.fullmatch(text):
        x, y, w, h = (int(v) for v in match.groups())
    else:
        raise RegionError(
            f"IIIF region {text!r} is not 'full', 'square', 'x,y,w,h' or 'pct:x,y,w,h'."
        )
    if w <= 0 or h <= 0 or x >= width or y >= height:
        raise RegionError(
            f"IIIF region {text!r} is empty or outside the {width} x {height} image."
        )
    return x, y, min(w, width - x), min(h, height - y)


def _parse_size(
    text: str, region_w: int, region_h: int, limits: tuple[int, int, int]
) -> tuple[int, int]:
    max_w, max_h, max_area = limits
    upscale = text.startswith("^")
    spec = text[1:] if upscale else text
    confined = spec.startswith("!")
    if confined:
        spec = spec[1:]
    w: int | None
    h: int | None
    if spec == "max" and not confined:
        scale = min(
            max_w / region_w, max_h / region_h, math.sqrt(max_area / (region_w * region_h))
        )
        if not upscale:
            scale = min(scale, 1.0)
        return max(1, _round(region_w * scale)), max(1, _round(region_h * scale))
    if spec.startswith("pct:") and not confined:
        try:
            pct = float(spec[4:])
        except ValueError:
            raise RegionError(f"IIIF size {text!r}: {spec[4:]!r} is not a number.") from None
        if pct <= 0 or (pct > 100 and not upscale) or not math.isfinite(pct):
            raise RegionError(
                f"IIIF size {text!r}: the percentage must be in (0, 100], above 100 only with '^'."
            )
        w, h = _round(region_w * pct / 100), _round(region_h * pct / 100)
    else:
        match = re.fullmatch(r"(\d*),(\d*)", spec)
        if not match or (not match.group(1) and not match.group(2)):
            raise RegionError(
                f"IIIF size {text!r} is not 'max', 'w,', ',h', 'pct:n', 'w,h' or '!w,h' "
                "(optionally with a leading '^')."
            )
        w = int(match.group(1)) if match.group(1) else None
        h = int(match.group(2)) if match.group(2) else None
        if confined:
            if w is None or h is None:
                raise RegionError(f"IIIF size {text!r}: '!w,h' needs both w and h.")
            scale = min(w / region_w, h / region_h)
            if not upscale:
                scale = min(scale, 1.0)
            w, h = _round(region_w * scale), _round(region_h * scale)
        elif w is None:
            assert h is not None
            w = _round(region_w * h / region_h)
        elif h is None:
            h = _round(region_h * w / region_w)
    if w <= 0 or h <= 0:
        raise RegionError(f"IIIF size {text!r} gives an empty image ({w} x {h}).")
    if not upscale and (w > region_w or h > region_h):
        raise RegionError(
            f"IIIF size {text!r} ({w} x {h}) is larger than the {region_w} x {region_h} region; "
            "upscaling needs a leading '^'."
        )
    if w > max_w or h > max_h or w * h > max_area:
        raise RegionError(
            f"IIIF size {text!r} ({w} x {h}) is above this server's limit of {max_w} x {max_h} "
            f"pixels ({max_area} in all)."
        )
    return w, h


def parse_request(
    region: str,
    size: str,
    rotation: str,
    quality: str,
    format: str,
    image_size: tuple[int, int],
    limits: tuple[int, int, int],
) -> IIIFRequest:
    """Parse the path parameters of a IIIF image request.

    Parameters
    ----------
    region, size, rotation, quality, format: str
        The path segments, already percent-decoded
    image_size: tuple[int, int]
        (width, height) of the full-resolution image
    limits: tuple[int, int, int]
        maxWidth, maxHeight and maxArea of the service

    Returns
    -------
    IIIFRequest
        The request in pixels

    Raises
    ------
    dicomslide.RegionError
        If a parameter is malformed, unsupported or out of range
    """
    width, height = image_size
    x, y, w, h = _parse_region(region, width, height)
    out_size = _parse_size(size, w, h, limits)
    mirror = rotation.startswith("!")
    degrees = rotation[1:] if mirror else rotation
    try:
        angle = float(degrees)
    except ValueError:
        angle = math.nan
    if not math.isfinite(angle) or angle % 90 or not 0 <= angle <= 360:
        raise RegionError(
            f"IIIF rotation {rotation!r} is not supported; use 0, 90, 180 or 270, optionally "
            "with a leading '!' for mirroring."
        )
    if quality not in QUALITIES:
        raise RegionError(f"IIIF quality {quality!r} is not one of {', '.join(QUALITIES)}.")
    if format not in FORMATS:
        raise RegionError(f"IIIF format {format!r} is not one of {', '.join(FORMATS)}.")
    return IIIFRequest((x, y, w, h), out_size, int(angle) % 360, mirror, quality, format)


def info_json(
    service_id: str,
    image_size: tuple[int, int],
    level_sizes: tuple[tuple[int, int], ...],
    limits: tuple[int, int, int],
    tile_size: int,
) -> dict[str, Any]:
    """The ``info.json`` document of one slide.

    Parameters
    ----------
    service_id: str
        Absolute URL of the image service (without ``/info.json``)
    image_size: tuple[int, int]
        (width, height) at full resolution
    level_sizes: tuple[tuple[int, int], ...]
        (width, height) of every slide level, largest first
    limits: tuple[int, int, int]
        maxWidth, maxHeight and maxArea
    tile_size: int
        Width and height of the advertised tiles

    Returns
    -------
    dict[str, Any]
        The document, ready for ``json.dumps``
    """
    width, height = image_size
    factors = [1]
    while max(width, height) / factors[-1] > tile_size:
        factors.append(factors[-1] * 2)
    max_w, max_h, max_area = limits
    sizes = [
        {"width": w, "height": h}
        for w, h in sorted(set(level_sizes))
        if w <= max_w and h <= max_h and w * h <= max_area
    ]
    return {
        "@context": CONTEXT,
        "id": service_id,
        "type": "ImageService3",
        "protocol": "http://iiif.io/api/image",
        "profile": "level1",
        "width": width,
        "height": height,
        "maxWidth": max_w,
        "maxHeight": max_h,
        "maxArea": max_area,
        "sizes": sizes,
        "tiles": [{"width": tile_size, "height": tile_size, "scaleFactors": factors}],
        "extraQualities": [q for q in QUALITIES if q != "default"],
        "extraFormats": ["png"],
        "extraFeatures": list(FEATURES),
    }

"""Differences from dicomslide 0.7.2 that are kept on purpose, each with its reason.

This list and the README table "Differences from dicomslide 0.7" say the same; a difference
the harness finds that matches none of these entries fails the test. Where it can, an entry
also checks that the difference is exactly the documented one (e.g. that our slide region
equals the independently resampled truth and 0.7's does not), so an entry cannot hide a new
bug behind an old reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Check = Callable[[dict[str, Any], Any, Any, dict[str, Any]], bool]


@dataclass(frozen=True)
class Known:
    """One kept difference: which calls (expression pattern, variants) and why."""

    key: str
    expr: str  # regular expression searched in the call's expression
    old: str  # what 0.7 does
    new: str  # what we do
    why: str
    variants: frozenset[str] | None = None
    check: Check | None = None  # True when the difference is exactly the documented one


def _ok_array(result: Any) -> np.ndarray | None:
    return result[1] if result[0] == "ok" and isinstance(result[1], np.ndarray) else None


def _point_is_one_pixel(call: dict[str, Any], ref: Any, ours: Any, _: dict[str, Any]) -> bool:
    a, b = _ok_array(ref), _ok_array(ours)
    return a is not None and b is not None and a.shape[:2] == (0, 0) and b.shape[:2] == (1, 1)


def _ours_is_truth(call: dict[str, Any], ref: Any, ours: Any, results: dict[str, Any]) -> bool:
    truth = _ok_array(results.get(call.get("truth") or "", ("missing",)))
    b = _ok_array(ours)
    if truth is None or b is None or not np.array_equal(b, truth):
        return False
    a = _ok_array(ref)
    return a is None or a.shape != truth.shape or not np.array_equal(a, truth)


def _same_shape(call: dict[str, Any], ref: Any, ours: Any, _: dict[str, Any]) -> bool:
    a, b = _ok_array(ref), _ok_array(ours)
    return a is not None and b is not None and a.shape == b.shape


def _numpy_semantics(call: dict[str, Any], ref: Any, ours: Any, results: dict[str, Any]) -> bool:
    m = re.fullmatch(r"mat\((-?\d+)\)\[(.*)\]", call["expr"])
    b = _ok_array(ours)
    if m is None or b is None:
        return False
    full = _ok_array(results.get(f"{call['variant']} | mat({m.group(1)})[:, :, :]", ("missing",)))
    if full is None:
        return False
    expected = eval(f"full[{m.group(2)}]", {"full": full})  # our own call list, not input
    return bool(np.array_equal(b, expected) and b.shape == expected.shape)


def _fill_only(
    call: dict[str, Any], ref: Any, ours: Any, _: dict[str, Any], white: int = 255
) -> bool:
    """Equal, except pixels that 0.7 fills with 0 where we fill with white (>= ``white``)."""
    if ref[0] != "ok" or ours[0] != "ok":
        return False

    def walk(a: Any, b: Any) -> bool:
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            if a.shape != b.shape:
                return False
            differ = a != b
            # Lossy variants: 0.7 and we decode with different JPEG decoders (+-2).
            close = np.abs(a[differ].astype(np.int64) - b[differ].astype(np.int64)) <= 2
            return bool(np.all(((a[differ] == 0) & (b[differ] >= white)) | close))
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(walk(x, y) for x, y in zip(a, b, strict=True))
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(walk(a[k], b[k]) for k in a)
        return bool(a == b)

    return walk(ref[1], ours[1])


def _same_rotation_or_half_turn(
    call: dict[str, Any], ref: Any, ours: Any, _: dict[str, Any]
) -> bool:
    if ref[0] != "ok" or ours[0] != "ok":
        return False
    return round((ours[1] - ref[1]) % 360.0, 6) in (0.0, 360.0, 180.0)


def _ref_raises(pattern: str, ours_may_raise: bool = False) -> Check:
    """0.7 raises an error matching ``pattern`` (and we return, unless ``ours_may_raise``)."""

    def check(call: dict[str, Any], ref: Any, ours: Any, _: dict[str, Any]) -> bool:
        raised = ref[0] == "error" and re.search(pattern, ref[3]) is not None
        return raised and (ours_may_raise or ours[0] == "ok")

    return check


def _ours_raises_value_error(call: dict[str, Any], ref: Any, ours: Any, _: dict[str, Any]) -> bool:
    return ref[0] == "ok" and ours[0] == "error" and "ValueError" in ours[5]


def _clipped_box(call: dict[str, Any], ref: Any, ours: Any, _: dict[str, Any]) -> bool:
    if ref[0] != "ok" or ours[0] != "ok":
        return False
    (offset_a, size_a), (offset_b, size_b) = ref[1], ours[1]
    return bool(offset_a == offset_b and all(b <= a for a, b in zip(size_a, size_b, strict=True)))


def _transparent_image(call: dict[str, Any], ref: Any, ours: Any, _: dict[str, Any]) -> bool:
    if ref[0] != "error" or "IndexError" not in (ref[2], *ref[5]) or ours[0] != "ok":
        return False
    kind, mode, _size, pixels = ours[1]
    return bool(kind == "image" and mode == "RGBA" and (pixels[..., 3] == 0).all())


def _sparse_seg_zero(call: dict[str, Any], ref: Any, ours: Any, _: dict[str, Any]) -> bool:
    if ref[0] != "ok" or ours[0] != "ok" or len(ref[1]) != len(ours[1]):
        return False
    for a, b in zip(ref[1], ours[1], strict=True):
        if a.shape != b.shape or not np.all((a[a != b] == 255) & (b[a != b] == 0)):
            return False
    return True


def _fill_in_ours(call: dict[str, Any], ref: Any, ours: Any, _: dict[str, Any]) -> bool:
    a, b = _ok_array(ref), _ok_array(ours)
    if a is None or b is None or a.shape != b.shape:
        return False
    differ = np.abs(a.astype(np.int64) - b.astype(np.int64)) > 2
    return bool(np.all(b[differ] == 255))


def _bool_as_uint8(call: dict[str, Any], ref: Any, ours: Any, _: dict[str, Any]) -> bool:
    a, b = _ok_array(ref), _ok_array(ours)
    if a is None or b is None or a.dtype != np.bool_ or b.dtype != np.uint8:
        return False
    return bool(np.array_equal(a.astype(np.uint8), b))


_SLIDE_REGION = r"^(slide|images\[-?\d+\])\.get_slide_region\("
_MATRIX_KEY = r"^mat\(-?\d+\)\[.*,.*\]$"

KNOWN: list[Known] = [
    Known(
        "slide regions show the requested slide area",
        _SLIDE_REGION,
        "reads a box between int()-truncated pixel indices, leaves its last row and column "
        "filled, then rotates it by get_rotation(): the pixels are not those at the requested "
        "slide positions (with some orientations mirrored or mostly fill)",
        "pixel (i, j) is the image pixel nearest to slide position (x + j·s, y + i·s) — "
        "checked against the total pixel matrix resampled independently",
        "0.7's region does not show the area asked for; the shape is the same",
        check=_ours_is_truth,
    ),
    Known(
        "annotation regions: pixels as get_slide_region",
        r"^slide\.get_slide_region_for_annotation\(ann\('(MULTIPOINT|POLYLINE|POLYGON|ELLIPSE)'",
        "get_slide_region of the annotation's bounding box (with 0.7's misplaced pixels, see "
        "above); padding adds `top` to the box's Y offset, so the padded box is shifted "
        "along +Y instead of growing around the annotation",
        "get_slide_region of the bounding box grown by the padding on each side: the same "
        "shape as 0.7 (the shape is checked), the correct pixels",
        "follows from the slide-region fix; padding as documented (left/top/right/bottom)",
        check=_same_shape,
    ),
    Known(
        "a POINT annotation is one pixel",
        r"^slide\.get_slide_region_for_annotation\(ann\('POINT', \[[^]]*\], -?\d+\), -?\d+\)$",
        "returns an empty (0, 0, samples) array",
        "returns the 1 x 1 region of the pixel the point lies in",
        "an empty array for a point is of no use; any extent of zero is one pixel",
        check=_point_is_one_pixel,
    ),
    Known(
        "TotalPixelMatrix indexing follows NumPy",
        _MATRIX_KEY,
        "ignores the channel slice, negative indices and steps; an integer index keeps its "
        "axis; a 2-component key raises ValueError",
        "NumPy semantics (checked against the whole matrix indexed by NumPy)",
        "README: integer indices drop the axis, slices behave as in NumPy",
        check=_numpy_semantics,
    ),
    Known(
        "sampler fills colour padding with white",
        r"^sample\(ds\.TotalPixelMatrixSampler\(",
        "fills padding and the parts of edge regions outside the matrix with 0 (black)",
        "fills them like every read outside the image: white for colour, 0 for monochrome "
        "(checked: the only differing pixels are 0 vs 255)",
        "0.7's own get_slide_region fills colour with white; one fill value everywhere",
        check=_fill_only,
    ),
    Known(
        "sampler tile_grid_positions selects all overlapping regions",
        r"^sample\(ds\.TotalPixelMatrixSampler\(.*tile_grid_positions=(?!.*bounding_box)",
        "samples the region holding the tile's first pixel and the region *after* its last "
        "pixel (an exclusive end used as a position), missing the regions in between",
        "samples every region of the grid that overlaps one of the tiles",
        "0.7's selection misses regions of the tile and adds one outside it",
    ),
    Known(
        "get_rotation in [0, 360)",
        r"^images\[-?\d+\]\.get_rotation\(\)$",
        "returns the angle minus 360 (e.g. -90 for 270); for the two orientations whose "
        "columns run along ±X the angle is 180° off",
        "the counterclockwise angle in [0, 360) that turns the matrix's columns to +X",
        "0.7's value is wrong by 180° for half of the axis-aligned orientations",
        check=_same_rotation_or_half_turn,
    ),
    Known(
        "negative region offsets are rejected",
        r"^slide\.get_image_region\(\(-\d+, ",
        "a negative offset wraps around (NumPy negative indexing): the region is taken from "
        "the opposite edge of the image",
        "raises RegionError (a ValueError) naming the valid range",
        "0.7 returns pixels from the wrong place",
        check=_ours_raises_value_error,
    ),
    Known(
        "empty regions are rejected",
        r"^slide\.get_image_region\(\(0, 0\), 0, \(0, ",
        "returns an empty array",
        "raises RegionError (a ValueError): a region of zero rows or columns",
        "a zero-sized region is almost always a rounding bug in the caller; the error names it",
        check=_ours_raises_value_error,
    ),
    Known(
        "Pyramid accepts images in any order",
        r"^ds\.Pyramid\(\[i\.metadata for i in images\[::-1\]\]",
        "raises ValueError unless the images are sorted by size, largest first",
        "sorts them",
        "the order of the metadata carries no information",
        check=_ref_raises("sorted by size"),
    ),
    Known(
        "TILED_SPARSE: missing tiles are part of the grid",
        r"^(mat\(|len\(mat|sample\(|\[tile\.shape for tile in mat\()",
        "counts and indexes only the stored tiles (len, tile_positions, tile indices), and "
        "region reads across a missing tile return wrongly shaped arrays (e.g. 35 x 0)",
        "the tile grid is complete; a missing tile reads as fill",
        "0.7's tile index depends on which tiles happen to be stored, and its reads break",
        variants=frozenset({"sparse"}),
    ),
    Known(
        "concatenations are read",
        r".",
        "fails on every call for a slide whose levels are split into concatenation parts "
        "(IndexError: boolean index did not match)",
        "joins the parts of a concatenation into one image",
        "0.7 cannot read such slides at all",
        variants=frozenset({"concatenation"}),
        # Also where our answer is an error of another kind: 0.7 never reached the argument.
        check=_ref_raises("boolean index did not match", ours_may_raise=True),
    ),
    Known(
        "THUMBNAIL images do not break the pyramid",
        r".",
        "raises ValueError (not a valid image pyramid) for a slide with a THUMBNAIL image "
        "and for levels after it",
        "keeps THUMBNAIL images out of the level pyramid (thumbnail_images)",
        "0.7 cannot read such slides",
        variants=frozenset({"thumbnail"}),
        check=_ref_raises("valid image pyramid", ours_may_raise=True),
    ),
    Known(
        "OpenSlide associated images and properties (OpenSlide 4 names)",
        r"^(sorted\(osl\(\)\.associated_images\)|\{k: v for k, v in osl\(\)\.properties)",
        "associated images LABEL and OVERVIEW; openslide.* properties without "
        "associated.*/bounds-*",
        "also label, macro, thumbnail and the openslide.associated.*, openslide.bounds-* "
        "properties OpenSlide 4 gives (README 'OpenSlide API')",
        "code written for openslide.OpenSlide finds what it expects; 0.7's names remain",
    ),
]


KNOWN += [
    Known(
        "OpenSlide on slides with several focal planes",
        r"^(osl\(\)|ds\.OpenSlide\()",
        "raises ValueError: OpenSlide API only supports images with a single focal plane",
        "reads focal plane 0 (as OpenSlide does with DICOM z-stacks)",
        "z-stacks are common in cytology; a viewer still wants the slide",
        variants=frozenset({"zstack"}),
        check=_ref_raises("single focal plane"),
    ),
    Known(
        "edge tiles: bounding box clipped to the matrix",
        r"^mat\(-?\d+\)\.get_tile_bounding_box\(",
        "returns the full tile size for the last row/column of tiles",
        "clips the box to the total pixel matrix (same offset, smaller size: checked)",
        "the box says which pixels of the matrix the tile holds; past Total Pixel Matrix "
        "Rows/Columns a frame holds only padding, which is never shown (README 'Fill value')",
        check=_clipped_box,
    ),
    Known(
        "TILED_FULL segmentations and parametric maps are read",
        r".",
        "fails on every call for a slide with a TILED_FULL segmentation (AttributeError: no "
        "SegmentIdentificationSequence) — TILED_FULL images have no per-frame functional groups",
        "derives segment and position of each frame from the TILED_FULL order",
        "0.7 cannot open such slides (highdicom writes TILED_FULL by default)",
        variants=frozenset({"derived-a"}),
        check=_ref_raises("SegmentIdentificationSequence", ours_may_raise=True),
    ),
    Known(
        "images without Image Type are found",
        r".",
        "finds no slide in OrthancWSIDicomizer's default output (no Image Type, no Frame of "
        "Reference)",
        "a tiled image aligned with the finest one counts as VOLUME (README 'Grouping')",
        "the slide is there and readable",
        variants=frozenset({"dicomizer-bare"}),
        check=_ref_raises("0 slides with container", ours_may_raise=True),
    ),
    Known(
        "omitted segmentation frames read as 0",
        r"channel_index=i\) for i in slide\.find_segments\(\)\]$",
        "fills the frames a TILED_SPARSE segmentation leaves out with 255",
        "reads them as 0 (checked: the only differing pixels are 255 vs 0)",
        "the standard omits frames that hold no segment pixels; 255 would mark them all as in "
        "the segment",
        check=_sparse_seg_zero,
    ),
    Known(
        "BINARY segmentations read as uint8",
        r"(^\[mat\(0, i\)\.dtype for i in slide\.find_segments\(\)\]$|channel_index=)",
        "TotalPixelMatrix.dtype is bool; reads return bool arrays, or uint8 ones (with 255) "
        "when the region touches an omitted frame",
        "dtype and every read are uint8 with values 0 and 1 (checked: the same values)",
        "one dtype for every read of a channel, and the one the dtype property names",
        check=lambda call, ref, ours, results: (
            "dtype" in call["expr"] or _bool_as_uint8(call, ref, ours, results)
        ),
    ),
]


def _reversed_spacing(call: dict[str, Any], ref: Any, ours: Any, _: dict[str, Any]) -> bool:
    def spacings(value: Any) -> list[Any]:
        if isinstance(value, list) and value and isinstance(value[0], list) and len(value[0]) == 4:
            return [level[1] for level in value]  # PyramidLevel tuples
        return value if isinstance(value[0], list) else [value]

    if ref[0] != "ok" or ours[0] != "ok":
        return False
    a, b = spacings(ref[1]), spacings(ours[1])
    return len(a) == len(b) and all(
        np.allclose(x[::-1], y, rtol=1e-7) for x, y in zip(a, b, strict=True)
    )


def _same_tiles(call: dict[str, Any], ref: Any, ours: Any, _: dict[str, Any]) -> bool:
    a, b = _ok_array(ref), _ok_array(ours)
    if a is None or b is None or a.shape != b.shape:
        return False
    return bool(np.array_equal(np.unique(a, axis=0), np.unique(b, axis=0)))


KNOWN += [
    Known(
        "bit-packed segmentation frames that do not end on a byte",
        r"channel_index=",
        "fails (ValueError: cannot reshape) on BINARY segmentations whose frames hold a "
        "number of pixels not divisible by 8 (e.g. 45 x 45)",
        "unpacks each frame from its bit offset",
        "the standard packs the frames of a BINARY segmentation back to back",
        variants=frozenset({"derived-d"}),
        check=_ref_raises("cannot reshape"),
    ),
    Known(
        "OpenSlide: a level that does not exist reads as transparent",
        r"^osl\(\)\.read_region\(",
        "raises IndexError",
        "returns a transparent RGBA image of the requested size (checked: alpha is 0 everywhere)",
        "openslide-python does this and viewers probe levels with it (README 'OpenSlide API')",
        variants=frozenset({"derived-d"}),
        check=_transparent_image,
    ),
    Known(
        "pixel spacing of pyramid levels in PixelSpacing order",
        r"(pixel_spacings|\.pixel_spacing$|^\[tuple\(level\) for level in ds\.Pyramid)",
        "PyramidLevel.pixel_spacing (and Slide.pixel_spacings) is (between columns, between "
        "rows), the reverse of PixelSpacing and of its own get_image_pixel_spacing",
        "(between rows, between columns), as PixelSpacing and get_image_pixel_spacing "
        "(checked: the same numbers reversed); differs only for non-square pixels",
        "one order everywhere, the standard's",
        check=_reversed_spacing,
    ),
    Known(
        "non-square pixels: slide regions sampled at the mean spacing",
        r"^slide\.get_slide_region_for_annotation\(",
        "the region's shape follows from int()-truncated pixel indices of its corners",
        "one output pixel per mean pixel spacing along X and Y (as get_slide_region, whose "
        "pixels are checked against the resampled truth)",
        "slide regions are square-sampled in slide coordinates",
        variants=frozenset({"dicomizer"}),
    ),
    Known(
        "tile indices are row-major",
        r"^mat\(-?\d+\)\.(tile_positions|tile_grid_positions|get_tile_index\()",
        "for images with per-frame positions, tiles are numbered in the order the file stores "
        "them (OrthancWSIDicomizer: a Z-order walk)",
        "tiles are numbered row-major over the tile grid, whatever the file order (the same "
        "set of tiles: checked)",
        "a tile index should not depend on how a converter ordered the frames",
        variants=frozenset({"dicomizer"}),
        check=lambda call, ref, ours, results: (
            "get_tile_index" in call["expr"] or _same_tiles(call, ref, ours, results)
        ),
    ),
    Known(
        "edge tiles: the part beyond the matrix reads as fill",
        r"^mat\(-?\d+\)\[(mat\(-?\d+\)\.num_tiles - 1|\[.*\])\]$",
        "returns an edge tile with what the frame holds past Total Pixel Matrix Rows/Columns "
        "(here the decoded padding of a JPEG frame)",
        "fills that part with the fill value (white for colour; checked: every differing pixel "
        "is white in ours)",
        "pixels past the matrix are not image content: converters pad edge frames with black, "
        "white or noise (README 'Fill value')",
        variants=frozenset({"dicomizer"}),
        check=_fill_in_ours,
    ),
    Known(
        "compute_frame_positions: slide positions from the image geometry",
        r"^ds\.compute_frame_positions\(",
        "copies the per-frame X/Y offsets of the file",
        "derives each frame's slide position from its pixel position and the image's "
        "orientation, spacing and origin (the mapping every other call uses)",
        "OrthancWSIDicomizer writes per-frame offsets that contradict its Image Orientation",
        variants=frozenset({"dicomizer"}),
    ),
]


def match(call: dict[str, Any], ref: Any, ours: Any, results: dict[str, Any]) -> str | None:
    """Key of the known difference a differing call is, or None when it is unexpected."""
    for k in KNOWN:
        if k.variants is not None and call["variant"] not in k.variants:
            continue
        if not re.search(k.expr, call["expr"]):
            continue
        if k.check is None or k.check(call, ref, ours, results):
            return k.key
    return None

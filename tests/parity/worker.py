"""Run a batch of API calls with one dicomslide library and pickle what each call gave.

Run by the parity test twice on the same batch: with ``--lib ours`` by this project's
interpreter (``dicomslide_sync``) and with ``--lib ref`` by the interpreter of a virtual env that
holds dicomslide 0.7.2 (which is also named ``dicomslide``, so the two cannot share a process).
It imports only the standard library, NumPy, pydicom, highdicom and the library under test, so
that it runs unchanged in both environments.

A call is a Python expression evaluated in a namespace that names the same things on both sides:
``ds`` (the library module), ``client``, ``slide`` (the slide of the call's container),
``np``, ``hd`` and the helpers defined below. Each result is reduced to plain values (NumPy
arrays, numbers, strings, lists, dicts, ``("enum", name)``, ``("error", category, type,
message)``) so that results of the two libraries can be compared.

Usage: ``python worker.py --lib {ours,ref} CALLS.pkl RESULTS.pkl [--index-dir DIR]``
"""

from __future__ import annotations

import argparse
import enum
import logging
import pickle
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np

# Builtin exception classes in the order in which an error is categorised: an error agrees with
# the other library's when both fall into the same category (a ValueError subclass such as
# dicomslide.RegionError agrees with a plain ValueError).
CATEGORIES = (
    IndexError,
    KeyError,
    LookupError,
    TypeError,
    NotImplementedError,
    ValueError,
    AttributeError,
    ZeroDivisionError,
    AssertionError,
    RuntimeError,
    OSError,
    Exception,
)


def category(error: BaseException) -> str:
    """Name of the first builtin exception class in :data:`CATEGORIES` the error is one of."""
    for cls in CATEGORIES:
        if isinstance(error, cls):
            return cls.__name__
    return type(error).__name__


def normalize(value: Any, depth: int = 0) -> Any:
    """Reduce a result to values that both libraries' results can be compared by."""
    if depth > 6:
        return ("deep", type(value).__name__)
    if value is None or isinstance(value, (bool, str, bytes)):
        return value
    if isinstance(value, enum.Enum):
        return ("enum", value.name)
    if isinstance(value, (int, float, np.integer, np.floating, np.bool_)):
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, np.dtype):
        return ("dtype", str(value))
    if isinstance(value, np.ndarray):
        return np.array(value)  # a copy, never a view of a library's cache
    if isinstance(value, (list, tuple)):
        return [normalize(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): normalize(v, depth + 1) for k, v in value.items()}
    try:
        from PIL import Image

        if isinstance(value, Image.Image):
            return ("image", value.mode, value.size, np.asarray(value))
    except ImportError:
        pass
    uid = getattr(value, "SOPInstanceUID", None)
    if uid is not None:
        return ("dataset", str(uid))
    return ("object", type(value).__name__)


# --- helpers named in the calls ----------------------------------------------------------


def pixels_to_slide(metadata: Any, pixels: Any, z: float = 0.0) -> np.ndarray:
    """Slide (x, y, z) in mm of the centres of (row, column) pixels, from the image's attributes.

    Computed from the metadata alone, so both libraries get the very same coordinates.
    """
    orientation = np.asarray([float(v) for v in metadata.ImageOrientationSlide])
    spacing = metadata.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    row_mm, col_mm = float(spacing[0]), float(spacing[1])
    origin = metadata.TotalPixelMatrixOriginSequence[0]
    x0 = float(origin.XOffsetInSlideCoordinateSystem)
    y0 = float(origin.YOffsetInSlideCoordinateSystem)
    rc = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
    along_columns = orientation[:2] * col_mm  # moving one column
    along_rows = orientation[3:5] * row_mm  # moving one row
    xy = np.array([x0, y0]) + rc[:, 1:2] * along_columns + rc[:, 0:1] * along_rows
    return np.column_stack([xy, np.full(len(xy), z)])


class Namespace(dict):  # type: ignore[type-arg]
    """Names the expressions of one slide see."""


def make_namespace(ds: Any, client: Any, slide: Any) -> dict[str, Any]:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    images = list(slide.get_volume_images()) if slide is not None else []

    def meta(level: int = 0) -> Any:
        return images[level].metadata

    def ann(graphic_type: str, pixels: Any, level: int = 0, z: float = 0.0) -> Any:
        """A Scoord3D annotation through the centres of (row, column) pixels of a level."""
        points = pixels_to_slide(meta(level), pixels, z)
        frame = getattr(meta(0), "FrameOfReferenceUID", None) or hd.UID()
        return hd.sr.Scoord3DContentItem(
            name=codes.DCM.ImageRegion,
            graphic_type=graphic_type,
            graphic_data=points,
            frame_of_reference_uid=frame,
        )

    def mat(level: int = 0, channel: int = 0, plane: int = 0) -> Any:
        return slide.get_volume_images(channel_index=channel)[level].get_total_pixel_matrix(
            channel_index=0, focal_plane_index=plane
        )

    def sample(sampler: Any, reads: tuple[int, ...] = (0, -1)) -> dict[str, Any]:
        n = len(sampler)
        return {
            "len": n,
            "region_shape": sampler.region_shape,
            "padded_region_shape": sampler.padded_region_shape,
            "padding": sampler.padding,
            "grid": [sampler.get_region_grid_position(i) for i in range(n)],
            "regions": [sampler[i % n] for i in reads] if n else [],
        }

    def region_truth(level: int, offset: Any, size: Any) -> np.ndarray:
        """What a slide region should hold: pixel (i, j) is the image pixel nearest to slide
        position (x + j * s, y + i * s), s the mean pixel spacing; the fill value outside.

        Computed from the metadata and the whole total pixel matrix (which both libraries
        read alike), independently of either library's slide-region code.
        """
        m = meta(level)
        full = np.asarray(mat(level)[:, :, :])
        spacing = m.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        s = (float(spacing[0]) + float(spacing[1])) / 2
        n_cols, n_rows = max(1, round(size[0] / s)), max(1, round(size[1] / s))
        xs = float(offset[0]) + np.arange(n_cols) * s
        ys = float(offset[1]) + np.arange(n_rows) * s
        origin = pixels_to_slide(m, [(0, 0)])[0, :2]
        basis = np.column_stack(
            [
                pixels_to_slide(m, [(1, 0)])[0, :2] - origin,  # one row
                pixels_to_slide(m, [(0, 1)])[0, :2] - origin,  # one column
            ]
        )
        gx, gy = np.meshgrid(xs, ys)
        rc = np.linalg.solve(basis, np.stack([gx.ravel() - origin[0], gy.ravel() - origin[1]]))
        r = np.rint(rc[0]).astype(np.int64).reshape(gx.shape)
        c = np.rint(rc[1]).astype(np.int64).reshape(gx.shape)
        inside = (r >= 0) & (r < full.shape[0]) & (c >= 0) & (c < full.shape[1])
        fill = 255 if full.shape[2] == 3 else 0
        out = np.full((*gx.shape, full.shape[2]), fill, dtype=full.dtype)
        out[inside] = full[r[inside], c[inside]]
        return out

    openslides: dict[int, Any] = {}

    def osl() -> Any:
        if 0 not in openslides:
            openslides[0] = ds.OpenSlide(slide)
        return openslides[0]

    return {
        "ds": ds,
        "np": np,
        "hd": hd,
        "codes": codes,
        "client": client,
        "slide": slide,
        "images": images,
        "meta": meta,
        "ann": ann,
        "mat": mat,
        "sample": sample,
        "osl": osl,
        "region_truth": region_truth,
        "pixels_to_slide": pixels_to_slide,
    }


# --- the two libraries -------------------------------------------------------------------


def open_client(lib: str, folder: str, index_dir: str | None) -> Any:
    if lib == "ref":
        from dicomweb_client import DICOMfileClient

        # 0.7.2 reads local folders only through dicomweb-client's file client.
        return DICOMfileClient(url=Path(folder).as_uri(), in_memory=True)
    import dicomslide_sync

    kwargs = {"index_dir": str(Path(index_dir) / Path(folder).name)} if index_dir else {}
    return dicomslide_sync.DICOMfileClient(folder, **kwargs)


def library(lib: str) -> Any:
    if lib == "ref":
        import dicomslide

        return dicomslide
    import dicomslide_sync

    return dicomslide_sync


def _our_version() -> str:
    import dicomslide

    return str(dicomslide.__version__)


def run(lib: str, calls: list[dict[str, Any]], index_dir: str | None) -> dict[str, Any]:
    ds = library(lib)
    clients: dict[str, Any] = {}
    spaces: dict[tuple[str, str], dict[str, Any] | Exception] = {}
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    started = time.perf_counter()
    for call in calls:
        t0 = time.perf_counter()
        key = (call["folder"], call["container"])
        try:
            if key not in spaces:
                try:
                    if call["folder"] not in clients:
                        clients[call["folder"]] = open_client(lib, call["folder"], index_dir)
                    client = clients[call["folder"]]
                    found = ds.find_slides(client, container_id=call["container"])
                    if len(found) != 1:
                        raise AssertionError(f"{len(found)} slides with container {key[1]}")
                    spaces[key] = make_namespace(ds, client, found[0])
                except Exception as error:
                    # A slide the library cannot open fails every call on it the same way;
                    # opening it again for each call only costs time.
                    spaces[key] = error
            space = spaces[key]
            if isinstance(space, Exception):
                raise space
            value = eval(call["expr"], dict(space))  # our own call list, not input
            results[call["id"]] = ("ok", normalize(value))
        except Exception as error:  # every failure is a result to compare
            results[call["id"]] = (
                "error",
                category(error),
                type(error).__name__,
                str(error)[:300],
                traceback.format_exc(limit=-3)[-1500:],
                [cls.__name__ for cls in CATEGORIES if isinstance(error, cls)],
            )
        timings[call["id"]] = time.perf_counter() - t0
    return {
        "lib": lib,
        "version": getattr(ds, "__version__", None) or _our_version(),
        "seconds": time.perf_counter() - started,
        "results": results,
        "timings": timings,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", choices=("ours", "ref"), required=True)
    ap.add_argument("--index-dir", default=None)
    ap.add_argument("calls")
    ap.add_argument("out")
    args = ap.parse_args()
    # 0.7.2 logs a warning for every colour image without an ICC profile, and libraries warn
    # about things the calls provoke on purpose; neither is a result.
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    with open(args.calls, "rb") as f:
        calls = pickle.load(f)
    out = run(args.lib, calls, args.index_dir)
    with open(args.out, "wb") as f:
        pickle.dump(out, f, protocol=4)
    return 0


if __name__ == "__main__":
    sys.exit(main())

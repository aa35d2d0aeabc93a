"""Which slide microscopy images form one slide (sans-IO), for :func:`dicomslide.find_slides`.

Rule
----
1. Images are first grouped by Frame of Reference UID and Container Identifier (images without
   a Frame of Reference UID: by study, series and container).
2. Groups of one container that share a series (or a Pyramid UID) are merged when they are
   levels of one pyramid: some converters give every level its own Frame of Reference UID. A
   group joins when its VOLUME/THUMBNAIL images have total pixel matrix sizes no other group
   has, the same Image Orientation (Slide), the same imaged volume and physical extent, and
   centres within the pyramid tolerance of the base level. Two scans of one slide in one
   series (same level sizes, or another area) stay apart. Groups of that series without
   VOLUME/THUMBNAIL images (a label or overview with its own frame of reference) join the
   merged slide.
3. A group without any VOLUME or THUMBNAIL image (a LABEL or OVERVIEW alone) is not a slide:
   the search skips it and logs a warning naming its series (see :func:`describe`).
4. A group in which two series hold the same level (VOLUME images of equal total pixel matrix
   size, optical paths and focal planes), as when a slide is re-encoded into a new series that
   keeps study, frame of reference and container, holds copies of one slide: it is split into
   one slide per series with VOLUME images (see :func:`split_duplicate_series`). Series without
   VOLUME images (labels, overviews, thumbnails kept apart) go with every copy. Series that
   hold different levels of one pyramid are not split; neither are instances of one series
   (concatenation parts, channels or focal planes stored apart).

The functions take image metadata: ``ds``, one image's :class:`pydicom.Dataset`, or
``datasets``, several.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from pydicom import Dataset

from dicomslide._tags import (
    CONTAINER_IDENTIFIER as _CONTAINER_IDENTIFIER,
    FRAME_OF_REFERENCE_UID as _FRAME_OF_REFERENCE_UID,
    IMAGE_ORIENTATION_SLIDE as _IMAGE_ORIENTATION_SLIDE,
    PYRAMID_UID as _PYRAMID_UID,
    SERIES_INSTANCE_UID as _SERIES_INSTANCE_UID,
    STUDY_INSTANCE_UID as _STUDY_INSTANCE_UID,
    TOTAL_PIXEL_MATRIX_COLUMNS as _TOTAL_PIXEL_MATRIX_COLUMNS,
    TOTAL_PIXEL_MATRIX_ROWS as _TOTAL_PIXEL_MATRIX_ROWS,
)
from dicomslide.enums import ImageFlavors
from dicomslide.errors import DicomSlideError
from dicomslide.geometry import get_image_focal_plane_offsets
from dicomslide.perframe import get_value
from dicomslide.utils import (
    compute_image_center_position,
    get_image_flavor,
    get_image_pixel_spacing,
)

__all__ = [
    "describe",
    "frames_of_reference",
    "merge_split_pyramids",
    "pyramid_images",
    "slide_key",
    "split_duplicate_series",
]

SlideKey = tuple[str, ...]

_PYRAMID_FLAVORS = (ImageFlavors.VOLUME, ImageFlavors.THUMBNAIL)


def slide_key(ds: Dataset) -> SlideKey:
    """Key of the first grouping step (rule 1 above).

    ``("FOR", frame of reference, container)``, or ``("SERIES", study, series, container)``
    for an image without a Frame of Reference UID.
    """
    container = _text(ds, _CONTAINER_IDENTIFIER)
    frame_of_reference = _text(ds, _FRAME_OF_REFERENCE_UID)
    if frame_of_reference:
        return ("FOR", frame_of_reference, container)
    return ("SERIES", _text(ds, _STUDY_INSTANCE_UID), _text(ds, _SERIES_INSTANCE_UID), container)


def _text(ds: Dataset, tag: int) -> str:
    return str(get_value(ds, tag, "") or "")


def pyramid_images(datasets: Iterable[Dataset]) -> list[Dataset]:
    """The VOLUME and THUMBNAIL images; those whose flavor cannot be told are left out."""
    out = []
    for ds in datasets:
        try:
            if get_image_flavor(ds) in _PYRAMID_FLAVORS:
                out.append(ds)
        except DicomSlideError:
            continue
    return out


def frames_of_reference(datasets: Iterable[Dataset]) -> set[str]:
    """The non-empty Frame of Reference UIDs of images."""
    return {uid for ds in datasets if (uid := _text(ds, _FRAME_OF_REFERENCE_UID))}


def describe(datasets: Sequence[Dataset]) -> str:
    """Name the series of a group of images, for warnings.

    The text gives study and series UIDs, the container and the flavors of the images.
    """
    series = sorted(
        {(_text(ds, _STUDY_INSTANCE_UID), _text(ds, _SERIES_INSTANCE_UID)) for ds in datasets}
    )
    flavors = []
    for ds in datasets:
        try:
            flavors.append(get_image_flavor(ds).value)
        except DicomSlideError:
            flavors.append("unknown")
    containers = sorted({_text(ds, _CONTAINER_IDENTIFIER) for ds in datasets})
    names = "; ".join(f"study {st} series {se}" for st, se in series)
    return (
        f"{names} (container {', '.join(repr(c) for c in containers)}; "
        f"{len(datasets)} image(s): {', '.join(sorted(flavors))})"
    )


def _size(ds: Dataset) -> tuple[int, int]:
    return int(get_value(ds, _TOTAL_PIXEL_MATRIX_ROWS)), int(
        get_value(ds, _TOTAL_PIXEL_MATRIX_COLUMNS)
    )


def _orientation(ds: Dataset) -> tuple[int, ...]:
    values = ds.get("ImageOrientationSlide") or get_value(ds, _IMAGE_ORIENTATION_SLIDE) or []
    return tuple(round(float(v)) for v in values)


def _imaged_volume(ds: Dataset) -> tuple[float, float] | None:
    width, height = ds.get("ImagedVolumeWidth"), ds.get("ImagedVolumeHeight")
    if width in (None, "") or height in (None, ""):
        return None
    return float(width), float(height)


def _extent(ds: Dataset) -> tuple[float, float, float]:
    """Physical (height, width) in mm of the total pixel matrix, and the coarser spacing."""
    rows, cols = _size(ds)
    spacing_r, spacing_c = get_image_pixel_spacing(ds)
    return rows * spacing_r, cols * spacing_c, max(spacing_r, spacing_c)


def _volume_sizes(datasets: Sequence[Dataset]) -> set[tuple[int, int]]:
    # Thumbnails may repeat a level's size; only VOLUME images say "another scan".
    return {_size(ds) for ds in datasets if get_image_flavor(ds) is ImageFlavors.VOLUME}


def _lines_up(base: Sequence[Dataset], joining: Sequence[Dataset], tolerance: float) -> bool:
    """Whether the pyramid images ``joining`` are further levels of the pyramid ``base``."""
    try:
        if _volume_sizes(base) & _volume_sizes(joining):
            return False  # the same level twice: another scan, not another level
        first = max(base, key=lambda ds: math.prod(_size(ds)))
        orientation = _orientation(first)
        volume = _imaged_volume(first)
        height, width, _ = _extent(first)
        cx, cy, _ = compute_image_center_position(first)
        for ds in joining:
            if _orientation(ds) != orientation:
                return False
            other_volume = _imaged_volume(ds)
            if (
                volume is not None
                and other_volume is not None
                and max(abs(a - b) for a, b in zip(volume, other_volume, strict=True)) > tolerance
            ):
                return False
            h, w, spacing = _extent(ds)
            # A coarser level may be up to one of its pixels smaller or larger (rounding).
            if max(abs(h - height), abs(w - width)) > tolerance + spacing:
                return False
            x, y, _ = compute_image_center_position(ds)
            if math.hypot(x - cx, y - cy) > tolerance:
                return False
    except (DicomSlideError, AttributeError, KeyError, TypeError, ValueError):
        return False  # geometry that cannot be compared is not merged
    return True


def _links(key: SlideKey, datasets: Sequence[Dataset]) -> set[tuple[str, ...]]:
    container = key[-1]
    out: set[tuple[str, ...]] = set()
    for ds in datasets:
        study, series = _text(ds, _STUDY_INSTANCE_UID), _text(ds, _SERIES_INSTANCE_UID)
        out.add(("SERIES", study, series, container))
        pyramid_uid = str(get_value(ds, _PYRAMID_UID, "") or "")
        if pyramid_uid:
            out.add(("PYRAMID", pyramid_uid, container))
    return out


def merge_split_pyramids(
    groups: dict[SlideKey, list[Dataset]], tolerance: float
) -> dict[SlideKey, list[Dataset]]:
    """Merge first-step groups that are levels of one pyramid (rule 2 of the module notes).

    Parameters
    ----------
    groups: dict[tuple[str, ...], list[pydicom.Dataset]]
        Slide microscopy images by :func:`slide_key`
    tolerance: float
        Largest tolerated distance (mm) between centres of levels, and between imaged volumes

    Returns
    -------
    dict[tuple[str, ...], list[pydicom.Dataset]]
        Groups after merging; a merged group keeps the key of its group with the largest image
    """
    keys = [k for k in groups if k[0] == "FOR"]
    # Connected components of groups that share a series or Pyramid UID in one container.
    owner: dict[tuple[str, ...], SlideKey] = {}
    parent: dict[SlideKey, SlideKey] = {k: k for k in keys}

    def find(k: SlideKey) -> SlideKey:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for key in keys:
        for link in _links(key, groups[key]):
            other = owner.setdefault(link, key)
            if other != key:
                parent[find(key)] = find(other)
    components: dict[SlideKey, list[SlideKey]] = {}
    for key in keys:
        components.setdefault(find(key), []).append(key)
    merged = dict(groups)
    for members in components.values():
        if len(members) < 2:
            continue
        pyramids = {k: pyramid_images(groups[k]) for k in members}
        with_pyramid = sorted(
            (k for k in members if pyramids[k]),
            key=lambda k: (-max(math.prod(_size(ds)) for ds in pyramids[k]), k),
        )
        slides: list[tuple[SlideKey, list[Dataset]]] = []
        for key in with_pyramid:
            for target, base in slides:
                if _lines_up(base, pyramids[key], tolerance):
                    base.extend(pyramids[key])
                    merged[target].extend(merged.pop(key))
                    break
            else:
                slides.append((key, list(pyramids[key])))
        if len(slides) == 1:
            # Labels and overviews of the series with a frame of reference of their own.
            target = slides[0][0]
            for key in members:
                if not pyramids[key] and key in merged:
                    merged[target].extend(merged.pop(key))
    return merged


def _level_of(ds: Dataset) -> tuple[object, ...] | None:
    """What makes a VOLUME image the same level as another one (None: not a VOLUME image)."""
    try:
        if get_image_flavor(ds) is not ImageFlavors.VOLUME:
            return None
        paths = tuple(
            sorted(
                str(it.get("OpticalPathIdentifier", ""))
                for it in ds.get("OpticalPathSequence", [])
            )
        )
        planes = get_image_focal_plane_offsets([ds])
        return (_size(ds), paths, planes)
    except (DicomSlideError, AttributeError, KeyError, TypeError, ValueError):
        return None  # a level that cannot be told says nothing about copies


def split_duplicate_series(
    groups: dict[SlideKey, list[Dataset]],
) -> tuple[dict[SlideKey, list[Dataset]], list[str]]:
    """Split groups that hold copies of one slide in several series (rule 4 of the module notes).

    Parameters
    ----------
    groups: dict[tuple[str, ...], list[pydicom.Dataset]]
        Groups after :func:`merge_split_pyramids`

    Returns
    -------
    tuple[dict[tuple[str, ...], list[pydicom.Dataset]], list[str]]
        Groups after splitting (a split group's key gets the series UID appended), and one
        message per split group naming its series
    """
    out: dict[SlideKey, list[Dataset]] = {}
    notes: list[str] = []
    for key, datasets in groups.items():
        if key[0] != "FOR":  # grouped by series already: nothing to split
            out[key] = datasets
            continue
        by_series: dict[str, list[Dataset]] = {}
        for ds in datasets:
            by_series.setdefault(_text(ds, _SERIES_INSTANCE_UID), []).append(ds)
        if len(by_series) < 2:
            # One series holds no copies of another; telling levels apart reads sequences
            # (a quarter of a warm 500-slide search, where every slide is one series).
            out[key] = datasets
            continue
        levels = {
            series: {level for ds in images if (level := _level_of(ds)) is not None}
            for series, images in by_series.items()
        }
        copies = [series for series in sorted(by_series) if levels[series]]
        duplicated = any(
            levels[a] & levels[b] for i, a in enumerate(copies) for b in copies[i + 1 :]
        )
        if not duplicated:
            out[key] = datasets
            continue
        shared = [
            ds for series in sorted(by_series) if not levels[series] for ds in by_series[series]
        ]
        for series in copies:
            split_key: SlideKey = (*key, series)
            out[split_key] = [*by_series[series], *shared]
        study = _text(datasets[0], _STUDY_INSTANCE_UID)
        notes.append(
            f"study {study}: series {', '.join(copies)} hold the same pyramid levels of one slide "
            f"(frame of reference {key[1]}, container {key[2]!r}); each series is made a slide "
            "of its own"
        )
    return out, notes

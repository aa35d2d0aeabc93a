"""Helpers that classify, describe, select and tile DICOM slide microscopy images.

All functions are sans-IO: they work on :class:`pydicom.Dataset` metadata and NumPy arrays
that are already in memory.

Image classification
--------------------
Real-world files often lack attributes, so the flavor of an image
(:class:`dicomslide.enums.ImageFlavors`) is determined by these rules, first match wins:

1. The third value of Image Type, when present and one of ``VOLUME``, ``THUMBNAIL``,
   ``LABEL`` or ``OVERVIEW`` (case-insensitive), is the flavor.
2. Otherwise a tiled image (one with Total Pixel Matrix Rows and Columns, as every VL Whole
   Slide Microscopy Image, Segmentation and Parametric Map of a slide has) is a ``VOLUME``.
3. Otherwise (e.g. a Secondary Capture photograph) the values of Image Type and the Series
   Description are searched for the whole words ``LABEL`` (flavor ``LABEL``), ``OVERVIEW`` or
   ``MACRO`` (flavor ``OVERVIEW``) and ``THUMBNAIL`` (flavor ``THUMBNAIL``), case-insensitive,
   in that order.
4. Otherwise the flavor is unknown: :func:`get_image_flavor` raises
   :class:`~dicomslide.errors.InvalidDataError` and the ``is_*_image`` predicates return
   ``False``.

Rule 2 comes before rule 3 so that a Segmentation described as, say, "nuclei label map" is
not mistaken for a slide label.

An *image* is a dataset with Rows, Columns and Bits Allocated or Samples per Pixel (so not,
for example, a Structured Report). A *tiled image* is an image with Total Pixel Matrix Rows and
Columns. A *volume image* is a tiled image of flavor ``VOLUME`` or ``THUMBNAIL``, or any tiled
Segmentation or Parametric Map.
"""

from __future__ import annotations

import inspect
import math
import operator
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt
import pydicom.sr.coding
from pydicom import Dataset
from pydicom.sr.coding import Code

from dicomslide._tags import (
    BITS_ALLOCATED as _BITS_ALLOCATED,
    COLUMNS as _COLUMNS,
    IMAGE_TYPE as _IMAGE_TYPE,
    ROWS as _ROWS,
    SAMPLES_PER_PIXEL as _SAMPLES_PER_PIXEL,
    SOP_CLASS_UID as _SOP_CLASS_UID,
    TOTAL_PIXEL_MATRIX_COLUMNS as _TOTAL_PIXEL_MATRIX_COLUMNS,
    TOTAL_PIXEL_MATRIX_ROWS as _TOTAL_PIXEL_MATRIX_ROWS,
)
from dicomslide.coordinates import ImageGeometry, read_pixel_spacing
from dicomslide.enums import ImageFlavors
from dicomslide.errors import InvalidDataError, RegionError
from dicomslide.perframe import get_value
from dicomslide.summary import floats, summarised

if TYPE_CHECKING:
    # Only named in annotations; importing highdicom takes about a quarter second.
    from highdicom.sr import CodedConcept

# pydicom's table of legacy SNOMED (SRT) to SNOMED CT (SCT) codes, read where its public
# coding module keeps it (Code.__eq__ uses it) rather than from the private module that defines
# it. Code.__eq__ itself would apply it, but it also compares scheme versions, which stored
# items rarely agree on. The module does not re-export the name for type checkers, hence
# getattr; an empty table (no SRT translation) if a pydicom release drops it.
_snomed_mapping: dict[str, dict[str, str]] = getattr(
    pydicom.sr.coding, "snomed_mapping", {"SRT": {}}
)

__all__ = [
    "MAGNIFICATION_PIXEL_SPACINGS",
    "assemble_total_pixel_matrix",
    "compute_image_center_position",
    "disassemble_total_pixel_matrix",
    "does_optical_path_item_match",
    "does_segment_item_match",
    "does_specimen_description_item_match",
    "get_image_flavor",
    "get_image_pixel_spacing",
    "get_image_size",
    "get_label_map_background",
    "is_image",
    "is_label_image",
    "is_label_map",
    "is_overview_image",
    "is_thumbnail_image",
    "is_tiled_image",
    "is_volume_image",
    "select_image_at_magnification",
    "select_image_at_pixel_spacing",
    "sort_images_by_pixel_spacing",
    "sort_images_by_size",
]

CodeLike: TypeAlias = "Code | CodedConcept"
TilePositions: TypeAlias = "Sequence[Sequence[int]] | npt.NDArray[np.integer[Any]]"

VL_WHOLE_SLIDE_MICROSCOPY_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.77.1.6"
SEGMENTATION_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEGMENTATION_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.7"
PARAMETRIC_MAP_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.30"
#: Both Segmentation SOP classes: their channels are the items of the Segment Sequence.
SEGMENTATION_SOP_CLASS_UIDS = frozenset(
    {SEGMENTATION_SOP_CLASS_UID, LABEL_MAP_SEGMENTATION_SOP_CLASS_UID}
)
DERIVED_SOP_CLASS_UIDS = frozenset({*SEGMENTATION_SOP_CLASS_UIDS, PARAMETRIC_MAP_SOP_CLASS_UID})

#: Pixel spacing in millimeter that corresponds roughly to each objective lens power: the
#: customary 0.25 micrometer per pixel at 40x, scaled inversely with magnification.
MAGNIFICATION_PIXEL_SPACINGS: dict[int, float] = {
    40: 0.00025,
    20: 0.0005,
    10: 0.001,
    4: 0.0025,
    2: 0.005,
}

_SRT_TO_SCT: dict[str, str] = _snomed_mapping.get("SRT", {})

#: Concept name of the content item that names a staining substance ("Using substance").
_USING_SUBSTANCE = ("SCT", "424361007")

_FLAVOR_HINTS: tuple[tuple[re.Pattern[str], ImageFlavors], ...] = (
    (re.compile(r"\blabel\b", re.IGNORECASE), ImageFlavors.LABEL),
    (re.compile(r"\b(overview|macro)\b", re.IGNORECASE), ImageFlavors.OVERVIEW),
    (re.compile(r"\bthumbnail\b", re.IGNORECASE), ImageFlavors.THUMBNAIL),
)

# Floating-point slack when comparing a spacing difference with a tolerance, so that a
# difference that is "exactly" the tolerance in decimal is not rejected by rounding.
_TOLERANCE_SLACK = 1e-12


# ---------------------------------------------------------------------------------------------
# Classification


def _has(dataset: Dataset, tag: int) -> bool:
    return get_value(dataset, tag) is not None


_Predicate = TypeVar("_Predicate", bound=Callable[[Dataset], bool])


def _predicate_doc(whether: str) -> Callable[[_Predicate], _Predicate]:
    """Give an ``is_*`` predicate the Parameters and Returns sections that all of them share.

    The summary stays in the decorated function's own docstring; ``whether`` completes the
    sentence "Whether dataset ...".
    """

    def decorate(func: _Predicate) -> _Predicate:
        func.__doc__ = (
            inspect.cleandoc(func.__doc__ or "")
            + "\n\nParameters\n----------\ndataset: pydicom.Dataset\n    Dataset\n\n"
            + f"Returns\n-------\nbool\n    Whether dataset {whether}\n"
        )
        return func

    return decorate


def _image_type_values(dataset: Dataset) -> list[str]:
    value = get_value(dataset, _IMAGE_TYPE)
    if value is None:
        return []
    # A single-valued element comes back as a plain string, not a list.
    if isinstance(value, str | bytes | int | float):
        values = [value]
    else:
        try:
            values = list(value)
        except TypeError:
            values = [value]
    return [str(v).strip() for v in values]


@_predicate_doc(
    "has Rows, Columns and Bits Allocated or Samples per Pixel (so that, for example, "
    "a Structured Report is not an image)"
)
@summarised("is_image")
def is_image(dataset: Dataset) -> bool:
    """Determine whether a dataset is an image."""
    return (
        _has(dataset, _ROWS)
        and _has(dataset, _COLUMNS)
        and (_has(dataset, _BITS_ALLOCATED) or _has(dataset, _SAMPLES_PER_PIXEL))
    )


@_predicate_doc("is an image with Total Pixel Matrix Rows and Columns")
@summarised("is_tiled_image")
def is_tiled_image(dataset: Dataset) -> bool:
    """Determine whether a dataset is a tiled image."""
    return (
        is_image(dataset)
        and _has(dataset, _TOTAL_PIXEL_MATRIX_ROWS)
        and _has(dataset, _TOTAL_PIXEL_MATRIX_COLUMNS)
    )


@summarised("flavor", lambda flavor: flavor.value, ImageFlavors)
def get_image_flavor(dataset: Dataset) -> ImageFlavors:
    """Determine the flavor of an image.

    Parameters
    ----------
    dataset: pydicom.Dataset
        Metadata of an image

    Returns
    -------
    dicomslide.enums.ImageFlavors
        Flavor of the image, following the rules in the module documentation of
        :mod:`dicomslide.utils`

    Raises
    ------
    dicomslide.errors.RegionError
        When `dataset` is not an image (see :func:`is_image`)
    dicomslide.errors.InvalidDataError
        When the image carries nothing from which to tell its flavor
    """
    if not is_image(dataset):
        raise RegionError(
            "Cannot determine the flavor of a dataset that is not an image "
            f"(SOP Class UID {dataset.get('SOPClassUID')!r}): it needs Rows, Columns and "
            "Bits Allocated or Samples per Pixel"
        )
    image_type = _image_type_values(dataset)
    if len(image_type) >= 3:
        try:
            return ImageFlavors(image_type[2].upper())
        except ValueError:
            pass
    if is_tiled_image(dataset):
        return ImageFlavors.VOLUME
    texts = [*image_type, str(dataset.get("SeriesDescription") or "")]
    for pattern, flavor in _FLAVOR_HINTS:
        if any(pattern.search(text) for text in texts):
            return flavor
    raise InvalidDataError(
        f"Cannot determine the flavor of image {dataset.get('SOPInstanceUID')!r}: Image Type "
        f"{image_type} has no third value among "
        f"{[f.value for f in ImageFlavors]}, it has no total pixel matrix, and neither Image "
        "Type nor Series Description mentions label, overview, macro or thumbnail"
    )


def _has_flavor(dataset: Dataset, flavors: frozenset[ImageFlavors]) -> bool:
    if not is_image(dataset):
        return False
    try:
        return get_image_flavor(dataset) in flavors
    except InvalidDataError:
        return False


@_predicate_doc(
    "is a tiled image of flavor VOLUME or THUMBNAIL, or a tiled Segmentation or "
    "Parametric Map image"
)
def is_volume_image(dataset: Dataset) -> bool:
    """Determine whether a dataset is a VOLUME or THUMBNAIL image."""
    if not is_tiled_image(dataset):
        return False
    if dataset.get("SOPClassUID") in DERIVED_SOP_CLASS_UIDS:
        return True
    return _has_flavor(dataset, frozenset({ImageFlavors.VOLUME, ImageFlavors.THUMBNAIL}))


@_predicate_doc(
    "is a Label Map Segmentation instance, or a Segmentation whose Segmentation Type "
    "is ``LABELMAP``"
)
@summarised("is_label_map")
def is_label_map(dataset: Dataset) -> bool:
    """Determine whether a dataset is a label-map segmentation.

    A label map stores one frame per tile position whose pixel values are segment numbers
    (see :func:`get_label_map_background` for pixels in no segment), instead of one binary or
    fractional frame per segment and tile.
    """
    sop_class = str(get_value(dataset, _SOP_CLASS_UID, "") or "")
    if sop_class == LABEL_MAP_SEGMENTATION_SOP_CLASS_UID:
        return True
    return sop_class == SEGMENTATION_SOP_CLASS_UID and (
        str(dataset.get("SegmentationType", "") or "").strip().upper() == "LABELMAP"
    )


@summarised("label_map_background")
def get_label_map_background(dataset: Dataset) -> int | None:
    """Value of the pixels of a label map that belong to no segment.

    The standard marks the background of a label map by its Pixel Padding Value; a Segment
    Sequence item with that number (highdicom writes one, labelled "Background") describes
    the background, not a segment.

    Parameters
    ----------
    dataset: pydicom.Dataset
        Metadata of a label-map Segmentation

    Returns
    -------
    int | None
        Pixel Padding Value, or None when the label map has none (or is not a label map)
    """
    if not is_label_map(dataset):
        return None
    value = dataset.get("PixelPaddingValue")
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        raise InvalidDataError(
            f"Label map {dataset.get('SOPInstanceUID', '?')} has Pixel Padding Value "
            f"{value!r}; it must be an integer."
        ) from None


def _flavor_predicate(flavor: ImageFlavors) -> Callable[[Dataset], bool]:
    """Build the public ``is_<flavor>_image`` predicate of one flavor."""

    def predicate(dataset: Dataset) -> bool:
        return _has_flavor(dataset, frozenset({flavor}))

    predicate.__name__ = predicate.__qualname__ = f"is_{flavor.value.lower()}_image"
    predicate.__module__ = __name__
    article = "an" if flavor.value[0] in "AEIOU" else "a"
    predicate.__doc__ = f"Determine whether a dataset is {article} {flavor.value} image."
    return _predicate_doc(f"is an image of flavor {flavor.value} (tiled or not)")(predicate)


is_label_image = _flavor_predicate(ImageFlavors.LABEL)
is_overview_image = _flavor_predicate(ImageFlavors.OVERVIEW)
is_thumbnail_image = _flavor_predicate(ImageFlavors.THUMBNAIL)


# ---------------------------------------------------------------------------------------------
# Matching items of descriptive sequences


def _code_key(code: Any, name: str) -> tuple[str, str]:
    """Return (coding scheme designator, code value), with legacy SNOMED (SRT) mapped to SCT."""
    if isinstance(code, Code):
        designator, value = str(code.scheme_designator), str(code.value)
    elif isinstance(code, Dataset):
        # Covers highdicom CodedConcept and plain Code Sequence items.
        raw_value = (
            code.get("CodeValue") or code.get("LongCodeValue") or code.get("URNCodeValue") or ""
        )
        designator = str(code.get("CodingSchemeDesignator") or "")
        value = str(raw_value)
    else:
        raise RegionError(
            f"{name} must be a pydicom.sr.coding.Code or highdicom.sr.CodedConcept, "
            f"got {type(code).__name__}"
        )
    designator, value = designator.strip(), value.strip()
    if designator == "SRT" and value in _SRT_TO_SCT:
        return "SCT", _SRT_TO_SCT[value]
    return designator, value


def _first_code_key(item: Dataset, keyword: str) -> tuple[str, str] | None:
    sequence = item.get(keyword)
    if not sequence:
        return None
    return _code_key(sequence[0], keyword)


def does_optical_path_item_match(
    item: Dataset,
    identifier: str | None = None,
    description: str | None = None,
    illumination_wavelength: float | None = None,
) -> bool:
    """Check whether an optical path item matches.

    Every criterion that is not ``None`` must match; with no criteria every item matches.

    Parameters
    ----------
    item: pydicom.Dataset
        Item of the Optical Path Sequence
    identifier: str | None, optional
        Optical Path Identifier (exact match)
    description: str | None, optional
        Optical Path Description (exact match)
    illumination_wavelength: float | None, optional
        Illumination Wave Length in nanometer (match within 0.001 nm)

    Returns
    -------
    bool
        Whether item matches; an item lacking an attribute that a criterion asks about does
        not match
    """
    if identifier is not None and item.get("OpticalPathIdentifier") != identifier:
        return False
    if description is not None and item.get("OpticalPathDescription") != description:
        return False
    if illumination_wavelength is not None:
        stored = item.get("IlluminationWaveLength")
        # Stored as 32-bit float, so exact equality with a Python float would be fragile.
        if stored is None or not math.isclose(
            float(stored), float(illumination_wavelength), rel_tol=0.0, abs_tol=1e-3
        ):
            return False
    return True


def does_segment_item_match(
    item: Dataset,
    number: int | None = None,
    label: str | None = None,
    property_category: CodeLike | None = None,
    property_type: CodeLike | None = None,
) -> bool:
    """Check whether a segment item matches.

    Every criterion that is not ``None`` must match; with no criteria every item matches.
    Coded concepts are compared by Coding Scheme Designator and Code Value only (not by
    meaning or scheme version), and legacy SNOMED codes (``SRT``) are mapped to ``SCT`` first.

    Parameters
    ----------
    item: pydicom.Dataset
        Item of the Segment Sequence
    number: int | None, optional
        Segment Number
    label: str | None, optional
        Segment Label (exact match)
    property_category: pydicom.sr.coding.Code | highdicom.sr.CodedConcept | None, optional
        Segmented property category
    property_type: pydicom.sr.coding.Code | highdicom.sr.CodedConcept | None, optional
        Segmented property type

    Returns
    -------
    bool
        Whether item matches

    Raises
    ------
    dicomslide.errors.RegionError
        When a property argument is not a coded concept
    """
    if number is not None:
        stored_number = item.get("SegmentNumber")
        if stored_number is None or int(stored_number) != int(number):
            return False
    if label is not None and item.get("SegmentLabel") != label:
        return False
    for keyword, wanted, name in (
        ("SegmentedPropertyCategoryCodeSequence", property_category, "property_category"),
        ("SegmentedPropertyTypeCodeSequence", property_type, "property_type"),
    ):
        if wanted is None:
            continue
        if _first_code_key(item, keyword) != _code_key(wanted, name):
            return False
    return True


def does_specimen_description_item_match(
    item: Dataset,
    specimen_stain: CodeLike | None = None,
) -> bool:
    """Check whether a specimen description item matches.

    Parameters
    ----------
    item: pydicom.Dataset
        Item of the Specimen Description Sequence
    specimen_stain: pydicom.sr.coding.Code | highdicom.sr.CodedConcept | None, optional
        Specimen stain substance

    Returns
    -------
    bool
        Whether item matches: with no stain, always; otherwise when any step of the Specimen
        Preparation Sequence has a content item named "Using substance" (SCT 424361007) whose
        coded value equals `specimen_stain` (compared by Coding Scheme Designator and Code
        Value, legacy ``SRT`` codes mapped to ``SCT``). Substances recorded as free text do not
        match.

    Raises
    ------
    dicomslide.errors.RegionError
        When `specimen_stain` is not a coded concept
    """
    if specimen_stain is None:
        return True
    wanted = _code_key(specimen_stain, "specimen_stain")
    for step in item.get("SpecimenPreparationSequence") or []:
        for content_item in step.get("SpecimenPreparationStepContentItemSequence") or []:
            if _first_code_key(content_item, "ConceptNameCodeSequence") != _USING_SUBSTANCE:
                continue
            if _first_code_key(content_item, "ConceptCodeSequence") == wanted:
                return True
    return False


# ---------------------------------------------------------------------------------------------
# Size, spacing and position


@summarised("pixel_spacing", decode=floats)
def get_image_pixel_spacing(image: Dataset) -> tuple[float, float]:
    """Get pixel spacing (spacing between pixels) of an image.

    Parameters
    ----------
    image: pydicom.Dataset
        Metadata of a DICOM VL Whole Slide Microscopy Image instance or derived image instance
        (e.g., DICOM Segmentation)

    Returns
    -------
    tuple[float, float]
        Spacing in millimeter between rows and between columns, in that order. Pixels need not
        be square.

    Raises
    ------
    dicomslide.errors.InvalidDataError
        When the image has no usable Pixel Spacing (see
        :meth:`dicomslide.coordinates.ImageGeometry.from_dataset` for where it is looked up)
    """
    return read_pixel_spacing(image)


def _matrix_shape(image: Dataset) -> tuple[int, int]:
    rows = get_value(image, _TOTAL_PIXEL_MATRIX_ROWS)
    columns = get_value(image, _TOTAL_PIXEL_MATRIX_COLUMNS)
    if rows is None or columns is None:
        # A non-tiled image is its own total pixel matrix.
        rows, columns = get_value(image, _ROWS), get_value(image, _COLUMNS)
    if rows is None or columns is None:
        raise InvalidDataError(
            f"Image {image.get('SOPInstanceUID')!r} has neither Total Pixel Matrix Rows and "
            "Columns nor Rows and Columns"
        )
    return int(rows), int(columns)


def get_image_size(image: Dataset) -> int:
    """Get size of an image.

    Parameters
    ----------
    image: pydicom.Dataset
        Metadata of a DICOM VL Whole Slide Microscopy Image instance or a derived image
        instance (e.g., DICOM Segmentation)

    Returns
    -------
    int
        Number of pixels in the total pixel matrix (Total Pixel Matrix Rows times Columns; Rows
        times Columns for a non-tiled image), per focal plane and channel

    Raises
    ------
    dicomslide.errors.InvalidDataError
        When the image has no dimensions
    """
    rows, columns = _matrix_shape(image)
    return rows * columns


@summarised("center", decode=floats)
def compute_image_center_position(image: Dataset) -> tuple[float, float, float]:
    """Compute position of image center in slide coordinate system.

    Parameters
    ----------
    image: pydicom.Dataset
        Metadata of DICOM VL Whole Slide Microscopy Image instance

    Returns
    -------
    tuple[float, float, float]
        ``(x, y, z)`` coordinates in millimeter of the geometric center of the total pixel
        matrix, that is of the zero-based pixel position ``((rows - 1) / 2, (columns - 1) /
        2)`` (pixel positions refer to pixel centers)

    Raises
    ------
    dicomslide.errors.InvalidDataError
        When the image lacks its dimensions or a usable Pixel Spacing
    """
    geometry = ImageGeometry.from_dataset(image)
    rows, columns = _matrix_shape(image)
    row, column = (rows - 1) / 2.0, (columns - 1) / 2.0
    row_spacing, column_spacing = geometry.pixel_spacing
    orientation = geometry.orientation
    # ImageGeometry.pixel_to_slide for one point, in plain floats and the same order of
    # operations: NumPy's first calls in a process cost ~0.2 ms, and opening a slide needs only
    # this point of each level.
    x, y, z = (
        origin
        + (
            row * (float(orientation[3 + k]) * row_spacing)
            + column * (float(orientation[k]) * column_spacing)
        )
        for k, origin in enumerate(geometry.origin)
    )
    return float(x), float(y), float(z)


# ---------------------------------------------------------------------------------------------
# Selection and sorting


def _check_tolerance(tolerance: float | None) -> float | None:
    if tolerance is None:
        return None
    value = float(tolerance)
    if not (math.isfinite(value) and value >= 0):
        raise RegionError(
            f"tolerance must be a non-negative number of millimeter, got {tolerance!r}"
        )
    return value


def select_image_at_pixel_spacing(
    collection: Sequence[Dataset],
    pixel_spacing: tuple[float, float] | float,
    tolerance: float | None = None,
) -> Dataset:
    """Select an image from a collection at a desired spatial pixel spacing.

    Parameters
    ----------
    collection: Sequence[pydicom.Dataset]
        Metadata of DICOM VL Whole Slide Microscopy Image instances
    pixel_spacing: tuple[float, float] | float
        Desired spacing in millimeter between two pixels along the row and column direction of
        the image from top to bottom and left to right, respectively. A single number means
        the same spacing in both directions.
    tolerance: float | None, optional
        Largest difference in millimeter between the desired and the closest available pixel
        spacing that can be tolerated (``None`` accepts any difference)

    Returns
    -------
    pydicom.Dataset
        Image closest to the desired pixel spacing, where the distance between two spacings is
        the larger of the absolute differences along rows and along columns

    Raises
    ------
    dicomslide.errors.RegionError
        When `collection` is empty, `pixel_spacing` is not one or two positive numbers,
        `tolerance` is negative, or `tolerance` is exceeded
    dicomslide.errors.InvalidDataError
        When an image of the collection has no usable Pixel Spacing

    Note
    ----
    If multiple images with the same pixel spacing are contained in `collection`, the first
    matching image will be returned. It is the responsibility of the caller to filter the
    images beforehand if necessary.
    """
    if len(collection) == 0:
        raise RegionError(
            f"Cannot select an image at pixel spacing {pixel_spacing!r}: the collection is empty"
        )
    wanted = _check_pixel_spacing(pixel_spacing)
    max_difference = _check_tolerance(tolerance)
    distances = [
        max(abs(a - b) for a, b in zip(get_image_pixel_spacing(image), wanted, strict=True))
        for image in collection
    ]
    # min() returns the first of equal minima, which keeps the documented "first match" rule.
    index = min(range(len(distances)), key=distances.__getitem__)
    if max_difference is not None and distances[index] > max_difference + _TOLERANCE_SLACK:
        closest = get_image_pixel_spacing(collection[index])
        raise RegionError(
            f"No image at pixel spacing {wanted} mm within tolerance {max_difference} mm: "
            f"the closest has pixel spacing {closest} mm (difference {distances[index]:.6g} mm)"
        )
    return collection[index]


def _check_pixel_spacing(pixel_spacing: tuple[float, float] | float) -> tuple[float, float]:
    try:
        if isinstance(pixel_spacing, (int, float, np.number)):
            values = [float(pixel_spacing), float(pixel_spacing)]
        else:
            values = [float(v) for v in pixel_spacing]
    except (TypeError, ValueError) as error:
        raise RegionError(
            f"pixel_spacing must be one or two positive numbers in millimeter, "
            f"got {pixel_spacing!r}"
        ) from error
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        raise RegionError(
            f"pixel_spacing must be one or two positive numbers in millimeter, "
            f"got {pixel_spacing!r}"
        )
    return values[0], values[1]


def select_image_at_magnification(
    collection: Sequence[Dataset],
    magnification: int,
    tolerance: float | None = None,
) -> Dataset:
    """Select an image from a collection at a desired magnification.

    Parameters
    ----------
    collection: Sequence[pydicom.Dataset]
        Metadata of DICOM VL Whole Slide Microscopy Image instances
    magnification: int
        Magnification level (corresponds roughly to object lens power of a microscope) of the
        image that should be selected. Note that an image with an exactly matching
        magnification may not exist. In this case, the nearest level will be chosen.
        Choices: ``{2, 4, 10, 20, 40}``, which stand for pixel spacings of 0.005, 0.0025,
        0.001, 0.0005 and 0.00025 mm (see :data:`MAGNIFICATION_PIXEL_SPACINGS`)
    tolerance: float | None, optional
        Largest difference in millimeter between the pixel spacing that stands for
        `magnification` and the closest available pixel spacing that can be tolerated
        (``None`` accepts any difference). Note the unit: it is a spacing, not a
        magnification factor.

    Returns
    -------
    pydicom.Dataset
        Image closest to the desired magnification (see
        :func:`select_image_at_pixel_spacing`)

    Raises
    ------
    dicomslide.errors.RegionError
        When `collection` is empty, when `magnification` does not match one of the available
        choices, or when `tolerance` is negative or exceeded
    """
    choices = sorted(MAGNIFICATION_PIXEL_SPACINGS)
    if isinstance(magnification, bool) or magnification not in MAGNIFICATION_PIXEL_SPACINGS:
        raise RegionError(f"magnification must be one of {choices}, got {magnification!r}")
    spacing = MAGNIFICATION_PIXEL_SPACINGS[magnification]
    if len(collection) == 0:
        raise RegionError(
            f"Cannot select an image at magnification {magnification}x: the collection is empty"
        )
    return select_image_at_pixel_spacing(collection, (spacing, spacing), tolerance)


def sort_images_by_pixel_spacing(collection: Sequence[Dataset]) -> list[Dataset]:
    """Sort images by pixel spacing in ascending order (lowest to highest).

    Parameters
    ----------
    collection: Sequence[pydicom.Dataset]
        Metadata of DICOM VL Whole Slide Microscopy Image instances

    Returns
    -------
    list[pydicom.Dataset]
        Sorted metadata, ordered by spacing between rows, then between columns; images with
        equal spacing keep their order

    Raises
    ------
    dicomslide.errors.InvalidDataError
        When an image has no usable Pixel Spacing
    """
    return sorted(collection, key=get_image_pixel_spacing)


def sort_images_by_size(collection: Sequence[Dataset]) -> list[Dataset]:
    """Sort images by size in descending order (largest to smallest).

    Parameters
    ----------
    collection: Sequence[pydicom.Dataset]
        Metadata of DICOM VL Whole Slide Microscopy Image instances

    Returns
    -------
    list[pydicom.Dataset]
        Sorted metadata, ordered by number of pixels of the total pixel matrix (see
        :func:`get_image_size`); images of equal size keep their order

    Raises
    ------
    dicomslide.errors.InvalidDataError
        When an image has no dimensions
    """
    return sorted(collection, key=get_image_size, reverse=True)


# ---------------------------------------------------------------------------------------------
# Tiling


def _positive_int(value: int, name: str) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError as error:
        raise RegionError(f"{name} must be a positive integer, got {value!r}") from error
    if number <= 0:
        raise RegionError(f"{name} must be a positive integer, got {number}")
    return number


def _parse_tile_positions(
    tile_positions: TilePositions, total_rows: int, total_columns: int
) -> npt.NDArray[np.int64]:
    array = np.asarray(tile_positions)
    if array.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if array.ndim != 2 or array.shape[1] != 2:
        raise RegionError(
            f"tile_positions must be (row, column) pairs of shape (N, 2), got shape {array.shape}"
        )
    whole_floats = (
        np.issubdtype(array.dtype, np.floating)
        and bool(np.all(np.isfinite(array)))
        and bool(np.all(array == np.round(array)))
    )
    if not (np.issubdtype(array.dtype, np.integer) or whole_floats):
        raise RegionError(f"tile_positions must be whole numbers of pixels, got {array.dtype}")
    positions = array.astype(np.int64)
    inside = (
        (positions[:, 0] >= 0)
        & (positions[:, 0] < total_rows)
        & (positions[:, 1] >= 0)
        & (positions[:, 1] < total_columns)
    )
    if not np.all(inside):
        index = int(np.argmin(inside))
        raise RegionError(
            f"Tile {index} is at (row, column) {tuple(int(v) for v in positions[index])}, "
            f"outside the total pixel matrix: rows must be in [0, {total_rows}) and "
            f"columns in [0, {total_columns})"
        )
    return positions


def assemble_total_pixel_matrix(
    tiles: Sequence[npt.NDArray[Any]] | npt.NDArray[Any],
    tile_positions: TilePositions,
    total_pixel_matrix_rows: int,
    total_pixel_matrix_columns: int,
) -> npt.NDArray[Any]:
    """Assemble a total pixel matrix from individual tiles.

    Parameters
    ----------
    tiles: Sequence[numpy.ndarray]
        Individual image tiles of shape ``(rows, columns)`` or ``(rows, columns, samples)``;
        tiles may differ in rows and columns but not in samples
    tile_positions: Sequence[Sequence[int]] | numpy.ndarray
        Zero-based (row, column) position of the top-left pixel of each tile in the total
        pixel matrix; each must lie inside the total pixel matrix
    total_pixel_matrix_rows: int
        Number of total rows
    total_pixel_matrix_columns: int
        Number of total columns

    Returns
    -------
    numpy.ndarray
        Total pixel matrix of shape ``(total_pixel_matrix_rows, total_pixel_matrix_columns)``
        plus the samples axis of the tiles, if any, with the common data type of the tiles.
        Parts of tiles that overhang the bottom or right edge are cropped, pixels covered by
        no tile are zero, and where tiles overlap the later one wins.

    Raises
    ------
    dicomslide.errors.RegionError
        When there are no tiles, the numbers of tiles and positions differ, tiles have
        different samples per pixel or are not 2- or 3-dimensional, a size is not a positive
        integer, or a position lies outside the total pixel matrix
    """
    total_rows = _positive_int(total_pixel_matrix_rows, "total_pixel_matrix_rows")
    total_columns = _positive_int(total_pixel_matrix_columns, "total_pixel_matrix_columns")
    if len(tiles) == 0:
        raise RegionError(
            "Cannot assemble a total pixel matrix from no tiles: the data type and samples per "
            "pixel are unknown"
        )
    positions = _parse_tile_positions(tile_positions, total_rows, total_columns)
    if len(positions) != len(tiles):
        raise RegionError(
            f"Got {len(tiles)} tiles but {len(positions)} tile positions; need one per tile"
        )
    arrays = [np.asarray(tile) for tile in tiles]
    trailing = arrays[0].shape[2:]
    for index, array in enumerate(arrays):
        if array.ndim not in (2, 3) or array.shape[2:] != trailing:
            raise RegionError(
                f"Tile {index} has shape {array.shape}; every tile must have shape (rows, "
                f"columns) or (rows, columns, samples) with the same samples as tile 0 "
                f"{arrays[0].shape}"
            )
    dtype = np.result_type(*(array.dtype for array in arrays))
    total = np.zeros((total_rows, total_columns, *trailing), dtype=dtype)
    for (row, column), array in zip(positions.tolist(), arrays, strict=True):
        height = min(array.shape[0], total_rows - row)
        width = min(array.shape[1], total_columns - column)
        total[row : row + height, column : column + width] = array[:height, :width]
    return total


def disassemble_total_pixel_matrix(
    total_pixel_matrix: npt.NDArray[Any],
    tile_positions: TilePositions,
    rows: int,
    columns: int,
) -> npt.NDArray[Any]:
    """Disassemble a total pixel matrix into individual tiles.

    Parameters
    ----------
    total_pixel_matrix: numpy.ndarray
        Total pixel matrix of shape ``(rows, columns)`` or ``(rows, columns, samples)``
    tile_positions: Sequence[Sequence[int]] | numpy.ndarray
        Zero-based (row, column) position of the top-left pixel of each tile in the total
        pixel matrix; each must lie inside the total pixel matrix
    rows: int
        Number of rows per tile
    columns: int
        Number of columns per tile

    Returns
    -------
    numpy.ndarray
        Stacked image tiles of shape ``(N, rows, columns)`` plus the samples axis, if any,
        with the data type of `total_pixel_matrix`. Tiles that overhang the bottom or right
        edge are padded with zeros to full size, as DICOM frames are.

    Raises
    ------
    dicomslide.errors.RegionError
        When `total_pixel_matrix` is not 2- or 3-dimensional, `rows` or `columns` is not a
        positive integer, or a position lies outside the total pixel matrix
    """
    matrix = np.asarray(total_pixel_matrix)
    if matrix.ndim not in (2, 3) or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise RegionError(
            "total_pixel_matrix must have shape (rows, columns) or (rows, columns, samples) "
            f"with at least one pixel, got shape {matrix.shape}"
        )
    tile_rows = _positive_int(rows, "rows")
    tile_columns = _positive_int(columns, "columns")
    total_rows, total_columns = matrix.shape[0], matrix.shape[1]
    positions = _parse_tile_positions(tile_positions, total_rows, total_columns)
    tiles = np.zeros((len(positions), tile_rows, tile_columns, *matrix.shape[2:]), matrix.dtype)
    for index, (row, column) in enumerate(positions.tolist()):
        height = min(tile_rows, total_rows - row)
        width = min(tile_columns, total_columns - column)
        tiles[index, :height, :width] = matrix[row : row + height, column : column + width]
    return tiles

"""Tags of the attributes that opening a slide reads by tag rather than by keyword.

pydicom turns a keyword into a tag on every access; reading by tag skips that (see
:func:`dicomslide.perframe.get_value`). The tags are taken from pydicom's data dictionary
once, here, so that no module spells them out by hand (a typo would silently read another
attribute).
"""

from __future__ import annotations

from typing import Final

from pydicom.datadict import tag_for_keyword


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"{keyword} is not in pydicom's data dictionary")
    return tag


BITS_ALLOCATED: Final = _tag("BitsAllocated")
COLUMN_POSITION: Final = _tag("ColumnPositionInTotalImagePixelMatrix")
COLUMNS: Final = _tag("Columns")
CONCATENATION_UID: Final = _tag("ConcatenationUID")
CONTAINER_IDENTIFIER: Final = _tag("ContainerIdentifier")
DIMENSION_ORGANIZATION_TYPE: Final = _tag("DimensionOrganizationType")
FRAME_OF_REFERENCE_UID: Final = _tag("FrameOfReferenceUID")
IMAGE_ORIENTATION_SLIDE: Final = _tag("ImageOrientationSlide")
IMAGE_TYPE: Final = _tag("ImageType")
#: Descriptors whose values pydicom converts specially (see dicomslide.sources.dicomjson).
LUT_DESCRIPTORS: Final = frozenset(
    _tag(keyword)
    for keyword in (
        "LUTDescriptor",
        "RedPaletteColorLookupTableDescriptor",
        "GreenPaletteColorLookupTableDescriptor",
        "BluePaletteColorLookupTableDescriptor",
    )
)
MODALITY: Final = _tag("Modality")
NUMBER_OF_FRAMES: Final = _tag("NumberOfFrames")
OPTICAL_PATH_IDENTIFICATION_SEQUENCE: Final = _tag("OpticalPathIdentificationSequence")
OPTICAL_PATH_IDENTIFIER: Final = _tag("OpticalPathIdentifier")
OPTICAL_PATH_SEQUENCE: Final = _tag("OpticalPathSequence")
PER_FRAME_FUNCTIONAL_GROUPS: Final = _tag("PerFrameFunctionalGroupsSequence")
PIXEL_MEASURES: Final = _tag("PixelMeasuresSequence")
PIXEL_SPACING: Final = _tag("PixelSpacing")
PYRAMID_UID: Final = _tag("PyramidUID")
PLANE_ORIENTATION: Final = _tag("PlaneOrientationSequence")
PLANE_POSITION_SLIDE: Final = _tag("PlanePositionSlideSequence")
REFERENCED_SEGMENT_NUMBER: Final = _tag("ReferencedSegmentNumber")
ROW_POSITION: Final = _tag("RowPositionInTotalImagePixelMatrix")
ROWS: Final = _tag("Rows")
SAMPLES_PER_PIXEL: Final = _tag("SamplesPerPixel")
SEGMENT_IDENTIFICATION_SEQUENCE: Final = _tag("SegmentIdentificationSequence")
SERIES_INSTANCE_UID: Final = _tag("SeriesInstanceUID")
SHARED_FUNCTIONAL_GROUPS: Final = _tag("SharedFunctionalGroupsSequence")
SOP_CLASS_UID: Final = _tag("SOPClassUID")
SOP_INSTANCE_UID: Final = _tag("SOPInstanceUID")
STUDY_INSTANCE_UID: Final = _tag("StudyInstanceUID")
TOTAL_PIXEL_MATRIX_COLUMNS: Final = _tag("TotalPixelMatrixColumns")
TOTAL_PIXEL_MATRIX_ORIGIN: Final = _tag("TotalPixelMatrixOriginSequence")
TOTAL_PIXEL_MATRIX_ROWS: Final = _tag("TotalPixelMatrixRows")
X_OFFSET: Final = _tag("XOffsetInSlideCoordinateSystem")
Y_OFFSET: Final = _tag("YOffsetInSlideCoordinateSystem")
Z_OFFSET: Final = _tag("ZOffsetInSlideCoordinateSystem")

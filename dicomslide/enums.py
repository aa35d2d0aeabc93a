"""Enumerated values used across dicomslide."""

from __future__ import annotations

from enum import Enum

__all__ = ["ChannelTypes", "ImageFlavors"]


class ChannelTypes(Enum):
    """Enumerated values for channel types.

    A channel is one plane of values per pixel position. Its type says which DICOM structure
    the channel comes from.

    Members are in the order of dicomslide 0.7 (iteration order is part of the API).

    Attributes
    ----------
    OPTICAL_PATH
        An item of the Optical Path Sequence of a VL Whole Slide Microscopy Image
    SEGMENT
        An item of the Segment Sequence of a Segmentation image
    PARAMETER
        A mapped parameter of a Parametric Map image
    """

    OPTICAL_PATH = "OPTICAL_PATH"
    SEGMENT = "SEGMENT"
    PARAMETER = "PARAMETER"


class ImageFlavors(Enum):
    """Enumerated values for image flavors.

    The flavor is the third value of the Image Type attribute of a VL Whole Slide Microscopy
    Image (see :func:`dicomslide.utils.get_image_flavor` for how it is inferred when missing).

    Members are in the order of dicomslide 0.7 (iteration order is part of the API).

    Attributes
    ----------
    VOLUME
        A level of the image pyramid, acquired or derived by resampling
    LABEL
        Photograph of the slide label
    OVERVIEW
        Low-resolution photograph of the whole slide (also called macro image)
    THUMBNAIL
        Downsampled copy of a VOLUME image
    """

    VOLUME = "VOLUME"
    LABEL = "LABEL"
    OVERVIEW = "OVERVIEW"
    THUMBNAIL = "THUMBNAIL"

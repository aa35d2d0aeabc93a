"""dicomslide: fast asyncio-first reader for DICOM whole-slide microscopy images.

Read slides from local DICOM folders (:class:`DICOMfileClient`) or any
``dicomweb_client.DICOMClient`` with ``await``::

    client = dicomslide.DICOMfileClient("/data/slides")
    slides = await dicomslide.find_slides(client)
    region = await slides[0].get_image_region(offset=(0, 0), level=0, size=(512, 512))

The blocking twin of this package is ``dicomslide_sync``.
"""

from typing import Any

from dicomslide.bulk import (
    PrefetchBudgetWarning,
    PrefetchResult,
    Tile,
    iter_tiles,
    prefetch,
)
from dicomslide.discovery import find_slides
from dicomslide.enums import ChannelTypes, ImageFlavors
from dicomslide.errors import (
    ArgumentError,
    DaskNotInstalledError,
    DecodeError,
    DicomSlideError,
    DicomWebError,
    IndexRangeError,
    InvalidClientError,
    InvalidDataError,
    MissingCodecError,
    NotFoundError,
    PrefetchBudgetError,
    ProtocolError,
    RegionError,
    RequestTimeoutError,
    ResponseTooLargeError,
    SourceError,
    TransportError,
    UnsupportedError,
    UsageError,
)
from dicomslide.frames import CacheStats
from dicomslide.geometry import compute_frame_positions
from dicomslide.image import TiledImage, TotalPixelMatrix
from dicomslide.openslide import OpenSlide, OpenSlideCache, open_slide
from dicomslide.pyramid import Pyramid, PyramidLevel
from dicomslide.runtime import get_cache_stats
from dicomslide.sampler import TotalPixelMatrixSampler
from dicomslide.slide import Slide
from dicomslide.sources.local import DICOMfileClient
from dicomslide.sources.web import DICOMwebClient, RetryPolicy
from dicomslide.utils import (
    assemble_total_pixel_matrix,
    compute_image_center_position,
    disassemble_total_pixel_matrix,
    does_optical_path_item_match,
    does_segment_item_match,
    does_specimen_description_item_match,
    get_image_flavor,
    get_image_pixel_spacing,
    get_image_size,
    is_image,
    is_label_image,
    is_label_map,
    is_overview_image,
    is_thumbnail_image,
    is_tiled_image,
    is_volume_image,
    select_image_at_magnification,
    select_image_at_pixel_spacing,
    sort_images_by_pixel_spacing,
    sort_images_by_size,
)

__version__ = "0.8.0.dev0"


def __getattr__(name: str) -> Any:
    # to_dask runs chunks on the blocking layer's loop, so it lives there: this package never
    # imports dicomslide_sync (issue 15). Say where it went rather than a bare AttributeError.
    if name == "to_dask":
        raise AttributeError(
            "dicomslide.to_dask moved to dicomslide_sync.to_dask (it reads chunks through the "
            "blocking layer); it accepts a dicomslide.Slide too."
        )
    raise AttributeError(f"module 'dicomslide' has no attribute {name!r}")


__all__ = [
    "Tile",
    "PrefetchResult",
    "PrefetchBudgetWarning",
    "PrefetchBudgetError",
    "ArgumentError",
    "DaskNotInstalledError",
    "CacheStats",
    "ChannelTypes",
    "DICOMfileClient",
    "DICOMwebClient",
    "DecodeError",
    "DicomSlideError",
    "DicomWebError",
    "ImageFlavors",
    "InvalidClientError",
    "InvalidDataError",
    "MissingCodecError",
    "NotFoundError",
    "OpenSlide",
    "OpenSlideCache",
    "ProtocolError",
    "ResponseTooLargeError",
    "Pyramid",
    "PyramidLevel",
    "IndexRangeError",
    "RegionError",
    "RequestTimeoutError",
    "RetryPolicy",
    "Slide",
    "SourceError",
    "TiledImage",
    "TotalPixelMatrix",
    "TotalPixelMatrixSampler",
    "TransportError",
    "UnsupportedError",
    "UsageError",
    "assemble_total_pixel_matrix",
    "compute_frame_positions",
    "compute_image_center_position",
    "disassemble_total_pixel_matrix",
    "does_optical_path_item_match",
    "does_segment_item_match",
    "does_specimen_description_item_match",
    "find_slides",
    "get_cache_stats",
    "get_image_flavor",
    "get_image_pixel_spacing",
    "get_image_size",
    "is_image",
    "is_label_image",
    "is_label_map",
    "is_overview_image",
    "is_thumbnail_image",
    "is_tiled_image",
    "is_volume_image",
    "iter_tiles",
    "open_slide",
    "prefetch",
    "select_image_at_magnification",
    "select_image_at_pixel_spacing",
    "sort_images_by_pixel_spacing",
    "sort_images_by_size",
]

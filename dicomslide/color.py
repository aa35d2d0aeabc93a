"""ICC colour management: transform decoded RGB tiles from the image's profile to sRGB.

The transform is built once per profile with LittleCMS (through Pillow) and applied in the
decode threads. Images without a profile, or with one that LittleCMS cannot read, are returned
as stored: a missing profile is common and is not an error.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image, ImageCms

__all__ = ["ColorTransform", "get_color_transform"]


class ColorTransform:
    """Transform from an embedded ICC profile to sRGB.

    Parameters
    ----------
    icc_profile: bytes
        The ICC profile of the image
    """

    def __init__(self, icc_profile: bytes) -> None:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        target = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        # NOCACHE: LittleCMS's one-pixel cache is what makes a shared transform unsafe across
        # the decode threads; without it one transform serves them all.
        self._transform = ImageCms.buildTransform(
            source,
            target,
            "RGB",
            "RGB",
            renderingIntent=ImageCms.Intent.PERCEPTUAL,
            flags=ImageCms.Flags.NOCACHE,
        )

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Apply the transform to an 8-bit RGB array.

        Parameters
        ----------
        array: numpy.ndarray
            Array of shape (rows, columns, 3) and dtype uint8

        Returns
        -------
        numpy.ndarray
            Transformed array of the same shape
        """
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
            return array
        image = Image.fromarray(np.ascontiguousarray(array), mode="RGB")
        out = ImageCms.applyTransform(image, self._transform)
        assert out is not None
        return np.asarray(out)


@lru_cache(maxsize=32)
def get_color_transform(icc_profile: bytes) -> ColorTransform | None:
    """The (cached) transform for a profile, or None if the profile cannot be used.

    Parameters
    ----------
    icc_profile: bytes
        ICC profile

    Returns
    -------
    ColorTransform | None
        The transform
    """
    if not icc_profile:
        return None
    try:
        transform = ColorTransform(bytes(icc_profile))
    except (OSError, ImageCms.PyCMSError, ValueError):
        return None
    # Most scanners embed plain sRGB; a transform that changes no colour costs ~1 ms per tile
    # for nothing, so it is skipped when a probe of the colour cube comes back unchanged.
    levels = np.arange(0, 256, 5, dtype=np.uint8)
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(1, -1, 3)
    if np.array_equal(transform.apply(cube), cube):
        return None
    return transform

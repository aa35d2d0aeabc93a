"""ICC colour management: transform decoded RGB tiles from the image's profile to sRGB.

The transform is built once per profile with LittleCMS (through Pillow) and applied in the
decode threads. Images without a profile, or with one that LittleCMS cannot read, are returned
as stored: a missing profile is common and is not an error.
"""

from __future__ import annotations

import io
import threading
from functools import lru_cache

import numpy as np
from PIL import Image, ImageCms

__all__ = ["ColorTransform", "get_color_transform"]


class ColorTransform:
    """Transform from an embedded ICC profile to sRGB.

    Most scanners embed plain sRGB, and a transform that changes no colour costs about 1 ms per
    256-pixel tile for nothing. Whether the transform is exactly the identity is found out in a
    background thread over all 2**24 colours; until then (and if it is not) it is applied.

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
        self.is_identity = False
        threading.Thread(
            target=self._check_identity, name="dicomslide-icc-check", daemon=True
        ).start()

    def _check_identity(self) -> None:
        levels = np.arange(256, dtype=np.uint8)
        for red in range(0, 256, 16):
            # 16 slabs of 16 x 256 x 256 colours keep the probe's memory small
            r = np.arange(red, red + 16, dtype=np.uint8)
            cube = np.stack(np.meshgrid(r, levels, levels, indexing="ij"), axis=-1)
            cube = cube.reshape(16 * 256, 256, 3)
            if not np.array_equal(self._apply(cube), cube):
                return
        self.is_identity = True

    def _apply(self, array: np.ndarray) -> np.ndarray:
        image = Image.fromarray(np.ascontiguousarray(array), mode="RGB")
        out = ImageCms.applyTransform(image, self._transform)
        assert out is not None
        return np.asarray(out)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Apply the transform to an 8-bit RGB array.

        Parameters
        ----------
        array: numpy.ndarray
            Array of shape (rows, columns, 3) and dtype uint8; other arrays are returned as given

        Returns
        -------
        numpy.ndarray
            Transformed array of the same shape
        """
        if self.is_identity or array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
            return array
        return self._apply(array)


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
        return ColorTransform(bytes(icc_profile))
    except (OSError, ImageCms.PyCMSError, ValueError):
        return None

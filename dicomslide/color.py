"""ICC colour management: transform decoded RGB tiles from the image's profile to sRGB.

The transform is built once per profile with LittleCMS (through Pillow) and applied in the
decode threads. Images without a profile, or with one that LittleCMS cannot read, are returned
as stored: a missing profile is common and is not an error.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

__all__ = ["ColorTransform", "get_color_transform"]


class ColorTransform:
    """Transform from an embedded ICC profile to sRGB.

    Most scanners embed sRGB (or a profile equivalent to it), and a transform that changes no
    colour costs time on every tile for nothing (see ``benchmarks/RESULTS.md``). A profile
    whose transform moves no 8-bit colour by more than one level (LittleCMS's own rounding) is
    treated as sRGB and not applied, as browsers do. That is decided from a probe of 26,000
    colours when the transform is built, and confirmed over all 2**24 colours in a background
    thread; if the full check finds a larger change, the transform is applied from then on. A
    confirmed profile is remembered by its SHA-256 in ``$XDG_CACHE_HOME/dicomslide/icc`` (or
    ``~/.cache/...``), so later processes skip both the probe and the transform.

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
        self._profile_hash = hashlib.sha256(icc_profile).hexdigest()
        self.is_identity = self._changes_at_most_one_level(_probe_colours())
        if self.is_identity:
            threading.Thread(
                target=self._confirm_identity, name="dicomslide-icc-check", daemon=True
            ).start()

    def _changes_at_most_one_level(self, colours: np.ndarray) -> bool:
        moved = np.abs(self._apply(colours).astype(np.int16) - colours.astype(np.int16))
        return bool(moved.max() <= 1)

    def _confirm_identity(self) -> None:
        levels = np.arange(256, dtype=np.uint8)
        for red in range(0, 256, 16):
            # 16 slabs of 16 x 256 x 256 colours keep the check's memory small
            r = np.arange(red, red + 16, dtype=np.uint8)
            cube = np.stack(np.meshgrid(r, levels, levels, indexing="ij"), axis=-1)
            if not self._changes_at_most_one_level(cube.reshape(16 * 256, 256, 3)):
                self.is_identity = False
                return
        _remember_srgb_equivalent(self._profile_hash)

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


def _probe_colours() -> np.ndarray:
    # A 17-level grid, every grey, and pseudo-random colours: smooth transforms that move any
    # colour by more than one level move some of these too.
    grid = np.linspace(0, 255, 17).round().astype(np.uint8)
    cube = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), axis=-1).reshape(-1, 3)
    greys = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    rng = np.random.default_rng(0)
    randoms = rng.integers(0, 256, (20_000, 3), dtype=np.uint8)
    colours = np.concatenate([cube, greys, randoms])
    return colours.reshape(1, -1, 3)


def _srgb_marker(profile_hash: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dicomslide" / "icc" / f"{profile_hash}.srgb-equivalent"


def _known_srgb_equivalent(profile_hash: str) -> bool:
    try:
        return _srgb_marker(profile_hash).is_file()
    except OSError:
        return False


def _remember_srgb_equivalent(profile_hash: str) -> None:
    # An empty marker file per profile hash: later processes skip the probe and the transform.
    # Best effort: a read-only cache directory only means the check runs again next time.
    marker = _srgb_marker(profile_hash)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass


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
    if _known_srgb_equivalent(hashlib.sha256(bytes(icc_profile)).hexdigest()):
        # Confirmed over all 2**24 colours by an earlier process: skip building the transform.
        return None
    try:
        return ColorTransform(bytes(icc_profile))
    except (OSError, ImageCms.PyCMSError, ValueError):
        return None

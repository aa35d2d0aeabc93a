"""ICC profiles for tests: Pillow's sRGB and a variant with another red primary."""

from __future__ import annotations

import struct

from PIL import ImageCms


def srgb_profile() -> bytes:
    return bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())


def wide_gamut_profile() -> bytes:
    """sRGB with its red primary moved: a genuinely different RGB space."""
    data = bytearray(srgb_profile())
    (count,) = struct.unpack_from(">I", data, 128)
    for i in range(count):
        signature, offset, _ = struct.unpack_from(">4sII", data, 132 + 12 * i)
        if signature == b"rXYZ":
            x, y, z = struct.unpack_from(">iii", data, offset + 8)
            struct.pack_into(">iii", data, offset + 8, int(x * 0.8), int(y * 1.1), z)
            return bytes(data)
    raise AssertionError("no rXYZ tag in Pillow's sRGB profile")

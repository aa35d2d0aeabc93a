"""Transfer Syntax UIDs (PS3.6 Annex A), spelled out once for every module.

Codecs, sources and the synthetic writer all branch on transfer syntaxes; a UID typed by hand
in several modules drifts (one typo silently sends a frame down the wrong path), so they
import the names from here.
"""

from __future__ import annotations

from typing import Final

IMPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN: Final = "1.2.840.10008.1.2.2"
DEFLATED_IMAGE_FRAME: Final = "1.2.840.10008.1.2.8.1"
JPEG_BASELINE: Final = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED: Final = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS: Final = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1: Final = "1.2.840.10008.1.2.4.70"
JPEG_LS_LOSSLESS: Final = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR_LOSSLESS: Final = "1.2.840.10008.1.2.4.81"
J2K_LOSSLESS: Final = "1.2.840.10008.1.2.4.90"
J2K: Final = "1.2.840.10008.1.2.4.91"
J2K_PART2_LOSSLESS: Final = "1.2.840.10008.1.2.4.92"
J2K_PART2: Final = "1.2.840.10008.1.2.4.93"
HTJ2K_LOSSLESS: Final = "1.2.840.10008.1.2.4.201"
HTJ2K_LOSSLESS_RPCL: Final = "1.2.840.10008.1.2.4.202"
HTJ2K: Final = "1.2.840.10008.1.2.4.203"
RLE_LOSSLESS: Final = "1.2.840.10008.1.2.5"
JPEG_XL_LOSSLESS: Final = "1.2.840.10008.1.2.4.110"
JPEG_XL_RECOMPRESSION: Final = "1.2.840.10008.1.2.4.111"
JPEG_XL: Final = "1.2.840.10008.1.2.4.112"
MPEG2_MAIN_ML: Final = "1.2.840.10008.1.2.4.100"
MPEG2_MAIN_HL: Final = "1.2.840.10008.1.2.4.101"
MPEG4_HP41: Final = "1.2.840.10008.1.2.4.102"
MPEG4_HP41_BD: Final = "1.2.840.10008.1.2.4.103"
MPEG4_HP42_2D: Final = "1.2.840.10008.1.2.4.104"
MPEG4_HP42_3D: Final = "1.2.840.10008.1.2.4.105"
MPEG4_HP42_STEREO: Final = "1.2.840.10008.1.2.4.106"
HEVC_MAIN: Final = "1.2.840.10008.1.2.4.107"
HEVC_MAIN10: Final = "1.2.840.10008.1.2.4.108"

#: Syntaxes whose pixel data is stored uncompressed (native), whatever encodes the data set.
NATIVE: Final = frozenset(
    {
        IMPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_LITTLE_ENDIAN,
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_BIG_ENDIAN,
    }
)
#: The JPEG family (codestreams start with SOI).
JPEG_FAMILY: Final = frozenset(
    {
        JPEG_BASELINE,
        JPEG_EXTENDED,
        JPEG_LOSSLESS,
        JPEG_LOSSLESS_SV1,
        JPEG_LS_LOSSLESS,
        JPEG_LS_NEAR_LOSSLESS,
    }
)
#: JPEG 2000 and High-Throughput JPEG 2000 (codestreams start with SOC).
J2K_FAMILY: Final = frozenset(
    {J2K_LOSSLESS, J2K, J2K_PART2_LOSSLESS, J2K_PART2, HTJ2K_LOSSLESS, HTJ2K_LOSSLESS_RPCL, HTJ2K}
)
#: JPEG XL.
JPEG_XL_FAMILY: Final = frozenset({JPEG_XL_LOSSLESS, JPEG_XL_RECOMPRESSION, JPEG_XL})

"""Frames decoded straight into the caller's array (issue 14).

``decode_frame(..., out=)`` lets libjpeg-turbo write an 8-bit JPEG frame into a given array
(no array of its own, no copy); other frames are decoded, then copied in. A one-tile read
whose tile fills its output whole decodes into that output. Its tile then reaches the
decoded-tile cache only as a copy: the reader owns (and may write to) what it was given.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import JPEGBaseline8Bit

import dicomslide
from dicomslide import image
from dicomslide.codecs import PixelFormat, decode_frame
from dicomslide.errors import DecodeError, RegionError
from dicomslide.synthetic import write_slide
from tests.support.slides import slide_spec

SIZE = 64
ROWS, COLS = np.mgrid[0:SIZE, 0:SIZE]
RGB = np.stack([COLS * 4, ROWS * 4, (ROWS + COLS) * 2], axis=-1).astype(np.uint8)
FMT = PixelFormat(SIZE, SIZE, 3, 8, 8, 0, "YBR_FULL_422")
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
EXPLICIT = "1.2.840.10008.1.2.1"

# 300 x 400 in 128-pixel tiles: 3 x 4 tiles, the last row and column clipped by the matrix.
SPEC = slide_spec((300, 400), 128, 1, bare=True, transfer_syntax_uid=JPEGBaseline8Bit)
TILE = 128
TILES = [(r, c) for r in range(0, 300, TILE) for c in range(0, 400, TILE)]


def _jpeg(arr: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_a_jpeg_frame_decodes_into_the_given_array() -> None:
    data = _jpeg(RGB)
    fresh = decode_frame(data, JPEG_BASELINE, FMT)
    out = np.zeros((SIZE, SIZE, 3), np.uint8)
    got = decode_frame(data, JPEG_BASELINE, FMT, out=out)
    assert got is out
    np.testing.assert_array_equal(out, fresh)
    assert np.abs(out.astype(int) - RGB).mean() < 3  # the real picture, not just any pixels


def test_other_frames_are_copied_into_the_given_array() -> None:
    fmt = PixelFormat(SIZE, SIZE, 3, 8, 8, 0, "RGB")
    out = np.zeros((SIZE, SIZE, 3), np.uint8)
    got = decode_frame(RGB.tobytes(), EXPLICIT, fmt, out=out)
    assert got is out
    np.testing.assert_array_equal(out, RGB)


def test_a_jpeg_of_another_size_still_reports_its_shape() -> None:
    # The stream is not decoded into the caller's array (it would not fit): the error is
    # the same as without one, and the array is left alone.
    data = _jpeg(RGB[:32])
    out = np.full((SIZE, SIZE, 3), 7, np.uint8)
    with pytest.raises(DecodeError, match="expected"):
        decode_frame(data, JPEG_BASELINE, FMT, out=out)
    assert (out == 7).all()


@pytest.mark.parametrize(
    "out",
    [
        np.zeros((SIZE, SIZE, 1), np.uint8),
        np.zeros((SIZE, SIZE, 3), np.uint16),
        np.zeros((SIZE, 2 * SIZE, 3), np.uint8)[:, :SIZE],
        "pixels",
    ],
    ids=["shape", "dtype", "strided", "not-an-array"],
)
def test_an_array_the_frame_does_not_fit_is_refused(out: Any) -> None:
    with pytest.raises(RegionError, match=r"out must be a C-contiguous, writable array"):
        decode_frame(_jpeg(RGB), JPEG_BASELINE, FMT, out=out)


def test_a_read_only_array_is_refused() -> None:
    out = np.zeros((SIZE, SIZE, 3), np.uint8)
    out.flags.writeable = False
    with pytest.raises(RegionError, match="writable False"):
        decode_frame(_jpeg(RGB), JPEG_BASELINE, FMT, out=out)


def test_one_tile_reads_decode_into_their_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_slide(tmp_path, SPEC)
    targets: list[np.ndarray | None] = []
    real = image.decode_frame

    def spy(*args: Any, out: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
        targets.append(out)
        return real(*args, out=out, **kwargs)

    monkeypatch.setattr(image, "decode_frame", spy)

    async def scan(slide: Any) -> list[np.ndarray]:
        reads = (slide.get_image_region(o, 0, (TILE, TILE)) for o in TILES)
        return list(await asyncio.gather(*reads))

    async def main() -> None:
        async with dicomslide.DICOMfileClient(tmp_path) as client:
            (slide,) = await dicomslide.find_slides(client)
            first = await scan(slide)
            # Tiles inside the matrix went straight into their reads' arrays; the clipped
            # ones at the right and bottom edges (padded with fill) could not.
            inside = [i for i, (r, c) in enumerate(TILES) if r + TILE <= 300 and c + TILE <= 400]
            assert len(inside) == 6
            used = {i for i, t in enumerate(targets) if t is not None}
            assert len(used) == len(inside)
            for i in inside:
                assert any(t is not None and np.shares_memory(t, first[i]) for t in targets)
            # The second pass caches copies; the readers' arrays stay theirs to write to.
            second = await scan(slide)
            for arr in second:
                assert arr.flags.writeable
                arr[...] = 0
            third = await scan(slide)
            assert dicomslide.get_cache_stats(client).decoded_hits == len(TILES)
            whole = await slide.get_image_region((0, 0), 0, (300, 400))
        for (r, c), a, d in zip(TILES, first, third, strict=True):
            np.testing.assert_array_equal(a, d, err_msg=f"tile at {(r, c)}")
            rows, cols = min(TILE, 300 - r), min(TILE, 400 - c)
            np.testing.assert_array_equal(a[:rows, :cols], whole[r : r + rows, c : c + cols])

    asyncio.run(main())


class _FlippingColor:
    """A colour transform whose background identity check fails between its two reads.

    ``ColorTransform`` starts as the identity when a probe finds it so and a thread may turn
    that off at any moment: the reader chooses to decode into its output while it holds, and
    ``apply`` then corrects the pixels after all.
    """

    def __init__(self) -> None:
        self.reads = 0

    @property
    def is_identity(self) -> bool:
        self.reads += 1
        return self.reads == 1

    def apply(self, array: np.ndarray) -> np.ndarray:
        return array if self.is_identity else 255 - array


def test_a_colour_transform_that_turns_out_not_the_identity_still_corrects_the_tile() -> None:
    reader = type(
        "Reader",
        (),
        {"format": FMT, "correct_color": True, "_managed": True, "is_color": lambda _: True},
    )
    color = _FlippingColor()
    out = np.zeros((SIZE, SIZE, 3), np.uint8)
    whole = (slice(0, SIZE), slice(0, SIZE))
    data = _jpeg(RGB)
    frame = dicomslide.sources.EncodedFrame(data, JPEG_BASELINE)
    cache = dicomslide.frames.DecodedTileCache(1 << 20)
    image.ImageReader.decode_into(
        reader(),
        frame,
        "1.2.3",
        1,
        color,  # type: ignore[arg-type]
        out,
        [(whole, whole)],
        cache,
        True,
    )
    assert color.reads == 2  # decoded into the output first, then corrected
    np.testing.assert_array_equal(out, 255 - decode_frame(data, JPEG_BASELINE, FMT))

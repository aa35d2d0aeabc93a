"""The async OpenSlide: coroutines, async context manager, pixel equality with OpenSlide 4."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import ExplicitVRLittleEndian

import dicomslide
from dicomslide.errors import UsageError
from dicomslide.openslide import OpenSlide, open_slide
from dicomslide.synthetic import write_slide
from tests.support.slides import slide_spec

openslide = pytest.importorskip("openslide")

SPEC = slide_spec(
    (500, 700),
    128,
    3,
    transfer_syntax_uid=ExplicitVRLittleEndian,
    dimension_organization="TILED_SPARSE",
    sparse_missing_tiles=((1, 1),),
)


async def test_async_read_region_matches_openslide(tmp_path: Path) -> None:
    paths = write_slide(tmp_path, SPEC)
    ref = openslide.OpenSlide(str(paths[0]))
    client = dicomslide.DICOMfileClient(tmp_path)
    slides = await dicomslide.find_slides(client, correct_color=False)
    async with OpenSlide(slides[0]) as osr:
        assert osr.level_downsamples == ref.level_downsamples
        for location, level, size in [((3, 1), 1, (200, 150)), ((-5, 130), 2, (90, 90))]:
            got = await osr.read_region(location, level, size)
            np.testing.assert_array_equal(
                np.asarray(got), np.asarray(ref.read_region(location, level, size))
            )
        thumb = await osr.get_thumbnail((100, 100))
        np.testing.assert_array_equal(np.asarray(thumb), np.asarray(ref.get_thumbnail((100, 100))))
        images = await osr.get_associated_images()
        assert {"label", "macro", "LABEL", "OVERVIEW"} <= set(images)
    with pytest.raises(UsageError):
        await osr.read_region((0, 0), 0, (1, 1))
    with pytest.raises(UsageError):
        await osr.get_associated_images()
    await client.aclose()
    ref.close()


async def test_async_open_slide_closes_its_client(tmp_path: Path) -> None:
    write_slide(tmp_path, SPEC)
    osr = await open_slide(tmp_path)
    assert osr.properties["openslide.vendor"] == "dicom"
    await osr.close()
    with pytest.raises(UsageError):
        _ = osr.level_count

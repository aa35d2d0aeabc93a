"""Segmentations, parametric maps, slide filters and annotations over DICOMweb (Orthanc)."""

from __future__ import annotations

import asyncio
from typing import Any

import highdicom as hd
import numpy as np
import pytest
from pydicom.sr.codedict import codes

import dicomslide
import dicomslide_sync
from dicomslide.enums import ChannelTypes
from tests.aio.test_derived import ALL_SLIDES, STAIN_B, Written, write_derived
from tests.support.orthanc import OrthancServer
from tests.support.slides import served_folder

pytestmark = pytest.mark.integration


server = served_folder(write_derived, "derived")


def _channels_of(slide: dicomslide_sync.Slide, series: str) -> list[int]:
    return [
        i
        for i in slide.find_segments()
        if slide.get_volume_images(i)[0].metadata.SeriesInstanceUID == series
    ]


def _full(slide: dicomslide_sync.Slide, channel: int, level: int = 0) -> np.ndarray:
    rows, cols = slide.total_pixel_matrix_dimensions[level]
    return np.asarray(slide.get_image_region((0, 0), level, (rows, cols), channel_index=channel))


def test_derived_channels_over_dicomweb(
    server: tuple[OrthancServer, Written], client: Any
) -> None:
    _, written = server
    (slide,) = dicomslide_sync.find_slides(client, container_id="SLIDE-A")
    assert slide.num_channels == 8
    binary = _channels_of(slide, written.seg_series["binary"])
    for k, channel in enumerate(binary):
        np.testing.assert_array_equal(_full(slide, channel)[..., 0], written.binary[..., k])
    (fractional,) = _channels_of(slide, written.seg_series["fractional"])
    np.testing.assert_array_equal(_full(slide, fractional)[..., 0], written.fractional)
    split = _channels_of(slide, written.seg_series["split"])
    assert len(split) == 3
    masks = sorted(_full(slide, c)[..., 0].tobytes() for c in split)
    assert masks == sorted(m.tobytes() for m in written.split)
    pm = slide.get_channel_index("density", ChannelTypes.PARAMETER)
    np.testing.assert_array_equal(_full(slide, pm, level=1)[..., 0], written.pm_values)
    with pytest.raises(dicomslide.errors.RegionError):
        slide.get_image_region((0, 0), 0, (4, 4), channel_index=pm)


def test_odd_bit_frames_over_dicomweb(server: tuple[OrthancServer, Written], client: Any) -> None:
    # Orthanc answers 400 "Bad file format" to WADO-RS frame requests for BitsAllocated 1
    # frames that do not start on a byte boundary: the client reads the whole instance.
    _, written = server
    (slide,) = dicomslide_sync.find_slides(client, container_id="SLIDE-D")
    for k, channel in enumerate(slide.find_segments()):
        np.testing.assert_array_equal(_full(slide, channel)[..., 0], written.odd_bits[..., k])


def test_filters_over_dicomweb(client: Any) -> None:
    everything = dicomslide_sync.find_slides(client)
    assert sorted(s.container_id for s in everything) == ALL_SLIDES
    stain = hd.sr.CodedConcept(STAIN_B[0][0], STAIN_B[0][1], "any meaning")
    assert [
        s.container_id for s in dicomslide_sync.find_slides(client, specimen_stains=[stain])
    ] == ["SLIDE-B"]
    c = next(s for s in everything if s.container_id == "SLIDE-C")
    second = c.get_channel_identifier(1)
    found = dicomslide_sync.find_slides(client, optical_path_ids=[second])
    assert [s.container_id for s in found] == ["SLIDE-C"]
    assert dicomslide_sync.find_slides(client, container_id="nope") == []


def test_annotation_over_dicomweb(server: tuple[OrthancServer, Written], client: Any) -> None:
    _, written = server
    (slide,) = dicomslide_sync.find_slides(client, container_id="SLIDE-A")
    xyz = slide.map_pixel_indices_to_slide_coordinates(np.array([[10.0, 20.0], [60.0, 90.0]]), 0)
    xyz[:, 2] = 0.0
    ann = hd.sr.Scoord3DContentItem(
        name=codes.DCM.ImageRegion,
        graphic_type="POLYLINE",
        graphic_data=xyz,
        frame_of_reference_uid=slide.frame_of_reference_uid,
    )
    region = slide.get_slide_region_for_annotation(ann, 0)
    direct = slide.get_image_region((11, 21), 0, (50, 70))
    np.testing.assert_array_equal(region, np.asarray(direct)[::-1, ::-1].transpose(1, 0, 2))
    channel = _channels_of(slide, written.seg_series["binary"])[0]
    mask = slide.get_slide_region_for_annotation(ann, 0, channel_index=channel)
    np.testing.assert_array_equal(mask[..., 0], written.binary[11:61, 21:91, 0][::-1, ::-1].T)


def test_container_pushdown_over_dicomweb(server: tuple[OrthancServer, Written]) -> None:
    orthanc, _ = server

    async def count() -> tuple[int, int]:
        async with dicomslide.DICOMwebClient(orthanc.dicomweb_url) as web:
            calls: list[str] = []
            original = web.retrieve_series_metadata

            async def counted(study: str, series: str) -> Any:
                calls.append(series)
                return await original(study, series)

            web.retrieve_series_metadata = counted  # type: ignore[method-assign,assignment]
            await dicomslide.find_slides(web)
            everything = len(calls)
            calls.clear()
            (b,) = await dicomslide.find_slides(web, container_id="SLIDE-B")
            assert b.container_id == "SLIDE-B"
            return everything, len(calls)

    everything, one = asyncio.run(count())
    assert one == 1 < everything

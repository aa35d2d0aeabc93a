"""Label Map Segmentations over DICOMweb (Orthanc), through the blocking facade.

The files are those of :mod:`tests.aio.test_labelmap` (written by highdicom), stored in a real
Orthanc with its DICOMweb plugin; what is read is compared with highdicom's reading of the
same files.
"""

from __future__ import annotations

import pickle
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest

import dicomslide_sync
from tests.aio.test_labelmap import (
    CONTAINER,
    CONTAINER_NO_PADDING,
    SIZE,
    TILE,
    Written,
    oracle_labels,
    oracle_mask,
    segment_channels,
    write_label_maps,
)
from tests.support.orthanc import OrthancServer
from tests.support.slides import served_folder

pytestmark = pytest.mark.integration


server = served_folder(write_label_maps, "labelmaps")


def test_orthanc_stores_and_serves_label_maps(server: tuple[OrthancServer, Written]) -> None:
    orthanc, written = server
    with httpx.Client(base_url=orthanc.dicomweb_url, timeout=60) as http:
        for item in written.files.values():
            ds = pydicom.dcmread(item.path, stop_before_pixels=True)
            path = (
                f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                f"/instances/{ds.SOPInstanceUID}"
            )
            (meta,) = http.get(f"{path}/metadata").json()
            assert meta["00080016"]["Value"] == ["1.2.840.10008.5.1.4.1.1.66.7"]
            assert meta["00280004"]["Value"] == [ds.PhotometricInterpretation]
            frame = http.get(
                f"{path}/frames/1",
                headers={
                    "Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"
                },
            )
            assert frame.status_code == 200


def test_label_maps_over_dicomweb(server: tuple[OrthancServer, Written], client: Any) -> None:
    _, written = server
    (slide,) = dicomslide_sync.find_slides(client, container_id=CONTAINER)
    assert slide.num_channels == 1 + 11
    checked = 0
    for item in written.files.values():
        channels = segment_channels(slide, item)
        assert sorted(channels) == list(item.numbers)
        rows, cols = slide.total_pixel_matrix_dimensions[item.level]
        for number, channel in channels.items():
            mask = slide.get_image_region((0, 0), item.level, (rows, cols), channel_index=channel)
            assert mask.dtype == np.uint8
            np.testing.assert_array_equal(mask[..., 0], oracle_mask(item, number))
            checked += 1
        labels = slide.get_label_map_region((0, 0), item.level, (rows, cols), channel)
        np.testing.assert_array_equal(labels[..., 0], oracle_labels(item))
        image = next(im for im in slide.get_volume_images(channel) if im.size == (rows, cols))
        assert image.is_label_map
        matrix = image.get_label_map()
        np.testing.assert_array_equal(matrix[10:200, 300:], item.labels[10:200, 300:, None])
        # Pickles (for process pools) as the label map, not as a segment's mask.
        copy = pickle.loads(pickle.dumps(matrix))
        np.testing.assert_array_equal(copy[:, :40], item.labels[:, :40, None])
    assert checked == 13  # 11 segments, the two-level series read at both levels


def test_whole_server_search_and_no_padding(
    server: tuple[OrthancServer, Written], client: Any
) -> None:
    _, written = server
    slides = {s.container_id: s for s in dicomslide_sync.find_slides(client)}
    # Bulk annotations, a Secondary Capture label, a VL Microscopic Image and a confocal tiled
    # image of slide A are on the server too (see tests.aio.test_labelmap): left aside.
    assert len(written.others) == 4
    assert sorted(slides) == [CONTAINER, CONTAINER_NO_PADDING]
    assert len(slides[CONTAINER].find_segments()) == 11
    assert {str(ds.SOPClassUID) for ds in slides[CONTAINER].image_metadata} == {
        "1.2.840.10008.5.1.4.1.1.77.1.6",
        "1.2.840.10008.5.1.4.1.1.66.7",
    }
    item = written.no_padding
    assert item is not None
    slide = slides[CONTAINER_NO_PADDING]
    channels = segment_channels(slide, item)
    assert sorted(channels) == [0, 1, 2]
    zero = slide.get_image_region((0, 0), 0, SIZE, channel_index=channels[0])[..., 0]
    # The top-left 2 x 2 tiles have no frame: no segment there, not even number 0.
    assert not zero[: 2 * TILE, : 2 * TILE].any()
    np.testing.assert_array_equal(zero[2 * TILE :], item.labels[2 * TILE :] == 0)


def test_segments_share_frames_over_dicomweb(server: tuple[OrthancServer, Written]) -> None:
    orthanc, written = server
    item = written.files["sparse_palette"]
    frames = int(pydicom.dcmread(item.path, stop_before_pixels=True).NumberOfFrames)
    with dicomslide_sync.DICOMwebClient(orthanc.dicomweb_url) as web:
        (slide,) = dicomslide_sync.find_slides(web, container_id=CONTAINER)
        channels = segment_channels(slide, item)
        before = slide.cache_stats.frames_fetched
        for channel in channels.values():
            slide.get_image_region((0, 0), 0, SIZE, channel_index=channel)
        slide.get_label_map_region((0, 0), 0, SIZE, channels[1])
        # Three masks and the label map of a sparse label map: each stored frame once.
        assert slide.cache_stats.frames_fetched - before == frames < 15


def test_dask_array_of_a_segment_over_dicomweb(
    server: tuple[OrthancServer, Written], client: Any
) -> None:
    pytest.importorskip("dask.array")
    from dicomslide_sync.dask_array import to_dask

    _, written = server
    (slide,) = dicomslide_sync.find_slides(client, container_id=CONTAINER)
    item = written.files["sparse_palette"]
    channel = segment_channels(slide, item)[2]
    array = to_dask(slide, 0, channel_index=channel)
    assert array.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(array.compute())[..., 0], item.labels == 2)

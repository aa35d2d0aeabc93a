"""dicomslide's own DICOMweb client against a private Orthanc: pixels, request counts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

import dicomslide
import dicomslide_sync
from tests.support.orthanc import OrthancServer
from tests.support.slides import slide_spec, write_slides
from tests.support.system import require as _require
from tests.support.thirdparty import Compression, find_dicomizer, make_dicomizer_slide

pytestmark = pytest.mark.integration

VARIANTS = {
    "jpeg_full": slide_spec((700, 1000), 128, 3, seed=21),
    "rle_sparse_shuffled": slide_spec(
        (700, 1000),
        128,
        2,
        transfer_syntax_uid="1.2.840.10008.1.2.5",
        dimension_organization="TILED_SPARSE",
        shuffle_frames=True,
        sparse_missing_tiles=((2, 3),),
        seed=22,
    ),
    "native_concatenated": slide_spec(
        (700, 1000),
        128,
        2,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        concatenation_parts=3,
        seed=23,
    ),
    "j2k_multi_z_fluorescence": slide_spec(
        (300, 400),
        128,
        2,
        transfer_syntax_uid="1.2.840.10008.1.2.4.90",
        photometric="MONOCHROME2",
        bits=16,
        optical_paths=2,
        focal_planes=2,
        icc_profile=False,
        seed=24,
    ),
}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, shared_orthanc: OrthancServer
) -> tuple[OrthancServer, Path]:
    root = tmp_path_factory.mktemp("web-variants")
    write_slides(root, VARIANTS)
    shared_orthanc.upload([root])
    return shared_orthanc, root


def _local(folder: Path, index_dir: Path) -> tuple[dicomslide_sync.Slide, str]:
    """The one slide of a local folder, and its Study Instance UID to find it on the server."""
    slides = dicomslide_sync.find_slides(
        dicomslide_sync.DICOMfileClient(folder, index_dir=index_dir)
    )
    assert len(slides) == 1
    return slides[0], str(slides[0].image_metadata[0].StudyInstanceUID)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_level_channel_plane_equals_local(
    name: str,
    server: tuple[OrthancServer, Path],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    orthanc, root = server
    local, study = _local(root / name, tmp_path)
    client = dicomslide_sync.DICOMwebClient(orthanc.dicomweb_url)
    request.addfinalizer(client.close)
    slides = dicomslide_sync.find_slides(client, study_instance_uid=study)
    assert len(slides) == 1
    remote = slides[0]
    assert remote.total_pixel_matrix_dimensions == local.total_pixel_matrix_dimensions
    assert remote.num_channels == local.num_channels
    assert remote.num_focal_planes == local.num_focal_planes
    assert len(remote.label_images) == len(local.label_images)
    for level in range(local.num_levels):
        rows, cols = local.total_pixel_matrix_dimensions[level]
        for c in range(local.num_channels):
            for z in range(local.num_focal_planes):
                np.testing.assert_array_equal(
                    remote.get_image_region((0, 0), level, (rows, cols), c, z),
                    local.get_image_region((0, 0), level, (rows, cols), c, z),
                )


def test_concurrent_reads_cost_one_request_per_instance(
    server: tuple[OrthancServer, Path], tmp_path: Path
) -> None:
    orthanc, root = server
    _, study = _local(root / "jpeg_full", tmp_path)

    async def main() -> tuple[int, int, list[np.ndarray]]:
        # 64 reads nearly covering the 48-tile level look like a dense run: read-ahead
        # would add the one frame they miss (tested elsewhere); this test counts merging.
        client = dicomslide.DICOMwebClient(orthanc.dicomweb_url, readahead=0)
        slide = (await dicomslide.find_slides(client, study_instance_uid=study))[0]
        opened = client.requests_sent
        rng = np.random.default_rng(0)
        offsets = [(int(rng.integers(0, 600)), int(rng.integers(0, 900))) for _ in range(64)]
        regions = await asyncio.gather(
            *(slide.get_image_region(o, 0, (100, 100)) for o in offsets)
        )
        frames_requests = client.requests_sent - opened
        stats = slide.cache_stats
        await client.aclose()
        assert stats.frames_fetched == stats.misses - stats.joined + stats.readahead
        return opened, frames_requests, regions

    opened, frames_requests, regions = asyncio.run(main())
    # find_slides: series searches (SM, SEG, OT) + one metadata request per series
    assert opened <= 5
    # 64 overlapping reads of one level-0 instance: one multipart request (plus the ICC)
    assert frames_requests <= 2
    assert all(r.shape == (100, 100, 3) for r in regions)


def test_blocking_tile_scan_from_threads_is_read_ahead(
    server: tuple[OrthancServer, Path], tmp_path: Path
) -> None:
    # The data-loader pattern on the blocking facade: 16 threads, one call per tile, tiles in
    # frame order. Read-ahead turns the stream into a few requests; pixels equal local reads.
    from concurrent.futures import ThreadPoolExecutor

    orthanc, root = server
    local, study = _local(root / "jpeg_full", tmp_path)
    rows, cols = local.total_pixel_matrix_dimensions[0]
    tile = 128
    offsets = [(r, c) for r in range(0, rows, tile) for c in range(0, cols, tile)]

    def scan(readahead: int) -> tuple[int, int]:
        client = dicomslide_sync.DICOMwebClient(orthanc.dicomweb_url, readahead=readahead)
        (remote,) = dicomslide_sync.find_slides(client, study_instance_uid=study)

        def one(offset: tuple[int, int]) -> None:
            size = (min(tile, rows - offset[0]), min(tile, cols - offset[1]))
            np.testing.assert_array_equal(
                remote.get_image_region(offset, 0, size), local.get_image_region(offset, 0, size)
            )

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(one, offsets))
        stats = remote.cache_stats
        assert stats.frames_fetched == len(offsets)  # each frame once, none beyond the level
        return stats.requests, stats.readahead

    requests, read_ahead = scan(256)
    requests_without, read_ahead_without = scan(0)
    assert read_ahead > 0
    assert read_ahead_without == 0
    assert requests < requests_without


@pytest.mark.parametrize(
    ("compression", "max_size_mb"), [("jpeg", 1), ("jpeg2000", 0), ("none", 1)]
)
def test_dicomizer_slides_over_our_client_equal_local(
    compression: Compression,
    max_size_mb: int,
    server: tuple[OrthancServer, Path],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    _require(find_dicomizer(), "OrthancWSIDicomizer")
    orthanc, _ = server
    cache = getattr(request.config, "cache", None)
    cache_root = Path(cache.mkdir("dicomizer")) if cache else tmp_path / "dicomizer"
    files = make_dicomizer_slide(cache_root, compression=compression, max_size_mb=max_size_mb)
    orthanc.upload(files)
    local, study = _local(files[0].parent, tmp_path)
    client = dicomslide_sync.DICOMwebClient(orthanc.dicomweb_url)
    request.addfinalizer(client.close)
    remote = dicomslide_sync.find_slides(client, study_instance_uid=study)[0]
    for level in range(local.num_levels):
        rows, cols = local.total_pixel_matrix_dimensions[level]
        np.testing.assert_array_equal(
            remote.get_image_region((0, 0), level, (rows, cols)),
            local.get_image_region((0, 0), level, (rows, cols)),
        )


def test_unknown_study_gives_no_slides_and_bad_path_a_typed_error(
    server: tuple[OrthancServer, Path], request: pytest.FixtureRequest
) -> None:
    orthanc, _ = server
    client = dicomslide_sync.DICOMwebClient(orthanc.dicomweb_url)
    request.addfinalizer(client.close)
    assert dicomslide_sync.find_slides(client, study_instance_uid="1.2.3.4.5") == []
    with pytest.raises(dicomslide.NotFoundError):
        client.retrieve_series_metadata("1.2.3", "4.5.6")
    bad = dicomslide_sync.DICOMwebClient(orthanc.base_url + "/no-such-root")
    request.addfinalizer(bad.close)
    with pytest.raises(dicomslide.DicomWebError) as info:
        bad.search_for_studies()
    assert info.value.status_code == 404
    assert "/no-such-root/studies" in info.value.url

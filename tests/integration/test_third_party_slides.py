"""Real third-party slides (OrthancWSIDicomizer) read by dicomslide and by independent readers.

Oracles: wsidicom (reads the dicomizer's JPEG, JPEG 2000 and uncompressed output once Image
Type is present) and OpenSlide 4 (reads its JPEG output after the metadata fix-up in
:func:`tests.support.thirdparty.make_openslide_compatible`). The same slides, plus the
synthetic variants of :mod:`tests.integration.test_dicomweb_orthanc`, are uploaded to an
Orthanc and read through ``dicomweb_client.DICOMwebClient``: pixels must equal the local read.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import dicomslide_sync
from dicomslide.synthetic import write_slide
from tests.integration.test_dicomweb_orthanc import VARIANTS
from tests.support.orthanc import OrthancServer
from tests.support.system import require as _require
from tests.support.thirdparty import (
    DICOMIZER_SAMPLE_DATASET,
    Compression,
    find_dicomizer,
    make_dicomizer_slide,
    make_openslide_compatible,
)

pytestmark = pytest.mark.integration

CASES: list[tuple[Compression, int]] = [
    ("jpeg", 0),
    ("jpeg", 1),
    ("jpeg2000", 0),
    ("jpeg2000", 1),
    ("none", 0),
    ("none", 1),
]


@pytest.fixture(scope="module")
def cache_root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require(find_dicomizer(), "OrthancWSIDicomizer (Debian package orthanc-wsi)")
    cache = getattr(request.config, "cache", None)
    return Path(cache.mkdir("dicomizer")) if cache else tmp_path_factory.mktemp("dicomizer")


def _slide(folder: Path, index_dir: Path) -> dicomslide_sync.Slide:
    client = dicomslide_sync.DICOMfileClient(folder, index_dir=index_dir)
    slides = dicomslide_sync.find_slides(client)
    assert len(slides) == 1, [s.container_id for s in slides]
    return slides[0]


def _whole_level(slide: dicomslide_sync.Slide, level: int) -> np.ndarray:
    rows, cols = slide.total_pixel_matrix_dimensions[level]
    return slide.get_image_region((0, 0), level, (rows, cols))


@pytest.mark.parametrize(("compression", "max_size_mb"), CASES)
def test_dicomizer_output_matches_wsidicom(
    compression: Compression, max_size_mb: int, cache_root: Path, tmp_path: Path
) -> None:
    wsidicom = pytest.importorskip("wsidicom")
    bare = make_dicomizer_slide(cache_root, compression=compression, max_size_mb=max_size_mb)
    typed = make_dicomizer_slide(
        cache_root,
        compression=compression,
        max_size_mb=max_size_mb,
        dataset=DICOMIZER_SAMPLE_DATASET,
    )
    ours_bare = _slide(bare[0].parent, tmp_path / "a")
    ours = _slide(typed[0].parent, tmp_path / "b")
    assert ours_bare.total_pixel_matrix_dimensions == ours.total_pixel_matrix_dimensions
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle = wsidicom.WsiDicom.open(typed[0].parent)
    try:
        assert len(oracle.levels) == ours.num_levels
        for level in range(ours.num_levels):
            rows, cols = ours.total_pixel_matrix_dimensions[level]
            assert (oracle.levels[level].size.width, oracle.levels[level].size.height) == (
                cols,
                rows,
            )
            mine = _whole_level(ours, level)
            np.testing.assert_array_equal(mine, _whole_level(ours_bare, level))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                theirs = np.asarray(oracle.read_region((0, 0), level, (cols, rows)).convert("RGB"))
            diff = np.abs(mine.astype(np.int16) - theirs.astype(np.int16))
            if compression == "jpeg":
                # both decode with libjpeg-turbo, but chroma upsampling may differ by a step
                assert diff.max() <= 2, (level, diff.max())
                assert diff.mean() < 0.5
            else:
                assert diff.max() == 0, (level, diff.max())
    finally:
        oracle.close()


@pytest.mark.parametrize("max_size_mb", [0, 1])
def test_dicomizer_jpeg_matches_openslide(
    max_size_mb: int, cache_root: Path, tmp_path: Path
) -> None:
    openslide = pytest.importorskip("openslide")
    typed = make_dicomizer_slide(
        cache_root, compression="jpeg", max_size_mb=max_size_mb, dataset=DICOMIZER_SAMPLE_DATASET
    )
    fixed = make_openslide_compatible(typed, tmp_path / "openslide")
    ours = _slide(typed[0].parent, tmp_path / "idx")
    oracle = openslide.OpenSlide(str(fixed[0]))
    try:
        assert oracle.level_count == ours.num_levels
        for level in range(ours.num_levels):
            rows, cols = ours.total_pixel_matrix_dimensions[level]
            assert oracle.level_dimensions[level] == (cols, rows)
            theirs = np.asarray(oracle.read_region((0, 0), level, (cols, rows)).convert("RGB"))
            mine = _whole_level(ours, level)
            diff = np.abs(mine.astype(np.int16) - theirs.astype(np.int16))
            assert diff.max() <= 2, (level, diff.max())
            assert diff.mean() < 0.5
    finally:
        oracle.close()


@pytest.fixture(scope="module")
def orthanc(cache_root: Path, shared_orthanc: OrthancServer) -> OrthancServer:
    # Every test here finds its slide by Study Instance UID, so the shared server will do.
    return shared_orthanc


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_pixels_over_dicomweb_equal_local_synthetic(
    name: str, orthanc: OrthancServer, tmp_path: Path
) -> None:
    import dicomweb_client

    spec = VARIANTS[name]
    folder = tmp_path / name
    write_slide(folder, spec)
    orthanc.upload([folder])
    local = _slide(folder, tmp_path / "idx")
    web_client = dicomweb_client.DICOMwebClient(url=orthanc.dicomweb_url)
    web = dicomslide_sync.find_slides(
        web_client, study_instance_uid=local.image_metadata[0].StudyInstanceUID
    )
    assert len(web) == 1
    remote = web[0]
    assert remote.total_pixel_matrix_dimensions == local.total_pixel_matrix_dimensions
    assert remote.num_focal_planes == local.num_focal_planes
    for level in range(local.num_levels):
        for z in range(local.num_focal_planes):
            rows, cols = local.total_pixel_matrix_dimensions[level]
            np.testing.assert_array_equal(
                remote.get_image_region((0, 0), level, (rows, cols), 0, z),
                local.get_image_region((0, 0), level, (rows, cols), 0, z),
            )
    # the whole level arrived in one request per instance
    assert remote.cache_stats.frames_per_request > 1


@pytest.mark.parametrize(("compression", "max_size_mb"), CASES)
def test_pixels_over_dicomweb_equal_local_dicomizer(
    compression: Compression,
    max_size_mb: int,
    orthanc: OrthancServer,
    cache_root: Path,
    tmp_path: Path,
) -> None:
    import dicomweb_client

    files = make_dicomizer_slide(cache_root, compression=compression, max_size_mb=max_size_mb)
    orthanc.upload(files)
    local = _slide(files[0].parent, tmp_path / "idx")
    web_client = dicomweb_client.DICOMwebClient(url=orthanc.dicomweb_url)
    study = local.image_metadata[0].StudyInstanceUID
    remote = dicomslide_sync.find_slides(web_client, study_instance_uid=study)[0]
    for level in range(local.num_levels):
        np.testing.assert_array_equal(_whole_level(remote, level), _whole_level(local, level))

"""The OpenSlide interface over DICOMweb (Orthanc) equals OpenSlide 4 reading the same files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomslide.synthetic import write_slide
from dicomslide_sync.openslide import open_slide
from tests.support.orthanc import OrthancServer
from tests.support.slides import slide_spec

openslide = pytest.importorskip("openslide")
pytestmark = pytest.mark.integration

SPEC = slide_spec((900, 1300), 256, 3, thumbnail=True, seed=31)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, shared_orthanc: OrthancServer
) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp("osweb")
    files = write_slide(folder, SPEC)
    server = shared_orthanc
    server.upload(files)
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    url = f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    return url, files[0]


def test_openslide_api_over_dicomweb_matches_openslide(served: tuple[str, Path]) -> None:
    url, first_file = served
    reference = openslide.OpenSlide(str(first_file))
    ours = open_slide(url, correct_color=False)
    try:
        assert ours.level_count == reference.level_count
        assert ours.level_dimensions == reference.level_dimensions
        assert ours.level_downsamples == reference.level_downsamples
        rng = np.random.default_rng(5)
        w0, h0 = reference.dimensions
        for _ in range(25):
            level = int(rng.integers(0, reference.level_count))
            location = (int(rng.integers(-100, w0)), int(rng.integers(-100, h0)))
            size = (int(rng.integers(1, 300)), int(rng.integers(1, 300)))
            np.testing.assert_array_equal(
                np.asarray(ours.read_region(location, level, size)),
                np.asarray(reference.read_region(location, level, size)),
                err_msg=f"{location} {level} {size}",
            )
        np.testing.assert_array_equal(
            np.asarray(ours.get_thumbnail((200, 200))),
            np.asarray(reference.get_thumbnail((200, 200))),
        )
        assert (
            ours.properties["openslide.quickhash-1"]
            == reference.properties["openslide.quickhash-1"]
        )
        for key, image in reference.associated_images.items():
            np.testing.assert_array_equal(
                np.asarray(ours.associated_images[key]), np.asarray(image)
            )
    finally:
        ours.close()
        reference.close()

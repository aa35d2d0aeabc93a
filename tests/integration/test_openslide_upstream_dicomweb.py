"""openslide-python's generic slide and Deep Zoom test methods with our class over DICOMweb.

The same methods and slides as ``tests/sync/test_openslide_upstream.py`` (openslide-python's
sdist, LGPL-2.1-only, obtained at test time; see :mod:`tests.support.openslide_upstream`), but
our class reads each slide from a private Orthanc server (DICOMweb) while real OpenSlide reads
the same files from disk: the values recorded must still be OpenSlide's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.support.openslide_upstream import (
    check_and_report,
    compare_with_openslide,
    load_upstream,
    make_our_opener,
    slide_files,
)
from tests.support.orthanc import OrthancServer, require_dicomweb_orthanc

pytest.importorskip("openslide")
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Any, list[tuple[str, str, str]], dict[str, tuple[Path, str]]]:
    modules, methods, fixtures = load_upstream(request, tmp_path_factory)
    require_dicomweb_orthanc()
    targets = slide_files(fixtures, tmp_path_factory.mktemp("upstream-web"))
    # Looked up only now: the upstream tests may have skipped above without a server.
    server: OrthancServer = request.getfixturevalue("shared_orthanc")
    urls = {}
    for name, target in targets.items():
        server.upload(sorted(target.parent.glob("*.dcm")))
        ds = pydicom.dcmread(target, stop_before_pixels=True)
        urls[name] = (
            target,
            f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}",
        )
    return modules, methods, urls


@pytest.mark.parametrize("slide", ["boxes", "synthetic"])
def test_upstream_methods_over_dicomweb(
    slide: str,
    served: tuple[Any, list[tuple[str, str, str]], dict[str, tuple[Path, str]]],
    request: pytest.FixtureRequest,
) -> None:
    modules, methods, urls = served
    target, url = urls[slide]
    opener = make_our_opener(str(target), url)
    summary = compare_with_openslide(modules, methods, target, opener)
    check_and_report(request, f"DICOMweb {slide}", summary)

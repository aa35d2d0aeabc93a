"""openslide-python's own generic slide and Deep Zoom test methods, run with our class.

Source of the methods and of the ``boxes_0.dcm``/``boxes_1.dcm`` fixture: the sdist of the
installed openslide-python (LGPL-2.1-only), obtained at test time from ``$
DICOMSLIDE_OPENSLIDE_PYTHON_SRC`` or PyPI (see :mod:`tests.support.openslide_upstream`); the
module is skipped with the reason when neither works. Nothing of it is committed.

Each method runs on a DICOM slide four ways: strictly (as written) and recording (the values
it asserts on) with real ``openslide.OpenSlide``, and the same with our class. Expectations
come from OpenSlide on the same file: our record must equal OpenSlide's for every method but
the deliberate differences listed in :data:`KNOWN_DIFFERENCES` (README table), and we must
pass strictly every method OpenSlide passes strictly but those. The counts are printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.openslide_upstream import (
    check_and_report,
    compare_with_openslide,
    load_upstream,
    make_our_opener,
    slide_files,
)

pytest.importorskip("openslide")


@pytest.fixture(scope="module")
def upstream(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], list[tuple[str, str, str]], Path]:
    return load_upstream(request, tmp_path_factory)


@pytest.mark.parametrize("slide", ["boxes", "synthetic"])
def test_upstream_methods_on_a_local_file(
    slide: str,
    upstream: tuple[dict[str, Any], list[tuple[str, str, str]], Path],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    modules, methods, fixtures = upstream
    target = slide_files(fixtures, tmp_path)[slide]
    summary = compare_with_openslide(modules, methods, target, make_our_opener(str(target)))
    check_and_report(request, f"local {slide}", summary)


def _property_differences(reference_file: Path, folder: Path) -> dict[str, Any]:
    import openslide

    from dicomslide_sync.openslide import open_slide

    reference = openslide.OpenSlide(str(reference_file))
    expected = dict(reference.properties)
    reference.close()
    with open_slide(folder, correct_color=False) as ours:
        got = dict(ours.properties)
    return {
        k: (expected.get(k), got.get(k))
        for k in sorted({*expected, *got})
        if expected.get(k) != got.get(k)
    }


def test_every_property_of_openslides_dicom_fixture(
    upstream: tuple[dict[str, Any], list[tuple[str, str, str]], Path], tmp_path: Path
) -> None:
    target = slide_files(upstream[2], tmp_path)["boxes"]
    differences = _property_differences(target, target.parent)
    # Only the two properties we define in addition (README): every dicom.* key and value,
    # and every other openslide.* property, are OpenSlide's.
    assert sorted(differences) == ["openslide.background-color", "openslide.comment"]
    assert differences["openslide.background-color"] == (None, "FFFFFF")


@pytest.mark.parametrize("max_size_mb", [0, 1])
def test_every_property_of_dicomizer_output(max_size_mb: int, tmp_path: Path) -> None:
    from tests.support.system import require
    from tests.support.thirdparty import (
        DICOMIZER_SAMPLE_DATASET,
        find_dicomizer,
        make_dicomizer_slide,
        make_openslide_compatible,
    )

    require(find_dicomizer(), "OrthancWSIDicomizer (Debian package orthanc-wsi)")
    typed = make_dicomizer_slide(
        tmp_path / "cache",
        compression="jpeg",
        max_size_mb=max_size_mb,
        dataset=DICOMIZER_SAMPLE_DATASET,
        levels=3,
    )
    fixed = make_openslide_compatible(typed, tmp_path / "openslide")
    differences = _property_differences(fixed[0], fixed[0].parent)
    assert differences == {"openslide.background-color": (None, "FFFFFF")}

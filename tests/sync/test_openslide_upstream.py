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

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import dicomslide_sync
from dicomslide.synthetic import write_slide
from tests.support.openslide_upstream import (
    SYNTHETIC,
    check_and_report,
    compare_with_openslide,
    load_multiserver_example,
    load_upstream,
    make_our_opener,
    slide_files,
)

openslide = pytest.importorskip("openslide")


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


@pytest.mark.integration  # needs the OrthancWSIDicomizer system package
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


def _serve(module: Any, slide_class: Any, slides: Path, color_mode: str) -> dict[str, Any]:
    """Index page, .dzi and a few tiles from the example server with ``slide_class``."""
    module.OpenSlide = slide_class
    module.OpenSlideCache = (
        openslide.OpenSlideCache
        if slide_class is openslide.OpenSlide
        else dicomslide_sync.OpenSlideCache
    )
    app = module.create_app(
        {"SLIDE_DIR": str(slides), "DEEPZOOM_COLOR_MODE": color_mode, "SLIDE_TILE_CACHE_MB": 4}
    )
    client = app.test_client()
    answers: dict[str, Any] = {"/": client.get("/").get_data(as_text=True)}
    first = sorted(slides.rglob("*.dcm"))[0].relative_to(slides).as_posix()
    answers["dzi"] = client.get(f"/{first}.dzi").get_data(as_text=True)
    answers["page"] = client.get(f"/{first}").status_code
    answers["missing"] = client.get("/nothing-here.dcm").status_code
    for level, col, row in [(11, 0, 0), (11, 4, 2), (9, 1, 0), (3, 0, 0)]:
        response = client.get(f"/{first}_files/{level}/{col}_{row}.png")
        assert response.status_code == 200, (level, col, row)
        image = Image.open(io.BytesIO(response.get_data()))
        answers[f"tile {level} {col} {row}"] = (
            np.asarray(image.convert("RGBA")),
            image.info.get("icc_profile"),
        )
    return answers


def test_multiserver_example_runs_with_our_class(
    upstream: tuple[dict[str, Any], list[tuple[str, str, str]], Path], tmp_path: Path
) -> None:
    pytest.importorskip("flask")
    module = load_multiserver_example(upstream[2].parent)
    slides = tmp_path / "slides"
    write_slide(slides / "case", SYNTHETIC)
    (slides / "notes.txt").write_text("not a slide")

    class ExactOpenSlide(dicomslide_sync.OpenSlide):
        def __init__(self, filename: Any) -> None:
            super().__init__(filename, correct_color=False)

    reference = _serve(module, openslide.OpenSlide, slides, "embed")
    exact = _serve(module, ExactOpenSlide, slides, "embed")
    default = _serve(module, dicomslide_sync.OpenSlide, slides, "default")
    # The listing comes from detect_format: every DICOM file, as with OpenSlide.
    assert exact["/"] == reference["/"] == default["/"]
    names = [p.name for p in slides.rglob("*.dcm")]
    assert len(names) == 6
    assert all(name in reference["/"] for name in names)
    assert "notes.txt" not in reference["/"]
    assert exact["dzi"] == reference["dzi"] == default["dzi"]
    assert exact["page"] == reference["page"] == 200
    assert exact["missing"] == reference["missing"] == 404
    tiles = [k for k in reference if k.startswith("tile")]
    for key in tiles:
        np.testing.assert_array_equal(exact[key][0], reference[key][0], err_msg=key)
        assert exact[key][1] == reference[key][1], key
        # Our default: colour converted to sRGB by us instead of by the server.
        diff = np.abs(default[key][0].astype(int) - reference[key][0].astype(int))
        assert diff.max() <= 2, (key, diff.max())

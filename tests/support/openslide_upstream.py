# ruff: noqa: PT009, PT027 - this module drives unittest.TestCase assertions on purpose
"""Run openslide-python's own slide and Deep Zoom test methods with our class in its place.

openslide-python (LGPL-2.1-only, https://github.com/openslide/openslide-python) ships its
unittest suite in its source distribution: ``tests/test_openslide.py`` (the generic slide
methods of ``TestSlide``, ``TestDicomSlide``, ``TestAperioSlide``, ``TestSlideWithoutOpening``
and ``TestCache``) and ``tests/test_deepzoom.py`` (``BoxesDeepZoomTest``), plus fixtures, among
them OpenSlide's own DICOM slide ``boxes_0.dcm``/``boxes_1.dcm`` (a 16 x 16 crop of CMU-1
converted by PixelMed). Nothing of it is committed here: :func:`find_upstream_tests` takes it
from the folder named by ``DICOMSLIDE_OPENSLIDE_PYTHON_SRC`` (an unpacked sdist) or downloads
the sdist of the installed version from PyPI with ``pip download`` into a cache folder.

How a method is run (:func:`run_method`): the test class is subclassed so that every file it
opens, whatever its name (their methods name ``boxes.tiff``), is the DICOM slide under test,
opened either by ``openslide.OpenSlide`` (the oracle) or by a stand-in for it built on
``dicomslide_sync.OpenSlide`` (local file, or the same file's series over DICOMweb).

* ``strict`` runs are the methods as written: pass or fail on their own hard-coded values,
  which describe their TIFF/SVS fixtures, so on another file some fail for OpenSlide too.
* recording runs take the expected values from OpenSlide instead: every value the method
  hands to an assertion (images reduced to mode, size and a digest of their pixels, profiles
  to their bytes) and the outcome of every ``assertRaises`` is recorded instead of checked;
  our class passes when its record equals OpenSlide's on the same file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import types
import unittest
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

import dicomslide_sync
from dicomslide.synthetic import write_slide
from tests.support.slides import slide_spec

ENV_SOURCE = "DICOMSLIDE_OPENSLIDE_PYTHON_SRC"

#: (module, class) of the generic test classes whose ``test_*`` methods are run.
GENERIC_CLASSES: tuple[tuple[str, str], ...] = (
    ("test_openslide", "TestCache"),
    ("test_openslide", "TestSlideWithoutOpening"),
    ("test_openslide", "TestSlide"),
    ("test_openslide", "TestAperioSlide"),
    ("test_openslide", "TestDicomSlide"),
    ("test_deepzoom", "TestSlideDeepZoom"),
)
#: Methods of those classes about one file format rather than the slide API: they need
#: OpenSlide's TIFF/SVS fixtures (detect_format, unicode paths, opening failures).
FORMAT_SPECIFIC = frozenset(
    {"test_detect_format", "test_open", "test_unicode_path", "test_unicode_path_bytes"}
)


def _openslide() -> Any:
    # Imported on use: the test modules skip before anything here needs it.
    import openslide

    return openslide


def find_upstream_tests(cache_dir: Path) -> Path:
    """Folder ``tests`` of openslide-python's sdist for the installed version.

    Raises
    ------
    LookupError
        With the reason, when neither the environment variable nor PyPI provides it
    """
    configured = os.environ.get(ENV_SOURCE)
    if configured:
        tests = Path(configured) / "tests"
        if not (tests / "test_openslide.py").is_file():
            raise LookupError(f"{ENV_SOURCE}={configured} has no tests/test_openslide.py")
        return tests
    version = _openslide().__version__
    unpacked = cache_dir / f"openslide_python-{version}"
    if not (unpacked / "tests" / "test_openslide.py").is_file():
        archive = cache_dir / f"openslide_python-{version}.tar.gz"
        if not archive.is_file():
            command = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"openslide-python=={version}",
                "-d",
                str(cache_dir),
            ]
            try:
                subprocess.run(command, check=True, capture_output=True, timeout=300)
            except (subprocess.SubprocessError, OSError) as exc:
                detail = getattr(exc, "stderr", b"") or b""
                raise LookupError(
                    f"could not download the openslide-python {version} sdist from PyPI "
                    f"({exc}; {detail.decode(errors='replace')[-300:]}); set {ENV_SOURCE}"
                ) from exc
        if not archive.is_file():
            raise LookupError(f"pip download left no {archive.name} in {cache_dir}")
        with tarfile.open(archive) as tar:
            tar.extractall(cache_dir, filter="data")
    return unpacked / "tests"


def load_modules(tests_dir: Path) -> dict[str, types.ModuleType]:
    """Import their test modules under private names (their ``common`` helper included)."""
    saved = sys.modules.get("common")
    modules: dict[str, types.ModuleType] = {}
    try:
        for name in ("common", "test_openslide", "test_deepzoom"):
            spec = importlib.util.spec_from_file_location(
                f"_openslide_upstream_{name}", tests_dir / f"{name}.py"
            )
            assert spec is not None
            assert spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            if name == "common":
                sys.modules["common"] = module  # what their modules import
            spec.loader.exec_module(module)
            modules[name] = module
    finally:
        if saved is None:
            sys.modules.pop("common", None)
        else:
            sys.modules["common"] = saved
    return modules


def generic_methods(modules: dict[str, types.ModuleType]) -> list[tuple[str, str, str]]:
    """(module, class, method) of every generic method, in their order."""
    loader = unittest.TestLoader()
    found = []
    for module_name, class_name in GENERIC_CLASSES:
        cls = getattr(modules[module_name], class_name)
        for method in loader.getTestCaseNames(cls):
            if method not in FORMAT_SPECIFIC:
                found.append((module_name, class_name, method))
    return found


def _digest(value: Any) -> Any:
    """A comparable summary of a value handed to an assertion."""
    if isinstance(value, Image.Image):
        pixels = hashlib.sha256(value.tobytes()).hexdigest()[:16]
        profile = value.info.get("icc_profile")
        return ("image", value.mode, value.size, pixels, _digest(profile))
    if isinstance(value, bytes):
        return ("bytes", len(value), hashlib.sha256(value).hexdigest()[:16])
    if isinstance(value, tuple | list):
        return type(value)(_digest(v) for v in value)
    if isinstance(value, dict):
        return {k: _digest(v) for k, v in value.items()}
    return value


class _Recording(unittest.TestCase):
    """Assertions that record the values they are given (and check them when strict)."""

    strict = True
    record: list[Any]

    def _note(self, kind: str, value: Any) -> None:
        self.record.append((kind, _digest(value)))

    def assertEqual(self, first: Any, second: Any, msg: Any = None) -> None:
        self._note("equal", first)
        if self.strict:
            super().assertEqual(first, second, msg)

    def assertAlmostEqual(self, first: Any, second: Any, *args: Any, **kwargs: Any) -> None:
        self._note("almost", first)
        if self.strict:
            super().assertAlmostEqual(first, second, *args, **kwargs)

    def assertTrue(self, expr: Any, msg: Any = None) -> None:
        self._note("true", bool(expr))
        if self.strict:
            super().assertTrue(expr, msg)

    def assertIsNone(self, obj: object, msg: Any = None) -> None:
        self._note("none", obj is None)
        if self.strict:
            super().assertIsNone(obj, msg)

    def assertIs(self, expr1: object, expr2: object, msg: Any = None) -> None:
        self._note("is", expr1 is expr2)
        if self.strict:
            super().assertIs(expr1, expr2, msg)

    def assertNotIn(self, member: Any, container: Any, msg: Any = None) -> None:
        self._note("not-in", member not in container)
        if self.strict:
            super().assertNotIn(member, container, msg)

    def assertRaises(self, expected: Any, *args: Any, **kwargs: Any) -> Any:
        if not args:  # context-manager form: not used by the generic methods
            return super().assertRaises(expected, *args, **kwargs)
        caught: BaseException | None = None
        try:
            args[0](*args[1:], **kwargs)
        except Exception as exc:
            caught = exc
        self._note("raises", isinstance(caught, expected))
        if self.strict and not isinstance(caught, expected):
            raise self.failureException(f"{expected} not raised (got {caught!r})")
        return None


@dataclass
class MethodRun:
    """Outcome of one method: pass, fail, error or skip, and the values it recorded."""

    outcome: str
    record: list[Any] = field(default_factory=list)
    detail: str = ""


def run_method(
    modules: dict[str, types.ModuleType],
    where: tuple[str, str, str],
    opener: Callable[[Any], Any],
    cache_class: type,
    *,
    strict: bool,
) -> MethodRun:
    """Run one of their methods with ``opener`` in place of ``openslide.OpenSlide``.

    ``opener(filename)`` must return the slide under test whatever the file name; it also
    needs ``detect_format``. ``cache_class`` stands in for ``openslide.OpenSlideCache``.
    """
    module_name, class_name, method = where
    module = modules[module_name]
    base = getattr(module, class_name)
    attrs: dict[str, Any] = {"strict": strict, "record": []}
    if hasattr(base, "CLASS"):
        attrs["CLASS"] = opener
    cls = type(f"Ours{class_name}", (_Recording, base), attrs)
    saved = {n: getattr(module, n) for n in ("OpenSlide", "OpenSlideCache") if hasattr(module, n)}
    module.OpenSlide = opener
    if "OpenSlideCache" in saved:
        module.OpenSlideCache = cache_class
    try:
        result = unittest.TestResult()
        cls(method).run(result)
    finally:
        for name, value in saved.items():
            setattr(module, name, value)
    if result.skipped:
        return MethodRun("skip", attrs["record"], result.skipped[0][1])
    if result.errors:
        return MethodRun("error", attrs["record"], result.errors[0][1].splitlines()[-1])
    if result.failures:
        return MethodRun("fail", attrs["record"], result.failures[0][1].splitlines()[-1])
    return MethodRun("pass", attrs["record"])


#: Methods whose outcome differs on purpose, with the reason (also in README.md).
KNOWN_DIFFERENCES = {
    "test_operations_on_closed_handle": "closing twice is harmless (Python's convention), "
    "openslide-python raises ctypes.ArgumentError",
    "test_properties": "openslide.background-color and openslide.comment are defined too "
    "(dicomslide 0.7), so the number of properties differs by one or two",
}

SYNTHETIC = slide_spec((700, 1100), 256, 3, thumbnail=True, seed=19)


def make_reference_opener(target: str) -> type:
    """A stand-in for openslide.OpenSlide that opens ``target`` whatever it is asked."""

    class Reference:
        detect_format = staticmethod(_openslide().OpenSlide.detect_format)

        def __new__(cls, filename: Any) -> Any:
            return _openslide().OpenSlide(target)

    return Reference


def make_our_opener(target: str, location: str | None = None) -> type:
    """Our class in place of openslide.OpenSlide: opens ``target`` (or the URL of its series).

    Colour is left uncorrected, OpenSlide's behaviour; the repr names ``target`` as
    OpenSlide's does.
    """

    class OpenSlide(dicomslide_sync.OpenSlide):  # the name shows in reprs
        def __init__(self, filename: Any) -> None:
            super().__init__(location or target, correct_color=False)
            self._filename = target

    return OpenSlide


def load_upstream(
    request: Any, tmp_path_factory: Any
) -> tuple[dict[str, Any], list[tuple[str, str, str]], Path]:
    """Their modules, generic methods and fixtures folder; skips the test when unavailable."""
    import pytest

    cache = getattr(request.config, "cache", None)
    root = Path(cache.mkdir("openslide-python-sdist")) if cache else tmp_path_factory.mktemp("sd")
    try:
        tests_dir = find_upstream_tests(root)
    except LookupError as exc:
        pytest.skip(f"openslide-python's test suite is not available: {exc}")
    modules = load_modules(tests_dir)
    return modules, generic_methods(modules), tests_dir / "fixtures"


def slide_files(fixtures: Path, root: Path) -> dict[str, Path]:
    """First file of each slide under test: OpenSlide's own DICOM fixture and a synthetic one."""
    boxes = root / "boxes"
    boxes.mkdir(parents=True, exist_ok=True)
    for name in ("boxes_0.dcm", "boxes_1.dcm"):
        shutil.copy(fixtures / name, boxes / name)
    synthetic = write_slide(root / "synthetic", SYNTHETIC)
    return {"boxes": boxes / "boxes_0.dcm", "synthetic": synthetic[0]}


def compare_with_openslide(
    modules: dict[str, Any],
    methods: list[tuple[str, str, str]],
    target: Path,
    ours: Callable[[Any], Any],
) -> dict[str, Any]:
    """Run every method both ways with both classes; return counts and the differences."""
    reference = make_reference_opener(str(target))
    ours_cache = dicomslide_sync.OpenSlideCache
    runs: dict[str, dict[str, MethodRun]] = {}
    for where in methods:
        name = f"{where[1]}.{where[2]}"
        runs[name] = {
            "ref-strict": run_method(
                modules, where, reference, _openslide().OpenSlideCache, strict=True
            ),
            "ours-strict": run_method(modules, where, ours, ours_cache, strict=True),
            "ref-record": run_method(
                modules, where, reference, _openslide().OpenSlideCache, strict=False
            ),
            "ours-record": run_method(modules, where, ours, ours_cache, strict=False),
        }
    differing = {
        name: (r["ref-record"], r["ours-record"])
        for name, r in runs.items()
        if (r["ref-record"].outcome, r["ref-record"].record)
        != (r["ours-record"].outcome, r["ours-record"].record)
    }
    lost = {
        name: r["ours-strict"]
        for name, r in runs.items()
        if r["ref-strict"].outcome == "pass" and r["ours-strict"].outcome != "pass"
    }
    return {
        "methods": len(runs),
        "ours_passed": sum(r["ours-strict"].outcome == "pass" for r in runs.values()),
        "ref_passed": sum(r["ref-strict"].outcome == "pass" for r in runs.values()),
        "matching": len(runs) - len(differing),
        "differing": differing,
        "lost": lost,
        "runs": runs,
    }


def check_and_report(request: Any, label: str, summary: dict[str, Any]) -> None:
    """Assert the outcome and print the counts (shown even when pytest captures output)."""
    line = (
        f"openslide-python methods with our class [{label}]: {summary['methods']} ran, "
        f"{summary['ours_passed']} passed as written (OpenSlide on the same file: "
        f"{summary['ref_passed']}), {summary['matching']} recorded the same values as "
        f"OpenSlide; differing: {sorted(summary['differing'])}"
    )
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)
    else:
        print(line)
    allowed = {m for m in summary["runs"] if m.split(".")[1] in KNOWN_DIFFERENCES}
    unexpected = {
        name: (ref.outcome, ref.detail, ours.outcome, ours.detail, ref.record, ours.record)
        for name, (ref, ours) in summary["differing"].items()
        if name not in allowed
    }
    assert not unexpected, unexpected
    lost = {n: (r.outcome, r.detail) for n, r in summary["lost"].items() if n not in allowed}
    assert not lost, lost
    # The known differences are real, not stale.
    assert set(summary["differing"]) == allowed
    assert summary["methods"] >= 25


def load_multiserver_example(tests_dir: Path) -> types.ModuleType:
    """openslide-python's multi-slide Deep Zoom server example (needs Flask), imported."""
    path = tests_dir.parent / "examples" / "deepzoom" / "deepzoom_multiserver.py"
    name = "_openslide_upstream_deepzoom_multiserver"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # Flask finds its templates through the module's file
    spec.loader.exec_module(module)
    return module

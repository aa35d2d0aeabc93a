"""Differential test: the same calls with dicomslide 0.7.2 and with ``dicomslide_sync``.

dicomslide 0.7.2 (MIT licence, https://github.com/herrmannlab/dicomslide) is installed
from PyPI into its own virtual env (cached under ``~/.cache/dicomslide-test`` or
``$DICOMSLIDE_TEST_CACHE``); nothing of it is committed. Both libraries read the same folders:
synthetic slides of :mod:`dicomslide.synthetic` (four orientations, TILED_FULL / TILED_SPARSE /
no organization, focal planes, optical paths, monochrome 8/16 bit and colour, JPEG, JPEG 2000
with ICC profile, RLE concatenation, label/overview/thumbnail, edge tiles), segmentations and
a parametric map written by highdicom, and OrthancWSIDicomizer output when the tool is
installed. Every difference must be one of the reviewed entries of :mod:`tests.parity.known`
(also the README table "Differences from dicomslide 0.7"); the summary is printed.

Run alone with ``nox -s parity`` or ``python -m tests.parity.harness``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.parity.harness import Outcome, classify, reference_python, run_both, summary
from tests.parity.known import KNOWN
from tests.parity.suite import build_calls, prepare

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> list[Outcome]:
    python, how = reference_python()
    if python is None:
        pytest.skip(f"no dicomslide 0.7.2 to compare with: {how}")
    cache = getattr(request.config, "cache", None)
    dicomizer = Path(cache.mkdir("dicomizer")) if cache else tmp_path_factory.mktemp("dicomizer")
    work = tmp_path_factory.mktemp("parity")
    variants, folders = prepare(work, dicomizer)
    calls, tolerances = build_calls(variants, folders)
    ref, ours = run_both(calls, python, work / "run")
    result = classify(calls, ref, ours, tolerances)
    with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        print(f"\nreference env: {how}\n{summary(result, ref, ours)}")
    return result


def test_every_difference_is_a_known_one(outcomes: list[Outcome]) -> None:
    unexpected = [f"{o.call['id']}: {o.why}" for o in outcomes if o.why and not o.known]
    assert not unexpected, "differences from dicomslide 0.7.2 not in tests/parity/known.py:\n" + (
        "\n".join(unexpected[:50])
    )


def test_enough_calls_on_enough_variants(outcomes: list[Outcome]) -> None:
    variants = {o.call["variant"] for o in outcomes}
    agreed = sum(o.why is None for o in outcomes)
    assert len(variants) >= 15
    assert len(outcomes) >= 300
    # Agreement is the rule: a harness whose calls all fail on one side compares nothing.
    assert agreed >= 0.5 * len(outcomes)
    for name in ("orient0", "fluorescence", "seg-sparse", "sparse"):
        assert sum(o.why is None for o in outcomes if o.call["variant"] == name) >= 100, name


def test_every_known_difference_still_occurs(outcomes: list[Outcome]) -> None:
    # An entry nothing matches any more is stale: the difference is gone (remove the entry and
    # its README row) or the calls that showed it were lost.
    present = {o.call["variant"] for o in outcomes}
    used = {o.known for o in outcomes if o.known}
    stale = [
        k.key for k in KNOWN if k.key not in used and (k.variants is None or k.variants & present)
    ]
    assert not stale


def test_readme_lists_every_known_difference() -> None:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Differences from dicomslide 0.7")
    end = text.find("\n## ", start + 1)
    table = text[start : end if end > 0 else None]
    rows = re.findall(r"^\| ([^|]+?) \|", table, flags=re.M)
    assert sorted(rows[1:]) == sorted(k.key for k in KNOWN)  # rows[0] is the header

"""The main job: ``dicomslide`` / ``python -m dicomslide`` on the sample slide and on folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dicomslide._cli import main
from dicomslide.synthetic import write_slide
from tests.support.processes import run_python
from tests.support.slides import slide_spec


def test_no_source_writes_and_reads_the_sample_slide(tmp_path: Path) -> None:
    result = run_python("-m", "dicomslide", "--out", "region.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wrote sample slide" in result.stdout
    assert "found 1 slide(s)" in result.stdout
    assert "label images: 1, overview images: 1" in result.stdout
    with Image.open(tmp_path / "region.png") as image:
        assert image.size == (512, 384)
        assert np.asarray(image).std() > 10  # real content, not a blank fill
    # a second run reuses the written sample
    again = run_python("-m", "dicomslide", cwd=tmp_path)
    assert again.returncode == 0
    assert "wrote sample slide" not in again.stdout


def test_folder_listing_region_and_thumbnail(tmp_path: Path, capsys: object) -> None:
    spec = slide_spec(
        (600, 800),
        128,
        3,
        optical_paths=2,
        photometric="MONOCHROME2",
        icc_profile=False,
        focal_planes=2,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )
    write_slide(tmp_path / "s", spec)
    out = tmp_path / "r.png"
    code = main(
        [
            str(tmp_path / "s"),
            "--region",
            "10",
            "20",
            "100",
            "150",
            "--level",
            "0",
            "--channel",
            "1",
            "--focal-plane",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "channels: 2" in printed
    assert "focal planes: 2" in printed
    assert "0: 800 x 600 px" in printed
    with Image.open(out) as image:
        assert image.size == (150, 100)
    thumb = tmp_path / "t.png"
    assert main([str(tmp_path / "s"), "--thumbnail", "64", "--out", str(thumb)]) == 0
    with Image.open(thumb) as image:
        assert image.size[0] <= 64


def test_bad_arguments_exit_non_zero(tmp_path: Path) -> None:
    assert main([str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 1


def test_help_lists_every_subcommand_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from dicomslide._cli import _subparser

    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    # The subcommands the parser really dispatches, with the help line each one carries there.
    actions = [a for a in _subparser()._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {c.dest: c.help for c in actions[0]._choices_actions}
    assert set(helps) == {"info", "region", "thumbnail", "prefetch", "serve"}
    section = text.split("\nsubcommands", 1)[1]
    listed = [line.split() for line in section.splitlines() if line.startswith("  ")]
    for name, line in helps.items():
        rows = [row for row in listed if row[:1] == [name]]
        assert len(rows) == 1, f"{name} is listed {len(rows)} times in --help:\n{text}"
        assert " ".join(rows[0][1:]) == line

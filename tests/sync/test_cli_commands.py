"""The ``dicomslide`` subcommands, run as a user would: ``python -m dicomslide ...``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from PIL import Image

from dicomslide.synthetic import write_slide
from tests.support.processes import run_python
from tests.support.slides import slide_spec

SPEC = slide_spec((700, 1000), 128, 3, seed=51)


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_python("-m", "dicomslide", *args, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "slide"
    write_slide(path, SPEC)
    return path


def test_info_lists_levels_spacing_and_transfer_syntax(folder: Path, tmp_path: Path) -> None:
    done = cli("info", str(folder), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "found 1 slide(s)" in done.stdout
    assert "0: 1000 x 700 px (w x h), 0.2500 x 0.2500 um/px" in done.stdout
    assert "2: 250 x 175 px" in done.stdout
    assert "JPEG Baseline" in done.stdout
    assert "channels: 1" in done.stdout


def test_region_and_thumbnail_files(folder: Path, tmp_path: Path) -> None:
    done = cli(
        "region", str(folder), "--level", "1", "--offset", "10", "20", "--size", "100", "150",
        "--out", "r.tif", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "r.tif") as image:
        assert image.size == (150, 100)
    done = cli("thumbnail", str(folder), "--size", "64", "--out", "t.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "t.png") as image:
        assert image.size == (64, 45)


def test_prefetch_prints_progress_and_throughput(folder: Path, tmp_path: Path) -> None:
    done = cli("prefetch", str(folder), "--level", "0", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # 6 x 8 tiles; stderr is a pipe, so progress comes as plain lines (no carriage returns)
    assert "prefetched level 0: 48 frames fetched" in done.stdout
    assert "frames/s" in done.stdout
    assert " MB in " in done.stdout
    assert "prefetch: 48/48 frames (100%)" in done.stderr
    assert "\r" not in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["region", "SOURCE", "--size", "1"],  # --size needs two values
        ["thumbnail", "SOURCE", "--out", "x.png"],  # --size missing
        ["prefetch", "SOURCE", "--level", "nine"],
        ["info"],
        ["region", "SOURCE", "--level", "7", "--size", "5", "5", "--out", "x.png"],
        ["info", "does-not-exist"],
    ],
)
def test_bad_arguments_exit_2(folder: Path, tmp_path: Path, args: list[str]) -> None:
    done = cli(*[str(folder) if a == "SOURCE" else a for a in args], cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "error" in done.stderr
    assert "Traceback" not in done.stderr


def test_empty_folder_exits_1(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = cli("info", "empty", cwd=tmp_path)
    assert done.returncode == 1
    assert "no slides found" in done.stderr


def test_unreachable_server_is_one_line_and_hides_the_token(tmp_path: Path) -> None:
    token = "s3cret-token-value-123"
    done = cli(
        "info",
        "http://127.0.0.1:9/dicom-web",
        "--header",
        "X-Api-Key: another-secret-456",
        "--timeout",
        "2",
        cwd=tmp_path,
        env={"DICOMSLIDE_TOKEN": token},
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("dicomslide: error:")
    assert "127.0.0.1:9" in lines[0]
    for secret in (token, "another-secret-456"):
        assert secret not in done.stderr
        assert secret not in done.stdout


def test_legacy_invocation_still_works(folder: Path, tmp_path: Path) -> None:
    done = cli(str(folder), "--region", "0", "0", "50", "60", "--level", "0", "--out", "l.png",
               cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "l.png") as image:
        assert image.size == (60, 50)


def test_progress_bar_ends_its_line_once() -> None:
    import io

    from dicomslide._cli import _Progress

    finished = io.StringIO()
    bar = _Progress("bar", finished)
    bar(0, 10)
    bar(10, 10)
    bar.close()
    assert finished.getvalue().count("\n") == 1
    assert finished.getvalue().endswith("frames/s\n")
    interrupted = io.StringIO()
    bar = _Progress("bar", interrupted)
    bar(0, 10)
    bar.close()  # an unfinished bar still gets its line ended
    assert interrupted.getvalue().count("\n") == 1

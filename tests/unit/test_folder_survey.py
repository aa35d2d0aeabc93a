"""Exact invalidation without listing unchanged directories (dicomslide.sources.folder_survey).

Each case changes a folder after a first survey and checks that the second one sees exactly
what a full listing sees, and that it lists only the directories that changed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dicomslide.sources import folder_survey
from dicomslide.sources.folder_survey import identity_bytes, survey, unchanged


def _full(root: Path) -> list[tuple[str, tuple[int, int, int, int]]]:
    """What a survey without memory finds (lists every directory)."""
    return survey(root, True, None, {}, {})[0]


def _again(root: Path, dirs: dict, files: list) -> tuple[list, dict, int]:
    return survey(root, True, None, dirs, dict(files))


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Directories changed just now count as settled here (the racy case is tested apart).
    monkeypatch.setattr(folder_survey, "RACY_NS", 0)
    root = tmp_path / "root"
    for sub in ("a", "b", "b/c"):
        (root / sub).mkdir(parents=True)
    for name in ("top.dcm", "a/1.dcm", "a/2.dcm", "b/3.dcm", "b/c/4.dcm"):
        (root / name).write_bytes(name.encode())
    return root


def test_unchanged_folder_lists_no_directory(tree: Path) -> None:
    files, dirs, listed = _again(tree, {}, [])
    assert listed == 4
    assert sorted(dirs) == ["", "a", "b", "b/c"]
    again, dirs2, listed2 = _again(tree, dirs, files)
    assert (again, dirs2, listed2) == (files, dirs, 0)


_CHANGES = [
    (lambda r: (r / "b/c/5.dcm").write_bytes(b"new"), 1),  # added deep down
    (lambda r: (r / "a/1.dcm").unlink(), 1),  # removed
    (lambda r: (r / "a/2.dcm").write_bytes(b"other bytes"), 0),  # changed in place
    (lambda r: os.replace(r / "a/1.dcm", r / "a/2.dcm"), 1),  # replaced by a rename
    (lambda r: (r / "a/1.dcm").rename(r / "b/moved.dcm"), 2),  # moved between folders
    (lambda r: (r / "d/e").mkdir(parents=True) or (r / "d/e/6.dcm").write_bytes(b"6"), 3),
    (lambda r: [p.unlink() for p in (r / "b/c").iterdir()] and (r / "b/c").rmdir(), 1),
]
_CHANGE_IDS = ["added", "removed", "changed", "replaced", "moved", "new-folder", "folder-removed"]


@pytest.mark.parametrize(("change", "listed"), _CHANGES, ids=_CHANGE_IDS)
def test_changes_are_seen_listing_only_what_changed(tree: Path, change, listed: int) -> None:
    files, dirs, _ = _again(tree, {}, [])
    change(tree)
    again, _, count = _again(tree, dirs, files)
    assert again == _full(tree)
    assert again != files
    assert count == listed


def test_same_size_rewrite_with_old_time_is_seen(tree: Path) -> None:
    files, dirs, _ = _again(tree, {}, [])
    target = tree / "a/1.dcm"
    st = target.stat()
    target.write_bytes(b"A/1.DCM")  # same size
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # time set back: ctime moves
    again, _, count = _again(tree, dirs, files)
    assert count == 0
    assert dict(again)["a/1.dcm"] != dict(files)["a/1.dcm"]


def test_directories_with_links_are_always_listed(tree: Path) -> None:
    os.symlink(tree / "a/1.dcm", tree / "b/link.dcm")
    os.symlink(tree / "missing.dcm", tree / "b/dangling.dcm")
    files, dirs, _ = _again(tree, {}, [])
    assert dirs["b"][3] == 1
    assert "b/dangling.dcm" not in dict(files)
    # The dangling link's target appears: only the listing of its directory can tell.
    (tree / "missing.dcm").write_bytes(b"now here")
    again, _, count = _again(tree, dirs, files)
    assert "b/dangling.dcm" in dict(again)
    assert again == _full(tree)
    assert count == 2  # the root (new file) and the folder with links


def test_recently_changed_directories_are_listed_again(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x/1.dcm").write_bytes(b"1")
    files, dirs, listed = survey(tmp_path, True, None, {}, {})
    # Changed just now: its time may not move for a change made within the same tick.
    assert all(record[3] == 1 for record in dirs.values())
    _, _, listed_again = survey(tmp_path, True, None, dirs, dict(files))
    assert listed_again == listed == 2


def test_not_recursive_ignores_sub_folders(tree: Path) -> None:
    files, dirs, listed = survey(tree, False, None, {}, {})
    assert listed == 1
    assert [rel for rel, _ in files] == ["top.dcm"]
    assert list(dirs) == [""]
    assert survey(tree, False, None, dirs, dict(files))[2] == 0


def _remembered(files: list, dirs: dict) -> tuple[list, bytes, list, bytes]:
    """What the index's snapshot holds of a survey (see dicomslide.sources.index_snapshot)."""
    names = sorted(dirs)
    return (
        [os.fsencode(name) for name in names],
        identity_bytes(v for name in names for v in dirs[name][:3]),
        [os.fsencode(rel) for rel, _ in files],
        identity_bytes(v for _, ident in files for v in ident),
    )


@pytest.mark.parametrize("relative", [True, False], ids=["dir_fd", "paths"])
def test_unchanged_folder_matches_its_snapshot(
    tree: Path, monkeypatch: pytest.MonkeyPatch, relative: bool
) -> None:
    if not relative:  # as where stat takes no folder descriptor (Windows)
        monkeypatch.setattr(os, "supports_dir_fd", set())
    files, dirs, _ = _again(tree, {}, [])
    assert unchanged(tree, *_remembered(files, dirs))
    # Reading a file changes nothing that counts; writing one does.
    (tree / "a/1.dcm").read_bytes()
    assert unchanged(tree, *_remembered(files, dirs))
    (tree / "a/1.dcm").write_bytes(b"changed")
    assert not unchanged(tree, *_remembered(files, dirs))


@pytest.mark.parametrize(("change", "listed"), _CHANGES, ids=_CHANGE_IDS)
def test_snapshot_comparison_sees_every_change(tree: Path, change, listed: int) -> None:
    # The same cases as the survey's: each one is noticed without listing any directory.
    files, dirs, _ = _again(tree, {}, [])
    remembered = _remembered(files, dirs)
    change(tree)
    assert not unchanged(tree, *remembered)
    # And a survey of the changed folder gives a snapshot that matches it again.
    files, dirs, _ = _again(tree, dirs, files)
    assert unchanged(tree, *_remembered(files, dirs))


def test_snapshot_comparison_sees_a_same_size_rewrite_with_old_time(tree: Path) -> None:
    files, dirs, _ = _again(tree, {}, [])
    remembered = _remembered(files, dirs)
    target = tree / "a/1.dcm"
    st = target.stat()
    target.write_bytes(b"A/1.DCM")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert not unchanged(tree, *remembered)

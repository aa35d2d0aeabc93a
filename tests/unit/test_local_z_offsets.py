"""The local source remembers each file's Z offsets in its index, and forgets stale ones."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pydicom
import pytest

import dicomslide
from dicomslide.perframe import extract_z_offsets
from dicomslide.synthetic import write_slide
from tests.support.slides import slide_spec

SPEC = slide_spec(
    (200, 260),
    64,
    2,
    transfer_syntax_uid="1.2.840.10008.1.2.1",
    dimension_organization="TILED_SPARSE",
    focal_planes=3,
)


async def _open(folder: Path, index: Path) -> tuple[tuple[float, ...], list[pydicom.Dataset]]:
    async with dicomslide.DICOMfileClient(folder, index_dir=index) as client:
        (slide,) = await dicomslide.find_slides(client)
        planes = tuple(slide.get_focal_plane_offset(i) for i in range(slide.num_focal_planes))
        return planes, slide.image_metadata


def open_slide(folder: Path, index: Path) -> tuple[tuple[float, ...], list[pydicom.Dataset]]:
    return asyncio.run(_open(folder, index))


def remembered(index: Path) -> tuple[Path, dict[str, Any]]:
    """The index database and the Z offsets it holds, by relative path (JSON decoded)."""
    (path,) = index.glob("*.sqlite")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT relpath, z_offsets FROM files WHERE z_offsets IS NOT NULL")
        return path, {rel: json.loads(z) for rel, z in rows}


def plant(path: Path, values: dict[str, str]) -> None:
    """Store ``values`` (JSON text by relative path) as the remembered Z offsets.

    The summaries go: slides are then built from the headers, which the offsets serve (a
    summary holds the focal planes itself, see dicomslide.summary).
    """
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.executemany(
            "UPDATE files SET z_offsets = ? WHERE relpath = ?",
            [(z, rel) for rel, z in values.items()],
        )
        conn.execute("DELETE FROM summaries")


@pytest.fixture
def slide_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "slide"
    write_slide(folder, SPEC)
    return folder


def test_offsets_are_remembered_and_used(slide_folder: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    planes, _ = open_slide(slide_folder, index)
    assert planes == (0.0, 1.0, 2.0)
    _, data = remembered(index)
    assert len(data) == 2  # the two pyramid levels; label and overview have no planes
    for relpath, (frames, offsets) in data.items():
        path = slide_folder / relpath
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert frames == int(ds.NumberOfFrames)
        assert offsets == sorted(extract_z_offsets(ds, frames))
    # A second client takes them from the index: its datasets carry the answer.
    planes, metadata = open_slide(slide_folder, index)
    assert planes == (0.0, 1.0, 2.0)
    carried = [ds for ds in metadata if "_dicomslide_z_offsets" in ds.__dict__]
    assert len(carried) == 2


def test_remembered_offsets_are_what_the_slide_sees(slide_folder: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    open_slide(slide_folder, index)
    path, data = remembered(index)
    # Planted answers (a file cannot change without its identity changing) show they are
    # used...
    plant(path, {rel: json.dumps([frames, [5.0]]) for rel, (frames, _) in data.items()})
    planes, _ = open_slide(slide_folder, index)
    assert planes == (5.0,)
    # ...and a file whose modification time changes is searched again.
    for file in slide_folder.iterdir():
        stat = file.stat()
        os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    planes, _ = open_slide(slide_folder, index)
    assert planes == (0.0, 1.0, 2.0)
    _, data = remembered(index)
    assert all(value[1] == [0.0, 1.0, 2.0] for value in data.values())
    assert len(data) == 2


def test_rewritten_file_is_searched_again(slide_folder: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    assert open_slide(slide_folder, index)[0] == (0.0, 1.0, 2.0)
    # The same slide written again with two focal planes: sizes and times differ.
    for file in slide_folder.iterdir():
        file.unlink()
    write_slide(slide_folder, dataclasses.replace(SPEC, focal_planes=2))
    assert open_slide(slide_folder, index)[0] == (0.0, 1.0)


@pytest.mark.parametrize(
    "stored",
    ["not json", json.dumps({"x": 1}), json.dumps([3, ["0.0"]]), json.dumps([3, [1]])],
)
def test_unusable_remembered_offsets_are_ignored(
    slide_folder: Path, tmp_path: Path, stored: str
) -> None:
    index = tmp_path / "index"
    open_slide(slide_folder, index)
    path, data = remembered(index)
    plant(path, dict.fromkeys(data, stored))
    assert open_slide(slide_folder, index)[0] == (0.0, 1.0, 2.0)


def test_broken_index_is_replaced(slide_folder: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    open_slide(slide_folder, index)
    path, _ = remembered(index)
    path.write_bytes(b"not a database" * 100)
    assert open_slide(slide_folder, index)[0] == (0.0, 1.0, 2.0)
    _, data = remembered(index)
    assert len(data) == 2  # written afresh

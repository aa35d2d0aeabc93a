"""Whole-instance fallback of the adapter for foreign (``dicomweb_client``) clients.

A stub client stands in for ``dicomweb_client.DICOMwebClient`` against a server that answers
frame requests of some instances with an HTTP error (Orthanc 1.10 answers 500 for HTJ2K,
JPEG XL and deflated instances; see ``tests/integration/test_fidelity_corpus.py`` for the
real server).  Frames cut from the whole instance must equal the local source's.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pydicom
import pytest

import dicomslide
from dicomslide.sources.foreign import ForeignClientSource
from dicomslide.synthetic import SlideSpec, write_slide
from tests.support.slides import slide_spec


class _HTTPError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"{status} Server Error")
        self.response = SimpleNamespace(status_code=status)


class RefusingClient:
    """Refuses every frames request with ``status``; serves whole instances from files."""

    def __init__(self, files: list[Path], status: int) -> None:
        self.files = {
            str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in files
        }
        self.status = status
        self.frame_calls = 0
        self.instance_calls: list[tuple[str, Any]] = []

    def search_for_series(self, **kwargs: Any) -> list[dict[str, Any]]:
        return []

    def retrieve_series_metadata(self, *args: Any) -> list[dict[str, Any]]:
        return []

    def retrieve_instance_metadata(self, *args: Any) -> dict[str, Any]:
        return {}

    def retrieve_instance_frames(self, *args: Any, **kwargs: Any) -> list[bytes]:
        self.frame_calls += 1
        raise _HTTPError(self.status)

    def retrieve_instance(self, study: str, series: str, sop: str, **kwargs: Any) -> Any:
        self.instance_calls.append((sop, kwargs.get("media_types")))
        return pydicom.dcmread(self.files[sop])


def _volume(folder: Path, spec: SlideSpec) -> Path:
    write_slide(folder, spec)
    for path in sorted(folder.rglob("*.dcm")):
        if "VOLUME" in pydicom.dcmread(path, stop_before_pixels=True).ImageType:
            return path
    raise AssertionError("no VOLUME image written")


@pytest.fixture(params=["1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.1"])
def volume(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    spec = slide_spec((300, 400), 128, 1, seed=3, transfer_syntax_uid=request.param)  # fmt: skip
    return _volume(tmp_path, spec)


async def _local_frames(path: Path) -> tuple[tuple[str, str, str], dict[int, Any]]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    uids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    numbers = list(range(1, int(ds.NumberOfFrames) + 1))
    async with dicomslide.DICOMfileClient(path.parent) as local:
        frames = {n: f async for n, f in local.iter_frames(*uids, numbers)}
    return uids, frames


async def test_refused_frames_come_from_one_whole_instance(volume: Path) -> None:
    uids, expected = await _local_frames(volume)
    client = RefusingClient([volume], status=500)
    source = ForeignClientSource(client)
    numbers = sorted(expected)
    first = {n: f async for n, f in source.iter_frames(*uids, numbers[:3])}
    later = {n: f async for n, f in source.iter_frames(*uids, numbers[::-1])}
    for got in (first, later):
        for number, frame in got.items():
            assert frame.data == expected[number].data
            assert frame.transfer_syntax_uid == expected[number].transfer_syntax_uid
    assert client.frame_calls == 1  # later frames are cut from the kept instance
    assert client.instance_calls == [(uids[2], (("application/dicom", "*"),))]


async def test_not_found_is_not_a_refusal(volume: Path) -> None:
    uids, _ = await _local_frames(volume)
    client = RefusingClient([volume], status=404)
    source = ForeignClientSource(client)
    with pytest.raises(dicomslide.NotFoundError, match="not found"):
        _ = [f async for f in source.iter_frames(*uids, [1])]
    assert client.instance_calls == []


async def test_frame_numbers_checked_against_the_instance(volume: Path) -> None:
    uids, expected = await _local_frames(volume)
    source = ForeignClientSource(RefusingClient([volume], status=400))
    with pytest.raises(dicomslide.RegionError, match="outside the valid range"):
        _ = [f async for f in source.iter_frames(*uids, [len(expected) + 1])]

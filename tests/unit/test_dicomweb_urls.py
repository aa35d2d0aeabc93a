"""Tests of DICOMweb URL, query and header construction."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, strategies as st

from dicomslide.errors import ArgumentError, RegionError
from dicomslide.sources.dicomweb_urls import (
    ACCEPT_STORED_FRAMES,
    accept_for_transfer_syntax,
    chunk_frame_numbers,
    frames_url,
    instance_metadata_url,
    qido_params,
    qido_url,
    redact_url,
    series_metadata_url,
)
from dicomslide.sources.multipart import parse_content_type

ROOT = "http://orthanc:8042/dicom-web/"


def test_frames_url() -> None:
    assert frames_url(ROOT, "1.2", "1.2.3", "1.2.3.4", [1, 5, 9]) == (
        "http://orthanc:8042/dicom-web/studies/1.2/series/1.2.3/instances/1.2.3.4/frames/1,5,9"
    )


@pytest.mark.parametrize("frames", [[], [0], [1, -2], [True], [1.0]])
def test_frames_url_rejects_bad_frame_numbers(frames: list[int]) -> None:
    with pytest.raises(RegionError):
        frames_url(ROOT, "1", "2", "3", frames)


def test_uids_cannot_change_the_path() -> None:
    url = frames_url(ROOT, "1/../x", "2", "3", [1])
    assert "/studies/1%2F..%2Fx/series/" in url
    with pytest.raises(ArgumentError):
        frames_url(ROOT, "", "2", "3", [1])


def test_metadata_urls() -> None:
    assert series_metadata_url(ROOT, "1", "2") == f"{ROOT}studies/1/series/2/metadata"
    assert instance_metadata_url(ROOT.rstrip("/"), "1", "2", "3") == (
        f"{ROOT}studies/1/series/2/instances/3/metadata"
    )


@pytest.mark.parametrize(
    ("level", "study", "series", "path"),
    [
        ("studies", None, None, "studies"),
        ("series", None, None, "series"),
        ("series", "1", None, "studies/1/series"),
        ("instances", None, None, "instances"),
        ("instances", "1", None, "studies/1/instances"),
        ("instances", "1", "2", "studies/1/series/2/instances"),
    ],
)
def test_qido_url(level: str, study: str | None, series: str | None, path: str) -> None:
    assert qido_url(ROOT, level, study, series) == ROOT + path  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("level", "study", "series"),
    [
        ("studies", "1", None),
        ("series", "1", "2"),
        ("instances", None, "2"),
        ("patients", None, None),
    ],
)
def test_qido_url_errors(level: str, study: str | None, series: str | None) -> None:
    with pytest.raises(ArgumentError):
        qido_url(ROOT, level, study, series)  # type: ignore[arg-type]


def test_qido_params() -> None:
    params = qido_params(
        {
            "Modality": "SM",
            "00080018": ["1.2", "1.3"],
            "PatientName": None,
            "StudyDate": datetime.date(2024, 1, 31),
            "NumberOfFrames": 7,
        },
        fields=["ImageType", "00480006"],
        limit=10,
        offset=0,
        fuzzy=True,
    )
    assert params == [
        ("Modality", "SM"),
        ("00080018", "1.2,1.3"),
        ("PatientName", ""),
        ("StudyDate", "20240131"),
        ("NumberOfFrames", "7"),
        ("includefield", "ImageType"),
        ("includefield", "00480006"),
        ("limit", "10"),
        ("offset", "0"),
        ("fuzzymatching", "true"),
    ]
    assert qido_params(None) == []


@pytest.mark.parametrize(
    "kwargs",
    [{"limit": -1}, {"offset": -5}, {"limit": True}, {"fields": [""]}],
)
def test_qido_params_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ArgumentError):
        qido_params({}, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError):
        qido_params({"": "x"})


@given(
    frames=st.lists(st.integers(1, 10**7), max_size=300),
    max_frames=st.integers(1, 50),
    budget=st.integers(8, 200),
)
def test_chunk_frame_numbers(frames: list[int], max_frames: int, budget: int) -> None:
    prefix = 40
    chunks = chunk_frame_numbers(
        frames, max_frames=max_frames, max_url_length=prefix + budget, url_prefix_length=prefix
    )
    assert [n for chunk in chunks for n in chunk] == frames
    for index, chunk in enumerate(chunks):
        assert 1 <= len(chunk) <= max_frames
        assert prefix + len(",".join(map(str, chunk))) <= prefix + budget
        if index + 1 < len(chunks) and len(chunk) < max_frames:
            # Greedy: the next number would not have fit.
            joined = ",".join(map(str, [*chunk, chunks[index + 1][0]]))
            assert len(joined) > budget


def test_chunk_frame_numbers_against_a_real_url() -> None:
    prefix = frames_url(ROOT, "1.2.3", "4.5.6", "7.8.9", [1])[:-1]
    numbers = list(range(1, 5001))
    chunks = chunk_frame_numbers(
        numbers, max_frames=3000, max_url_length=15_000, url_prefix_length=len(prefix)
    )
    assert len(chunks) >= 2
    for chunk in chunks:
        assert len(frames_url(ROOT, "1.2.3", "4.5.6", "7.8.9", chunk)) <= 15_000
        assert len(chunk) <= 3000


def test_chunk_frame_numbers_errors() -> None:
    with pytest.raises(ArgumentError, match="does not fit"):
        chunk_frame_numbers([123456], max_frames=10, max_url_length=45, url_prefix_length=40)
    with pytest.raises(ArgumentError, match="max_frames"):
        chunk_frame_numbers([1], max_frames=0, max_url_length=100, url_prefix_length=10)
    assert chunk_frame_numbers([], max_frames=1, max_url_length=10, url_prefix_length=5) == []


def test_accept_stored_frames() -> None:
    media_type, params = parse_content_type(ACCEPT_STORED_FRAMES)
    assert media_type == "multipart/related"
    assert params == {"type": "application/octet-stream", "transfer-syntax": "*"}


@pytest.mark.parametrize(
    ("uid", "media_type", "requested_uid"),
    [
        ("1.2.840.10008.1.2.4.50", "image/jpeg", "1.2.840.10008.1.2.4.50"),
        ("1.2.840.10008.1.2.4.70", "image/jpeg", "1.2.840.10008.1.2.4.70"),
        ("1.2.840.10008.1.2.4.80", "image/jls", "1.2.840.10008.1.2.4.80"),
        ("1.2.840.10008.1.2.4.90", "image/jp2", "1.2.840.10008.1.2.4.90"),
        ("1.2.840.10008.1.2.4.91", "image/jp2", "1.2.840.10008.1.2.4.91"),
        ("1.2.840.10008.1.2.4.92", "image/jpx", "1.2.840.10008.1.2.4.92"),
        ("1.2.840.10008.1.2.4.201", "image/jphc", "1.2.840.10008.1.2.4.201"),
        ("1.2.840.10008.1.2.4.203", "image/jphc", "1.2.840.10008.1.2.4.203"),
        ("1.2.840.10008.1.2.5", "image/dicom-rle", "1.2.840.10008.1.2.5"),
        ("1.2.840.10008.1.2.1", "application/octet-stream", "1.2.840.10008.1.2.1"),
        ("1.2.840.10008.1.2", "application/octet-stream", "1.2.840.10008.1.2.1"),
        ("1.2.840.10008.1.2.1.98", "application/octet-stream", "1.2.840.10008.1.2.1.98"),
    ],
)
def test_accept_for_transfer_syntax(uid: str, media_type: str, requested_uid: str) -> None:
    accept = accept_for_transfer_syntax(uid)
    assert accept == f'multipart/related; type="{media_type}"; transfer-syntax={requested_uid}'


def test_accept_for_transfer_syntax_rejects_non_uids() -> None:
    with pytest.raises(ArgumentError):
        accept_for_transfer_syntax("*")


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("https://user:pw@host/dicom-web/studies", "https://host/dicom-web/studies"),
        ("https://host:443/x?access_token=abc&limit=5", "https://host:443/x?limit=5"),
        ("https://host/x?key=1&includefield=00080060", "https://host/x?includefield=00080060"),
        ("https://h/x?X-Amz-Signature=s&X-Amz-Credential=c&a=b%2Cc", "https://h/x?a=b%2Cc"),
        ("https://h/x?apiKey=1&token=2&signature=3&sig=4&password=5", "https://h/x"),
        ("https://h/x?StudyInstanceUID=1.2&monkey=3", "https://h/x?StudyInstanceUID=1.2&monkey=3"),
        ("http://h/studies/1/frames/1,2", "http://h/studies/1/frames/1,2"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted

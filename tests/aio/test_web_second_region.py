"""A second region on an instance already read: one request, for the new frames only (issue 14).

Measured on the Orthanc the suite uses (1.10.1 with DICOMweb plugin 1.7; ``server-shape`` of
``benchmarks/web_floor.py``): every frames request makes the server read and parse the
whole instance file, so a request of a 108 MB level-0 instance costs ~300 ms of server CPU
whether it asks for 1 frame or 81, a refused one ~240 ms, and 2, 3 or 4 concurrent requests
sharing the frames cost 2, 3 or 4 times as much. What a region costs the server is its
number of requests per instance, not its number of frames. These tests pin the request
shape that follows, on the in-process server of ``test_web_requests``: a second region asks
once per instance, by the media type the first answer named, and never again for a frame it
already holds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.aio.test_web_requests import (
    RLE,
    SPEC,
    FakeDicomWeb,
    opened,
    slide_files,  # noqa: F401  (fixture)
    tiles_touched,
    truth,
)

STAR = "transfer-syntax=*"
FIRST = ((0, 0), (300, 400))


@pytest.fixture
def server(slide_files: list[Path]) -> FakeDicomWeb:  # noqa: F811
    return FakeDicomWeb(slide_files)


@pytest.mark.parametrize(
    ("offset", "size"),
    [
        ((0, 300), (300, 400)),  # shares two tile columns with the first region
        ((100, 200), (500, 700)),  # shares six tiles, and goes further down
        ((0, 0), SPEC.size),  # the whole level: every frame the first did not fetch
    ],
)
async def test_second_region_asks_once_for_the_frames_it_lacks(
    server: FakeDicomWeb, offset: tuple[int, int], size: tuple[int, int]
) -> None:
    # Like Orthanc: the metadata names no syntax, and RLE implies none, so the first
    # request asks for stored bytes and its answer's label is what the second one uses.
    server.hide_syntax = True
    async with opened(server) as (_, slide):
        first = await slide.get_image_region(FIRST[0], 0, FIRST[1])
        np.testing.assert_array_equal(first, truth(*FIRST[0], FIRST[1]))
        assert len(server.frame_requests) == 1
        second = await slide.get_image_region(offset, 0, size)
        np.testing.assert_array_equal(second, truth(*offset, size))
    have = tiles_touched(*FIRST[0], FIRST[1])
    lacking = tiles_touched(*offset, size) - have
    assert len(server.frame_requests) == 2
    asked = server.frame_requests[1]
    assert sorted(asked.numbers) == sorted(lacking)
    assert len(asked.numbers) == len(set(asked.numbers))
    assert f"transfer-syntax={RLE}" in asked.accept
    assert STAR not in asked.accept


async def test_second_region_inside_the_first_sends_nothing(server: FakeDicomWeb) -> None:
    async with opened(server) as (_, slide):
        await slide.get_image_region(FIRST[0], 0, FIRST[1])
        inner = await slide.get_image_region((50, 60), 0, (200, 250))
    np.testing.assert_array_equal(inner, truth(50, 60, (200, 250)))
    assert len(server.frame_requests) == 1

"""A part's Content-Location names its frame exactly as the path of the URL says.

The client matches the whole location instead of splitting it as a URL first (that split cost
7 times the match); the path must still end at a query or a fragment, as ``urlsplit`` ends it.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from dicomslide.sources.web.client import _frame_from_location

PATH_RULE = re.compile(r"/frames/([0-9]+)/?$")


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("http://h:8042/dicom-web/studies/1/series/2/instances/3/frames/42", 42),
        ("http://x/frames/3/", 3),
        ("/frames/12?part=1", 12),
        ("/frames/12#f", 12),
        ("http://h/frames/3/?a#b", 3),
        ("/frames/05", 5),
        ("http://h/frames/1,2", None),  # names two frames
        ("/frames/3/4", None),
        ("frames/3", None),
        ("/frames/", None),
        ("http://h/frames/3?q=/frames/4", 3),  # the query never names the frame
        ("http://h/instances/3?q=/frames/4", None),
        ("http://h/frames/7#/frames/9", 7),
        ("", None),
        (None, None),
    ],
)
def test_frame_number_comes_from_the_path(location: str | None, expected: int | None) -> None:
    assert _frame_from_location(location) == expected
    if location:
        match = PATH_RULE.search(urlsplit(location).path)
        assert (int(match.group(1)) if match else None) == expected

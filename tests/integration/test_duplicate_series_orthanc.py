"""Two series holding the same slide (issue 17, "stray series") over DICOMweb.

The layouts of :mod:`tests.aio.test_duplicate_series` (written with
:mod:`dicomslide.synthetic`), stored in an Orthanc of this module's own: the copies of one
slide are two slides, each reading its own pixels; also when each level has its own frame of
reference; a pyramid spread over series and a
concatenation stay one slide each.
"""

from __future__ import annotations

import logging

import pytest

import dicomslide
from tests.aio.test_duplicate_series import (
    Duplicates,
    assert_copies,
    assert_copies_logged,
    series_of,
    write_duplicate_folder,
)
from tests.support.orthanc import OrthancServer
from tests.support.slides import served_folder

pytestmark = pytest.mark.integration


served = served_folder(write_duplicate_folder, "duplicates")


@pytest.mark.parametrize("container_id", [None, "COPIED", "COPIED-SPLIT"])
async def test_copies_over_dicomweb(
    served: tuple[OrthancServer, Duplicates],
    caplog: pytest.LogCaptureFixture,
    container_id: str | None,
) -> None:
    orthanc, written = served
    caplog.set_level(logging.INFO, logger="dicomslide")
    async with dicomslide.DICOMwebClient(orthanc.dicomweb_url) as client:
        slides = await dicomslide.find_slides(client, container_id=container_id)
        layouts = {"COPIED": written.copies, "COPIED-SPLIT": written.copies_split}
        for container, copies in layouts.items():
            if container_id in (None, container):
                await assert_copies([s for s in slides if s.container_id == container], copies)
                assert_copies_logged(caplog, copies)
        others = sorted(
            (s.container_id, len(series_of(s))) for s in slides if s.container_id not in layouts
        )
        want = [] if container_id else [("CONCAT", 1), ("SPREAD", written.spread.num_levels)]
        assert others == want

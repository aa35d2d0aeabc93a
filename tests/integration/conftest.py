"""Fixtures shared by integration modules that serve their own slides from a private Orthanc."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import dicomslide_sync
from tests.support.orthanc import OrthancServer


@pytest.fixture(scope="module")
def client(server: tuple[OrthancServer, Any]) -> Iterator[dicomslide_sync.DICOMwebClient]:
    """A blocking client of the module's ``server`` fixture (a server and what it holds)."""
    orthanc, _ = server
    with dicomslide_sync.DICOMwebClient(orthanc.dicomweb_url) as c:
        yield c

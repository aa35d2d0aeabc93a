"""Shared test configuration."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Decode pools and the private loop thread are per process; keep thread counts predictable.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def shared_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One Orthanc DICOMweb server for the whole session, started on first use.

    For modules that only add their own studies and read them back by Study Instance UID,
    Container Identifier or URL: each Orthanc start costs seconds. Modules that list every
    slide on the server, empty it or need their own configuration start their own
    :class:`tests.support.orthanc.OrthancServer`.
    """
    from tests.support.orthanc import OrthancServer, require_dicomweb_orthanc

    require_dicomweb_orthanc()
    with OrthancServer(workdir=tmp_path_factory.mktemp("orthanc-shared")) as server:
        yield server

"""Fixtures shared by the asyncio tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

import dicomslide


@pytest.fixture
async def client(written: Any) -> AsyncIterator[dicomslide.DICOMfileClient]:
    """A client on the folder that the module's own ``written`` fixture wrote (``written.root``).

    Modules that read another source define their own ``client``, which takes precedence.
    """
    async with dicomslide.DICOMfileClient(written.root) as c:
        yield c

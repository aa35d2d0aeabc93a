"""Fixtures of the ``dicomslide serve`` tests: synthetic slides, the app in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import dicomslide
from dicomslide.synthetic import SlideSpec
from tests.support.slides import write_slides

pytest.importorskip("starlette", reason="dicomslide[serve] (Starlette) is not installed")
pytest.importorskip("uvicorn", reason="dicomslide[serve] (Uvicorn) is not installed")

# Two slides: a picker has something to pick, and ids must tell them apart. Sizes are not
# multiples of the frame size, so edge tiles are partial.
SPECS = {
    "a": SlideSpec(size=(900, 1300), levels=3, thumbnail=True, container_id="SERVE-A", seed=31),
    "b": SlideSpec(size=(700, 500), levels=2, container_id="SERVE-B", seed=32),
}


@pytest.fixture(scope="session")
def slide_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the two slides of :data:`SPECS`, one subfolder each."""
    folders = write_slides(tmp_path_factory.mktemp("serve-slides"), SPECS)
    return folders["a"].parent


@pytest.fixture
async def http(slide_root: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to ``create_app`` over the folder, in this test's event loop."""
    from dicomslide.serve import create_app

    async with dicomslide.DICOMfileClient(slide_root) as source:
        transport = httpx.ASGITransport(app=create_app(source))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


@pytest.fixture
async def ids(http: httpx.AsyncClient) -> dict[str, str]:
    """Slide id by Container Identifier, from the service's slide list."""
    response = await http.get("/slides")
    assert response.status_code == 200
    return {s["container_id"]: s["id"] for s in response.json()}

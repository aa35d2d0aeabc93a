"""The 0.7.1 user guide's code, verbatim, against both packages and several clients.

The guide's lines are kept as text and executed: on ``dicomslide_sync`` as written (with
``import dicomslide`` bound to the blocking package) and on the async package with ``await``
added where the async API needs it.
"""

from __future__ import annotations

import asyncio
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import dicomslide
import dicomslide_sync
from dicomslide.synthetic import SlideSpec, expected_pixels, write_slide
from tests.support.slides import slide_spec

GUIDE_CLIENT_FILE = "client = dicomweb_client.DICOMfileClient(url='file://{folder}')"

GUIDE_DICOMSLIDE_API = """
import dicomslide
import numpy as np
from matplotlib import pyplot as plt

found_slides = dicomslide.find_slides(client, container_id='S22-ABC-123')
assert len(found_slides) == 1
slide = found_slides[0]

print(slide.num_channels)
print(slide.num_focal_planes)
print(slide.num_levels)
print(slide.total_pixel_matrix_dimensions)
print(slide.downsampling_factors)
print(slide.label_images)
print(slide.get_volume_images(channel_index=0, focal_plane_index=0))

region: np.ndarray = slide.get_image_region(
    pixel_indices=(0, 0),
    level=-1,
    size=(512, 512),
    channel_index=0,
    focal_plane_index=0
)
plt.imshow(region)
plt.show()
"""

SPEC = slide_spec(
    (2048, 3072), 256, 3, transfer_syntax_uid="1.2.840.10008.1.2.5", container_id="S22-ABC-123"
)


@pytest.fixture(scope="module")
def guide_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    write_slide(folder, SPEC)
    # a second slide that the container filter must leave out
    write_slide(folder / "other", SlideSpec(container_id="OTHER", seed=3, size=(300, 300)))
    return folder


def _check(namespace: dict[str, Any]) -> None:
    region = namespace["region"]
    assert isinstance(region, np.ndarray)
    assert region.shape == (512, 512, 3)
    np.testing.assert_array_equal(
        region, expected_pixels(SPEC, 2, 0, 0, slice(0, 512), slice(0, 512))
    )


def _run_guide(code: str, client: Any, module: Any) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    namespace: dict[str, Any] = {"client": client}
    code = code.replace("import dicomslide\n", "")
    namespace["dicomslide"] = module
    with warnings.catch_warnings():
        # plt.show() on the non-interactive backend says so; that is not our concern
        warnings.filterwarnings("ignore", message=".*non-interactive.*")
        exec(compile(code, "user-guide", "exec"), namespace)
    return namespace


def test_guide_runs_verbatim_with_dicomweb_client_file_client(
    guide_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import dicomweb_client

    client_code = GUIDE_CLIENT_FILE.format(folder=guide_folder)
    namespace: dict[str, Any] = {"dicomweb_client": dicomweb_client}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dicomweb_client's own deprecation noise
        exec(client_code, namespace)
    result = _run_guide(GUIDE_DICOMSLIDE_API, namespace["client"], dicomslide_sync)
    _check(result)
    out = capsys.readouterr().out
    assert "((2048, 3072), (1024, 1536), (512, 768))" in out


def test_guide_runs_verbatim_with_our_file_client(guide_folder: Path, tmp_path: Path) -> None:
    client = dicomslide_sync.DICOMfileClient(f"file://{guide_folder}", index_dir=tmp_path)
    _check(_run_guide(GUIDE_DICOMSLIDE_API, client, dicomslide_sync))


def test_guide_runs_with_await_on_the_async_package(guide_folder: Path, tmp_path: Path) -> None:
    code = GUIDE_DICOMSLIDE_API.replace(
        "found_slides = dicomslide.find_slides(", "found_slides = await dicomslide.find_slides("
    ).replace("= slide.get_image_region(", "= await slide.get_image_region(")
    body = "async def guide(client):\n" + textwrap.indent(code, "    ") + "\n    return locals()\n"

    async def main() -> dict[str, Any]:
        client = dicomslide.DICOMfileClient(guide_folder, index_dir=tmp_path)
        namespace: dict[str, Any] = {"dicomslide": dicomslide}
        exec(compile(body.replace("    import dicomslide\n", ""), "guide", "exec"), namespace)
        import matplotlib

        matplotlib.use("Agg")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*non-interactive.*")
            result: dict[str, Any] = await namespace["guide"](client)
        return result

    _check(asyncio.run(main()))

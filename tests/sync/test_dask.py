"""Dask arrays of a level, computed on a LocalCluster with two worker processes."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import dicomslide
import dicomslide_sync
from dicomslide.errors import ArgumentError, RegionError
from dicomslide.synthetic import SlideSpec, expected_pixels, write_slide
from dicomslide_sync.dask_array import to_dask

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[2]
SPEC = SlideSpec(
    size=(900, 1300),
    tile_size=(128, 128),
    levels=2,
    transfer_syntax_uid="1.2.840.10008.1.2.5",  # RLE: lossless
    icc_profile=False,
    seed=41,
)


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dicomslide_sync.Slide]:
    root = tmp_path_factory.mktemp("dask")
    write_slide(root / "slide", SPEC)
    client = dicomslide_sync.DICOMfileClient(root / "slide", index_dir=root / "index")
    yield dicomslide_sync.find_slides(client)[0]
    client.close()


def test_chunks_are_tile_aligned_and_lazy(slide: dicomslide_sync.Slide) -> None:
    array = to_dask(slide, 0, chunks=256)
    assert array.shape == (900, 1300, 3)
    assert array.chunks[0] == (256, 256, 256, 132)
    assert array.chunks[1] == (256,) * 5 + (20,)
    assert slide.cache_stats.requests == 0  # nothing read yet
    assert to_dask(slide, 0).chunks[1] == (1024, 276)
    with pytest.raises(ArgumentError, match="multiple of the tile"):
        to_dask(slide, 0, chunks=(100, 128))
    with pytest.raises(RegionError, match="level"):
        to_dask(slide, 5)
    # the threaded scheduler in this process
    np.testing.assert_array_equal(
        array[300:400, 500:700].compute(), expected_pixels(SPEC, 0)[300:400, 500:700]
    )


def test_an_async_slide_reopens_in_workers_with_its_own_settings(
    slide: dicomslide_sync.Slide,
) -> None:
    # The async slide reads through the sync client, which pickles; its settings differ from
    # the defaults, so a re-open that forgot them would show.
    aslide = dicomslide.Slide(
        slide.client, slide.image_metadata, 3, pyramid_tolerance=0.37, correct_color=False
    )
    array = to_dask(aslide, 1, chunks=256)
    nodes = [v for v in dict(array.dask).values() if isinstance(v, dicomslide_sync.Slide)]
    assert len(nodes) == 1  # the slide is one node of the graph, not one per chunk
    shipped = pickle.loads(pickle.dumps(nodes[0]))
    assert shipped.async_slide is not aslide
    assert (shipped.pyramid_tolerance, shipped.correct_color) == (0.37, False)
    assert shipped.max_frame_cache_size == 3
    assert shipped.client is not slide.client  # re-opened from the pickled client
    np.testing.assert_array_equal(to_dask(shipped, 1, chunks=256).compute(), array.compute())
    np.testing.assert_array_equal(array.compute(), expected_pixels(SPEC, 1))
    shipped.client.close()


def test_dicomslide_does_not_import_the_blocking_layer() -> None:
    code = (
        "import sys, dicomslide, dicomslide.bulk, dicomslide.openslide, dicomslide.slide\n"
        "assert not [m for m in sys.modules if m.startswith('dicomslide_sync')], sys.modules\n"
        "try:\n"
        "    dicomslide.to_dask\n"
        "except AttributeError as error:\n"
        "    assert 'dicomslide_sync.to_dask' in str(error)\n"
        "else:\n"
        "    raise AssertionError('dicomslide.to_dask still exists')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)
    assert dicomslide_sync.to_dask is to_dask


@pytest.mark.slow
def test_local_cluster_with_two_processes(
    slide: dicomslide_sync.Slide, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # workers import this checkout
    direct = {
        level: slide.get_image_region((0, 0), level, slide.total_pixel_matrix_dimensions[level])
        for level in range(slide.num_levels)
    }
    array = to_dask(slide, 0, chunks=256)
    timings = {}
    for workers in (1, 2):
        with (
            distributed.LocalCluster(
                n_workers=workers,
                processes=True,
                threads_per_worker=1,
                dashboard_address=":0",  # any free port: another process may hold 8787
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            started = time.perf_counter()
            result = array.compute()
            timings[workers] = time.perf_counter() - started
            np.testing.assert_array_equal(result, direct[0])
            if workers == 2:
                np.testing.assert_array_equal(to_dask(slide, 1).compute(), direct[1])
                # every chunk was computed by a worker process, not by this one
                assert len(client.scheduler_info()["workers"]) == 2
                means = array.map_blocks(
                    lambda block: block.mean(axis=(0, 1), keepdims=True),
                    chunks=(1, 1, 3),
                    dtype=np.float64,
                ).compute()
                expected = np.array(
                    [
                        [
                            direct[0][r : r + 256, c : c + 256].mean(axis=(0, 1))
                            for c in range(0, 1300, 256)
                        ]
                        for r in range(0, 900, 256)
                    ]
                )
                np.testing.assert_allclose(means, expected)
    print(f"dask compute of level 0: 1 worker {timings[1]:.2f} s, 2 workers {timings[2]:.2f} s")


def test_missing_dask_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    import dicomslide_sync.dask_array as module

    real_import = builtins.__import__

    def no_dask(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("dask"):
            raise ImportError("No module named 'dask'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_dask)
    with pytest.raises(ImportError, match=r"pip install 'dicomslide\[dask\]'"):
        module._import_dask()

"""Each slide of the outside corpus reads as its independent decode, locally and over Orthanc.

The corpus (:mod:`tests.support.corpus`) is made at test time by PixelMed ``TIFFToDicom``
(Debian ``pixelmed-apps``, BSD-3-Clause) from tiled TIFFs written by tifffile,
and by wsidicom 0.36 (PyPI, Apache-2.0) re-encoding those slides into JPEG-LS, HTJ2K, JPEG 2000,
RLE, JPEG lossless, JPEG and JPEG XL, in 8-bit RGB and 16-bit MONOCHROME2; PixelMed adds
deflated transfer syntax, copied JPEG tiles and a three-channel 16-bit fluorescence slide;
DCMTK re-encodes them too (12-bit JPEG extended among others) and OrthancWSIDicomizer adds
TILED_SPARSE slides.  No file is committed; the build is cached in pytest's cache folder.

Over Orthanc the slides are read with dicomslide's client and, for those whose frames
Orthanc 1.10 refuses (HTJ2K, JPEG XL, deflated), with ``dicomweb_client`` too.  A region
across the right/bottom edge must hold the fill value, also where the writer padded edge frames
with something else (tifffile pads with 0: 23 of the colour entries).

The reference decodes each frame with pydicom (imagecodecs for JPEG XL, which pydicom 3.0
cannot decode) and places it by its position (TILED_FULL order here).  dicomslide reads each
whole level with ``get_image_region``; lossless entries must be equal, and equal to the
picture written into the TIFF at level 0; lossy entries may differ by the entry's
``max_diff`` (colour-conversion rounding of two decoders of one codestream).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest

import dicomslide_sync
from tests.support.corpus import (
    CORPUS,
    build_entry,
    decode_reference_frame,
    find_dcmtk,
    find_tiff_to_dicom,
    reference_planes,
    source_planes,
)
from tests.support.orthanc import OrthancServer, find_dicomweb_plugin, find_orthanc
from tests.support.system import require

pytestmark = pytest.mark.integration

NAMES = sorted(CORPUS)


@pytest.fixture(scope="module")
def corpus_root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    require(find_tiff_to_dicom(), "PixelMed TIFFToDicom (Debian package pixelmed-apps)")
    pytest.importorskip("wsidicom")
    pytest.importorskip("tifffile")
    cache = getattr(request.config, "cache", None)
    return Path(cache.mkdir("fidelity-corpus")) if cache else tmp_path_factory.mktemp("corpus")


def _require_writer(name: str) -> None:
    """Skip (fail on CI) when a tool an entry, or the entry it starts from, needs is missing."""
    entry = CORPUS[name]
    if entry.writer == "dcmtk":
        require(find_dcmtk(), "DCMTK (Debian package dcmtk)")
    if entry.transcoding is not None:
        from wsidicom.codec import settings

        if not hasattr(settings, entry.transcoding[0]):
            pytest.skip(f"this wsidicom has no {entry.transcoding[0]} (wsidicom >= 0.36 has)")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    require(find_orthanc(), "Orthanc (Debian package orthanc)")
    require(find_dicomweb_plugin(), "the Orthanc DICOMweb plugin (orthanc-dicomweb)")
    with OrthancServer(workdir=tmp_path_factory.mktemp("orthanc-corpus")) as server:
        yield server


@pytest.fixture
def empty_orthanc(orthanc: OrthancServer) -> Iterator[OrthancServer]:
    """The server, emptied after the test.

    wsidicom keeps the study, frame of reference and container of the slide it re-encodes, so
    two entries in one server would be one slide with two copies of each level.
    """
    yield orthanc
    with orthanc.client() as http:
        for study in http.get("/studies").json():
            http.delete(f"/studies/{study}").raise_for_status()


@functools.cache
def _references(folder: Path) -> dict[tuple[int, int], dict[tuple[str, int], np.ndarray]]:
    """Reference planes of every VOLUME instance, keyed by level size (rows, columns).

    Cached for the session (~3 MB a slide): three tests compare with the same decode.
    """
    levels: dict[tuple[int, int], dict[tuple[str, int], np.ndarray]] = {}
    for path in sorted(folder.glob("*.dcm")):
        header = pydicom.dcmread(path, stop_before_pixels=True)
        if "VOLUME" not in header.ImageType:
            continue
        size = (int(header.TotalPixelMatrixRows), int(header.TotalPixelMatrixColumns))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Parts of a concatenation paste their frames into the same planes.
            reference_planes(path, into=levels.setdefault(size, {}))
    return levels


def _compare(
    slide: dicomslide_sync.Slide,
    references: dict[tuple[int, int], dict[tuple[str, int], np.ndarray]],
    max_diff: int,
) -> int:
    """Assert every plane of every level against its reference; return the checks made."""
    dims = list(slide.total_pixel_matrix_dimensions)
    assert sorted(dims) == sorted(references), (dims, sorted(references))
    checks = 0
    for size, planes in references.items():
        level = dims.index(size)
        assert slide.num_channels == len({path for path, _ in planes})
        for (path_id, z), expected in planes.items():
            channel = slide.get_channel_index(path_id)
            got = slide.get_image_region((0, 0), level, size, channel, z)
            assert got.dtype == expected.dtype, (size, path_id, got.dtype, expected.dtype)
            got = got.reshape(expected.shape)
            diff = np.abs(got.astype(np.int64) - expected.astype(np.int64))
            assert diff.max() <= max_diff, (size, path_id, int(diff.max()), float(diff.mean()))
            checks += 1
    return checks


def _one_slide(slides: list[dicomslide_sync.Slide]) -> dicomslide_sync.Slide:
    assert len(slides) == 1, [s.container_id for s in slides]
    return slides[0]


def _assert_matches_source(corpus_root: Path, name: str, folder: Path) -> None:
    entry = CORPUS[name]
    origin = CORPUS[entry.source] if entry.source else entry
    kind = origin.extra.get("kind", "rgb")
    expected = source_planes(corpus_root, kind)
    level0 = _references(folder)[expected[0].shape[:2]]
    assert len(level0) == len(expected)
    for (_, _), plane in level0.items():
        assert any(np.array_equal(plane, source) for source in expected)


@pytest.mark.parametrize("name", NAMES)
def test_corpus_local_matches_pydicom(name: str, corpus_root: Path, tmp_path: Path) -> None:
    _require_writer(name)
    folder = build_entry(corpus_root, name)
    references = _references(folder)
    entry = CORPUS[name]
    if entry.matches_source:
        # The reference itself must be right for a lossless file: it is the TIFF's picture.
        _assert_matches_source(corpus_root, name, folder)
    # Closed explicitly: a deflated file is read from an inflated temporary copy.
    with dicomslide_sync.DICOMfileClient(folder, index_dir=tmp_path / "index") as client:
        slide = _one_slide(dicomslide_sync.find_slides(client))
        assert _compare(slide, references, entry.max_diff) >= 1


def _upload_entry(corpus_root: Path, name: str, orthanc: OrthancServer) -> tuple[Path, str]:
    """Build a corpus entry and store it in ``orthanc``: its folder and Study Instance UID."""
    _require_writer(name)
    folder = build_entry(corpus_root, name)
    files = sorted(folder.glob("*.dcm"))
    orthanc.upload(files)
    return folder, str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


@pytest.mark.parametrize("name", NAMES)
def test_corpus_dicomweb_matches_pydicom(
    name: str, corpus_root: Path, empty_orthanc: OrthancServer
) -> None:
    folder, study = _upload_entry(corpus_root, name, empty_orthanc)
    # dicomslide's own client: Orthanc 1.10 answers 500 to frame requests of transfer
    # syntaxes it does not know (HTJ2K, JPEG XL, and deflated data sets), and this client
    # then reads the whole instance (dicomweb_client has no such fallback).
    with dicomslide_sync.DICOMwebClient(empty_orthanc.dicomweb_url) as web:
        slide = _one_slide(dicomslide_sync.find_slides(web, study_instance_uid=study))
        assert _compare(slide, _references(folder), CORPUS[name].max_diff) >= 1


def _padding_differs_from_fill(folder: Path, fill: int) -> bool:
    """Whether a level-0 frame carries, past the image edge, samples other than ``fill``."""
    headers = [(p, pydicom.dcmread(p, stop_before_pixels=True)) for p in folder.glob("*.dcm")]
    volumes = [(p, h) for p, h in headers if "VOLUME" in h.ImageType]
    level0 = max(int(h.TotalPixelMatrixRows) for _, h in volumes)
    for path, header in volumes:
        if int(header.TotalPixelMatrixRows) != level0:
            continue
        ds = pydicom.dcmread(path)
        rows, cols = int(ds.TotalPixelMatrixRows), int(ds.TotalPixelMatrixColumns)
        tile_rows, tile_cols = int(ds.Rows), int(ds.Columns)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for index in range(int(ds.NumberOfFrames)):
                r0, c0 = _frame_origin(ds, index)
                if r0 + tile_rows <= rows and c0 + tile_cols <= cols:
                    continue  # no padding in this frame
                frame = decode_reference_frame(ds, index)
                if (frame[rows - r0 :] != fill).any() or (frame[:, cols - c0 :] != fill).any():
                    return True
    return False


def _frame_origin(ds: pydicom.Dataset, index: int) -> tuple[int, int]:
    """(row, column) of a frame's top-left pixel, by position or in TILED_FULL order."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None:
        position = per_frame[index].PlanePositionSlideSequence[0]
        return (
            int(position.RowPositionInTotalImagePixelMatrix) - 1,
            int(position.ColumnPositionInTotalImagePixelMatrix) - 1,
        )
    per_row = -(-int(ds.TotalPixelMatrixColumns) // int(ds.Columns))
    per_plane = per_row * -(-int(ds.TotalPixelMatrixRows) // int(ds.Rows))
    tile = (int(ds.get("ConcatenationFrameOffsetNumber", 0) or 0) + index) % per_plane
    return (tile // per_row) * int(ds.Rows), (tile % per_row) * int(ds.Columns)


@pytest.mark.parametrize("name", NAMES)
def test_corpus_region_across_the_edge_is_filled(
    name: str, corpus_root: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Past the right and bottom edges a region holds the fill value, not the frames' padding."""
    _require_writer(name)
    folder = build_entry(corpus_root, name)
    with dicomslide_sync.DICOMfileClient(folder, index_dir=tmp_path / "index") as client:
        slide = _one_slide(dicomslide_sync.find_slides(client))
        rows, cols = slide.total_pixel_matrix_dimensions[0]
        colour = slide.get_image_region((0, 0), 0, (1, 1)).shape[-1] == 3
        fill = 255 if colour else 0
        # Record which writers pad with something else: those are the cases this test is for.
        request.node.user_properties.append(
            ("padding_differs_from_fill", _padding_differs_from_fill(folder, fill))
        )
        region = slide.get_image_region((rows - 40, cols - 60), 0, (140, 160))
    expected = _references(folder)[(rows, cols)]
    inside = next(iter(expected.values()))[rows - 40 :, cols - 60 :]
    diff = np.abs(region[:40, :60].reshape(inside.shape).astype(np.int64) - inside)
    assert diff.max() <= CORPUS[name].max_diff, (name, int(diff.max()))
    assert (region[40:] == fill).all()
    assert (region[:, 60:] == fill).all()


# Orthanc 1.10 cannot cut frames out of these (500); one it can, for comparison.
FOREIGN_CLIENT_NAMES = sorted(
    n for n in NAMES if any(k in n for k in ("htj2k", "jpegxl", "deflated", "pixelmed-rgb-jpeg"))
)


@pytest.mark.parametrize("name", FOREIGN_CLIENT_NAMES)
def test_corpus_through_dicomweb_client_matches_pydicom(
    name: str, corpus_root: Path, empty_orthanc: OrthancServer
) -> None:
    """The same over ``dicomweb_client.DICOMwebClient``, whose refused frames come whole."""
    import dicomweb_client

    folder, study = _upload_entry(corpus_root, name, empty_orthanc)
    web = dicomweb_client.DICOMwebClient(url=empty_orthanc.dicomweb_url)
    slide = _one_slide(dicomslide_sync.find_slides(web, study_instance_uid=study))
    assert _compare(slide, _references(folder), CORPUS[name].max_diff) >= 1

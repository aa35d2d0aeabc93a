"""openslide-python's contract beyond pixels, held against real OpenSlide 4 on the same files.

Every expectation comes from ``openslide.OpenSlide`` opened on the same DICOM file: what it
returns for levels that do not exist, which errors it raises and when, its mappings' reprs and
their behaviour after ``close()``, ``OpenSlideCache``/``set_cache``, ``detect_format``, the
``dicom.*`` properties of multi-valued attributes of every string VR, and its colour profiles.
"""

from __future__ import annotations

import ctypes
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageCms
from pydicom.datadict import tag_for_keyword
from pydicom.uid import ExplicitVRLittleEndian

import dicomslide
import dicomslide_sync
from dicomslide import _openslide_compat
from dicomslide.errors import DicomSlideError, NotFoundError, RegionError, UsageError
from dicomslide.synthetic import SlideSpec, write_slide
from dicomslide_sync.openslide import OpenSlide, OpenSlideCache, open_slide
from tests.support.icc import srgb_profile, wide_gamut_profile
from tests.support.slides import slide_spec

openslide = pytest.importorskip("openslide")

SPEC = slide_spec(
    (600, 900),
    128,
    3,
    thumbnail=True,
    transfer_syntax_uid=ExplicitVRLittleEndian,
    container_id="CONTRACT",
)

# Two values of every string VR (and some binary-number VRs) in the header, to pin down how
# OpenSlide names and formats multi-valued attributes.
MULTI_VALUED: list[tuple[str, str, list[Any]]] = [
    ("SoftwareVersions", "LO", ["v1.2", "Tue Oct  4 18:39:42 EDT 2022"]),
    ("StationName", "SH", ["s1", "s2"]),
    ("OperatorsName", "PN", ["A^B", "C^D"]),
    ("CalibrationDate", "DA", ["20200101", "20210101"]),
    ("CalibrationTime", "TM", ["101010", "111111"]),
    ("FrameAcquisitionDateTime", "DT", ["20200101101010", "20200101101011"]),
    ("ReferencedFrameNumber", "IS", ["1", "2"]),
    ("PatientWeight", "DS", ["1.50", "2"]),
    ("RetrieveAETitle", "AE", ["AE1", "AE2"]),
    ("PatientAge", "AS", ["010Y", "011Y"]),
    ("SOPClassesSupported", "UI", ["1.2.3", "1.2.4"]),
    ("DerivationDescription", "ST", ["p\\q"]),
    ("PixelDataProviderURL", "UR", ["http://example.invalid/a"]),
    ("LongCodeValue", "UC", ["u1", "u2"]),
    ("TextValue", "UT", ["t1\\t2"]),
    ("RecommendedDisplayFrameRateInFloat", "FL", [1.5, 2.25]),
    ("TimeRange", "FD", [0.1, 3.0]),
    ("SimpleFrameList", "UL", [1, 2, 3]),
    ("FrameIncrementPointer", "AT", [0x00180050, 0x00200013]),
    ("SeriesDescription", "LO", ["a\\\\b"]),  # an empty value between two backslashes
]


def _write(folder: Path, spec: SlideSpec, *, extra: bool = True) -> list[Path]:
    files = write_slide(folder, spec)
    profile = wide_gamut_profile()  # one object: its header carries the time it was made
    for path in files:
        ds = pydicom.dcmread(path)
        for item in ds.get("OpticalPathSequence", []):
            if "ICCProfile" in item:
                item.ICCProfile = profile
        if extra:
            for keyword, vr, values in MULTI_VALUED:
                ds.add_new(tag_for_keyword(keyword), vr, values if len(values) > 1 else values[0])
        ds.save_as(path)
    return files


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return _write(tmp_path_factory.mktemp("contract") / "slide", SPEC)


@pytest.fixture(scope="module")
def pair(files: list[Path]) -> Iterator[tuple[Any, OpenSlide]]:
    reference = openslide.OpenSlide(str(files[0]))
    ours = open_slide(files[0].parent, correct_color=False)
    yield reference, ours
    ours.close()
    reference.close()


def _raises(call: Any) -> BaseException | None:
    try:
        call()
    except BaseException as exc:
        return exc
    return None


def test_levels_that_do_not_exist_read_as_transparent(pair: tuple[Any, OpenSlide]) -> None:
    ref, ours = pair
    n = ref.level_count
    for level in [n, n + 5, -1, -7]:
        for size in [(100, 100), (400, 0), (3, 7)]:
            expected = ref.read_region((0, 0), level, size)
            got = ours.read_region((0, 0), level, size)
            assert (got.mode, got.size) == (expected.mode, expected.size) == ("RGBA", size)
            np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
            assert not np.asarray(got).any()
            assert got.info["icc_profile"] == expected.info["icc_profile"]


def test_zero_height_on_a_one_level_slide(tmp_path: Path) -> None:
    paths = write_slide(tmp_path, SlideSpec(size=(300, 200), levels=1, label=False))
    ref = openslide.OpenSlide(str(paths[0]))
    with open_slide(tmp_path) as ours:
        assert ours.level_count == ref.level_count == 1
        for level in (0, 1):
            assert ours.read_region((0, 0), level, (400, 0)).size == (400, 0)
            assert ref.read_region((0, 0), level, (400, 0)).size == (400, 0)
    ref.close()


def test_negative_size_is_an_openslide_error(pair: tuple[Any, OpenSlide]) -> None:
    ref, ours = pair
    for size in [(400, -5), (-1, 4)]:
        assert isinstance(
            _raises(lambda s=size: ref.read_region((0, 0), 1, s)), openslide.OpenSlideError
        )
        exc = _raises(lambda s=size: ours.read_region((0, 0), 1, s))
        assert isinstance(exc, openslide.OpenSlideError)
        assert isinstance(exc, RegionError)
        assert isinstance(exc, ValueError)
        assert isinstance(exc, DicomSlideError)
        assert str(size) in str(exc)
        assert "negative" in str(exc)


def test_open_errors_are_unsupported_format_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    text = tmp_path / "notes.txt"
    text.write_text("not a slide")
    ref_exc = _raises(lambda: openslide.OpenSlide(str(text)))
    assert isinstance(ref_exc, openslide.OpenSlideUnsupportedFormatError)
    for target in (tmp_path / "empty", text):
        exc = _raises(lambda t=target: OpenSlide(t))
        assert isinstance(exc, openslide.OpenSlideUnsupportedFormatError), exc
        assert isinstance(exc, NotFoundError)


def test_without_openslide_python_errors_are_only_ours(
    pair: tuple[Any, OpenSlide], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, ours = pair
    # As if openslide-python were not installed: nothing to mix in.
    monkeypatch.setattr(_openslide_compat, "_openslide_checked", True)
    monkeypatch.setattr(_openslide_compat, "_openslide_module", None)
    exc = _raises(lambda: ours.read_region((0, 0), 0, (1, -1)))
    assert type(exc) is RegionError


def test_mappings_fail_after_close_like_openslide(files: list[Path]) -> None:
    ref = openslide.OpenSlide(str(files[0]))
    ours = open_slide(files[0].parent, correct_color=False)
    handles = []
    for osr in (ref, ours):
        handles.append((osr, osr.properties, osr.associated_images))
        osr.close()
    for osr, props, associated in handles:
        calls = [
            lambda o=osr: o.read_region((0, 0), 0, (10, 10)),
            lambda o=osr: o.level_count,
            lambda p=props: p["openslide.vendor"],
            lambda a=associated: a["label"],
        ]
        for call in calls:
            exc = _raises(call)
            assert isinstance(exc, ctypes.ArgumentError), (osr, exc)
            if osr is ours:
                assert isinstance(exc, UsageError)
                assert "closed" in str(exc)
    for call in (lambda: len(handles[1][1]), lambda: list(handles[1][2])):
        assert isinstance(_raises(call), UsageError)


def _mangle(text: str) -> str:
    return re.sub("0x[0-9a-fA-F]+", "(mangled)", text)


def test_reprs_of_the_mappings_equal_openslides(pair: tuple[Any, OpenSlide]) -> None:
    ref, ours = pair
    props = ours.properties
    assert type(props).__name__ == type(ref.properties).__name__ == "_PropertyMap"
    assert repr(props) == f"<_PropertyMap {dict(props)!r}>"
    assert len(list(props)) == len(props)
    images = ours.associated_images
    assert type(images).__name__ == type(ref.associated_images).__name__
    assert list(images) == list(ref.associated_images) == ["label", "macro", "thumbnail"]
    assert _mangle(repr(images)) == _mangle(repr(ref.associated_images))
    assert _mangle(repr(images)).startswith("<_AssociatedImageMap {'label': <PIL.Image.Image")
    with pytest.raises(KeyError):
        images["__missing"]
    with pytest.raises(KeyError):
        props["__does_not_exist"]


def test_opencache_arguments_like_openslide(pair: tuple[Any, OpenSlide]) -> None:
    ref, ours = pair
    for capacity in (0, 1, 4 << 20):
        assert repr(OpenSlideCache(capacity)) == repr(openslide.OpenSlideCache(capacity))
    for capacity in (-1, 1.3):
        assert isinstance(
            _raises(lambda c=capacity: openslide.OpenSlideCache(c)), ctypes.ArgumentError
        )
        exc = _raises(lambda c=capacity: OpenSlideCache(c))
        assert isinstance(exc, ctypes.ArgumentError)
        assert isinstance(exc, RegionError)
        assert str(capacity) in str(exc)
    for bad in (None, 3, openslide.OpenSlideCache(10)):
        if not isinstance(bad, openslide.OpenSlideCache):
            assert isinstance(_raises(lambda b=bad: ref.set_cache(b)), TypeError)
        exc = _raises(lambda b=bad: ours.set_cache(b))
        assert isinstance(exc, TypeError)
        assert isinstance(exc, DicomSlideError)


def test_shared_cache_keeps_decoded_tiles_within_its_capacity(files: list[Path]) -> None:
    folder = files[0].parent
    ref = openslide.OpenSlide(str(files[0]))
    tile_bytes = 128 * 128 * 3
    cache = OpenSlideCache(64 << 20)
    first = open_slide(folder, correct_color=False)
    second = open_slide(folder, correct_color=False)
    try:
        first.set_cache(cache)
        second.set_cache(cache)
        region = ((0, 0), 0, ref.dimensions)  # every tile of level 0: 8 x 5 of 128 px
        assert ref.dimensions == (900, 600)
        np.testing.assert_array_equal(
            np.asarray(first.read_region(*region)), np.asarray(ref.read_region(*region))
        )
        assert cache.tiles.bytes == 40 * tile_bytes
        assert cache.tiles.hits == 0
        # Another object with its own client: every tile comes from the shared cache.
        np.testing.assert_array_equal(
            np.asarray(second.read_region(*region)), np.asarray(ref.read_region(*region))
        )
        assert cache.tiles.hits == 40
        small = OpenSlideCache(3 * tile_bytes)
        first.set_cache(small)
        first.read_region(*region)
        assert small.tiles.bytes == 3 * tile_bytes
        assert small.tiles.evictions == 37
        assert cache.tiles.hits == 40  # no longer used by the first object
    finally:
        first.close()
        second.close()
        ref.close()


def test_detect_format_answers_like_openslide(files: list[Path], tmp_path: Path) -> None:
    png = tmp_path / "picture.png"
    Image.new("RGB", (8, 8)).save(png)
    other = tmp_path / "ct.dcm"
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.save_as(other)
    cases = [*files, png, tmp_path / "missing.dcm", other]
    for path in cases:
        expected = openslide.OpenSlide.detect_format(str(path))
        assert OpenSlide.detect_format(path) == expected, path
        assert dicomslide.OpenSlide.detect_format(str(path)) == expected, path
    assert {OpenSlide.detect_format(p) for p in files} == {"dicom"}
    # Deliberate difference: a folder that holds a slide is something we open.
    assert openslide.OpenSlide.detect_format(str(files[0].parent)) is None
    assert OpenSlide.detect_format(files[0].parent) == "dicom"
    # A folder of other files (a PNG, a CT image) is not.
    assert OpenSlide.detect_format(tmp_path) is None


def test_open_one_file_like_openslide(tmp_path: Path) -> None:
    # Two slides' files in one folder: a file opens the slide (series) it belongs to.
    a = write_slide(tmp_path / "a", SlideSpec(size=(300, 400), levels=2, container_id="A", seed=1))
    b = write_slide(tmp_path / "b", SlideSpec(size=(500, 200), levels=3, container_id="B", seed=2))
    both = tmp_path / "both"
    both.mkdir()
    for path in [*a, *b]:
        shutil.copy(path, both / f"{path.parent.name}-{path.name}")
    for name in (f"a-{a[0].name}", f"b-{b[-1].name}"):
        path = str(both / name)
        ref = openslide.OpenSlide(path)
        with OpenSlide(path) as ours:
            assert repr(ours) == repr(ref) == f"OpenSlide({path!r})"
            assert ours.level_dimensions == ref.level_dimensions
            assert (
                ours.properties["dicom.SeriesInstanceUID"]
                == ref.properties["dicom.SeriesInstanceUID"]
            )
            np.testing.assert_array_equal(
                np.asarray(ours.read_region((-3, 5), 1, (120, 80))),
                np.asarray(ref.read_region((-3, 5), 1, (120, 80))),
            )
        ref.close()


def test_every_dicom_property_equals_openslides(pair: tuple[Any, OpenSlide]) -> None:
    ref, ours = pair
    expected = {k: v for k, v in ref.properties.items() if k.startswith("dicom.")}
    got = {k: v for k, v in ours.properties.items() if k.startswith("dicom.")}
    assert sorted(got) == sorted(expected)
    assert {k: got[k] for k in got if got[k] != expected[k]} == {}
    # What that means for the interesting attributes, spelled out.
    assert got["dicom.SoftwareVersions"] == "v1.2\\Tue Oct  4 18:39:42 EDT 2022"
    assert got["dicom.SeriesDescription"] == "a\\\\b"
    assert got["dicom.StationName[1]"] == "s2"
    assert got["dicom.PatientWeight[0]"] == "1.50"
    assert got["dicom.FrameIncrementPointer[3]"] == str(0x0013)


def _unstamped(data: bytes) -> bytes:
    # Serialising a profile stamps the current time into its header (bytes 24-35).
    return data[:24] + bytes(12) + data[36:]


def _profile_bytes(profile: ImageCms.ImageCmsProfile) -> bytes:
    return _unstamped(profile.tobytes())


def test_color_profile_uncorrected_is_openslides(
    pair: tuple[Any, OpenSlide], files: list[Path]
) -> None:
    ref, ours = pair
    stored = bytes(pydicom.dcmread(files[0]).OpticalPathSequence[0].ICCProfile)
    assert _profile_bytes(ref.color_profile) == _profile_bytes(ours.color_profile)
    assert ref.color_profile.profile.red_colorant == ours.color_profile.profile.red_colorant
    assert ref.read_region((0, 0), 0, (1, 1)).info["icc_profile"] == stored
    region = ((10, 20), 0, (50, 40))
    np.testing.assert_array_equal(
        np.asarray(ours.read_region(*region)), np.asarray(ref.read_region(*region))
    )
    assert ours.read_region(*region).info["icc_profile"] == stored
    assert ours.get_thumbnail((64, 64)).info["icc_profile"] == stored
    ref_images = ref.associated_images
    images = ours.associated_images
    main = ours.read_region(*region).info["icc_profile"]
    ref_main = ref.read_region(*region).info["icc_profile"]
    shared = 0
    for key, image in ref_images.items():
        got = images[key]
        expected_profile = image.info.get("icc_profile")
        assert got.info.get("icc_profile") == expected_profile, key
        # openslide-python hands out the main profile object itself when they are equal.
        assert (got.info.get("icc_profile") is main) == (expected_profile is ref_main), key
        shared += expected_profile is ref_main
    assert shared == 3
    assert ours.properties["openslide.icc-size"] == ref.properties["openslide.icc-size"]


def test_color_corrected_default_reports_srgb(files: list[Path]) -> None:
    ref = openslide.OpenSlide(str(files[0]))
    with open_slide(files[0].parent) as ours:
        srgb = srgb_profile()
        assert _profile_bytes(ours.color_profile) == _profile_bytes(
            ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        )
        region = ((10, 20), 0, (50, 40))
        got = ours.read_region(*region)
        assert _unstamped(got.info["icc_profile"]) == _unstamped(srgb)
        for image in ours.associated_images.values():
            assert image.info["icc_profile"] is got.info["icc_profile"]
        # Our pixels are OpenSlide's converted from the slide's profile to sRGB.
        raw = ref.read_region(*region).convert("RGB")
        transform = ImageCms.buildTransform(
            ref.color_profile,
            ImageCms.createProfile("sRGB"),
            "RGB",
            "RGB",
            renderingIntent=ImageCms.Intent.PERCEPTUAL,
        )
        converted = np.asarray(ImageCms.applyTransform(raw, transform)).astype(int)
        ours_rgb = np.asarray(got.convert("RGB")).astype(int)
        assert np.abs(ours_rgb - np.asarray(raw).astype(int)).max() > 3
        assert np.abs(ours_rgb - converted).max() <= 1
    ref.close()


def test_read_errors_are_openslide_errors_but_do_not_latch(tmp_path: Path) -> None:
    from pydicom.encaps import encapsulate, generate_frames

    from dicomslide.errors import DecodeError

    spec = slide_spec((512, 512), 256, 1, bare=True)
    files = write_slide(tmp_path, spec)
    ds = pydicom.dcmread(files[0])
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    frames[0] = b"\xff\xd8\xff\xe0 not a JPEG stream" + bytes(10)  # top left tile
    ds.PixelData = encapsulate(frames, has_bot=True)
    ds.save_as(files[0])
    ref = openslide.OpenSlide(str(files[0]))
    assert isinstance(
        _raises(lambda: ref.read_region((0, 0), 0, (10, 10))), openslide.OpenSlideError
    )
    # OpenSlide latches the error: the handle is dead from now on.
    assert isinstance(
        _raises(lambda: ref.properties["openslide.vendor"]), openslide.OpenSlideError
    )
    ref.close()
    with open_slide(tmp_path, correct_color=False) as ours:
        exc = _raises(lambda: ours.read_region((0, 0), 0, (10, 10)))
        assert isinstance(exc, openslide.OpenSlideError)
        assert isinstance(exc, DecodeError)
        assert "frame 1" in str(exc)
        # Deliberately no latch (README): other tiles and the metadata still work.
        assert ours.properties["openslide.vendor"] == "dicom"
        assert np.asarray(ours.read_region((300, 300), 0, (10, 10)))[..., 3].min() == 255


def test_open_options_only_with_a_path(files: list[Path]) -> None:
    sync_client = dicomslide_sync.DICOMfileClient(files[0].parent)
    slide = dicomslide_sync.find_slides(sync_client)[0]
    with pytest.raises(RegionError, match="correct_color") as info:
        OpenSlide(slide, correct_color=False)
    assert isinstance(info.value, openslide.OpenSlideError)
    with OpenSlide(str(files[0]), correct_color=False) as osr:
        assert osr.level_count == SPEC.num_levels

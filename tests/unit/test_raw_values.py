"""Values read from raw element bytes (to open slides quickly) equal what pydicom converts."""

from __future__ import annotations

import copy
import struct
import warnings
from io import BytesIO
from typing import Any

import pydicom
import pytest
from hypothesis import given, settings, strategies as st
from pydicom import Dataset
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from dicomslide import codecs, coordinates, geometry, pyramid, slide, utils
from dicomslide.coordinates import ImageGeometry
from dicomslide.errors import DicomSlideError
from dicomslide.perframe import (
    UNSURE,
    _scan_z_values,
    _scan_z_values_all,
    extract_frame_positions,
    extract_z_offsets,
    first_item_decimals,
    get_value,
)

_SHARED = 0x52009229
_PER_FRAME = 0x52009230
_PIXEL_MEASURES = 0x00289110
_PIXEL_SPACING = 0x00280030
_PLANE_POSITION = 0x0048021A
_ORIGIN = 0x00480008
_X = 0x0040072A
_Z = 0x0040074A
_ORIENTATION = 0x00480102

LAYOUTS = [
    pytest.param(False, True, id="explicit"),
    pytest.param(True, True, id="implicit"),
    pytest.param(False, False, id="big-endian"),
]


def encode(ds: Dataset, *, implicit: bool = False, little: bool = True) -> Dataset:
    """``ds`` written and read back, so that its elements are raw as in a file just read."""
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit
    fp.is_little_endian = little
    write_dataset(fp, ds)
    return read_dataset(BytesIO(fp.getvalue()), implicit, little)


def converted(ds: Dataset) -> Dataset:
    """A copy with every element converted by pydicom (the raw fast paths do not apply)."""
    out = copy.deepcopy(ds)
    out.walk(lambda _ds, _elem: None)
    return out


def item(**kwargs: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in kwargs.items():
        setattr(ds, keyword, value)
    return ds


def image(**kwargs: Any) -> Dataset:
    ds = item(
        Rows=256,
        Columns=256,
        SamplesPerPixel=3,
        BitsAllocated=8,
        BitsStored=8,
        PixelRepresentation=0,
        PhotometricInterpretation="RGB",
        TotalPixelMatrixRows=1000,
        TotalPixelMatrixColumns=1500,
        NumberOfFrames=24,
        StudyInstanceUID="1.2.3",
        SeriesInstanceUID="1.2.3.4",
        SOPInstanceUID="1.2.3.4.5",
        SOPClassUID="1.2.840.10008.5.1.4.1.1.77.1.6",
        ImageType=["DERIVED", "PRIMARY", "VOLUME", "NONE"],
        ImageOrientationSlide=[0, -1, 0, -1, 0, 0],
        TotalPixelMatrixOriginSequence=[
            item(XOffsetInSlideCoordinateSystem="20.5", YOffsetInSlideCoordinateSystem="40")
        ],
        SharedFunctionalGroupsSequence=[
            item(PixelMeasuresSequence=[item(PixelSpacing=["0.00025", "0.0005"])])
        ],
        PerFrameFunctionalGroupsSequence=[
            item(
                PlanePositionSlideSequence=[
                    item(
                        ZOffsetInSlideCoordinateSystem="1.25",
                        RowPositionInTotalImagePixelMatrix=1,
                        ColumnPositionInTotalImagePixelMatrix=1,
                    )
                ]
            )
        ],
    )
    for keyword, value in kwargs.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def outcome(function: Any, *args: Any) -> Any:
    """The result of a call, or the type and message of what it raised."""
    try:
        return function(*args)
    except (DicomSlideError, TypeError, ValueError) as exc:
        return type(exc), str(exc)


# --------------------------------------------------------------------------------------------
# Tag constants


@pytest.mark.parametrize(
    ("module", "prefix"),
    [(coordinates, "_"), (geometry, "_"), (slide, "_"), (utils, "_")],
)
def test_tag_constants_match_the_dictionary(module: Any, prefix: str) -> None:
    # The constants are spelled out for speed; a typo would silently read another attribute.
    names = {
        "_SHARED_FUNCTIONAL_GROUPS": "SharedFunctionalGroupsSequence",
        "_PER_FRAME_FUNCTIONAL_GROUPS": "PerFrameFunctionalGroupsSequence",
        "_PIXEL_MEASURES": "PixelMeasuresSequence",
        "_PIXEL_SPACING": "PixelSpacing",
        "_PLANE_ORIENTATION": "PlaneOrientationSequence",
        "_IMAGE_ORIENTATION_SLIDE": "ImageOrientationSlide",
        "_PLANE_POSITION_SLIDE": "PlanePositionSlideSequence",
        "_TOTAL_PIXEL_MATRIX_ORIGIN": "TotalPixelMatrixOriginSequence",
        "_X_OFFSET": "XOffsetInSlideCoordinateSystem",
        "_Y_OFFSET": "YOffsetInSlideCoordinateSystem",
        "_Z_OFFSET": "ZOffsetInSlideCoordinateSystem",
        "_SOP_INSTANCE_UID": "SOPInstanceUID",
        "_SOP_CLASS_UID": "SOPClassUID",
        "_STUDY_INSTANCE_UID": "StudyInstanceUID",
        "_SERIES_INSTANCE_UID": "SeriesInstanceUID",
        "_FRAME_OF_REFERENCE_UID": "FrameOfReferenceUID",
        "_CONTAINER_IDENTIFIER": "ContainerIdentifier",
        "_CONCATENATION_UID": "ConcatenationUID",
        "_OPTICAL_PATH_SEQUENCE": "OpticalPathSequence",
        "_OPTICAL_PATH_IDENTIFIER": "OpticalPathIdentifier",
        "_DIMENSION_ORGANIZATION_TYPE": "DimensionOrganizationType",
        "_NUMBER_OF_FRAMES": "NumberOfFrames",
        "_ROWS": "Rows",
        "_COLUMNS": "Columns",
        "_BITS_ALLOCATED": "BitsAllocated",
        "_SAMPLES_PER_PIXEL": "SamplesPerPixel",
        "_TOTAL_PIXEL_MATRIX_ROWS": "TotalPixelMatrixRows",
        "_TOTAL_PIXEL_MATRIX_COLUMNS": "TotalPixelMatrixColumns",
        "_IMAGE_TYPE": "ImageType",
    }
    found = 0
    for name, keyword in names.items():
        if hasattr(module, name):
            assert getattr(module, name) == tag_for_keyword(keyword), name
            found += 1
    assert found
    for keyword, tag in [*slide._REQUIRED_UIDS, *slide._POSITIVE_INTS]:
        assert tag == tag_for_keyword(keyword)


def test_pixel_format_and_pyramid_read_the_right_tags() -> None:
    ds = encode(image())
    fmt = codecs.PixelFormat.from_dataset(ds)
    assert (fmt.rows, fmt.columns, fmt.samples_per_pixel) == (256, 256, 3)
    assert (fmt.bits_allocated, fmt.bits_stored, fmt.pixel_representation) == (8, 8, 0)
    assert fmt.photometric_interpretation == "RGB"
    assert pyramid._dims(ds) == (1000, 1500)


# --------------------------------------------------------------------------------------------
# get_value


@pytest.mark.parametrize(("implicit", "little"), LAYOUTS)
@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("Rows", 512),
        ("TotalPixelMatrixRows", 98304),
        ("NumberOfFrames", "5293"),
        ("NumberOfFrames", "0"),
        ("NumberOfFrames", "-3"),
        ("NumberOfFrames", " 12"),  # leading space: pydicom decides
        ("NumberOfFrames", "012"),
        ("SOPInstanceUID", "1.2.826.0.1.3680043.8.498.1"),
        ("SOPInstanceUID", "1.2.3"),  # odd length: padded with a NUL
        ("SOPInstanceUID", "1.02.3"),  # invalid UID: pydicom warns, so pydicom reads it
        ("SOPInstanceUID", "1.2\\3.4"),
        ("DimensionOrganizationType", "TILED_FULL"),
        ("DimensionOrganizationType", "tiled_full"),
        ("ImageType", ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]),
        ("ImageType", ["DERIVED", "", "LABEL"]),
        ("PhotometricInterpretation", "YBR_FULL_422"),
        ("ContainerIdentifier", "SLIDE 1"),
        ("OpticalPathSequence", [item(OpticalPathIdentifier="1")]),
    ],
)
def test_get_value_equals_pydicom(keyword: str, value: Any, implicit: bool, little: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = Dataset()
        setattr(ds, keyword, value)
        raw = encode(ds, implicit=implicit, little=little)
        expected = converted(raw).get(keyword)
        tag = tag_for_keyword(keyword)
        assert tag is not None
        got = get_value(raw, tag)
    assert got == expected
    assert str(got) == str(expected)


def test_get_value_leaves_simple_values_raw() -> None:
    raw = encode(image())
    assert get_value(raw, 0x00280010) == 256
    assert get_value(raw, 0x00080018) == "1.2.3.4.5"
    assert get_value(raw, 0x00080008) == ["DERIVED", "PRIMARY", "VOLUME", "NONE"]
    for tag in (0x00280010, 0x00080018, 0x00080008):
        assert isinstance(raw._dict[tag], RawDataElement)
    assert get_value(raw, 0x00400512, "none") == "none"  # absent
    assert get_value(raw, 0x00400512) is None


def test_get_value_of_empty_and_converted_elements() -> None:
    ds = Dataset()
    ds.SOPInstanceUID = ""
    ds.Rows = None
    raw = encode(ds)
    assert get_value(raw, 0x00080018, "default") == raw.SOPInstanceUID
    assert get_value(raw, 0x00280010, "default") is None  # present but empty: not the default
    plain = image()
    assert get_value(plain, 0x00280010) == 256  # converted elements are returned as they are


def test_get_value_of_a_deferred_element(tmp_path: Any) -> None:
    ds = image()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / "x.dcm"
    ds.save_as(path, enforce_file_format=True)
    deferred = pydicom.dcmread(path, defer_size=2)
    assert get_value(deferred, 0x00080018) == "1.2.3.4.5"
    assert get_value(deferred, 0x00280010) == 256


# --------------------------------------------------------------------------------------------
# first_item_decimals and the geometry read through it


@pytest.mark.parametrize(("implicit", "little"), LAYOUTS)
@pytest.mark.parametrize("undefined", [False, True], ids=["defined", "undefined"])
def test_first_item_decimals(implicit: bool, little: bool, undefined: bool) -> None:
    ds = image()
    if undefined:
        # Top-level sequences of undefined length are parsed by pydicom as it reads them (it
        # must find their end), so only nested ones reach the raw reader.
        for elem in ds.iterall():
            if elem.VR == "SQ":
                for it in elem.value:
                    it.is_undefined_length_sequence_item = True
                if elem.tag not in ds:
                    elem.is_undefined_length = True
    raw = encode(ds, implicit=implicit, little=little)
    cases = [
        ((_SHARED, _PIXEL_MEASURES, _PIXEL_SPACING), 2, (0.00025, 0.0005)),
        ((_PER_FRAME, _PLANE_POSITION, _Z), 1, 1.25),
        ((_ORIGIN, _X), 1, 20.5),
        ((_ORIENTATION,), 6, (0.0, -1.0, 0.0, -1.0, 0.0, 0.0)),
        ((_SHARED, _PLANE_POSITION, _Z), 1, None),  # no such macro
        ((_ORIGIN, _Z), 1, None),  # no such element
        ((0x00480105, _X), 1, None),  # no such sequence
        ((_SHARED, _PIXEL_MEASURES, _PIXEL_SPACING), 1, UNSURE),  # another number of values
        ((_ORIENTATION,), 2, UNSURE),
    ]
    for path, count, expected in cases:
        got = first_item_decimals(raw, path, count)
        if not little:
            assert got is UNSURE or got is None
        else:
            assert got == expected, path
    # nothing was converted
    assert all(isinstance(e, RawDataElement) for e in raw._dict.values())


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
@pytest.mark.parametrize(
    "value",
    [b"", b" ", b"1,5", b"1e", b"nan", b"12345678901234567", b"1.5\\2.5", b"+1.5E-3", b"-0"],
)
def test_unusual_decimals_agree_with_pydicom(value: bytes, implicit: bool) -> None:
    ds = image(PerFrameFunctionalGroupsSequence=None)
    data = _per_frame_bytes([value, b"0 "], implicit)
    ds[_PER_FRAME] = RawDataElement(
        pydicom.tag.Tag(_PER_FRAME), None if implicit else "SQ", len(data), data, 0, implicit, True
    )
    fast = first_item_decimals(ds, (_PER_FRAME, _PLANE_POSITION, _Z), 1)
    if fast is not UNSURE:
        assert fast == float(value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # repr: NaN is not equal to itself
        assert repr(outcome(coordinates._read_origin, ds)) == repr(
            outcome(coordinates._read_origin, converted(ds))
        )


GEOMETRY_CASES: dict[str, dict[str, Any]] = {
    "typical": {},
    "no_origin": {"TotalPixelMatrixOriginSequence": None},
    "empty_origin": {"TotalPixelMatrixOriginSequence": []},
    "no_orientation": {"ImageOrientationSlide": None},
    "five_cosines": {"ImageOrientationSlide": [0, -1, 0, -1, 0]},
    "large_cosine": {"ImageOrientationSlide": [0, -2, 0, -1, 0, 0]},
    "parallel": {"ImageOrientationSlide": [1, 0, 0, 1, 0, 0]},
    "no_shared": {"SharedFunctionalGroupsSequence": None},
    "top_level_spacing": {
        "SharedFunctionalGroupsSequence": None,
        "PixelSpacing": ["0.001", "0.002"],
    },
    "one_spacing": {
        "SharedFunctionalGroupsSequence": [
            item(PixelMeasuresSequence=[item(PixelSpacing="0.001")])
        ]
    },
    "zero_spacing": {
        "SharedFunctionalGroupsSequence": [
            item(PixelMeasuresSequence=[item(PixelSpacing=["0", "0.001"])])
        ]
    },
    "shared_z": {
        "SharedFunctionalGroupsSequence": [
            item(
                PixelMeasuresSequence=[item(PixelSpacing=["0.001", "0.001"])],
                PlanePositionSlideSequence=[item(ZOffsetInSlideCoordinateSystem="-7.5")],
            )
        ]
    },
    "no_per_frame": {"PerFrameFunctionalGroupsSequence": None},
    "orientation_in_group": {
        "ImageOrientationSlide": None,
        "SharedFunctionalGroupsSequence": [
            item(
                PixelMeasuresSequence=[item(PixelSpacing=["0.001", "0.001"])],
                PlaneOrientationSequence=[item(ImageOrientationSlide=[0, 1, 0, 1, 0, 0])],
            )
        ],
    },
}


@pytest.mark.parametrize(("implicit", "little"), LAYOUTS)
@pytest.mark.parametrize("name", sorted(GEOMETRY_CASES))
def test_geometry_and_validation_agree_with_pydicom(
    name: str, implicit: bool, little: bool
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = encode(image(**GEOMETRY_CASES[name]), implicit=implicit, little=little)
        reference = converted(raw)
        assert outcome(ImageGeometry.from_dataset, raw) == outcome(
            ImageGeometry.from_dataset, reference
        )
        raw = encode(image(**GEOMETRY_CASES[name]), implicit=implicit, little=little)
        assert outcome(slide.validate_image_metadata, raw) == outcome(
            slide.validate_image_metadata, reference
        )
        assert outcome(utils.compute_image_center_position, raw) == pytest.approx(
            outcome(utils.compute_image_center_position, reference)
        ) or outcome(utils.compute_image_center_position, raw) == outcome(
            utils.compute_image_center_position, reference
        )


# --------------------------------------------------------------------------------------------
# Z offsets


def _z_element(value: bytes, implicit: bool) -> bytes:
    tag = struct.pack("<HH", 0x0040, 0x074A)
    if implicit:
        return tag + struct.pack("<I", len(value)) + value
    return tag + b"DS" + struct.pack("<H", len(value)) + value


def _per_frame_bytes(values: list[bytes], implicit: bool) -> bytes:
    """Per-frame items with a Plane Position (Slide) item each, as a converter writes them."""
    out = b""
    for i, value in enumerate(values):
        inner = _z_element(value, implicit)
        column = struct.pack("<HH", 0x0048, 0x021E) + (
            struct.pack("<I", 4) if implicit else b"SL" + struct.pack("<H", 4)
        )
        inner += column + struct.pack("<i", i * 256 + 1)
        position_item = struct.pack("<HHI", 0xFFFE, 0xE000, len(inner)) + inner
        header = struct.pack("<HH", 0x0048, 0x021A) + (
            struct.pack("<I", len(position_item))
            if implicit
            else b"SQ\0\0" + struct.pack("<I", len(position_item))
        )
        body = header + position_item
        out += struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body
    return out


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([b"0 "] * 50, {0.0}),
        ([b"19.8080006"] * 10, {19.808001}),
        ([b"1.5 ", b"-2"] * 20, {1.5, -2.0}),
        ([b"1.5 "] * 30 + [b"2.5 "], {1.5, 2.5}),
        ([b"2.5 "] + [b"1.5 "] * 30, {1.5, 2.5}),
        ([b"1 ", b"1.0", b"1.00"], {1.0}),  # equal numbers written differently
        ([str(i).encode().ljust(2) for i in range(20)], {float(i) for i in range(20)}),
        ([], set()),
        ([b"1,5 "] * 3, None),  # a character outside the DS repertoire: unsure
        ([b"0 "] * 5 + [b"abc "], None),
        ([b"0 "] * 5 + [b""], None),
    ],
)
def test_scan_z_values(values: list[bytes], expected: set[float] | None, implicit: bool) -> None:
    data = _per_frame_bytes(values, implicit)
    assert _scan_z_values(data, implicit) == expected
    assert _scan_z_values_all(data, implicit) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from([b"0 ", b"1 ", b"1.0", b"-2.5", b"3e1", b"+4", b"1,0", b"", b"  ", b"x"]),
        max_size=40,
    ),
    st.booleans(),
    st.binary(max_size=40),
)
def test_scan_z_values_agrees_with_findall(
    values: list[bytes], implicit: bool, junk: bytes
) -> None:
    data = _per_frame_bytes(values, implicit) + junk
    assert _scan_z_values(data, implicit) == _scan_z_values_all(data, implicit)


@pytest.mark.parametrize(("implicit", "little"), LAYOUTS)
def test_extract_z_offsets_agrees_with_the_frame_positions(implicit: bool, little: bool) -> None:
    ds = image(NumberOfFrames=6)
    ds.PerFrameFunctionalGroupsSequence = [
        item(
            PlanePositionSlideSequence=[
                item(
                    ZOffsetInSlideCoordinateSystem=str(z),
                    RowPositionInTotalImagePixelMatrix=1,
                    ColumnPositionInTotalImagePixelMatrix=1 + 256 * i,
                )
            ]
        )
        for i, z in enumerate([0.5, 0.5, -1.25, 0.5, 3, -1.25])
    ]
    raw = encode(ds, implicit=implicit, little=little)
    assert extract_z_offsets(raw, 6) == {0.5, -1.25, 3.0}
    assert extract_z_offsets(converted(raw), 6) == {0.5, -1.25, 3.0}
    assert geometry.get_focal_plane_offsets(encode(ds, implicit=implicit, little=little)) == [
        -1.25,
        0.5,
        3.0,
    ]


_VALID_SHARED = encode(image())._dict[_SHARED].value


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, len(_VALID_SHARED) - 1), st.integers(0, 255)), max_size=3),
    st.integers(0, len(_VALID_SHARED)),
)
def test_first_item_decimals_on_damaged_bytes(edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(_VALID_SHARED)
    for position, byte in edits:
        data[position] = byte
    data = data[:cut]
    ds = Dataset()
    ds[_SHARED] = RawDataElement(
        pydicom.tag.Tag(_SHARED), "SQ", len(data), bytes(data), 0, False, True
    )
    fast = first_item_decimals(ds, (_SHARED, _PIXEL_MEASURES, _PIXEL_SPACING), 2)
    if fast is UNSURE:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            reference = coordinates._nested_value(
                converted(ds), (_SHARED, _PIXEL_MEASURES, _PIXEL_SPACING), 2
            )
        except Exception:  # pydicom rejects the damage; the fast path need not
            return
    if reference is not None:
        reference = tuple(float(v) for v in reference)
    assert fast == reference


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
@pytest.mark.parametrize("tail", [b"", b"DS", b"DS\x02", b"\x02\x00", b"\x02\x00\x00"])
def test_scan_z_values_with_a_truncated_element_at_the_end(implicit: bool, tail: bytes) -> None:
    data = _per_frame_bytes([b"0 "] * 3, implicit) + struct.pack("<HH", 0x0040, 0x074A) + tail
    assert _scan_z_values(data, implicit) == _scan_z_values_all(data, implicit)


@pytest.mark.parametrize(
    "planes", [[0.5, 0.5, -1.25, 0.5, 3, -1.25], [2.0] * 6, [None, 7.5, None, 7.5, 7.5, None]]
)
def test_z_offsets_from_parsed_positions_are_those_of_the_search(
    planes: list[float | None],
) -> None:
    ds = image(NumberOfFrames=6)
    ds.PerFrameFunctionalGroupsSequence = [
        item(
            PlanePositionSlideSequence=[
                item(
                    RowPositionInTotalImagePixelMatrix=1,
                    ColumnPositionInTotalImagePixelMatrix=1 + 256 * i,
                    **({} if z is None else {"ZOffsetInSlideCoordinateSystem": str(z)}),
                )
            ]
        )
        for i, z in enumerate(planes)
    ]
    searched = extract_z_offsets(encode(ds, implicit=False, little=True), 6)
    parsed = encode(ds, implicit=False, little=True)
    assert extract_frame_positions(parsed, 6) is not None  # kept on the data set
    assert extract_z_offsets(parsed, 6) == searched == {float(z) for z in planes if z is not None}

"""Parametric maps with Float Pixel Data and Double Float Pixel Data as slide channels.

highdicom writes float input of a parametric map as Float Pixel Data (7FE0,0008) for
``float32`` and Double Float Pixel Data (7FE0,0009) for ``float64``; both are read back
through :func:`dicomslide.find_slides` and compared bit for bit with what was written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

import dicomslide
from dicomslide.codecs import PixelFormat
from dicomslide.enums import ChannelTypes
from dicomslide.synthetic import write_slide
from tests.support.segments import EQUIPMENT, parametric_map
from tests.support.slides import slide_spec, written_folder

SIZE = (300, 520)
CONTAINER = "SLIDE-FLOAT"


class FloatWritten:
    """What :func:`write_float_maps` wrote."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.single: np.ndarray = np.zeros(0, dtype=np.float32)
        self.double: np.ndarray = np.zeros(0, dtype=np.float64)
        self.sop_uids: dict[str, str] = {}


def _float_map(
    source: pydicom.Dataset, values: np.ndarray, label: str, tile: tuple[int, int]
) -> hd.pm.ParametricMap:
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=label,
        lut_explanation="made up",
        unit=codes.UCUM.NoUnits,
        value_range=(float(values.min()), float(values.max())),
        slope=1,
        intercept=0,
    )
    return parametric_map(source, values, mapping, (0.0, 2.0), 30, tile_size=tile, **EQUIPMENT)


def write_float_maps(root: Path) -> FloatWritten:
    """Write a synthetic slide with a float32 map at level 0 and a float64 map at level 1.

    The float32 map has 45 x 45 tiles (odd sizes, partial tiles at the edges); values include
    negative numbers, subnormals, infinities and fractions that are not exact in decimal.

    Parameters
    ----------
    root: pathlib.Path
        Folder to write to

    Returns
    -------
    FloatWritten
        What was written
    """
    out = FloatWritten(root)
    spec = slide_spec(
        SIZE,
        128,
        2,
        bare=True,
        container_id=CONTAINER,
        seed=7,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )
    paths = write_slide(root, spec)
    images = [pydicom.dcmread(p) for p in paths]
    images = sorted(
        (ds for ds in images if "VOLUME" in ds.ImageType),
        key=lambda ds: -int(ds.TotalPixelMatrixRows),
    )
    level0, level1 = images
    rng = np.random.default_rng(11)
    single = rng.standard_normal(SIZE).astype(np.float32) / np.float32(3.0)
    single[0, :4] = [np.float32(1e-40), -np.float32(0.0), np.float32(3.4e38), np.float32(-1e-7)]
    out.single = single
    pm = _float_map(level0, single, "single", (45, 45))
    assert "FloatPixelData" in pm
    pm.save_as(root / "pm_float32.dcm")
    out.sop_uids["single"] = str(pm.SOPInstanceUID)
    rows, cols = int(level1.TotalPixelMatrixRows), int(level1.TotalPixelMatrixColumns)
    double = np.linspace(-1.0, 1.0, rows * cols, dtype=np.float64).reshape(rows, cols) / 3.0
    double[0, 0] = 1e-310  # subnormal in float64, zero in float32
    out.double = double
    pm = _float_map(level1, double, "double", (64, 64))
    assert "DoubleFloatPixelData" in pm
    pm.save_as(root / "pm_float64.dcm")
    out.sop_uids["double"] = str(pm.SOPInstanceUID)
    return out


written = written_folder(write_float_maps, "float-pm")


async def read_channel(slide: Any, label: str, level: int) -> np.ndarray:
    """Read a whole parameter channel of one level (async :class:`dicomslide.Slide`)."""
    channel = slide.get_channel_index(label, ChannelTypes.PARAMETER)
    assert slide.get_channel_type(channel) is ChannelTypes.PARAMETER
    rows, cols = slide.total_pixel_matrix_dimensions[level]
    region = await slide.get_image_region((0, 0), level, (rows, cols), channel_index=channel)
    assert region.shape[2] == 1
    return np.asarray(region[..., 0])


async def test_float_maps_are_parameter_channels(client: Any, written: FloatWritten) -> None:
    (slide,) = await dicomslide.find_slides(client, container_id=CONTAINER)
    types = [slide.get_channel_type(i) for i in range(slide.num_channels)]
    assert types == [ChannelTypes.OPTICAL_PATH] + [ChannelTypes.PARAMETER] * 2
    single = await read_channel(slide, "single", 0)
    assert single.dtype == np.float32
    # Bit for bit: -0.0, subnormals and the largest finite float survive.
    np.testing.assert_array_equal(single.view(np.uint32), written.single.view(np.uint32))
    double = await read_channel(slide, "double", 1)
    assert double.dtype == np.float64
    np.testing.assert_array_equal(double.view(np.uint64), written.double.view(np.uint64))


async def test_float_region_inside_tiles(client: Any, written: FloatWritten) -> None:
    (slide,) = await dicomslide.find_slides(client, container_id=CONTAINER)
    channel = slide.get_channel_index("single", ChannelTypes.PARAMETER)
    part = await slide.get_image_region((44, 46), 0, (101, 233), channel_index=channel)
    np.testing.assert_array_equal(part[..., 0], written.single[44:145, 46:279])


async def test_float_metadata_and_frames(client: Any, written: FloatWritten) -> None:
    for key, element, bits in (
        ("single", "FloatPixelData", 32),
        ("double", "DoubleFloatPixelData", 64),
    ):
        (found,) = await client.search_for_instances(
            search_filters={"SOPInstanceUID": written.sop_uids[key]}
        )
        study, series = str(found.StudyInstanceUID), str(found.SeriesInstanceUID)
        ds = await client.retrieve_instance_metadata(study, series, written.sop_uids[key])
        # The metadata marks which pixel data element the file has (with an empty value).
        assert element in ds
        assert "PixelData" not in ds
        fmt = PixelFormat.from_dataset(ds)
        assert fmt.is_float
        assert fmt.bits_allocated == bits
        frames = dict(
            [f async for f in client.iter_frames(study, series, written.sop_uids[key], [1, 2])]
        )
        full = pydicom.dcmread(written.root / f"pm_float{bits}.dcm")
        raw = full[element].value
        assert frames[1].data == raw[: fmt.frame_nbytes]
        assert frames[2].data == raw[fmt.frame_nbytes : 2 * fmt.frame_nbytes]


def test_parametric_map_bits_decide_without_marker() -> None:
    # Servers such as Orthanc leave every pixel data element out of metadata.
    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.30"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 4, 4, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    for bits, is_float in ((16, False), (32, True), (64, True)):
        ds.BitsAllocated = bits
        assert PixelFormat.from_dataset(ds).is_float is is_float
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.6"
    ds.BitsAllocated = 32
    assert not PixelFormat.from_dataset(ds).is_float

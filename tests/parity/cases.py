"""Slide variants and the calls made on each of them by the parity harness.

Every call is a Python expression that :mod:`tests.parity.worker` evaluates with dicomslide 0.7.2
and with ``dicomslide_sync`` (see its docstring for the names an expression can use). Calls are
grouped by the documented class or function they exercise; :func:`calls_for` lists those that
make sense for a variant (e.g. focal plane look-ups only where there are several planes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicomslide.synthetic import SUPPORTED_ORIENTATIONS, SlideSpec, write_slide

EXPLICIT = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
RLE = "1.2.840.10008.1.2.5"

# Level sizes are multiples of the tile size (256 x 512, 128 x 256, 64 x 128 with 64 px tiles):
# edge-tile padding is being changed by issue 17 and is compared on one variant only.
BASE: dict[str, Any] = {
    "size": (256, 512),
    "tile_size": (64, 64),
    "levels": 3,
    "transfer_syntax_uid": EXPLICIT,
    "icc_profile": False,
    "label": True,
    "overview": True,
}


@dataclass(frozen=True)
class Variant:
    """One slide the calls run on: a folder, the slide's container and what it holds."""

    name: str
    spec: SlideSpec | None  # None: written by another generator (derived images, third party)
    container: str
    levels: int
    channels: int = 1
    planes: int = 1
    colour: bool = True
    lossy: bool = False
    tags: frozenset[str] = field(default_factory=frozenset)


def _spec(name: str, seed: int, **kw: Any) -> SlideSpec:
    return SlideSpec(container_id=name.upper(), seed=seed, **{**BASE, **kw})


def synthetic_variants() -> list[Variant]:
    """The synthetic slides: orientations, tilings, planes, paths, pixel formats, layouts."""
    specs: dict[str, SlideSpec] = {}
    for k, orientation in enumerate(SUPPORTED_ORIENTATIONS):
        specs[f"orient{k}"] = _spec(f"orient{k}", 10 + k, image_orientation=orientation)
    specs["sparse"] = _spec(
        "sparse",
        20,
        dimension_organization="TILED_SPARSE",
        sparse_missing_tiles=((0, 1), (2, 5)),
        shuffle_frames=True,
    )
    specs["no-organization"] = _spec("no-organization", 21, dimension_organization="NONE")
    specs["zstack"] = _spec(
        "zstack", 22, dimension_organization="TILED_SPARSE", focal_planes=3, label=False
    )
    specs["fluorescence"] = _spec(
        "fluorescence", 23, photometric="MONOCHROME2", optical_paths=3, overview=False
    )
    specs["paths-in-one"] = _spec(
        "paths-in-one",
        24,
        photometric="MONOCHROME2",
        optical_paths=2,
        channels_in_separate_instances=False,
        dimension_organization="TILED_SPARSE",
        overview=False,
    )
    specs["mono16"] = _spec("mono16", 25, photometric="MONOCHROME2", bits=16, label=False)
    specs["jpeg"] = _spec(
        "jpeg", 26, transfer_syntax_uid=JPEG_BASELINE, photometric="YBR_FULL_422", jpeg_quality=90
    )
    specs["icc-j2k"] = _spec(
        "icc-j2k", 27, transfer_syntax_uid=JPEG2000_LOSSLESS, icc_profile=True
    )
    specs["concatenation"] = _spec(
        "concatenation", 28, concatenation_parts=2, transfer_syntax_uid=RLE
    )
    specs["thumbnail"] = _spec("thumbnail", 29, thumbnail=True, levels=2)
    specs["edge"] = _spec("edge", 30, size=(300, 520), tile_size=(128, 128), levels=2)
    out = []
    for name, spec in specs.items():
        out.append(
            Variant(
                name=name,
                spec=spec,
                container=spec.container_id,
                levels=spec.num_levels,
                channels=spec.optical_paths,
                planes=spec.focal_planes,
                colour=spec.photometric != "MONOCHROME2",
                lossy=spec.is_lossy,
                tags=frozenset(
                    {"edge"}
                    if name == "edge"
                    else set()
                    | ({"label"} if spec.label else set())
                    | ({"overview"} if spec.overview else set())
                ),
            )
        )
    return out


def write_variants(root: Path, variants: list[Variant]) -> dict[str, Path]:
    """Write every synthetic variant into its own sub-folder of ``root``."""
    folders = {}
    for v in variants:
        if v.spec is not None:
            folder = root / v.name
            write_slide(folder, v.spec)
            folders[v.name] = folder
    return folders


# --- calls ---------------------------------------------------------------------------------

SLIDE_PROPERTIES = [
    "slide.num_channels",
    "slide.num_focal_planes",
    "slide.num_levels",
    "slide.total_pixel_matrix_dimensions",
    "slide.pixel_spacings",
    "slide.downsampling_factors",
    "slide.size",
    "slide.physical_offset",
    "slide.physical_size",
    "slide.frame_of_reference_uid",
    "len(slide.label_images)",
    "len(slide.overview_images)",
    "[i.metadata.SOPInstanceUID for i in slide.label_images]",
    "[i.metadata.SOPInstanceUID for i in slide.overview_images]",
    "len(slide.get_volume_images())",
    "[i.metadata.SOPInstanceUID for i in slide.get_volume_images()]",
    "slide.find_optical_paths()",
    "slide.find_segments()",
    "[slide.get_channel_type(i) for i in range(slide.num_channels)]",
    "[slide.get_channel_identifier(i) for i in range(slide.num_channels)]",
    "[slide.get_channel_index(slide.get_channel_identifier(i), slide.get_channel_type(i)) "
    "for i in range(slide.num_channels)]",
    "slide.get_channel_type(slide.num_channels)",
    "slide.get_channel_index('no-such-path', ds.ChannelTypes.OPTICAL_PATH)",
    "[slide.get_focal_plane_offset(i) for i in range(slide.num_focal_planes)]",
    "slide.get_focal_plane_offset(slide.num_focal_planes)",
    "slide.get_focal_plane_index(slide.get_focal_plane_offset(0))",
    "slide.get_focal_plane_index(12345.0)",
    "slide.get_volume_images(channel_index=slide.num_channels)",
    "[f.name for f in ds.ImageFlavors]",
    "[(c.name, c.value) for c in ds.ChannelTypes]",
    "ds.Slide(client, [i.metadata for i in images]).total_pixel_matrix_dimensions",
    "slide.get_image_region((10, 20), 0, (30, 40), channel_index=slide.num_channels - 1, "
    "focal_plane_index=slide.num_focal_planes - 1)",
    "images[0].get_total_pixel_matrix(channel_index=images[0].num_channels - 1, "
    "focal_plane_index=images[0].num_focal_planes - 1)[0:8, 0:8, :]",
    "images[0].get_image_region((3, 5), (20, 30), channel_index=images[0].num_channels - 1)",
    "slide.get_volume_images(focal_plane_index=slide.num_focal_planes)",
]

COORDINATES = [
    "slide.get_slide_offset((0, 0), {L})",
    "slide.get_slide_offset((10, 20), {L})",
    "slide.get_pixel_indices(slide.get_slide_offset((10, 20), {L}), {L})",
    "slide.get_pixel_indices(tuple(pixels_to_slide(meta({L}), [(5, 7)])[0, :2]), {L})",
    "slide.map_pixel_indices_to_slide_coordinates(np.array([[0, 0], [3, 9], [40, 2]]), {L})",
    "slide.map_slide_coordinates_to_pixel_indices("
    "pixels_to_slide(meta({L}), [(0, 0), (3, 9), (40, 2)]), {L})",
]

REGIONS = [
    "slide.get_image_region((0, 0), {L}, (16, 24))",
    "slide.get_image_region((64, 128), {L}, (40, 70))",
    "slide.get_image_region((0, 0), {L}, slide.total_pixel_matrix_dimensions[{L}])",
]

# (offset as pixel (row, column), size in mm) of the slide regions read; each read is also
# compared with region_truth, the total pixel matrix resampled at the same slide positions.
SLIDE_BOXES = [((10, 12), (0.004, 0.006)), ((30, 20), (0.0105, 0.0035))]
SLIDE_REGIONS = [
    "slide.get_slide_region({O}, {L}, {S})",
    "images[{L}].get_slide_region({O}, {S})",
]
TRUTH = "region_truth({L}, {O}, {S})"


def _slide_region_calls(level: int) -> list[tuple[str, str]]:
    out = []
    for pixel, size in SLIDE_BOXES:
        offset = f"tuple(pixels_to_slide(meta({level}), [{pixel}])[0, :2])"
        for template in [*SLIDE_REGIONS, TRUTH]:
            expr = template.replace("{O}", offset).replace("{S}", repr(size))
            truth = TRUTH.replace("{O}", offset).replace("{S}", repr(size))
            out.append((expr.replace("{L}", str(level)), truth.replace("{L}", str(level))))
    return out


BAD_REGIONS = [
    "slide.get_image_region((0, 0), slide.num_levels, (4, 4))",
    "slide.get_image_region((0, 0), 0, (4, 4), channel_index=slide.num_channels)",
    "slide.get_image_region((0, 0), 0, (4, 4), focal_plane_index=slide.num_focal_planes)",
    "slide.get_image_region((-5, 0), 0, (4, 4))",
    "slide.get_image_region((0, 0), 0, (0, 4))",
    "slide.get_slide_offset((0, 0), slide.num_levels)",
]

ANNOTATIONS = [
    "slide.get_slide_region_for_annotation(ann('POINT', [(12, 30)], {L}), {L})",
    "slide.get_slide_region_for_annotation("
    "ann('MULTIPOINT', [(5, 9), (20, 40), (11, 13)], {L}), {L})",
    "slide.get_slide_region_for_annotation(ann('POLYLINE', [(5, 9), (20, 40)], {L}), {L})",
    "slide.get_slide_region_for_annotation("
    "ann('POLYGON', [(8, 6), (8, 20), (30, 20), (30, 6), (8, 6)], {L}), {L})",
    "slide.get_slide_region_for_annotation("
    "ann('ELLIPSE', [(20, 10), (20, 40), (14, 25), (26, 25)], {L}), {L})",
    "slide.get_slide_region_for_annotation("
    "ann('POLYGON', [(8, 6), (8, 20), (30, 20), (30, 6), (8, 6)], {L}), {L}, padding=0.002)",
    "slide.get_slide_region_for_annotation(ann('POINT', [(12, 30)], {L}), {L}, padding=(1, 2, 3))",
]

TILED_IMAGE = [
    "images[{L}].metadata.SOPInstanceUID",
    "images[{L}].num_channels",
    "images[{L}].num_focal_planes",
    "images[{L}].size",
    "images[{L}].physical_offset",
    "images[{L}].physical_size",
    "images[{L}].frame_of_reference_uid",
    "images[{L}].channel_type",
    "images[{L}].get_channel_identifier(0)",
    "images[{L}].get_channel_index(images[{L}].get_channel_identifier(0))",
    "images[{L}].get_focal_plane_offset(0)",
    "images[{L}].get_focal_plane_index(images[{L}].get_focal_plane_offset(0))",
    "images[{L}].get_rotation()",
    "images[{L}].get_references()",
    "images[{L}].get_slide_offset((7, 3))",
    "images[{L}].get_pixel_indices(images[{L}].get_slide_offset((7, 3)))",
    "images[{L}].map_pixel_indices_to_slide_coordinates(np.array([[1, 2], [30, 4]]))",
    "images[{L}].map_slide_coordinates_to_pixel_indices(pixels_to_slide(meta({L}), [(1, 2)]))",
    "images[{L}].get_image_region((3, 5), (20, 30))",
]

MATRIX = [
    "mat({L})[:, :, :]",
    "mat({L}).shape",
    "mat({L}).dtype",
    "mat({L}).ndim",
    "mat({L}).size",
    "len(mat({L}))",
    "mat({L}).num_tiles",
    "mat({L}).tile_shape",
    "mat({L}).tile_size",
    "mat({L}).tile_grid_shape",
    "mat({L}).tile_grid_positions",
    "mat({L}).tile_positions",
    "mat({L}).get_tile_index((1, 1))",
    "mat({L}).get_tile_position(mat({L}).get_tile_index((1, 1)))",
    "mat({L}).get_tile_grid_position(mat({L}).num_tiles - 1)",
    "mat({L}).get_tile_bounding_box(mat({L}).num_tiles - 1)",
    "mat({L})[0]",
    "mat({L})[mat({L}).num_tiles - 1]",
    "mat({L})[[0, 1]]",
    "mat({L})[5:40, 60:100, :]",
    "mat({L})[:, :, 0]",
    "mat({L})[3, 4, :]",
    "mat({L})[0:64, 0:64, 0:1]",
    "mat({L})[-10:, -20:, :]",
    "mat({L})[0:50:5, 0:60:3, :]",
    "mat({L})[0:10, 0:10]",
    "mat({L}).get_tile_index((999, 999))",
    "[tile.shape for tile in mat({L})]",
    "mat({L})[mat({L}).num_tiles]",
]

SAMPLER = [
    "sample(ds.TotalPixelMatrixSampler(mat({L}), (32, 48)))",
    "sample(ds.TotalPixelMatrixSampler(mat({L}), (32, 48), padding=4))",
    "sample(ds.TotalPixelMatrixSampler(mat({L}), (32, 48), padding=(2, 6)))",
    "sample(ds.TotalPixelMatrixSampler(mat({L}), (32, 48), padding=(1, 2, 3, 4)))",
    "sample(ds.TotalPixelMatrixSampler(mat({L}), (6, 10), bounding_box=((7, 7), (12, 12)), "
    "padding=(2, 4)), reads=(0, 1, 2, 3, 4, 5))",
    "sample(ds.TotalPixelMatrixSampler(mat({L}), (20, 20), bounding_box=((0, 0), (40, 50))))",
    "sample(ds.TotalPixelMatrixSampler(mat({L}), (64, 64), tile_grid_positions=[(0, 0), (1, 1)]))",
    "sample(ds.TotalPixelMatrixSampler(mat({L}), (32, 32), "
    "tile_grid_positions=np.array([[0, 1]])))",
    "sample(ds.TotalPixelMatrixSampler(mat({L}), (30, 40), bounding_box=((10, 10), (30, 30)), "
    "tile_grid_positions=[(0, 0)]))",
    "sample(ds.TotalPixelMatrixSampler(mat({L}), (16, 16), padding=(1, 2, 3)))",
    "[region.shape for region in ds.TotalPixelMatrixSampler(mat({L}), (64, 128), padding=2)]",
    "sample(ds.TotalPixelMatrixSampler(mat({L}), (16, 16), bounding_box=((0, 0), (9999, 10))))",
]

PYRAMID = [
    "[tuple(level) for level in ds.Pyramid([i.metadata for i in images], 0.1)]",
    "len(ds.Pyramid([i.metadata for i in images], 0.1))",
    "ds.Pyramid([i.metadata for i in images], 0.1)[0].total_pixel_matrix_dimensions",
    "ds.Pyramid([i.metadata for i in images], 0.1)[-1].pixel_spacing",
    "ds.Pyramid([i.metadata for i in images], 0.1)[-1].downsampling_factors",
    "ds.Pyramid([i.metadata for i in images], 0.1)[0].has_pixels",
    "ds.Pyramid([i.metadata for i in images[::-1]], 0.1)",
]

UTILITIES = [
    "[ds.is_image(i.metadata) for i in images]",
    "[ds.is_tiled_image(i.metadata) for i in images]",
    "[ds.is_volume_image(i.metadata) for i in images]",
    "[ds.is_label_image(i.metadata) for i in images + list(slide.label_images)]",
    "[ds.is_overview_image(i.metadata) for i in images + list(slide.overview_images)]",
    "[ds.get_image_pixel_spacing(i.metadata) for i in images]",
    "[ds.get_image_size(i.metadata) for i in images]",
    "[d.SOPInstanceUID for d in ds.sort_images_by_pixel_spacing([i.metadata for i in images])]",
    "[d.SOPInstanceUID for d in ds.sort_images_by_size([i.metadata for i in images])]",
    "ds.select_image_at_pixel_spacing([i.metadata for i in images], (0.0005, 0.0005))",
    "ds.select_image_at_pixel_spacing([i.metadata for i in images], (0.0009, 0.0009))",
    "ds.select_image_at_magnification([i.metadata for i in images], 10)",
    "ds.select_image_at_magnification([i.metadata for i in images], 40)",
    "ds.select_image_at_magnification([i.metadata for i in images], 33)",
    "[ds.compute_image_center_position(i.metadata) for i in images]",
    "ds.compute_frame_positions(meta(0))",
    "ds.compute_frame_positions(meta(-1))",
    "ds.disassemble_total_pixel_matrix(mat(-1)[:, :, :], meta(-1).Rows, meta(-1).Columns)",
    "ds.assemble_total_pixel_matrix("
    "ds.disassemble_total_pixel_matrix(mat(-1)[:, :, :], meta(-1).Rows, meta(-1).Columns), "
    "mat(-1).tile_positions, *mat(-1).shape[:2])",
    "[ds.does_optical_path_item_match(o, identifier=o.OpticalPathIdentifier) "
    "for o in meta(0).OpticalPathSequence]",
    "[ds.does_optical_path_item_match(o, identifier='nope') for o in meta(0).OpticalPathSequence]",
    "[ds.does_specimen_description_item_match(s, stains=["
    "hd.sr.CodedConcept('12710003', 'SCT', 'hematoxylin stain')]) "
    "for s in meta(0).SpecimenDescriptionSequence]",
    "[ds.does_specimen_description_item_match(s, stains=["
    "hd.sr.CodedConcept('C0000001', 'DCM', 'made-up stain')]) "
    "for s in meta(0).SpecimenDescriptionSequence]",
]

FIND_SLIDES = [
    "len(ds.find_slides(client))",
    "[s.num_channels for s in ds.find_slides(client, container_id='{C}')]",
    "len(ds.find_slides(client, container_id='nope'))",
    "len(ds.find_slides(client, patient_id=meta(0).PatientID))",
    "len(ds.find_slides(client, patient_id='nope'))",
    "len(ds.find_slides(client, study_id=meta(0).StudyID))",
    "len(ds.find_slides(client, study_instance_uid=meta(0).StudyInstanceUID))",
    "len(ds.find_slides(client, study_instance_uid='1.2.3'))",
    "[s.num_channels for s in ds.find_slides(client, container_id='{C}', include_derived=False)]",
    "[s.num_channels for s in ds.find_slides(client, container_id='{C}', "
    "optical_path_ids=[slide.get_channel_identifier(0)])]",
    "[s.num_channels for s in ds.find_slides(client, container_id='{C}', "
    "specimen_stains=[codes.SCT.HematoxylinStain])]",
    "[s.num_channels for s in ds.find_slides(client, container_id='{C}', "
    "specimen_stains=[hd.sr.CodedConcept('C0000001', 'DCM', 'made-up stain')])]",
]

# Channel look-ups: segments (SEG), parameters (PM) and optical paths, and reads of them.
CHANNELS = [
    "slide.find_segments(number=1)",
    "slide.find_segments(label='bin1')",
    "slide.find_segments(property_type=codes.SCT.Nucleus)",
    "slide.find_segments(property_category=codes.SCT.Tissue)",
    "slide.find_optical_paths(identifier=slide.get_channel_identifier(0))",
    "slide.find_optical_paths(specimen_stain=codes.SCT.HematoxylinStain)",
    "slide.find_optical_paths(description='nope')",
    "[slide.get_volume_images(channel_index=i)[0].metadata.SOPClassUID "
    "for i in range(slide.num_channels)]",
    "[len(slide.get_volume_images(channel_index=i)) for i in range(slide.num_channels)]",
    "[slide.get_image_region((0, 0), 0, (128, 256), channel_index=i) "
    "for i in slide.find_segments()]",
    "[slide.get_image_region((100, 200), 0, (40, 90), channel_index=i) "
    "for i in slide.find_segments()]",
    "[slide.get_image_region((0, 0), 1, (64, 128), channel_index=i) "
    "for i in range(slide.num_channels) if slide.get_channel_type(i).name == 'PARAMETER']",
    "[slide.get_image_region((0, 0), 0, (8, 8), channel_index=i) "
    "for i in range(slide.num_channels) if slide.get_channel_type(i).name == 'PARAMETER']",
    "[slide.get_channel_index(slide.get_channel_identifier(i), slide.get_channel_type(i)) "
    "for i in slide.find_segments()]",
    "[slide.get_volume_images(channel_index=i)[0].channel_type "
    "for i in range(slide.num_channels)]",
    "[mat(0, i).dtype for i in slide.find_segments()]",
    "[mat(0, i).shape for i in slide.find_segments()]",
]

FIND_VARIANTS = frozenset({"orient0", "fluorescence", "paths-in-one", "derived-a", "derived-c"})

OPENSLIDE = [
    "osl().level_count",
    "osl().dimensions",
    "osl().level_dimensions",
    "osl().level_downsamples",
    "osl().get_best_level_for_downsample(1.0)",
    "osl().get_best_level_for_downsample(3.0)",
    "osl().get_best_level_for_downsample(100.0)",
    "osl().read_region((0, 0), 0, (40, 30))",
    "osl().read_region((64, 32), 1, (50, 20))",
    "osl().get_thumbnail((64, 64))",
    "sorted(osl().associated_images)",
    "{k: v for k, v in osl().properties.items() if k.startswith('openslide.')}",
    "ds.OpenSlide(slide).close()",
]


def calls_for(v: Variant, folder: Path) -> list[dict[str, Any]]:
    """Every call made on a variant, as dicts for the worker (id, folder, container, expr)."""
    exprs: dict[str, str | None] = {}  # expression -> its region_truth expression
    # find_slides reads every instance's metadata again (0.7 takes ~0.2 s a call): its filters
    # are compared on the variants that differ in what the filters look at.
    find = FIND_SLIDES if v.name in FIND_VARIANTS else FIND_SLIDES[1:2]
    for expr in SLIDE_PROPERTIES + BAD_REGIONS + PYRAMID + UTILITIES + find:
        exprs[expr] = None
    # Every level-dependent call at the base level; at the top level too where the level's
    # geometry differs in an interesting way (orientations, third-party pyramids).
    top = v.name == "orient0" or "thirdparty" in v.tags
    for level in sorted({0, v.levels - 1} if top else {0}):
        for template in COORDINATES + REGIONS + ANNOTATIONS + TILED_IMAGE + MATRIX + SAMPLER:
            exprs[template.replace("{L}", str(level))] = None
        for expr, truth in _slide_region_calls(level):
            exprs[expr] = truth
    if v.colour:
        exprs.update(dict.fromkeys(OPENSLIDE))
    if v.channels > 1 or "derived" in v.tags:
        exprs.update(dict.fromkeys(CHANNELS))
    out = []
    for expr, truth in exprs.items():
        expr = expr.replace("{C}", v.container)
        out.append(
            {
                "id": f"{v.name} | {expr}",
                "variant": v.name,
                "folder": str(folder),
                "container": v.container,
                "expr": expr,
                "truth": None if truth is None else f"{v.name} | {truth}",
            }
        )
    return out

"""Everything one parity run compares: the slide variants, their folders and their calls.

Besides the synthetic variants of :mod:`tests.parity.cases`, a run covers segmentations and a
parametric map written by highdicom (``tests.aio.test_derived.write_derived``) and, when
OrthancWSIDicomizer is installed, a slide converted by it (``tests.support.thirdparty``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.parity.cases import BASE, Variant, calls_for, synthetic_variants, write_variants

# Sub-folder of the derived-image writer -> (container, levels, optical paths, colour).
DERIVED = {
    "a": ("SLIDE-A", 2, 1, True),  # BINARY and FRACTIONAL SEG, SEG split across instances, PM
    "c": ("SLIDE-C", 2, 2, False),  # two monochrome optical paths
    "d": ("SLIDE-D", 1, 1, True),  # BINARY SEG with 45 x 45 frames (bit-packed, unaligned)
}


def write_sparse_derived(folder: Path) -> None:
    """A slide with a BINARY TILED_SPARSE segmentation (two segments) of level 0.

    TILED_SPARSE segmentations carry per-frame segment identification, which 0.7 needs (it
    cannot read TILED_FULL ones, see the known differences).
    """
    import numpy as np

    from dicomslide.synthetic import SlideSpec, write_slide
    from tests.aio.test_derived import _masks, _source_images
    from tests.support.segments import segmentation

    spec = SlideSpec(container_id="SEG-SPARSE", seed=40, **{**BASE, "levels": 2})
    level0, _ = _source_images(write_slide(folder, spec))
    masks = _masks(spec.size, 7, 2)
    masks[:64, :128] = 0  # two empty tiles, left out of the sparse file
    seg = segmentation(level0, masks, "1.2.826.0.1.3680043.10.1.4040", organization="TILED_SPARSE")
    seg.save_as(folder / "seg_sparse.dcm")
    assert np.any(masks)


def prepare(
    work: Path, dicomizer_cache: Path | None = None
) -> tuple[list[Variant], dict[str, Path]]:
    """Write every variant under ``work``; return them and their folders."""
    from tests.aio.test_derived import write_derived

    variants = synthetic_variants()
    folders = write_variants(work / "slides", variants)
    write_sparse_derived(work / "seg-sparse")
    variants.append(
        Variant("seg-sparse", None, "SEG-SPARSE", 2, 1, 1, True, False, frozenset({"derived"}))
    )
    folders["seg-sparse"] = work / "seg-sparse"
    derived_root = work / "derived"
    write_derived(derived_root)
    for sub, (container, levels, paths, colour) in DERIVED.items():
        name = f"derived-{sub}"
        v = Variant(name, None, container, levels, paths, 1, colour, False, frozenset({"derived"}))
        variants.append(v)
        folders[name] = derived_root / sub
    if dicomizer_cache is not None:
        from tests.support.thirdparty import (
            derivable_dataset,
            find_dicomizer,
            make_dicomizer_slide,
        )

        if find_dicomizer():
            # With the tool's sample dataset (Image Type, specimen) and without (as it writes
            # by default: no Image Type, no Frame of Reference).
            for name, dataset in (
                ("dicomizer", derivable_dataset("parity")),
                ("dicomizer-bare", {"ContainerIdentifier": "DICOMIZER-bare"}),
            ):
                # JPEG: dicomweb-client's file client cannot serve the frames of the tool's
                # uncompressed (Implicit VR) output, so 0.7 could not read them at all.
                files = make_dicomizer_slide(
                    dicomizer_cache, compression="jpeg", tile_size=128, levels=3, dataset=dataset
                )
                container = str(dataset["ContainerIdentifier"])
                tags = frozenset({"thirdparty"})
                variants.append(Variant(name, None, container, 3, lossy=True, tags=tags))
                folders[name] = files[0].parent
    return variants, folders


def build_calls(
    variants: list[Variant], folders: dict[str, Path]
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The calls of every variant, and the pixel tolerance of the lossy ones."""
    calls: list[dict[str, Any]] = []
    tolerances: dict[str, int] = {}
    for v in variants:
        calls += calls_for(v, folders[v.name])
        if v.lossy:
            # 0.7 decodes JPEG with Pillow, we with libjpeg-turbo through imagecodecs.
            tolerances[v.name] = 2
    return calls, tolerances

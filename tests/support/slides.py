"""Writing sets of synthetic slides for test modules."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dicomslide.synthetic import SlideSpec, write_slide


def write_slides(root: Path, specs: Mapping[str, SlideSpec]) -> dict[str, Path]:
    """Write each spec into its own folder ``root / name``.

    Parameters
    ----------
    root: pathlib.Path
        Parent folder
    specs: Mapping[str, dicomslide.synthetic.SlideSpec]
        Slide specification by folder name

    Returns
    -------
    dict[str, pathlib.Path]
        The folder of each slide, by name
    """
    folders = {}
    for name, spec in specs.items():
        write_slide(root / name, spec)
        folders[name] = root / name
    return folders

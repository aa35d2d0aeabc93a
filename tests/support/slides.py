"""Writing sets of synthetic slides for test modules."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dicomslide.synthetic import SlideSpec, write_slide
from tests.support.orthanc import OrthancServer, serve_written

_W = TypeVar("_W")


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


def slide_spec(
    size: tuple[int, int], tile: int, levels: int, *, bare: bool = False, **options: Any
) -> SlideSpec:
    """A synthetic slide of square tiles, stated by its geometry first.

    Parameters
    ----------
    size: tuple[int, int]
        Level-0 (rows, columns)
    tile: int
        Side of the square tiles
    levels: int
        Number of pyramid levels
    bare: bool, optional
        Leave out the LABEL and OVERVIEW images
    **options: Any
        Any other :class:`dicomslide.synthetic.SlideSpec` field

    Returns
    -------
    dicomslide.synthetic.SlideSpec
        The specification
    """
    if bare:
        options = {"label": False, "overview": False, **options}
    return SlideSpec(size=size, tile_size=(tile, tile), levels=levels, **options)


def written_folder(write: Callable[[Path], _W], name: str) -> Any:
    """A module-scoped fixture that writes a module's slides once into a fresh folder.

    Assign it to the fixture's name: ``written = written_folder(write_label_maps, "labelmaps")``.

    Parameters
    ----------
    write: Callable[[pathlib.Path], Any]
        Writes the slides into the folder it is given and returns what the tests use
    name: str
        Stem of the temporary folder

    Returns
    -------
    Any
        The pytest fixture (its value is what ``write`` returned)
    """

    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> _W:
        return write(tmp_path_factory.mktemp(name))

    return fixture


def served_folder(write: Callable[[Path], _W], name: str) -> Any:
    """A module-scoped fixture that serves a module's slides from a private Orthanc.

    Assign it to the fixture's name, as :func:`written_folder`; its value is the server and
    what ``write`` returned (see :func:`tests.support.orthanc.serve_written`).

    Parameters
    ----------
    write: Callable[[pathlib.Path], Any]
        Writes the slides into the folder it is given and returns a record with a ``root``
    name: str
        Stem of the temporary folders

    Returns
    -------
    Any
        The pytest fixture
    """

    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OrthancServer, _W]]:
        yield from serve_written(tmp_path_factory, name, write)

    return fixture

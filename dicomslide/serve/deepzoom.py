"""Deep Zoom tiles of an :class:`dicomslide.openslide.OpenSlide`, awaited instead of blocking.

The pyramid, tile addresses, overlaps, the level-0 rectangle read for each tile and the final
resampling follow ``openslide.deepzoom.DeepZoomGenerator`` (openslide-python 1.4), so a viewer
sees the same tiles from this service as from OpenSlide's ``deepzoom_server.py``; the tests
compare both tile by tile. Reading is a coroutine; compositing onto the background and the
Lanczos shrink are plain CPU work and live in :func:`finish_tile`, so a service can run them
off its event loop together with the encoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from PIL import Image

from dicomslide.errors import IndexRangeError, RegionError
from dicomslide.openslide import OpenSlide

__all__ = ["DeepZoom", "TileRequest", "finish_tile"]

_BOUNDS = ("openslide.bounds-x", "openslide.bounds-y")
_BOUNDS_SIZE = ("openslide.bounds-width", "openslide.bounds-height")


@dataclass(frozen=True)
class TileRequest:
    """What one Deep Zoom tile needs from the slide.

    Parameters
    ----------
    location: tuple[int, int]
        (x, y) level-0 pixel of the rectangle's top left corner
    slide_level: int
        Slide level read
    size: tuple[int, int]
        (width, height) read at `slide_level`
    tile_size: tuple[int, int]
        (width, height) of the finished tile
    """

    location: tuple[int, int]
    slide_level: int
    size: tuple[int, int]
    tile_size: tuple[int, int]


def finish_tile(region: Image.Image, tile_size: tuple[int, int], background: str) -> Image.Image:
    """Flatten a read region onto the background and shrink it to the tile size.

    Parameters
    ----------
    region: PIL.Image.Image
        RGBA region as :meth:`OpenSlide.read_region` returns it
    tile_size: tuple[int, int]
        (width, height) of the tile
    background: str
        Background colour, ``#rrggbb``

    Returns
    -------
    PIL.Image.Image
        RGB tile, carrying the region's ICC profile if it had one
    """
    profile = region.info.get("icc_profile")
    tile = Image.composite(region, Image.new("RGB", region.size, background), region)
    if tile.size != tile_size:
        tile.thumbnail(tile_size, Image.Resampling.LANCZOS)
    if profile is not None:
        tile.info["icc_profile"] = profile
    return tile


class DeepZoom:
    """Deep Zoom pyramid of one slide.

    Parameters
    ----------
    osr: dicomslide.openslide.OpenSlide
        The slide, through the async OpenSlide interface
    tile_size: int, optional
        Width and height of a tile without overlap
    overlap: int, optional
        Pixels added to each interior edge of a tile
    limit_bounds: bool, optional
        Serve only the ``openslide.bounds-*`` rectangle (DICOM slides define none, so this
        changes nothing for them; kept for the same settings as ``DeepZoomGenerator``)

    Attributes
    ----------
    level_count: int
        Number of Deep Zoom levels; the last one is at full resolution
    level_dimensions: tuple[tuple[int, int], ...]
        (width, height) of every Deep Zoom level
    level_tiles: tuple[tuple[int, int], ...]
        (columns, rows) of tiles of every Deep Zoom level
    tile_count: int
        Number of tiles over all levels

    Raises
    ------
    dicomslide.RegionError
        If `tile_size` is not positive or `overlap` is negative
    """

    def __init__(
        self, osr: OpenSlide, tile_size: int = 254, overlap: int = 1, limit_bounds: bool = False
    ) -> None:
        if tile_size < 1 or overlap < 0:
            raise RegionError(
                f"Deep Zoom needs a positive tile size and a non-negative overlap, got "
                f"tile_size={tile_size}, overlap={overlap}."
            )
        self.osr = osr
        self.tile_size = tile_size
        self.overlap = overlap
        self.limit_bounds = limit_bounds
        props = osr.properties
        if limit_bounds:
            self._origin = tuple(int(props.get(name, 0)) for name in _BOUNDS)
            scale = [
                int(props.get(name, full)) / full
                for name, full in zip(_BOUNDS_SIZE, osr.dimensions, strict=True)
            ]
            self._slide_sizes = tuple(
                (math.ceil(w * scale[0]), math.ceil(h * scale[1])) for w, h in osr.level_dimensions
            )
        else:
            self._origin = (0, 0)
            self._slide_sizes = tuple(osr.level_dimensions)
        # Halve (rounding up) down to one pixel; Deep Zoom level 0 is that 1 x 1 image.
        sizes = [self._slide_sizes[0]]
        while sizes[-1] != (1, 1):
            w, h = sizes[-1]
            sizes.append((max(1, math.ceil(w / 2)), max(1, math.ceil(h / 2))))
        sizes.reverse()
        self.level_dimensions: tuple[tuple[int, int], ...] = tuple(sizes)
        self.level_tiles: tuple[tuple[int, int], ...] = tuple(
            (math.ceil(w / tile_size), math.ceil(h / tile_size)) for w, h in sizes
        )
        count = len(sizes)
        self.level_count = count
        self.tile_count = sum(c * r for c, r in self.level_tiles)
        self._dz_downsample = tuple(2 ** (count - 1 - z) for z in range(count))
        self._slide_level = tuple(
            osr.get_best_level_for_downsample(d) for d in self._dz_downsample
        )
        self._level_downsample = tuple(osr.level_downsamples)
        self.background = "#" + props.get("openslide.background-color", "ffffff")

    def get_dzi(self, format: str) -> str:
        """The ``.dzi`` descriptor.

        Parameters
        ----------
        format: str
            Tile format, ``jpeg`` or ``png``

        Returns
        -------
        str
            XML document
        """
        w, h = self.level_dimensions[-1]
        return (
            f'<Image TileSize="{self.tile_size}" Overlap="{self.overlap}" '
            f"Format={quoteattr(format)} "
            'xmlns="http://schemas.microsoft.com/deepzoom/2008">'
            f'<Size Width="{w}" Height="{h}" /></Image>'
        )

    def tile_request(self, level: int, address: tuple[int, int]) -> TileRequest:
        """Where tile `address` of Deep Zoom level `level` comes from.

        Parameters
        ----------
        level: int
            Deep Zoom level
        address: tuple[int, int]
            (column, row) of the tile

        Returns
        -------
        TileRequest
            Rectangle to read and size of the tile

        Raises
        ------
        dicomslide.IndexRangeError
            If the level or address does not exist
        """
        if not 0 <= level < self.level_count:
            raise IndexRangeError(
                f"Deep Zoom level {level} does not exist; levels are 0..{self.level_count - 1}."
            )
        across, down = self.level_tiles[level]
        col, row = address
        if not (0 <= col < across and 0 <= row < down):
            raise IndexRangeError(
                f"Deep Zoom tile {col}_{row} does not exist at level {level}; it has "
                f"{across} x {down} tiles."
            )
        slide_level = self._slide_level[level]
        # Deep Zoom pixels per pixel of the slide level read.
        scale = self._dz_downsample[level] / self._level_downsample[slide_level]
        tile_px = []
        location = []
        read = []
        for t, count, dz_size, slide_size, origin in zip(
            (col, row),
            (across, down),
            self.level_dimensions[level],
            self._slide_sizes[slide_level],
            self._origin,
            strict=True,
        ):
            before = self.overlap if t else 0
            after = self.overlap if t != count - 1 else 0
            size = min(self.tile_size, dz_size - self.tile_size * t) + before + after
            start = scale * (self.tile_size * t - before)
            tile_px.append(size)
            location.append(int(self._level_downsample[slide_level] * start + origin))
            read.append(int(min(math.ceil(scale * size), slide_size - math.ceil(start))))
        return TileRequest(
            location=(location[0], location[1]),
            slide_level=slide_level,
            size=(read[0], read[1]),
            tile_size=(tile_px[0], tile_px[1]),
        )

    async def get_tile(self, level: int, address: tuple[int, int]) -> Image.Image:
        """Read and finish one tile on the calling loop (arguments as :meth:`tile_request`).

        Returns
        -------
        PIL.Image.Image
            RGB tile, equal to ``DeepZoomGenerator.get_tile(level, address)``
        """
        request = self.tile_request(level, address)
        region = await self.osr.read_region(request.location, request.slide_level, request.size)
        return finish_tile(region, request.tile_size, self.background)

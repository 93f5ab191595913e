"""XYZ tiles of an orthomosaic: 256-pixel Web Mercator (EPSG:3857) PNG, JPEG or WebP, and its TileJSON.

A map page shows a survey the way it shows any basemap, by XYZ tile. A tile is read with rio-tiler, which
warps only the tile's window from the overview closest to the tile's resolution, so a Cloud Optimized
GeoTIFF of several gigapixels costs a few blocks per tile. Pixels the survey does not cover (nodata value,
internal mask or alpha band, as in :mod:`inspection.ortho`) are transparent in PNG and WebP, black in JPEG.

Only 8-bit RGB orthomosaics are tiled (what ODM, DJI Terra and Pix4D write for RGB cameras): anything
deeper would need a stretch chosen per survey, which no caller asks for yet.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.warp import calculate_default_transform, transform_bounds
from rio_tiler.errors import RioTilerError, TileOutsideBounds
from rio_tiler.io import Reader

from inspection.errors import InspectionError, RasterError

#: Deepest zoom served: about 1 cm per pixel at the equator, finer than any drone survey.
MAX_ZOOM = 24
TILE_SIZE = 256
MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}
WGS84 = CRS.from_epsg(4326)
WEB_MERCATOR = CRS.from_epsg(3857)
_DRIVERS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}
_RGB = (1, 2, 3)
#: Metres (EPSG:3857 units) per pixel of the one 256-pixel tile at zoom 0.
_ZOOM0_RESOLUTION = 2 * math.pi * 6378137 / TILE_SIZE


class TileRequestError(InspectionError):
    """A tile address or format that does not exist (zoom outside 0..24, column or row outside the zoom)."""


class TileOutsideError(InspectionError):
    """A tile that does not meet the survey: there is nothing to draw."""


def check_tile(z: int, x: int, y: int, fmt: str = "png") -> None:
    """Refuse a tile address outside the Web Mercator pyramid or an unknown image format.

    Raises
    ------
    TileRequestError
        Saying which part is wrong and the allowed range.

    Examples
    --------
    >>> check_tile(2, 3, 3)
    >>> check_tile(2, 4, 0)
    Traceback (most recent call last):
    ...
    inspection.rastertiles.TileRequestError: tile column 4 is outside 0..3 at zoom 2
    """
    if not 0 <= z <= MAX_ZOOM:
        raise TileRequestError(f"zoom {z} is outside 0..{MAX_ZOOM}")
    last = 2**z - 1
    if not 0 <= x <= last:
        raise TileRequestError(f"tile column {x} is outside 0..{last} at zoom {z}")
    if not 0 <= y <= last:
        raise TileRequestError(f"tile row {y} is outside 0..{last} at zoom {z}")
    if fmt not in MEDIA_TYPES:
        raise TileRequestError(f"unknown tile format {fmt!r}; known: {', '.join(MEDIA_TYPES)}")


def render_tile(path: str | os.PathLike, z: int, x: int, y: int, *, fmt: str = "png") -> bytes:
    """The XYZ tile ``z/x/y`` of the orthomosaic at ``path``, encoded as ``fmt`` (png, jpg or webp).

    Raises
    ------
    TileRequestError
        A tile address or format that does not exist (:func:`check_tile`).
    TileOutsideError
        When the tile does not meet the orthomosaic's bounds.
    RasterError
        When the file is missing, unreadable or not 8-bit RGB.
    """
    check_tile(z, x, y, fmt)
    with _open(path) as src:
        try:
            image = src.tile(x, y, z, tilesize=TILE_SIZE, indexes=_RGB)
        except TileOutsideBounds:
            raise TileOutsideError(f"tile {z}/{x}/{y} does not meet the survey") from None
        except (RioTilerError, RasterioError) as error:
            raise RasterError(f"{Path(path).name}: cannot read tile {z}/{x}/{y} ({_reason(error, path)})") from error
        return image.render(img_format=_DRIVERS[fmt])


def tilejson(path: str | os.PathLike, tiles: str, *, name: str) -> dict:
    """A TileJSON 3.0 document for the orthomosaic at ``path`` whose tiles are at the URL template ``tiles``.

    ``bounds`` are the image's bounds in WGS84 (EPSG:4326), rounded outwards to 1e-7 degree (1 cm);
    ``maxzoom`` is the first zoom whose pixels are as fine as the image's (within 1%, so an image made on
    the Web Mercator pyramid gets its own zoom), so the map shows every pixel; ``minzoom`` is where the whole
    image fits in one tile, the smallest overview GDAL would build: below it a tile costs a full read.
    """
    with _open(path) as src:
        bounds = transform_bounds(src.crs, WGS84, *src.bounds, densify_pts=21)
        transform, width, height = calculate_default_transform(src.crs, WEB_MERCATOR, src.width, src.height,
                                                               *src.bounds)
    resolution = max(abs(transform.a), abs(transform.e))
    maxzoom = min(MAX_ZOOM, max(0, math.ceil(math.log2(_ZOOM0_RESOLUTION / resolution) - 0.01)))
    minzoom = max(0, maxzoom - math.ceil(math.log2(max(width, height, TILE_SIZE) / TILE_SIZE)))
    minx, miny = (math.floor(v * 1e7) / 1e7 for v in bounds[:2])
    maxx, maxy = (math.ceil(v * 1e7) / 1e7 for v in bounds[2:])
    return {"tilejson": "3.0.0", "name": name, "scheme": "xyz", "tiles": [tiles],
            "minzoom": minzoom, "maxzoom": maxzoom, "bounds": [minx, miny, maxx, maxy],
            "center": [(minx + maxx) / 2, (miny + maxy) / 2, minzoom]}


def _open(path: str | os.PathLike) -> Reader:
    path = Path(path)
    if not path.is_file():
        raise RasterError(f"{path.name}: no such file")
    try:
        src = Reader(str(path))
    except RasterioError as error:
        raise RasterError(f"{path.name}: not a readable raster ({_reason(error, path)})") from error
    count, dtype = src.dataset.count, src.dataset.dtypes[0]
    if count < 3 or dtype != "uint8":
        src.close()
        raise RasterError(f"{path.name}: only 8-bit RGB orthomosaics are tiled "
                          f"(this one has {count} band(s) of {dtype})")
    return src


def _reason(error: Exception, path: str | os.PathLike) -> str:
    """The error's first line, naming the file but not where it lives: the message may reach a client."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return line.replace(str(path), Path(path).name)

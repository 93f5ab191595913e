"""Orthomosaics: ingest a GeoTIFF or COG, describe it as a survey, read two surveys on one pixel grid.

A drone survey arrives as one orthomosaic, often several gigapixels. Nothing here reads a whole one:

* :func:`read_ortho_info` opens the header, one block (to catch truncated files) and a low-resolution
  read of the validity mask (an overview when there is one) for the footprint;
* :func:`tile_windows` and :func:`core_window` cut an image into overlapping tiles whose cores
  partition it, so per-tile results stitch without double counting;
* :class:`SurveyPair` warps only the requested window of each survey onto a common grid through GDAL's
  warped VRT, so memory follows the window, never the mosaic; a survey already on the grid's pixels (or an
  overview's) is read as is, its tiles decoded by tifffile and libjpeg-turbo (:func:`_read_tiles`), and one
  whose grid pixels are small blocks of an overview's is read as their means (:func:`_read_finer_tiles`).

:func:`stac_item` turns an :class:`OrthoInfo` into a STAC 1.0 Item, the survey record the catalogue keeps.
:func:`write_ortho` and :func:`write_large_synthetic_mosaic` write test and benchmark surveys.

Validity ("mask") follows GDAL: an alpha band (WebODM), an internal mask (COG) or a nodata value; pixels a
file does not cover are invalid after warping too.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyproj
import rasterio
import rasterio.features
import rasterio.shutil
import shapely
import tifffile
from affine import Affine
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import RasterioError
from rasterio.io import MemoryFile
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from shapely.geometry import box, mapping, shape

from gridmap.crs import metric_crs, transformer
from inspection.errors import RasterError

# A street office covers a few km; at 1 cm per pixel that is a few hundred thousand pixels a side.
# Anything wider is a corrupt header or a wrong file, and would make any grid built on it absurd.
MAX_SIDE = 1_000_000
# The footprint is traced on a mask read at most this many pixels a side: cheap even on a 100k x 100k
# mosaic (GDAL serves it from an overview) and fine enough for a survey outline.
FOOTPRINT_SIDE = 512
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
GEOTIFF_MEDIA_TYPE = "image/tiff; application=geotiff"
STAC_VERSION = "1.0.0"
PROJECTION_EXTENSION = "https://stac-extensions.github.io/projection/v1.1.0/schema.json"
# A projected CRS whose scale at the survey differs from 1 by more than this (Web Mercator: 1/cos(lat))
# is not used as the pair grid: its "metres" are not ground metres.
_MAX_SCALE_ERROR = 0.01
_GEOD = pyproj.Geod(ellps="WGS84")
_TIFF_DATETIME = "%Y:%m:%d %H:%M:%S"
_BLOCK = 512


@dataclass(frozen=True)
class OrthoInfo:
    """What :func:`read_ortho_info` learns about an orthomosaic without reading its pixels.

    Attributes
    ----------
    path : pathlib.Path
        The file.
    crs : str
        Its CRS, ``"EPSG:NNNN"`` when it has an EPSG code, else WKT.
    width, height, count : int
        Size in pixels and number of bands (4 when an alpha band follows RGB).
    dtype : str
        Pixel type, e.g. ``"uint8"``.
    resolution_m : float
        Ground metres per pixel at the image centre, measured on the WGS84 ellipsoid (geometric mean of
        the pixel's width and height). Equal to the nominal pixel size, within the projection's scale
        error, for UTM or Gauss-Kruger; for Web Mercator (EPSG:3857) it is about the nominal size times
        cos(latitude), since Mercator "metres" are true metres only on the equator; for a geographic CRS
        it converts degrees to metres.
    transform : affine.Affine
        Pixel to CRS coordinates.
    nodata : float or None
        The nodata value, if the file declares one.
    has_alpha : bool
        Whether the file has an alpha band.
    has_mask : bool
        Whether the file says which pixels are valid at all (alpha band, internal mask or nodata).
    bounds : tuple of float
        (left, bottom, right, top) in ``crs``.
    footprint : shapely.Polygon or shapely.MultiPolygon
        Where the valid pixels are, in EPSG:4326, traced on a low-resolution mask (at most
        :data:`FOOTPRINT_SIDE` pixels a side) and simplified by one of its pixels, so it may be off by
        that much (``footprint_tolerance`` native units). The whole image when every pixel is valid.
    footprint_tolerance : float
        That tolerance, in units of ``crs``.
    is_cog : bool
        Tiled with overviews: readable by window and by zoom level without reading the rest. The IFD
        order a strict COG validator checks is not verified.
    overviews : list of int
        Overview decimation factors, e.g. ``[2, 4, 8]``.
    datetime : datetime.datetime or None
        From ``TIFFTAG_DATETIME``, read as UTC (the tag has no zone), or None when absent or malformed.
        Writers usually put the processing time there, not the flight time.
    mask_is_alpha : bool
        Whether validity is the alpha band (GDAL's mask is an internal mask when there is one, even with
        alpha): an RGBA mosaic's mask then comes with its pixels from one decoding.
    """

    path: Path
    crs: str
    width: int
    height: int
    count: int
    dtype: str
    resolution_m: float
    transform: Affine
    nodata: float | None
    has_alpha: bool
    has_mask: bool
    bounds: tuple[float, float, float, float]
    footprint: shapely.Polygon | shapely.MultiPolygon
    footprint_tolerance: float
    is_cog: bool
    overviews: list[int]
    datetime: dt.datetime | None
    mask_is_alpha: bool = False


def read_ortho_info(path: str | os.PathLike) -> OrthoInfo:
    """Describe the orthomosaic at ``path``, reading only its header, one block and a small mask.

    Raises
    ------
    RasterError
        With a one-line reason: the file is missing, not a raster or truncated, has no CRS or no
        georeference, has fewer than 3 bands, or is absurdly large (over :data:`MAX_SIDE` pixels a side).

    Examples
    --------
    >>> read_ortho_info("no/such.tif")
    Traceback (most recent call last):
    ...
    inspection.errors.RasterError: no/such.tif: no such file
    """
    path = Path(path)
    if not path.is_file():
        raise RasterError(f"{path}: no such file")
    stat = path.stat()
    return _read_ortho_info(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _read_ortho_info(path: Path, size: int, mtime_ns: int) -> OrthoInfo:
    """:func:`read_ortho_info` for one version of a file (size and mtime are the cache key's part)."""
    try:
        with rasterio.open(path) as ds:
            _check_usable(path, ds)
            # GDAL opens a file on its header alone; reading the last block catches a truncated one.
            ds.read(1, window=ds.block_window(1, *(n - 1 for n in _block_counts(ds))))
            footprint, tolerance = _footprint(ds)
            flags = ds.mask_flag_enums[0]
            return OrthoInfo(
                path=path,
                crs=ds.crs.to_string(),
                width=ds.width,
                height=ds.height,
                count=ds.count,
                dtype=ds.dtypes[0],
                resolution_m=_ground_resolution(ds.crs, ds.transform, ds.width, ds.height),
                transform=ds.transform,
                nodata=ds.nodata,
                has_alpha=ColorInterp.alpha in ds.colorinterp,
                has_mask=MaskFlags.all_valid not in flags,
                bounds=tuple(ds.bounds),
                footprint=footprint,
                footprint_tolerance=tolerance,
                is_cog=bool(ds.profile.get("tiled")) and bool(ds.overviews(1)),
                overviews=ds.overviews(1),
                datetime=_tiff_datetime(ds.tags().get("TIFFTAG_DATETIME")),
                mask_is_alpha=MaskFlags.alpha in flags,
            )
    except RasterioError as error:
        raise RasterError(f"{path}: not a readable raster or truncated ({_first_line(error)})") from error


def stac_item(info: OrthoInfo, *, survey_id: str, datetime: dt.datetime | None = None, href: str | None = None) -> dict:
    """A STAC 1.0 Item for the survey ``info`` describes, with the projection extension.

    Parameters
    ----------
    info : OrthoInfo
        The orthomosaic.
    survey_id : str
        The Item id.
    datetime : datetime.datetime, optional
        Acquisition time; defaults to ``info.datetime``. A naive time is taken as UTC.
    href : str, optional
        Where the image asset lives (e.g. an S3 URL); defaults to the local path.

    Raises
    ------
    RasterError
        When there is no time at all: STAC requires one.
    """
    when = datetime or info.datetime
    if when is None:
        raise RasterError(f"{info.path}: no TIFFTAG_DATETIME; pass the survey's datetime")
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    crs = pyproj.CRS.from_user_input(info.crs)
    epsg = crs.to_epsg()
    projection = {
        "proj:epsg": epsg,
        "proj:shape": [info.height, info.width],
        "proj:transform": list(info.transform)[:6],
        "proj:bbox": list(info.bounds),
    }
    if epsg is None:
        projection["proj:wkt2"] = crs.to_wkt()
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": [PROJECTION_EXTENSION],
        "id": survey_id,
        # mapping() gives tuples; lists make the Item compare equal to its own JSON round trip.
        "geometry": _lists(mapping(info.footprint)),
        "bbox": list(info.footprint.bounds),
        "properties": {
            "datetime": when.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z"),
            "gsd": info.resolution_m,
            **projection,
        },
        "links": [],
        "assets": {
            "image": {
                "href": href or str(info.path),
                "type": COG_MEDIA_TYPE if info.is_cog else GEOTIFF_MEDIA_TYPE,
                "title": "orthomosaic",
                "roles": ["data"],
            }
        },
    }


def tile_windows(width: int, height: int, *, size: int = 1024, overlap: int = 64) -> list[Window]:
    """Overlapping tiles covering a ``width`` x ``height`` image, row by row from the top left.

    The image is cut into cores of at most ``size`` a side, as few as that allows and as equal as they can
    be (:func:`_core_step`); each tile is its core grown by ``overlap`` pixels on every side, clipped to the
    image, so a detector sees context across core edges. :func:`core_window` gives a tile's core back: keep
    results from cores only and every pixel is counted once.

    Examples
    --------
    >>> [(w.col_off, w.row_off, w.width, w.height) for w in tile_windows(1500, 1000, size=1024, overlap=64)]
    [(0, 0, 814, 1000), (686, 0, 814, 1000)]
    """
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError(f"need size > overlap >= 0, got size={size}, overlap={overlap}")
    col_step, row_step = _core_step(width, size, overlap), _core_step(height, size, overlap)
    windows = []
    for row in range(0, height, row_step):
        for col in range(0, width, col_step):
            col0, row0 = max(col - overlap, 0), max(row - overlap, 0)
            col1, row1 = min(col + col_step + overlap, width), min(row + row_step + overlap, height)
            windows.append(Window(col0, row0, col1 - col0, row1 - row0))
    return windows


def _core_step(extent: int, size: int, overlap: int) -> int:
    """Side of the cores along one axis of ``extent`` pixels: the fewest cores of at most ``size``, of equal
    side but the last, which is short by fewer pixels than there are cores.

    Equal cores are equal tasks: a 1,667 px grid cut at 1024 gave cores of 1024 and 643, and of two Dask
    workers one finished long before the other. A core is never narrower than ``overlap + 1``, which
    :func:`core_window` relies on to tell a tile's core from its margin.
    """
    count = max(1, -(-extent // size))
    return max(-(-extent // count), overlap + 1)


def core_window(window: Window, width: int, height: int, *, size: int = 1024, overlap: int = 64) -> Window:
    """The core of a tile from :func:`tile_windows` (same ``width``, ``height``, ``size``, ``overlap``).

    In image coordinates; the core's place inside the tile's array is
    ``core.row_off - window.row_off``, ``core.col_off - window.col_off``.

    Examples
    --------
    >>> tiles = tile_windows(1500, 1000, size=1024, overlap=64)
    >>> [(c.col_off, c.width) for c in (core_window(t, 1500, 1000, size=1024, overlap=64) for t in tiles)]
    [(0, 750), (750, 750)]
    """
    col_step, row_step = _core_step(width, size, overlap), _core_step(height, size, overlap)
    # Only the first core of a row or column starts at 0; every other tile starts overlap before its
    # core, since cores start at multiples of a step > overlap.
    col = 0 if window.col_off == 0 else int(window.col_off) + overlap
    row = 0 if window.row_off == 0 else int(window.row_off) + overlap
    return Window(col, row, min(col + col_step, width) - col, min(row + row_step, height) - row)


READ_CACHE_MB = 64


class SurveyPair:
    """Two surveys of one area, read window by window on one pixel grid.

    The grid covers the overlap of the two footprints (its bounding box, snapped outward onto the before
    survey's pixel edges when in its CRS, else onto multiples of the resolution), in the before survey's CRS when that
    is projected with true metres at the survey (UTM, Gauss-Kruger), else in
    :func:`gridmap.crs.metric_crs` of the overlap's centre (CGCS2000 Gauss-Kruger in China).

    Each :meth:`read` opens both files afresh and warps only the requested window, so a pair holds no
    file handles, can be sent to worker processes, and needs memory in proportion to the window.

    Parameters
    ----------
    before, after : path-like
        8-bit RGB(A) orthomosaics.
    resolution : float, optional
        Grid pixel size in metres of the grid CRS; default the coarser of the two surveys' pixels measured
        in that CRS at their centres, so neither is upsampled (and two surveys in the grid's CRS with the
        same pixel size keep it exactly).

    Attributes
    ----------
    before, after : OrthoInfo
    crs : str
        The grid's CRS, e.g. ``"EPSG:32650"``.
    transform : affine.Affine
    shape : tuple of int
        (height, width) of the grid.
    resolution : float

    Raises
    ------
    RasterError
        When either file is unusable (see :func:`read_ortho_info`), is not 8-bit, or the footprints do
        not overlap.
    """

    def __init__(self, before: str | os.PathLike, after: str | os.PathLike, *, resolution: float | None = None):
        self.before = read_ortho_info(before)
        self.after = read_ortho_info(after)
        for info in (self.before, self.after):
            if info.dtype != "uint8":
                raise RasterError(
                    f"{info.path}: {info.dtype} pixels; convert to 8-bit (gdal_translate -ot Byte -scale)"
                )
        overlap = self.before.footprint.intersection(self.after.footprint)
        if overlap.area == 0:
            raise RasterError(
                f"surveys do not overlap: before covers {_lonlat_box(self.before.footprint)}, "
                f"after covers {_lonlat_box(self.after.footprint)}"
            )
        crs = _grid_crs(self.before, overlap.centroid)
        self.crs = crs.to_string()
        native = self.crs == self.before.crs
        self.resolution = float(resolution or max(_pixel_size_in(info, crs) for info in (self.before, self.after)))
        to_grid = transformer("EPSG:4326", crs)
        left, bottom, right, top = shapely.transform(overlap, to_grid.transform, interleaved=False).bounds
        # Snapped outward onto the before survey's own pixel edges when the grid is in its CRS, so that at
        # its resolution the before image is read as is, not resampled half a pixel off.
        x0, y0 = (self.before.transform.c, self.before.transform.f) if native else (0.0, 0.0)
        res = self.resolution
        # The overlap went through WGS84 and back, so an edge that is on a pixel edge arrives a hair off it;
        # without the tolerance the grid would gain a column of no data on that side.
        left, right = x0 + _floor(left - x0, res) * res, x0 + _ceil(right - x0, res) * res
        bottom, top = y0 + _floor(bottom - y0, res) * res, y0 + _ceil(top - y0, res) * res
        self.transform = Affine(res, 0.0, left, 0.0, -res, top)
        self.shape = (round((top - bottom) / res), round((right - left) / res))

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Both surveys over ``window`` of the grid, bilinearly resampled.

        Returns
        -------
        before, after : numpy.ndarray
            uint8, shape (h, w, 3).
        valid : numpy.ndarray
            bool, shape (h, w): True where both surveys have data.
        """
        height, width = self.shape
        inside = 0 <= window.col_off and window.col_off + window.width <= width
        if not (inside and 0 <= window.row_off and window.row_off + window.height <= height):
            raise ValueError(f"window {window} is outside the {width} x {height} grid")
        before, before_valid = self._warp(self.before, window)
        after, after_valid = self._warp(self.after, window)
        return before, after, before_valid & after_valid

    def _warp(self, info: OrthoInfo, window: Window) -> tuple[np.ndarray, np.ndarray]:
        height, width = self.shape
        placement = self._placement(info)
        # GDAL's block cache defaults to 5 % of RAM per process; a small one keeps a worker's memory in
        # proportion to its tile rather than to how much of the mosaic it has read so far.
        with rasterio.Env(GDAL_CACHEMAX=READ_CACHE_MB), rasterio.open(info.path) as src:
            if placement is not None:
                return _read_on_grid(src, window, *placement, has_mask=info.has_mask,
                                     mask_is_alpha=info.mask_is_alpha)
            # Without an alpha band of its own the VRT gets one, so pixels the file does not cover (and
            # those its mask or nodata value exclude) come out invalid rather than black.
            with WarpedVRT(
                src,
                crs=self.crs,
                transform=self.transform,
                width=width,
                height=height,
                resampling=Resampling.bilinear,
                add_alpha=not info.has_alpha,
            ) as vrt:
                rgb = vrt.read(indexes=[1, 2, 3], window=window)
                valid = vrt.dataset_mask(window=window) > 0
        return _interleaved(rgb), valid

    def pixel_box(self, bounds: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
        """The grid pixels ``(col0, row0, col1, row1)``, end exclusive, covering ``bounds`` (left, bottom,
        right, top in the grid's CRS), clipped to the grid; edges within a thousandth of a pixel of a pixel
        edge are taken as on it."""
        left, bottom, right, top = bounds
        res, height, width = self.resolution, *self.shape
        x0, y0 = self.transform.c, self.transform.f
        return (max(_floor(left - x0, res), 0), max(_floor(y0 - top, res), 0),
                min(_ceil(right - x0, res), width), min(_ceil(y0 - bottom, res), height))

    @property
    def unwarped(self) -> bool:
        """Whether both surveys are read as whole blocks of their own pixels, never warped."""
        return all(self._placement(info) is not None for info in (self.before, self.after))

    def _placement(self, info: OrthoInfo) -> tuple[int, int, int] | None:
        """(column, row, factor) when every grid pixel is ``factor`` x ``factor`` whole pixels of ``info``
        starting at its pixel (column, row); None when the survey must be warped."""
        t, res = info.transform, self.resolution
        if info.crs != self.crs or t.b != 0 or t.d != 0 or not math.isclose(t.a, -t.e):
            return None
        factor = round(res / t.a)
        if factor < 1 or not math.isclose(factor * t.a, res, rel_tol=1e-9):
            return None
        dx, dy = (self.transform.c - t.c) / t.a, (t.f - self.transform.f) / t.a
        if abs(dx - round(dx)) > 1e-6 or abs(dy - round(dy)) > 1e-6:
            return None
        return round(dx), round(dy), factor


def _floor(length: float, step: float) -> int:
    """``floor(length / step)``, taking a quotient within a thousandth of a step below a whole number as that
    number."""
    return math.floor(length / step + 1e-3)


def _ceil(length: float, step: float) -> int:
    """``ceil(length / step)`` with the same tolerance as :func:`_floor`."""
    return math.ceil(length / step - 1e-3)


def _read_on_grid(
    src, window: Window, col: int, row: int, factor: int, *, has_mask: bool, mask_is_alpha: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Read a grid window from a survey whose pixels tile the grid's exactly (see ``_placement``).

    A plain windowed read, decimated by ``factor`` (GDAL serves that from the COG's overviews), of the part
    of the window inside the file; the rest stays invalid. Much faster than warping, and than rasterio's
    boundless reads, which go through a VRT. A file without a mask (``has_mask`` False) is valid wherever it
    has pixels: asking GDAL for its all-valid mask costs more than decoding the pixels. When the mask is the
    alpha band (``mask_is_alpha``) and :func:`_read_tiles` decodes the tiles, the alpha comes with them.
    """
    out_h, out_w = int(window.height), int(window.width)
    # the window in grid pixels, clipped to the grid pixels the file covers entirely
    c0 = max(int(window.col_off), math.ceil(-col / factor))
    r0 = max(int(window.row_off), math.ceil(-row / factor))
    c1 = min(int(window.col_off) + out_w, (src.width - col) // factor)
    r1 = min(int(window.row_off) + out_h, (src.height - row) // factor)
    if c1 <= c0 or r1 <= r0:
        return np.zeros((out_h, out_w, 3), np.uint8), np.zeros((out_h, out_w), bool)
    source = Window(col + c0 * factor, row + r0 * factor, (c1 - c0) * factor, (r1 - r0) * factor)
    shape = (r1 - r0, c1 - c0)
    levels = {1, *src.overviews(1)}
    if factor in levels:
        tiles = _read_tiles(src.name, source, factor, alpha=mask_is_alpha)
    else:
        tiles = _read_finer_tiles(src.name, source, factor, shape, levels, alpha=mask_is_alpha)
    if tiles is not None:
        data, alpha = tiles
    else:
        resampling = Resampling.average if factor > 1 else Resampling.nearest
        data = _interleaved(src.read(indexes=[1, 2, 3], window=source, out_shape=(3, *shape), resampling=resampling))
        alpha = None
    if alpha is not None:
        mask = alpha > 0
    elif has_mask:
        mask = src.dataset_mask(window=source, out_shape=shape, resampling=Resampling.nearest) > 0
    else:
        mask = np.ones(shape, bool)
    if shape == (out_h, out_w):
        return data, mask
    rgb = np.zeros((out_h, out_w, 3), np.uint8)
    valid = np.zeros((out_h, out_w), bool)
    top, left = r0 - int(window.row_off), c0 - int(window.col_off)
    rgb[top : top + shape[0], left : left + shape[1]] = data
    valid[top : top + shape[0], left : left + shape[1]] = mask
    return rgb, valid


#: Largest block side :func:`_read_finer_tiles` averages: 16 decoded pixels a grid pixel, still a fraction
#: of what GDAL's resampling between two overviews costs.
FINER_LEVEL_BLOCK = 4


def _read_finer_tiles(path: str, source: Window, factor: int, shape: tuple[int, int], levels: set[int], *,
                      alpha: bool = False) -> tuple[np.ndarray, np.ndarray | None] | None:
    """:func:`_read_tiles` for a ``factor`` no overview has, as block means of the coarsest of the file's
    ``levels`` (reduction factors: 1 and its overviews') that divides it into blocks of at most
    :data:`FINER_LEVEL_BLOCK` pixels a side (a 5 cm mosaic read at 60 cm: its 4x overview's pixels averaged
    3 x 3), giving ``shape``; None when there is none, or it does not fit.

    GDAL would resample the next coarser overview instead (the 8x one, by 1.5), at about a tenth of the
    speed, which made reading most of the work of a survey whose resolution is not a power-of-two
    fraction of the working one. Alpha, when asked for, is taken from each block's top-left pixel,
    as GDAL's nearest-neighbour masks are.
    """
    for block in range(2, FINER_LEVEL_BLOCK + 1):
        if factor % block or factor // block not in levels:
            continue
        tiles = _read_tiles(path, source, factor // block, alpha=alpha)
        if tiles is None:
            continue
        data, opacity = tiles
        if data.shape[:2] != (shape[0] * block, shape[1] * block):
            return None  # the level ends inside the window: leave the edge to GDAL
        means = cv2.resize(data, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
        return means, None if opacity is None else np.ascontiguousarray(opacity[::block, ::block])
    return None


_TIFF_RGB = (2, 6)  # photometric RGB, YCbCr
_TIFF_REDUCED = 1  # NewSubfileType of an overview (a mask is 4, an overview of a mask 5)


def _read_tiles(path: str, source: Window, factor: int, *, alpha: bool = False
                ) -> tuple[np.ndarray, np.ndarray | None] | None:
    """RGB pixels (h, w, 3) of ``source`` (full-resolution pixels) from the file's ``factor`` x reduced level,
    decoded tile by tile by tifffile, and with ``alpha`` the fourth sample (h, w) when it is an alpha
    channel (else None); or None when the file is not laid out for that and GDAL must read it.

    Why not GDAL: the rasterio wheels' GDAL decodes JPEG with libjpeg 9, without SIMD, at about 105 MP/s;
    tifffile hands the same tiles to imagecodecs' libjpeg-turbo (libdeflate for deflate), 2-3x as fast, and
    JPEG COGs are what drone mosaics are delivered as. The result is what GDAL reads from that level (same
    tiles, same level; JPEG decoders round the odd chroma edge pixel differently). Used when the file is
    tiled, 8-bit, pixel-interleaved RGB(A) or YCbCr, the level exists (``factor`` 1 is the full image, any
    other an overview of exactly that factor, as GDAL's COG driver writes them) and ``source`` starts on
    its pixels; anything else, or a tile tifffile cannot decode, goes to GDAL, which then reports the fault.
    """
    if source.col_off % factor or source.row_off % factor:
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            base = tif.pages[0]
            level_shape = (-(-base.imagelength // factor), -(-base.imagewidth // factor))
            page = next((p for p in tif.pages if (p.subfiletype == (_TIFF_REDUCED if factor > 1 else 0)
                                                   and (p.imagelength, p.imagewidth) == level_shape)), None)
            if (page is None or not page.is_tiled or page.dtype != np.uint8 or page.samplesperpixel < 3
                    or page.planarconfig != 1 or page.photometric not in _TIFF_RGB or page.imagedepth != 1):
                return None
            c0, r0 = int(source.col_off) // factor, int(source.row_off) // factor
            c1 = min(c0 + int(source.width) // factor, page.imagewidth)
            r1 = min(r0 + int(source.height) // factor, page.imagelength)
            out = np.zeros((r1 - r0, c1 - c0, 3), np.uint8)
            # ExtraSamples 1 and 2: associated and unassociated alpha
            has_alpha = page.samplesperpixel >= 4 and tuple(page.extrasamples[:1]) in ((1,), (2,))
            opacity = np.zeros((r1 - r0, c1 - c0), np.uint8) if alpha and has_alpha else None
            tile_h, tile_w = page.tilelength, page.tilewidth
            across = -(-page.imagewidth // tile_w)
            handle = tif.filehandle
            decode = page.decode  # tifffile builds it on first use, reading the file: so before any seek
            for ty in range(r0 // tile_h, (r1 - 1) // tile_h + 1):
                for tx in range(c0 // tile_w, (c1 - 1) // tile_w + 1):
                    index = ty * across + tx
                    if not page.databytecounts[index]:  # a sparse tile: no data, as GDAL reads it
                        continue
                    handle.seek(page.dataoffsets[index])
                    tile = decode(handle.read(page.databytecounts[index]), index, jpegtables=page.jpegtables)[0][0]
                    # the part of the tile inside the window, in level pixels: rows y0:y1, columns x0:x1
                    y0, y1 = max(r0, ty * tile_h), min(r1, (ty + 1) * tile_h)
                    x0, x1 = max(c0, tx * tile_w), min(c1, (tx + 1) * tile_w)
                    inside = tile[y0 - ty * tile_h : y1 - ty * tile_h, x0 - tx * tile_w : x1 - tx * tile_w]
                    target = (slice(y0 - r0, y1 - r0), slice(x0 - c0, x1 - c0))
                    out[target] = inside[..., :3]
                    if opacity is not None:
                        opacity[target] = inside[..., 3]
            return out, opacity
    except Exception:  # noqa: BLE001 - any fault of the fast path is GDAL's to read and report
        return None


def _interleaved(bands: np.ndarray) -> np.ndarray:
    """Band-sequential (3, H, W) uint8, as rasterio reads, to pixel-interleaved (H, W, 3), as OpenCV works.

    ``cv2.merge`` does it tens of times faster than numpy's transposing copy, which cost a tile's read a
    third of its time.
    """
    return cv2.merge([np.ascontiguousarray(band) for band in bands])


def write_ortho(
    path: str | os.PathLike,
    rgb: np.ndarray,
    transform: Affine,
    crs,
    *,
    cog: bool = True,
    nodata_mask: np.ndarray | None = None,
    datetime: dt.datetime | None = None,
    compress: str = "deflate",
) -> Path:
    """Write an RGB orthomosaic: a COG (512-pixel tiles, overviews) or a plain striped GeoTIFF.

    Parameters
    ----------
    path : path-like
    rgb : numpy.ndarray
        uint8, shape (height, width, 3).
    transform : affine.Affine
    crs : anything rasterio accepts, e.g. ``"EPSG:32650"``
    cog : bool
        Cloud Optimized GeoTIFF (tiled, with overviews) or a striped GeoTIFF without overviews.
    nodata_mask : numpy.ndarray, optional
        bool, shape (height, width), True where there is no data; written as an internal mask.
    datetime : datetime.datetime, optional
        Written as ``TIFFTAG_DATETIME`` (in UTC when aware).
    compress : str
        ``"deflate"`` (lossless) or ``"jpeg"`` (what drone pipelines ship; lossy).
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be uint8 (height, width, 3), got {rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[:2]
    profile = _profile(width, height, transform, crs, compress)
    path = Path(path)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), MemoryFile() as memory:
        with memory.open(**profile, tiled=True, blockxsize=_BLOCK, blockysize=_BLOCK) as dst:
            dst.write(np.moveaxis(rgb, -1, 0))
            if nodata_mask is not None:
                dst.write_mask(np.where(nodata_mask, 0, 255).astype(np.uint8))
            if datetime is not None:
                dst.update_tags(TIFFTAG_DATETIME=_tiff_datetime_text(datetime))
        with memory.open() as src:
            _copy(src, path, cog=cog, compress=compress)
    return path


def write_large_synthetic_mosaic(
    path: str | os.PathLike,
    size: int = 20000,
    *,
    crs="EPSG:32650",
    origin: tuple[float, float] = (448000.0, 4420000.0),
    resolution: float = 0.05,
    border: int = 0,
) -> Path:
    """Write a ``size`` x ``size`` RGB COG block by block, never holding more than one block in memory.

    For memory benchmarks. The default is a 1 km square at 5 cm in Beijing (UTM 50N). Pixel values are
    :func:`synthetic_pattern` of the pixel's column and row, so reads can be checked anywhere; a
    ``border`` pixels wide frame is masked as no data, to give the mosaic a footprint.
    """
    path = Path(path)
    transform = Affine(resolution, 0.0, origin[0], 0.0, -resolution, origin[1])
    profile = _profile(size, size, transform, crs, "deflate")
    staging = path.with_name(path.name + ".staging.tif")
    try:
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
            # zlevel 1: the pattern compresses well anyway and the benchmark wants a fast writer.
            tiling = {"tiled": True, "blockxsize": _BLOCK, "blockysize": _BLOCK}
            with rasterio.open(staging, "w", **profile, **tiling, zlevel=1) as dst:
                for row in range(0, size, _BLOCK):
                    for col in range(0, size, _BLOCK):
                        window = Window(col, row, min(_BLOCK, size - col), min(_BLOCK, size - row))
                        dst.write(synthetic_pattern(window), window=window)
                        if border:
                            dst.write_mask(_border_mask(window, size, border), window=window)
            with rasterio.open(staging) as src:
                _copy(src, path, cog=True, compress="deflate")
    finally:
        staging.unlink(missing_ok=True)
    return path


def synthetic_pattern(window: Window) -> np.ndarray:
    """The pixels :func:`write_large_synthetic_mosaic` writes over ``window``, shape (3, h, w) uint8.

    Red follows the column and green the row (each stepping every 16 pixels), blue changes every 256
    pixels both ways: any window reads back as a unique, checkable image.

    Examples
    --------
    >>> synthetic_pattern(Window(256, 32, 2, 1))[:, 0, 0].tolist()
    [16, 2, 37]
    """
    rows = np.arange(window.row_off, window.row_off + window.height, dtype=np.int64)[:, None]
    cols = np.arange(window.col_off, window.col_off + window.width, dtype=np.int64)[None, :]
    red = np.broadcast_to((cols >> 4) & 255, (rows.size, cols.size))
    green = np.broadcast_to((rows >> 4) & 255, (rows.size, cols.size))
    blue = (((cols >> 8) ^ (rows >> 8)) * 37) & 255
    return np.stack([red, green, blue]).astype(np.uint8)


def _check_usable(path: Path, ds) -> None:
    if ds.width > MAX_SIDE or ds.height > MAX_SIDE:
        raise RasterError(f"{path}: {ds.width} x {ds.height} pixels is absurd for a survey (max {MAX_SIDE} a side)")
    if ds.transform.is_identity:
        hint = "only GCPs; warp it with gdalwarp" if ds.gcps[0] else "no geotransform"
        raise RasterError(f"{path}: has no georeference ({hint})")
    if ds.crs is None:
        raise RasterError(f"{path}: has no CRS; assign one with gdal_edit -a_srs")
    if ds.count < 3:
        raise RasterError(f"{path}: has {ds.count} band(s); an orthomosaic needs RGB")


def _block_counts(ds) -> tuple[int, int]:
    block_height, block_width = ds.block_shapes[0]
    return -(-ds.height // block_height), -(-ds.width // block_width)


def _footprint(ds) -> tuple[shapely.Polygon | shapely.MultiPolygon, float]:
    factor = max(1, math.ceil(max(ds.width, ds.height) / FOOTPRINT_SIDE))
    out_shape = (-(-ds.height // factor), -(-ds.width // factor))
    transform = ds.transform @ Affine.scale(ds.width / out_shape[1], ds.height / out_shape[0])
    tolerance = math.hypot(transform.a, transform.d)
    # A file with no mask, alpha or nodata is valid everywhere; GDAL would still compute its mask.
    unmasked = all(MaskFlags.all_valid in flags for flags in ds.mask_flag_enums)
    # A decimated read: GDAL takes it from the nearest overview, so a huge mosaic costs a small read.
    valid = None if unmasked else ds.dataset_mask(out_shape=out_shape) > 0
    if valid is None or valid.all():
        native = box(*ds.bounds)
    else:
        polygons = [
            shape(geom)
            for geom, _ in rasterio.features.shapes(valid.astype(np.uint8), mask=valid, transform=transform)
        ]
        native = shapely.union_all(polygons).simplify(tolerance)
    # Vertices every few low-resolution pixels so straight native edges bend as they should in degrees.
    native = shapely.segmentize(native, 8 * tolerance)
    to_wgs84 = transformer(ds.crs, "EPSG:4326")
    return shapely.make_valid(shapely.transform(native, to_wgs84.transform, interleaved=False)), tolerance


def _ground_resolution(crs, transform: Affine, width: int, height: int) -> float:
    # One pixel's width and height at the centre, as geodesic distances: the same rule for UTM,
    # Gauss-Kruger, Web Mercator and degrees.
    col, row = width / 2, height / 2
    xs, ys = zip(*(transform @ point for point in ((col, row), (col + 1, row), (col, row + 1))))
    lons, lats = transformer(crs, "EPSG:4326").transform(xs, ys)
    _, _, across = _GEOD.inv(lons[0], lats[0], lons[1], lats[1])
    _, _, down = _GEOD.inv(lons[0], lats[0], lons[2], lats[2])
    return math.sqrt(across * down)


def _pixel_size_in(info: OrthoInfo, crs: pyproj.CRS) -> float:
    # The centre pixel's width and height in the grid CRS: its nominal size when that is the file's own. That
    # case is answered from the transform, not by projecting: differences of coordinates in the millions lose
    # digits, and a pixel of 0.030000000115 m no longer divides a 0.3 m grid pixel into whole pixels.
    t = info.transform
    if pyproj.CRS.from_user_input(info.crs) == crs and t.b == 0 and t.d == 0:
        return math.sqrt(abs(t.a * t.e))
    col, row = info.width / 2, info.height / 2
    xs, ys = zip(*(info.transform @ point for point in ((col, row), (col + 1, row), (col, row + 1))))
    xs, ys = transformer(info.crs, crs).transform(xs, ys)
    return math.sqrt(math.hypot(xs[1] - xs[0], ys[1] - ys[0]) * math.hypot(xs[2] - xs[0], ys[2] - ys[0]))


def _grid_crs(before: OrthoInfo, centre: shapely.Point) -> pyproj.CRS:
    crs = pyproj.CRS.from_user_input(before.crs)
    if crs.is_projected and crs.axis_info[0].unit_name == "metre":
        nominal = math.sqrt(abs(before.transform.determinant))
        if abs(nominal / before.resolution_m - 1) <= _MAX_SCALE_ERROR:
            return crs
    return metric_crs(centre.x, centre.y)


def _profile(width: int, height: int, transform: Affine, crs, compress: str) -> dict:
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 3,
        "dtype": "uint8",
        "crs": crs,
        "transform": transform,
        "compress": compress,
    }
    if compress == "jpeg":
        profile["photometric"] = "ycbcr"
    return profile


def _copy(src, path: Path, *, cog: bool, compress: str) -> None:
    # GDAL's COG driver orders overviews before full-resolution tiles, the layout range readers expect,
    # and carries the internal mask and tags across.
    if cog:
        rasterio.shutil.copy(
            src, path, driver="COG", compress=compress.upper(), blocksize=_BLOCK, overview_resampling="average"
        )
    else:
        rasterio.shutil.copy(src, path, driver="GTiff", compress=compress)


def _border_mask(window: Window, size: int, border: int) -> np.ndarray:
    rows = np.arange(window.row_off, window.row_off + window.height)[:, None]
    cols = np.arange(window.col_off, window.col_off + window.width)[None, :]
    inside = (rows >= border) & (rows < size - border) & (cols >= border) & (cols < size - border)
    return np.where(inside, 255, 0).astype(np.uint8)


def _tiff_datetime(text: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(text.strip(), _TIFF_DATETIME).replace(tzinfo=dt.timezone.utc)
    except (AttributeError, ValueError):
        return None


def _tiff_datetime_text(when: dt.datetime) -> str:
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc)
    return when.strftime(_TIFF_DATETIME)


def _lonlat_box(geometry) -> str:
    return "({:.6f}, {:.6f}, {:.6f}, {:.6f})".format(*geometry.bounds)


def _lists(value):
    if isinstance(value, (tuple, list)):
        return [_lists(item) for item in value]
    if isinstance(value, dict):
        return {key: _lists(item) for key, item in value.items()}
    return value


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

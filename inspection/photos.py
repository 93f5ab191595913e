"""Drone photo ingest: read position, attitude and camera, estimate the ground footprint, reject bad frames.

:func:`read_photo` reads one photo into a :class:`PhotoInfo`: EXIF (GPS, time, camera, focal length, and
the attitude in DJI maker notes) with exifread, DJI's ``drone-dji`` XMP with Pillow's ``getxmp`` (parsed
by defusedxml), and the size from the decoded pixels, never from EXIF, whose dimensions are sometimes
swapped. :func:`footprint` projects the image corners onto flat ground. :func:`check_photos` runs a
whole batch and gives every photo a status and, when rejected, a reason; :func:`check_metadata_table`
applies the metadata checks to an exiftool table when the images themselves are not at hand.

Conventions (DJI's, used in its XMP and maker notes):

* gimbal pitch: degrees below (negative) or above the horizon; -90 looks straight down (nadir).
* yaw: degrees clockwise from true north of the camera's heading, i.e. of the top edge of a nadir image.
  The gimbal yaw is absolute on DJI aircraft and wins over the flight (body) yaw when both are known.
* roll: degrees, positive tilting the image's right edge down.
* altitude: ``altitude_abs`` above the ellipsoid/sea level as the aircraft reports it, useless for the
  footprint without the ground's height; ``altitude_rel`` above the take-off point, which is taken as the
  height above (flat) ground.

Missing attitude is assumed to be a nadir photo with its top edge to the north, the common case of a
mapping flight; such footprints are right in size but may be rotated.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path

import exifread
import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely
from PIL import Image, UnidentifiedImageError
from shapely import Point, Polygon
from shapely.ops import nearest_points

from gridmap.crs import metric_crs, transform_geometries, transform_xy
from gridmap.locate import UnitLocator
from inspection.errors import ImageError, MetadataError
from inspection.quality import brightness, dhash, hamming, sharpness

# 150 MP is above every survey camera a street office flies (DJI's largest, the Zenmuse P1, is 45 MP)
# and below Pillow's own refusal at 179 MP, so a photo over it is refused with its size in the reason.
DEFAULT_MAX_PIXELS = 150_000_000
# Sharp mapping frames score 1,000-5,000 and Gaussian-blurred copies (sigma 4 px) 6-13 (see quality.py).
DEFAULT_BLUR_THRESHOLD = 100.0
# Mean grey level under which a frame is black (lens cap, shutter in the dark): scenes lit by day sit at 80-170.
DEFAULT_DARK_THRESHOLD = 10.0
DEFAULT_MAX_DISTANCE_M = 500.0
# Bits of the 256-bit dHash in which a resized, re-encoded copy may differ; overlapping frames of one
# flight differ in 60 or more.
NEAR_DUPLICATE_BITS = 16
# A corner ray that meets the ground farther than this many heights away (or above the horizon) is cut
# there: an oblique footprint would otherwise reach the horizon.
HORIZON_CAP = 5.0
# Sensor widths (mm) by EXIF model; a dict by image width where one model has several cameras.
SENSOR_WIDTH_MM: dict[str, float | dict[int, float]] = {
    "FC300S": 6.17,  # Phantom 3 Advanced/Professional, 1/2.3"
    "FC300X": 6.17,  # Phantom 3 Professional (4K), 1/2.3"
    "FC330": 6.17,  # Phantom 4, 1/2.3"
    "FC350": 6.17,  # Inspire 1 X3, 1/2.3"
    "FC6310": 13.2,  # Phantom 4 Pro, 1"
    "FC6310R": 13.2,  # Phantom 4 RTK, 1"
    "FC6310S": 13.2,  # Phantom 4 Pro V2, 1"
    "M3E": 17.3,  # Mavic 3 Enterprise, 4/3"
    "L2D-20C": 17.3,  # Mavic 3 Hasselblad, 4/3"
    # Zenmuse H20T: radiometric thermal 640×512 at 12 µm, wide 1/2.3" 4056×3040, zoom 1/1.7" 5184×3888.
    "ZH20T": {640: 7.68, 4056: 6.17, 5184: 7.53},
}
# Diagonal of 36×24 mm film: "35 mm equivalent" focal lengths keep the angle of view across the diagonal.
_FILM_DIAGONAL_MM = math.hypot(36.0, 24.0)
# Beyond this distance an area's local metric CRS is no use; far points are measured geodesically.
_LOCAL_RANGE_M = 50_000.0
_GEOD = pyproj.Geod(ellps="WGS84")
_LOCATED = ("street", "community", "grid", "courtyard", "worker")
_DMS = re.compile(r"""^\s*([0-9.]+)\s*deg\s*([0-9.]+)\s*'\s*([0-9.]+)\s*"\s*([NSEW])?\s*$""", re.IGNORECASE)
_DECIMAL = re.compile(r"^\s*([-+]?[0-9.]+)\s*([NSEW])?\s*$", re.IGNORECASE)
# DJI XMP fields read, and the older firmware's misspelling of GpsLongitude.
_XMP_FIELDS = frozenset(
    {
        "AbsoluteAltitude",
        "RelativeAltitude",
        "GimbalPitchDegree",
        "GimbalRollDegree",
        "GimbalYawDegree",
        "FlightYawDegree",
        "GpsLatitude",
        "GpsLongitude",
        "GpsLongtitude",
        "CreateDate",
    }
)


@dataclass
class PhotoInfo:
    """What a photo says about itself; angles in degrees (conventions in the module docstring).

    Attributes
    ----------
    path : str
        As given, ``"<bytes>"`` for bytes.
    sha256 : str
        Hex digest of the file's bytes.
    width, height : int
        Of the decoded pixels.
    lon, lat : float or None
        WGS84 degrees.
    altitude_abs, altitude_rel : float or None
        Metres: as reported by the aircraft (XMP ``AbsoluteAltitude``, else EXIF GPS), and above take-off
        (XMP ``RelativeAltitude``).
    taken_at : datetime or None
        EXIF ``DateTimeOriginal``: camera clock, naive unless EXIF gives the offset.
    focal_length_mm, focal_length_35mm : float or None
    sensor_width_mm : float or None
        From :data:`SENSOR_WIDTH_MM`, else derived from the 35 mm equivalent focal length.
    footprint : shapely.Polygon or None
        Ground footprint in EPSG:4326 (:func:`footprint`).
    gsd_cm : float or None
        Ground sample distance at the image centre.
    """

    path: str
    sha256: str
    width: int
    height: int
    lon: float | None = None
    lat: float | None = None
    altitude_abs: float | None = None
    altitude_rel: float | None = None
    taken_at: datetime | None = None
    make: str | None = None
    model: str | None = None
    focal_length_mm: float | None = None
    focal_length_35mm: float | None = None
    sensor_width_mm: float | None = None
    gimbal_pitch: float | None = None
    gimbal_roll: float | None = None
    flight_yaw: float | None = None
    gimbal_yaw: float | None = None
    footprint: Polygon | None = None
    gsd_cm: float | None = None


def read_photo(source: str | Path | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, reduced: bool = False) -> PhotoInfo:
    """Read a photo's metadata and size, decoding it in full to prove it is whole.

    ``reduced`` is for photos that are kept rather than measured (field reports): a JPEG that ends with its
    end-of-image marker is taken as whole from its headers, without decoding; one that does not (truncated,
    or something odd) is decoded at 1/8 scale (libjpeg's DCT scaling), which still reads every byte, so a
    truncated file is refused.

    The footprint is filled in when the photo gives its height above take-off (DJI XMP); otherwise call
    :func:`footprint` with a height.

    Raises
    ------
    ImageError
        Not an image, truncated, or more than ``max_pixels`` pixels (refused from the header, before decoding).
    MetadataError
        EXIF that cannot be read, or a GPS position off the globe.
    """
    return _read(source, max_pixels, reduced)[0]


def footprint(info: PhotoInfo, *, height_m: float | None = None) -> Polygon | None:
    """Ground footprint of a photo, in EPSG:4326, for flat ground below the camera.

    A pinhole camera at ``info``'s position, ``altitude_rel`` (else ``height_m``) above the ground, with the
    photo's gimbal pitch, roll and yaw (nadir and north-up where unknown). The image edges are projected onto
    the ground; a nadir photo gives a rectangle, an oblique one a trapezoid. Rays above the horizon or
    meeting the ground beyond :data:`HORIZON_CAP` heights are cut at that distance. Offsets are laid off
    geodesically from the camera (true north, no grid convergence).

    Returns None without position, height, focal length or sensor width, or when the camera sees no ground.

    Examples
    --------
    A Phantom 3 (6.17 mm sensor, 3.61 mm lens) 120 m up sees 205 × 154 m:

    >>> info = PhotoInfo("x.jpg", "", 4000, 3000, lon=120.17, lat=30.25, focal_length_mm=3.61,
    ...                  sensor_width_mm=6.17, gimbal_pitch=-90.0, flight_yaw=0.0)
    >>> ring = footprint(info, height_m=120).exterior.coords
    >>> sides = [_GEOD.inv(*ring[i], *ring[i + 1])[2] for i in range(4)]
    >>> sorted(round(s, 1) for s in sides)
    [153.8, 153.8, 205.1, 205.1]
    """
    height = info.altitude_rel if info.altitude_rel is not None else height_m
    if (
        height is None
        or not height > 0
        or info.lon is None
        or info.lat is None
        or not info.focal_length_mm
        or not info.sensor_width_mm
    ):
        return None
    sensor_height = info.sensor_width_mm * info.height / info.width
    offsets = _ground_offsets(height, info.focal_length_mm, info.sensor_width_mm, sensor_height, *_attitude(info))
    if offsets is None:
        return None
    east, north = offsets[:, 0], offsets[:, 1]
    start_lon, start_lat = np.full(len(east), info.lon), np.full(len(east), info.lat)
    lon, lat, _ = _GEOD.fwd(start_lon, start_lat, np.degrees(np.arctan2(east, north)), np.hypot(east, north))
    # Simplifying at 1e-7 degrees (1 cm) drops the points of edges cut at the cap that lie on one line.
    polygon = shapely.convex_hull(shapely.multipoints(np.column_stack([lon, lat]))).simplify(1e-7)
    return polygon if isinstance(polygon, Polygon) and polygon.area > 0 else None


def check_photos(
    paths: Iterable[str | Path],
    *,
    area=None,
    max_distance_m: float = DEFAULT_MAX_DISTANCE_M,
    blur_threshold: float = DEFAULT_BLUR_THRESHOLD,
    dark_threshold: float = DEFAULT_DARK_THRESHOLD,
    height_m: float | None = None,
    units: gpd.GeoDataFrame | None = None,
    locator: UnitLocator | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Callable[[int, int], None] | None = None,
) -> gpd.GeoDataFrame:
    """Read and check a batch of photos: one row per input, in input order; never raises for a bad photo.

    A photo is rejected, with the first reason found, when it is not a readable image (or too large), has no
    or impossible GPS position, lies more than ``max_distance_m`` outside ``area`` or outside the streets of
    ``units``, is black, is blurred, looks at or above the horizon, or repeats an accepted photo (identical
    bytes, or a perceptual hash within :data:`NEAR_DUPLICATE_BITS`); the later copy is rejected.

    Parameters
    ----------
    paths : iterable of str or Path
    area : shapely geometry (EPSG:4326), GeoSeries or GeoDataFrame, optional
        The survey area.
    max_distance_m : float
        How far outside ``area`` (and the streets) a photo centre may lie.
    blur_threshold : float
        Minimum :func:`inspection.quality.sharpness`.
    dark_threshold : float
        Minimum mean grey level (0-255).
    height_m : float, optional
        Flight height above ground for photos that do not give theirs (no DJI XMP).
    units : GeoDataFrame, optional
        A unit table (:mod:`gridmap.units`); or pass a ready ``locator``. Adds the columns ``street``,
        ``community``, ``grid``, ``courtyard`` and ``worker`` at each photo's position.
    max_pixels : int
        Larger images are refused unread.
    progress : callable, optional
        Called as ``progress(done, total)`` after each photo.

    Returns
    -------
    geopandas.GeoDataFrame
        ``path``, ``status`` (``"accepted"``/``"rejected"``), ``reason`` (None when accepted), the
        :class:`PhotoInfo` fields, ``sharpness``, ``brightness``, the unit columns when located, and the
        geometry column ``footprint`` (EPSG:4326). Fields a rejected photo did not yield are None.
    """
    paths = list(paths)
    if locator is None and units is not None:
        locator = UnitLocator(units)
    fences = []
    if area is not None:
        fences.append(_Fence(_as_geometry(area), "the survey area"))
    if locator is not None:
        streets = _unit_outline(locator)
        if streets is not None:
            fences.append(_Fence(streets, "the street"))
    rows = []
    kept_sha: dict[str, str] = {}
    kept_hashes: list[tuple[int, str]] = []
    for done, path in enumerate(paths, 1):
        row = {"path": str(path), "status": "rejected", "reason": None}
        try:
            info, grey = _read(path, max_pixels)
        except (ImageError, MetadataError) as error:
            row["reason"] = str(error)
        else:
            if info.footprint is None and height_m is not None:
                info.footprint = footprint(info, height_m=height_m)
                info.gsd_cm = _gsd_cm(info, height_m)
            row.update({f.name: getattr(info, f.name) for f in fields(PhotoInfo)}, path=str(path))
            row["sharpness"], row["brightness"] = sharpness(grey), brightness(grey)
            digest = dhash(grey)
            row["reason"] = _reason(info, row, fences, max_distance_m, blur_threshold, dark_threshold)
            if row["reason"] is None:
                row["reason"] = _duplicate(info.sha256, digest, kept_sha, kept_hashes)
            if row["reason"] is None:
                row["status"] = "accepted"
                name = Path(str(path)).name
                kept_sha[info.sha256] = name
                kept_hashes.append((digest, name))
        rows.append(row)
        if progress is not None:
            progress(done, len(paths))
    info_columns = [f.name for f in fields(PhotoInfo) if f.name != "path"]
    columns = ["path", "status", "reason", *info_columns, "sharpness", "brightness"]
    frame = pd.DataFrame(rows, columns=columns).astype(object)
    frame = frame.where(frame.notna(), None)
    if locator is not None:
        _add_units(frame, locator)
    return gpd.GeoDataFrame(frame, geometry="footprint", crs="EPSG:4326")


def check_metadata_table(
    frame: pd.DataFrame, *, area=None, max_distance_m: float = DEFAULT_MAX_DISTANCE_M
) -> pd.DataFrame:
    """The metadata checks of :func:`check_photos` on an exiftool table, for photos not at hand.

    ``frame`` has exiftool's columns ``FileName``, ``DateTimeOriginal``, ``GPSLatitude``, ``GPSLongitude``
    (DMS strings such as ``8 deg 17' 26.74" S``, or signed decimals, with ``GPSLatitudeRef``/
    ``GPSLongitudeRef`` if the refs are apart) and optionally ``GimbalPitchDegree``. A row is rejected
    for no or impossible coordinates, lying more than ``max_distance_m`` outside ``area``, a camera at or
    above the horizon, or repeating an earlier row: the same file name and time, or the same time and
    position (to about a metre). Blur and black frames need the pixels.

    Returns
    -------
    pandas.DataFrame
        A copy of ``frame`` with ``lon``, ``lat`` (WGS84 or None), ``status`` and ``reason`` added.

    Examples
    --------
    >>> table = pd.DataFrame({
    ...     "FileName": ["a.JPG", "b.JPG", "c.JPG"],
    ...     "DateTimeOriginal": ["2025:10:02 11:57:53", "2025:10:02 11:57:53", "2025:10:02 11:57:55"],
    ...     "GPSLatitude": ['8 deg 17\\' 26.74" S', '8 deg 17\\' 26.74" S', None],
    ...     "GPSLongitude": ['115 deg 27\\' 48.78" E', '115 deg 27\\' 48.78" E', None]})
    >>> out = check_metadata_table(table)
    >>> print(f"{out.loc[0, 'lat']:.6f}", out["reason"].tolist())
    -8.290761 [None, 'duplicate of a.JPG', 'no GPS coordinates']
    """
    fence = _Fence(_as_geometry(area), "the survey area") if area is not None else None
    out = frame.copy()
    lons, lats, reasons = [], [], []
    seen_name: dict[tuple, str] = {}
    seen_place: dict[tuple, str] = {}
    names = out["FileName"] if "FileName" in out else out["SourceFile"].map(lambda p: Path(str(p)).name)
    for (_, row), name in zip(out.iterrows(), names):
        lat = _parse_coordinate(row.get("GPSLatitude"), row.get("GPSLatitudeRef"))
        lon = _parse_coordinate(row.get("GPSLongitude"), row.get("GPSLongitudeRef"))
        pitch = _number(row.get("GimbalPitchDegree"))
        time = row.get("DateTimeOriginal")
        time = time if isinstance(time, str) and time.strip() else None
        reason = None
        if lat is None or lon is None:
            reason, lat, lon = "no GPS coordinates", None, None
        elif not _on_globe(lon, lat):
            reason, lat, lon = _impossible(lon, lat), None, None
        elif fence is not None:
            reason = fence.reason(lon, lat, max_distance_m)
        if reason is None and pitch is not None and pitch >= 0:
            reason = _horizon(pitch)
        name_key = (name, time)
        place_key = (time, round(lat, 5), round(lon, 5)) if lat is not None and time is not None else None
        if reason is None:
            first = seen_name.get(name_key) or (seen_place.get(place_key) if place_key else None)
            if first is not None:
                reason = f"duplicate of {first}"
            else:
                seen_name[name_key] = name
                if place_key:
                    seen_place[place_key] = name
        lons.append(lon)
        lats.append(lat)
        reasons.append(reason)
    out["lon"] = pd.Series(lons, index=out.index, dtype=object)
    out["lat"] = pd.Series(lats, index=out.index, dtype=object)
    out["status"] = ["accepted" if r is None else "rejected" for r in reasons]
    out["reason"] = pd.Series(reasons, index=out.index, dtype=object)
    return out


# --- reading ---------------------------------------------------------------------------------------------


def _read(source: str | Path | bytes, max_pixels: int, reduced: bool = False) -> tuple[PhotoInfo, np.ndarray | None]:
    """The photo's info and its grey pixels (for the quality measures, without decoding twice; None when
    ``reduced`` did not need to decode)."""
    if isinstance(source, (bytes, bytearray)):
        data, path = bytes(source), "<bytes>"
    else:
        path = str(source)
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise ImageError(f"cannot read file: {error.strerror or error}") from error
    image = _open(data, max_pixels)
    try:
        xmp = image.getxmp()
    except Exception:  # noqa: BLE001 - a malformed XMP packet only loses the XMP, not the photo
        xmp = {}
    width, height = image.size
    grey = None
    if reduced and image.format == "JPEG":
        image.draft("L", (max(1, width // 8), max(1, height // 8)))
    if not (reduced and image.format == "JPEG" and data.rstrip(b"\0").endswith(b"\xff\xd9")):
        try:
            image.load()
            grey = np.asarray(image.convert("L"))
        except Exception as error:  # noqa: BLE001 - decoders raise many types on corrupt data
            raise ImageError(_decode_reason(image.format, error)) from error
    try:
        tags = exifread.process_file(io.BytesIO(data), details=True)
    except Exception as error:  # noqa: BLE001 - exifread raises many types on corrupt EXIF
        raise MetadataError(f"unreadable EXIF: {error}") from error
    info = _info(path, hashlib.sha256(data).hexdigest(), width, height, tags, _xmp_fields(xmp))
    info.footprint = footprint(info)
    info.gsd_cm = _gsd_cm(info, None)
    return info, grey


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Open (read the header of) an image, refusing it by size before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 MP; our own limit decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        # Pillow refuses above 179 MP and tells only the pixel count, not the dimensions.
        counted = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{int(counted.group(1)):,} pixels" if counted else "the image"
        raise ImageError(f"too many pixels: {size} exceeds {_megapixels(max_pixels)}") from error
    except UnidentifiedImageError as error:
        raise ImageError("not an image: unrecognised file format") from error
    except Exception as error:  # noqa: BLE001 - header parsers raise many types on corrupt data
        raise ImageError(f"not an image: {error}") from error
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(f"too many pixels: {width}×{height} exceeds {_megapixels(max_pixels)}")
    if width < 1 or height < 1:
        raise ImageError(f"not an image: {width}×{height} pixels")
    return image


def _decode_reason(image_format: str | None, error: Exception) -> str:
    kind = image_format or "image"
    if "truncated" in str(error) or isinstance(error, EOFError):
        return f"not an image: truncated {kind}"
    return f"not an image: broken {kind} ({error})"


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:g} MP"


def _info(path: str, sha256: str, width: int, height: int, tags: dict, xmp: dict[str, str]) -> PhotoInfo:
    make, model = _text(tags, "Image Make"), _text(tags, "Image Model")
    lat = _gps_degrees(tags, "GPS GPSLatitude", "GPS GPSLatitudeRef")
    lon = _gps_degrees(tags, "GPS GPSLongitude", "GPS GPSLongitudeRef")
    if lat is None or lon is None:
        lat, lon = _number(xmp.get("GpsLatitude")), _number(xmp.get("GpsLongitude") or xmp.get("GpsLongtitude"))
    if lat is None or lon is None or (lat == 0 and lon == 0):
        # (0, 0) is what receivers without a fix write, not a photo taken in the Gulf of Guinea.
        lat = lon = None
    elif not _on_globe(lon, lat):
        raise MetadataError(_impossible(lon, lat))
    altitude = _number(xmp.get("AbsoluteAltitude"))
    if altitude is None:
        altitude = _ratio(tags, "GPS GPSAltitude")
        if altitude is not None and _first(tags, "GPS GPSAltitudeRef") == 1:
            altitude = -altitude
    focal = _ratio(tags, "EXIF FocalLength")
    focal35 = _ratio(tags, "EXIF FocalLengthIn35mmFilm")
    # DJI's older cameras (Phantom 3, Inspire 1) write no XMP but their attitude in the maker notes. Their
    # camera yaw and roll there are Euler angles in gimbal lock at nadir (yaw + roll is the heading), so
    # only the pitch and the aircraft's yaw are taken; the camera faces the aircraft's heading.
    pitch = _number(xmp.get("GimbalPitchDegree"))
    if pitch is None:
        pitch = _ratio(tags, "MakerNote CameraPitch")
    flight_yaw = _number(xmp.get("FlightYawDegree"))
    if flight_yaw is None:
        flight_yaw = _ratio(tags, "MakerNote Yaw")
    return PhotoInfo(
        path=path,
        sha256=sha256,
        width=width,
        height=height,
        lon=lon,
        lat=lat,
        altitude_abs=altitude,
        altitude_rel=_number(xmp.get("RelativeAltitude")),
        taken_at=_taken_at(tags, xmp),
        make=make,
        model=model,
        focal_length_mm=focal if focal and focal > 0 else None,
        focal_length_35mm=focal35 if focal35 and focal35 > 0 else None,
        sensor_width_mm=_sensor_width(model, width, height, focal, focal35),
        gimbal_pitch=pitch,
        gimbal_roll=_number(xmp.get("GimbalRollDegree")),
        flight_yaw=flight_yaw,
        gimbal_yaw=_number(xmp.get("GimbalYawDegree")),
    )


def _xmp_fields(xmp: dict) -> dict[str, str]:
    """The DJI fields of Pillow's nested XMP dict, wherever in the tree (attributes or elements) they are."""
    found: dict[str, str] = {}

    def walk(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _XMP_FIELDS and isinstance(value, str) and key not in found:
                    found[key] = value
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(xmp)
    return found


def _text(tags: dict, name: str) -> str | None:
    tag = tags.get(name)
    if tag is None:
        return None
    text = str(tag.printable).strip("\x00 ").strip()
    return text or None


def _values(tags: dict, name: str) -> list | None:
    tag = tags.get(name)
    values = getattr(tag, "values", None)
    if values is None or isinstance(values, (str, bytes)):
        return None
    return list(values)


def _first(tags: dict, name: str):
    values = _values(tags, name)
    first = values[0] if values else None
    # exifread gives maker-note floats as one-element tuples inside the list.
    if isinstance(first, tuple):
        first = first[0] if first else None
    return first


def _ratio(tags: dict, name: str) -> float | None:
    return _number(_first(tags, name))


def _number(value) -> float | None:
    """A finite float from a number, a ratio or a string like ``"+16.508"``; None otherwise."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _gps_degrees(tags: dict, name: str, ref_name: str) -> float | None:
    values = _values(tags, name)
    if not values or len(values) != 3:
        return None
    parts = [_number(v) for v in values]
    if any(p is None for p in parts):
        return None
    degrees = parts[0] + parts[1] / 60 + parts[2] / 3600
    ref = (_text(tags, ref_name) or "").upper()[:1]
    return -degrees if ref in ("S", "W") else degrees


def _taken_at(tags: dict, xmp: dict[str, str]) -> datetime | None:
    for name, offset in (("DateTimeOriginal", "OffsetTimeOriginal"), ("DateTime", "OffsetTime")):
        taken = _parse_time(_text(tags, f"EXIF {name}") or _text(tags, f"Image {name}"), _text(tags, f"EXIF {offset}"))
        if taken is not None:
            return taken
    return _parse_time(xmp.get("CreateDate"), None)


def _parse_time(text: str | None, offset: str | None) -> datetime | None:
    if not text:
        return None
    text = text.strip()
    for pattern in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"):
        try:
            taken = datetime.strptime(text[:19], pattern)
            break
        except ValueError:
            continue
    else:
        return None  # includes the "0000:00:00 00:00:00" of cameras with no clock set
    match = re.fullmatch(r"([+-])(\d\d):(\d\d)", (offset or "").strip())
    if match:
        sign = 1 if match.group(1) == "+" else -1
        taken = taken.replace(tzinfo=timezone(sign * timedelta(hours=int(match.group(2)), minutes=int(match.group(3)))))
    return taken


def _sensor_width(
    model: str | None, width: int, height: int, focal: float | None, focal35: float | None
) -> float | None:
    known = SENSOR_WIDTH_MM.get((model or "").upper())
    if isinstance(known, dict):
        known = known.get(max(width, height))
    if known is not None:
        return known
    if focal and focal35 and focal > 0 and focal35 > 0:
        diagonal = _FILM_DIAGONAL_MM * focal / focal35
        return diagonal * width / math.hypot(width, height)
    return None


# --- geometry --------------------------------------------------------------------------------------------


def _attitude(info: PhotoInfo) -> tuple[float, float, float]:
    """Pitch, yaw, roll in degrees, with the assumptions for missing values (nadir, north, level)."""
    pitch = -90.0 if info.gimbal_pitch is None else info.gimbal_pitch
    yaw = next((y for y in (info.gimbal_yaw, info.flight_yaw) if y is not None), 0.0)
    roll = 0.0 if info.gimbal_roll is None else info.gimbal_roll
    return pitch, yaw, roll


def _ground_offsets(
    height: float, focal: float, sensor_width: float, sensor_height: float, pitch: float, yaw: float, roll: float,
    samples: int = 16,
) -> np.ndarray | None:
    """(east, north) metres from the camera to where rays along the image edges meet the ground.

    Unit vectors in east-north-up: ``forward`` along the optical axis, ``up`` and ``right`` along the
    image's top and right edges. Edges are sampled so that where rays are cut at the cap the outline
    follows it; a straight edge projects to a straight line on a plane, so when nothing is cut the four
    corners are returned.
    """
    p, y, r = np.radians([pitch, yaw, roll])
    forward = np.array([np.sin(y) * np.cos(p), np.cos(y) * np.cos(p), np.sin(p)])
    up = np.array([-np.sin(y) * np.sin(p), -np.cos(y) * np.sin(p), np.cos(p)])
    right = np.cross(forward, up)
    right, up = right * np.cos(r) - up * np.sin(r), up * np.cos(r) + right * np.sin(r)
    t = np.linspace(-0.5, 0.5, samples, endpoint=False)
    x = np.concatenate([t, np.full(samples, 0.5), -t, np.full(samples, -0.5)]) * sensor_width
    z = np.concatenate([np.full(samples, 0.5), -t, np.full(samples, -0.5), t]) * sensor_height
    rays = focal * forward + x[:, None] * right + z[:, None] * up
    down = -rays[:, 2]
    if not (down > 0).any():
        return None
    flat = rays[:, :2]
    reach = HORIZON_CAP * height
    length = np.hypot(flat[:, 0], flat[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = np.where(down > 0, length * height / down, np.inf)
        scale = np.where(length > 0, np.minimum(distance, reach) / length, 0.0)
    if (distance <= reach).all():
        return flat[::samples] * scale[::samples, None]
    return flat * scale[:, None]


def _gsd_cm(info: PhotoInfo, height_m: float | None) -> float | None:
    height = info.altitude_rel if info.altitude_rel is not None else height_m
    pitch = _attitude(info)[0]
    if not height or height <= 0 or not info.focal_length_mm or not info.sensor_width_mm or pitch >= 0:
        return None
    slant = height / math.sin(math.radians(-pitch))
    return slant * (info.sensor_width_mm / info.width) / info.focal_length_mm * 100


# --- checks ----------------------------------------------------------------------------------------------


class _Fence:
    """An area in EPSG:4326 and how far outside it points lie, in metres.

    Near the area (within 50 km) distances are measured in its metric CRS (:func:`gridmap.crs.metric_crs`);
    farther points, where that projection means nothing, geodesically to the nearest point in degrees.
    """

    def __init__(self, geometry, name: str) -> None:
        self.name = name
        self.geometry = geometry
        shapely.prepare(self.geometry)
        centre = geometry.representative_point()
        self.crs = metric_crs(centre.x, centre.y)
        self.metric = transform_geometries([geometry], "wgs84", self.crs)[0]

    def distance_m(self, lon: float, lat: float) -> float:
        point = Point(lon, lat)
        if self.geometry.covers(point):
            return 0.0
        near = nearest_points(self.geometry, point)[0]
        distance = _GEOD.inv(lon, lat, near.x, near.y)[2]
        if distance < _LOCAL_RANGE_M:
            x, y = transform_xy([lon], [lat], "wgs84", self.crs)
            distance = self.metric.distance(Point(x[0], y[0]))
        return float(distance)

    def reason(self, lon: float, lat: float, max_distance_m: float) -> str | None:
        distance = self.distance_m(lon, lat)
        if distance <= max_distance_m:
            return None
        return f"outside {self.name} by {_format_distance(distance)}"


def _format_distance(metres: float) -> str:
    if metres < 1000:
        return f"{metres:,.0f} m"
    if metres < 100_000:
        return f"{metres / 1000:,.1f} km"
    return f"{metres / 1000:,.0f} km"


def _as_geometry(area) -> shapely.Geometry:
    if isinstance(area, (gpd.GeoDataFrame, gpd.GeoSeries)):
        if area.crs is not None:
            area = area.to_crs("EPSG:4326")
        return shapely.union_all(area.geometry.to_numpy())
    return area


def _unit_outline(locator: UnitLocator):
    """The union of the streets, else of the communities or grids, the located units cover."""
    for level in ("street", "community", "grid"):
        geometries = locator.locators[level].geometries
        if len(geometries):
            return shapely.union_all(geometries)
    return None


def _reason(
    info: PhotoInfo, row: dict, fences: list[_Fence], max_distance_m: float, blur: float, dark: float
) -> str | None:
    if info.lon is None or info.lat is None:
        return "no GPS coordinates"
    for fence in fences:
        outside = fence.reason(info.lon, info.lat, max_distance_m)
        if outside:
            return outside
    if row["brightness"] < dark:
        return f"black frame (mean brightness {row['brightness']:.0f})"
    if row["sharpness"] < blur:
        return f"blurred (sharpness {row['sharpness']:.1f} < {blur:g})"
    if info.gimbal_pitch is not None and info.gimbal_pitch >= 0:
        return _horizon(info.gimbal_pitch)
    return None


def _duplicate(sha256: str, digest: int, kept_sha: dict[str, str], kept_hashes: list[tuple[int, str]]) -> str | None:
    if sha256 in kept_sha:
        return f"duplicate of {kept_sha[sha256]}"
    for other, name in kept_hashes:
        bits = hamming(digest, other)
        if bits <= NEAR_DUPLICATE_BITS:
            return f"near-duplicate of {name} ({bits} of 256 hash bits differ)"
    return None


def _horizon(pitch: float) -> str:
    return f"camera at or above the horizon (gimbal pitch {pitch:+g}°)"


def _on_globe(lon: float, lat: float) -> bool:
    return abs(lat) <= 90 and abs(lon) <= 180


def _impossible(lon: float, lat: float) -> str:
    return f"impossible GPS position (latitude {lat:g}, longitude {lon:g})"


def _parse_coordinate(value, ref) -> float | None:
    """Degrees from an exiftool coordinate: ``8 deg 17' 26.74" S``, ``-8.29``, or ``8.29`` with ref ``S``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (int, float)):
        degrees, letter = float(value), None
    else:
        text = str(value)
        match = _DMS.match(text)
        if match:
            d, m, s, letter = match.groups()
            degrees = float(d) + float(m) / 60 + float(s) / 3600
        else:
            match = _DECIMAL.match(text)
            if not match:
                return None
            degrees, letter = float(match.group(1)), match.group(2)
    if letter is None and isinstance(ref, str) and ref.strip():
        letter = ref.strip()[0]
    return -abs(degrees) if letter and letter.upper() in ("S", "W") else degrees


def _add_units(frame: pd.DataFrame, locator: UnitLocator) -> None:
    for column in _LOCATED:
        frame[column] = None
    has = frame["lon"].notna() & frame["lat"].notna()
    if not has.any():
        return
    found = locator.locate(frame.loc[has, "lon"].astype(float), frame.loc[has, "lat"].astype(float))
    for column in _LOCATED:
        frame.loc[has, column] = found[column].to_numpy(dtype=object)

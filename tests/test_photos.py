"""Photo ingest and quality checks on real drone photos (../shared/data/drone) and broken copies of them.

Figures checked by hand:

* DJI_0064.JPG EXIF GPS: 41° 32' 55.7081" N, 83° 41' 56.6659" W (exifread's raw rationals), i.e.
  41.5488078 N, 83.6990739 W; the flight's ground control points (gcp_list.txt, in UTM 17N although its
  header says 32N) lie within 300 m of the flight's photo positions.
* FC350/FC300X, 3.61 mm lens on a 6.17 mm sensor, 120 m up: 120 × 6.17 / 3.61 = 205.1 m across the
  2400 px width, 205.1 × 1800 / 2400 = 153.8 m along the height, 8.55 cm per pixel.
* The heading: matching DJI_0064 to DJI_0065 (ORB, by hand) moves the scene 362 px down the image; the
  camera moved 31.8 m at azimuth 109° while the maker note gives yaw 96.2°, i.e. 31.2 m forward = 365 px at
  8.55 cm. So yaw is the top edge's heading, and 120 m the height.
* H20T XMP (``strings dji-h20t-xmp.jpg``): RelativeAltitude +16.508, AbsoluteAltitude +221.404,
  GimbalPitchDegree -10.50, GimbalYawDegree +32.50, GimbalRollDegree +0.00, FlightYawDegree +30.30.
  Thermal camera 640×512 at 12 µm: 7.68 × 6.144 mm sensor, 13.5 mm lens; the image's bottom edge looks
  10.5° + atan(3.072 / 13.5) = 23.32° down, meeting the ground 16.508 / tan(23.32°) = 38.29 m ahead; the top
  edge looks above the horizon, so the footprint is cut at 5 × 16.508 = 82.54 m.
"""

from __future__ import annotations

import hashlib
import io
import math
import shutil
import struct
import zlib
from datetime import datetime
from pathlib import Path

import cv2
import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import pytest
import shapely
from PIL import Image, ImageFilter
from shapely import Point

from gridmap.crs import metric_crs, transform_geometries, transform_xy
from gridmap.io import read_units
from inspection.errors import ImageError, InspectionError
from inspection.photos import (
    DEFAULT_BLUR_THRESHOLD,
    PhotoInfo,
    _sensor_width,
    check_metadata_table,
    check_photos,
    footprint,
    read_photo,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
GEOD = pyproj.Geod(ellps="WGS84")
GPS_IFD = 0x8825


@pytest.fixture(scope="module")
def drone(shared_data: Path) -> Path:
    return shared_data / "drone"


@pytest.fixture(scope="module")
def toledo(drone: Path) -> Path:
    return drone / "odm-toledo-2015"


def metric(geometry, lon, lat):
    return transform_geometries([geometry], "wgs84", metric_crs(lon, lat))[0]


def side_lengths(polygon) -> list[float]:
    ring = polygon.exterior.coords
    return [GEOD.inv(*ring[i], *ring[i + 1])[2] for i in range(len(ring) - 1)]


def with_gps(source: Path, target: Path, gps: dict | None, *, pixels=None) -> Path:
    """Save ``source``'s pixels (or ``pixels``) with its EXIF, its GPS IFD replaced (None: removed)."""
    image = Image.open(source)
    exif = image.getexif()
    if gps is None:
        del exif[GPS_IFD]
    else:
        exif.get_ifd(GPS_IFD).update(gps)
    (pixels or image).save(target, "JPEG", quality=95, exif=exif)
    return target


def dms(degrees: float) -> tuple[float, float, float]:
    d = int(abs(degrees))
    m = int((abs(degrees) - d) * 60)
    return float(d), float(m), round((abs(degrees) - d - m / 60) * 3600, 4)


def gps_at(lon: float, lat: float) -> dict:
    return {1: "N" if lat >= 0 else "S", 2: dms(lat), 3: "E" if lon >= 0 else "W", 4: dms(lon)}


def png_claiming(width: int, height: int) -> bytes:
    """A valid 1×1 PNG whose IHDR (CRC fixed) claims ``width``×``height``: a decompression bomb's header."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# --- reading real photos ---------------------------------------------------------------------------------


def test_toledo_position_time_camera_and_true_size(toledo):
    info = read_photo(toledo / "DJI_0064.JPG")
    assert info.lat == pytest.approx(41 + 32 / 60 + 55.7081 / 3600, abs=1e-9)
    assert info.lon == pytest.approx(-(83 + 41 / 60 + 56.6659 / 3600), abs=1e-9)
    assert (info.lat, info.lon) == pytest.approx((41.5488078, -83.6990739), abs=1e-7)
    assert info.taken_at == datetime(2015, 10, 16, 13, 23, 47)
    assert (info.make, info.model) == ("DJI", "FC350")
    assert (info.focal_length_mm, info.focal_length_35mm, info.sensor_width_mm) == (3.61, 20.0, 6.17)
    assert info.altitude_abs == pytest.approx(120.2)
    assert info.altitude_rel is None
    # EXIF claims 1800×2400; the pixels are 2400×1800.
    assert (info.width, info.height) == (2400, 1800)
    # Attitude from the DJI maker notes (no drone-dji XMP in these files).
    assert info.gimbal_pitch == pytest.approx(-89.9, abs=1e-5)
    assert info.flight_yaw == pytest.approx(96.2, abs=1e-5)
    assert info.sha256 == hashlib.sha256((toledo / "DJI_0064.JPG").read_bytes()).hexdigest()
    # Without a height above ground there is no footprint.
    assert info.footprint is None and info.gsd_cm is None


def test_toledo_photos_lie_around_the_ground_control_points(toledo):
    gcps = [line.split(",") for line in (toledo / "gcp_list.txt").read_text().splitlines()[1:] if line]
    lon, lat = transform_xy([float(g[0]) for g in gcps], [float(g[1]) for g in gcps], "EPSG:32617", "wgs84")
    centre = (float(np.mean(lon)), float(np.mean(lat)))
    for path in sorted(toledo.glob("*.JPG")):
        info = read_photo(path)
        assert GEOD.inv(*centre, info.lon, info.lat)[2] < 300, path.name


def test_nadir_footprint_size_and_heading(toledo):
    info = read_photo(toledo / "DJI_0064.JPG")
    polygon = footprint(info, height_m=120)
    sides = sorted(side_lengths(polygon))
    assert sides == pytest.approx([153.8, 153.8, 205.1, 205.1], abs=0.6)  # 0.1° off nadir skews it slightly
    assert metric(polygon, info.lon, info.lat).area == pytest.approx(205.1 * 153.8, rel=0.005)
    assert polygon.contains(Point(info.lon, info.lat))
    # The long (image width) sides run across the heading of 96.2°: at azimuths 6.2° or 186.2°.
    ring = polygon.exterior.coords
    for i in range(4):
        azimuth, _, length = GEOD.inv(*ring[i], *ring[i + 1])
        if length > 180:
            assert abs((azimuth - 6.2 + 90) % 180 - 90) < 1.0
    # Twice the height, twice the size.
    assert sorted(side_lengths(footprint(info, height_m=240))) == pytest.approx([307.6, 307.6, 410.2, 410.2], abs=1.2)


def test_heading_and_scale_agree_with_the_image_motion(toledo):
    """The camera's motion between two frames, predicted from GPS, yaw and 120 m, is what the pixels show."""
    for first, second in [("DJI_0064.JPG", "DJI_0065.JPG"), ("DJI_0070.JPG", "DJI_0071.JPG")]:
        a, b = read_photo(toledo / first), read_photo(toledo / second)
        grey_a, grey_b = (cv2.imread(str(toledo / name), cv2.IMREAD_GRAYSCALE) for name in (first, second))
        orb = cv2.ORB_create(4000)
        keys_a, desc_a = orb.detectAndCompute(grey_a, None)
        keys_b, desc_b = orb.detectAndCompute(grey_b, None)
        matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(desc_a, desc_b)
        points_a = np.float32([keys_a[m.queryIdx].pt for m in matches])
        points_b = np.float32([keys_b[m.trainIdx].pt for m in matches])
        transform, _ = cv2.estimateAffinePartial2D(points_a, points_b)
        seen_down = (transform @ np.array([1200.0, 900.0, 1.0]))[1] - 900.0
        azimuth, _, distance = GEOD.inv(a.lon, a.lat, b.lon, b.lat)
        gsd_m = 120 * 6.17 / 2400 / 3.61
        forward_px = distance * math.cos(math.radians(azimuth - a.flight_yaw)) / gsd_m
        assert seen_down == pytest.approx(forward_px, rel=0.1), (first, second)


def test_h20t_xmp_and_oblique_footprint(drone):
    info = read_photo(drone / "dji-h20t-xmp.jpg")
    assert (info.width, info.height, info.model) == (640, 512, "ZH20T")
    assert info.altitude_rel == 16.508
    assert info.altitude_abs == 221.404
    assert info.gimbal_pitch == -10.5
    assert info.gimbal_yaw == 32.5
    assert info.gimbal_roll == 0.0
    assert info.flight_yaw == 30.3
    assert (info.lat, info.lon) == pytest.approx((40.5637811, -79.7649628), abs=1e-7)
    assert info.taken_at == datetime(2021, 5, 28, 10, 33, 46)
    assert (info.focal_length_mm, info.sensor_width_mm) == (13.5, 7.68)
    polygon = info.footprint
    assert polygon is not None and polygon.is_valid
    flat = metric(polygon, info.lon, info.lat)
    x, y = transform_xy([info.lon], [info.lat], "wgs84", metric_crs(info.lon, info.lat))
    camera = Point(x[0], y[0])
    near = 16.508 / math.tan(math.radians(10.5) + math.atan(3.072 / 13.5))
    assert near == pytest.approx(38.29, abs=0.01)
    assert flat.distance(camera) == pytest.approx(near, abs=0.05)
    assert shapely.hausdorff_distance(camera, flat) == pytest.approx(5 * 16.508, abs=0.05)
    # It lies ahead, in the gimbal's direction (32.5°), not behind the camera.
    centre = polygon.centroid
    assert GEOD.inv(info.lon, info.lat, centre.x, centre.y)[0] == pytest.approx(32.5, abs=1.0)
    # Ground sample distance along the centre ray: slant range 16.508 / sin(10.5°) = 90.6 m.
    assert info.gsd_cm == pytest.approx(16.508 / math.sin(math.radians(10.5)) * 0.012 / 13.5 * 100, rel=1e-9)


def test_read_photo_from_bytes_and_sensor_from_35mm_equivalent(drone):
    info = read_photo((drone / "tiny_drone_image.jpg").read_bytes())
    assert info.path == "<bytes>"
    assert (info.width, info.height, info.model) == (48, 36, "Canon PowerShot S110")
    assert info.lat == pytest.approx(41.2263699, abs=1e-6)
    assert info.lon == pytest.approx(-81.7055011, abs=1e-6)
    # Not in the camera table and no 35 mm equivalent: no sensor size, no footprint.
    assert info.sensor_width_mm is None and footprint(info, height_m=100) is None
    # An unknown camera with a 35 mm equivalent: sensor width from the diagonal, 43.27 × 3.61 / 20 × 4/5.
    assert _sensor_width("UNKNOWN", 2400, 1800, 3.61, 20.0) == pytest.approx(6.2477, abs=1e-4)


def test_oblique_and_degenerate_attitudes():
    # On the central meridian of the metric CRS (Gauss-Kruger CM 120E), where grid north is true north.
    base = dict(lon=120.0, lat=30.25, focal_length_mm=3.61, sensor_width_mm=6.17, altitude_rel=100.0, flight_yaw=0.0)
    oblique = footprint(PhotoInfo("x", "", 4000, 3000, gimbal_pitch=-60.0, **base))
    flat = metric(oblique, 120.0, 30.25)
    x, y = transform_xy([120.0], [30.25], "wgs84", metric_crs(120.0, 30.25))
    half_v = math.degrees(math.atan(6.17 * 0.75 / 2 / 3.61))
    near, far = (100 / math.tan(math.radians(60 + half_v)), 100 / math.tan(math.radians(60 - half_v)))
    minx, miny, maxx, maxy = flat.bounds
    assert (miny - y[0], maxy - y[0]) == pytest.approx((near, far), abs=0.05)
    assert len(oblique.exterior.coords) == 5  # a trapezoid: wider at the far edge
    assert maxx - minx > 205
    # The lens sees 32.6° either side of its axis vertically: at +30° the bottom rows still see ground
    # (cut at 5 heights), at +40° only sky.
    assert footprint(PhotoInfo("x", "", 4000, 3000, gimbal_pitch=30.0, **base)) is not None
    assert footprint(PhotoInfo("x", "", 4000, 3000, gimbal_pitch=40.0, **base)) is None
    horizon = footprint(PhotoInfo("x", "", 4000, 3000, gimbal_pitch=0.0, **base))
    assert shapely.hausdorff_distance(Point(x[0], y[0]), metric(horizon, 120.0, 30.25)) == pytest.approx(500, abs=0.1)
    assert footprint(PhotoInfo("x", "", 4000, 3000, **{**base, "altitude_rel": None})) is None


# --- bad inputs ------------------------------------------------------------------------------------------


def test_read_photo_errors(tmp_path, toledo):
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((toledo / "DJI_0061.JPG").read_bytes()[:1_000_000])
    with pytest.raises(ImageError, match="^not an image: truncated JPEG$"):
        read_photo(truncated)
    with pytest.raises(ImageError, match="^not an image: unrecognised file format$"):
        read_photo(b"hello, not a photo\n")
    with pytest.raises(ImageError, match=r"^too many pixels: 2,500,000,000 pixels exceeds 150 MP$"):
        read_photo(png_claiming(50_000, 50_000))
    with pytest.raises(ImageError, match="^too many pixels: 2400×1800 exceeds 4 MP$"):
        read_photo(toledo / "DJI_0061.JPG", max_pixels=4_000_000)
    with pytest.raises(ImageError, match="^cannot read file"):
        read_photo(tmp_path / "missing.jpg")
    assert issubclass(ImageError, InspectionError)


def test_batch_with_bad_frames(tmp_path, toledo):
    """Every kind of bad frame in one batch: each gets its reason, the good ones go through."""
    good = [toledo / f"DJI_00{n}.JPG" for n in (61, 62, 63, 64)]
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    original = Image.open(toledo / "DJI_0065.JPG")
    raw_exif = original.info["exif"]

    truncated = bad_dir / "truncated.JPG"
    truncated.write_bytes((toledo / "DJI_0066.JPG").read_bytes()[:800_000])
    text = bad_dir / "notes.jpg"
    text.write_text("flight log, not a photo\n")
    bomb = bad_dir / "bomb.png"
    bomb.write_bytes(png_claiming(50_000, 50_000))
    big = bad_dir / "big.png"
    big.write_bytes(png_claiming(12_500, 12_500))  # under Pillow's own limit, over ours
    black = bad_dir / "lens_cap.JPG"
    Image.new("RGB", original.size).save(black, "JPEG", exif=raw_exif)
    blurred = bad_dir / "blurred.JPG"
    original.filter(ImageFilter.GaussianBlur(4)).save(blurred, "JPEG", quality=95, exif=raw_exif)
    duplicate = bad_dir / "copy_of_0064.JPG"
    shutil.copyfile(toledo / "DJI_0064.JPG", duplicate)
    near = bad_dir / "resaved_0063.JPG"
    resized = Image.open(toledo / "DJI_0063.JPG").resize((1200, 900))
    resized.save(near, "JPEG", quality=80, exif=Image.open(toledo / "DJI_0063.JPG").info["exif"])
    no_gps = with_gps(toledo / "DJI_0067.JPG", bad_dir / "no_gps.JPG", None)
    paris = with_gps(toledo / "DJI_0068.JPG", bad_dir / "paris.JPG", gps_at(2.3522, 48.8566))
    missing = bad_dir / "never_copied.JPG"

    area = shapely.box(-83.7005, 41.5475, -83.6975, 41.5505)  # around the flight
    batch = [good[0], truncated, good[1], text, bomb, big, black, blurred, good[2], good[3], duplicate, near,
             no_gps, paris, missing]
    calls = []
    result = check_photos(batch, area=area, height_m=120, progress=lambda done, total: calls.append((done, total)))

    assert isinstance(result, gpd.GeoDataFrame) and result.crs.to_epsg() == 4326
    assert result.geometry.name == "footprint"
    assert list(result["path"]) == [str(p) for p in batch]
    assert calls == [(i, len(batch)) for i in range(1, len(batch) + 1)]
    reasons = dict(zip(result["path"], result["reason"]))
    assert reasons[str(truncated)] == "not an image: truncated JPEG"
    assert reasons[str(text)] == "not an image: unrecognised file format"
    assert reasons[str(bomb)] == "too many pixels: 2,500,000,000 pixels exceeds 150 MP"
    assert reasons[str(big)] == "too many pixels: 12500×12500 exceeds 150 MP"
    assert reasons[str(black)] == "black frame (mean brightness 0)"
    assert reasons[str(blurred)].startswith("blurred (sharpness ")
    assert float(reasons[str(blurred)].split()[2]) < DEFAULT_BLUR_THRESHOLD / 5
    assert reasons[str(duplicate)] == "duplicate of DJI_0064.JPG"
    assert reasons[str(near)].startswith("near-duplicate of DJI_0063.JPG (")
    assert reasons[str(no_gps)] == "no GPS coordinates"
    # Paris to the Toledo survey area, geodesically: 6,4xx km.
    paris_km = GEOD.inv(2.3522, 48.8566, -83.7005, 41.5505)[2] / 1000
    assert reasons[str(paris)] == f"outside the survey area by {paris_km:,.0f} km"
    assert reasons[str(missing)].startswith("cannot read file")

    accepted = result[result["status"] == "accepted"]
    assert list(accepted["path"]) == [str(p) for p in good]
    assert accepted["reason"].isna().all()
    for _, row in accepted.iterrows():
        assert row["footprint"].contains(Point(row["lon"], row["lat"]))
        assert sorted(side_lengths(row["footprint"])) == pytest.approx([153.8, 153.8, 205.1, 205.1], abs=0.6)
        assert row["gsd_cm"] == pytest.approx(120 * 6.17 / 2400 / 3.61 * 100, rel=1e-3)
        assert row["sharpness"] > 1000 and 80 < row["brightness"] < 200
    # Rejected photos keep what could be read; unreadable ones have no fields.
    blurred_row = result[result["path"] == str(blurred)].iloc[0]
    assert blurred_row["lat"] == pytest.approx(read_photo(toledo / "DJI_0065.JPG").lat)
    assert result[result["path"] == str(text)].iloc[0]["sha256"] is None


def test_all_real_photos_are_accepted(drone, toledo):
    others = ["dji-h20t-xmp.jpg", "tiny_drone_image.jpg", "tiny_drone_image_2.jpg"]
    paths = [*sorted(toledo.glob("*.JPG")), *(drone / name for name in others)]
    result = check_photos(paths, height_m=120)
    assert (result["status"] == "accepted").all(), result[["path", "reason"]]
    assert result["footprint"].notna().sum() == 21  # not the Canon, whose sensor size is unknown
    h20t = result[result["path"].str.endswith("dji-h20t-xmp.jpg")].iloc[0]
    # Its own RelativeAltitude (16.5 m) wins over the batch's 120 m.
    assert h20t["altitude_rel"] == 16.508 and h20t["gsd_cm"] < 10


def test_photos_located_in_the_demo_street(tmp_path, toledo):
    folder = PROJECT_ROOT / "data" / "boundaries"
    files = {"street": "street", "communities": "community", "grids": "grid", "courtyards": "courtyard"}
    units = pd.concat(
        [read_units(folder / f"demo-{name}.geojson", level).units for name, level in files.items()], ignore_index=True
    )
    units = gpd.GeoDataFrame(units, geometry="geometry", crs="EPSG:4326")
    grid = units[units["level"] == "grid"].iloc[17]
    inside = grid.geometry.representative_point()
    street = units[units["level"] == "street"].geometry.iloc[0]
    far = Point(120.0, 30.0)
    relocated = with_gps(toledo / "DJI_0070.JPG", tmp_path / "in_grid.JPG", gps_at(inside.x, inside.y))
    away = with_gps(toledo / "DJI_0071.JPG", tmp_path / "away.JPG", gps_at(far.x, far.y))
    result = check_photos([relocated, away], units=units, height_m=120)
    first, second = result.iloc[0], result.iloc[1]
    assert first["status"] == "accepted"
    assert first["grid"] == grid["code"]
    assert first["community"] == grid["parent_code"] and first["street"] == "330102901"
    assert first["worker"] == grid["worker"]
    assert first["footprint"].contains(Point(first["lon"], first["lat"]))
    x, y = transform_xy([second["lon"]], [second["lat"]], "wgs84", metric_crs(street.centroid.x, street.centroid.y))
    distance_km = metric(street, street.centroid.x, street.centroid.y).distance(Point(x[0], y[0])) / 1000
    assert second["reason"] == f"outside the street by {distance_km:,.1f} km"
    assert second["grid"] is None and second["street"] is None


# --- exiftool tables (agung2) ----------------------------------------------------------------------------


def test_agung2_metadata_faults(drone):
    folder = drone / "metadata"
    good = pd.read_csv(folder / "agung2-image_metadata.csv")
    issues = pd.read_csv(folder / "agung2-issue_image_metadata.csv")
    table = pd.concat([good, issues], ignore_index=True)
    aoi = gpd.read_file(folder / "agung2-aoi.geojson")
    out = check_metadata_table(table, area=aoi)

    assert (out.loc[: len(good) - 1, "status"] == "accepted").all()
    first = out.iloc[0]  # 8° 17' 39.30" S, 115° 27' 42.59" E
    assert (first["lat"], first["lon"]) == pytest.approx((-(8 + 17 / 60 + 39.30 / 3600), 115 + 27 / 60 + 42.59 / 3600))
    reasons = dict(zip(out["FileName"], out["reason"]))
    # Paris: 48° 51' 23.76" N, 2° 21' 7.92" E, ~12,380 km from the Bali AOI (checked with a haversine).
    for name in ["DJI_20251002145236_0123_D_FAR_AWAY.JPG", "DJI_20251002145234_0122_D_FAR_AWAY.JPG",
                 "DJI_20251002145232_0121_D_FAR_AWAY.JPG"]:
        assert reasons[name].startswith("outside the survey area by 12,3"), name
        assert reasons[name].endswith(" km")
    (lat1, lon1), (lat2, lon2) = np.radians([48.8566, 2.3522]), np.radians([-8.295, 115.4616])
    haversine = 2 * 6371.0 * math.asin(math.sqrt(
        math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2))
    assert 12_330 < haversine < 12_430
    for name in ["DJI_20251002141255_0557_D_MISSING_COORDS.JPG", "DJI_20251002141253_0556_D_MISSING_COORDS.JPG",
                 "DJI_20251002145228_0119_D_MISSING_COORDS.JPG"]:
        assert reasons[name] == "no GPS coordinates"
    for name in ["DJI_20251002155047_0971_D", "DJI_20251002141259_0559_D", "DJI_20251002141243_0551_D",
                 "DJI_20251002155041_0968_D"]:
        assert reasons[f"{name}_DUP.JPG"] == f"duplicate of {name}.JPG"
    invalid = reasons["DJI_20251002155055_0975_D_INVALID_COORD.JPG"]
    assert invalid == "impossible GPS position (latitude 250, longitude -325)"
    assert reasons["DJI_20251002145240_0125_D_GIMBAL_UP.JPG"] == "camera at or above the horizon (gimbal pitch +30°)"
    horizon = reasons["DJI_20251002155029_0962_D_GIMBAL_HORIZON.JPG"]
    assert horizon == "camera at or above the horizon (gimbal pitch +0°)"
    # These copies lost their gimbal tags but keep time and position: duplicates of the originals.
    assert reasons["DJI_20251002141301_0560_D_MISSING_GIMBAL.JPG"] == "duplicate of DJI_20251002141301_0560_D.JPG"
    # Sharpness and lens caps need the pixels, which the table does not have.
    assert reasons["DJI_20251002115753_0018_D_POOR_SHARPNESS.JPG"] is None
    assert reasons["DJI_20251002141245_0552_D_LENS_CAP.JPG"] is None
    assert (out["status"] == "rejected").sum() == 19

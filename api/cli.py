"""The ``gridmap`` command: a thin shell over the core and the store.

Exit codes: 0 done; 1 validation found errors (or warnings, with ``--strict``); 2 bad usage or bad input
(nothing was changed); 3 the store cannot be opened; 70 an unexpected internal error. Other tools call
``gridmap import PATH --level LEVEL [--crs CRS]``, ``gridmap validate`` and
``gridmap convert IN OUT --from CRS --to CRS``: keep those forms stable.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

import click
import numpy as np
import pandas as pd
import shapely
from tqdm import tqdm

from api.errors import ServiceError
from api.settings import Settings, SettingsError
from gridmap.codes import LEVELS
from gridmap.errors import GridmapError
from inspection.errors import InspectionError
from storage.errors import StoreConfigError, StoreError

EXIT_FINDINGS, EXIT_BAD_INPUT, EXIT_STORE, EXIT_INTERNAL = 1, 2, 3, 70
REPO_DATA = Path(__file__).resolve().parents[1] / "data" / "boundaries"
DEMO_FILES = (
    ("street", "demo-street.geojson"),
    ("community", "demo-communities.geojson"),
    ("grid", "demo-grids.geojson"),
    ("courtyard", "demo-courtyards.geojson"),
    ("building", "demo-buildings.geojson"),
)


def _fail(message: str, code: int) -> None:
    one_line = " ".join(message.split())  # a driver's message may span lines; ours is always one
    click.echo(f"gridmap: error: {one_line}", err=True)
    sys.exit(code)


def handles_errors(command):
    """Turn domain errors into a one-line message and an exit code instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (GridmapError, InspectionError, SettingsError, ServiceError) as exc:
            _fail(str(exc), EXIT_BAD_INPUT)
        except StoreConfigError as exc:
            _fail(str(exc), EXIT_STORE)
        except StoreError as exc:  # refused writes (missing parent, duplicates) are bad input too
            _fail(str(exc), EXIT_BAD_INPUT)
        except click.ClickException:
            raise  # usage errors: click prints them with the command's usage line, exit 2
        except KeyboardInterrupt:
            _fail("interrupted; nothing was half-written", 130)
        except Exception as exc:
            if Settings.from_env().debug:
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} (set GRIDMAP_DEBUG=1 for the traceback)", EXIT_INTERNAL)

    return wrapper


def _settings() -> Settings:
    return Settings.from_env()


def _open_store(settings: Settings):
    from storage import open_store  # imported late: `gridmap convert --help` needs no database driver

    return open_store(settings.database_url)


class _Progress:
    """A tqdm bar fed by the core's ``progress(done, total)`` callbacks; hidden when stderr is not a TTY."""

    def __init__(self, description: str):
        self.bar = tqdm(desc=description, unit="", disable=None, leave=False, file=sys.stderr)

    def __call__(self, done: int, total: int) -> None:
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gridmap")
def main() -> None:
    """Grid map and inspection platform for a street office (街道办事处).

    The store is chosen by GRIDMAP_DATABASE_URL: postgresql://... for PostGIS, sqlite:///PATH for the
    embedded store, unset for ./gridmap.db.
    """


_level = click.option("--level", type=click.Choice(LEVELS), required=True, help="Hierarchy level of the units in the file.")
_crs = click.option(
    "--crs", default=None, metavar="CRS",
    help="Real CRS of the coordinates: wgs84, cgcs2000, gcj02, bd09 or EPSG:NNNN. Overrides the file's own "
    "declaration; needed for GCJ-02/BD-09 files and files without one.",
)


@main.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@_level
@_crs
@click.option("--code-field", default=None, help="Column holding the unit code (detected if omitted).")
@click.option("--name-field", default=None, help="Column holding the unit name.")
@click.option("--parent-field", default=None, help="Column holding the parent's code.")
@click.option("--worker-field", default=None, help="Column holding the responsible grid worker.")
@click.option("--population-field", default=None, help="Column holding the population.")
@click.option("--repair", is_flag=True, help="Fix invalid geometries with make_valid instead of refusing the file.")
@click.option("--dry-run", is_flag=True, help="Read and check the files, store nothing.")
@handles_errors
def import_command(paths, level, crs, code_field, name_field, parent_field, worker_field, population_field, repair, dry_run):
    """Import boundary files (GeoJSON, GeoPackage, Shapefile, or a directory of them) into the store.

    The whole import is one transaction: on any error nothing is stored. Units already stored with the
    same code are replaced.
    """
    from gridmap.io import FieldMap, read_units

    settings = _settings()
    fields = FieldMap(code_field, name_field, parent_field, worker_field, population_field)
    started = time.perf_counter()
    with _Progress("reading") as progress:
        result = read_units(list(paths), level, crs=crs, fields=fields, repair=repair, limits=settings.limits, progress=progress)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    if dry_run:
        click.echo(f"{len(result.units)} {level} units read and checked; nothing stored (--dry-run)")
        return
    with _open_store(settings) as store:
        written = store.put_units(result.units)
        click.echo(
            f"imported {written} {level} units into {store.url} in {time.perf_counter() - started:.1f} s "
            f"(coordinates: {result.source_crs})"
        )


@main.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--level", type=click.Choice(LEVELS), default=None, help="Level of the units in PATHS (required with PATHS).")
@_crs
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None, help="Write every finding to a GeoJSON file.")
@click.option("--min-area", default=1.0, show_default=True, help="Ignore overlaps and gaps smaller than this (m²).")
@click.option("--tolerance", default=1.0, show_default=True, help="How far (m) a child may stray outside its parent.")
@click.option("--sliver-width", default=5.0, show_default=True, help="Overlaps/gaps thinner than this (m) are slivers.")
@click.option("--limit", default=20, show_default=True, help="Findings to print (all go to --output).")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too, not only on errors.")
@handles_errors
def validate_command(paths, level, crs, output, min_area, tolerance, sliver_width, limit, strict):
    """Check units for gaps, overlaps, slivers, children outside parents, bad codes and bad geometry.

    Without PATHS, checks everything in the store. With PATHS, checks those files (against the stored
    units as their parents) without storing anything.
    """
    from gridmap.io import read_units, write_findings
    from gridmap.validate import Tolerances, summarise, validate_units

    settings = _settings()
    started = time.perf_counter()
    with _open_store(settings) as store:
        stored = store.get_units()
    if paths:
        if level is None:
            raise click.UsageError("--level is required when validating files")
        units = read_units(list(paths), level, crs=crs, repair=True, limits=settings.limits).units
        parents = stored[~stored["code"].isin(units["code"])]
    else:
        units, parents = stored, None
        if units.empty:
            raise GridmapError(f"the store {settings.database_url} holds no units; import some first")
    with tqdm(total=6, desc="validating", disable=None, leave=False, file=sys.stderr) as bar:
        findings = validate_units(
            units, parents=parents, tolerances=Tolerances(min_area, tolerance, sliver_width),
            progress=lambda _: bar.update(1),
        )
    click.echo(f"checked {len(units)} units in {time.perf_counter() - started:.1f} s")
    click.echo(summarise(findings, limit=limit))
    if output:
        write_findings(findings, output)
        click.echo(f"wrote {len(findings)} findings to {output}")
    worst = set(findings["severity"])
    if "error" in worst or (strict and "warning" in worst):
        sys.exit(EXIT_FINDINGS)


@main.command("locate")
@click.argument("coordinates", nargs=-1, type=float)
@click.option("--crs", type=click.Choice(["wgs84", "gcj02", "cgcs2000"]), default="wgs84", show_default=True,
              help="System of the given coordinates (phones and Amap use gcj02).")
@click.option("--input", "input_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="CSV of points with lon and lat columns, instead of LON LAT arguments.")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None, help="Write the results as CSV.")
@handles_errors
def locate_command(coordinates, crs, input_csv, output):
    """Find the street, community, grid, courtyard and worker of points: LON LAT [LON LAT ...] or --input."""
    from gridmap.locate import UnitLocator

    lon, lat = _points(coordinates, input_csv)
    with _open_store(_settings()) as store:
        units = store.get_units()
    units = units[units["level"] != "building"]
    if units.empty:
        raise GridmapError("the store holds no units to locate against; run `gridmap import` or `gridmap demo` first")
    result = UnitLocator(units).locate(lon, lat, crs=crs)
    if output:
        result.to_csv(output, index=False)
        click.echo(f"located {len(result)} points ({int(result['inside'].sum())} inside the street) -> {output}")
    elif len(result) == 1:
        click.echo(json.dumps(_jsonable_row(result.iloc[0]), ensure_ascii=False))
    else:
        click.echo(result.to_csv(index=False), nl=False)


def _points(coordinates, input_csv):
    if input_csv is not None:
        if coordinates:
            raise click.UsageError("give either LON LAT arguments or --input, not both")
        frame = pd.read_csv(input_csv)
        columns = {c.lower(): c for c in frame.columns}
        lon_col = next((columns[c] for c in ("lon", "lng", "longitude", "x") if c in columns), None)
        lat_col = next((columns[c] for c in ("lat", "latitude", "y") if c in columns), None)
        if lon_col is None or lat_col is None:
            raise GridmapError(f"{input_csv.name}: needs lon and lat columns; has {list(frame.columns)}")
        return (pd.to_numeric(frame[lon_col], errors="coerce").to_numpy(float),
                pd.to_numeric(frame[lat_col], errors="coerce").to_numpy(float))
    if not coordinates or len(coordinates) % 2:
        raise click.UsageError("give points as LON LAT pairs, e.g. gridmap locate 120.18 30.26")
    pairs = np.asarray(coordinates, dtype=float).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def _jsonable_row(row: pd.Series) -> dict:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}


@main.command("convert")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--from", "src", required=True, metavar="CRS", help="wgs84, cgcs2000, gcj02, bd09 or EPSG:NNNN.")
@click.option("--to", "dst", required=True, metavar="CRS", help="wgs84, cgcs2000, gcj02, bd09 or EPSG:NNNN.")
@handles_errors
def convert_command(source, target, src, dst):
    """Convert a vector file or CSV of points between coordinate systems, e.g. --from gcj02 --to wgs84."""
    from gridmap.convert import convert_file

    with _Progress("converting") as progress:
        written = convert_file(source, target, src=src, dst=dst, progress=progress)
    click.echo(f"wrote {written} features to {target} ({src} -> {dst})")


@main.command("export")
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--level", type=click.Choice(LEVELS), default=None, help="Only this level (default: all).")
@handles_errors
def export_command(target, level):
    """Export stored units to GeoJSON (.geojson) or GeoPackage (.gpkg), in WGS84."""
    from gridmap.io import write_units

    with _open_store(_settings()) as store:
        units = store.get_units(level)
    if units.empty:
        raise GridmapError(f"no {level or ''} units stored to export".replace("  ", " "))
    write_units(units, target)
    click.echo(f"exported {len(units)} units to {target}")


@main.command("demo")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the demo street's files (default: the repository's data/boundaries).")
@handles_errors
def demo_command(directory):
    """Generate the demo street (示范街道), import it into the store, validate it and print a summary."""
    from gridmap.crs import metric_crs
    from gridmap.demo import write_demo_street
    from gridmap.io import read_units
    from gridmap.validate import summarise, validate_units

    settings = _settings()
    directory = directory or REPO_DATA
    directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    write_demo_street(directory)
    click.echo(f"generated the demo street in {directory}")
    with _open_store(settings) as store:
        for level, filename in tqdm(DEMO_FILES, desc="importing", disable=None, leave=False, file=sys.stderr):
            units = read_units(directory / filename, level, limits=settings.limits).units
            store.put_units(units)
        counts = store.count_units()
        units = store.get_units()
        click.echo(f"imported into {store.url}: " + ", ".join(f"{counts[lv]} {lv}" for lv in LEVELS))
    findings = validate_units(units)
    click.echo("validation: " + summarise(findings, limit=5).replace("\n", "\n  "))
    grids = units[units["level"] == "grid"]
    centre = grids.union_all().centroid
    area_ha = grids.to_crs(metric_crs(centre.x, centre.y)).area / 10_000
    click.echo(
        f"grids: {len(grids)}, {area_ha.min():.1f}-{area_ha.max():.1f} ha (median {area_ha.median():.1f}), "
        f"{grids['worker'].notna().sum()} with a responsible worker; done in {time.perf_counter() - started:.1f} s"
    )
    from api.demo import DEMO_PASSWORD, seed_accounts, seed_cases
    from api.service import Service

    with _open_store(settings) as store:
        service = Service(store, settings)
        roles = seed_accounts(service)
        filed = seed_cases(service)
        open_cases = store.count_cases(states=["reported", "registered", "dispatched", "handled", "verified"])
    click.echo("accounts: " + ", ".join(f"{n} {role}" for role, n in roles.items())
               + f" (admin, supervisor, pipeline, worker …; password {DEMO_PASSWORD})")
    click.echo(f"demo cases: {filed} new, {open_cases} open")
    click.echo("try: gridmap locate " + _sample_point(grids) + "   or: gridmap serve")


def _sample_point(grids) -> str:
    point = grids.geometry.iloc[0].representative_point()
    return f"{point.x:.6f} {point.y:.6f}"


@main.command("change-mask")
@click.argument("before", type=click.Path(path_type=Path))
@click.argument("after", type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True, help="The mask PNG to write (0/255).")
@click.option("--detector", default="default", show_default=True, help="A detector name (see change-eval --help).")
@handles_errors
def change_mask_command(before, after, output, detector):
    """Write a 0/255 PNG, the size of the inputs, marking what changed from BEFORE to AFTER."""
    from inspection.change import write_change_mask

    result = write_change_mask(before, after, output, detector=detector)
    click.echo(f"{output}: {result.mask.mean():.1%} of pixels changed ({detector})")


@main.command("change-eval")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--detector", "detectors", multiple=True, default=("baseline", "default", "building-cva"),
              show_default=True,
              help="Detectors to score, repeatable; all run on the same pairs in the same run. The default "
                   "(learned) was trained on ../shared/data/changes: scored there it shows its training fit "
                   "(held-out figures: README).")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None, help="Write the figures as CSV.")
@handles_errors
def change_eval_command(root, detectors, output):
    """Score detectors on ROOT laid out as SET/A, SET/B, SET/label: per set and pooled.

    Files pair by name without extension (A/12.jpg with label/12.png); a label pixel is changed above half
    the label's maximum (0/255 and 0/1 labels alike). Pixel precision, recall, F1 and IoU of the changed
    class; object precision and recall, where a region counts as found when a predicted region overlaps it
    with IoU >= 0.3.
    """
    from inspection.change import get_detector
    from inspection.errors import DetectorError
    from inspection.evaluate import evaluate_folder, format_report

    for name in detectors:
        try:
            get_detector(name)
        except DetectorError as error:
            raise click.BadParameter(str(error)) from None
    figures = evaluate_folder(root, detectors=detectors)
    click.echo(format_report(figures))
    if output:
        figures.to_csv(output, index=False)


@main.command("ortho-info")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--stac", type=click.Path(path_type=Path), default=None, help="Also write a STAC Item (JSON).")
@click.option("--survey-id", default=None, help="STAC Item id (default: the file name).")
@click.option("--datetime", "when", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ"]),
              default=None, help="Survey time (UTC) when the file carries no TIFFTAG_DATETIME.")
@handles_errors
def ortho_info_command(path, stac, survey_id, when):
    """Describe an orthomosaic GeoTIFF/COG: CRS, resolution, nodata, footprint, overviews."""
    from inspection.ortho import read_ortho_info, stac_item

    info = read_ortho_info(path)
    click.echo(
        f"{path.name}: {info.width}x{info.height}x{info.count} {info.dtype}, {info.crs}, {info.resolution_m:.3f} m/px, "
        f"nodata={info.nodata}, {'COG' if info.is_cog else 'not a COG'} (overviews {info.overviews or 'none'}), "
        f"footprint {info.footprint.area / shapely.box(*info.footprint.bounds).area:.0%} of its bounds"
    )
    if stac:
        item = stac_item(info, survey_id=survey_id or path.stem, datetime=when, href=str(path))
        stac.write_text(json.dumps(item, ensure_ascii=False, indent=2))
        click.echo(f"wrote STAC Item {item['id']} to {stac}")


@main.command("photos")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--area", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Survey area (any polygon file); photos farther than --max-distance from it are rejected.")
@click.option("--max-distance", default=500.0, show_default=True, help="Metres a photo may lie outside the area.")
@click.option("--height", type=float, default=None, help="Flight height above ground (m) for photos without DJI XMP.")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None, help="Write every photo's row as GeoJSON.")
@handles_errors
def photos_command(paths, area, max_distance, height, output):
    """Check drone photos (files or folders): position, footprint, grid; rejects with a reason, never stops.

    Photos are located to the grids stored in the store, when it holds any.
    """
    import geopandas as gpd

    from gridmap.io import write_frame
    from gridmap.locate import UnitLocator
    from inspection.photos import check_photos

    files = [p for path in paths for p in (sorted(f for f in path.iterdir() if f.is_file()) if path.is_dir() else [path])]
    with _open_store(_settings()) as store:
        units = store.get_units()
    units = units[units["level"] != "building"]
    locator = UnitLocator(units) if not units.empty else None
    survey_area = gpd.read_file(area).to_crs(4326).union_all() if area else None
    with _Progress("checking photos") as progress:
        report = check_photos(files, area=survey_area, max_distance_m=max_distance, height_m=height,
                              locator=locator, progress=progress)
    accepted = report["status"] == "accepted"
    click.echo(f"{int(accepted.sum())} of {len(report)} photos accepted")
    for row in report[~accepted].itertuples():
        click.echo(f"rejected {Path(row.path).name}: {row.reason}")
    if output:
        columns = [c for c in report.columns if report[c].map(lambda v: isinstance(v, (dict, list))).sum() == 0]
        write_frame(report[columns].astype({"taken_at": str}, errors="ignore"), output)
        click.echo(f"wrote {len(report)} rows to {output}")


@main.command("detect")
@click.argument("before", type=click.Path(path_type=Path))
@click.argument("after", type=click.Path(path_type=Path))
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("surveys"), show_default=True,
              help="Where stages keep their outputs; a rerun skips what is done there.")
@click.option("--buildings", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Registered building footprints (default: the buildings in the store).")
@click.option("--detector", default="default", show_default=True, help="Change detector name.")
@click.option("--scheduler", default=None, metavar="ADDRESS", help="A Dask scheduler (default: a local cluster).")
@click.option("--workers", default=2, show_default=True, help="Worker processes of the local cluster.")
@click.option("--tile", default=1024, show_default=True,
              help="Largest tile side in pixels of the detection grid (tiles are cut equal).")
@click.option("--min-area", default=4.0, show_default=True, help="Smallest candidate kept (m²).")
@click.option("--resolution", default=0.3, show_default=True,
              help="Ground resolution (m) of the working grid, where chips are cut: a multiple of the survey's "
                   "pixel at or below it (a shared COG overview when one is within 3/4 of it); the learned "
                   "detector reads it halved.")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None, help="Also write the candidates here.")
@handles_errors
def detect_command(before, after, workdir, buildings, detector, scheduler, workers, tile, min_area, resolution, output):
    """Compare two orthomosaic surveys and list suspected new construction, located to grids."""
    import geopandas as gpd

    from gridmap.io import write_frame
    from inspection.pipeline import run_pipeline

    with _open_store(_settings()) as store:
        units = store.get_units()
    registered = gpd.read_file(buildings).to_crs(4326) if buildings else units[units["level"] == "building"]
    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.setdefault(stage, tqdm(desc=stage, total=total, disable=None, leave=False, file=sys.stderr))
        bar.total, bar.n = total, done
        bar.refresh()

    try:
        candidates = run_pipeline(
            before, after, workdir=workdir, buildings=registered if len(registered) else None,
            units=units[units["level"] != "building"] if len(units) else None, detector=detector,
            tile_size=tile, min_area_m2=min_area, scheduler=scheduler, n_workers=workers,
            working_resolution_m=resolution, progress=progress,
        )
    finally:
        for bar in bars.values():
            bar.close()
    new = candidates[candidates["match"] == "new"]
    click.echo(f"{len(candidates)} candidates ({len(new)} new construction) -> {candidates.attrs.get('path', workdir)}")
    for row in new.sort_values("confidence", ascending=False).head(10).itertuples():
        where = f"grid {row.grid}" if getattr(row, "grid", None) else "outside the grids"
        click.echo(f"  {row.id}: {row.area_m2:,.0f} m², confidence {row.confidence:.2f}, {where}")
    if output:
        write_frame(candidates, output)


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Server processes (PostGIS only; the embedded store serves from one).")
@handles_errors
def serve_command(host, port, workers):
    """Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs)."""
    import uvicorn

    settings = _settings()
    with _open_store(settings) as store:  # fail here, with a one-line message, if the store cannot be opened
        backend = store.backend
    if backend == "sqlite" and workers > 1:
        raise click.BadParameter("the embedded SQLite store is served by one process", param_hint="--workers")
    click.echo(f"gridmap: serving {settings.database_url} on http://{host}:{port} (docs at /docs)", err=True)
    uvicorn.run("api.app:create_app", factory=True, host=host, port=port, workers=workers, log_level="warning")


@main.command("token")
@click.argument("username")
@handles_errors
def token_command(username):
    """Print a fresh bearer token for USERNAME (for admins and tools)."""
    from api.service import Service

    settings = _settings()
    with _open_store(settings) as store:
        issued = Service(store, settings).issue_token(username)
    click.echo(issued["access_token"])


@main.command("worker")
@click.option("--once", is_flag=True, help="Run queued jobs until none is left, then exit.")
@click.option("--scheduler", default=None, metavar="ADDRESS", help="A running Dask scheduler for the pipeline.")
@click.option("--dask-workers", default=2, show_default=True, type=click.IntRange(1, 256),
              help="Worker processes of the local Dask cluster (without --scheduler).")
@handles_errors
def worker_command(once, scheduler, dask_workers):
    """Run upload jobs through the inspection pipeline and escalate overdue cases."""
    import logging

    from api.service import Service
    from api.worker import JobRunner

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = _settings()
    with _open_store(settings) as store:
        runner = JobRunner(Service(store, settings), n_workers=dask_workers, scheduler=scheduler)
        if once:
            while (job := runner.run_once()) is not None:
                click.echo(f"job {job['id']}: {job['state']}" + (f" ({job['error']})" if job["error"] else ""))
        else:
            runner.run_forever()


if __name__ == "__main__":
    main()

"""The change-inspection pipeline: two orthomosaics in, located candidates of illegal construction out.

Stages, in order, each writing under ``workdir/<pair-id>/<stage>/`` (ODM-style):

``ingest``
    :func:`inspection.ortho.read_ortho_info` of both surveys, kept as STAC Items.
``check``
    The common pixel grid of the pair (:class:`inspection.ortho.SurveyPair`); fails early on surveys that
    do not overlap or cannot be read. A detector that reduces its input before looking at it (the learned
    one halves it) is given the grid already reduced, read from the surveys' overviews: decoding pixels
    only to average them away was most of a fine mosaic's cost. Chips are cut from the grid at the
    working resolution, so a grid worker sees the detail the detector did not need.
``align``
    One global shift of the after survey: the median of :func:`inspection.change.estimate_shift` on a few
    tiles spread over the detection grid (as Dask tasks). Drone mosaics of one area are
    off by a near-constant sub-metre to metre translation, which sampled tiles estimate as well as the
    whole image.
``detect``
    One Dask task per tile: read both surveys over the tile (with overlap), shift the after survey,
    run the detector, cut the thin parts off the mask and vectorise the tile's core into pieces in global
    pixel coordinates. Each task writes its core mask (1-bit PNG) and pieces (NPZ); tasks get paths and
    windows, never pixels, so a worker's memory follows the tile size whatever the mosaic size.
``vectorise``
    Pieces touching across core borders are merged, small regions dropped, ids assigned
    (:mod:`inspection.candidates`); then colour-steel flags and before/after chips, again as Dask tasks
    reading only each candidate's neighbourhood.
``match``
    Against the registered building layer (:func:`inspection.candidates.match_buildings`); candidates
    changing one building side by side become one (:func:`inspection.candidates.join_building_changes`).
``locate``
    Street, community, grid, courtyard and worker of each candidate; writes the final
    ``workdir/<pair-id>/candidates.geojson``.

A stage records its parameters (including its inputs' fingerprints and the upstream stage's) in
``params.json`` and its completion in ``done.json``; a completed stage with the same parameters is
skipped, so running the pipeline again reads the final file and writes nothing. A stage started with
other parameters is cleared and redone, and so is everything after it. An interrupted ``detect`` resumes:
tiles already written are not computed again. No cluster is started unless a stage needs one.

The pair id is a hash of the two files' sizes, first and last 64 KiB and grids, so it survives copying
the files elsewhere; candidate ids hash it with each outline (:func:`inspection.candidates.candidate_ids`).
"""

from __future__ import annotations

import hashlib
import math
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from affine import Affine
from rasterio.windows import Window

from gridmap.crs import transform_geometries
from gridmap.files import atomic_path
from inspection import candidates as cand
from inspection.change import estimate_shift, get_detector, shift_image
from inspection.errors import InspectionError, RasterError
from inspection.ortho import SurveyPair, core_window, read_ortho_info, stac_item, tile_windows

Progress = Callable[[str, int, int], None]
STAGES: tuple[str, ...] = ("ingest", "check", "align", "detect", "vectorise", "match", "locate")
FINAL_NAME = "candidates.geojson"
#: The final table's columns and dtypes (see :func:`run_pipeline`), which a pair without candidates gets too:
#: GeoJSON keeps no schema without a feature, and no caller should have to special-case an unchanged street.
CANDIDATE_COLUMNS: dict[str, str] = {
    "id": "str", "pair_id": "str",
    **dict.fromkeys(("area_m2", "width_m", "compactness", "confidence"), "float64"),
    **dict.fromkeys(("col0", "row0", "col1", "row1"), "int32"),
    "colour_steel": "bool", "chip_before": "str", "chip_after": "str", "match": "str", "building_code": "str",
    "covered": "float64", "building_share": "float64",
    **dict.fromkeys(("street", "community", "grid", "courtyard", "worker"), "str"),
}
# Tiles sampled for the global shift: 512 px at the four quadrant centres, a megapixel whatever the
# mosaic size, in a whole number of rounds on one, two or four workers; their median (the mean of the
# middle two) ignores one that falls on a changed or featureless area. On a grid the four would cover
# more than ALIGN_MAX_SHARE of, the centre's alone: reading most of the grid twice to estimate one shift
# costs more than it saves, and the detector registers each tile itself too. (Until 2026-12-07 the centre
# and the quadrants, five tasks, which two workers took three rounds to run.)
ALIGN_SIDE = 512
ALIGN_MAX_SHARE = 0.5
# A tile's chips are cut from one read of their common neighbourhood when that is at most this many tiles
# in area: one read of a tile with its margins costs a fraction of dozens of small reads of it.
CHIP_SHARED_READ_TILES = 1.5
CHIP_PAD = 8
CHIP_SIZE = 256
# Bytes hashed at each end of a survey file for the pair id: covers the TIFF header and tile offsets.
_ID_BYTES = 65536
_DEFAULT_WORKERS = 2
# Detection works at about this ground resolution: the scale of the reference change data (0.3-0.5 m) and of
# the detector's window sizes, and fine enough that a 4 m² shed is some 44 pixels. Drone mosaics at 2-15 cm
# are read from their overviews, so decoding and detection cost a fraction of the full-resolution pixels.
WORKING_RESOLUTION_M = 0.3
#: Fewest pixels a side of the detection grid a pair must share (the detectors' own floor is 8).
MIN_GRID_PX = 16


def run_pipeline(
    before: str | os.PathLike,
    after: str | os.PathLike,
    *,
    workdir: str | os.PathLike,
    buildings: gpd.GeoDataFrame | None = None,
    units: gpd.GeoDataFrame | None = None,
    detector: str = "default",
    tile_size: int = 1024,
    overlap: int = 64,
    min_area_m2: float = 4.0,
    min_width_m: float = 1.0,
    covered_fraction: float = 0.6,
    scheduler: str | None = None,
    client=None,
    n_workers: int = _DEFAULT_WORKERS,
    working_resolution_m: float = WORKING_RESOLUTION_M,
    progress: Progress | None = None,
) -> gpd.GeoDataFrame:
    """Find candidates of new construction between two surveys; idempotent, see the module docstring.

    Parameters
    ----------
    before, after : path-like
        Orthomosaics (GeoTIFF/COG, 8-bit RGB) of the same area at two dates.
    workdir : path-like
        Where stage outputs go, under ``<pair-id>/``. With a remote ``scheduler`` it must be a path the
        workers see too (a shared file system), since workers write their tiles and chips there.
    buildings : GeoDataFrame, optional
        Registered building footprints; without them every candidate is ``"new"``.
    units : GeoDataFrame, optional
        A unit table (:mod:`gridmap.units`) to locate candidates in; without it the unit columns are None.
    detector : str
        Name for :func:`inspection.change.get_detector`.
    tile_size, overlap : int
        Largest tile core side and the context added around it, in pixels of the detection grid; the
        cores are cut as equal as that allows (:func:`inspection.ortho.tile_windows`), so tasks cost alike.
    min_area_m2, min_width_m : float
        Candidates smaller, and mask parts thinner, are dropped (:func:`inspection.candidates.vectorise`).
    covered_fraction : float
        See :func:`inspection.candidates.match_buildings`.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``).
    client : distributed.Client, optional
        A client to use as is (wins over ``scheduler``); it is not closed.
    n_workers : int
        Worker processes of the local cluster started when neither ``client`` nor ``scheduler`` is given.
    working_resolution_m : float
        Ground resolution detection works at; rounded down to a whole multiple of the surveys' pixel, or to
        an overview factor both share within 3/4 of it (default 0.3 m: a 0.15 m mosaic is read from its 2x
        overview, a 3 cm one from its 8x at 0.24 m, a 0.2 m one at its own pixels; see :func:`_working_pair`).
        Chips are cut at this resolution; a detector that reduces its input further (``input_step``) reads
        the surveys reduced by that much more, so the learned one reads 0.15 m mosaics from their 4x
        overview.
    progress : callable, optional
        ``progress(stage, done, total)``, called as work completes (a skipped stage reports done at once).

    Returns
    -------
    GeoDataFrame
        The candidates in EPSG:4326, one row each, sorted by id: ``id``, ``pair_id``, ``area_m2``,
        ``width_m``, ``compactness``, ``confidence``, pixel box ``col0 row0 col1 row1`` (of the detection
        grid, ``check/grid.json``), ``colour_steel``,
        ``chip_before``/``chip_after`` (paths relative to ``workdir/<pair-id>``), ``match``,
        ``building_code``, ``covered``, ``building_share``, ``street``, ``community``, ``grid``,
        ``courtyard``, ``worker``. ``attrs["path"]`` is the final file.
    """
    report = progress or (lambda stage, done, total: None)
    before, after = Path(before), Path(after)
    pair_id = survey_pair_id(before, after)
    root = Path(workdir) / pair_id
    root.mkdir(parents=True, exist_ok=True)
    final = root / FINAL_NAME
    step = _input_step(detector)
    with _Cluster(client, scheduler, n_workers) as cluster:
        warming = [] if (root / "vectorise" / "done.json").exists() else _warm_up_workers(cluster.client, detector)
        ingest = _Stage(root, "ingest", {"pair": pair_id})
        if not ingest.done:
            ingest.start()
            for name, path in (("before", before), ("after", after)):
                info = read_ortho_info(path)
                item = stac_item(info, survey_id=f"{pair_id}-{name}", datetime=info.datetime or _mtime(path))
                _write_json(ingest.dir / f"{name}.json", item)
            ingest.finish()
        report("ingest", 1, 1)

        pair = _working_pair(before, after, working_resolution_m, step=step)
        if min(pair.shape) < MIN_GRID_PX:
            raise RasterError(
                f"the surveys share only {pair.shape[1]} x {pair.shape[0]} px of the {pair.resolution:.2f} m grid "
                f"detection works on (at least {MIN_GRID_PX} a side is needed): their overlap is too small, or "
                "one survey too coarse, to look for buildings in")
        chip_pair = _working_pair(before, after, working_resolution_m) if step > 1 else pair
        check = _Stage(root, "check", {"upstream": ingest.key, "resolution": pair.resolution,
                                       "chip_resolution": chip_pair.resolution})
        if not check.done:
            check.start()
            _write_json(check.dir / "grid.json", {"crs": pair.crs, "transform": list(pair.transform)[:6],
                                                  "shape": list(pair.shape), "resolution": pair.resolution,
                                                  "chip_resolution": chip_pair.resolution})
            check.finish()
        report("check", 1, 1)

        align = _Stage(root, "align", {"upstream": check.key, "samples": "quadrants", "side": ALIGN_SIDE,
                                       "max_share": ALIGN_MAX_SHARE})
        if not align.done:
            align.start()
            shift = _estimate_shift(cluster.client, pair, report)
            _write_json(align.dir / "shift.json", shift)
            align.finish()
        else:
            report("align", 1, 1)
        shift = _read_json(align.dir / "shift.json")

        open_px = cand.opening_px(pair.transform, pair.crs, min_width_m)
        min_pixels = int(np.floor(min_area_m2 / cand.pixel_size_m(pair.transform, pair.crs) ** 2))
        detect = _Stage(root, "detect", {"upstream": align.key, "detector": detector, "tile_size": tile_size,
                                         "overlap": overlap, "open_px": open_px, "min_pixels": min_pixels})
        if not detect.done:
            detect.start()
            _detect_tiles(cluster.client, pair, detect.dir, shift, detector, tile_size, overlap, open_px,
                          min_pixels, report)
            detect.finish()
        else:
            report("detect", 1, 1)

        vectorise = _Stage(root, "vectorise", {"upstream": detect.key, "min_area_m2": min_area_m2,
                                               "pad": CHIP_PAD, "size": CHIP_SIZE, "chips": "jpeg",
                                               "steel_edge_m": cand.STEEL_EDGE_M})
        found = None  # a stage's output when it ran in this call, handed on without reading it back
        if not vectorise.done:
            vectorise.start()
            found = _vectorise(cluster.client, pair, chip_pair, pair_id, detect.dir, vectorise.dir, root, shift,
                               min_area_m2, tile_size, report)
            _write_frame(found, vectorise.dir / "candidates.geojson")
            vectorise.finish()
        else:
            report("vectorise", 1, 1)
        for future in warming:
            future.release()

    match = _Stage(root, "match", {"upstream": vectorise.key, "buildings": _fingerprint(buildings),
                                   "covered_fraction": covered_fraction, "join_m": cand.CHANGE_JOIN_M})
    if not match.done:
        match.start()
        found = _read_frame(vectorise.dir / "candidates.geojson") if found is None else found
        if buildings is not None:
            found = cand.match_buildings(found, buildings, covered_fraction=covered_fraction)
            found = cand.join_building_changes(found)
        else:
            found = found.assign(match=cand.MATCH_NEW, building_code=None, covered=0.0, building_share=np.nan)
        _write_frame(found, match.dir / "candidates.geojson")
        match.finish()
    else:
        found = None  # what the locate stage wants is on disk only
    report("match", 1, 1)

    locate = _Stage(root, "locate", {"upstream": match.key, "units": _fingerprint(units)})
    if not locate.done or not final.exists():
        locate.start()
        found = _read_frame(match.dir / "candidates.geojson") if found is None else found
        if units is not None:
            from gridmap.locate import UnitLocator

            found = cand.locate_candidates(found, UnitLocator(units))
        else:
            found = found.assign(street=None, community=None, grid=None, courtyard=None, worker=None)
        _write_frame(found, final)
        locate.finish()
    report("locate", 1, 1)
    result = _read_frame(final)
    if result.empty:
        result = gpd.GeoDataFrame({name: pd.Series([], dtype=dtype) for name, dtype in CANDIDATE_COLUMNS.items()},
                                  geometry=gpd.GeoSeries([], crs=cand.STORAGE_CRS), crs=cand.STORAGE_CRS)
    result.attrs["path"] = str(final)
    return result


def survey_pair_id(before: str | os.PathLike, after: str | os.PathLike) -> str:
    """Id of a survey pair: 16 hex digits of SHA-1 over both files' size, ends and grid.

    Cheap on any mosaic size (it reads 128 KiB of each file and its header) and unchanged when the
    files are copied or renamed, unlike a hash of paths or modification times.
    """
    digest = hashlib.sha1()
    for path in (Path(before), Path(after)):
        if not path.is_file():
            raise RasterError(f"{path}: no such file")
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(_ID_BYTES)
            handle.seek(max(size - _ID_BYTES, 0))
            tail = handle.read(_ID_BYTES)
        digest.update(f"{size}\0".encode())
        digest.update(head)
        digest.update(tail)
    return digest.hexdigest()[:16]


# --- stages ----------------------------------------------------------------------------------------------


class _Stage:
    """A stage directory with its parameters (``params.json``) and completion marker (``done.json``)."""

    def __init__(self, root: Path, name: str, params: dict) -> None:
        self.dir = root / name
        self.params = params
        self.key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def done(self) -> bool:
        return _read_json(self.dir / "done.json", default={}).get("key") == self.key

    def start(self) -> None:
        # Outputs made with other parameters are stale; outputs of an interrupted run with the same
        # parameters (finished tiles) are kept and reused.
        if _read_json(self.dir / "params.json", default={}).get("key") != self.key and self.dir.exists():
            shutil.rmtree(self.dir)
        (self.dir / "done.json").unlink(missing_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_json(self.dir / "params.json", {"key": self.key, "params": self.params})

    def finish(self) -> None:
        _write_json(self.dir / "done.json", {"key": self.key})


#: Environment of the worker processes a local cluster spawns (set before spawning: glibc reads it at start).
#: Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_=65536`` so that a worker hands freed memory back at once; setting
#: it also freezes glibc's mmap threshold at 128 KiB, so every array a tile task allocates is mapped afresh
#: and page-faulted in and unmapped on release: a 1024 px detection task took 0.40-0.48 s in a worker, and
#: takes 0.22-0.27 s with these. With arrays up to 32 MiB served from the heap and up to 64 MiB of it kept, a
#: worker reuses a tile's memory for the next; its peak still follows the tile size (``bench/bench_pipeline.py``
#: measures it).
#: Workers of a remote cluster (``--scheduler``) want the same two variables in their environment.
WORKER_ENVIRON = {"MALLOC_MMAP_THRESHOLD_": 32 << 20, "MALLOC_TRIM_THRESHOLD_": 64 << 20}


def local_cluster(n_workers: int):
    """A ``distributed.LocalCluster`` of ``n_workers`` single-threaded worker processes, set up for tile tasks
    (:data:`WORKER_ENVIRON`); no dashboard."""
    import dask
    from distributed import LocalCluster

    environ = {f"distributed.nanny.pre-spawn-environ.{name}": value for name, value in WORKER_ENVIRON.items()}
    with dask.config.set(environ):
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None)


class _Cluster:
    """The Dask client, connected or started only when first asked for."""

    def __init__(self, client, scheduler: str | None, n_workers: int) -> None:
        self._client, self._scheduler, self._n_workers = client, scheduler, n_workers
        self._owned: list = []

    @property
    def client(self):
        if self._client is None:
            from distributed import Client

            if self._scheduler:
                self._client = Client(self._scheduler)
            else:
                cluster = local_cluster(self._n_workers)
                self._owned.append(cluster)
                self._client = Client(cluster)
            self._owned.insert(0, self._client)
        return self._client

    def __enter__(self) -> _Cluster:
        return self

    def __exit__(self, *exc) -> None:
        for owned in self._owned:
            owned.close()


# --- align ----------------------------------------------------------------------------------------------


def _estimate_shift(client, pair: SurveyPair, report: Progress) -> dict:
    windows, side_x, side_y = _align_windows(*pair.shape)
    futures = [client.submit(_shift_task, pair, col, row, side_x, side_y, pure=False) for col, row in windows]
    shifts = _gather(futures, "align", report)
    found = [s for s in shifts if s != (0.0, 0.0)]
    dx, dy = (float(np.median([s[0] for s in found])), float(np.median([s[1] for s in found]))) if found else (0.0, 0.0)
    return {"dx": dx, "dy": dy, "samples": [list(s) for s in shifts]}


def _align_windows(height: int, width: int) -> tuple[list[tuple[int, int]], int, int]:
    """The alignment samples of a ``height`` x ``width`` grid: their (column, row) corners and their side
    (width, height); see :data:`ALIGN_SIDE`.

    >>> _align_windows(1667, 1667)[0]
    [(160, 160), (994, 160), (160, 994), (994, 994)]
    >>> _align_windows(1024, 1024)  # the four would cover all of it
    ([(256, 256)], 512, 512)
    """
    side_y, side_x = min(ALIGN_SIDE, height), min(ALIGN_SIDE, width)

    def corner(fy: float, fx: float) -> tuple[int, int]:
        return (min(max(int(fx * width) - side_x // 2, 0), width - side_x),
                min(max(int(fy * height) - side_y // 2, 0), height - side_y))

    if 4 * side_x * side_y <= ALIGN_MAX_SHARE * height * width:
        return [corner(fy, fx) for fy in (0.25, 0.75) for fx in (0.25, 0.75)], side_x, side_y
    return [corner(0.5, 0.5)], side_x, side_y


def _warm_up_workers(client, detector: str) -> list:
    """Have every worker import its libraries and load the detector while this process ingests and checks
    the surveys: a fresh worker's first task otherwise pays for that (a third of a small pair's run).
    Returns the tasks' futures, to be released once the workers' real tasks are done."""
    return [client.submit(_warm_up, detector, workers=[address], allow_other_workers=False, pure=False)
            for address in client.scheduler_info()["workers"]]


#: Detectors this process has run :func:`_warm_up` for: a warm worker skips it, rather than run a detection
#: ahead of the run's first real task.
_WARM: set[str] = set()


def _warm_up(detector: str) -> None:
    """Run ``detector`` once on a tiny pair: imports, model loading and first-call allocations."""
    if detector in _WARM:
        return
    cv2.setNumThreads(1)
    try:
        tiny = np.zeros((64, 64, 3), np.uint8)
        get_detector(detector).detect(tiny, tiny)
    except InspectionError:
        return  # an unknown name or a broken model is reported by the detect stage, with its reason
    _WARM.add(detector)


def _shift_task(pair: SurveyPair, col: int, row: int, width: int, height: int) -> tuple[float, float]:
    cv2.setNumThreads(1)
    before, after, _ = pair.read(Window(col, row, width, height))
    dx, dy = estimate_shift(before, after)
    return float(dx), float(dy)


# --- detect ---------------------------------------------------------------------------------------------


def _detect_tiles(client, pair, directory: Path, shift: dict, detector: str, tile_size: int, overlap: int,
                  open_px: int, min_pixels: int, report: Progress) -> None:
    height, width = pair.shape
    tiles = tile_windows(width, height, size=tile_size, overlap=overlap)
    todo = []
    for window in tiles:
        core = core_window(window, width, height, size=tile_size, overlap=overlap)
        out = directory / f"tile_{int(core.row_off)}_{int(core.col_off)}.npz"
        if not out.exists():
            todo.append((_window_tuple(window), _window_tuple(core), str(out)))
    done = len(tiles) - len(todo)
    report("detect", done, len(tiles))
    futures = [
        client.submit(_detect_task, pair, window, core, (shift["dx"], shift["dy"]), detector, open_px, min_pixels,
                      out, pure=False)
        for window, core, out in todo
    ]
    _gather(futures, "detect", report, start=done, total=len(tiles))


def _detect_task(pair: SurveyPair, window: tuple, core: tuple, shift: tuple[float, float], detector: str,
                 open_px: int, min_pixels: int, out: str) -> int:
    """Detect changes in one tile; write its core mask (PNG) and pieces (NPZ); return the piece count."""
    cv2.setNumThreads(1)
    col, row, width, height = window
    core_col, core_row, core_width, core_height = core
    before, after, valid = pair.read(Window(*window))
    after = _shifted(after, shift)
    result = _grid_detector(detector, max(width, height)).detect(before, after)
    mask = result.mask & valid
    r0, c0 = core_row - row, core_col - col
    grid_height, grid_width = pair.shape
    pieces = cand.mask_components(
        mask,
        result.score,
        open_px=open_px,
        min_pixels=min_pixels,
        core=(r0, c0, r0 + core_height, c0 + core_width),
        offset=(core_row, core_col),
        open_edges=(core_row > 0, core_col > 0, core_row + core_height < grid_height, core_col + core_width < grid_width),
    )
    path = Path(out)
    core_mask = mask[r0 : r0 + core_height, c0 : c0 + core_width]
    # A 1-bit PNG (a fifth of the 8-bit one's encoding time): OpenCV reads it back as 0/255, GDAL as 0/1.
    ok, png = cv2.imencode(".png", core_mask.astype(np.uint8) * 255,
                           [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_BILEVEL, 1])
    if not ok:  # pragma: no cover - a uint8 single-band image always encodes
        raise InspectionError(f"PNG encoding of tile mask {path.name} failed")
    _write_bytes(path.with_suffix(".png"), png.tobytes())
    wkb = shapely.to_wkb(pieces.geometry) if len(pieces) else []
    lengths = np.array([len(w) for w in wkb], dtype=np.int64)
    # The NPZ is written last: its presence marks the tile done.
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, wkb=np.frombuffer(b"".join(wkb), dtype=np.uint8), lengths=lengths,
                 pixels=pieces.pixels, score_sum=pieces.score_sum)
    return len(pieces)


def _load_pieces(directory: Path) -> cand.Pieces:
    parts = []
    for path in sorted(directory.glob("tile_*.npz")):
        with np.load(path) as data:
            buffer, lengths = data["wkb"].tobytes(), data["lengths"]
            ends = np.cumsum(lengths)
            wkb = [buffer[e - n : e] for e, n in zip(ends.tolist(), lengths.tolist(), strict=True)]
            geometry = shapely.from_wkb(wkb) if wkb else np.empty(0, dtype=object)
            parts.append(cand.Pieces(np.asarray(geometry, dtype=object), data["pixels"], data["score_sum"]))
    return cand.Pieces.concat(parts)


# --- vectorise ------------------------------------------------------------------------------------------


def _vectorise(client, pair, chip_pair, pair_id: str, tiles: Path, directory: Path, root: Path, shift: dict,
               min_area_m2: float, tile_size: int, report: Progress) -> gpd.GeoDataFrame:
    pieces = cand.merge_pieces(_load_pieces(tiles))
    found = cand.measure(pieces, pair.transform, pair.crs, min_area_m2=min_area_m2, pair_id=pair_id)
    found.insert(1, "pair_id", pair_id)
    chip_dir = directory / "chips"
    chip_dir.mkdir(exist_ok=True)
    outlines = transform_geometries(found.geometry.to_numpy(), found.crs, pair.crs)
    batches = _chip_batches(found, tile_size)
    ratio = pair.resolution / chip_pair.resolution  # chip-grid pixels per detection-grid pixel
    futures = [
        client.submit(
            _chip_task,
            chip_pair,
            _chip_items(found, batch, outlines, chip_pair),
            (shift["dx"] * ratio, shift["dy"] * ratio),
            str(chip_dir),
            shared_read_px=int(CHIP_SHARED_READ_TILES * (tile_size * ratio) ** 2),
            steel_edge_px=_steel_edge_px(chip_pair),
            pure=False,
        )
        for batch in batches
    ]
    flags = {}
    for result in _gather(futures, "vectorise", report, total=len(batches)):
        flags.update(result)
    found["colour_steel"] = [flags[i] for i in found["id"]]
    found["chip_before"] = [str((chip_dir / f"{i}-before.jpg").relative_to(root)) for i in found["id"]]
    found["chip_after"] = [str((chip_dir / f"{i}-after.jpg").relative_to(root)) for i in found["id"]]
    return found


def _chip_batches(found: gpd.GeoDataFrame, tile_size: int) -> list[np.ndarray]:
    """Candidate row numbers in one batch per ``tile_size`` square of the detection grid (by the top-left
    corner of the candidate's box: a tile's area or less), so a batch's task reads that neighbourhood once;
    cutting and encoding a chip costs a millisecond."""
    rows, cols = found["row0"].to_numpy(np.int64), found["col0"].to_numpy(np.int64)
    cell = rows // tile_size * (1 << 32) + cols // tile_size
    order = np.lexsort((cols, rows, cell))
    return np.split(order, np.flatnonzero(np.diff(cell[order])) + 1) if len(order) else []


def _chip_items(found: gpd.GeoDataFrame, batch: np.ndarray, outlines: np.ndarray, chip_pair: SurveyPair) -> list:
    """``_chip_task``'s items for the candidates at rows ``batch``: id, pixel box on the chip grid (from the
    outline, since the two grids' corners need not coincide) and the outline in the grids' CRS as WKB."""
    return [(found.at[i, "id"], chip_pair.pixel_box(outlines[i].bounds), shapely.to_wkb(outlines[i])) for i in batch]


def _steel_edge_px(pair: SurveyPair) -> int:
    """:data:`inspection.candidates.STEEL_EDGE_M` in pixels of the pair's grid."""
    return round(cand.STEEL_EDGE_M / cand.pixel_size_m(pair.transform, pair.crs))


def _chip_task(pair: SurveyPair, items: list, shift: tuple[float, float], directory: str, *,
               shared_read_px: int, steel_edge_px: int) -> dict[str, bool]:
    """Chips and colour-steel flag of a batch of candidates.

    The batch's candidates start in one tile-sized square, so their common neighbourhood is read once when it
    is at most ``shared_read_px`` pixels; otherwise (candidates stretching far across tiles) each is read on
    its own.
    """
    cv2.setNumThreads(1)
    height, width = pair.shape
    # Room for the shift's resampling so the chip's edge pixels are real, not replicated.
    margin = CHIP_PAD + int(np.ceil(max(abs(shift[0]), abs(shift[1])))) + 2

    def neighbourhood(box):
        col0, row0, col1, row1 = box
        return max(col0 - margin, 0), max(row0 - margin, 0), min(col1 + margin, width), min(row1 + margin, height)

    boxes = [neighbourhood(box) for _, box, _ in items]
    union = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
    u0, v0, u1, v1 = union
    outlines = shapely.from_wkb([wkb for _, _, wkb in items])
    shapely.prepare(outlines)
    if len(items) == 1 or (u1 - u0) * (v1 - v0) <= shared_read_px:
        whole_before, whole_after, _ = pair.read(Window(u0, v0, u1 - u0, v1 - v0))

        def read(c0, r0, c1, r1):
            inside = (slice(r0 - v0, r1 - v0), slice(c0 - u0, c1 - u0))
            return whole_before[inside], whole_after[inside]
    else:
        def read(c0, r0, c1, r1):
            return pair.read(Window(c0, r0, c1 - c0, r1 - r0))[:2]
    flags = {}
    for (candidate_id, (col0, row0, col1, row1), _), outline, (c0, r0, c1, r1) in zip(items, outlines, boxes,
                                                                                      strict=True):
        before, after = read(c0, r0, c1, r1)
        region = _pixels_inside(outline, pair.transform, (c0, r0, c1, r1))
        after = _shifted(after, shift)
        flags[candidate_id] = cand.colour_steel_flag(after, region, edge_px=steel_edge_px)
        before_jpeg, after_jpeg = cand.chips(
            before, after, (col0 - c0, row0 - r0, col1 - c0, row1 - r0), pad=CHIP_PAD, size=CHIP_SIZE
        )
        # Plain writes, not atomic ones (a third of this task's time): the stage's done marker, written after
        # every chip, is what says the chips are whole, and a reader learns their names only from the
        # candidates file written after it; a run cut short rewrites them all.
        (Path(directory) / f"{candidate_id}-before.jpg").write_bytes(before_jpeg)
        (Path(directory) / f"{candidate_id}-after.jpg").write_bytes(after_jpeg)
    return flags


# --- helpers --------------------------------------------------------------------------------------------


def _pixels_inside(outline, transform: Affine, box: tuple[int, int, int, int]) -> np.ndarray:
    """Which pixels of the grid's ``box`` (col0, row0, col1, row1) have their centre inside ``outline``.

    A test of the box's pixel centres against the (prepared) outline: GDAL's rasterisation of a batch's
    neighbourhood at once cost a fifth of a chip task, most of it on pixels no candidate covers.
    """
    col0, row0, col1, row1 = box
    cols, rows = np.arange(col0, col1) + 0.5, np.arange(row0, row1)[:, None] + 0.5
    xs = transform.c + transform.a * cols + transform.b * rows
    ys = transform.f + transform.d * cols + transform.e * rows
    return shapely.contains_xy(outline, xs, ys)


def _shifted(after: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """``after`` moved back by the global shift (see :func:`inspection.change.estimate_shift`)."""
    dx, dy = shift
    return shift_image(after, -dx, -dy)


def _gather(futures: list, stage: str, report: Progress, *, start: int = 0, total: int | None = None) -> list:
    """Results of ``futures`` in submission order, reporting each completion.

    The results come with the completions (``with_results``): asking each future for its result afterwards
    cost a round trip to the client's event loop apiece, time in which the workers wait for the next stage.
    A task's error is raised here, with its traceback.
    """
    from distributed import as_completed

    total = len(futures) if total is None else total
    done = start
    results = {}
    for future, result in as_completed(futures, with_results=True):
        results[future.key] = result
        done += 1
        report(stage, done, total)
    for future in futures:
        future.release()
    return [results[future.key] for future in futures]


def _window_tuple(window: Window) -> tuple[int, int, int, int]:
    return int(window.col_off), int(window.row_off), int(window.width), int(window.height)


def _fingerprint(frame: gpd.GeoDataFrame | None) -> str | None:
    """Hash of a layer's geometries and columns, so a stage reruns when its input layer changes."""
    if frame is None:
        return None
    digest = hashlib.sha1(str(frame.crs).encode())
    digest.update(b"".join(shapely.to_wkb(frame.geometry.to_numpy())))
    digest.update(pd.util.hash_pandas_object(frame.drop(columns=frame.geometry.name).astype(str), index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def _mtime(path: Path):
    import datetime as dt

    return dt.datetime.fromtimestamp(path.stat().st_mtime, tz=dt.timezone.utc)


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _write_json(path: Path, value) -> None:
    _write_bytes(path, json.dumps(value, ensure_ascii=False, indent=1, sort_keys=True, default=str).encode())


def _working_pair(before, after, working_resolution_m: float, *, step: int = 1) -> SurveyPair:
    """The survey pair on a grid of whole multiples of its native pixel, as near ``working_resolution_m`` as
    that allows from below, so every grid pixel is a block of source pixels (read from overviews, not warped).

    When both surveys are COGs read on their own pixel grid and they share an overview factor between 3/4 of
    that multiple and the multiple itself, the grid is that overview (a 3 cm mosaic is read at 24 cm from its
    8x overview, not at 30 cm): GDAL serves an overview as it is, but resampling between two levels costs it
    several times the decoding, more than the at most 1.8x the pixels costs detection.

    ``step`` multiplies the factor so chosen: the grid for a detector that would reduce its input by
    ``step`` (when the factor is a COG overview, the doubled one is usually the next overview).
    """
    pair = SurveyPair(before, after)
    target = working_resolution_m / pair.resolution + 1e-6
    factor = max(1, math.floor(target))
    if pair.unwarped:
        shared = set(pair.before.overviews) & set(pair.after.overviews)
        factor = max((f for f in shared if 0.75 * target <= f <= target), default=factor)
    factor *= step
    return pair if factor == 1 else SurveyPair(before, after, resolution=pair.resolution * factor)


def _input_step(detector: str) -> int:
    """How much the named detector reduces its input before looking at it (1 for pixel-level ones).

    Raises DetectorError for an unknown name, before any stage runs."""
    return int(getattr(get_detector(detector), "input_step", 1))


def _grid_detector(detector: str, side: int):
    """The named detector for a ``side`` px task window of the detection grid, which :func:`_working_pair`
    has already reduced by its ``input_step``.

    A detector that tiles its input (the learned one) runs one pass over a window that is one of its tiles
    plus the margins it would add: the pipeline's overlap is that context already, and cutting a 1152 px
    window into a 1024 px tile and three thin ones, each with its own margins, cost a fifth more work.
    """
    found = get_detector(detector)
    if getattr(found, "input_step", 1) > 1:
        found = found.for_reduced_input()
    tile, margin = getattr(found, "tile", None), getattr(found, "margin", 0)
    if tile is not None and tile < side <= tile + 2 * margin:
        found = replace(found, tile=side)
    return found


def _read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if default is None:
            raise
        return default


def _write_frame(frame: gpd.GeoDataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_file(tmp, driver="GeoJSON", engine="pyogrio")


def _read_frame(path: Path) -> gpd.GeoDataFrame:
    frame = gpd.read_file(path, engine="pyogrio")
    # GeoJSON has no empty-table schema; an empty file reads back without columns.
    return frame.sort_values("id", kind="stable").reset_index(drop=True) if "id" in frame else frame

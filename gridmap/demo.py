"""Generate 示范街道, a fictional but plausible demo street in Hangzhou's 上城区, deterministically.

The demo data in ``data/boundaries/`` comes from here: one street (code ``330102901``), six communities,
182 unit grids, 356 courtyards and a few thousand buildings, in real WGS84 coordinates east of 西湖.
Nothing in it is surveyed: the outline, names, workers and populations are made up.

How the street is built
-----------------------
1. A lattice of road centre-lines, 95–178 m apart, is bent by a gentle smooth warp and turned a few
   degrees, in the metric CRS EPSG:4549 (CGCS2000 / 3-degree Gauss-Krüger CM 120E).
2. An irregular blob of lattice cells becomes the street; main roads along lattice lines cut it into six
   communities; pairs of small neighbouring cells in a community merge until exactly 182 grids remain.
3. Every road centre-line is projected to WGS84 and rounded to 7 decimals (about 1 cm) once, and every
   grid, community and the street is assembled from those shared rounded lines, so neighbours share
   identical vertices and the partition has no gaps or overlaps after rounding.
4. In each cell, roads (half their width on either side of a centre-line) and lanes leave blocks; 356
   blocks become courtyards, and buildings are packed in rows into blocks, turned with the cell.

Run ``python -m gridmap.demo data/boundaries`` to rewrite the committed files.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer
from shapely.geometry import LineString, Polygon, box, mapping

from gridmap.codes import LEVELS, building_code, child_code, parent_code
from gridmap.units import STORAGE_CRS, make_units

COUNTY_CODE = "330102"  # 浙江省杭州市上城区
STREET_CODE = "330102901"  # 901 keeps clear of the real streets' numbers
STREET_NAME = "示范街道"
N_GRIDS = 182
N_COURTYARDS = 356
METRIC_CRS = "EPSG:4549"
# East of 西湖 and south of 庆春路, so inside 上城区 (the old 下城区 north of 庆春路 is 拱墅区 since 2021).
CENTRE = (120.182, 30.250)
COORDINATE_DECIMALS = 7
FILE_NAMES: dict[str, str] = {
    "street": "demo-street.geojson",
    "community": "demo-communities.geojson",
    "grid": "demo-grids.geojson",
    "courtyard": "demo-courtyards.geojson",
    "building": "demo-buildings.geojson",
}

_COLUMNS, _ROWS = 18, 17
_MERGES = 28  # cells merged pairwise: the street holds N_GRIDS + _MERGES lattice cells
_MAX_MERGED_AREA = 29_000.0  # m²: a merged grid stays under 3 ha
_MIN_BLOCK_AREA = 300.0  # m²: smaller scraps between lanes stay empty
_MIN_COURTYARD_AREA = 1_500.0  # m²: smaller blocks stay unwalled
_FOOTPRINT = (100.0, 2_000.0)  # m²
_M2_PER_RESIDENT = 30.0  # gross residential floor area per resident
_COMMUNITIES = ("湖滨", "清波", "涌金", "柳浪", "望江", "东河")
_ATTEMPTS = 200


@dataclass(frozen=True)
class _Style:
    """How buildings are packed into a block of one kind: ranges are (low, high) in metres or floors."""

    use: str
    depth: tuple[float, float]
    length: tuple[float, float]
    row_gap: tuple[float, float]
    gap: tuple[float, float]
    margin: float
    floors: tuple[int, int]
    l_share: float
    shop_share: float = 0.0  # share of a residential style's buildings that are shops instead


_STYLES: dict[str, _Style] = {
    "住宅小区": _Style("住宅", (11, 14), (18, 36), (14, 20), (6, 10), 4, (6, 18), 0.15),
    "高层住宅": _Style("住宅", (17, 22), (18, 28), (24, 32), (14, 20), 6, (18, 33), 0.0),
    "老旧小区": _Style("住宅", (9, 12), (18, 36), (7, 11), (3, 6), 3, (5, 7), 0.1),
    "单位大院": _Style("公共", (16, 28), (30, 60), (14, 22), (10, 18), 6, (3, 6), 0.35),
    "商业楼宇": _Style("商业", (20, 36), (25, 55), (12, 18), (8, 14), 4, (4, 24), 0.25),
    "传统民居": _Style("住宅", (8, 12), (13, 22), (2.5, 5), (1.5, 3), 3, (2, 3), 0.1, shop_share=0.05),
    "沿街民居": _Style("住宅", (8, 12), (13, 22), (2.5, 5), (1.5, 3), 3, (2, 3), 0.1, shop_share=0.15),
    "散居住宅": _Style("住宅", (9, 12), (18, 36), (7, 11), (3, 6), 3, (4, 7), 0.1, shop_share=0.1),
    "沿街商铺": _Style("商业", (12, 20), (15, 40), (8, 12), (4, 8), 3, (2, 5), 0.2),
    "公共设施": _Style("公共", (16, 28), (30, 60), (14, 22), (10, 18), 6, (2, 5), 0.35),
}
_COURTYARD_KINDS = {"住宅小区": 0.3, "老旧小区": 0.33, "传统民居": 0.2, "单位大院": 0.1, "商业楼宇": 0.07}
_OPEN_KINDS = {"沿街民居": 0.4, "散居住宅": 0.2, "沿街商铺": 0.22, "公共设施": 0.06, "绿地": 0.12}
_HOUSING = {"住宅小区", "老旧小区", "散居住宅"}  # blocks of multi-storey homes

_SURNAMES = "王陈张李吴徐周金朱沈杨黄刘胡孙俞蒋章叶赵郑钱何许施汪方潘丁姚"
_GIVEN = "建国伟芳丽华明军红英平敏静磊强杰燕霞玲晓雪婷浩宇欣怡志勇海波佳慧文斌琳晨雯"
_ESTATE_STEMS = tuple(
    (
        "金桂 清泰 湖畔 柳浪 翠苑 紫荆 锦绣 望江 梅花 丁香 春江 明月 朝晖 凤起 南山 吴山 涌金 钱塘 玉皇 平海 "
        "庆春 东坡 学士 龙翔 惠民 光复 银泉 碧水 绿园 桂花 荷花 兰庭 竹林 松鹤 云栖 星洲 嘉禾 和平 安居 泰和 "
        "长寿 康乐 华庭 新华 秋涛 天城 河坊 青年 胜利 解放"
    ).split()
)
_ESTATE_SUFFIXES = ("小区", "花园", "新村", "公寓", "苑", "家园", "雅苑", "公馆")
_INSTITUTIONS = tuple("小学 中学 幼儿园 社区卫生服务中心 医院 派出所 养老院 文化馆 职业学校 消防站".split())
_COMMERCE = ("大厦", "商务中心", "广场", "商城", "市场")
_LANE_HOUSES = ("里", "坊", "巷")


@dataclass
class _Block:
    """Land between roads and lanes inside one grid, in EPSG:4549 metres."""

    grid: int
    polygon: Polygon
    angle: float  # radians: the direction of the cell's rows, which buildings follow
    kind: str = ""
    courtyard: int = 0  # courtyard number within the grid, 0 when the block is not walled


def generate_demo_street(seed: int = 2026) -> dict[str, gpd.GeoDataFrame]:
    """Build the demo street as unit tables keyed by level, each sorted by code.

    The same ``seed`` always gives the same tables; every seed gives 6 communities, 182 grids and
    356 courtyards.

    Examples
    --------
    >>> units = generate_demo_street()
    >>> [len(units[level]) for level in ("street", "community", "grid", "courtyard")]
    [1, 6, 182, 356]
    >>> units["grid"].loc[0, ["code", "name", "parent_code"]].tolist()
    ['330102901001001', '湖滨社区第1网格', '330102901001']
    """
    to_metric = Transformer.from_crs(STORAGE_CRS, METRIC_CRS, always_xy=True)
    to_wgs84 = Transformer.from_crs(METRIC_CRS, STORAGE_CRS, always_xy=True)
    for attempt in range(_ATTEMPTS):
        layout = _layout(np.random.default_rng([seed, attempt]), to_metric.transform(*CENTRE))
        if layout is not None:
            break
    else:  # pragma: no cover - seeds 0-59 and 2026 all need fewer than 30 attempts
        raise RuntimeError(f"no plausible street layout for seed {seed} in {_ATTEMPTS} attempts")
    rng, nodes, edges, labels, grids = layout

    def project(coords: np.ndarray) -> np.ndarray:
        lon, lat = to_wgs84.transform(coords[:, 0], coords[:, 1])
        return np.round(np.column_stack([lon, lat]), COORDINATE_DECIMALS)

    # Project each shared centre-line once so both sides of it get the very same rounded vertices.
    wgs84_edges = {key: project(line) for key, line in edges.items()}
    names = _Names(rng)
    blocks = _blocks(rng, nodes, edges, labels, grids)
    _assign_kinds(rng, blocks, len(grids))

    community_codes = [child_code(STREET_CODE, "street", c + 1) for c in range(len(_COMMUNITIES))]
    community_names = [f"{stem}社区" for stem in _COMMUNITIES]
    grid_community = [labels[cells[0]] for cells in grids]
    grid_codes, grid_names, seen = [], [], {}
    for community in grid_community:
        seen[community] = number = seen.get(community, 0) + 1
        grid_codes.append(child_code(community_codes[community], "community", number))
        grid_names.append(f"{community_names[community]}第{number}网格")

    residents = np.zeros(len(grids), dtype=np.int64)
    metric_shapes: list[Polygon] = []
    records: list[dict] = []  # courtyards and buildings first, their shapes in metric_shapes
    building_counts: dict[int, int] = {}
    for block in blocks:
        grid_code = grid_codes[block.grid]
        buildings = _pack(rng, block)
        if block.courtyard:
            court_name = names.courtyard(block.kind, community_names[grid_community[block.grid]])
            metric_shapes.append(block.polygon)
            records.append(
                {
                    "code": child_code(grid_code, "grid", block.courtyard),
                    "level": "courtyard",
                    "name": court_name,
                    "parent_code": grid_code,
                    "population": sum(people for *_, people in buildings),
                    "attributes": {"kind": block.kind},
                }
            )
        for k, (footprint, floors, use, people) in enumerate(buildings, start=1):
            number = building_counts[block.grid] = building_counts.get(block.grid, 0) + 1
            code = building_code(grid_code, number, block.courtyard)
            label = f"{court_name}{k}幢" if block.courtyard else f"{grid_names[block.grid]}{number}号楼"
            residents[block.grid] += people
            metric_shapes.append(footprint)
            records.append(
                {
                    "code": code,
                    "level": "building",
                    "name": label,
                    "parent_code": parent_code(code, "building"),
                    "population": people,
                    "attributes": {"floors": floors, "use": use},
                }
            )
    wgs84_shapes = shapely.transform(np.array(metric_shapes, dtype=object), project)
    for record, shape in zip(records, wgs84_shapes, strict=True):
        record["geometry"] = shape
    grid_shapes = [_union([_cell_polygon(wgs84_edges, cell) for cell in cells]) for cells in grids]
    workers = names.workers(len(grids))
    for g, code in enumerate(grid_codes):
        records.append(
            {
                "code": code,
                "level": "grid",
                "name": grid_names[g],
                "parent_code": parent_code(code, "grid"),
                "worker": workers[g],
                "population": int(residents[g]),
                "geometry": grid_shapes[g],
            }
        )
    for community, name in enumerate(community_names):
        members = [g for g, c in enumerate(grid_community) if c == community]
        records.append(
            {
                "code": community_codes[community],
                "level": "community",
                "name": name,
                "parent_code": parent_code(community_codes[community], "community"),
                "population": int(residents[members].sum()),
                "geometry": _union([grid_shapes[g] for g in members]),
            }
        )
    records.append(
        {
            "code": STREET_CODE,
            "level": "street",
            "name": STREET_NAME,
            "parent_code": COUNTY_CODE,
            "population": int(residents.sum()),
            "geometry": _union(grid_shapes),
            "attributes": {"city": "杭州市", "district": "上城区", "fictional": True},
        }
    )
    for record in records:
        # RFC 7946 wants exterior rings counter-clockwise; orienting changes no coordinate.
        record["geometry"] = shapely.orient_polygons(record["geometry"], exterior_cw=False)
    return {
        level: make_units(sorted((r for r in records if r["level"] == level), key=lambda r: r["code"]))
        for level in LEVELS
    }


def write_demo_street(directory: str | Path, *, seed: int = 2026) -> list[Path]:
    """Write the demo street as one RFC 7946 GeoJSON file per level into ``directory``; return the paths.

    The bytes depend on ``seed`` alone: keys are sorted, coordinates carry at most 7 decimals, one
    feature per line so that diffs stay readable.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    units = generate_demo_street(seed)
    paths = []
    for level in LEVELS:
        path = directory / FILE_NAMES[level]
        path.write_text(_feature_collection(units[level]), encoding="utf-8", newline="\n")
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m gridmap.demo [DIRECTORY] [--seed N]``."""
    parser = argparse.ArgumentParser(prog="python -m gridmap.demo", description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", default="data/boundaries")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    for path in write_demo_street(args.directory, seed=args.seed):
        print(path)
    return 0


def _feature_collection(units: gpd.GeoDataFrame) -> str:
    features = []
    for row in units.itertuples(index=False):
        properties = {
            "code": row.code,
            "level": row.level,
            "name": row.name,
            "parent_code": row.parent_code,
            "population": None if pd.isna(row.population) else int(row.population),
            "worker": row.worker,
            **row.attributes,
        }
        feature = {"type": "Feature", "properties": properties, "geometry": mapping(row.geometry)}
        features.append(json.dumps(feature, ensure_ascii=False, sort_keys=True, separators=(",", ":")))
    return '{"type":"FeatureCollection","features":[\n' + ",\n".join(features) + "\n]}\n"


# --- the lattice of road centre-lines -------------------------------------------------------------------


def _lattice(rng: np.random.Generator, centre: tuple[float, float]) -> tuple[np.ndarray, dict]:
    """Lattice nodes ``[i, j] -> (x, y)`` and centre-lines keyed ``("h"|"v", i, j)``, in metres.

    ``("h", i, j)`` runs east from node ``(i, j)``, ``("v", i, j)`` north from it.
    """
    xs = np.concatenate([[0.0], np.cumsum(rng.uniform(100, 178, _COLUMNS))])
    ys = np.concatenate([[0.0], np.cumsum(rng.uniform(95, 168, _ROWS))])
    xs -= xs[-1] / 2
    ys -= ys[-1] / 2
    turn = math.radians(rng.uniform(-8, 8))
    amplitude = rng.uniform(8, 20, (2, 3))
    wavelength = rng.uniform(1_500, 3_500, (2, 3))
    heading = rng.uniform(0, math.pi, (2, 3))
    phase = rng.uniform(0, 2 * math.pi, (2, 3))

    def warp(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        # Long gentle waves bend the roads a little without changing any block much.
        u, v = x.copy(), y.copy()
        for shift, a, w, h, p in zip((u, v), amplitude, wavelength, heading, phase, strict=True):
            for k in range(3):
                shift += a[k] * np.sin(2 * math.pi * (x * math.cos(h[k]) + y * math.sin(h[k])) / w[k] + p[k])
        return np.stack(
            [centre[0] + u * math.cos(turn) - v * math.sin(turn), centre[1] + u * math.sin(turn) + v * math.cos(turn)],
            axis=-1,
        )

    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    nodes = warp(gx, gy)
    # Three points inside each centre-line, 23-45 m apart, let the warp bend it; its ends are the lattice
    # nodes themselves, so lines meeting at a node meet exactly.
    t = np.array([0.25, 0.5, 0.75])
    east = warp(gx[:-1, :, None] + t * np.diff(xs)[:, None, None], gy[:-1, :, None] + 0 * t)
    north = warp(gx[:, :-1, None] + 0 * t, gy[:, :-1, None] + t * np.diff(ys)[None, :, None])
    edges = {}
    for i in range(_COLUMNS + 1):
        for j in range(_ROWS + 1):
            if i < _COLUMNS:
                edges["h", i, j] = np.vstack([nodes[i, j], east[i, j], nodes[i + 1, j]])
            if j < _ROWS:
                edges["v", i, j] = np.vstack([nodes[i, j], north[i, j], nodes[i, j + 1]])
    return nodes, edges


def _cell_polygon(edges: dict, cell: tuple[int, int]) -> Polygon:
    i, j = cell
    sides = [edges["h", i, j], edges["v", i + 1, j], edges["h", i, j + 1][::-1], edges["v", i, j][::-1]]
    return Polygon(np.concatenate([side[:-1] for side in sides]))


def _union(polygons: Sequence[Polygon]) -> Polygon:
    # Coverage union only drops the shared edges, so the result keeps the inputs' exact vertices.
    return shapely.coverage_union_all(polygons) if len(polygons) > 1 else polygons[0]


# --- which cells make the street, its communities and its grids -----------------------------------------


def _layout(rng: np.random.Generator, centre: tuple[float, float]) -> tuple | None:
    """The street's lattice, community per cell and grids as tuples of cells; ``None`` for an unusable draw.

    Returns ``(rng, nodes, edges, labels, grids)``: ``rng`` goes on to draw everything else.
    """
    mask = _blob(rng, N_GRIDS + _MERGES)
    padded = np.pad(mask, 1)
    neighbours = padded[:-2, 1:-1].astype(int) + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
    if not _is_simple_region(mask) or np.any(mask & (neighbours < 2)):
        return None  # also no street boundary wrapped round a one-cell spur
    community = _communities(rng, mask)
    if any(not _is_simple_region(community == c) for c in range(len(_COMMUNITIES))):
        return None
    nodes, edges = _lattice(rng, centre)
    areas = np.array([[_cell_polygon(edges, (i, j)).area for j in range(_ROWS)] for i in range(_COLUMNS)])
    grids = _merge(rng, community, areas)
    if grids is None:
        return None
    labels = {(i, j): int(community[i, j]) for i, j in np.argwhere(mask).tolist()}
    # Number grids within a community from the north-west, row by row, as one reads a map.
    grids.sort(key=lambda cells: (labels[cells[0]], -max(j for _, j in cells), min(i for i, _ in cells)))
    return rng, nodes, edges, labels, grids


def _blob(rng: np.random.Generator, count: int) -> np.ndarray:
    """The ``count`` cells nearest the middle by a lumpy rounded-rectangle distance."""
    u = (np.arange(_COLUMNS) + 0.5) / _COLUMNS * 2 - 1
    v = (np.arange(_ROWS) + 0.5) / _ROWS * 2 - 1
    gu, gv = np.meshgrid(u, v, indexing="ij")
    power = rng.uniform(2.5, 4.0)
    theta = np.arctan2(gv, gu)
    lumps = sum(rng.uniform(0.04, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * math.pi)) for k in (2, 3, 5))
    score = (np.abs(gu) ** power + np.abs(gv) ** power) ** (1 / power) / (1 + lumps)
    mask = np.zeros(score.size, dtype=bool)
    mask[np.argsort(score, axis=None, kind="stable")[:count]] = True
    return mask.reshape(score.shape)


def _communities(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """Label cells 0–5: three column bands cut by north–south main roads, each cut in two east–west."""
    labels = np.full(mask.shape, -1)
    cumulative = np.cumsum(mask.sum(axis=1))
    shares = (rng.uniform(0.3, 0.36), rng.uniform(0.64, 0.7))
    cuts = [0, *(int(np.searchsorted(cumulative, cumulative[-1] * share)) + 1 for share in shares), _COLUMNS]
    for band in range(3):
        columns = slice(cuts[band], cuts[band + 1])
        rows = np.cumsum(mask[columns].sum(axis=0))
        middle = int(np.searchsorted(rows, rows[-1] * rng.uniform(0.45, 0.55))) + 1
        labels[columns, middle:] = band  # the north half of the band comes first
        labels[columns, :middle] = band + 3
    return np.where(mask, labels, -1)


def _is_simple_region(mask: np.ndarray) -> bool:
    """True when the cells form one piece without holes or cells touching only at a corner."""
    padded = np.pad(mask, 1)
    a, b, c, d = padded[:-1, :-1], padded[1:, :-1], padded[:-1, 1:], padded[1:, 1:]
    if np.any((a & d & ~b & ~c) | (b & c & ~a & ~d)):
        return False
    one_piece = _component(padded, tuple(np.argwhere(padded)[0])) == padded.sum()
    return one_piece and _component(~padded, (0, 0)) == (~padded).sum()  # all outside cells reach the rim


def _component(mask: np.ndarray, start: tuple[int, int]) -> int:
    """Size of the 4-connected component of ``mask`` holding ``start``."""
    seen, queue = {start}, deque([start])
    while queue:
        i, j = queue.popleft()
        for n in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
            if 0 <= n[0] < mask.shape[0] and 0 <= n[1] < mask.shape[1] and mask[n] and n not in seen:
                seen.add(n)
                queue.append(n)
    return len(seen)


def _merge(rng: np.random.Generator, community: np.ndarray, areas: np.ndarray) -> list[tuple] | None:
    """Grids: single cells, and ``_MERGES`` pairs of small neighbours that together stay under 3 ha."""
    pairs = []
    for i, j in np.argwhere(community >= 0).tolist():
        for n in ((i + 1, j), (i, j + 1)):
            neighbours = n[0] < _COLUMNS and n[1] < _ROWS and community[n] == community[i, j]
            if neighbours and areas[i, j] + areas[n] <= _MAX_MERGED_AREA:
                # The smallest cells merge first; a little noise varies the pairs from seed to seed.
                pairs.append((min(areas[i, j], areas[n]) * rng.uniform(1, 1.1), (i, j), n))
    pairs.sort()
    merged: list[tuple] = []
    used: set = set()
    for _, first, second in pairs:
        if len(merged) == _MERGES:
            break
        if first not in used and second not in used:
            merged.append((first, second))
            used.update((first, second))
    if len(merged) < _MERGES:
        return None
    singles = [(i, j) for i, j in np.argwhere(community >= 0).tolist() if (i, j) not in used]
    return merged + [(cell,) for cell in singles]


# --- blocks, courtyards and buildings ----------------------------------------------------------------------


def _blocks(rng: np.random.Generator, nodes: np.ndarray, edges: dict, labels: dict, grids: list) -> list[_Block]:
    """Cut every cell into blocks: roads along its sides, then up to two lanes across it."""
    grid_of = {cell: g for g, cells in enumerate(grids) for cell in cells}
    # Each lattice line keeps one width along its length: main roads 20–30 m, minor roads 10–16 m.
    lines = [("h", j) for j in range(_ROWS + 1)] + [("v", i) for i in range(_COLUMNS + 1)]
    main = {line: rng.uniform(10, 15) for line in lines}
    minor = {line: rng.uniform(5, 8) for line in lines}

    def half_width(key: tuple) -> float:
        kind, i, j = key
        sides = [(i, j - 1), (i, j)] if kind == "h" else [(i - 1, j), (i, j)]
        line = (kind, j if kind == "h" else i)
        if any(side not in labels for side in sides) or labels[sides[0]] != labels[sides[1]]:
            return main[line]  # the street's edge or a community's edge: a main road
        if grid_of[sides[0]] != grid_of[sides[1]]:
            return minor[line]
        return rng.uniform(2.5, 5)  # a lane inside a merged grid

    widths = {key: half_width(key) for key in sorted(edges) if _touches(key, labels)}
    blocks = []
    for g, cells in enumerate(grids):
        for i, j in cells:
            sides = [("h", i, j), ("v", i + 1, j), ("h", i, j + 1), ("v", i, j)]
            roads = shapely.union_all(
                [shapely.buffer(LineString(edges[k]), widths[k], quad_segs=2, join_style="mitre") for k in sides]
            )
            land = _cell_polygon(edges, (i, j)).difference(roads)
            corners = (nodes[i, j], nodes[i + 1, j], nodes[i + 1, j + 1], nodes[i, j + 1])
            across = _bilinear(corners, 1, 0.5) - _bilinear(corners, 0, 0.5)
            angle = math.atan2(across[1], across[0])
            target = rng.uniform(3_500, 6_500)
            pieces = _split(rng, land, corners, int(np.clip(round(land.area / target), 1, 4)))
            blocks.extend(_Block(g, piece, angle) for piece in pieces)
    return blocks


def _touches(key: tuple, labels: dict) -> bool:
    kind, i, j = key
    return ((i, j - 1) if kind == "h" else (i - 1, j)) in labels or (i, j) in labels


def _bilinear(corners: tuple, s: float, t: float) -> np.ndarray:
    p00, p10, p11, p01 = corners
    return (1 - s) * (1 - t) * p00 + s * (1 - t) * p10 + s * t * p11 + (1 - s) * t * p01


def _split(rng: np.random.Generator, land: Polygon, corners: tuple, count: int) -> list[Polygon]:
    """Cut ``land`` into about ``count`` blocks with lanes 5–12 m wide, in cell coordinates (s, t)."""
    width = np.linalg.norm(_bilinear(corners, 1, 0.5) - _bilinear(corners, 0, 0.5))
    height = np.linalg.norm(_bilinear(corners, 0.5, 1) - _bilinear(corners, 0.5, 0))
    long_first = width >= height

    def lane(at: float, along_t: bool, start: float = -0.2, stop: float = 1.2) -> LineString:
        ends = [(at, start), (at, stop)] if along_t else [(start, at), (stop, at)]
        return LineString([_bilinear(corners, s, t) for s, t in ends])

    lanes = []
    if count == 2:
        lanes = [lane(rng.uniform(0.4, 0.6), long_first)]
    elif count == 3 and rng.random() < 0.5:
        lanes = [lane(rng.uniform(0.3, 0.37), long_first), lane(rng.uniform(0.63, 0.7), long_first)]
    elif count == 3:
        first = rng.uniform(0.35, 0.65)
        side = (first, 1.2) if rng.random() < 0.5 else (-0.2, first)
        lanes = [lane(first, long_first), lane(rng.uniform(0.4, 0.6), not long_first, *side)]
    elif count == 4:
        lanes = [lane(rng.uniform(0.4, 0.6), True), lane(rng.uniform(0.4, 0.6), False)]
    if lanes:
        cuts = shapely.union_all([shapely.buffer(line, rng.uniform(2.5, 6), cap_style="flat") for line in lanes])
        land = land.difference(cuts)
    pieces = [p for p in shapely.get_parts(land) if p.area >= _MIN_BLOCK_AREA]
    # Number blocks from the north-west, as courtyards are numbered on the ground.
    return sorted(pieces, key=lambda p: (-round(p.centroid.y / 40), p.centroid.x))


def _assign_kinds(rng: np.random.Generator, blocks: list[_Block], grid_count: int) -> None:
    """Wall exactly N_COURTYARDS blocks, number them per grid, and give every block a kind."""
    candidates = [b for b, block in enumerate(blocks) if block.polygon.area >= _MIN_COURTYARD_AREA]
    if len(candidates) < N_COURTYARDS:
        raise RuntimeError(f"only {len(candidates)} blocks can hold a courtyard, {N_COURTYARDS} wanted")
    weights = np.array([blocks[b].polygon.area for b in candidates])
    walled = set(rng.choice(candidates, N_COURTYARDS, replace=False, p=weights / weights.sum()).tolist())
    numbers: dict[int, int] = {}
    for b, block in enumerate(blocks):
        kinds = _COURTYARD_KINDS if b in walled else _OPEN_KINDS
        block.kind = str(rng.choice(list(kinds), p=list(kinds.values())))
        if b in walled:
            block.courtyard = numbers[block.grid] = numbers.get(block.grid, 0) + 1
    # Somebody lives in every grid: its largest block becomes flats when no block has any.
    for g in range(grid_count):
        own = [block for block in blocks if block.grid == g]
        if not any(block.kind in _HOUSING for block in own):
            largest = max(own, key=lambda block: block.polygon.area)
            largest.kind = "住宅小区" if largest.courtyard else "散居住宅"


def _pack(rng: np.random.Generator, block: _Block) -> list[tuple[Polygon, int, str, int]]:
    """Buildings ``(footprint, floors, use, residents)`` in rows across ``block``, turned with its cell."""
    if block.kind == "绿地":
        return []
    kind = "高层住宅" if block.kind == "住宅小区" and rng.random() < 0.25 else block.kind
    style = _STYLES[kind]
    origin = np.array(block.polygon.centroid.coords[0])
    cos, sin = math.cos(block.angle), math.sin(block.angle)
    # Work in the block's own frame: x along its rows, y across them.
    local = shapely.transform(block.polygon, lambda c: (c - origin) @ np.array([[cos, -sin], [sin, cos]]))
    room = local.buffer(-style.margin, join_style="mitre")
    shapely.prepare(room)
    footprints = []
    minx, miny, maxx, maxy = room.bounds  # NaN for an empty room: no row starts
    y = miny + rng.uniform(0, 2)
    while y < maxy:
        depth = rng.uniform(*style.depth)
        if y + depth > maxy:
            break
        # The row can use the stretch where its bottom, middle and top lines all cross the room.
        crossings = [LineString([(minx - 1, h), (maxx + 1, h)]) for h in (y, y + depth / 2, y + depth)]
        spans = [room.intersection(line).bounds for line in crossings]
        x = max(span[0] for span in spans) + rng.uniform(0, 2)
        end = min(span[2] for span in spans)
        while x < end:  # false when a line misses the room: its bounds are NaN
            length = min(rng.uniform(*style.length), end - x)
            if length < style.length[0]:
                break
            shape = _footprint(rng, x, y, length, depth, style.l_share)
            if _FOOTPRINT[0] <= shape.area <= _FOOTPRINT[1] and room.contains_properly(shape):
                footprints.append(shape)
                x += length + rng.uniform(*style.gap)
            else:
                x += 2.0
        y += depth + rng.uniform(*style.row_gap)
    if not footprints and block.courtyard:
        # A walled courtyard needs a building: a small one in its middle, nearer the wall than usual.
        inner = local.buffer(-2.0, join_style="mitre")
        centre = inner.point_on_surface()
        shape = box(centre.x - 6, centre.y - 4.5, centre.x + 6, centre.y + 4.5)
        if inner.contains_properly(shape):
            footprints.append(shape)
    back = np.array([[cos, sin], [-sin, cos]])
    buildings = []
    for shape in footprints:
        floors = int(rng.integers(style.floors[0], style.floors[1] + 1))
        use = "商业" if style.shop_share and rng.random() < style.shop_share else style.use
        people = round(shape.area * floors / _M2_PER_RESIDENT) if use == "住宅" else 0
        buildings.append((shapely.transform(shape, lambda c: c @ back + origin), floors, use, people))
    return buildings


def _footprint(rng: np.random.Generator, x: float, y: float, length: float, depth: float, l_share: float) -> Polygon:
    """A rectangle, or an L whose bar and wing both stay inside the same ``length`` x ``depth`` box."""
    if rng.random() >= l_share:
        return box(x, y, x + length, y + depth)
    bar = depth * rng.uniform(0.5, 0.7)
    wing = length * rng.uniform(0.25, 0.4)
    shape = Polygon([(0, 0), (length, 0), (length, bar), (wing, bar), (wing, depth), (0, depth)])
    if rng.random() < 0.5:  # wing at the other end
        shape = shapely.transform(shape, lambda c: np.column_stack([length - c[:, 0], c[:, 1]]))
    if rng.random() < 0.5:  # bar on the other side
        shape = shapely.transform(shape, lambda c: np.column_stack([c[:, 0], depth - c[:, 1]]))
    return shapely.transform(shape, lambda c: c + np.array([x, y]))


class _Names:
    """Made-up but plausible names, drawn once and never repeated."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._used: set[str] = set()
        self._yards: dict[str, int] = {}

    def _fresh(self, make) -> str:
        while (name := make()) in self._used:
            pass
        self._used.add(name)
        return name

    def _pick(self, options: Sequence[str]) -> str:
        return options[int(self._rng.integers(len(options)))]

    def workers(self, count: int) -> list[str]:
        def person() -> str:
            given = "".join(self._pick(_GIVEN) for _ in range(1 if self._rng.random() < 0.3 else 2))
            return self._pick(_SURNAMES) + given

        return [self._fresh(person) for _ in range(count)]

    def courtyard(self, kind: str, community: str) -> str:
        if kind == "老旧小区":  # old compounds go by number within their community
            self._yards[community] = self._yards.get(community, 0) + 1
            return f"{community}{self._yards[community]}号院"
        stems = _ESTATE_STEMS + _COMMUNITIES
        suffixes = {"单位大院": _INSTITUTIONS, "商业楼宇": _COMMERCE, "传统民居": _LANE_HOUSES}.get(
            kind, _ESTATE_SUFFIXES
        )
        return self._fresh(lambda: self._pick(stems) + self._pick(suffixes))


if __name__ == "__main__":
    raise SystemExit(main())

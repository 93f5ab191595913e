"""The supervisors' notebooks (``notebooks/``) run top to bottom against a demo store, and compute the right thing.

Each notebook is executed with nbclient in a fresh kernel of this venv (ipykernel's ``python3``), with
``GRIDMAP_DATABASE_URL`` in the kernel's environment naming a private copy of the demo street holding the 40 demo
cases of ``api.demo.seed_cases`` plus a cluster of reports in one grid (so one period has a clear hotspot). As
papermill does, a cell fixing the period is injected after the notebook's ``parameters`` cell; a probe cell
appended at the end prints the notebook's tables as JSON, and the test recomputes them in plain Python from the
store's own case list.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import statistics
import sys
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import nbformat
import pytest
from conftest import copy_demo_database
from nbclient import NotebookClient

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = PROJECT_ROOT / "notebooks"
CLUSTER = 5  # reports filed in one grid ten days before the notebooks' END
CLUSTER_GRID = 40  # index of the cluster's grid among the demo grids sorted by code
CLUSTER_CATEGORY = "event:0304"

HOTSPOTS_PROBE = """
import json, sys
print(json.dumps({"executable": sys.executable, "url": DATABASE_URL, "top_n": TOP_N,
                  "periods": [[s.isoformat(), e.isoformat()] for s, e in periods],
                  "summary": period_table[["period", "label", "cases", "grids_with_cases"]].to_dict("records"),
                  "hotspots": hotspots.to_dict("records"), "movement": movement.to_dict("records")}, default=str))
"""
INDICATORS_PROBE = """
import json, sys
print(json.dumps({"executable": sys.executable, "url": DATABASE_URL, "start": start.isoformat(),
                  "end": end.isoformat(), "worst_n": WORST_N, "worst": worst_keys,
                  "by_community": by_community.drop(columns=["by_category", "by_source"]).to_dict("records"),
                  "by_worker": by_worker[["key", "cases", "closed"]].to_dict("records")}, default=str))
"""


def seed(url: str, data_dir: Path) -> datetime:
    """The demo cases plus a cluster of same-category reports at one spot; returns the seeding time."""
    from api.demo import DEMO_CASES, grid_username, seed_cases
    from api.service import Service
    from api.settings import Settings
    from storage import open_store

    with open_store(url) as store:
        service = Service(store, Settings(database_url=url, data_dir=str(data_dir)))
        assert seed_cases(service) == DEMO_CASES
        grids = service.units[service.units["level"] == "grid"].sort_values("code")
        grid = grids.iloc[CLUSTER_GRID]
        spot = grid.geometry.representative_point()
        reporter = store.get_account(grid_username(grid["code"], grids["code"].iloc[0]))
        real_clock = service.clock
        now = real_clock()
        try:
            for i in range(CLUSTER):
                service.clock = lambda at=now - timedelta(days=10, hours=3 * i): at
                _, created = service.open_case(CLUSTER_CATEGORY, "report", spot.x, spot.y, actor=reporter,
                                               description=f"聚集 {i}", source_ref=f"cluster:{i}")
                assert created
        finally:
            service.clock = real_clock
    return now


def run_notebook(name: str, url: str, parameters: dict, probe: str,
                 workdir: Path) -> tuple[nbformat.NotebookNode, dict]:
    """Execute ``notebooks/<name>.ipynb`` with ``parameters`` injected and ``probe`` appended; the executed
    notebook and the probe's JSON. The kernel runs in a scratch directory (its default ``../gridmap.db`` is
    never the repository's) with GRIDMAP_DATABASE_URL set to ``url``."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    [at] = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in parameters.items())))
    nb.cells.append(nbformat.v4.new_code_cell(probe.strip()))
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GRIDMAP_DATABASE_URL": url}
    env.pop("MPLBACKEND", None)  # the inline backend: figures become image/png outputs
    client = NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(workdir)}})
    client.execute(env=env)  # raises CellExecutionError on any failing cell
    outputs = [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, f"{name} wrote to stderr (warnings?): {stderr}"
    [printed] = [o.text for o in nb.cells[-1].outputs if o.output_type == "stream" and o.name == "stdout"]
    result = json.loads(printed)
    # the kernel is this venv's python, and it read the store the environment named
    assert Path(result["executable"]).resolve() == Path(sys.executable).resolve()
    assert result["url"] == url
    return nb, result


def mime_outputs(nb: nbformat.NotebookNode, mime: str) -> list[str]:
    return [output.data[mime] for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs
            if mime in output.get("data", {})]


def all_cases(url: str) -> list[dict]:
    from storage import open_store

    with open_store(url) as store:
        return store.list_cases()


def units(url: str, level: str):
    from storage import open_store

    with open_store(url) as store:
        return store.get_units(level)


@pytest.fixture(scope="module")
def demo_store(demo_sqlite_template, tmp_path_factory) -> tuple[str, datetime]:
    """A private SQLite demo store with the demo cases and the cluster; its URL and seeding time."""
    directory = tmp_path_factory.mktemp("notebooks-demo")
    path = directory / "demo.db"
    shutil.copyfile(demo_sqlite_template, path)
    url = f"sqlite:///{path}"
    return url, seed(url, directory / "data")


# ------------------------------------------------------------------------------------------------ committed form


@pytest.mark.parametrize("name", ["hotspots", "indicators"])
def test_notebooks_are_committed_clean(name):
    """No outputs (the repo stays small and diffable), the venv's kernel, and a parameters cell to inject after."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert nb.metadata.kernelspec.name == "python3"
    assert sum("parameters" in cell.metadata.get("tags", []) for cell in code) == 1
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert "GRIDMAP_DATABASE_URL" in "".join(cell.source for cell in code)


# ------------------------------------------------------------------------------------------------------ hotspots


def test_hotspots_notebook(demo_store, tmp_path):
    url, now = demo_store
    nb, result = run_notebook("hotspots", url, {"END": now.isoformat()}, HOTSPOTS_PROBE, tmp_path / "work")
    cases = all_cases(url)
    names = units(url, "grid").set_index("code")["name"]
    periods = [(datetime.fromisoformat(s), datetime.fromisoformat(e)) for s, e in result["periods"]]
    top_n = result["top_n"]

    # four contiguous weeks ending at END
    assert len(periods) == 4 and periods[-1][1] == now
    assert all(e - s == timedelta(days=7) for s, e in periods)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(periods))
    in_range = [c for c in cases if periods[0][0] <= c["reported_at"] < now]
    assert sum(row["cases"] for row in result["summary"]) == len(in_range) >= 30

    hotspots = result["hotspots"]
    for number, (start, end) in enumerate(periods, start=1):
        per_grid = Counter(c["grid"] for c in cases if start <= c["reported_at"] < end)
        [summary] = [row for row in result["summary"] if row["period"] == number]
        assert summary["cases"] == sum(per_grid.values())
        assert summary["grids_with_cases"] == len(per_grid)
        listed = sorted((row for row in hotspots if row["period"] == number), key=lambda row: row["rank"])
        assert [row["rank"] for row in listed] == list(range(1, min(top_n, len(per_grid)) + 1))
        for row in listed:
            assert int(row["cases"]) == per_grid[row["grid"]]  # the notebook's count is the store's
            assert row["name"] == names[row["grid"]]
        # the top N are the grids with the most cases, the first has the most of all
        assert [int(row["cases"]) for row in listed] == sorted(per_grid.values(), reverse=True)[:top_n]
        if listed:
            assert int(listed[0]["cases"]) == max(per_grid.values())
        [move] = [row for row in result["movement"] if row["label"] == summary["label"]]
        assert move["top_grid"] == (listed[0]["grid"] if listed else None)

    # the cluster filed ten days before END is the third week's top hotspot
    cluster_grid = units(url, "grid").sort_values("code")["code"].iloc[CLUSTER_GRID]
    third = [row for row in hotspots if row["period"] == 3 and row["rank"] == 1]
    assert third[0]["grid"] == cluster_grid and int(third[0]["cases"]) >= CLUSTER

    assert mime_outputs(nb, "image/png"), "no small-multiples figure"
    assert any("leaflet" in html.lower() for html in mime_outputs(nb, "text/html")), "no folium map"


# ---------------------------------------------------------------------------------------------------- indicators


def check_indicators(url: str, now: datetime, workdir: Path) -> None:
    nb, result = run_notebook("indicators", url, {"END": now.isoformat(), "PERIOD_DAYS": 30}, INDICATORS_PROBE,
                              workdir)
    start, end = datetime.fromisoformat(result["start"]), datetime.fromisoformat(result["end"])
    assert end == now and end - start == timedelta(days=30)
    chosen = [c for c in all_cases(url) if start <= c["reported_at"] < end]
    assert len(chosen) >= 30

    names = units(url, "community").set_index("code")["name"]
    groups: dict[str, list[dict]] = defaultdict(list)
    for case in chosen:
        groups[case["community"]].append(case)
    table = {row["key"]: row for row in result["by_community"]}
    assert set(table) == set(groups)
    rates = {}
    for community, members in groups.items():
        row = table[community]
        closed = [c for c in members if c["state"] == "closed"]
        cancelled = sum(c["state"] == "cancelled" for c in members)
        on_time = sum(c["handled_at"] is not None and c["deadline_at"] is not None
                      and c["handled_at"] <= c["deadline_at"] for c in closed)
        assert (row["cases"], row["closed"], row["cancelled"], row["closed_on_time"]) == (
            len(members), len(closed), cancelled, on_time), community
        assert row["closure_rate"] == pytest.approx(len(closed) / (len(members) - cancelled))
        if closed:
            rates[community] = on_time / len(closed)
            assert row["on_time_rate"] == pytest.approx(rates[community])
        else:
            assert row["on_time_rate"] is None
        for column, first, then in (("median_hours_to_dispatch", "reported_at", "dispatched_at"),
                                    ("median_hours_to_verify", "dispatched_at", "verified_at")):
            hours = [(c[then] - c[first]).total_seconds() / 3600 for c in members
                     if c[first] is not None and c[then] is not None]
            expected = pytest.approx(statistics.median(hours)) if hours else None
            assert row[column] == expected, (community, column)
        assert row["name"] == names[community]

    # the highlighted communities are those with the lowest on-time rates (among those with a closed case)
    worst = result["worst"]
    assert len(worst) == min(result["worst_n"], len(rates)) > 0
    assert sorted(rates[key] for key in worst) == sorted(rates.values())[: len(worst)]
    # the cluster (same category, same spot, within days) makes repeats in its community
    cluster_community = units(url, "grid").sort_values("code")["parent_code"].iloc[CLUSTER_GRID]
    assert table[cluster_community]["repeat_cases"] >= CLUSTER - 1

    per_worker = Counter(c["assignee"] for c in chosen)
    assert {row["key"]: row["cases"] for row in result["by_worker"]} == dict(per_worker)

    html = "".join(mime_outputs(nb, "text/html"))
    for community in groups:
        assert table[community]["name"] in html
    assert mime_outputs(nb, "image/png"), "no bar chart"
    markdown = "".join(mime_outputs(nb, "text/markdown"))
    assert all(table[key]["name"] in markdown for key in worst)


def test_indicators_notebook(demo_store, tmp_path):
    url, now = demo_store
    check_indicators(url, now, tmp_path / "work")


@pytest.mark.postgis
def test_indicators_notebook_on_postgis(postgres_admin, demo_postgis_template, tmp_path):
    name = copy_demo_database(postgres_admin, demo_postgis_template)
    try:
        url = postgres_admin.database_url(name)
        now = seed(url, tmp_path / "data")
        check_indicators(url, now, tmp_path / "work")
    finally:
        postgres_admin.drop_database(name)

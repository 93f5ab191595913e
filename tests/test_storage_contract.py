"""The storage contract (storage/base.py), run against both backends through the ``store`` fixture.

Every assertion reads values back from the database; nothing is mocked.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from importlib import resources

import numpy as np
import pandas as pd
import psycopg2
import pytest
import shapely
from shapely import LineString, MultiPolygon, Point, Polygon, box

from gridmap.codes import LEVELS
from gridmap.errors import CodeError, CRSError, GeometryError, InputError
from gridmap.units import COLUMNS, make_units
from storage import (
    ChildrenExistError,
    DuplicateCodeError,
    ParentNotFoundError,
    Store,
    StoreConfigError,
    StoreError,
    open_store,
)

STREET, STREET2 = "110101001", "110101002"
COMMUNITY, COMMUNITY2 = "110101001001", "110101001002"
GRID = "110101001001001"
COURTYARD = "110101001001001001"
BUILDING_IN_COURTYARD = "110101001001001001001"
BUILDING_IN_GRID = "110101001001001000002"


def unit(code: str, level: str, parent: str | None, geometry=None, **extra) -> dict:
    return {"code": code, "level": level, "parent_code": parent, "geometry": box(0, 0, 1, 1) if geometry is None else geometry, **extra}


def units(*records: dict):
    return make_units(list(records))


def hierarchy() -> list[dict]:
    """One unit of every level, each inside its parent, with every optional column exercised."""
    return [
        unit(STREET, "street", "110101", box(116.0, 39.0, 117.0, 40.0), name="东华门街道",
             population=61234, attributes={"区": "东城区", "拼音": "donghuamen"}),
        unit(COMMUNITY, "community", STREET, box(116.0, 39.0, 116.5, 39.5), name="多福巷社区",
             population=None, attributes={"书记": "王芳", "电话": ["010-1234", None], "面积": 0.35}),
        unit(GRID, "grid", COMMUNITY, box(116.0, 39.0, 116.2, 39.2), name="第一网格", worker="张三",
             population=812, attributes={"nested": {"ok": True, "n": 3}}),
        unit(COURTYARD, "courtyard", GRID, box(116.0, 39.0, 116.1, 39.1), name="甲1号院"),
        unit(BUILDING_IN_COURTYARD, "building", COURTYARD, box(116.01, 39.01, 116.02, 39.02), name="1号楼"),
        unit(BUILDING_IN_GRID, "building", GRID, box(116.15, 39.15, 116.16, 39.16), name=""),
    ]


def records(frame) -> list[dict]:
    """Rows as plain dicts (population NA -> None), geometry as WKB for exact comparison."""
    out = []
    for row in frame.to_dict("records"):
        row["population"] = None if pd.isna(row["population"]) else int(row["population"])
        row["geometry"] = row["geometry"].wkb
        out.append(row)
    return out


def codes_of(frame) -> list[str]:
    return list(frame["code"])


# ------------------------------------------------------------------------------------------ round trip


def test_store_reports_backend_and_url(store: Store, backend: str, store_url: str):
    assert store.backend == backend
    assert store.url == store_url
    assert isinstance(store, Store)


def test_every_column_round_trips_exactly(store: Store):
    holed = Polygon(
        [(116.3, 39.3), (116.4, 39.3), (116.4, 39.4), (116.3, 39.4)],
        [[(116.32, 39.32), (116.34, 39.32), (116.34, 39.34), (116.32, 39.34)]],
    )
    multi = MultiPolygon([
        Polygon([(116.5, 39.5), (116.6, 39.5), (116.6, 39.6), (116.5, 39.6)],
                [[(116.52, 39.52), (116.53, 39.52), (116.53, 39.53)], [(116.55, 39.55), (116.57, 39.55), (116.56, 39.57)]]),
        Polygon([(116.123456789012345, 39.987654321098765), (116.7, 39.7), (116.65, 39.75)]),  # full doubles
    ])
    given = hierarchy() + [
        unit(COMMUNITY2, "community", STREET, holed, name="带洞\t社区\n第二行\\N \\x00", worker="李\r四",
             population=0, attributes={"说明": "内有湖泊 \"引号\" \\ 反斜杠 ' 单引号\t\r\n", "emoji": "🏯",
                                       "大数": 2**62, "小数": 1e-300, "空": {}}),
        unit(STREET2, "street", "110101", multi, name="多面街道", population=None),
    ]
    table = units(*given)
    assert store.put_units(table) == len(given)

    got = store.get_units()
    assert list(got.columns) == list(COLUMNS)
    assert got.crs.to_string() == "EPSG:4326"
    assert str(got["population"].dtype) == "Int64"
    assert list(got.index) == list(range(len(given)))
    assert codes_of(got) == sorted(r["code"] for r in given)
    expected = sorted(records(table), key=lambda r: r["code"])
    assert records(got) == expected
    # Geometry types and vertices exactly as given (WKB equality above), checked once more explicitly.
    by_code = got.set_index("code")
    assert by_code.loc[COMMUNITY2, "geometry"].geom_type == "Polygon"
    assert len(by_code.loc[COMMUNITY2, "geometry"].interiors) == 1
    assert by_code.loc[STREET2, "geometry"].geom_type == "MultiPolygon"
    assert shapely.equals_exact(by_code.loc[STREET2, "geometry"], multi, tolerance=0)
    assert by_code.loc[GRID, "worker"] == "张三"
    assert by_code.loc[COMMUNITY, "worker"] is None
    assert pd.isna(by_code.loc[COMMUNITY, "population"])
    assert by_code.loc[STREET, "population"] == 61234
    assert by_code.loc[STREET, "name"] == "东华门街道"
    assert by_code.loc[COMMUNITY, "attributes"] == {"书记": "王芳", "电话": ["010-1234", None], "面积": 0.35}
    assert by_code.loc[COMMUNITY2, "attributes"]["说明"] == "内有湖泊 \"引号\" \\ 反斜杠 ' 单引号\t\r\n"
    assert by_code.loc[COMMUNITY2, "name"] == "带洞\t社区\n第二行\\N \\x00"
    assert by_code.loc[BUILDING_IN_GRID, "attributes"] == {}


def test_empty_store_reads_an_empty_unit_table(store: Store):
    got = store.get_units()
    assert len(got) == 0
    assert list(got.columns) == list(COLUMNS)
    assert got.crs.to_string() == "EPSG:4326"
    assert store.count_units() == {level: 0 for level in LEVELS}
    assert store.put_units(units()) == 0


def test_upsert_replaces_every_column(store: Store):
    store.put_units(units(*hierarchy()))
    replacement = unit(GRID, "grid", COMMUNITY, box(116.3, 39.3, 116.4, 39.4), name="改名网格", worker=None,
                       population=None, attributes={"v": 2})
    assert store.put_units(units(replacement)) == 1
    got = store.get_units(codes=[GRID])
    assert records(got) == records(units(replacement))
    assert store.count_units()["grid"] == 1
    assert len(store.get_units()) == len(hierarchy())


def test_moved_geometry_moves_in_the_spatial_index(store: Store):
    store.put_units(units(unit(STREET, "street", "110101", box(0, 0, 1, 1))))
    store.put_units(units(unit(STREET, "street", "110101", box(10, 10, 11, 11))))
    assert codes_of(store.get_units(bbox=(0.2, 0.2, 0.8, 0.8))) == []
    assert codes_of(store.units_intersecting(Point(0.5, 0.5))) == []
    assert codes_of(store.get_units(bbox=(10.2, 10.2, 10.8, 10.8))) == [STREET]
    assert codes_of(store.units_intersecting(Point(10.5, 10.5))) == [STREET]


# ------------------------------------------------------------------------------------ put: validation


def test_bad_parent_writes_nothing(store: Store):
    store.put_units(units(unit(STREET, "street", "110101", name="旧名")))
    batch = units(
        unit(STREET, "street", "110101", name="新名"),  # an update that must not happen either
        unit(COMMUNITY, "community", STREET),
        unit("110101001009001", "grid", "110101001009"),  # parent nowhere
    )
    with pytest.raises(ParentNotFoundError) as caught:
        store.put_units(batch)
    message = str(caught.value)
    assert "110101001009" in message and "110101001009001" in message and "\n" not in message
    assert caught.value.missing == {"110101001009": ["110101001009001"]}
    assert store.count_units() == {"street": 1, "community": 0, "grid": 0, "courtyard": 0, "building": 0}
    assert store.get_units().loc[0, "name"] == "旧名"


def test_missing_parents_message_names_the_first_few(store: Store):
    batch = units(*[unit(f"1101010010{i:02d}", "community", f"1101010{i:02d}") for i in range(1, 13)])
    with pytest.raises(ParentNotFoundError) as caught:
        store.put_units(batch)
    message = str(caught.value)
    assert "110101001" in message and "110101001001" in message and "more" in message
    assert len(caught.value.missing) == 12
    assert store.count_units()["community"] == 0


def test_non_street_without_parent_code_is_refused(store: Store):
    with pytest.raises(ParentNotFoundError, match=COMMUNITY):
        store.put_units(units(unit(COMMUNITY, "community", None)))
    assert store.existing_codes([COMMUNITY]) == set()


def test_empty_geometry_writes_nothing(store: Store):
    batch = units(unit(STREET, "street", "110101"), unit(STREET2, "street", "110101", Polygon()))
    with pytest.raises(GeometryError, match=STREET2):
        store.put_units(batch)
    assert store.count_units()["street"] == 0


@pytest.mark.parametrize(
    "geometry",
    [lambda: None, lambda: Point(0, 0), lambda: LineString([(0, 0), (1, 1)]),
     lambda: shapely.GeometryCollection([box(0, 0, 1, 1)]), lambda: MultiPolygon(),
     lambda: shapely.from_wkt("POLYGON ((0 0, 1 0, NaN 1, 0 0))")],
    ids=["none", "point", "line", "collection", "empty-multi", "nan"],
)
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_non_polygonal_geometry_is_refused(store: Store, geometry):
    table = units(unit(STREET, "street", "110101"))
    table.loc[0, "geometry"] = geometry()
    with pytest.raises(GeometryError, match=STREET):
        store.put_units(table)
    assert store.count_units()["street"] == 0


def test_duplicate_codes_in_a_batch_write_nothing(store: Store):
    batch = units(unit(STREET, "street", "110101"), unit(STREET2, "street", "110101"),
                  unit(STREET, "street", "110101", name="again"))
    with pytest.raises(DuplicateCodeError, match=STREET) as caught:
        store.put_units(batch)
    assert caught.value.codes == [STREET]
    assert store.count_units()["street"] == 0


def test_the_unit_table_is_checked_first(store: Store):
    table = units(unit(STREET, "street", "110101"))
    with pytest.raises(CRSError):
        store.put_units(table.set_crs("EPSG:3857", allow_override=True))
    with pytest.raises(InputError, match="worker"):
        store.put_units(table.drop(columns=["worker"]))
    wrong_level = table.copy()
    wrong_level.loc[0, "level"] = "district"
    with pytest.raises(InputError, match="district"):
        store.put_units(wrong_level)
    numeric = table.copy()
    numeric["code"] = [110101001]
    with pytest.raises(CodeError):
        store.put_units(numeric)
    bad_attributes = table.copy()
    bad_attributes["attributes"] = [{"x": object()}]
    with pytest.raises(InputError, match=STREET):
        store.put_units(bad_attributes)
    assert store.count_units()["street"] == 0


def test_values_no_database_can_hold_are_refused_before_writing(store: Store):
    table = units(unit(STREET, "street", "110101"), unit(STREET2, "street", "110101", name="坏\x00名"))
    with pytest.raises(InputError, match=STREET2):
        store.put_units(table)
    table = units(unit(STREET, "street", "110101", attributes={"k": "a\x00"}))
    with pytest.raises(InputError, match="NUL"):
        store.put_units(table)
    table = units(unit(STREET, "street", "110101"))
    table["population"] = pd.Series([2**70], dtype=object)
    with pytest.raises(InputError, match="population"):
        store.put_units(table)
    table["population"] = pd.Series([1.5], dtype=object)
    with pytest.raises(InputError, match="population"):
        store.put_units(table)
    table = units(unit(STREET, "street", "110101", attributes={"x": float("nan")}))
    with pytest.raises(InputError, match="JSON"):
        store.put_units(table)
    assert store.count_units()["street"] == 0


def failing_trigger(backend: str, url: str, code: str) -> None:
    """Make the database itself refuse to write unit ``code``, half-way through a batch."""
    if backend == "sqlite":
        execute(backend, url, f"""CREATE TRIGGER "refuse" BEFORE INSERT ON "units" WHEN new."code" = '{code}'
                                  BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END""")
        return
    execute(backend, url, f"""CREATE FUNCTION "refuse"() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW."code" = '{code}' THEN RAISE EXCEPTION 'refused by test trigger'; END IF; RETURN NEW; END $$""")
    execute(backend, url, 'CREATE TRIGGER "refuse" BEFORE INSERT ON "units" FOR EACH ROW EXECUTE FUNCTION "refuse"()')


def test_a_write_failing_half_way_leaves_nothing_behind(fresh_store_url: str, backend: str):
    with open_store(fresh_store_url) as store:
        store.put_units(units(unit(STREET, "street", "110101", name="旧名")))
        failing_trigger(backend, fresh_store_url, "110101001009")
        batch = units(
            unit(STREET, "street", "110101", name="新名"),
            *[unit(f"110101001{i:03d}", "community", STREET) for i in range(1, 20)],
        )
        with pytest.raises(StoreError, match="refused by test trigger") as caught:
            store.put_units(batch)
        assert not isinstance(caught.value, (sqlite3.Error, psycopg2.Error))
        assert store.count_units() == {"street": 1, "community": 0, "grid": 0, "courtyard": 0, "building": 0}
        assert store.get_units().loc[0, "name"] == "旧名"
        # The store (and its pooled connection) is still usable afterwards.
        assert store.put_units(units(unit(COMMUNITY, "community", STREET))) == 1


def test_parents_in_the_same_batch_are_accepted_in_any_order(store: Store):
    given = hierarchy()
    assert store.put_units(units(*reversed(given))) == len(given)
    assert store.count_units() == {"street": 1, "community": 1, "grid": 1, "courtyard": 1, "building": 2}


def test_parents_already_stored_are_accepted(store: Store):
    given = hierarchy()
    for record in given:  # one unit per batch, top down
        assert store.put_units(units(record)) == 1
    assert sorted(store.existing_codes(r["code"] for r in given)) == sorted(r["code"] for r in given)


def test_street_parent_is_a_county_and_not_checked(store: Store):
    assert store.put_units(units(unit(STREET, "street", "999999"), unit(STREET2, "street", None))) == 2
    assert store.get_units(codes=[STREET]).loc[0, "parent_code"] == "999999"


# -------------------------------------------------------------------------------------------- filters


@pytest.fixture
def populated(store: Store) -> Store:
    """Two streets, two communities, three grids (one a thin triangle) for the filter tests."""
    store.put_units(units(
        unit(STREET, "street", "110101", box(0, 0, 10, 10)),
        unit(STREET2, "street", "110101", box(10, 0, 20, 10)),
        unit(COMMUNITY, "community", STREET, box(0, 0, 5, 10)),
        unit(COMMUNITY2, "community", STREET, box(5, 0, 10, 10)),
        unit(GRID, "grid", COMMUNITY, box(0, 0, 5, 5)),
        unit("110101001001002", "grid", COMMUNITY, box(0, 5, 5, 10)),
        # a triangle whose bounding box is (5, 0, 10, 5) but which covers only the lower-left half of it
        unit("110101001002001", "grid", COMMUNITY2, Polygon([(5, 0), (10, 0), (5, 5)])),
    ))
    return store


def test_filter_by_level(populated: Store):
    assert codes_of(populated.get_units("street")) == [STREET, STREET2]
    assert codes_of(populated.get_units(level="community")) == [COMMUNITY, COMMUNITY2]
    assert codes_of(populated.get_units("building")) == []
    with pytest.raises(CodeError, match="district"):
        populated.get_units("district")


def test_filter_by_codes(populated: Store):
    assert codes_of(populated.get_units(codes=[STREET2, GRID, "110101009"])) == [GRID, STREET2]  # by code
    assert codes_of(populated.get_units(codes=iter([COMMUNITY]))) == [COMMUNITY]
    assert codes_of(populated.get_units(codes=STREET)) == [STREET]  # one string is one code
    assert codes_of(populated.get_units(codes=[])) == []


def test_filter_by_parent_code(populated: Store):
    assert codes_of(populated.get_units(parent_code=COMMUNITY)) == [GRID, "110101001001002"]
    assert codes_of(populated.get_units(parent_code="110101")) == [STREET, STREET2]
    assert codes_of(populated.get_units(parent_code="110101001009")) == []


def test_filter_by_bbox_is_an_exact_intersects(populated: Store):
    # Inside the triangle's bounding box but off the triangle itself.
    assert codes_of(populated.get_units("grid", bbox=(8.0, 3.0, 9.0, 4.0))) == []
    assert codes_of(populated.get_units("grid", bbox=(5.5, 0.5, 6.0, 1.0))) == ["110101001002001"]
    # Touching counts as intersecting; far away finds nothing.
    assert codes_of(populated.get_units("street", bbox=(20.0, 10.0, 21.0, 11.0))) == [STREET2]
    assert codes_of(populated.get_units(bbox=(30, 30, 31, 31))) == []
    assert codes_of(populated.get_units("grid", bbox=(1, 1, 2, 2))) == [GRID]
    # Degenerate boxes: a point and a vertical segment.
    assert codes_of(populated.get_units("grid", bbox=(5.5, 0.5, 5.5, 0.5))) == ["110101001002001"]
    assert codes_of(populated.get_units("grid", bbox=(8, 3, 8, 9))) == []
    with pytest.raises(InputError):
        populated.get_units(bbox=(2, 2, 1, 1))
    with pytest.raises(InputError):
        populated.get_units(bbox=(0, 0, 1))


def test_filters_combine_with_and(populated: Store):
    assert codes_of(populated.get_units("grid", parent_code=COMMUNITY, bbox=(1, 6, 2, 7))) == ["110101001001002"]
    assert codes_of(populated.get_units("street", codes=[GRID, STREET])) == [STREET]
    assert codes_of(populated.get_units("grid", codes=[GRID], parent_code=COMMUNITY2)) == []
    assert codes_of(populated.get_units(codes=[STREET, STREET2], bbox=(15, 1, 16, 2))) == [STREET2]


def test_units_intersecting_is_exact(populated: Store):
    off_triangle = box(8.0, 3.0, 9.0, 4.0)  # overlaps the triangle's bbox only
    assert codes_of(populated.units_intersecting(off_triangle, level="grid")) == []
    assert codes_of(populated.units_intersecting(off_triangle)) == [STREET, COMMUNITY2]
    # A line crossing the triangle's bbox diagonally without touching the triangle.
    assert codes_of(populated.units_intersecting(LineString([(7.6, 5), (10, 2.6)]), level="grid")) == []
    assert codes_of(populated.units_intersecting(LineString([(7, 5), (10, 0)]), level="grid")) == ["110101001002001"]
    assert codes_of(populated.units_intersecting(Point(6, 1))) == [STREET, COMMUNITY2, "110101001002001"]
    assert codes_of(populated.units_intersecting(Point(2, 2), level="grid")) == [GRID]
    assert codes_of(populated.units_intersecting(Point(50, 50))) == []
    assert codes_of(populated.units_intersecting(Polygon())) == []
    hit = populated.units_intersecting(Point(15, 5))
    assert records(hit) == records(populated.get_units(codes=[STREET2]))
    with pytest.raises(CodeError):
        populated.units_intersecting(Point(1, 1), level="district")


# --------------------------------------------------------------------------------------- delete, count


def test_delete_refuses_to_orphan_children(store: Store):
    store.put_units(units(*hierarchy()))
    with pytest.raises(ChildrenExistError) as caught:
        store.delete_units([COMMUNITY, STREET])  # the grid stays, so the community may not go
    assert COMMUNITY in str(caught.value) and GRID in str(caught.value)
    assert caught.value.children == {COMMUNITY: [GRID]}
    assert len(store.get_units()) == len(hierarchy())  # nothing deleted, not even the street


def test_delete_of_a_whole_subtree_and_of_leaves(store: Store):
    store.put_units(units(*hierarchy()))
    assert store.delete_units([BUILDING_IN_GRID]) == 1
    assert store.delete_units([BUILDING_IN_GRID, "110101009"]) == 0
    assert store.delete_units([]) == 0
    assert store.delete_units([BUILDING_IN_COURTYARD, COURTYARD, GRID]) == 3
    assert store.count_units() == {"street": 1, "community": 1, "grid": 0, "courtyard": 0, "building": 0}
    assert store.delete_units(iter([COMMUNITY, STREET])) == 2
    assert len(store.get_units()) == 0
    assert codes_of(store.units_intersecting(box(115, 38, 118, 41))) == []


def test_count_units_lists_every_level_in_order(store: Store):
    assert list(store.count_units()) == list(LEVELS)
    store.put_units(units(*hierarchy(), unit(STREET2, "street", "110101")))
    assert store.count_units() == {"street": 2, "community": 1, "grid": 1, "courtyard": 1, "building": 2}


def test_existing_codes(store: Store):
    store.put_units(units(*hierarchy()))
    assert store.existing_codes([STREET, GRID, "110101009", "x"]) == {STREET, GRID}
    assert store.existing_codes([]) == set()
    assert store.existing_codes(STREET) == {STREET}


# ------------------------------------------------------------------------------------------ migrations


def migration_files(backend: str) -> list[str]:
    folder = resources.files("storage") / "sql" / backend
    return sorted(e.name for e in folder.iterdir() if e.name.endswith(".sql"))


def applied_versions(backend: str, url: str) -> list[tuple[int, str]]:
    if backend == "sqlite":
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return [(v, str(t)) for v, t in conn.execute('SELECT "version", "applied_at" FROM "schema_migrations" ORDER BY 1')]
        finally:
            conn.close()
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute('SELECT "version", "applied_at" FROM "schema_migrations" ORDER BY 1')
            return [(v, str(t)) for v, t in cur.fetchall()]
    finally:
        conn.close()


def execute(backend: str, url: str, statement: str) -> None:
    if backend == "sqlite":
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        with conn:
            conn.execute(statement)
        conn.close()
        return
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def test_schema_version_counts_migrations_and_reopening_applies_nothing(fresh_store_url: str, backend: str):
    files = migration_files(backend)
    assert files and files[0] == "0001_units.sql"
    with open_store(fresh_store_url) as store:
        assert store.schema_version() == len(files)
        store.put_units(units(unit(STREET, "street", "110101", name="留存")))
    first = applied_versions(backend, fresh_store_url)
    assert [v for v, _ in first] == list(range(1, len(files) + 1))
    with open_store(fresh_store_url) as store:
        assert store.schema_version() == len(files)
        assert store.get_units().loc[0, "name"] == "留存"
    assert applied_versions(backend, fresh_store_url) == first  # same rows, same applied_at


def test_concurrent_openers_apply_each_migration_once(fresh_store_url: str, backend: str):
    opened: list[int] = []
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def open_one() -> None:
        try:
            start.wait()
            with open_store(fresh_store_url) as store:
                opened.append(store.schema_version())
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert opened == [len(migration_files(backend))] * 4
    assert [v for v, _ in applied_versions(backend, fresh_store_url)] == list(range(1, len(migration_files(backend)) + 1))


def test_a_newer_schema_is_refused(fresh_store_url: str, backend: str):
    open_store(fresh_store_url).close()
    execute(backend, fresh_store_url, """INSERT INTO "schema_migrations" ("version", "applied_at") VALUES (9999, '2030-01-01')""")
    with pytest.raises(StoreConfigError, match="9999"):
        open_store(fresh_store_url)


def test_driver_errors_are_wrapped(fresh_store_url: str, backend: str):
    with open_store(fresh_store_url) as store:
        execute(backend, fresh_store_url, 'DROP TABLE "units"')
        with pytest.raises(StoreError) as caught:
            store.count_units()
        assert not isinstance(caught.value, (sqlite3.Error, psycopg2.Error))
        assert "units" in str(caught.value) and "\n" not in str(caught.value)
        with pytest.raises(StoreError):
            store.put_units(units(unit(STREET, "street", "110101")))


# ---------------------------------------------------------------------------------------- open_store


@pytest.mark.parametrize("url", ["mysql://u@h/db", "gridmap.db", "", "sqlite://gridmap.db", "sqlite:///",
                                 "sqlite:///:memory:", "http://example.com/db"])
def test_unsupported_urls_are_refused_with_the_accepted_forms(url: str):
    with pytest.raises(StoreConfigError) as caught:
        open_store(url)
    message = str(caught.value)
    assert "\n" not in message
    assert "sqlite:///" in message and "postgresql://" in message


def test_password_is_masked_in_a_refused_url():
    with pytest.raises(StoreConfigError) as caught:
        open_store("mysql://user:s3cret@host/db")
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)


def test_sqlite_directory_must_exist(tmp_path):
    with pytest.raises(StoreConfigError, match="does not exist"):
        open_store(f"sqlite:///{tmp_path}/missing/gridmap.db")
    with pytest.raises(StoreConfigError, match="directory"):
        open_store(f"sqlite:///{tmp_path}")
    assert not (tmp_path / "missing").exists()


def test_sqlite_file_that_is_not_a_database(tmp_path):
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreConfigError, match="junk.db"):
        open_store(f"sqlite:///{tmp_path}/junk.db")


def test_sqlite_relative_absolute_and_default_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    with open_store("sqlite:///sub/rel.db") as store:  # three slashes: relative to the working directory
        assert store.backend == "sqlite"
        store.put_units(units(unit(STREET, "street", "110101")))
    assert (tmp_path / "sub" / "rel.db").is_file()
    with open_store(f"sqlite:///{tmp_path}/sub/rel.db") as store:  # four slashes: absolute, same file
        assert store.existing_codes([STREET]) == {STREET}

    monkeypatch.delenv("GRIDMAP_DATABASE_URL", raising=False)
    with open_store() as store:
        assert store.url == "sqlite:///./gridmap.db"
    assert (tmp_path / "gridmap.db").is_file()

    monkeypatch.setenv("GRIDMAP_DATABASE_URL", "sqlite:///sub/from-env.db")
    with open_store() as store:
        assert store.url == "sqlite:///sub/from-env.db"
    assert (tmp_path / "sub" / "from-env.db").is_file()


def test_sqlite_uses_wal_and_keeps_the_rtree_in_sync(tmp_path):
    path = tmp_path / "wal.db"
    with open_store(f"sqlite:///{path}") as store:
        store.put_units(units(unit(STREET, "street", "110101", box(1, 2, 3, 4)), unit(STREET2, "street", "110101")))
        store.delete_units([STREET2])
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rtree = conn.execute('SELECT "id", "minx", "maxx", "miny", "maxy" FROM "units_rtree"').fetchall()
        ids = conn.execute('SELECT "id" FROM "units"').fetchall()
    finally:
        conn.close()
    assert [r[0] for r in rtree] == [i[0] for i in ids]
    assert rtree[0][1:] == (1.0, 3.0, 2.0, 4.0)


def test_unreachable_postgres_is_a_config_error():
    started = time.monotonic()
    with pytest.raises(StoreConfigError) as caught:
        open_store("postgresql://gridmap:s3cret@127.0.0.1:1/gridmap")
    message = str(caught.value)
    assert not isinstance(caught.value, psycopg2.Error)
    assert "127.0.0.1" in message and "gridmap" in message and "\n" not in message
    assert "s3cret" not in message and "***" in message
    assert time.monotonic() - started < 15


def test_bad_pool_size_is_a_config_error(monkeypatch):
    monkeypatch.setenv("GRIDMAP_DB_POOL_SIZE", "lots")
    with pytest.raises(StoreConfigError, match="GRIDMAP_DB_POOL_SIZE"):
        open_store("postgresql://gridmap@127.0.0.1:1/gridmap")


@pytest.mark.postgis
def test_postgres_scheme_alias(postgis_url: str):
    alias = "postgres://" + postgis_url.split("://", 1)[1]
    with open_store(alias) as store:
        assert store.backend == "postgis"
        assert store.url == alias
        assert list(store.count_units()) == list(LEVELS)


@pytest.mark.postgis
def test_postgis_stores_srid_4326_with_a_gist_index(postgis_url: str):
    with open_store(postgis_url) as store:
        store.put_units(units(unit(STREET, "street", "110101")))
    conn = psycopg2.connect(postgis_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute('SELECT ST_SRID("geom"), GeometryType("geom") FROM "units"')
            assert cur.fetchall() == [(4326, "POLYGON")]
            cur.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'units'")
            assert any("gist" in d for (d,) in cur.fetchall())
    finally:
        conn.close()


@pytest.mark.postgis
def test_database_without_postgis_that_cannot_get_it(postgres_admin):
    """A non-superuser cannot CREATE EXTENSION postgis: opening must say so."""
    from psycopg2 import sql

    name, role = postgres_admin.new_name(), f"{postgres_admin.prefix}_plain"
    url = postgres_admin.create_database(name, postgis=False)
    conn = postgres_admin.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER").format(sql.Identifier(role)))
        with pytest.raises(StoreConfigError, match="(?i)postgis") as caught:
            open_store(postgres_admin.database_url(name, user=role))
        assert "CREATE EXTENSION" in str(caught.value)
    finally:
        postgres_admin.drop_database(name)
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        conn.close()
    assert url


# ----------------------------------------------------------------------------------------- life cycle


def test_closed_store_refuses_work(store_url: str):
    with open_store(store_url) as store:
        pass
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.count_units()


def test_threads_share_one_store(store_url: str, monkeypatch):
    monkeypatch.setenv("GRIDMAP_DB_POOL_SIZE", "2")  # PostGIS: 6 threads must wait for 2 connections, not fail
    store = open_store(store_url)
    store.put_units(units(*hierarchy()))
    results: list[int] = []
    failures: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(5):
                results.append(len(store.get_units()))
                store.put_units(units(unit(f"11010100{i + 2}", "street", "110101")))
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len(results) == 30 and min(results) >= len(hierarchy())
    assert store.count_units()["street"] == 7
    store.close()


# -------------------------------------------------------------------------------------------- volume


def forty_thousand_units():
    """10 streets x 20 communities x 200 grids = 40,210 units, grids as 33-vertex polygons."""
    ring = np.linspace(0, 2 * np.pi, 33)[:-1]
    circle = np.column_stack([np.cos(ring), np.sin(ring)]) * 0.0004
    g = np.arange(1, 201)
    grid_offsets = np.column_stack([(g % 100) * 0.001 + 0.0005, (g // 100) * 0.0025 + 0.001])
    records = []
    for s in range(1, 11):
        street = f"110101{s:03d}"
        x0 = 116.0 + s * 0.1
        records.append(unit(street, "street", "110101", box(x0, 39.0, x0 + 0.1, 39.1), name=f"街道{s}"))
        for c in range(1, 21):
            community = f"{street}{c:03d}"
            y0 = 39.0 + c * 0.005
            records.append(unit(community, "community", street, box(x0, y0, x0 + 0.1, y0 + 0.005)))
            grids = shapely.polygons(circle[None, :, :] + (grid_offsets + (x0, y0))[:, None, :])
            records += [
                {"code": f"{community}{n:03d}", "level": "grid", "parent_code": community, "geometry": geometry,
                 "population": n, "worker": f"网格员{n}", "attributes": {"g": n}}
                for n, geometry in zip(g.tolist(), grids)
            ]
    return make_units(records)


def test_forty_thousand_units_in_one_put(store: Store):
    table = forty_thousand_units()
    assert len(table) == 40_210
    started = time.perf_counter()
    assert store.put_units(table) == 40_210
    elapsed = time.perf_counter() - started
    print(f"\n{store.backend}: put_units of {len(table)} units took {elapsed:.2f} s")
    assert store.count_units() == {"street": 10, "community": 200, "grid": 40_000, "courtyard": 0, "building": 0}
    sample = ["110101001001001", "110101005010150", "110101010020200"]
    got = store.get_units(codes=sample)
    assert records(got) == records(table.set_index("code").loc[sample].reset_index())
    started = time.perf_counter()
    everything = store.get_units()
    print(f"{store.backend}: get_units of {len(everything)} units took {time.perf_counter() - started:.2f} s")
    assert codes_of(everything) == sorted(table["code"])
    assert len(store.get_units("grid", parent_code="110101003007")) == 200
    # Upserting the whole batch again replaces, not duplicates.
    assert store.put_units(table) == 40_210
    assert sum(store.count_units().values()) == 40_210

"""The 343 real Beijing street units: import with codes and parents, and their real faults.

The findings asserted here were checked by hand: the overlaps were drawn and their areas recomputed
geodesically (pyproj.Geod on the WGS84 intersection, independent of the projection the validator uses).
文景街道 and 张家湾镇 (both 通州区) overlap in a wedge about 2 km long along their shared edge, 26,114 m²
in 9 pieces; 天宫院街道 and 黄村镇 (大兴区) overlap in 50 slivers totalling 5,416 m².
"""

import pyproj
import pytest

from gridmap.io import read_units
from gridmap.validate import validate_units

GEOD = pyproj.Geod(ellps="WGS84")


@pytest.fixture(scope="module")
def beijing(shared_data):
    return read_units(shared_data / "boundaries" / "beijing-subdistricts", "street").units


@pytest.fixture(scope="module")
def findings(beijing):
    return validate_units(beijing)


def test_all_343_units_import_with_codes_and_parents(beijing):
    assert len(beijing) == 343
    assert beijing["code"].is_unique and beijing["code"].str.len().eq(9).all()
    assert (beijing["code"].str[:6] == beijing["parent_code"]).all()
    assert beijing["parent_code"].nunique() == 16  # the 16 districts
    row = beijing.set_index("code").loc["110101001"]
    assert (row["name"], row["parent_code"], row["attributes"]["pinyin"]) == ("东华门街道", "110101", "donghuamenjiedao")


def overlap(findings, a, b):
    rows = findings[(findings.kind == "overlap") & (
        ((findings.name == a) & (findings.other_name == b)) | ((findings.name == b) & (findings.other_name == a)))]
    assert len(rows) == 1, f"expected one overlap between {a} and {b}"
    return rows.iloc[0]


def test_largest_overlap_is_wenjing_and_zhangjiawan(findings):
    largest = findings[findings.kind == "overlap"].sort_values("area_m2").iloc[-1]
    assert {largest["name"], largest["other_name"]} == {"文景街道", "张家湾镇"}
    assert largest.area_m2 == pytest.approx(26_114, rel=0.01)
    # geodesic edges versus edges straight in lon/lat (RFC 7946, what the validator measures) differ by a
    # few centimetres over this 2 km wedge only 10 m wide: 0.2 % of its area
    assert largest.area_m2 == pytest.approx(abs(GEOD.geometry_area_perimeter(largest.geometry)[0]), rel=0.005)
    assert largest.message.startswith("overlap:")  # about 10 m wide on average: disputed land, not a sliver


def test_tiangongyuan_huangcun_overlap_is_a_sliver(findings):
    row = overlap(findings, "天宫院街道", "黄村镇")
    assert row.area_m2 == pytest.approx(5_416, rel=0.01)
    assert row.width_m < 1.0 and row.message.startswith("sliver overlap:")


def test_overlaps_across_districts_are_found_too(findings):
    row = overlap(findings, "青龙湖镇", "王佐镇")  # 房山区 and 丰台区
    assert row.area_m2 == pytest.approx(871, rel=0.02)
    assert "different parents" in row.message


def test_gaps_between_streets_are_found(findings):
    gaps = findings[findings.kind == "gap"]
    # 313 holes enclosed by the union of all streets, of which these are at least 1 m²
    assert 250 <= len(gaps) <= 313
    assert gaps.area_m2.max() == pytest.approx(4_169, rel=0.01)
    assert (gaps.width_m < 5).mean() > 0.8  # nearly all are slivers along misdrawn shared edges


def test_no_code_or_geometry_errors(findings):
    assert set(findings.severity) == {"warning"}
    assert set(findings.kind) == {"overlap", "gap"}

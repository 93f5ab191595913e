"""Category taxonomy: the shipped CJ/T 214 file, look-up, a city's extension, and every malformed file."""

from __future__ import annotations

import json

import pytest

from inspection.errors import TaxonomyError
from inspection.taxonomy import ILLEGAL_CONSTRUCTION, Category, Taxonomy, load_taxonomy


@pytest.fixture(scope="module")
def shipped():
    return load_taxonomy()


def write(tmp_path, document, name="taxonomy.json"):
    path = tmp_path / name
    text = document if isinstance(document, str) else json.dumps(document, ensure_ascii=False)
    path.write_text(text, encoding="utf-8")
    return path


def minimal(**subclass_overrides):
    subclass = {"code": "0304", "name": "违法建设", "deadline_hours": 72}
    subclass.update(subclass_overrides)
    return {"event": [{"major": "03", "name": "施工管理", "subclasses": [subclass]}]}


def test_shipped_named_categories(shipped):
    assert ILLEGAL_CONSTRUCTION == "event:0304"
    illegal = shipped.get("event:0304")
    assert (illegal.kind, illegal.major, illegal.major_name, illegal.code, illegal.name) == (
        "event",
        "03",
        "施工管理",
        "0304",
        "违法建设",
    )
    assert (illegal.deadline_hours, illegal.verify_hours) == (72.0, 24.0)
    assert shipped.get("event:0101").name == "私搭乱建"
    assert shipped.get("event:0102").deadline_hours == 4.0  # 暴露垃圾
    assert (shipped.get("event:0502").name, shipped.get("event:0502").deadline_hours) == ("占道经营", 2.0)
    assert shipped.get("event:0601").name.startswith("垃圾分类")
    assert shipped.get("event:0601").major_name == "扩展事件"


def test_shipped_size_and_shape(shipped):
    assert len(shipped) >= 50
    assert len(shipped.majors("event")) >= 6 and len(shipped.majors("component")) >= 6
    assert [m.name for m in shipped.majors("component")] == ["公用设施", "道路交通", "市容环境", "园林绿化", "房屋土地", "其他设施"]
    assert [m.name for m in shipped.majors("event")][:6] == ["市容环境", "宣传广告", "施工管理", "突发事件", "街面秩序", "扩展事件"]
    for category in shipped:
        assert category.id == f"{category.kind}:{category.code}"
        assert len(category.code) == 4 and category.code[:2] == category.major
        assert category.deadline_hours > 0 and category.verify_hours > 0
    kinds = [c.kind for c in shipped]
    assert kinds == sorted(kinds)  # components first, then events
    assert all(c.kind == "component" for c in shipped.categories("component"))
    assert len(shipped.categories("component")) + len(shipped.categories("event")) == len(shipped)


def test_contains(shipped):
    assert "event:0304" in shipped
    assert "component:0101" in shipped
    assert "event:9999" not in shipped
    assert "0304" not in shipped


@pytest.mark.parametrize(
    ("query", "suggested"),
    [("event:0305x", "event:0305"), ("0304", "event:0304 (违法建设)"), ("违法建设", "event:0304"), ("evnt:0502", "event:0502")],
)
def test_unknown_category_suggests_near_matches(shipped, query, suggested):
    with pytest.raises(TaxonomyError, match=f"unknown category '{query}'") as caught:
        shipped.get(query)
    assert suggested in str(caught.value)


def test_unknown_category_without_near_matches(shipped):
    with pytest.raises(TaxonomyError, match=r"unknown category 'xyz'; ids look like 'event:0304'"):
        shipped.get("xyz")


def test_a_complete_file_of_ones_own(tmp_path):
    taxonomy = load_taxonomy(write(tmp_path, minimal(verify_hours=6)))
    assert [c.id for c in taxonomy] == ["event:0304"]
    assert taxonomy.get("event:0304").verify_hours == 6.0
    assert "event:0502" not in taxonomy


def test_extension_adds_and_overrides(tmp_path, shipped):
    extension = write(
        tmp_path,
        {
            "description": "某市扩展",
            "event": [
                {
                    "major": "03",
                    "name": "施工管理",
                    "subclasses": [{"code": "0304", "name": "违法建设", "deadline_hours": 48, "verify_hours": 12}],
                },
                {
                    "major": "05",
                    "name": "街面秩序",
                    "subclasses": [{"code": "0502", "name": "占道经营", "deadline_hours": 1}],
                },
                {
                    "major": "06",
                    "name": "扩展事件",
                    "subclasses": [{"code": "0651", "name": "共享单车乱停放", "deadline_hours": 6}],
                },
                {
                    "major": "07",
                    "name": "城市管理扩展",
                    "subclasses": [{"code": "0701", "name": "违规户外广告", "deadline_hours": 36.5, "verify_hours": 8}],
                },
            ],
        },
        "city.json",
    )
    city = load_taxonomy(extend=extension)
    assert len(city) == len(shipped) + 2
    assert (city.get("event:0304").deadline_hours, city.get("event:0304").verify_hours) == (48.0, 12.0)
    # No verify_hours in the extension: the shipped value (2) stays.
    assert (city.get("event:0502").deadline_hours, city.get("event:0502").verify_hours) == (1.0, 2.0)
    bikes = city.get("event:0651")
    assert (bikes.major_name, bikes.deadline_hours, bikes.verify_hours) == ("扩展事件", 6.0, 24.0)
    assert city.get("event:0701") == Category("event:0701", "event", "07", "城市管理扩展", "0701", "违规户外广告", 36.5, 8.0)
    assert [m.code for m in city.majors("event")] == ["01", "02", "03", "04", "05", "06", "07"]
    # Untouched categories and the shipped taxonomy itself are unchanged.
    assert city.get("event:0102") == shipped.get("event:0102")
    assert load_taxonomy().get("event:0304").deadline_hours == 72.0


def test_extension_of_a_custom_base(tmp_path):
    base = write(tmp_path, minimal(), "base.json")
    extension = write(tmp_path, {"component": [{"major": "01", "name": "公用设施", "subclasses": [
        {"code": "0101", "name": "上水井盖", "deadline_hours": 2}]}]}, "city.json")
    taxonomy = load_taxonomy(base, extend=extension)
    assert [c.id for c in taxonomy] == ["component:0101", "event:0304"]


def test_extension_may_not_rename_a_subclass(tmp_path):
    extension = write(tmp_path, minimal(name="违章建筑"), "city.json")
    with pytest.raises(TaxonomyError) as caught:
        load_taxonomy(extend=extension)
    message = str(caught.value)
    assert str(extension) in message and "event 0304 is 违法建设 in the base taxonomy, not 违章建筑" in message


def test_extension_may_not_rename_a_major(tmp_path):
    document = {"event": [{"major": "03", "name": "建设管理", "subclasses": [
        {"code": "0399", "name": "新类", "deadline_hours": 5}]}]}
    extension = write(tmp_path, document, "city.json")
    with pytest.raises(TaxonomyError, match=r"city.json: event major 03 is 施工管理 in the base taxonomy, not 建设管理"):
        load_taxonomy(extend=extension)


def major(code="03", name="施工管理", subclasses=None):
    if subclasses is None:
        subclasses = [{"code": "0304", "name": "违法建设", "deadline_hours": 72}]
    return {"major": code, "name": name, "subclasses": subclasses}


MALFORMED = {
    "not json": ('{"event": [', "not valid JSON"),
    "nan hours": ('{"event": [{"major": "03", "name": "施工管理", "subclasses": [{"code": "0304", "name": "违法建设", '
                  '"deadline_hours": NaN}]}]}', "NaN is not a number JSON allows"),
    "repeated key": ('{"event": [{"major": "03", "name": "施工管理", "subclasses": [{"code": "0304", "name": "违法建设", '
                     '"deadline_hours": 72, "deadline_hours": 24}]}]}', "deadline_hours given twice"),
    "top-level list": ([major()], "expected a JSON object"),
    "unknown top-level key": ({"events": [major()]}, "top level: unknown field(s) events"),
    "no kinds": ({"description": "空"}, "no 'component' or 'event' list"),
    "kind not a list": ({"event": major()}, "'event' must be a list of major classes"),
    "major not an object": ({"event": ["03"]}, "event major #1 must be an object"),
    "major missing name": ({"event": [{"major": "03", "subclasses": []}]}, "event major #1: missing field(s) name"),
    "major missing subclasses": ({"event": [{"major": "03", "name": "施工管理"}]}, "missing field(s) subclasses"),
    "major code one digit": ({"event": [major(code="3")]}, "event major #1: code '3' must be a string of 2 digits"),
    "major code a number": ({"event": [major(code=3)]}, "code 3 must be a string of 2 digits"),
    "major twice": ({"event": [major(), major(subclasses=[
        {"code": "0305", "name": "施工废弃料", "deadline_hours": 24}])]}, "event major 03 appears twice"),
    "no subclasses": (
        {"event": [major(subclasses=[])]},
        "event major 03 (施工管理): 'subclasses' must be a non-empty list",
    ),
    "empty major name": ({"event": [major(name=" ")]}, "event major 03: 'name' must be a non-empty string"),
    "subclass not an object": ({"event": [major(subclasses=["0304"])]}, "event major 03 subclass #1 must be an object"),
    "subclass missing deadline": ({"event": [major(subclasses=[{"code": "0304", "name": "违法建设"}])]},
                                  "event major 03 subclass #1: missing field(s) deadline_hours"),
    "subclass misspelt field": (minimal(deadline_hour=72), "unknown field(s) deadline_hour"),
    "subclass code short": (minimal(code="304"), "code '304' must be a string of 4 digits"),
    "subclass code outside its major": (
        minimal(code="0404"),
        "event 0404: a subclass code must start with its major's code 03",
    ),
    "subclass twice": ({"event": [major(subclasses=[{"code": "0304", "name": "违法建设", "deadline_hours": 72},
                                                    {"code": "0304", "name": "违法建设", "deadline_hours": 48}])]},
                       "event 0304 appears twice"),
    "empty subclass name": (minimal(name=""), "event 0304: 'name' must be a non-empty string"),
    "zero deadline": (
        minimal(deadline_hours=0),
        "event 0304 (违法建设): deadline_hours must be a positive number of hours, not 0",
    ),
    "negative deadline": (minimal(deadline_hours=-2), "deadline_hours must be a positive number of hours, not -2"),
    "deadline as text": (minimal(deadline_hours="72"), "deadline_hours must be a positive number of hours, not '72'"),
    "deadline as boolean": (minimal(deadline_hours=True), "not True"),
    "zero verify": (
        minimal(verify_hours=0),
        "event 0304 (违法建设): verify_hours must be a positive number of hours, not 0",
    ),
    "null verify": (minimal(verify_hours=None), "verify_hours must be a positive number of hours, not None"),
}


@pytest.mark.parametrize("as_extension", [False, True], ids=["base", "extension"])
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_files_are_refused_naming_file_and_entry(tmp_path, case, as_extension):
    document, expected = MALFORMED[case]
    path = write(tmp_path, document, "bad.json")
    with pytest.raises(TaxonomyError) as caught:
        load_taxonomy(extend=path) if as_extension else load_taxonomy(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "gbk.json"
    path.write_bytes(json.dumps(minimal(), ensure_ascii=False).encode("gbk"))
    with pytest.raises(TaxonomyError, match=f"{path}: not UTF-8 text"):
        load_taxonomy(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.json"
    with pytest.raises(TaxonomyError, match=f"{path}: cannot read the taxonomy file"):
        load_taxonomy(extend=path)


def test_taxonomy_refuses_a_category_twice():
    category = Category("event:0304", "event", "03", "施工管理", "0304", "违法建设", 72.0, 24.0)
    with pytest.raises(TaxonomyError, match="event:0304 appears twice"):
        Taxonomy([category, category])

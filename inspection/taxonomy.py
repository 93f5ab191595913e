"""Case categories: the 部件/事件 taxonomy of CJ/T 214-2007, as data a city can extend without code changes.

CJ/T 214-2007 (城市市政综合监管信息系统 管理部件和事件分类、编码及数据要求) sorts what a case is about into two
kinds, 部件 (components: manhole covers, street lights, kiosks, ...) and 事件 (events: illegal building,
exposed rubbish, street vending, ...), each in major classes (大类, 2 digits) and subclasses (小类, 4 digits:
the major's 2 digits + 2). A category's stable id is ``"<kind>:<subclass code>"``, e.g. ``"event:0304"``
(违法建设, what the drone pipeline files) or ``"component:0101"`` (上水井盖).

File format (``inspection/data/taxonomy.json``, and a city's extension file, same schema)::

    {
      "description": "free text (optional)",
      "component": [ <major>, ... ],            (optional)
      "event":     [ <major>, ... ]             (optional)
    }
    <major>    = {"major": "03", "name": "施工管理", "subclasses": [ <subclass>, ... ]}   (at least one)
    <subclass> = {"code": "0304", "name": "违法建设", "deadline_hours": 72, "verify_hours": 24}

``deadline_hours`` is the 处置时限 (from dispatch to handling), ``verify_hours`` the 核查时限 (default 24);
both calendar hours, positive. Validation is strict, because a typo in a city's file would otherwise
silently change deadlines: unknown or repeated keys, missing fields, a code that does not extend its major,
a code repeated within a file, and non-positive or non-finite hours are all :class:`TaxonomyError`\\ s naming
the file and the entry.

An extension file is merged on top of the shipped one: new majors and subclasses are added; a subclass
already there keeps its code and name and takes the file's ``deadline_hours`` (and ``verify_hours`` when
given). Restating an existing major or subclass under a different name is refused: that is a code reused
for something else, and old cases filed under it would change meaning.

Pure: reads the taxonomy files, nothing else.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from importlib import resources

from inspection.errors import TaxonomyError

KINDS = ("component", "event")
KIND_LABELS = {"component": "部件", "event": "事件"}
ILLEGAL_CONSTRUCTION = "event:0304"
DEFAULT_VERIFY_HOURS = 24.0
_PACKAGED = "data/taxonomy.json"
_TOP_KEYS = {"description", *KINDS}
_MAJOR_KEYS = {"major", "name", "subclasses"}
_SUBCLASS_REQUIRED = {"code", "name", "deadline_hours"}
_SUBCLASS_KEYS = _SUBCLASS_REQUIRED | {"verify_hours"}
_MAJOR_CODE = re.compile(r"^[0-9]{2}$")
_SUBCLASS_CODE = re.compile(r"^[0-9]{4}$")
_MAX_SUGGESTIONS = 5


@dataclass(frozen=True)
class Category:
    """One subclass (小类): what a case is about and how long handling and verification may take.

    Attributes
    ----------
    id : str
        ``"<kind>:<code>"``, e.g. ``"event:0304"``; what cases store.
    kind : str
        ``"component"`` (部件) or ``"event"`` (事件).
    major, major_name : str
        The major class (大类) code, e.g. ``"03"``, and its name, e.g. ``"施工管理"``.
    code, name : str
        The subclass code, e.g. ``"0304"``, and name, e.g. ``"违法建设"``.
    deadline_hours : float
        处置时限: calendar hours from dispatch to handling.
    verify_hours : float
        核查时限: calendar hours from handling to on-site verification.
    """

    id: str
    kind: str
    major: str
    major_name: str
    code: str
    name: str
    deadline_hours: float
    verify_hours: float


@dataclass(frozen=True)
class Major:
    """One major class (大类), e.g. ``Major("event:03", "event", "03", "施工管理")``."""

    id: str
    kind: str
    code: str
    name: str


class Taxonomy:
    """The categories in force: look-up by id, iteration in (kind, code) order.

    Examples
    --------
    >>> taxonomy = load_taxonomy()
    >>> category = taxonomy.get(ILLEGAL_CONSTRUCTION)
    >>> category.name, category.major_name, category.deadline_hours
    ('违法建设', '施工管理', 72.0)
    >>> "event:0502" in taxonomy, "event:9999" in taxonomy
    (True, False)
    >>> taxonomy.get("违法建设")
    Traceback (most recent call last):
    ...
    inspection.errors.TaxonomyError: unknown category '违法建设'; did you mean event:0304 (违法建设)?
    """

    def __init__(self, categories: Iterable[Category]):
        by_id: dict[str, Category] = {}
        major_names: dict[tuple[str, str], str] = {}
        for category in categories:
            if category.kind not in KINDS:
                raise TaxonomyError(f"category {category.id}: kind {category.kind!r} is not one of {', '.join(KINDS)}")
            if category.id in by_id:
                raise TaxonomyError(f"category {category.id} appears twice")
            key = (category.kind, category.major)
            if major_names.setdefault(key, category.major_name) != category.major_name:
                raise TaxonomyError(
                    f"{category.kind} major {category.major} is named both {major_names[key]} and {category.major_name}"
                )
            by_id[category.id] = category
        # Components before events, then by code: the order of the standard's tables.
        self._by_id = {c.id: c for c in sorted(by_id.values(), key=lambda c: (KINDS.index(c.kind), c.code))}
        self._majors = sorted(
            (Major(f"{kind}:{code}", kind, code, name) for (kind, code), name in major_names.items()),
            key=lambda m: (KINDS.index(m.kind), m.code),
        )

    def get(self, category_id: str) -> Category:
        """The category with this id; an unknown id is a :class:`TaxonomyError` naming the nearest ids."""
        try:
            return self._by_id[category_id]
        except (KeyError, TypeError):
            raise TaxonomyError(self._unknown_message(category_id)) from None

    def categories(self, kind: str | None = None) -> list[Category]:
        """All subclasses, or those of one kind, in (kind, code) order."""
        return [c for c in self._by_id.values() if kind is None or c.kind == kind]

    def majors(self, kind: str | None = None) -> list[Major]:
        """All major classes, or those of one kind, in (kind, code) order."""
        return [m for m in self._majors if kind is None or m.kind == kind]

    def __contains__(self, category_id: object) -> bool:
        return category_id in self._by_id

    def __iter__(self) -> Iterator[Category]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def _unknown_message(self, category_id: object) -> str:
        text = str(category_id)
        code = text.rpartition(":")[2]
        suggestions = [c.id for c in self if c.code == code or (text and (text in c.name or c.name in text))]
        suggestions += difflib.get_close_matches(text, list(self._by_id), n=_MAX_SUGGESTIONS)
        unique = list(dict.fromkeys(suggestions))[:_MAX_SUGGESTIONS]
        if not unique:
            return f"unknown category {category_id!r}; ids look like 'event:0304' (kind: {', '.join(KINDS)})"
        named = ", ".join(f"{i} ({self._by_id[i].name})" for i in unique)
        return f"unknown category {category_id!r}; did you mean {named}?"


def load_taxonomy(path: str | os.PathLike | None = None, *, extend: str | os.PathLike | None = None) -> Taxonomy:
    """The taxonomy in ``path`` (default: the shipped CJ/T 214 file), with a city's ``extend`` file merged on top.

    Parameters
    ----------
    path : path-like, optional
        A complete taxonomy file; ``None`` loads ``inspection/data/taxonomy.json`` from the package.
    extend : path-like, optional
        A city's file in the same schema: adds majors and subclasses, overrides hours of existing ones
        (see the module docstring). The service passes ``$GRIDMAP_TAXONOMY`` here.

    Raises
    ------
    TaxonomyError
        Unreadable or malformed file, naming the file and the entry.
    """
    if path is None:
        resource = resources.files("inspection").joinpath(_PACKAGED)
        base = _parse(resource.read_bytes(), str(resource))
    else:
        base = _parse(_read(path), os.fspath(path))
    if extend is not None:
        base = _merge(base, _parse(_read(extend), os.fspath(extend)), os.fspath(extend))
    return Taxonomy(_with_default_verify(category) for category in base.values())


def _read(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise TaxonomyError(f"{os.fspath(path)}: cannot read the taxonomy file ({error.strerror})") from None


def _parse(data: bytes, source: str) -> dict[str, Category]:
    """Validate one file and return its categories by id; hours not given are None until merged."""
    try:
        document = json.loads(data.decode("utf-8"), object_pairs_hook=_no_repeated_keys, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise TaxonomyError(f"{source}: not UTF-8 text") from None
    except (json.JSONDecodeError, ValueError) as error:
        raise TaxonomyError(f"{source}: not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise TaxonomyError(f"{source}: expected a JSON object with 'component' and/or 'event' lists")
    _check_keys(document, _TOP_KEYS, set(), source, "top level")
    if not any(kind in document for kind in KINDS):
        raise TaxonomyError(f"{source}: no 'component' or 'event' list")
    categories: dict[str, Category] = {}
    for kind in KINDS:
        majors = document.get(kind, [])
        if not isinstance(majors, list):
            raise TaxonomyError(f"{source}: '{kind}' must be a list of major classes")
        seen_majors: set[str] = set()
        for position, major in enumerate(majors, start=1):
            entry = f"{kind} major #{position}"
            if not isinstance(major, dict):
                raise TaxonomyError(f"{source}: {entry} must be an object")
            _check_keys(major, _MAJOR_KEYS, _MAJOR_KEYS, source, entry)
            major_code = _code(major["major"], _MAJOR_CODE, "2 digits", source, entry)
            entry = f"{kind} major {major_code}"
            major_name = _name(major["name"], source, entry)
            if major_code in seen_majors:
                raise TaxonomyError(f"{source}: {entry} appears twice")
            seen_majors.add(major_code)
            subclasses = major["subclasses"]
            if not isinstance(subclasses, list) or not subclasses:
                raise TaxonomyError(f"{source}: {entry} ({major_name}): 'subclasses' must be a non-empty list")
            for sub_position, subclass in enumerate(subclasses, start=1):
                where = f"{entry} subclass #{sub_position}"
                category = _subclass(subclass, kind, major_code, major_name, source, where)
                if category.id in categories:
                    raise TaxonomyError(f"{source}: {kind} {category.code} appears twice")
                categories[category.id] = category
    return categories


def _subclass(value: object, kind: str, major: str, major_name: str, source: str, entry: str) -> Category:
    if not isinstance(value, dict):
        raise TaxonomyError(f"{source}: {entry} must be an object")
    _check_keys(value, _SUBCLASS_KEYS, _SUBCLASS_REQUIRED, source, entry)
    code = _code(value["code"], _SUBCLASS_CODE, "4 digits", source, entry)
    entry = f"{kind} {code}"
    if not code.startswith(major):
        raise TaxonomyError(f"{source}: {entry}: a subclass code must start with its major's code {major}")
    name = _name(value["name"], source, entry)
    deadline = _hours(value["deadline_hours"], source, f"{entry} ({name})", "deadline_hours")
    verify = None
    if "verify_hours" in value:
        verify = _hours(value["verify_hours"], source, f"{entry} ({name})", "verify_hours")
    # verify_hours stays None here so that an extension that omits it keeps the shipped value.
    return Category(f"{kind}:{code}", kind, major, major_name, code, name, deadline, verify)


def _merge(base: dict[str, Category], extension: dict[str, Category], source: str) -> dict[str, Category]:
    merged = dict(base)
    major_names = {(c.kind, c.major): c.major_name for c in base.values()}
    for key, category in extension.items():
        known_major = major_names.get((category.kind, category.major))
        if known_major is not None and known_major != category.major_name:
            raise TaxonomyError(
                f"{source}: {category.kind} major {category.major} is {known_major} in the base taxonomy, "
                f"not {category.major_name}; add new majors under unused codes"
            )
        existing = merged.get(key)
        if existing is None:
            merged[key] = category
            continue
        if existing.name != category.name:
            raise TaxonomyError(
                f"{source}: {category.kind} {category.code} is {existing.name} in the base taxonomy, not "
                f"{category.name}; a city may override its hours but not reuse its code"
            )
        merged[key] = replace(
            existing,
            deadline_hours=category.deadline_hours,
            verify_hours=existing.verify_hours if category.verify_hours is None else category.verify_hours,
        )
    return merged


def _with_default_verify(category: Category) -> Category:
    if category.verify_hours is None:
        return replace(category, verify_hours=DEFAULT_VERIFY_HOURS)
    return category


def _check_keys(value: dict, allowed: set[str], required: set[str], source: str, entry: str) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise TaxonomyError(
            f"{source}: {entry}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    missing = sorted(required - set(value))
    if missing:
        raise TaxonomyError(f"{source}: {entry}: missing field(s) {', '.join(missing)}")


def _code(value: object, pattern: re.Pattern, shape: str, source: str, entry: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise TaxonomyError(f"{source}: {entry}: code {value!r} must be a string of {shape}")
    return value


def _name(value: object, source: str, entry: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TaxonomyError(f"{source}: {entry}: 'name' must be a non-empty string")
    return value.strip()


def _hours(value: object, source: str, entry: str, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise TaxonomyError(f"{source}: {entry}: {field} must be a positive number of hours, not {value!r}")
    return float(value)


def _no_repeated_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"field(s) {', '.join(repeated)} given twice in one object")
    return dict(pairs)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")

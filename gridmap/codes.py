"""National-style unit codes for the street → community → grid → courtyard → building hierarchy.

A code is a string of digits that extends its parent's code, the way Beijing's unit-grid standard builds
15-digit grid codes:

========== ====== ========================================================================
level      digits built from
========== ====== ========================================================================
county       6    GB/T 2260 administrative division code (the street's parent; not stored)
street       9    county + 3-digit street (the first 9 digits of the 12-digit GB/T 10114 code)
community   12    street + 3-digit community
grid        15    community + 3-digit unit grid
courtyard   18    grid + 3-digit courtyard number within the grid
building    21    grid + 3-digit courtyard number (``000`` when in no courtyard) + 3-digit building
========== ====== ========================================================================

Each numbered segment runs ``001``–``999``; ``000`` means "none" and is only allowed as the courtyard part
of a building code. Files often pad a code with trailing zeros to a longer standard length (Beijing's
street files carry ``110101001000`` for street ``110101001``); :func:`normalise_code` strips such padding.
"""

from __future__ import annotations

import math
import re

import numpy as np

from gridmap.errors import CodeError

LEVELS: tuple[str, ...] = ("street", "community", "grid", "courtyard", "building")
CODE_LENGTH: dict[str, int] = {"county": 6, "street": 9, "community": 12, "grid": 15, "courtyard": 18, "building": 21}
PARENT_LEVEL: dict[str, str] = {
    "street": "county",
    "community": "street",
    "grid": "community",
    "courtyard": "grid",
    "building": "grid",  # or "courtyard" when the building's courtyard segment is not 000
}
NO_COURTYARD = "000"
_SEGMENT_NAMES = ("street", "community", "grid", "courtyard", "building")
_DIGITS = re.compile(r"^[0-9]+$")
# GB/T 2260 province prefixes run from 11 (Beijing) to 82 (Macao).
_PROVINCE_MIN, _PROVINCE_MAX = 11, 82


def check_level(level: str) -> str:
    """Return ``level`` if it is a known hierarchy level, else raise :class:`CodeError`."""
    if level not in LEVELS:
        raise CodeError(f"unknown level {level!r}: expected one of {', '.join(LEVELS)}")
    return level


def normalise_code(raw: object, level: str) -> str:
    """Return the canonical code of ``raw`` at ``level``, or raise :class:`CodeError` saying why.

    Accepts strings, integers and integral floats (GeoJSON readers turn long codes into numbers), and
    strips trailing-zero padding to a longer standard length.

    Examples
    --------
    >>> normalise_code(110101001000, "street")
    '110101001'
    >>> normalise_code(" 110101001002003 ", "grid")
    '110101001002003'
    >>> normalise_code("11010100100", "street")
    Traceback (most recent call last):
    ...
    gridmap.errors.CodeError: street code '11010100100' has 11 digits: expected 9 (or zero-padded to 12, 15, 18, 21)
    """
    want = CODE_LENGTH[level] if level == "county" else CODE_LENGTH[check_level(level)]
    text = _as_digit_string(raw, level)
    if len(text) > want and len(text) in CODE_LENGTH.values() and set(text[want:]) == {"0"}:
        text = text[:want]
    if len(text) != want:
        longer = ", ".join(str(n) for n in sorted(set(CODE_LENGTH.values())) if n > want)
        padded = f" (or zero-padded to {longer})" if longer else ""
        raise CodeError(f"{level} code {str(raw).strip()!r} has {len(text)} digits: expected {want}{padded}")
    _check_segments(text, level)
    return text


def parent_code(code: str, level: str) -> str:
    """The code of the unit one level up, derived from ``code`` itself.

    Examples
    --------
    >>> parent_code("110101001", "street")
    '110101'
    >>> parent_code("330102901001002000015", "building")
    '330102901001002'
    >>> parent_code("330102901001002003015", "building")
    '330102901001002003'
    """
    check_level(level)
    if level == "building" and code[15:18] != NO_COURTYARD:
        return code[:18]
    return code[: CODE_LENGTH[PARENT_LEVEL[level]]]


def parent_level(code: str, level: str) -> str:
    """The level of :func:`parent_code` (``courtyard`` or ``grid`` for a building)."""
    if level == "building":
        return "grid" if code[15:18] == NO_COURTYARD else "courtyard"
    return PARENT_LEVEL[check_level(level)]


def grid_code_of(code: str, level: str) -> str | None:
    """The 15-digit grid a courtyard or building belongs to, the grid itself for a grid, else ``None``."""
    return code[:15] if LEVELS.index(check_level(level)) >= LEVELS.index("grid") else None


def child_code(parent: str, parent_level_: str, number: int, *, courtyard: int | None = None) -> str:
    """Build the code of child ``number`` (1–999) under ``parent``.

    A building is numbered within its grid; pass ``courtyard`` (1–999) when it stands in one.

    Examples
    --------
    >>> child_code("330102901", "street", 3)
    '330102901003'
    >>> child_code("330102901001002", "grid", 15, courtyard=3)
    '330102901001002003015'
    """
    if not 1 <= number <= 999:
        raise CodeError(f"child number {number} out of range 1-999")
    if parent_level_ == "grid" and courtyard is not None:
        if not 0 <= courtyard <= 999:
            raise CodeError(f"courtyard number {courtyard} out of range 0-999")
        return f"{parent}{courtyard:03d}{number:03d}"
    return f"{parent}{number:03d}"


def building_code(grid: str, number: int, courtyard: int = 0) -> str:
    """Building ``number`` of ``grid``, in courtyard ``courtyard`` (0 = none)."""
    return child_code(grid, "grid", number, courtyard=courtyard)


def level_of_code(code: str) -> str | None:
    """Guess a code's level from its length; ``None`` when no level has that length."""
    for level in LEVELS:
        if len(code) == CODE_LENGTH[level]:
            return level
    return None


def _as_digit_string(raw: object, level: str) -> str:
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        raise CodeError(f"{level} code is missing")
    if isinstance(raw, (bool, np.bool_)):
        raise CodeError(f"{level} code {raw!r} is not a number")
    if isinstance(raw, (float, np.floating)):
        if not float(raw).is_integer():
            raise CodeError(f"{level} code {raw!r} is not a whole number")
        raw = int(raw)
    text = str(raw).strip()
    if not _DIGITS.match(text):
        raise CodeError(f"{level} code {text!r} must contain only digits")
    return text


def _check_segments(text: str, level: str) -> None:
    province = int(text[:2])
    if not _PROVINCE_MIN <= province <= _PROVINCE_MAX:
        raise CodeError(f"{level} code {text!r}: {text[:2]!r} is not a GB/T 2260 province prefix (11-82)")
    for start, part in zip(range(6, len(text), 3), _SEGMENT_NAMES):
        if text[start : start + 3] == "000" and not (level == "building" and part == "courtyard"):
            raise CodeError(f"{level} code {text!r}: its {part} number is 000, which means 'none'")

"""Request bodies of the service (pydantic): types, bounds and lengths checked before any code runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

Text = Annotated[str, StringConstraints(max_length=2000)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]

EARLIEST_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_INSTANT = datetime(2200, 1, 1, tzinfo=UTC)


def check_instant(value: datetime) -> datetime:
    """``value`` if it is an instant the service's records can hold, 1970 to 2200; else ValueError.

    A year-1 or year-9999 time is a typo or a probe, and arithmetic on it (a report window's default start
    90 days back, a bound one microsecond on) overflows Python's dates: the fuzzer found that as a 500.
    """
    try:
        inside = EARLIEST_INSTANT <= value.astimezone(UTC) < LATEST_INSTANT
    except OverflowError:  # 9999-12-31 at -23:59 is past the last instant Python can hold in UTC
        inside = False
    if not inside:
        raise ValueError(f"{value.isoformat()} is outside the years 1970 to 2199")
    return value


#: A timezone-aware time between 1970 and 2200 (see :func:`check_instant`); every time the API takes is one.
Instant = Annotated[AwareDatetime, AfterValidator(check_instant)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Login(Strict):
    username: Name
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class ReportIn(Strict):
    """A field report. ``client_id`` is made by the device (a UUID) when the report is written, so the
    offline queue can send it again and again and it is stored once."""

    client_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
    category: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    lon: float = Field(ge=-180, le=180)
    lat: float = Field(ge=-90, le=90)
    datum: Literal["wgs84", "gcj02", "bd09"] = "wgs84"
    accuracy_m: float | None = Field(default=None, ge=0, le=100_000)
    observed_at: Instant
    note: Text = ""


class ActionIn(Strict):
    action: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    note: Text | None = None
    photos: list[Sha256] = Field(default_factory=list, max_length=10)
    assignee: Name | None = None
    version: int | None = Field(default=None, ge=1)


class CaseIn(Strict):
    """A case a supervisor opens from the office (a patrol, a phone call)."""

    category: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    lon: float = Field(ge=-180, le=180)
    lat: float = Field(ge=-90, le=90)
    datum: Literal["wgs84", "gcj02", "bd09"] = "wgs84"
    description: Text = ""


class AbsenceIn(Strict):
    absent: bool


class ManifestFile(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    size: int = Field(gt=0)
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]


class ManifestIn(Strict):
    batch_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{7,63}$")] | None = None
    acquired_at: Instant | None = None
    files: list[ManifestFile] = Field(min_length=1, max_length=100_000)


Grouping = Literal["grid", "assignee", "community", "street", "category"]


"""Request bodies of the service (pydantic): types, bounds and lengths checked before any code runs."""

from __future__ import annotations


from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

Text = Annotated[str, StringConstraints(max_length=2000)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


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
    observed_at: AwareDatetime
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
    acquired_at: AwareDatetime | None = None
    files: list[ManifestFile] = Field(min_length=1, max_length=100_000)


Grouping = Literal["grid", "assignee", "community", "street", "category"]


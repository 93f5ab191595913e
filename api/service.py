"""What the service does, between the routers (HTTP) and the store (SQL): accounts, reports, the case
workflow, dispatch and escalation, and turning the inspection pipeline's candidates into cases.

The routers only parse and serialise; every rule lives here or in the pure core it calls
(:mod:`inspection.cases`, :mod:`inspection.dispatch`, :mod:`inspection.taxonomy`). Decisions recorded here:

* A new case from a grid worker's report, a pipeline candidate or a hotline request is registered (立案)
  and dispatched (派遣) at once by ``system``, each step its own audit event; a case whose grid has nobody
  available stays registered for a supervisor. Supervisors' own cases are handled the same way.
* A report's position must lie in the street; a grid worker's must also lie in, or within its stated
  accuracy (at most 50 m) of, one of their grids. A position outside the street under the stated datum but
  inside it under the other phone datum is refused with a message saying so.
* Refusals: 401 (who are you), 403 (your role or scope may not), 404 (no such case *for you*: cases out of
  scope are not acknowledged), 409 (the case's state does not allow it), 422 (the request is incomplete).
"""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyproj
from geopandas import GeoSeries
from shapely import Point

from api.errors import AuthError, ForbiddenError, InvalidInputError, NotFoundError, PayloadTooLargeError
from api.security import new_token, token_hash, verify_password
from api.settings import Settings
from api.tilecache import TileCache
from gridmap.crs import bd09_to_wgs84, gcj02_to_wgs84, metric_crs, wgs84_to_gcj02
from gridmap.files import atomic_path
from gridmap.locate import UnitLocator
from inspection import cases as workflow
from inspection.dispatch import Worker, choose_assignee
from inspection.errors import ImageError
from inspection.photos import read_photo
from inspection.taxonomy import ILLEGAL_CONSTRUCTION, load_taxonomy
from storage.records import Step

#: A report within this distance of an open case of the same category joins that case.
ATTACH_RADIUS_M = 50.0
#: Most a grid worker's position may stray outside their grids (its accuracy, capped at this).
GRID_TOLERANCE_M = 50.0
#: Fixes worse than this are refused; between REVIEW and MAX they are accepted and flagged.
MAX_ACCURACY_M = 1000.0
REVIEW_ACCURACY_M = 100.0
#: An EXIF position this much farther than the stated accuracy from the fix is flagged.
EXIF_DISTANCE_M = 100.0
#: An EXIF time this far from the stated time is flagged.
EXIF_TIME_TOLERANCE = timedelta(minutes=30)
#: Phones' camera clocks write local time without an offset; in China that is UTC+8.
CAMERA_CLOCK = timezone(timedelta(hours=8))
#: Reports queued offline may arrive late, but not this late; and not from the future.
MAX_REPORT_AGE = timedelta(days=30)
CLOCK_SKEW = timedelta(minutes=5)
MAX_PHOTOS = 10
DATUMS = ("wgs84", "gcj02", "bd09")
_TO_WGS84 = {"wgs84": None, "gcj02": gcj02_to_wgs84, "bd09": bd09_to_wgs84}
_GEOD = pyproj.Geod(ellps="WGS84")
SYSTEM = {"username": "system", "role": "system"}
#: How long a process trusts a token it has checked, and the list of supervisors it has read: each saves a
#: query on every request; a revoked token or a supervisor's new scope takes at most this long to count.
TOKEN_CACHE_SECONDS = 3.0
SUPERVISOR_CACHE_SECONDS = 10.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Service:
    """One per process: the store, the settings, the taxonomy and the unit locator.

    The units (street to courtyard) are read once, at first use: restart the service after importing new
    boundaries.
    """

    def __init__(self, store, settings: Settings, *, clock=utcnow) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.taxonomy = load_taxonomy(extend=settings.taxonomy)
        self.data_dir = Path(settings.data_dir).resolve()
        for sub in ("photos", "uploads", "blobs", "work"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
        self._units_lock = threading.Lock()
        self._units = None
        self._locator: UnitLocator | None = None
        self._tokens: dict[str, tuple[float, dict]] = {}
        self._supervisors: tuple[float, list[dict]] | None = None
        self.tiles = TileCache(store, settings.tile_cache_bytes)

    # ------------------------------------------------------------------------------------------ units

    @property
    def units(self):
        self._ensure_units()
        return self._units

    @property
    def locator(self) -> UnitLocator:
        self._ensure_units()
        return self._locator

    def _ensure_units(self) -> None:
        with self._units_lock:
            if self._units is None:
                units = self.store.get_units()
                units = units[units["level"] != "building"].reset_index(drop=True)
                if not len(units[units["level"] == "street"]):
                    raise InvalidInputError("no street is stored yet: import the boundaries first (gridmap demo)")
                self._locator = UnitLocator(units)
                self._units = units

    # ---------------------------------------------------------------------------------- accounts, tokens

    def issue_token(self, username: str) -> dict:
        account = self.store.get_account(username)
        if account is None:
            raise NotFoundError(f"no account {username!r}")
        token = new_token()
        now = self.clock()
        expires = now + timedelta(hours=self.settings.token_ttl_hours)
        self.store.add_token(token_hash(token), username, created_at=now, expires_at=expires)
        return {"access_token": token, "token_type": "bearer", "expires_at": expires, "role": account["role"],
                "username": username}

    def login(self, username: str, password: str) -> dict:
        account = self.store.get_account(username)
        # The same message either way: a login form must not tell which usernames exist.
        if account is None or not verify_password(password, account["password_hash"]):
            raise AuthError("wrong username or password")
        return self.issue_token(username)

    def remembered_account(self, token: str | None) -> dict | None:
        """The account of a token this process checked less than :data:`TOKEN_CACHE_SECONDS` ago, else None:
        no I/O, so the event loop can answer most requests without a thread."""
        checked, known = self._tokens.get(token_hash(token), (0.0, None)) if token else (0.0, None)
        if known is not None and time.monotonic() - checked < TOKEN_CACHE_SECONDS and self.clock() < known["expires"]:
            return known["account"]
        return None

    def authenticate(self, token: str | None) -> dict:
        if not token:
            raise AuthError("no bearer token: log in at POST /auth/token and send 'Authorization: Bearer <token>'")
        remembered = self.remembered_account(token)
        if remembered is not None:
            return remembered
        key = token_hash(token)
        account = self.store.account_for_token(key, self.clock())
        if account is None:
            raise AuthError("bearer token unknown or expired: log in again")
        if len(self._tokens) > 10_000:
            self._tokens.clear()
        self._tokens[key] = (time.monotonic(), {"account": account, "expires": account.pop("token_expires_at")})
        return account

    def logout(self, account: dict) -> int:
        """End every session of ``account``: its tokens are deleted (other server processes may still accept
        one for up to :data:`TOKEN_CACHE_SECONDS`)."""
        self._tokens = {k: v for k, v in self._tokens.items() if v[1]["account"]["username"] != account["username"]}
        return self.store.revoke_tokens(account["username"])

    @staticmethod
    def require(account: dict, *roles: str, doing: str) -> None:
        if account["role"] not in roles:
            raise ForbiddenError(f"a {account['role']} account may not {doing}; allowed: {', '.join(roles)}")

    # --------------------------------------------------------------------------------------------- scope

    def case_scope(self, account: dict) -> list[str] | None:
        """Unit codes bounding what the account may see (None: everything)."""
        role = account["role"]
        if role == "admin":
            return None
        if role in ("supervisor", "grid_worker"):
            return list(account["scope"])
        raise ForbiddenError(f"a {role} account may not read cases")

    def visible_case(self, account: dict, case_id: int) -> dict:
        scope = self.case_scope(account)
        case = self.store.get_case(case_id)
        if case is None or not _in_scope(case, scope, account):
            raise NotFoundError(f"no case {case_id} in your area")
        return case

    # ------------------------------------------------------------------------------------------- photos

    def store_photo(self, data: bytes, *, record: bool = True) -> dict:
        """Check a photo (an image, not too big, not a decompression bomb), keep its file by content hash and
        (``record``) its row; a report records its photos' rows in its own transaction instead."""
        if len(data) > self.settings.max_photo_bytes:
            raise PayloadTooLargeError(f"photo of {len(data):,} bytes exceeds the limit of "
                                       f"{self.settings.max_photo_bytes:,} bytes")
        if not data:
            raise InvalidInputError("photo is empty")
        try:
            info = read_photo(data, max_pixels=self.settings.max_photo_pixels, reduced=True)
        except ImageError as error:
            raise InvalidInputError(f"photo refused: {error}") from None
        except Exception as error:  # noqa: BLE001 - EXIF readers raise many types; the photo is still refused
            raise InvalidInputError(f"photo refused: unreadable metadata ({type(error).__name__})") from None
        path = self.photo_path(info.sha256)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
        exif = {"lon": info.lon, "lat": info.lat, "taken_at": info.taken_at.isoformat() if info.taken_at else None,
                "make": info.make, "model": info.model}
        meta = {"sha256": info.sha256, "bytes": len(data), "width": info.width, "height": info.height,
                "format": _image_format(data), "exif": exif}
        if record:
            self.store.put_photo(meta)
        return meta

    def photo_path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise NotFoundError("no such photo")
        return self.data_dir / "photos" / sha256[:2] / sha256

    def _known_photos(self, shas: list[str]) -> list[dict]:
        found = []
        for sha in shas:
            photo = self.store.get_photo(sha) if isinstance(sha, str) else None
            if photo is None:
                raise InvalidInputError(f"photo {str(sha)[:16]}… is not uploaded: POST it to /photos first")
            found.append(photo)
        return found

    # ------------------------------------------------------------------------------------------ reports

    def file_report(self, account: dict, report: dict, photos: list[bytes] = ()) -> tuple[dict, dict, str]:
        """A grid worker's field report: checked, located, stored, joined to a nearby open case or opened
        as a new one (then dispatched). Returns ``(report, case, outcome)``; see the module docstring."""
        self.require(account, "grid_worker", "supervisor", "admin", doing="file field reports")
        category = self.taxonomy.get(report["category"])
        if len(photos) > MAX_PHOTOS:
            raise InvalidInputError(f"{len(photos)} photos: a report carries at most {MAX_PHOTOS}")
        now = self.clock()
        observed = report["observed_at"]
        if observed.tzinfo is None:
            raise InvalidInputError("observed_at has no timezone: send ISO 8601 with an offset, e.g. +08:00")
        if observed > now + CLOCK_SKEW:
            raise InvalidInputError(f"observed_at {observed.isoformat()} is in the future")
        if observed < now - MAX_REPORT_AGE:
            raise InvalidInputError(f"observed_at {observed.isoformat()} is more than {MAX_REPORT_AGE.days} days old")
        accuracy = report.get("accuracy_m")
        if accuracy is not None and not (0 <= accuracy <= MAX_ACCURACY_M):
            raise InvalidInputError(f"accuracy_m {accuracy} is not between 0 and {MAX_ACCURACY_M:g} m; "
                                    "wait for a better fix")
        lon, lat, place = self.place_point(account, report["lon"], report["lat"], report["datum"], accuracy)
        stored_photos = [self.store_photo(data, record=False) for data in photos]
        flags = _authenticity_flags(stored_photos, lon, lat, accuracy, observed)
        if accuracy is not None and accuracy > REVIEW_ACCURACY_M:
            flags.append({"code": "poor_accuracy", "message": f"position accurate to {accuracy:g} m only"})
        row = {"client_id": report["client_id"], "username": account["username"], "category": category.id,
               "lon": lon, "lat": lat, "datum": report["datum"], "accuracy_m": accuracy, "observed_at": observed,
               "received_at": now, "note": report.get("note") or "", "photos": [p["sha256"] for p in stored_photos],
               "flags": flags, "grid": place["grid"]}
        new_case = self._case_row(category.id, "report", lon, lat, place, observed, description=row["note"],
                                  attributes={"reported_by": account["username"]})
        event = {"at": now, "actor": account["username"], "role": account["role"], "action": "report",
                 "note": row["note"], "photos": row["photos"]}
        stub = {**new_case, "id": None, "version": 1, "dispatched_at": None}
        supervisors = self.supervisor_accounts()  # read now: the callback below runs inside the transaction
        return self.store.file_report(
            row, new_case=new_case, event=event, near=lambda cases: _nearest(cases, lon, lat, ATTACH_RADIUS_M),
            search_box=_box_around(lon, lat, ATTACH_RADIUS_M), photos=stored_photos,
            steps=lambda responsibles: self.dispatch_steps(stub, responsibles=responsibles, supervisors=supervisors))

    def place_point(self, account: dict, lon: float, lat: float, datum: str, accuracy: float | None):
        if datum not in DATUMS:
            raise InvalidInputError(f"unknown datum {datum!r}: phones give wgs84 (GPS), gcj02 (Amap, Tencent, "
                                    "WeChat) or bd09 (Baidu)")
        if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
            raise InvalidInputError(f"position ({lon}, {lat}) is not a longitude/latitude pair")
        convert = _TO_WGS84[datum]
        wlon, wlat = (float(v[0]) for v in convert(np.array([lon]), np.array([lat]))) if convert else (lon, lat)
        place = self.locator.locate_one(wlon, wlat)
        if not place["inside"]:
            hint = self._datum_hint(lon, lat, datum)
            raise InvalidInputError(f"position ({lon:.6f}, {lat:.6f}) as {datum} is outside the street{hint}")
        if account["role"] == "grid_worker":
            mine = set(account["scope"])
            if place["grid"] not in mine and not self._near_grids(wlon, wlat, mine, accuracy):
                where = f"grid {place['grid']}" if place["grid"] else "no grid"
                raise InvalidInputError(f"position is in {where}, not in your grids ({', '.join(sorted(mine))}) "
                                        "nor within its accuracy of them")
        return wlon, wlat, place

    def _datum_hint(self, lon: float, lat: float, datum: str) -> str:
        for other in DATUMS:
            if other == datum:
                continue
            convert = _TO_WGS84[other]
            x, y = (float(v[0]) for v in convert(np.array([lon]), np.array([lat]))) if convert else (lon, lat)
            if self.locator.locate_one(x, y)["inside"]:
                return f"; read as {other} it is inside: the fix is probably {other}, resend with datum={other}"
        return ""

    def _near_grids(self, lon: float, lat: float, grids: set[str], accuracy: float | None) -> bool:
        tolerance = min(accuracy or 0.0, GRID_TOLERANCE_M)
        if tolerance <= 0:
            return False
        mine = self.units[self.units["code"].isin(grids)]
        if not len(mine):
            return False
        crs = metric_crs(lon, lat)
        here = GeoSeries([Point(lon, lat)], crs="EPSG:4326").to_crs(crs).iloc[0]
        return bool((mine.to_crs(crs).distance(here) <= tolerance).any())

    # ------------------------------------------------------------------------------------------- cases

    def _case_row(self, category: str, source: str, lon: float, lat: float, place: dict, reported_at: datetime,
                  *, description: str = "", attributes: dict | None = None, source_ref: str | None = None) -> dict:
        return {"category": category, "source": source, "state": "reported", "lon": lon, "lat": lat,
                "street": place.get("street"), "community": place.get("community"), "grid": place.get("grid"),
                "courtyard": place.get("courtyard"), "assignee": None, "description": description,
                "source_ref": source_ref, "attributes": attributes or {}, "reported_at": reported_at}

    def open_case(self, category: str, source: str, lon: float, lat: float, *, actor: dict, description: str = "",
                  attributes: dict | None = None, source_ref: str | None = None,
                  reported_at: datetime | None = None) -> tuple[dict, bool]:
        """Create (idempotently by ``source_ref``) and dispatch a case at a WGS84 point inside the street."""
        category_id = self.taxonomy.get(category).id
        place = self.locator.locate_one(lon, lat)
        if not place["inside"]:
            raise InvalidInputError(f"position ({lon:.6f}, {lat:.6f}) is outside the street")
        now = self.clock()
        row = self._case_row(category_id, source, lon, lat, place, reported_at or now, description=description,
                             attributes=attributes, source_ref=source_ref)
        event = {"at": now, "actor": actor["username"], "role": actor["role"], "action": "report",
                 "note": description}
        steps = self.dispatch_steps({**row, "id": None, "version": 1, "dispatched_at": None})
        case, created = self.store.create_case(row, event, steps)
        if not created and case["state"] in ("reported", "registered") and case["assignee"] is None:
            case = self.dispatch(case)  # nobody was available when it was filed; perhaps someone is now
        return case, created

    def act(self, account: dict, case_id: int, action: str, *, note: str | None = None,
            photos: list[str] = (), assignee: str | None = None, version: int | None = None) -> dict:
        """Take a workflow action on a case for ``account`` (see :mod:`inspection.cases`)."""
        case = self.visible_case(account, case_id)
        spec = workflow.ACTIONS.get(action)
        if spec is None:
            raise InvalidInputError(f"unknown action {action!r}; known: {', '.join(workflow.ACTIONS)}")
        if account["role"] not in spec.roles:
            raise ForbiddenError(f"a {account['role']} may not {action}; allowed: {', '.join(sorted(spec.roles))}")
        if account["role"] in spec.assignee_roles and case["assignee"] != account["username"]:
            raise ForbiddenError(f"{action}: case {case_id} is assigned to {case['assignee'] or 'nobody'}, not you")
        if version is not None and version != case["version"]:
            raise workflow.WorkflowError(f"case {case_id} changed since you loaded it (version {case['version']}, "
                                         f"yours {version}): reload it")
        self._known_photos(list(photos))
        if spec.needs_new_assignee and assignee is not None:
            target = self.store.get_account(assignee)
            if target is None or target["role"] not in ("grid_worker", "supervisor"):
                raise InvalidInputError(f"{assignee!r} is not a grid worker or supervisor account")
        return self._transition(case, action, actor=account, note=note, photos=list(photos), new_assignee=assignee)

    def _step(self, case: dict, action: str, *, actor: dict, note: str | None = None, photos=(),
              new_assignee: str | None = None, extra: dict | None = None) -> tuple[Step, dict]:
        """The store step for ``action`` on ``case`` (checked by the workflow table), and the case as it
        will be after it, so steps can be chained into one transaction."""
        state = workflow.transition(case["state"], action, role=actor["role"], actor=actor["username"],
                                    assignee=case["assignee"], note=note, photos=photos, new_assignee=new_assignee)
        now = self.clock()
        changes: dict = dict(extra or {})
        stamp = {"registered": "registered_at", "handled": "handled_at", "verified": "verified_at",
                 "closed": "closed_at"}.get(state)
        if stamp and action != "return":
            changes[stamp] = now
        if state == "dispatched" and action in ("dispatch", "redispatch", "reject", "reopen"):
            if new_assignee is not None:
                changes["assignee"] = new_assignee
            changes.setdefault("dispatched_at", case["dispatched_at"] if action in ("reject", "reopen") else now)
            changes["deadline_at"] = workflow.deadline(self.taxonomy.get(case["category"]), now)
        if action == "return":
            changes["assignee"] = None
        event = {"at": now, "actor": actor["username"], "role": actor["role"], "action": action, "note": note or "",
                 "photos": list(photos)}
        return Step(state, changes, event), {**case, **changes, "state": state}

    def _transition(self, case: dict, action: str, **options) -> dict:
        step, _ = self._step(case, action, **options)
        return self.store.advance_case(case["id"], version=case["version"], steps=[step])

    def dispatch_steps(self, case: dict, *, responsibles=None, supervisors: list[dict] | None = None) -> list[Step]:
        """Register a reported case and send it to whoever the dispatch rule picks (:mod:`inspection.dispatch`),
        as steps for one transaction. With nobody available it stays registered, for a supervisor.
        ``responsibles(grid)`` reads the grid's worker and backup and ``supervisors`` are the supervisor
        accounts (defaults: read from the store, each in a transaction of its own)."""
        steps = []
        if case["state"] == "reported":
            step, case = self._step(case, "register", actor=SYSTEM)
            steps.append(step)
        if case["state"] != "registered" or not (case["grid"] or case["community"]):
            return steps
        assignee, reason = self.choose_assignee(case, responsibles or self.store.responsibles,
                                                supervisors if supervisors is not None else self.supervisor_accounts())
        if assignee is not None:
            steps.append(self._step(case, "dispatch", actor=SYSTEM, note=reason, new_assignee=assignee)[0])
        return steps

    def dispatch(self, case: dict) -> dict:
        steps = self.dispatch_steps(case)
        return self.store.advance_case(case["id"], version=case["version"], steps=steps) if steps else case

    def choose_assignee(self, case: dict, responsibles, supervisors: list[dict]) -> tuple[str | None, str]:
        responsible, backup = responsibles(case["grid"]) if case["grid"] else (None, None)

        def worker(found: dict | None) -> Worker | None:
            if found is None:
                return None
            return Worker(found["username"], found["absent"], found["open_cases"], found["max_open"])

        supervisor = (self.supervisor_for(case, level="community", accounts=supervisors)
                      or self.supervisor_for(case, level="street", accounts=supervisors))
        return choose_assignee(case["grid"] or "", responsible=worker(responsible), backup=worker(backup),
                               supervisor=supervisor)

    def supervisor_accounts(self) -> list[dict]:
        """Supervisor accounts, read at most every :data:`SUPERVISOR_CACHE_SECONDS`."""
        if self._supervisors is None or time.monotonic() - self._supervisors[0] > SUPERVISOR_CACHE_SECONDS:
            self._supervisors = (time.monotonic(), self.store.list_accounts("supervisor"))
        return self._supervisors[1]

    def supervisor_for(self, case: dict, *, level: str, accounts: list[dict] | None = None) -> str | None:
        """The first present supervisor (by username) whose scope holds the case's community (or street)."""
        code = case.get(level)
        found = [a["username"] for a in (accounts if accounts is not None else self.supervisor_accounts())
                 if not a["absent"] and code in a["scope"]]
        return found[0] if found else None

    def escalate(self) -> list[dict]:
        """Redispatch overdue cases one level up (:func:`inspection.cases.escalation_due`): level 1 to the
        grid's backup or the community supervisor, level 2 to the street supervisor."""
        now = self.clock()
        overdue = self.store.list_cases(states=["dispatched"], deadline_before=now)
        if not overdue:
            return []
        due = workflow.escalation_due(pd.DataFrame(overdue), now)
        done = []
        for case_id, level in zip(due["id"], due["level"]):
            case = self.store.get_case(int(case_id))
            if level == 1:
                _, backup = self.store.assignment(case["grid"]) if case["grid"] else (None, None)
                chain = [backup, self.supervisor_for(case, level="community"), self.supervisor_for(case, level="street")]
            else:
                chain = [self.supervisor_for(case, level="street")]
            target = next((name for name in chain if name and name != case["assignee"]), None)
            if target is None:
                continue
            note = f"逾期升级 escalated to level {int(level)}: overdue since {case['deadline_at'].isoformat()}"
            done.append(self._transition(case, "redispatch", actor=SYSTEM, note=note, new_assignee=target,
                                         extra={"escalation_level": int(level)}))
        return done

    # ------------------------------------------------------------------------------ pipeline candidates

    def cases_from_candidates(self, candidates) -> list[tuple[dict, bool]]:
        """One case per candidate of new construction (or change to a registered building), idempotent by
        the candidate's id, located and dispatched like any other case."""
        results = []
        for row in candidates.itertuples(index=False):
            point = row.geometry.representative_point()
            kind = "新增建筑" if row.match == "new" else f"登记建筑变化 {row.building_code}"
            steel = "，彩钢瓦" if bool(getattr(row, "colour_steel", False)) else ""
            description = f"疑似违法建设：{kind}，约 {float(row.area_m2):.0f} m²{steel}（无人机巡查比对）"
            attributes = {"candidate": row.id, "pair_id": row.pair_id, "area_m2": round(float(row.area_m2), 1),
                          "confidence": round(float(row.confidence), 3), "colour_steel": bool(row.colour_steel),
                          "match": row.match, "building_code": row.building_code,
                          "chip_before": row.chip_before, "chip_after": row.chip_after,
                          "outline": row.geometry.__geo_interface__}
            if not self.locator.locate_one(point.x, point.y)["inside"]:
                continue  # surveys overlap the street's edge; what lies outside is not ours to act on
            results.append(self.open_case(ILLEGAL_CONSTRUCTION, "pipeline", point.x, point.y, actor=SYSTEM,
                                          description=description, attributes=_jsonable(attributes),
                                          source_ref=f"candidate:{row.id}"))
        return results


def _in_scope(case: dict, scope: list[str] | None, account: dict) -> bool:
    if scope is None:
        return True
    if account["role"] == "grid_worker" and case["assignee"] == account["username"]:
        return True
    return bool({case["grid"], case["community"], case["street"]} & set(scope))


def _box_around(lon: float, lat: float, radius_m: float) -> tuple[float, float, float, float]:
    dlat = radius_m / 110_574.0 * 1.05
    dlon = radius_m / (111_320.0 * max(math.cos(math.radians(lat)), 0.01)) * 1.05
    return lon - dlon, lat - dlat, lon + dlon, lat + dlat


def _nearest(cases: list[dict], lon: float, lat: float, radius_m: float) -> dict | None:
    if not cases:
        return None
    n = len(cases)
    _, _, dist = _GEOD.inv([lon] * n, [lat] * n, [c["lon"] for c in cases], [c["lat"] for c in cases])
    best = int(np.argmin(dist))
    return cases[best] if dist[best] <= radius_m else None


def _authenticity_flags(photos: list[dict], lon: float, lat: float, accuracy: float | None,
                        observed: datetime) -> list[dict]:
    """Where a photo's own EXIF position or time disagrees with the report (or is missing)."""
    flags = []
    for photo in photos:
        exif, short = photo["exif"], photo["sha256"][:12]
        if exif.get("lon") is None or exif.get("lat") is None:
            flags.append({"code": "photo_without_gps", "photo": photo["sha256"],
                          "message": f"photo {short} has no GPS position in its EXIF"})
        else:
            gcj_lon, gcj_lat = wgs84_to_gcj02(np.array([lon]), np.array([lat]))
            _, _, dist = _GEOD.inv([lon], [lat], [exif["lon"]], [exif["lat"]])
            _, _, dist_gcj = _GEOD.inv([float(gcj_lon[0])], [float(gcj_lat[0])], [exif["lon"]], [exif["lat"]])
            limit = EXIF_DISTANCE_M + (accuracy or 0.0)
            if min(dist[0], dist_gcj[0]) > limit:
                flags.append({"code": "photo_position_mismatch", "photo": photo["sha256"],
                              "message": f"photo {short} was taken {dist[0]:,.0f} m from the reported position"})
        taken = exif.get("taken_at")
        if taken:
            moment = datetime.fromisoformat(taken)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=CAMERA_CLOCK)
            gap = abs(moment - observed)
            if gap > EXIF_TIME_TOLERANCE:
                hours = gap.total_seconds() / 3600
                flags.append({"code": "photo_time_mismatch", "photo": photo["sha256"],
                              "message": f"photo {short} was taken {hours:,.1f} h from the reported time"})
    return flags


def _image_format(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "image"


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value

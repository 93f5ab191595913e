"""Demo accounts and cases for the demo street, so the served demo has people and work in it.

Accounts (one password for all, :data:`DEMO_PASSWORD`): ``admin``; ``supervisor`` (the whole street);
``sup-<community>`` per community; ``pipeline`` (uploads only); a grid worker per grid, ``worker`` for the
first grid and ``gw<community><grid>`` (e.g. ``gw001002``) for the others, named after the grid's worker in
the boundary data, each the backup of the previous grid in the same community (and able to see it). Demo cases are seeded through
the same path as real ones (reports by grid workers, then workflow actions by the people allowed to take
them), dated over the past 30 days so the indicators have something to show. Re-running changes nothing:
accounts are upserted and cases carry a ``source_ref``.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from api.security import hash_password
from api.service import Service

DEMO_PASSWORD = "gridmap-demo"
DEMO_CASES = 40
_CATEGORIES = ("event:0304", "event:0101", "event:0502", "event:0102", "event:0601", "event:0504")


def grid_username(code: str, first: str) -> str:
    return "worker" if code == first else f"gw{code[9:]}"


def seed_accounts(service: Service) -> dict[str, int]:
    """Create the demo accounts and grid responsibilities; returns how many of each role."""
    units = service.units
    store = service.store
    hashed = hash_password(DEMO_PASSWORD)  # one hash for all: the demo's accounts share a password anyway
    street = units[units["level"] == "street"]["code"].tolist()
    communities = units[units["level"] == "community"].sort_values("code")
    grids = units[units["level"] == "grid"].sort_values("code")
    first = grids["code"].iloc[0]

    def put(username, role, scope, display_name):
        store.put_account({"username": username, "role": role, "display_name": display_name,
                           "password_hash": hashed, "scope": scope})

    put("admin", "admin", [], "系统管理员")
    put("supervisor", "supervisor", street, "街道监督员")
    put("pipeline", "pipeline", [], "无人机数据管道")
    for code, name in zip(communities["code"], communities["name"]):
        put(f"sup{code[9:]}", "supervisor", [code], f"{name}监督员")
    assignments = []
    for community, rows in grids.groupby("parent_code", sort=True):
        codes = rows["code"].tolist()
        for i, (code, worker) in enumerate(zip(codes, rows["worker"])):
            backed_up = codes[i - 1]  # each worker is the backup of the previous grid in the community
            put(grid_username(code, first), "grid_worker", sorted({code, backed_up}), worker or code)
        for i, code in enumerate(codes):
            assignments.append((code, grid_username(code, first),
                                grid_username(codes[(i + 1) % len(codes)], first) if len(codes) > 1 else None))
    store.put_assignments(assignments)
    return {"admin": 1, "supervisor": 1 + len(communities), "pipeline": 1, "grid_worker": len(grids)}


def seed_cases(service: Service, *, count: int = DEMO_CASES, seed: int = 7) -> int:
    """File ``count`` demo reports over the past 30 days and move some through the workflow."""
    rng = np.random.default_rng(seed)
    units = service.units
    grids = units[units["level"] == "grid"].sort_values("code").reset_index(drop=True)
    first = grids["code"].iloc[0]
    store = service.store
    real_clock = service.clock
    end = real_clock()
    filed = 0
    try:
        for i in range(count):
            at = end - timedelta(days=float(rng.uniform(1, 30)))
            grid = grids.iloc[0] if i < 4 else grids.iloc[int(rng.integers(len(grids)))]
            point = grid.geometry.representative_point()
            category = _CATEGORIES[int(rng.integers(len(_CATEGORIES)))]
            service.clock = lambda at=at: at
            reporter = store.get_account(grid_username(grid["code"], first))
            case, created = service.open_case(category, "report", point.x, point.y, actor=reporter,
                                              description=f"示例案件 {i + 1}", source_ref=f"demo:{i + 1}")
            filed += created
            if not created or case["state"] != "dispatched":
                continue
            steps = int(rng.integers(0, 4))
            worker = store.get_account(case["assignee"])
            supervisor = store.get_account("supervisor")
            plan = [("handle", worker, "已处置"), ("verify", worker, None), ("close", supervisor, None)]
            for action, actor, note in plan[:steps]:
                at = at + timedelta(hours=float(rng.uniform(1, 60)))
                service.clock = lambda at=at: at
                if actor["role"] == "grid_worker" and case["assignee"] != actor["username"]:
                    break
                photos = [] if action != "verify" else [_demo_photo(service, i)]
                case = service.act(actor, case["id"], action, note=note or "现场核查", photos=photos)
    finally:
        service.clock = real_clock
    return filed


def _demo_photo(service: Service, index: int) -> str:
    """A small generated JPEG standing in for an on-site photo."""
    import cv2

    image = np.full((240, 320, 3), (90 + index * 3) % 255, np.uint8)
    cv2.putText(image, f"demo {index}", (20, 130), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3)
    ok, data = cv2.imencode(".jpg", image)
    return service.store_photo(data.tobytes())["sha256"]

"""The two web pages: the grid worker's phone map at ``/m/`` and the supervisor's page at ``/supervisor/``.

Both are static HTML and scripts that log in with ``/auth/token`` and then use the API with the bearer token
like any client, so there is no second, cookie-based way in to keep secure. Every script, style and image
comes from this app: our own files from ``api/pages/static`` and the browser libraries (Leaflet, Leaflet.heat,
idb-keyval, gcoord) from ``api/pages/node_modules``, which ``npm ci --prefix api/pages`` installs from the
versions pinned in ``api/pages/package-lock.json`` (``scripts/demo`` and ``scripts/test`` run it). A street
office's network may not reach a CDN, and the phone page must open with no network at all: its service worker
(``/m/sw.js``) keeps the shell, and its version is a hash of the files it keeps, so a new release replaces it.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.gzip import GZipMiddleware

from api.basemaps import basemap
from api.deps import service
from api.errors import UnavailableError
from api.service import Service
from inspection import cases as workflow

PAGES = Path(__file__).resolve().parent.parent / "pages"
MODULES = PAGES / "node_modules"
#: URL prefix -> the directory of an npm package that holds what browsers load.
VENDOR = {"leaflet": "leaflet/dist", "leaflet.heat": "leaflet.heat/dist", "idb-keyval": "idb-keyval/dist",
          "gcoord": "gcoord/dist"}
#: What the phone's service worker keeps so the page opens offline.
SHELL = ("/m/", "/m/manifest.webmanifest", "/static/common.js", "/static/mobile.js", "/static/mobile.css",
         "/vendor/leaflet/leaflet.js", "/vendor/leaflet/leaflet.css", "/vendor/idb-keyval/umd.js",
         "/vendor/gcoord/gcoord.global.prod.js")
_HTML = {"Cache-Control": "no-cache"}

router = APIRouter(tags=["pages"], include_in_schema=False)


def install_pages(app: FastAPI) -> None:
    """Add the pages' routes and the static files (gzip-compressed: phones pay for every byte)."""
    app.include_router(router)
    app.mount("/static", GZipMiddleware(StaticFiles(directory=PAGES / "static")), name="static")
    for prefix, directory in VENDOR.items():
        app.mount(f"/vendor/{prefix}", GZipMiddleware(StaticFiles(directory=MODULES / directory, check_dir=False)),
                  name=f"vendor-{prefix}")


def _page(name: str) -> FileResponse:
    missing = [prefix for prefix, directory in VENDOR.items() if not (MODULES / directory).is_dir()]
    if missing:
        raise UnavailableError(f"the pages' browser libraries are not installed ({', '.join(missing)}): "
                               "run `npm ci --prefix api/pages`")
    return FileResponse(PAGES / name, media_type="text/html", headers=_HTML)


@router.get("/")
def index() -> RedirectResponse:
    return RedirectResponse("/m/")


@router.get("/m/")
def mobile() -> FileResponse:
    return _page("mobile.html")


@router.get("/supervisor/")
def supervisor() -> FileResponse:
    return _page("supervisor.html")


@router.get("/m/manifest.webmanifest")
def manifest() -> Response:
    body = {"name": "网格巡查", "short_name": "网格巡查", "start_url": "/m/", "scope": "/m/", "display": "standalone",
            "lang": "zh-CN", "background_color": "#ffffff", "theme_color": "#b03a2e"}
    return Response(json.dumps(body, ensure_ascii=False), media_type="application/manifest+json", headers=_HTML)


@router.get("/m/sw.js")
def service_worker() -> Response:
    script = (PAGES / "sw.js").read_text(encoding="utf-8")
    script = script.replace("__VERSION__", _shell_version()).replace("__SHELL__", json.dumps(list(SHELL)))
    return Response(script, media_type="text/javascript", headers=_HTML)


@router.get("/pages/config.json")
def config(svc: Service = Depends(service)) -> dict:
    """What the pages need before login: the basemap, the street's extent, and the workflow's Chinese labels
    (from the workflow table, so the pages never spell them differently; ``report`` is a case's first event)."""
    settings = svc.settings
    street = svc.units[svc.units["level"] == "street"]
    actions = {"report": workflow.STATE_LABELS["reported"]} | {a.name: a.label for a in workflow.ACTIONS.values()}
    return {"basemap": basemap(settings.basemap, tianditu_key=settings.tianditu_key).as_json(),
            "bounds": street.total_bounds.tolist(), "street": street["name"].iloc[0] if len(street) else "",
            "labels": {"states": workflow.STATE_LABELS, "actions": actions}}


@lru_cache(maxsize=1)
def _shell_version() -> str:
    digest = hashlib.sha256()
    kept = sorted((PAGES / "static").iterdir()) + [PAGES / n for n in ("mobile.html", "sw.js", "package-lock.json")]
    for path in kept:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]

"""The FastAPI application: ``create_app()`` (the app factory) and ``app`` for ``uvicorn api.app:app``.

One store (one connection pool) is opened at start and closed at shutdown; settings come from the
environment (:class:`api.settings.Settings`); errors of every package become HTTP responses in
:mod:`api.errors`. On the embedded SQLite store the app also runs upload jobs itself, in a thread, so a
single-machine install needs no separate worker; on PostGIS ``gridmap worker`` runs them.
"""

from __future__ import annotations

import gc
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.errors import install_handlers
from api.routes import auth, cases, features, heatmaps, indicators, open311, reports, surveys, tiles, uploads
from api.routes.pages import install_pages
from api.service import Service
from api.settings import Settings
from api.uploads import Uploads


def create_app(settings: Settings | None = None, *, store=None) -> FastAPI:
    """The service. ``store`` (already open) is used as is and not closed; otherwise one is opened."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from storage import open_store

        own = store is None
        opened = open_store(settings.database_url) if own else store
        service = Service(opened, settings)
        app.state.service = service
        app.state.uploads = Uploads(service)
        # What start-up made (the libraries, the store, the service: 140,000 objects) lives as long as the
        # process; left to the collector, every full collection walks it, 80 ms that stall all requests.
        # Once per process: tests start many apps in one, and frozen garbage is never freed.
        if not gc.get_freeze_count():
            gc.freeze()
        stop = threading.Event()
        thread = None
        inprocess = settings.inprocess_worker
        if inprocess is None:
            inprocess = opened.backend == "sqlite"
        if inprocess:
            from api.worker import JobRunner

            thread = threading.Thread(target=JobRunner(service).run_forever, kwargs={"stop": stop},
                                      name="gridmap-jobs", daemon=True)
            thread.start()
        try:
            yield
        finally:
            stop.set()
            if thread is not None:
                thread.join(timeout=10)
            if own:
                opened.close()

    app = FastAPI(title="gridmap", version="0.1.0", lifespan=lifespan,
                  description="Grid management and illegal-construction inspection for street offices (街道办事处).")
    install_handlers(app)
    for module in (auth, reports, cases, uploads, indicators, open311, features, tiles, heatmaps, surveys):
        app.include_router(module.router)
    app.router.routes.insert(0, tiles.TILE_ROUTE)
    install_pages(app)

    @app.get("/health", tags=["meta"], summary="Liveness and the store's backend")
    def health() -> dict:
        return {"status": "ok", "backend": app.state.service.store.backend}

    return app

"""The job worker: runs completed upload batches through the inspection pipeline, durably.

A job is claimed with a lease (``jobs.lease_until``) that the worker renews as the pipeline reports progress.
A worker that dies stops renewing; once the lease runs out another worker (or the same one restarted) claims
the job again and runs it from the top. Nothing is duplicated because every step is idempotent: surveys are
keyed by their content hash, pipeline stages skip work already on disk (:mod:`inspection.pipeline`), and a
case is keyed by its candidate's id (``cases.source_ref``).

A survey batch holds orthomosaics (``.tif``) and/or raw photos (``.jpg``). Photos are quality-checked and
their verdicts kept in the job's result. Each orthomosaic becomes a survey; when an earlier survey overlaps
it, the pair goes through the pipeline and its candidates become cases (:meth:`Service.cases_from_candidates`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import datetime, timedelta
from pathlib import Path

from api.service import Service
from inspection.errors import InspectionError
from storage.records import ConflictError

log = logging.getLogger("gridmap.worker")
LEASE_ENV = "GRIDMAP_JOB_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 120
#: How often the worker sweeps for overdue cases to escalate.
ESCALATION_EVERY = timedelta(minutes=1)


def lease_seconds() -> int:
    raw = os.environ.get(LEASE_ENV, "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_LEASE_SECONDS


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class JobRunner:
    """Claims and runs jobs for one worker process (or the service's in-process thread)."""

    def __init__(self, service: Service, *, owner: str | None = None, lease: int | None = None,
                 n_workers: int = 2, scheduler: str | None = None) -> None:
        self.service = service
        self.store = service.store
        self.owner = owner or worker_name()
        self.lease = timedelta(seconds=lease or lease_seconds())
        self.n_workers = n_workers
        self.scheduler = scheduler
        self._last_escalation: datetime | None = None

    def run_once(self) -> dict | None:
        """Claim and run one job; the finished job, or None when there was nothing to do."""
        self._maybe_escalate()
        now = self.service.clock()
        job = self.store.claim_job(self.owner, now, now + self.lease)
        if job is None:
            return None
        log.info("job %s (batch %s): attempt %s", job["id"], job["batch_id"], job["attempts"])
        try:
            result = self.run_job(job)
        except ConflictError:
            log.warning("job %s: lease lost to another worker; leaving it", job["id"])
            return self.store.get_job(job["id"])
        except (InspectionError, OSError) as error:
            self.store.finish_job(job["id"], self.owner, error=f"{type(error).__name__}: {error}",
                                  now=self.service.clock())
        else:
            self.store.finish_job(job["id"], self.owner, result=result, now=self.service.clock())
        return self.store.get_job(job["id"])

    def run_forever(self, *, idle_sleep: float = 2.0, stop=None) -> None:
        while stop is None or not stop.is_set():
            if self.run_once() is None:
                if stop is not None:
                    stop.wait(idle_sleep)
                else:
                    time.sleep(idle_sleep)

    def _maybe_escalate(self) -> None:
        now = self.service.clock()
        if self._last_escalation is None or now - self._last_escalation >= ESCALATION_EVERY:
            self._last_escalation = now
            escalated = self.service.escalate()
            if escalated:
                log.info("escalated %d overdue case(s)", len(escalated))

    # ---------------------------------------------------------------------------------------- one job

    def run_job(self, job: dict) -> dict:
        progress = _Lease(self, job)
        batch = self.store.get_batch(job["batch_id"])
        directory = self.service.data_dir / "uploads" / batch["id"]
        files = [directory / entry["name"] for entry in batch["manifest"]["files"]]
        photos = [p for p in files if p.suffix.lower() in (".jpg", ".jpeg")]
        orthos = [p for p in files if p.suffix.lower() in (".tif", ".tiff")]
        result: dict = {"photos": self._check_photos(photos), "surveys": [], "pairs": []}
        progress("photos", 1, 1)
        acquired_fallback = batch["manifest"].get("acquired_at")
        surveys = [self._ingest(path, batch, acquired_fallback) for path in orthos]
        result["surveys"] = [s["id"] for s in surveys]
        units = self.service.store.get_units()
        buildings = units[units["level"] == "building"]
        located = units[units["level"] != "building"]
        case_ids: list[int] = []
        for survey in surveys:
            earlier = self.store.list_surveys(bbox=survey["bounds"], before=survey["acquired_at"])
            if not earlier:
                continue
            before = earlier[0]
            from inspection.pipeline import run_pipeline

            candidates = run_pipeline(before["path"], survey["path"], workdir=self.service.data_dir / "work",
                                      buildings=buildings if len(buildings) else None, units=located,
                                      n_workers=self.n_workers, scheduler=self.scheduler, progress=progress)
            opened = self.service.cases_from_candidates(candidates)
            case_ids += [case["id"] for case, _ in opened]
            result["pairs"].append({"before": before["id"], "after": survey["id"], "candidates": len(candidates),
                                    "cases": [case["id"] for case, _ in opened]})
        result["cases"] = sorted(set(case_ids))
        return result

    def _check_photos(self, photos: list[Path]) -> dict:
        if not photos:
            return {"checked": 0, "accepted": 0, "rejected": []}
        from inspection.photos import check_photos

        table = check_photos([str(p) for p in photos], locator=self.service.locator)
        rejected = table[table["status"] == "rejected"]
        return {"checked": len(table), "accepted": int(len(table) - len(rejected)),
                "rejected": [{"file": Path(str(path)).name, "reason": str(reason)}
                             for path, reason in zip(rejected["path"], rejected["reason"])]}

    def _ingest(self, path: Path, batch: dict, acquired_fallback: str | None) -> dict:
        from inspection.ortho import read_ortho_info, stac_item

        info = read_ortho_info(path)
        sha = next(e["sha256"] for e in batch["manifest"]["files"] if e["name"] == path.name)
        acquired = info.datetime or (datetime.fromisoformat(acquired_fallback) if acquired_fallback
                                     else batch["completed_at"])
        stac = stac_item(info, survey_id=sha, datetime=acquired)
        bounds = tuple(float(v) for v in stac["bbox"])
        survey = {"id": sha, "batch_id": batch["id"], "path": str(self.service.data_dir / "blobs" / sha),
                  "acquired_at": acquired, "bounds": bounds, "stac": stac}
        self.store.put_survey(survey)
        return survey


class _Lease:
    """The pipeline's progress callback: records progress and renews the lease a few times per lease."""

    def __init__(self, runner: JobRunner, job: dict) -> None:
        self.runner = runner
        self.job = job
        self.renewed = runner.service.clock()

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = self.runner.service.clock()
        if stage in ("photos", "ingest", "detect", "locate") or now - self.renewed >= self.runner.lease / 3:
            self.runner.store.renew_job(self.job["id"], self.runner.owner, now + self.runner.lease,
                                        {"stage": stage, "done": done, "total": total}, now)
            self.renewed = now

"""Drone survey uploads (chunked, resumable) and the jobs they become."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Request

from api.deps import account, service
from api.errors import InvalidInputError, NotFoundError
from api.schemas import ManifestIn
from api.service import Service
from api.uploads import Uploads

router = APIRouter(tags=["surveys"])


def uploads(request: Request) -> Uploads:
    return request.app.state.uploads


@router.post("/uploads", status_code=201, summary="Open an upload batch with its manifest (idempotent by batch_id)")
def open_batch(body: ManifestIn, who: dict = Depends(account), up: Uploads = Depends(uploads)) -> dict:
    return up.open_batch(who, body.model_dump())


@router.get("/uploads/{batch_id}", summary="What the server holds of each file (resume from 'received')")
def batch_status(batch_id: str, who: dict = Depends(account), up: Uploads = Depends(uploads)) -> dict:
    return up.status(who, batch_id)


@router.patch("/uploads/{batch_id}/files/{name}", summary="Send a chunk of a file from Upload-Offset",
              openapi_extra={"requestBody": {"content": {"application/octet-stream": {"schema": {
                  "type": "string", "format": "binary"}}}, "required": True}})
async def put_chunk(batch_id: str, name: str, request: Request,
                    upload_offset: str = Header(..., alias="Upload-Offset", max_length=20),
                    upload_checksum: str | None = Header(None, alias="Upload-Checksum", max_length=100),
                    who: dict = Depends(account), up: Uploads = Depends(uploads)) -> dict:
    if not upload_offset.isdigit():
        raise InvalidInputError("Upload-Offset must be a whole number of bytes")
    return await up.put_chunk(who, batch_id, name, int(upload_offset), request.stream(), upload_checksum)


@router.post("/uploads/{batch_id}/complete", summary="Queue the batch's job once every file is in")
def complete(batch_id: str, who: dict = Depends(account), up: Uploads = Depends(uploads)) -> dict:
    return up.complete(who, batch_id)


@router.get("/jobs", summary="Jobs (a pipeline account sees its own batches' jobs)")
def list_jobs(who: dict = Depends(account), svc: Service = Depends(service)) -> dict:
    svc.require(who, "pipeline", "supervisor", "admin", doing="read jobs")
    return {"jobs": [job for job in svc.store.list_jobs() if _may_see(svc, who, job)]}


@router.get("/jobs/{job_id}", summary="A job's state and progress")
def get_job(job_id: int, who: dict = Depends(account), svc: Service = Depends(service)) -> dict:
    svc.require(who, "pipeline", "supervisor", "admin", doing="read jobs")
    job = svc.store.get_job(job_id)
    if job is None or not _may_see(svc, who, job):
        raise NotFoundError(f"no job {job_id}")
    return job


def _may_see(svc: Service, who: dict, job: dict) -> bool:
    if who["role"] != "pipeline":
        return True
    batch = svc.store.get_batch(job["batch_id"]) if job["batch_id"] else None
    return batch is not None and batch["username"] == who["username"]

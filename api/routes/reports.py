"""Field reports and photos."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError

from api.deps import account, service
from api.errors import InvalidInputError, NotFoundError, PayloadTooLargeError
from api.schemas import ReportIn
from api.service import Service

router = APIRouter(tags=["reports"])


async def _read_photo(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLargeError(f"photo {upload.filename or ''} is over the limit of {limit:,} bytes")
    return data


@router.post("/reports", status_code=201, summary="File a field report (multipart: 'report' JSON + 'photos')")
async def file_report(report: str = Form(..., max_length=10_000), photos: list[UploadFile] = File(default=[]),
                      who: dict = Depends(account), svc: Service = Depends(service)):
    try:
        body = ReportIn.model_validate_json(report)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInputError(f"report{'.' + where if where else ''}: {first['msg']}") from None
    svc.require(who, "grid_worker", "supervisor", "admin", doing="file field reports")
    data = [await _read_photo(p, svc.settings.max_photo_bytes) for p in photos]
    # The service blocks (database, disk): run it in the thread pool, never on the event loop.
    stored, case, outcome = await run_in_threadpool(svc.file_report, who, body.model_dump(), data)
    payload = {"report": stored, "case": case, "outcome": outcome}
    return JSONResponse(jsonable_encoder(payload), status_code=200 if outcome == "duplicate" else 201)


@router.post("/photos", status_code=201, summary="Upload a photo (for a verification); returns its sha256")
async def upload_photo(photo: UploadFile = File(...), who: dict = Depends(account), svc: Service = Depends(service)):
    svc.require(who, "grid_worker", "supervisor", "admin", doing="upload photos")
    return await run_in_threadpool(svc.store_photo, await _read_photo(photo, svc.settings.max_photo_bytes))


@router.get("/photos/{sha256}", summary="A stored photo", response_class=FileResponse)
def get_photo(sha256: str, who: dict = Depends(account), svc: Service = Depends(service)):
    svc.require(who, "grid_worker", "supervisor", "admin", doing="read photos")
    path = svc.photo_path(sha256)
    meta = svc.store.get_photo(sha256)
    if meta is None or not path.exists():
        raise NotFoundError("no such photo")
    return FileResponse(path, media_type=f"image/{meta['format']}" if meta["format"] != "image" else None)

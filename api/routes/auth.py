"""Log in, and who am I."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from api.deps import account, service
from api.schemas import Login
from api.service import Service

router = APIRouter(tags=["auth"])


@router.post("/auth/token", summary="Exchange username and password for a bearer token")
def login(body: Login, svc: Service = Depends(service)) -> dict:
    return svc.login(body.username, body.password)


@router.get("/me", summary="The calling account")
def me(who: dict = Depends(account)) -> dict:
    return {k: who[k] for k in ("username", "role", "display_name", "scope", "absent")}


@router.post("/auth/logout", summary="End every session of the calling account (all its tokens)")
def logout(who: dict = Depends(account), svc: Service = Depends(service)) -> dict:
    return {"revoked": svc.logout(who)}

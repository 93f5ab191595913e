"""Dependencies shared by the routers: the service and the calling account."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.service import Service

_bearer = HTTPBearer(auto_error=False, description="A token from POST /auth/token")


def service(request: Request) -> Service:
    return request.app.state.service


def account(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
            svc: Service = Depends(service)) -> dict:
    return svc.authenticate(credentials.credentials if credentials else None)

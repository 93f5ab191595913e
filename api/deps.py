"""Dependencies shared by the routers: the service and the calling account.

Both are coroutines: FastAPI runs a plain function dependency in a worker thread, a hop that costs more
than the work here. The account comes from the process's token cache when it can; only checking a token
anew reads the store, in a thread.
"""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.service import Service

_bearer = HTTPBearer(auto_error=False, description="A token from POST /auth/token")


async def service(request: Request) -> Service:
    return request.app.state.service


async def account(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
                  svc: Service = Depends(service)) -> dict:
    return await account_of(svc, credentials.credentials if credentials else None)


async def account_of(svc: Service, token: str | None) -> dict:
    """The account of a bearer token (401 without one, or for one unknown or expired)."""
    return svc.remembered_account(token) or await run_in_threadpool(svc.authenticate, token)

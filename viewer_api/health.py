"""Liveness and readiness endpoints for orchestrators and load balancers."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from imaging_hub.health import OK, readiness
from viewer_api.deps import HubDep

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive and serving requests."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(hub: HubDep) -> JSONResponse:
    """The database, storage and broker are reachable (200), or which are not (503)."""
    checks = readiness(hub)
    ready = all(value == OK for value in checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)

"""The FastAPI application factory: one app per settings, the hub opened for its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from imaging_hub.auth import TokenIssuer
from imaging_hub.config import Settings
from imaging_hub.hub import Hub
from viewer_api import health, metrics
from viewer_api.audit import AuditMiddleware
from viewer_api.auth import AUTHENTICATED, install_route_templates
from viewer_api.dicomweb import qido, rendered, stow, wado, wado_uri
from viewer_api.errors import install_error_handlers
from viewer_api.rest import audit as audit_api
from viewer_api.rest import (
    auth,
    downloads,
    jobs,
    patients,
    previews,
    records,
    referrals,
    shares,
    studies,
    tokens,
    users,
)

__all__ = ["PROTECTED_ROUTERS", "create_app"]

#: Every router under /api and /dicomweb except auth's, each with its prefix: all of their
#: routes need a valid bearer token (DESIGN invariant 6). Add new routers here.
PROTECTED_ROUTERS = [
    (qido.router, "/dicomweb"),
    (wado.router, "/dicomweb"),
    (rendered.router, "/dicomweb"),
    (stow.router, "/dicomweb"),
    (wado_uri.router, ""),
    (studies.router, "/api"),
    (users.router, "/api"),
    (previews.router, "/api"),
    (jobs.router, "/api"),
    # Clinician access: patients, downloads, records, referrals, share links, tokens, audit.
    (patients.router, "/api"),
    (downloads.router, "/api"),
    (records.router, "/api"),
    (referrals.router, "/api"),
    (shares.router, "/api"),
    (tokens.router, "/api"),
    (tokens.admin_router, "/api"),
    (audit_api.router, "/api"),
]


def create_app(settings: Settings) -> FastAPI:
    """Build the HTTP app for settings; the hub is opened at startup and closed at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub = Hub.open(settings)
        app.state.hub = hub
        app.state.tokens = TokenIssuer.from_settings(settings)
        try:
            yield
        finally:
            hub.close()

    app = FastAPI(title="Imaging Hub", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(metrics.router)  # public, like /healthz: counts only, no patient data
    app.include_router(auth.router, prefix="/api")  # token and refresh are public; me is not
    for router, prefix in PROTECTED_ROUTERS:
        app.include_router(router, prefix=prefix, dependencies=AUTHENTICATED)
    # Access checks need each route's full template; every data access is audited.
    install_route_templates(app)
    app.add_middleware(AuditMiddleware)
    return app

"""The FastAPI application factory: one app per settings, the hub opened for its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from imaging_hub.config import Settings
from imaging_hub.hub import Hub
from viewer_api import health
from viewer_api.dicomweb import qido
from viewer_api.errors import install_error_handlers
from viewer_api.rest import studies

__all__ = ["create_app"]


def create_app(settings: Settings) -> FastAPI:
    """Build the HTTP app for settings; the hub is opened at startup and closed at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub = Hub.open(settings)
        app.state.hub = hub
        try:
            yield
        finally:
            hub.close()

    app = FastAPI(title="Imaging Hub", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(qido.router, prefix="/dicomweb")
    app.include_router(studies.router, prefix="/api")
    return app

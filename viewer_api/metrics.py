"""``GET /metrics``: the hub's metrics in the Prometheus text format (public, like /healthz)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from imaging_hub.metrics import exposition
from viewer_api.deps import HubDep

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response)
def metrics(hub: HubDep) -> Response:
    """Receiver counters and gauges summed over every receiver process of the data dir."""
    return Response(exposition(hub.settings.data_dir), media_type=CONTENT_TYPE_LATEST)

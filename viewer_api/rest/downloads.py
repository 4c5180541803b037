"""Study downloads: a streamed ZIP of the stored originals (optionally DICOMDIR / IHE PDI media).

``GET /api/studies/{study_uid}/download`` gives one study (or some of its series);
``POST /api/downloads`` a selection of studies and series. The answer has an exact
``Content-Length`` and is produced while it is sent, so the API's memory does not grow with
the study. Each study downloaded is audited as an export.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from imaging_hub.db.models import Role
from imaging_hub.dicom.uids import validate_uid
from imaging_hub.export import Export, Layout, export_files, export_zip
from imaging_hub.hub import Hub
from viewer_api.audit import AuditContext
from viewer_api.auth import require_role
from viewer_api.deps import HubDep
from viewer_api.rest.schemas import bad_input

__all__ = ["ANY_ROLE", "DownloadRequest", "router"]

router = APIRouter(tags=["downloads"])

_ZIP = {
    200: {"content": {"application/zip": {}}, "description": "The ZIP archive, streamed."},
    400: {"description": "A UID or the layout is malformed."},
    404: {"description": "A study or series is not in the hub."},
    413: {"description": "The selection holds too many instances."},
}
#: Every signed-in user may download (it is a read, sent as POST for its body).
ANY_ROLE = require_role(*Role)


def _answer(
    hub: Hub,
    request: Request,
    study_uids: list[str],
    series_uids: list[str],
    layout: Layout,
    name: str,
) -> StreamingResponse:
    """Stream the ZIP of a selection and tell the audit trail which studies left."""
    with hub.db.read() as session, bad_input():
        files = export_files(hub, session, study_uids, series_uids=series_uids)
    with bad_input():
        export: Export = export_zip(files, layout=layout)
    request.state.audit = AuditContext(
        study_uids=list(export.study_uids),
        detail={"instances": export.count, "bytes": export.size, "layout": layout.value},
    )
    headers = {
        "Content-Length": str(export.size),
        "Content-Disposition": f'attachment; filename="{name}.zip"',
        "Cache-Control": "no-store",
    }
    return StreamingResponse(iter(export.chunks), media_type="application/zip", headers=headers)


@router.get("/studies/{study_uid}/download", response_class=StreamingResponse, responses=_ZIP)
def download_study(
    study_uid: str,
    request: Request,
    hub: HubDep,
    layout: Layout = Layout.FILES,
    series: Annotated[
        list[str] | None, Query(description="Only these series of the study (repeatable).")
    ] = None,
) -> StreamingResponse:
    """One study as a ZIP of its original files: plain folders, DICOMDIR media or IHE PDI."""
    uid = validate_uid(study_uid, what="StudyInstanceUID")
    return _answer(hub, request, [uid], series or [], layout, f"study-{uid}")


class DownloadRequest(BaseModel):
    """A selection to download: whole studies, or only some of their series."""

    study_uids: list[str] = Field(min_length=1, max_length=1000)
    series_uids: list[str] = Field(default_factory=list, max_length=10000)
    layout: Layout = Layout.FILES


@router.post(
    "/downloads",
    response_class=StreamingResponse,
    responses=_ZIP,
    dependencies=[Depends(ANY_ROLE)],
)
def download_selection(body: DownloadRequest, request: Request, hub: HubDep) -> StreamingResponse:
    """Several studies (or series of them) in one ZIP."""
    return _answer(hub, request, body.study_uids, body.series_uids, body.layout, "studies")

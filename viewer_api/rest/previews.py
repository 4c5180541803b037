"""Study processing status, series thumbnails and per-instance previews (JPEG/PNG, ETags)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel
from sqlalchemy import select

from imaging_hub.db.models import Instance, PreviewState, Series, Study
from imaging_hub.dicom.uids import validate_uid
from imaging_hub.errors import NotFound
from imaging_hub.previews import PreviewKind, derived_image, locate, preview_files
from imaging_hub.render import ImageFormat
from imaging_hub.status import series_thumbnails, study_status
from viewer_api.deps import HubDep, ReadSession

__all__ = ["icon_response", "router", "serve_file"]

router = APIRouter(tags=["previews"])

#: Clients revalidate with the ETag after five minutes (a new version may replace a preview).
CACHE_CONTROL = "private, max-age=300"
ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="256" height="256" viewBox="0 0 24 24">'
    '<rect width="24" height="24" fill="#222"/><path fill="#bbb" d="M6 2h9l5 5v15H6z"/>'
    '<path fill="#888" d="M15 2v5h5"/><path stroke="#444" d="M8 12h9M8 15h9M8 18h6"/></svg>'
)


class StudyStatusOut(BaseModel):
    """Where a study stands: arriving and processing, ready, or with failed work."""

    study_uid: str
    phase: str
    received: int
    indexed: int
    previews_ready: int
    failed: int
    previews: dict[str, int]
    jobs: dict[str, int]


class SeriesThumbnailOut(BaseModel):
    """A series with the URL of its representative thumbnail."""

    series_uid: str
    series_number: int | None
    modality: str | None
    description: str | None
    num_instances: int
    thumbnail_url: str | None
    preview_state: str | None


@router.get("/studies/{study_uid}/status", response_model=StudyStatusOut)
def get_study_status(study_uid: str, session: ReadSession) -> StudyStatusOut:
    """Received / indexed / previews-ready counts and job states of a study."""
    status = study_status(session, validate_uid(study_uid, what="StudyInstanceUID"))
    return StudyStatusOut(
        study_uid=status.study_uid,
        phase=status.phase,
        received=status.received,
        indexed=status.indexed,
        previews_ready=status.previews_ready,
        failed=status.failed,
        previews=status.previews,
        jobs=status.jobs,
    )


@router.get("/studies/{study_uid}/thumbnails", response_model=list[SeriesThumbnailOut])
def get_study_thumbnails(study_uid: str, session: ReadSession) -> list[SeriesThumbnailOut]:
    """The study's series in order, each with its middle image's thumbnail URL."""
    rows = series_thumbnails(session, validate_uid(study_uid, what="StudyInstanceUID"))
    return [
        SeriesThumbnailOut(
            series_uid=r.series_uid,
            series_number=r.series_number,
            modality=r.modality,
            description=r.description,
            num_instances=r.num_instances,
            thumbnail_url=f"/api/instances/{r.sop_instance_uid}/thumbnail"
            if r.sop_instance_uid
            else None,
            preview_state=r.preview_state,
        )
        for r in rows
    ]


def _etag(path: Path) -> str:
    stat = path.stat()
    key = f"{path}:{stat.st_mtime_ns}:{stat.st_size}".encode()
    return '"' + hashlib.sha256(key).hexdigest()[:32] + '"'


def serve_file(path: Path, media: str, request: Request) -> Response:
    """A derived image with its ETag and cache headers, or 304 when the client has it."""
    etag = _etag(path)
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if etag in [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type=media, headers=headers)


def icon_response() -> Response:
    """The generic icon shown for instances without pixel data (PDF, SR, …)."""
    return Response(ICON, media_type="image/svg+xml", headers={"Cache-Control": CACHE_CONTROL})


@router.get("/instances/{sop_uid}/{kind}", response_model=None)
def get_instance_image(
    sop_uid: str,
    kind: PreviewKind,
    request: Request,
    hub: HubDep,
    session: ReadSession,
    format: Literal["jpeg", "png"] = "jpeg",
) -> Response:
    """An instance's thumbnail or preview (JPEG, or PNG on request), or an icon for a non-image."""
    uid = validate_uid(sop_uid, what="SOPInstanceUID")
    row = session.execute(
        select(Instance.preview_state, Series.series_uid, Study.study_uid)
        .join(Series, Series.id == Instance.series_pk)
        .join(Study, Study.id == Series.study_pk)
        .where(Instance.sop_instance_uid == uid)
    ).one_or_none()
    if row is None:
        raise NotFound(f"instance {uid} is not in the hub")
    if row.preview_state == PreviewState.ICON:
        return icon_response()
    if row.preview_state != PreviewState.READY:
        raise NotFound(f"the {kind.value} of instance {uid} is {row.preview_state}, not ready")
    fmt = ImageFormat(format)
    files = preview_files(hub, row.study_uid, row.series_uid, uid)
    path = files.path(kind, fmt)
    if not path.exists():
        located = locate(hub, uid)
        if located is None:
            raise NotFound(f"instance {uid} is not in the hub")
        path = derived_image(hub, located[0], located[1], kind, fmt)
    return serve_file(path, fmt.media_type, request)

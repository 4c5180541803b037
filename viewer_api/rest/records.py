"""``/api/records``: notes and reports on a patient or study, as markdown text or a PDF.

Every clinician reads every record. A PDF report on a study is also stored as a DICOM
Encapsulated PDF instance in the study (see ``imaging_hub.records``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from imaging_hub.catalog import patient_record_id
from imaging_hub.db.models import RecordKind, Role
from imaging_hub.dicom.uids import validate_uid
from imaging_hub.errors import TooLarge
from imaging_hub.records import (
    MAX_TEXT,
    PDF,
    RecordInfo,
    add_pdf_report,
    add_text_record,
    get_record,
    list_records,
    max_pdf_bytes,
    open_document,
)
from viewer_api.audit import AuditContext
from viewer_api.auth import CurrentUser, require_role
from viewer_api.deps import HubDep, ReadSession
from viewer_api.rest.schemas import RecordItem, bad_input

__all__ = ["DeclaredSizeRoute", "RecordIn", "router"]

router = APIRouter(tags=["records"])

#: Every signed-in user may write notes and reports.
WRITERS = [Depends(require_role(*Role))]
_WRITE_ERRORS = {
    400: {"description": "Bad input (the reason is in detail)."},
    404: {"description": "No such patient or study."},
    413: {"description": "The PDF is too large."},
}
_CHUNK = 1024 * 1024


class RecordIn(BaseModel):
    """A markdown note or report on a patient (mrn) or one of their studies (study_uid)."""

    kind: Literal["note", "report"] = "note"
    title: str = Field(min_length=1, max_length=256)
    markdown: str = Field(min_length=1, max_length=MAX_TEXT)
    mrn: str | None = Field(default=None, max_length=64)
    study_uid: str | None = Field(default=None, max_length=64)


def _audited(request: Request, info: RecordInfo) -> RecordInfo:
    request.state.audit = AuditContext(
        study_uids=[info.study_uid] if info.study_uid else [],
        patient_record_id=info.patient_record_id,
        detail={"record": info.public_id, "kind": info.kind.value},
    )
    return info


@router.post(
    "/records",
    response_model=RecordItem,
    status_code=201,
    dependencies=WRITERS,
    responses=_WRITE_ERRORS,
)
def create_record(body: RecordIn, request: Request, hub: HubDep, user: CurrentUser) -> RecordItem:
    """Write a markdown note or report; author, specialty and time are taken from the sign-in."""
    with bad_input():
        info = add_text_record(
            hub.db,
            author=user,
            title=body.title,
            markdown=body.markdown,
            kind=RecordKind(body.kind),
            mrn=body.mrn,
            study_uid=body.study_uid,
        )
    return RecordItem.of(_audited(request, info))


async def _save_upload(upload: UploadFile, target: Path, limit: int) -> None:
    """Copy an upload to target in chunks; TooLarge beyond limit bytes."""
    written = 0
    with target.open("wb") as out:
        while chunk := await upload.read(_CHUNK):
            written += len(chunk)
            if written > limit:
                raise TooLarge(f"a PDF report may have at most {limit} bytes")
            out.write(chunk)


#: What a PDF upload's form adds to the PDF: boundaries, part headers, title and target.
_FORM_SLACK = 16 * 1024


class DeclaredSizeRoute(APIRoute):
    """A route that refuses a body declared larger than a PDF report may be, before reading it.

    FastAPI reads a form before it runs any dependency, so the check is made here.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The route's handler, after a look at Content-Length."""
        handler = super().get_route_handler()

        async def check_length(request: Request) -> Response:
            limit = max_pdf_bytes(request.app.state.hub.settings)
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit + _FORM_SLACK:
                raise TooLarge(f"a PDF report may have at most {limit} bytes")
            return await handler(request)

        return check_length


async def upload_report(
    request: Request,
    hub: HubDep,
    user: CurrentUser,
    file: Annotated[UploadFile, File(description="The report as a PDF file.")],
    title: Annotated[str, Form(min_length=1, max_length=256)],
    mrn: Annotated[str | None, Form(max_length=64)] = None,
    study_uid: Annotated[str | None, Form(max_length=64)] = None,
) -> RecordItem:
    """Upload a PDF report; on a study it also becomes an Encapsulated PDF instance there."""
    mrn, study_uid = mrn or None, study_uid or None  # an HTML form sends empty fields
    with tempfile.TemporaryDirectory(dir=hub.settings.data_dir) as tmp:
        path = Path(tmp) / "report.pdf"
        await _save_upload(file, path, max_pdf_bytes(hub.settings))
        with bad_input():
            info = await run_in_threadpool(
                lambda: add_pdf_report(
                    hub, author=user, title=title, pdf_path=path, mrn=mrn, study_uid=study_uid
                )
            )
    return RecordItem.of(_audited(request, info))


router.add_api_route(
    "/records/pdf",
    upload_report,
    methods=["POST"],
    response_model=RecordItem,
    status_code=201,
    dependencies=WRITERS,
    responses=_WRITE_ERRORS,
    route_class_override=DeclaredSizeRoute,
)


@router.get("/records", response_model=list[RecordItem])
def search_records(
    session: ReadSession,
    request: Request,
    mrn: Annotated[str | None, Query(max_length=64)] = None,
    study_uid: Annotated[str | None, Query(max_length=64)] = None,
) -> list[RecordItem]:
    """The notes and reports of a patient (including those on their studies) or of a study."""
    with bad_input():
        if mrn is None and study_uid is None:
            raise ValueError("give mrn or study_uid")
        uid = validate_uid(study_uid, what="StudyInstanceUID") if study_uid else None
        patient = patient_record_id(session, mrn) if mrn else None
    request.state.audit = AuditContext(study_uids=[uid] if uid else [], patient_record_id=patient)
    return [RecordItem.of(r) for r in list_records(session, mrn=mrn, study_uid=uid)]


@router.get("/records/{record_id}", response_model=RecordItem, responses={404: {}})
def read_record(record_id: str, session: ReadSession, request: Request) -> RecordItem:
    """One note or report."""
    return RecordItem.of(_audited(request, get_record(session, record_id)))


@router.get(
    "/records/{record_id}/document",
    response_class=StreamingResponse,
    responses={200: {"content": {PDF: {}}}, 404: {}},
)
def read_document(
    record_id: str, session: ReadSession, request: Request, hub: HubDep
) -> StreamingResponse:
    """A PDF report's document, as uploaded."""
    info = _audited(request, get_record(session, record_id))
    fh = open_document(hub, info)

    def chunks() -> Iterator[bytes]:
        with fh:
            while chunk := fh.read(_CHUNK):
                yield chunk

    headers = {"Content-Length": str(info.document_size), "Cache-Control": "private, no-cache"}
    return StreamingResponse(chunks(), media_type=PDF, headers=headers)

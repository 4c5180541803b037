"""``/api/admin/audit``: search the audit trail, or export it as JSON lines (admins only).

Searches are newest first and page by cursor: pass the ``X-Next-Cursor`` of one page as
``before`` to get the next. Reading the trail is itself audited (audit log used).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from imaging_hub import audit
from imaging_hub.db.models import Role
from viewer_api.auth import require_role
from viewer_api.deps import HubDep, ReadSession
from viewer_api.rest.schemas import Limit, bad_input

__all__ = ["AuditItem", "router"]

router = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[Depends(require_role(Role.ADMIN))]
)

NEXT_HEADER = "X-Next-Cursor"
JSON_LINES = "application/x-ndjson"


class AuditItem(BaseModel):
    """One audit event (PS3.15 A.5): who did what to which patient's data, when, how it went."""

    id: int
    at: dt.datetime
    actor: str
    actor_kind: str
    action: str
    event_id: str
    outcome: str
    outcome_code: int
    source_address: str | None
    patient_mrn: str | None
    study_uid: str | None
    detail: dict[str, Any]


def _filters(
    actor: Annotated[str | None, Query(max_length=128, description="Username or AE title.")] = None,
    actor_kind: Annotated[str | None, Query(pattern="^(user|token|share|aet|system)$")] = None,
    patient_mrn: Annotated[str | None, Query(max_length=64)] = None,
    study_uid: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=64, description="e.g. export, query.")] = None,
    outcome: Annotated[
        str | None, Query(pattern="^(success|failure|serious-failure|major-failure)$")
    ] = None,
    since: Annotated[dt.datetime | None, Query(description="ISO 8601 with a time zone.")] = None,
    until: Annotated[dt.datetime | None, Query(description="ISO 8601 with a time zone.")] = None,
) -> audit.AuditFilters:
    """The audit filters of a request's query."""
    return audit.AuditFilters(
        actor=actor,
        actor_kind=actor_kind,
        patient_mrn=patient_mrn,
        study_uid=study_uid,
        action=action,
        outcome=outcome,
        since=since,
        until=until,
    )


Filters = Annotated[audit.AuditFilters, Depends(_filters)]


@router.get("/audit", response_model=list[AuditItem], responses={400: {}})
def search_audit(
    session: ReadSession,
    response: Response,
    filters: Filters,
    limit: Limit = 100,
    before: Annotated[int | None, Query(ge=1, le=2**62, description="Cursor.")] = None,
) -> list[AuditItem]:
    """Audit events matching every filter, newest first."""
    with bad_input():
        rows = audit.search_events(session, filters=filters, limit=limit + 1, before_id=before)
    if len(rows) > limit:
        response.headers[NEXT_HEADER] = str(rows[limit - 1].id)
    return [AuditItem(**row.as_json()) for row in rows[:limit]]


@router.get(
    "/audit/export",
    response_class=StreamingResponse,
    responses={200: {"content": {JSON_LINES: {}}}, 400: {}},
)
def export_audit(hub: HubDep, filters: Filters) -> StreamingResponse:
    """Every matching audit event as JSON lines (one object a line), newest first, streamed."""
    with bad_input():
        filters.conditions()  # refuse bad filters before the answer starts

    def lines() -> Iterator[bytes]:
        with hub.db.read() as session:
            for entry in audit.iter_events(session, filters=filters):
                yield json.dumps(entry.as_json(), ensure_ascii=False).encode() + b"\n"

    headers = {"Content-Disposition": 'attachment; filename="audit.jsonl"'}
    return StreamingResponse(lines(), media_type=JSON_LINES, headers=headers)

"""Admin view of background work: list jobs, re-run failed ones."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from imaging_hub.auth import Role
from imaging_hub.db.models import JobState
from imaging_hub.jobs import recent_jobs, retry_failed
from viewer_api.auth import require_role
from viewer_api.deps import HubDep

__all__ = ["router"]

router = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[Depends(require_role(Role.ADMIN))]
)


class JobOut(BaseModel):
    """A job as the admin sees it (payloads hold IDs only, no patient data)."""

    id: int
    kind: str
    state: str
    study_uid: str | None
    attempts: int
    last_error: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None


class RetryIn(BaseModel):
    """Which failed jobs to re-run; all failed jobs when job_ids is omitted."""

    job_ids: list[Annotated[int, Field(ge=1, le=2**62)]] | None = Field(
        default=None, max_length=10_000
    )


class RetryOut(BaseModel):
    """How many jobs were queued again."""

    requeued: int


@router.get("/jobs", response_model=list[JobOut])
def list_jobs(
    hub: HubDep,
    state: JobState | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
) -> list[JobOut]:
    """The newest jobs, optionally in one state."""
    return [
        JobOut(
            id=j.id,
            kind=j.kind,
            state=j.state,
            study_uid=j.study_uid,
            attempts=j.attempts,
            last_error=j.last_error,
            created_at=j.created_at,
            finished_at=j.finished_at,
        )
        for j in recent_jobs(hub.db, state=state, limit=limit)
    ]


@router.post("/jobs/retry", response_model=RetryOut)
def retry_jobs(body: RetryIn, hub: HubDep) -> RetryOut:
    """Queue failed jobs again with fresh attempts."""
    return RetryOut(requeued=retry_failed(hub.db, body.job_ids))

"""The job table: a transactional outbox of work, leased by workers, re-queued by the reaper.

A job row is inserted in the same transaction as the change that needs it (``enqueue``). The
relay marks queued rows published and hands their IDs to the task queue; a worker ``acquire``s a
lease, runs the kind's handler and marks the job done, or ``fail``s it with back-off. The reaper
re-queues jobs whose lease expired (the worker died) or whose message never arrived, and marks
a job failed after ``max_attempts``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, func, insert, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement, Executable

from imaging_hub.db.engine import Database
from imaging_hub.db.models import Job, JobState, utcnow

__all__ = [
    "FAST",
    "KIND_QUEUES",
    "SLOW",
    "Lease",
    "PermanentError",
    "acquire",
    "acquire_more",
    "any_due",
    "claim_for_publish",
    "complete",
    "complete_all",
    "enqueue",
    "extend",
    "fail",
    "job_kind",
    "reap",
    "recent_jobs",
    "retry_failed",
    "unpublish",
]

FAST = "fast"
SLOW = "slow"

#: Which queue each kind of job goes to: quick work apart from long work.
KIND_QUEUES: dict[str, str] = {
    "index": FAST,
    "identity": FAST,
    "forward": FAST,
    "render": SLOW,
    "import": SLOW,
}


class PermanentError(Exception):
    """A job failed in a way that retrying cannot fix (e.g. the input is unreadable)."""


def _changed(session: Session, statement: Executable) -> int:
    """Run an UPDATE and return how many rows it changed."""
    result = session.execute(statement)
    assert isinstance(result, CursorResult)
    return result.rowcount


#: One statement, parameters per call (built once: SQLAlchemy reuses its compiled form).
_INSERT_JOB = insert(Job).returning(Job.id)


def enqueue(
    session: Session,
    kind: str,
    payload: dict[str, Any],
    *,
    study_uid: str | None = None,
    max_attempts: int = 5,
    not_before: dt.datetime | None = None,
) -> int:
    """Add a job in the caller's transaction, so it commits (or not) with the change it serves.

    Returns the job's ID.
    """
    if kind not in KIND_QUEUES:
        raise ValueError(f"unknown job kind {kind!r}")
    now = utcnow()
    row = {
        "kind": kind,
        "queue": KIND_QUEUES[kind],
        "payload": payload,
        "study_uid": study_uid,
        "state": JobState.QUEUED,
        "attempts": 0,
        "max_attempts": max_attempts,
        "not_before": not_before or now,
        "created_at": now,
    }
    # On the connection: a plain INSERT, without the ORM's bulk-insert machinery.
    return int(session.connection().execute(_INSERT_JOB, row).scalar_one())


def claim_for_publish(
    db: Database,
    *,
    limit: int = 200,
    max_in_flight: int = 256,
    queues: Collection[str] | None = None,
) -> list[tuple[int, str]]:
    """Mark due queued jobs published and return the (id, queue) pairs for the relay to send.

    At most max_in_flight jobs per queue are published or running at once, so a large backlog
    waits in the job table rather than in the broker, where it would outlive the publish
    timeout and be sent again. Every job published gets its own message, also an index job: a
    worker that runs one takes up to HUB_JOBS_BATCH_SIZE due jobs of its kind at once
    (imaging_hub.work.run_job), queued or published, and the other messages find their jobs
    done. queues: publish only the jobs of these queues (default: all).
    """
    now = utcnow()
    wanted = set(KIND_QUEUES.values()) if queues is None else set(queues)
    with db.write() as s:
        busy = dict(
            s.execute(
                select(Job.queue, func.count(Job.id))
                .where(Job.state.in_([JobState.PUBLISHED, JobState.RUNNING]))
                .group_by(Job.queue)
            ).all()
        )
        rows: list[tuple[int, str, str]] = []
        for queue in sorted(set(KIND_QUEUES.values()) & wanted):
            room = min(limit, max_in_flight - busy.get(queue, 0))
            if room <= 0:
                continue
            query = (
                select(Job.id, Job.kind)
                .where(Job.state == JobState.QUEUED, Job.queue == queue, Job.not_before <= now)
                .order_by(Job.id)
                .limit(room)
            )
            if not db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            rows += [(row.id, row.kind, queue) for row in s.execute(query)]
        if rows:
            s.execute(
                update(Job)
                .where(Job.id.in_([r[0] for r in rows]), Job.state == JobState.QUEUED)
                .values(state=JobState.PUBLISHED, published_at=now)
            )
    return [(job_id, queue) for job_id, _kind, queue in rows]


def unpublish(db: Database, job_ids: list[int]) -> None:
    """Put jobs whose message could not be sent back in the queue (e.g. the broker is down)."""
    if not job_ids:
        return
    with db.write() as s:
        s.execute(
            update(Job)
            .where(Job.id.in_(job_ids), Job.state == JobState.PUBLISHED)
            .values(state=JobState.QUEUED, published_at=None)
        )


@dataclass(frozen=True, slots=True)
class Lease:
    """A worker's claim on one attempt of a job; stale once another attempt has started."""

    job_id: int
    attempt: int
    owner: str
    kind: str
    payload: dict[str, Any]


def _held(lease: Lease) -> ColumnElement[bool]:
    """Rows still held by this lease: same job, still running, same attempt and owner."""
    return and_(
        Job.id == lease.job_id,
        Job.state == JobState.RUNNING,
        Job.attempts == lease.attempt,
        Job.lease_owner == lease.owner,
    )


def job_kind(db: Database, job_id: int) -> str | None:
    """The kind of a job, or None when there is no such job."""
    with db.read() as s:
        return s.execute(select(Job.kind).where(Job.id == job_id)).scalar_one_or_none()


def acquire(db: Database, job_id: int, *, owner: str, lease_seconds: float) -> Lease | None:
    """Take the lease on a job if nobody holds a live one; None when it is done or taken."""
    with db.read() as s:  # a job another run already finished costs no write lock
        state = s.execute(select(Job.state).where(Job.id == job_id)).scalar_one_or_none()
    if state is None or state in (JobState.DONE, JobState.FAILED):
        return None
    now = utcnow()
    with db.write() as s:
        changed = _changed(
            s,
            update(Job)
            .where(
                Job.id == job_id,
                or_(
                    and_(
                        Job.state.in_([JobState.QUEUED, JobState.PUBLISHED]),
                        Job.not_before <= now,
                    ),
                    and_(Job.state == JobState.RUNNING, Job.lease_until < now),
                ),
                Job.attempts < Job.max_attempts,
            )
            .values(
                state=JobState.RUNNING,
                attempts=Job.attempts + 1,
                lease_until=now + dt.timedelta(seconds=lease_seconds),
                lease_owner=owner,
            ),
        )
        if changed != 1:
            return None
        job = s.get(Job, job_id)
        assert job is not None
        return Lease(job.id, job.attempts, owner, job.kind, dict(job.payload))


def _due(kind: str, exclude: int, now: dt.datetime) -> Select[int]:
    """The IDs of a kind's jobs that a worker may take now, but exclude."""
    return select(Job.id).where(
        Job.kind == kind,
        Job.id != exclude,
        Job.state.in_([JobState.QUEUED, JobState.PUBLISHED]),
        Job.not_before <= now,
        Job.attempts < Job.max_attempts,
    )


def any_due(db: Database, kind: str, *, exclude: int) -> bool:
    """Whether a job of the kind (other than exclude) may be taken now; reads, takes no lock."""
    with db.read() as s:
        return s.execute(_due(kind, exclude, utcnow()).limit(1)).first() is not None


def acquire_more(
    db: Database,
    kind: str,
    *,
    owner: str,
    lease_seconds: float,
    limit: int,
    exclude: int,
) -> list[Lease]:
    """Take leases on up to limit more due jobs of a kind, oldest first, for one batched run.

    Only queued or published jobs are taken (never a running one); a taken job's message, if
    any, later finds it leased or done and is skipped.
    """
    if limit <= 0:
        return []
    now = utcnow()
    with db.write() as s:
        query = _due(kind, exclude, now).order_by(Job.id).limit(limit)
        if not db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        ids = list(s.execute(query).scalars())
        if not ids:
            return []
        s.execute(
            update(Job)
            .where(Job.id.in_(ids))
            .values(
                state=JobState.RUNNING,
                attempts=Job.attempts + 1,
                lease_until=now + dt.timedelta(seconds=lease_seconds),
                lease_owner=owner,
            )
        )
        rows = s.execute(
            select(Job.id, Job.attempts, Job.payload).where(Job.id.in_(ids)).order_by(Job.id)
        ).all()
    return [Lease(row.id, row.attempts, owner, kind, dict(row.payload)) for row in rows]


def complete_all(db: Database, leases: list[Lease]) -> set[int]:
    """Mark the jobs still held by these leases (one owner's) done at once; returns their IDs."""
    if not leases:
        return set()
    owners = {lease.owner for lease in leases}
    if len(owners) != 1:
        raise ValueError("complete_all takes the leases of one owner")
    with db.write() as s:
        # One owner runs one batch at a time, so its name on a running job is its lease.
        statement = (
            update(Job)
            .where(
                Job.id.in_([lease.job_id for lease in leases]),
                Job.state == JobState.RUNNING,
                Job.lease_owner == owners.pop(),
            )
            .values(state=JobState.DONE, finished_at=utcnow(), lease_until=None, last_error=None)
            .returning(Job.id)
        )
        return set(s.execute(statement).scalars())


def extend(db: Database, lease: Lease, *, lease_seconds: float) -> bool:
    """Push the lease's expiry forward while work goes on; False if the lease was lost."""
    with db.write() as s:
        until = utcnow() + dt.timedelta(seconds=lease_seconds)
        return _changed(s, update(Job).where(_held(lease)).values(lease_until=until)) == 1


def complete(db: Database, lease: Lease) -> bool:
    """Mark the job done if the lease still holds it; False when another attempt took over."""
    with db.write() as s:
        return (
            _changed(
                s,
                update(Job)
                .where(_held(lease))
                .values(
                    state=JobState.DONE, finished_at=utcnow(), lease_until=None, last_error=None
                ),
            )
            == 1
        )


def backoff_seconds(attempt: int) -> float:
    """Delay before retry number attempt: 2, 4, 8 … seconds, at most five minutes."""
    return float(min(2**attempt, 300))


def fail(db: Database, lease: Lease, error: str, *, permanent: bool = False) -> JobState | None:
    """Record a failed attempt: a retry with back-off, or failed for good; None if lease lost."""
    now = utcnow()
    with db.write() as s:
        job = s.execute(select(Job).where(_held(lease)).with_for_update()).scalar_one_or_none()
        if job is None:
            return None
        job.last_error = error[-4000:]
        job.lease_until = None
        if permanent or job.attempts >= job.max_attempts:
            job.state = JobState.FAILED
            job.finished_at = now
        else:
            job.state = JobState.QUEUED
            job.published_at = None
            job.not_before = now + dt.timedelta(seconds=backoff_seconds(job.attempts))
        return job.state


@dataclass(frozen=True, slots=True)
class ReapResult:
    """What one reaper pass changed."""

    requeued: int
    failed: int
    republished: int


def reap(db: Database, *, publish_timeout: float) -> ReapResult:
    """Re-queue jobs whose worker died or whose message was lost; fail those out of attempts."""
    now = utcnow()
    with db.write() as s:
        expired = and_(Job.state == JobState.RUNNING, Job.lease_until < now)
        failed = _changed(
            s,
            update(Job)
            .where(expired, Job.attempts >= Job.max_attempts)
            .values(
                state=JobState.FAILED,
                finished_at=now,
                lease_until=None,
                last_error=func.coalesce(Job.last_error + "; ", "")
                + "lease expired: the worker stopped before finishing (last attempt)",
            ),
        )
        requeued = _changed(
            s,
            update(Job)
            .where(expired)
            .values(state=JobState.QUEUED, published_at=None, lease_until=None, not_before=now),
        )
        stale = now - dt.timedelta(seconds=publish_timeout)
        republished = _changed(
            s,
            update(Job)
            .where(Job.state == JobState.PUBLISHED, Job.published_at < stale)
            .values(state=JobState.QUEUED, published_at=None),
        )
    return ReapResult(requeued=requeued, failed=failed, republished=republished)


def retry_failed(db: Database, job_ids: list[int] | None = None) -> int:
    """Queue failed jobs again with fresh attempts; all failed jobs when no IDs are given."""
    with db.write() as s:
        query = update(Job).where(Job.state == JobState.FAILED)
        if job_ids is not None:
            query = query.where(Job.id.in_(job_ids))
        return _changed(
            s,
            query.values(
                state=JobState.QUEUED,
                attempts=0,
                not_before=utcnow(),
                published_at=None,
                finished_at=None,
            ),
        )


def recent_jobs(db: Database, *, state: str | None = None, limit: int = 50) -> list[Job]:
    """The newest jobs, optionally only those in one state."""
    with db.read() as s:
        query = select(Job).order_by(Job.id.desc()).limit(limit)
        if state is not None:
            query = query.where(Job.state == state)
        return list(s.execute(query).scalars())

"""The job table: publish claims, leases, retries with back-off, reaping, manual retry."""

import datetime as dt

from sqlalchemy import update

from imaging_hub.db.models import Job, JobState, utcnow
from imaging_hub.hub import Hub
from imaging_hub.jobs import (
    FAST,
    acquire,
    claim_for_publish,
    complete,
    enqueue,
    fail,
    reap,
    recent_jobs,
    retry_failed,
    unpublish,
)
from imaging_hub.work import HANDLERS, JobOutcome, run_job


def _job(hub: Hub, kind: str = "index", max_attempts: int = 3) -> int:
    with hub.db.write() as s:
        return enqueue(s, kind, {"stored_file_id": 0}, max_attempts=max_attempts).id


def _state(hub: Hub, job_id: int) -> Job:
    with hub.db.read() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def test_enqueue_claim_and_unpublish(hub: Hub) -> None:
    job_id = _job(hub)
    assert claim_for_publish(hub.db) == [(job_id, FAST)]
    assert _state(hub, job_id).state == JobState.PUBLISHED
    assert claim_for_publish(hub.db) == []  # claimed once only
    unpublish(hub.db, [job_id])  # the broker refused it
    assert _state(hub, job_id).state == JobState.QUEUED
    assert claim_for_publish(hub.db) == [(job_id, FAST)]


def test_a_live_lease_is_exclusive(hub: Hub) -> None:
    job_id = _job(hub)
    assert acquire(hub.db, job_id, owner="a", lease_seconds=60) is not None
    assert acquire(hub.db, job_id, owner="b", lease_seconds=60) is None
    complete(hub.db, job_id, owner="a")
    assert _state(hub, job_id).state == JobState.DONE
    assert acquire(hub.db, job_id, owner="b", lease_seconds=60) is None


def test_failure_backs_off_then_fails_for_good(hub: Hub) -> None:
    job_id = _job(hub, max_attempts=2)
    acquire(hub.db, job_id, owner="a", lease_seconds=60)
    assert fail(hub.db, job_id, "boom 1") == JobState.QUEUED
    job = _state(hub, job_id)
    assert job.not_before > utcnow() and job.last_error == "boom 1"
    assert claim_for_publish(hub.db) == []  # not due yet
    with hub.db.write() as s:
        s.execute(update(Job).values(not_before=utcnow()))
    assert acquire(hub.db, job_id, owner="a", lease_seconds=60) is not None
    assert fail(hub.db, job_id, "boom 2") == JobState.FAILED
    assert _state(hub, job_id).attempts == 2


def test_reaper_requeues_expired_leases_and_lost_messages(hub: Hub) -> None:
    dead = _job(hub)
    lost = _job(hub)
    exhausted = _job(hub, max_attempts=1)
    acquire(hub.db, dead, owner="gone", lease_seconds=60)
    acquire(hub.db, exhausted, owner="gone", lease_seconds=60)
    claim_for_publish(hub.db)  # publishes 'lost'
    past = utcnow() - dt.timedelta(minutes=10)
    with hub.db.write() as s:
        s.execute(update(Job).where(Job.id.in_([dead, exhausted])).values(lease_until=past))
        s.execute(update(Job).where(Job.id == lost).values(published_at=past))
    result = reap(hub.db, publish_timeout=60)
    assert (result.requeued, result.failed, result.republished) == (1, 1, 1)
    assert _state(hub, dead).state == JobState.QUEUED
    assert _state(hub, lost).state == JobState.QUEUED
    failed = _state(hub, exhausted)
    assert failed.state == JobState.FAILED and "lease expired" in (failed.last_error or "")


def test_retry_failed_gives_fresh_attempts(hub: Hub) -> None:
    job_id = _job(hub, max_attempts=1)
    acquire(hub.db, job_id, owner="a", lease_seconds=60)
    fail(hub.db, job_id, "bad")
    assert [j.id for j in recent_jobs(hub.db, state="failed")] == [job_id]
    assert retry_failed(hub.db) == 1
    job = _state(hub, job_id)
    assert (job.state, job.attempts) == (JobState.QUEUED, 0)


def test_run_job_records_handler_errors(hub: Hub, monkeypatch) -> None:
    calls: list[dict] = []

    def flaky(_hub: Hub, payload: dict) -> None:
        calls.append(payload)
        raise RuntimeError("disk hiccup")

    monkeypatch.setitem(HANDLERS, "index", flaky)
    job_id = _job(hub)
    assert run_job(hub, job_id, owner="w") == JobOutcome.RETRY
    assert run_job(hub, job_id, owner="w") == JobOutcome.SKIPPED  # backing off, still queued
    job = _state(hub, job_id)
    assert job.state == JobState.QUEUED and "disk hiccup" in (job.last_error or "")
    assert len(calls) == 1


def test_unknown_kind_fails_permanently(hub: Hub) -> None:
    job_id = _job(hub, kind="forward")
    assert run_job(hub, job_id, owner="w") == JobOutcome.FAILED
    assert _state(hub, job_id).state == JobState.FAILED

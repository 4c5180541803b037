"""The job table: publish claims, leases, retries with back-off, reaping, manual retry."""

import datetime as dt

from sqlalchemy import insert, update

from imaging_hub.db.models import Job, JobState, utcnow
from imaging_hub.hub import Hub
from imaging_hub.jobs import (
    FAST,
    acquire,
    claim_for_publish,
    complete,
    enqueue,
    extend,
    fail,
    reap,
    recent_jobs,
    retry_failed,
    unpublish,
)
from imaging_hub.work import HANDLERS, JobOutcome, run_job


def _job(hub: Hub, kind: str = "index", max_attempts: int = 3) -> int:
    with hub.db.write() as s:
        return enqueue(s, kind, {"stored_file_id": 0}, max_attempts=max_attempts)


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
    lease = acquire(hub.db, job_id, owner="a", lease_seconds=60)
    assert lease is not None and lease.attempt == 1
    assert acquire(hub.db, job_id, owner="b", lease_seconds=60) is None
    assert complete(hub.db, lease)
    assert _state(hub, job_id).state == JobState.DONE
    assert acquire(hub.db, job_id, owner="b", lease_seconds=60) is None


def _expire(hub: Hub, job_id: int) -> None:
    with hub.db.write() as s:
        past = utcnow() - dt.timedelta(seconds=1)
        s.execute(update(Job).where(Job.id == job_id).values(lease_until=past))


def test_a_stale_lease_cannot_finish_or_fail_the_new_attempt(hub: Hub) -> None:
    """Worker A stalls past its lease, B takes over: A's late complete/fail change nothing."""
    job_id = _job(hub)
    stale = acquire(hub.db, job_id, owner="a", lease_seconds=60)
    assert stale is not None
    _expire(hub, job_id)
    fresh = acquire(hub.db, job_id, owner="b", lease_seconds=60)
    assert fresh is not None and fresh.attempt == 2
    assert not extend(hub.db, stale, lease_seconds=60)
    assert fail(hub.db, stale, "late failure", permanent=True) is None
    assert not complete(hub.db, stale)
    job = _state(hub, job_id)
    assert (job.state, job.lease_owner, job.last_error) == (JobState.RUNNING, "b", None)
    assert complete(hub.db, fresh)
    assert _state(hub, job_id).state == JobState.DONE


def test_extend_keeps_a_long_job_leased(hub: Hub) -> None:
    job_id = _job(hub)
    lease = acquire(hub.db, job_id, owner="a", lease_seconds=1)
    assert lease is not None
    assert extend(hub.db, lease, lease_seconds=600)
    assert _state(hub, job_id).lease_until > utcnow() + dt.timedelta(seconds=500)
    assert reap(hub.db, publish_timeout=60).requeued == 0


def test_failure_backs_off_then_fails_for_good(hub: Hub) -> None:
    job_id = _job(hub, max_attempts=2)
    lease = acquire(hub.db, job_id, owner="a", lease_seconds=60)
    assert lease is not None
    assert fail(hub.db, lease, "boom 1") == JobState.QUEUED
    job = _state(hub, job_id)
    assert job.not_before > utcnow() and job.last_error == "boom 1"
    assert claim_for_publish(hub.db) == []  # not due yet
    with hub.db.write() as s:
        s.execute(update(Job).values(not_before=utcnow()))
    second = acquire(hub.db, job_id, owner="a", lease_seconds=60)
    assert second is not None
    assert fail(hub.db, second, "boom 2") == JobState.FAILED
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
    lease = acquire(hub.db, job_id, owner="a", lease_seconds=60)
    assert lease is not None
    fail(hub.db, lease, "bad")
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
    # A back-off long enough that a slow machine cannot reach it between the two calls.
    monkeypatch.setattr("imaging_hub.jobs.backoff_seconds", lambda attempt: 600.0)
    job_id = _job(hub)
    assert run_job(hub, job_id, owner="w") == JobOutcome.RETRY
    assert run_job(hub, job_id, owner="w") == JobOutcome.SKIPPED  # backing off, still queued
    job = _state(hub, job_id)
    assert job.state == JobState.QUEUED and "disk hiccup" in (job.last_error or "")
    assert len(calls) == 1


def test_in_flight_jobs_are_capped_per_queue(hub: Hub) -> None:
    ids = [_job(hub) for _ in range(5)]
    first = claim_for_publish(hub.db, max_in_flight=3)
    assert [job_id for job_id, _ in first] == ids[:3]
    assert claim_for_publish(hub.db, max_in_flight=3) == []  # three still in flight
    lease = acquire(hub.db, ids[0], owner="w", lease_seconds=60)
    assert lease is not None and complete(hub.db, lease)
    assert claim_for_publish(hub.db, max_in_flight=3) == [(ids[3], FAST)]


def test_errors_are_recorded_without_sql_parameters(hub: Hub, monkeypatch) -> None:
    job_id = _job(hub)

    def leaky(hub_: Hub, payload: dict) -> None:
        with hub_.db.write() as s:  # a duplicate primary key: the statement carries PHI
            s.execute(insert(Job).values(id=job_id, kind="DOE^JANE", queue="fast", payload={}))

    monkeypatch.setitem(HANDLERS, "index", leaky)
    assert run_job(hub, job_id, owner="w") == JobOutcome.RETRY
    error = _state(hub, job_id).last_error or ""
    assert error.startswith("IntegrityError") and "DOE^JANE" not in error


def test_unknown_kind_fails_permanently(hub: Hub) -> None:
    job_id = _job(hub, kind="forward")
    assert run_job(hub, job_id, owner="w") == JobOutcome.FAILED
    assert _state(hub, job_id).state == JobState.FAILED

"""The relay against a real job table, and the task glue that worker threads share."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest
from celery import Celery
from sqlalchemy import select
from structlog.testing import capture_logs

import workers.tasks
from imaging_hub.config import Settings
from imaging_hub.db.models import Job, JobState
from imaging_hub.hub import Hub
from imaging_hub.jobs import enqueue
from imaging_hub.metrics import ReceiverMetrics, metrics_dir
from workers.app import TASK_NAME, make_celery
from workers.relay import Relay
from workers.tasks import _ProcessHub, register_tasks


class FlakyBroker:
    """A stand-in for a Celery app whose broker goes away at the n-th send."""

    def __init__(self, fail_at: int) -> None:
        self.fail_at = fail_at
        self.sent: list[int] = []
        self.calls = 0

    def send_task(self, name: str, *, args: list[int], queue: str, retry: bool) -> None:
        self.calls += 1
        if self.calls >= self.fail_at:
            raise ConnectionError("broker unreachable")
        assert name == TASK_NAME and not retry
        self.sent.append(args[0])


def _states(hub: Hub) -> dict[int, str]:
    with hub.db.read() as s:
        return {job.id: str(job.state) for job in s.execute(select(Job)).scalars()}


def test_jobs_the_broker_did_not_take_go_back_to_the_queue(hub: Hub) -> None:
    with hub.db.write() as s:
        ids = [enqueue(s, "identity", {"source_identity_id": n}) for n in range(5)]
    broker = FlakyBroker(fail_at=3)
    relay = Relay(hub, cast(Celery, broker))
    with capture_logs() as logs:
        assert relay.relay_once() == 0
    assert broker.sent == ids[:2]
    states = _states(hub)
    assert [states[i] for i in ids[:2]] == [JobState.PUBLISHED.value] * 2
    assert [states[i] for i in ids[2:]] == [JobState.QUEUED.value] * 3
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["broker_unavailable"]
    with hub.db.read() as s:
        requeued = s.execute(select(Job).where(Job.id.in_(ids[2:]))).scalars().all()
    assert all(job.published_at is None for job in requeued)
    # Once the broker is back, the next round sends exactly the jobs that were put back.
    broker.fail_at = 10**6
    assert relay.relay_once() == 3
    assert broker.sent == ids
    assert set(_states(hub).values()) == {JobState.PUBLISHED.value}


@pytest.fixture
def task_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setattr(tempfile, "tempdir", tempfile.tempdir)  # the embedded broker sets it
    return Settings(data_dir=tmp_path / "hub-data")


def _slow_open(opened: list[object]) -> Any:
    def open_hub(_settings: Settings) -> object:
        time.sleep(0.05)  # widen the window in which a second thread could open another
        hub = object()
        opened.append(hub)
        return hub

    return open_hub


def test_threads_share_one_hub(task_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[object] = []
    monkeypatch.setattr(workers.tasks.Hub, "open", _slow_open(opened))
    hubs = _ProcessHub(task_settings)
    barrier = threading.Barrier(4)
    got: list[object] = []

    def use() -> None:
        barrier.wait()
        got.append(hubs.get())

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(opened) == 1
    assert got == opened * 4


def test_each_thread_of_a_worker_is_its_own_lease_owner(
    task_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two threads of one process must not hold each other's job leases."""
    monkeypatch.setattr(workers.tasks.Hub, "open", _slow_open([]))
    owners: list[str] = []

    def fake_run_job(_hub: object, _job_id: int, *, owner: str, pace: object) -> str:
        owners.append(owner)
        return "done"

    monkeypatch.setattr(workers.tasks, "run_job", fake_run_job)
    app = make_celery(task_settings)
    register_tasks(app, task_settings)
    task = app.tasks[TASK_NAME]
    threads = [threading.Thread(target=task, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(owners) == 2 and len(set(owners)) == 2


@pytest.mark.parametrize("yielding", [False, True])
def test_a_yielding_worker_runs_a_job_once_the_association_ends(
    task_settings: Settings, monkeypatch: pytest.MonkeyPatch, yielding: bool
) -> None:
    """`worker --yield-to-receivers` holds each job while a receiver of its host is busy."""
    monkeypatch.setattr(workers.tasks.Hub, "open", _slow_open([]))
    ran = threading.Event()

    def fake_run_job(_hub: object, _job_id: int, *, owner: str, pace: object) -> str:
        ran.set()
        return "done"

    monkeypatch.setattr(workers.tasks, "run_job", fake_run_job)
    receiver = ReceiverMetrics(metrics_dir(task_settings.data_dir))
    receiver.association_started()
    app = make_celery(task_settings)
    register_tasks(app, task_settings, yield_to_receivers=yielding)
    thread = threading.Thread(target=app.tasks[TASK_NAME], args=(1,))
    thread.start()
    try:
        assert ran.wait(timeout=1.0) is not yielding  # held while the association is open
    finally:
        receiver.association_ended()
    thread.join(timeout=10)
    assert ran.is_set()


def test_each_app_runs_the_task_registered_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery shares tasks across apps by default; a later app must not run an earlier one's."""
    monkeypatch.setattr(tempfile, "tempdir", tempfile.tempdir)  # the embedded broker sets it
    apps = []
    for n in range(2):
        settings = Settings(data_dir=tmp_path / f"hub-{n}")
        app = make_celery(settings)
        register_tasks(app, settings, yield_to_receivers=bool(n))
        apps.append(app)
    first, second = (app.tasks[TASK_NAME].run for app in apps)
    assert first is not second

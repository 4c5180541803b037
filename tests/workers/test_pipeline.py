"""Receive -> job -> worker -> index, with real processes, brokers and databases.

Embedded: SQLite and the file broker. Scale-out: PostgreSQL with Redis or RabbitMQ.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from imaging_hub.db.models import Instance, Job, JobState, StoredFile, StoredFileState, Study
from imaging_hub.hub import Hub
from tests.processes import Deployment
from tests.support import make_instances, storescu, wait_for_port, wait_until

pytestmark = [pytest.mark.dcmtk, pytest.mark.slow]

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"


def _indexed(hub: Hub) -> int:
    with hub.db.read() as s:
        return s.execute(select(func.count(Instance.id))).scalar_one()


def _job_states(hub: Hub) -> dict[str, int]:
    with hub.db.read() as s:
        rows = s.execute(select(Job.state, func.count(Job.id)).group_by(Job.state)).all()
    return {str(state): count for state, count in rows}


@pytest.fixture(params=["embedded", "redis+postgresql", "rabbitmq+postgresql"])
def deployment(request: pytest.FixtureRequest, deploy: Callable[..., Deployment]) -> Deployment:
    if request.param == "embedded":
        return deploy(None, None)
    db = request.getfixturevalue("pg_url")
    if request.param == "redis+postgresql":
        return deploy(db, request.getfixturevalue("redis_url"))
    return deploy(db, RABBITMQ_URL)


def test_received_study_is_indexed_by_a_worker(deployment: Deployment, tmp_path: Path) -> None:
    deployment.start("worker")
    deployment.start("scp")
    wait_for_port(deployment.settings.dicom_port)
    files = make_instances(tmp_path / "in", 5, series_per_study=2)
    storescu(deployment.settings.dicom_port, *files)
    hub = deployment.hub()
    try:
        assert wait_until(lambda: _indexed(hub) == 5, timeout=30), deployment.logs()
        with hub.db.read() as s:
            study = s.execute(select(Study)).scalar_one()
        assert (study.num_series, study.num_instances) == (2, 5)
        assert wait_until(lambda: _job_states(hub) == {"done": 5}, timeout=10)
    finally:
        hub.close()


@pytest.mark.parametrize("mode", ["embedded", "redis+postgresql"])
def test_sigkilled_worker_loses_nothing(
    mode: str, deploy: Callable[..., Deployment], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """SIGKILL the worker while 200 instances are queued; after a restart each is indexed once."""
    if mode == "embedded":
        d = deploy(None, None)
    else:
        d = deploy(request.getfixturevalue("pg_url"), request.getfixturevalue("redis_url"))
    d.start("scp")
    wait_for_port(d.settings.dicom_port)
    files = make_instances(tmp_path / "in", 200)
    storescu(d.settings.dicom_port, *files)  # every instance acknowledged
    hub = d.hub()
    try:
        assert _job_states(hub) == {"queued": 200}
        worker = d.start("worker")
        assert wait_until(lambda: _indexed(hub) >= 10, timeout=60), d.logs()
        worker.kill()  # SIGKILL the worker and its pool children, mid-stream
        killed_at = _indexed(hub)
        assert killed_at < 200, "the worker finished before it could be killed"
        d.start("worker")
        assert wait_until(lambda: _indexed(hub) == 200, timeout=120), d.logs()
        assert wait_until(lambda: _job_states(hub) == {"done": 200}, timeout=60), _job_states(hub)
        with hub.db.read() as s:
            study = s.execute(select(Study)).scalar_one()
            indexed_files = s.execute(
                select(func.count(StoredFile.id)).where(StoredFile.state == StoredFileState.INDEXED)
            ).scalar_one()
            instance_uids = s.execute(select(Instance.sop_instance_uid)).scalars().all()
        assert study.num_instances == 200 and indexed_files == 200
        assert len(set(instance_uids)) == len(instance_uids) == 200
    finally:
        hub.close()


def test_broker_down_while_receiving(
    deploy: Callable[..., Deployment], pg_url: str, private_redis, tmp_path: Path
) -> None:
    """The broker is unreachable during 50 sends: all succeed, all are indexed once it is back."""
    d = deploy(pg_url, f"redis://127.0.0.1:{private_redis.port}/0")
    d.start("scp")
    d.start("worker")
    wait_for_port(d.settings.dicom_port)
    storescu(d.settings.dicom_port, *make_instances(tmp_path / "in", 50))
    hub = d.hub()
    try:
        with hub.db.read() as s:
            assert s.execute(select(func.count(StoredFile.id))).scalar_one() == 50
        assert _indexed(hub) == 0
        assert set(_job_states(hub)) <= {JobState.QUEUED.value, JobState.PUBLISHED.value}
        private_redis()  # the broker comes back
        assert wait_until(lambda: _indexed(hub) == 50, timeout=90), d.logs()
        assert wait_until(lambda: _job_states(hub) == {"done": 50}, timeout=30)
    finally:
        hub.close()

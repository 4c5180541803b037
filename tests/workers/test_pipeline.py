"""Receive -> job -> worker -> index, with real processes, brokers and databases.

Embedded: SQLite and the file broker. Scale-out: PostgreSQL with Redis or RabbitMQ.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from imaging_hub.db.models import (
    IdentityLinkEvent,
    Instance,
    Job,
    JobState,
    PatientRecord,
    PreviewState,
    Series,
    SourceIdentity,
    StoredFile,
    StoredFileState,
    Study,
)
from imaging_hub.hub import Hub
from tests.processes import Deployment, PrivateRedis
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
        # Each instance: an index job, then a render job that made its previews; and one
        # identity check for the one patient.
        assert wait_until(lambda: _job_states(hub) == {"done": 11}, timeout=30), _job_states(hub)
        with hub.db.read() as s:
            states = set(s.execute(select(Instance.preview_state)).scalars())
        assert states == {PreviewState.READY}
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
        assert wait_until(lambda: _job_states(hub) == {"done": 401}, timeout=120), _job_states(hub)
        with hub.db.read() as s:
            study = s.execute(select(Study)).scalar_one()
            indexed_files = s.execute(
                select(func.count(StoredFile.id)).where(StoredFile.state == StoredFileState.INDEXED)
            ).scalar_one()
            instance_uids = s.execute(select(Instance.sop_instance_uid)).scalars().all()
            counts = {
                model.__name__: s.execute(select(func.count()).select_from(model)).scalar_one()
                for model in (PatientRecord, SourceIdentity, IdentityLinkEvent, Series, Study)
            }
        assert study.num_instances == 200 and indexed_files == 200
        assert len(set(instance_uids)) == len(instance_uids) == 200
        # All 200 share one patient and one series: a job run twice must not create a second
        # patient record, identity, link event or series.
        assert counts == dict.fromkeys(counts, 1), counts
        assert JobState.FAILED.value not in _job_states(hub)
    finally:
        hub.close()


def test_broker_down_while_receiving(
    deploy: Callable[..., Deployment], pg_url: str, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    """The broker dies under a running worker: 50 sends succeed; all are indexed once it is back."""
    private_redis.start()
    d = deploy(pg_url, private_redis.url)
    d.start("scp")
    d.start("worker")
    wait_for_port(d.settings.dicom_port)
    study = make_instances(tmp_path / "in", 51)
    hub = d.hub()
    try:
        storescu(d.settings.dicom_port, study[0])
        # Its three jobs done (index, then identity and render) means the worker consumes and its
        # relay runs (it starts on worker_ready), and nothing of the first instance is in flight.
        assert wait_until(lambda: _job_states(hub) == {"done": 3}, timeout=60), d.logs()
        assert _indexed(hub) == 1
        private_redis.stop()
        storescu(d.settings.dicom_port, *study[1:])  # every send succeeds with the broker down
        with hub.db.read() as s:
            assert s.execute(select(func.count(StoredFile.id))).scalar_one() == 51
        assert wait_until(lambda: "broker_unavailable" in d.logs(), timeout=30), d.logs()
        assert _indexed(hub) == 1
        states = _job_states(hub)
        assert states.pop(JobState.DONE.value) == 3
        assert set(states) <= {JobState.QUEUED.value, JobState.PUBLISHED.value}, states
        assert sum(states.values()) == 50
        private_redis.start()  # the broker comes back, empty, on the same port
        assert wait_until(lambda: _indexed(hub) == 51, timeout=120), d.logs()
        assert wait_until(lambda: _job_states(hub) == {"done": 103}, timeout=60), _job_states(hub)
    finally:
        hub.close()

"""Fixtures for tests that run the hub's parts as real processes (a pytest plugin)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from imaging_hub.config import Settings
from imaging_hub.db.migrate import upgrade
from imaging_hub.hub import Hub
from tests.support import HubProcess, free_port, wait_for_port


@dataclass
class Deployment:
    """Settings shared by the processes of one test, and the processes themselves."""

    env: dict[str, str]
    settings: Settings
    log_dir: Path
    procs: list[HubProcess] = field(default_factory=list)

    def start(self, *args: str) -> HubProcess:
        """Start ``imaging-hub ARGS`` with this deployment's environment."""
        name = "-".join(args)
        proc = HubProcess(list(args), self.env, self.log_dir / f"{name}-{len(self.procs)}.log")
        self.procs.append(proc.start())
        return proc

    def hub(self) -> Hub:
        """A hub handle on the same index, for assertions."""
        return Hub.open(self.settings)

    def logs(self) -> str:
        """Every process's output, for failure messages."""
        return "\n".join(f"--- {p.log_path.name}\n{p.log_text()[-3000:]}" for p in self.procs)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The machine's Redis server, on a database number of this test's own, flushed."""
    db = uuid.uuid4().int % 14 + 1
    client = redis.Redis(host="127.0.0.1", port=6379, db=db)
    client.flushdb()
    yield f"redis://127.0.0.1:6379/{db}"
    client.flushdb()


class PrivateRedis:
    """A Redis server of one test's own, on a fixed port, that the test starts and stops."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server (again) on the same port; returns once it accepts connections."""
        assert self.proc is None, "already running"
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        """Stop the server (its data is gone: nothing is saved)."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A port for a Redis server that the test starts and stops when it wants ('broker down')."""
    server = PrivateRedis(free_port(), tmp_path)
    try:
        yield server
    finally:
        server.stop()


def make_deployment(tmp_path: Path, database_url: str | None, broker_url: str | None) -> Deployment:
    """Settings and environment for processes on the given database and broker."""
    env = {
        "HUB_DATA_DIR": str(tmp_path / "hub-data"),
        "HUB_DICOM_HOST": "127.0.0.1",
        "HUB_DICOM_PORT": str(free_port()),
        "HUB_HTTP_PORT": str(free_port()),
        "HUB_STORAGE_MIN_FREE_BYTES": "0",
        "HUB_JOBS_LEASE_SECONDS": "4",
        "HUB_JOBS_PUBLISH_TIMEOUT": "4",
        "HUB_WORKER_CONCURRENCY": "2",
    }
    if database_url:
        env["HUB_DATABASE_URL"] = database_url
    if broker_url:
        env["HUB_BROKER_URL"] = broker_url
    settings = Settings(
        data_dir=Path(env["HUB_DATA_DIR"]),
        database_url=database_url,
        broker_url=broker_url,
        dicom_port=int(env["HUB_DICOM_PORT"]),
        storage_min_free_bytes=0,
    )
    settings.data_dir.mkdir(parents=True)
    upgrade(settings.resolved_database_url)
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    return Deployment(env=env, settings=settings, log_dir=log_dir)


@pytest.fixture
def deploy(tmp_path: Path) -> Iterator[Callable[[str | None, str | None], Deployment]]:
    """Factory for a deployment; every process it started is stopped afterwards."""
    made: list[Deployment] = []

    def factory(database_url: str | None, broker_url: str | None) -> Deployment:
        d = make_deployment(tmp_path, database_url, broker_url)
        made.append(d)
        return d

    yield factory
    for d in made:
        for proc in d.procs:
            proc.stop()

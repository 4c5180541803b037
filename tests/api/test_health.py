"""/healthz and /readyz, and the core readiness checks behind them."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import closing, contextmanager

from fastapi.testclient import TestClient

from imaging_hub.config import Settings
from imaging_hub.health import OK, check_dir, readiness
from imaging_hub.hub import Hub
from tests.support import free_port
from viewer_api.app import create_app


@contextmanager
def app_client(settings: Settings) -> Iterator[TestClient]:
    """A test client of an app built on settings."""
    with TestClient(create_app(settings)) as client:
        yield client


@contextmanager
def listening() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections while the block runs."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_ok_with_the_embedded_broker(client, hub):
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "storage": "ok", "broker": "ok"},
    }
    assert hub.settings.broker_dir.is_dir()


def test_readyz_503_when_the_broker_port_is_closed(hub):
    port = free_port()
    settings = hub.settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{port}/0"})
    with app_client(settings) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["storage"] == "ok"
    assert checks["broker"].startswith(f"broker 127.0.0.1:{port} unreachable")


def test_readyz_ok_when_a_broker_server_listens(hub):
    with listening() as port:
        url = f"amqp://guest:secret@127.0.0.1:{port}//"
        settings = hub.settings.model_copy(update={"broker_url": url})
        with app_client(settings) as client:
            response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"]["broker"] == "ok"


def test_readyz_503_names_an_unreachable_database_without_credentials(tmp_path):
    port = free_port()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"postgresql+psycopg://hub:s3cret@127.0.0.1:{port}/hub",
        storage_min_free_bytes=0,
    )
    with app_client(settings) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] != "ok"
    assert "s3cret" not in checks["database"]
    assert checks["storage"] == "ok"


def test_failover_broker_url_is_ready_when_any_server_answers(hub):
    with listening() as port:
        url = f"redis://127.0.0.1:{free_port()};redis://127.0.0.1:{port}"
        settings = hub.settings.model_copy(update={"broker_url": url})
        with closing(Hub.open(settings)) as other:
            assert readiness(other)["broker"] == OK


def test_storage_check_fails_below_the_free_space_floor(hub):
    settings = hub.settings.model_copy(update={"storage_min_free_bytes": 2**62})
    with closing(Hub.open(settings)) as other:
        checks = readiness(other)
    assert checks["storage"].startswith("free space")
    assert checks["database"] == OK


def test_check_dir_reports_a_path_that_cannot_be_a_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert check_dir(tmp_path / "new" / "dir") == OK
    assert check_dir(blocker).startswith("FileExistsError")
    assert list(tmp_path.joinpath("new", "dir").iterdir()) == []  # the probe file is gone

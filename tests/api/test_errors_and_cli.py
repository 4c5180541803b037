"""The error table of the HTTP edge, and the ``imaging-hub api`` command."""

from __future__ import annotations

import logging

import pytest
from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.testclient import TestClient

from imaging_hub.cli import main
from imaging_hub.errors import (
    ConfigError,
    DuplicateRejected,
    HubError,
    InvalidDicom,
    InvalidUid,
    NotFound,
    StorageFull,
    TooLarge,
)
from viewer_api import cli as api_cli
from viewer_api.app import create_app


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidDicom("bad header"), 400),
        (InvalidUid("bad uid"), 400),
        (NotFound("no such study"), 404),
        (DuplicateRejected("other bytes"), 409),
        (TooLarge("too big"), 413),
        (StorageFull("disk full"), 507),
    ],
)
def test_core_errors_map_to_statuses_with_a_json_reason(hub, error, status):
    app = create_app(hub.settings)

    @app.get("/boom")
    def boom() -> None:
        raise error

    with TestClient(app) as client:
        response = client.get("/boom")
    assert response.status_code == status
    assert response.json() == {"detail": str(error)}


def test_unmapped_core_errors_are_500_without_details(hub):
    app = create_app(hub.settings)

    @app.get("/boom")
    def boom() -> None:
        raise ConfigError("secret internals")

    with TestClient(app) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}
    assert isinstance(ConfigError("x"), HubError)


def test_validation_errors_are_422_json_and_400_under_dicomweb(hub, token):
    app = create_app(hub.settings)

    @app.get("/dicomweb/typed")
    def typed(n: int) -> int:
        return n

    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        rest = client.get("/api/studies", params={"limit": "many"})
        dicomweb = client.get("/dicomweb/typed", params={"n": "many"})
    assert rest.status_code == 422
    assert rest.json()["detail"][0]["loc"] == ["query", "limit"]
    assert dicomweb.status_code == 400
    assert dicomweb.json()["detail"][0]["loc"] == ["query", "n"]


def test_api_command_serves_the_app_on_the_configured_address(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(api_cli.uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    monkeypatch.setenv("HUB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HUB_HTTP_HOST", "127.0.0.2")
    monkeypatch.setenv("HUB_HTTP_PORT", "8123")
    refused = CliRunner().invoke(main, ["api"])
    assert refused.exit_code == 1 and "imaging-hub db upgrade" in refused.output
    assert calls == []
    assert CliRunner().invoke(main, ["db", "upgrade"]).exit_code == 0
    result = CliRunner().invoke(main, ["api"])
    assert result.exit_code == 0, result.output
    ((app, kwargs),) = calls
    assert isinstance(app, FastAPI)
    assert (kwargs["host"], kwargs["port"]) == ("127.0.0.2", 8123)
    assert kwargs["log_config"]["handlers"]["access"]["filters"] == ["no_query"]


def test_access_log_drops_query_strings():
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/dicomweb/studies?PatientName=Doe*", "1.1", 200),
        None,
    )
    assert api_cli.DropQueryString().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /dicomweb/studies HTTP/1.1" 200'
    assert api_cli.log_config()["filters"]["no_query"] == {"()": api_cli.DropQueryString}

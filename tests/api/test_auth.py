"""/api/auth and the bearer-token check on every route under /api and /dicomweb."""

from __future__ import annotations

import datetime as dt
import re

import fastapi.routing
import pytest
from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute, Mount

from imaging_hub.auth import Role, TokenIssuer, TokenType, UserInfo, create_user
from imaging_hub.cli import main
from imaging_hub.db.models import utcnow
from imaging_hub.hub import Hub
from tests.api.helpers import PASSWORD
from viewer_api.rest.auth import PUBLIC_PATHS


def log_in(client: TestClient, username: str, password: str = PASSWORD):
    """POST the OAuth2 password form to /api/auth/token."""
    return client.post("/api/auth/token", data={"username": username, "password": password})


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of token."""
    return {"Authorization": f"Bearer {token}"}


def every_route(app: FastAPI) -> list[tuple[str, set[str], BaseRoute]]:
    """(path, methods, route) of every route of app, with included routers flattened."""
    # FastAPI >= 0.16x keeps included routers whole; older versions copy their routes.
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    routes = list(flatten(app.routes)) if flatten else list(app.routes)
    return [
        (r.path or "", set(getattr(r, "methods", None) or {"GET"}), getattr(r, "original_route", r))
        for r in routes
    ]


def test_every_route_under_api_and_dicomweb_needs_a_token(anonymous: TestClient) -> None:
    """A new route under /api or /dicomweb that skips the token check makes this test fail."""
    checked = set()
    for path, methods, route in every_route(anonymous.app):
        if not re.match(r"/(api|dicomweb|wado)(/|$)", path) or path in PUBLIC_PATHS:
            continue
        assert not isinstance(route, Mount), f"{path}: mounted apps are not token-checked"
        url = re.sub(r"\{[^}]+\}", "1.2.3", path)
        for method in methods:
            response = anonymous.request(method, url)
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert "not authenticated" in response.json()["detail"]
            checked.add((method, path))
    assert {("GET", "/api/studies"), ("GET", "/dicomweb/studies")} <= checked
    assert {("POST", "/dicomweb/studies"), ("GET", "/wado")} <= checked
    assert {("GET", "/api/auth/me"), ("GET", "/api/admin/users")} <= checked


def test_only_the_token_endpoints_are_public(anonymous: TestClient) -> None:
    assert {"/api/auth/token", "/api/auth/refresh"} == PUBLIC_PATHS
    paths = {path for path, _, route in every_route(anonymous.app) if isinstance(route, APIRoute)}
    assert paths >= PUBLIC_PATHS
    for path in PUBLIC_PATHS:  # they answer a malformed request with 422, not 401
        assert anonymous.post(path).status_code == 422
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert anonymous.get(path).status_code == 200, path


def test_password_flow_gives_tokens_that_open_the_api(anonymous: TestClient, user: UserInfo):
    response = log_in(anonymous, "Dr.Grey")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert (body["token_type"], body["expires_in"]) == ("bearer", 900)
    assert response.headers["Cache-Control"] == "no-store"
    studies = anonymous.get("/api/studies", headers=bearer(body["access_token"]))
    assert studies.status_code == 200 and studies.json() == []
    assert anonymous.get("/dicomweb/studies", headers=bearer(body["access_token"])).json() == []
    me = anonymous.get("/api/auth/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json()["username"] == "dr.grey"
    assert (me.json()["role"], me.json()["specialty"]) == ("clinician", "neurosurgery")
    assert "password_hash" not in me.json()


def test_wrong_credentials_are_401_and_repeated_failures_lock(anonymous: TestClient, user):
    for _ in range(4):
        response = log_in(anonymous, "dr.grey", "wrong-password!")
        assert response.status_code == 401
        assert response.json() == {"detail": "incorrect username or password"}
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert log_in(anonymous, "nobody").json() == {"detail": "incorrect username or password"}
    locked = log_in(anonymous, "dr.grey", "wrong-password!")
    assert locked.status_code == 429
    assert "too many failed logins" in locked.json()["detail"]
    assert int(locked.headers["Retry-After"]) == 300
    assert log_in(anonymous, "dr.grey").status_code == 429  # the right password waits too


def test_refresh_gives_a_new_pair_and_refuses_access_tokens(anonymous: TestClient, user):
    tokens = log_in(anonymous, "dr.grey").json()
    refreshed = anonymous.post("/api/auth/refresh", data={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    new = refreshed.json()
    assert new["access_token"] != tokens["access_token"]
    assert anonymous.get("/api/auth/me", headers=bearer(new["access_token"])).status_code == 200
    wrong = anonymous.post("/api/auth/refresh", data={"refresh_token": tokens["access_token"]})
    assert wrong.status_code == 401
    assert "wrong token type" in wrong.json()["detail"]
    as_access = anonymous.get("/api/studies", headers=bearer(tokens["refresh_token"]))
    assert as_access.status_code == 401


def test_expired_tampered_and_foreign_tokens_are_401(hub: Hub, anonymous: TestClient, user):
    issuer = TokenIssuer.from_settings(hub.settings)
    old = utcnow() - dt.timedelta(hours=1)
    expired = issuer.encode(user.username, user.role, TokenType.ACCESS, now=old)
    valid = issuer.issue(user).access_token
    foreign = TokenIssuer("Zq8-another-hubs-secret-4Kp2Lw9Xv7").issue(user).access_token
    cases = {
        expired: "the token has expired",
        valid[:-3] + ("abc" if not valid.endswith("abc") else "xyz"): "the token is not valid",
        foreign: "the token is not valid",
    }
    for token, reason in cases.items():
        response = anonymous.get("/dicomweb/studies", headers=bearer(token))
        assert response.status_code == 401
        assert response.json() == {"detail": reason}
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert anonymous.get("/dicomweb/studies", headers=bearer(valid)).status_code == 200


def test_roles_gate_the_admin_routes(hub: Hub, client: TestClient) -> None:
    refused = client.get("/api/admin/users")
    assert refused.status_code == 403
    assert refused.json() == {"detail": "the role clinician may not do this (needs: admin)"}
    admin = create_user(hub.db, "root", PASSWORD, role=Role.ADMIN)
    token = TokenIssuer.from_settings(hub.settings).issue(admin).access_token
    listed = client.get("/api/admin/users", headers=bearer(token))
    assert listed.status_code == 200
    assert [(u["username"], u["role"]) for u in listed.json()] == [
        ("dr.grey", "clinician"),
        ("root", "admin"),
    ]


def test_a_disabled_user_is_403(hub: Hub, client: TestClient) -> None:
    assert client.get("/api/studies").status_code == 200
    runner = CliRunner(env=cli_env(hub))
    assert runner.invoke(main, ["users", "disable", "dr.grey"]).exit_code == 0
    response = client.get("/api/studies")
    assert response.status_code == 403
    assert response.json() == {"detail": "this account is disabled"}
    assert log_in(client, "dr.grey").status_code == 403


def cli_env(hub: Hub) -> dict[str, str]:
    """The environment that points the CLI at the hub's data dir and database."""
    return {
        "HUB_DATA_DIR": str(hub.settings.data_dir),
        "HUB_DATABASE_URL": hub.settings.resolved_database_url,
    }


def test_cli_users_add_then_log_in_over_http(hub: Hub, anonymous: TestClient) -> None:
    runner = CliRunner(env=cli_env(hub))
    add = ["users", "add", "alice", "--role", "radiology", "--specialty", "pain medicine"]
    added = runner.invoke(main, [*add, "--password-stdin"], input="a-long-password\n")
    assert added.exit_code == 0, added.output
    assert "user alice created with role radiology" in added.output
    again = runner.invoke(main, [*add, "--password-stdin"], input="a-long-password\n")
    assert again.exit_code == 1 and "already exists" in again.output
    short = runner.invoke(
        main, ["users", "add", "bob", "--role", "admin", "--password-stdin"], input="x\n"
    )
    assert short.exit_code == 1 and "at least 12 characters" in short.output
    bad_role = runner.invoke(
        main,
        ["users", "add", "bob", "--role", "surgeon", "--password-stdin"],
        input="a-long-password\n",
    )
    assert bad_role.exit_code == 1 and "unknown role 'surgeon'" in bad_role.output
    listed = runner.invoke(main, ["users", "list"])
    assert listed.output.splitlines() == ["alice\tradiology\tpain-medicine\tactive\t-"]
    response = log_in(anonymous, "alice", "a-long-password")
    assert response.status_code == 200, response.text
    me = anonymous.get("/api/auth/me", headers=bearer(response.json()["access_token"]))
    assert (me.json()["username"], me.json()["role"]) == ("alice", "radiology")


def test_cli_reset_password_and_disable(hub: Hub, anonymous: TestClient, user) -> None:
    runner = CliRunner(env=cli_env(hub))
    reset = runner.invoke(
        main, ["users", "reset-password", "dr.grey", "--password-stdin"], input="another-password\n"
    )
    assert reset.exit_code == 0, reset.output
    assert log_in(anonymous, "dr.grey").status_code == 401
    assert log_in(anonymous, "dr.grey", "another-password").status_code == 200
    empty = runner.invoke(
        main, ["users", "reset-password", "dr.grey", "--password-stdin"], input=""
    )
    assert empty.exit_code == 1 and "no password on standard input" in empty.output
    missing = runner.invoke(main, ["users", "disable", "nobody"])
    assert missing.exit_code == 1 and "no user 'nobody'" in missing.output
    assert runner.invoke(main, ["users", "disable", "dr.grey"]).exit_code == 0
    assert "disabled" in runner.invoke(main, ["users", "list"]).output
    assert log_in(anonymous, "dr.grey", "another-password").status_code == 403
    assert runner.invoke(main, ["users", "enable", "dr.grey"]).exit_code == 0
    assert log_in(anonymous, "dr.grey", "another-password").status_code == 200


def test_cli_users_needs_a_migrated_index(tmp_path) -> None:
    runner = CliRunner(env={"HUB_DATA_DIR": str(tmp_path)})
    result = runner.invoke(main, ["users", "list"])
    assert result.exit_code == 1
    assert "imaging-hub db upgrade" in result.output


@pytest.mark.parametrize("header", ["Basic ZHI6cHc=", "Bearer", "Bearer "])
def test_malformed_authorization_headers_are_401(anonymous: TestClient, header: str) -> None:
    response = anonymous.get("/api/studies", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"

"""API tokens for integrations: made, listed and revoked; scoped; revocable; kept only hashed."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text, update

from imaging_hub import audit
from imaging_hub.db.models import ApiToken
from imaging_hub.hub import Hub
from tests.api.helpers import bearer, sign_in


def secret_of(token: str) -> str:
    """The secret part of ``ihk_<16 hex digits>_<secret>`` (the secret may hold underscores)."""
    prefix, public_id, secret = token[:4], token[4:20], token[21:]
    assert (prefix, len(public_id), len(secret)) == ("ihk_", 16, 43), token
    return secret


def make_token(client: TestClient, scopes: list[str], **extra: object) -> dict:
    """Create an API token of the signed-in user; return the answer's JSON."""
    response = client.post("/api/tokens", json={"name": "PACS bridge", "scopes": scopes, **extra})
    assert response.status_code == 201, response.text
    assert response.headers["Cache-Control"] == "no-store"
    return response.json()


def test_made_listed_and_used(hub: Hub, anonymous, client, corpus):
    made = make_token(client, ["read"], expires_in_days=30)
    token = made["token"]
    assert token.startswith("ihk_") and made["token_id"] in token
    assert (made["owner"], made["created_by"], made["scopes"]) == ("dr.grey", "dr.grey", ["read"])
    assert made["active"] is True and made["last_used_at"] is None
    lifetime = dt.datetime.fromisoformat(made["expires_at"]) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=29, hours=23) < lifetime <= dt.timedelta(days=30)

    studies = anonymous.get("/api/studies", headers=bearer(token))
    assert studies.status_code == 200 and len(studies.json()) == 4
    qido = anonymous.get("/dicomweb/studies", headers=bearer(token))
    assert qido.status_code == 200 and len(qido.json()) == 4
    me = anonymous.get("/api/auth/me", headers=bearer(token))
    assert me.json()["username"] == "dr.grey"

    listed = client.get("/api/tokens").json()
    assert [t["token_id"] for t in listed] == [made["token_id"]]
    assert "token" not in listed[0] and listed[0]["last_used_at"] is not None
    # Each use is audited as the token's owner, naming the token.
    with hub.db.read() as session:
        used = audit.search_events(session, filters=audit.AuditFilters(actor_kind="token"))
    assert {(e.actor, e.detail["token"], e.detail["token_name"]) for e in used} == {
        ("dr.grey", made["token_id"], "PACS bridge")
    }
    assert {e.detail["route"] for e in used} == {"/api/studies", "/dicomweb/studies"}


def test_the_token_is_kept_only_as_a_hash(hub: Hub, client):
    made = make_token(client, ["read", "write"])
    secret = secret_of(made["token"])
    with hub.db.read() as session:
        rows = session.execute(text("SELECT * FROM api_token")).all()
        trail = session.execute(text("SELECT * FROM audit_event")).all()
    assert len(rows) == 1
    stored = " ".join(str(value) for value in rows[0])
    assert made["token"] not in stored and secret not in stored
    assert hashlib.sha256(secret.encode()).hexdigest() in stored  # what is kept instead
    assert all(secret not in " ".join(map(str, row)) for row in trail)
    assert "token" not in client.get("/api/tokens").json()[0]


def test_a_scope_too_small_is_403(anonymous, client, corpus):
    read = bearer(make_token(client, ["read"])["token"])
    store = bearer(make_token(client, ["store"])["token"])
    note = {"title": "x", "markdown": "y", "study_uid": corpus["A"]}
    refused = anonymous.post("/api/records", json=note, headers=read)
    assert refused.status_code == 403
    assert refused.json() == {"detail": "this token lacks the write scope"}
    shared = anonymous.post("/api/share-links", json={"study_uid": corpus["A"]}, headers=read)
    assert shared.status_code == 403
    for url in ("/api/studies", "/dicomweb/studies", f"/api/studies/{corpus['A']}/download"):
        response = anonymous.get(url, headers=store)
        assert response.status_code == 403, url
        assert response.json() == {"detail": "this token lacks the read scope"}
    # A POST that only reads (a ZIP of a selection) needs read, not write.
    selection = {"study_uids": [corpus["A"]]}
    assert anonymous.post("/api/downloads", json=selection, headers=read).status_code == 200
    assert anonymous.post("/api/downloads", json=selection, headers=store).status_code == 403
    stow = anonymous.post(
        "/dicomweb/studies",
        headers={**read, "Content-Type": "multipart/related; type=application/dicom"},
        content=b"",
    )
    assert stow.status_code == 403 and "store scope" in stow.json()["detail"]
    # With the write scope the same note is written; the token acts as its owner.
    write = bearer(make_token(client, ["read", "write"])["token"])
    written = anonymous.post("/api/records", json=note, headers=write)
    assert written.status_code == 201 and written.json()["author"] == "dr.grey"


def test_a_token_carries_its_owners_role_and_admin_scope_needs_an_admin(hub, anonymous, client):
    assert client.post("/api/tokens", json={"name": "x", "scopes": ["admin"]}).status_code == 403
    # A clinician's store token still may not store: STOW-RS is for radiology and admins.
    store = bearer(make_token(client, ["store"])["token"])
    stow = anonymous.post(
        "/dicomweb/studies",
        headers={**store, "Content-Type": "multipart/related; type=application/dicom"},
        content=b"",
    )
    assert stow.status_code == 403 and "role clinician" in stow.json()["detail"]
    admin = sign_in(hub, "root", "admin")
    read = anonymous.post("/api/tokens", json={"name": "r", "scopes": ["read"]}, headers=admin)
    narrow = anonymous.get("/api/admin/users", headers=bearer(read.json()["token"]))
    assert narrow.status_code == 403 and "admin scope" in narrow.json()["detail"]
    full = anonymous.post(
        "/api/tokens", json={"name": "ops", "scopes": ["admin", "read"]}, headers=admin
    )
    assert full.status_code == 201
    assert (
        anonymous.get("/api/admin/users", headers=bearer(full.json()["token"])).status_code == 200
    )


def test_revoked_by_owner_or_admin_then_401(hub: Hub, anonymous, client):
    first, second = make_token(client, ["read"]), make_token(client, ["read"])
    admin = sign_in(hub, "root", "admin")
    colleague = sign_in(hub, "dr.house", "clinician")
    for made in (first, second):
        assert anonymous.get("/api/studies", headers=bearer(made["token"])).status_code == 200
    # Nobody else's own list reaches my token; the owner and an admin revoke.
    gone = anonymous.delete(f"/api/tokens/{first['token_id']}", headers=colleague)
    assert gone.status_code == 404
    assert anonymous.get("/api/admin/tokens", headers=colleague).status_code == 403
    revoked = client.delete(f"/api/tokens/{first['token_id']}")
    assert revoked.status_code == 200 and revoked.json()["active"] is False
    by_admin = anonymous.delete(f"/api/admin/tokens/{second['token_id']}", headers=admin)
    assert by_admin.status_code == 200 and by_admin.json()["revoked_at"] is not None
    again = client.delete(f"/api/tokens/{first['token_id']}")  # idempotent
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    for made in (first, second):
        response = anonymous.get("/api/studies", headers=bearer(made["token"]))
        assert response.status_code == 401
        assert response.json() == {"detail": "the token was revoked"}
        assert response.headers["WWW-Authenticate"] == "Bearer"
    everyone = anonymous.get("/api/admin/tokens", headers=admin).json()
    assert {(t["token_id"], t["active"]) for t in everyone} == {
        (first["token_id"], False),
        (second["token_id"], False),
    }
    with hub.db.read() as session:
        alerts = audit.search_events(
            session, filters=audit.AuditFilters(action=audit.SECURITY_ALERT)
        )
    events = [
        (e.actor, e.detail["event"])
        for e in reversed(alerts)
        if e.detail["event"].startswith("api-token")
    ]
    assert events == [
        ("dr.grey", "api-token.create"),
        ("dr.grey", "api-token.create"),
        ("dr.grey", "api-token.revoke"),
        ("root", "api-token.revoke"),
    ]


def test_expired_forged_and_disabled_owner(hub: Hub, anonymous, client):
    made = make_token(client, ["read"])
    other = make_token(client, ["read"])
    with hub.db.write() as session:
        session.execute(
            update(ApiToken)
            .where(ApiToken.public_id == made["token_id"])
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    expired = anonymous.get("/api/studies", headers=bearer(made["token"]))
    assert expired.status_code == 401 and expired.json() == {"detail": "the token has expired"}
    secret = secret_of(other["token"])
    head = other["token"].removesuffix(secret)
    forged = head + ("A" if secret[0] != "A" else "B") + secret[1:]  # one character off
    assert anonymous.get("/api/studies", headers=bearer(forged)).status_code == 401
    assert anonymous.get("/api/studies", headers=bearer("ihk_nonsense")).status_code == 401
    admin = sign_in(hub, "root", "admin")
    assert anonymous.post("/api/admin/users/dr.grey/disable", headers=admin).status_code == 200
    disabled = anonymous.get("/api/studies", headers=bearer(other["token"]))
    assert disabled.status_code == 403 and disabled.json() == {"detail": "this account is disabled"}


def test_an_admin_makes_a_token_for_a_service_account(hub: Hub, anonymous, user):
    admin = sign_in(hub, "root", "admin")
    body = {"owner": "dr.grey", "name": "RIS feed", "scopes": ["read"], "expires_in_days": None}
    made = anonymous.post("/api/admin/tokens", json=body, headers=admin)
    assert made.status_code == 201, made.text
    assert (made.json()["owner"], made.json()["created_by"]) == ("dr.grey", "root")
    assert made.json()["expires_at"] is None and made.json()["active"] is True
    me = anonymous.get("/api/auth/me", headers=bearer(made.json()["token"]))
    assert me.json()["username"] == "dr.grey"
    nobody = anonymous.post("/api/admin/tokens", json={**body, "owner": "nobody"}, headers=admin)
    assert nobody.status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "scopes": []},
        {"name": "x", "scopes": ["everything"]},
        {"name": "", "scopes": ["read"]},
        {"name": "x" * 129, "scopes": ["read"]},
        {"name": "x", "scopes": ["read"], "expires_in_days": 0},
        {"name": "x", "scopes": ["read"], "expires_in_days": 5000},
        {"scopes": ["read"]},
    ],
)
def test_bad_token_requests_are_422(client, body):
    response = client.post("/api/tokens", json=body)
    assert response.status_code == 422, response.text
    assert client.get("/api/tokens").json() == []


def test_a_control_character_in_the_name_is_400(client):
    response = client.post("/api/tokens", json={"name": "a\tb", "scopes": ["read"]})
    assert response.status_code == 400
    assert "printable" in response.json()["detail"]


def test_an_api_token_cannot_make_api_tokens(hub: Hub, anonymous, client):
    """A token must not outlive its revocation through tokens it made: only users make them."""
    writer = bearer(make_token(client, ["read", "write"])["token"])
    mine = anonymous.post("/api/tokens", json={"name": "child", "scopes": ["read"]}, headers=writer)
    assert mine.status_code == 403 and "sign in" in mine.json()["detail"]
    admin = sign_in(hub, "root", "admin")
    ops = anonymous.post(
        "/api/tokens", json={"name": "ops", "scopes": ["admin", "write"]}, headers=admin
    )
    body = {"name": "svc", "scopes": ["read"], "owner": "root"}
    other = anonymous.post("/api/admin/tokens", json=body, headers=bearer(ops.json()["token"]))
    assert other.status_code == 403
    assert [t["name"] for t in client.get("/api/tokens").json()] == ["PACS bridge"]
    assert anonymous.post("/api/admin/tokens", json=body, headers=admin).status_code == 201

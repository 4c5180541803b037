"""/api/admin/users: admins add, list, disable, enable users and reset their passwords."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from fastapi.testclient import TestClient

from imaging_hub.auth import TokenIssuer, get_user
from imaging_hub.db.models import utcnow
from imaging_hub.hub import Hub
from tests.api.helpers import PASSWORD, bearer, sign_in
from tests.api.test_auth import log_in
from tests.api.test_records import refused

NEW_PASSWORD = "another-long-passphrase"


@pytest.fixture
def admin(hub: Hub, anonymous: TestClient) -> TestClient:
    """The test client, signed in as an admin."""
    anonymous.headers.update(sign_in(hub, "root", "admin"))
    return anonymous


def add(admin: TestClient, username: str, **changes):
    """POST a new account."""
    account = {"username": username, "password": PASSWORD, "role": "clinician", **changes}
    return admin.post("/api/admin/users", json=account)


def test_add_then_list_and_the_new_user_signs_in(admin):
    response = add(admin, "Dr.Strange", specialty="pain-medicine")
    assert response.status_code == 201, response.text
    item = response.json()
    created = dt.datetime.fromisoformat(item.pop("created_at"))
    assert abs(created.replace(tzinfo=dt.UTC) - utcnow()) < dt.timedelta(minutes=1)
    assert item == {
        "username": "dr.strange",
        "role": "clinician",
        "specialty": "pain-medicine",
        "disabled": False,
        "last_login_at": None,
        "locked_until": None,
    }
    assert add(admin, "rad.tech", role="radiology").status_code == 201
    listed = admin.get("/api/admin/users")
    assert listed.status_code == 200
    rows = [(u["username"], u["role"], u["specialty"]) for u in listed.json()]
    assert rows == [
        ("dr.strange", "clinician", "pain-medicine"),
        ("rad.tech", "radiology", None),
        ("root", "admin", None),
    ]
    assert all("password" not in key for u in listed.json() for key in u)
    login = log_in(admin, "dr.strange")
    assert login.status_code == 200, login.text
    me = admin.get("/api/auth/me", headers=bearer(login.json()["access_token"]))
    assert me.json()["role"] == "clinician"
    after = {u["username"]: u for u in admin.get("/api/admin/users").json()}
    assert after["dr.strange"]["last_login_at"] is not None


def test_a_taken_name_is_409_and_bad_input_400(admin):
    assert add(admin, "dr.who").status_code == 201
    refused(add(admin, "dr.who"), 409, "already exists")
    refused(add(admin, "  DR.WHO ", role="admin"), 409, "already exists")  # names are canonical
    refused(add(admin, "dr.short", password="short"), 400, "at least 12 characters")
    refused(add(admin, "dr.blank", password=" padded-passphrase "), 400, "white space")
    refused(add(admin, "dr who"), 400, "invalid username")
    assert add(admin, "dr.role", role="superuser").status_code == 422
    assert add(admin, "dr.spec", specialty="astrology").status_code == 422
    assert add(admin, "", password=PASSWORD).status_code == 422
    assert admin.post("/api/admin/users", json={"username": "x"}).status_code == 422
    names = [u["username"] for u in admin.get("/api/admin/users").json()]
    assert names == ["dr.who", "root"], "nothing else was created"
    refused(log_in(admin, "dr.short", "short"), 401, "")


def test_disable_and_enable(hub, admin):
    assert add(admin, "dr.grey").status_code == 201
    own = bearer(
        TokenIssuer.from_settings(hub.settings).issue(get_user(hub.db, "dr.grey")).access_token
    )
    assert admin.get("/api/studies", headers=own).status_code == 200
    disabled = admin.post("/api/admin/users/Dr.Grey/disable")
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["disabled"] is True
    refused(admin.get("/api/studies", headers=own), 403, "disabled")  # the token stops at once
    refused(log_in(admin, "dr.grey"), 403, "disabled")
    assert get_user(hub.db, "dr.grey").disabled
    enabled = admin.post("/api/admin/users/dr.grey/enable")
    assert enabled.status_code == 200 and enabled.json()["disabled"] is False
    assert admin.get("/api/studies", headers=own).status_code == 200
    assert log_in(admin, "dr.grey").status_code == 200
    for action in ("disable", "enable"):
        refused(admin.post(f"/api/admin/users/nobody/{action}"), 404, "no user")
    refused(admin.post("/api/admin/users/nobody!/disable"), 400, "invalid username")
    # An admin cannot lock themselves out.
    refused(admin.post("/api/admin/users/ROOT/disable"), 400, "own account")
    assert not get_user(hub.db, "root").disabled


def test_reset_password(hub, admin):
    assert add(admin, "dr.grey").status_code == 201
    old_token = log_in(admin, "dr.grey").json()["access_token"]
    time.sleep(1.1)  # token times are whole seconds: a reset revokes those of earlier seconds
    assert admin.get("/api/studies", headers=bearer(old_token)).status_code == 200
    refused(admin.post("/api/admin/users/dr.grey/password", json={"password": "tiny"}), 400, "12")
    assert log_in(admin, "dr.grey").status_code == 200, "a refused reset changes nothing"

    reset = admin.post("/api/admin/users/dr.grey/password", json={"password": NEW_PASSWORD})
    assert reset.status_code == 200, reset.text
    assert reset.json()["username"] == "dr.grey"
    refused(log_in(admin, "dr.grey"), 401, "")
    new = log_in(admin, "dr.grey", NEW_PASSWORD)
    assert new.status_code == 200, new.text
    # Tokens from before the reset stop working; the one just issued works.
    assert admin.get("/api/studies", headers=bearer(old_token)).status_code == 401
    assert admin.get("/api/studies", headers=bearer(new.json()["access_token"])).status_code == 200
    missing = admin.post("/api/admin/users/nobody/password", json={"password": NEW_PASSWORD})
    refused(missing, 404, "no user")


def test_a_reset_also_lifts_a_lockout(hub, admin):
    assert add(admin, "dr.grey").status_code == 201
    for _ in range(hub.settings.auth_max_failed_logins):
        log_in(admin, "dr.grey", "wrong-password-wrong")
    assert log_in(admin, "dr.grey").status_code == 429
    locked = {u["username"]: u for u in admin.get("/api/admin/users").json()}["dr.grey"]
    assert locked["locked_until"] is not None
    reset = admin.post("/api/admin/users/dr.grey/password", json={"password": NEW_PASSWORD})
    assert reset.status_code == 200 and reset.json()["locked_until"] is None
    assert log_in(admin, "dr.grey", NEW_PASSWORD).status_code == 200


@pytest.mark.parametrize("role", ["clinician", "radiology"])
def test_non_admins_are_403_and_change_nothing(hub, anonymous, role):
    sign_in(hub, "dr.grey", "clinician")
    headers = sign_in(hub, f"someone.{role}", role)
    new_user = {"username": "mallory", "password": PASSWORD, "role": "admin"}
    attempts = [
        anonymous.get("/api/admin/users", headers=headers),
        anonymous.post("/api/admin/users", json=new_user, headers=headers),
        anonymous.post("/api/admin/users/dr.grey/disable", headers=headers),
        anonymous.post("/api/admin/users/dr.grey/enable", headers=headers),
        anonymous.post(
            "/api/admin/users/dr.grey/password", json={"password": NEW_PASSWORD}, headers=headers
        ),
    ]
    for response in attempts:
        refused(response, 403, f"the role {role} may not do this (needs: admin)")
    assert not get_user(hub.db, "dr.grey").disabled
    assert log_in(anonymous, "dr.grey").status_code == 200
    assert log_in(anonymous, "mallory").status_code == 401
    # Without a token at all: 401.
    assert anonymous.get("/api/admin/users").status_code == 401

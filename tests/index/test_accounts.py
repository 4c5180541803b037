"""User accounts on SQLite and PostgreSQL: create, list, disable, reset, throttled logins."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, update

from imaging_hub.auth import (
    LoginPolicy,
    Role,
    Specialty,
    TokenIssuer,
    authenticate,
    create_user,
    get_user,
    list_users,
    refresh_tokens,
    reset_password,
    set_disabled,
    user_for_token,
)
from imaging_hub.db.models import AuditEvent, UserAccount, utcnow
from imaging_hub.errors import (
    AccountDisabled,
    AccountLocked,
    AlreadyExists,
    AuthenticationFailed,
    NotFound,
)
from imaging_hub.hub import Hub

PASSWORD = "correct-horse-battery"
SECRET = "k3J9-vQ2xZp7_Lm4Rt8Wn1Yb6Hc5Gd0Fs"
POLICY = LoginPolicy(max_failed=3, lockout=dt.timedelta(minutes=5))


def login_events(hub: Hub) -> list[tuple[str, str, str]]:
    """(actor, outcome, reason) of every login audit event, oldest first."""
    with hub.db.read() as session:
        rows = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.action == "user-authentication")
            .order_by(AuditEvent.id)
        )
        return [(r.actor, r.outcome, r.detail["reason"]) for r in rows]


def age_account(hub: Hub, minutes: int = 10) -> None:
    """Pretend every account was created (and its password set) minutes ago."""
    then = utcnow() - dt.timedelta(minutes=minutes)
    with hub.db.write() as session:
        session.execute(update(UserAccount).values(created_at=then, password_changed_at=then))


def test_create_list_and_get_users(hub: Hub) -> None:
    created = create_user(hub.db, "Dr.Grey", PASSWORD, role="clinician", specialty="physiatry")
    create_user(hub.db, "admin", PASSWORD, role=Role.ADMIN)
    assert (created.username, created.role, created.specialty) == (
        "dr.grey",
        Role.CLINICIAN,
        Specialty.PHYSIATRY,
    )
    assert [u.username for u in list_users(hub.db)] == ["admin", "dr.grey"]
    assert get_user(hub.db, "DR.GREY").created_at.tzinfo is not None
    with hub.db.read() as session:
        stored = session.scalar(select(UserAccount.password_hash))
    assert stored is not None and stored.startswith("$argon2id$") and PASSWORD not in stored
    with pytest.raises(NotFound):
        get_user(hub.db, "nobody")


def test_bad_accounts_are_refused(hub: Hub) -> None:
    create_user(hub.db, "dr.grey", PASSWORD, role="clinician")
    with pytest.raises(AlreadyExists, match=r"'dr\.grey' already exists"):
        create_user(hub.db, "DR.GREY", PASSWORD, role="radiology")
    with pytest.raises(ValueError, match="unknown role"):
        create_user(hub.db, "x", PASSWORD, role="surgeon")
    with pytest.raises(ValueError, match="at least 12"):
        create_user(hub.db, "x", "short", role="admin")
    with pytest.raises(ValueError, match="invalid username"):
        create_user(hub.db, "../etc", PASSWORD, role="admin")
    assert [u.username for u in list_users(hub.db)] == ["dr.grey"]


def test_authenticate_checks_the_password_and_audits(hub: Hub) -> None:
    create_user(hub.db, "dr.grey", PASSWORD, role="clinician")
    user = authenticate(hub.db, "dr.grey", PASSWORD, source="10.0.0.7")
    assert user.username == "dr.grey" and user.last_login_at is not None
    for name, password in (("dr.grey", "wrong-password!"), ("nobody", PASSWORD), ("../x", "y")):
        with pytest.raises(AuthenticationFailed, match=r"^incorrect username or password$"):
            authenticate(hub.db, name, password)
    assert login_events(hub) == [
        ("dr.grey", "success", "success"),
        ("dr.grey", "failure", "bad-password"),
        ("nobody", "failure", "unknown-user"),
        ("../x", "failure", "unknown-user"),
    ]
    with hub.db.read() as session:
        sources = session.scalars(select(AuditEvent.source_address).order_by(AuditEvent.id))
        assert "10.0.0.7" in list(sources)


def test_failed_logins_lock_the_account_for_a_while(hub: Hub) -> None:
    create_user(hub.db, "dr.grey", PASSWORD, role="clinician", policy=POLICY)
    for _ in range(2):
        with pytest.raises(AuthenticationFailed) as error:
            authenticate(hub.db, "dr.grey", "wrong-password!", policy=POLICY)
        assert not isinstance(error.value, AccountLocked)
    with pytest.raises(AccountLocked, match="locked, try again in 300 s") as locked:
        authenticate(hub.db, "dr.grey", "wrong-password!", policy=POLICY)
    assert locked.value.retry_after == 300
    # While locked, even the right password is refused.
    with pytest.raises(AccountLocked):
        authenticate(hub.db, "dr.grey", PASSWORD, policy=POLICY)
    # When the lockout has passed, the right password works and the count starts again.
    with hub.db.write() as session:
        session.execute(update(UserAccount).values(locked_until=utcnow() - dt.timedelta(seconds=1)))
    assert authenticate(hub.db, "dr.grey", PASSWORD, policy=POLICY).locked_until is None
    with pytest.raises(AuthenticationFailed):
        authenticate(hub.db, "dr.grey", "wrong-password!", policy=POLICY)
    assert authenticate(hub.db, "dr.grey", PASSWORD, policy=POLICY).username == "dr.grey"
    reasons = [reason for _, _, reason in login_events(hub)]
    assert reasons == ["bad-password"] * 2 + ["locked-now", "locked", "success"] + [
        "bad-password",
        "success",
    ]


def test_a_password_reset_unlocks_and_revokes_older_tokens(hub: Hub) -> None:
    create_user(hub.db, "dr.grey", PASSWORD, role="clinician", policy=POLICY)
    age_account(hub)
    issuer = TokenIssuer(SECRET)
    before = issuer.issue(get_user(hub.db, "dr.grey"), now=utcnow() - dt.timedelta(seconds=5))
    assert user_for_token(hub.db, issuer, before.access_token).username == "dr.grey"
    for _ in range(3):
        with pytest.raises(AuthenticationFailed):
            authenticate(hub.db, "dr.grey", "wrong-password!", policy=POLICY)
    reset_password(hub.db, "dr.grey", "a-new-long-password", policy=POLICY)
    with pytest.raises(AuthenticationFailed, match="revoked by a password change"):
        user_for_token(hub.db, issuer, before.access_token)
    with pytest.raises(AuthenticationFailed, match="revoked"):
        refresh_tokens(hub.db, issuer, before.refresh_token)
    with pytest.raises(AuthenticationFailed, match="incorrect"):
        authenticate(hub.db, "dr.grey", PASSWORD, policy=POLICY)
    user = authenticate(hub.db, "dr.grey", "a-new-long-password", policy=POLICY)
    assert user_for_token(hub.db, issuer, issuer.issue(user).access_token) == get_user(
        hub.db, "dr.grey"
    )


def test_disabled_users_cannot_log_in_or_use_tokens(hub: Hub) -> None:
    create_user(hub.db, "dr.grey", PASSWORD, role="clinician")
    issuer = TokenIssuer(SECRET)
    pair = issuer.issue(get_user(hub.db, "dr.grey"))
    assert set_disabled(hub.db, "dr.grey").disabled
    with pytest.raises(AccountDisabled):
        authenticate(hub.db, "dr.grey", PASSWORD)
    with pytest.raises(AccountDisabled):
        user_for_token(hub.db, issuer, pair.access_token)
    with pytest.raises(AccountDisabled):
        refresh_tokens(hub.db, issuer, pair.refresh_token)
    # A wrong password still says only that the credentials are wrong.
    with pytest.raises(AuthenticationFailed, match="incorrect"):
        authenticate(hub.db, "dr.grey", "wrong-password!")
    set_disabled(hub.db, "dr.grey", False)
    assert user_for_token(hub.db, issuer, pair.access_token).username == "dr.grey"


def test_refresh_rereads_the_role_and_rotates_tokens(hub: Hub) -> None:
    create_user(hub.db, "dr.grey", PASSWORD, role="clinician")
    age_account(hub)
    issuer = TokenIssuer(SECRET)
    pair = issuer.issue(get_user(hub.db, "dr.grey"), now=utcnow() - dt.timedelta(seconds=2))
    with hub.db.write() as session:
        session.execute(update(UserAccount).values(role=Role.RADIOLOGY))
    again = refresh_tokens(hub.db, issuer, pair.refresh_token)
    assert again.access_token != pair.access_token
    assert again.refresh_token != pair.refresh_token
    claims = issuer.decode(again.access_token, expected="access")
    assert claims.role is Role.RADIOLOGY
    with pytest.raises(AuthenticationFailed, match="wrong token type"):
        refresh_tokens(hub.db, issuer, pair.access_token)
    with hub.db.write() as session:
        session.execute(update(UserAccount).values(username="renamed"))
    with pytest.raises(AuthenticationFailed, match="no longer exists"):
        user_for_token(hub.db, issuer, again.access_token)

"""User accounts: create, list, disable, reset passwords, and authenticate with throttling.

After ``max_failed`` consecutive wrong passwords an account refuses every login, right or
wrong, for ``lockout``; a success or a password reset clears the count. Unknown usernames and
wrong passwords give the same answer, in the same time, so names cannot be probed. Every login
and account change writes an audit event; passwords never reach a log or the audit table.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imaging_hub import audit
from imaging_hub.auth.passwords import (
    check_password_rules,
    hash_password,
    verify_password,
    waste_verify,
)
from imaging_hub.config import Settings
from imaging_hub.db.engine import Database
from imaging_hub.db.models import Role, Specialty, UserAccount, utcnow
from imaging_hub.errors import (
    AccountDisabled,
    AccountLocked,
    AlreadyExists,
    AuthenticationFailed,
    NotFound,
)

__all__ = [
    "BAD_CREDENTIALS",
    "CLI_ACTOR",
    "DEFAULT_POLICY",
    "LoginPolicy",
    "UserInfo",
    "authenticate",
    "create_user",
    "get_user",
    "list_users",
    "normalize_username",
    "parse_role",
    "parse_specialty",
    "reset_password",
    "set_disabled",
]

log = structlog.get_logger(__name__)

BAD_CREDENTIALS = "incorrect username or password"
_USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")


@dataclass(frozen=True)
class LoginPolicy:
    """Password length and login throttling rules."""

    max_failed: int = 5
    lockout: dt.timedelta = dt.timedelta(minutes=5)
    min_password_length: int = 12

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginPolicy:
        """The policy the settings describe."""
        return cls(
            max_failed=settings.auth_max_failed_logins,
            lockout=dt.timedelta(seconds=settings.auth_lockout_seconds),
            min_password_length=settings.auth_min_password_length,
        )


#: The policy of the default settings.
DEFAULT_POLICY = LoginPolicy()


@dataclass(frozen=True)
class UserInfo:
    """What the rest of the hub may know about a user (never the password hash)."""

    username: str
    role: Role
    specialty: Specialty | None
    disabled: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    last_login_at: dt.datetime | None
    locked_until: dt.datetime | None
    password_changed_at: dt.datetime

    @classmethod
    def of(cls, row: UserAccount) -> UserInfo:
        """A snapshot of an account row."""
        return cls(
            username=row.username,
            role=Role(row.role),
            specialty=Specialty(row.specialty) if row.specialty else None,
            disabled=row.disabled,
            created_at=row.created_at,
            updated_at=row.updated_at,
            last_login_at=row.last_login_at,
            locked_until=row.locked_until,
            password_changed_at=row.password_changed_at,
        )


def normalize_username(name: str) -> str:
    """A username in canonical form (lower case); ValueError names what is wrong."""
    canonical = name.strip().lower()
    if not _USERNAME_RE.fullmatch(canonical):
        raise ValueError(
            f"invalid username {name!r}: 1-64 characters a-z, 0-9, '.', '_', '@', '-', "
            "starting with a letter or digit"
        )
    return canonical


def parse_role(value: Role | str) -> Role:
    """A Role from its value; ValueError lists the valid ones."""
    try:
        return Role(str(value).strip().lower())
    except ValueError:
        raise ValueError(
            f"unknown role {value!r}: use one of {', '.join(r.value for r in Role)}"
        ) from None


def parse_specialty(value: Specialty | str | None) -> Specialty | None:
    """A Specialty from its value ('pain medicine' and 'pain_medicine' work too), or None."""
    if value is None or not str(value).strip():
        return None
    key = re.sub(r"[\s_]+", "-", str(value).strip().lower())
    try:
        return Specialty(key)
    except ValueError:
        raise ValueError(
            f"unknown specialty {value!r}: use one of {', '.join(s.value for s in Specialty)}"
        ) from None


#: The actor of account changes made from the command line.
CLI_ACTOR = "cli"


def _audit(session: Session, actor: str, event: str, outcome: str, **kw: Any) -> None:
    """Record one account event: logins as user authentication, changes as security alerts."""
    source = kw.pop("source", None)
    if event == "login":
        kind, action, code = audit.ACTOR_KIND_USER, audit.USER_AUTHENTICATION, audit.EXECUTE
    else:
        kind = audit.ACTOR_KIND_SYSTEM if actor == CLI_ACTOR else audit.ACTOR_KIND_USER
        action = audit.SECURITY_ALERT
        code = audit.CREATE if event.endswith(".create") else audit.UPDATE
    audit.record(
        session,
        actor=actor,
        actor_kind=kind,
        action=action,
        outcome=outcome,
        source_address=source,
        detail={"event": event, "event_action": code, **kw},
    )


def _row(session: Session, username: str, *, lock: bool = False) -> UserAccount:
    """The account row of username, or NotFound."""
    query = select(UserAccount).where(UserAccount.username == normalize_username(username))
    row = session.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise NotFound(f"no user {username!r}")
    return row


def create_user(
    db: Database,
    username: str,
    password: str,
    *,
    role: Role | str,
    specialty: Specialty | str | None = None,
    policy: LoginPolicy = DEFAULT_POLICY,
    actor: str = CLI_ACTOR,
) -> UserInfo:
    """Create an account; AlreadyExists if the name is taken, ValueError for bad input."""
    name = normalize_username(username)
    parsed_role, parsed_specialty = parse_role(role), parse_specialty(specialty)
    check_password_rules(password, min_length=policy.min_password_length)
    password_hash = hash_password(password)  # slow: before the write transaction
    try:
        with db.write() as session:
            if session.scalar(select(UserAccount.id).where(UserAccount.username == name)):
                raise AlreadyExists(f"user {name!r} already exists")
            row = UserAccount(
                username=name,
                password_hash=password_hash,
                role=parsed_role,
                specialty=parsed_specialty,
            )
            session.add(row)
            session.flush()
            _audit(session, actor, "user.create", "success", username=name, role=parsed_role.value)
            info = UserInfo.of(row)
    except IntegrityError:
        raise AlreadyExists(f"user {name!r} already exists") from None
    log.info("user_created", username=name, role=parsed_role.value)
    return info


def list_users(db: Database) -> list[UserInfo]:
    """Every account, by username."""
    with db.read() as session:
        rows = session.scalars(select(UserAccount).order_by(UserAccount.username))
        return [UserInfo.of(row) for row in rows]


def get_user(db: Database, username: str) -> UserInfo:
    """One account; NotFound if there is none of that name."""
    with db.read() as session:
        return UserInfo.of(_row(session, username))


def set_disabled(
    db: Database, username: str, disabled: bool = True, *, actor: str = CLI_ACTOR
) -> UserInfo:
    """Disable (or enable again) an account; a disabled user's tokens stop working at once."""
    with db.write() as session:
        row = _row(session, username, lock=True)
        row.disabled = disabled
        row.updated_at = utcnow()
        action = "user.disable" if disabled else "user.enable"
        _audit(session, actor, action, "success", username=row.username)
        return UserInfo.of(row)


def reset_password(
    db: Database,
    username: str,
    password: str,
    *,
    policy: LoginPolicy = DEFAULT_POLICY,
    actor: str = CLI_ACTOR,
) -> UserInfo:
    """Set a new password, clear the lockout and revoke the tokens issued before."""
    check_password_rules(password, min_length=policy.min_password_length)
    password_hash = hash_password(password)
    with db.write() as session:
        row = _row(session, username, lock=True)
        now = utcnow()
        row.password_hash = password_hash
        row.failed_logins, row.locked_until = 0, None
        row.password_changed_at = row.updated_at = now
        _audit(session, actor, "user.password-reset", "success", username=row.username)
        return UserInfo.of(row)


def _lock_message(locked_until: dt.datetime, now: dt.datetime) -> AccountLocked:
    """The error for a locked account, with the seconds left."""
    seconds = max(1, math.ceil((locked_until - now).total_seconds()))
    return AccountLocked(
        f"too many failed logins: the account is locked, try again in {seconds} s",
        retry_after=seconds,
    )


def _record_attempt(
    row: UserAccount, ok: bool, new_hash: str | None, policy: LoginPolicy, now: dt.datetime
) -> str:
    """Update the account after a password check; return the outcome's name."""
    if row.locked_until is not None and row.locked_until > now:
        return "locked"
    if not ok:
        row.failed_logins += 1
        if row.failed_logins >= policy.max_failed:
            row.failed_logins, row.locked_until = 0, now + policy.lockout
            return "locked-now"
        return "bad-password"
    if row.disabled:
        return "disabled"
    row.failed_logins, row.locked_until, row.last_login_at = 0, None, now
    if new_hash is not None:
        row.password_hash = new_hash
    return "success"


def authenticate(
    db: Database,
    username: str,
    password: str,
    *,
    policy: LoginPolicy = DEFAULT_POLICY,
    source: str | None = None,
) -> UserInfo:
    """The user whose password this is; AuthenticationFailed, AccountLocked or AccountDisabled."""
    now = utcnow()
    try:
        with db.read() as session:
            stored = _row(session, username)
    except (NotFound, ValueError):
        waste_verify(password)
        with db.write() as session:
            _audit(session, username, "login", "failure", reason="unknown-user", source=source)
        raise AuthenticationFailed(BAD_CREDENTIALS) from None
    if stored.locked_until is not None and stored.locked_until > now:
        ok, new_hash = False, None  # no password check while locked
    else:
        ok, new_hash = verify_password(password, stored.password_hash)  # slow: outside the txn
    with db.write() as session:
        row = _row(session, username, lock=True)
        reason = _record_attempt(row, ok, new_hash, policy, now)
        outcome = "success" if reason == "success" else "failure"
        _audit(session, row.username, "login", outcome, reason=reason, source=source)
        info = UserInfo.of(row)
    log.info("login", username=info.username, outcome=reason)
    if reason in ("locked", "locked-now"):
        assert info.locked_until is not None
        raise _lock_message(info.locked_until, now)
    if reason == "disabled":
        raise AccountDisabled("this account is disabled")
    if reason == "bad-password":
        raise AuthenticationFailed(BAD_CREDENTIALS)
    return info

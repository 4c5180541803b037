"""Long-lived API tokens for integrations: hashed, scoped, expiring and revocable.

A token reads ``ihk_<public id>_<secret>``. Only the SHA-256 of the secret is kept (the secret
has 256 random bits, so a fast hash is enough; the public id finds the row). A token acts for
its owner, with the owner's role, but only within its scopes; disabling the owner, revoking
the token or its expiry stops it at once. Creating and revoking tokens writes audit events.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from imaging_hub import audit
from imaging_hub.auth.users import CLI_ACTOR, UserInfo, normalize_username
from imaging_hub.db.engine import Database
from imaging_hub.db.models import ApiToken, Role, UserAccount, utcnow
from imaging_hub.errors import AccountDisabled, AuthenticationFailed, NotFound, PermissionDenied

__all__ = [
    "ALL_SCOPES",
    "API_TOKEN_PREFIX",
    "ApiTokenInfo",
    "Scope",
    "create_api_token",
    "is_api_token",
    "list_api_tokens",
    "parse_scopes",
    "revoke_api_token",
    "user_for_api_token",
]

log = structlog.get_logger(__name__)

API_TOKEN_PREFIX = "ihk_"
_TOKEN_RE = re.compile(r"ihk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
#: last_used_at is written at most this often per token (it costs a write per request).
_TOUCH_EVERY = dt.timedelta(minutes=1)
_NAME_MAX = 128


class Scope(StrEnum):
    """What an API token may be used for (its owner's role still applies)."""

    #: Search, view and download studies, patients and records.
    READ = "read"
    #: Send instances to the hub (STOW-RS).
    STORE = "store"
    #: Write notes, reports, referrals and share links.
    WRITE = "write"
    #: Use the admin API (only for an admin's tokens).
    ADMIN = "admin"


#: Every scope: what a signed-in user's own access token carries.
ALL_SCOPES = frozenset(Scope)


@dataclass(frozen=True, slots=True)
class ApiTokenInfo:
    """What may be shown about an API token (never its secret or hash)."""

    public_id: str
    name: str
    owner: str
    scopes: frozenset[Scope]
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None

    @classmethod
    def of(cls, row: ApiToken, owner: str) -> ApiTokenInfo:
        """A snapshot of a token row."""
        return cls(
            public_id=row.public_id,
            name=row.name,
            owner=owner,
            scopes=frozenset(Scope(s) for s in row.scopes),
            created_by=row.created_by,
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            last_used_at=row.last_used_at,
        )

    def active(self, now: dt.datetime | None = None) -> bool:
        """Tell whether the token is neither revoked nor expired."""
        now = now or utcnow()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


def parse_scopes(values: Iterable[Scope | str]) -> frozenset[Scope]:
    """Scopes from their names; ValueError lists the valid ones."""
    parsed = set()
    for value in values:
        try:
            parsed.add(Scope(str(value).strip().lower()))
        except ValueError:
            raise ValueError(
                f"unknown scope {value!r}: use {', '.join(s.value for s in Scope)}"
            ) from None
    if not parsed:
        raise ValueError("a token needs at least one scope")
    return frozenset(parsed)


def is_api_token(token: str) -> bool:
    """Tell whether a bearer token is shaped like an API token (not whether it is valid)."""
    return token.startswith(API_TOKEN_PREFIX)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _owner(session: Session, username: str) -> UserAccount:
    row = session.scalar(
        select(UserAccount).where(UserAccount.username == normalize_username(username))
    )
    if row is None:
        raise NotFound(f"no user {username!r}")
    return row


def _audit(session: Session, actor: str, event: str, code: str, **detail: str) -> None:
    audit.record(
        session,
        actor=actor,
        actor_kind=audit.ACTOR_KIND_SYSTEM if actor == CLI_ACTOR else audit.ACTOR_KIND_USER,
        action=audit.SECURITY_ALERT,
        outcome=audit.SUCCESS,
        detail={"event": event, "event_action": code, **detail},
    )


def create_api_token(
    db: Database,
    *,
    owner: str,
    name: str,
    scopes: Iterable[Scope | str],
    expires_at: dt.datetime | None = None,
    actor: str = CLI_ACTOR,
) -> tuple[ApiTokenInfo, str]:
    """A new token for owner and its plain text (shown once, never stored).

    ValueError for a bad name, scope or expiry; PermissionDenied for the admin scope on a
    token whose owner is not an admin.
    """
    label = name.strip()
    if not 0 < len(label) <= _NAME_MAX or any(ord(c) < 32 for c in label):
        raise ValueError(f"a token name has 1 to {_NAME_MAX} printable characters")
    wanted = parse_scopes(scopes)
    if expires_at is not None and (expires_at.tzinfo is None or expires_at <= utcnow()):
        raise ValueError("a token's expiry must be a time zone aware moment in the future")
    public_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    with db.write() as session:
        account = _owner(session, owner)
        if Scope.ADMIN in wanted and account.role != Role.ADMIN:
            raise PermissionDenied("only an admin's token may have the admin scope")
        row = ApiToken(
            public_id=public_id,
            name=label,
            owner_id=account.id,
            secret_hash=_hash(secret),
            scopes=sorted(s.value for s in wanted),
            created_by=actor,
            expires_at=expires_at,
        )
        session.add(row)
        session.flush()
        _audit(session, actor, "api-token.create", audit.CREATE, token=public_id, owner=owner)
        info = ApiTokenInfo.of(row, account.username)
    log.info("api_token_created", token=public_id, scopes=sorted(wanted))
    return info, f"{API_TOKEN_PREFIX}{public_id}_{secret}"


def list_api_tokens(db: Database, *, owner: str | None = None) -> list[ApiTokenInfo]:
    """Every API token (or owner's), newest first."""
    query = select(ApiToken, UserAccount.username).join(UserAccount)
    if owner is not None:
        query = query.where(UserAccount.username == normalize_username(owner))
    with db.read() as session:
        rows = session.execute(query.order_by(ApiToken.created_at.desc(), ApiToken.id.desc()))
        return [ApiTokenInfo.of(token, username) for token, username in rows]


def revoke_api_token(
    db: Database, public_id: str, *, actor: str = CLI_ACTOR, owner: str | None = None
) -> ApiTokenInfo:
    """Revoke a token at once (idempotent); with owner, only one of owner's tokens is found."""
    with db.write() as session:
        query = select(ApiToken, UserAccount.username).join(UserAccount)
        query = query.where(ApiToken.public_id == public_id)
        if owner is not None:
            query = query.where(UserAccount.username == normalize_username(owner))
        found = session.execute(query.with_for_update()).first()
        if found is None:
            raise NotFound(f"no API token {public_id!r}")
        row, username = found
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            _audit(session, actor, "api-token.revoke", audit.UPDATE, token=public_id)
        return ApiTokenInfo.of(row, username)


def user_for_api_token(db: Database, token: str) -> tuple[UserInfo, ApiTokenInfo]:
    """The owner of a valid API token and the token; AuthenticationFailed or AccountDisabled."""
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        raise AuthenticationFailed("the token is not valid")
    public_id, secret = match.groups()
    with db.read() as session:
        found = session.execute(
            select(ApiToken, UserAccount).join(UserAccount).where(ApiToken.public_id == public_id)
        ).first()
    if found is None or not hmac.compare_digest(found[0].secret_hash, _hash(secret)):
        raise AuthenticationFailed("the token is not valid")
    row, account = found
    now = utcnow()
    info = ApiTokenInfo.of(row, account.username)
    if info.revoked_at is not None:
        raise AuthenticationFailed("the token was revoked")
    if not info.active(now):
        raise AuthenticationFailed("the token has expired")
    if account.disabled:
        raise AccountDisabled("this account is disabled")
    if row.last_used_at is None or now - row.last_used_at > _TOUCH_EVERY:
        with db.write() as session:
            session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
    return UserInfo.of(account), info

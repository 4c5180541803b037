"""Bearer tokens: short-lived access JWTs and longer-lived refresh JWTs (HS256, RFC 7519).

Claims: ``sub`` (username), ``role``, ``type`` (access or refresh), ``iat``, ``exp``, ``jti``
and ``iss``. The signing secret is ``HUB_AUTH_JWT_SECRET`` when set; otherwise one generated
once and kept in the data dir (mode 0600), so every process sharing the data dir agrees.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import stat
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import jwt
import structlog

from imaging_hub.auth.users import UserInfo
from imaging_hub.config import MIN_SECRET_LENGTH, Settings
from imaging_hub.db.models import Role, utcnow
from imaging_hub.errors import AuthenticationFailed, ConfigError

__all__ = [
    "ALGORITHM",
    "ISSUER",
    "TokenClaims",
    "TokenIssuer",
    "TokenPair",
    "TokenType",
    "load_or_create_secret",
]

log = structlog.get_logger(__name__)

ALGORITHM = "HS256"
ISSUER = "imaging-hub"
_REQUIRED = ["sub", "role", "type", "iat", "exp", "jti", "iss"]


class TokenType(StrEnum):
    """What a token may be used for."""

    ACCESS = "access"
    REFRESH = "refresh"


@dataclass(frozen=True)
class TokenClaims:
    """The verified claims of a token."""

    subject: str
    role: Role
    type: TokenType
    issued_at: dt.datetime
    expires_at: dt.datetime
    jti: str


@dataclass(frozen=True)
class TokenPair:
    """What a successful login or refresh returns (RFC 6749 5.1)."""

    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "bearer"


def _read_secret(path: Path) -> str:
    """The secret kept in path; ConfigError if the file holds none."""
    secret = path.read_text(encoding="ascii").strip()
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigError(f"{path} holds no usable token secret: delete it to generate a new one")
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        log.warning("token_secret_readable_by_others", path=str(path))
    return secret


def load_or_create_secret(path: Path) -> str:
    """The signing secret in path, generated first (mode 0600, atomically) if there is none."""
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_urlsafe(48) + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)  # atomic; fails if another process created it first
            log.info("token_secret_created", path=str(path))
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return _read_secret(path)


class TokenIssuer:
    """Signs and verifies the hub's tokens with one secret."""

    def __init__(
        self,
        secret: str,
        *,
        access_ttl: dt.timedelta = dt.timedelta(minutes=15),
        refresh_ttl: dt.timedelta = dt.timedelta(hours=12),
    ) -> None:
        self._secret = secret
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenIssuer:
        """An issuer with the configured secret, or the data dir's generated one."""
        configured = settings.auth_jwt_secret
        if configured is not None:
            secret = configured.get_secret_value()
        else:
            secret = load_or_create_secret(settings.jwt_secret_file)
        return cls(
            secret,
            access_ttl=dt.timedelta(minutes=settings.auth_access_token_minutes),
            refresh_ttl=dt.timedelta(hours=settings.auth_refresh_token_hours),
        )

    def encode(
        self, subject: str, role: Role, kind: TokenType, *, now: dt.datetime | None = None
    ) -> str:
        """A signed token of the given kind for subject, valid from now for the kind's lifetime."""
        issued = now or utcnow()
        ttl = self.access_ttl if kind is TokenType.ACCESS else self.refresh_ttl
        claims = {
            "sub": subject,
            "role": role.value,
            "type": kind.value,
            "iat": issued,
            "exp": issued + ttl,
            "jti": uuid.uuid4().hex,
            "iss": ISSUER,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def issue(self, user: UserInfo, *, now: dt.datetime | None = None) -> TokenPair:
        """A fresh access and refresh token for user."""
        issued = now or utcnow()
        return TokenPair(
            access_token=self.encode(user.username, user.role, TokenType.ACCESS, now=issued),
            refresh_token=self.encode(user.username, user.role, TokenType.REFRESH, now=issued),
            expires_in=int(self.access_ttl.total_seconds()),
        )

    def decode(self, token: str, *, expected: TokenType | str) -> TokenClaims:
        """The claims of a valid token of the expected kind; AuthenticationFailed otherwise."""
        expected = TokenType(expected)
        try:
            raw = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": _REQUIRED},
            )
            claims = TokenClaims(
                subject=str(raw["sub"]),
                role=Role(raw["role"]),
                type=TokenType(raw["type"]),
                issued_at=dt.datetime.fromtimestamp(raw["iat"], dt.UTC),
                expires_at=dt.datetime.fromtimestamp(raw["exp"], dt.UTC),
                jti=str(raw["jti"]),
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationFailed("the token has expired") from None
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise AuthenticationFailed("the token is not valid") from None
        if claims.type is not expected:
            raise AuthenticationFailed(f"wrong token type: {claims.type} given, {expected} needed")
        return claims

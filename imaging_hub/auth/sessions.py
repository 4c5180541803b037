"""Sign-in sessions: log in, refresh, and find the user a bearer token belongs to."""

from __future__ import annotations

from imaging_hub.auth.tokens import TokenClaims, TokenIssuer, TokenPair, TokenType
from imaging_hub.auth.users import DEFAULT_POLICY, LoginPolicy, UserInfo, authenticate, get_user
from imaging_hub.db.engine import Database
from imaging_hub.errors import AccountDisabled, AuthenticationFailed, NotFound

__all__ = ["login", "refresh_tokens", "user_for_token"]


def login(
    db: Database,
    issuer: TokenIssuer,
    username: str,
    password: str,
    *,
    policy: LoginPolicy = DEFAULT_POLICY,
    source: str | None = None,
) -> TokenPair:
    """Tokens for a user who gives the right password (OAuth2 password grant, RFC 6749 4.3)."""
    user = authenticate(db, username, password, policy=policy, source=source)
    return issuer.issue(user)


def _current(db: Database, claims: TokenClaims) -> UserInfo:
    """The account a verified token names, if it is still enabled and the token not revoked.

    A password reset revokes the tokens issued before it (to the second: ``iat`` is whole
    seconds, so a token issued in the same second as the reset stays valid).
    """
    try:
        user = get_user(db, claims.subject)
    except (NotFound, ValueError):
        raise AuthenticationFailed("the token's user no longer exists") from None
    if user.disabled:
        raise AccountDisabled("this account is disabled")
    if claims.issued_at < user.password_changed_at.replace(microsecond=0):
        raise AuthenticationFailed("the token was revoked by a password change")
    return user


def user_for_token(db: Database, issuer: TokenIssuer, token: str) -> UserInfo:
    """The user an access token belongs to; AuthenticationFailed or AccountDisabled if none."""
    return _current(db, issuer.decode(token, expected=TokenType.ACCESS))


def refresh_tokens(db: Database, issuer: TokenIssuer, refresh_token: str) -> TokenPair:
    """A new token pair for a valid refresh token (RFC 6749 6); the user's role is re-read."""
    user = _current(db, issuer.decode(refresh_token, expected=TokenType.REFRESH))
    return issuer.issue(user)

"""Users, roles and bearer tokens: who may sign in, and who a request's token belongs to.

Framework-free: the HTTP edge maps the errors raised here (``AuthenticationFailed``,
``AccountLocked``, ``AccountDisabled``, ``PermissionDenied``) to statuses in one table.
"""

from __future__ import annotations

from imaging_hub.auth.sessions import login, refresh_tokens, user_for_token
from imaging_hub.auth.tokens import (
    TokenClaims,
    TokenIssuer,
    TokenPair,
    TokenType,
    load_or_create_secret,
)
from imaging_hub.auth.users import (
    LoginPolicy,
    UserInfo,
    authenticate,
    create_user,
    get_user,
    list_users,
    parse_role,
    parse_specialty,
    reset_password,
    set_disabled,
)
from imaging_hub.db.models import Role, Specialty

__all__ = [
    "LoginPolicy",
    "Role",
    "Specialty",
    "TokenClaims",
    "TokenIssuer",
    "TokenPair",
    "TokenType",
    "UserInfo",
    "authenticate",
    "create_user",
    "get_user",
    "list_users",
    "load_or_create_secret",
    "login",
    "parse_role",
    "parse_specialty",
    "refresh_tokens",
    "reset_password",
    "set_disabled",
    "user_for_token",
]

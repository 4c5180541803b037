"""Bearer-token authentication and role checks for the HTTP app (OAuth2, RFC 6750).

``current_user`` is attached to every router under ``/api`` and ``/dicomweb`` by the app
factory, so a route cannot forget it; ``require_role(...)`` gates what only some roles may do.
Failures raise core errors, which ``viewer_api.errors`` maps to 401/403 with a JSON reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from imaging_hub.auth import Role, TokenIssuer, UserInfo, user_for_token
from imaging_hub.errors import AuthenticationFailed, PermissionDenied
from viewer_api.deps import HubDep

__all__ = [
    "AUTHENTICATED",
    "TOKEN_URL",
    "CurrentUser",
    "TokensDep",
    "current_user",
    "get_tokens",
    "require_role",
]

TOKEN_URL = "/api/auth/token"

#: Reads ``Authorization: Bearer …``; also gives /docs its "Authorize" button.
bearer_scheme = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)


def get_tokens(request: Request) -> TokenIssuer:
    """The token issuer the app created at startup."""
    issuer: TokenIssuer = request.app.state.tokens
    return issuer


TokensDep = Annotated[TokenIssuer, Depends(get_tokens)]


def current_user(
    request: Request,
    hub: HubDep,
    tokens: TokensDep,
    token: Annotated[str | None, Depends(bearer_scheme)],
) -> UserInfo:
    """The user whose valid access token the request carries (401/403 otherwise)."""
    if not token:
        raise AuthenticationFailed(
            "not authenticated: send an access token as 'Authorization: Bearer <token>' "
            f"(get one from {TOKEN_URL})"
        )
    user = user_for_token(hub.db, tokens, token)
    request.state.user = user
    return user


CurrentUser = Annotated[UserInfo, Depends(current_user)]

#: The dependencies of every protected router (see ``viewer_api.app``).
AUTHENTICATED = [Depends(current_user)]


def require_role(*roles: Role) -> Callable[[UserInfo], UserInfo]:
    """A dependency that lets through only users with one of roles (403 for the others)."""
    allowed = frozenset(roles)
    names = ", ".join(sorted(r.value for r in allowed))

    def check_role(user: CurrentUser) -> UserInfo:
        if user.role not in allowed:
            raise PermissionDenied(f"the role {user.role.value} may not do this (needs: {names})")
        return user

    return check_role

"""``/api/auth``: the OAuth2 password flow (RFC 6749 4.3), token refresh (6) and ``me``.

``POST /api/auth/token`` and ``POST /api/auth/refresh`` are the only routes under ``/api``
that need no token; both take form fields and answer ``Cache-Control: no-store`` (RFC 6749 5.1).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from imaging_hub.auth import LoginPolicy, TokenPair, login, refresh_tokens
from viewer_api.auth import CurrentUser, TokensDep
from viewer_api.deps import HubDep
from viewer_api.rest.users import UserItem

__all__ = ["PUBLIC_PATHS", "TokenResponse", "router"]

router = APIRouter(prefix="/auth", tags=["auth"])

#: The routes under /api that answer without a token.
PUBLIC_PATHS = frozenset({"/api/auth/token", "/api/auth/refresh"})


class TokenResponse(BaseModel):
    """A successful token answer (RFC 6749 5.1)."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    refresh_token: str

    @classmethod
    def of(cls, pair: TokenPair, response: Response) -> TokenResponse:
        """The answer for a token pair; tokens must not be cached."""
        response.headers["Cache-Control"] = "no-store"
        return cls(
            access_token=pair.access_token,
            expires_in=pair.expires_in,
            refresh_token=pair.refresh_token,
        )


@router.post("/token", response_model=TokenResponse)
def issue_token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    request: Request,
    response: Response,
    hub: HubDep,
    tokens: TokensDep,
) -> TokenResponse:
    """Log in with username and password (form fields); get an access and a refresh token."""
    pair = login(
        hub.db,
        tokens,
        form.username,
        form.password,
        policy=LoginPolicy.from_settings(hub.settings),
        source=request.client.host if request.client else None,
    )
    return TokenResponse.of(pair, response)


@router.post("/refresh", response_model=TokenResponse)
def refresh(
    refresh_token: Annotated[str, Form()],
    response: Response,
    hub: HubDep,
    tokens: TokensDep,
    grant_type: Annotated[Literal["refresh_token"] | None, Form()] = None,
) -> TokenResponse:
    """Trade a refresh token (form field ``refresh_token``) for a new token pair."""
    return TokenResponse.of(refresh_tokens(hub.db, tokens, refresh_token), response)


@router.get("/me", response_model=UserItem)
def me(user: CurrentUser) -> UserItem:
    """The signed-in user."""
    return UserItem.of(user)

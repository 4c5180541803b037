"""API tokens for integrations: ``/api/tokens`` for one's own, ``/api/admin/tokens`` for all.

A token acts for its owner (with the owner's role) within its scopes, until it expires or is
revoked. Its text is shown once, when it is made; the hub keeps only a hash.
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import BaseModel, Field

from imaging_hub.auth.api_tokens import (
    ApiTokenInfo,
    Scope,
    create_api_token,
    list_api_tokens,
    revoke_api_token,
)
from imaging_hub.db.models import Role, utcnow
from viewer_api.auth import CurrentPrincipal, CurrentUser, require_role
from viewer_api.deps import HubDep
from viewer_api.rest.schemas import bad_input

__all__ = ["admin_router", "router"]

#: Everyone manages their own tokens.
router = APIRouter(tags=["tokens"], dependencies=[Depends(require_role(*Role))])
admin_router = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[Depends(require_role(Role.ADMIN))]
)
_ERRORS = {
    400: {"description": "Bad input."},
    403: {"description": "A scope beyond the owner's role."},
    404: {"description": "No such user or token."},
}


class TokenIn(BaseModel):
    """A new API token: a name saying what it is for, its scopes and lifetime."""

    name: str = Field(min_length=1, max_length=128)
    scopes: list[Scope] = Field(min_length=1, max_length=len(Scope))
    expires_in_days: float | None = Field(default=365, gt=0, le=3650)


class AdminTokenIn(TokenIn):
    """A new API token for any user."""

    owner: str = Field(min_length=1, max_length=64)


class TokenItem(BaseModel):
    """An API token (never its secret)."""

    token_id: str
    name: str
    owner: str
    scopes: list[Scope]
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None
    active: bool

    @classmethod
    def of(cls, info: ApiTokenInfo) -> TokenItem:
        """The item of a token."""
        return cls(
            token_id=info.public_id,
            name=info.name,
            owner=info.owner,
            scopes=sorted(info.scopes),
            created_by=info.created_by,
            created_at=info.created_at,
            expires_at=info.expires_at,
            revoked_at=info.revoked_at,
            last_used_at=info.last_used_at,
            active=info.active(),
        )


class TokenCreated(TokenItem):
    """A new token with its text, shown this once."""

    token: str


def _create(hub: HubDep, body: TokenIn, owner: str, actor: str, response: Response) -> TokenCreated:
    expires = utcnow() + dt.timedelta(days=body.expires_in_days) if body.expires_in_days else None
    with bad_input():
        info, token = create_api_token(
            hub.db, owner=owner, name=body.name, scopes=body.scopes, expires_at=expires, actor=actor
        )
    response.headers["Cache-Control"] = "no-store"
    return TokenCreated(**TokenItem.of(info).model_dump(), token=token)


@router.get("/tokens", response_model=list[TokenItem])
def my_tokens(hub: HubDep, user: CurrentUser) -> list[TokenItem]:
    """My API tokens, newest first."""
    return [TokenItem.of(t) for t in list_api_tokens(hub.db, owner=user.username)]


def _signed_in(principal: CurrentPrincipal) -> None:
    """Only a signed-in user makes API tokens: a token must not outlive its own revocation."""
    if principal.token is not None:
        raise HTTPException(
            status_code=403, detail="API tokens cannot make API tokens; sign in as a user"
        )


@router.post(
    "/tokens",
    response_model=TokenCreated,
    status_code=201,
    responses=_ERRORS,
    dependencies=[Depends(_signed_in)],
)
def make_my_token(
    body: TokenIn, response: Response, hub: HubDep, user: CurrentUser
) -> TokenCreated:
    """Make an API token of mine; the answer carries its text, which is not shown again."""
    return _create(hub, body, user.username, user.username, response)


@router.delete("/tokens/{token_id}", response_model=TokenItem, responses=_ERRORS)
def revoke_my_token(token_id: str, hub: HubDep, user: CurrentUser) -> TokenItem:
    """Revoke one of my API tokens at once."""
    info = revoke_api_token(hub.db, token_id, actor=user.username, owner=user.username)
    return TokenItem.of(info)


@admin_router.get("/tokens", response_model=list[TokenItem])
def all_tokens(hub: HubDep) -> list[TokenItem]:
    """Every API token, newest first."""
    return [TokenItem.of(t) for t in list_api_tokens(hub.db)]


@admin_router.post(
    "/tokens",
    response_model=TokenCreated,
    status_code=201,
    responses=_ERRORS,
    dependencies=[Depends(_signed_in)],
)
def make_token(
    body: AdminTokenIn, response: Response, hub: HubDep, user: CurrentUser
) -> TokenCreated:
    """Make an API token for a user (e.g. a service account of an integration)."""
    return _create(hub, body, body.owner, user.username, response)


@admin_router.delete("/tokens/{token_id}", response_model=TokenItem, responses=_ERRORS)
def revoke_token(token_id: str, hub: HubDep, user: CurrentUser) -> TokenItem:
    """Revoke any API token at once."""
    return TokenItem.of(revoke_api_token(hub.db, token_id, actor=user.username))

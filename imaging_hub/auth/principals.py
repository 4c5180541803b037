"""Who a request acts for: a signed-in user, an API token (for its owner) or a share link.

The three kinds of bearer token are told apart by their form: API tokens start with ``ihk_``,
share links with ``ihs_``, and anything else must be one of the hub's access JWTs.
"""

from __future__ import annotations

from dataclasses import dataclass

from imaging_hub import audit
from imaging_hub.auth.api_tokens import (
    ALL_SCOPES,
    ApiTokenInfo,
    Scope,
    is_api_token,
    user_for_api_token,
)
from imaging_hub.auth.sessions import user_for_token
from imaging_hub.auth.tokens import TokenIssuer
from imaging_hub.auth.users import UserInfo
from imaging_hub.db.engine import Database
from imaging_hub.sharing import ShareInfo, is_share_token, share_for_token

__all__ = ["Principal", "principal_for_bearer"]


@dataclass(frozen=True, slots=True)
class Principal:
    """The actor of a request, as the audit trail names it, and what it may do."""

    #: The audit actor kind: user, token or share.
    kind: str
    #: The audit actor: the username (also for an API token: its owner) or the share link id.
    name: str
    #: The user acted for (None for a share link).
    user: UserInfo | None
    scopes: frozenset[Scope]
    token: ApiTokenInfo | None = None
    share: ShareInfo | None = None

    def has_scope(self, scope: Scope) -> bool:
        """Tell whether this principal's scopes include scope."""
        return scope in self.scopes

    def audit_detail(self) -> dict[str, str]:
        """What the audit trail keeps about the credential, besides the actor."""
        if self.token is not None:
            return {"token": self.token.public_id, "token_name": self.token.name}
        if self.share is not None:
            return {"share_created_by": self.share.created_by}
        return {}


def principal_for_bearer(db: Database, issuer: TokenIssuer, token: str) -> Principal:
    """The principal a bearer token stands for; AuthenticationFailed or AccountDisabled if none."""
    if is_api_token(token):
        user, info = user_for_api_token(db, token)
        return Principal(audit.ACTOR_KIND_TOKEN, user.username, user, info.scopes, token=info)
    if is_share_token(token):
        share = share_for_token(db, token)
        return Principal(
            audit.ACTOR_KIND_SHARE, share.public_id, None, frozenset({Scope.READ}), share=share
        )
    user = user_for_token(db, issuer, token)
    return Principal(audit.ACTOR_KIND_USER, user.username, user, ALL_SCOPES)

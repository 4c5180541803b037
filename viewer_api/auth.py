"""Who a request acts for, and whether it may do what it asks (DESIGN invariant 6).

Every protected router gets :func:`check_access` as a dependency (see ``viewer_api.app``). It
authenticates the bearer token (an access JWT, an API token or a share link) and then checks:

- the token's scope: ``read`` for GET, ``store`` for STOW-RS, ``admin`` under /api/admin,
  ``write`` for every other write;
- the role, on every write: a route names its roles with :func:`require_role`; a write route
  that names none is for radiology staff and admins (``DEFAULT_WRITE_ROLES``);
- a share link's scope: it may only read DICOMweb, WADO-URI and the download and image routes
  of ``SHARE_ROUTES``, and only for the UIDs of its study or patient; searches that span
  studies are limited to those studies.

Refusals raise core errors, which the app answers with 401 or 403 and a JSON reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.security import OAuth2PasswordBearer
from starlette.datastructures import QueryParams

from imaging_hub.auth import Role, TokenIssuer, UserInfo
from imaging_hub.auth.api_tokens import API_TOKEN_PREFIX, Scope
from imaging_hub.auth.principals import Principal, principal_for_bearer
from imaging_hub.errors import AuthenticationFailed, PermissionDenied
from imaging_hub.sharing import SHARE_PREFIX, check_share_access, scope_study_uids
from viewer_api.deps import HubDep

__all__ = [
    "AUTHENTICATED",
    "DEFAULT_WRITE_ROLES",
    "READ_POSTS",
    "SHARE_ROUTES",
    "TOKEN_URL",
    "CurrentPrincipal",
    "CurrentUser",
    "TokensDep",
    "check_access",
    "current_principal",
    "current_user",
    "get_tokens",
    "install_route_templates",
    "require_role",
    "required_scope",
    "route_template",
    "write_roles",
]

TOKEN_URL = "/api/auth/token"

#: Reads ``Authorization: Bearer …``; also gives /docs its "Authorize" button.
bearer_scheme = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)

#: Who may use a write route that does not name its roles.
DEFAULT_WRITE_ROLES = frozenset({Role.RADIOLOGY, Role.ADMIN})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Writes by method only: they read data and take their selection as a body.
READ_POSTS = frozenset({"/api/downloads"})
_ROLES_ATTR = "__hub_roles__"

#: Route templates (besides everything under /dicomweb and /wado) a share link may read.
SHARE_ROUTES = frozenset(
    {
        "/api/studies/{study_uid}/download",
        "/api/studies/{study_uid}/thumbnails",
        "/api/instances/{sop_uid}/{kind}",
        "/api/share/me",
    }
)
_SHARE_PREFIXES = ("/dicomweb/", "/wado")

#: Path parameters (and WADO-URI query parameters) that name data, by what they name.
_UID_PARAMS = {
    "study": "studies",
    "study_uid": "studies",
    "studyUID": "studies",
    "series": "series",
    "series_uid": "series",
    "seriesUID": "series",
    "instance": "instances",
    "sop_uid": "instances",
    "objectUID": "instances",
    "mrn": "patients",
}
_STUDY_UID_KEYS = frozenset({"StudyInstanceUID", "0020000D"})


def get_tokens(request: Request) -> TokenIssuer:
    """The token issuer the app created at startup."""
    issuer: TokenIssuer = request.app.state.tokens
    return issuer


TokensDep = Annotated[TokenIssuer, Depends(get_tokens)]


def _attempted(token: str) -> tuple[str, str] | None:
    """(actor kind, public id) named by an API token or share link, to audit a refused use."""
    for prefix, kind in ((API_TOKEN_PREFIX, "token"), (SHARE_PREFIX, "share")):
        if token.startswith(prefix):
            return kind, token.removeprefix(prefix)[:16]
    return None


def current_principal(
    request: Request,
    hub: HubDep,
    tokens: TokensDep,
    token: Annotated[str | None, Depends(bearer_scheme)],
) -> Principal:
    """Who the request's bearer token stands for (401/403 otherwise).

    A share link may also come as the ``access_token`` query parameter (RFC 6750 2.3), so that
    a link can be opened in a browser; other tokens only in the Authorization header.
    """
    if not token:
        query_token = request.query_params.get("access_token")
        if query_token and query_token.startswith(SHARE_PREFIX):
            token = query_token
            # Not a search key, and a secret: neither QIDO-RS nor the audit trail may see it.
            kept = [(k, v) for k, v in request.query_params.multi_items() if k != "access_token"]
            _set_query(request, kept)
    if not token:
        raise AuthenticationFailed(
            "not authenticated: send an access token as 'Authorization: Bearer <token>' "
            f"(get one from {TOKEN_URL})"
        )
    request.state.attempted_actor = _attempted(token)
    principal = principal_for_bearer(hub.db, tokens, token)
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def current_user(principal: CurrentPrincipal) -> UserInfo:
    """The user the request acts for (a share link acts for no user: 403)."""
    if principal.user is None:
        raise PermissionDenied("a share link may only read the study or patient it was made for")
    return principal.user


CurrentUser = Annotated[UserInfo, Depends(current_user)]


def require_role(*roles: Role) -> Callable[[UserInfo], UserInfo]:
    """A dependency that lets through only users with one of roles (403 for the others)."""
    allowed = frozenset(roles)
    names = ", ".join(sorted(r.value for r in allowed))

    def check_role(user: CurrentUser) -> UserInfo:
        if user.role not in allowed:
            raise PermissionDenied(f"the role {user.role.value} may not do this (needs: {names})")
        return user

    setattr(check_role, _ROLES_ATTR, allowed)
    return check_role


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def write_roles(route: Any) -> frozenset[Role]:
    """The roles a route's own require_role dependencies admit (empty: it names none)."""
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return frozenset()
    found: set[Role] = set()
    for call in _calls(dependant):
        found |= getattr(call, _ROLES_ATTR, frozenset())
    return frozenset(found)


def install_route_templates(app: FastAPI) -> None:
    """Remember each route's full path template (prefixes included) for the checks below."""
    import fastapi.routing

    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    contexts = list(flatten(app.routes)) if flatten else list(app.routes)
    app.state.route_templates = {
        id(getattr(ctx, "original_route", ctx)): getattr(ctx, "path", "") for ctx in contexts
    }


def route_template(request: Request) -> str:
    """The full path template of the request's route, e.g. ``/dicomweb/studies/{study}``."""
    route = request.scope.get("route")
    templates: dict[int, str] = getattr(request.app.state, "route_templates", {})
    return templates.get(id(route), getattr(route, "path", request.url.path))


def required_scope(method: str, template: str) -> Scope:
    """The API token scope a request needs."""
    if template.startswith("/api/admin"):
        return Scope.ADMIN
    if method in _SAFE_METHODS or (method == "POST" and template in READ_POSTS):
        return Scope.READ
    if method == "POST" and template.startswith("/dicomweb/studies"):
        return Scope.STORE
    return Scope.WRITE


def _check_role(principal: Principal, route: Any) -> None:
    """Refuse a write by a user whose role the route does not admit."""
    roles = write_roles(route) or DEFAULT_WRITE_ROLES
    user = principal.user
    if user is None:
        raise PermissionDenied("a share link may only read")
    if user.role not in roles:
        names = ", ".join(sorted(r.value for r in roles))
        raise PermissionDenied(f"the role {user.role.value} may not do this (needs: {names})")


def _share_scope(request: Request, hub: HubDep, principal: Principal, template: str) -> None:
    """Refuse a share link anything but reading the data in its scope; narrow searches to it."""
    share = principal.share
    assert share is not None
    if request.method not in _SAFE_METHODS or not (
        template.startswith(_SHARE_PREFIXES) or template in SHARE_ROUTES
    ):
        raise PermissionDenied("a share link may only read the study or patient it was made for")
    named: dict[str, list[str]] = {"studies": [], "series": [], "instances": [], "patients": []}
    for name, value in request.path_params.items():
        if name in _UID_PARAMS:
            named[_UID_PARAMS[name]].append(str(value))
    if template.startswith("/wado"):
        for name in ("studyUID", "seriesUID", "objectUID"):
            named[_UID_PARAMS[name]] += request.query_params.getlist(name)
    with hub.db.read() as session:
        check_share_access(session, share, **named)
        if _is_search_across_studies(template):
            _narrow_search(request, scope_study_uids(session, share))


def _is_search_across_studies(template: str) -> bool:
    return template in ("/dicomweb/studies", "/dicomweb/series", "/dicomweb/instances")


def _narrow_search(request: Request, allowed: list[str]) -> None:
    """Rewrite a QIDO-RS query so that it matches only the allowed studies."""
    items = request.query_params.multi_items()
    asked = [
        uid
        for key, value in items
        if key in _STUDY_UID_KEYS or key.upper() in _STUDY_UID_KEYS
        for uid in value.replace("\\", ",").split(",")
        if uid.strip()
    ]
    uids = [uid for uid in allowed if uid in {a.strip() for a in asked}] if asked else allowed
    if not uids:
        raise PermissionDenied("this share link does not open that data")
    kept = [
        (k, v) for k, v in items if k not in _STUDY_UID_KEYS and k.upper() not in _STUDY_UID_KEYS
    ]
    kept.append(("StudyInstanceUID", ",".join(uids)))
    _set_query(request, kept)


def _set_query(request: Request, items: list[tuple[str, str]]) -> None:
    """Replace the request's query string (what the route and the audit trail will read)."""
    request.scope["query_string"] = str(QueryParams(items)).encode("latin-1")
    if hasattr(request, "_query_params"):
        del request._query_params


def check_access(request: Request, hub: HubDep, principal: CurrentPrincipal) -> Principal:
    """Authenticate, then check the scope, the role on writes and a share link's reach."""
    template = route_template(request)
    needed = required_scope(request.method, template)
    if principal.share is not None:
        _share_scope(request, hub, principal, template)
    elif not principal.has_scope(needed):
        raise PermissionDenied(f"this token lacks the {needed.value} scope")
    if request.method not in _SAFE_METHODS:
        _check_role(principal, request.scope.get("route"))
    return principal


#: The dependencies of every protected router (see ``viewer_api.app``).
AUTHENTICATED = [Depends(check_access)]

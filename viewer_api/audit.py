"""The audit trail of every HTTP access to patient data (DESIGN invariant 6; PS3.15 A.5).

:class:`AuditMiddleware` wraps the app: when a request to a protected route has been answered
(a streamed answer: sent to the end, or broken off), it writes one audit event per study the
request touched, naming who (the principal the access check found, or the credential refused),
what (action from the route's kind, study and patient from the path, or what the route put in
``request.state.audit``), when, from where and the outcome (from the status). Routes need no
code of their own for this; a route that knows more (a search of the REST API, a download of
several studies, the patient of a new note) sets ``request.state.audit`` to an
:class:`AuditContext`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from sqlalchemy import select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imaging_hub import audit
from imaging_hub.db.models import Instance, PatientRecord, Series, Study
from imaging_hub.dicom.uids import is_valid_uid
from imaging_hub.hub import Hub

__all__ = [
    "AUDITED_PREFIXES",
    "NOT_PATIENT_DATA",
    "AuditContext",
    "AuditMiddleware",
    "action_for",
]

log = structlog.get_logger(__name__)

#: Paths whose routes are audited.
AUDITED_PREFIXES = ("/api/", "/dicomweb/", "/wado")

#: Routes that read or change no patient data, so write no access event. Account and token
#: changes are audited by the core as security alerts where they happen. (Share links open
#: patient data: their routes are audited here too, refusals included.)
NOT_PATIENT_DATA = frozenset(
    {
        ("POST", "/api/auth/token"),
        ("POST", "/api/auth/refresh"),
        ("GET", "/api/auth/me"),
        ("GET", "/api/admin/users"),
        ("POST", "/api/admin/users"),
        ("POST", "/api/admin/users/{username}/disable"),
        ("POST", "/api/admin/users/{username}/enable"),
        ("POST", "/api/admin/users/{username}/password"),
        ("GET", "/api/admin/jobs"),
        ("GET", "/api/admin/tokens"),
        ("POST", "/api/admin/tokens"),
        ("DELETE", "/api/admin/tokens/{token_id}"),
        ("GET", "/api/tokens"),
        ("POST", "/api/tokens"),
        ("DELETE", "/api/tokens/{token_id}"),
    }
)

_EVENT_ACTION = {"GET": audit.READ, "HEAD": audit.READ, "POST": audit.CREATE}
_EVENT_ACTION |= {"PUT": audit.UPDATE, "PATCH": audit.UPDATE, "DELETE": audit.DELETE}
_SEARCH_RE = re.compile(r"/(studies|series|instances|patients|referrals|records|share-links)$")
_MAX_QUERY = 2000


@dataclass
class AuditContext:
    """What a route tells the audit trail beyond its path: the studies and patient it touched."""

    study_uids: list[str] = field(default_factory=list)
    patient_record_id: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def action_for(method: str, template: str) -> str | None:
    """The audit action of a route (None: it touches no patient data)."""
    if (method, template) in NOT_PATIENT_DATA:
        return None
    if template.startswith("/api/admin/audit"):
        return audit.AUDIT_LOG_USED
    if "/referrals" in template:
        return audit.ORDER_RECORD
    if template.startswith("/api/share-links"):
        return audit.SECURITY_ALERT
    if template.endswith("/download") or template == "/api/downloads":
        return audit.EXPORT
    if method not in ("GET", "HEAD"):
        if template.startswith("/dicomweb/studies"):
            return audit.INSTANCES_TRANSFERRED  # STOW-RS: instances received over the network
        if template.startswith("/api/admin/"):
            return audit.APPLICATION_ACTIVITY
        return audit.PATIENT_RECORD
    if _SEARCH_RE.search(template) or template == "/api/studies":
        return audit.QUERY
    if template.startswith(("/api/patients/", "/api/records/")):
        return audit.PATIENT_RECORD
    return audit.INSTANCES_ACCESSED


def _event_action(action: str, method: str) -> str:
    """The event action code (PS3.15 A.5.1): searches execute, exports read, writes by method."""
    if action == audit.QUERY:
        return audit.EXECUTE
    if action == audit.EXPORT:
        return audit.READ
    return _EVENT_ACTION.get(method, audit.EXECUTE)


def _outcome(status: int | None, completed: bool) -> str:
    if status is None or status >= 500 or not completed:
        return audit.SERIOUS_FAILURE
    return audit.SUCCESS if status < 400 else audit.FAILURE


class AuditMiddleware:
    """Write the audit events of each answered request to a protected route (pure ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, watch the answer, then audit it."""
        if scope["type"] != "http" or not str(scope["path"]).startswith(AUDITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        seen: dict[str, Any] = {"status": None, "completed": False}

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                seen["completed"] = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(
                    self._audit, scope, seen["status"], seen["completed"]
                )

    def _audit(self, scope: Scope, status: int | None, completed: bool) -> None:
        """Write the events of one request; a failure to audit is logged, never raised."""
        try:
            _write_events(scope, status, completed)
        except Exception as exc:
            log.error("audit_failed", path=str(scope.get("path")), error=type(exc).__name__)


def _template(scope: Scope) -> str | None:
    route = scope.get("route")
    if route is None:
        return None
    app = scope.get("app")
    templates: dict[int, str] = getattr(getattr(app, "state", None), "route_templates", {})
    return templates.get(id(route), getattr(route, "path", None))


def _actor(state: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
    """(actor, actor kind, credential detail) of a request."""
    principal = state.get("principal")
    if principal is not None:
        return principal.name, principal.kind, principal.audit_detail()
    attempted = state.get("attempted_actor")
    if attempted is not None:
        return attempted[1], attempted[0], {}
    return "anonymous", audit.ACTOR_KIND_USER, {}


def _query_uid(scope: Scope, name: str) -> str | None:
    from urllib.parse import parse_qs

    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values else None


def _studies_from_path(session: Any, params: dict[str, Any], scope: Scope) -> list[str]:
    """The study a request's path (or WADO-URI query) names, directly or through its parts."""
    study = params.get("study") or params.get("study_uid") or _query_uid(scope, "studyUID")
    if study:
        return [str(study)]
    series = params.get("series") or params.get("series_uid")
    instance = params.get("instance") or params.get("sop_uid")
    query = None
    if instance and is_valid_uid(instance):
        query = (
            select(Study.study_uid)
            .join(Series, Series.study_pk == Study.id)
            .join(Instance, Instance.series_pk == Series.id)
            .where(Instance.sop_instance_uid == instance)
        )
    elif series and is_valid_uid(series):
        query = (
            select(Study.study_uid)
            .join(Series, Series.study_pk == Study.id)
            .where(Series.series_uid == series)
        )
    found = session.scalar(query) if query is not None else None
    return [found] if found else []


def _write_events(scope: Scope, status: int | None, completed: bool) -> None:
    template = _template(scope)
    method = str(scope.get("method", "GET"))
    if template is None or not template.startswith(AUDITED_PREFIXES):
        return
    action = action_for(method, template)
    if action is None:
        return
    hub: Hub = scope["app"].state.hub
    state: dict[str, Any] = scope.get("state") or {}
    context: AuditContext = state.get("audit") or AuditContext()
    actor, kind, credential = _actor(state)
    params: dict[str, Any] = scope.get("path_params") or {}
    client = scope.get("client")
    detail: dict[str, Any] = {
        "event_action": _event_action(action, method),
        "method": method,
        "route": template,
        "status": status,
        **credential,
        **{k: str(v) for k, v in params.items() if k not in ("study", "study_uid")},
        **context.detail,
    }
    if not completed and status is not None:
        detail["completed"] = False
    query = scope.get("query_string", b"")
    if action == audit.QUERY and query:
        detail["query"] = query.decode("latin-1")[:_MAX_QUERY]
    with hub.db.write() as session:
        patient = context.patient_record_id
        if patient is None and params.get("mrn"):
            patient = session.scalar(
                select(PatientRecord.id).where(PatientRecord.mrn == str(params["mrn"]))
            )
        studies = context.study_uids or _studies_from_path(session, params, scope)
        for study_uid in studies or [None]:
            audit.record(
                session,
                actor=actor,
                actor_kind=kind,
                action=action,
                outcome=_outcome(status, completed),
                source_address=client[0] if client else None,
                patient_record_id=patient,
                study_uid=study_uid,
                detail=detail,
            )

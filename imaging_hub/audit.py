"""The audit trail: append-only events saying who did what to which patient data, and how it went.

The vocabulary follows the DICOM audit messages (PS3.15 A.5.3) and IHE ATNA: each ``action``
is one audit message's event ID (DCM 1101xx), written in lower case with dashes; the event
action code (PS3.15 A.5.1: C, R, U, D, E) and anything else go in ``detail``. Actors are
users, API tokens, share links, DICOM nodes (by AE title) or the hub itself.

Front ends call :func:`record` inside the transaction of the change they audit (so the event
and the change commit together), or :func:`record_event` for reads, which have none.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import structlog
from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.orm import Session

from imaging_hub.db.engine import Database
from imaging_hub.db.models import AuditEvent, PatientRecord, Study

__all__ = [
    "ACTIONS",
    "ACTOR_KINDS",
    "ACTOR_KIND_AET",
    "ACTOR_KIND_SHARE",
    "ACTOR_KIND_SYSTEM",
    "ACTOR_KIND_TOKEN",
    "ACTOR_KIND_USER",
    "APPLICATION_ACTIVITY",
    "AUDIT_LOG_USED",
    "BEGIN_TRANSFERRING",
    "CREATE",
    "DELETE",
    "EVENT_IDS",
    "EXECUTE",
    "EXPORT",
    "FAILURE",
    "IMPORT",
    "INSTANCES_ACCESSED",
    "INSTANCES_TRANSFERRED",
    "MAJOR_FAILURE",
    "NETWORK_ENTRY",
    "ORDER_RECORD",
    "OUTCOMES",
    "OUTCOME_CODES",
    "PATIENT_RECORD",
    "PROCEDURE_RECORD",
    "QUERY",
    "READ",
    "SECURITY_ALERT",
    "SERIOUS_FAILURE",
    "STUDY_DELETED",
    "SUCCESS",
    "UPDATE",
    "USER_AUTHENTICATION",
    "AuditEntry",
    "AuditFilters",
    "iter_events",
    "record",
    "record_event",
    "search_events",
]

log = structlog.get_logger(__name__)

# -- what happened: the audit messages of PS3.15 A.5.3 ------------------------------------------
APPLICATION_ACTIVITY: Final = "application-activity"  # DCM 110100: start/stop of the hub
AUDIT_LOG_USED: Final = "audit-log-used"  # DCM 110101: someone read or exported the audit trail
BEGIN_TRANSFERRING: Final = "begin-transferring"  # DCM 110102: a transfer of instances starts
INSTANCES_ACCESSED: Final = "instances-accessed"  # DCM 110103: instances read, created, changed
INSTANCES_TRANSFERRED: Final = "instances-transferred"  # DCM 110104: sent to/received from a peer
STUDY_DELETED: Final = "study-deleted"  # DCM 110105
EXPORT: Final = "export"  # DCM 110106: data left the hub on media or as a download (ZIP)
IMPORT: Final = "import"  # DCM 110107: data came in from media (CD, folder, zip)
NETWORK_ENTRY: Final = "network-entry"  # DCM 110108
ORDER_RECORD: Final = "order-record"  # DCM 110109: referrals (orders) created or changed
PATIENT_RECORD: Final = "patient-record"  # DCM 110110: notes, reports, identity changes
PROCEDURE_RECORD: Final = "procedure-record"  # DCM 110111
QUERY: Final = "query"  # DCM 110112: a search (QIDO-RS, C-FIND, REST search)
SECURITY_ALERT: Final = "security-alert"  # DCM 110113: accounts, tokens, share links changed
USER_AUTHENTICATION: Final = "user-authentication"  # DCM 110114: login, logout, refresh

#: Each action's audit message event ID (PS3.16 CID 400, "DCM" coding scheme).
EVENT_IDS: Final[Mapping[str, str]] = {
    APPLICATION_ACTIVITY: "110100",
    AUDIT_LOG_USED: "110101",
    BEGIN_TRANSFERRING: "110102",
    INSTANCES_ACCESSED: "110103",
    INSTANCES_TRANSFERRED: "110104",
    STUDY_DELETED: "110105",
    EXPORT: "110106",
    IMPORT: "110107",
    NETWORK_ENTRY: "110108",
    ORDER_RECORD: "110109",
    PATIENT_RECORD: "110110",
    PROCEDURE_RECORD: "110111",
    QUERY: "110112",
    SECURITY_ALERT: "110113",
    USER_AUTHENTICATION: "110114",
}
ACTIONS: Final = frozenset(EVENT_IDS)

# -- the event action code (PS3.15 A.5.1), kept in detail["event_action"] -----------------------
CREATE: Final = "C"
READ: Final = "R"
UPDATE: Final = "U"
DELETE: Final = "D"
EXECUTE: Final = "E"
_EVENT_ACTIONS = frozenset({CREATE, READ, UPDATE, DELETE, EXECUTE})

# -- how it went (EventOutcomeIndicator, PS3.15 A.5.1) ------------------------------------------
SUCCESS: Final = "success"  # 0
FAILURE: Final = "failure"  # 4: minor failure, e.g. refused or bad input; nothing changed
SERIOUS_FAILURE: Final = "serious-failure"  # 8: the action was ended by an error
MAJOR_FAILURE: Final = "major-failure"  # 12: the action made the service unavailable
OUTCOME_CODES: Final[Mapping[str, int]] = {
    SUCCESS: 0,
    FAILURE: 4,
    SERIOUS_FAILURE: 8,
    MAJOR_FAILURE: 12,
}
OUTCOMES: Final = frozenset(OUTCOME_CODES)

# -- who did it ---------------------------------------------------------------------------------
ACTOR_KIND_USER: Final = "user"  # actor: the username
ACTOR_KIND_TOKEN: Final = "token"  # actor: the API token's name (its owner in detail)
ACTOR_KIND_SHARE: Final = "share"  # actor: the share link's public id
ACTOR_KIND_AET: Final = "aet"  # actor: the calling AE title
ACTOR_KIND_SYSTEM: Final = "system"  # actor: the hub's part ("cli", "worker", …)
ACTOR_KINDS: Final = frozenset(
    {ACTOR_KIND_USER, ACTOR_KIND_TOKEN, ACTOR_KIND_SHARE, ACTOR_KIND_AET, ACTOR_KIND_SYSTEM}
)

_ACTOR_MAX = 128
_ADDRESS_MAX = 128
_UID_MAX = 64


def _check(
    actor: str, actor_kind: str, action: str, outcome: str, detail: Mapping[str, Any]
) -> None:
    """Raise ValueError for an event the vocabulary does not know."""
    if actor_kind not in ACTOR_KINDS:
        raise ValueError(f"unknown actor kind {actor_kind!r}: use one of {sorted(ACTOR_KINDS)}")
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}: use one of {sorted(ACTIONS)}")
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown audit outcome {outcome!r}: use one of {sorted(OUTCOMES)}")
    event_action = detail.get("event_action")
    if event_action is not None and event_action not in _EVENT_ACTIONS:
        raise ValueError(f"unknown event action code {event_action!r}: use C, R, U, D or E")
    if not actor:
        raise ValueError("an audit event needs an actor")


def record(
    session: Session,
    *,
    actor: str,
    actor_kind: str,
    action: str,
    outcome: str,
    source_address: str | None = None,
    patient_record_id: int | None = None,
    study_uid: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Add one audit event to session's transaction (PS3.15 A.5); ValueError for bad vocabulary.

    When only ``study_uid`` is given, the event is filed under that study's patient record
    too, so that a search by patient finds it. ``detail`` must be JSON-serialisable.
    """
    details = dict(detail or {})
    _check(actor, actor_kind, action, outcome, details)
    if study_uid is not None and len(study_uid) > _UID_MAX:
        details["study_uid"], study_uid = study_uid[:256], None  # not a UID: kept, not indexed
    if patient_record_id is None and study_uid is not None:
        patient_record_id = session.scalar(
            select(Study.patient_record_id).where(Study.study_uid == study_uid)
        )
    session.add(
        AuditEvent(
            actor=actor[:_ACTOR_MAX],
            actor_kind=actor_kind,
            action=action,
            outcome=outcome,
            source_address=source_address[:_ADDRESS_MAX] if source_address else None,
            patient_record_id=patient_record_id,
            study_uid=study_uid,
            detail=details,
        )
    )


def record_event(
    db: Database,
    *,
    actor: str,
    actor_kind: str,
    action: str,
    outcome: str,
    source_address: str | None = None,
    patient_record_id: int | None = None,
    study_uid: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Write one audit event in a transaction of its own (for reads, which have none)."""
    with db.write() as session:
        record(
            session,
            actor=actor,
            actor_kind=actor_kind,
            action=action,
            outcome=outcome,
            source_address=source_address,
            patient_record_id=patient_record_id,
            study_uid=study_uid,
            detail=detail,
        )
    log.debug("audit_event", action=action, actor_kind=actor_kind, outcome=outcome)


# -- reading the trail (admins) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditFilters:
    """What an audit search matches; every field None matches anything. Times are inclusive."""

    actor: str | None = None
    actor_kind: str | None = None
    patient_mrn: str | None = None
    study_uid: str | None = None
    action: str | None = None
    outcome: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        """The SQL conditions of these filters; ValueError for a naive time or bad vocabulary."""
        for moment in (self.since, self.until):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("audit search times need a time zone")
        if self.action is not None and self.action not in ACTIONS:
            raise ValueError(f"unknown audit action {self.action!r}: use one of {sorted(ACTIONS)}")
        built: list[ColumnElement[bool]] = []
        pairs = (
            (AuditEvent.actor, self.actor),
            (AuditEvent.actor_kind, self.actor_kind),
            (AuditEvent.study_uid, self.study_uid),
            (AuditEvent.action, self.action),
            (AuditEvent.outcome, self.outcome),
        )
        built += [column == value for column, value in pairs if value is not None]
        if self.patient_mrn is not None:
            built.append(PatientRecord.mrn == self.patient_mrn)
        if self.since is not None:
            built.append(AuditEvent.at >= self.since)
        if self.until is not None:
            built.append(AuditEvent.at <= self.until)
        return built


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit event as admins read it."""

    id: int
    at: dt.datetime
    actor: str
    actor_kind: str
    action: str
    event_id: str
    outcome: str
    outcome_code: int
    source_address: str | None
    patient_mrn: str | None
    study_uid: str | None
    detail: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        """The entry as JSON-ready values (times in ISO 8601)."""
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "actor_kind": self.actor_kind,
            "action": self.action,
            "event_id": self.event_id,
            "outcome": self.outcome,
            "outcome_code": self.outcome_code,
            "source_address": self.source_address,
            "patient_mrn": self.patient_mrn,
            "study_uid": self.study_uid,
            "detail": self.detail,
        }


def _events(filters: AuditFilters, after_id: int | None) -> Select[AuditEvent, str]:
    query = select(AuditEvent, PatientRecord.mrn).outerjoin(
        PatientRecord, PatientRecord.id == AuditEvent.patient_record_id
    )
    query = query.where(*filters.conditions())
    if after_id is not None:
        query = query.where(AuditEvent.id < after_id)
    return query.order_by(AuditEvent.id.desc())


def _entry(row: AuditEvent, mrn: str | None) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        at=row.at,
        actor=row.actor,
        actor_kind=row.actor_kind,
        action=row.action,
        event_id=EVENT_IDS.get(row.action, ""),
        outcome=row.outcome,
        outcome_code=OUTCOME_CODES.get(row.outcome, 4),
        source_address=row.source_address,
        patient_mrn=mrn,
        study_uid=row.study_uid,
        detail=dict(row.detail or {}),
    )


def search_events(
    session: Session, *, filters: AuditFilters, limit: int = 100, before_id: int | None = None
) -> list[AuditEntry]:
    """Matching events, newest first; ``before_id`` (the last id of a page) continues a search."""
    if limit < 0:
        raise ValueError("limit must not be negative")
    rows = session.execute(_events(filters, before_id).limit(limit))
    return [_entry(row, mrn) for row, mrn in rows]


def iter_events(
    session: Session, *, filters: AuditFilters, batch: int = 500
) -> Iterator[AuditEntry]:
    """Every matching event, newest first, read batch rows at a time (bounded memory)."""
    rows = session.execute(_events(filters, None).execution_options(yield_per=batch))
    for row, mrn in rows:
        yield _entry(row, mrn)

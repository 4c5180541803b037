"""The audit core on SQLite and PostgreSQL: events are written with the PS3.15 A.5 vocabulary."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from imaging_hub import audit
from imaging_hub.db.models import AuditEvent, Study
from imaging_hub.hub import Hub
from tests.api.helpers import ingest_study


def events(hub: Hub) -> list[AuditEvent]:
    """Every audit event, oldest first."""
    with hub.db.read() as session:
        return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def test_an_event_is_filed_under_its_study_and_patient(hub: Hub, tmp_path: Path) -> None:
    study_uid = ingest_study(hub, tmp_path / "s", Modality="CT", PatientID="P1")
    audit.record_event(
        hub.db,
        actor="dr.grey",
        actor_kind=audit.ACTOR_KIND_USER,
        action=audit.INSTANCES_ACCESSED,
        outcome=audit.SUCCESS,
        source_address="10.1.2.3",
        study_uid=study_uid,
        detail={"event_action": audit.READ, "route": "/dicomweb/studies/{study}"},
    )
    with hub.db.read() as session:
        patient = session.scalar(
            select(Study.patient_record_id).where(Study.study_uid == study_uid)
        )
    [event] = events(hub)
    assert (event.actor, event.actor_kind, event.action, event.outcome) == (
        "dr.grey",
        "user",
        "instances-accessed",
        "success",
    )
    assert event.patient_record_id == patient is not None
    assert event.study_uid == study_uid and event.source_address == "10.1.2.3"
    assert event.detail == {"event_action": "R", "route": "/dicomweb/studies/{study}"}
    assert event.at.tzinfo is not None


def test_an_unknown_study_uid_is_kept_without_a_patient(hub: Hub) -> None:
    with hub.db.write() as session:
        audit.record(
            session,
            actor="STATION1",
            actor_kind=audit.ACTOR_KIND_AET,
            action=audit.QUERY,
            outcome=audit.FAILURE,
            study_uid="1.2.3",
        )
        audit.record(
            session,
            actor="x" * 300,
            actor_kind=audit.ACTOR_KIND_SHARE,
            action=audit.QUERY,
            outcome=audit.FAILURE,
            study_uid="9" * 100,
        )
    first, second = events(hub)
    assert (first.study_uid, first.patient_record_id) == ("1.2.3", None)
    assert second.study_uid is None and second.detail == {"study_uid": "9" * 100}
    assert len(second.actor) == 128


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("actor_kind", "robot", "unknown actor kind"),
        ("action", "peek", "unknown audit action"),
        ("outcome", "meh", "unknown audit outcome"),
        ("actor", "", "needs an actor"),
    ],
)
def test_unknown_vocabulary_is_refused(hub: Hub, field: str, value: str, message: str) -> None:
    kwargs = {
        "actor": "dr.grey",
        "actor_kind": "user",
        "action": audit.QUERY,
        "outcome": audit.SUCCESS,
        field: value,
    }
    with pytest.raises(ValueError, match=message):
        audit.record_event(hub.db, **kwargs)
    assert events(hub) == []


def test_an_unknown_event_action_code_is_refused(hub: Hub) -> None:
    with pytest.raises(ValueError, match="event action code"):
        audit.record_event(
            hub.db,
            actor="dr.grey",
            actor_kind="user",
            action=audit.QUERY,
            outcome=audit.SUCCESS,
            detail={"event_action": "X"},
        )
    assert events(hub) == []


def test_every_action_has_a_dicom_event_id() -> None:
    assert audit.EVENT_IDS[audit.USER_AUTHENTICATION] == "110114"
    assert audit.EVENT_IDS[audit.QUERY] == "110112"
    assert set(audit.EVENT_IDS.values()) == {f"1101{n:02d}" for n in range(15)}
    assert audit.OUTCOME_CODES == {
        "success": 0,
        "failure": 4,
        "serious-failure": 8,
        "major-failure": 12,
    }


def test_the_database_refuses_to_change_or_delete_audit_events(hub: Hub) -> None:
    audit.record_event(
        hub.db, actor="dr.grey", actor_kind="user", action=audit.QUERY, outcome=audit.SUCCESS
    )
    for statement in ("UPDATE audit_event SET actor = 'someone-else'", "DELETE FROM audit_event"):
        with pytest.raises(DBAPIError, match="append-only"), hub.db.write() as session:
            session.execute(text(statement))
    [event] = events(hub)
    assert event.actor == "dr.grey"

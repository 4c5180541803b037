"""The audit trail: append-only in the database, searched and exported by admins only."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from imaging_hub import audit
from imaging_hub.db.models import AuditEvent
from imaging_hub.hub import Hub
from tests.api.helpers import bearer, sign_in


def search(client: TestClient, admin: dict[str, str], **params: object) -> list[dict]:
    """GET /api/admin/audit as admin; return the events."""
    response = client.get("/api/admin/audit", params=params, headers=admin)
    assert response.status_code == 200, response.text
    return response.json()


def same_time(event: dict) -> dict:
    """An event with its time parsed (JSON lines and the search write the zone differently)."""
    return {**event, "at": dt.datetime.fromisoformat(event["at"])}


def test_opening_and_downloading_a_study_shows_in_the_patients_trail(hub, client, corpus):
    mrn = client.get("/api/studies", params={"patient_id": "P1"}).json()[0]["patient_mrn"]
    assert client.get(f"/api/studies/{corpus['A']}").status_code == 200
    assert client.get(f"/api/studies/{corpus['A']}/download").status_code == 200
    admin = sign_in(hub, "root", "admin")
    events = search(client, admin, patient_mrn=mrn)
    # Newest first: the download, the detail; the search above is no event of this patient.
    assert [(e["action"], e["actor"], e["study_uid"]) for e in events] == [
        ("export", "dr.grey", corpus["A"]),
        ("instances-accessed", "dr.grey", corpus["A"]),
    ]
    export, opened = events
    assert (export["event_id"], export["outcome"], export["outcome_code"]) == (
        "110106",
        "success",
        0,
    )
    assert export["detail"]["instances"] == 4 and export["detail"]["event_action"] == "R"
    assert opened["detail"]["route"] == "/api/studies/{study_uid}"
    assert opened["source_address"] == "testclient" and opened["patient_mrn"] == mrn
    assert all(e["actor_kind"] == "user" for e in events)
    # The other patients' trails do not show them.
    other = client.get("/api/studies", params={"patient_id": "P2"}).json()[0]["patient_mrn"]
    assert search(client, admin, patient_mrn=other) == []


def test_search_by_user_study_action_outcome_and_time(hub, anonymous, client, corpus):
    start = dt.datetime.now(dt.UTC)
    house = sign_in(hub, "dr.house", "clinician")
    client.get(f"/api/studies/{corpus['A']}")
    anonymous.get(f"/api/studies/{corpus['B']}/download", headers=house)
    anonymous.get("/api/studies/1.2.3.4.5", headers=house)  # 404: audited as a failure
    middle = dt.datetime.now(dt.UTC)
    client.get(f"/dicomweb/studies/{corpus['C']}/metadata")
    admin = sign_in(hub, "root", "admin")

    def picked(**params: object) -> list[tuple[str, str | None]]:
        return [(e["actor"], e["study_uid"]) for e in search(client, admin, **params)]

    assert picked(actor="dr.house") == [("dr.house", "1.2.3.4.5"), ("dr.house", corpus["B"])]
    assert picked(study_uid=corpus["C"]) == [("dr.grey", corpus["C"])]
    assert picked(action="export") == [("dr.house", corpus["B"])]
    assert picked(outcome="failure") == [("dr.house", "1.2.3.4.5")]
    assert picked(actor="dr.grey", since=start.isoformat()) == [
        ("dr.grey", corpus["C"]),
        ("dr.grey", corpus["A"]),
    ]
    assert picked(actor="dr.grey", since=middle.isoformat()) == [("dr.grey", corpus["C"])]
    assert picked(actor="dr.grey", since=start.isoformat(), until=middle.isoformat()) == [
        ("dr.grey", corpus["A"])
    ]
    assert picked(actor="dr.house", action="instances-accessed", outcome="success") == []
    assert picked(actor_kind="share") == []


def test_pages_follow_the_cursor(hub, client, corpus):
    for _ in range(5):
        client.get(f"/api/studies/{corpus['D']}")
    admin = sign_in(hub, "root", "admin")
    first = client.get(
        "/api/admin/audit", params={"study_uid": corpus["D"], "limit": 2}, headers=admin
    )
    cursor = first.headers["X-Next-Cursor"]
    ids = [e["id"] for e in first.json()]
    while cursor:
        page = client.get(
            "/api/admin/audit",
            params={"study_uid": corpus["D"], "limit": 2, "before": cursor},
            headers=admin,
        )
        ids += [e["id"] for e in page.json()]
        cursor = page.headers.get("X-Next-Cursor")
    assert len(ids) == 5 and ids == sorted(ids, reverse=True)


def test_export_streams_json_lines(hub, client, corpus):
    for letter in "ABCD":
        client.get(f"/api/studies/{corpus[letter]}")
    admin = sign_in(hub, "root", "admin")
    with client.stream(
        "GET", "/api/admin/audit/export", params={"actor": "dr.grey"}, headers=admin
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        assert "attachment" in response.headers["content-disposition"]
        assert "content-length" not in response.headers  # streamed, not built whole
        lines = list(response.iter_lines())
    events = [json.loads(line) for line in lines]
    assert [e["study_uid"] for e in events] == [corpus[x] for x in "DCBA"]
    assert [same_time(e) for e in events] == [
        same_time(e) for e in search(client, admin, actor="dr.grey")
    ]
    everything = client.get("/api/admin/audit/export", headers=admin).text.splitlines()
    assert len(everything) > len(events)
    bad = client.get(
        "/api/admin/audit/export", params={"since": "2024-01-01T00:00:00"}, headers=admin
    )
    assert bad.status_code == 400 and "time zone" in bad.json()["detail"]


def test_reading_the_trail_is_audited_too(hub, client):
    admin = sign_in(hub, "root", "admin")
    search(client, admin, action="export")
    client.get("/api/admin/audit/export", headers=admin)
    used = search(client, admin, action="audit-log-used")
    # Newest first; the search that reads them is audited after its own answer.
    assert [(e["actor"], e["detail"]["route"]) for e in used] == [
        ("root", "/api/admin/audit/export"),
        ("root", "/api/admin/audit"),
    ]
    assert {e["event_id"] for e in used} == {"110101"}


def test_only_admins_read_the_trail(hub, anonymous, client, corpus):
    radiology = sign_in(hub, "rad.one", "radiology")
    token = client.post("/api/tokens", json={"name": "x", "scopes": ["read"]}).json()["token"]
    link = client.post("/api/share-links", json={"study_uid": corpus["A"]}).json()["token"]
    for headers in ({}, radiology, bearer(token), bearer(link)):
        for url in ("/api/admin/audit", "/api/admin/audit/export"):
            response = anonymous.get(url, headers=headers)
            assert response.status_code == 403, (url, headers)
    assert anonymous.get("/api/admin/audit", headers={"Authorization": ""}).status_code == 401


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"since": "2024-01-01T00:00:00"}, 400),
        ({"action": "looked-around"}, 400),
        ({"actor_kind": "robot"}, 422),
        ({"outcome": "meh"}, 422),
        ({"since": "yesterday"}, 422),
        ({"limit": 0}, 422),
        ({"before": 0}, 422),
    ],
)
def test_bad_searches(hub, client, params, status):
    admin = sign_in(hub, "root", "admin")
    assert client.get("/api/admin/audit", params=params, headers=admin).status_code == status


def test_the_database_refuses_to_change_or_delete_events(hub: Hub, client, corpus):
    client.get(f"/api/studies/{corpus['A']}")
    with hub.db.read() as session:
        before = session.execute(select(AuditEvent.id, AuditEvent.actor)).all()
    assert before
    statements = [
        "UPDATE audit_event SET actor = 'someone-else'",
        "UPDATE audit_event SET outcome = 'success' WHERE id = :id",
        "DELETE FROM audit_event WHERE id = :id",
        "DELETE FROM audit_event",
    ]
    if hub.db.engine.dialect.name == "postgresql":
        statements.append("TRUNCATE audit_event")
    for statement in statements:
        with pytest.raises(DBAPIError, match="append-only"), hub.db.write() as session:
            session.execute(text(statement), {"id": before[0].id})
    with hub.db.read() as session:
        assert session.execute(select(AuditEvent.id, AuditEvent.actor)).all() == before
    # Appending still works.
    audit.record_event(
        hub.db,
        actor="cli",
        actor_kind="system",
        action=audit.APPLICATION_ACTIVITY,
        outcome="success",
    )
    with hub.db.read() as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == len(before) + 1

"""Every route that reads or changes patient data writes an audit event (DESIGN invariant 6).

The test walks every route of the app under /api, /dicomweb and /wado, as test_auth's 401 check
does, calls each with a valid token and real values, and looks for the event. A new route makes
it fail until it is called here (a sample value for a new path parameter, a body for a new
write) or listed, with its reason, among the routes that touch no patient data.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydicom import dcmread
from sqlalchemy import func, select
from starlette.routing import Mount

from imaging_hub import audit
from imaging_hub.db.models import AuditEvent
from imaging_hub.hub import Hub
from tests.api.helpers import PASSWORD, bearer, sign_in
from tests.api.test_auth import every_route
from tests.api.test_records import PDF_BYTES
from tests.api.test_shares import first_instance
from tests.api.test_stow import CONTENT_TYPE, body
from tests.scp import test_find
from tests.scp.test_find import Index, c_find, query
from tests.support import make_study

#: Routes that read or change no patient data, so no access event is asked of them.
NO_PATIENT_DATA = {
    # Signing in and out: the core audits logins as user-authentication events itself.
    ("POST", "/api/auth/token"),
    ("POST", "/api/auth/refresh"),
    ("GET", "/api/auth/me"),  # one's own account
    # Accounts: changes are audited by the core as security alerts.
    ("GET", "/api/admin/users"),
    ("POST", "/api/admin/users"),
    ("POST", "/api/admin/users/{username}/disable"),
    ("POST", "/api/admin/users/{username}/enable"),
    ("POST", "/api/admin/users/{username}/password"),
    # API tokens name users and scopes, never patients; made and revoked as security alerts.
    ("GET", "/api/tokens"),
    ("POST", "/api/tokens"),
    ("DELETE", "/api/tokens/{token_id}"),
    ("GET", "/api/admin/tokens"),
    ("POST", "/api/admin/tokens"),
    ("DELETE", "/api/admin/tokens/{token_id}"),
    # Background work: job kinds, states, counts and errors (payloads hold IDs only).
    ("GET", "/api/admin/jobs"),
}


def _new_instance(tmp: Path, study_uid: str) -> bytes:
    """The bytes of a new instance of a study (for STOW-RS)."""
    [path] = make_study(tmp, study_uid=study_uid, PatientID="P1", PatientName="Doe^Jane")
    assert dcmread(path).StudyInstanceUID == study_uid
    return path.read_bytes()


class Calls:
    """What to send to each route: path values, query, body, and who sends it."""

    def __init__(self, hub: Hub, client: TestClient, corpus: dict[str, str], tmp: Path) -> None:
        self.admin = sign_in(hub, "root", "admin")
        study = corpus["A"]
        series, sop = first_instance(hub, study)
        detail = client.get(f"/api/studies/{study}", headers=self.admin).json()
        self.mrn = detail["patient_mrn"]
        post = self._post(client)
        record = post(
            "/api/records/pdf",
            files={"file": ("report.pdf", PDF_BYTES, "application/pdf")},
            data={"title": "Report", "study_uid": study},
        )
        referral = post(
            "/api/referrals",
            json={"mrn": self.mrn, "to_specialty": "pain-medicine", "reason": "r"},
        )
        link = post("/api/share-links", json={"study_uid": study})
        self.share = bearer(link["token"])
        token = post("/api/tokens", json={"name": "n", "scopes": ["read"]})
        admin_token = post(
            "/api/admin/tokens", json={"owner": "root", "name": "n2", "scopes": ["read"]}
        )
        self.study, self.series, self.sop = study, series, sop
        self.values = {
            "study": study,
            "study_uid": study,
            "series": series,
            "instance": sop,
            "sop_uid": sop,
            "frames": "1",
            "path": "7FE00010",
            "kind": "thumbnail",
            "mrn": self.mrn,
            "record_id": record["record_id"],
            "referral_id": referral["referral_id"],
            "link_id": link["link_id"],
            "username": "dr.grey",
        }
        self.token_ids = {
            "/api/tokens/{token_id}": token["token_id"],
            "/api/admin/tokens/{token_id}": admin_token["token_id"],
        }
        stow = {"content": body(_new_instance(tmp / "stow", study))}
        stow["headers"] = {"Content-Type": CONTENT_TYPE}
        stow_study = {"content": body(_new_instance(tmp / "stow-study", study))}
        stow_study["headers"] = {"Content-Type": CONTENT_TYPE}
        login = {"username": "root", "password": PASSWORD}
        refresh = client.post("/api/auth/token", data=login).json()["refresh_token"]
        self.requests: dict[tuple[str, str], dict[str, Any]] = {
            ("POST", "/api/auth/token"): {"data": login},
            ("POST", "/api/auth/refresh"): {"data": {"refresh_token": refresh}},
            ("POST", "/dicomweb/studies"): stow,
            ("POST", "/dicomweb/studies/{study}"): stow_study,
            ("GET", "/wado"): {
                "params": {
                    "requestType": "WADO",
                    "studyUID": study,
                    "seriesUID": series,
                    "objectUID": sop,
                    "contentType": "application/dicom",
                }
            },
            ("GET", "/api/records"): {"params": {"study_uid": study}},
            ("POST", "/api/downloads"): {"json": {"study_uids": [study]}},
            ("POST", "/api/records"): {
                "json": {"title": "t2", "markdown": "m2", "study_uid": study}
            },
            ("POST", "/api/records/pdf"): {
                "files": {"file": ("report.pdf", PDF_BYTES, "application/pdf")},
                "data": {"title": "Report", "study_uid": study},
            },
            ("POST", "/api/referrals"): {
                "json": {"mrn": self.mrn, "to_specialty": "chiropractic", "reason": "r2"}
            },
            ("POST", "/api/referrals/{referral_id}/status"): {"json": {"status": "accepted"}},
            ("POST", "/api/share-links"): {"json": {"study_uid": study}},
            ("POST", "/api/admin/jobs/retry"): {"json": {}},
            ("POST", "/api/admin/users/{username}/disable"): {},
            ("POST", "/api/admin/users/{username}/enable"): {},
            ("POST", "/api/tokens"): {"json": {"name": "x", "scopes": ["read"]}},
            ("POST", "/api/admin/tokens"): {
                "json": {"owner": "root", "name": "y", "scopes": ["read"]}
            },
            ("POST", "/api/admin/users"): {
                "json": {"username": "new.user", "password": "a-long-password", "role": "admin"}
            },
            ("POST", "/api/admin/users/{username}/password"): {
                "json": {"password": "another-long-password"}
            },
        }

    def _post(self, client: TestClient) -> Any:
        def post(url: str, **kwargs: Any) -> dict[str, Any]:
            response = client.post(url, headers=self.admin, **kwargs)
            assert response.status_code == 201, (url, response.text)
            return dict(response.json())

        return post

    def url(self, template: str) -> str:
        """The template with every path parameter filled in."""
        if template in self.token_ids:
            return template.replace("{token_id}", self.token_ids[template])

        def value(match: re.Match[str]) -> str:
            name = match.group(1).split(":")[0]
            assert name in self.values, f"{template}: give a sample value for {{{name}}} above"
            return self.values[name]

        return re.sub(r"\{([^}]+)\}", value, template)

    def send(self, client: TestClient, method: str, template: str) -> Any:
        """Call one route as admin (the share link's own route with the link)."""
        extra = dict(self.requests.get((method, template), {}))
        if method in ("POST", "PUT", "PATCH") and (method, template) not in self.requests:
            pytest.fail(f"{method} {template}: give the body of a valid request above")
        headers = self.share if template == "/api/share/me" else self.admin
        headers = {**headers, **extra.pop("headers", {})}
        return client.request(method, self.url(template), headers=headers, **extra)


def _events_after(hub: Hub, last_id: int) -> list[audit.AuditEntry]:
    with hub.db.read() as session:
        found = audit.search_events(session, filters=audit.AuditFilters(), limit=1000)
    return [e for e in found if e.id > last_id]


def _last_id(hub: Hub) -> int:
    with hub.db.read() as session:
        return int(session.scalar(select(func.max(AuditEvent.id))) or 0)


def test_every_route_that_touches_patient_data_writes_an_audit_event(
    hub: Hub, client: TestClient, corpus: dict[str, str], tmp_path: Path
) -> None:
    calls = Calls(hub, client, corpus, tmp_path)
    routes = [
        (method, path)
        for path, methods, route in every_route(client.app)
        if re.match(r"/(api|dicomweb|wado)(/|$)", path)
        for method in sorted(methods)
        if not isinstance(route, Mount)
    ]
    assert set(routes) >= NO_PATIENT_DATA, NO_PATIENT_DATA - set(routes)  # no stale entries
    routes.sort(key=lambda r: r[0] == "DELETE")  # revoking goes last: later calls use the link
    audited = []
    for method, template in routes:
        last = _last_id(hub)
        response = calls.send(client, method, template)
        assert response.status_code < 400, (method, template, response.text[:500])
        events = _events_after(hub, last)
        on_route = [e for e in events if e.detail.get("route") == template]
        if (method, template) in NO_PATIENT_DATA:
            assert on_route == [], (method, template, "writes access events: not excluded")
            continue
        assert events, f"{method} {template} wrote no audit event"
        audited.append((method, template))
        for event in events:
            assert event.actor in ("root", calls.values["link_id"]), (template, event)
            assert event.outcome == audit.SUCCESS, (template, event)
        for event in on_route:  # the access events know where the request came from
            assert event.source_address == "testclient", (template, event)
        names_a_study = any(p in template for p in ("{study", "{series", "{instance", "{sop"))
        if names_a_study or template == "/wado":
            assert {e.study_uid for e in events} == {calls.study}, (template, events)
        if template.startswith(("/api/records", "/api/referrals")):  # a study or the patient
            assert {e.study_uid for e in events} <= {calls.study, None}, (template, events)
        if names_a_study or "{mrn}" in template or "{record_id}" in template:
            assert {e.patient_mrn for e in events} == {calls.mrn}, (template, events)
    # The walk reached the kinds of routes that matter.
    assert {
        ("GET", "/dicomweb/studies"),
        ("GET", "/dicomweb/studies/{study}"),
        ("POST", "/dicomweb/studies"),
        ("GET", "/wado"),
        ("GET", "/api/studies/{study_uid}"),
        ("GET", "/api/studies/{study_uid}/download"),
        ("GET", "/api/patients/{mrn}"),
        ("POST", "/api/records"),
        ("GET", "/api/admin/audit"),
        ("DELETE", "/api/share-links/{link_id}"),
    } <= set(audited)
    assert len(audited) + len(NO_PATIENT_DATA) == len(routes)


#: The C-FIND tests' running receiver with three indexed studies (the fixture ``index``).
index = test_find.index


@pytest.mark.dcmtk
def test_a_dimse_c_find_writes_an_audit_event_naming_the_ae_title(index: Index) -> None:
    """C-FIND by a known node is a query of patient data (PS3.15 A.5.3.12): audited by AE title."""
    last = _last_id(index.hub)
    found, final = c_find(index.port, query("STUDY", PatientID="P1", StudyInstanceUID=""))
    assert final == 0x0000 and len(found) == 2  # the query itself works
    events = _events_after(index.hub, last)
    assert [(e.actor, e.actor_kind, e.action) for e in events] == [
        ("KNOWN", audit.ACTOR_KIND_AET, audit.QUERY)
    ]
    assert events[0].source_address == "127.0.0.1"


@pytest.mark.dcmtk
def test_refused_and_malformed_c_finds_are_audited_as_failures(index: Index) -> None:
    """A C-FIND the hub refuses is audited too, with its status and no matches."""
    last = _last_id(index.hub)
    _, refused = c_find(index.port, query("STUDY", StudyInstanceUID=""), aet="STRANGER")
    _, malformed = c_find(index.port, query("STUDY", StudyDate="2024-13"))
    assert (refused, malformed) == (0x0124, 0xC000)
    events = _events_after(index.hub, last)[::-1]  # oldest first
    assert [(e.actor, e.action, e.outcome) for e in events] == [
        ("STRANGER", audit.QUERY, audit.FAILURE),
        ("KNOWN", audit.QUERY, audit.SERIOUS_FAILURE),
    ]
    assert [e.detail["status"] for e in events] == ["0x0124", "0xC000"]
    assert all(e.detail["matches"] == 0 for e in events)

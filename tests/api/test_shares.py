"""Share links: read-only tokens held to one study or one patient, with expiry and revocation."""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from imaging_hub import audit
from imaging_hub.db.models import Instance, Series, ShareLink, Study
from imaging_hub.hub import Hub
from tests.api.helpers import bearer, sign_in
from tests.support import make_study


def first_instance(hub: Hub, study_uid: str) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) of one instance of a study."""
    with hub.db.read() as session:
        row = session.execute(
            select(Series.series_uid, Instance.sop_instance_uid)
            .join(Instance, Instance.series_pk == Series.id)
            .join(Study, Study.id == Series.study_pk)
            .where(Study.study_uid == study_uid)
            .order_by(Instance.id)
        ).first()
    assert row is not None, study_uid
    return row[0], row[1]


def share(client: TestClient, **body: object) -> dict:
    """Create a share link as the signed-in user; return the answer's JSON."""
    response = client.post("/api/share-links", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def reads(hub: Hub, uid: str) -> dict[str, str]:
    """Read-only URLs of every kind (QIDO, WADO-RS, rendered, thumbnail, ZIP, REST) for a study."""
    series, sop = first_instance(hub, uid)
    instance = f"/dicomweb/studies/{uid}/series/{series}/instances/{sop}"
    return {
        "qido-series": f"/dicomweb/studies/{uid}/series",
        "qido-instances": f"/dicomweb/studies/{uid}/series/{series}/instances",
        "wado-study": f"/dicomweb/studies/{uid}",
        "wado-instance": instance,
        "metadata": f"/dicomweb/studies/{uid}/metadata",
        "frames": f"{instance}/frames/1",
        "rendered": f"{instance}/rendered",
        "study-rendered": f"/dicomweb/studies/{uid}/rendered",
        "thumbnail": f"{instance}/thumbnail",
        "wado-uri": (
            f"/wado?requestType=WADO&studyUID={uid}&seriesUID={series}&objectUID={sop}"
            "&contentType=application/dicom"
        ),
        "zip": f"/api/studies/{uid}/download",
        "rest-thumbnails": f"/api/studies/{uid}/thumbnails",
        "rest-preview": f"/api/instances/{sop}/preview",
    }


def test_a_study_link_opens_exactly_its_study(hub, anonymous, client, corpus):
    created = share(client, study_uid=corpus["A"], expires_in_hours=2, label="for Dr. Outside")
    assert created["token"].startswith("ihs_") and created["active"] is True
    assert created["download_url"] == f"/api/studies/{corpus['A']}/download"
    assert created["created_by"] == "dr.grey" and created["study_uid"] == corpus["A"]
    expires = dt.datetime.fromisoformat(created["expires_at"])
    assert dt.timedelta(minutes=119) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=2)
    link = bearer(created["token"])

    for kind, url in reads(hub, corpus["A"]).items():
        response = anonymous.get(url, headers=link)
        assert response.status_code == 200, (kind, response.text[:300])
    studies = anonymous.get("/dicomweb/studies", headers=link)
    assert [s["0020000D"]["Value"] for s in studies.json()] == [[corpus["A"]]]
    listed = anonymous.get("/dicomweb/instances", headers=link).json()
    assert {i["0020000D"]["Value"][0] for i in listed} == {corpus["A"]}
    assert len(listed) == 4
    zipped = anonymous.get(f"/api/studies/{corpus['A']}/download", headers=link)
    archive = zipfile.ZipFile(io.BytesIO(zipped.content))
    assert sum(not n.endswith("/") for n in archive.namelist()) == 4
    me = anonymous.get("/api/share/me", headers=link)
    assert me.json()["study_uids"] == [corpus["A"]] and me.json()["label"] == "for Dr. Outside"

    for other in ("B", "C", "D"):  # another study, even of the same patient: refused everywhere
        for kind, url in reads(hub, corpus[other]).items():
            response = anonymous.get(url, headers=link)
            assert response.status_code == 403, (other, kind, response.text[:300])
            assert response.json() == {"detail": "this share link does not open that data"}
    # Mixing: a series or instance of B addressed under A's path is refused too.
    series_b, sop_b = first_instance(hub, corpus["B"])
    mixed = f"/dicomweb/studies/{corpus['A']}/series/{series_b}/instances/{sop_b}"
    assert anonymous.get(mixed, headers=link).status_code == 403
    asked = anonymous.get(f"/dicomweb/studies?StudyInstanceUID={corpus['B']}", headers=link)
    assert asked.status_code == 403
    unknown = anonymous.get("/dicomweb/studies/1.2.3.4.5", headers=link)
    assert unknown.status_code == 403  # a link never tells whether another UID exists


def test_a_link_reads_nothing_of_the_rest_api(anonymous, client, corpus):
    link = bearer(share(client, study_uid=corpus["A"])["token"])
    mrn = client.get(f"/api/studies/{corpus['A']}").json()["patient_mrn"]
    for url in (
        f"/api/studies/{corpus['A']}",  # its own study's REST detail: not for outsiders
        "/api/studies",
        f"/api/studies/{corpus['A']}/status",
        "/api/patients",
        f"/api/patients/{mrn}",
        f"/api/records?study_uid={corpus['A']}",
        "/api/referrals",
        "/api/share-links",
        "/api/tokens",
        "/api/auth/me",
        "/api/admin/audit",
    ):
        response = anonymous.get(url, headers=link)
        assert response.status_code in (401, 403), (url, response.status_code)
        assert response.status_code == 403 or url == "/api/auth/me", url


def test_writes_with_a_link_are_refused(hub, anonymous, client, corpus, tmp_path):
    link = bearer(share(client, study_uid=corpus["A"])["token"])
    mrn = client.get(f"/api/studies/{corpus['A']}").json()["patient_mrn"]
    [path] = make_study(tmp_path / "new", StudyInstanceUID=corpus["A"], PatientID="P1")
    stow = anonymous.post(
        f"/dicomweb/studies/{corpus['A']}",
        headers={**link, "Content-Type": "multipart/related; type=application/dicom; boundary=b"},
        content=b"--b\r\nContent-Type: application/dicom\r\n\r\n"
        + path.read_bytes()
        + b"\r\n--b--",
    )
    assert stow.status_code == 403
    writes = [
        ("POST", "/api/records", {"title": "x", "markdown": "y", "study_uid": corpus["A"]}),
        ("POST", "/api/referrals", {"mrn": mrn, "to_specialty": "pain-medicine", "reason": "x"}),
        ("POST", "/api/share-links", {"study_uid": corpus["A"]}),
        ("POST", "/api/downloads", {"study_uids": [corpus["A"]]}),
        ("POST", "/api/tokens", {"name": "x", "scopes": ["read"]}),
    ]
    for method, url, body in writes:
        response = anonymous.request(method, url, json=body, headers=link)
        assert response.status_code == 403, (url, response.text)
        assert "share link" in response.json()["detail"]
    with hub.db.read() as session:
        assert session.scalar(select(ShareLink.id).where(ShareLink.created_by != "dr.grey")) is None
    assert client.get(f"/api/records?study_uid={corpus['A']}").json() == []


def test_a_patient_link_opens_every_study_of_that_patient(hub, anonymous, client, corpus):
    mrn = client.get(f"/api/studies/{corpus['A']}").json()["patient_mrn"]
    created = share(client, patient_mrn=mrn)
    assert created["patient_mrn"] == mrn and created["download_url"] is None
    link = bearer(created["token"])
    studies = anonymous.get("/dicomweb/studies", headers=link).json()
    assert {s["0020000D"]["Value"][0] for s in studies} == {corpus["A"], corpus["B"]}
    for letter in ("A", "B"):
        for kind, url in reads(hub, corpus[letter]).items():
            assert anonymous.get(url, headers=link).status_code == 200, (letter, kind)
    for letter in ("C", "D"):
        for kind, url in reads(hub, corpus[letter]).items():
            assert anonymous.get(url, headers=link).status_code == 403, (letter, kind)
    assert anonymous.get("/api/share/me", headers=link).json()["study_uids"] == [
        corpus["A"],
        corpus["B"],
    ]


def test_revoked_and_expired_links_are_401(hub, anonymous, client, corpus):
    url = f"/dicomweb/studies/{corpus['A']}/metadata"
    revoked = share(client, study_uid=corpus["A"])
    expired = share(client, study_uid=corpus["A"])
    for created in (revoked, expired):
        assert anonymous.get(url, headers=bearer(created["token"])).status_code == 200

    # The owner revokes one; the other runs out (moved into the past in the index).
    answer = client.delete(f"/api/share-links/{revoked['link_id']}")
    assert answer.status_code == 200
    assert answer.json()["active"] is False and answer.json()["revoked_at"] is not None
    with hub.db.write() as session:
        session.execute(
            update(ShareLink)
            .where(ShareLink.public_id == expired["link_id"])
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    for created, reason in ((revoked, "was revoked"), (expired, "has expired")):
        for target in (url, f"/api/studies/{corpus['A']}/download", "/dicomweb/studies"):
            response = anonymous.get(target, headers=bearer(created["token"]))
            assert response.status_code == 401, (reason, target)
            assert response.json() == {"detail": f"the share link {reason}"}
            assert response.headers["WWW-Authenticate"] == "Bearer"
    forged = revoked["token"][:-4] + ("AAAA" if not revoked["token"].endswith("AAAA") else "BBBB")
    assert anonymous.get(url, headers=bearer(forged)).status_code == 401
    listed = {item["link_id"]: item for item in client.get("/api/share-links").json()}
    assert listed[revoked["link_id"]]["active"] is False
    assert listed[expired["link_id"]]["active"] is False
    assert listed[expired["link_id"]]["use_count"] == 1


def test_the_link_works_as_an_access_token_query_parameter(hub, client, corpus):
    token = share(client, study_uid=corpus["A"])["token"]
    anonymous = TestClient(client.app)  # the outsider's browser: no Authorization header
    response = anonymous.get(f"/api/studies/{corpus['A']}/download?access_token={token}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    other = anonymous.get(f"/api/studies/{corpus['B']}/download?access_token={token}")
    assert other.status_code == 403
    qido = anonymous.get(f"/dicomweb/studies?access_token={token}&PatientID=P1")
    assert qido.status_code == 200, qido.text  # the token is no QIDO-RS search key
    assert [s["0020000D"]["Value"][0] for s in qido.json()] == [corpus["A"]]
    with hub.db.read() as session:
        events = audit.search_events(session, filters=audit.AuditFilters(actor_kind="share"))
    assert len(events) == 3
    assert "PatientID=P1" in events[0].detail["query"]
    secret = token[len("ihs_") + 17 :]  # after the public id (the secret may hold underscores)
    assert len(secret) == 43
    assert all(secret not in json.dumps(e.as_json()) for e in events)  # never in the trail


def test_who_may_list_and_revoke_links(hub, anonymous, client, corpus):
    mine = share(client, study_uid=corpus["A"])
    colleague = sign_in(hub, "dr.house", "clinician", "neurosurgery")
    admin = sign_in(hub, "root", "admin")
    theirs = anonymous.post("/api/share-links", json={"study_uid": corpus["C"]}, headers=colleague)
    assert theirs.status_code == 201
    assert [i["link_id"] for i in client.get("/api/share-links").json()] == [mine["link_id"]]
    everyone = anonymous.get("/api/share-links", headers=admin).json()
    assert {i["link_id"] for i in everyone} == {mine["link_id"], theirs.json()["link_id"]}
    assert all("token" not in i for i in everyone)
    # Someone else's link is not found for a clinician; an admin revokes any.
    assert client.delete(f"/api/share-links/{theirs.json()['link_id']}").status_code == 404
    revoked = anonymous.delete(f"/api/share-links/{theirs.json()['link_id']}", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["active"] is False
    gone = anonymous.get("/dicomweb/studies", headers=bearer(theirs.json()["token"]))
    assert gone.status_code == 401
    assert client.delete("/api/share-links/0123456789abcdef").status_code == 404


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"study_uid": "1.2.3", "patient_mrn": "H1"}, 422),
        ({"study_uid": "1.2.3.999"}, 404),
        ({"study_uid": "not a uid"}, 400),
        ({"patient_mrn": "H-NOBODY"}, 404),
        ({"study_uid": "1.2.3", "expires_in_hours": 0}, 422),
        ({"study_uid": "1.2.3", "expires_in_hours": 24 * 91}, 422),
        ({"study_uid": "1.2.3", "label": "a\nb"}, 400),
    ],
)
def test_bad_share_requests(client, corpus, body, status):
    if "study_uid" in body and body["study_uid"] == "1.2.3" and "patient_mrn" not in body:
        body = {**body, "study_uid": corpus["A"]}
    response = client.post("/api/share-links", json=body)
    assert response.status_code == status, response.text


def test_every_use_of_a_link_is_audited(hub, anonymous, client, corpus):
    created = share(client, study_uid=corpus["A"])
    link = bearer(created["token"])
    metadata = anonymous.get(f"/dicomweb/studies/{corpus['A']}/metadata", headers=link)
    assert metadata.status_code == 200
    assert anonymous.get(f"/api/studies/{corpus['A']}/download", headers=link).status_code == 200
    assert anonymous.get(f"/dicomweb/studies/{corpus['B']}", headers=link).status_code == 403
    client.delete(f"/api/share-links/{created['link_id']}")
    assert anonymous.get(f"/dicomweb/studies/{corpus['A']}", headers=link).status_code == 401
    with hub.db.read() as session:
        events = audit.search_events(
            session, filters=audit.AuditFilters(actor=created["link_id"]), limit=100
        )
    seen = [(e.action, e.study_uid, e.outcome, e.detail["status"]) for e in reversed(events)]
    assert seen == [
        (audit.INSTANCES_ACCESSED, corpus["A"], audit.SUCCESS, 200),
        (audit.EXPORT, corpus["A"], audit.SUCCESS, 200),
        (audit.INSTANCES_ACCESSED, corpus["B"], audit.FAILURE, 403),
        (audit.INSTANCES_ACCESSED, corpus["A"], audit.FAILURE, 401),
    ]
    assert all(e.actor_kind == audit.ACTOR_KIND_SHARE for e in events)
    assert events[-1].detail["share_created_by"] == "dr.grey"
    assert events[-1].patient_mrn is not None  # filed under the patient of the study
    with hub.db.read() as session:
        made = audit.search_events(
            session, filters=audit.AuditFilters(actor="dr.grey", action=audit.SECURITY_ALERT)
        )
    core = [e.detail["event"] for e in reversed(made) if "event" in e.detail]
    assert core == ["share-link.create", "share-link.revoke"]


def test_making_and_revoking_links_is_audited_refusals_included(hub, anonymous, client, corpus):
    read = client.post("/api/tokens", json={"name": "r", "scopes": ["read"]}).json()["token"]
    body = {"study_uid": corpus["A"]}
    assert anonymous.post("/api/share-links", json=body, headers=bearer(read)).status_code == 403
    created = share(client, **body)
    assert client.delete(f"/api/share-links/{created['link_id']}").status_code == 200
    with hub.db.read() as session:
        alerts = audit.search_events(
            session, filters=audit.AuditFilters(action=audit.SECURITY_ALERT)
        )
    on_routes = [
        (e.detail["method"], e.detail["status"], e.outcome, e.study_uid, e.source_address)
        for e in reversed(alerts)
        if e.detail.get("route", "").startswith("/api/share-links")
    ]
    assert on_routes == [
        ("POST", 403, audit.FAILURE, None, "testclient"),
        ("POST", 201, audit.SUCCESS, corpus["A"], "testclient"),
        ("DELETE", 200, audit.SUCCESS, corpus["A"], "testclient"),
    ]
    assert [e.detail.get("share") for e in alerts if e.outcome == audit.SUCCESS][:2] == [
        created["link_id"]
    ] * 2


def test_a_link_stops_while_its_makers_account_is_disabled(hub, anonymous, client, corpus):
    from imaging_hub.auth import set_disabled

    url = f"/dicomweb/studies/{corpus['A']}/metadata"
    link = bearer(share(client, study_uid=corpus["A"])["token"])
    assert anonymous.get(url, headers=link).status_code == 200
    set_disabled(hub.db, "dr.grey", True, actor="admin")
    refused = anonymous.get(url, headers=link)
    assert refused.status_code == 401 and "disabled" in refused.json()["detail"]
    set_disabled(hub.db, "dr.grey", False, actor="admin")
    assert anonymous.get(url, headers=link).status_code == 200

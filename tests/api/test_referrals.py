"""/api/referrals: a clinician refers a patient to a specialty with a reason and the studies.

The referred specialist lists the referrals to their specialty and finds the films and the
reason in one place; a referral moves open -> accepted -> done (or open -> done) and no other way.
"""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.helpers import sign_in
from tests.api.test_records import mrn_of, refused


def refer(client: TestClient, corpus: dict[str, str], letters: str = "AB", **changes) -> dict:
    """Refer Jane (the corpus's patient of A and B) to pain medicine with studies letters."""
    body = {
        "mrn": mrn_of(client, corpus["A"]),
        "to_specialty": "pain-medicine",
        "reason": "Facet injection L4-5? Pain persists after fusion.",
        "study_uids": [corpus[letter] for letter in letters],
        **changes,
    }
    response = client.post("/api/referrals", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_the_referred_specialist_finds_films_and_reason_in_one_place(hub, client, corpus):
    created = refer(client, corpus)
    assert created["status"] == "open" and created["accepted_by"] is None
    assert created["from_user"] == "dr.grey" and created["from_specialty"] == "neurosurgery"
    assert created["to_specialty"] == "pain-medicine"
    assert created["study_uids"] == [corpus["A"], corpus["B"]]
    refer(client, corpus, "C", mrn=mrn_of(client, corpus["C"]), to_specialty="physiatry")

    pain = sign_in(hub, "dr.payne", "clinician", "pain medicine")
    mine = client.get(
        "/api/referrals", params={"to_specialty": "pain-medicine", "status": "open"}, headers=pain
    )
    assert mine.status_code == 200, mine.text
    [item] = mine.json()
    assert item["referral_id"] == created["referral_id"]
    assert item["reason"] == "Facet injection L4-5? Pain persists after fusion."
    assert item["patient_mrn"] == created["patient_mrn"]
    # The films: each study with what a list shows, newest first, and they open.
    films = item["studies"]
    assert [s["study_uid"] for s in films] == [corpus["A"], corpus["B"]]
    assert [s["description"] for s in films] == ["Lumbar spine MRI", "Cervical CT"]
    assert films[0]["modalities"] == ["CT", "MR"] and films[0]["patient_name"] == "Doe^Jane"
    for study in films:
        assert client.get(f"/api/studies/{study['study_uid']}", headers=pain).status_code == 200
    one = client.get(f"/api/referrals/{created['referral_id']}", headers=pain)
    assert one.status_code == 200 and one.json() == item
    # The referral is also on the study's and the patient's page.
    detail = client.get(f"/api/studies/{corpus['B']}", headers=pain).json()
    assert [r["referral_id"] for r in detail["referrals"]] == [created["referral_id"]]
    patient = client.get(f"/api/patients/{created['patient_mrn']}", headers=pain).json()
    assert [r["reason"] for r in patient["referrals"]] == [created["reason"]]


def test_filters_and_paging(hub, client, corpus):
    first = refer(client, corpus, "A")
    second = refer(client, corpus, "B", to_specialty="chiropractic")
    max_mrn = mrn_of(client, corpus["D"])
    third = refer(client, corpus, "D", mrn=max_mrn)

    def ids(**params) -> list[str]:
        response = client.get("/api/referrals", params=params)
        assert response.status_code == 200, response.text
        return [r["referral_id"] for r in response.json()]

    assert ids() == [third["referral_id"], second["referral_id"], first["referral_id"]]
    assert ids(to_specialty="pain-medicine") == [third["referral_id"], first["referral_id"]]
    assert ids(to_specialty="chiropractic") == [second["referral_id"]]
    assert ids(mrn=max_mrn) == [third["referral_id"]]
    assert ids(to_specialty="physiatry") == []
    moved = client.post(f"/api/referrals/{first['referral_id']}/status", json={"status": "done"})
    assert moved.status_code == 200, moved.text
    assert ids(status="open") == [third["referral_id"], second["referral_id"]]
    assert ids(status="done", to_specialty="pain-medicine") == [first["referral_id"]]
    assert ids(status="accepted") == []
    page1 = client.get("/api/referrals", params={"limit": 2})
    assert page1.headers["x-more-results"] == "true" and len(page1.json()) == 2
    page2 = client.get("/api/referrals", params={"limit": 2, "offset": 2})
    assert page2.headers["x-more-results"] == "false"
    assert [r["referral_id"] for r in page2.json()] == [first["referral_id"]]
    assert client.get("/api/referrals", params={"to_specialty": "surgery"}).status_code == 422
    assert client.get("/api/referrals", params={"status": "closed"}).status_code == 422
    refused(client.get("/api/referrals", params={"mrn": "H000"}), 404, "no patient")


def move(client: TestClient, referral_id: str, status: str, headers=None):
    """Ask for a referral's new status."""
    return client.post(
        f"/api/referrals/{referral_id}/status", json={"status": status}, headers=headers
    )


def test_status_goes_open_accepted_done_and_no_other_way(hub, client, corpus):
    pain = sign_in(hub, "dr.payne", "clinician", "pain-medicine")
    referral = refer(client, corpus)["referral_id"]
    accepted = move(client, referral, "accepted", headers=pain)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "accepted"
    assert accepted.json()["accepted_by"] == "dr.payne"
    assert accepted.json()["updated_at"] > accepted.json()["created_at"]
    refused(move(client, referral, "accepted"), 400, "accepted cannot become accepted")
    done = move(client, referral, "done")
    assert done.status_code == 200 and done.json()["status"] == "done"
    assert done.json()["accepted_by"] == "dr.payne", "finishing keeps who accepted"
    refused(move(client, referral, "accepted", headers=pain), 400, "done cannot become accepted")
    refused(move(client, referral, "done"), 400, "done cannot become done")
    assert client.get(f"/api/referrals/{referral}").json()["status"] == "done"

    # Open -> done directly: whoever closes it is recorded.
    other = refer(client, corpus, "A")["referral_id"]
    closed = move(client, other, "done", headers=pain)
    assert closed.status_code == 200 and closed.json()["accepted_by"] == "dr.payne"
    assert move(client, other, "open").status_code == 422  # never back to open
    refused(move(client, "0123456789abcdef", "done"), 404, "no referral")


def test_unknown_or_foreign_studies_and_bad_input_are_4xx(client, corpus):
    mrn = mrn_of(client, corpus["A"])
    ok = {"mrn": mrn, "to_specialty": "physiatry", "reason": "Rehab after fusion"}
    post = client.post
    refused(post("/api/referrals", json={**ok, "study_uids": ["1.2.3.4.5"]}), 400, "1.2.3.4.5")
    # A study of another patient does not go with Jane's referral.
    foreign = {**ok, "study_uids": [corpus["A"], corpus["C"]]}
    refused(post("/api/referrals", json=foreign), 400, f"not studies of patient {mrn}")
    refused(post("/api/referrals", json={**ok, "study_uids": ["1.2.x"]}), 400, "not a valid UID")
    refused(post("/api/referrals", json={**ok, "mrn": "H000"}), 404, "no patient")
    refused(post("/api/referrals", json={**ok, "reason": "   "}), 400, "reason")
    assert post("/api/referrals", json={**ok, "to_specialty": "astrology"}).status_code == 422
    assert post("/api/referrals", json={**ok, "reason": ""}).status_code == 422
    assert post("/api/referrals", json={"mrn": mrn, "reason": "x"}).status_code == 422
    assert client.get("/api/referrals", params={"mrn": mrn}).json() == []
    refused(client.get("/api/referrals/0123456789abcdef"), 404, "no referral")
    # Without studies, and with a study named twice, is fine.
    twice = post("/api/referrals", json={**ok, "study_uids": [corpus["B"], corpus["B"]]})
    assert twice.status_code == 201 and twice.json()["study_uids"] == [corpus["B"]]
    assert post("/api/referrals", json=ok).json()["study_uids"] == []


def test_every_role_may_refer(hub, client, corpus):
    referral = {"mrn": mrn_of(client, corpus["A"]), "to_specialty": "other", "reason": "r"}
    for name, role in (("rad.tech", "radiology"), ("root", "admin")):
        response = client.post("/api/referrals", json=referral, headers=sign_in(hub, name, role))
        assert response.status_code == 201, response.text
        assert response.json()["from_user"] == name and response.json()["from_specialty"] is None

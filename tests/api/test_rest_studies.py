"""GET /api/studies: the clinicians' study search, and GET /api/studies/{uid}: a study's detail."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient


def listed(client: TestClient, corpus: dict[str, str], **params: Any) -> list[str]:
    """List studies and return their letters in answer order."""
    response = client.get("/api/studies", params=params)
    assert response.status_code == 200, response.text
    letters = {uid: letter for letter, uid in corpus.items()}
    return [letters[item["study_uid"]] for item in response.json()]


def test_items_carry_the_clinician_fields(client, corpus):
    response = client.get("/api/studies", params={"patient_id": "P1"})
    assert response.status_code == 200
    first = response.json()[0]
    mrn = first.pop("patient_mrn")
    assert mrn.startswith("H") and len(mrn) == 16
    assert first == {
        "study_uid": corpus["A"],
        "patient_id": "P1",
        "issuer_of_patient_id": "CLINIC-A",
        "patient_name": "Doe^Jane",
        "birth_date": "1980-01-15",
        "sex": "F",
        "study_date": "2024-03-10",
        "study_time": "101500",
        "accession_number": "ACC1",
        "description": "Lumbar spine MRI",
        "referring_physician": "House^Gregory",
        "modalities": ["CT", "MR"],
        "num_series": 2,
        "num_instances": 4,
    }


def test_every_filter(client, corpus):
    assert listed(client, corpus) == ["C", "A", "B", "D"]
    assert listed(client, corpus, patient_id="P3") == ["D"]
    assert listed(client, corpus, patient_name="doe") == ["A", "B", "D"]
    assert listed(client, corpus, patient_name="DOE^ja") == ["A", "B"]
    assert listed(client, corpus, patient_name="mül") == ["C"]
    assert listed(client, corpus, date_from="2024-01-01") == ["C", "A"]
    assert listed(client, corpus, date_to="2023-01-05") == ["B", "D"]
    assert listed(client, corpus, date_from="2023-01-01", date_to="2024-03-10") == ["A", "B"]
    assert listed(client, corpus, modality="MR") == ["A"]
    assert listed(client, corpus, modality="dx") == ["D"]
    assert listed(client, corpus, accession="ACC2") == ["B"]
    assert listed(client, corpus, patient_id="P1", modality="MR") == ["A"]
    assert listed(client, corpus, patient_id="NOBODY") == []


def test_limit_offset_and_more_results_header(client, corpus):
    first = client.get("/api/studies", params={"limit": 3})
    assert first.headers["x-more-results"] == "true"
    assert len(first.json()) == 3
    last = client.get("/api/studies", params={"limit": 3, "offset": 3})
    assert last.headers["x-more-results"] == "false"
    assert [item["study_uid"] for item in last.json()] == [corpus["D"]]


def test_bad_parameters(client):
    assert client.get("/api/studies", params={"date_from": "yesterday"}).status_code == 422
    assert client.get("/api/studies", params={"limit": 0}).status_code == 422
    assert client.get("/api/studies", params={"offset": -1}).status_code == 422
    backwards = client.get(
        "/api/studies", params={"date_from": "2024-02-01", "date_to": "2024-01-01"}
    )
    assert backwards.status_code == 400
    assert "ends before it starts" in backwards.json()["detail"]
    assert client.get("/api/studies", params={"modality": "M*"}).status_code == 400
    assert client.get("/api/studies", params={"offset": 10**20}).status_code == 422
    nul = client.get("/api/studies", params={"patient_id": "P\x001"})
    assert nul.status_code == 400
    assert "control characters" in nul.json()["detail"]


def test_text_physician_and_patient_record_filters(client, corpus):
    assert listed(client, corpus, description="spine") == ["C", "A"]
    assert listed(client, corpus, description="LUMBAR spine") == ["A"]
    assert listed(client, corpus, referring_physician="house") == ["A"]
    assert listed(client, corpus, referring_physician="wil") == ["B"]
    mrn = client.get("/api/studies", params={"patient_id": "P1"}).json()[0]["patient_mrn"]
    assert listed(client, corpus, patient_mrn=mrn) == ["A", "B"]
    assert listed(client, corpus, patient_mrn="H000") == []


def test_body_part_and_source_filters(hub, client, corpus, tmp_path):
    from imaging_hub.ingest import store_instance
    from tests.api.helpers import run_pending_jobs
    from tests.support import make_study

    [path] = make_study(tmp_path / "e", BodyPartExamined="LSPINE", PatientID="P9", Modality="CR")
    uid = store_instance(hub, path, source="dimse", source_detail="CHIRO_XR").study_uid
    run_pending_jobs(hub)
    corpus = {**corpus, "E": uid}
    assert listed(client, corpus, body_part="lspine") == ["E"]
    assert listed(client, corpus, body_part="L*") == ["E"]
    assert listed(client, corpus, body_part="CSPINE") == []
    assert listed(client, corpus, source="CHIRO_XR") == ["E"]
    assert listed(client, corpus, source="dimse") == ["E"]
    assert listed(client, corpus, source="test") == ["C", "A", "B", "D"]


def test_sorting(client, corpus):
    assert listed(client, corpus, sort="study_date") == ["D", "B", "A", "C"]
    assert listed(client, corpus, sort="-study_date") == ["C", "A", "B", "D"]
    # Patient names sort accent-free: Doe^Jane (A, B newest first), Doering^Max, Müller^Jürgen.
    assert listed(client, corpus, sort="patient_name") == ["A", "B", "D", "C"]
    assert listed(client, corpus, sort="-patient_name") == ["C", "D", "A", "B"]
    # Accession numbers sort by code point: ACC1, ACC2, ACCX3, ACC_3% ("X" < "_").
    assert listed(client, corpus, sort="accession") == ["A", "B", "D", "C"]
    assert client.get("/api/studies", params={"sort": "size"}).status_code == 422


def test_specialty_filter_follows_records_and_referrals(hub, client, corpus):
    from tests.api.helpers import sign_in

    physio = sign_in(hub, "pt.jones", "clinician", "physical therapy")
    mrn = client.get(f"/api/studies/{corpus['B']}").json()["patient_mrn"]
    note = {"title": "Rehab plan", "markdown": "Core work", "study_uid": corpus["B"]}
    assert client.post("/api/records", json=note, headers=physio).status_code == 201
    referral = {
        "mrn": mrn,
        "to_specialty": "pain-medicine",
        "reason": "x",
        "study_uids": [corpus["A"]],
    }
    assert client.post("/api/referrals", json=referral).status_code == 201
    assert listed(client, corpus, specialty="physical-therapy") == ["B"]
    assert listed(client, corpus, specialty="pain-medicine") == ["A"]
    # The referring clinician is a neurosurgeon: the referral's studies count for both ends.
    assert listed(client, corpus, specialty="neurosurgery") == ["A"]
    assert listed(client, corpus, specialty="chiropractic") == []


def test_study_detail_has_series_previews_status_and_links(client, corpus):
    response = client.get(f"/api/studies/{corpus['A']}")
    assert response.status_code == 200, response.text
    detail = response.json()
    assert detail["study_uid"] == corpus["A"] and detail["study_id"] == "S1"
    assert [s["modality"] for s in detail["series"]] == ["MR", "CT"] or [
        s["modality"] for s in detail["series"]
    ] == ["CT", "MR"]
    assert sum(s["num_instances"] for s in detail["series"]) == 4
    for series in detail["series"]:
        sop = series["thumbnail_url"].split("/")[3]
        assert series["thumbnail_url"] == f"/api/instances/{sop}/thumbnail"
        assert series["preview_url"] == f"/api/instances/{sop}/preview"
        assert client.get(series["thumbnail_url"]).status_code == 200
    assert detail["status"]["phase"] == "ready"
    assert detail["status"]["received"] == detail["status"]["indexed"] == 4
    assert detail["links"] == {
        "download": f"/api/studies/{corpus['A']}/download",
        "dicomweb": f"/dicomweb/studies/{corpus['A']}",
        "thumbnails": f"/api/studies/{corpus['A']}/thumbnails",
    }
    assert detail["records"] == [] and detail["referrals"] == []


def test_study_detail_errors(client, corpus):
    assert client.get("/api/studies/1.2.3.4").status_code == 404
    bad = client.get("/api/studies/not-a-uid")
    assert bad.status_code == 400 and "not a valid UID" in bad.json()["detail"]

"""/api/patients: find a patient by name, ID or birth date; see all their studies in one place."""

from __future__ import annotations

from fastapi.testclient import TestClient

from imaging_hub.ingest import store_instance
from tests.api.helpers import run_pending_jobs, sign_in
from tests.api.test_records import refused
from tests.support import make_study


def names(client: TestClient, **params) -> list[str]:
    """Search patients and return their names in answer order."""
    response = client.get("/api/patients", params=params)
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()]


JANE, JURGEN, MAX = "Doe^Jane", "Müller^Jürgen", "Doering^Max"


def test_items_carry_demographics_counts_and_identities(client, corpus):
    response = client.get("/api/patients", params={"patient_id": "P1"})
    assert response.status_code == 200, response.text
    [jane] = response.json()
    mrn = jane.pop("mrn")
    assert mrn == client.get(f"/api/studies/{corpus['A']}").json()["patient_mrn"]
    assert jane == {
        "name": JANE,
        "birth_date": "1980-01-15",
        "sex": "F",
        "num_studies": 2,
        "last_study_date": "2024-03-10",
        "identities": [
            {
                "patient_id": "P1",
                "issuer": "CLINIC-A",
                "name": JANE,
                "birth_date": "1980-01-15",
                "link_state": "new",
            }
        ],
    }


def test_search_by_name_id_and_birth_date(client, corpus):
    assert names(client) == [JANE, MAX, JURGEN]  # by name: DOE JANE < DOERING MAX < MULLER
    assert names(client, name="doe") == [JANE, MAX]
    assert names(client, name="DOE^ja") == [JANE]
    assert names(client, name="doe*") == [JANE, MAX]
    assert names(client, name="mül") == [JURGEN]
    assert names(client, name="d?er") == [MAX]
    assert names(client, name="smith") == []
    assert names(client, patient_id="P2") == [JURGEN]
    max_mrn = client.get(f"/api/studies/{corpus['D']}").json()["patient_mrn"]
    assert names(client, patient_id=max_mrn) == [MAX]  # the hub MRN works as an ID too
    assert names(client, patient_id="P") == []  # IDs match exactly
    assert names(client, birth_date="1980-01-15") == [JANE]
    assert names(client, born_from="1976-01-01") == [JANE, MAX]
    assert names(client, born_to="1979-12-31") == [JURGEN]
    assert names(client, born_from="1975-06-20", born_to="1980-01-15") == [JANE, JURGEN]
    assert names(client, name="doe", born_from="1985-01-01") == [MAX]
    assert names(client, name="doe", patient_id="P2") == []


def test_sorting_and_paging(client, corpus):
    assert names(client, sort="-name") == [JURGEN, MAX, JANE]
    assert names(client, sort="birth_date") == [JURGEN, JANE, MAX]
    assert names(client, sort="-birth_date") == [MAX, JANE, JURGEN]
    mrns = [item["mrn"] for item in client.get("/api/patients", params={"sort": "mrn"}).json()]
    assert mrns == sorted(mrns) and len(mrns) == 3
    first = client.get("/api/patients", params={"limit": 2})
    assert first.headers["x-more-results"] == "true"
    assert [p["name"] for p in first.json()] == [JANE, MAX]
    rest = client.get("/api/patients", params={"limit": 2, "offset": 2})
    assert rest.headers["x-more-results"] == "false"
    assert [p["name"] for p in rest.json()] == [JURGEN]


def test_bad_search_parameters(client, corpus):
    backwards = client.get(
        "/api/patients", params={"born_from": "1990-01-01", "born_to": "1980-01-01"}
    )
    refused(backwards, 400, "ends before it starts")
    both = client.get("/api/patients", params={"birth_date": "1980-01-15", "born_to": "1990-01-01"})
    refused(both, 400, "not both")
    refused(client.get("/api/patients", params={"name": "Doe\x00"}), 400, "control characters")
    refused(client.get("/api/patients", params={"patient_id": "P\x1f"}), 400, "control characters")
    assert client.get("/api/patients", params={"birth_date": "15.01.1980"}).status_code == 422
    assert client.get("/api/patients", params={"sort": "age"}).status_code == 422
    assert client.get("/api/patients", params={"limit": 0}).status_code == 422
    assert client.get("/api/patients", params={"offset": -1}).status_code == 422
    assert client.get("/api/patients", params={"name": "x" * 400}).status_code == 422


def test_detail_has_every_study_in_date_order_with_records_and_referrals(
    hub, client, corpus, tmp_path
):
    # A chiropractor's X-ray room sends Jane's earlier film: the same patient, another sender.
    [path] = make_study(
        tmp_path / "chiro",
        Modality="DX",
        StudyDate="20230601",
        StudyDescription="Lumbar flexion-extension",
        PatientID="P1",
        IssuerOfPatientID="CLINIC-A",
        PatientName="Doe^Jane",
        PatientBirthDate="19800115",
        PatientSex="F",
    )
    chiro_study = store_instance(hub, path, source="dimse", source_detail="CHIRO_XR").study_uid
    run_pending_jobs(hub)
    mrn = client.get(f"/api/studies/{corpus['A']}").json()["patient_mrn"]
    assert client.get(f"/api/studies/{chiro_study}").json()["patient_mrn"] == mrn
    chiro = sign_in(hub, "dc.palmer", "clinician", "chiropractic")
    physio = sign_in(hub, "pt.jones", "clinician", "physical-therapy")
    for headers, study, title in ((chiro, chiro_study, "Adjustment"), (physio, corpus["B"], "PT")):
        note = {"title": title, "markdown": "notes", "study_uid": study}
        assert client.post("/api/records", json=note, headers=headers).status_code == 201
    referral = {"mrn": mrn, "to_specialty": "physiatry", "reason": "Rehab", "study_uids": []}
    assert client.post("/api/referrals", json=referral, headers=chiro).status_code == 201

    response = client.get(f"/api/patients/{mrn}", headers=physio)
    assert response.status_code == 200, response.text
    detail = response.json()
    assert (detail["mrn"], detail["name"], detail["num_studies"]) == (mrn, JANE, 3)
    assert detail["last_study_date"] == "2024-03-10"
    assert [s["study_uid"] for s in detail["studies"]] == [corpus["B"], chiro_study, corpus["A"]]
    dates = ["2023-01-05", "2023-06-01", "2024-03-10"]
    assert [s["study_date"] for s in detail["studies"]] == dates
    assert detail["studies"][1]["modalities"] == ["DX"]
    assert [r["title"] for r in detail["records"]] == ["PT", "Adjustment"]
    specialties = {r["author_specialty"] for r in detail["records"]}
    assert specialties == {"chiropractic", "physical-therapy"}
    assert [r["reason"] for r in detail["referrals"]] == ["Rehab"]
    # Other patients' studies are not there.
    others = {corpus["C"], corpus["D"]}
    assert not others & {s["study_uid"] for s in detail["studies"]}


def test_unknown_patient_is_404(client, corpus):
    refused(client.get("/api/patients/H0000000000000000"), 404, "no patient")
    assert client.get("/api/patients/H000").status_code == 404

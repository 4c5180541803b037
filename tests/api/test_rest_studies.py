"""GET /api/studies: the clinicians' study list."""

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
    assert first == {
        "study_uid": corpus["A"],
        "patient_id": "P1",
        "patient_name": "Doe^Jane",
        "birth_date": "1980-01-15",
        "study_date": "2024-03-10",
        "description": "Lumbar spine MRI",
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

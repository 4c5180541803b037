"""STOW-RS (PS3.18 10.5): storing through the one way in, and every refusal."""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO

import pytest
from dicomweb_client import DICOMwebClient
from fastapi.testclient import TestClient
from pydicom import Dataset, dcmread
from sqlalchemy import select

from imaging_hub.auth import TokenIssuer, create_user
from imaging_hub.db.models import StoredFile
from imaging_hub.hub import Hub
from imaging_hub.ingest import store_instance
from tests.api.helpers import PASSWORD, run_pending_jobs
from tests.api.test_dicomweb_client import running_server
from tests.api.test_wado import ANY, split_multipart, stored_state, uids, url
from tests.support import make_study
from viewer_api.app import create_app

BOUNDARY = "stow-test-boundary"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
GARBAGE = b"this is not DICOM" * 20


def token_for(hub: Hub, username: str, role: str) -> str:
    """A new account's access token."""
    account = create_user(hub.db, username, PASSWORD, role=role)
    return TokenIssuer.from_settings(hub.settings).issue(account).access_token


@pytest.fixture
def radiology(anonymous: TestClient, hub: Hub) -> TestClient:
    """The test client, signed in as a radiology user."""
    anonymous.headers["Authorization"] = f"Bearer {token_for(hub, 'rad.tech', 'radiology')}"
    return anonymous


def body(*parts: bytes, content_type: str = "application/dicom") -> bytes:
    """A multipart/related body of parts."""
    chunks = [
        f"--{BOUNDARY}\r\nContent-Type: {content_type}\r\n\r\n".encode() + part + b"\r\n"
        for part in parts
    ]
    return b"".join(chunks) + f"--{BOUNDARY}--\r\n".encode()


def stow(client: TestClient, data: bytes, path: str = "/dicomweb/studies", **headers):
    """POST a STOW-RS body."""
    return client.post(path, content=data, headers={"Content-Type": CONTENT_TYPE, **headers})


def result(response) -> Dataset:
    """The response dataset of a STOW-RS answer."""
    assert response.headers["content-type"] == "application/dicom+json"
    return Dataset.from_json(response.json())


def test_stow_stores_durably_and_round_trips(hub, radiology, tmp_path):
    paths = make_study(tmp_path / "in", 2, series_per_study=2)
    response = stow(radiology, body(*(p.read_bytes() for p in paths)))
    assert response.status_code == 200, response.text
    answer = result(response)
    study = uids(paths[0])[0]
    assert answer.RetrieveURL == f"http://testserver/dicomweb/studies/{study}"
    assert "FailedSOPSequence" not in answer
    refs = {item.ReferencedSOPInstanceUID: item for item in answer.ReferencedSOPSequence}
    for path in paths:
        item = refs[uids(path)[2]]
        assert item.ReferencedSOPClassUID == dcmread(path).SOPClassUID
        assert item.RetrieveURL == "http://testserver" + url(path)
    with hub.db.read() as s:  # durable and queued for indexing before the answer
        rows = s.execute(select(StoredFile.source, StoredFile.source_detail)).all()
    assert sorted(rows) == [("stow", "rad.tech")] * 2
    run_pending_jobs(hub)
    retrieved = radiology.get(f"/dicomweb/studies/{study}", headers={"Accept": ANY})
    assert sorted(b for _, b in split_multipart(retrieved)) == sorted(p.read_bytes() for p in paths)
    assert not list((hub.settings.data_dir / "incoming").iterdir())  # temp files removed


def test_stow_to_a_study_refuses_instances_of_other_studies(hub, radiology, tmp_path):
    (mine,) = make_study(tmp_path / "a")
    (other,) = make_study(tmp_path / "b")
    study = uids(mine)[0]
    response = stow(
        radiology, body(mine.read_bytes(), other.read_bytes()), f"/dicomweb/studies/{study}"
    )
    assert response.status_code == 202, response.text
    answer = result(response)
    assert answer.RetrieveURL.endswith(f"/dicomweb/studies/{study}")
    (stored,) = answer.ReferencedSOPSequence
    assert stored.ReferencedSOPInstanceUID == uids(mine)[2]
    (failed,) = answer.FailedSOPSequence
    assert failed.ReferencedSOPInstanceUID == uids(other)[2]
    assert failed.FailureReason == 0xC409
    with hub.db.read() as s:
        assert s.scalars(select(StoredFile.sop_instance_uid)).all() == [uids(mine)[2]]


def test_partial_failure_is_202_with_failed_sop_sequence(hub, radiology, tmp_path):
    (good,) = make_study(tmp_path / "a")
    response = stow(radiology, body(good.read_bytes(), GARBAGE))
    assert response.status_code == 202, response.text
    answer = result(response)
    assert [i.ReferencedSOPInstanceUID for i in answer.ReferencedSOPSequence] == [uids(good)[2]]
    (failed,) = answer.FailedSOPSequence
    assert failed.FailureReason == 0xC000
    assert list(hub.settings.quarantine_dir.glob("*.dcm"))  # the bad part is kept


def test_all_failed_is_409_and_nothing_stored_changes(hub, radiology, tmp_path):
    (kept,) = make_study(tmp_path / "a")
    store_instance(hub, kept, source="test")
    run_pending_jobs(hub)
    before = stored_state(hub)
    (other,) = make_study(tmp_path / "b")
    ds = dcmread(other)
    del ds.SOPInstanceUID  # undecodable for the store: no UID
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    response = stow(radiology, body(GARBAGE, buffer.getvalue()))
    assert response.status_code == 409, response.text
    reasons = [i.FailureReason for i in result(response).FailedSOPSequence]
    assert reasons == [0xC000, 0xC000]
    assert stow(radiology, body(b"x" * 10)[:-10]).status_code == 400  # truncated body
    assert stored_state(hub) == before


def test_duplicate_with_other_bytes_is_refused_under_the_reject_policy(hub, tmp_path):
    settings = hub.settings.model_copy(update={"ingest_duplicates": "reject"})
    (path,) = make_study(tmp_path / "a")
    store_instance(hub, path, source="test")
    before = stored_state(hub)
    ds = dcmread(path)
    ds.StudyDescription = "changed"
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {token_for(hub, 'admin1', 'admin')}"
        response = stow(client, body(buffer.getvalue()))
        assert stow(client, body(path.read_bytes())).status_code == 200  # same bytes: no-op
    assert response.status_code == 409, response.text
    assert result(response).FailedSOPSequence[0].FailureReason == 0xA900
    assert stored_state(hub) == before


@pytest.mark.parametrize(
    "content_type",
    [
        "application/dicom",
        f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}',
        f"multipart/form-data; boundary={BOUNDARY}",
    ],
)
def test_other_media_types_are_415(hub, radiology, tmp_path, content_type):
    (path,) = make_study(tmp_path / "a")
    response = stow(radiology, body(path.read_bytes()), **{"Content-Type": content_type})
    assert response.status_code == 415, response.text
    assert "multipart/related" in response.json()["detail"]


def test_an_answer_in_xml_only_is_406_and_nothing_is_stored(hub, radiology, tmp_path):
    (path,) = make_study(tmp_path / "a")
    response = stow(radiology, body(path.read_bytes()), Accept="application/dicom+xml")
    assert response.status_code == 406, response.text
    with hub.db.read() as s:
        assert s.scalars(select(StoredFile.id)).all() == []
    accepted = stow(radiology, body(path.read_bytes()), Accept="application/dicom+json")
    assert accepted.status_code == 200


def test_malformed_bodies_are_400(hub, radiology, tmp_path):
    (path,) = make_study(tmp_path / "a")
    no_boundary = {"Content-Type": 'multipart/related; type="application/dicom"'}
    assert stow(radiology, body(path.read_bytes()), **no_boundary).status_code == 400
    assert stow(radiology, b"").status_code == 400
    assert stow(radiology, b"--other\r\n\r\nxx\r\n--other--\r\n").status_code == 400
    assert stow(radiology, body(path.read_bytes()), "/dicomweb/studies/1.x").status_code == 400
    with hub.db.read() as s:
        assert s.scalars(select(StoredFile.id)).all() == []


def test_oversized_bodies_are_413_early_and_while_streaming(hub, tmp_path):
    settings = hub.settings.model_copy(update={"ingest_max_bytes": 4096})
    (path,) = make_study(tmp_path / "a")  # CT_small is about 40 KB
    data = body(path.read_bytes())

    def chunked() -> Iterator[bytes]:
        for start in range(0, len(data), 1000):
            yield data[start : start + 1000]

    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {token_for(hub, 'admin1', 'admin')}"
        declared = stow(client, data)
        streamed = stow(client, chunked())  # no Content-Length: counted while reading
    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert "4096" in response.json()["detail"]
    with hub.db.read() as s:
        assert s.scalars(select(StoredFile.id)).all() == []


def test_clinicians_may_not_store(hub, client, tmp_path):
    (path,) = make_study(tmp_path / "a")
    response = stow(client, body(path.read_bytes()))
    assert response.status_code == 403
    assert "radiology" in response.json()["detail"]


@pytest.mark.filterwarnings("ignore:No bulk data URI handler")
def test_dicomweb_client_stores_and_retrieves(hub, tmp_path):
    paths = make_study(tmp_path / "a", 2)
    token = token_for(hub, "rad.tech", "radiology")
    with running_server(hub.settings) as base_url:
        web = DICOMwebClient(
            url=f"{base_url}/dicomweb", headers={"Authorization": f"Bearer {token}"}
        )
        answer = web.store_instances([dcmread(p) for p in paths])
        run_pending_jobs(hub)
        study, series, sop = uids(paths[0])
        instance = web.retrieve_instance(study, series, sop)
        metadata = web.retrieve_series_metadata(study, series)
    assert {i.ReferencedSOPInstanceUID for i in answer.ReferencedSOPSequence} == {
        uids(p)[2] for p in paths
    }
    assert instance.SOPInstanceUID == sop
    assert instance.PixelData == dcmread(paths[0]).PixelData
    assert sorted(Dataset.from_json(m).SOPInstanceUID for m in metadata) == sorted(
        uids(p)[2] for p in paths
    )

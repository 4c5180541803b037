"""/api/records: notes and reports (markdown or PDF) on a patient or study, seen by every clinician.

A PDF report on a study is also an Encapsulated PDF instance of that study, which DICOMweb
serves once the jobs have indexed it.
"""

from __future__ import annotations

import datetime as dt
from io import BytesIO

from fastapi.testclient import TestClient
from pydicom import Dataset, dcmread

from imaging_hub.ingest import store_instance
from imaging_hub.records import ENCAPSULATED_PDF, record_store
from tests.api.helpers import run_pending_jobs, sign_in
from tests.api.test_wado import ANY, split_multipart
from tests.support import make_study
from viewer_api.app import create_app

#: A small PDF of odd length (the DICOM element gets a pad byte, the document must not).
PDF_BYTES = (
    b"%PDF-1.4\n1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj\n"
    b"2 0 obj <</Type /Pages /Kids [] /Count 0>> endobj\n"
    b"trailer <</Root 1 0 R>>\n%%EOF"
)
assert len(PDF_BYTES) % 2 == 1


def mrn_of(client: TestClient, study_uid: str) -> str:
    """The hub MRN of a study's patient."""
    response = client.get(f"/api/studies/{study_uid}")
    assert response.status_code == 200, response.text
    return str(response.json()["patient_mrn"])


def upload(client: TestClient, data: bytes = PDF_BYTES, headers=None, **form: str):
    """POST a PDF report as multipart/form-data."""
    files = {"file": ("report.pdf", data, "application/pdf")}
    return client.post("/api/records/pdf", data=form, files=files, headers=headers)


def test_notes_on_a_study_and_a_patient_carry_author_specialty_and_time(hub, client, corpus):
    before = dt.datetime.now(dt.UTC)
    note = {"title": "  Post-op   check ", "markdown": "**Fusion** solid at L4-5", "kind": "note"}
    on_study = client.post("/api/records", json={**note, "study_uid": corpus["A"]})
    assert on_study.status_code == 201, on_study.text
    item = on_study.json()
    created = dt.datetime.fromisoformat(item.pop("created_at"))
    if created.tzinfo is None:
        created = created.replace(tzinfo=dt.UTC)
    assert before - dt.timedelta(seconds=1) <= created <= dt.datetime.now(dt.UTC)
    record_id = item.pop("record_id")
    assert item == {
        "kind": "note",
        "patient_mrn": mrn_of(client, corpus["A"]),
        "study_uid": corpus["A"],
        "title": "Post-op check",
        "content_type": "text/markdown",
        "body": "**Fusion** solid at L4-5",
        "document_url": None,
        "document_size": None,
        "sop_instance_uid": None,
        "author": "dr.grey",
        "author_specialty": "neurosurgery",
    }
    mrn = mrn_of(client, corpus["B"])
    physio = sign_in(hub, "pt.jones", "clinician", "physical therapy")
    report = {"kind": "report", "title": "Rehab", "markdown": "Core work", "mrn": mrn}
    on_patient = client.post("/api/records", json=report, headers=physio)
    assert on_patient.status_code == 201, on_patient.text
    assert on_patient.json()["study_uid"] is None
    assert on_patient.json()["author_specialty"] == "physical-therapy"
    assert on_patient.json()["kind"] == "report"

    # Every clinician sees both: the patient's list holds them all, newest first.
    chiro = sign_in(hub, "dc.palmer", "clinician", "chiropractic")
    listed = client.get("/api/records", params={"mrn": mrn}, headers=chiro)
    assert listed.status_code == 200, listed.text
    assert [r["title"] for r in listed.json()] == ["Rehab", "Post-op check"]
    by_study = client.get("/api/records", params={"study_uid": corpus["A"]}, headers=chiro)
    assert [r["record_id"] for r in by_study.json()] == [record_id]
    assert client.get("/api/records", params={"study_uid": corpus["B"]}).json() == []
    one = client.get(f"/api/records/{record_id}", headers=chiro)
    assert one.status_code == 200 and one.json()["body"] == "**Fusion** solid at L4-5"
    detail = client.get(f"/api/studies/{corpus['A']}", headers=chiro).json()
    assert [r["record_id"] for r in detail["records"]] == [record_id]
    # A text record has no document.
    assert client.get(f"/api/records/{record_id}/document").status_code == 404


def test_radiology_and_admin_may_write_notes_too(hub, client, corpus):
    for name, role in (("rad.tech", "radiology"), ("root", "admin")):
        headers = sign_in(hub, name, role)
        note = {"title": name, "markdown": "seen", "study_uid": corpus["D"]}
        response = client.post("/api/records", json=note, headers=headers)
        assert response.status_code == 201, response.text
        assert response.json()["author"] == name and response.json()["author_specialty"] is None


def test_pdf_report_on_a_study_becomes_an_encapsulated_pdf_instance(hub, client, corpus):
    study = corpus["C"]
    response = upload(client, title="MRI report", study_uid=study)
    assert response.status_code == 201, response.text
    item = response.json()
    assert item["content_type"] == "application/pdf" and item["body"] is None
    assert item["document_size"] == len(PDF_BYTES)
    assert item["author"] == "dr.grey" and item["author_specialty"] == "neurosurgery"
    sop_uid = item["sop_instance_uid"]
    assert sop_uid
    # The document reads back byte for byte.
    document = client.get(item["document_url"])
    assert document.status_code == 200
    assert document.headers["content-type"] == "application/pdf"
    assert document.content == PDF_BYTES

    assert run_pending_jobs(hub) > 0
    qido = client.get(f"/dicomweb/studies/{study}/instances")
    assert qido.status_code == 200, qido.text
    found = {i["00080018"]["Value"][0]: i for i in qido.json()}
    assert sop_uid in found
    assert found[sop_uid]["00080016"]["Value"] == [ENCAPSULATED_PDF]
    series_uid = found[sop_uid]["0020000E"]["Value"][0]
    wado = client.get(
        f"/dicomweb/studies/{study}/series/{series_uid}/instances/{sop_uid}",
        headers={"Accept": ANY},
    )
    assert wado.status_code == 200, wado.text
    [(_, part)] = split_multipart(wado)
    assert PDF_BYTES in part
    ds = dcmread(BytesIO(part))
    assert ds.SOPClassUID == ENCAPSULATED_PDF
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert ds.EncapsulatedDocument[: ds.EncapsulatedDocumentLength] == PDF_BYTES
    assert ds.DocumentTitle == "MRI report"
    # The patient and study attributes come from the study, so the instance sits with it.
    assert (ds.StudyInstanceUID, ds.PatientID, ds.AccessionNumber) == (study, "P2", "ACC_3%")
    assert str(ds.PatientName) == "Müller^Jürgen"
    # The study's own search and detail count it too.
    detail = client.get(f"/api/studies/{study}").json()
    assert "DOC" in [s["modality"] for s in detail["series"]]
    assert [r["sop_instance_uid"] for r in detail["records"]] == [sop_uid]


def test_pdf_report_on_a_patient_is_kept_without_an_instance(hub, client, corpus):
    mrn = mrn_of(client, corpus["D"])
    response = upload(client, title="Outside letter", mrn=mrn, study_uid="")  # as a form sends
    assert response.status_code == 201, response.text
    item = response.json()
    assert item["study_uid"] is None and item["sop_instance_uid"] is None
    assert client.get(item["document_url"]).content == PDF_BYTES
    run_pending_jobs(hub)
    qido = client.get(f"/dicomweb/studies/{corpus['D']}/instances")
    assert ENCAPSULATED_PDF not in {i["00080016"]["Value"][0] for i in qido.json()}
    listed = client.get("/api/records", params={"mrn": mrn}).json()
    assert [r["record_id"] for r in listed] == [item["record_id"]]


def refused(response, status: int, reason: str) -> None:
    """Assert a JSON refusal with status whose reason mentions reason."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert reason in str(response.json()["detail"])


def test_bad_pdf_uploads_are_4xx_with_a_reason(hub, client, corpus):
    mrn = mrn_of(client, corpus["A"])
    refused(upload(client, b"GIF89a not a pdf", title="x", mrn=mrn), 400, "not a PDF")
    refused(upload(client, title="x", study_uid="1.2.3.4.5"), 404, "not in the hub")
    refused(upload(client, title="x", study_uid="1.2.x"), 400, "not a valid UID")
    refused(upload(client, title="x", mrn="H000"), 404, "no patient")
    refused(upload(client, title="x"), 400, "patient or a study")
    refused(upload(client, title="x", mrn="", study_uid=""), 400, "patient or a study")
    other = mrn_of(client, corpus["C"])
    refused(upload(client, title="x", mrn=other, study_uid=corpus["A"]), 400, "not a study of")
    refused(upload(client, title="   ", mrn=mrn), 400, "title")
    assert upload(client, mrn=mrn).status_code == 422  # no title
    assert client.post("/api/records/pdf", data={"title": "x", "mrn": mrn}).status_code == 422
    # Nothing was stored by any of them.
    assert client.get("/api/records", params={"mrn": mrn}).json() == []
    run_pending_jobs(hub)
    instances = client.get(f"/dicomweb/studies/{corpus['A']}/instances").json()
    assert len(instances) == 4


def test_an_oversized_pdf_is_413_and_not_stored(hub, client, corpus):
    settings = hub.settings.model_copy(update={"ingest_max_bytes": 4096})
    with TestClient(create_app(settings)) as small:
        small.headers["Authorization"] = client.headers["Authorization"]
        big = PDF_BYTES + b"%" * 5000
        refused(upload(small, big, title="x", study_uid=corpus["A"]), 413, "at most 4096 bytes")
        # A body declared too large is refused from its Content-Length, before it is read.
        declared = {"Content-Length": str(10**10)}
        early = upload(small, headers=declared, title="x", study_uid=corpus["A"])
        refused(early, 413, "at most 4096 bytes")
        assert upload(small, title="x", study_uid=corpus["A"]).status_code == 201
    listed = client.get("/api/records", params={"study_uid": corpus["A"]}).json()
    assert [r["document_size"] for r in listed] == [len(PDF_BYTES)]
    kept = [p for p in record_store(hub).root.rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in kept] == [PDF_BYTES], "the refused PDF was not kept"
    assert not any(hub.settings.data_dir.glob("tmp*")), "upload temp dirs are removed"


def test_bad_text_records_are_4xx_with_a_reason(client, corpus):
    mrn = mrn_of(client, corpus["A"])
    ok = {"title": "t", "markdown": "m"}
    refused(client.post("/api/records", json={**ok, "study_uid": "9.9.9"}), 404, "not in the hub")
    refused(client.post("/api/records", json={**ok, "mrn": "H000"}), 404, "no patient")
    refused(client.post("/api/records", json=ok), 400, "patient or a study")
    refused(client.post("/api/records", json={**ok, "mrn": mrn, "markdown": "  "}), 400, "text")
    refused(client.post("/api/records", json={**ok, "study_uid": "1.2.x"}), 400, "UID")
    assert client.post("/api/records", json={**ok, "mrn": mrn, "kind": "memo"}).status_code == 422
    huge = {**ok, "mrn": mrn, "markdown": "x" * 200_001}
    assert client.post("/api/records", json=huge).status_code == 422
    assert client.get("/api/records", params={"mrn": mrn}).json() == []


def test_reading_records_errors(client, corpus):
    refused(client.get("/api/records"), 400, "give mrn or study_uid")
    refused(client.get("/api/records", params={"mrn": "H000"}), 404, "no patient")
    refused(client.get("/api/records", params={"study_uid": "abc"}), 400, "UID")
    refused(client.get("/api/records/0123456789abcdef"), 404, "no record")
    refused(client.get("/api/records/0123456789abcdef/document"), 404, "no record")


def test_records_need_a_token(anonymous, corpus):
    note = {"title": "t", "markdown": "m", "study_uid": corpus["A"]}
    assert anonymous.post("/api/records", json=note).status_code == 401
    assert anonymous.get("/api/records", params={"study_uid": corpus["A"]}).status_code == 401


def retrieve(client: TestClient, study: str, sop_uid: str) -> Dataset:
    """An instance of study, found with QIDO-RS and retrieved with WADO-RS."""
    found = client.get(f"/dicomweb/studies/{study}/instances", params={"SOPInstanceUID": sop_uid})
    [instance] = found.json()
    series_uid = instance["0020000E"]["Value"][0]
    url = f"/dicomweb/studies/{study}/series/{series_uid}/instances/{sop_uid}"
    [(_, part)] = split_multipart(client.get(url, headers={"Accept": ANY}))
    return dcmread(BytesIO(part))


def test_the_pdf_instance_has_the_type_2_attributes_its_study_lacks(hub, client, tmp_path):
    [path] = make_study(tmp_path / "bare", PatientID="P7", PatientName="Roe^Rita")
    bare = dcmread(path)
    lacking = ["PatientBirthDate", "PatientSex", "StudyDate", "StudyTime"]
    lacking += ["ReferringPhysicianName", "StudyID", "AccessionNumber"]
    for keyword in lacking:
        delattr(bare, keyword)
    bare.save_as(path)
    study = store_instance(hub, path, source="test").study_uid
    run_pending_jobs(hub)
    response = upload(client, title="Report", study_uid=study)
    assert response.status_code == 201, response.text
    run_pending_jobs(hub)
    ds = retrieve(client, study, response.json()["sop_instance_uid"])
    for keyword in lacking:
        assert keyword in ds and ds[keyword].is_empty, keyword
    assert (ds.PatientID, str(ds.PatientName)) == ("P7", "Roe^Rita")


def test_the_pdf_instance_keeps_every_character_of_title_and_names(hub, client, tmp_path):
    [path] = make_study(tmp_path / "latin1", PatientID="P5")
    ds = dcmread(path)
    ds.SpecificCharacterSet = "ISO_IR 100"  # Latin-1, which has no en dash (U+2013)
    ds.PatientName = "Müller^Jürgen"
    ds.StudyDescription = "Wirbelsäule"
    ds.save_as(path)
    assert "Müller".encode("latin-1") in path.read_bytes()
    study = store_instance(hub, path, source="test").study_uid
    run_pending_jobs(hub)
    title = "Befund \u2013 Wirbelsäule L4/5"
    response = upload(client, title=title, study_uid=study)
    assert response.status_code == 201, response.text
    run_pending_jobs(hub)
    report = retrieve(client, study, response.json()["sop_instance_uid"])
    assert report.SpecificCharacterSet == "ISO_IR 192"
    assert report.DocumentTitle == title
    assert (str(report.PatientName), report.StudyDescription) == ("Müller^Jürgen", "Wirbelsäule")

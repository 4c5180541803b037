"""Study status, series thumbnails, instance previews with ETags, and the admin job view."""

from __future__ import annotations

import io
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image
from pydicom import dcmread
from pydicom.encaps import encapsulate

from imaging_hub.auth import Role, TokenIssuer, create_user
from imaging_hub.hub import Hub
from imaging_hub.ingest import store_instance
from imaging_hub.jobs import claim_for_publish
from imaging_hub.work import run_job
from tests.api.helpers import PASSWORD, make_study
from tests.support import testdata


def _drain(hub: Hub) -> None:
    while batch := claim_for_publish(hub.db):
        for job_id, _ in batch:
            run_job(hub, job_id, owner="test")


def _study(hub: Hub, tmp_path: Path) -> str:
    paths = make_study(tmp_path / "s", 5, series_per_study=2)
    uid = store_instance(hub, paths[0], source="test").study_uid
    for path in paths[1:]:
        store_instance(hub, path, source="test")
    return uid


def test_status_goes_from_processing_to_ready(client: TestClient, hub: Hub, tmp_path: Path) -> None:
    uid = _study(hub, tmp_path)
    before = client.get(f"/api/studies/{uid}/status").json()
    assert before["phase"] == "processing" and before["received"] == 5
    assert before["indexed"] == 0 and before["jobs"] == {"queued": 5}
    _drain(hub)
    after = client.get(f"/api/studies/{uid}/status").json()
    assert after["phase"] == "ready" and after["indexed"] == 5
    assert after["previews"] == {"ready": 5} and after["jobs"] == {"done": 11}
    assert (after["previews_ready"], after["failed"]) == (5, 0)


def test_thumbnails_in_series_order_with_etag(client: TestClient, hub: Hub, tmp_path: Path) -> None:
    uid = _study(hub, tmp_path)
    _drain(hub)
    series = client.get(f"/api/studies/{uid}/thumbnails").json()
    assert sorted(s["num_instances"] for s in series) == [2, 3]
    numbers = [s["series_number"] for s in series]
    assert numbers == sorted(numbers)  # series number order
    response = client.get(series[0]["thumbnail_url"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(response.content))
    assert max(image.size) <= 256
    etag = response.headers["etag"]
    again = client.get(series[0]["thumbnail_url"], headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    preview = client.get(series[0]["thumbnail_url"].replace("thumbnail", "preview"))
    assert preview.status_code == 200 and preview.headers["etag"] != etag


def test_pending_failed_unknown_and_bad_uid(client: TestClient, hub: Hub, tmp_path: Path) -> None:
    ds = dcmread(testdata("JPEG2000.dcm"))
    ds.PixelData = encapsulate([b"\xff\x4f" + b"\x00" * 64 + b"\xff\xd9"])
    path = tmp_path / "poison.dcm"
    ds.save_as(path)
    result = store_instance(hub, path, source="test")
    claimed = claim_for_publish(hub.db)
    run_job(hub, claimed[0][0], owner="test")  # indexed; its render job not run yet
    url = f"/api/instances/{result.sop_instance_uid}/thumbnail"
    pending = client.get(url)
    assert pending.status_code == 404 and "pending" in pending.json()["detail"]
    _drain(hub)
    assert "failed" in client.get(url).json()["detail"]
    status = client.get(f"/api/studies/{result.study_uid}/status").json()
    assert status["phase"] == "failed" and status["previews"] == {"failed": 1}
    assert (status["received"], status["indexed"], status["previews_ready"]) == (1, 1, 0)
    assert status["failed"] == 1
    assert client.get("/api/instances/1.2.3.4/thumbnail").status_code == 404
    assert client.get("/api/instances/1.2.x/thumbnail").status_code == 400


def test_admin_sees_and_retries_failed_jobs(client: TestClient, hub: Hub, tmp_path: Path) -> None:
    ds = dcmread(testdata("JPEG2000.dcm"))
    ds.PixelData = encapsulate([b"\xff\x4f" + b"\x00" * 64 + b"\xff\xd9"])
    path = tmp_path / "poison.dcm"
    ds.save_as(path)
    store_instance(hub, path, source="test")
    _drain(hub)
    assert client.get("/api/admin/jobs").status_code == 403  # a clinician is not an admin
    admin = create_user(hub.db, "admin.a", PASSWORD, role=Role.ADMIN)
    token = TokenIssuer.from_settings(hub.settings).issue(admin).access_token
    headers = {"Authorization": f"Bearer {token}"}
    failed = client.get("/api/admin/jobs", params={"state": "failed"}, headers=headers).json()
    assert [j["kind"] for j in failed] == ["render"] and "cannot render" in failed[0]["last_error"]
    retried = client.post("/api/admin/jobs/retry", json={}, headers=headers).json()
    assert retried == {"requeued": 1}
    assert client.get("/api/admin/jobs", params={"state": "failed"}, headers=headers).json() == []


def test_png_on_request_is_made_once_and_kept(client: TestClient, hub: Hub, tmp_path: Path) -> None:
    uid = _study(hub, tmp_path)
    _drain(hub)
    url = client.get(f"/api/studies/{uid}/thumbnails").json()[0]["thumbnail_url"]
    preview = url.replace("thumbnail", "preview")
    first = client.get(preview, params={"format": "png"})
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(first.content))
    assert image.format == "PNG"
    jpeg = Image.open(io.BytesIO(client.get(preview).content))
    assert image.size == jpeg.size  # same size as the JPEG preview
    again = client.get(
        preview, params={"format": "png"}, headers={"If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304  # the PNG was kept: same file, same ETag
    assert client.get(preview, params={"format": "gif"}).status_code in (400, 422)


def test_a_pdf_gets_the_generic_icon(client: TestClient, hub: Hub, tmp_path: Path) -> None:
    ds = dcmread(testdata("CT_small.dcm"))
    del ds.PixelData
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"  # Encapsulated PDF Storage
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    for keyword in ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit"):
        if keyword in ds:
            delattr(ds, keyword)
    path = tmp_path / "report.dcm"
    ds.save_as(path)
    result = store_instance(hub, path, source="test")
    _drain(hub)
    response = client.get(f"/api/instances/{result.sop_instance_uid}/thumbnail")
    assert response.status_code == 200 and response.headers["content-type"] == "image/svg+xml"
    status = client.get(f"/api/studies/{result.study_uid}/status").json()
    assert status["phase"] == "ready" and status["previews"] == {"icon": 1}

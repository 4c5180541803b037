"""Study downloads: a streamed ZIP of the originals as received, plain or as DICOMDIR / PDI media.

The acceptance test signs in as a clinician, lists and opens studies, downloads them and
compares every file with the bytes that were sent; the same token may not write what radiology
staff and admins write.
"""

from __future__ import annotations

import subprocess
import threading
import time
import zipfile
from io import BytesIO
from pathlib import Path

import httpx
import numpy as np
from fastapi.testclient import TestClient
from pydicom import dcmread
from pydicom.fileset import FileSet

from imaging_hub.auth import list_users
from imaging_hub.ingest import store_instance
from imaging_hub.records import ENCAPSULATED_PDF
from tests.api.helpers import run_pending_jobs, sign_in
from tests.api.test_dicomweb_client import running_server
from tests.api.test_records import PDF_BYTES, refused, upload
from tests.api.test_stow import body, stow
from tests.support import make_study


def sources(tmp_path: Path) -> dict[str, bytes]:
    """The bytes of every file the corpus sent, by SOP Instance UID (its file name)."""
    return {p.stem: p.read_bytes() for p in (tmp_path / "corpus").rglob("*.dcm")}


def fetch_zip(response) -> zipfile.ZipFile:
    """The ZIP of a download answer, after checking its headers."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    archive = zipfile.ZipFile(BytesIO(response.content))
    assert archive.testzip() is None
    return archive


def study_files(client: TestClient, study_uid: str) -> dict[str, str]:
    """The series UID of every instance of a study, by SOP Instance UID (from QIDO-RS)."""
    found = client.get(f"/dicomweb/studies/{study_uid}/instances").json()
    return {i["00080018"]["Value"][0]: i["0020000E"]["Value"][0] for i in found}


def test_clinician_lists_opens_and_downloads_byte_identical_files(hub, anonymous, corpus, tmp_path):
    clinician = sign_in(hub, "dr.house", "clinician", "orthopedic surgery")
    anonymous.headers.update(clinician)  # from here on, every request is the clinician's
    listed = anonymous.get("/api/studies", params={"patient_id": "P1"}, headers=clinician)
    assert listed.status_code == 200, listed.text
    assert [s["study_uid"] for s in listed.json()] == [corpus["A"], corpus["B"]]
    detail = anonymous.get(f"/api/studies/{corpus['A']}", headers=clinician)
    assert detail.status_code == 200
    link = detail.json()["links"]["download"]

    archive = fetch_zip(anonymous.get(link, headers=clinician))
    sent = sources(tmp_path)
    expected = {
        f"{corpus['A']}/{series}/{sop}.dcm"
        for sop, series in study_files(anonymous, corpus["A"]).items()
    }
    assert set(archive.namelist()) == expected and len(expected) == 4
    for name in archive.namelist():
        assert archive.read(name) == sent[Path(name).stem], name
    assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}

    # The same token may not do what radiology staff and admins do, and nothing changes.
    [extra] = make_study(tmp_path / "stow", PatientID="P1")
    refused(stow(anonymous, body(extra.read_bytes()), **clinician), 403, "radiology")
    new_user = {"username": "mallory", "password": "long-enough-password", "role": "admin"}
    refused(anonymous.post("/api/admin/users", json=new_user, headers=clinician), 403, "admin")
    refused(anonymous.post("/api/admin/jobs/retry", json={}, headers=clinician), 403, "admin")
    refused(anonymous.get("/api/admin/users", headers=clinician), 403, "admin")
    assert len(study_files(anonymous, corpus["A"])) == 4
    assert "mallory" not in {u.username for u in list_users(hub.db)}


def extract(archive: zipfile.ZipFile, target: Path) -> Path:
    """Unpack archive into target (as a CD would be) and return it."""
    archive.extractall(target)
    return target


def check_media(root: Path, sent: dict[str, bytes], sops: set[str]) -> None:
    """The DICOMDIR of root is readable and references exactly the files of sops, as sent."""
    dicomdir = dcmread(root / "DICOMDIR")
    assert dicomdir.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.1.3.10"
    fileset = FileSet(dicomdir)
    referenced = {}
    for instance in fileset:
        path = Path(instance.path)
        assert path.is_file(), path
        referenced[instance.SOPInstanceUID] = path
    assert set(referenced) == sops
    for sop, path in referenced.items():
        assert path.read_bytes() == sent[sop], sop
    on_media = {p for p in root.rglob("*") if p.is_file()} - {
        root / "DICOMDIR",
        root / "README.TXT",
    }
    assert on_media == set(referenced.values()), "every file is referenced"
    # dcmtk reads it too.
    dump = subprocess.run(["dcmdump", "-q", str(root / "DICOMDIR")], capture_output=True, text=True)
    assert dump.returncode == 0, dump.stderr
    assert dump.stdout.count("ReferencedSOPInstanceUIDInFile") == len(sops)


def test_dicomdir_layout_is_readable_media_referencing_every_file(client, corpus, tmp_path):
    response = client.get(f"/api/studies/{corpus['A']}/download", params={"layout": "dicomdir"})
    archive = fetch_zip(response)
    assert "DICOMDIR" in archive.namelist() and "README.TXT" not in archive.namelist()
    names = [n for n in archive.namelist() if n != "DICOMDIR"]
    assert all(n.count("/") == 3 and len(n.split("/")[-1]) <= 8 for n in names), names
    root = extract(archive, tmp_path / "cd")
    check_media(root, sources(tmp_path), set(study_files(client, corpus["A"])))


def test_pdi_layout_has_a_readme_and_a_dicomdir(client, corpus, tmp_path):
    response = client.post(
        "/api/downloads", json={"study_uids": [corpus["A"], corpus["D"]], "layout": "pdi"}
    )
    archive = fetch_zip(response)
    readme = archive.read("README.TXT").decode("ascii")
    assert "5 instances, 2 studies" in readme and "\r\n" in readme
    root = extract(archive, tmp_path / "pdi")
    sops = set(study_files(client, corpus["A"])) | set(study_files(client, corpus["D"]))
    check_media(root, sources(tmp_path), sops)


def test_a_pdf_report_goes_onto_the_media_too(hub, client, corpus, tmp_path):
    report = upload(client, title="Report", study_uid=corpus["C"])
    assert report.status_code == 201, report.text
    run_pending_jobs(hub)
    response = client.get(f"/api/studies/{corpus['C']}/download", params={"layout": "dicomdir"})
    root = extract(fetch_zip(response), tmp_path / "cd")
    fileset = FileSet(dcmread(root / "DICOMDIR"))
    [doc] = fileset.find(SOPClassUID=ENCAPSULATED_PDF)
    assert doc.SOPInstanceUID == report.json()["sop_instance_uid"]
    assert PDF_BYTES in Path(doc.path).read_bytes()
    assert len(fileset) == 2


def test_a_selection_of_studies_and_series_in_one_zip(client, corpus, tmp_path):
    files_a = study_files(client, corpus["A"])
    mr_series = next(iter(set(files_a.values())))
    selection = {
        "study_uids": [corpus["A"], corpus["C"], corpus["A"]],
        "series_uids": [mr_series],
    }
    archive = fetch_zip(client.post("/api/downloads", json=selection))
    sent = sources(tmp_path)
    # Study A: only the series asked for; study C, with no series named: all of it.
    expected = {
        f"{corpus['A']}/{mr_series}/{sop}.dcm" for sop, s in files_a.items() if s == mr_series
    }
    expected |= {
        f"{corpus['C']}/{s}/{sop}.dcm" for sop, s in study_files(client, corpus["C"]).items()
    }
    assert set(archive.namelist()) == expected and len(expected) == 3
    for name in archive.namelist():
        assert archive.read(name) == sent[Path(name).stem]
    # The series filter of a single study download.
    one = client.get(f"/api/studies/{corpus['A']}/download", params={"series": mr_series})
    assert len(fetch_zip(one).namelist()) == 2


def test_download_refusals(client, corpus):
    refused(client.get("/api/studies/1.2.3.4.5/download"), 404, "not in the hub")
    refused(client.get("/api/studies/not-a-uid/download"), 400, "not a valid UID")
    other = client.get(f"/api/studies/{corpus['A']}/download", params={"series": "1.2.3"})
    refused(other, 404, "series 1.2.3")
    # A series of another study than those selected.
    files_c = study_files(client, corpus["C"])
    foreign = {"study_uids": [corpus["A"]], "series_uids": list(files_c.values())}
    refused(client.post("/api/downloads", json=foreign), 404, "not in the selected studies")
    assert (
        client.get(f"/api/studies/{corpus['A']}/download", params={"layout": "iso"}).status_code
        == 422
    )
    assert client.post("/api/downloads", json={"study_uids": []}).status_code == 422
    assert client.post("/api/downloads", json={}).status_code == 422
    refused(client.post("/api/downloads", json={"study_uids": ["1.2.x"]}), 400, "not a valid UID")
    refused(client.post("/api/downloads", json={"study_uids": ["1.2.3.4"]}), 404, "1.2.3.4")


def test_downloads_need_a_token(anonymous, corpus):
    assert anonymous.get(f"/api/studies/{corpus['A']}/download").status_code == 401
    assert anonymous.post("/api/downloads", json={"study_uids": [corpus["A"]]}).status_code == 401


def store_instances_and_index(hub, paths: list[Path]) -> str:
    """Store files through the one way in, run the jobs, return their study's UID."""
    results = [store_instance(hub, path, source="test") for path in paths]
    run_pending_jobs(hub)
    return results[0].study_uid


def rss_bytes() -> int:
    """This process's resident set size now (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_large_study_streams_with_flat_memory(hub, token, tmp_path):
    # 12 instances of 2048 x 2048 16-bit pixels: a ZIP of about 100 MB.
    pixels = np.random.default_rng(7).integers(-1000, 3000, (2048, 2048), dtype=np.int16)
    paths = make_study(
        tmp_path / "big", 12, Rows=2048, Columns=2048, PixelData=pixels.tobytes(), PatientID="P8"
    )
    study = store_instances_and_index(hub, paths)
    size = sum(p.stat().st_size for p in paths)
    target = tmp_path / "download.zip"
    with running_server(hub.settings) as base_url:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
            assert http.get("/api/studies", params={"patient_id": "P8"}).status_code == 200
            peak, baseline, done = [0], rss_bytes(), threading.Event()

            def sample() -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], rss_bytes())
                    time.sleep(0.005)

            sampler = threading.Thread(target=sample)
            sampler.start()
            started = time.perf_counter()
            try:
                with http.stream("GET", f"/api/studies/{study}/download") as response:
                    assert response.status_code == 200
                    length = int(response.headers["content-length"])
                    with target.open("wb") as out:
                        for chunk in response.iter_bytes():
                            out.write(chunk)
            finally:
                done.set()
                sampler.join()
            seconds = time.perf_counter() - started
    assert target.stat().st_size == length > size
    growth = peak[0] - baseline
    print(
        f"\nZIP of {length / 1e6:.0f} MB streamed in {seconds:.2f} s "
        f"({length / 1e6 / seconds:.0f} MB/s); resident memory grew {growth / 1e6:.1f} MB"
    )
    assert growth < size / 4, f"memory grew {growth} bytes for a {size}-byte study"
    with zipfile.ZipFile(target) as archive:
        sent = {p.stem: p for p in paths}
        assert len(archive.namelist()) == 12
        for name in archive.namelist():
            assert archive.read(name) == sent[Path(name).stem].read_bytes()


def test_dicomdir_references_files_that_lack_record_keys(hub, client, tmp_path):
    # Instance Number, Series Number and Study ID are type 2 in an image but type 1 in a
    # DICOMDIR record; many devices leave them out or empty. The files stay as they are.
    paths = make_study(tmp_path / "bare", 4, series_per_study=2, PatientID="P6")
    for i, path in enumerate(paths):
        ds = dcmread(path)
        del ds.StudyID
        if i % 2:
            del ds.InstanceNumber
        else:
            ds.InstanceNumber = None
        if i < 2:
            del ds.SeriesNumber
        ds.save_as(path)
    study = store_instances_and_index(hub, paths)
    response = client.get(f"/api/studies/{study}/download", params={"layout": "dicomdir"})
    archive = fetch_zip(response)
    assert not any(n.startswith("OTHER/") for n in archive.namelist()), archive.namelist()
    root = extract(archive, tmp_path / "cd")
    sent = {p.stem: p.read_bytes() for p in paths}
    check_media(root, sent, set(sent))
    fileset = FileSet(dcmread(root / "DICOMDIR"))
    numbers = sorted(
        (i.SeriesInstanceUID, int(i.InstanceNumber)) for i in fileset if "InstanceNumber" in i
    )
    assert [n for _, n in numbers] == [1, 2, 1, 2]


def test_a_resent_instance_downloads_as_its_newest_version(hub, client, tmp_path):
    [first] = make_study(tmp_path / "v1", PatientID="P4", StudyDescription="first")
    study = store_instances_and_index(hub, [first])
    second = tmp_path / "v2.dcm"
    ds = dcmread(first)
    ds.StudyDescription = "second, corrected at the modality"
    ds.save_as(second)
    assert store_instances_and_index(hub, [second]) == study
    archive = fetch_zip(client.get(f"/api/studies/{study}/download"))
    [name] = archive.namelist()
    assert archive.read(name) == second.read_bytes() != first.read_bytes()

"""dicomweb-client and viewers' request shapes against a live ``imaging-hub serve`` process.

One deployment (embedded SQLite, file broker, receiver + API + worker) serves the module: a
study is stored with STOW-RS and found and retrieved at every level; every file of pydicom's
test data is sent with dcmtk's storescu and comes back from WADO-RS unchanged.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import httpx
import numpy as np
import pytest
from dicomweb_client import DICOMwebClient
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_files
from pydicom.uid import generate_uid
from requests import HTTPError
from sqlalchemy import select

from imaging_hub.db.models import StoredFile
from tests.processes import Deployment, make_deployment
from tests.support import make_study, storescu, wait_for_port, wait_until

pytestmark = [pytest.mark.dcmtk, pytest.mark.slow]

PASSWORD = "a-long-password"


@dataclass
class Live:
    """The running deployment and a dicomweb-client for each role."""

    deployment: Deployment
    base: str
    reader: DICOMwebClient
    writer: DICOMwebClient
    headers: dict[str, str]
    dicom_port: int


def _token(base: str, env: dict[str, str], name: str, role: str) -> str:
    """Create a user with the CLI and sign in over HTTP; the access token."""
    added = subprocess.run(
        [sys.executable, "-m", "imaging_hub", "users", "add", name, "--role", role,
         "--password-stdin"],
        input=f"{PASSWORD}\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert added.returncode == 0, added.stdout + added.stderr
    answer = httpx.post(f"{base}/api/auth/token", data={"username": name, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """``imaging-hub serve`` on 127.0.0.1, stopped after the module."""
    deployment = make_deployment(tmp_path_factory.mktemp("live"), None, None)
    proc = deployment.start("serve")
    base = f"http://127.0.0.1:{deployment.env['HUB_HTTP_PORT']}"
    try:
        wait_for_port(int(deployment.env["HUB_HTTP_PORT"]), timeout=60)
        wait_for_port(deployment.settings.dicom_port, timeout=60)
        reader = _token(base, deployment.env, "reader", "clinician")
        writer = _token(base, deployment.env, "writer", "radiology")
        yield Live(
            deployment=deployment,
            base=base,
            reader=DICOMwebClient(
                f"{base}/dicomweb", headers={"Authorization": f"Bearer {reader}"}
            ),
            writer=DICOMwebClient(
                f"{base}/dicomweb", headers={"Authorization": f"Bearer {writer}"}
            ),
            headers={"Authorization": f"Bearer {reader}"},
            dicom_port=deployment.settings.dicom_port,
        )
    finally:
        proc.stop()
        print(deployment.logs()[-5000:])


def _uids(items: list[dict], tag: str) -> list[str]:
    return [item[tag]["Value"][0] for item in items]


def test_store_search_and_retrieve_at_every_level(live: Live, tmp_path: Path) -> None:
    ct = make_study(tmp_path / "ct", 2, PatientID="LIVE-1", PatientName="Live^Test")
    study = dcmread(ct[0]).StudyInstanceUID
    mr = make_study(
        tmp_path / "mr", 2, template="MR_small.dcm", study_uid=study, PatientID="LIVE-1"
    )
    sent = {dcmread(p).SOPInstanceUID: dcmread(p) for p in ct + mr}
    answer = live.writer.store_instances(list(sent.values()))
    assert len(answer.ReferencedSOPSequence) == 4
    with pytest.raises(HTTPError) as refused:  # a clinician may read but not store
        live.reader.store_instances([next(iter(sent.values()))])
    assert refused.value.response.status_code == 403

    def indexed() -> bool:
        found = live.reader.search_for_studies(search_filters={"StudyInstanceUID": study})
        return bool(found) and Dataset.from_json(found[0]).NumberOfStudyRelatedInstances == 4

    assert wait_until(indexed, timeout=60), live.deployment.logs()
    client = live.reader
    (found,) = client.search_for_studies(search_filters={"PatientID": "LIVE-1"})
    assert Dataset.from_json(found).ModalitiesInStudy == ["CT", "MR"]
    series = client.search_for_series(study)
    assert sorted(Dataset.from_json(s).Modality for s in series) == ["CT", "MR"]
    (mr_series,) = client.search_for_series(
        search_filters={"Modality": "MR", "PatientID": "LIVE-1"}
    )
    mr_uid = Dataset.from_json(mr_series).SeriesInstanceUID
    instances = client.search_for_instances(study, mr_uid)
    assert len(instances) == 2
    assert len(client.search_for_instances(study)) == 4
    everywhere = client.search_for_instances(search_filters={"PatientID": "LIVE-1"})
    assert sorted(_uids(everywhere, "00080018")) == sorted(sent)

    retrieved = client.retrieve_study(study, media_types=(("application/dicom", "*"),))
    assert {ds.SOPInstanceUID for ds in retrieved} == set(sent)
    for ds in retrieved:
        assert ds.PixelData == sent[ds.SOPInstanceUID].PixelData
    assert len(client.retrieve_series(study, mr_uid)) == 2
    sop = Dataset.from_json(instances[0]).SOPInstanceUID
    one = client.retrieve_instance(study, mr_uid, sop)
    assert one.PatientID == "LIVE-1" and one.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert len(client.retrieve_study_metadata(study)) == 4
    assert len(client.retrieve_series_metadata(study, mr_uid)) == 2
    metadata = client.retrieve_instance_metadata(study, mr_uid, sop)
    (frame,) = client.retrieve_instance_frames(study, mr_uid, sop, frame_numbers=[1])
    assert frame == sent[sop].PixelData
    (pixels,) = client.retrieve_bulkdata(metadata["7FE00010"]["BulkDataURI"])
    assert pixels == sent[sop].PixelData


def test_ohif_study_list_query(live: Live, tmp_path: Path) -> None:
    for i, (name, day) in enumerate([("Oh^Ifa", "20230105"), ("Mohr^Ifan", "20230920")]):
        paths = make_study(
            tmp_path / str(i),
            PatientID=f"OHIF-{i}",
            PatientName=name,
            StudyDate=day,
            StudyDescription=f"OHIF study {i}",
        )
        storescu(live.dicom_port, *paths)
    query = (
        "limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060"
        "&StudyDate=20230101-20231231&PatientName=*oh*"
    )
    url = f"{live.base}/dicomweb/studies?{query}"

    def both_found() -> bool:
        return len(httpx.get(url, headers=live.headers).json()) == 2

    assert wait_until(both_found, timeout=60), live.deployment.logs()
    response = httpx.get(url, headers={**live.headers, "Accept": "application/dicom+json"})
    items = response.json()
    assert [i["00081030"]["Value"][0] for i in items] == ["OHIF study 1", "OHIF study 0"]
    assert all("00080060" in i for i in items)
    assert "warning" not in response.headers
    paged = httpx.get(url.replace("limit=101&offset=0", "limit=1&offset=1"), headers=live.headers)
    assert _uids(paged.json(), "0020000D") == [items[1]["0020000D"]["Value"][0]]
    assert "warning" not in paged.headers
    first = httpx.get(url.replace("limit=101", "limit=1"), headers=live.headers)
    assert "Additional results" in first.headers["warning"]
    fuzzy = query.replace("fuzzymatching=false", "fuzzymatching=true").replace("*oh*", "ifa%20oh")
    (item,) = httpx.get(f"{live.base}/dicomweb/studies?{fuzzy}", headers=live.headers).json()
    assert item["00100010"]["Value"] == [{"Alphabetic": "Oh^Ifa"}]


def _testdata() -> list[Path]:
    """pydicom's bundled test files."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sorted(Path(p) for p in get_testdata_files("*.dcm"))


#: Data Set Trailing Padding, which dcmtk does not send (it has no meaning, PS3.10 7.2).
TRAILING_PADDING = 0xFFFCFFFC
#: storescu proposes uncompressed syntaxes only, unless told which compressed one to offer.
STORESCU_OPTION = {
    "1.2.840.10008.1.2": "-xi",  # by default storescu prefers Explicit VR and converts to it
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.2": "-xb",
}


def _own_copy(path: Path, out_dir: Path) -> Path | None:
    """A copy of a test file under a SOP Instance UID of its own (several files share one).

    None when pydicom cannot read and write it back; only the UID changes, the other
    elements are written back as they were encoded.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(path)
            if not ds.get("SOPInstanceUID") or "TransferSyntaxUID" not in ds.file_meta:
                return None
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            copy = out_dir / path.name
            ds.save_as(copy, enforce_file_format=False)
            dcmread(copy)
            return copy
    except Exception:
        return None


def _is_instance(path: Path) -> bool:
    """Tell whether a file is a readable Part 10 instance with SOP UIDs and a syntax."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(path)
            ds.save_as(BytesIO(), enforce_file_format=False)
    except Exception:
        return False
    meta = getattr(ds, "file_meta", None)
    return bool(ds.get("SOPInstanceUID")) and meta is not None and "TransferSyntaxUID" in meta


def _send(live: Live, path: Path) -> bool:
    """C-STORE one file with storescu, proposing its own transfer syntax; False if refused."""
    syntax = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    option = STORESCU_OPTION.get(syntax)
    try:
        storescu(live.dicom_port, path, extra=[option] if option else None)
    except AssertionError:
        return False
    return True


def test_every_pydicom_test_file_round_trips_through_cstore_and_wado_rs(
    live: Live, tmp_path: Path
) -> None:
    copies = {p.name: c for p in _testdata() if (c := _own_copy(p, tmp_path)) is not None}
    unreadable = [p for p in _testdata() if p.name not in copies]
    for path in unreadable:  # only files that are not storable instances are left out
        assert not _is_instance(path), path.name
    sent = {name: copy for name, copy in copies.items() if _send(live, copy)}
    refused = sorted(set(copies) - set(sent))
    assert len(sent) >= 50, (len(sent), refused)
    client = live.reader
    datasets = {name: dcmread(copy) for name, copy in sent.items()}
    uids = ",".join(str(ds.SOPInstanceUID) for ds in datasets.values())

    def all_indexed() -> bool:
        found = client.search_for_instances(search_filters={"SOPInstanceUID": uids}, limit=1000)
        return len(found) == len(sent)

    assert wait_until(all_indexed, timeout=300), live.deployment.logs()
    stored = _stored_files(live)
    for name, ds in datasets.items():
        back = client.retrieve_instance(
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
            ds.SOPInstanceUID,
            media_types=(("application/dicom", "*"),),
        )
        assert back.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID, name
        assert _as_stored(live, ds) == stored[str(ds.SOPInstanceUID)], name  # byte for byte
        differ = [
            e.tag
            for e in ds
            if e.tag != TRAILING_PADDING
            and (e.tag not in back or str(back[e.tag].value) != str(e.value))
        ]
        assert differ == [], name  # every element, pixel data included, as sent
    print(f"round trip of {len(sent)} files; storescu could not send: {refused}")


def _stored_files(live: Live) -> dict[str, bytes]:
    """The bytes of every stored file of the deployment, by SOP Instance UID."""
    hub = live.deployment.hub()
    try:
        with hub.db.read() as s:
            rows = s.execute(select(StoredFile.sop_instance_uid, StoredFile.path)).all()
        return {uid: hub.store.local_path(path).read_bytes() for uid, path in rows}
    finally:
        hub.close()


def _as_stored(live: Live, ds: Dataset) -> bytes:
    """The one file of a WADO-RS instance response with transfer-syntax=*, as bytes."""
    url = (
        f"{live.base}/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    response = httpx.get(url, headers={**live.headers, "Accept": accept})
    assert response.status_code == 200, response.text
    boundary = response.headers["content-type"].split("boundary=")[1].strip('"').encode()
    (part,) = response.content.split(b"--" + boundary)[1:-1]
    return part.partition(b"\r\n\r\n")[2][:-2]


def test_decodable_test_files_come_back_with_the_same_pixels_by_default(
    live: Live, tmp_path: Path
) -> None:
    """Asked for Explicit VR Little Endian, compressed files are decoded (same pixels, same UID)."""
    client = live.reader
    checked = []
    for path in _testdata():
        copy = _own_copy(path, tmp_path)
        if copy is None:
            continue
        ds = dcmread(copy)
        if not ds.file_meta.TransferSyntaxUID.is_compressed or "PixelData" not in ds:
            continue
        try:
            expected = ds.pixel_array  # colour as RGB, as a decompressed instance holds it
        except Exception:
            continue  # pydicom cannot decode it here either
        if not _send(live, copy):
            continue
        key = {"SOPInstanceUID": ds.SOPInstanceUID}
        assert wait_until(
            lambda key=key: bool(client.search_for_instances(search_filters=key)), timeout=60
        )
        back = client.retrieve_instance(
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
            ds.SOPInstanceUID,
            media_types=(("application/dicom", "1.2.840.10008.1.2.1"),),
        )
        syntax = back.file_meta.TransferSyntaxUID
        assert syntax == "1.2.840.10008.1.2.1", (path.name, syntax)
        assert back.SOPInstanceUID == ds.SOPInstanceUID
        assert np.array_equal(back.pixel_array, expected), path.name
        checked.append(path.name)
    assert len(checked) >= 15, checked

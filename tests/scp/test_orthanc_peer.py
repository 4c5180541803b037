"""Orthanc (the Debian package) as a real peer: it stores to the hub and queries it.

Files are uploaded to Orthanc over its REST API; ``POST /modalities/hub/store`` makes Orthanc
send them to the hub by C-STORE, and ``POST /modalities/hub/query`` makes it run C-FIND against
the hub. The hub knows Orthanc as a node (AE title and host) with store and query rights.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from sqlalchemy import select

from imaging_hub.config import DicomNode, NodeService, UnknownAetPolicy
from imaging_hub.db.models import Job, JobState, StoredFile
from imaging_hub.hub import Hub
from imaging_hub.work import run_job
from tests.scp.helpers import receiver_settings, receiving
from tests.support import (
    dataset_bytes,
    free_port,
    loopback_env,
    make_study,
    testdata,
    wait_for_port,
)

ORTHANC = "/usr/sbin/Orthanc"

pytestmark = [
    pytest.mark.dcmtk,
    pytest.mark.skipif(shutil.which(ORTHANC) is None, reason="Orthanc is not installed"),
]

SAMPLES = ["CT_small.dcm", "MR_small.dcm", "SC_rgb_rle.dcm", "rtplan.dcm"]


@dataclass
class Orthanc:
    """A running Orthanc: its REST client."""

    http: httpx.Client

    def post(self, path: str, body: Any) -> Any:
        """POST JSON (or bytes) and return the JSON answer, raising on an HTTP error."""
        if isinstance(body, bytes):
            answer = self.http.post(path, content=body)
        else:
            answer = self.http.post(path, json=body)
        answer.raise_for_status()
        return answer.json()

    def get(self, path: str) -> Any:
        """GET a JSON resource."""
        answer = self.http.get(path)
        answer.raise_for_status()
        return answer.json()

    def query(self, level: str, keys: dict[str, str]) -> list[dict[str, Any]]:
        """C-FIND the hub through Orthanc; the answers as {keyword: value}."""
        found = self.post("/modalities/hub/query", {"Level": level, "Query": keys})
        count = len(self.get(f"/queries/{found['ID']}/answers"))
        return [
            self.get(f"/queries/{found['ID']}/answers/{i}/content?simplify") for i in range(count)
        ]


@contextmanager
def _orthanc(work: Path, hub_port: int) -> Iterator[Orthanc]:
    """Start Orthanc on loopback with the hub as modality 'hub'; stop it afterwards."""
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "peer",
        "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "index"),
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True,
        "DicomModalities": {"hub": ["IMAGING_HUB", "127.0.0.1", hub_port]},
        "DicomScuTimeout": 30,
    }
    work.mkdir(parents=True, exist_ok=True)
    (work / "orthanc.json").write_text(json.dumps(config))
    with (work / "orthanc.log").open("wb") as log:
        proc = subprocess.Popen(
            [ORTHANC, str(work / "orthanc.json")], stdout=log, stderr=log, env=loopback_env()
        )
    try:
        wait_for_port(http_port, timeout=60)
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=120) as client:
            yield Orthanc(client)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    """A receiver that refuses unknown AEs and knows Orthanc (store and query)."""
    node = DicomNode(
        aet="ORTHANC", host="127.0.0.1", services=[NodeService.STORE, NodeService.QUERY]
    )
    settings = receiver_settings(
        tmp_path, dicom_nodes=[node], dicom_unknown_aets=UnknownAetPolicy.REFUSE
    )
    with receiving(settings) as running:
        yield running


@pytest.fixture
def orthanc(tmp_path: Path, hub: Hub) -> Iterator[Orthanc]:
    """Orthanc with the hub configured as its modality 'hub'."""
    with _orthanc(tmp_path / "orthanc", hub.settings.dicom_port) as running:
        yield running


def _without_trailing_padding(path: Path) -> bytes:
    """A file's dataset bytes without a final Data Set Trailing Padding (FFFC,FFFC) element.

    dcmtk, which Orthanc sends with, leaves that element out (PS3.10 7.2 lets it be dropped).
    """
    data = dataset_bytes(path)
    if 0xFFFCFFFC not in dcmread(path):
        return data
    cut = data.rfind(b"\xfc\xff\xfc\xff")
    assert cut > 0
    return data[:cut]


def _index_all(hub: Hub) -> None:
    """Run the queued index jobs in this process, as a worker would."""
    with hub.db.read() as s:
        ids = s.execute(
            select(Job.id).where(Job.kind == "index", Job.state == JobState.QUEUED)
        ).scalars()
        job_ids = list(ids)
    for job_id in job_ids:
        run_job(hub, job_id, owner="test")
    with hub.db.read() as s:
        states = s.execute(select(Job.state).where(Job.kind == "index")).scalars().all()
    assert set(states) == {JobState.DONE}


def test_orthanc_stores_to_the_hub_and_queries_it(
    tmp_path: Path, hub: Hub, orthanc: Orthanc
) -> None:
    files = [testdata(name) for name in SAMPLES]
    files += make_study(tmp_path / "study", 3, series_per_study=2, PatientID="SPINE-7")
    ids = [orthanc.post("/instances", f.read_bytes())["ID"] for f in files]

    orthanc.post("/modalities/hub/store", {"Resources": ids, "Synchronous": True})

    with hub.db.read() as s:
        rows = {r.sop_instance_uid: r for r in s.execute(select(StoredFile)).scalars()}
        rows = {uid: (r.path, r.source_detail) for uid, r in rows.items()}
    assert len(rows) == len(files)
    for source, orthanc_id in zip(files, ids, strict=True):
        uid = str(dcmread(source, stop_before_pixels=True).SOPInstanceUID)
        key, sender = rows[uid]
        assert sender == "ORTHANC"
        kept = hub.store.local_path(key)
        sent = tmp_path / f"{orthanc_id}.dcm"
        sent.write_bytes(orthanc.http.get(f"/instances/{orthanc_id}/file").content)
        assert dataset_bytes(kept) == _without_trailing_padding(sent)  # as Orthanc holds it
    _index_all(hub)

    studies = orthanc.query(
        "Study",
        {"StudyInstanceUID": "", "PatientID": "", "NumberOfStudyRelatedInstances": ""},
    )
    expected = {}
    for f in files:
        ds = dcmread(f, stop_before_pixels=True)
        expected.setdefault(str(ds.StudyInstanceUID), [str(ds.PatientID), 0])[1] += 1
    answered = {
        a["StudyInstanceUID"]: [a["PatientID"], int(a["NumberOfStudyRelatedInstances"])]
        for a in studies
    }
    assert answered == expected

    study_uid = str(dcmread(files[-1], stop_before_pixels=True).StudyInstanceUID)
    series = orthanc.query(
        "Series",
        {"StudyInstanceUID": study_uid, "SeriesInstanceUID": "", "Modality": ""},
    )
    expected_series = {
        str(dcmread(f, stop_before_pixels=True).SeriesInstanceUID) for f in files[-3:]
    }
    assert {a["SeriesInstanceUID"] for a in series} == expected_series
    assert {a["Modality"] for a in series} == {"CT"}

    by_patient = orthanc.query("Study", {"PatientID": "SPINE-7", "StudyInstanceUID": ""})
    assert [a["StudyInstanceUID"] for a in by_patient] == [study_uid]


def test_orthanc_without_query_rights_is_refused(tmp_path: Path) -> None:
    """The same Orthanc, known for store only: its C-FIND fails, its C-STORE succeeds."""
    node = DicomNode(aet="ORTHANC", host="127.0.0.1", services=[NodeService.STORE])
    settings = receiver_settings(tmp_path, dicom_nodes=[node])
    with (
        receiving(settings) as hub,
        _orthanc(tmp_path / "orthanc", settings.dicom_port) as orthanc,
    ):
        orthanc_id = orthanc.post("/instances", testdata("CT_small.dcm").read_bytes())["ID"]
        orthanc.post("/modalities/hub/store", {"Resources": [orthanc_id], "Synchronous": True})
        with hub.db.read() as s:
            assert len(s.execute(select(StoredFile.id)).all()) == 1
        refused = orthanc.http.post(
            "/modalities/hub/query", json={"Level": "Study", "Query": {"PatientID": ""}}
        )
        assert refused.status_code >= 400
        assert "0x0124" in refused.json()["Details"]  # Refused: Not Authorized

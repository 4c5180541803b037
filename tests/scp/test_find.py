"""C-FIND from the index with real peers (dcmtk's findscu, pynetdicom), on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from dicom_scp import find as dicom_find
from dicom_scp.access import Access
from dicom_scp.find import handle_find
from dicom_scp.server import start
from imaging_hub.config import DicomNode, NodeService, Settings
from imaging_hub.db.migrate import upgrade
from imaging_hub.hub import Hub
from imaging_hub.index import index_stored_file
from imaging_hub.ingest import store_instance
from tests.support import free_port, make_study, testdata

pytestmark = pytest.mark.dcmtk

STUDY_ROOT = StudyRootQueryRetrieveInformationModelFind
PATIENT_ROOT = PatientRootQueryRetrieveInformationModelFind


@dataclass
class Index:
    """A running hub with three studies indexed."""

    hub: Hub
    port: int
    uids: dict[str, str]
    series: dict[str, list[str]]


def _index(hub: Hub, paths: list[Path]) -> None:
    for path in paths:
        result = store_instance(hub, path, source="test")
        index_stored_file(hub, result.stored_file_id)


def _populate(hub: Hub, tmp: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    common = {"PatientSex": "F", "PatientBirthDate": "19700101"}
    a = make_study(
        tmp / "a", 2, series_per_study=2, PatientID="P1", PatientName="Doe^Jane",
        StudyDate="20240310", StudyTime="101500", AccessionNumber="ACC1", StudyID="S1",
        StudyDescription="MR Lumbar Spine", ReferringPhysicianName="Smith^Anna",
        Modality="MR", BodyPartExamined="LSPINE", **common,
    )  # fmt: skip
    b = make_study(
        tmp / "b", 1, PatientID="P1", PatientName="Doe^Jane", StudyDate="20230105",
        StudyTime="153000", AccessionNumber="ACC2", Modality="CT", **common,
    )  # fmt: skip
    c = make_study(
        tmp / "c", 3, PatientID="P2", PatientName="Müller^Jörg", PatientBirthDate="19800202",
        StudyDate="20240601", StudyTime="080000", AccessionNumber="ACC3", Modality="CT",
    )  # fmt: skip
    uids, series = {}, {}
    for name, paths in (("a", a), ("b", b), ("c", c)):
        _index(hub, paths)
        headers = [dcmread(p, stop_before_pixels=True) for p in paths]
        uids[name] = str(headers[0].StudyInstanceUID)
        series[name] = sorted({str(h.SeriesInstanceUID) for h in headers})
    return uids, series


@pytest.fixture
def index(tmp_path: Path, db_url: str) -> Iterator[Index]:
    settings = Settings(
        data_dir=tmp_path / "hub-data",
        database_url=db_url,
        dicom_host="127.0.0.1",
        dicom_port=free_port(),
        storage_min_free_bytes=0,
        dicom_nodes=[DicomNode(aet="KNOWN", host="127.0.0.1")],
    )
    upgrade(settings.resolved_database_url)
    hub = Hub.open(settings)
    saved_tempdir = tempfile.tempdir
    server = start(hub, block=False)
    assert server is not None
    try:
        uids, series = _populate(hub, tmp_path / "src")
        yield Index(hub, settings.dicom_port, uids, series)
    finally:
        server.shutdown()
        tempfile.tempdir = saved_tempdir
        hub.close()


def findscu(
    port: int, out: Path, *keys: str, model: str = "-S", aet: str = "KNOWN"
) -> list[Dataset]:
    """Query with dcmtk's findscu; return the response identifiers it extracted."""
    out.mkdir(parents=True, exist_ok=True)
    args = ["findscu", model, "-X", "-od", str(out), "-aet", aet, "-aec", "IMAGING_HUB"]
    for key in keys:
        args += ["-k", key]
    result = subprocess.run(
        [*args, "127.0.0.1", str(port)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def c_find(
    port: int, identifier: Dataset, model: str = STUDY_ROOT, aet: str = "KNOWN"
) -> tuple[list[Dataset], int]:
    """Query with pynetdicom; return the pending identifiers and the final status."""
    ae = AE(ae_title=aet)
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", port, ae_title="IMAGING_HUB")
    assert assoc.is_established
    found, final = [], -1
    try:
        for status, ds in assoc.send_c_find(identifier, model):
            if status.Status == 0xFF00:
                found.append(ds)
            else:
                final = int(status.Status)
    finally:
        assoc.release()
    return found, final


def query(level: str, **keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_study_level_with_findscu(index: Index, tmp_path: Path) -> None:
    found = findscu(
        index.port, tmp_path / "out",
        "QueryRetrieveLevel=STUDY", "PatientName=doe*", "StudyInstanceUID", "StudyDate",
        "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
    )  # fmt: skip
    by_uid = {ds.StudyInstanceUID: ds for ds in found}
    assert set(by_uid) == {index.uids["a"], index.uids["b"]}
    a = by_uid[index.uids["a"]]
    assert a.SpecificCharacterSet == "ISO_IR 192"
    assert a.QueryRetrieveLevel == "STUDY"
    assert str(a.PatientName) == "Doe^Jane"
    assert a.StudyDate == "20240310"
    assert a.ModalitiesInStudy == "MR"
    assert int(a.NumberOfStudyRelatedSeries) == 2
    assert int(a.NumberOfStudyRelatedInstances) == 2
    # Only the requested keys come back.
    assert "AccessionNumber" not in a and "PatientID" not in a


def test_return_keys_are_exactly_the_requested_ones(index: Index) -> None:
    ident = query("STUDY", AccessionNumber="ACC3", PatientName="", StudyID="", PatientID="")
    (found,), final = c_find(index.port, ident)
    assert final == 0x0000
    assert {e.keyword for e in found} == {
        "SpecificCharacterSet", "QueryRetrieveLevel", "AccessionNumber", "PatientName",
        "StudyID", "PatientID",
    }  # fmt: skip
    assert str(found.PatientName) == "Müller^Jörg"  # decoded from UTF-8 (ISO_IR 192)
    assert found.StudyID == dcmread(testdata("CT_small.dcm")).StudyID
    assert found.PatientID == "P2"


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"StudyDate": "20240101-"}, {"a", "c"}),
        ({"StudyDate": "-20231231"}, {"b"}),
        ({"StudyDate": "20240301-20240331"}, {"a"}),
        ({"StudyTime": "1000-1100"}, {"a"}),
        ({"StudyTime": "15-"}, {"b"}),
        ({"AccessionNumber": "ACC?"}, {"a", "b", "c"}),
        ({"AccessionNumber": "*3"}, {"c"}),
        ({"PatientName": "MÜLLER*"}, {"c"}),
        ({"PatientName": "doe^jane"}, {"a", "b"}),
        ({"ReferringPhysicianName": "smith*"}, {"a"}),
        ({"StudyDescription": "*lumbar*"}, {"a"}),
        ({"ModalitiesInStudy": "CT"}, {"b", "c"}),
        ({"PatientBirthDate": "19700101"}, {"a", "b"}),
        ({"PatientID": "P1"}, {"a", "b"}),
    ],
)
def test_study_matching(index: Index, keys: dict[str, str], expected: set[str]) -> None:
    found, final = c_find(index.port, query("STUDY", StudyInstanceUID="", **keys))
    assert final == 0x0000
    names = {k for k, uid in index.uids.items() if uid in {ds.StudyInstanceUID for ds in found}}
    assert names == expected


def test_uid_list(index: Index) -> None:
    wanted = [index.uids["a"], index.uids["c"]]
    found, _ = c_find(index.port, query("STUDY", StudyInstanceUID=wanted))
    assert sorted(ds.StudyInstanceUID for ds in found) == sorted(wanted)


def test_series_level(index: Index, tmp_path: Path) -> None:
    found = findscu(
        index.port, tmp_path / "out", "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={index.uids['a']}", "SeriesInstanceUID", "Modality=MR",
        "BodyPartExamined", "NumberOfSeriesRelatedInstances", "SeriesNumber",
    )  # fmt: skip
    assert sorted(ds.SeriesInstanceUID for ds in found) == index.series["a"]
    assert all(ds.StudyInstanceUID == index.uids["a"] for ds in found)
    assert {ds.BodyPartExamined for ds in found} == {"LSPINE"}
    assert [int(ds.NumberOfSeriesRelatedInstances) for ds in found] == [1, 1]


def test_image_level(index: Index) -> None:
    ident = query(
        "IMAGE", StudyInstanceUID=index.uids["c"], SeriesInstanceUID=index.series["c"][0],
        SOPInstanceUID="", SOPClassUID="", InstanceNumber="2",
    )  # fmt: skip
    (found,), final = c_find(index.port, ident)
    assert final == 0x0000
    assert int(found.InstanceNumber) == 2
    assert found.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert found.SOPInstanceUID


def test_patient_root(index: Index, tmp_path: Path) -> None:
    patients = findscu(
        index.port, tmp_path / "p", "QueryRetrieveLevel=PATIENT", "PatientID",
        "PatientName=*", "NumberOfPatientRelatedStudies", model="-P",
    )  # fmt: skip
    counts = {ds.PatientID: int(ds.NumberOfPatientRelatedStudies) for ds in patients}
    assert counts == {"P1": 2, "P2": 1}
    studies, final = c_find(
        index.port, query("STUDY", PatientID="P1", StudyInstanceUID=""), model=PATIENT_ROOT
    )
    assert final == 0x0000
    assert {ds.StudyInstanceUID for ds in studies} == {index.uids["a"], index.uids["b"]}


@pytest.mark.parametrize(
    ("model", "ident"),
    [
        (STUDY_ROOT, query("SERIES", SeriesInstanceUID="")),  # no StudyInstanceUID
        (STUDY_ROOT, query("PATIENT", PatientID="")),  # no PATIENT level in Study Root
        (PATIENT_ROOT, query("STUDY", StudyInstanceUID="")),  # no PatientID
        (STUDY_ROOT, query("NOPE", StudyInstanceUID="")),
    ],
)
def test_identifier_not_matching_the_model_fails(index: Index, model: str, ident: Dataset) -> None:
    found, final = c_find(index.port, ident, model=model)
    assert found == [] and final == 0xA900


def test_malformed_value_fails(index: Index) -> None:
    found, final = c_find(index.port, query("STUDY", StudyDate="2024-01-01-02"))
    assert found == [] and final == 0xC000


def test_unknown_aet_may_store_but_not_query(index: Index, tmp_path: Path) -> None:
    found, final = c_find(index.port, query("STUDY", StudyInstanceUID=""), aet="STRANGER")
    assert found == [] and final == 0x0124


class _FakeEvent:
    """Just enough of a pynetdicom C-FIND event: cancelled once the first match is sent."""

    def __init__(self, identifier: Dataset, responses: list[Any]) -> None:
        self.identifier = identifier
        self.request = SimpleNamespace(AffectedSOPClassUID=STUDY_ROOT)
        self.assoc = SimpleNamespace(
            requestor=SimpleNamespace(ae_title="KNOWN", address="127.0.0.1")
        )
        self._responses = responses

    @property
    def is_cancelled(self) -> bool:
        return len(self._responses) >= 1


def test_cancel_stops_the_matches(index: Index) -> None:
    responses: list[Any] = []
    event = _FakeEvent(query("STUDY", StudyInstanceUID=""), responses)
    access = Access(index.hub.settings)
    for status, ds in handle_find(event, index.hub, access):  # type: ignore[arg-type]
        responses.append((status, ds))
    assert [s for s, _ in responses] == [0xFF00, 0xFE00]


def test_c_cancel_from_a_real_peer(index: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    """A C-CANCEL after the first match: the hub stops and ends with Cancel (0xFE00)."""
    real_find = dicom_find.find

    def slow_find(*args: Any, **kwargs: Any) -> Iterator[Dataset]:
        for ds in real_find(*args, **kwargs):
            yield ds
            time.sleep(0.3)  # time for the peer's C-CANCEL to arrive

    monkeypatch.setattr(dicom_find, "find", slow_find)
    ae = AE(ae_title="KNOWN")
    ae.add_requested_context(STUDY_ROOT)
    assoc = ae.associate("127.0.0.1", index.port, ae_title="IMAGING_HUB")
    assert assoc.is_established
    statuses = []
    try:
        context_id = assoc.accepted_contexts[0].context_id
        responses = assoc.send_c_find(query("STUDY", StudyInstanceUID=""), STUDY_ROOT, msg_id=7)
        for status, _ in responses:
            statuses.append(int(status.Status))
            if len(statuses) == 1:
                assoc.send_c_cancel(7, context_id)
    finally:
        assoc.release()
    assert statuses == [0xFF00, 0xFE00]


def test_a_node_may_be_refused_query(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, dicom_nodes=[DicomNode(aet="SENDER", services=[NodeService.STORE])]
    )
    access = Access(settings)
    assert access.may("SENDER", "10.0.0.1", NodeService.STORE)
    assert not access.may("SENDER", "10.0.0.1", NodeService.QUERY)

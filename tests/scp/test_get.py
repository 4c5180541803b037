"""C-GET from the index with real peers (dcmtk's getscu, pynetdicom), on both databases."""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelGet,
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
)
from sqlalchemy import select

from imaging_hub.db.models import AuditEvent
from tests.scp.retrieving import (
    RETRIEVER,
    RetrieveHub,
    counts,
    failed_list,
    identifier,
    index_received,
    received,
    retrieve_hub,
    send_syntax_files,
)
from tests.support import dataset_bytes, make_study, storescu

__all__ = ["retrieve_hub"]  # the fixture, shared with the C-MOVE tests

pytestmark = pytest.mark.dcmtk

STUDY_ROOT = StudyRootQueryRetrieveInformationModelGet
PATIENT_ROOT = PatientRootQueryRetrieveInformationModelGet

#: getscu's option that makes it prefer (propose first) each transfer syntax.
GETSCU_PREFER = {
    "1.2.840.10008.1.2.1": "+xe",
    "1.2.840.10008.1.2.4.50": "+xy",
    "1.2.840.10008.1.2.4.91": "+xw",
    "1.2.840.10008.1.2.5": "+xr",
    "1.2.840.10008.1.2.1.99": "+xd",
}


def getscu(port: int, out: Path, *keys: str, prefer: str, aet: str = RETRIEVER) -> None:
    """Retrieve with dcmtk's getscu into out, writing what it receives bit for bit."""
    out.mkdir(parents=True, exist_ok=True)
    args = ["getscu", "-S", "+B", prefer, "-aet", aet, "-aec", "IMAGING_HUB", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    result = subprocess.run(
        [*args, "127.0.0.1", str(port)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


class Getter:
    """A pynetdicom C-GET SCU that keeps what the hub sends (dataset bytes and syntax)."""

    def __init__(
        self,
        storage: list[tuple[str, list[str]]],
        answer: Callable[[Any], int] = lambda event: 0x0000,
    ) -> None:
        self.storage = storage
        self.answer = answer
        self.got: dict[str, tuple[str, bytes]] = {}

    def _on_store(self, event: Any) -> int:
        path = Path(event.dataset_path)
        uid = str(event.request.AffectedSOPInstanceUID)
        self.got[uid] = (str(event.context.transfer_syntax), dataset_bytes(path))
        return self.answer(event)

    def get(
        self,
        port: int,
        ident: Dataset,
        *,
        model: str = STUDY_ROOT,
        aet: str = RETRIEVER,
        cancel_after: int | None = None,
    ) -> list[Dataset]:
        """Send one C-GET; every response status (with its identifier as .ident)."""
        ae = AE(ae_title=aet)
        ae.add_requested_context(model)
        roles = []
        for sop_class, syntaxes in self.storage:
            ae.add_requested_context(sop_class, syntaxes)
            roles.append(build_role(sop_class, scp_role=True))
        assoc = ae.associate(
            "127.0.0.1",
            port,
            ae_title="IMAGING_HUB",
            ext_neg=roles,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
        )
        assert assoc.is_established
        responses = []
        try:
            cx_id = next(
                cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == model
            )
            for status, ds in assoc.send_c_get(ident, model, msg_id=11):
                status.ident = ds
                responses.append(status)
                if cancel_after is not None and len(responses) == cancel_after:
                    assoc.send_c_cancel(11, cx_id)
        finally:
            assoc.release()
        return responses


CT_AS_STORED = [(CTImageStorage, [ExplicitVRLittleEndian])]


@pytest.fixture
def study(retrieve_hub: RetrieveHub, tmp_path: Path) -> dict[str, Any]:
    """One study of five CT instances in two series (3 + 2), stored and indexed."""
    paths = make_study(tmp_path / "src", 5, series_per_study=2, PatientID="P-GET")
    storescu(retrieve_hub.port, *paths, aet=RETRIEVER)
    index_received(retrieve_hub.hub)
    headers = [dcmread(p, stop_before_pixels=True) for p in paths]
    series: dict[str, list[str]] = {}
    for h in headers:
        series.setdefault(str(h.SeriesInstanceUID), []).append(str(h.SOPInstanceUID))
    return {"study": str(headers[0].StudyInstanceUID), "series": series}


def test_getscu_gets_every_syntax_byte_exact(retrieve_hub: RetrieveHub, tmp_path: Path) -> None:
    """Each of six transfer syntaxes comes back exactly as stored."""
    uids = send_syntax_files(retrieve_hub)
    stored = retrieve_hub.stored()
    for syntax, uid in uids.items():
        header = dcmread(stored[uid], stop_before_pixels=True)
        keys = {
            "StudyInstanceUID": str(header.StudyInstanceUID),
            "SeriesInstanceUID": str(header.SeriesInstanceUID),
            "SOPInstanceUID": uid,
        }
        if syntax == ImplicitVRLittleEndian:
            # getscu 3.6.7 proposes Explicit VR for +xi, so a pynetdicom peer asks for Implicit
            getter = Getter([(header.SOPClassUID, [ImplicitVRLittleEndian])])
            assert getter.get(retrieve_hub.port, identifier("IMAGE", **keys))[-1].Status == 0
            assert getter.got[uid] == (syntax, dataset_bytes(stored[uid]))
            continue
        out = tmp_path / f"get-{syntax}"
        args = [f"{k}={v}" for k, v in keys.items()]
        getscu(
            retrieve_hub.port, out, "QueryRetrieveLevel=IMAGE", *args, prefer=GETSCU_PREFER[syntax]
        )
        got = received(out)
        assert list(got) == [uid], syntax
        assert got[uid] == dataset_bytes(stored[uid]), syntax
        (path,) = out.iterdir()
        assert dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax


def test_series_level_counts_and_audit(retrieve_hub: RetrieveHub, study: dict[str, Any]) -> None:
    series_uid, sops = max(study["series"].items(), key=lambda kv: len(kv[1]))
    getter = Getter(CT_AS_STORED)
    ident = identifier("SERIES", StudyInstanceUID=study["study"], SeriesInstanceUID=series_uid)
    responses = getter.get(retrieve_hub.port, ident)
    pending, final = responses[:-1], responses[-1]
    assert [counts(r) for r in pending] == [(2, 1, 0, 0), (1, 2, 0, 0), (0, 3, 0, 0)]
    assert final.Status == 0x0000 and counts(final)[1:] == (3, 0, 0)
    assert set(getter.got) == set(sops)
    with retrieve_hub.hub.db.read() as s:
        (event,) = s.scalars(select(AuditEvent).where(AuditEvent.actor_kind == "aet")).all()
    assert (event.actor, event.action, event.outcome) == (
        RETRIEVER,
        "instances-transferred",
        "success",
    )
    assert event.study_uid == study["study"] and event.detail["service"] == "C-GET"


def test_image_level_and_patient_root(retrieve_hub: RetrieveHub, study: dict[str, Any]) -> None:
    series_uid, sops = next(iter(study["series"].items()))
    getter = Getter(CT_AS_STORED)
    ident = identifier(
        "IMAGE", StudyInstanceUID=study["study"], SeriesInstanceUID=series_uid,
        SOPInstanceUID=sops[-1],
    )  # fmt: skip
    final = getter.get(retrieve_hub.port, ident)[-1]
    assert final.Status == 0x0000 and set(getter.got) == {sops[-1]}
    final = Getter(CT_AS_STORED).get(
        retrieve_hub.port, identifier("PATIENT", PatientID="P-GET"), model=PATIENT_ROOT
    )[-1]
    assert final.Status == 0x0000 and counts(final)[1:] == (5, 0, 0)


@pytest.mark.parametrize("aet", ["VIEWER", "STRANGER"])
def test_caller_without_retrieve_is_refused(
    retrieve_hub: RetrieveHub, study: dict[str, Any], aet: str
) -> None:
    """A node without retrieve, and an unknown AE (default policy: store), may not C-GET."""
    getter = Getter(CT_AS_STORED)
    ident = identifier("STUDY", StudyInstanceUID=study["study"])
    (final,) = getter.get(retrieve_hub.port, ident, aet=aet)
    assert final.Status == 0x0124
    assert getter.got == {}


def test_fallback_to_little_endian_leaves_the_stored_file(
    retrieve_hub: RetrieveHub, study: dict[str, Any]
) -> None:
    """A peer taking only Implicit VR gets the Explicit VR original converted; the file stays."""
    uids = send_syntax_files(retrieve_hub)
    stored = retrieve_hub.stored()
    before = {uid: hashlib.sha256(p.read_bytes()).hexdigest() for uid, p in stored.items()}
    jpeg = dcmread(stored[uids[JPEGBaseline8Bit]], stop_before_pixels=True)
    getter = Getter(
        [
            (CTImageStorage, [ImplicitVRLittleEndian]),
            (SecondaryCaptureImageStorage, [ExplicitVRLittleEndian]),
        ]
    )
    ct_series = next(iter(study["series"]))
    final = getter.get(
        retrieve_hub.port,
        identifier("SERIES", StudyInstanceUID=study["study"], SeriesInstanceUID=ct_series),
    )[-1]
    assert final.Status == 0x0000
    assert {syntax for syntax, _ in getter.got.values()} == {ImplicitVRLittleEndian}
    final = getter.get(
        retrieve_hub.port,
        identifier(
            "IMAGE",
            StudyInstanceUID=jpeg.StudyInstanceUID,
            SeriesInstanceUID=jpeg.SeriesInstanceUID,
            SOPInstanceUID=jpeg.SOPInstanceUID,
        ),
    )[-1]
    assert final.Status == 0x0000
    syntax, data = getter.got[str(jpeg.SOPInstanceUID)]
    assert syntax == ExplicitVRLittleEndian  # decoded from JPEG Baseline for this peer
    assert len(data) > 3 * int(jpeg.Rows) * int(jpeg.Columns)
    after = {uid: hashlib.sha256(p.read_bytes()).hexdigest() for uid, p in stored.items()}
    assert after == before


def test_instances_the_peer_cannot_take_fail(
    retrieve_hub: RetrieveHub, study: dict[str, Any]
) -> None:
    """No accepted context for the SOP class: every sub-operation fails (0xA702, the list)."""
    getter = Getter([(SecondaryCaptureImageStorage, [ExplicitVRLittleEndian])])
    final = getter.get(retrieve_hub.port, identifier("STUDY", StudyInstanceUID=study["study"]))[-1]
    assert final.Status == 0xA702 and counts(final)[1:] == (0, 5, 0)
    assert len(failed_list(final)) == 5 and getter.got == {}


def test_refused_by_the_peer_is_a_warning(retrieve_hub: RetrieveHub, study: dict[str, Any]) -> None:
    series_uid, sops = max(study["series"].items(), key=lambda kv: len(kv[1]))
    getter = Getter(
        CT_AS_STORED,
        answer=lambda e: 0xA700 if str(e.request.AffectedSOPInstanceUID) == sops[0] else 0,
    )
    ident = identifier("SERIES", StudyInstanceUID=study["study"], SeriesInstanceUID=series_uid)
    final = getter.get(retrieve_hub.port, ident)[-1]
    assert final.Status == 0xB000 and counts(final)[1:] == (2, 1, 0)
    assert failed_list(final) == [sops[0]]


def test_c_cancel(retrieve_hub: RetrieveHub, study: dict[str, Any]) -> None:
    def slow(event: Any) -> int:
        time.sleep(0.3)
        return 0x0000

    getter = Getter(CT_AS_STORED, answer=slow)
    ident = identifier("STUDY", StudyInstanceUID=study["study"])
    final = getter.get(retrieve_hub.port, ident, cancel_after=1)[-1]
    assert final.Status == 0xFE00
    remaining, completed, failed, _ = counts(final)
    assert 1 <= completed < 5 and remaining == 5 - completed and failed == 0
    assert len(getter.got) == completed

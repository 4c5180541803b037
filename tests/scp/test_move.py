"""C-MOVE from the index with real peers (dcmtk's movescu and storescp, pynetdicom), on both DBs."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from sqlalchemy import select

from imaging_hub.db.models import AuditEvent
from tests.scp.retrieving import (
    RETRIEVER,
    SYNTAX_FILES,
    RetrieveHub,
    counts,
    failed_list,
    identifier,
    index_received,
    received,
    retrieve_hub,
    send_syntax_files,
    storescp,
)
from tests.support import dataset_bytes, make_study, storescu, testdata

__all__ = ["retrieve_hub", "storescp"]  # fixtures shared with the C-GET tests

pytestmark = pytest.mark.dcmtk

STUDY_ROOT = StudyRootQueryRetrieveInformationModelMove
PATIENT_ROOT = PatientRootQueryRetrieveInformationModelMove


def c_move(
    port: int,
    ident: Dataset,
    destination: str = "DEST",
    *,
    model: str = STUDY_ROOT,
    aet: str = RETRIEVER,
    cancel_after: int | None = None,
) -> list[Dataset]:
    """C-MOVE with pynetdicom; every response status dataset (the identifier kept under .ident)."""
    ae = AE(ae_title=aet)
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", port, ae_title="IMAGING_HUB")
    assert assoc.is_established
    responses = []
    try:
        cx_id = assoc.accepted_contexts[0].context_id
        for status, ds in assoc.send_c_move(ident, destination, model, msg_id=9):
            status.ident = ds
            responses.append(status)
            if cancel_after is not None and len(responses) == cancel_after:
                assoc.send_c_cancel(9, cx_id)
    finally:
        assoc.release()
    return responses


def audit_events(running: RetrieveHub) -> list[AuditEvent]:
    with running.hub.db.read() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.actor_kind == "aet")))


def movescu(port: int, *keys: str, model: str = "-S", aet: str = RETRIEVER) -> str:
    """Move with dcmtk's movescu to DEST; its output."""
    args = ["movescu", "-v", model, "-aet", aet, "-aec", "IMAGING_HUB", "-aem", "DEST"]
    for key in keys:
        args += ["-k", key]
    result = subprocess.run(
        [*args, "127.0.0.1", str(port)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def test_movescu_sends_every_syntax_byte_exact(retrieve_hub: RetrieveHub, storescp: Path) -> None:
    """Six transfer syntaxes stored with storescu come back to storescp exactly as stored."""
    uids = send_syntax_files(retrieve_hub)
    stored = retrieve_hub.stored()
    assert set(stored) == set(uids.values())
    studies = {str(dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in stored.values()}
    for study_uid in sorted(studies):
        movescu(retrieve_hub.port, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study_uid}")
    got = received(storescp)
    assert set(got) == set(uids.values())
    syntaxes = {uid: syntax for syntax, uid in uids.items()}
    for path in storescp.iterdir():  # sent in its stored syntax, not converted
        ds = dcmread(path, stop_before_pixels=True)
        assert ds.file_meta.TransferSyntaxUID == syntaxes[str(ds.SOPInstanceUID)]
    for syntax, uid in uids.items():
        # byte for byte what the hub received from storescu (storescu re-encodes some files) ...
        assert got[uid] == dataset_bytes(stored[uid]), syntax
    for path in storescp.iterdir():  # ... which holds pydicom's original dataset
        ds = dcmread(path)
        original = dcmread(testdata(SYNTAX_FILES[syntaxes[str(ds.SOPInstanceUID)]][0]))
        assert _elements(ds) == _elements(original), path.name


def _elements(ds: Dataset) -> dict[int, Any]:
    """The values of a dataset's elements but group lengths and padding (storescu drops them)."""
    return {int(e.tag): e.value for e in ds if e.tag.element != 0 and e.tag != 0xFFFCFFFC}


@pytest.fixture
def study(retrieve_hub: RetrieveHub, tmp_path: Path) -> dict[str, Any]:
    """One study of five CT instances in two series (3 + 2), stored and indexed."""
    paths = make_study(tmp_path / "src", 5, series_per_study=2, PatientID="P-MOVE")
    storescu(retrieve_hub.port, *paths, aet=RETRIEVER)
    index_received(retrieve_hub.hub)
    headers = [dcmread(p, stop_before_pixels=True) for p in paths]
    series: dict[str, list[str]] = {}
    for h in headers:
        series.setdefault(str(h.SeriesInstanceUID), []).append(str(h.SOPInstanceUID))
    return {"study": str(headers[0].StudyInstanceUID), "series": series, "paths": paths}


@pytest.fixture
def destination(
    retrieve_hub: RetrieveHub,
) -> Iterator[Callable[[Callable[[Any], int]], list[str]]]:
    """Start a pynetdicom Storage SCP as DEST whose answer a test chooses; it records UIDs."""
    servers = []

    def _start(answer: Callable[[Any], int]) -> list[str]:
        got: list[str] = []

        def on_store(event: Any) -> int:
            got.append(str(event.request.AffectedSOPInstanceUID))
            return answer(event)

        ae = AE(ae_title="DEST")
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, [ExplicitVRLittleEndian])
        ae.add_supported_context(Verification)
        servers.append(
            ae.start_server(
                ("127.0.0.1", retrieve_hub.dest_port),
                block=False,
                evt_handlers=[(evt.EVT_C_STORE, on_store)],
            )
        )
        return got

    try:
        yield _start
    finally:
        for server in servers:
            server.shutdown()


def test_series_level_move_counts(
    retrieve_hub: RetrieveHub, study: dict[str, Any], storescp: Path
) -> None:
    series_uid, sops = max(study["series"].items(), key=lambda kv: len(kv[1]))
    ident = identifier("SERIES", StudyInstanceUID=study["study"], SeriesInstanceUID=series_uid)
    responses = c_move(retrieve_hub.port, ident)
    pending, final = responses[:-1], responses[-1]
    assert [counts(r) for r in pending] == [(2, 1, 0, 0), (1, 2, 0, 0), (0, 3, 0, 0)]
    assert all(r.Status == 0xFF00 for r in pending)
    assert final.Status == 0x0000
    assert counts(final)[1:] == (3, 0, 0)
    assert set(received(storescp)) == set(sops)
    # the audit trail names the caller, the study and the outcome
    (event,) = audit_events(retrieve_hub)
    assert (event.actor, event.action, event.outcome) == (
        RETRIEVER,
        "instances-transferred",
        "success",
    )
    assert event.study_uid == study["study"]
    assert event.patient_record_id is not None
    assert event.detail["destination"] == "DEST" and event.detail["completed"] == 3


def test_image_level_move(retrieve_hub: RetrieveHub, study: dict[str, Any], storescp: Path) -> None:
    series_uid, sops = next(iter(study["series"].items()))
    ident = identifier(
        "IMAGE", StudyInstanceUID=study["study"], SeriesInstanceUID=series_uid,
        SOPInstanceUID=sops[0],
    )  # fmt: skip
    *_, final = c_move(retrieve_hub.port, ident)
    assert final.Status == 0x0000 and counts(final)[1:] == (1, 0, 0)
    assert set(received(storescp)) == {sops[0]}


def test_patient_root_patient_level(
    retrieve_hub: RetrieveHub, study: dict[str, Any], storescp: Path
) -> None:
    *_, final = c_move(
        retrieve_hub.port, identifier("PATIENT", PatientID="P-MOVE"), model=PATIENT_ROOT
    )
    assert final.Status == 0x0000 and counts(final)[1:] == (5, 0, 0)
    assert len(received(storescp)) == 5


def test_study_level_with_movescu_patient_root(
    retrieve_hub: RetrieveHub, study: dict[str, Any], storescp: Path
) -> None:
    movescu(
        retrieve_hub.port, "QueryRetrieveLevel=STUDY", "PatientID=P-MOVE",
        f"StudyInstanceUID={study['study']}", model="-P",
    )  # fmt: skip
    assert len(received(storescp)) == 5


def test_unknown_destination(retrieve_hub: RetrieveHub, study: dict[str, Any]) -> None:
    (final,) = c_move(
        retrieve_hub.port, identifier("STUDY", StudyInstanceUID=study["study"]), "NOWHERE"
    )
    assert final.Status == 0xA801
    # a known node that is not a move destination is unknown as one too
    (final,) = c_move(
        retrieve_hub.port, identifier("STUDY", StudyInstanceUID=study["study"]), "VIEWER"
    )
    assert final.Status == 0xA801


@pytest.mark.parametrize("aet", ["VIEWER", "STRANGER"])
def test_caller_without_retrieve_is_refused(
    retrieve_hub: RetrieveHub, study: dict[str, Any], storescp: Path, aet: str
) -> None:
    """A node without retrieve, and an unknown AE (default policy: store), may not C-MOVE."""
    (final,) = c_move(
        retrieve_hub.port, identifier("STUDY", StudyInstanceUID=study["study"]), aet=aet
    )
    assert final.Status == 0x0124
    assert received(storescp) == {}
    (event,) = audit_events(retrieve_hub)
    assert (event.actor, event.outcome) == (aet, "failure")


@pytest.mark.parametrize(
    ("ident", "status"),
    [
        (identifier("STUDY", StudyInstanceUID="*"), 0xA900),  # no wild cards in a retrieve
        (identifier("STUDY", StudyInstanceUID=""), 0xA900),  # the level's unique key is required
        (identifier("SERIES", SeriesInstanceUID="1.2"), 0xA900),  # no StudyInstanceUID
        (identifier("PATIENT", PatientID="P-MOVE"), 0xA900),  # no PATIENT level in Study Root
        (identifier("STUDY", StudyInstanceUID="1.2.abc"), 0xC000),  # not a UID
    ],
)
def test_bad_identifiers(retrieve_hub: RetrieveHub, ident: Dataset, status: int) -> None:
    (final,) = c_move(retrieve_hub.port, ident)
    assert final.Status == status and final.ErrorComment


def test_nothing_matches(retrieve_hub: RetrieveHub, study: dict[str, Any]) -> None:
    (final,) = c_move(retrieve_hub.port, identifier("STUDY", StudyInstanceUID="1.2.3.4"))
    assert final.Status == 0x0000 and counts(final)[1:] == (0, 0, 0)


def test_destination_down_fails_every_suboperation_and_the_hub_keeps_serving(
    retrieve_hub: RetrieveHub, study: dict[str, Any], storescp: Path
) -> None:
    ident = identifier("STUDY", StudyInstanceUID=study["study"])
    responses = c_move(retrieve_hub.port, ident, "DOWN")
    final = responses[-1]
    assert final.Status == 0xA702
    assert counts(final)[1:] == (0, 5, 0)
    assert sorted(failed_list(final)) == sorted(
        u for sops in study["series"].values() for u in sops
    )
    assert [counts(r)[0] for r in responses[:-1]] == [4, 3, 2, 1, 0]
    # the hub still moves and answers
    *_, again = c_move(retrieve_hub.port, ident)
    assert again.Status == 0x0000 and counts(again)[1:] == (5, 0, 0)
    echo = subprocess.run(
        ["echoscu", "-aec", "IMAGING_HUB", "127.0.0.1", str(retrieve_hub.port)], timeout=30
    )
    assert echo.returncode == 0


def test_some_failed_is_a_warning_with_the_failed_list(
    retrieve_hub: RetrieveHub, study: dict[str, Any], destination: Any
) -> None:
    series_uid, sops = max(study["series"].items(), key=lambda kv: len(kv[1]))
    refused = sops[1]
    got = destination(
        lambda e: 0xA700 if str(e.request.AffectedSOPInstanceUID) == refused else 0x0000
    )
    ident = identifier("SERIES", StudyInstanceUID=study["study"], SeriesInstanceUID=series_uid)
    final = c_move(retrieve_hub.port, ident)[-1]
    assert final.Status == 0xB000
    assert counts(final)[1:] == (2, 1, 0)
    assert failed_list(final) == [refused]
    assert sorted(got) == sorted(sops)
    (event,) = audit_events(retrieve_hub)
    assert event.outcome == "failure" and event.detail["failed"] == 1


def test_all_refused_is_a_failure(
    retrieve_hub: RetrieveHub, study: dict[str, Any], destination: Any
) -> None:
    destination(lambda e: 0xA700)
    final = c_move(retrieve_hub.port, identifier("STUDY", StudyInstanceUID=study["study"]))[-1]
    assert final.Status == 0xA702 and counts(final)[1:] == (0, 5, 0)
    assert len(failed_list(final)) == 5


def test_destination_without_the_stored_syntax_gets_little_endian(
    retrieve_hub: RetrieveHub, destination: Any
) -> None:
    """JPEG Baseline and RLE instances go to a Little Endian only destination decoded in memory."""
    uids = send_syntax_files(retrieve_hub)
    stored = retrieve_hub.stored()
    before = {uid: path.read_bytes() for uid, path in stored.items()}
    syntaxes: dict[str, str] = {}

    def answer(event: Any) -> int:
        syntaxes[str(event.request.AffectedSOPInstanceUID)] = str(event.context.transfer_syntax)
        return 0x0000

    destination(answer)
    header = dcmread(stored[uids[JPEGBaseline8Bit]], stop_before_pixels=True)
    final = c_move(
        retrieve_hub.port, identifier("STUDY", StudyInstanceUID=header.StudyInstanceUID)
    )[-1]
    assert final.Status == 0x0000 and counts(final)[1:] == (2, 0, 0)
    assert syntaxes == {
        uids[JPEGBaseline8Bit]: ExplicitVRLittleEndian,
        uids[RLELossless]: ExplicitVRLittleEndian,
    }
    assert {uid: path.read_bytes() for uid, path in stored.items()} == before  # files unchanged


def test_c_cancel(retrieve_hub: RetrieveHub, study: dict[str, Any], destination: Any) -> None:
    """A C-CANCEL after the first sub-operation stops the rest: 0xFE00 with the counts so far."""

    def slow(event: Any) -> int:
        time.sleep(0.4)  # time for the mover's C-CANCEL to arrive
        return 0x0000

    got = destination(slow)
    ident = identifier("STUDY", StudyInstanceUID=study["study"])
    responses = c_move(retrieve_hub.port, ident, cancel_after=1)
    final = responses[-1]
    assert final.Status == 0xFE00
    remaining, completed, failed, warning = counts(final)
    assert completed == len(got) and 1 <= completed < 5
    assert remaining == 5 - completed and failed == warning == 0


def test_concurrent_moves(retrieve_hub: RetrieveHub, study: dict[str, Any], storescp: Path) -> None:
    ident = identifier("STUDY", StudyInstanceUID=study["study"])
    finals: list[int] = []

    def move() -> None:
        finals.append(int(c_move(retrieve_hub.port, ident)[-1].Status))

    threads = [threading.Thread(target=move) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert finals == [0, 0, 0]


def test_many_instances_arrive_whole_and_quickly(
    retrieve_hub: RetrieveHub, storescp: Path, tmp_path: Path
) -> None:
    """200 sub-operations in a row: none waits for a response taken by another thread."""
    paths = make_study(tmp_path / "many", 200, PatientID="P-MANY")
    storescu(retrieve_hub.port, *paths, aet=RETRIEVER)
    index_received(retrieve_hub.hub)
    study_uid = str(dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
    started = time.monotonic()
    final = c_move(retrieve_hub.port, identifier("STUDY", StudyInstanceUID=study_uid))[-1]
    elapsed = time.monotonic() - started
    assert final.Status == 0x0000 and counts(final)[1:] == (200, 0, 0)
    assert len(received(storescp)) == 200
    assert elapsed < 30  # a lost response would stall for the 60 s DIMSE timeout


def test_mover_going_away_stops_the_move(
    retrieve_hub: RetrieveHub, study: dict[str, Any], destination: Any
) -> None:
    """An abort by the mover ends the sub-operations; the hub keeps serving."""

    def slow(event: Any) -> int:
        time.sleep(0.3)
        return 0x0000

    got = destination(slow)
    ae = AE(ae_title=RETRIEVER)
    ae.add_requested_context(STUDY_ROOT)
    assoc = ae.associate("127.0.0.1", retrieve_hub.port, ae_title="IMAGING_HUB")
    ident = identifier("STUDY", StudyInstanceUID=study["study"])
    for status, _ in assoc.send_c_move(ident, "DEST", STUDY_ROOT):
        assert status.Status == 0xFF00
        assoc.abort()
        break
    time.sleep(1.5)  # the five sub-operations would take 1.5 s
    sent = len(got)
    assert sent < 5
    time.sleep(0.6)
    assert len(got) == sent  # stopped, not going on unseen
    final = c_move(retrieve_hub.port, ident)[-1]
    assert final.Status == 0x0000 and counts(final)[1:] == (5, 0, 0)

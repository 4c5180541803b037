"""Bad input to the receiver: a failure status with a reason, quarantine, nothing else changes.

DESIGN invariant 4. Each case runs after a good instance was stored with dcmtk's storescu and
checks, on the same association, that a good instance is still accepted afterwards, and that
every stored file keeps its SHA-256. pynetdicom is the peer where dcmtk cannot send the bad
input (garbage bytes, a dataset that disagrees with its command, an abort mid-dataset).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import CTImageStorage, MRImageStorage

from dicom_scp.server import spool_dir
from imaging_hub.hub import Hub
from tests.scp.helpers import (
    associate,
    quarantine_notes,
    receiver_settings,
    receiving,
    send_partial_store,
    send_raw_store,
    storage_digests,
    stored_count,
)
from tests.support import storescu, testdata, wait_until

pytestmark = pytest.mark.dcmtk

CONTEXTS = [(CTImageStorage, ExplicitVRLittleEndian), (MRImageStorage, ExplicitVRLittleEndian)]


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    """A receiver that already holds one instance, stored by dcmtk's storescu."""
    with receiving(receiver_settings(tmp_path)) as running:
        storescu(running.settings.dicom_port, testdata("CT_small.dcm"))
        assert stored_count(running) == 1
        yield running


def _ct(**changes: object) -> Dataset:
    """CT_small as a new instance, with attributes changed (None deletes one)."""
    ds = dcmread(testdata("CT_small.dcm"))
    ds.SOPInstanceUID = generate_uid()
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def _bytes(ds: Dataset) -> bytes:
    encoded = encode(ds, False, True)
    assert encoded is not None
    return encoded


def _garbage() -> tuple[str, str, bytes]:
    return CTImageStorage, generate_uid(), bytes(range(256)) * 16


def _missing(keyword: str) -> Callable[[], tuple[str, str, bytes]]:
    def build() -> tuple[str, str, bytes]:
        ds = _ct(**{keyword: None})
        uid = generate_uid() if keyword == "SOPInstanceUID" else ds.SOPInstanceUID
        return CTImageStorage, uid, _bytes(ds)

    return build


def _other_uid() -> tuple[str, str, bytes]:
    return CTImageStorage, generate_uid(), _bytes(_ct())  # command names another instance


def _bad_syntax() -> tuple[str, str, bytes]:
    ds = _ct(SOPInstanceUID="1.2.evil/../../x")
    return CTImageStorage, "1.2.evil/../../x", _bytes(ds)


def _bad_study_syntax() -> tuple[str, str, bytes]:
    ds = _ct(StudyInstanceUID="1.2.840.abc")
    return CTImageStorage, ds.SOPInstanceUID, _bytes(ds)


def _mr_dataset() -> tuple[str, str, bytes]:
    ds = _ct(SOPClassUID=MRImageStorage)  # an MR dataset under a CT command and context
    return CTImageStorage, ds.SOPInstanceUID, _bytes(ds)


def _mr_command() -> tuple[str, str, bytes]:
    ds = _ct(SOPClassUID=MRImageStorage)  # command and dataset say MR, the context says CT
    return MRImageStorage, ds.SOPInstanceUID, _bytes(ds)


CASES = {
    "undecodable": (_garbage, 0xC000, "undecodable"),
    "no-sop-instance-uid": (_missing("SOPInstanceUID"), 0xC000, "SOPInstanceUID is missing"),
    "no-study-uid": (_missing("StudyInstanceUID"), 0xC000, "StudyInstanceUID is missing"),
    "no-series-uid": (_missing("SeriesInstanceUID"), 0xC000, "SeriesInstanceUID is missing"),
    "uid-not-the-announced": (_other_uid, 0xC000, "does not match the announced"),
    "invalid-uid-syntax": (_bad_syntax, 0xC000, "not a valid UID"),
    "invalid-study-uid": (_bad_study_syntax, 0xC000, "not a valid UID"),
    "sop-class-not-the-context": (_mr_dataset, 0xA900, "SOPClassUID does not match"),
    "command-not-the-context": (_mr_command, 0xA900, "SOPClassUID does not match"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_dataset_fails_is_quarantined_and_the_association_goes_on(hub: Hub, case: str) -> None:
    build, status, reason = CASES[case]
    sop_class, sop_instance, encoded = build()
    before = storage_digests(hub)
    assoc = associate(hub, *CONTEXTS)
    try:
        ct_context = next(
            cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == CTImageStorage
        )
        rsp = send_raw_store(assoc, ct_context, sop_class, sop_instance, encoded)
        assert rsp.Status == status
        assert reason in rsp.ErrorComment
        good = _ct()
        assert assoc.send_c_store(good).Status == 0x0000  # the association goes on
    finally:
        assoc.release()

    (note,) = quarantine_notes(hub)
    assert reason in note["reason"]
    assert note["source"] == "dimse" and note["source_detail"] == "BADPEER"
    kept = (hub.settings.quarantine_dir / note["file"]).read_bytes()
    assert kept.endswith(encoded)  # the raw bytes as received, after the file meta
    assert stored_count(hub) == 2
    after = storage_digests(hub)
    assert {k: after[k] for k in before} == before  # nothing stored before has changed
    assert not any(name.startswith(".") for name in after)
    assert not list(spool_dir(hub.settings).iterdir())  # no received file is left behind
    storescu(hub.settings.dicom_port, testdata("MR_small.dcm"))  # the server goes on
    assert stored_count(hub) == 3


def test_truncated_stream_is_quarantined_and_the_server_goes_on(hub: Hub) -> None:
    """A peer aborts in the middle of a dataset: the partial bytes go to quarantine."""
    before = storage_digests(hub)
    ds = _ct()
    encoded = _bytes(ds)
    assoc = associate(hub, *CONTEXTS)
    context = assoc.accepted_contexts[0].context_id
    sent = send_partial_store(assoc, context, CTImageStorage, ds.SOPInstanceUID, encoded)
    time.sleep(0.3)  # let the receiver take in what was sent before the abort
    assoc.abort()

    assert wait_until(lambda: bool(quarantine_notes(hub)), timeout=10)
    (note,) = quarantine_notes(hub)
    assert "truncated" in note["reason"] and note["source_detail"] == "BADPEER"
    kept = (hub.settings.quarantine_dir / note["file"]).read_bytes()
    assert kept[128:132] == b"DICM"
    assert encoded[: 4000 * (sent - 1)] in kept  # what arrived before the abort
    assert len(kept) < len(encoded)
    assert wait_until(lambda: not list(spool_dir(hub.settings).iterdir()), timeout=5)
    assert stored_count(hub) == 1
    assert storage_digests(hub) == before
    storescu(hub.settings.dicom_port, testdata("MR_small.dcm"))
    assert stored_count(hub) == 2


def test_free_disk_below_the_floor_is_out_of_resources(tmp_path: Path) -> None:
    settings = receiver_settings(tmp_path, storage_min_free_bytes=10**18)  # more than any disk
    with receiving(settings) as hub:
        assoc = associate(hub, *CONTEXTS)
        try:
            rsp = assoc.send_c_store(_ct())
        finally:
            assoc.release()
        assert rsp.Status == 0xA700
        assert "free disk space" in rsp.ErrorComment
        assert stored_count(hub) == 0
        assert storage_digests(hub) == {}  # nothing written, not even a temp file
        assert not list(spool_dir(hub.settings).iterdir())


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs of the test's own (needs the right to mount; skipped without it)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def _free(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def test_full_disk_while_receiving_is_out_of_resources(tmp_path: Path, small_disk: Path) -> None:
    """The data dir's disk fills up: the dataset is dropped, 0xA700, no file is left behind."""
    index = f"sqlite:///{tmp_path / 'index.sqlite'}"  # the index elsewhere: only files are hit
    settings = receiver_settings(small_disk, database_url=index)
    with receiving(settings) as hub:
        filler = small_disk / "filler"
        filler.write_bytes(b"\0" * (_free(small_disk) - 16 * 1024))  # 16 KB left, CT is 39 KB
        ds = _ct()
        assoc = associate(hub, *CONTEXTS)
        try:
            rsp = assoc.send_c_store(ds)
            assert rsp.Status == 0xA700 and "free disk space" in rsp.ErrorComment
            filler.unlink()
            assert assoc.send_c_store(ds).Status == 0x0000  # the same association goes on
        finally:
            assoc.release()
        assert stored_count(hub) == 1
        assert not list(spool_dir(hub.settings).iterdir())
        assert quarantine_notes(hub) == []


def test_dataset_over_the_size_limit_is_out_of_resources(tmp_path: Path) -> None:
    settings = receiver_settings(tmp_path, ingest_max_bytes=8192)
    with receiving(settings) as hub:
        assoc = associate(hub, *CONTEXTS)
        try:
            too_big = assoc.send_c_store(_ct())
            fits = assoc.send_c_store(_ct(PixelData=None))
        finally:
            assoc.release()
        assert too_big.Status == 0xA700 and "exceeds the limit" in too_big.ErrorComment
        assert fits.Status == 0x0000
        assert stored_count(hub) == 1
        (note,) = quarantine_notes(hub)
        assert "exceeds the limit" in note["reason"] and note["file"] is None


def test_dataset_over_the_size_limit_is_dropped_as_it_arrives(
    tmp_path: Path, small_disk: Path
) -> None:
    """An 8 MB dataset, limit 64 KB, 4 MB disk: refused for its size before the disk fills."""
    index = f"sqlite:///{tmp_path / 'index.sqlite'}"
    settings = receiver_settings(
        small_disk, database_url=index, ingest_max_bytes=64 * 1024, storage_min_free_bytes=0
    )
    with receiving(settings) as hub:
        assoc = associate(hub, *CONTEXTS)
        try:
            rsp = assoc.send_c_store(_ct(PixelData=b"\0" * (8 * 1024**2)))
            fits = assoc.send_c_store(_ct())  # the same association goes on
        finally:
            assoc.release()
        assert rsp.Status == 0xA700, rsp
        assert "exceeds the limit of 65536 bytes" in rsp.ErrorComment
        assert fits.Status == 0x0000
        assert stored_count(hub) == 1
        (note,) = quarantine_notes(hub)
        assert "exceeds the limit" in note["reason"] and note["file"] is None
        assert not list(spool_dir(hub.settings).iterdir())


def test_max_pdu_is_offered_and_large_datasets_arrive_in_pieces(tmp_path: Path) -> None:
    settings = receiver_settings(tmp_path, dicom_max_pdu=4096)
    with receiving(settings) as hub:
        assoc = associate(hub, *CONTEXTS)
        try:
            assert assoc.acceptor.maximum_length == 4096
            assert assoc.send_c_store(_ct()).Status == 0x0000  # about 40 KB: ten PDUs or more
        finally:
            assoc.release()
        storescu(hub.settings.dicom_port, testdata("MR_small.dcm"))  # dcmtk keeps to it too
        assert stored_count(hub) == 2


def test_pdu_over_the_maximum_drops_the_association(tmp_path: Path) -> None:
    settings = receiver_settings(tmp_path, dicom_max_pdu=4096)
    with receiving(settings) as hub:
        ds = _ct()
        assoc = associate(hub, *CONTEXTS)
        context = assoc.accepted_contexts[0].context_id
        send_partial_store(
            assoc, context, CTImageStorage, ds.SOPInstanceUID, _bytes(ds), fragment=16384, share=1
        )
        assert wait_until(lambda: not assoc.is_established, timeout=10)
        assert stored_count(hub) == 0
        assert wait_until(lambda: bool(quarantine_notes(hub)), timeout=10)
        (note,) = quarantine_notes(hub)
        assert "truncated" in note["reason"]
        storescu(hub.settings.dicom_port, testdata("CT_small.dcm"))  # the server goes on
        assert stored_count(hub) == 1


def test_idle_association_is_dropped(tmp_path: Path) -> None:
    settings = receiver_settings(tmp_path, dicom_idle_timeout=1.0)
    with receiving(settings) as hub:
        assoc = associate(hub, *CONTEXTS)
        assert wait_until(lambda: not assoc.is_established, timeout=10)
        assert assoc.is_aborted
        storescu(hub.settings.dicom_port, testdata("CT_small.dcm"))  # a new one is served
        assert stored_count(hub) == 1


def test_silent_connection_is_dropped_after_the_idle_timeout(tmp_path: Path) -> None:
    """A connection that never asks for an association is closed like an idle one."""
    settings = receiver_settings(tmp_path, dicom_idle_timeout=1.0)
    with receiving(settings) as hub:
        with socket.create_connection(("127.0.0.1", hub.settings.dicom_port)) as sock:
            sock.settimeout(15)
            started = time.monotonic()
            assert sock.recv(4096) == b""  # the receiver closed the connection
            assert time.monotonic() - started < 5  # not pynetdicom's 30 s ACSE timeout
        storescu(hub.settings.dicom_port, testdata("CT_small.dcm"))
        assert stored_count(hub) == 1


def _try_associate(hub: Hub) -> Association:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    return ae.associate("127.0.0.1", hub.settings.dicom_port, ae_title=hub.settings.dicom_aet)


def test_associations_beyond_the_maximum_are_rejected(tmp_path: Path) -> None:
    """HUB_DICOM_MAX_ASSOCIATIONS open: the next one gets A-ASSOCIATE-RJ until one ends."""
    settings = receiver_settings(tmp_path, dicom_max_associations=2)
    with receiving(settings) as hub:
        opened = [associate(hub, *CONTEXTS) for _ in range(2)]
        refused = _try_associate(hub)
        assert refused.is_rejected
        # Rejected transient, by the service provider (presentation): local limit exceeded.
        rejection = refused.acceptor.primitive
        assert (rejection.result, rejection.result_source, rejection.diagnostic) == (2, 3, 2)
        opened[0].release()
        assert wait_until(lambda: _served(_try_associate(hub)), timeout=10)
        opened[1].release()


def _served(assoc: Association) -> bool:
    """Whether the association was accepted (released again at once)."""
    if not assoc.is_established:
        return False
    assoc.release()
    return True


def test_closed_connections_do_not_hold_association_slots(tmp_path: Path) -> None:
    """Port checks that connect and close at once leave every slot to real associations."""
    settings = receiver_settings(tmp_path, dicom_max_associations=2)
    with receiving(settings) as hub:
        for _ in range(3):
            socket.create_connection(("127.0.0.1", hub.settings.dicom_port)).close()
        # Without the hub's handling they would hold their slots for the 30 s ACSE timeout.
        assert wait_until(lambda: _served(_try_associate(hub)), timeout=5)


def test_peer_stalling_inside_a_pdu_is_dropped(tmp_path: Path) -> None:
    """A PDU header announcing bytes that never come does not hold the receiver forever."""
    settings = receiver_settings(tmp_path, dicom_idle_timeout=1.0)
    with receiving(settings) as hub:
        with socket.create_connection(("127.0.0.1", hub.settings.dicom_port)) as sock:
            sock.sendall(b"\x01\x00\x00\x00\x01\x00" + b"\x00\x01")  # A-ASSOCIATE-RQ, 256 B
            sock.settimeout(15)
            started = time.monotonic()
            assert sock.recv(4096) == b""  # the receiver closed the connection
            assert time.monotonic() - started < 10
        storescu(hub.settings.dicom_port, testdata("CT_small.dcm"))
        assert stored_count(hub) == 1


def test_peer_stalling_mid_dataset_is_dropped_and_quarantined(tmp_path: Path) -> None:
    settings = receiver_settings(tmp_path, dicom_idle_timeout=1.0)
    with receiving(settings) as hub:
        ds = _ct()
        assoc = associate(hub, *CONTEXTS)
        context = assoc.accepted_contexts[0].context_id
        send_partial_store(assoc, context, CTImageStorage, ds.SOPInstanceUID, _bytes(ds))
        assert wait_until(lambda: bool(quarantine_notes(hub)), timeout=15)
        (note,) = quarantine_notes(hub)
        assert "truncated" in note["reason"]
        assert wait_until(lambda: not assoc.is_established, timeout=10)
        assert stored_count(hub) == 0
        assert not list(spool_dir(hub.settings).iterdir())

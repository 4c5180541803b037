"""Helpers for receiver tests: a receiver on loopback, its stored files, raw DIMSE sends."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from sqlalchemy import func, select

from dicom_scp.server import start
from imaging_hub.config import Settings
from imaging_hub.db.migrate import upgrade
from imaging_hub.db.models import StoredFile
from imaging_hub.hub import Hub
from tests.support import free_port


def receiver_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings of a receiver on 127.0.0.1, a free port and a temp data dir."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "hub-data",
        "dicom_host": "127.0.0.1",
        "dicom_port": free_port(),
        "storage_min_free_bytes": 0,
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def receiving(settings: Settings) -> Iterator[Hub]:
    """Run the receiver with settings for the block; stop it afterwards."""
    upgrade(settings.resolved_database_url)
    hub = Hub.open(settings)
    saved_tempdir = tempfile.tempdir
    server = start(hub, block=False)
    assert server is not None
    try:
        yield hub
    finally:
        server.shutdown()
        tempfile.tempdir = saved_tempdir
        hub.close()


def stored_count(hub: Hub) -> int:
    """How many stored-file rows the index has."""
    with hub.db.read() as s:
        return s.execute(select(func.count(StoredFile.id))).scalar_one()


def storage_digests(hub: Hub) -> dict[str, str]:
    """SHA-256 of every file under the storage folder, by relative path (temp files too)."""
    root = hub.settings.storage_dir
    if not root.exists():
        return {}
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def quarantine_notes(hub: Hub) -> list[dict[str, Any]]:
    """The quarantine notes (JSON), oldest first."""
    folder = hub.settings.quarantine_dir
    if not folder.exists():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def associate(hub: Hub, *contexts: tuple[str, str], aet: str = "BADPEER") -> Association:
    """An established pynetdicom association with the receiver for (SOP class, syntax) pairs."""
    ae = AE(ae_title=aet)
    for abstract, syntax in contexts:
        ae.add_requested_context(abstract, syntax)
    assoc = ae.associate("127.0.0.1", hub.settings.dicom_port, ae_title=hub.settings.dicom_aet)
    assert assoc.is_established
    return assoc


def _store_message(
    sop_class: str, sop_instance: str, encoded: bytes, message_id: int
) -> C_STORE_RQ:
    req = C_STORE()
    req.MessageID = message_id
    req.AffectedSOPClassUID = sop_class
    req.AffectedSOPInstanceUID = sop_instance
    req.Priority = 2
    req.DataSet = BytesIO(encoded)
    msg = C_STORE_RQ()
    msg.primitive_to_message(req)
    return msg


def send_raw_store(
    assoc: Association,
    context_id: int,
    sop_class: str,
    sop_instance: str,
    encoded: bytes,
    *,
    message_id: int = 1,
) -> Dataset:
    """Send a C-STORE-RQ whose command and dataset bytes are exactly as given; return the RSP.

    pynetdicom's send_c_store derives the command from the dataset, so the bad combinations a
    broken modality sends (dataset and command disagreeing, garbage bytes) are built here.
    """
    msg = _store_message(sop_class, sop_instance, encoded, message_id)
    # Pause the association's reactor, as pynetdicom's own senders do, so it leaves the
    # response to this thread.
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)
    try:
        for pdata in msg.encode_msg(context_id, assoc.acceptor.maximum_length or 16382):
            assoc.dul.send_pdu(pdata)
        _, rsp = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    assert rsp is not None, "no C-STORE-RSP"
    status = Dataset()
    status.Status = rsp.Status
    comment = getattr(rsp, "ErrorComment", None)
    if comment:
        status.ErrorComment = comment
    return status


def send_partial_store(
    assoc: Association,
    context_id: int,
    sop_class: str,
    sop_instance: str,
    encoded: bytes,
    *,
    fragment: int = 4096,
    share: float = 0.5,
) -> int:
    """Send the command and a share of a C-STORE's P-DATA PDUs; return how many were sent."""
    msg = _store_message(sop_class, sop_instance, encoded, 1)
    pdatas = list(msg.encode_msg(context_id, fragment))
    count = int(len(pdatas) * share)
    assert 1 < count <= len(pdatas), "the dataset is too small to be cut there"
    for pdata in pdatas[:count]:
        assoc.dul.send_pdu(pdata)
    return count

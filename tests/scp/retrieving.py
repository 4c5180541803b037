"""Shared setup of the C-MOVE and C-GET tests: a hub with known nodes, a dcmtk storescp, helpers."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import select

from dicom_scp.server import start
from imaging_hub.config import DicomNode, NodeService, Settings
from imaging_hub.db.migrate import upgrade
from imaging_hub.db.models import StoredFile, StoredFileState
from imaging_hub.hub import Hub
from imaging_hub.index import index_stored_file
from tests.support import dataset_bytes, free_port, loopback_env, storescu, testdata, wait_for_port

#: pydicom's test files in six transfer syntaxes (each with a SOP Instance UID of its own), and
#: the storescu option that proposes that syntax.
SYNTAX_FILES = {
    "1.2.840.10008.1.2.1": ("CT_small.dcm", None),  # Explicit VR Little Endian
    "1.2.840.10008.1.2": ("MR_small_implicit.dcm", "-xi"),  # Implicit VR Little Endian
    "1.2.840.10008.1.2.4.50": ("SC_rgb_jpeg_dcmtk.dcm", "-xy"),  # JPEG Baseline
    "1.2.840.10008.1.2.4.91": ("JPEG2000.dcm", "-xw"),  # JPEG 2000
    "1.2.840.10008.1.2.5": ("SC_rgb_rle.dcm", "-xr"),  # RLE Lossless
    "1.2.840.10008.1.2.1.99": ("image_dfl.dcm", "-xd"),  # Deflated Explicit VR Little Endian
}

RETRIEVER = "KNOWN"
NODES = {
    "KNOWN": [NodeService.STORE, NodeService.QUERY, NodeService.RETRIEVE],
    "VIEWER": [NodeService.QUERY],  # may query, not retrieve
}


@dataclass
class RetrieveHub:
    """A running hub, the port of its move destination (DEST) and of one that is down (DOWN)."""

    hub: Hub
    port: int
    dest_port: int
    down_port: int

    def stored(self) -> dict[str, Path]:
        """Each indexed instance's stored file, by SOP Instance UID."""
        with self.hub.db.read() as s:
            rows = s.execute(
                select(StoredFile.sop_instance_uid, StoredFile.path).where(
                    StoredFile.state == StoredFileState.INDEXED
                )
            ).all()
        return {uid: self.hub.store.local_path(path) for uid, path in rows}


def index_received(hub: Hub) -> None:
    """Index every file the receiver stored (what the workers would do)."""
    with hub.db.read() as s:
        ids = s.scalars(
            select(StoredFile.id).where(StoredFile.state == StoredFileState.RECEIVED)
        ).all()
    for stored_file_id in ids:
        index_stored_file(hub, stored_file_id)


@pytest.fixture
def retrieve_hub(tmp_path: Path, db_url: str) -> Iterator[RetrieveHub]:
    """A hub listening on 127.0.0.1 with KNOWN, VIEWER and the move destinations DEST, DOWN."""
    dest_port, down_port = free_port(), free_port()
    nodes = [DicomNode(aet=aet, host="127.0.0.1", services=s) for aet, s in NODES.items()]
    nodes += [
        DicomNode(aet=aet, host="127.0.0.1", port=port, services=[NodeService.MOVE_DESTINATION])
        for aet, port in (("DEST", dest_port), ("DOWN", down_port))
    ]
    settings = Settings(
        data_dir=tmp_path / "hub-data",
        database_url=db_url,
        dicom_host="127.0.0.1",
        dicom_port=free_port(),
        storage_min_free_bytes=0,
        dicom_nodes=nodes,
    )
    upgrade(settings.resolved_database_url)
    hub = Hub.open(settings)
    saved_tempdir = tempfile.tempdir
    server = start(hub, block=False)
    assert server is not None
    try:
        yield RetrieveHub(hub, settings.dicom_port, dest_port, down_port)
    finally:
        server.shutdown()
        tempfile.tempdir = saved_tempdir
        hub.close()


def send_syntax_files(running: RetrieveHub) -> dict[str, str]:
    """Store the six test files with storescu and index them; their SOP Instance UIDs by syntax."""
    for name, option in SYNTAX_FILES.values():
        storescu(running.port, testdata(name), aet=RETRIEVER, extra=[option] if option else None)
    index_received(running.hub)
    return {
        syntax: str(dcmread(testdata(name), stop_before_pixels=True).SOPInstanceUID)
        for syntax, (name, _) in SYNTAX_FILES.items()
    }


@pytest.fixture
def storescp(retrieve_hub: RetrieveHub, tmp_path: Path) -> Iterator[Path]:
    """dcmtk's storescp as DEST, writing what it receives bit for bit; its output folder.

    dcmtk 3.6.7's storescp cannot be told an address to listen on: ``loopback_env`` keeps it
    on 127.0.0.1.
    """
    out = tmp_path / "received"
    out.mkdir()
    proc = subprocess.Popen(
        ["storescp", "+B", "+xa", "-aet", "DEST", "-od", str(out), str(retrieve_hub.dest_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=loopback_env(),
    )
    try:
        wait_for_port(retrieve_hub.dest_port)
        yield out
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def received(out: Path) -> dict[str, bytes]:
    """The datasets a dcmtk tool wrote to out (file meta aside), by SOP Instance UID."""
    found = {}
    for path in out.iterdir():
        if path.is_file():
            uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            found[uid] = dataset_bytes(path)
    return found


def identifier(level: str, **keys: object) -> Dataset:
    """A retrieve identifier."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def counts(rsp: Dataset) -> tuple[int | None, int, int, int]:
    """(remaining, completed, failed, warning) of a response."""
    return (
        rsp.get("NumberOfRemainingSuboperations"),
        int(rsp.NumberOfCompletedSuboperations),
        int(rsp.NumberOfFailedSuboperations),
        int(rsp.NumberOfWarningSuboperations),
    )


def failed_list(rsp: Dataset) -> list[str]:
    """The Failed SOP Instance UID List of a response's identifier."""
    value = rsp.ident.FailedSOPInstanceUIDList
    return [value] if isinstance(value, str) else list(value)

"""Who may talk to the hub: known nodes (AE title, host, services) and the unknown-AE policy."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelFind
from sqlalchemy import func, select

from dicom_scp.access import Access
from dicom_scp.server import start
from imaging_hub.config import DicomNode, NodeService, Settings, UnknownAetPolicy
from imaging_hub.db.migrate import upgrade
from imaging_hub.db.models import StoredFile
from imaging_hub.hub import Hub
from tests.support import free_port, storescu, testdata

pytestmark = pytest.mark.dcmtk

NODES = [
    DicomNode(aet="KNOWN", host="127.0.0.1"),
    DicomNode(aet="FAR_AWAY", host="192.0.2.10"),  # TEST-NET-1: never this test's address
    DicomNode(aet="VIEWER", services=[NodeService.QUERY]),
    DicomNode(aet="LOCALNAME", host="localhost"),
]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[UnknownAetPolicy], Hub]]:
    """Start a hub with NODES and the given unknown-AE policy (stopped after the test)."""
    running: list[tuple[Hub, object]] = []
    saved_tempdir = tempfile.tempdir

    def _start(policy: UnknownAetPolicy) -> Hub:
        settings = Settings(
            data_dir=tmp_path / "hub-data",
            dicom_host="127.0.0.1",
            dicom_port=free_port(),
            storage_min_free_bytes=0,
            dicom_unknown_aets=policy,
            dicom_nodes=NODES,
        )
        upgrade(settings.resolved_database_url)
        hub = Hub.open(settings)
        running.append((hub, start(hub, block=False)))
        return hub

    try:
        yield _start
    finally:
        for hub, server in running:
            server.shutdown()  # type: ignore[attr-defined]
            hub.close()
        tempfile.tempdir = saved_tempdir


def _stored(hub: Hub) -> int:
    with hub.db.read() as s:
        return s.execute(select(func.count(StoredFile.id))).scalar_one()


def _store(hub: Hub, aet: str) -> int:
    ae = AE(ae_title=aet)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", hub.settings.dicom_port, ae_title="IMAGING_HUB")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(dcmread(testdata("CT_small.dcm"))).Status)
    finally:
        assoc.release()


def _find(hub: Hub, aet: str) -> int:
    """The final C-FIND status of a study-level query by aet."""
    model = StudyRootQueryRetrieveInformationModelFind
    ae = AE(ae_title=aet)
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", hub.settings.dicom_port, ae_title="IMAGING_HUB")
    assert assoc.is_established
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    try:
        return int(list(assoc.send_c_find(ds, model))[-1][0].Status)
    finally:
        assoc.release()


def test_unknown_aet_may_echo_and_store_but_not_query(serve: Callable[..., Hub]) -> None:
    hub = serve(UnknownAetPolicy.STORE)
    port = str(hub.settings.dicom_port)
    echo = subprocess.run(["echoscu", "-aet", "STRANGER", "-aec", "IMAGING_HUB", "127.0.0.1", port])
    assert echo.returncode == 0
    storescu(hub.settings.dicom_port, testdata("CT_small.dcm"), aet="STRANGER")
    assert _stored(hub) == 1
    assert _find(hub, "STRANGER") == 0x0124


def test_all_policy_lets_unknown_aets_query(serve: Callable[..., Hub]) -> None:
    hub = serve(UnknownAetPolicy.ALL)
    assert _store(hub, "STRANGER") == 0x0000
    assert _find(hub, "STRANGER") == 0x0000


def test_known_node_from_another_host_is_rejected(serve: Callable[..., Hub]) -> None:
    hub = serve(UnknownAetPolicy.ALL)  # even a permissive hub checks a known node's host
    ae = AE(ae_title="FAR_AWAY")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", hub.settings.dicom_port, ae_title="IMAGING_HUB")
    assert assoc.is_rejected
    with pytest.raises(AssertionError):
        storescu(hub.settings.dicom_port, testdata("CT_small.dcm"), aet="FAR_AWAY")
    assert _stored(hub) == 0


def test_known_node_from_its_host_is_accepted(serve: Callable[..., Hub]) -> None:
    hub = serve(UnknownAetPolicy.REFUSE)
    assert _store(hub, "KNOWN") == 0x0000
    assert _store(hub, "LOCALNAME") == 0x0000  # a host name is resolved
    assert _find(hub, "KNOWN") == 0x0000


def test_node_without_store_service_cannot_store(serve: Callable[..., Hub]) -> None:
    hub = serve(UnknownAetPolicy.STORE)
    assert _store(hub, "VIEWER") == 0x0124
    assert _stored(hub) == 0
    assert _find(hub, "VIEWER") == 0x0000


def test_refuse_policy_rejects_unknown_aets(serve: Callable[..., Hub]) -> None:
    hub = serve(UnknownAetPolicy.REFUSE)
    ae = AE(ae_title="STRANGER")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", hub.settings.dicom_port, ae_title="IMAGING_HUB")
    assert assoc.is_rejected


@pytest.mark.parametrize(
    ("policy", "aet", "address", "service", "allowed"),
    [
        (UnknownAetPolicy.STORE, "STRANGER", "10.0.0.1", NodeService.STORE, True),
        (UnknownAetPolicy.STORE, "STRANGER", "10.0.0.1", NodeService.QUERY, False),
        (UnknownAetPolicy.STORE, "STRANGER", "10.0.0.1", NodeService.RETRIEVE, False),
        (UnknownAetPolicy.REFUSE, "STRANGER", "10.0.0.1", NodeService.STORE, False),
        (UnknownAetPolicy.ALL, "STRANGER", "10.0.0.1", NodeService.RETRIEVE, True),
        (UnknownAetPolicy.ALL, "KNOWN", "10.0.0.1", NodeService.STORE, False),  # wrong host
        (UnknownAetPolicy.STORE, "KNOWN", "127.0.0.1", NodeService.RETRIEVE, True),
        (UnknownAetPolicy.STORE, "VIEWER", "10.0.0.1", NodeService.STORE, False),
        (UnknownAetPolicy.STORE, "VIEWER", "10.0.0.1", NodeService.QUERY, True),
        (UnknownAetPolicy.STORE, "KNOWN", "127.0.0.1", NodeService.MOVE_DESTINATION, False),
    ],
)
def test_access_rules(
    tmp_path: Path,
    policy: UnknownAetPolicy,
    aet: str,
    address: str,
    service: NodeService,
    allowed: bool,
) -> None:
    access = Access(Settings(data_dir=tmp_path, dicom_unknown_aets=policy, dicom_nodes=NODES))
    assert access.may(aet, address, service) is allowed


def test_admits(tmp_path: Path) -> None:
    access = Access(Settings(data_dir=tmp_path, dicom_nodes=NODES))
    assert access.admits("KNOWN", "127.0.0.1")
    assert not access.admits("FAR_AWAY", "127.0.0.1")
    assert access.admits("VIEWER", "203.0.113.5")  # no host configured: from anywhere
    assert access.admits("STRANGER", "203.0.113.5")

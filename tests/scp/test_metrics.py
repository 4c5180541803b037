"""Receiver observability: /metrics counts across processes, and one log line per association."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
from sqlalchemy import func, select

from dicom_scp.server import release_spool, start
from imaging_hub.db.models import StoredFile
from imaging_hub.hub import Hub
from imaging_hub.metrics import ReceiverMetrics, metrics_dir, read_totals, receiving
from tests.support import free_port, make_instances, storescu, testdata, wait_until
from viewer_api.app import create_app

pytestmark = pytest.mark.dcmtk


@pytest.fixture
def receiver(hub: Hub) -> Iterator[Hub]:
    """The receiver on 127.0.0.1 (free port) in this process, on the parametrized index."""
    hub.settings.dicom_host, hub.settings.dicom_port = "127.0.0.1", free_port()
    saved_tempdir = tempfile.tempdir
    server = start(hub, block=False)
    assert server is not None
    try:
        yield hub
    finally:
        server.shutdown()
        tempfile.tempdir = saved_tempdir
        release_spool(hub.settings)


@pytest.fixture
def api(receiver: Hub) -> Iterator[TestClient]:
    """The HTTP app on the receiver's data dir, without a token (/metrics is public)."""
    with TestClient(create_app(receiver.settings)) as client:
        yield client


def _metrics(api: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics, parsed: (sample name, labels) -> value."""
    response = api.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def _value(api: TestClient, name: str, **labels: str) -> float | None:
    return _metrics(api).get((name, tuple(sorted(labels.items()))))


def _bad_instance() -> object:
    """A CT dataset whose SOP Instance UID is malformed: the receiver answers 0xC000."""
    ds = dcmread(testdata("CT_small.dcm"))
    ds.SOPInstanceUID = "1.2.evil/../x"
    return ds


def test_metrics_count_instances_bytes_and_failures(
    receiver: Hub, api: TestClient, tmp_path: Path
) -> None:
    port = receiver.settings.dicom_port
    files = make_instances(tmp_path / "in", 3, patient_name="Secret^Patient")
    with structlog.testing.capture_logs() as logs:
        storescu(port, *files)
        ae = AE(ae_title="PYNETDICOM")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", port, ae_title="IMAGING_HUB")
        assert assoc.is_established
        assert int(assoc.send_c_store(_bad_instance()).Status) == 0xC000
        assoc.release()
        assert wait_until(
            lambda: sum(e["event"] == "association_ended" for e in logs) == 2, timeout=5
        )

    with receiver.db.read() as s:
        stored_bytes = s.execute(select(func.sum(StoredFile.size))).scalar_one()
    assert wait_until(lambda: _value(api, "hub_dicom_received_instances_total") == 3, timeout=5)
    assert _value(api, "hub_dicom_received_bytes_total") == stored_bytes
    assert _value(api, "hub_dicom_store_failures_total", reason="cannot_understand") == 1
    assert _value(api, "hub_dicom_associations_total") == 2
    assert _value(api, "hub_dicom_active_associations") == 0

    # One line per association: who, from where, which process, what; no patient data.
    ended = [e for e in logs if e["event"] == "association_ended"]
    by_aet = {e["calling_aet"]: e for e in ended}
    assert set(by_aet) == {"STORESCU", "PYNETDICOM"}
    good, bad = by_aet["STORESCU"], by_aet["PYNETDICOM"]
    assert (good["instances"], good["bytes"], good["failures"]) == (3, stored_bytes, 0)
    assert (bad["instances"], bad["failures"]) == (0, 1)
    assert bad["failure_reasons"] == {"cannot_understand": 1}
    for line in ended:
        assert line["pid"] == os.getpid() and line["outcome"] == "released"
        assert line["peer"].startswith("127.0.0.1:") and line["called_aet"] == "IMAGING_HUB"
        assert line["duration_s"] >= 0
    everything = repr(logs)
    assert "Secret" not in everything and "PAT-1" not in everything


def test_active_associations_gauge_follows_open_associations(
    receiver: Hub, api: TestClient
) -> None:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    assocs = [
        ae.associate("127.0.0.1", receiver.settings.dicom_port, ae_title="IMAGING_HUB")
        for _ in range(2)
    ]
    try:
        assert all(a.is_established for a in assocs)
        assert wait_until(lambda: _value(api, "hub_dicom_active_associations") == 2, timeout=5)
    finally:
        for assoc in assocs:
            assoc.release()
    assert wait_until(lambda: _value(api, "hub_dicom_active_associations") == 0, timeout=5)
    assert _value(api, "hub_dicom_associations_total") == 2


def _snapshot(directory: Path, name: str, **values: object) -> None:
    body = {"instances": 0, "bytes": 0, "associations": 0, "failures": {}, "active": 0}
    (directory / f"{name}.json").write_text(json.dumps({**body, **values}))


def test_totals_sum_processes_and_hosts_and_drop_dead_gauges(tmp_path: Path) -> None:
    """Counters of every process ever run are summed; gauges only of live processes."""
    directory = metrics_dir(tmp_path)
    mine = ReceiverMetrics(directory)  # this process, on this host
    mine.association_started()
    mine.stored(100)
    mine.failed("out_of_resources")
    mine.flush()
    host, now = socket.gethostname(), time.time()
    # A receiver of this host that died (pid above pid_max): its gauge no longer counts.
    _snapshot(directory, f"{host}-999999", host=host, pid=999999, updated=now,
              instances=5, bytes=500, active=3, failures={"out_of_resources": 2})  # fmt: skip
    # A live receiver on another host sharing the data dir, and one that stopped writing.
    _snapshot(directory, "other-1", host="other", pid=1, updated=now, instances=7, active=1)
    _snapshot(directory, "other-2", host="other", pid=2, updated=now - 3600, instances=1, active=4)
    (directory / "garbage.json").write_text("{not json")

    totals = read_totals(directory)
    assert (totals.instances, totals.bytes) == (1 + 5 + 7 + 1, 100 + 500)
    assert totals.failures == {"out_of_resources": 3}
    assert totals.active == 1 + 1  # this process and the live remote one

    mine.close()  # a clean stop: its counters stay, its gauge goes
    totals = read_totals(directory)
    assert totals.instances == 14 and totals.active == 1


def test_receiving_means_a_live_receiver_of_this_host_has_an_association_open(
    tmp_path: Path,
) -> None:
    directory = metrics_dir(tmp_path)
    mine = ReceiverMetrics(directory)
    assert not receiving(directory)
    host, now = socket.gethostname(), time.time()
    # Busy, but on another host (its own workers yield to it), or dead on this host.
    _snapshot(directory, "other-1", host="other", pid=1, updated=now, active=2)
    _snapshot(directory, f"{host}-999999", host=host, pid=999999, updated=now, active=1)
    assert not receiving(directory)

    mine.association_started()  # written at once, without waiting for a flusher
    assert receiving(directory)
    mine.association_ended()
    assert not receiving(directory)


def test_snapshots_written_by_many_threads_at_once_stay_whole(tmp_path: Path) -> None:
    """Associations start and end in threads of their own, each writing the snapshot."""
    directory = metrics_dir(tmp_path)
    metrics = ReceiverMetrics(directory)

    def one_association() -> None:
        for _ in range(100):
            metrics.association_started()
            metrics.association_ended()

    threads = [threading.Thread(target=one_association) for _ in range(8)]
    for t in threads:
        t.start()
    torn = 0
    while any(t.is_alive() for t in threads):
        for snapshot in directory.glob("*.json"):
            try:
                json.loads(snapshot.read_text())
            except ValueError:
                torn += 1
    for t in threads:
        t.join()
    assert torn == 0
    (snapshot,) = directory.glob("*.json")
    data = json.loads(snapshot.read_text())
    assert (data["associations"], data["active"]) == (800, 0)  # the newest one, whole

"""Ingest: durable store + job in one transaction, idempotence, duplicates, bad input."""

import json
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from imaging_hub.config import DuplicatePolicy
from imaging_hub.db.models import Job, JobState, StoredFile
from imaging_hub.errors import DuplicateRejected, InvalidDicom, StorageFull, TooLarge
from imaging_hub.hub import Hub
from imaging_hub.ingest import IngestStatus, store_instance
from tests.support import testdata


def _counts(hub: Hub) -> tuple[int, int]:
    with hub.db.read() as s:
        files = s.execute(select(func.count(StoredFile.id))).scalar_one()
        jobs = s.execute(select(func.count(Job.id))).scalar_one()
    return files, jobs


def _quarantined(hub: Hub) -> list[Path]:
    q = hub.settings.quarantine_dir
    return sorted(q.glob("*")) if q.exists() else []


def test_store_writes_file_and_job_together(hub: Hub) -> None:
    src = testdata("CT_small.dcm")
    result = store_instance(hub, src, source="test")
    assert result.status == IngestStatus.STORED
    with hub.db.read() as s:
        row = s.get(StoredFile, result.stored_file_id)
        job = s.execute(select(Job)).scalar_one()
    assert row is not None and row.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert job.kind == "index" and job.state == JobState.QUEUED
    assert job.payload == {"stored_file_id": row.id}
    assert hub.store.local_path(row.path).read_bytes() == src.read_bytes()


def test_same_bytes_twice_is_a_noop_success(hub: Hub) -> None:
    src = testdata("CT_small.dcm")
    first = store_instance(hub, src, source="test")
    second = store_instance(hub, src, source="test")
    assert second.status == IngestStatus.DUPLICATE
    assert second.stored_file_id == first.stored_file_id
    assert _counts(hub) == (1, 1)


def _variant(tmp_path: Path) -> Path:
    ds = dcmread(testdata("CT_small.dcm"))
    ds.StudyDescription = "corrected description"
    path = tmp_path / "variant.dcm"
    ds.save_as(path)
    return path


def test_different_bytes_same_uid_keeps_both_versions(hub: Hub, tmp_path: Path) -> None:
    first = store_instance(hub, testdata("CT_small.dcm"), source="test")
    second = store_instance(hub, _variant(tmp_path), source="test")
    assert second.status == IngestStatus.NEW_VERSION
    assert second.stored_file_id != first.stored_file_id
    assert _counts(hub) == (2, 2)


def test_reject_policy_refuses_a_new_version(hub: Hub, tmp_path: Path) -> None:
    hub.settings.ingest_duplicates = DuplicatePolicy.REJECT
    store_instance(hub, testdata("CT_small.dcm"), source="test")
    with pytest.raises(DuplicateRejected):
        store_instance(hub, _variant(tmp_path), source="test")
    assert _counts(hub) == (1, 1)
    assert any(p.suffix == ".dcm" for p in _quarantined(hub))


def test_garbage_is_refused_and_quarantined(hub: Hub, tmp_path: Path) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 50)
    with pytest.raises(InvalidDicom):
        store_instance(hub, bad, source="test")
    assert _counts(hub) == (0, 0)
    notes = [p for p in _quarantined(hub) if p.suffix == ".json"]
    assert len(notes) == 1
    note = json.loads(notes[0].read_text())
    assert note["reason"] and note["source"] == "test"
    assert (hub.settings.quarantine_dir / note["file"]).read_bytes() == bad.read_bytes()


def test_missing_uid_is_refused(hub: Hub, tmp_path: Path) -> None:
    ds = dcmread(testdata("CT_small.dcm"))
    del ds.SeriesInstanceUID
    path = tmp_path / "no-series.dcm"
    ds.save_as(path)
    with pytest.raises(InvalidDicom, match="SeriesInstanceUID"):
        store_instance(hub, path, source="test")
    assert _counts(hub) == (0, 0)


def test_path_like_uid_is_refused(hub: Hub, tmp_path: Path) -> None:
    ds = dcmread(testdata("CT_small.dcm"))
    ds.SOPInstanceUID = "../../../../tmp/evil"
    path = tmp_path / "evil.dcm"
    ds.save_as(path)
    with pytest.raises(InvalidDicom, match="SOPInstanceUID"):
        store_instance(hub, path, source="test")
    assert not list(hub.store.iter_keys())


def test_announced_uid_must_match_dataset(hub: Hub) -> None:
    with pytest.raises(InvalidDicom, match="does not match"):
        store_instance(
            hub, testdata("CT_small.dcm"), source="test", expected_sop_instance_uid="1.2.3"
        )
    assert _counts(hub) == (0, 0)


def test_too_large_and_disk_floor(hub: Hub) -> None:
    hub.settings.ingest_max_bytes = 1024
    with pytest.raises(TooLarge):
        store_instance(hub, testdata("CT_small.dcm"), source="test")
    hub.settings.ingest_max_bytes = 10**9
    hub.settings.storage_min_free_bytes = 10**18
    with pytest.raises(StorageFull):
        store_instance(hub, testdata("CT_small.dcm"), source="test")
    assert _counts(hub) == (0, 0)
    assert not list(hub.store.iter_keys())


def test_bad_input_leaves_stored_data_untouched(hub: Hub, tmp_path: Path) -> None:
    good = store_instance(hub, testdata("CT_small.dcm"), source="test")
    with hub.db.read() as s:
        path = hub.store.local_path(s.get(StoredFile, good.stored_file_id).path)
    before = path.read_bytes()
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not dicom at all")
    with pytest.raises(InvalidDicom):
        store_instance(hub, bad, source="test")
    assert path.read_bytes() == before
    assert _counts(hub) == (1, 1)


def test_reject_policy_holds_under_concurrent_versions(hub: Hub, tmp_path: Path) -> None:
    """Two different versions of one UID stored at once: exactly one is kept."""
    import threading

    hub.settings.ingest_duplicates = DuplicatePolicy.REJECT
    first = _variant(tmp_path)
    ds = dcmread(testdata("CT_small.dcm"))
    ds.StudyDescription = "another correction"
    second = tmp_path / "variant2.dcm"
    ds.save_as(second)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def send(path: Path) -> None:
        barrier.wait()
        try:
            store_instance(hub, path, source="test")
            outcomes.append("stored")
        except DuplicateRejected:
            outcomes.append("rejected")

    threads = [threading.Thread(target=send, args=(p,)) for p in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["rejected", "stored"]
    assert _counts(hub) == (1, 1)

"""Duplicates over real C-STORE (DESIGN invariant 3), on SQLite and PostgreSQL.

Same SOP Instance UID and same bytes: Success and nothing new. Same UID, other bytes: the
policy of ``HUB_INGEST_DUPLICATES`` (newest by default, reject, keep-first); under every policy
the stored files keep their bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import _config
from pynetdicom.sop_class import CTImageStorage
from sqlalchemy import func, select

from imaging_hub.config import DuplicatePolicy
from imaging_hub.db.models import Instance, Job, StoredFile, StoredFileState
from imaging_hub.hub import Hub
from imaging_hub.index import index_stored_file
from tests.scp.helpers import (
    associate,
    quarantine_notes,
    receiver_settings,
    receiving,
    storage_digests,
)
from tests.support import make_study, storescu

pytestmark = pytest.mark.dcmtk

Receiver = Callable[[DuplicatePolicy], AbstractContextManager[Hub]]


@pytest.fixture
def receiver(tmp_path: Path, db_url: str) -> Receiver:
    """Start a receiver on the parametrized database with a duplicate policy."""

    def make(policy: DuplicatePolicy) -> AbstractContextManager[Hub]:
        settings = receiver_settings(tmp_path, database_url=db_url, ingest_duplicates=policy)
        return receiving(settings)

    return make


@pytest.fixture
def versions(tmp_path: Path) -> tuple[Path, Path]:
    """Two files with the same SOP Instance, Series and Study UIDs and different bytes."""
    (first,) = make_study(tmp_path / "v1", SeriesDescription="AP LUMBAR")
    ds = dcmread(first)
    ds.SeriesDescription = "AP LUMBAR CORRECTED"
    second = tmp_path / "v2" / first.name
    second.parent.mkdir()
    ds.save_as(second, enforce_file_format=True)
    return first, second


@pytest.fixture
def raw_send(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """pynetdicom sends a file's dataset bytes as they are (no decode and re-encode)."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    yield


def _rows(hub: Hub) -> list[StoredFile]:
    with hub.db.read() as s:
        return list(s.execute(select(StoredFile).order_by(StoredFile.id)).scalars())


def _jobs(hub: Hub) -> int:
    with hub.db.read() as s:
        return s.execute(select(func.count(Job.id))).scalar_one()


def _send(hub: Hub, path: Path) -> tuple[int, str]:
    """C-STORE one file with pynetdicom; return the status and Error Comment."""
    assoc = associate(hub, (CTImageStorage, ExplicitVRLittleEndian), aet="MODALITY")
    try:
        rsp = assoc.send_c_store(path)
    finally:
        assoc.release()
    return int(rsp.Status), str(rsp.get("ErrorComment", ""))


def _file_sha(hub: Hub, row: StoredFile) -> str:
    return hashlib.sha256(hub.store.local_path(row.path).read_bytes()).hexdigest()


def test_same_bytes_again_is_success_and_changes_nothing(
    receiver: Receiver, versions: tuple[Path, Path]
) -> None:
    first, _ = versions
    with receiver(DuplicatePolicy.NEWEST) as hub:
        storescu(hub.settings.dicom_port, first)
        (row,) = _rows(hub)
        before, jobs = storage_digests(hub), _jobs(hub)
        storescu(hub.settings.dicom_port, first, first)  # twice more, with dcmtk
        assert [r.id for r in _rows(hub)] == [row.id]
        assert _jobs(hub) == jobs  # not even a new index job
        assert storage_digests(hub) == before
        assert quarantine_notes(hub) == []


def test_newest_keeps_both_versions_and_the_index_shows_the_last(
    receiver: Receiver, versions: tuple[Path, Path]
) -> None:
    first, second = versions
    with receiver(DuplicatePolicy.NEWEST) as hub:
        storescu(hub.settings.dicom_port, first)
        (old,) = _rows(hub)
        index_stored_file(hub, old.id)
        before = storage_digests(hub)
        storescu(hub.settings.dicom_port, second)
        old_again, new = _rows(hub)
        assert old_again.id == old.id and old_again.sha256 == old.sha256
        assert new.sop_instance_uid == old.sop_instance_uid and new.sha256 != old.sha256
        after = storage_digests(hub)
        assert {k: after[k] for k in before} == before  # the first version's file is untouched
        assert _file_sha(hub, old) == old.sha256 and _file_sha(hub, new) == new.sha256
        kept = dcmread(hub.store.local_path(new.path))
        assert kept.SeriesDescription == "AP LUMBAR CORRECTED"

        index_stored_file(hub, new.id)
        with hub.db.read() as s:
            instance = s.execute(select(Instance)).scalar_one()
            assert instance.stored_file_id == new.id
            states = dict(s.execute(select(StoredFile.id, StoredFile.state)).tuples().all())
        assert states == {old.id: StoredFileState.SUPERSEDED, new.id: StoredFileState.INDEXED}

        storescu(hub.settings.dicom_port, first)  # the old bytes again: a duplicate
        assert len(_rows(hub)) == 2
        assert quarantine_notes(hub) == []


def test_reject_refuses_other_bytes_and_quarantines_them(
    receiver: Receiver, versions: tuple[Path, Path], raw_send: None
) -> None:
    first, second = versions
    with receiver(DuplicatePolicy.REJECT) as hub:
        storescu(hub.settings.dicom_port, first)
        before = storage_digests(hub)
        status, comment = _send(hub, second)
        assert status == 0xA900
        assert "already stored with other content" in comment
        assert len(_rows(hub)) == 1
        assert storage_digests(hub) == before
        (note,) = quarantine_notes(hub)
        assert "already stored" in note["reason"] and note["source_detail"] == "MODALITY"
        kept = dcmread(hub.settings.quarantine_dir / note["file"])
        assert kept.SeriesDescription == "AP LUMBAR CORRECTED"
        with pytest.raises(AssertionError, match="storescu failed"):
            storescu(hub.settings.dicom_port, second)  # dcmtk sees the failure too
        storescu(hub.settings.dicom_port, first)  # the stored version is still a duplicate
        assert len(_rows(hub)) == 1


def test_keep_first_answers_success_and_keeps_the_stored_version(
    receiver: Receiver, versions: tuple[Path, Path]
) -> None:
    first, second = versions
    with receiver(DuplicatePolicy.KEEP_FIRST) as hub:
        storescu(hub.settings.dicom_port, first)
        (row,) = _rows(hub)
        before, jobs = storage_digests(hub), _jobs(hub)
        storescu(hub.settings.dicom_port, second)  # dcmtk: exits 0 only on Success
        assert [r.id for r in _rows(hub)] == [row.id]
        assert _jobs(hub) == jobs
        assert storage_digests(hub) == before
        (note,) = quarantine_notes(hub)
        assert "already stored" in note["reason"] and "kept the first" in note["reason"]
        assert note["source"] == "dimse"
        kept = dcmread(hub.settings.quarantine_dir / note["file"])
        assert kept.SeriesDescription == "AP LUMBAR CORRECTED"
        assert dcmread(hub.store.local_path(row.path)).SeriesDescription == "AP LUMBAR"

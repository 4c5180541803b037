"""Races in the core: the same instance received twice at once, one new patient indexed twice.

On SQLite writers serialise (BEGIN IMMEDIATE); on PostgreSQL these exercise the ON CONFLICT and
row-lock paths that keep the index free of duplicates.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import func, select

from imaging_hub.db.models import (
    IdentityLinkEvent,
    Instance,
    Job,
    PatientRecord,
    SourceIdentity,
    StoredFile,
    Study,
)
from imaging_hub.hub import Hub
from imaging_hub.index import index_stored_file
from imaging_hub.ingest import IngestStatus, store_instance
from tests.support import make_instances

ROUNDS = 5
T = TypeVar("T")


def _together(*calls: Callable[[], T]) -> list[T]:
    """Run the calls in threads released at the same moment; re-raise the first error."""
    barrier = threading.Barrier(len(calls))
    results: list[T | None] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        barrier.wait()
        try:
            results[n] = calls[n]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise errors[0]
    return [r for r in results if r is not None]


def _count(hub: Hub, model: type[object]) -> int:
    with hub.db.read() as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


def test_same_bytes_stored_twice_at_once(hub: Hub, tmp_path: Path) -> None:
    """Two associations deliver the same instance at once: one file row, one job, two successes."""
    for n in range(ROUNDS):
        (original,) = make_instances(tmp_path / f"round{n}", 1)
        copy = original.with_suffix(".copy")  # each receiver spools its own file
        shutil.copyfile(original, copy)
        results = _together(
            *(
                lambda path=path: store_instance(hub, path, source="test")
                for path in (original, copy)
            )
        )
        assert len(results) == 2
        assert {r.stored_file_id for r in results} == {results[0].stored_file_id}
        statuses = sorted(r.status for r in results)
        assert statuses in (
            [IngestStatus.DUPLICATE, IngestStatus.STORED],
            [IngestStatus.STORED, IngestStatus.STORED],
        ), statuses
    assert _count(hub, StoredFile) == ROUNDS
    assert _count(hub, Job) == ROUNDS


def test_one_new_patient_indexed_by_two_workers_at_once(hub: Hub, tmp_path: Path) -> None:
    """Two instances of a new patient's new study indexed at once: one patient, one study."""
    for n in range(ROUNDS):
        paths = make_instances(tmp_path / f"round{n}", 2, patient_id=f"RACE-{n}")
        ids = [store_instance(hub, p, source="test").stored_file_id for p in paths]
        _together(*(lambda i=i: index_stored_file(hub, i) for i in ids))
    with hub.db.read() as s:
        studies = s.execute(select(Study)).scalars().all()
        per_identity = s.execute(
            select(SourceIdentity.patient_id, func.count(Study.id))
            .join(Study, Study.source_identity_id == SourceIdentity.id)
            .group_by(SourceIdentity.patient_id)
        ).all()
    assert _count(hub, PatientRecord) == ROUNDS
    assert _count(hub, SourceIdentity) == ROUNDS
    assert _count(hub, IdentityLinkEvent) == ROUNDS
    assert _count(hub, Instance) == 2 * ROUNDS
    assert sorted(map(tuple, per_identity)) == sorted((f"RACE-{n}", 1) for n in range(ROUNDS))
    assert [(st.num_series, st.num_instances) for st in studies] == [(1, 2)] * ROUNDS

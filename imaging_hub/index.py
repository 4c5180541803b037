"""Indexing: read a stored file's header and upsert patient identity, study, series and instance.

Idempotent: indexing the same stored file twice leaves the index as after the first time.
Study-level aggregates are recomputed from the rows, never incremented. Concurrent indexing of
one study is serialised by a row lock on the study (PostgreSQL) or the write lock (SQLite).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from sqlalchemy import distinct, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from imaging_hub.db.models import (
    IdentityLinkEvent,
    Instance,
    LinkState,
    PatientRecord,
    PreviewState,
    Series,
    SourceIdentity,
    StoredFile,
    StoredFileState,
    Study,
    utcnow,
)
from imaging_hub.dicom.keys import (
    IndexKeys,
    PatientKeys,
    extract_keys,
    normalize_pn,
    normalize_text,
    sort_key,
)
from imaging_hub.errors import InvalidDicom
from imaging_hub.hub import Hub
from imaging_hub.jobs import PermanentError, enqueue

__all__ = ["index_job", "index_jobs", "index_keys", "index_stored_file", "index_stored_files"]


def _insert_ignore(
    session: Session, model: type[Any], values: dict[str, Any], keys: list[str]
) -> None:
    """INSERT … ON CONFLICT DO NOTHING on the given unique columns."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(model).values(**values).on_conflict_do_nothing(index_elements=keys))


def _source_identity(session: Session, keys: PatientKeys) -> tuple[SourceIdentity, bool]:
    """Find or create the source identity (and, for a new one, its own patient record).

    The flag tells whether this call created it.
    """
    where = (
        SourceIdentity.patient_id == keys.patient_id,
        SourceIdentity.issuer == keys.issuer,
        SourceIdentity.identity_key == keys.identity_key,
    )
    found = session.execute(select(SourceIdentity).where(*where)).scalar_one_or_none()
    if found is not None:
        return found, False
    record = PatientRecord(
        mrn=f"H{uuid.uuid4().hex[:15].upper()}",
        name=keys.name,
        name_norm=keys.name_norm,
        birth_date=keys.birth_date,
        sex=keys.sex,
    )
    session.add(record)
    session.flush()
    _insert_ignore(
        session,
        SourceIdentity,
        {
            "patient_id": keys.patient_id,
            "issuer": keys.issuer,
            "identity_key": keys.identity_key,
            "name": keys.name,
            "name_norm": keys.name_norm,
            "birth_date": keys.birth_date,
            "sex": keys.sex,
            "dicom_json": keys.dicom_json,
            "patient_record_id": record.id,
            "link_state": LinkState.NEW,
            "created_at": utcnow(),
        },
        ["patient_id", "issuer", "identity_key"],
    )
    identity = session.execute(select(SourceIdentity).where(*where)).scalar_one()
    if identity.patient_record_id != record.id:
        # Another worker created this identity first; our record is not needed.
        session.delete(record)
        return identity, False
    session.add(
        IdentityLinkEvent(
            source_identity_id=identity.id,
            patient_record_id=record.id,
            state=LinkState.NEW,
            actor="system",
            reason="first instance of this source identity",
        )
    )
    return identity, True


def _study_fields(keys: IndexKeys, identity: SourceIdentity) -> dict[str, Any]:
    """The study columns that come from an instance's header."""
    k = keys.study
    return {
        "source_identity_id": identity.id,
        "patient_record_id": identity.patient_record_id,
        "study_date": k.study_date,
        "study_time": k.study_time,
        "accession_number": k.accession_number,
        "study_id": k.study_id,
        "study_description": k.description,
        "study_description_norm": normalize_text(k.description),
        "referring_physician_name": k.referring_physician_name,
        "referring_physician_norm": normalize_pn(k.referring_physician_name),
        "dicom_json": k.dicom_json,
        "sort_key": sort_key(k.study_date, k.study_time),
    }


def _series_fields(keys: IndexKeys, study: Study) -> dict[str, Any]:
    """The series columns that come from an instance's header."""
    k = keys.series
    return {
        "study_pk": study.id,
        "modality": k.modality,
        "series_number": k.series_number,
        "series_description": k.description,
        "body_part_examined": k.body_part_examined,
        "dicom_json": k.dicom_json,
        "performed_date": k.performed_date,
        "performed_time": k.performed_time,
    }


def _study(session: Session, keys: IndexKeys, identity: SourceIdentity) -> Study:
    """Find or create the study and lock its row for the rest of the transaction."""
    uid = keys.study.study_uid
    query = select(Study).where(Study.study_uid == uid).with_for_update()
    found = session.execute(query).scalar_one_or_none()
    if found is not None:
        return found
    values = {
        "study_uid": uid,
        **_study_fields(keys, identity),
        "modalities_in_study": "",
        "num_series": 0,
        "num_instances": 0,
        "created_at": utcnow(),
        "updated_at": utcnow(),
    }
    _insert_ignore(session, Study, values, ["study_uid"])
    return session.execute(query).scalar_one()


def _series(session: Session, keys: IndexKeys, study: Study) -> Series:
    """Find or create the series."""
    uid = keys.series.series_uid
    query = select(Series).where(Series.series_uid == uid)
    found = session.execute(query).scalar_one_or_none()
    if found is not None:
        return found
    values = {"series_uid": uid, **_series_fields(keys, study), "num_instances": 0}
    _insert_ignore(session, Series, values, ["series_uid"])
    return session.execute(query).scalar_one()


def _refresh_aggregates(session: Session, study: Study, series: Series) -> None:
    """Recompute counts and ModalitiesInStudy from the rows."""
    session.flush()
    series.num_instances = session.execute(
        select(func.count(Instance.id)).where(Instance.series_pk == series.id)
    ).scalar_one()
    per_study = (
        select(func.count(distinct(Series.id)), func.count(Instance.id))
        .select_from(Series)
        .join(Instance, Instance.series_pk == Series.id)
        .where(Series.study_pk == study.id)
    )
    study.num_series, study.num_instances = session.execute(per_study).one()
    modalities = session.execute(
        select(Series.modality)
        .join(Instance, Instance.series_pk == Series.id)
        .where(Series.study_pk == study.id, Series.modality.is_not(None))
        .distinct()
    ).scalars()
    ordered = sorted(m for m in modalities if m)
    study.modalities_in_study = "\\" + "\\".join(ordered) + "\\" if ordered else ""
    study.updated_at = utcnow()


def _current_version(
    session: Session, sop_uid: str, batch: _Batch
) -> tuple[Instance | None, StoredFile | None]:
    """The instance row for a SOP Instance UID and the stored file it points at."""
    instance = batch.instances.get(sop_uid)
    if instance is None:
        # Instance rows not yet flushed are all in the batch: no need to flush them first.
        with session.no_autoflush:
            instance = session.execute(
                select(Instance).where(Instance.sop_instance_uid == sop_uid)
            ).scalar_one_or_none()
    current = session.get(StoredFile, instance.stored_file_id) if instance else None
    return instance, current


def _is_older(stored: StoredFile, current: StoredFile | None) -> bool:
    """Whether stored was received before the version the index currently shows."""
    if current is None or current.id == stored.id:
        return False
    return (stored.received_at, stored.id) < (current.received_at, current.id)


def _place_instance(
    session: Session, keys: IndexKeys, series: Series, stored: StoredFile, existing: Instance | None
) -> Instance:
    """Create the instance row, or point it at this (newest) stored file; returns it."""
    k = keys.instance
    instance = existing or Instance(sop_instance_uid=k.sop_instance_uid)
    instance.series_pk = series.id
    instance.sop_class_uid = k.sop_class_uid
    instance.instance_number = k.instance_number
    instance.number_of_frames = k.number_of_frames
    instance.rows = k.rows
    instance.columns = k.columns
    instance.stored_file_id = stored.id
    instance.dicom_json = k.dicom_json
    instance.preview_state = PreviewState.PENDING  # a render job follows in this transaction
    instance.indexed_at = utcnow()
    session.add(instance)
    stored.state = StoredFileState.INDEXED
    return instance


def _read_keys(hub: Hub, stored_file_ids: list[int]) -> dict[int, IndexKeys]:
    """Parse the stored files' headers (never their pixel data) into index keys."""
    with hub.db.read() as s:
        query = select(StoredFile.id, StoredFile.path).where(StoredFile.id.in_(stored_file_ids))
        rows = {row.id: row.path for row in s.execute(query)}
    keys = {}
    for stored_file_id in stored_file_ids:
        if stored_file_id not in rows:
            raise PermanentError(f"stored file {stored_file_id} does not exist")
        path = hub.store.local_path(rows[stored_file_id])
        try:
            keys[stored_file_id] = extract_keys(dcmread(path, stop_before_pixels=True))
        except (InvalidDicom, InvalidDicomError) as exc:
            # The stored original cannot be read: retrying will not help.
            raise PermanentError(f"stored file {stored_file_id} is unreadable: {exc}") from exc
    return keys


def index_keys(session: Session, keys: IndexKeys, stored: StoredFile, *, max_attempts: int) -> None:
    """Put a stored file's keys into the index, in the caller's write transaction.

    A newer version of an instance replaces the older one's values; an older one is marked
    superseded. The instance's render job, and the identity check of a new source identity,
    are enqueued in the same transaction.
    """
    for study, series in _place(session, keys, stored, max_attempts=max_attempts):
        _refresh_aggregates(session, study, series)


@dataclass
class _Batch:
    """Rows an indexing transaction has found or made so far, so each is looked up once."""

    identities: dict[tuple[str, str, str], SourceIdentity] = field(default_factory=dict)
    studies: dict[str, Study] = field(default_factory=dict)
    series: dict[str, Series] = field(default_factory=dict)
    #: The instance rows placed in this transaction, by SOP Instance UID (not yet flushed).
    instances: dict[str, Instance] = field(default_factory=dict)


def _place(
    session: Session,
    keys: IndexKeys,
    stored: StoredFile,
    *,
    max_attempts: int,
    batch: _Batch | None = None,
) -> list[tuple[Study, Series]]:
    """index_keys without the aggregates: returns the (study, series) pairs to recount."""
    batch = batch if batch is not None else _Batch()
    p = keys.patient
    identity_key = (p.patient_id, p.issuer, p.identity_key)
    created = False
    identity = batch.identities.get(identity_key)
    if identity is None:
        identity, created = _source_identity(session, p)
        batch.identities[identity_key] = identity
    study = batch.studies.get(keys.study.study_uid)
    if study is None:
        study = _study(session, keys, identity)  # locked: one instance of a study at a time
        batch.studies[keys.study.study_uid] = study
    if created:
        enqueue(
            session,
            "identity",
            {"source_identity_id": identity.id},
            study_uid=study.study_uid,
            max_attempts=max_attempts,
        )
    existing, current = _current_version(session, keys.instance.sop_instance_uid, batch)
    if existing is not None and current is not None and current.id == stored.id:
        return []  # indexed already (a job run again after its worker died): nothing to redo
    if _is_older(stored, current):
        stored.state = StoredFileState.SUPERSEDED
        return []
    series = batch.series.get(keys.series.series_uid)
    if series is None:
        series = batch.series[keys.series.series_uid] = _series(session, keys, study)
    if current is not None and current.id != stored.id:
        # A new version: its header is now the truth for the study and series too.
        current.state = StoredFileState.SUPERSEDED
        for name, value in _study_fields(keys, identity).items():
            setattr(study, name, value)
        for name, value in _series_fields(keys, study).items():
            setattr(series, name, value)
    previous_series = existing.series_pk if existing else None
    batch.instances[keys.instance.sop_instance_uid] = _place_instance(
        session, keys, series, stored, existing
    )
    enqueue(
        session,
        "render",
        {"sop_instance_uid": keys.instance.sop_instance_uid},
        study_uid=study.study_uid,
        max_attempts=max_attempts,
    )
    touched = [(study, series)]
    if previous_series is not None and previous_series != series.id:
        old = session.get(Series, previous_series)
        assert old is not None
        touched.append((session.get_one(Study, old.study_pk), old))
    return touched


def index_stored_file(hub: Hub, stored_file_id: int) -> None:
    """Index one stored file; a newer version of an instance replaces the older one's values."""
    index_stored_files(hub, [stored_file_id])


def index_stored_files(hub: Hub, stored_file_ids: list[int]) -> None:
    """Index several stored files in one transaction, as index_stored_file does each.

    Studies are taken in UID order, so that two batches over the same studies lock them in the
    same order (PostgreSQL); each study's and series' aggregates are recounted once.
    """
    keys = _read_keys(hub, stored_file_ids)
    order = sorted(stored_file_ids, key=lambda i: (keys[i].study.study_uid, i))
    max_attempts = hub.settings.jobs_max_attempts
    with hub.db.write() as s:
        query = select(StoredFile).where(StoredFile.id.in_(stored_file_ids))
        stored_files = {row.id: row for row in s.execute(query).scalars()}
        touched: dict[tuple[int, int], tuple[Study, Series]] = {}
        batch = _Batch()
        for stored_file_id in order:
            stored = stored_files[stored_file_id]
            placed = _place(s, keys[stored_file_id], stored, max_attempts=max_attempts, batch=batch)
            for study, series in placed:
                touched[(study.id, series.id)] = (study, series)
        for study, series in touched.values():
            _refresh_aggregates(s, study, series)


def index_job(hub: Hub, payload: dict[str, Any]) -> None:
    """Job handler for kind 'index'."""
    index_stored_file(hub, int(payload["stored_file_id"]))


def index_jobs(hub: Hub, payloads: list[dict[str, Any]]) -> None:
    """Batch handler for kind 'index': several jobs, one transaction."""
    index_stored_files(hub, [int(payload["stored_file_id"]) for payload in payloads])

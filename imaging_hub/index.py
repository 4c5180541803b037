"""Indexing: read a stored file's header and upsert patient identity, study, series and instance.

Idempotent: indexing the same stored file twice leaves the index as after the first time.
Study-level aggregates are recomputed from the rows, never incremented. Concurrent indexing of
one study is serialised by a row lock on the study (PostgreSQL) or the write lock (SQLite).
"""

from __future__ import annotations

import uuid
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
)
from imaging_hub.errors import InvalidDicom
from imaging_hub.hub import Hub
from imaging_hub.jobs import PermanentError

__all__ = ["index_job", "index_stored_file"]


def _insert_ignore(
    session: Session, model: type[Any], values: dict[str, Any], keys: list[str]
) -> None:
    """INSERT … ON CONFLICT DO NOTHING on the given unique columns."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(model).values(**values).on_conflict_do_nothing(index_elements=keys))


def _source_identity(session: Session, keys: PatientKeys) -> SourceIdentity:
    """Find or create the source identity (and, for a new one, its own patient record)."""
    where = (
        SourceIdentity.patient_id == keys.patient_id,
        SourceIdentity.issuer == keys.issuer,
        SourceIdentity.identity_key == keys.identity_key,
    )
    found = session.execute(select(SourceIdentity).where(*where)).scalar_one_or_none()
    if found is not None:
        return found
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
        return identity
    session.add(
        IdentityLinkEvent(
            source_identity_id=identity.id,
            patient_record_id=record.id,
            state=LinkState.NEW,
            actor="system",
            reason="first instance of this source identity",
        )
    )
    return identity


def _study(session: Session, keys: IndexKeys, identity: SourceIdentity) -> Study:
    """Find or create the study and lock its row for the rest of the transaction."""
    k = keys.study
    _insert_ignore(
        session,
        Study,
        {
            "study_uid": k.study_uid,
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
            "modalities_in_study": "",
            "num_series": 0,
            "num_instances": 0,
            "dicom_json": k.dicom_json,
            "created_at": utcnow(),
            "updated_at": utcnow(),
        },
        ["study_uid"],
    )
    query = select(Study).where(Study.study_uid == k.study_uid).with_for_update()
    return session.execute(query).scalar_one()


def _series(session: Session, keys: IndexKeys, study: Study) -> Series:
    """Find or create the series."""
    k = keys.series
    _insert_ignore(
        session,
        Series,
        {
            "series_uid": k.series_uid,
            "study_pk": study.id,
            "modality": k.modality,
            "series_number": k.series_number,
            "series_description": k.description,
            "body_part_examined": k.body_part_examined,
            "num_instances": 0,
            "dicom_json": k.dicom_json,
        },
        ["series_uid"],
    )
    return session.execute(select(Series).where(Series.series_uid == k.series_uid)).scalar_one()


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


def _place_instance(session: Session, keys: IndexKeys, series: Series, stored: StoredFile) -> None:
    """Create the instance row, or point it at this file if it is the newest version."""
    k = keys.instance
    existing = session.execute(
        select(Instance).where(Instance.sop_instance_uid == k.sop_instance_uid)
    ).scalar_one_or_none()
    if existing is not None and existing.stored_file_id != stored.id:
        current = session.get(StoredFile, existing.stored_file_id)
        if current is not None and (current.received_at, current.id) > (
            stored.received_at,
            stored.id,
        ):
            stored.state = StoredFileState.SUPERSEDED
            return
        if current is not None:
            current.state = StoredFileState.SUPERSEDED
    instance = existing or Instance(sop_instance_uid=k.sop_instance_uid)
    instance.series_pk = series.id
    instance.sop_class_uid = k.sop_class_uid
    instance.instance_number = k.instance_number
    instance.number_of_frames = k.number_of_frames
    instance.rows = k.rows
    instance.columns = k.columns
    instance.stored_file_id = stored.id
    instance.dicom_json = k.dicom_json
    instance.indexed_at = utcnow()
    session.add(instance)
    stored.state = StoredFileState.INDEXED


def index_stored_file(hub: Hub, stored_file_id: int) -> None:
    """Index one stored file (header only, never pixel data)."""
    with hub.db.read() as s:
        stored = s.get(StoredFile, stored_file_id)
        if stored is None:
            raise PermanentError(f"stored file {stored_file_id} does not exist")
        path = hub.store.local_path(stored.path)
    try:
        ds = dcmread(path, stop_before_pixels=True)
        keys = extract_keys(ds)
    except (InvalidDicom, InvalidDicomError) as exc:
        # The stored original cannot be read: retrying will not help.
        raise PermanentError(f"stored file {stored_file_id} is unreadable: {exc}") from exc
    with hub.db.write() as s:
        stored = s.get(StoredFile, stored_file_id)
        assert stored is not None
        identity = _source_identity(s, keys.patient)
        study = _study(s, keys, identity)
        series = _series(s, keys, study)
        _place_instance(s, keys, series, stored)
        _refresh_aggregates(s, study, series)


def index_job(hub: Hub, payload: dict[str, Any]) -> None:
    """Job handler for kind 'index'."""
    index_stored_file(hub, int(payload["stored_file_id"]))

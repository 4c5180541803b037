"""The clinicians' view of the index: patient records and their studies, searched and sorted.

Patients here are the clinic's patient records (hub MRN, verified demographics), each with
the source identities linked to it; a patient's studies are every study linked to the record,
whoever sent them. Study searches take the DICOM matching keys of ``imaging_hub.query`` (same
syntax and errors as QIDO-RS) plus body part, source (how or from which AE title a study
arrived), specialty (of the notes, reports and referrals that go with it) and a patient MRN.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Select, func, or_, select, union
from sqlalchemy.orm import Session

from imaging_hub.db.models import (
    ClinicalRecord,
    PatientRecord,
    Referral,
    ReferralStudy,
    Series,
    SourceIdentity,
    StoredFile,
    Study,
)
from imaging_hub.dicom.matching import date_condition, pn_condition, string_condition
from imaging_hub.errors import NotFound
from imaging_hub.query import Level, Search

__all__ = [
    "IdentityOut",
    "PatientFilters",
    "PatientSort",
    "PatientSummary",
    "SeriesSummary",
    "StudyFilters",
    "StudySort",
    "StudySummary",
    "get_patient",
    "get_study",
    "patient_record_id",
    "patient_studies",
    "search_patients",
    "search_studies",
    "studies_by_uid",
    "study_series",
]

Condition = ColumnElement[bool]


class StudySort(StrEnum):
    """Orders of a study search; a leading ``-`` means descending."""

    NEWEST = "-study_date"
    OLDEST = "study_date"
    PATIENT = "patient_name"
    PATIENT_DESC = "-patient_name"
    ACCESSION = "accession"
    ACCESSION_DESC = "-accession"
    RECEIVED = "-received"


class PatientSort(StrEnum):
    """Orders of a patient search; a leading ``-`` means descending."""

    NAME = "name"
    NAME_DESC = "-name"
    BIRTH_DATE = "birth_date"
    BIRTH_DATE_DESC = "-birth_date"
    MRN = "mrn"


@dataclass(frozen=True, slots=True)
class StudyFilters:
    """What a study search matches; every field None matches anything.

    DICOM-syntax values (``patient_name`` with wild cards, ``study_date`` as a DA range) are
    matched as QIDO-RS matches them.
    """

    patient_mrn: str | None = None
    patient_id: str | None = None
    patient_name: str | None = None
    study_date: str | None = None
    modality: str | None = None
    body_part: str | None = None
    description: str | None = None
    referring_physician: str | None = None
    accession: str | None = None
    source: str | None = None
    specialty: str | None = None

    def _matches(self) -> dict[str, str]:
        pairs = {
            "PatientID": self.patient_id,
            "PatientName": self.patient_name,
            "StudyDate": self.study_date,
            "ModalitiesInStudy": self.modality,
            "StudyDescription": self.description,
            "ReferringPhysicianName": self.referring_physician,
            "AccessionNumber": self.accession,
        }
        return {k: v for k, v in pairs.items() if v is not None}

    def conditions(self) -> list[Condition]:
        """The SQL conditions of these filters; ValueError or InvalidUid names a bad value."""
        built = Search(Level.STUDY, self._matches()).conditions()
        if self.patient_mrn is not None:
            built.append(PatientRecord.mrn == self.patient_mrn)
        if self.body_part is not None:
            part = string_condition(Series.body_part_examined, self.body_part.upper())
            if part is not None:
                built.append(Study.id.in_(select(Series.study_pk).where(part)))
        if self.source is not None:
            built.append(
                Study.study_uid.in_(
                    select(StoredFile.study_uid).where(
                        or_(
                            StoredFile.source == self.source,
                            StoredFile.source_detail == self.source,
                        )
                    )
                )
            )
        if self.specialty is not None:
            built.append(Study.study_uid.in_(_specialty_studies(self.specialty)))
        return built


def _specialty_studies(specialty: str) -> Any:
    """The studies a specialty wrote about or was referred with."""
    return union(
        select(ClinicalRecord.study_uid).where(
            ClinicalRecord.author_specialty == specialty, ClinicalRecord.study_uid.is_not(None)
        ),
        select(ReferralStudy.study_uid)
        .join(Referral, Referral.id == ReferralStudy.referral_id)
        .where(or_(Referral.to_specialty == specialty, Referral.from_specialty == specialty)),
    )


@dataclass(frozen=True, slots=True)
class StudySummary:
    """One study as a clinician's list shows it."""

    study_uid: str
    patient_mrn: str
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str | None
    birth_date: dt.date | None
    sex: str | None
    study_date: dt.date | None
    study_time: str | None
    accession_number: str | None
    study_id: str | None
    description: str | None
    referring_physician: str | None
    modalities: tuple[str, ...]
    num_series: int
    num_instances: int
    updated_at: dt.datetime


_STUDY_COLUMNS = (
    Study.study_uid,
    PatientRecord.mrn,
    SourceIdentity.patient_id,
    SourceIdentity.issuer,
    SourceIdentity.name,
    SourceIdentity.birth_date,
    SourceIdentity.sex,
    Study.study_date,
    Study.study_time,
    Study.accession_number,
    Study.study_id,
    Study.study_description,
    Study.referring_physician_name,
    Study.modalities_in_study,
    Study.num_series,
    Study.num_instances,
    Study.updated_at,
)


def _name_order(column: Any) -> Any:
    """A normalised name in sort order: components apart by a blank, so DOE^JANE < DOERING^MAX."""
    return func.replace(column, "^", " ")


_NEWEST = [Study.sort_key.desc()]

_STUDY_ORDER: dict[StudySort, list[Any]] = {
    StudySort.NEWEST: [Study.sort_key.desc()],
    StudySort.OLDEST: [Study.sort_key.asc()],
    StudySort.PATIENT: [_name_order(SourceIdentity.name_norm).asc().nulls_last(), *_NEWEST],
    StudySort.PATIENT_DESC: [_name_order(SourceIdentity.name_norm).desc().nulls_last(), *_NEWEST],
    StudySort.ACCESSION: [Study.accession_number.asc().nulls_last()],
    StudySort.ACCESSION_DESC: [Study.accession_number.desc().nulls_last()],
    StudySort.RECEIVED: [Study.updated_at.desc()],
}


def _study_select() -> Select[*tuple[Any, ...]]:
    return (
        select(*_STUDY_COLUMNS)
        .select_from(Study)
        .join(SourceIdentity, SourceIdentity.id == Study.source_identity_id)
        .join(PatientRecord, PatientRecord.id == Study.patient_record_id)
        .where(Study.num_instances > 0)
    )


def _summary(row: Any) -> StudySummary:
    values = list(row)
    values[13] = tuple(m for m in (values[13] or "").split("\\") if m)
    return StudySummary(*values)


def search_studies(
    session: Session,
    *,
    filters: StudyFilters,
    sort: StudySort = StudySort.NEWEST,
    limit: int = 100,
    offset: int = 0,
) -> list[StudySummary]:
    """Studies matching every filter, in the given order (ties: newest indexed first).

    Ask for ``limit + 1`` to learn whether there are more. ValueError names a bad filter.
    """
    if limit < 0 or offset < 0:
        raise ValueError("limit and offset must not be negative")
    query = _study_select().where(*filters.conditions())
    query = query.order_by(*_STUDY_ORDER[sort], Study.id.desc()).limit(limit).offset(offset)
    return [_summary(row) for row in session.execute(query)]


def get_study(session: Session, study_uid: str) -> StudySummary:
    """One study; NotFound if the index has no instance of it."""
    row = session.execute(_study_select().where(Study.study_uid == study_uid)).first()
    if row is None:
        raise NotFound(f"study {study_uid} is not in the hub")
    return _summary(row)


def studies_by_uid(session: Session, study_uids: list[str]) -> list[StudySummary]:
    """The studies of study_uids that the index holds instances of, newest first."""
    if not study_uids:
        return []
    query = _study_select().where(Study.study_uid.in_(study_uids))
    return [_summary(row) for row in session.execute(query.order_by(*_NEWEST, Study.id.desc()))]


@dataclass(frozen=True, slots=True)
class SeriesSummary:
    """One series of a study, in series order."""

    series_uid: str
    series_number: int | None
    modality: str | None
    description: str | None
    body_part: str | None
    num_instances: int


def study_series(session: Session, study_uid: str) -> list[SeriesSummary]:
    """The series of a study that hold instances, by series number."""
    rows = session.execute(
        select(
            Series.series_uid,
            Series.series_number,
            Series.modality,
            Series.series_description,
            Series.body_part_examined,
            Series.num_instances,
        )
        .join(Study, Study.id == Series.study_pk)
        .where(Study.study_uid == study_uid, Series.num_instances > 0)
        .order_by(Series.series_number.asc().nulls_last(), Series.series_uid)
    )
    return [SeriesSummary(*row) for row in rows]


# -- patients -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PatientFilters:
    """What a patient search matches: name (PN, wild cards), patient ID or MRN, birth date (DA)."""

    name: str | None = None
    patient_id: str | None = None
    birth_date: str | None = None

    def conditions(self) -> list[Condition]:
        """The SQL conditions of these filters; ValueError names a bad value."""
        built: list[Condition | None] = [
            pn_condition(PatientRecord.name_norm, self.name),
            date_condition(PatientRecord.birth_date, self.birth_date, what="birth_date"),
        ]
        for value in (self.name, self.patient_id):
            if value is not None and any(ord(c) < 32 for c in value):
                raise ValueError("control characters are not allowed in a query")
        if self.patient_id is not None:
            identities = select(SourceIdentity.patient_record_id).where(
                SourceIdentity.patient_id == self.patient_id
            )
            built.append(
                or_(PatientRecord.mrn == self.patient_id, PatientRecord.id.in_(identities))
            )
        return [c for c in built if c is not None]


@dataclass(frozen=True, slots=True)
class IdentityOut:
    """A source identity linked to a patient: the ID and issuer a sender used."""

    patient_id: str
    issuer: str
    name: str | None
    birth_date: dt.date | None
    link_state: str


@dataclass(frozen=True, slots=True)
class PatientSummary:
    """One patient record with its study count and newest study date."""

    mrn: str
    name: str | None
    birth_date: dt.date | None
    sex: str | None
    num_studies: int
    last_study_date: dt.date | None
    identities: list[IdentityOut] = field(default_factory=list)


_PATIENT_ORDER: dict[PatientSort, list[Any]] = {
    PatientSort.NAME: [_name_order(PatientRecord.name_norm).asc().nulls_last()],
    PatientSort.NAME_DESC: [_name_order(PatientRecord.name_norm).desc().nulls_last()],
    PatientSort.BIRTH_DATE: [PatientRecord.birth_date.asc().nulls_last()],
    PatientSort.BIRTH_DATE_DESC: [PatientRecord.birth_date.desc().nulls_last()],
    PatientSort.MRN: [PatientRecord.mrn.asc()],
}


def _identities(session: Session, record_ids: list[int]) -> dict[int, list[IdentityOut]]:
    rows = session.execute(
        select(
            SourceIdentity.patient_record_id,
            SourceIdentity.patient_id,
            SourceIdentity.issuer,
            SourceIdentity.name,
            SourceIdentity.birth_date,
            SourceIdentity.link_state,
        )
        .where(SourceIdentity.patient_record_id.in_(record_ids))
        .order_by(SourceIdentity.id)
    )
    found: dict[int, list[IdentityOut]] = {}
    for record_id, patient_id, issuer, name, birth_date, state in rows:
        identity = IdentityOut(patient_id, issuer, name, birth_date, str(state))
        found.setdefault(record_id, []).append(identity)
    return found


def _patient_select() -> Select[*tuple[Any, ...]]:
    studies = (
        select(
            Study.patient_record_id.label("pid"),
            func.count(Study.id).label("n"),
            func.max(Study.study_date).label("last"),
        )
        .where(Study.num_instances > 0)
        .group_by(Study.patient_record_id)
        .subquery()
    )
    return (
        select(
            PatientRecord.id,
            PatientRecord.mrn,
            PatientRecord.name,
            PatientRecord.birth_date,
            PatientRecord.sex,
            func.coalesce(studies.c.n, 0),
            studies.c.last,
        )
        .outerjoin(studies, studies.c.pid == PatientRecord.id)
        .where(PatientRecord.merged_into_id.is_(None))
    )


def _patients(session: Session, query: Select[*tuple[Any, ...]]) -> list[PatientSummary]:
    rows = list(session.execute(query))
    identities = _identities(session, [row[0] for row in rows])
    return [
        PatientSummary(
            mrn=row[1],
            name=row[2],
            birth_date=row[3],
            sex=row[4],
            num_studies=int(row[5]),
            last_study_date=row[6],
            identities=identities.get(row[0], []),
        )
        for row in rows
    ]


def search_patients(
    session: Session,
    *,
    filters: PatientFilters,
    sort: PatientSort = PatientSort.NAME,
    limit: int = 100,
    offset: int = 0,
) -> list[PatientSummary]:
    """Patient records matching every filter, in the given order (ties by MRN)."""
    if limit < 0 or offset < 0:
        raise ValueError("limit and offset must not be negative")
    query = _patient_select().where(*filters.conditions())
    query = query.order_by(*_PATIENT_ORDER[sort], PatientRecord.mrn).limit(limit).offset(offset)
    return _patients(session, query)


def patient_record_id(session: Session, mrn: str) -> int:
    """The internal key of a patient record; NotFound if there is no such MRN."""
    found = session.scalar(select(PatientRecord.id).where(PatientRecord.mrn == mrn))
    if found is None:
        raise NotFound(f"no patient {mrn!r}")
    return found


def get_patient(session: Session, mrn: str) -> PatientSummary:
    """One patient record with its identities; NotFound if there is no such MRN."""
    found = _patients(session, _patient_select().where(PatientRecord.mrn == mrn))
    if not found:
        raise NotFound(f"no patient {mrn!r}")
    return found[0]


def patient_studies(session: Session, mrn: str) -> list[StudySummary]:
    """Every study of a patient, from every sender and specialty, oldest first."""
    return search_studies(
        session, filters=StudyFilters(patient_mrn=mrn), sort=StudySort.OLDEST, limit=10_000
    )

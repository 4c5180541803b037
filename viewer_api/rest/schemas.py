"""Typed answers of the clinicians' REST API, shared by its routers (OpenAPI documents them)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, TypeVar

from fastapi import HTTPException, Query, Response
from pydantic import BaseModel, Field

from imaging_hub.catalog import IdentityOut, PatientSummary, StudySummary
from imaging_hub.records import RecordInfo, ReferralInfo

__all__ = [
    "MORE_HEADER",
    "IdentityItem",
    "Limit",
    "Offset",
    "PatientItem",
    "RecordItem",
    "ReferralItem",
    "StudyItem",
    "bad_input",
    "page",
]

#: Header set to "true" when more results match than this page holds.
MORE_HEADER = "X-More-Results"

T = TypeVar("T")

Limit = Annotated[int, Query(ge=1, le=1000, description="Results per page.")]
Offset = Annotated[int, Query(ge=0, le=10**9, description="Results to skip.")]


@contextmanager
def bad_input() -> Iterator[None]:
    """Answer a ValueError raised inside with 400 and its message."""
    try:
        yield
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None


def page(rows: list[T], limit: int, response: Response) -> list[T]:
    """The first limit of limit + 1 rows, telling in MORE_HEADER whether there were more."""
    response.headers[MORE_HEADER] = "true" if len(rows) > limit else "false"
    return rows[:limit]


class StudyItem(BaseModel):
    """One study in a list."""

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
    description: str | None
    referring_physician: str | None
    modalities: list[str]
    num_series: int
    num_instances: int

    @classmethod
    def of(cls, row: StudySummary) -> StudyItem:
        """The item of a search result."""
        return cls(
            study_uid=row.study_uid,
            patient_mrn=row.patient_mrn,
            patient_id=row.patient_id,
            issuer_of_patient_id=row.issuer_of_patient_id,
            patient_name=row.patient_name,
            birth_date=row.birth_date,
            sex=row.sex,
            study_date=row.study_date,
            study_time=row.study_time,
            accession_number=row.accession_number,
            description=row.description,
            referring_physician=row.referring_physician,
            modalities=list(row.modalities),
            num_series=row.num_series,
            num_instances=row.num_instances,
        )


class IdentityItem(BaseModel):
    """A patient ID and issuer under which a sender sent a patient's studies."""

    patient_id: str
    issuer: str
    name: str | None
    birth_date: dt.date | None
    link_state: str

    @classmethod
    def of(cls, identity: IdentityOut) -> IdentityItem:
        """The item of a source identity."""
        return cls(
            patient_id=identity.patient_id,
            issuer=identity.issuer,
            name=identity.name,
            birth_date=identity.birth_date,
            link_state=identity.link_state,
        )


class PatientItem(BaseModel):
    """One patient record in a list."""

    mrn: str = Field(description="The hub's medical record number of the patient.")
    name: str | None
    birth_date: dt.date | None
    sex: str | None
    num_studies: int
    last_study_date: dt.date | None
    identities: list[IdentityItem]

    @classmethod
    def of(cls, row: PatientSummary) -> PatientItem:
        """The item of a patient record."""
        return cls(
            mrn=row.mrn,
            name=row.name,
            birth_date=row.birth_date,
            sex=row.sex,
            num_studies=row.num_studies,
            last_study_date=row.last_study_date,
            identities=[IdentityItem.of(i) for i in row.identities],
        )


class RecordItem(BaseModel):
    """A note or report; a PDF is read at document_url."""

    record_id: str
    kind: str
    patient_mrn: str
    study_uid: str | None
    title: str
    content_type: str
    body: str | None = Field(description="The markdown text (None for a PDF).")
    document_url: str | None
    document_size: int | None
    sop_instance_uid: str | None = Field(
        description="The Encapsulated PDF instance that carries a study's PDF report."
    )
    author: str
    author_specialty: str | None
    created_at: dt.datetime

    @classmethod
    def of(cls, info: RecordInfo) -> RecordItem:
        """The item of a record."""
        return cls(
            record_id=info.public_id,
            kind=info.kind.value,
            patient_mrn=info.patient_mrn,
            study_uid=info.study_uid,
            title=info.title,
            content_type=info.content_type,
            body=info.body,
            document_url=f"/api/records/{info.public_id}/document"
            if info.document_sha256
            else None,
            document_size=info.document_size,
            sop_instance_uid=info.sop_instance_uid,
            author=info.author,
            author_specialty=info.author_specialty,
            created_at=info.created_at,
        )


class ReferralItem(BaseModel):
    """A referral and the studies that go with it."""

    referral_id: str
    patient_mrn: str
    from_user: str
    from_specialty: str | None
    to_specialty: str
    reason: str
    status: str
    accepted_by: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    study_uids: list[str]

    @classmethod
    def of(cls, info: ReferralInfo) -> ReferralItem:
        """The item of a referral."""
        return cls(
            referral_id=info.public_id,
            patient_mrn=info.patient_mrn,
            from_user=info.from_user,
            from_specialty=info.from_specialty,
            to_specialty=info.to_specialty.value,
            reason=info.reason,
            status=info.status.value,
            accepted_by=info.accepted_by,
            created_at=info.created_at,
            updated_at=info.updated_at,
            study_uids=list(info.study_uids),
        )

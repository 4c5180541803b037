"""Index database models (SQLAlchemy 2, typed). The schema itself changes only through Alembic.

Patient identity is PIX-style: each *source identity* (PatientID + IssuerOfPatientID + the
demographics as received) is kept apart from the clinic's *patient record*; a study belongs to a
source identity, and the source identity is linked to a patient record through append-only
link events (the newest event is the current link, mirrored on ``SourceIdentity`` for queries).
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

__all__ = [
    "ApiToken",
    "AuditEvent",
    "Base",
    "ClinicalRecord",
    "IdentityLinkEvent",
    "Instance",
    "Job",
    "JobState",
    "LinkState",
    "PatientRecord",
    "PreviewState",
    "RecordKind",
    "Referral",
    "ReferralStatus",
    "ReferralStudy",
    "Role",
    "Series",
    "ShareLink",
    "SourceIdentity",
    "Specialty",
    "StoredFile",
    "StoredFileState",
    "Study",
    "UserAccount",
    "utcnow",
]

#: JSON on every engine, JSONB on PostgreSQL.
JsonType = JSON().with_variant(JSONB(), "postgresql")
#: Integer primary keys that are 64-bit on PostgreSQL and ROWID aliases on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """Now, timezone-aware in UTC."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        """Refuse naive datetimes; store aware ones in UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        """Attach UTC to what SQLite returns without a zone."""
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    """Declarative base with stable constraint names."""

    metadata = MetaData(naming_convention=NAMING)


class LinkState(StrEnum):
    """State of the link between a source identity and a patient record."""

    NEW = "new"
    AUTO = "auto"
    REVIEW = "review"
    CONFLICT = "conflict"
    VERIFIED = "verified"


class PatientRecord(Base):
    """The clinic's patient: hub MRN and verified demographics."""

    __tablename__ = "patient_record"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    mrn: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str | None] = mapped_column(String(324))
    name_norm: Mapped[str | None] = mapped_column(String(324), index=True)
    birth_date: Mapped[dt.date | None] = mapped_column(Date, index=True)
    sex: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("patient_record.id"))


class SourceIdentity(Base):
    """A patient identity exactly as a sender supplied it (PatientID + issuer + demographics)."""

    __tablename__ = "source_identity"
    __table_args__ = (
        UniqueConstraint("patient_id", "issuer", "identity_key"),
        # varchar_pattern_ops lets PostgreSQL use the index for LIKE 'DOE%' in any locale.
        Index(
            "ix_source_identity_name_norm",
            "name_norm",
            postgresql_ops={"name_norm": "varchar_pattern_ops"},
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), index=True)
    issuer: Mapped[str] = mapped_column(String(64), default="")
    #: Hash of the received demographics: the same ID with other demographics is another identity.
    identity_key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(324))
    name_norm: Mapped[str | None] = mapped_column(String(324))
    birth_date: Mapped[dt.date | None] = mapped_column(Date, index=True)
    sex: Mapped[str | None] = mapped_column(String(16))
    dicom_json: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    patient_record_id: Mapped[int] = mapped_column(ForeignKey("patient_record.id"), index=True)
    link_state: Mapped[LinkState] = mapped_column(String(16), default=LinkState.NEW)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    patient_record: Mapped[PatientRecord] = relationship()


class IdentityLinkEvent(Base):
    """Append-only history of links between source identities and patient records."""

    __tablename__ = "identity_link_event"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source_identity_id: Mapped[int] = mapped_column(ForeignKey("source_identity.id"), index=True)
    patient_record_id: Mapped[int] = mapped_column(ForeignKey("patient_record.id"), index=True)
    state: Mapped[LinkState] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Study(Base):
    """One study (StudyInstanceUID) with the typed keys QIDO-RS and C-FIND match on."""

    __tablename__ = "study"
    # DICOMweb: searches walk this index in result order (newest first), and pages of
    # studies come from it alone (num_instances included); see ``sort_key``.
    __table_args__ = (
        Index("ix_study_sort_key_id", "sort_key", "id", "num_instances"),
        # … and a patient's studies in the same order, from the index alone.
        Index("ix_study_identity_sort", "source_identity_id", "sort_key", "id", "num_instances"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    source_identity_id: Mapped[int] = mapped_column(ForeignKey("source_identity.id"), index=True)
    patient_record_id: Mapped[int] = mapped_column(ForeignKey("patient_record.id"), index=True)
    study_date: Mapped[dt.date | None] = mapped_column(Date, index=True)
    #: StudyTime normalised to HHMMSS[.ffffff] so that string order is time order.
    study_time: Mapped[str | None] = mapped_column(String(16))
    accession_number: Mapped[str | None] = mapped_column(String(64), index=True)
    study_id: Mapped[str | None] = mapped_column(String(64), index=True)
    study_description: Mapped[str | None] = mapped_column(String(256))
    study_description_norm: Mapped[str | None] = mapped_column(String(256), index=True)
    referring_physician_name: Mapped[str | None] = mapped_column(String(324))
    referring_physician_norm: Mapped[str | None] = mapped_column(String(324), index=True)
    #: Modalities as ``\\CT\\MR\\`` so that one modality matches ``LIKE '%\\MR\\%'``.
    modalities_in_study: Mapped[str] = mapped_column(String(256), default="", index=True)
    num_series: Mapped[int] = mapped_column(Integer, default=0)
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    dicom_json: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    #: StudyDate as YYYYMMDD + normalised StudyTime ('' without a date): string order is time
    #: order, so one index serves both the result order and StudyDate ranges (DICOMweb).
    sort_key: Mapped[str] = mapped_column(String(32), default="", server_default="")

    source_identity: Mapped[SourceIdentity] = relationship()
    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    """One series (SeriesInstanceUID) of a study."""

    __tablename__ = "series"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    modality: Mapped[str | None] = mapped_column(String(16), index=True)
    series_number: Mapped[int | None] = mapped_column(Integer, index=True)
    series_description: Mapped[str | None] = mapped_column(String(256))
    body_part_examined: Mapped[str | None] = mapped_column(String(64), index=True)
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    dicom_json: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    #: PerformedProcedureStepStartDate/Time, for series-level matching (DICOMweb).
    performed_date: Mapped[dt.date | None] = mapped_column(Date, index=True)
    performed_time: Mapped[str | None] = mapped_column(String(16))

    study: Mapped[Study] = relationship(back_populates="series")


class PreviewState(StrEnum):
    """Whether an instance's thumbnail and preview exist."""

    PENDING = "pending"
    READY = "ready"
    #: Not an image (PDF, SR, presentation state …): served as a generic icon.
    ICON = "icon"
    FAILED = "failed"


class Instance(Base):
    """One instance (SOPInstanceUID) and the stored file that currently represents it."""

    __tablename__ = "instance"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64), index=True)
    instance_number: Mapped[int | None] = mapped_column(Integer, index=True)
    number_of_frames: Mapped[int | None] = mapped_column(Integer)
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    stored_file_id: Mapped[int] = mapped_column(ForeignKey("stored_file.id"))
    dicom_json: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    preview_state: Mapped[PreviewState] = mapped_column(String(16), default=PreviewState.PENDING)
    indexed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    series: Mapped[Series] = relationship()
    stored_file: Mapped[StoredFile] = relationship()


class StoredFileState(StrEnum):
    """Lifecycle of a received file."""

    RECEIVED = "received"
    INDEXED = "indexed"
    SUPERSEDED = "superseded"


class StoredFile(Base):
    """An immutable original as received: where it is, its size, hash and transfer syntax."""

    __tablename__ = "stored_file"
    __table_args__ = (UniqueConstraint("sop_instance_uid", "sha256"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_uid: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(512), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(32))
    source_detail: Mapped[str | None] = mapped_column(String(256))
    state: Mapped[StoredFileState] = mapped_column(String(16), default=StoredFileState.RECEIVED)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class JobState(StrEnum):
    """Lifecycle of a job row (the job table is the source of truth for work)."""

    QUEUED = "queued"
    PUBLISHED = "published"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Job(Base):
    """A unit of work: kind + payload, leased by a worker, retried until done or failed."""

    __tablename__ = "job"
    __table_args__ = (
        Index("ix_job_state_not_before", "state", "not_before"),
        Index("ix_job_state_lease_until", "state", "lease_until"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    queue: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    #: The study the work is for, so that a study's processing status can be counted.
    study_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    state: Mapped[JobState] = mapped_column(String(16), default=JobState.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    not_before: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    published_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class AuditEvent(Base):
    """Append-only audit trail: who did what to which patient data, when, from where, outcome."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128), index=True)
    actor_kind: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    source_address: Mapped[str | None] = mapped_column(String(128))
    patient_record_id: Mapped[int | None] = mapped_column(BigId, index=True)
    study_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)


class Role(StrEnum):
    """What a user may do: clinicians read, radiology staff also fix data, admins run the hub."""

    CLINICIAN = "clinician"
    RADIOLOGY = "radiology"
    ADMIN = "admin"


class Specialty(StrEnum):
    """A user's clinical specialty (profile information, not a permission)."""

    ORTHOPEDIC_SURGERY = "orthopedic-surgery"
    NEUROSURGERY = "neurosurgery"
    PHYSIATRY = "physiatry"
    PAIN_MEDICINE = "pain-medicine"
    CHIROPRACTIC = "chiropractic"
    PHYSICAL_THERAPY = "physical-therapy"
    PSYCHOLOGY = "psychology"
    RADIOLOGY = "radiology"
    OTHER = "other"


class UserAccount(Base):
    """A person who signs in to the API: password hash, role, profile and login throttling."""

    __tablename__ = "user_account"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(String(16))
    specialty: Mapped[Specialty | None] = mapped_column(String(32))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Consecutive failed logins since the last success or lockout.
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: Tokens issued before this moment are refused (a password reset revokes them).
    password_changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


# -- Clinician access (migration 0004): API tokens, share links, notes and reports, referrals --


class ApiToken(Base):
    """A long-lived, revocable bearer token of an integration, acting for its owner within scopes.

    Only a hash of the secret part is kept; ``public_id`` finds the row without it.
    """

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    owner_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JsonType, default=list)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    owner: Mapped[UserAccount] = relationship()


class ShareLink(Base):
    """A read-only token for someone outside the clinic, scoped to one study or one patient."""

    __tablename__ = "share_link"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    #: Exactly one of study_uid and patient_record_id is set.
    study_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    patient_record_id: Mapped[int | None] = mapped_column(
        ForeignKey("patient_record.id"), index=True
    )
    label: Mapped[str | None] = mapped_column(String(256))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    use_count: Mapped[int] = mapped_column(Integer, default=0)


class RecordKind(StrEnum):
    """What a clinical record is: a clinician's note or a report."""

    NOTE = "note"
    REPORT = "report"


class ClinicalRecord(Base):
    """A note or report on a patient or one of their studies: markdown text or a PDF document."""

    __tablename__ = "clinical_record"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[RecordKind] = mapped_column(String(16))
    patient_record_id: Mapped[int] = mapped_column(ForeignKey("patient_record.id"), index=True)
    study_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    title: Mapped[str] = mapped_column(String(256))
    #: ``text/markdown`` (the text is in body) or ``application/pdf`` (the document is stored).
    content_type: Mapped[str] = mapped_column(String(64))
    body: Mapped[str | None] = mapped_column(Text)
    document_key: Mapped[str | None] = mapped_column(String(256))
    document_sha256: Mapped[str | None] = mapped_column(String(64))
    document_size: Mapped[int | None] = mapped_column(BigInteger)
    #: The Encapsulated PDF instance that carries a study's PDF report to DICOM peers.
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(64))
    author_specialty: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class ReferralStatus(StrEnum):
    """Where a referral stands."""

    OPEN = "open"
    ACCEPTED = "accepted"
    DONE = "done"


class Referral(Base):
    """A referral of a patient from a clinician (and specialty) to a specialty, with a reason."""

    __tablename__ = "referral"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    patient_record_id: Mapped[int] = mapped_column(ForeignKey("patient_record.id"), index=True)
    from_user: Mapped[str] = mapped_column(String(64))
    from_specialty: Mapped[str | None] = mapped_column(String(32))
    to_specialty: Mapped[str] = mapped_column(String(32), index=True)
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[ReferralStatus] = mapped_column(String(16), default=ReferralStatus.OPEN)
    accepted_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    studies: Mapped[list[ReferralStudy]] = relationship(
        order_by="ReferralStudy.id", cascade="all, delete-orphan"
    )


class ReferralStudy(Base):
    """A study that goes with a referral."""

    __tablename__ = "referral_study"
    __table_args__ = (UniqueConstraint("referral_id", "study_uid"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    referral_id: Mapped[int] = mapped_column(ForeignKey("referral.id"), index=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)

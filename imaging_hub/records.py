"""Records that go with the films: notes and reports on a patient or study, and referrals.

A note or report is markdown text or a PDF document, with its author, the author's specialty
and the time; every clinician sees them. A PDF report on a study is also stored as a DICOM
Encapsulated PDF instance (PS3.3 A.45.1) in that study, through the common ingest path, so
that DICOM peers and viewers see it. PDF documents are kept in the data dir's record store
under their SHA-256. A referral sends a patient from a clinician (and specialty) to a
specialty with a reason and the studies that go with it; its status goes open → accepted →
done (or open → done).
"""

from __future__ import annotations

import datetime as dt
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import structlog
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from imaging_hub.auth.users import UserInfo
from imaging_hub.config import Settings
from imaging_hub.db.engine import Database
from imaging_hub.db.models import (
    ClinicalRecord,
    PatientRecord,
    RecordKind,
    Referral,
    ReferralStatus,
    ReferralStudy,
    Specialty,
    StoredFile,
    StoredFileState,
    Study,
    utcnow,
)
from imaging_hub.dicom.uids import validate_uid
from imaging_hub.errors import InvalidDicom, NotFound, TooLarge
from imaging_hub.hub import Hub
from imaging_hub.ingest import store_instance
from imaging_hub.storage.local import LocalStore, hash_file

__all__ = [
    "ENCAPSULATED_PDF",
    "MARKDOWN",
    "MAX_PDF_BYTES",
    "PDF",
    "RecordInfo",
    "ReferralInfo",
    "add_pdf_report",
    "add_text_record",
    "create_referral",
    "encapsulated_pdf",
    "get_record",
    "get_referral",
    "list_records",
    "list_referrals",
    "max_pdf_bytes",
    "open_document",
    "record_store",
    "set_referral_status",
]

log = structlog.get_logger(__name__)

MARKDOWN = "text/markdown"
PDF = "application/pdf"
#: Encapsulated PDF Storage (PS3.4 B.5).
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
MAX_PDF_BYTES = 64 * 1024**2
MAX_TEXT = 200_000
_TITLE_MAX = 256
#: The Patient and General Study module attributes an Encapsulated PDF copies from its study.
_COPIED = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)
#: Type 2 attributes of the Patient and General Study modules (PS3.3 C.7.1.1, C.7.2.1): present,
#: empty if the study's instance lacks them.
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
_NEXT_STATUS = {
    ReferralStatus.OPEN: {ReferralStatus.ACCEPTED, ReferralStatus.DONE},
    ReferralStatus.ACCEPTED: {ReferralStatus.DONE},
    ReferralStatus.DONE: set(),
}


@dataclass(frozen=True, slots=True)
class RecordInfo:
    """A note or report as shown to clinicians (the PDF itself is read with open_document)."""

    public_id: str
    kind: RecordKind
    patient_mrn: str
    study_uid: str | None
    title: str
    content_type: str
    body: str | None
    document_size: int | None
    document_sha256: str | None
    sop_instance_uid: str | None
    author: str
    author_specialty: str | None
    created_at: dt.datetime
    #: The patient record's internal key (never shown outside the process).
    patient_record_id: int

    @classmethod
    def of(cls, row: ClinicalRecord, mrn: str) -> RecordInfo:
        """A snapshot of a record row."""
        return cls(
            public_id=row.public_id,
            kind=RecordKind(row.kind),
            patient_mrn=mrn,
            study_uid=row.study_uid,
            title=row.title,
            content_type=row.content_type,
            body=row.body,
            document_size=row.document_size,
            document_sha256=row.document_sha256,
            sop_instance_uid=row.sop_instance_uid,
            author=row.author,
            author_specialty=row.author_specialty,
            created_at=row.created_at,
            patient_record_id=row.patient_record_id,
        )


def record_store(hub: Hub) -> LocalStore:
    """The store of record documents (PDFs), beside the DICOM store in the data dir."""
    return LocalStore(hub.settings.data_dir / "records")


def _title(title: str) -> str:
    text = " ".join(title.split())
    if not 0 < len(text) <= _TITLE_MAX:
        raise ValueError(f"a title has 1 to {_TITLE_MAX} characters")
    return text


def _target(
    session: Session, mrn: str | None, study_uid: str | None
) -> tuple[int, str, str | None]:
    """(patient record key, MRN, study UID) a record or referral is about; NotFound if unknown."""
    if study_uid is not None:
        uid = validate_uid(study_uid, what="StudyInstanceUID")
        found = session.execute(
            select(PatientRecord.id, PatientRecord.mrn)
            .join(Study, Study.patient_record_id == PatientRecord.id)
            .where(Study.study_uid == uid)
        ).first()
        if found is None:
            raise NotFound(f"study {uid} is not in the hub")
        if mrn is not None and found[1] != mrn:
            raise ValueError(f"study {uid} is not a study of patient {mrn}")
        return found[0], found[1], uid
    if mrn is None:
        raise ValueError("a record is about a patient or a study")
    patient = session.scalar(select(PatientRecord.id).where(PatientRecord.mrn == mrn))
    if patient is None:
        raise NotFound(f"no patient {mrn!r}")
    return patient, mrn, None


def _specialty(user: UserInfo) -> str | None:
    return user.specialty.value if user.specialty else None


def add_text_record(
    db: Database,
    *,
    author: UserInfo,
    title: str,
    markdown: str,
    kind: RecordKind = RecordKind.NOTE,
    mrn: str | None = None,
    study_uid: str | None = None,
) -> RecordInfo:
    """Add a markdown note or report to a patient or study; ValueError or NotFound."""
    if not markdown.strip() or len(markdown) > MAX_TEXT:
        raise ValueError(f"the text must have 1 to {MAX_TEXT} characters")
    clean_title = _title(title)
    with db.write() as session:
        patient, patient_mrn, uid = _target(session, mrn, study_uid)
        row = ClinicalRecord(
            public_id=secrets.token_hex(8),
            kind=kind,
            patient_record_id=patient,
            study_uid=uid,
            title=clean_title,
            content_type=MARKDOWN,
            body=markdown,
            author=author.username,
            author_specialty=_specialty(author),
        )
        session.add(row)
        session.flush()
        return RecordInfo.of(row, patient_mrn)


def max_pdf_bytes(settings: Settings) -> int:
    """The largest PDF report accepted: MAX_PDF_BYTES, or less if ingest takes less."""
    return min(MAX_PDF_BYTES, settings.ingest_max_bytes)


def _check_pdf(path: Path, limit: int) -> int:
    size = path.stat().st_size
    if size > limit:
        raise TooLarge(f"a PDF report may have at most {limit} bytes")
    with path.open("rb") as fh:
        if fh.read(5) != b"%PDF-":
            raise ValueError("the document is not a PDF (it does not start with %PDF-)")
    return size


def _study_header(hub: Hub, study_uid: str) -> Dataset:
    """The header of one stored instance of a study (for its patient and study attributes)."""
    with hub.db.read() as session:
        key = session.scalar(
            select(StoredFile.path)
            .where(
                StoredFile.study_uid == study_uid,
                StoredFile.state != StoredFileState.SUPERSEDED,
            )
            .order_by(StoredFile.id)
            .limit(1)
        )
    if key is None:
        raise NotFound(f"study {study_uid} has no stored instance")
    with hub.store.open(key) as fh:
        return dcmread(fh, stop_before_pixels=True)


def encapsulated_pdf(header: Dataset, pdf: bytes, *, title: str, author: UserInfo) -> Dataset:
    """An Encapsulated PDF instance (PS3.3 A.45.1) in the study of header, in a new series."""
    now = utcnow()
    ds = Dataset()
    # UTF-8 whatever the study's character set: its values are read as text and written again,
    # and the title may hold any character.
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword in _COPIED:
        if keyword in header:
            setattr(ds, keyword, header.data_element(keyword).value)  # type: ignore[union-attr]
        elif keyword in _TYPE2:
            setattr(ds, keyword, None)
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DOC"
    ds.SeriesNumber = 9000
    ds.SeriesDescription = "Report"
    ds.InstanceNumber = 1
    ds.ConversionType = "WSD"
    ds.Manufacturer = "Imaging Hub"
    ds.ContentDate = ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.ContentTime = ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = title
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = PDF
    ds.OperatorsName = author.username
    ds.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(ENCAPSULATED_PDF)
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def _ingest_pdf(hub: Hub, study_uid: str, pdf: bytes, title: str, author: UserInfo) -> str:
    """Store the PDF as an Encapsulated PDF instance of the study; its SOP Instance UID."""
    ds = encapsulated_pdf(_study_header(hub, study_uid), pdf, title=title, author=author)
    with tempfile.TemporaryDirectory(dir=hub.settings.data_dir) as tmp:
        path = Path(tmp) / "report.dcm"
        ds.save_as(path, enforce_file_format=True)
        try:
            result = store_instance(hub, path, source="report", source_detail=author.username)
        except InvalidDicom as exc:  # our own dataset: a bug, not bad input
            raise RuntimeError(f"the report instance was refused: {exc}") from exc
    return result.sop_instance_uid


def add_pdf_report(
    hub: Hub,
    *,
    author: UserInfo,
    title: str,
    pdf_path: Path,
    mrn: str | None = None,
    study_uid: str | None = None,
) -> RecordInfo:
    """Add a PDF report to a patient or study (a study's also becomes an Encapsulated PDF).

    ValueError for a file that is not a PDF or a bad title, TooLarge, NotFound.
    """
    size = _check_pdf(pdf_path, max_pdf_bytes(hub.settings))
    clean_title = _title(title)
    with hub.db.read() as session:
        patient, patient_mrn, uid = _target(session, mrn, study_uid)
    sha, _ = hash_file(pdf_path)
    key = f"pdf/{sha[:2]}/{sha}.pdf"
    record_store(hub).put_file(key, pdf_path, expected_sha256=sha)
    sop_uid = None
    if uid is not None:
        sop_uid = _ingest_pdf(hub, uid, pdf_path.read_bytes(), clean_title, author)
    with hub.db.write() as session:
        row = ClinicalRecord(
            public_id=secrets.token_hex(8),
            kind=RecordKind.REPORT,
            patient_record_id=patient,
            study_uid=uid,
            title=clean_title,
            content_type=PDF,
            document_key=key,
            document_sha256=sha,
            document_size=size,
            sop_instance_uid=sop_uid,
            author=author.username,
            author_specialty=_specialty(author),
        )
        session.add(row)
        session.flush()
        info = RecordInfo.of(row, patient_mrn)
    log.info("report_stored", record=info.public_id, bytes=size, dicom=sop_uid is not None)
    return info


def _records_select() -> Select[ClinicalRecord, str]:
    return select(ClinicalRecord, PatientRecord.mrn).join(
        PatientRecord, PatientRecord.id == ClinicalRecord.patient_record_id
    )


def list_records(
    session: Session, *, mrn: str | None = None, study_uid: str | None = None
) -> list[RecordInfo]:
    """Notes and reports of a patient (all, with those on their studies) or of one study, newest
    first."""
    query = _records_select()
    if mrn is not None:
        query = query.where(PatientRecord.mrn == mrn)
    if study_uid is not None:
        query = query.where(ClinicalRecord.study_uid == study_uid)
    rows = session.execute(query.order_by(ClinicalRecord.created_at.desc(), ClinicalRecord.id))
    return [RecordInfo.of(row, patient_mrn) for row, patient_mrn in rows]


def get_record(session: Session, public_id: str) -> RecordInfo:
    """One note or report; NotFound if there is none."""
    found = session.execute(_records_select().where(ClinicalRecord.public_id == public_id)).first()
    if found is None:
        raise NotFound(f"no record {public_id!r}")
    return RecordInfo.of(found[0], found[1])


def open_document(hub: Hub, record: RecordInfo) -> BinaryIO:
    """Open a record's PDF for reading; NotFound for a text record."""
    with hub.db.read() as session:
        key = session.scalar(
            select(ClinicalRecord.document_key).where(ClinicalRecord.public_id == record.public_id)
        )
    if key is None:
        raise NotFound(f"record {record.public_id} has no document")
    return record_store(hub).open(key)


# -- referrals ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReferralInfo:
    """A referral, with the studies that go with it."""

    public_id: str
    patient_mrn: str
    from_user: str
    from_specialty: str | None
    to_specialty: Specialty
    reason: str
    status: ReferralStatus
    accepted_by: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    study_uids: tuple[str, ...]
    patient_record_id: int

    @classmethod
    def of(cls, row: Referral, mrn: str) -> ReferralInfo:
        """A snapshot of a referral row and its studies."""
        return cls(
            public_id=row.public_id,
            patient_mrn=mrn,
            from_user=row.from_user,
            from_specialty=row.from_specialty,
            to_specialty=Specialty(row.to_specialty),
            reason=row.reason,
            status=ReferralStatus(row.status),
            accepted_by=row.accepted_by,
            created_at=row.created_at,
            updated_at=row.updated_at,
            study_uids=tuple(s.study_uid for s in row.studies),
            patient_record_id=row.patient_record_id,
        )


def create_referral(
    db: Database,
    *,
    author: UserInfo,
    mrn: str,
    to_specialty: Specialty,
    reason: str,
    study_uids: Iterable[str] = (),
) -> ReferralInfo:
    """Refer a patient to a specialty; every study must be the patient's (ValueError)."""
    text = reason.strip()
    if not text or len(text) > MAX_TEXT:
        raise ValueError(f"the reason must have 1 to {MAX_TEXT} characters")
    uids = list(dict.fromkeys(validate_uid(u, what="StudyInstanceUID") for u in study_uids))
    with db.write() as session:
        patient, _, _ = _target(session, mrn, None)
        theirs = set(
            session.scalars(
                select(Study.study_uid).where(
                    Study.patient_record_id == patient, Study.study_uid.in_(uids)
                )
            )
        )
        if missing := [u for u in uids if u not in theirs]:
            raise ValueError(f"not studies of patient {mrn}: {', '.join(missing)}")
        row = Referral(
            public_id=secrets.token_hex(8),
            patient_record_id=patient,
            from_user=author.username,
            from_specialty=_specialty(author),
            to_specialty=to_specialty.value,
            reason=text,
            status=ReferralStatus.OPEN,
            studies=[ReferralStudy(study_uid=u) for u in uids],
        )
        session.add(row)
        session.flush()
        return ReferralInfo.of(row, mrn)


def _referrals_select() -> Select[Referral, str]:
    return select(Referral, PatientRecord.mrn).join(
        PatientRecord, PatientRecord.id == Referral.patient_record_id
    )


def list_referrals(
    session: Session,
    *,
    mrn: str | None = None,
    to_specialty: Specialty | None = None,
    status: ReferralStatus | None = None,
    study_uid: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[ReferralInfo]:
    """Referrals matching every given filter, newest first (a page of limit after offset)."""
    query = _referrals_select()
    if mrn is not None:
        query = query.where(PatientRecord.mrn == mrn)
    if to_specialty is not None:
        query = query.where(Referral.to_specialty == to_specialty.value)
    if status is not None:
        query = query.where(Referral.status == status.value)
    if study_uid is not None:
        linked = select(ReferralStudy.referral_id).where(ReferralStudy.study_uid == study_uid)
        query = query.where(Referral.id.in_(linked))
    query = query.order_by(Referral.created_at.desc(), Referral.id.desc())
    rows = session.execute(query.limit(limit).offset(offset))
    return [ReferralInfo.of(row, patient_mrn) for row, patient_mrn in rows]


def get_referral(session: Session, public_id: str) -> ReferralInfo:
    """One referral; NotFound if there is none."""
    found = session.execute(_referrals_select().where(Referral.public_id == public_id)).first()
    if found is None:
        raise NotFound(f"no referral {public_id!r}")
    return ReferralInfo.of(found[0], found[1])


def set_referral_status(
    db: Database, public_id: str, *, status: ReferralStatus, actor: UserInfo
) -> ReferralInfo:
    """Move a referral on (open → accepted → done, or open → done); ValueError otherwise."""
    with db.write() as session:
        found = session.execute(
            _referrals_select().where(Referral.public_id == public_id).with_for_update(of=Referral)
        ).first()
        if found is None:
            raise NotFound(f"no referral {public_id!r}")
        row, mrn = found
        current = ReferralStatus(row.status)
        if status not in _NEXT_STATUS[current]:
            raise ValueError(f"a referral that is {current.value} cannot become {status.value}")
        row.status = status
        if status == ReferralStatus.ACCEPTED or row.accepted_by is None:
            row.accepted_by = actor.username
        row.updated_at = utcnow()
        return ReferralInfo.of(row, mrn)

"""The one way in: every received instance (C-STORE, STOW-RS, import) goes through store_instance.

On success the file's bytes are fsync'd in storage and the job that indexes it is committed in
the same transaction as its stored-file row, so an acknowledged instance is never lost.
Rejected input is copied to the quarantine folder with the reason.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import structlog
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy import bindparam, insert, select, text
from sqlalchemy.orm import Session

from imaging_hub.config import DuplicatePolicy
from imaging_hub.db.models import StoredFile, StoredFileState, utcnow
from imaging_hub.dicom.uids import validate_uid
from imaging_hub.errors import (
    DuplicateRejected,
    InvalidDicom,
    SopClassMismatch,
    StorageFull,
    TooLarge,
)
from imaging_hub.hub import Hub
from imaging_hub.jobs import enqueue
from imaging_hub.storage.base import object_key
from imaging_hub.storage.local import hash_file
from imaging_hub.storage.quarantine import quarantine_file

__all__ = ["IngestResult", "IngestStatus", "store_instance"]

log = structlog.get_logger(__name__)


class IngestStatus(StrEnum):
    """What store_instance did with an instance."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    NEW_VERSION = "new-version"
    #: Other bytes under a stored UID, with the policy keep-first: quarantined, not stored.
    KEPT_FIRST = "kept-first"


@dataclass(frozen=True, slots=True)
class IngestResult:
    """The outcome of storing one instance."""

    status: IngestStatus
    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    stored_file_id: int
    size: int


@dataclass(frozen=True, slots=True)
class _Header:
    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax_uid: str


def _read_header(path: Path) -> _Header:
    """Parse a Part 10 file's header and validate the UIDs the store relies on."""
    try:
        ds = dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidDicom(f"undecodable DICOM data: {exc}") from exc
    except Exception as exc:  # pydicom raises many things on garbage; none may escape as a crash
        raise InvalidDicom(f"undecodable DICOM data: {type(exc).__name__}: {exc}") from exc
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is None:
        raise InvalidDicom("the file meta information has no Transfer Syntax UID")
    if "SOPClassUID" not in ds and "SOPInstanceUID" not in ds:
        # pydicom reads garbage leniently; a dataset with neither UID was not DICOM data.
        raise InvalidDicom("undecodable DICOM data: no SOP Class UID and no SOP Instance UID")
    try:
        return _Header(
            sop_instance_uid=_required_uid(ds, "SOPInstanceUID"),
            sop_class_uid=_required_uid(ds, "SOPClassUID"),
            study_uid=_required_uid(ds, "StudyInstanceUID"),
            series_uid=_required_uid(ds, "SeriesInstanceUID"),
            transfer_syntax_uid=validate_uid(ts, what="TransferSyntaxUID"),
        )
    except InvalidDicom:
        raise
    except Exception as exc:
        raise InvalidDicom(f"cannot read the instance's UIDs: {exc}") from exc


def _required_uid(ds: Dataset, keyword: str) -> str:
    """A UID the store relies on: present, not empty, and valid (PS3.5 9.1)."""
    value = ds.get(keyword)
    if value is None or (isinstance(value, str) and not value.strip("\x00 ")):
        raise InvalidDicom(f"{keyword} is missing")
    return validate_uid(value, what=keyword)


def _check_expected(
    header: _Header, sop_instance_uid: str | None, sop_class_uids: list[str | None]
) -> None:
    """The dataset must be the instance the command announced, of the negotiated SOP Class.

    PS3.4 B.2.3: a dataset whose SOP Class differs is "Data Set does not match SOP Class".
    """
    if sop_instance_uid is not None and header.sop_instance_uid != sop_instance_uid.strip("\x00 "):
        raise InvalidDicom(
            "dataset SOPInstanceUID does not match the announced one: "
            f"{header.sop_instance_uid} is not {sop_instance_uid}"
        )
    for expected in sop_class_uids:
        if expected is not None and header.sop_class_uid != expected.strip("\x00 "):
            raise SopClassMismatch(
                "dataset SOPClassUID does not match the announced or negotiated: "
                f"{header.sop_class_uid} is not {expected}"
            )


def store_instance(
    hub: Hub,
    path: Path,
    *,
    source: str,
    source_detail: str | None = None,
    expected_sop_instance_uid: str | None = None,
    expected_sop_class_uid: str | None = None,
    negotiated_sop_class_uid: str | None = None,
    spooled: bool = False,
) -> IngestResult:
    """Store a received Part 10 file durably and queue its indexing; idempotent for equal bytes.

    spooled: path is the hub's own spool file (a receiver's), never written again, so storage
    may take it over by a hard link instead of a copy.

    Raises InvalidDicom, DuplicateRejected, TooLarge or StorageFull; nothing stored is altered
    then, and rejected input (except oversized input) is quarantined with the reason. Other
    bytes under a stored UID follow ``settings.ingest_duplicates`` (see DuplicatePolicy).
    """
    settings = hub.settings
    detail = {"source": source, "source_detail": source_detail}
    try:
        size = path.stat().st_size
        if size > settings.ingest_max_bytes:
            raise TooLarge(f"{size} bytes exceeds the limit of {settings.ingest_max_bytes}")
        if hub.store.free_bytes() - size < settings.storage_min_free_bytes:
            raise StorageFull("free disk space is below the configured floor")
        header = _read_header(path)
        expected_classes = [expected_sop_class_uid, negotiated_sop_class_uid]
        _check_expected(header, expected_sop_instance_uid, expected_classes)
        result = _store(
            hub, path, header, source=source, source_detail=source_detail, spooled=spooled
        )
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            log.warning("instance_rejected", reason="StorageFull", source=source)
            raise StorageFull("no space left in storage; nothing was kept") from exc
        raise
    except (InvalidDicom, DuplicateRejected) as exc:
        quarantine_file(settings.quarantine_dir, path, reason=str(exc), detail=detail)
        log.warning("instance_rejected", reason=type(exc).__name__, source=source)
        raise
    except TooLarge as exc:
        quarantine_file(settings.quarantine_dir, None, reason=str(exc), detail=detail)
        log.warning("instance_rejected", reason="TooLarge", source=source)
        raise
    if result.status == IngestStatus.KEPT_FIRST:
        reason = f"already stored with other content: SOP Instance {result.sop_instance_uid}"
        quarantine_file(
            settings.quarantine_dir, path, reason=f"{reason}; kept the first", detail=detail
        )
        log.warning("instance_not_kept", reason="KeptFirst", source=source)
    return result


#: Every stored version of a SOP Instance UID (built once: SQLAlchemy reuses its compiled form).
_SELECT_VERSIONS = select(StoredFile.id, StoredFile.sha256).where(
    StoredFile.sop_instance_uid == bindparam("uid")
)


def _versions(session: Session, uid: str) -> list[tuple[int, str]]:
    """(id, sha256) of every stored version of a SOP Instance UID."""
    # On the connection: a plain SELECT, without the ORM's execution machinery.
    rows = session.connection().execute(_SELECT_VERSIONS, {"uid": uid})
    return [(row.id, row.sha256) for row in rows]


def _lock_uid(session: Session, uid: str) -> None:
    """Serialise writers of one SOP Instance UID until the transaction ends.

    SQLite write transactions are serial already; PostgreSQL takes an advisory lock.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:uid, 0))"), {"uid": uid}
        )


#: One statement, parameters per call (built once: SQLAlchemy reuses its compiled form).
_INSERT_STORED_FILE = insert(StoredFile).returning(StoredFile.id)


def _store(
    hub: Hub,
    path: Path,
    header: _Header,
    *,
    source: str,
    source_detail: str | None,
    spooled: bool = False,
) -> IngestResult:
    sha, size = hash_file(path)
    uid = header.sop_instance_uid
    policy = hub.settings.ingest_duplicates
    if policy != DuplicatePolicy.NEWEST:
        # Other bytes under a stored UID may be refused: decide before writing anything.
        # (Under newest every version is kept, and the same bytes land on the same key.)
        with hub.db.read() as s:
            versions = _versions(s, uid)
        same = next((vid for vid, vsha in versions if vsha == sha), None)
        if same is not None:
            return _result(IngestStatus.DUPLICATE, header, same, size)
        if versions:
            outcome = _other_version(policy, uid, header, versions, size)
            if outcome is not None:
                return outcome

    key = object_key(header.study_uid, header.series_uid, uid, sha)
    hub.store.put_file(key, path, expected_sha256=sha, link=spooled)
    with hub.db.write() as s:
        _lock_uid(s, uid)
        versions = _versions(s, uid)  # again, now that no other writer of this UID runs
        same = next((vid for vid, vsha in versions if vsha == sha), None)
        if same is not None:  # the same bytes arrived on another association meanwhile
            return _result(IngestStatus.DUPLICATE, header, same, size)
        if versions:
            # Another version won the race. The file just written stays unreferenced under its
            # content-derived key (a later identical copy reuses it); no stored row changes.
            outcome = _other_version(policy, uid, header, versions, size)
            if outcome is not None:
                return outcome
        row = {
            "sop_instance_uid": uid,
            "sop_class_uid": header.sop_class_uid,
            "study_uid": header.study_uid,
            "series_uid": header.series_uid,
            "path": key,
            "size": size,
            "sha256": sha,
            "transfer_syntax_uid": header.transfer_syntax_uid,
            "source": source,
            "source_detail": source_detail,
            "state": StoredFileState.RECEIVED,
            "received_at": utcnow(),
        }
        row_id = s.connection().execute(_INSERT_STORED_FILE, row).scalar_one()
        enqueue(
            s,
            "index",
            {"stored_file_id": row_id},
            study_uid=header.study_uid,
            max_attempts=hub.settings.jobs_max_attempts,
        )
    status = IngestStatus.NEW_VERSION if versions else IngestStatus.STORED
    log.info("instance_stored", sop_instance_uid=uid, bytes=size, source=source, status=str(status))
    return _result(status, header, row_id, size)


def _other_version(
    policy: DuplicatePolicy,
    uid: str,
    header: _Header,
    versions: list[tuple[int, str]],
    size: int,
) -> IngestResult | None:
    """Apply the duplicate policy to other bytes under a stored UID; None means store them."""
    if policy == DuplicatePolicy.REJECT:
        raise DuplicateRejected(f"already stored with other content: SOP Instance {uid}")
    if policy == DuplicatePolicy.KEEP_FIRST:
        return _result(IngestStatus.KEPT_FIRST, header, min(vid for vid, _ in versions), size)
    return None


def _result(status: IngestStatus, header: _Header, stored_file_id: int, size: int) -> IngestResult:
    return IngestResult(
        status=status,
        sop_instance_uid=header.sop_instance_uid,
        sop_class_uid=header.sop_class_uid,
        study_uid=header.study_uid,
        series_uid=header.series_uid,
        stored_file_id=stored_file_id,
        size=size,
    )

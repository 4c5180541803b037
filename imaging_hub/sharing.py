"""Share links: read-only tokens for people outside the clinic, scoped to one study or patient.

A share link's token reads ``ihs_<public id>_<secret>``; only the SHA-256 of the secret is
kept. A link always expires (at most ``MAX_LIFETIME`` after it is made) and can be revoked at
once; it stops working while the account that made it is disabled. It opens only the studies
in its scope: the one study, or every study of the patient.
Creating and revoking links writes audit events; each use is audited by the front end.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

import structlog
from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session

from imaging_hub import audit
from imaging_hub.db.engine import Database
from imaging_hub.db.models import (
    Instance,
    PatientRecord,
    Series,
    ShareLink,
    Study,
    UserAccount,
    utcnow,
)
from imaging_hub.dicom.uids import validate_uid
from imaging_hub.errors import AuthenticationFailed, NotFound, PermissionDenied

__all__ = [
    "MAX_LIFETIME",
    "SHARE_PREFIX",
    "ShareInfo",
    "check_share_access",
    "create_share_link",
    "get_share_link",
    "is_share_token",
    "list_share_links",
    "revoke_share_link",
    "scope_study_uids",
    "share_for_token",
]

log = structlog.get_logger(__name__)

SHARE_PREFIX = "ihs_"
MAX_LIFETIME = dt.timedelta(days=90)
_TOKEN_RE = re.compile(r"ihs_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_LABEL_MAX = 256


@dataclass(frozen=True, slots=True)
class ShareInfo:
    """What may be shown about a share link (never its secret or hash)."""

    public_id: str
    study_uid: str | None
    patient_mrn: str | None
    label: str | None
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None
    use_count: int
    #: The internal key of the patient in scope (never shown outside the process).
    patient_record_id: int | None = None

    @classmethod
    def of(cls, row: ShareLink, mrn: str | None) -> ShareInfo:
        """A snapshot of a share link row."""
        return cls(
            public_id=row.public_id,
            study_uid=row.study_uid,
            patient_mrn=mrn,
            label=row.label,
            created_by=row.created_by,
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            last_used_at=row.last_used_at,
            use_count=row.use_count,
            patient_record_id=row.patient_record_id,
        )

    def active(self, now: dt.datetime | None = None) -> bool:
        """Tell whether the link is neither revoked nor expired."""
        return self.revoked_at is None and self.expires_at > (now or utcnow())


def is_share_token(token: str) -> bool:
    """Tell whether a bearer token is shaped like a share link (not whether it is valid)."""
    return token.startswith(SHARE_PREFIX)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _select() -> Select[ShareLink, str]:
    return select(ShareLink, PatientRecord.mrn).outerjoin(
        PatientRecord, PatientRecord.id == ShareLink.patient_record_id
    )


def _audit(session: Session, actor: str, event: str, code: str, info: ShareInfo) -> None:
    audit.record(
        session,
        actor=actor,
        actor_kind=audit.ACTOR_KIND_USER,
        action=audit.SECURITY_ALERT,
        outcome=audit.SUCCESS,
        patient_record_id=info.patient_record_id,
        study_uid=info.study_uid,
        detail={"event": event, "event_action": code, "share": info.public_id},
    )


def create_share_link(
    db: Database,
    *,
    created_by: str,
    expires_in: dt.timedelta,
    study_uid: str | None = None,
    patient_mrn: str | None = None,
    label: str | None = None,
) -> tuple[ShareInfo, str]:
    """A new link to one study or one patient and its token (shown once, never stored).

    ValueError for a bad scope, lifetime or label; NotFound for an unknown study or patient.
    """
    if (study_uid is None) == (patient_mrn is None):
        raise ValueError("a share link is for exactly one study or one patient")
    if not dt.timedelta(minutes=1) <= expires_in <= MAX_LIFETIME:
        raise ValueError(f"a share link lasts from 1 minute to {MAX_LIFETIME.days} days")
    if label is not None and (len(label) > _LABEL_MAX or any(ord(c) < 32 for c in label)):
        raise ValueError(f"a label has at most {_LABEL_MAX} printable characters")
    public_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    with db.write() as session:
        row = ShareLink(
            public_id=public_id,
            secret_hash=_hash(secret),
            label=label or None,
            created_by=created_by,
            expires_at=utcnow() + expires_in,
            use_count=0,
        )
        if study_uid is not None:
            uid = validate_uid(study_uid, what="StudyInstanceUID")
            patient = session.scalar(select(Study.patient_record_id).where(Study.study_uid == uid))
            if patient is None:
                raise NotFound(f"study {uid} is not in the hub")
            row.study_uid = uid
        else:
            patient = session.scalar(
                select(PatientRecord.id).where(PatientRecord.mrn == patient_mrn)
            )
            if patient is None:
                raise NotFound(f"no patient {patient_mrn!r}")
            row.patient_record_id = patient
        session.add(row)
        session.flush()
        info = ShareInfo.of(row, patient_mrn)
        _audit(session, created_by, "share-link.create", audit.CREATE, info)
    log.info("share_link_created", share=public_id)
    return info, f"{SHARE_PREFIX}{public_id}_{secret}"


def list_share_links(
    db: Database, *, created_by: str | None = None, study_uid: str | None = None
) -> list[ShareInfo]:
    """Share links, newest first: every one, or those made by someone or for a study."""
    query = _select()
    if created_by is not None:
        query = query.where(ShareLink.created_by == created_by)
    if study_uid is not None:
        query = query.where(ShareLink.study_uid == study_uid)
    with db.read() as session:
        rows = session.execute(query.order_by(ShareLink.created_at.desc(), ShareLink.id.desc()))
        return [ShareInfo.of(row, mrn) for row, mrn in rows]


def get_share_link(db: Database, public_id: str) -> ShareInfo:
    """One share link by its public id; NotFound if there is none."""
    with db.read() as session:
        found = session.execute(_select().where(ShareLink.public_id == public_id)).first()
    if found is None:
        raise NotFound(f"no share link {public_id!r}")
    return ShareInfo.of(found[0], found[1])


def revoke_share_link(
    db: Database, public_id: str, *, actor: str, created_by: str | None = None
) -> ShareInfo:
    """Revoke a link at once (idempotent); with created_by, only that user's links are found."""
    with db.write() as session:
        query = _select().where(ShareLink.public_id == public_id)
        if created_by is not None:
            query = query.where(ShareLink.created_by == created_by)
        found = session.execute(query.with_for_update(of=ShareLink)).first()
        if found is None:
            raise NotFound(f"no share link {public_id!r}")
        row, mrn = found
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            _audit(session, actor, "share-link.revoke", audit.UPDATE, ShareInfo.of(row, mrn))
        return ShareInfo.of(row, mrn)


def share_for_token(db: Database, token: str) -> ShareInfo:
    """The active share link a token belongs to, its use counted; AuthenticationFailed if none."""
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        raise AuthenticationFailed("the share link is not valid")
    public_id, secret = match.groups()
    with db.read() as session:
        found = session.execute(_select().where(ShareLink.public_id == public_id)).first()
        creator_disabled = found is not None and session.scalar(
            select(UserAccount.disabled).where(UserAccount.username == found[0].created_by)
        )
    if found is None or not hmac.compare_digest(found[0].secret_hash, _hash(secret)):
        raise AuthenticationFailed("the share link is not valid")
    info = ShareInfo.of(found[0], found[1])
    if info.revoked_at is not None:
        raise AuthenticationFailed("the share link was revoked")
    if creator_disabled:
        raise AuthenticationFailed("the account that made the share link is disabled")
    now = utcnow()
    if not info.active(now):
        raise AuthenticationFailed("the share link has expired")
    with db.write() as session:
        session.execute(
            update(ShareLink)
            .where(ShareLink.public_id == public_id)
            .values(use_count=ShareLink.use_count + 1, last_used_at=now)
        )
    return info


def scope_study_uids(session: Session, share: ShareInfo) -> list[str]:
    """The StudyInstanceUIDs a share link opens."""
    if share.study_uid is not None:
        return [share.study_uid]
    rows = session.scalars(
        select(Study.study_uid)
        .where(Study.patient_record_id == share.patient_record_id)
        .order_by(Study.sort_key.desc(), Study.id)
    )
    return list(rows)


def _study_of(session: Session, kind: str, uid: str) -> tuple[str | None, int | None]:
    """(StudyInstanceUID, patient record key) of a study, series or instance; Nones if unknown."""
    if kind == "study":
        query = select(Study.study_uid, Study.patient_record_id).where(Study.study_uid == uid)
    elif kind == "series":
        query = (
            select(Study.study_uid, Study.patient_record_id)
            .join(Series, Series.study_pk == Study.id)
            .where(Series.series_uid == uid)
        )
    else:
        query = (
            select(Study.study_uid, Study.patient_record_id)
            .join(Series, Series.study_pk == Study.id)
            .join(Instance, Instance.series_pk == Series.id)
            .where(Instance.sop_instance_uid == uid)
        )
    found = session.execute(query).first()
    return (found[0], found[1]) if found else (None, None)


def check_share_access(
    session: Session,
    share: ShareInfo,
    *,
    studies: Iterable[str] = (),
    series: Iterable[str] = (),
    instances: Iterable[str] = (),
    patients: Iterable[str] = (),
) -> None:
    """Raise PermissionDenied unless every given UID (and patient MRN) is in the link's scope.

    A study, series or instance the index does not know is refused too: a link never reveals
    whether another UID exists.
    """
    refused = PermissionDenied("this share link does not open that data")
    for kind, uids in (("study", studies), ("series", series), ("instance", instances)):
        for uid in uids:
            study_uid, patient = _study_of(session, kind, uid)
            if study_uid is None:
                raise refused
            if share.study_uid is not None and study_uid != share.study_uid:
                raise refused
            if share.study_uid is None and patient != share.patient_record_id:
                raise refused
    for mrn in patients:
        if share.patient_record_id is None or mrn != share.patient_mrn:
            raise refused

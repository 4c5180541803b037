"""The identity step: checks a new source identity against the ones the index already holds.

Indexing gives every new source identity (PatientID + issuer + demographics as received) its
own patient record, so its studies are visible at once. The ``identity`` job then looks for
what radiology staff must reconcile, without merging anything itself:

- **conflict**: the same PatientID and issuer already arrived with other demographics (a
  misspelled name, or two people sharing one ID);
- **review**: another source identity (another PatientID or issuer) has the same normalised
  name, birth date and sex (the same person under another ID).

The identity's link state changes and an append-only link event names the records involved;
records, links and stored files are otherwise left as they are. An identity whose state is no
longer ``new`` (already checked, or decided by staff) is left alone, so the job is idempotent.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging_hub.db.models import IdentityLinkEvent, LinkState, PatientRecord, SourceIdentity
from imaging_hub.hub import Hub

__all__ = ["check_identity", "identity_job"]

log = structlog.get_logger(__name__)

#: At most this many other records are named in one link event.
_MAX_NAMED = 20


def _mrns(session: Session, identities: list[SourceIdentity]) -> list[str]:
    """The hub MRNs of the identities' records, sorted, without repeats."""
    ids = {identity.patient_record_id for identity in identities}
    query = select(PatientRecord.mrn).where(PatientRecord.id.in_(ids)).order_by(PatientRecord.mrn)
    return list(session.scalars(query))[:_MAX_NAMED]


def _same_id(session: Session, identity: SourceIdentity) -> list[SourceIdentity]:
    """Other source identities with this PatientID and issuer (other demographics)."""
    query = select(SourceIdentity).where(
        SourceIdentity.patient_id == identity.patient_id,
        SourceIdentity.issuer == identity.issuer,
        SourceIdentity.id != identity.id,
        SourceIdentity.patient_record_id != identity.patient_record_id,
    )
    return list(session.scalars(query.limit(_MAX_NAMED)))


def _same_person(session: Session, identity: SourceIdentity) -> list[SourceIdentity]:
    """Other source identities with the same normalised name, birth date and sex."""
    if not identity.name_norm or identity.birth_date is None:
        return []  # too little to go on: an empty name or date matches too many people
    query = select(SourceIdentity).where(
        SourceIdentity.name_norm == identity.name_norm,
        SourceIdentity.birth_date == identity.birth_date,
        SourceIdentity.id != identity.id,
        SourceIdentity.patient_record_id != identity.patient_record_id,
    )
    if identity.sex:
        query = query.where(SourceIdentity.sex == identity.sex)
    return list(session.scalars(query.limit(_MAX_NAMED)))


def check_identity(session: Session, source_identity_id: int) -> LinkState | None:
    """Flag a new source identity for review or as a conflict; the state it ends in.

    None when the identity does not exist. Runs in the caller's write transaction.
    """
    identity = session.get(SourceIdentity, source_identity_id, with_for_update=True)
    if identity is None:
        return None
    if identity.link_state != LinkState.NEW:
        return identity.link_state
    if others := _same_id(session, identity):
        state = LinkState.CONFLICT
        reason = "PatientID already received with other demographics; records " + ", ".join(
            _mrns(session, others)
        )
    elif others := _same_person(session, identity):
        state = LinkState.REVIEW
        reason = "same name, birth date and sex under another ID; records " + ", ".join(
            _mrns(session, others)
        )
    else:
        return identity.link_state
    identity.link_state = state
    session.add(
        IdentityLinkEvent(
            source_identity_id=identity.id,
            patient_record_id=identity.patient_record_id,
            state=state,
            actor="system",
            reason=reason,
        )
    )
    log.info("identity_flagged", source_identity_id=identity.id, state=str(state))
    return state


def identity_job(hub: Hub, payload: dict[str, Any]) -> None:
    """Job handler for kind 'identity'."""
    with hub.db.write() as session:
        check_identity(session, int(payload["source_identity_id"]))

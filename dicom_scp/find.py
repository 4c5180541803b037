"""C-FIND SCP: a thin translation from the DIMSE event to the core's query model (imaging_hub.qr).

Allowed statuses (PS3.4 C.4.1.1.4, PS3.7 C.5):
- 0xFF00 Pending: one per match, with its identifier (at most ``qr.MAX_MATCHES`` matches).
- 0x0000 Success: all matches sent (pynetdicom sends it when the handler's generator ends).
- 0xFE00 Cancel: a C-CANCEL arrived; checked before each match.
- 0x0124 Refused: Not Authorized: the calling AE may not query. The association stays up and
  its C-FIND contexts stay accepted, so the peer learns why (a rejected context says nothing).
- 0xA900 Identifier does not match SOP Class: missing or unsupported QueryRetrieveLevel, a
  PATIENT level query in the Study Root model, or a missing unique key of a higher level.
- 0xC000 Unable to process: a malformed matching value (bad date range, UID, integer).
- 0xC001 Unable to process: an unexpected error in the hub (logged, without PHI).
Every failure carries an Error Comment. The handler never raises to the peer.
Every C-FIND, answered or refused, writes one audit event (query, PS3.15 A.5.3.12) naming the
calling AE title, its address, the query level, the number of matches and the final status.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import structlog
from pydicom.dataset import Dataset
from pynetdicom.events import Event
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from dicom_scp.access import Access
from dicom_scp.status import (
    CANCEL,
    NOT_AUTHORIZED,
    PENDING,
    SUCCESS,
    find_failure,
    status_dataset,
)
from imaging_hub import audit
from imaging_hub.config import NodeService
from imaging_hub.hub import Hub
from imaging_hub.qr import MAX_MATCHES, Model, find, parse_identifier

__all__ = ["FIND_MODELS", "handle_find"]

log = structlog.get_logger(__name__)

#: The Query/Retrieve FIND SOP classes served, and the core's model of each.
FIND_MODELS = {
    str(PatientRootQueryRetrieveInformationModelFind): Model.PATIENT_ROOT,
    str(StudyRootQueryRetrieveInformationModelFind): Model.STUDY_ROOT,
}

FindResult = tuple[int | Dataset, Dataset | None]


def _audit(hub: Hub, event: Event, status: int | Dataset, level: str | None, sent: int) -> None:
    """One audit event for a C-FIND; the answer to the peer never waits on a failure here."""
    code = status if isinstance(status, int) else int(status.Status)
    if code in (SUCCESS, CANCEL):
        outcome = audit.SUCCESS
    elif code >= 0xC000:
        outcome = audit.SERIOUS_FAILURE
    else:
        outcome = audit.FAILURE
    detail: dict[str, Any] = {
        "event_action": audit.EXECUTE,
        "service": "C-FIND",
        "status": f"0x{code:04X}",
        "matches": sent,
        "model": str(event.request.AffectedSOPClassUID),
    }
    if level is not None:
        detail["level"] = level
    requestor = event.assoc.requestor
    try:
        audit.record_event(
            hub.db,
            actor=str(requestor.ae_title).strip() or "?",
            actor_kind=audit.ACTOR_KIND_AET,
            action=audit.QUERY,
            outcome=outcome,
            source_address=requestor.address,
            detail=detail,
        )
    except Exception:
        log.exception("find_audit_failed")


def handle_find(event: Event, hub: Hub, access: Access) -> Iterator[FindResult]:
    """C-FIND: search the index and stream one pending response per match."""
    calling = str(event.assoc.requestor.ae_title).strip()
    if not access.may(calling, event.assoc.requestor.address, NodeService.QUERY):
        log.info("find_refused", calling_aet=calling)
        _audit(hub, event, NOT_AUTHORIZED, None, 0)
        yield status_dataset(NOT_AUTHORIZED, "this AE title may not query"), None
        return
    try:
        model = FIND_MODELS[str(event.request.AffectedSOPClassUID)]
        query = parse_identifier(event.identifier, model, retrieve_aet=hub.settings.dicom_aet)
    except Exception as exc:  # a bad identifier becomes a status; nothing raises to the peer
        log.info("find_refused", calling_aet=calling, error=type(exc).__name__)
        failure = find_failure(exc)
        _audit(hub, event, failure, None, 0)
        yield failure, None
        return
    sent = 0
    level = query.level.value
    try:
        with hub.db.read() as session:
            for identifier in find(session, query, limit=MAX_MATCHES):
                if event.is_cancelled:
                    log.info("find_cancelled", calling_aet=calling, sent=sent)
                    _audit(hub, event, CANCEL, level, sent)
                    yield CANCEL, None
                    return
                sent += 1
                yield PENDING, identifier
    except Exception as exc:
        log.exception("find_failed", calling_aet=calling, sent=sent)
        failure = find_failure(exc)
        _audit(hub, event, failure, level, sent)
        yield failure, None
        return
    _audit(hub, event, SUCCESS, level, sent)
    log.info(
        "find_done",
        calling_aet=calling,
        level=level,
        matches=sent,
        truncated=sent >= MAX_MATCHES,
    )

"""C-GET SCP: instances named by the index sent back, as stored, over the requesting association.

The peer proposes the storage SOP classes it wants with SCP/SCU Role Selection (PS3.7 D.3.3.4,
the hub then acts as Storage SCU on them); an instance whose SOP class and transfer syntax (or
fallback, see ``imaging_hub.retrieve_dimse``) the peer did not accept fails its sub-operation.
On those contexts the hub accepts the first syntax the peer lists that it supports (see
``dicom_scp.negotiation``), so that a peer preferring a stored compressed syntax gets the stored
bytes.

Allowed statuses (PS3.4 C.4.3.1.4), besides the sub-operation replies of ``dicom_scp.retrieve``
(0xFF00 Pending with counts; final 0x0000, 0xB000, 0xA702 or 0xFE00):
- 0x0124 Refused: Not Authorized: the calling AE may not retrieve (an unknown AE only may
  under the ``all`` policy).
- 0xA900 Identifier does not match SOP Class: bad QueryRetrieveLevel, a missing unique key.
- 0xC000 Unable to process: a malformed UID. 0xA701: more than 65535 instances.
- 0xC001: an unexpected error in the hub (logged, without PHI).
Every C-GET writes an audit event (instances transferred) per study, or one when refused.
"""

from __future__ import annotations

from collections.abc import Iterator

import structlog
from pynetdicom.events import Event
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
)

from dicom_scp.access import Access
from dicom_scp.retrieve import (
    Counts,
    Reply,
    audit_retrieve,
    final_reply,
    hub_retrieve_handler,
    resolve_request,
)
from dicom_scp.status import NOT_AUTHORIZED
from dicom_scp.suboperations import no_delay, run_suboperations
from imaging_hub.config import NodeService
from imaging_hub.hub import Hub
from imaging_hub.qr import Model
from imaging_hub.retrieve_dimse import RetrieveSet

__all__ = ["GET_MODELS", "handle_get"]

log = structlog.get_logger(__name__)

#: The Query/Retrieve GET SOP classes served, and the core's model of each.
GET_MODELS = {
    str(PatientRootQueryRetrieveInformationModelGet): Model.PATIENT_ROOT,
    str(StudyRootQueryRetrieveInformationModelGet): Model.STUDY_ROOT,
}


@hub_retrieve_handler
def handle_get(event: Event, hub: Hub, access: Access) -> Iterator[Reply]:
    """C-GET: resolve the identifier in the index, then C-STORE each instance back to the peer."""
    calling = str(event.assoc.requestor.ae_title).strip()

    def finish(reply: Reply, found: RetrieveSet | None = None) -> Reply:
        audit_retrieve(hub, event, service="C-GET", reply=reply, found=found)
        return reply

    if not access.may(calling, event.assoc.requestor.address, NodeService.RETRIEVE):
        log.info("get_refused", calling_aet=calling, error="NotAuthorized")
        yield finish(Reply.refusal(NOT_AUTHORIZED, "this AE title may not retrieve"))
        return
    found = resolve_request(event, hub, GET_MODELS)
    if isinstance(found, Reply):
        yield finish(found)
        return
    counts = Counts(remaining=len(found.items))
    no_delay(event.assoc)
    yield from run_suboperations(event, hub, event.assoc, found.items, counts)
    reply = final_reply(counts)
    log.info(
        "get_done",
        calling_aet=calling,
        level=found.level.value,
        completed=counts.completed,
        failed=counts.failed,
        warning=counts.warning,
        status=f"0x{reply.status:04X}",
    )
    yield finish(reply, found)

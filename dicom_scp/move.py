"""C-MOVE SCP: instances named by the index sent, as stored, to a known move destination.

Allowed statuses (PS3.4 C.4.2.1.5), besides the sub-operation replies of ``dicom_scp.retrieve``
(0xFF00 Pending with counts; final 0x0000, 0xB000, 0xA702 or 0xFE00):
- 0x0124 Refused: Not Authorized: the calling AE may not retrieve (an unknown AE only may
  under the ``all`` policy).
- 0xA801 Refused: Move Destination unknown: not a known node with the ``move-destination``
  service and a host and port.
- 0xA900 Identifier does not match SOP Class: bad QueryRetrieveLevel, a missing unique key.
- 0xC000 Unable to process: a malformed UID. 0xA701: more than 65535 instances.
- 0xC001: an unexpected error in the hub (logged, without PHI).
A destination that cannot be reached fails every sub-operation (0xA702 with the counts).
Every C-MOVE writes an audit event (instances transferred) per study, or one when refused.
"""

from __future__ import annotations

from collections.abc import Iterator

import structlog
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
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
from dicom_scp.status import MOVE_DESTINATION_UNKNOWN, NOT_AUTHORIZED
from dicom_scp.suboperations import StoreChannel, no_delay, run_suboperations
from imaging_hub.config import DicomNode, NodeService
from imaging_hub.hub import Hub
from imaging_hub.qr import Model
from imaging_hub.retrieve_dimse import RetrieveSet, proposed_contexts

__all__ = ["MOVE_MODELS", "handle_move", "move_destination"]

log = structlog.get_logger(__name__)

#: The Query/Retrieve MOVE SOP classes served, and the core's model of each.
MOVE_MODELS = {
    str(PatientRootQueryRetrieveInformationModelMove): Model.PATIENT_ROOT,
    str(StudyRootQueryRetrieveInformationModelMove): Model.STUDY_ROOT,
}


def move_destination(access: Access, aet: str) -> DicomNode | None:
    """The known node a C-MOVE may send to under this AE title (with a host and a port)."""
    title = aet.strip()
    for node in access.nodes:
        usable = node.host is not None and node.port is not None
        if node.aet == title and NodeService.MOVE_DESTINATION in node.services and usable:
            return node
    return None


def _open_destination(
    event: Event, hub: Hub, node: DicomNode, found: RetrieveSet
) -> tuple[Association | None, StoreChannel]:
    """A new association to the destination proposing the stored syntaxes (None: unreachable)."""
    proposed = proposed_contexts(found.items)
    contexts = [build_context(sop_class, syntaxes) for sop_class, syntaxes in proposed]
    channel = StoreChannel(timeout=hub.settings.dicom_idle_timeout)
    assert node.host is not None and node.port is not None
    try:
        store = event.assoc.ae.associate(
            node.host,
            node.port,
            contexts=contexts,
            ae_title=node.aet,
            evt_handlers=channel.handlers(),
        )
    except Exception:  # an unknown host, say: like a refused connection
        log.exception("move_destination_failed", destination=node.aet)
        return None, channel
    if not store.is_established:
        return None, channel
    channel.assoc = store
    no_delay(store)
    return store, channel


@hub_retrieve_handler
def handle_move(event: Event, hub: Hub, access: Access) -> Iterator[Reply]:
    """C-MOVE: resolve the identifier in the index, then send each instance to the destination."""
    calling = str(event.assoc.requestor.ae_title).strip()
    target = str(event.request.MoveDestination or "").strip()

    def finish(reply: Reply, found: RetrieveSet | None = None) -> Reply:
        audit_retrieve(hub, event, service="C-MOVE", reply=reply, found=found, destination=target)
        return reply

    if not access.may(calling, event.assoc.requestor.address, NodeService.RETRIEVE):
        log.info("move_refused", calling_aet=calling, error="NotAuthorized")
        yield finish(Reply.refusal(NOT_AUTHORIZED, "this AE title may not retrieve"))
        return
    node = move_destination(access, target)
    if node is None:
        log.info("move_refused", calling_aet=calling, error="MoveDestinationUnknown")
        yield finish(Reply.refusal(MOVE_DESTINATION_UNKNOWN, "unknown move destination"))
        return
    found = resolve_request(event, hub, MOVE_MODELS)
    if isinstance(found, Reply):
        yield finish(found)
        return
    counts = Counts(remaining=len(found.items))
    no_delay(event.assoc)  # pending responses go out at once
    if found.items:
        store, channel = _open_destination(event, hub, node, found)
        if store is None:
            log.info("move_destination_unreachable", calling_aet=calling, destination=node.aet)
        try:
            yield from run_suboperations(
                event,
                hub,
                store,
                found.items,
                counts,
                send=channel.send,
                originator=(calling, int(event.request.MessageID)),
            )
        finally:
            if store is not None and store.is_established:
                store.release()
    reply = final_reply(counts)
    log.info(
        "move_done",
        calling_aet=calling,
        destination=node.aet,
        level=found.level.value,
        completed=counts.completed,
        failed=counts.failed,
        warning=counts.warning,
        status=f"0x{reply.status:04X}",
    )
    yield finish(reply, found)

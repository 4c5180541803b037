"""C-MOVE and C-GET plumbing shared by ``dicom_scp.move`` and ``dicom_scp.get``.

pynetdicom's own Query/Retrieve SCP re-encodes every instance it sends with pydicom (so a
deflated file changes bytes), can only answer 0xA801 before it has connected to the move
destination (no 0x0124 for a peer that may not retrieve), and turns an unreachable destination
into 0xA801 rather than failed sub-operations. The hub sends stored files byte for byte and
reports every outcome with its counts, so its C-MOVE and C-GET handlers drive the exchange
themselves: they are generators of :class:`Reply`, and :class:`HubQueryRetrieveService` sends
each reply as a C-MOVE-RSP or C-GET-RSP (PS3.7 9.1.3, 9.1.4). C-FIND and handlers not marked
with :func:`hub_retrieve_handler` keep pynetdicom's behaviour. The C-STORE sub-operations are
in ``dicom_scp.suboperations``.

Replies (PS3.4 C.4.2.1.5, C.4.3.1.4): 0xFF00 Pending after each sub-operation, with the
remaining, completed, failed and warning counts; the final one is 0x0000 Success, 0xB000
Warning (some sub-operations failed or warned; Failed SOP Instance UID List), 0xA702 Failure
(all failed; the list too), 0xFE00 Cancel (C-CANCEL; the counts so far and the list), or a
refusal without sub-operations (0x0124, 0xA801, 0xA900, 0xC000, 0xA701, 0xC001).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, TypeVar

import structlog
from pydicom.dataset import Dataset
from pynetdicom import association as _association
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import encode
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import QueryRetrieveServiceClass

from dicom_scp.status import (
    CANCEL,
    PENDING,
    SUBOPERATIONS_FAILED,
    SUBOPERATIONS_WARNING,
    SUCCESS,
    retrieve_failure,
)
from imaging_hub import audit
from imaging_hub.hub import Hub
from imaging_hub.qr import Model
from imaging_hub.retrieve_dimse import RetrieveSet, parse_retrieve_identifier, resolve

__all__ = [
    "Counts",
    "HubQueryRetrieveService",
    "Reply",
    "audit_retrieve",
    "final_reply",
    "hub_retrieve_handler",
    "install_retrieve_service",
    "resolve_request",
]

log = structlog.get_logger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: C-MOVE/C-GET handlers failed in an unexpected way (PS3.4 C.4.2.1.5: 0xC000-0xCFFF).
_MOVE_ERROR = 0xC511
_GET_ERROR = 0xC411


@dataclass
class Counts:
    """Sub-operation counts of one retrieve, and the SOP Instance UIDs that failed."""

    remaining: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)
    #: A C-CANCEL stopped the sub-operations.
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class Reply:
    """One C-MOVE-RSP or C-GET-RSP: status, counts (a copy), Failed SOP Instance UID List."""

    status: int
    remaining: int | None = None
    completed: int | None = None
    failed: int | None = None
    warning: int | None = None
    failed_uids: tuple[str, ...] | None = None
    comment: str | None = None

    @classmethod
    def of(cls, status: int, counts: Counts, *, final: bool = False) -> Reply:
        """A reply carrying counts; a final one omits Remaining (PS3.4 C.4.2.1.6)."""
        listed = status in (SUBOPERATIONS_WARNING, SUBOPERATIONS_FAILED, CANCEL)
        return cls(
            status=status,
            remaining=None if final and status != CANCEL else counts.remaining,
            completed=counts.completed,
            failed=counts.failed,
            warning=counts.warning,
            failed_uids=tuple(counts.failed_uids) if listed else None,
        )

    @classmethod
    def refusal(cls, status: int, comment: str) -> Reply:
        """A final reply refusing the operation before any sub-operation."""
        return cls(status, completed=0, failed=0, warning=0, comment=comment)

    @property
    def is_final(self) -> bool:
        """Every reply but Pending ends the operation."""
        return self.status != PENDING


def hub_retrieve_handler(handler: F) -> F:
    """Mark an EVT_C_MOVE/EVT_C_GET handler as a generator of :class:`Reply`."""
    handler.hub_retrieve = True  # type: ignore[attr-defined]
    return handler


class HubQueryRetrieveService(QueryRetrieveServiceClass):  # type: ignore[misc]
    """pynetdicom's Query/Retrieve service, with C-MOVE/C-GET driven by the hub's handlers."""

    def SCP(self, req: Any, context: PresentationContext) -> None:
        """Serve one request: hub retrieve handlers here, anything else as pynetdicom does."""
        kind = evt.EVT_C_MOVE if isinstance(req, C_MOVE) else evt.EVT_C_GET
        handler = self.assoc.get_handlers(kind)[0] if isinstance(req, C_MOVE | C_GET) else None
        if not getattr(handler, "hub_retrieve", False):
            super().SCP(req, context)
            return
        self._serve(req, context, kind)

    def _serve(self, req: C_MOVE | C_GET, context: PresentationContext, kind: Any) -> None:
        """Send each reply of the bound handler until a final one (or the association ends)."""
        move = isinstance(req, C_MOVE)
        attrs = {"request": req, "context": context.as_tuple, "_is_cancelled": self.is_cancelled}
        replies: Any = None
        try:
            replies = evt.trigger(self.assoc, kind, attrs)
            for reply in replies:
                if self._peer_gone():
                    log.info("retrieve_abandoned", service=req.msg_type)
                    return
                self._send(req, context, reply)
                if reply.is_final:
                    return
            log.error("retrieve_handler_without_final_reply", service=req.msg_type)
        except Exception:  # handlers are not expected to raise; the peer still gets an answer
            log.exception("retrieve_handler_failed", service=req.msg_type)
        finally:
            if replies is not None and hasattr(replies, "close"):
                replies.close()  # ends the handler: a C-MOVE releases its destination association
        if not self._peer_gone():
            with contextlib.suppress(Exception):  # the association may be going away
                self._send(req, context, Reply(_MOVE_ERROR if move else _GET_ERROR))

    def _peer_gone(self) -> bool:
        """Tell whether the peer aborted or asked to release (before the waiting reactor knows)."""
        acse = self.assoc.acse
        return not self.assoc.is_established or acse.is_aborted() or acse.is_release_requested()

    def _send(self, req: C_MOVE | C_GET, context: PresentationContext, reply: Reply) -> None:
        """Encode one reply as the response primitive of req and send it."""
        rsp = C_MOVE() if isinstance(req, C_MOVE) else C_GET()
        rsp.MessageIDBeingRespondedTo = req.MessageID
        rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
        rsp.Status = reply.status
        rsp.NumberOfRemainingSuboperations = reply.remaining
        rsp.NumberOfCompletedSuboperations = reply.completed
        rsp.NumberOfFailedSuboperations = reply.failed
        rsp.NumberOfWarningSuboperations = reply.warning
        if reply.comment:
            rsp.ErrorComment = reply.comment.replace("\\", "/")[:64]
        if reply.failed_uids is not None:
            ds = Dataset()
            ds.FailedSOPInstanceUIDList = list(reply.failed_uids)
            syntax = context.transfer_syntax[0]
            data = encode(ds, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
            rsp.Identifier = BytesIO(data or b"")
        self.dimse.send_msg(rsp, context.context_id)


_install_lock = threading.Lock()


def install_retrieve_service() -> None:
    """Have pynetdicom serve Query/Retrieve requests with HubQueryRetrieveService (idempotent).

    pynetdicom picks a request's service class by SOP Class UID with no way to register
    another, so the lookup its associations use is wrapped; requests without a hub retrieve
    handler are served exactly as before.
    """
    with _install_lock:
        current = _association.uid_to_service_class
        if getattr(current, "hub_retrieve", False):
            return

        def routed(uid: str) -> Any:
            found = current(uid)
            return HubQueryRetrieveService if found is QueryRetrieveServiceClass else found

        routed.hub_retrieve = True  # type: ignore[attr-defined]
        _association.uid_to_service_class = routed


def resolve_request(event: Event, hub: Hub, models: dict[str, Model]) -> RetrieveSet | Reply:
    """The instances a C-MOVE/C-GET identifier names in the index, or the refusal to answer."""
    try:
        model = models[str(event.request.AffectedSOPClassUID)]
        query = parse_retrieve_identifier(event.identifier, model)
        with hub.db.read() as session:
            return resolve(session, query)
    except Exception as exc:  # a bad identifier becomes a status; nothing raises to the peer
        status, comment = retrieve_failure(exc)
        log.info("retrieve_refused", error=type(exc).__name__)
        return Reply.refusal(status, comment)


def final_reply(counts: Counts) -> Reply:
    """Cancel, Success, Warning (some failed or warned) or Failure (all failed), PS3.4 C.4.2.1.5."""
    total = counts.completed + counts.failed + counts.warning
    if counts.cancelled:
        status = CANCEL
    elif counts.failed and counts.failed == total:
        status = SUBOPERATIONS_FAILED
    elif counts.failed or counts.warning:
        status = SUBOPERATIONS_WARNING
    else:
        status = SUCCESS
    return Reply.of(status, counts, final=True)


def audit_retrieve(
    hub: Hub,
    event: Event,
    *,
    service: str,
    reply: Reply,
    found: RetrieveSet | None,
    destination: str | None = None,
) -> None:
    """One audit event per study retrieved (instances transferred, PS3.15 A.5.3.2), or one."""
    if reply.status == SUCCESS:
        outcome = audit.SUCCESS
    elif reply.status == SUBOPERATIONS_FAILED or reply.status >= 0xC000:
        outcome = audit.SERIOUS_FAILURE
    else:
        outcome = audit.FAILURE
    detail: dict[str, Any] = {
        "event_action": audit.READ,
        "service": service,
        "status": f"0x{reply.status:04X}",
        "completed": reply.completed or 0,
        "failed": reply.failed or 0,
        "warning": reply.warning or 0,
    }
    if destination:
        detail["destination"] = destination
    if found is not None:
        detail["level"] = found.level.value
    requestor = event.assoc.requestor
    studies: list[str | None] = list(found.study_uids) if found and found.items else [None]
    try:
        for study_uid in studies:
            audit.record_event(
                hub.db,
                actor=str(requestor.ae_title).strip() or "?",
                actor_kind=audit.ACTOR_KIND_AET,
                action=audit.INSTANCES_TRANSFERRED,
                outcome=outcome,
                source_address=requestor.address,
                study_uid=study_uid,
                detail=detail,
            )
    except Exception:  # the answer to the peer does not wait on the audit trail
        log.exception("retrieve_audit_failed", service=service)

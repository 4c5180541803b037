"""C-STORE sub-operations of C-MOVE and C-GET: each stored file sent, and its outcome counted.

A C-GET sends over the requesting association, from its own handler (the association's reactor
waits meanwhile), with pynetdicom's send_c_store. A C-MOVE sends over an association the hub
opens to the destination, through :class:`StoreChannel`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from io import BytesIO
from typing import Any

import structlog
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode, split_dataset
from pynetdicom.events import Event
from pynetdicom.status import code_to_category

from dicom_scp.retrieve import Counts, Reply
from dicom_scp.status import PENDING
from imaging_hub.hub import Hub
from imaging_hub.retrieve import Delivery
from imaging_hub.retrieve_dimse import (
    FALLBACK_SYNTAXES,
    RetrieveItem,
    choose_delivery,
    fallback_dataset,
)

__all__ = ["Sender", "StoreChannel", "association_sender", "no_delay", "run_suboperations"]

log = structlog.get_logger(__name__)

#: Command Field of a C-STORE-RSP (PS3.7 E.1).
C_STORE_RSP = 0x8001


def no_delay(assoc: Association) -> None:
    """Send each DIMSE message at once (TCP_NODELAY): every sub-operation waits on an answer.

    With Nagle's algorithm, the last segment of a message waits for the peer's delayed ACK
    (about 40 ms), which would bound a retrieve to some 20 instances per second.
    """
    raw = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if isinstance(raw, socket.socket):
        with contextlib.suppress(OSError):  # a closed socket: the next send fails, counted
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _accepted_syntaxes(assoc: Association, sop_class: str) -> set[str]:
    """The transfer syntaxes the peer accepted for sop_class with this side as Storage SCU."""
    return {
        str(cx.transfer_syntax[0])
        for cx in assoc.accepted_contexts
        if cx.abstract_syntax == sop_class and cx.as_scu is True
    }


#: What sends one C-STORE: (payload, SOP class, SOP instance, msg_id, originator) -> status.
Sender = Callable[[Any, str, str, int, tuple[str, int] | None], Dataset]


def association_sender(assoc: Association) -> Sender:
    """C-STORE with pynetdicom's send_c_store, for the association whose handler is running.

    In a handler the association's reactor is not running, so nothing else reads its messages
    (C-GET sends its sub-operations back over the requesting association this way).
    """

    def send(
        payload: Any, sop_class: str, sop_uid: str, msg_id: int, orig: tuple[str, int] | None
    ) -> Dataset:
        aet, message_id = orig if orig else (None, None)
        return assoc.send_c_store(
            payload, msg_id=msg_id, originator_aet=aet, originator_id=message_id
        )

    return send


class StoreChannel:
    """C-STORE requests over an association the hub opened, answered through EVT_DIMSE_RECV.

    pynetdicom's send_c_store pauses the association's reactor thread around each request, but
    a reactor resuming from the previous pause can take the next response off the queue first
    (pynetdicom issue #875, "Received unexpected C-STORE service message"); the request then
    waits for the DIMSE timeout. Here each response is taken as soon as it is decoded, by
    message ID, so no thread can take it away; the reactor later discards its copy.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.assoc: Association | None = None
        self._lock = threading.Lock()
        self._waiting: dict[int, threading.Event] = {}
        self._answers: dict[int, Dataset] = {}

    def handlers(self) -> list[Any]:
        """The event handlers to bind to the association when it is requested."""
        return [(evt.EVT_DIMSE_RECV, self._on_message)]

    def _on_message(self, event: Event) -> None:
        """EVT_DIMSE_RECV (the association's reader thread): keep the C-STORE responses."""
        command = event.message.command_set
        if command.get("CommandField") != C_STORE_RSP:
            return
        msg_id = int(command.MessageIDBeingRespondedTo)
        with self._lock:
            done = self._waiting.pop(msg_id, None)
            if done is not None:
                self._answers[msg_id] = command
                done.set()

    def send(
        self, payload: Any, sop_class: str, sop_uid: str, msg_id: int, orig: tuple[str, int] | None
    ) -> Dataset:
        """One C-STORE: payload is a stored file (sent as it is) or a dataset (encoded)."""
        assoc = self.assoc
        if assoc is None or not assoc.is_established:
            raise RuntimeError("the association to the destination has ended")
        req = C_STORE()
        req.MessageID = msg_id
        req.AffectedSOPClassUID = sop_class
        req.AffectedSOPInstanceUID = sop_uid
        req.Priority = 2
        if orig is not None:
            req.MoveOriginatorApplicationEntityTitle, req.MoveOriginatorMessageID = orig
        if isinstance(payload, Dataset):
            syntax = payload.file_meta.TransferSyntaxUID
            context = _context(assoc, sop_class, [str(syntax), *FALLBACK_SYNTAXES])
            used = context.transfer_syntax[0]
            data = encode(payload, used.is_implicit_VR, used.is_little_endian, used.is_deflated)
            if data is None:
                raise ValueError("the dataset cannot be encoded")
            req.DataSet = BytesIO(data)
        else:
            file_meta, offset = split_dataset(payload)
            context = _context(assoc, sop_class, [str(file_meta.TransferSyntaxUID)])
            req._dataset_path = (payload, offset)  # sent from the file, as pynetdicom does
        done = threading.Event()
        with self._lock:
            self._waiting[msg_id] = done
        assoc.dimse.send_msg(req, context.context_id)
        deadline = time.monotonic() + self.timeout
        while not done.wait(0.05):
            if not assoc.is_established or time.monotonic() > deadline:
                with self._lock:
                    self._waiting.pop(msg_id, None)
                if assoc.is_established:
                    assoc.abort()  # a late answer must not be taken for the next request's
                return Dataset()
        with self._lock:
            return self._answers.pop(msg_id)


def _context(assoc: Association, sop_class: str, syntaxes: list[str]) -> Any:
    """The accepted context for sop_class in the first of syntaxes accepted (ValueError)."""
    for syntax in syntaxes:
        for cx in assoc.accepted_contexts:
            if cx.abstract_syntax == sop_class and cx.as_scu and cx.transfer_syntax[0] == syntax:
                return cx
    raise ValueError("no accepted presentation context for this instance")


def _store_one(
    assoc: Association,
    send: Sender,
    hub: Hub,
    item: RetrieveItem,
    *,
    msg_id: int,
    originator: tuple[str, int] | None,
) -> str:
    """One C-STORE sub-operation; its category (Success, Warning or Failure)."""
    accepted = _accepted_syntaxes(assoc, item.sop_class_uid)
    delivery = choose_delivery(item.transfer_syntax_uid, accepted)
    if delivery is None:
        log.info("suboperation_failed", sop_instance_uid=item.sop_instance_uid, error="NoContext")
        return "Failure"
    path = hub.store.local_path(item.key)
    try:
        # A path is sent from the file as stored; a transcoded dataset is encoded for the
        # accepted context.
        payload: Any = path if delivery == Delivery.AS_STORED else fallback_dataset(path)
        status = send(payload, item.sop_class_uid, item.sop_instance_uid, msg_id, originator)
    except Exception as exc:  # a lost peer or an unreadable file fails this sub-operation only
        log.info(
            "suboperation_failed", sop_instance_uid=item.sop_instance_uid, error=type(exc).__name__
        )
        return "Failure"
    code = int(status.Status) if "Status" in status else None
    category = code_to_category(code) if code is not None else "Failure"
    if category not in ("Success", "Warning"):
        log.info("suboperation_failed", sop_instance_uid=item.sop_instance_uid, status=code)
        return "Failure"
    return str(category)


def run_suboperations(
    event: Event,
    hub: Hub,
    assoc: Association | None,
    items: Iterable[RetrieveItem],
    counts: Counts,
    *,
    send: Sender | None = None,
    originator: tuple[str, int] | None = None,
) -> Iterator[Reply]:
    """Send items over assoc one by one, yielding a Pending reply after each.

    Stops at a C-CANCEL (``counts.cancelled``); without an association (the destination could
    not be reached) every item fails. The final reply is the caller's (see ``final_reply``).
    """
    msg_id = int(event.request.MessageID)
    for item in items:
        if event.is_cancelled:
            counts.cancelled = True
            return
        msg_id = msg_id % 65535 + 1
        category = (
            "Failure"
            if assoc is None
            else _store_one(
                assoc,
                send or association_sender(assoc),
                hub,
                item,
                msg_id=msg_id,
                originator=originator,
            )
        )
        counts.remaining -= 1
        if category == "Success":
            counts.completed += 1
        elif category == "Warning":
            counts.warning += 1
        else:
            counts.failed += 1
            counts.failed_uids.append(item.sop_instance_uid)
        yield Reply.of(PENDING, counts)

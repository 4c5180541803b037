"""Event handlers: thin translations between DIMSE events and the core.

Allowed statuses (PS3.4):
- C-ECHO: 0x0000 Success.
- C-STORE: 0x0000 Success (bytes fsync'd and the index job committed; with the duplicate
  policy ``keep-first``, other bytes under a stored UID fsync'd in quarantine instead);
  0x0124 Refused: Not Authorized (a known node without the ``store`` service, or an unknown AE
  when the policy lets unknown AEs do nothing but C-ECHO; nothing is stored); 0xA700 Out of
  Resources (disk below the floor or full, or instance too large); 0xA900 Data Set does not
  match SOP Class (the dataset's SOP Class is not the announced or negotiated one, or a
  different version of an instance the duplicate policy refuses); 0xC000 Cannot understand
  (undecodable data, missing, malformed or mismatched UIDs); 0x0110 Processing failure
  (unexpected error). Handlers never raise to the peer.
- A dataset cut off by an abort or a dropped connection gets no status (there is no peer to
  answer); its partial bytes are quarantined with the reason when the connection closes.
"""

from __future__ import annotations

from pathlib import Path

import structlog
from pydicom.dataset import Dataset
from pynetdicom.events import Event

from dicom_scp.access import Access
from dicom_scp.spooling import DiscardedSpool, is_discarded
from dicom_scp.status import (
    NOT_AUTHORIZED,
    OUT_OF_RESOURCES,
    SUCCESS,
    status_dataset,
    store_failure,
)
from imaging_hub.config import NodeService
from imaging_hub.errors import HubError
from imaging_hub.hub import Hub
from imaging_hub.ingest import store_instance
from imaging_hub.storage.quarantine import quarantine_file

__all__ = ["handle_conn_close", "handle_echo", "handle_store"]

log = structlog.get_logger(__name__)


def handle_echo(event: Event) -> int:
    """C-ECHO: always Success."""
    return SUCCESS


def handle_store(event: Event, hub: Hub, access: Access | None = None) -> int | Dataset:
    """C-STORE: store the received file through the core's single ingest path."""
    request = event.request
    calling = event.assoc.requestor.ae_title
    address = event.assoc.requestor.address
    if access is not None and not access.may(calling, address, NodeService.STORE):
        log.info("store_refused", calling_aet=calling, error="NotAuthorized")
        return status_dataset(NOT_AUTHORIZED, "this AE title may not store")
    spool = getattr(request, "_dataset_file", None)
    if is_discarded(spool):
        return _discarded(spool, hub, calling)
    try:
        store_instance(
            hub,
            Path(event.dataset_path),
            source="dimse",
            source_detail=calling,
            expected_sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
            expected_sop_class_uid=str(request.AffectedSOPClassUID or ""),
            negotiated_sop_class_uid=str(event.context.abstract_syntax or ""),
            spooled=True,  # pynetdicom's spool file: linked into storage, not copied
        )
    except Exception as exc:  # every error becomes a status; nothing raises to the peer
        if isinstance(exc, HubError):
            log.info("store_refused", calling_aet=calling, error=type(exc).__name__)
        else:
            log.exception("store_failed", calling_aet=calling)
        return store_failure(exc)
    return SUCCESS


def _discarded(spool: DiscardedSpool, hub: Hub, calling: str) -> Dataset:
    """The status of a C-STORE whose dataset was dropped while it arrived (see spooling)."""
    if not spool.too_large:
        log.info("store_refused", calling_aet=calling, error="StorageFull")
        return status_dataset(OUT_OF_RESOURCES, "free disk space fell below the floor")
    limit = hub.settings.ingest_max_bytes
    reason = f"the dataset exceeds the limit of {limit} bytes (dropped while it arrived)"
    detail = {"source": "dimse", "source_detail": calling}
    quarantine_file(hub.settings.quarantine_dir, None, reason=reason, detail=detail)
    log.info("store_refused", calling_aet=calling, error="TooLarge")
    return status_dataset(OUT_OF_RESOURCES, reason)


def handle_conn_close(event: Event, hub: Hub) -> None:
    """EVT_CONN_CLOSE: quarantine a C-STORE dataset the connection ended in the middle of.

    A connection closed before it asked for an association (a port check, say) ends its
    association thread at once: pynetdicom would keep the thread waiting for an A-ASSOCIATE-RQ
    until the ACSE timeout, counted against the maximum number of associations.
    """
    assoc = event.assoc
    if assoc.is_acceptor and assoc.requestor.primitive is None:
        assoc.dul.to_user_queue.put(None)  # the association stops waiting, as on a timeout
        return
    # pynetdicom spools a C-STORE dataset to a temp file while its fragments arrive; a message
    # still being decoded when the connection closes was cut off (abort, drop or idle timeout).
    message = getattr(event.assoc.dimse, "message", None)
    partial = getattr(message, "_data_set_file", None)
    if partial is None:
        return
    if is_discarded(partial):  # already dropped (too large, or short of space): nothing to keep
        Path(partial.name).unlink(missing_ok=True)
        return
    path = Path(partial.name)
    try:
        partial.close()
        message._data_set_file = None  # type: ignore[union-attr]
        calling = event.assoc.requestor.ae_title
        quarantine_file(
            hub.settings.quarantine_dir,
            path,
            reason="the connection ended in the middle of a C-STORE dataset (truncated)",
            detail={"source": "dimse", "source_detail": calling},
        )
        log.warning("instance_truncated", calling_aet=calling, bytes=path.stat().st_size)
    except Exception:  # nothing raises out of a handler
        log.exception("truncated_dataset_not_kept")
    finally:
        path.unlink(missing_ok=True)

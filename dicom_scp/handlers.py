"""Event handlers: thin translations between DIMSE events and the core.

Allowed statuses (PS3.4):
- C-ECHO: 0x0000 Success.
- C-STORE: 0x0000 Success (bytes fsync'd and the index job committed); 0x0124 Refused: Not
  Authorized (a known node without the ``store`` service, or an unknown AE when the policy lets
  unknown AEs do nothing but C-ECHO; nothing is stored); 0xA700 Out of Resources
  (disk below the floor, or instance too large); 0xA900 Data Set does not match SOP Class
  (a different version of an instance the duplicate policy refuses); 0xC000 Cannot understand
  (undecodable data, missing or mismatched UIDs); 0x0110 Processing failure (unexpected error).
Handlers never raise to the peer.
"""

from __future__ import annotations

from pathlib import Path

import structlog
from pydicom.dataset import Dataset
from pynetdicom.events import Event

from dicom_scp.access import Access
from dicom_scp.status import NOT_AUTHORIZED, SUCCESS, status_dataset, store_failure
from imaging_hub.config import NodeService
from imaging_hub.errors import HubError
from imaging_hub.hub import Hub
from imaging_hub.ingest import store_instance

__all__ = ["handle_echo", "handle_store"]

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
    try:
        store_instance(
            hub,
            Path(event.dataset_path),
            source="dimse",
            source_detail=calling,
            expected_sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
            expected_sop_class_uid=str(request.AffectedSOPClassUID or ""),
        )
    except Exception as exc:  # every error becomes a status; nothing raises to the peer
        if isinstance(exc, HubError):
            log.info("store_refused", calling_aet=calling, error=type(exc).__name__)
        else:
            log.exception("store_failed", calling_aet=calling)
        return store_failure(exc)
    return SUCCESS

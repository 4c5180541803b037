"""Observability of the receiver: one log line per association, and the receiver's metrics.

The line ``association_ended`` names the calling and called AE titles, the peer's address, the
receiving process (pid), the instances stored and their bytes, failures by reason, the outcome
and the duration; never patient data. Counters go to imaging_hub.metrics (``/metrics``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.events import Event

from dicom_scp.access import Access
from dicom_scp.handlers import handle_store
from dicom_scp.status import (
    CANNOT_UNDERSTAND,
    DATASET_MISMATCH,
    NOT_AUTHORIZED,
    OUT_OF_RESOURCES,
    SUCCESS,
    UNABLE_TO_PROCESS,
)
from imaging_hub.hub import Hub
from imaging_hub.metrics import ReceiverMetrics, metrics_dir

__all__ = ["FAILURE_REASONS", "ReceiverObserver"]

log = structlog.get_logger(__name__)

#: C-STORE failure status -> the reason label of ``hub_dicom_store_failures_total``.
FAILURE_REASONS = {
    NOT_AUTHORIZED: "not_authorized",
    OUT_OF_RESOURCES: "out_of_resources",
    DATASET_MISMATCH: "dataset_mismatch",
    CANNOT_UNDERSTAND: "cannot_understand",
    UNABLE_TO_PROCESS: "processing_failure",
}
#: The reason of a dataset the connection ended in the middle of.
TRUNCATED = "truncated"


@dataclass
class _Stats:
    started: float
    established: bool = False
    outcome: str = "closed"
    instances: int = 0
    bytes: int = 0
    failures: dict[str, int] = field(default_factory=dict)


def _status_code(status: int | Dataset) -> int:
    return int(status.Status) if isinstance(status, Dataset) else int(status)


class ReceiverObserver:
    """Event handlers that count each association's work and log it when it ends."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.metrics = ReceiverMetrics(metrics_dir(hub.settings.data_dir))

    def handlers(self, access: Access) -> list[Any]:
        """The (event, handler, args) bindings; C-STORE goes through handle_store."""
        return [
            (evt.EVT_CONN_OPEN, self._on_open),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_RELEASED, self._on_outcome, ["released"]),
            (evt.EVT_ABORTED, self._on_outcome, ["aborted"]),
            (evt.EVT_REJECTED, self._on_outcome, ["rejected"]),
            (evt.EVT_C_STORE, self._on_store, [access]),
            # Before handlers.handle_conn_close, which takes a cut-off dataset away.
            (evt.EVT_CONN_CLOSE, self._on_close),
        ]

    def _stats(self, event: Event) -> _Stats:
        stats: _Stats | None = getattr(event.assoc, "_hub_stats", None)
        if stats is None:
            stats = _Stats(started=time.monotonic())
            event.assoc._hub_stats = stats
        return stats

    def _on_open(self, event: Event) -> None:
        self._stats(event)

    def _on_established(self, event: Event) -> None:
        self._stats(event).established = True
        self.metrics.association_started()

    def _on_outcome(self, event: Event, outcome: str) -> None:
        self._stats(event).outcome = outcome

    def _on_store(self, event: Event, access: Access) -> int | Dataset:
        """C-STORE through handle_store, counting its outcome."""
        try:  # the spooled file may be moved into storage by the handler: size it first
            size = os.stat(event.dataset_path).st_size
        except (OSError, AttributeError, TypeError):
            size = 0
        status = handle_store(event, self.hub, access)
        stats, code = self._stats(event), _status_code(status)
        if code == SUCCESS:
            stats.instances += 1
            stats.bytes += size
            self.metrics.stored(size)
        else:
            self._failed(stats, FAILURE_REASONS.get(code, f"status_{code:04x}"))
        return status

    def _failed(self, stats: _Stats, reason: str) -> None:
        stats.failures[reason] = stats.failures.get(reason, 0) + 1
        self.metrics.failed(reason)

    def _on_close(self, event: Event) -> None:
        """Count a cut-off dataset, log the association's line, update the gauge."""
        try:
            stats = self._stats(event)
            message = getattr(event.assoc.dimse, "message", None)
            if getattr(message, "_data_set_file", None) is not None:
                self._failed(stats, TRUNCATED)
            requestor = event.assoc.requestor
            log.info(
                "association_ended",
                calling_aet=requestor.ae_title or None,
                called_aet=event.assoc.acceptor.ae_title or None,
                peer=f"{requestor.address}:{requestor.port}",
                pid=os.getpid(),
                outcome=stats.outcome,
                instances=stats.instances,
                bytes=stats.bytes,
                failures=sum(stats.failures.values()),
                failure_reasons=dict(sorted(stats.failures.items())) or None,
                duration_s=round(time.monotonic() - stats.started, 3),
            )
            if stats.established:
                self.metrics.association_ended()
        except Exception:  # nothing raises out of a handler
            log.exception("association_not_logged")

    def watch(self, is_serving: Callable[[], bool]) -> None:
        """Write the metrics snapshot in the background while is_serving() is true."""
        self.metrics.run_flusher(is_serving)

    def close(self) -> None:
        """Stop writing metrics (the last snapshot shows the process stopped)."""
        self.metrics.close()

"""Relay and reaper: publish queued jobs to the broker, and recover work whose worker died."""

from __future__ import annotations

import threading
import time

import structlog
from celery import Celery

from imaging_hub.hub import Hub
from imaging_hub.jobs import FAST, claim_for_publish, reap, unpublish
from imaging_hub.metrics import metrics_dir
from imaging_hub.work import ReceiverYield
from workers.app import TASK_NAME

__all__ = ["Relay"]

log = structlog.get_logger(__name__)

REAP_EVERY_SECONDS = 2.0
ERROR_BACKOFF_SECONDS = 5.0


class Relay(threading.Thread):
    """A daemon thread: every interval, send due jobs to their queue; now and then, reap.

    While a DICOM receiver on this host has associations open, only the fast queue's jobs are
    sent (for at most HUB_WORKER_YIELD_SECONDS in a row): previews and imports wait in the job
    table, and sending their messages costs no CPU while the receivers need it.
    """

    def __init__(self, hub: Hub, app: Celery) -> None:
        super().__init__(name="hub-relay", daemon=True)
        self.hub = hub
        self.app = app
        self.stopping = threading.Event()
        self._last_reap = 0.0
        settings = hub.settings
        self.held = ReceiverYield(metrics_dir(settings.data_dir), settings.worker_yield_seconds)

    def run(self) -> None:
        """Loop until stop() is called; errors are logged and the loop goes on."""
        interval = self.hub.settings.jobs_relay_interval
        while not self.stopping.is_set():
            try:
                sent = self.relay_once()
                if time.monotonic() - self._last_reap >= REAP_EVERY_SECONDS:
                    self.reap_once()
            except Exception:
                log.exception("relay_error")
                # Back off so that a persistent fault (database down) does not flood the log.
                self.stopping.wait(ERROR_BACKOFF_SECONDS)
                continue
            if not sent:
                self.stopping.wait(interval)

    def relay_once(self) -> int:
        """Publish the due queued jobs; put back those the broker did not take."""
        queues = [FAST] if self.held.holding() else None
        claimed = claim_for_publish(
            self.hub.db, max_in_flight=self.hub.settings.jobs_max_in_flight, queues=queues
        )
        for position, (job_id, queue) in enumerate(claimed):
            try:
                self.app.send_task(TASK_NAME, args=[job_id], queue=queue, retry=False)
            except Exception as exc:
                unpublish(self.hub.db, [j for j, _ in claimed[position:]])
                log.warning("broker_unavailable", error=type(exc).__name__, pending=len(claimed))
                return 0
        return len(claimed)

    def reap_once(self) -> None:
        """Re-queue jobs of dead workers and lost messages."""
        self._last_reap = time.monotonic()
        result = reap(self.hub.db, publish_timeout=self.hub.settings.jobs_publish_timeout)
        if result.requeued or result.failed or result.republished:
            log.info(
                "jobs_reaped",
                requeued=result.requeued,
                failed=result.failed,
                republished=result.republished,
            )

    def stop(self) -> None:
        """Ask the loop to end."""
        self.stopping.set()

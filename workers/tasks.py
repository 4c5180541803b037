"""The one task: run a job of the job table by its ID."""

from __future__ import annotations

import os
import socket
import threading

import structlog
from celery import Celery

from imaging_hub.config import Settings
from imaging_hub.hub import Hub
from imaging_hub.metrics import metrics_dir
from imaging_hub.work import BatchPacer, ReceiverYield, run_job
from workers.app import TASK_NAME

__all__ = ["register_tasks"]

log = structlog.get_logger(__name__)


class _ProcessHub:
    """One Hub per process, opened on first use (so that forked pool children get their own)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._hub: Hub | None = None
        self._pid = 0
        # Threads of the threads pool share the Hub; the lock keeps two from each opening one.
        self._lock = threading.Lock()

    def get(self) -> Hub:
        """This process's Hub, opened by the first caller."""
        with self._lock:
            pid = os.getpid()
            if self._hub is None or self._pid != pid:
                self._hub = Hub.open(self.settings)
                self._pid = pid
            return self._hub


def register_tasks(app: Celery, settings: Settings, *, yield_to_receivers: bool = False) -> None:
    """Register run_job on app; tasks take a job ID and call the core, nothing more.

    yield_to_receivers: each job first waits while this host's receivers are busy (see
    ReceiverYield), at most HUB_WORKER_YIELD_SECONDS in a row.
    """
    hubs = _ProcessHub(settings)
    owner_prefix = socket.gethostname()
    metrics = metrics_dir(settings.data_dir)
    held = ReceiverYield(metrics, settings.worker_yield_seconds)
    pacer = BatchPacer(metrics, settings.jobs_batch_interval)

    # shared=False: Celery would otherwise also register this closure on every app made later in
    # the process, and the first registration wins there over that app's own settings.
    @app.task(name=TASK_NAME, acks_late=True, ignore_result=True, shared=False)
    def run_job_task(job_id: int) -> str:
        if yield_to_receivers:
            waited = held.wait()
            if waited >= 1.0:
                log.info("job_held_back", job_id=job_id, seconds=round(waited, 1))
        # One owner per thread: the threads pool runs several jobs in one process at once.
        owner = f"{owner_prefix}:{os.getpid()}:{threading.get_ident()}"
        outcome = run_job(hubs.get(), int(job_id), owner=owner, pace=pacer.wait)
        log.info("job_run", job_id=job_id, outcome=outcome)
        return outcome

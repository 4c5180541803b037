"""The Celery application, configured from the hub's settings."""

from __future__ import annotations

import tempfile

from celery import Celery
from kombu import Exchange, Queue

from imaging_hub.config import Settings
from imaging_hub.jobs import FAST, SLOW

__all__ = ["QUEUES", "TASK_NAME", "make_celery"]

TASK_NAME = "imaging_hub.run_job"
QUEUES = (FAST, SLOW)


def _embedded_broker(settings: Settings) -> dict[str, object]:
    """A server-less broker: messages are files in the data dir (not in the index database)."""
    root = settings.broker_dir.resolve()
    for name in ("messages", "staging", "control", "taken"):
        (root / name).mkdir(parents=True, exist_ok=True)
    # The transport moves a message it takes into the temp dir before reading it; on the same
    # filesystem that move is an atomic rename, so two workers never take the same message.
    tempfile.tempdir = str(root / "taken")
    return {
        "broker_url": "filesystem://",
        "broker_transport": "workers.broker:AtomicFilesystemTransport",
        "broker_transport_options": {
            "staging_folder": str(root / "staging"),
            "data_folder_in": str(root / "messages"),
            "data_folder_out": str(root / "messages"),
            "control_folder": str(root / "control"),
            "store_processed": False,
            "polling_interval": 0.05,
        },
        "worker_enable_remote_control": False,
    }


def make_celery(settings: Settings) -> Celery:
    """A Celery app on the configured broker (embedded when none is set) with the hub's queues."""
    app = Celery("imaging_hub", set_as_current=False)
    if settings.embedded_broker:
        broker = _embedded_broker(settings)
    else:
        broker = {
            "broker_url": settings.broker_url,
            # Redis: a message taken by a worker that died comes back after this; the job
            # table's reaper normally re-queues the job long before.
            "broker_transport_options": {"visibility_timeout": 3600},
        }
    app.conf.update(
        broker,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # A worker reserves a few messages per slot: the file broker hands out messages only
        # between polls, so a slot that waited for the next poll would idle. A message held by
        # a worker that dies is re-published by the reaper from the job table.
        worker_prefetch_multiplier=8,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_queues=[Queue(name, Exchange(name), routing_key=name) for name in QUEUES],
        task_default_queue=FAST,
        task_create_missing_queues=False,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
    )
    return app

"""The ``imaging-hub worker`` command: a Celery worker plus the relay and reaper."""

from __future__ import annotations

import os

import click
from celery import signals

from imaging_hub.cli import open_checked_hub, pass_settings
from imaging_hub.config import Settings
from imaging_hub.hub import Hub
from workers.app import QUEUES, make_celery
from workers.relay import Relay
from workers.tasks import register_tasks

__all__ = ["worker"]

RELAY_JOIN_SECONDS = 10.0


@click.command()
@click.option("--queues", default=",".join(QUEUES), show_default=True, help="Queues to consume.")
@click.option("--concurrency", type=int, default=None, help="Worker processes (default: setting).")
@click.option("--relay/--no-relay", default=True, show_default=True, help="Also run the relay.")
@click.option(
    "--nice",
    type=click.IntRange(0, 19),
    default=0,
    show_default=True,
    help="Lower this worker's CPU priority by this much (e.g. for previews beside receivers).",
)
@click.option(
    "--yield-to-receivers",
    is_flag=True,
    help="Before each job, wait while this host's DICOM receivers have associations open "
    "(at most HUB_WORKER_YIELD_SECONDS in a row).",
)
@click.option(
    "--pool",
    type=click.Choice(["threads", "prefork"]),
    default="threads",
    show_default=True,
    help="threads: light, stops quickly; prefork: one process per slot, for CPU-heavy queues.",
)
@pass_settings
def worker(
    settings: Settings,
    queues: str,
    concurrency: int | None,
    relay: bool,
    nice: int,
    yield_to_receivers: bool,
    pool: str,
) -> None:
    """Run a worker that executes jobs (and, by default, the relay and reaper)."""
    if nice:
        os.nice(nice)
    open_checked_hub(settings).close()
    app = make_celery(settings)
    register_tasks(app, settings, yield_to_receivers=yield_to_receivers)
    relay_thread: list[Relay] = []

    @signals.worker_ready.connect(weak=False)
    def _start_relay(**_: object) -> None:
        if relay:
            thread = Relay(Hub.open(settings), app)
            thread.start()
            relay_thread.append(thread)

    @signals.worker_shutdown.connect(weak=False)
    def _stop_relay(**_: object) -> None:
        for thread in relay_thread:
            thread.stop()
            thread.join(timeout=RELAY_JOIN_SECONDS)
            thread.hub.close()

    argv = [
        "worker",
        f"--queues={queues}",
        f"--concurrency={concurrency or settings.worker_concurrency}",
        f"--loglevel={settings.log_level}",
        "--without-gossip",
        "--without-mingle",
        f"--pool={pool}",
    ]
    if settings.embedded_broker:
        argv.append("--without-heartbeat")
    app.worker_main(argv)

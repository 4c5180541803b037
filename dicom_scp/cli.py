"""The ``imaging-hub scp`` command: one receiver process, or several sharing the port."""

from __future__ import annotations

import sys

import click

from dicom_scp.server import release_spool, start
from imaging_hub.cli import hub_command, open_checked_hub, pass_settings
from imaging_hub.config import Settings
from imaging_hub.process import wait_for_stop_signal
from imaging_hub.supervisor import SHARED_PORT_OPTION, Supervisor, receiver_commands

__all__ = ["scp"]


@click.command()
@click.option(
    SHARED_PORT_OPTION,
    "shared_port",
    is_flag=True,
    hidden=True,
    help="Run one receiver that shares the port with others (SO_REUSEPORT).",
)
@pass_settings
def scp(settings: Settings, shared_port: bool) -> None:
    """Run the DICOM receiver alone (C-ECHO, C-STORE, C-FIND) until SIGINT or SIGTERM.

    With ``HUB_DICOM_PROCESSES`` above 1 (or automatic on a machine with several CPUs) this
    process supervises that many receiver processes listening on the same port.
    """
    hub = open_checked_hub(settings)  # refuses an index that is not migrated, once, here
    processes = settings.receiver_processes
    if processes > 1 and not shared_port:
        hub.close()
        supervisor = Supervisor(receiver_commands(hub_command(settings), processes), env={})
        sys.exit(supervisor.run())
    server = start(hub, block=False, shared_port=shared_port)
    assert server is not None
    try:
        wait_for_stop_signal()
    finally:
        server.shutdown()
        release_spool(settings)
        hub.close()

"""The ``imaging-hub scp`` command: one receiver process, or several sharing the port."""

from __future__ import annotations

import sys

import click

from dicom_scp.server import release_spool, start
from imaging_hub.cli import cannot_listen, open_checked_hub, pass_settings, receiver_children
from imaging_hub.config import Settings
from imaging_hub.process import wait_for_stop_signal
from imaging_hub.supervisor import LISTEN_FD_OPTION, Supervisor

__all__ = ["scp"]


@click.command()
@click.option(
    LISTEN_FD_OPTION,
    "listen_fd",
    type=int,
    default=None,
    hidden=True,
    help="Accept on this inherited listening socket, shared with other receiver processes.",
)
@pass_settings
def scp(settings: Settings, listen_fd: int | None) -> None:
    """Run the DICOM receiver alone (C-ECHO, C-STORE, C-FIND) until SIGINT or SIGTERM.

    With ``HUB_DICOM_PROCESSES`` above 1 (or automatic on a machine with several CPUs) this
    process supervises that many receiver processes listening on the same port.
    """
    hub = open_checked_hub(settings)  # refuses an index that is not migrated, once, here
    processes = settings.receiver_processes
    if processes > 1 and listen_fd is None:
        hub.close()
        children = receiver_children(settings)
        sys.exit(Supervisor(children.commands, env={}, pass_fds=children.pass_fds).run())
    try:
        server = start(hub, block=False, listen_fd=listen_fd)
    except OSError as exc:
        hub.close()
        raise cannot_listen(settings, exc) from None
    assert server is not None
    try:
        wait_for_stop_signal()
    finally:
        server.shutdown()
        release_spool(settings)
        hub.close()

"""The ``imaging-hub scp`` command."""

from __future__ import annotations

import click

from dicom_scp.server import release_spool, start
from imaging_hub.cli import open_checked_hub, pass_settings
from imaging_hub.config import Settings
from imaging_hub.process import wait_for_stop_signal

__all__ = ["scp"]


@click.command()
@pass_settings
def scp(settings: Settings) -> None:
    """Run the DICOM receiver alone (C-ECHO, C-STORE) until SIGINT or SIGTERM."""
    hub = open_checked_hub(settings)
    server = start(hub, block=False)
    assert server is not None
    try:
        wait_for_stop_signal()
    finally:
        server.shutdown()
        release_spool(settings)
        hub.close()

"""The ``imaging-hub scp`` command."""

from __future__ import annotations

import click

from dicom_scp.server import start
from imaging_hub.cli import pass_settings
from imaging_hub.config import Settings
from imaging_hub.errors import ConfigError
from imaging_hub.hub import Hub
from imaging_hub.process import wait_for_stop_signal

__all__ = ["scp"]


@click.command()
@pass_settings
def scp(settings: Settings) -> None:
    """Run the DICOM receiver alone (C-ECHO, C-STORE) until SIGINT or SIGTERM."""
    try:
        hub = Hub.open(settings, check_schema=True)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    server = start(hub, block=False)
    assert server is not None
    try:
        wait_for_stop_signal()
    finally:
        server.shutdown()
        hub.close()

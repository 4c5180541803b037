"""``imaging-hub api``: serve the HTTP app alone (for scale-out), with uvicorn."""

from __future__ import annotations

import copy
import logging
from typing import Any

import click
import uvicorn
from uvicorn.config import LOGGING_CONFIG

from imaging_hub.cli import open_checked_hub, pass_settings
from imaging_hub.config import Settings
from viewer_api.app import create_app

__all__ = ["DropQueryString", "api", "log_config"]


class DropQueryString(logging.Filter):
    """Cut the query string out of access log lines: it can hold patient names and IDs."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite uvicorn's access record ``(client, method, path?query, version, status)``."""
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], *args[3:])
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging configuration with query strings dropped from the access log."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["no_query"] = {"()": DropQueryString}
    config["handlers"]["access"]["filters"] = ["no_query"]
    return config


@click.command()
@pass_settings
def api(settings: Settings) -> None:
    """Serve DICOMweb, the REST API and health endpoints over HTTP."""
    open_checked_hub(settings).close()
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=log_config(),
        log_level=settings.log_level.lower(),
    )

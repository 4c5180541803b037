"""Readiness checks: can this process reach the index database, the storage and the broker?

Framework-free on purpose: a broker server is probed with a plain TCP connect, so the core
imports neither kombu nor Celery. Error strings name hosts and ports, never credentials.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from imaging_hub.hub import Hub

__all__ = ["BROKER_TIMEOUT", "OK", "check_broker", "check_database", "check_dir", "readiness"]

OK = "ok"
#: Seconds to wait for a broker server to accept a TCP connection.
BROKER_TIMEOUT = 1.0
#: Default ports of the broker schemes that are probed; other transports are not checked.
_BROKER_PORTS = {"redis": 6379, "rediss": 6379, "amqp": 5672, "amqps": 5671}


def _describe(exc: BaseException) -> str:
    """A short, one-line description of an error."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def check_database(hub: Hub) -> str:
    """Say "ok" when the index database answers a trivial query, else what went wrong."""
    try:
        hub.db.ping()
    except Exception as exc:
        return _describe(exc)
    return OK


def check_dir(path: Path) -> str:
    """Say "ok" when a file can be written, flushed and removed in path (made if missing)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".ready-", suffix=".tmp") as fh:
            fh.write(b"ok")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        return _describe(exc)
    return OK


def _check_storage(hub: Hub) -> str:
    """Say "ok" when the store is writable and has more free space than the configured floor."""
    status = check_dir(hub.store.root)
    if status != OK:
        return status
    try:
        free = hub.store.free_bytes()
    except OSError as exc:
        return _describe(exc)
    if free < hub.settings.storage_min_free_bytes:
        floor = hub.settings.storage_min_free_bytes
        return f"free space {free} bytes is below the floor of {floor}"
    return OK


def _probe(url: str) -> str:
    """TCP-connect to the host and port of one broker URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _BROKER_PORTS:
        return OK  # other kombu transports have no server this process could probe
    try:
        host = parts.hostname or "localhost"
        port = parts.port or _BROKER_PORTS[scheme]
    except ValueError as exc:
        return f"invalid broker URL: {exc}"
    try:
        with socket.create_connection((host, port), timeout=BROKER_TIMEOUT):
            return OK
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return f"broker {host}:{port} unreachable: {reason}"


def check_broker(hub: Hub) -> str:
    """Say "ok" when the embedded broker's directory is writable or a broker server accepts TCP.

    A kombu failover URL (``redis://a;redis://b``) is ready when any of its servers answers.
    """
    if hub.settings.broker_url is None:
        return check_dir(hub.settings.broker_dir)
    errors = []
    for url in hub.settings.broker_url.split(";"):
        status = _probe(url.strip())
        if status == OK:
            return OK
        errors.append(status)
    return "; ".join(errors)


def readiness(hub: Hub) -> dict[str, str]:
    """Check the database, storage and broker; each value is "ok" or what is wrong."""
    return {
        "database": check_database(hub),
        "storage": _check_storage(hub),
        "broker": check_broker(hub),
    }

"""The receiver's metrics, shared across processes and hosts through files in the data dir.

Each receiver process keeps its counters in memory and writes them, about once a second while
they change and every few seconds as a heartbeat, to its own snapshot file
``metrics/<hostname>-<pid>.json`` (temp file + rename, so a reader never sees half a file).
``/metrics`` sums every snapshot: counters over all processes that ever ran (so totals never go
down when a process stops), the active-associations gauge over live processes only.

Why not prometheus_client's multiprocess mode: it is switched on for the whole interpreter by
an environment variable read at import time, names its files by pid alone (two hosts sharing
the data dir would write into the same file) and updates them through mmap, which network
filesystems do not keep coherent. Plain small files named by host and pid work for several
processes on one machine and for several machines sharing the data dir; prometheus_client
still renders the exposition format.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "FLUSH_INTERVAL",
    "HEARTBEAT_INTERVAL",
    "ReceiverMetrics",
    "ReceiverTotals",
    "exposition",
    "metrics_dir",
    "read_totals",
    "receiving",
]

log = structlog.get_logger(__name__)

#: Seconds between writes of a snapshot whose counters changed.
FLUSH_INTERVAL = 1.0
#: Seconds between writes of an unchanged snapshot (shows the process is alive).
HEARTBEAT_INTERVAL = 5.0
#: A snapshot older than this, of a process on another host, no longer counts as live.
STALE_AFTER = 4 * HEARTBEAT_INTERVAL


def metrics_dir(data_dir: Path) -> Path:
    """Where the processes of a data dir keep their metric snapshots."""
    return data_dir / "metrics"


@dataclass
class ReceiverTotals:
    """Receiver counters and the active-associations gauge, of one process or summed."""

    instances: int = 0
    bytes: int = 0
    associations: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    active: int = 0

    def add(self, other: ReceiverTotals, *, with_gauge: bool) -> None:
        """Add another process's counters (and its gauge when it is alive)."""
        self.instances += other.instances
        self.bytes += other.bytes
        self.associations += other.associations
        for reason, count in other.failures.items():
            self.failures[reason] = self.failures.get(reason, 0) + count
        if with_gauge:
            self.active += other.active


class ReceiverMetrics:
    """One receiver process's counters, written to its snapshot file by a background thread."""

    def __init__(self, directory: Path) -> None:
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.path = directory / f"{self.host}-{self.pid}.json"
        self.totals = ReceiverTotals()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._dirty = True
        self._written = 0.0
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def association_started(self) -> None:
        """An association was accepted; the gauge is written at once (workers yield to it)."""
        with self._lock:
            self.totals.associations += 1
            self.totals.active += 1
            self._dirty = True
        self.flush()

    def association_ended(self) -> None:
        """An accepted association ended; its counts are written at once."""
        with self._lock:
            self.totals.active = max(0, self.totals.active - 1)
            self._dirty = True
        self.flush()

    def stored(self, size: int) -> None:
        """An instance of size bytes was acknowledged with Success."""
        with self._lock:
            self.totals.instances += 1
            self.totals.bytes += size
            self._dirty = True

    def failed(self, reason: str) -> None:
        """An instance was answered with a failure status (or cut off), for reason."""
        with self._lock:
            self.totals.failures[reason] = self.totals.failures.get(reason, 0) + 1
            self._dirty = True

    def flush(self, *, stopped: bool = False) -> None:
        """Write the snapshot file now (atomically); errors are logged, never raised."""
        # One writer at a time: threads flushing at once would share the temp file, or write
        # an older snapshot over a newer one.
        with self._write_lock:
            with self._lock:
                snapshot = {
                    "host": self.host,
                    "pid": self.pid,
                    "updated": time.time(),
                    "stopped": stopped,
                    "instances": self.totals.instances,
                    "bytes": self.totals.bytes,
                    "associations": self.totals.associations,
                    "failures": dict(self.totals.failures),
                    "active": 0 if stopped else self.totals.active,
                }
                self._dirty = False
                self._written = time.monotonic()
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            try:
                tmp.write_text(json.dumps(snapshot), encoding="utf-8")
                os.replace(tmp, self.path)
            except OSError as exc:
                log.warning("metrics_not_written", error=type(exc).__name__)

    def run_flusher(self, serving: Callable[[], bool]) -> None:
        """Start the thread that writes the snapshot until serving() is false or close()."""

        def loop() -> None:
            while not self._closed.wait(FLUSH_INTERVAL):
                if not serving():
                    break
                if self._dirty or time.monotonic() - self._written >= HEARTBEAT_INTERVAL:
                    self.flush()
            self.flush(stopped=True)

        self._thread = threading.Thread(target=loop, name="metrics-flusher", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the flusher; the last snapshot shows this process stopped."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        else:
            self.flush(stopped=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _snapshots(directory: Path) -> Iterator[dict[str, object]]:
    if not directory.is_dir():
        return
    for path in directory.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                yield data


def _is_live(data: dict[str, object], host: str, now: float) -> bool:
    """A snapshot's gauge counts while its process runs (checked by pid on this host)."""
    if data.get("stopped"):
        return False
    pid = data.get("pid")
    if data.get("host") == host and isinstance(pid, int):
        return _pid_alive(pid)
    updated = data.get("updated")
    return isinstance(updated, int | float) and now - updated < STALE_AFTER


def _count(value: object) -> int:
    return int(value) if isinstance(value, int | float) else 0


def receiving(directory: Path) -> bool:
    """True while a running receiver process of this host has an association open."""
    host, now = socket.gethostname(), time.time()
    return any(
        data.get("host") == host and _count(data.get("active")) > 0 and _is_live(data, host, now)
        for data in _snapshots(directory)
    )


def read_totals(directory: Path) -> ReceiverTotals:
    """Sum the snapshots of every receiver process that wrote into directory."""
    totals = ReceiverTotals()
    host, now = socket.gethostname(), time.time()
    for data in _snapshots(directory):
        failures = data.get("failures")
        one = ReceiverTotals(
            instances=_count(data.get("instances")),
            bytes=_count(data.get("bytes")),
            associations=_count(data.get("associations")),
            failures={str(k): _count(v) for k, v in failures.items()}
            if isinstance(failures, dict)
            else {},
            active=_count(data.get("active")),
        )
        totals.add(one, with_gauge=_is_live(data, host, now))
    return totals


class _ReceiverCollector(Collector):
    """Prometheus collector over the receiver snapshots of one data dir."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def collect(self) -> Iterator[Metric]:
        """The receiver metrics, summed over processes."""
        totals = read_totals(self.directory)
        yield CounterMetricFamily(
            "hub_dicom_received_instances",
            "C-STORE instances acknowledged with Success (stored durably, index job queued).",
            value=totals.instances,
        )
        yield CounterMetricFamily(
            "hub_dicom_received_bytes",
            "Bytes of the instances acknowledged with Success (Part 10 files as stored).",
            value=totals.bytes,
        )
        failures = CounterMetricFamily(
            "hub_dicom_store_failures",
            "C-STORE instances answered with a failure status, or cut off, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(totals.failures.items()):
            failures.add_metric([reason], count)
        yield failures
        yield CounterMetricFamily(
            "hub_dicom_associations",
            "DICOM associations accepted by the receiver.",
            value=totals.associations,
        )
        yield GaugeMetricFamily(
            "hub_dicom_active_associations",
            "DICOM associations open now, over every live receiver process.",
            value=totals.active,
        )


def exposition(data_dir: Path) -> bytes:
    """The hub's metrics in the Prometheus text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ReceiverCollector(metrics_dir(data_dir)))
    return generate_latest(registry)

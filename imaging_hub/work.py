"""Running one job: lease it, call its kind's handler while renewing the lease, record the end."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

from imaging_hub import identity, index, previews
from imaging_hub.db.models import JobState
from imaging_hub.hub import Hub
from imaging_hub.jobs import (
    Lease,
    PermanentError,
    acquire,
    acquire_more,
    any_due,
    complete,
    complete_all,
    extend,
    fail,
    job_kind,
)
from imaging_hub.metrics import receiving

__all__ = [
    "BATCH_HANDLERS",
    "HANDLERS",
    "BatchPacer",
    "JobOutcome",
    "ReceiverYield",
    "describe_error",
    "run_job",
]

log = structlog.get_logger(__name__)

#: kind -> handler(hub, payload). Handlers are idempotent: running one twice is harmless.
HANDLERS: dict[str, Callable[[Hub, dict[str, Any]], None]] = {
    "index": index.index_job,
    "identity": identity.identity_job,
    "render": previews.render_job,
}

#: kind -> handler(hub, payloads) doing several jobs of that kind at once, all or nothing.
#: A worker that leases such a job also leases the kind's other due jobs (up to
#: HUB_JOBS_BATCH_SIZE in all), so that a burst of instances is indexed in a few transactions.
BATCH_HANDLERS: dict[str, Callable[[Hub, list[dict[str, Any]]], None]] = {
    "index": index.index_jobs,
}


class JobOutcome:
    """Names for what run_job did, for logs and tests."""

    SKIPPED = "skipped"
    DONE = "done"
    RETRY = "retry"
    FAILED = "failed"
    LOST = "lost"


class ReceiverYield:
    """Holds a worker's jobs back while a DICOM receiver on its host has associations open.

    Previews and imports compete with receiving for the same CPUs, disk and index; a worker
    that runs them beside the receivers waits before each job until they are idle. Holding back
    ends, too, once the receivers have been busy for ``limit`` seconds without a pause, so the
    work lags a long transfer by at most that long and then catches up while it goes on.
    """

    def __init__(self, metrics_directory: Path, limit: float, poll: float = 0.25) -> None:
        self.directory = metrics_directory
        self.limit = limit
        self.poll = poll
        self._busy_since: float | None = None
        self._lock = threading.Lock()

    def holding(self) -> bool:
        """Whether work is held back now: the receivers are busy, for less than the limit."""
        busy = self.limit > 0 and receiving(self.directory)
        with self._lock:
            if not busy:
                self._busy_since = None
                return False
            now = time.monotonic()
            if self._busy_since is None:
                self._busy_since = now
            return now - self._busy_since < self.limit

    def wait(self) -> float:
        """Wait while work is held back; the seconds waited."""
        start = time.monotonic()
        while self.holding():
            time.sleep(self.poll)
        return time.monotonic() - start


class BatchPacer:
    """Spaces a worker process's batches while a DICOM receiver on its host is busy.

    Each batch of index jobs costs a few write transactions whatever its size, and they
    compete with the receivers for the index's write lock and the CPUs. While an association
    is open, batches start at least ``interval`` seconds apart, each taking the instances
    that arrived meanwhile; when the receivers are idle, batches start at once.
    """

    def __init__(self, metrics_directory: Path, interval: float) -> None:
        self.directory = metrics_directory
        self.interval = interval
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> float:
        """Wait for this process's next batch slot while the receivers are busy; seconds waited."""
        if self.interval <= 0 or not receiving(self.directory):
            return 0.0
        with self._lock:  # slots are handed out in turn, one interval apart
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        time.sleep(start - now)
        return start - now


def describe_error(exc: BaseException) -> str:
    """The error's type and first line: enough to act on, and no SQL parameters or traceback."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


@contextmanager
def _heartbeat(hub: Hub, leases: list[Lease]) -> Iterator[None]:
    """Renew the leases every third of their length while the body runs."""
    seconds = hub.settings.jobs_lease_seconds
    stop = threading.Event()

    def beat() -> None:
        live = list(leases)
        while live and not stop.wait(seconds / 3):
            for lease in list(live):
                try:
                    if not extend(hub.db, lease, lease_seconds=seconds):
                        live.remove(lease)  # lost to another attempt: stop renewing it
                except Exception:  # the next beat or the reaper will sort it out
                    log.warning("lease_renewal_failed", job_id=lease.job_id)

    thread = threading.Thread(target=beat, name=f"lease-{leases[0].job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_job(hub: Hub, job_id: int, *, owner: str, pace: Callable[[], None] | None = None) -> str:
    """Lease a job, run its kind's handler and record the outcome; safe to call twice.

    A job of a kind with a batch handler runs together with other due jobs of its kind, up to
    HUB_JOBS_BATCH_SIZE; a message whose own job is already taken still runs a batch of the
    others, if any are due. If a batch fails, each of its jobs runs
    alone, so that the error is recorded on its own job. The outcome is that of job_id.
    pace, if given, is called before the other due jobs are taken (see BatchPacer).
    """
    seconds = hub.settings.jobs_lease_seconds
    lease = acquire(hub.db, job_id, owner=owner, lease_seconds=seconds)
    kind = lease.kind if lease is not None else job_kind(hub.db, job_id)
    batch_handler = BATCH_HANDLERS.get(kind or "")
    size = hub.settings.jobs_batch_size
    if kind is None or batch_handler is None or size <= 1:
        return _run_leased(hub, lease) if lease is not None else JobOutcome.SKIPPED
    held = [lease] if lease is not None else []
    more: list[Lease] = []
    if any_due(hub.db, kind, exclude=job_id):  # read first: most messages find none due
        if pace is not None:
            pace()
        more = acquire_more(
            hub.db, kind, owner=owner, lease_seconds=seconds, limit=size - len(held), exclude=job_id
        )
    leases = held + more
    if len(leases) <= 1:
        return _run_each(hub, leases, own=lease)
    try:
        with _heartbeat(hub, leases):
            batch_handler(hub, [other.payload for other in leases])
    except Exception as exc:
        error = describe_error(exc)
        log.warning("job_batch_failed", kind=kind, jobs=len(leases), error=error)
        return _run_each(hub, leases, own=lease)
    done = complete_all(hub.db, leases)
    log.info("job_batch_done", kind=kind, jobs=len(leases))
    if lease is None:
        return JobOutcome.SKIPPED
    return JobOutcome.DONE if lease.job_id in done else JobOutcome.LOST


def _run_each(hub: Hub, leases: list[Lease], *, own: Lease | None) -> str:
    """Run each leased job alone; the outcome of own (the message's job), else SKIPPED."""
    outcomes = [_run_leased(hub, lease) for lease in leases]
    return outcomes[0] if own is not None else JobOutcome.SKIPPED


def _run_leased(hub: Hub, lease: Lease) -> str:
    """Run one leased job's handler and record the outcome."""
    handler = HANDLERS.get(lease.kind)
    try:
        if handler is None:
            raise PermanentError(f"no handler for job kind {lease.kind!r}")
        with _heartbeat(hub, [lease]):
            handler(hub, lease.payload)
    except PermanentError as exc:
        state = fail(hub.db, lease, describe_error(exc), permanent=True)
        return JobOutcome.LOST if state is None else JobOutcome.FAILED
    except Exception as exc:
        state = fail(hub.db, lease, describe_error(exc))
        if state is None:
            return JobOutcome.LOST
        return JobOutcome.FAILED if state == JobState.FAILED else JobOutcome.RETRY
    return JobOutcome.DONE if complete(hub.db, lease) else JobOutcome.LOST

"""Running one job: lease it, call its kind's handler while renewing the lease, record the end."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog

from imaging_hub import identity, index, previews
from imaging_hub.db.models import JobState
from imaging_hub.hub import Hub
from imaging_hub.jobs import Lease, PermanentError, acquire, complete, extend, fail

__all__ = ["HANDLERS", "JobOutcome", "describe_error", "run_job"]

log = structlog.get_logger(__name__)

#: kind -> handler(hub, payload). Handlers are idempotent: running one twice is harmless.
HANDLERS: dict[str, Callable[[Hub, dict[str, Any]], None]] = {
    "index": index.index_job,
    "identity": identity.identity_job,
    "render": previews.render_job,
}


class JobOutcome:
    """Names for what run_job did, for logs and tests."""

    SKIPPED = "skipped"
    DONE = "done"
    RETRY = "retry"
    FAILED = "failed"
    LOST = "lost"


def describe_error(exc: BaseException) -> str:
    """The error's type and first line: enough to act on, and no SQL parameters or traceback."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


@contextmanager
def _heartbeat(hub: Hub, lease: Lease) -> Iterator[None]:
    """Renew the lease every third of its length while the body runs."""
    seconds = hub.settings.jobs_lease_seconds
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(seconds / 3):
            try:
                if not extend(hub.db, lease, lease_seconds=seconds):
                    return
            except Exception:  # the next beat or the reaper will sort it out
                log.warning("lease_renewal_failed", job_id=lease.job_id)

    thread = threading.Thread(target=beat, name=f"lease-{lease.job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_job(hub: Hub, job_id: int, *, owner: str) -> str:
    """Lease a job, run its kind's handler and record the outcome; safe to call twice."""
    lease = acquire(hub.db, job_id, owner=owner, lease_seconds=hub.settings.jobs_lease_seconds)
    if lease is None:
        return JobOutcome.SKIPPED
    handler = HANDLERS.get(lease.kind)
    try:
        if handler is None:
            raise PermanentError(f"no handler for job kind {lease.kind!r}")
        with _heartbeat(hub, lease):
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

"""Running one job: lease it, call its kind's handler, record the outcome."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from imaging_hub import index
from imaging_hub.db.models import JobState
from imaging_hub.hub import Hub
from imaging_hub.jobs import PermanentError, acquire, complete, fail

__all__ = ["HANDLERS", "JobOutcome", "run_job"]

#: kind -> handler(hub, payload). Handlers are idempotent: running one twice is harmless.
HANDLERS: dict[str, Callable[[Hub, dict[str, Any]], None]] = {
    "index": index.index_job,
}


class JobOutcome:
    """Names for what run_job did, for logs and tests."""

    SKIPPED = "skipped"
    DONE = "done"
    RETRY = "retry"
    FAILED = "failed"


def run_job(hub: Hub, job_id: int, *, owner: str) -> str:
    """Lease a job, run its kind's handler and record the outcome; safe to call twice."""
    job = acquire(hub.db, job_id, owner=owner, lease_seconds=hub.settings.jobs_lease_seconds)
    if job is None:
        return JobOutcome.SKIPPED
    handler = HANDLERS.get(job.kind)
    try:
        if handler is None:
            raise PermanentError(f"no handler for job kind {job.kind!r}")
        handler(hub, job.payload)
    except PermanentError as exc:
        fail(hub.db, job_id, f"{type(exc).__name__}: {exc}", permanent=True)
        return JobOutcome.FAILED
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(exc)).strip()
        state = fail(hub.db, job_id, detail)
        return JobOutcome.FAILED if state == JobState.FAILED else JobOutcome.RETRY
    complete(hub.db, job_id, owner=owner)
    return JobOutcome.DONE

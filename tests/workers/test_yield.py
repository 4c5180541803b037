"""Workers run beside the receivers hold their jobs back while an association is open."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from imaging_hub.metrics import ReceiverMetrics, metrics_dir
from imaging_hub.work import ReceiverYield


def test_a_job_waits_until_the_receivers_are_idle(tmp_path: Path) -> None:
    directory = metrics_dir(tmp_path)
    receiver = ReceiverMetrics(directory)
    held = ReceiverYield(directory, limit=30, poll=0.02)
    assert held.wait() < 0.1  # nothing is being received: no wait

    receiver.association_started()
    threading.Timer(0.5, receiver.association_ended).start()
    waited = held.wait()
    assert 0.4 < waited < 5


def test_holding_back_ends_after_the_limit_and_starts_again_after_a_pause(
    tmp_path: Path,
) -> None:
    """A transfer longer than the limit delays work by the limit, not by its whole length."""
    directory = metrics_dir(tmp_path)
    receiver = ReceiverMetrics(directory)
    held = ReceiverYield(directory, limit=0.5, poll=0.02)
    receiver.association_started()
    assert 0.4 < held.wait() < 5
    started = time.monotonic()
    assert held.wait() < 0.1  # still busy, the limit is used up: the next jobs run at once
    assert time.monotonic() - started < 0.1

    receiver.association_ended()
    assert held.wait() < 0.1  # idle again: the limit starts over
    receiver.association_started()
    assert 0.4 < held.wait() < 5
    receiver.association_ended()


def test_a_limit_of_zero_never_holds_back(tmp_path: Path) -> None:
    directory = metrics_dir(tmp_path)
    receiver = ReceiverMetrics(directory)
    receiver.association_started()
    assert ReceiverYield(directory, limit=0, poll=0.02).wait() < 0.1
    receiver.association_ended()

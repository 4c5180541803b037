"""Work beside busy receivers: previews held back, index batches spaced, their messages held."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import cast

from celery import Celery
from sqlalchemy import select

from imaging_hub.db.models import Job, JobState
from imaging_hub.hub import Hub
from imaging_hub.jobs import enqueue
from imaging_hub.metrics import ReceiverMetrics, metrics_dir
from imaging_hub.work import BatchPacer, ReceiverYield
from workers.relay import Relay


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


def test_batches_start_an_interval_apart_while_receiving(tmp_path: Path) -> None:
    directory = metrics_dir(tmp_path)
    receiver = ReceiverMetrics(directory)
    pacer = BatchPacer(directory, interval=0.3)
    assert pacer.wait() == 0  # idle receivers: at once
    assert pacer.wait() == 0
    receiver.association_started()
    started = time.monotonic()
    waits = [pacer.wait() for _ in range(3)]
    assert waits[0] == 0  # the first batch of a burst does not wait
    assert time.monotonic() - started >= 0.55  # the next two: an interval apart each
    receiver.association_ended()
    assert pacer.wait() == 0


class _Broker:
    """Records what the relay sends, per queue."""

    def __init__(self) -> None:
        self.sent: dict[str, list[int]] = {}

    def send_task(self, name: str, *, args: list[int], queue: str, retry: bool) -> None:
        self.sent.setdefault(queue, []).append(args[0])


def test_the_relay_holds_slow_jobs_while_receiving(hub: Hub) -> None:
    """Index jobs go out at once; preview jobs wait until the association ends."""
    receiver = ReceiverMetrics(metrics_dir(hub.settings.data_dir))
    broker = _Broker()
    relay = Relay(hub, cast(Celery, broker))
    with hub.db.write() as s:
        index = enqueue(s, "index", {"stored_file_id": 1})
        render = enqueue(s, "render", {"sop_instance_uid": "1.2.3"})
    receiver.association_started()
    assert relay.relay_once() == 1
    assert broker.sent == {"fast": [index]}
    receiver.association_ended()
    assert relay.relay_once() == 1
    assert broker.sent == {"fast": [index], "slow": [render]}
    with hub.db.read() as s:
        states = set(s.execute(select(Job.state)).scalars())
    assert states == {JobState.PUBLISHED}

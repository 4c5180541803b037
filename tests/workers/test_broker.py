"""The embedded broker: a consumer never sees a half-written message."""

from __future__ import annotations

import multiprocessing
import tempfile
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Exchange, Queue

from imaging_hub.config import Settings
from workers.app import make_celery

QUEUE = Queue("fast", Exchange("fast"), routing_key="fast")
COUNT = 3000


def _publish(transport: str, options: dict[str, Any]) -> None:
    with Connection("filesystem://", transport=transport, transport_options=options) as conn:
        producer = conn.Producer()
        for n in range(COUNT):
            producer.publish({"n": n}, exchange=QUEUE.exchange, routing_key="fast", declare=[QUEUE])


def consume_while_publishing(transport: str, options: dict[str, Any]) -> list[int]:
    """Publish from another process while this one polls the queue as fast as it can."""
    options = {**options, "polling_interval": 0}
    publisher = multiprocessing.get_context("spawn").Process(
        target=_publish, args=(transport, options)
    )
    received: list[int] = []
    with Connection("filesystem://", transport=transport, transport_options=options) as conn:
        simple = conn.SimpleQueue(QUEUE)
        publisher.start()
        try:
            while len(received) < COUNT:
                message = simple.get(timeout=30)
                received.append(message.payload["n"])
                message.ack()
        finally:
            simple.close()
            publisher.join(timeout=60)
    return received


@pytest.mark.slow
def test_a_consumer_only_sees_whole_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", tempfile.tempdir)  # make_celery sets it
    app = make_celery(Settings(data_dir=tmp_path))
    options = app.conf.broker_transport_options
    received = consume_while_publishing(app.conf.broker_transport, options)
    assert sorted(received) == list(range(COUNT))
    assert list(Path(options["staging_folder"]).iterdir()) == []

"""Process helpers shared by the long-running commands."""

from __future__ import annotations

import signal
import threading

__all__ = ["wait_for_stop_signal"]


def wait_for_stop_signal() -> None:
    """Block the main thread until SIGINT or SIGTERM arrives."""
    stop = threading.Event()

    def _set(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _set)
    signal.signal(signal.SIGTERM, _set)
    while not stop.wait(0.5):
        pass

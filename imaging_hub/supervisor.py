"""A small process supervisor for ``imaging-hub serve``: start, watch, restart and stop children."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from types import FrameType

import structlog

__all__ = ["Supervisor"]

log = structlog.get_logger(__name__)

STOP_GRACE_SECONDS = 15.0
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 60.0


class Supervisor:
    """Run named child commands; restart one that dies; stop all on SIGINT or SIGTERM."""

    def __init__(self, commands: Mapping[str, list[str]], *, env: Mapping[str, str]) -> None:
        self.commands = dict(commands)
        self.env = {**os.environ, **env}
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, list[float]] = {name: [] for name in commands}
        self._stopping = False

    def _start(self, name: str) -> None:
        # Each child gets its own process group so that a terminal's Ctrl-C reaches the
        # supervisor only, and the supervisor decides the order of shutdown.
        self.children[name] = subprocess.Popen(
            self.commands[name], env=self.env, start_new_session=True
        )
        log.info("child_started", child=name, pid=self.children[name].pid)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = True

    def run(self) -> int:
        """Start every child and supervise until a stop signal; returns the exit status."""
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        for name in self.commands:
            self._start(name)
        status = 0
        while not self._stopping:
            time.sleep(0.2)
            for name, proc in list(self.children.items()):
                code = proc.poll()
                if code is None or self._stopping:
                    continue
                log.warning("child_exited", child=name, code=code)
                if not self._may_restart(name):
                    log.error("child_restarting_too_often", child=name)
                    self._stopping = True
                    status = 1
                    break
                self._start(name)
        self.stop()
        return status

    def _may_restart(self, name: str) -> bool:
        now = time.monotonic()
        recent = [t for t in self.restarts[name] if now - t < RESTART_WINDOW_SECONDS]
        recent.append(now)
        self.restarts[name] = recent
        return len(recent) <= MAX_RESTARTS

    def stop(self) -> None:
        """Ask every child to stop (SIGTERM), then kill what is still running after a grace."""
        for proc in self.children.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for name, proc in self.children.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("child_killed", child=name)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.info("stopped")

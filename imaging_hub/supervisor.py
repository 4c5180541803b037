"""A small process supervisor for ``imaging-hub serve``: start, watch, restart and stop children."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType

import structlog

__all__ = [
    "LISTEN_FD_OPTION",
    "Receivers",
    "Supervisor",
    "inherited_listener",
    "receiver_commands",
    "receivers",
    "shared_listener",
]

log = structlog.get_logger(__name__)

STOP_GRACE_SECONDS = 15.0
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 60.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A preexec_fn: Linux sends the child SIGTERM when the supervisor dies, even by SIGKILL."""
    if _libc is None:
        return None
    libc = _libc

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent_pid:  # the supervisor died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


#: The ``imaging-hub scp`` option of a receiver that accepts on an inherited listening socket.
LISTEN_FD_OPTION = "--listen-fd"
#: Connections the kernel holds for the receivers while none of them is accepting.
LISTEN_BACKLOG = 128


def shared_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket for several receiver processes to inherit and accept from.

    All of them wait for connections on the one socket, and whichever is free first takes the
    next (a busy process wakes later and loses the race). Separate sockets on one port
    (SO_REUSEPORT) would instead assign each connection by a hash of its addresses: four
    concurrent associations on two processes split 2-2 only 3 times in 8, and a stalled
    process still gets its share. The socket is non-blocking: a process that loses the race
    returns to waiting.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
    sock.setblocking(False)
    sock.set_inheritable(True)
    return sock


def inherited_listener(fd: int) -> socket.socket:
    """The shared listener a receiver process inherited as fd (see shared_listener).

    Non-blocking (set once, for every process sharing it): when another process took the
    connection first, accept() fails at once and the accepting loop goes back to waiting.
    """
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock


def receiver_commands(
    base: list[str], processes: int, listen_fd: int | None = None
) -> dict[str, list[str]]:
    """The child commands of ``processes`` receivers: one ``scp``, or ``scp-1``… on listen_fd."""
    if processes <= 1 or listen_fd is None:
        return {"scp": [*base, "scp"]}
    shared = [*base, "scp", LISTEN_FD_OPTION, str(listen_fd)]
    return {f"scp-{i}": shared for i in range(1, processes + 1)}


@dataclass
class Receivers:
    """Receiver child commands and, for several, the listening socket they share."""

    commands: dict[str, list[str]]
    #: Open in the supervisor while it runs; each child inherits it.
    listener: socket.socket | None = None

    @property
    def pass_fds(self) -> tuple[int, ...]:
        """The fds the children inherit."""
        return (self.listener.fileno(),) if self.listener is not None else ()


def receivers(base: list[str], host: str, port: int, processes: int) -> Receivers:
    """The receiver children to supervise: one ``scp``, or several on a shared listener."""
    if processes <= 1:
        return Receivers(receiver_commands(base, 1))
    listener = shared_listener(host, port)
    return Receivers(receiver_commands(base, processes, listener.fileno()), listener)


class Supervisor:
    """Run named child commands; restart one that dies; stop all on SIGINT or SIGTERM."""

    def __init__(
        self,
        commands: Mapping[str, list[str]],
        *,
        env: Mapping[str, str],
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        self.commands = dict(commands)
        self.env = {**os.environ, **env}
        self.pass_fds = pass_fds  # kept open in every child (the receivers' listening socket)
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, list[float]] = {name: [] for name in commands}
        self._stopping = False

    def _start(self, name: str) -> None:
        # Each child gets its own process group so that a terminal's Ctrl-C reaches the
        # supervisor only, and the supervisor decides the order of shutdown. If the supervisor
        # dies without stopping them (SIGKILL, OOM killer), the kernel sends them SIGTERM.
        self.children[name] = subprocess.Popen(
            self.commands[name],
            env=self.env,
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),
            pass_fds=self.pass_fds,
        )
        log.info("child_started", child=name, pid=self.children[name].pid)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = True

    def run(self) -> int:
        """Start every child and supervise until a stop signal; returns the exit status."""
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            for name in self.commands:
                self._start(name)
            return self._watch()
        finally:
            self.stop()

    def _watch(self) -> int:
        """Restart children that exit until a stop signal or too many restarts."""
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
                    return 1
                self._start(name)
        return 0

    def _may_restart(self, name: str) -> bool:
        now = time.monotonic()
        recent = [t for t in self.restarts[name] if now - t < RESTART_WINDOW_SECONDS]
        recent.append(now)
        self.restarts[name] = recent
        return len(recent) <= MAX_RESTARTS

    def stop(self) -> None:
        """Ask every child to stop (SIGTERM), then kill what is still running after a grace."""
        self._stopping = True
        for proc in self.children.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for name, proc in self.children.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("child_killed", child=name)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.info("stopped")

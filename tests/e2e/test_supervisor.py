"""The supervisor of ``imaging-hub serve``: its children never outlive it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from imaging_hub.supervisor import Supervisor
from tests.support import wait_until

SUPERVISE = """
import os, sys
from imaging_hub.supervisor import Supervisor
child = [sys.executable, "-c", "import time; time.sleep(60)", os.environ["CHILD_MARKER"]]
sys.exit(Supervisor({"a": child, "b": child}, env={}).run())
"""


def _alive(pid: int) -> bool:
    """True while pid runs (a zombie has exited; it only waits to be collected)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _marked(marker: str) -> list[int]:
    """PIDs of the running processes whose command line holds marker."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker.encode() in (entry / "cmdline").read_bytes() and _alive(int(entry.name)):
                pids.append(int(entry.name))
    return pids


@pytest.fixture
def marker() -> Iterator[str]:
    """A unique word in the children's command lines; any left running are killed afterwards."""
    word = f"hub-supervisor-test-{uuid.uuid4().hex}"
    yield word
    for pid in _marked(word):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def supervised(marker: str) -> Iterator[tuple[subprocess.Popen[bytes], list[int]]]:
    """A supervisor of two sleeping children in its own process, once both children run."""
    env = {**os.environ, "CHILD_MARKER": marker}  # in the children's command line only
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISE], env=env)
    try:
        assert wait_until(lambda: len(_marked(marker)) == 2, timeout=20)
        children = _marked(marker)
        parents = {int(Path(f"/proc/{pid}/stat").read_text().split()[3]) for pid in children}
        assert parents == {proc.pid}
        yield proc, children
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux only")
def test_children_die_with_a_sigkilled_supervisor(
    supervised: tuple[subprocess.Popen[bytes], list[int]],
) -> None:
    proc, children = supervised
    proc.kill()
    proc.wait(timeout=10)
    assert wait_until(lambda: not any(_alive(pid) for pid in children), timeout=5)


def test_sigterm_stops_the_children_and_exits_0(
    supervised: tuple[subprocess.Popen[bytes], list[int]],
) -> None:
    proc, children = supervised
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not any(_alive(pid) for pid in children)


def test_an_error_in_the_loop_still_stops_the_children(
    marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception escaping run() must not leave children running."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)", marker]
    supervisor = Supervisor({"sleeper": sleeper, "quitter": [sys.executable, "-c", "pass"]}, env={})

    def broken(_self: Supervisor, _name: str) -> bool:
        raise RuntimeError("boom")

    monkeypatch.setattr(Supervisor, "_may_restart", broken)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            supervisor.run()
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    assert supervisor.children["sleeper"].poll() is not None
    assert _marked(marker) == []

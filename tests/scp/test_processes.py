"""Several receiver processes on one listening socket: `imaging-hub scp` and `serve`."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from pynetdicom import AE, Association
from pynetdicom.sop_class import CTImageStorage
from sqlalchemy import func, select

from imaging_hub.config import Settings
from imaging_hub.db.models import Job, StoredFile
from imaging_hub.metrics import metrics_dir
from imaging_hub.supervisor import receiver_commands
from tests.processes import Deployment
from tests.support import HubProcess, make_instances, wait_for_port, wait_until

pytestmark = [pytest.mark.dcmtk, pytest.mark.slow]

CHILD = re.compile(r"event='child_started' child='(scp-\d+)' pid=(\d+)")
SERVED_BY = re.compile(r"event='association_ended'.*? pid=(\d+)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")  # a zombie has exited, it only waits to be collected
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _send_concurrently(port: int, batches: list[list[Path]]) -> None:
    """One storescu association per batch, all at once; every one must succeed."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    procs = [
        subprocess.Popen(
            ["storescu", "-aec", "IMAGING_HUB", "127.0.0.1", str(port), *map(str, batch)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        for batch in batches
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out.decode(errors="replace")[-2000:]


def _stored_and_jobs(d: Deployment) -> tuple[int, int]:
    hub = d.hub()
    try:
        with hub.db.read() as s:
            files = s.execute(select(func.count(StoredFile.id))).scalar_one()
            index_jobs = select(func.count(Job.id)).where(Job.kind == "index")
            jobs = s.execute(index_jobs).scalar_one()
    finally:
        hub.close()
    return files, jobs


def _children(proc: HubProcess, count: int) -> dict[str, int]:
    """The receiver children the supervisor reported starting: name -> pid."""
    assert wait_until(lambda: len(CHILD.findall(proc.log_text())) >= count, timeout=30)
    return {name: int(pid) for name, pid in CHILD.findall(proc.log_text())}


def _send_rounds(d: Deployment, proc: HubProcess, files: list[Path], rounds: int = 4) -> set[int]:
    """Rounds of 6 concurrent associations, all stored; the pids that served them."""
    per_round = len(files) // rounds
    for r in range(rounds):
        chunk = files[r * per_round : (r + 1) * per_round]
        _send_concurrently(d.settings.dicom_port, [chunk[i::6] for i in range(6)])
        sent = (r + 1) * per_round
        assert wait_until(lambda n=sent: _stored_and_jobs(d) == (n, n), timeout=10), d.logs()
    # One association_ended line per association (24 associations: all on one process by
    # chance has a probability of 2**-23).
    lines = 6 * rounds
    assert wait_until(lambda: len(SERVED_BY.findall(proc.log_text())) >= lines, timeout=10)
    return {int(p) for p in SERVED_BY.findall(proc.log_text())}


def test_receiver_processes_share_the_port(
    deploy: Callable[..., Deployment], tmp_path: Path
) -> None:
    """Two `scp` processes: concurrent associations all stored, served by both processes."""
    d = deploy(None, None)
    d.env["HUB_DICOM_PROCESSES"] = "2"
    proc = d.start("scp")
    wait_for_port(d.settings.dicom_port, timeout=30)
    children = _children(proc, 2)
    assert sorted(children) == ["scp-1", "scp-2"]
    files = make_instances(tmp_path / "in", 48)
    served_by = _send_rounds(d, proc, files)
    assert served_by == set(children.values()), d.logs()
    assert _stored_and_jobs(d) == (48, 48)
    # Each process spools into its own folder while it runs.
    spools = {p.name for p in (d.settings.data_dir / "incoming").iterdir()}
    assert {name.rsplit("-", 1)[1] for name in spools} >= {str(p) for p in children.values()}

    assert proc.stop() == 0  # SIGTERM: the supervisor stops every receiver, cleanly
    assert wait_until(lambda: not any(_alive(p) for p in children.values()), timeout=10)
    assert "child_killed" not in proc.log_text()


def test_a_stalled_receiver_takes_no_new_associations(
    deploy: Callable[..., Deployment], tmp_path: Path
) -> None:
    """Receivers take connections from one socket: one that cannot accept leaves them to the
    others (with a socket each on the port, the kernel would still hand it some)."""
    d = deploy(None, None)
    d.env["HUB_DICOM_PROCESSES"] = "2"
    proc = d.start("scp")
    wait_for_port(d.settings.dicom_port, timeout=30)
    children = _children(proc, 2)
    stalled, working = children["scp-1"], children["scp-2"]
    os.kill(stalled, signal.SIGSTOP)
    try:
        files = make_instances(tmp_path / "in", 12)
        _send_concurrently(d.settings.dicom_port, [files[i::6] for i in range(6)])
        assert wait_until(lambda: _stored_and_jobs(d) == (12, 12), timeout=10), d.logs()
        assert wait_until(lambda: len(SERVED_BY.findall(proc.log_text())) >= 6, timeout=10)
        assert {int(p) for p in SERVED_BY.findall(proc.log_text())} == {working}
    finally:
        os.kill(stalled, signal.SIGCONT)
    assert proc.stop() == 0


def _active_by_pid(d: Deployment) -> dict[int, int]:
    """Each receiver process's open associations, as its metrics snapshot says."""
    snapshots = (json.loads(f.read_text()) for f in metrics_dir(d.settings.data_dir).glob("*.json"))
    return {int(s["pid"]): int(s["active"]) for s in snapshots}


def _two_serving_receivers(
    deploy: Callable[..., Deployment],
) -> tuple[Deployment, HubProcess, set[int]]:
    """`imaging-hub scp` with two receiver processes, once both serve; and their pids."""
    d = deploy(None, None)
    d.env["HUB_DICOM_PROCESSES"] = "2"
    proc = d.start("scp")
    wait_for_port(d.settings.dicom_port, timeout=30)
    pids = set(_children(proc, 2).values())
    assert wait_until(lambda: set(_active_by_pid(d)) >= pids, timeout=30)  # both serving
    return d, proc, pids


def _open_by_receiver(d: Deployment, pids: set[int]) -> dict[int, int]:
    """The open associations of each of these receiver processes."""
    return {pid: n for pid, n in _active_by_pid(d).items() if pid in pids}


def test_concurrent_associations_spread_evenly(deploy: Callable[..., Deployment]) -> None:
    """Four associations opened at once on two processes: two each, not as they happen to
    hash or whichever process woke first."""
    d, proc, pids = _two_serving_receivers(deploy)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    opened: list[Association] = []

    def associate() -> None:
        opened.append(ae.associate("127.0.0.1", d.settings.dicom_port, ae_title="IMAGING_HUB"))

    threads = [threading.Thread(target=associate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert all(a.is_established for a in opened)
        assert wait_until(lambda: sum(_active_by_pid(d).values()) == 4, timeout=10)
        assert _open_by_receiver(d, pids) == {pid: 2 for pid in pids}
    finally:
        for a in opened:
            a.release()
    assert proc.stop() == 0


def test_associations_opened_one_after_another_alternate(
    deploy: Callable[..., Deployment],
) -> None:
    """Each new association goes to the receiver with fewer open, not whichever woke first."""
    d, proc, pids = _two_serving_receivers(deploy)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    opened: list[Association] = []
    try:
        for n in range(1, 7):
            opened.append(ae.associate("127.0.0.1", d.settings.dicom_port, ae_title="IMAGING_HUB"))
            assert opened[-1].is_established
            assert wait_until(lambda n=n: sum(_active_by_pid(d).values()) == n, timeout=10)
        assert _open_by_receiver(d, pids) == {pid: 3 for pid in pids}
    finally:
        for a in opened:
            a.release()
    assert proc.stop() == 0


def test_receivers_die_with_their_supervisor(deploy: Callable[..., Deployment]) -> None:
    """SIGKILL of the `scp` supervisor alone: the kernel stops its receiver children."""
    d = deploy(None, None)
    d.env["HUB_DICOM_PROCESSES"] = "2"
    proc = d.start("scp")
    wait_for_port(d.settings.dicom_port, timeout=30)
    children = _children(proc, 2)
    assert proc.proc is not None
    os.kill(proc.proc.pid, signal.SIGKILL)  # the supervisor only, not its process group
    proc.proc.wait()
    assert wait_until(lambda: not any(_alive(p) for p in children.values()), timeout=10)


# (serve with one receiver: the receiver is a child that fails to bind and is restarted until
# the supervisor gives up, as for any child that keeps failing.)
@pytest.mark.parametrize(("command", "processes"), [("scp", "1"), ("scp", "2"), ("serve", "2")])
def test_a_taken_dicom_port_is_a_clear_error(
    deploy: Callable[..., Deployment], command: str, processes: str
) -> None:
    d = deploy(None, None)
    d.env["HUB_DICOM_PROCESSES"] = processes
    with socket.create_server(("127.0.0.1", d.settings.dicom_port)):
        result = subprocess.run(
            [sys.executable, "-m", "imaging_hub", command],
            env=d.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{d.settings.dicom_port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_receiver_commands_and_process_count() -> None:
    """One receiver runs as plain `scp`; several as `scp-N` children sharing the port."""
    assert receiver_commands(["hub"], 1) == {"scp": ["hub", "scp"]}
    assert receiver_commands(["hub"], 3, listen_fd=7) == {
        f"scp-{i}": ["hub", "scp", "--listen-fd", "7"] for i in (1, 2, 3)
    }
    assert Settings(dicom_processes=3).receiver_processes == 3
    assert 1 <= Settings().receiver_processes <= min(4, len(os.sched_getaffinity(0)))


def test_serve_runs_several_receivers(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    """`imaging-hub serve` honours HUB_DICOM_PROCESSES; Ctrl-C stops every child."""
    d = deploy(None, None)
    d.env["HUB_DICOM_PROCESSES"] = "2"
    proc = d.start("serve")
    wait_for_port(d.settings.dicom_port, timeout=60)
    children = _children(proc, 2)
    assert sorted(children) == ["scp-1", "scp-2"]
    files = make_instances(tmp_path / "in", 48)
    served_by = _send_rounds(d, proc, files)
    assert served_by == set(children.values()), d.logs()
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGINT)
    assert proc.proc.wait(timeout=60) == 0
    assert wait_until(lambda: not any(_alive(p) for p in children.values()), timeout=10)

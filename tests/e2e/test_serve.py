"""End to end: `imaging-hub serve` (embedded) and separate scp/api/worker processes (scale-out)."""

from __future__ import annotations

import functools
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
from pydicom import dcmread
from pynetdicom import AE

from imaging_hub.config import Settings
from tests.processes import Deployment
from tests.support import free_port, storescu, testdata, wait_for_port, wait_until

pytestmark = [pytest.mark.dcmtk, pytest.mark.slow]

CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; it only waits for its parent to collect it.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


PASSWORD = "a-long-password"


def _study_visible(base: str, headers: dict[str, str]) -> bool:
    response = httpx.get(
        f"{base}/dicomweb/studies", params={"StudyInstanceUID": CT_STUDY}, headers=headers
    )
    return response.status_code == 200 and len(response.json()) == 1


def _sign_in(base: str, env: dict[str, str], cwd: Path | None = None) -> dict[str, str]:
    """Create a clinician with `imaging-hub users add`, log in over HTTP; the auth header."""
    command = ["users", "add", "alice", "--role", "clinician", "--password-stdin"]
    added = subprocess.run(
        [sys.executable, "-m", "imaging_hub", *command],
        input=f"{PASSWORD}\n",
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert added.returncode == 0, added.stdout + added.stderr
    refused = httpx.get(f"{base}/dicomweb/studies")
    assert refused.status_code == 401, refused.text
    form = {"username": "alice", "password": PASSWORD}
    response = httpx.post(f"{base}/api/auth/token", data=form)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_serve_with_no_configuration(tmp_path: Path) -> None:
    """serve creates ./hub-data, receives, indexes, serves; Ctrl-C stops every child."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    # Only the listening address is set: test servers must stay on the loopback interface.
    env["HUB_DICOM_HOST"] = "127.0.0.1"
    for port in (11112, 8000):
        with pytest.raises(TimeoutError):
            wait_for_port(port, timeout=0.2)  # the default ports must be free for this test
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "imaging_hub", "serve"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(11112, timeout=60)
        wait_for_port(8000, timeout=60)
        assert (tmp_path / "hub-data" / "index.sqlite").exists()
        headers = _sign_in("http://127.0.0.1:8000", env, cwd=tmp_path)
        storescu(11112, testdata("CT_small.dcm"))
        acknowledged = time.monotonic()
        visible = functools.partial(_study_visible, "http://127.0.0.1:8000", headers)
        assert wait_until(visible, timeout=2.0), (tmp_path / "serve.log").read_text()[-4000:]
        print(f"study visible {time.monotonic() - acknowledged:.2f} s after storescu returned")
        started = dict(
            re.findall(r"child='([\w-]+)' pid=(\d+)", (tmp_path / "serve.log").read_text())
        )
        # Previews render at a lower CPU priority than receiving and indexing.
        assert psutil.Process(int(started["renderer"])).nice() == 10
        assert "--yield-to-receivers" in psutil.Process(int(started["renderer"])).cmdline()
        assert psutil.Process(int(started["worker"])).nice() == 0
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
        log.close()
    output = (tmp_path / "serve.log").read_text()
    pids = [int(p) for p in re.findall(r"event='child_started' child='[\w-]+' pid=(\d+)", output)]
    # api, worker, renderer and the receivers (HUB_DICOM_PROCESSES: one per CPU, at most 4)
    children = set(re.findall(r"event='child_started' child='([\w-]+)'", output))
    assert {"api", "worker", "renderer"} <= children, output[-3000:]
    assert len(pids) == 3 + Settings().receiver_processes, output[-3000:]
    assert code == 0
    assert wait_until(lambda: not any(_alive(p) for p in pids), timeout=10)


def _job_states(db: Path, kind: str) -> list[str]:
    with sqlite3.connect(db, timeout=30) as conn:
        return [r[0] for r in conn.execute("SELECT state FROM job WHERE kind = ?", (kind,))]


def test_previews_wait_while_an_association_is_open(deploy: Callable[..., Deployment]) -> None:
    """Under serve, the instance is indexed at once; its preview renders once receiving ends.

    (The relay keeps the render job in the table meanwhile; a render message sent before the
    association opened would wait in the preview worker: tests/workers/test_yield.py.)
    """
    d = deploy(None, None)
    proc = d.start("serve")
    port = d.settings.dicom_port
    db = d.settings.data_dir / "index.sqlite"
    wait_for_port(port, timeout=60)
    wait_for_port(int(d.env["HUB_HTTP_PORT"]), timeout=60)
    ds = dcmread(testdata("CT_small.dcm"))
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="IMAGING_HUB")
    try:
        assert assoc.is_established
        assert assoc.send_c_store(ds).Status == 0x0000
        # Indexing does not wait; the render job it queues does, for as long as it is open.
        assert wait_until(lambda: _job_states(db, "render") != [], timeout=10)
        time.sleep(3)
        assert _job_states(db, "index") == ["done"]
        assert "done" not in _job_states(db, "render")
    finally:
        assoc.release()
    assert wait_until(lambda: _job_states(db, "render") == ["done"], timeout=30), d.logs()
    assert proc.stop() == 0


def test_scale_out_processes(
    deploy: Callable[..., Deployment], pg_url: str, redis_url: str
) -> None:
    """scp, api and worker as separate processes on PostgreSQL and Redis."""
    d = deploy(pg_url, redis_url)
    http_port = free_port()
    d.env["HUB_HTTP_PORT"] = str(http_port)
    d.start("worker")
    d.start("api")
    d.start("scp")
    wait_for_port(d.settings.dicom_port)
    wait_for_port(http_port)
    base = f"http://127.0.0.1:{http_port}"
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["broker"] == "ok"
    headers = _sign_in(base, {**os.environ, **d.env})
    storescu(d.settings.dicom_port, testdata("CT_small.dcm"))
    assert wait_until(lambda: _study_visible(base, headers), timeout=2.0), d.logs()
    (study,) = httpx.get(f"{base}/api/studies", headers=headers).json()
    assert study["study_uid"] == CT_STUDY and study["num_instances"] == 1

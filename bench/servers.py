"""Servers the DICOMweb benchmarks start and stop: the hub's API process and Orthanc.

Both listen on 127.0.0.1 only, on free ports, with their data under the benchmark's temp dir.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import free_port, loopback_env, wait_for_port

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
#: dcmtk leaves Nagle's algorithm on unless told: 40 ms per C-STORE from delayed ACKs.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
PASSWORD = "bench-password-123"


@dataclass
class Server:
    """A running peer: where its DICOMweb root is and the headers every request needs."""

    name: str
    dicomweb: str
    headers: dict[str, str]
    pid: int
    dicom_port: int | None = None


def hub_env(data_dir: Path, http_port: int) -> dict[str, str]:
    """The environment of hub processes on data_dir (embedded SQLite), quiet logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(
        HUB_DATA_DIR=str(data_dir),
        HUB_HTTP_HOST="127.0.0.1",
        HUB_HTTP_PORT=str(http_port),
        HUB_STORAGE_MIN_FREE_BYTES="0",
        HUB_LOG_LEVEL="WARNING",
    )
    return env


def _hub(data_dir: Path, *args: str, stdin: str | None = None) -> None:
    """Run one ``imaging-hub`` command to completion."""
    subprocess.run(
        [sys.executable, "-m", "imaging_hub", *args],
        env=hub_env(data_dir, 0),
        input=stdin,
        text=True,
        check=True,
        capture_output=True,
    )


@contextmanager
def hub_api(data_dir: Path, log: Path) -> Iterator[Server]:
    """``imaging-hub api`` on data_dir, with a clinician account; yields it with a token."""
    _hub(data_dir, "db", "upgrade")
    if not (data_dir / ".bench-user").exists():
        _hub(data_dir, "users", "add", "bench", "--role", "clinician", "--password-stdin",
             stdin=PASSWORD + "\n")  # fmt: skip
        (data_dir / ".bench-user").touch()
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "imaging_hub", "api"],
            env=hub_env(data_dir, port),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, timeout=60)
        base = f"http://127.0.0.1:{port}"
        answer = httpx.post(
            f"{base}/api/auth/token", data={"username": "bench", "password": PASSWORD}
        )
        answer.raise_for_status()
        token = answer.json()["access_token"]
        yield Server("hub", f"{base}/dicomweb", {"Authorization": f"Bearer {token}"}, proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@contextmanager
def orthanc(work: Path) -> Iterator[Server]:
    """Orthanc (Debian package, SQLite index) with its DICOMweb plugin, storage under work."""
    http, dicom = free_port(), free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "index"),
        "DicomAet": "ORTHANC",
        "DicomPort": dicom,
        "HttpPort": http,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True,
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "orthanc.json"
    cfg.write_text(json.dumps(config))
    with (work / "orthanc.log").open("wb") as out:
        proc = subprocess.Popen(
            [ORTHANC, str(cfg)], stdout=out, stderr=subprocess.STDOUT, env=loopback_env(DCMTK_ENV)
        )
    try:
        wait_for_port(http, timeout=60)
        wait_for_port(dicom, timeout=60)
        base = f"http://127.0.0.1:{http}"
        yield Server("Orthanc", f"{base}/dicom-web", {}, proc.pid, dicom_port=dicom)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def storescu_dir(port: int, directory: Path, aec: str) -> float:
    """Send every file under directory on one association; return the seconds it took."""
    start = time.perf_counter()
    subprocess.run(
        ["storescu", "-aec", aec, "+sd", "+r", "127.0.0.1", str(port), str(directory)],
        check=True,
        capture_output=True,
        env=DCMTK_ENV,
    )
    return time.perf_counter() - start


def peak_rss_mb(pid: int) -> float:
    """The peak resident memory of a process so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")

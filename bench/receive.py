"""Receive throughput: the hub vs dcmtk's storescp and Orthanc, same files, same run.

Sends the same generated instances with one `storescu` association to each peer and prints
instances/s, MB/s and the hub's ratio to each peer. For the hub, "indexed" is when the last
instance is in the index (receiver + embedded worker); Orthanc indexes while it receives.

    .venv/bin/python bench/receive.py --count 500
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import free_port, make_instances, wait_for_port

#: dcmtk leaves Nagle's algorithm on unless told: 40 ms per C-STORE from delayed ACKs.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def send(port: int, files: list[Path], aec: str) -> float:
    """Send files on one association; return the seconds it took."""
    start = time.perf_counter()
    subprocess.run(
        ["storescu", "-aec", aec, "127.0.0.1", str(port), *map(str, files)],
        check=True,
        capture_output=True,
        env=DCMTK_ENV,
    )
    return time.perf_counter() - start


def run_storescp(work: Path, files: list[Path]) -> float:
    """dcmtk's storescp writing files to disk: a lower bound for a receiver."""
    port = free_port()
    out = work / "storescp"
    out.mkdir()
    proc = subprocess.Popen(
        ["storescp", "-od", str(out), str(port)], stderr=subprocess.DEVNULL, env=DCMTK_ENV
    )
    try:
        wait_for_port(port)
        return send(port, files, "STORESCP")
    finally:
        proc.terminate()
        proc.wait()


def run_orthanc(work: Path, files: list[Path]) -> float:
    """Orthanc (Debian package) with its default SQLite index."""
    port, http = free_port(), free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(work / "orthanc-storage"),
        "IndexDirectory": str(work / "orthanc-index"),
        "DicomAet": "ORTHANC",
        "DicomPort": port,
        "HttpPort": http,
        "RemoteAccessAllowed": False,
        "DicomServerEnabled": True,
        "Plugins": [],
    }
    cfg = work / "orthanc.json"
    cfg.write_text(json.dumps(config))
    proc = subprocess.Popen(
        ["Orthanc", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV
    )
    try:
        wait_for_port(port, timeout=30)
        return send(port, files, "ORTHANC")
    finally:
        proc.terminate()
        proc.wait()


def run_hub(work: Path, files: list[Path]) -> tuple[float, float]:
    """The hub's `serve` parts (receiver + worker, embedded); returns (received, indexed) s."""
    data = work / "hub-data"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HUB_")},
        "HUB_DATA_DIR": str(data),
        "HUB_DICOM_HOST": "127.0.0.1",
        "HUB_DICOM_PORT": str(free_port()),
        "HUB_STORAGE_MIN_FREE_BYTES": "0",
        "HUB_LOG_LEVEL": "WARNING",
    }
    port = int(env["HUB_DICOM_PORT"])
    hub = [sys.executable, "-m", "imaging_hub"]
    subprocess.run([*hub, "db", "upgrade"], env=env, check=True, capture_output=True)
    logs = {name: (work / f"hub-{name}.log").open("wb") for name in ("scp", "worker")}
    procs = [
        subprocess.Popen(
            [*hub, name], env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
        )
        for name, log in logs.items()
    ]
    try:
        wait_for_port(port, timeout=30)
        start = time.perf_counter()
        received = send(port, files, "IMAGING_HUB")
        db = sqlite3.connect(data / "index.sqlite")
        while db.execute("select count(*) from instance").fetchone()[0] < len(files):
            if any(proc.poll() is not None for proc in procs):
                tails = {name: (work / f"hub-{name}.log").read_text()[-3000:] for name in logs}
                raise RuntimeError(f"a hub process stopped: {tails}")
            time.sleep(0.05)
        indexed = time.perf_counter() - start
        db.close()
        return received, indexed
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait()


def main() -> None:
    """Generate the instances, run every peer, print a table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = make_instances(work / "in", args.count)
        mb = sum(f.stat().st_size for f in files) / 1e6
        storescp = run_storescp(work, files)
        orthanc = run_orthanc(work, files) if shutil.which("Orthanc") else float("nan")
        received, indexed = run_hub(work, files)
    n = args.count
    print(f"{n} CT instances ({mb:.1f} MB), one storescu association each\n")
    print(f"{'peer':<32}{'seconds':>9}{'inst/s':>9}{'MB/s':>8}")
    rows = [
        ("dcmtk storescp (write only)", storescp),
        ("Orthanc (receive + index)", orthanc),
        ("hub receive (acknowledged)", received),
        ("hub receive + indexed", indexed),
    ]
    for name, seconds in rows:
        print(f"{name:<32}{seconds:>9.2f}{n / seconds:>9.0f}{mb / seconds:>8.1f}")
    print(f"\nhub acknowledged vs storescp: {storescp / received:.2f}x the rate")
    print(f"hub acknowledged vs Orthanc:  {orthanc / received:.2f}x the rate")
    print(f"hub indexed vs Orthanc:       {orthanc / indexed:.2f}x the rate")


if __name__ == "__main__":
    main()

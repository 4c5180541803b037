"""Receive throughput: the hub vs Orthanc and dcmtk's storescp, same files, same run.

Three corpora are generated deterministically (seeded pixels, UIDs derived from fixed names):
600 MR slices of 256 x 256 x 16 bit, 40 radiographs (DX) of 2500 x 3000 x 16 bit (15 MB each)
and a 300-slice CT of 512 x 512 x 16 bit. Each is sent with dcmtk's storescu (TCP_NODELAY=1)
on 1 and on 4 concurrent associations (the files split evenly) to each receiver, started fresh
for that run on an empty data dir:

- the hub: ``imaging-hub serve``, the embedded default (SQLite, file broker, receivers, API and
  worker as its child processes); Success means fsync'd and the index job committed;
- Orthanc (Debian package, default SQLite index, no plugins);
- dcmtk ``storescp -od DIR`` (writes files, no index, no fsync, one association at a time);
- on request (``--receiver hub-scp``), ``imaging-hub scp`` alone: the receive path without the
  worker competing for the CPUs and the index;
- on request (``--receiver pynetdicom``), bare pynetdicom receivers (as many processes as the
  hub's, accepting on one listening socket as the hub's do) that write each dataset's bytes
  and nothing else: the ceiling of a receiver built on pynetdicom on this machine.

Reported per run: instances/s and MB/s (files sent / time until the last storescu exited, i.e.
the last C-STORE response and release), the receiver's peak RSS (sum of VmHWM over its
processes: for the hub, its receiver processes, with the whole ``serve`` tree in brackets) and,
for the hub, the seconds from the last acknowledgement until every instance is in the index.

    .venv/bin/python bench/receive.py                  # everything (about 10 minutes)
    .venv/bin/python bench/receive.py --corpus ct --associations 4 --receiver hub
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imaging_hub.config import Settings
from imaging_hub.metrics import metrics_dir
from imaging_hub.supervisor import shared_listener
from tests.support import free_port, loopback_env, wait_for_port

#: dcmtk leaves Nagle's algorithm on unless told: 40 ms per C-STORE from delayed ACKs.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
MR, CT, DX = "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.1.1"


@dataclass(frozen=True)
class Corpus:
    """A generated study: name, SOP Class, modality, count and image size."""

    name: str
    sop_class: str
    modality: str
    count: int
    rows: int
    columns: int


CORPORA = {
    "mr": Corpus("mr", MR, "MR", 600, 256, 256),
    "dx": Corpus("dx", DX, "DX", 40, 3000, 2500),
    "ct": Corpus("ct", CT, "CT", 300, 512, 512),
}


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=["imaging-hub-bench", *map(str, parts)])


def generate(corpus: Corpus, out: Path) -> list[Path]:
    """Write the corpus deterministically (same bytes every run) as Part 10 files."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    study, series = _uid(corpus.name, "study"), _uid(corpus.name, "series")
    # Smooth anatomy-like ramps plus seeded noise; a fresh noise slab every 8 images.
    y, x = np.mgrid[0 : corpus.rows, 0 : corpus.columns]
    base = ((x + y) % 2048).astype(np.uint16)
    paths = []
    for i in range(corpus.count):
        if i % 8 == 0:
            noise = rng.integers(0, 256, size=base.shape, dtype=np.uint16)
        pixels = (base + noise + i).astype(np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = corpus.sop_class
        meta.MediaStorageSOPInstanceUID = _uid(corpus.name, i)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = corpus.sop_class, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Bench^Patient", "BENCH-1", "19700101"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.StudyDate, ds.StudyTime, ds.Modality = "20261201", "101500", corpus.modality
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, i + 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = corpus.rows, corpus.columns
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        if corpus.modality != "DX":
            ds.ImagePositionPatient = [0, 0, float(i)]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], 1.0
        ds.PixelData = pixels.tobytes()
        path = out / f"{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def send(port: int, files: list[Path], aec: str, associations: int) -> float:
    """Send files on that many concurrent storescu associations; seconds until all ended."""
    batches = [files[i::associations] for i in range(associations)]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["storescu", "-aec", aec, "127.0.0.1", str(port), *map(str, batch)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=DCMTK_ENV,
        )
        for batch in batches
    ]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode(errors='replace')[-2000:]}")
    return time.perf_counter() - start


def peak_rss_mb(pids: list[int]) -> float:
    """Sum of the peak resident memory (VmHWM) of processes, in MB."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


@dataclass
class Receiver:
    """A running receiver: its port, AE title, the pids that count as the receiver."""

    name: str
    port: int
    aet: str
    receiver_pids: list[int]
    all_pids: list[int]
    indexed: object = None  # a callable(count) -> bool for the hub, else None


@contextmanager
def storescp(work: Path) -> Iterator[Receiver]:
    """dcmtk's storescp writing files to disk: a lower bound for a receiver."""
    port = free_port()
    out = work / "storescp"
    out.mkdir()
    proc = subprocess.Popen(
        ["storescp", "-od", str(out), str(port)],
        stderr=subprocess.DEVNULL,
        env=loopback_env(DCMTK_ENV),
    )
    try:
        wait_for_port(port)
        yield Receiver("dcmtk storescp", port, "STORESCP", [proc.pid], [proc.pid])
    finally:
        proc.terminate()
        proc.wait()


@contextmanager
def bare_pynetdicom(work: Path, processes: int | None) -> Iterator[Receiver]:
    """Bare pynetdicom receivers on one port writing raw bytes: the ceiling of pynetdicom."""
    port = free_port()
    count = processes or min(os.cpu_count() or 1, 4)  # as many as the hub's receivers
    script = Path(__file__).with_name("pynetdicom_receiver.py")
    listener = shared_listener("127.0.0.1", port)  # as the hub's receivers share theirs
    fd = listener.fileno()
    command = [sys.executable, str(script), str(port), str(work / "pynetdicom"), str(fd)]
    procs = [subprocess.Popen(command, pass_fds=(fd,)) for _ in range(count)]
    try:
        wait_for_port(port, timeout=30)
        time.sleep(1.0)  # every process listening
        pids = [p.pid for p in procs]
        yield Receiver(f"pynetdicom x{count}", port, "PYNETDICOM", pids, pids)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
        listener.close()


@contextmanager
def orthanc(work: Path) -> Iterator[Receiver]:
    """Orthanc (Debian package) with its default SQLite index and no plugins."""
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
        ["Orthanc", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=loopback_env(DCMTK_ENV),
    )
    try:
        wait_for_port(port, timeout=30)
        yield Receiver("Orthanc", port, "ORTHANC", [proc.pid], [proc.pid])
    finally:
        proc.terminate()
        proc.wait()


def _hub_index_count(db_path: Path) -> int:
    with sqlite3.connect(db_path, timeout=30) as db:
        return int(db.execute("select count(*) from instance").fetchone()[0])


def _listening_receivers(root: int, data: Path, settings: Settings) -> list[int]:
    """The receiver pids under root, once every one of them serves (has written its metrics).

    The port accepts connections as soon as the supervisor opened it; a receiver process that
    is still starting would leave the first associations to the others.
    """
    expected = settings.receiver_processes
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        tree = [root] + [c.pid for c in psutil.Process(root).children(recursive=True)]
        receivers = [p for p in tree if "scp" in psutil.Process(p).cmdline()[3:5]]
        if len(receivers) > 1:  # several receivers: their supervising parent is not one
            receivers = [p for p in receivers if p != root]
        written = {f.stem.rsplit("-", 1)[-1] for f in metrics_dir(data).glob("*.json")}
        if len(receivers) == expected and {str(p) for p in receivers} <= written:
            return receivers
        time.sleep(0.1)
    raise RuntimeError("the receivers did not start")


@contextmanager
def hub(work: Path, processes: int | None, command: str = "serve") -> Iterator[Receiver]:
    """``imaging-hub serve`` (embedded default), or ``scp`` alone, on an empty data dir."""
    data = work / "hub-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(
        HUB_DATA_DIR=str(data),
        HUB_DICOM_HOST="127.0.0.1",
        HUB_DICOM_PORT=str(free_port()),
        HUB_HTTP_PORT=str(free_port()),
        HUB_STORAGE_MIN_FREE_BYTES="0",
        HUB_LOG_LEVEL="WARNING",
    )
    if processes:
        env["HUB_DICOM_PROCESSES"] = str(processes)
    port = int(env["HUB_DICOM_PORT"])
    hub_cli = [sys.executable, "-m", "imaging_hub"]
    subprocess.run([*hub_cli, "db", "upgrade"], env=env, check=True, capture_output=True)
    with (work / "hub.log").open("wb") as log:
        proc = subprocess.Popen(
            [*hub_cli, command],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, timeout=60)
        if command == "serve":
            wait_for_port(int(env["HUB_HTTP_PORT"]), timeout=60)
        receivers = _listening_receivers(proc.pid, data, Settings(dicom_processes=processes or 0))
        time.sleep(1.0)  # the workers started too
        tree = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        db_path = data / "index.sqlite"
        yield Receiver(
            "hub" if command == "serve" else "hub scp alone",
            port,
            "IMAGING_HUB",
            receivers,
            tree,
            indexed=(lambda n: _hub_index_count(db_path) >= n) if command == "serve" else None,
        )
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass
class Result:
    """One run's figures."""

    corpus: str
    associations: int
    receiver: str
    seconds: float
    instances: int
    megabytes: float
    rss_mb: float
    tree_rss_mb: float
    indexed_after: float | None


def run(name: str, corpus: str, files: list[Path], associations: int, args) -> Result:
    """Start a fresh receiver, send the corpus, measure, stop it."""
    mb = sum(f.stat().st_size for f in files) / 1e6
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        starter = {"hub": lambda: hub(work, args.processes), "orthanc": lambda: orthanc(work),
                   "storescp": lambda: storescp(work),
                   "pynetdicom": lambda: bare_pynetdicom(work, args.processes),
                   "hub-scp": lambda: hub(work, args.processes, "scp")}[name]  # fmt: skip
        with starter() as receiver:
            # Nothing left to write back from the corpus or an earlier run: the disk's flushes
            # would otherwise fall into this run (for the hub's fsyncs, into its answers).
            os.sync()
            seconds = send(receiver.port, files, receiver.aet, associations)
            acknowledged = time.perf_counter()
            indexed_after = None
            if receiver.indexed is not None:
                while not receiver.indexed(len(files)):  # type: ignore[operator]
                    if time.perf_counter() - acknowledged > 600:
                        raise RuntimeError(f"not indexed: {(work / 'hub.log').read_text()[-3000:]}")
                    time.sleep(0.02)
                indexed_after = time.perf_counter() - acknowledged
            rss = peak_rss_mb(receiver.receiver_pids)
            tree = peak_rss_mb(receiver.all_pids)
    return Result(corpus, associations, receiver.name, seconds, len(files), mb, rss, tree,
                  indexed_after)  # fmt: skip


def main() -> None:
    """Generate the corpora, run every receiver, print a table and the hub's ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", action="append", choices=sorted(CORPORA))
    parser.add_argument("--associations", action="append", type=int)
    parser.add_argument(
        "--receiver",
        action="append",
        choices=["hub", "orthanc", "storescp", "hub-scp", "pynetdicom"],
        help="hub-scp: `imaging-hub scp` alone (receive path without the worker); "
        "pynetdicom: bare pynetdicom receivers writing raw bytes (the ceiling of pynetdicom)",
    )
    parser.add_argument("--processes", type=int, default=None, help="HUB_DICOM_PROCESSES")
    parser.add_argument("--work", type=Path, default=None, help="temp dir (default: system)")
    args = parser.parse_args()
    corpora = args.corpus or ["mr", "dx", "ct"]
    counts = args.associations or [1, 4]
    receivers = args.receiver or ["hub", "orthanc", "storescp"]
    if not shutil.which("Orthanc") and "orthanc" in receivers:
        receivers.remove("orthanc")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for key in corpora:
            files = generate(CORPORA[key], Path(tmp) / key)
            for associations in counts:
                for name in receivers:
                    results.append(run(name, key, files, associations, args))
                    print(_row(results[-1]), flush=True)
            shutil.rmtree(Path(tmp) / key)
    print()
    _ratios(results)


def _row(r: Result) -> str:
    indexed = f"{r.indexed_after:6.2f}" if r.indexed_after is not None else "     -"
    rss = f"{r.rss_mb:6.0f}" + (f" ({r.tree_rss_mb:.0f})" if r.tree_rss_mb != r.rss_mb else "")
    return (
        f"{r.corpus:<3} x{r.associations} {r.receiver:<15} {r.seconds:7.2f} s "
        f"{r.instances / r.seconds:7.1f} inst/s {r.megabytes / r.seconds:7.1f} MB/s "
        f"peak RSS {rss:<12} MB  indexed +{indexed} s"
    )


def _ratios(results: list[Result]) -> None:
    by = {(r.corpus, r.associations, r.receiver): r for r in results}
    for (corpus, associations, name), r in sorted(by.items()):
        other = by.get((corpus, associations, "Orthanc"))
        if name == "hub" and other is not None:
            print(f"hub / Orthanc, {corpus} x{associations}: {other.seconds / r.seconds:.2f}x")


if __name__ == "__main__":
    main()

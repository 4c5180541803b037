"""ZIP download of a ~1 GB study: throughput, and the API process's memory while it streams.

Generates one CT study deterministically (2000 slices of 512 x 512, 16 bit, in 4 series:
1.05 GB of files; seeded noise, UIDs derived from their index), stores it in the hub through
the core (ingest + index, as C-STORE would), starts ``imaging-hub api`` as its own process on
127.0.0.1 with a clinician account, and downloads the study as a ZIP with a streaming HTTP
client (httpx, the answer discarded as it arrives): ``GET /api/studies/{uid}/download`` (plain
folders) and ``POST /api/downloads`` with ``layout=dicomdir``. The API process's RSS is sampled
with psutil every 50 ms during each download. Every ZIP is checked in the run: its length is
the announced ``Content-Length``, its central directory (read from the last bytes received)
lists one entry per instance with the size and CRC-32 of the original file (plus a DICOMDIR,
read from the first bytes, that lists every instance). For reference, the same client fetches
the study with WADO-RS (``transfer-syntax=*``) and ``cat`` reads the stored files, in the same
run. Exits 1 if the API's peak RSS reaches ``--limit-mb``. Data lives under /tmp, removed at
the end.

    .venv/bin/python bench/zip.py --repeat 3
"""

from __future__ import annotations

import argparse
import collections
import io
import shutil
import statistics
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from pydicom import dcmread
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.servers import Server, hub_api, peak_rss_mb
from bench.wado import ANY, cat_rate, load_hub
from imaging_hub.config import Settings
from imaging_hub.export import export_files
from imaging_hub.hub import Hub
from imaging_hub.logging import configure_logging
from tests.support import testdata

#: Bytes kept from each end of a download for the checks (the central directory of 2000
#: entries is about 0.3 MB, the DICOMDIR about 1 MB).
KEEP = 8 << 20
MB = 1e6


def make_study(directory: Path, slices: int, series: int) -> tuple[str, list[Path]]:
    """A CT study of slices 512 x 512 16-bit images in series, the same bytes on every run."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(42)
    ds = dcmread(testdata("CT_small.dcm"))
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["bench-zip", "study"])
    ds.Rows = ds.Columns = 512
    paths = []
    for i in range(slices):
        s = i * series // slices
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=["bench-zip", "series", str(s)])
        ds.SeriesNumber = s + 1
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["bench-zip", "instance", str(i)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.PixelData = rng.integers(0, 4096, (512, 512), dtype=np.uint16).tobytes()
        path = directory / f"{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return str(ds.StudyInstanceUID), paths


class RssSampler:
    """The RSS of a process (and its children), sampled every interval seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss_mb(self) -> float:
        """The RSS now, in MB (MiB, as VmHWM)."""
        procs = [self.proc, *self.proc.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs) / (1 << 20)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.rss_mb())
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(self.rss_mb())

    @property
    def peak(self) -> float:
        """The highest sample, in MB."""
        return max(self.samples)


@dataclass
class Download:
    """One streamed answer: how long it took (to the end, to its headers), its length, both ends."""

    seconds: float
    first: float
    size: int
    announced: int
    head: bytes
    tail: bytes
    rss: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """MB/s."""
        return self.size / MB / self.seconds


def download(client: httpx.Client, pid: int, method: str, url: str, **kw: Any) -> Download:
    """Stream one answer to nowhere, keeping its first and last KEEP bytes; sample RSS."""
    head = bytearray()
    tail: collections.deque[bytes] = collections.deque()
    kept = size = 0
    start = time.perf_counter()
    with RssSampler(pid) as rss, client.stream(method, url, **kw) as answer:
        first = time.perf_counter() - start
        answer.raise_for_status()
        for chunk in answer.iter_raw():
            size += len(chunk)
            if len(head) < KEEP:
                head += chunk[: KEEP - len(head)]
            tail.append(chunk)
            kept += len(chunk)
            while kept - len(tail[0]) >= KEEP:
                kept -= len(tail.popleft())
        seconds = time.perf_counter() - start
        announced = int(answer.headers.get("content-length", -1))
    return Download(seconds, first, size, announced, bytes(head), b"".join(tail), rss.samples)


class Ends(io.RawIOBase):
    """A file of size bytes of which only the head and tail are known; reading elsewhere fails."""

    def __init__(self, head: bytes, tail: bytes, size: int) -> None:
        self.head, self.tail, self.size, self.pos = head, tail, size, 0

    def readable(self) -> bool:
        """Yes."""
        return True

    def seekable(self) -> bool:
        """Yes."""
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move to offset (from the start, here, or the end)."""
        self.pos = (0, self.pos, self.size)[whence] + offset
        return self.pos

    def tell(self) -> int:
        """Where the next read starts."""
        return self.pos

    def readinto(self, buffer: Any) -> int:
        """Fill buffer from the known bytes at the current position."""
        end = min(self.pos + len(buffer), self.size)
        if end <= len(self.head):
            data = self.head[self.pos : end]
        elif self.pos >= self.size - len(self.tail):
            start = self.size - len(self.tail)
            data = self.tail[self.pos - start : end - start]
        else:
            raise OSError(f"bytes {self.pos}..{end} of the download were not kept")
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)


def check_zip(d: Download, originals: dict[str, tuple[int, int]], *, dicomdir: bool) -> str:
    """Check a streamed ZIP is complete: every original once, with its size and CRC-32."""
    assert d.size == d.announced, f"got {d.size} bytes of {d.announced}"
    archive = zipfile.ZipFile(Ends(d.head, d.tail, d.size))
    entries = archive.infolist()
    last = max(entries, key=lambda e: e.header_offset)
    assert last.header_offset + 30 + len(last.filename) + last.file_size < d.size
    got = collections.Counter((e.file_size, e.CRC) for e in entries if e.filename != "DICOMDIR")
    assert got == collections.Counter(originals.values()), "entries differ from the originals"
    if not dicomdir:
        names = {e.filename.rsplit("/", 1)[-1].removesuffix(".dcm") for e in entries}
        assert names == set(originals), "entry names differ from the SOP Instance UIDs"
        return f"{len(entries)} entries"
    media = dcmread(io.BytesIO(archive.read("DICOMDIR")))
    images = [r for r in media.DirectoryRecordSequence if r.DirectoryRecordType == "IMAGE"]
    listed = {str(r.ReferencedSOPInstanceUIDInFile) for r in images}
    assert listed == set(originals), "the DICOMDIR does not list every instance"
    ids = {"/".join(r.ReferencedFileID) for r in images}
    assert ids <= {e.filename for e in entries}, "a DICOMDIR File ID is not in the ZIP"
    return f"{len(entries)} entries, DICOMDIR lists {len(images)} images"


def stored_files(data_dir: Path, study: str) -> dict[str, Path]:
    """The stored file of every instance of the study, as the export reads them."""
    hub = Hub.open(Settings(data_dir=data_dir, storage_min_free_bytes=0))
    try:
        with hub.db.read() as session:
            return {f.sop_instance_uid: f.path for f in export_files(hub, session, [study])}
    finally:
        hub.close()


def size_and_crc(path: Path) -> tuple[int, int]:
    """(size, CRC-32) of a file, as a ZIP entry lists them."""
    data = path.read_bytes()
    return len(data), zlib.crc32(data)


@contextmanager
def api(work: Path) -> Iterator[tuple[Server, str, httpx.Client]]:
    """``imaging-hub api`` on the loaded hub, its REST base URL and a client with a token."""
    with (
        hub_api(work / "hub", work / "hub-api.log") as server,
        httpx.Client(headers=server.headers, timeout=600) as client,
    ):
        yield server, server.dicomweb.removesuffix("/dicomweb") + "/api", client


def measure(
    work: Path, study: str, originals: dict[str, tuple[int, int]], repeat: int
) -> tuple[dict[str, list[Download]], tuple[float, float], float, list[str]]:
    """The downloads of the study (repeat each way), RSS before, VmHWM after, ZIP checks."""
    runs: dict[str, list[Download]] = {"files": [], "dicomdir": [], "wado": []}
    checks = []
    with api(work) as (server, base, client):
        idle = RssSampler(server.pid).rss_mb(), peak_rss_mb(server.pid)
        for _ in range(repeat):
            d = download(client, server.pid, "GET", f"{base}/studies/{study}/download")
            checks.append("files: " + check_zip(d, originals, dicomdir=False))
            runs["files"].append(d)
            body = {"study_uids": [study], "layout": "dicomdir"}
            d = download(client, server.pid, "POST", f"{base}/downloads", json=body)
            checks.append("dicomdir: " + check_zip(d, originals, dicomdir=True))
            runs["dicomdir"].append(d)
            url = f"{server.dicomweb}/studies/{study}"
            runs["wado"].append(download(client, server.pid, "GET", url, headers={"Accept": ANY}))
        hwm = peak_rss_mb(server.pid)
    return runs, idle, hwm, checks


def prepare(work: Path, slices: int, series: int) -> tuple[str, str]:
    """Generate the study and load it into a hub under work (unless an earlier run did)."""
    marker = work / f"hub-loaded-{slices}-{series}"
    if marker.exists():
        return marker.read_text(), "loaded by an earlier run"
    shutil.rmtree(work / "hub", ignore_errors=True)
    shutil.rmtree(work / "ct", ignore_errors=True)
    start = time.perf_counter()
    study, paths = make_study(work / "ct", slices, series)
    generated = time.perf_counter() - start
    load_hub(work / "hub", paths)
    loaded = time.perf_counter() - start - generated
    shutil.rmtree(work / "ct")
    marker.write_text(study)
    return study, f"generated in {generated:.0f} s, stored and indexed in {loaded:.0f} s"


def main() -> None:
    """Generate, load, measure, check, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=2000)
    parser.add_argument("--series", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--limit-mb", type=float, default=200)
    parser.add_argument(
        "--keep", type=Path, help="keep the loaded hub under this directory and reuse it"
    )
    args = parser.parse_args()
    configure_logging("WARNING")
    with tempfile.TemporaryDirectory(prefix="bench-zip-", dir="/tmp") as tmp:
        work = args.keep or Path(tmp)
        study, loading = prepare(work, args.slices, args.series)
        stored = stored_files(work / "hub", study)
        originals = {uid: size_and_crc(path) for uid, path in stored.items()}
        mb = sum(size for size, _ in originals.values()) / MB
        runs, idle, hwm, checks = measure(work, study, originals, args.repeat)
        disk = cat_rate(list(stored.values()), args.repeat)
    print(f"{args.slices}-slice CT study in {args.series} series, {mb:.1f} MB of stored files")
    print(f"({loading})\n")
    print(f"{'download':<42}{'MB/s':>7}{'1st byte s':>11}{'answer MB':>11}{'peak RSS MB':>13}")
    names = {
        "files": "ZIP, folders (GET .../download)",
        "dicomdir": "ZIP, DICOMDIR (POST /api/downloads)",
        "wado": "WADO-RS, transfer-syntax=*",
    }
    for key, label in names.items():
        ds = runs[key]
        rate = statistics.median(d.rate for d in ds)
        first = statistics.median(d.first for d in ds)
        peak = max(max(d.rss) for d in ds)
        print(f"{label:<42}{rate:>7.0f}{first:>11.2f}{ds[0].size / MB:>11.1f}{peak:>13.0f}")
    print(f"{'cat of the stored files (warm cache)':<42}{disk:>7.0f}{'':>11}{mb:>11.1f}")
    zips = [d for key in ("files", "dicomdir") for d in runs[key]]
    peak = max(max(d.rss) for d in zips)
    samples = sum(len(d.rss) for d in zips)
    print(f"\nmedian of {args.repeat} runs each; RSS in MiB, {samples} samples during the ZIPs")
    print(f"API RSS before the downloads: {idle[0]:.0f} MB (VmHWM {idle[1]:.0f} MB, sign-in)")
    print(f"API peak RSS during ZIP downloads: {peak:.0f} MB; VmHWM at the end: {hwm:.0f} MB")
    print("checks: " + "; ".join(dict.fromkeys(checks)))
    verdict = "under" if peak < args.limit_mb else "NOT under"
    print(f"peak RSS during ZIP downloads {verdict} {args.limit_mb:.0f} MB")
    if peak >= args.limit_mb:
        sys.exit(1)


if __name__ == "__main__":
    main()

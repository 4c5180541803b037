"""WADO-RS study retrieval throughput: the hub vs Orthanc + DICOMweb plugin vs reading the files.

Generates one CT study of 300 slices (512 x 512, 16 bit: 157 MB), stores it in the hub through
the core (ingest + index, as C-STORE would) and in Orthanc with storescu, then fetches the
whole study with ``Accept: multipart/related; type="application/dicom"; transfer-syntax=*``
from each with curl (to /dev/null), and times ``cat`` of the same files (warm page cache).
Prints the median MB/s of ``--repeat`` runs, the ratios, and the hub API process's peak memory
before and after (the answer is streamed, so it must not grow by the study's size).

    .venv/bin/python bench/wado.py --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.servers import Server, hub_api, orthanc, peak_rss_mb, storescu_dir
from imaging_hub.config import Settings
from imaging_hub.db.migrate import upgrade
from imaging_hub.hub import Hub
from imaging_hub.index import index_stored_file
from imaging_hub.ingest import store_instance
from tests.support import testdata

ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def make_ct(directory: Path, slices: int) -> tuple[str, list[Path]]:
    """A CT study of slices 512 x 512 16-bit images with deterministic noise."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(42)
    ds = dcmread(testdata("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows = ds.Columns = 512
    paths = []
    for i in range(slices):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        ds.PixelData = rng.integers(0, 4096, (512, 512), dtype=np.uint16).tobytes()
        path = directory / f"{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return str(ds.StudyInstanceUID), paths


def load_hub(data_dir: Path, paths: list[Path]) -> None:
    """Store and index every file through the core (render jobs are left queued)."""
    settings = Settings(data_dir=data_dir, storage_min_free_bytes=0)
    data_dir.mkdir(parents=True)
    upgrade(settings.resolved_database_url)
    hub = Hub.open(settings)
    try:
        for path in paths:
            index_stored_file(hub, store_instance(hub, path, source="bench").stored_file_id)
    finally:
        hub.close()


def fetch(server: Server, study: str) -> tuple[float, int]:
    """Seconds and bytes of one whole-study retrieval with curl."""
    headers = [arg for name, value in server.headers.items() for arg in ("-H", f"{name}: {value}")]
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{time_total} %{size_download} %{http_code}",
         "-H", f"Accept: {ANY}", *headers, f"{server.dicomweb}/studies/{study}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert out[2] == "200", out
    return float(out[0]), int(out[1])


def rates(server: Server, study: str, repeat: int) -> tuple[float, int]:
    """Median MB/s of repeat retrievals after one warm-up, and the bytes of one answer."""
    fetch(server, study)
    runs = [fetch(server, study) for _ in range(repeat)]
    return statistics.median(size / 1e6 / seconds for seconds, size in runs), runs[0][1]


def cat_rate(paths: list[Path], repeat: int) -> float:
    """Median MB/s of reading the files with cat (warm cache after the first run)."""
    size = sum(p.stat().st_size for p in paths)
    runs = []
    for _ in range(repeat + 1):
        start = time.perf_counter()
        subprocess.run(["cat", *map(str, paths)], stdout=subprocess.DEVNULL, check=True)
        runs.append(size / 1e6 / (time.perf_counter() - start))
    return statistics.median(runs[1:])


def main() -> None:
    """Generate, load, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-wado-") as tmp:
        work = Path(tmp)
        study, paths = make_ct(work / "ct", args.slices)
        mb = sum(p.stat().st_size for p in paths) / 1e6
        load_hub(work / "hub", paths)
        with hub_api(work / "hub", work / "hub-api.log") as hub:
            before = peak_rss_mb(hub.pid)
            hub_rate, hub_bytes = rates(hub, study, args.repeat)
            after = peak_rss_mb(hub.pid)
        with orthanc(work / "orthanc") as peer:
            assert peer.dicom_port is not None
            storescu_dir(peer.dicom_port, work / "ct", "ORTHANC")
            orthanc_rate, orthanc_bytes = rates(peer, study, args.repeat)
        disk = cat_rate(paths, args.repeat)
    print(f"{args.slices}-slice CT study, {mb:.1f} MB in files, transfer-syntax=*\n")
    print(f"{'peer':<34}{'MB/s':>8}{'answer MB':>11}")
    print(f"{'hub WADO-RS (uvicorn, 1 process)':<34}{hub_rate:>8.0f}{hub_bytes / 1e6:>11.1f}")
    print(f"{'Orthanc + DICOMweb plugin':<34}{orthanc_rate:>8.0f}{orthanc_bytes / 1e6:>11.1f}")
    print(f"{'cat of the files (warm cache)':<34}{disk:>8.0f}{mb:>11.1f}")
    print(f"\nhub vs Orthanc: {hub_rate / orthanc_rate:.2f}x; hub vs cat: {hub_rate / disk:.2f}x")
    print(f"hub API peak RSS: {before:.0f} MB before, {after:.0f} MB after the retrievals")


if __name__ == "__main__":
    main()

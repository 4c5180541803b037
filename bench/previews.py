"""Previews and rendering: worker time, time to thumbnails, serving latency, a worker's memory.

Generates deterministic files once (seed 7): a 30-slice MR series (256 x 256, 16-bit), 40 DX
radiographs (2500 x 3000, 14 of 16 bits, every fourth MONOCHROME1), and radiographs as JPEG
2000 (lossless and lossy, pydicom + OpenJPEG), JPEG baseline (8 bit) and JPEG extended (12 bit,
both dcmtk's dcmcjpeg). Then, in one run:

(a) each render job through the worker's own code (``imaging_hub.work.run_job``) in this
    process, timing its CPU per instance (process CPU: OpenJPEG decodes on several threads),
    and the CPU of each step on one file of each kind; and ``imaging-hub serve`` (receiver,
    API, worker) receiving the MR series with storescu: seconds from the last acknowledged
    C-STORE until every thumbnail of the series is ready, then every other file, with the
    worker's CPU;
(b) HTTP GETs with keep-alive (httpx) of the hub's stored thumbnail and preview, the hub's
    DICOMweb ``/rendered``, and Orthanc's ``/instances/{id}/preview`` (JPEG and PNG) and
    DICOMweb ``/rendered`` for the same instances (Orthanc 1.10 + DICOMweb plugin, on
    127.0.0.1 with a temp dir), in interleaved rounds so that both see the same machine load;
(c) ``imaging-hub worker``'s peak RSS while it renders a 3000 x 3000 16-bit radiograph, a
    JPEG 2000 radiograph and 500-frame instances (256 x 256 x 16 bit, native and RLE), and
    the bytes read and memory of rendering such an instance's middle frame in a fresh process
    vs decoding its whole pixel data.

    .venv/bin/python bench/previews.py
    .venv/bin/python bench/previews.py --j2k-only   # (a) for the JPEG 2000 radiographs alone
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import psutil
from pydicom import dcmread
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.previews_data import MR_SERIES, generate
from bench.servers import DCMTK_ENV, PASSWORD, hub_env, orthanc
from imaging_hub.config import Settings
from imaging_hub.db.migrate import upgrade
from imaging_hub.db.models import Job
from imaging_hub.hub import Hub
from imaging_hub.ingest import store_instance
from imaging_hub.jobs import claim_for_publish
from imaging_hub.logging import configure_logging
from imaging_hub.work import run_job
from tests.support import free_port, wait_for_port

DONE = ("ready", "failed", "icon")


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of values."""
    return float(np.percentile(values, q))


# (a) the worker's time per instance ------------------------------------------------------------


def worker_cpu(
    data_dir: Path, groups: dict[str, list[Path]]
) -> dict[str, list[tuple[float, float]]]:
    """Store and index every file through the core, then run each render job as the worker
    does, in this process; (CPU ms of every thread, wall ms) per job, by group."""
    settings = Settings(data_dir=data_dir, storage_min_free_bytes=0)
    data_dir.mkdir(parents=True)
    upgrade(settings.resolved_database_url)
    hub = Hub.open(settings)
    try:
        group_of: dict[str, str] = {}
        for name, paths in groups.items():
            for path in paths:
                group_of[store_instance(hub, path, source="bench").sop_instance_uid] = name
        times: dict[str, list[tuple[float, float]]] = {}
        while batch := claim_for_publish(hub.db):
            for job_id, _ in batch:
                with hub.db.read() as s:
                    job = s.execute(select(Job.kind, Job.payload).where(Job.id == job_id)).one()
                cpu, wall = time.process_time(), time.perf_counter()
                run_job(hub, job_id, owner="bench")
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                if job.kind == "render":
                    name = group_of[job.payload["sop_instance_uid"]]
                    times.setdefault(name, []).append((cpu * 1000, wall * 1000))
        return times
    finally:
        hub.close()


def states(data_dir: Path) -> dict[str, str]:
    """SOP Instance UID -> preview state of every indexed instance (read-only)."""
    db = sqlite3.connect(f"file:{data_dir / 'index.sqlite'}?mode=ro", uri=True)
    try:
        return dict(db.execute("select sop_instance_uid, preview_state from instance"))
    finally:
        db.close()


def wait_ready(data_dir: Path, sops: set[str], timeout: float, alive: Callable[[], bool]) -> float:
    """Wait until every instance in sops has its previews (or failed); returns the time then."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            now = states(data_dir)
        except sqlite3.Error:
            now = {}
        if all(now.get(sop) in DONE for sop in sops):
            return time.perf_counter()
        if not alive():
            raise RuntimeError("a hub process stopped")
        time.sleep(0.01)
    raise TimeoutError(f"previews not ready after {timeout} s")


def sop_of(path: Path) -> str:
    """The SOP Instance UID of a file."""
    return str(
        dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID
    )


#: storescu proposes uncompressed transfer syntaxes unless told which compressed one to add.
PROPOSE = {"j2k-lossless": "-xv", "j2k-lossy": "-xw", "jpeg-baseline": "-xy", "jpeg-12bit": "-xx"}


def storescu(port: int, paths: list[Path], aec: str = "IMAGING_HUB") -> None:
    """Send the files, one association per transfer syntax (dcmtk, TCP_NODELAY)."""
    by_option: dict[str, list[Path]] = {}
    for path in paths:
        kind = path.name.rsplit("-", 1)[0]
        by_option.setdefault(PROPOSE.get(kind, "-x="), []).append(path)
    for option, files in by_option.items():
        subprocess.run(
            ["storescu", option, "-aec", aec, "127.0.0.1", str(port), *map(str, files)],
            check=True,
            capture_output=True,
            env=DCMTK_ENV,
        )


@contextmanager
def serve(data_dir: Path, log: Path) -> Iterator[tuple[str, int, subprocess.Popen[bytes]]]:
    """``imaging-hub serve`` on data_dir with a clinician account; yields (base URL, DICOM port)."""
    http, dicom = free_port(), free_port()
    env = {**hub_env(data_dir, http), "HUB_DICOM_HOST": "127.0.0.1", "HUB_DICOM_PORT": str(dicom)}
    hub = [sys.executable, "-m", "imaging_hub"]
    subprocess.run([*hub, "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run(
        [*hub, "users", "add", "bench", "--role", "clinician", "--password-stdin"],
        env=env,
        input=PASSWORD + "\n",
        text=True,
        check=True,
        capture_output=True,
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*hub, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for_port(http, timeout=60)
        wait_for_port(dicom, timeout=60)
        yield f"http://127.0.0.1:{http}", dicom, proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def child(proc: subprocess.Popen[bytes], name: str) -> psutil.Process:
    """The child process of ``imaging-hub serve`` running ``imaging-hub name``."""
    for p in psutil.Process(proc.pid).children(recursive=True):
        if p.cmdline()[-1:] == [name]:
            return p
    raise RuntimeError(f"no {name} process")


def cpu_seconds(p: psutil.Process) -> float:
    """User + system CPU seconds of a process so far."""
    t = p.cpu_times()
    return t.user + t.system


# (b) serving ---------------------------------------------------------------------------------


def orthanc_id(client: httpx.Client, base_url: str, sop: str) -> str:
    """Orthanc's identifier of an instance, by SOP Instance UID."""
    found = client.post(f"{base_url}/tools/lookup", content=sop).json()
    return str(next(item["ID"] for item in found if item["Type"] == "Instance"))


def wado_path(path: Path) -> str:
    """studies/…/series/…/instances/… of a file."""
    ds = dcmread(path, stop_before_pixels=True)
    return (
        f"studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    )


# (c) memory -----------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS (kB) and bytes read (rchar) of a process."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmHWM:", "VmRSS:")):
            out[line.split(":")[0]] = int(line.split()[1])
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            out["rchar"] = int(line.split()[1])
    return out


PROBE = """
import sys, json
from pathlib import Path
def status():
    s = {l.split(':')[0]: int(l.split()[1]) for l in open('/proc/self/status')
         if l.startswith(('VmHWM', 'VmRSS'))}
    s['rchar'] = int(open('/proc/self/io').read().split()[1])
    return s
from pydicom import dcmread
from imaging_hub.previews import has_pixels
from imaging_hub.render import ImageFormat, RenderOptions, encode, fit, render_frame
path = Path(sys.argv[1])
before = status()
if sys.argv[2] == 'pipeline':
    _, frames = has_pixels(path)
    image = fit(render_frame(path, RenderOptions(frame=frames // 2)), 1024, 1024)
    encode(image, ImageFormat.JPEG)
else:
    dcmread(path).pixel_array
after = status()
print(json.dumps({k: after[k] - before[k] for k in after} | {'VmHWM_abs': after['VmHWM']}))
"""


def probe(path: Path, how: str) -> dict[str, int]:
    """Memory and bytes read by a fresh process rendering path (pipeline) or decoding it all."""
    import json

    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), how],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return dict(json.loads(out.stdout))


def worker_memory(
    work: Path, files: list[tuple[str, Path]], warmup: Path
) -> list[tuple[str, dict[str, int]]]:
    """``imaging-hub worker`` alone: its VmHWM after start-up, then after each file's render."""
    data = work / "hub-mem"
    settings = Settings(data_dir=data, storage_min_free_bytes=0)
    data.mkdir(parents=True)
    upgrade(settings.resolved_database_url)
    env = hub_env(data, 0)
    with (work / "worker-mem.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "imaging_hub", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    hub = Hub.open(settings)
    rows = []
    try:
        for name, path in [("started, one small instance rendered", warmup), *files]:
            sop = store_instance(hub, path, source="bench").sop_instance_uid
            before = proc_status(proc.pid)
            wait_ready(data, {sop}, 300, lambda: proc.poll() is None)
            after = proc_status(proc.pid)
            after["rchar"] -= before["rchar"]
            rows.append((name, after))
        return rows
    finally:
        hub.close()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


# the run ---------------------------------------------------------------------------------------


def row(label: str, values: list[float]) -> str:
    """A table row: label, count, median and p95."""
    return f"{label:<44}{len(values):>4}{statistics.median(values):>9.1f}{pct(values, 95):>9.1f}"


def part_a(work: Path, groups: dict[str, list[Path]]) -> dict[str, list[tuple[float, float]]]:
    """Render-job CPU per instance, after one warm-up render of each kind of file."""
    from imaging_hub.render import render_frame

    inputs = {k: v for k, v in groups.items() if k.startswith(("MR", "DX"))}
    for paths in inputs.values():
        render_frame(paths[0])  # loads each decoder once, as a long-running worker has
    return worker_cpu(work / "hub-inproc", inputs)


def stages(path: Path, repeat: int = 7) -> dict[str, float]:
    """Median CPU ms of each step of a render job's image work on one file."""
    from imaging_hub.previews import has_pixels
    from imaging_hub.render import ImageFormat, RenderOptions, encode, fit, read_frame
    from imaging_hub.render.pipeline import render_pixels

    runs: dict[str, list[float]] = {}
    for _ in range(repeat):
        marks = [time.process_time()]
        has_pixels(path)
        marks.append(time.process_time())
        frame = read_frame(path, target=1024)  # as the worker decodes for a 1024-px preview
        marks.append(time.process_time())
        image = render_pixels(frame.pixels, frame.attributes, RenderOptions())
        marks.append(time.process_time())
        preview = fit(image, 1024, 1024)
        marks.append(time.process_time())
        encode(fit(preview, 256, 256), ImageFormat.JPEG)
        encode(preview, ImageFormat.JPEG)
        marks.append(time.process_time())
        names = ("header", "decode", "pipeline", "scale 1024", "scale 256 + 2 JPEGs")
        for name, begin, end in zip(names, marks, marks[1:], strict=False):
            runs.setdefault(name, []).append((end - begin) * 1000)
    return {name: statistics.median(values) for name, values in runs.items()}


def part_serve(
    work: Path, groups: dict[str, list[Path]], args: argparse.Namespace
) -> dict[str, object]:
    """Through ``imaging-hub serve``: MR thumbnails after the last C-STORE, then every other
    file with the worker's CPU; then HTTP timings of the hub and Orthanc, interleaved."""
    data = work / "hub"
    mr = groups[MR_SERIES]
    rest = [p for k, v in groups.items() if k.startswith("DX") for p in v]
    out: dict[str, object] = {}
    with serve(data, work / "serve.log") as (base_url, port, proc):
        alive = lambda: proc.poll() is None  # noqa: E731
        storescu(port, groups["warm-up"])  # the worker is up and has rendered once
        wait_ready(data, {sop_of(p) for p in groups["warm-up"]}, 300, alive)
        worker = child(proc, "worker")
        start = time.perf_counter()
        storescu(port, mr)
        acked = time.perf_counter()
        ready = wait_ready(data, {sop_of(p) for p in mr}, 300, alive)
        out["mr"] = (acked - start, ready - acked)
        cpu, start = cpu_seconds(worker), time.perf_counter()
        storescu(port, rest)
        done = wait_ready(data, {sop_of(p) for p in rest}, 1800, alive)
        out["rest"] = (len(rest), done - start, cpu_seconds(worker) - cpu)
        out["worker_hwm"] = proc_status(worker.pid)["VmHWM"] / 1024
        out["failed"] = [s for s, state in states(data).items() if state != "ready"]
        print_serve(out)
        token = httpx.post(
            f"{base_url}/api/auth/token", data={"username": "bench", "password": PASSWORD}
        ).json()["access_token"]
        with orthanc(work / "orthanc") as peer:
            assert peer.dicom_port is not None
            sent = [p for k, v in groups.items() if k.startswith(("MR", "DX")) for p in v]
            storescu(peer.dicom_port, sent, "ORTHANC")
            out["http"] = part_http(groups, base_url, token, peer.dicomweb, args)
    return out


def part_http(
    groups: dict[str, list[Path]], hub: str, token: str, dicomweb: str, args: argparse.Namespace
) -> dict[str, tuple[list[float], int]]:
    """GETs of the hub's and Orthanc's images, interleaved round by round (same machine load)."""
    auth = {"Authorization": f"Bearer {token}"}
    orthanc_url = dicomweb.removesuffix("/dicom-web")
    # name -> (client headers, url, accept, repeat)
    plan: dict[str, tuple[dict[str, str], str, str, int]] = {}
    with httpx.Client(timeout=120) as client:
        for label, path in examples(groups):
            sop = sop_of(path)
            for kind in ("thumbnail", "preview"):
                url = f"{hub}/api/instances/{sop}/{kind}"
                plan[f"{label}: hub {kind} (stored)"] = (auth, url, "image/jpeg", args.repeat)
            url = f"{hub}/dicomweb/{wado_path(path)}/rendered"
            plan[f"{label}: hub DICOMweb rendered"] = (auth, url, "image/jpeg", args.slow_repeat)
            oid = orthanc_id(client, orthanc_url, sop)
            for accept, name in (("image/jpeg", "JPEG"), ("image/png", "PNG")):
                url = f"{orthanc_url}/instances/{oid}/preview"
                plan[f"{label}: Orthanc preview {name}"] = ({}, url, accept, args.slow_repeat)
            url = f"{dicomweb}/{wado_path(path)}/rendered"
            plan[f"{label}: Orthanc DICOMweb rendered"] = ({}, url, "image/jpeg", args.slow_repeat)
    # The floor: a route without access check, database or audit event.
    plan["hub /healthz (for reference)"] = (auth, f"{hub}/healthz", "application/json", args.repeat)
    runs: dict[str, list[float]] = {name: [] for name in plan}
    sizes: dict[str, int] = {}
    with httpx.Client(timeout=120) as hub_client, httpx.Client(timeout=120) as peer_client:
        for headers, url, accept, _ in plan.values():  # 3 warm-ups each
            client = hub_client if headers else peer_client
            for _ in range(3):
                client.get(url, headers={**headers, "Accept": accept}).raise_for_status()
        rounds = max(repeat for *_, repeat in plan.values())
        for i in range(rounds):
            for name, (headers, url, accept, repeat) in plan.items():
                if i % (rounds // repeat) or len(runs[name]) >= repeat:
                    continue  # a slow resource: fetched every (rounds / repeat)-th round
                client = hub_client if headers else peer_client
                start = time.perf_counter()
                answer = client.get(url, headers={**headers, "Accept": accept})
                runs[name].append((time.perf_counter() - start) * 1000)
                answer.raise_for_status()
                assert answer.headers["content-type"].startswith(accept)
                sizes[name] = len(answer.content)
    return {name: (runs[name], sizes[name]) for name in plan}


def examples(groups: dict[str, list[Path]]) -> list[tuple[str, Path]]:
    """The instances fetched over HTTP: an MR slice and a radiograph."""
    return [
        ("MR 256x256", groups[MR_SERIES][15]),
        ("DX 2500x3000", groups["DX 2500x3000 MONOCHROME2"][0]),
    ]


def main() -> None:
    """Generate, measure, print each part as it ends."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dx", type=int, default=40, help="native radiographs")
    parser.add_argument("--per-kind", type=int, default=5, help="radiographs per compressed kind")
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=200, help="GETs of stored previews")
    parser.add_argument("--slow-repeat", type=int, default=20, help="GETs rendered on request")
    parser.add_argument("--keep", type=Path, help="work in this (new) folder and keep it")
    parser.add_argument("--j2k-only", action="store_true", help="only (a), JPEG 2000 files only")
    args = parser.parse_args()
    configure_logging("WARNING")
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="bench-previews-") as tmp:
        work = Path(tmp) if args.keep is None else args.keep
        work.mkdir(parents=True, exist_ok=args.keep is None)
        start = time.perf_counter()
        groups = generate(work, args)
        count, seconds = sum(map(len, groups.values())), time.perf_counter() - start
        print(f"generated {count} files in {seconds:.0f} s", flush=True)
        if args.j2k_only:
            j2k = {k: v for k, v in groups.items() if "j2k" in k}
            print_a(part_a(work, j2k), {k: stages(v[0]) for k, v in j2k.items()})
            return
        cpu = part_a(work, groups)
        print_a(cpu, {k: stages(groups[k][0]) for k in groups if k.startswith("DX")})
        print_b(part_serve(work, groups, args)["http"])  # type: ignore[arg-type]
        big, frames = groups["3000x3000"][0], groups["multi-frame"]
        files = [("3000x3000 16-bit radiograph", big)]
        files += [(f"2500x3000 {k}", groups[f"DX 2500x3000 {k}"][0]) for k in ("j2k-lossless",)]
        files += [(f"{args.frames} frames 256x256 16-bit {p.stem}", p) for p in frames]
        memory = worker_memory(work, files, groups["warm-up"][0])
        probes = [(p, {how: probe(p, how) for how in ("pipeline", "whole")}) for p in frames]
        print_c(memory, probes, probe(big, "pipeline"))
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def print_a(cpu: dict[str, list[tuple[float, float]]], steps: dict[str, dict[str, float]]) -> None:
    """Print the render jobs' CPU per instance and the target."""
    print("\n(a) render job (thumbnail + preview) per instance, the worker's code in this process")
    print(f"{'instances':<44}{'n':>4}{'CPU ms':>9}{'p95':>9}{'wall ms':>9}")
    for name, runs in cpu.items():
        print(row(name, [c for c, _ in runs]) + f"{statistics.median(w for _, w in runs):>9.1f}")
    kinds = (
        ("native", "MONOCHROME"),
        ("JPEG 2000 lossless", "lossless"),
        ("JPEG 2000 lossy", "lossy"),
    )
    for label, key in kinds:
        runs = [c for name, jobs in cpu.items() if key in name for c, _ in jobs]
        if runs:
            print(
                f"target: 2500x3000 {label} radiograph <= 300 ms CPU: median "
                f"{statistics.median(runs):.0f}, p95 {pct(runs, 95):.0f} -> "
                f"{'met' if pct(runs, 95) <= 300 else 'MISSED'}"
            )
    names = list(next(iter(steps.values())))
    print(f"\nCPU ms per step (median of 7){''.join(f'{n:>{max(10, len(n) + 2)}}' for n in names)}")
    for kind, values in steps.items():
        cells = "".join(f"{values[n]:>{max(10, len(n) + 2)}.1f}" for n in names)
        print(f"{kind.removeprefix('DX 2500x3000 '):<29}{cells}", flush=True)


def print_serve(served: dict[str, object]) -> None:
    """Print the figures of ``imaging-hub serve`` receiving and rendering."""
    sent, ready = served["mr"]  # type: ignore[misc]
    count, seconds, worker_cpu_s = served["rest"]  # type: ignore[misc]
    print(
        f"\nimaging-hub serve: 30 MR slices sent in {sent:.2f} s; all thumbnails ready "
        f"{ready:.2f} s after the last C-STORE -> {'met' if ready <= 3 else 'MISSED'} (<= 3 s)"
    )
    print(
        f"then {count} radiographs (native and compressed): all previews in {seconds:.1f} s, "
        f"worker CPU {worker_cpu_s:.1f} s = {worker_cpu_s / count * 1000:.0f} ms per instance "
        f"(index + render + Celery); worker peak RSS {served['worker_hwm']:.0f} MB; "
        f"not ready: {len(served['failed'])}",  # type: ignore[arg-type]
        flush=True,
    )


def print_b(http: dict[str, tuple[list[float], int]]) -> None:
    """Print the HTTP timings, the target and the ratios."""
    print("\n(b) HTTP GET with keep-alive (httpx), ms")
    print(f"{'resource':<52}{'n':>4}{'median':>9}{'p95':>9}{'KB':>8}")
    for name, (runs, size) in http.items():
        median, p95 = statistics.median(runs), pct(runs, 95)
        print(f"{name:<52}{len(runs):>4}{median:>9.2f}{p95:>9.2f}{size / 1024:>8.0f}")
    for label in ("MR 256x256", "DX 2500x3000"):
        mine = statistics.median(http[f"{label}: hub preview (stored)"][0])
        thumb = statistics.median(http[f"{label}: hub thumbnail (stored)"][0])
        print(
            f"{label}: hub thumbnail {thumb:.2f} ms, preview {mine:.2f} ms median -> "
            f"{'met' if max(mine, thumb) <= 10 else 'MISSED'} (<= 10 ms)"
        )
        for other in ("Orthanc preview JPEG", "Orthanc preview PNG", "Orthanc DICOMweb rendered"):
            theirs = statistics.median(http[f"{label}: {other}"][0])
            rendered = statistics.median(http[f"{label}: hub DICOMweb rendered"][0])
            print(
                f"  {other}: {theirs / mine:.2f}x the hub's stored preview, "
                f"{theirs / rendered:.2f}x the hub's DICOMweb rendered"
            )
    sys.stdout.flush()


def print_c(
    memory: list[tuple[str, dict[str, int]]],
    probes: list[tuple[Path, dict[str, dict[str, int]]]],
    big: dict[str, int],
) -> None:
    """Print the worker's memory, the target and the one-frame-at-a-time check."""
    print("\n(c) imaging-hub worker (2 threads) after each render (read: bytes read meanwhile)")
    print(f"{'rendered':<44}{'VmHWM MB':>10}{'VmRSS MB':>10}{'read MB':>9}")
    for name, s in memory:
        hwm, rss = s["VmHWM"] / 1024, s["VmRSS"] / 1024
        print(f"{name:<44}{hwm:>10.0f}{rss:>10.0f}{s['rchar'] / 1e6:>9.1f}")
    peak = max(s["VmHWM"] for _, s in memory) / 1024
    print(f"target: peak RSS < 500 MB: {peak:.0f} MB -> {'met' if peak < 500 else 'MISSED'}")
    for path, found in probes:
        p, w = found["pipeline"], found["whole"]
        print(
            f"{path.name} ({path.stat().st_size / 1e6:.1f} MB), fresh process: middle frame "
            f"rendered: read {p['rchar'] / 1e6:.2f} MB, peak RSS +{p['VmHWM'] / 1024:.1f} MB; "
            f"whole pixel data decoded: read {w['rchar'] / 1e6:.1f} MB, "
            f"peak RSS +{w['VmHWM'] / 1024:.1f} MB"
        )
    print(
        f"3000x3000 radiograph, fresh process: rendering adds {big['VmHWM'] / 1024:.0f} MB "
        f"to the peak RSS ({big['VmHWM_abs'] / 1024:.0f} MB in all)"
    )


if __name__ == "__main__":
    main()

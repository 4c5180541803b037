"""Test helpers: sample DICOM files and small builders."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid


def testdata(name: str) -> Path:
    """Path of one of pydicom's bundled test files."""
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path)


testdata.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_instances(
    out_dir: Path,
    count: int,
    *,
    template: str = "CT_small.dcm",
    patient_id: str = "PAT-1",
    patient_name: str = "Doe^Jane",
    study_uid: str | None = None,
    series_per_study: int = 1,
) -> list[Path]:
    """Write count copies of a test file as new instances of one study (new SOP Instance UIDs)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = dcmread(testdata(template))
    study_uid = study_uid or generate_uid()
    series_uids = [generate_uid() for _ in range(series_per_study)]
    paths = []
    for i in range(count):
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uids[i % series_per_study]
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.PatientID = patient_id
        ds.PatientName = patient_name
        path = out_dir / f"{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def wait_for_port(port: int, *, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    """Wait until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


def wait_until(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.1) -> bool:
    """Poll predicate until it is true or timeout passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class HubProcess:
    """One ``imaging-hub`` command run as a real child process, logging to a file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> HubProcess:
        """Start the command in its own process group."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "imaging_hub", *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL the whole process group (the command and its children)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait; SIGKILL what is left after timeout. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stray grandchildren
        return self.proc.returncode

    def log_text(self) -> str:
        """What the process wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def storescu(
    port: int,
    *files: Path,
    aec: str = "IMAGING_HUB",
    aet: str = "STORESCU",
    extra: list[str] | None = None,
) -> str:
    """Send files with dcmtk's storescu; raises with its output when it fails."""
    result = subprocess.run(
        ["storescu", *(extra or []), "-aet", aet, "-aec", aec, "127.0.0.1", str(port)]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TCP_NODELAY": "1"},  # dcmtk keeps Nagle's algorithm on otherwise
    )
    if result.returncode != 0:
        raise AssertionError(f"storescu failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stderr


def make_study(
    out_dir: Path,
    count: int = 1,
    *,
    template: str = "CT_small.dcm",
    study_uid: str | None = None,
    series_per_study: int = 1,
    **attributes: object,
) -> list[Path]:
    """Write count new instances of one study from a test file, with attributes set by keyword.

    ``make_study(d, 2, PatientID="P1", StudyDate="20240310", Modality="MR")``; UTF-8 is declared
    so that any name can be used.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = dcmread(testdata(template))
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    study_uid = study_uid or generate_uid()
    series_uids = [generate_uid() for _ in range(series_per_study)]
    paths = []
    for i in range(count):
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uids[i % series_per_study]
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        path = out_dir / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def dataset_bytes(path: Path) -> bytes:
    """The encoded dataset of a Part 10 file, without preamble and file meta (PS3.10 7.1)."""
    data = path.read_bytes()
    assert data[128:132] == b"DICM", path
    group_length = int.from_bytes(data[140:144], "little")  # (0002,0000) UL, explicit VR LE
    return data[144 + group_length :]


_SHIM_SOURCE = Path(__file__).parent / "native" / "bind_loopback.c"


def loopback_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a peer that cannot be told where to listen, so that it listens on 127.0.0.1.

    Orthanc 1.10 and dcmtk 3.6.7's storescp listen on every interface; the LD_PRELOAD shim in
    tests/native/bind_loopback.c (built once per source version with the system C compiler)
    keeps the servers the tests start on the loopback interface.
    """
    import hashlib
    import tempfile

    digest = hashlib.sha256(_SHIM_SOURCE.read_bytes()).hexdigest()[:12]
    library = Path(tempfile.gettempdir()) / f"imaging-hub-bind-loopback-{digest}.so"
    if not library.exists():
        partial = library.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run(
            ["cc", "-shared", "-fPIC", "-O2", "-o", str(partial), str(_SHIM_SOURCE), "-ldl"],
            check=True,
        )
        partial.replace(library)
    merged = dict(os.environ if env is None else env)
    preload = merged.get("LD_PRELOAD")
    merged["LD_PRELOAD"] = f"{library} {preload}" if preload else str(library)
    return merged

"""Test helpers: sample DICOM files and small builders."""

from __future__ import annotations

import socket
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid


def testdata(name: str) -> Path:
    """Path of one of pydicom's bundled test files."""
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path)


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

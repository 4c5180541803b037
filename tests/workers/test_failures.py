"""Failed work is visible and retryable, with a real worker process: a poison instance fails alone
with its error shown by ``imaging-hub jobs list``; ``imaging-hub jobs retry`` re-runs failed jobs.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.encaps import encapsulate
from sqlalchemy import func, select

from imaging_hub.db.models import Instance, Job, PreviewState
from imaging_hub.hub import Hub
from tests.processes import Deployment
from tests.support import make_instances, storescu, testdata, wait_for_port, wait_until

pytestmark = [pytest.mark.dcmtk, pytest.mark.slow]


def _states(hub: Hub) -> dict[str, int]:
    with hub.db.read() as s:
        rows = s.execute(select(Job.state, func.count(Job.id)).group_by(Job.state)).all()
    return {str(state): count for state, count in rows}


def _previews(hub: Hub) -> dict[str, str]:
    with hub.db.read() as s:
        rows = s.execute(select(Instance.sop_instance_uid, Instance.preview_state)).all()
    return {uid: PreviewState(state).value for uid, state in rows}


def _cli(d: Deployment, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "imaging_hub", *args],
        env=d.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _poison(good: Path, target: Path) -> Path:
    """A JPEG 2000 instance of the same study whose code stream cannot be decoded."""
    ds = dcmread(testdata("JPEG2000.dcm"))
    ds.StudyInstanceUID = dcmread(good, stop_before_pixels=True).StudyInstanceUID
    ds.PatientID = dcmread(good, stop_before_pixels=True).PatientID
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".99"
    ds.PixelData = encapsulate([b"\xff\x4f" + b"\x00" * 200 + b"\xff\xd9"])
    ds.save_as(target)
    return target


def test_a_poison_instance_fails_visibly_and_alone(
    deploy: Callable[..., Deployment], tmp_path: Path
) -> None:
    d = deploy(None, None)
    d.start("worker")
    d.start("scp")
    wait_for_port(d.settings.dicom_port)
    good = make_instances(tmp_path / "in", 3)
    poison = _poison(good[0], tmp_path / "poison.dcm")
    storescu(d.settings.dicom_port, *good)
    storescu(d.settings.dicom_port, poison, extra=["-xw"])  # propose JPEG 2000 (lossy)
    hub = d.hub()
    try:
        # 4 index jobs, 3 renders, and 2 identity checks: the poison names another patient.
        done = {"done": 9, "failed": 1}
        assert wait_until(lambda: _states(hub) == done, timeout=60), (_states(hub), d.logs())
        previews = _previews(hub)
        poison_uid = str(dcmread(poison, stop_before_pixels=True).SOPInstanceUID)
        assert previews.pop(poison_uid) == "failed"
        assert set(previews.values()) == {"ready"}  # the rest of the study is unaffected
        listed = _cli(d, "jobs", "list", "--state", "failed")
        (line,) = listed.strip().splitlines()
        job_id, kind, state, _attempts, error = line.split("\t")
        assert (kind, state) == ("render", "failed") and "cannot render" in error
        assert _cli(d, "jobs", "retry").strip() == "1 job(s) queued again"
        # Re-run by the worker: still undecodable, so failed again with a fresh attempt count.
        with hub.db.read() as s:
            job = s.get(Job, int(job_id))
            assert job is not None and job.state in ("queued", "published", "running", "failed")
        assert wait_until(lambda: _states(hub) == done, timeout=60), _states(hub)
    finally:
        hub.close()


def test_retry_reruns_a_job_once_its_cause_is_fixed(
    deploy: Callable[..., Deployment], tmp_path: Path
) -> None:
    d = deploy(None, None)
    d.env["HUB_JOBS_MAX_ATTEMPTS"] = "1"
    blocker = d.settings.data_dir / "previews"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_bytes(b"")  # a file where the previews folder belongs: every render fails
    d.start("worker")
    d.start("scp")
    wait_for_port(d.settings.dicom_port)
    storescu(d.settings.dicom_port, *make_instances(tmp_path / "in", 1))
    hub = d.hub()
    try:
        failed = {"done": 2, "failed": 1}  # index and identity done, render failed
        assert wait_until(lambda: _states(hub) == failed, timeout=60), (_states(hub), d.logs())
        with hub.db.read() as s:
            error = s.execute(select(Job.last_error).where(Job.state == "failed")).scalar_one()
        assert error and "Error" in error
        blocker.unlink()
        assert _cli(d, "jobs", "retry").strip() == "1 job(s) queued again"
        assert wait_until(lambda: _states(hub) == {"done": 3}, timeout=60), _states(hub)
        assert set(_previews(hub).values()) == {"ready"}
    finally:
        hub.close()

"""Helpers for the HTTP API tests: ingest and index a small corpus of studies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from imaging_hub.db.models import Job, JobState
from imaging_hub.hub import Hub
from imaging_hub.ingest import store_instance
from imaging_hub.jobs import claim_for_publish
from imaging_hub.work import JobOutcome, run_job
from tests.support import make_study

JANE = {
    "PatientID": "P1",
    "IssuerOfPatientID": "CLINIC-A",
    "PatientName": "Doe^Jane",
    "PatientBirthDate": "19800115",
    "PatientSex": "F",
}
JURGEN = {
    "PatientID": "P2",
    "IssuerOfPatientID": "CLINIC-B",
    "PatientName": "Müller^Jürgen",
    "PatientBirthDate": "19750620",
    "PatientSex": "M",
}
MAX = {
    "PatientID": "P3",
    "IssuerOfPatientID": "CLINIC-A",
    "PatientName": "Doering^Max",
    "PatientBirthDate": "19900202",
    "PatientSex": "M",
}

#: The password of the test users.
PASSWORD = "correct-horse-battery"

#: Studies of the corpus, newest StudyDate first (the order every search returns).
ORDER = ["C", "A", "B", "D"]


def run_pending_jobs(hub: Hub) -> int:
    """Run every due job in this process, as a worker would; each must succeed."""
    ran = 0
    while claimed := claim_for_publish(hub.db):
        for job_id, _queue in claimed:
            # An index job another job's batch already ran is skipped.
            outcome = run_job(hub, job_id, owner="tests")
            assert outcome in (JobOutcome.DONE, JobOutcome.SKIPPED), outcome
            ran += 1
    with hub.db.read() as s:
        unfinished = s.execute(select(Job.id).where(Job.state != JobState.DONE)).scalars().all()
    assert not unfinished, f"jobs not done: {unfinished}"
    return ran


def ingest_study(hub: Hub, out_dir: Path, count: int = 1, **kwargs: Any) -> str:
    """Write, store and index count instances of one study; return its StudyInstanceUID."""
    paths = make_study(out_dir, count, **kwargs)
    results = [store_instance(hub, path, source="test") for path in paths]
    run_pending_jobs(hub)
    return results[0].study_uid


def build_corpus(hub: Hub, root: Path) -> dict[str, str]:
    """Ingest four studies of three patients and return their UIDs by letter (A-D).

    A: Jane, 2024-03-10, MR + CT (2 series, 4 instances). B: Jane, 2023-01-05, CT.
    C: Jürgen, 2024-06-01, CT, accession ``ACC_3%``. D: Max, 2022-01-01, DX.
    """
    study_a = {
        "StudyDate": "20240310",
        "StudyTime": "101500",
        "AccessionNumber": "ACC1",
        "StudyID": "S1",
        "StudyDescription": "Lumbar spine MRI",
        "ReferringPhysicianName": "House^Gregory",
        **JANE,
    }
    uid_a = ingest_study(hub, root / "a-mr", 2, template="MR_small.dcm", Modality="MR", **study_a)
    ingest_study(hub, root / "a-ct", 2, study_uid=uid_a, Modality="CT", **study_a)
    uid_b = ingest_study(
        hub,
        root / "b",
        Modality="CT",
        StudyDate="20230105",
        AccessionNumber="ACC2",
        StudyID="S2",
        StudyDescription="Cervical CT",
        ReferringPhysicianName="Wilson^James",
        **JANE,
    )
    uid_c = ingest_study(
        hub,
        root / "c",
        Modality="CT",
        StudyDate="20240601",
        AccessionNumber="ACC_3%",
        StudyID="S3",
        StudyDescription="Whole spine 50% dose",
        **JURGEN,
    )
    uid_d = ingest_study(
        hub,
        root / "d",
        Modality="DX",
        StudyDate="20220101",
        AccessionNumber="ACCX3",
        StudyID="S4",
        StudyDescription="Lateral flexion X-ray",
        **MAX,
    )
    return {"A": uid_a, "B": uid_b, "C": uid_c, "D": uid_d}


# -- Clinician access: users of each role, their bearer headers ---------------------------------


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of token."""
    return {"Authorization": f"Bearer {token}"}


def sign_in(hub: Hub, username: str, role: str, specialty: str | None = None) -> dict[str, str]:
    """Create a user of role and return the Authorization header of a fresh access token."""
    from imaging_hub.auth import TokenIssuer, create_user

    user = create_user(hub.db, username, PASSWORD, role=role, specialty=specialty)
    return bearer(TokenIssuer.from_settings(hub.settings).issue(user).access_token)

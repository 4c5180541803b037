"""Indexing: patient identity, study/series/instance rows, aggregates, idempotence, versions."""

from pathlib import Path

from pydicom import dcmread
from sqlalchemy import func, select

from imaging_hub.db.models import (
    IdentityLinkEvent,
    Instance,
    Job,
    JobState,
    LinkState,
    PatientRecord,
    PreviewState,
    Series,
    SourceIdentity,
    StoredFile,
    StoredFileState,
    Study,
)
from imaging_hub.hub import Hub
from imaging_hub.index import index_stored_file
from imaging_hub.ingest import store_instance
from imaging_hub.jobs import claim_for_publish, recent_jobs
from imaging_hub.work import JobOutcome, run_job
from tests.support import make_instances, testdata


def _run_all(hub: Hub) -> list[str]:
    return [run_job(hub, job_id, owner="test") for job_id, _ in claim_for_publish(hub.db)]


def test_index_ct_small(hub: Hub) -> None:
    store_instance(hub, testdata("CT_small.dcm"), source="test")
    assert _run_all(hub) == [JobOutcome.DONE]
    with hub.db.read() as s:
        study = s.execute(select(Study)).scalar_one()
        identity = s.get(SourceIdentity, study.source_identity_id)
        series = s.execute(select(Series)).scalar_one()
        instance = s.execute(select(Instance)).scalar_one()
        events = s.execute(select(IdentityLinkEvent)).scalars().all()
    assert study.modalities_in_study == "\\CT\\"
    assert (study.num_series, study.num_instances, series.num_instances) == (1, 1, 1)
    assert str(study.study_date) == "2004-01-19"
    assert identity.patient_id == "1CT1" and identity.name_norm == "COMPRESSEDSAMPLES^CT1"
    assert identity.link_state == LinkState.NEW
    assert [(e.state, e.patient_record_id) for e in events] == [
        (LinkState.NEW, identity.patient_record_id)
    ]
    assert instance.rows == 128 and instance.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert "7FE00010" not in instance.dicom_json


def test_aggregates_over_several_series_and_modalities(hub: Hub, tmp_path: Path) -> None:
    study_uid = "1.2.826.0.1.3680043.8.498.1"
    paths = make_instances(tmp_path / "ct", 4, study_uid=study_uid, series_per_study=2)
    mr = make_instances(tmp_path / "mr", 3, template="MR_small.dcm", study_uid=study_uid)
    for p in paths + mr:
        store_instance(hub, p, source="test")
    outcomes = _run_all(hub)  # the first index job runs the other six in its batch
    assert outcomes[0] == JobOutcome.DONE
    assert outcomes[1:] == [JobOutcome.SKIPPED] * 6
    with hub.db.read() as s:
        study = s.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one()
    assert (study.num_series, study.num_instances) == (3, 7)
    assert study.modalities_in_study == "\\CT\\MR\\"


def test_indexing_twice_changes_nothing(hub: Hub) -> None:
    result = store_instance(hub, testdata("CT_small.dcm"), source="test")
    _run_all(hub)
    index_stored_file(hub, result.stored_file_id)
    index_stored_file(hub, result.stored_file_id)
    with hub.db.read() as s:
        counts = [
            s.execute(select(func.count()).select_from(m)).scalar_one()
            for m in (PatientRecord, SourceIdentity, Study, Series, Instance, IdentityLinkEvent)
        ]
        study = s.execute(select(Study)).scalar_one()
    assert counts == [1, 1, 1, 1, 1, 1]
    assert study.num_instances == 1


def test_an_index_job_run_again_queues_no_second_render(hub: Hub) -> None:
    """A worker that died after indexing but before marking its job done: the rerun is a no-op."""
    from tests.api.helpers import run_pending_jobs

    result = store_instance(hub, testdata("CT_small.dcm"), source="test")
    run_pending_jobs(hub)
    with hub.db.read() as s:
        jobs = s.execute(select(func.count()).select_from(Job)).scalar_one()
    index_stored_file(hub, result.stored_file_id)
    with hub.db.read() as s:
        assert s.execute(select(func.count()).select_from(Job)).scalar_one() == jobs
        instance = s.execute(select(Instance)).scalar_one()
    assert instance.preview_state == PreviewState.READY  # the finished previews stay ready


def test_same_patient_id_other_demographics_is_another_identity(hub: Hub, tmp_path: Path) -> None:
    a = make_instances(tmp_path / "a", 1, patient_id="SHARED", patient_name="Doe^Jane")
    b = make_instances(tmp_path / "b", 1, patient_id="SHARED", patient_name="Roe^Richard")
    for p in a + b:
        store_instance(hub, p, source="test")
    _run_all(hub)
    with hub.db.read() as s:
        identities = s.execute(select(SourceIdentity)).scalars().all()
    assert len(identities) == 2
    assert len({i.patient_record_id for i in identities}) == 2


def test_newest_version_wins_and_old_file_is_kept(hub: Hub, tmp_path: Path) -> None:
    first = store_instance(hub, testdata("CT_small.dcm"), source="test")
    ds = dcmread(testdata("CT_small.dcm"))
    ds.InstanceNumber = 99
    variant = tmp_path / "v2.dcm"
    ds.save_as(variant)
    second = store_instance(hub, variant, source="test")
    _run_all(hub)
    with hub.db.read() as s:
        instance = s.execute(select(Instance)).scalar_one()
        old = s.get(StoredFile, first.stored_file_id)
        new = s.get(StoredFile, second.stored_file_id)
    assert instance.stored_file_id == second.stored_file_id
    assert instance.instance_number == 99
    assert (old.state, new.state) == (StoredFileState.SUPERSEDED, StoredFileState.INDEXED)
    assert hub.store.exists(old.path) and hub.store.exists(new.path)


def test_out_of_order_indexing_still_keeps_the_newest(hub: Hub, tmp_path: Path) -> None:
    first = store_instance(hub, testdata("CT_small.dcm"), source="test")
    ds = dcmread(testdata("CT_small.dcm"))
    ds.InstanceNumber = 7
    variant = tmp_path / "v2.dcm"
    ds.save_as(variant)
    second = store_instance(hub, variant, source="test")
    index_stored_file(hub, second.stored_file_id)
    index_stored_file(hub, first.stored_file_id)  # the older version arrives late
    with hub.db.read() as s:
        instance = s.execute(select(Instance)).scalar_one()
    assert instance.stored_file_id == second.stored_file_id


def test_unreadable_stored_file_fails_visibly(hub: Hub) -> None:
    result = store_instance(hub, testdata("CT_small.dcm"), source="test")
    with hub.db.read() as s:
        path = hub.store.local_path(s.get(StoredFile, result.stored_file_id).path)
    path.chmod(0o644)
    path.write_bytes(b"corrupted on disk")
    assert _run_all(hub) == [JobOutcome.FAILED]
    (job,) = recent_jobs(hub.db)
    assert job.state == JobState.FAILED
    assert "PermanentError" in (job.last_error or "")


def test_values_postgresql_would_refuse_are_cleaned(hub: Hub, tmp_path: Path) -> None:
    """NUL characters, IS values beyond 32 bits and over-long strings still index (both DBs)."""
    ds = dcmread(testdata("CT_small.dcm"))
    ds.PatientName = "Doe\x00^Jane"
    ds.SeriesNumber = "99999999999"
    ds.StudyDescription = "L-spine " * 60
    ds.add_new(0x00091010, "LO", "private\x00value")
    ds.private_block(0x0009, "HUB TEST", create=True)
    path = tmp_path / "hostile.dcm"
    ds.save_as(path)
    store_instance(hub, path, source="test")
    assert _run_all(hub) == [JobOutcome.DONE]
    with hub.db.read() as s:
        study = s.execute(select(Study)).scalar_one()
        series = s.execute(select(Series)).scalar_one()
        identity = s.get(SourceIdentity, study.source_identity_id)
        instance = s.execute(select(Instance)).scalar_one()
    assert identity.name == "Doe^Jane" and identity.name_norm == "DOE^JANE"
    assert series.series_number is None
    assert len(study.study_description) == 256
    assert "\x00" not in str(instance.dicom_json)
    # The original file keeps every value as received.
    assert dcmread(path).PatientName == "Doe\x00^Jane"


def test_a_new_version_corrects_study_series_and_patient(hub: Hub, tmp_path: Path) -> None:
    store_instance(hub, testdata("CT_small.dcm"), source="test")
    _run_all(hub)
    ds = dcmread(testdata("CT_small.dcm"))
    ds.StudyDescription = "LUMBAR SPINE CT"
    ds.PatientName = "Samples^Corrected"
    ds.SeriesDescription = "axial bone"
    fixed = tmp_path / "fixed.dcm"
    ds.save_as(fixed)
    store_instance(hub, fixed, source="test")
    _run_all(hub)
    with hub.db.read() as s:
        study = s.execute(select(Study)).scalar_one()
        series = s.execute(select(Series)).scalar_one()
        identity = s.get(SourceIdentity, study.source_identity_id)
    assert study.study_description == "LUMBAR SPINE CT"
    assert series.series_description == "axial bone"
    assert identity.name == "Samples^Corrected"
    assert study.num_instances == 1


def test_a_new_version_in_another_series_moves_the_counts(hub: Hub, tmp_path: Path) -> None:
    store_instance(hub, testdata("CT_small.dcm"), source="test")
    _run_all(hub)
    ds = dcmread(testdata("CT_small.dcm"))
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.77"
    moved = tmp_path / "moved.dcm"
    ds.save_as(moved)
    store_instance(hub, moved, source="test")
    _run_all(hub)
    with hub.db.read() as s:
        counts = {se.series_uid: se.num_instances for se in s.execute(select(Series)).scalars()}
        study = s.execute(select(Study)).scalar_one()
    assert counts["1.2.826.0.1.3680043.8.498.77"] == 1
    assert sum(counts.values()) == 1
    assert (study.num_series, study.num_instances) == (1, 1)


def test_two_versions_in_one_batch_leave_one_instance_in_the_newest_series(
    hub: Hub, tmp_path: Path
) -> None:
    """The batch finds the instance row it placed itself, not yet written, for the second."""
    first = store_instance(hub, testdata("CT_small.dcm"), source="test")
    ds = dcmread(testdata("CT_small.dcm"))
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.78"
    moved = tmp_path / "moved.dcm"
    ds.save_as(moved)
    second = store_instance(hub, moved, source="test")
    assert _run_all(hub) == [JobOutcome.DONE, JobOutcome.SKIPPED]  # one batch ran both
    with hub.db.read() as s:
        instance = s.execute(select(Instance)).scalar_one()
        counts = {se.series_uid: se.num_instances for se in s.execute(select(Series)).scalars()}
        study = s.execute(select(Study)).scalar_one()
        old = s.get_one(StoredFile, first.stored_file_id)
    assert instance.stored_file_id == second.stored_file_id
    assert counts["1.2.826.0.1.3680043.8.498.78"] == 1 and sum(counts.values()) == 1
    assert (study.num_series, study.num_instances) == (1, 1)
    assert old.state == StoredFileState.SUPERSEDED


def _index_job_ids(hub: Hub) -> list[int]:
    with hub.db.read() as s:
        return list(s.execute(select(Job.id).where(Job.kind == "index").order_by(Job.id)).scalars())


def _index_states(hub: Hub) -> list[str]:
    with hub.db.read() as s:
        query = select(Job.state).where(Job.kind == "index").order_by(Job.id)
        return list(s.execute(query).scalars())


def test_index_jobs_run_in_batches(hub: Hub, tmp_path: Path) -> None:
    """One index job's run leases the other due index jobs and indexes them all at once."""
    hub.settings.jobs_batch_size = 4
    one = make_instances(tmp_path / "a", 3, study_uid="1.2.826.0.1.3680043.8.498.71")
    two = make_instances(tmp_path / "b", 3, study_uid="1.2.826.0.1.3680043.8.498.72")
    for p in one + two:
        store_instance(hub, p, source="test")
    first, second, *_ = _index_job_ids(hub)
    assert run_job(hub, first, owner="test") == JobOutcome.DONE
    assert _index_states(hub) == [JobState.DONE] * 4 + [JobState.QUEUED] * 2
    # A message whose own job a batch already ran still runs a batch: the last two jobs.
    assert run_job(hub, second, owner="test") == JobOutcome.SKIPPED
    assert _index_states(hub) == [JobState.DONE] * 6
    assert run_job(hub, second, owner="test") == JobOutcome.SKIPPED  # nothing left to run
    with hub.db.read() as s:
        counts = {st.study_uid: st.num_instances for st in s.execute(select(Study)).scalars()}
        rendering = s.execute(select(func.count()).where(Job.kind == "render")).scalar_one()
        attempts = set(s.execute(select(Job.attempts).where(Job.kind == "index")).scalars())
    assert counts == {"1.2.826.0.1.3680043.8.498.71": 3, "1.2.826.0.1.3680043.8.498.72": 3}
    assert rendering == 6
    assert attempts == {1}


def test_a_batch_waits_for_its_pace_only_when_there_is_a_batch_to_run(
    hub: Hub, tmp_path: Path
) -> None:
    """pace is called before other due jobs are taken, never for a message with nothing to do."""
    paced: list[int] = []
    for p in make_instances(tmp_path, 3):
        store_instance(hub, p, source="test")
    first, second, _ = _index_job_ids(hub)

    def pace() -> None:  # more instances arrive while the batch waits: it takes them too
        paced.append(len(paced))
        for p in make_instances(tmp_path / f"more-{len(paced)}", 2):
            store_instance(hub, p, source="test")

    assert run_job(hub, first, owner="test", pace=pace) == JobOutcome.DONE
    assert paced == [0]
    assert _index_states(hub) == [JobState.DONE] * 5
    assert run_job(hub, second, owner="test", pace=pace) == JobOutcome.SKIPPED
    assert paced == [0]  # its job done and none due: no pause, and no write lock taken


def test_batch_size_one_runs_jobs_alone(hub: Hub, tmp_path: Path) -> None:
    hub.settings.jobs_batch_size = 1
    for p in make_instances(tmp_path, 3):
        store_instance(hub, p, source="test")
    first, *_ = _index_job_ids(hub)
    assert run_job(hub, first, owner="test") == JobOutcome.DONE
    assert _index_states(hub) == [JobState.DONE, JobState.QUEUED, JobState.QUEUED]


def test_a_failing_batch_runs_each_job_alone(hub: Hub, tmp_path: Path) -> None:
    """An unreadable file fails its own job; the rest of its batch is indexed."""
    results = [store_instance(hub, p, source="test") for p in make_instances(tmp_path, 4)]
    with hub.db.read() as s:
        path = hub.store.local_path(s.get_one(StoredFile, results[2].stored_file_id).path)
    path.chmod(0o644)
    path.write_bytes(b"corrupted on disk")
    first, *_ = _index_job_ids(hub)
    assert run_job(hub, first, owner="test") == JobOutcome.DONE
    assert _index_states(hub) == [JobState.DONE] * 2 + [JobState.FAILED, JobState.DONE]
    with hub.db.read() as s:
        indexed = s.execute(select(func.count()).select_from(Instance)).scalar_one()
        failed = s.execute(select(Job).where(Job.state == JobState.FAILED)).scalar_one()
    assert indexed == 3
    assert "is unreadable" in (failed.last_error or "")
    assert failed.attempts == 1

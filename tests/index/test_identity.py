"""The identity step: new source identities flagged for review or as conflicts, never merged."""

from pathlib import Path

from sqlalchemy import func, select

from imaging_hub.db.models import IdentityLinkEvent, Job, LinkState, PatientRecord, SourceIdentity
from imaging_hub.hub import Hub
from imaging_hub.identity import check_identity
from imaging_hub.ingest import store_instance
from tests.api.helpers import run_pending_jobs
from tests.support import make_study


def _receive(hub: Hub, folder: Path, **attributes: object) -> None:
    (path,) = make_study(folder, **attributes)
    store_instance(hub, path, source="test")
    run_pending_jobs(hub)


def _identities(hub: Hub) -> dict[str, tuple[LinkState, int]]:
    """Name as received -> (link state, patient record id)."""
    with hub.db.read() as s:
        rows = s.execute(select(SourceIdentity)).scalars().all()
        return {str(row.name): (row.link_state, row.patient_record_id) for row in rows}


def _events(hub: Hub) -> list[tuple[str, str, str]]:
    with hub.db.read() as s:
        query = (
            select(SourceIdentity.name, IdentityLinkEvent.state, IdentityLinkEvent.reason)
            .join(SourceIdentity, SourceIdentity.id == IdentityLinkEvent.source_identity_id)
            .order_by(IdentityLinkEvent.id)
        )
        return [(str(n), str(state), str(reason)) for n, state, reason in s.execute(query)]


def test_identity_jobs_run_once_per_new_source_identity(hub: Hub, tmp_path: Path) -> None:
    for n in range(3):  # three instances, one patient
        _receive(hub, tmp_path / str(n), PatientID="P1", PatientName="Doe^Jane")
    with hub.db.read() as s:
        kinds = s.execute(select(Job.kind, func.count()).group_by(Job.kind)).all()
    assert dict(kinds) == {"index": 3, "render": 3, "identity": 1}
    assert _identities(hub)["Doe^Jane"][0] == LinkState.NEW
    assert [state for _, state, _ in _events(hub)] == ["new"]


def test_same_id_with_other_demographics_is_a_conflict(hub: Hub, tmp_path: Path) -> None:
    _receive(
        hub, tmp_path / "a", PatientID="P1", PatientName="Doe^Jane", PatientBirthDate="19800115"
    )
    _receive(
        hub, tmp_path / "b", PatientID="P1", PatientName="Smith^Ann", PatientBirthDate="19700101"
    )
    identities = _identities(hub)
    assert identities["Doe^Jane"][0] == LinkState.NEW
    state, record = identities["Smith^Ann"]
    assert state == LinkState.CONFLICT
    assert record != identities["Doe^Jane"][1]  # nothing merged: each keeps its own record
    with hub.db.read() as s:
        first_mrn = s.get_one(PatientRecord, identities["Doe^Jane"][1]).mrn
        assert s.scalar(select(func.count()).select_from(PatientRecord)) == 2
    name, event_state, reason = _events(hub)[-1]
    assert (name, event_state) == ("Smith^Ann", "conflict")
    assert first_mrn in reason


def test_same_person_under_another_id_is_for_review(hub: Hub, tmp_path: Path) -> None:
    demographics = {"PatientBirthDate": "19800115", "PatientSex": "F"}
    _receive(hub, tmp_path / "a", PatientID="P1", PatientName="Doe^Jane", **demographics)
    _receive(hub, tmp_path / "b", PatientID="OUT-77", PatientName="DOE^JANE", **demographics)
    identities = _identities(hub)
    assert identities["DOE^JANE"][0] == LinkState.REVIEW
    assert identities["Doe^Jane"][0] == LinkState.NEW
    assert _events(hub)[-1][:2] == ("DOE^JANE", "review")


def test_another_sex_or_an_unknown_birth_date_is_not_a_candidate(hub: Hub, tmp_path: Path) -> None:
    _receive(hub, tmp_path / "a", PatientID="P1", PatientName="Doe^Sam", PatientSex="F",
             PatientBirthDate="19800115")  # fmt: skip
    _receive(hub, tmp_path / "b", PatientID="P2", PatientName="Doe^Sam", PatientSex="M",
             PatientBirthDate="19800115")  # fmt: skip
    _receive(hub, tmp_path / "c", PatientID="P3", PatientName="Roe^Kim", PatientBirthDate="")
    _receive(hub, tmp_path / "d", PatientID="P4", PatientName="Roe^Kim", PatientBirthDate="")
    assert {state for state, _ in _identities(hub).values()} == {LinkState.NEW}


def test_the_check_is_idempotent_and_leaves_decided_links_alone(hub: Hub, tmp_path: Path) -> None:
    _receive(hub, tmp_path / "a", PatientID="P1", PatientName="Doe^Jane")
    _receive(hub, tmp_path / "b", PatientID="P1", PatientName="Doe^Janet")
    with hub.db.read() as s:
        second = s.execute(select(SourceIdentity.id).where(SourceIdentity.name == "Doe^Janet"))
        identity_id = second.scalar_one()
    events = len(_events(hub))
    with hub.db.write() as s:
        assert check_identity(s, identity_id) == LinkState.CONFLICT
        assert check_identity(s, 10**9) is None
    assert len(_events(hub)) == events  # running it again wrote nothing
    with hub.db.write() as s:
        s.get_one(SourceIdentity, identity_id).link_state = LinkState.VERIFIED
    with hub.db.write() as s:
        assert check_identity(s, identity_id) == LinkState.VERIFIED
    assert len(_events(hub)) == events

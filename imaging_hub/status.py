"""Processing status of a study, and where each instance's preview stands — from the index."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

from imaging_hub.db.models import (
    Instance,
    Job,
    JobState,
    PreviewState,
    Series,
    StoredFile,
    StoredFileState,
    Study,
)
from imaging_hub.errors import NotFound

__all__ = ["SeriesThumbnail", "StudyPhase", "StudyStatus", "series_thumbnails", "study_status"]


class StudyPhase(StrEnum):
    """One word for where a study stands."""

    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class StudyStatus:
    """Counts that tell a clinician whether a study is complete and viewable."""

    study_uid: str
    phase: StudyPhase
    received: int
    indexed: int
    previews: dict[str, int] = field(default_factory=dict)
    jobs: dict[str, int] = field(default_factory=dict)

    @property
    def previews_ready(self) -> int:
        """Instances with a thumbnail and preview (or an icon, for objects without pixels)."""
        return self.previews.get(PreviewState.READY, 0) + self.previews.get(PreviewState.ICON, 0)

    @property
    def failed(self) -> int:
        """Jobs of the study that failed for good (their errors are in the admin job view)."""
        return self.jobs.get(JobState.FAILED, 0)


def _counts(session: Session, query: Executable) -> dict[str, int]:
    """A GROUP BY count query's rows as a dict."""
    return {str(key): int(count) for key, count in session.execute(query).tuples()}


def study_status(session: Session, study_uid: str) -> StudyStatus:
    """Received, indexed and preview counts and job states of one study."""
    received = session.execute(
        select(func.count(StoredFile.id)).where(
            StoredFile.study_uid == study_uid, StoredFile.state != StoredFileState.SUPERSEDED
        )
    ).scalar_one()
    study = session.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one_or_none()
    if study is None and received == 0:
        raise NotFound(f"study {study_uid} is not in the hub")
    previews = _counts(
        session,
        select(Instance.preview_state, func.count(Instance.id))
        .join(Series, Series.id == Instance.series_pk)
        .where(Series.study_pk == (study.id if study else -1))
        .group_by(Instance.preview_state),
    )
    jobs = _counts(
        session,
        select(Job.state, func.count(Job.id)).where(Job.study_uid == study_uid).group_by(Job.state),
    )
    pending = sum(jobs.get(s, 0) for s in (JobState.QUEUED, JobState.PUBLISHED, JobState.RUNNING))
    phase = StudyPhase.PROCESSING if pending else StudyPhase.READY
    if jobs.get(JobState.FAILED, 0) and not pending:
        phase = StudyPhase.FAILED
    return StudyStatus(
        study_uid=study_uid,
        phase=phase,
        received=received,
        indexed=sum(previews.values()),
        previews=previews,
        jobs=jobs,
    )


@dataclass(frozen=True, slots=True)
class SeriesThumbnail:
    """A series and the instance whose thumbnail represents it (the middle one)."""

    series_uid: str
    series_number: int | None
    modality: str | None
    description: str | None
    num_instances: int
    sop_instance_uid: str | None
    preview_state: PreviewState | None


def _middle_instance(session: Session, series_pk: int) -> tuple[str, PreviewState] | None:
    """The middle instance of a series by Instance Number (then UID)."""
    rows = session.execute(
        select(Instance.sop_instance_uid, Instance.preview_state)
        .where(Instance.series_pk == series_pk)
        .order_by(Instance.instance_number.nulls_last(), Instance.sop_instance_uid)
    ).all()
    if not rows:
        return None
    uid, state = rows[len(rows) // 2]
    return str(uid), PreviewState(state)


def series_thumbnails(session: Session, study_uid: str) -> list[SeriesThumbnail]:
    """The study's series in order, each with its representative instance."""
    study = session.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one_or_none()
    if study is None:
        raise NotFound(f"study {study_uid} is not in the hub")
    series = session.execute(
        select(Series)
        .where(Series.study_pk == study.id, Series.num_instances > 0)
        .order_by(Series.series_number.nulls_last(), Series.series_uid)
    ).scalars()
    result = []
    for se in series:
        middle = _middle_instance(session, se.id)
        result.append(
            SeriesThumbnail(
                series_uid=se.series_uid,
                series_number=se.series_number,
                modality=se.modality,
                description=se.series_description,
                num_instances=se.num_instances,
                sop_instance_uid=middle[0] if middle else None,
                preview_state=middle[1] if middle else None,
            )
        )
    return result

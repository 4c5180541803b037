"""``/api/studies``: the clinicians' study search and a study's detail.

The search takes plain filters (dates as ``YYYY-MM-DD``; names and text with ``*`` and ``?``
wild cards), sorts, and pages with ``limit`` / ``offset``; ``X-More-Results: true`` says that
another page follows. The detail has the series with thumbnail and preview URLs, the study's
processing status, its notes, reports and referrals, and the URLs to download or view it.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from imaging_hub.catalog import StudyFilters, StudySort, get_study, search_studies, study_series
from imaging_hub.db.models import Specialty
from imaging_hub.dicom.uids import validate_uid
from imaging_hub.records import list_records, list_referrals
from imaging_hub.status import series_thumbnails, study_status
from viewer_api.audit import AuditContext
from viewer_api.deps import ReadSession
from viewer_api.rest.schemas import (
    Limit,
    Offset,
    RecordItem,
    ReferralItem,
    StudyItem,
    bad_input,
    page,
)

__all__ = ["StudyDetail", "date_range", "router"]

router = APIRouter(tags=["studies"])

_BAD_INPUT = {400: {"description": "A filter value is malformed (the reason is in detail)."}}


def date_range(date_from: dt.date | None, date_to: dt.date | None) -> str | None:
    """A DICOM date range (PS3.4 C.2.2.2.5) from optional inclusive bounds."""
    if date_from is None and date_to is None:
        return None
    start = date_from.strftime("%Y%m%d") if date_from else ""
    end = date_to.strftime("%Y%m%d") if date_to else ""
    return f"{start}-{end}"


def _prefix(value: str | None) -> str | None:
    """A name given as its beginning, as a wild card match."""
    return f"{value.rstrip('*')}*" if value else None


def _contains(value: str | None) -> str | None:
    """Words anywhere in a text, as a wild card match."""
    return f"*{value.strip('*')}*" if value else None


@router.get("/studies", response_model=list[StudyItem], responses=_BAD_INPUT)
def list_studies(
    session: ReadSession,
    response: Response,
    patient_mrn: Annotated[str | None, Query(max_length=64)] = None,
    patient_id: Annotated[str | None, Query(max_length=64)] = None,
    patient_name: Annotated[
        str | None,
        Query(
            max_length=324,
            description="Name prefix, case-insensitive: 'doe' or 'doe^ja' (* ? are wildcards).",
        ),
    ] = None,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    modality: Annotated[str | None, Query(max_length=16)] = None,
    body_part: Annotated[
        str | None, Query(max_length=64, description="Body Part Examined of a series, e.g. LSPINE.")
    ] = None,
    description: Annotated[
        str | None, Query(max_length=256, description="Words in the study description.")
    ] = None,
    referring_physician: Annotated[
        str | None, Query(max_length=324, description="Referring physician's name prefix.")
    ] = None,
    accession: Annotated[str | None, Query(max_length=64)] = None,
    source: Annotated[
        str | None,
        Query(
            max_length=256,
            description="How the study arrived (dimse, stow, import, report) or the sending AE.",
        ),
    ] = None,
    specialty: Annotated[
        Specialty | None,
        Query(description="Studies with notes, reports or referrals of this specialty."),
    ] = None,
    sort: StudySort = StudySort.NEWEST,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[StudyItem]:
    """Studies matching every given filter, in the asked order (newest first by default)."""
    filters = StudyFilters(
        patient_mrn=patient_mrn or None,
        patient_id=patient_id or None,
        patient_name=_prefix(patient_name),
        study_date=date_range(date_from, date_to),
        modality=modality or None,
        body_part=body_part or None,
        description=_contains(description),
        referring_physician=_prefix(referring_physician),
        accession=accession or None,
        source=source or None,
        specialty=specialty.value if specialty else None,
    )
    with bad_input():
        rows = search_studies(session, filters=filters, sort=sort, limit=limit + 1, offset=offset)
    return [StudyItem.of(row) for row in page(rows, limit, response)]


class SeriesItem(BaseModel):
    """A series of a study, with its representative image's URLs."""

    series_uid: str
    series_number: int | None
    modality: str | None
    description: str | None
    body_part: str | None
    num_instances: int
    thumbnail_url: str | None
    preview_url: str | None
    preview_state: str | None


class StatusItem(BaseModel):
    """Where a study's processing stands (see ``/api/studies/{study_uid}/status``)."""

    phase: str
    received: int
    indexed: int
    previews: dict[str, int]
    jobs: dict[str, int]


class StudyLinks(BaseModel):
    """Where to get a study."""

    download: str
    dicomweb: str
    thumbnails: str


class StudyDetail(StudyItem):
    """A study with its series, status, records and referrals."""

    study_id: str | None
    series: list[SeriesItem]
    status: StatusItem
    records: list[RecordItem]
    referrals: list[ReferralItem]
    links: StudyLinks


def _series(session: ReadSession, uid: str) -> list[SeriesItem]:
    images = {t.series_uid: t for t in series_thumbnails(session, uid)}
    items = []
    for se in study_series(session, uid):
        thumb = images.get(se.series_uid)
        sop = thumb.sop_instance_uid if thumb else None
        items.append(
            SeriesItem(
                series_uid=se.series_uid,
                series_number=se.series_number,
                modality=se.modality,
                description=se.description,
                body_part=se.body_part,
                num_instances=se.num_instances,
                thumbnail_url=f"/api/instances/{sop}/thumbnail" if sop else None,
                preview_url=f"/api/instances/{sop}/preview" if sop else None,
                preview_state=thumb.preview_state if thumb and thumb.preview_state else None,
            )
        )
    return items


@router.get(
    "/studies/{study_uid}",
    response_model=StudyDetail,
    responses={**_BAD_INPUT, 404: {"description": "No such study."}},
)
def get_study_detail(study_uid: str, session: ReadSession, request: Request) -> StudyDetail:
    """One study: its series with previews, processing status, notes, reports and referrals."""
    uid = validate_uid(study_uid, what="StudyInstanceUID")
    study = get_study(session, uid)
    status = study_status(session, uid)
    request.state.audit = AuditContext(study_uids=[uid])
    return StudyDetail(
        **StudyItem.of(study).model_dump(),
        study_id=study.study_id,
        series=_series(session, uid),
        status=StatusItem(
            phase=status.phase,
            received=status.received,
            indexed=status.indexed,
            previews=status.previews,
            jobs=status.jobs,
        ),
        records=[RecordItem.of(r) for r in list_records(session, study_uid=uid)],
        referrals=[ReferralItem.of(r) for r in list_referrals(session, study_uid=uid)],
        links=StudyLinks(
            download=f"/api/studies/{uid}/download",
            dicomweb=f"/dicomweb/studies/{uid}",
            thumbnails=f"/api/studies/{uid}/thumbnails",
        ),
    )

"""``GET /api/studies``: a clinician's study list, newest first, as plain JSON."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel

from imaging_hub.query import StudyFilters, StudyRow, search_studies
from viewer_api.deps import ReadSession

__all__ = ["StudyItem", "router"]

router = APIRouter(tags=["studies"])

#: Header set to "true" when more studies match than this page holds.
MORE_HEADER = "X-More-Results"


class StudyItem(BaseModel):
    """One study in the list."""

    study_uid: str
    patient_id: str
    patient_name: str | None
    birth_date: dt.date | None
    study_date: dt.date | None
    description: str | None
    modalities: list[str]
    num_series: int
    num_instances: int

    @classmethod
    def from_row(cls, row: StudyRow) -> StudyItem:
        """Build an item from a search result."""
        return cls(
            study_uid=row.study_uid,
            patient_id=row.patient_id,
            patient_name=row.patient_name,
            birth_date=row.birth_date,
            study_date=row.study_date,
            description=row.description,
            modalities=list(row.modalities),
            num_series=row.num_series,
            num_instances=row.num_instances,
        )


def _date_range(date_from: dt.date | None, date_to: dt.date | None) -> str | None:
    """A DICOM date range (PS3.4 C.2.2.2.5) from optional inclusive bounds."""
    if date_from is None and date_to is None:
        return None
    start = date_from.strftime("%Y%m%d") if date_from else ""
    end = date_to.strftime("%Y%m%d") if date_to else ""
    return f"{start}-{end}"


@router.get("/studies", response_model=list[StudyItem])
def list_studies(
    session: ReadSession,
    response: Response,
    patient_id: str | None = None,
    patient_name: Annotated[
        str | None,
        Query(description="Name prefix, case-insensitive: 'doe' or 'doe^ja' (* ? are wildcards)."),
    ] = None,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    modality: str | None = None,
    accession: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> list[StudyItem]:
    """Studies matching every given filter, newest first."""
    filters = StudyFilters(
        patient_id=patient_id or None,
        patient_name=f"{patient_name.rstrip('*')}*" if patient_name else None,
        study_date=_date_range(date_from, date_to),
        modalities_in_study=modality or None,
        accession_number=accession or None,
    )
    try:
        rows = search_studies(session, filters=filters, limit=limit + 1, offset=offset)
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    response.headers[MORE_HEADER] = "true" if len(rows) > limit else "false"
    return [StudyItem.from_row(row) for row in rows[:limit]]

"""``/api/patients``: find a patient, then see every study and record of theirs in one place."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response

from imaging_hub.catalog import (
    PatientFilters,
    PatientSort,
    get_patient,
    patient_record_id,
    patient_studies,
    search_patients,
)
from imaging_hub.records import list_records, list_referrals
from viewer_api.audit import AuditContext
from viewer_api.deps import ReadSession
from viewer_api.rest.schemas import (
    Limit,
    Offset,
    PatientItem,
    RecordItem,
    ReferralItem,
    StudyItem,
    bad_input,
    page,
)
from viewer_api.rest.studies import date_range

__all__ = ["PatientDetail", "router"]

router = APIRouter(tags=["patients"])


@router.get(
    "/patients",
    response_model=list[PatientItem],
    responses={400: {"description": "A filter value is malformed."}},
)
def list_patients(
    session: ReadSession,
    response: Response,
    name: Annotated[
        str | None,
        Query(max_length=324, description="Name prefix, case-insensitive: 'doe^ja' (* ? wild)."),
    ] = None,
    patient_id: Annotated[
        str | None, Query(max_length=64, description="A sender's patient ID, or the hub MRN.")
    ] = None,
    birth_date: dt.date | None = None,
    born_from: dt.date | None = None,
    born_to: dt.date | None = None,
    sort: PatientSort = PatientSort.NAME,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[PatientItem]:
    """Patients matching every given filter, by name unless another order is asked."""
    if birth_date and (born_from or born_to):
        raise HTTPException(400, "give birth_date or born_from/born_to, not both")
    born = date_range(birth_date, birth_date) if birth_date else date_range(born_from, born_to)
    filters = PatientFilters(
        name=f"{name.rstrip('*')}*" if name else None,
        patient_id=patient_id or None,
        birth_date=born,
    )
    with bad_input():
        rows = search_patients(session, filters=filters, sort=sort, limit=limit + 1, offset=offset)
    return [PatientItem.of(row) for row in page(rows, limit, response)]


class PatientDetail(PatientItem):
    """A patient with every study (from every sender and specialty), record and referral."""

    studies: list[StudyItem]
    records: list[RecordItem]
    referrals: list[ReferralItem]


@router.get(
    "/patients/{mrn}",
    response_model=PatientDetail,
    responses={404: {"description": "No such MRN."}},
)
def get_patient_detail(mrn: str, session: ReadSession, request: Request) -> PatientDetail:
    """One patient: their studies oldest first, notes and reports, referrals newest first."""
    patient = get_patient(session, mrn)
    request.state.audit = AuditContext(patient_record_id=patient_record_id(session, mrn))
    return PatientDetail(
        **PatientItem.of(patient).model_dump(),
        studies=[StudyItem.of(s) for s in patient_studies(session, mrn)],
        records=[RecordItem.of(r) for r in list_records(session, mrn=mrn)],
        referrals=[ReferralItem.of(r) for r in list_referrals(session, mrn=mrn)],
    )

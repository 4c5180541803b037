"""``/api/referrals``: send a patient to a specialty with a reason and the studies that go with
it; the referred specialist finds the films and the reason in one place: each referral listed
or read carries a summary of its studies (date, description, modalities, patient)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from imaging_hub.catalog import patient_record_id, studies_by_uid
from imaging_hub.db.models import ReferralStatus, Role, Specialty
from imaging_hub.records import (
    MAX_TEXT,
    ReferralInfo,
    create_referral,
    get_referral,
    list_referrals,
    set_referral_status,
)
from viewer_api.audit import AuditContext
from viewer_api.auth import CurrentUser, require_role
from viewer_api.deps import HubDep, ReadSession
from viewer_api.rest.schemas import Limit, Offset, ReferralItem, StudyItem, bad_input, page

__all__ = ["ReferralIn", "ReferralWithStudies", "StatusIn", "router"]

router = APIRouter(tags=["referrals"])

#: Every signed-in user may refer and move referrals on.
WRITERS = [Depends(require_role(*Role))]
_ERRORS = {400: {"description": "Bad input."}, 404: {"description": "No such patient."}}


class ReferralIn(BaseModel):
    """A new referral: the patient (MRN), the specialty asked, the reason, the studies."""

    mrn: str = Field(min_length=1, max_length=64)
    to_specialty: Specialty
    reason: str = Field(min_length=1, max_length=MAX_TEXT)
    study_uids: list[str] = Field(default_factory=list, max_length=1000)


class StatusIn(BaseModel):
    """The new status of a referral."""

    status: Literal["accepted", "done"]


class ReferralWithStudies(ReferralItem):
    """A referral with a summary of each of its studies, newest first."""

    studies: list[StudyItem]

    @classmethod
    def with_studies(cls, session: Session, info: ReferralInfo) -> ReferralWithStudies:
        """The referral of info and the summaries of its studies."""
        studies = studies_by_uid(session, list(info.study_uids))
        return cls(**ReferralItem.of(info).model_dump(), studies=[StudyItem.of(s) for s in studies])


def _audited(request: Request, info: ReferralInfo) -> ReferralInfo:
    request.state.audit = AuditContext(
        study_uids=list(info.study_uids),
        patient_record_id=info.patient_record_id,
        detail={"referral": info.public_id, "to_specialty": info.to_specialty.value},
    )
    return info


@router.post(
    "/referrals",
    response_model=ReferralItem,
    status_code=201,
    dependencies=WRITERS,
    responses=_ERRORS,
)
def refer(body: ReferralIn, request: Request, hub: HubDep, user: CurrentUser) -> ReferralItem:
    """Refer a patient to a specialty; the referral starts open."""
    with bad_input():
        info = create_referral(
            hub.db,
            author=user,
            mrn=body.mrn,
            to_specialty=body.to_specialty,
            reason=body.reason,
            study_uids=body.study_uids,
        )
    return ReferralItem.of(_audited(request, info))


@router.get("/referrals", response_model=list[ReferralWithStudies], responses=_ERRORS)
def search_referrals(
    session: ReadSession,
    request: Request,
    response: Response,
    mrn: Annotated[str | None, Query(max_length=64)] = None,
    to_specialty: Specialty | None = None,
    status: ReferralStatus | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[ReferralWithStudies]:
    """Referrals, newest first: e.g. the open ones to my specialty, or a patient's."""
    patient = patient_record_id(session, mrn) if mrn else None
    rows = list_referrals(
        session,
        mrn=mrn,
        to_specialty=to_specialty,
        status=status,
        limit=limit + 1,
        offset=offset,
    )
    shown = page(rows, limit, response)
    request.state.audit = AuditContext(
        study_uids=list(dict.fromkeys(uid for r in shown for uid in r.study_uids)),
        patient_record_id=patient,
    )
    return [ReferralWithStudies.with_studies(session, r) for r in shown]


@router.get("/referrals/{referral_id}", response_model=ReferralWithStudies, responses={404: {}})
def read_referral(referral_id: str, session: ReadSession, request: Request) -> ReferralWithStudies:
    """One referral with its studies."""
    info = _audited(request, get_referral(session, referral_id))
    return ReferralWithStudies.with_studies(session, info)


@router.post(
    "/referrals/{referral_id}/status",
    response_model=ReferralItem,
    dependencies=WRITERS,
    responses={**_ERRORS, 404: {"description": "No such referral."}},
)
def move_referral(
    referral_id: str, body: StatusIn, request: Request, hub: HubDep, user: CurrentUser
) -> ReferralItem:
    """Accept a referral or mark it done (open → accepted → done, or open → done)."""
    with bad_input():
        info = set_referral_status(
            hub.db, referral_id, status=ReferralStatus(body.status), actor=user
        )
    return ReferralItem.of(_audited(request, info))

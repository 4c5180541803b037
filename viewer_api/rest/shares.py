"""``/api/share-links``: read-only links for people outside the clinic (a referring GP, the
patient), to one study or one patient, with an expiry and revocation.

The token of a new link is shown once. Its holder sends it as ``Authorization: Bearer …``
(or as ``?access_token=…``) to DICOMweb, WADO-URI, the study download and the image routes,
and is refused for any other data (see ``viewer_api.auth``). ``GET /api/share/me`` tells the
holder what the link opens.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field, model_validator

from imaging_hub.db.models import Role
from imaging_hub.errors import PermissionDenied
from imaging_hub.sharing import (
    MAX_LIFETIME,
    ShareInfo,
    create_share_link,
    get_share_link,
    list_share_links,
    revoke_share_link,
    scope_study_uids,
)
from viewer_api.audit import AuditContext
from viewer_api.auth import CurrentPrincipal, CurrentUser, require_role
from viewer_api.deps import HubDep, ReadSession
from viewer_api.rest.schemas import bad_input

__all__ = ["ShareLinkCreated", "ShareLinkIn", "ShareLinkItem", "router"]

router = APIRouter(tags=["share links"])

#: Every signed-in user may share; only admins see and revoke everyone's links.
WRITERS = [Depends(require_role(*Role))]
_MAX_HOURS = int(MAX_LIFETIME.total_seconds() // 3600)


class ShareLinkIn(BaseModel):
    """What to share (one study or one patient), for how long, and a note of for whom."""

    study_uid: str | None = Field(default=None, max_length=64)
    patient_mrn: str | None = Field(default=None, max_length=64)
    expires_in_hours: float = Field(default=72, ge=1 / 60, le=_MAX_HOURS)
    label: str | None = Field(default=None, max_length=256)

    @model_validator(mode="after")
    def _one_scope(self) -> ShareLinkIn:
        if (self.study_uid is None) == (self.patient_mrn is None):
            raise ValueError("give exactly one of study_uid and patient_mrn")
        return self


class ShareLinkItem(BaseModel):
    """A share link (without its token)."""

    link_id: str
    study_uid: str | None
    patient_mrn: str | None
    label: str | None
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None
    use_count: int
    active: bool

    @classmethod
    def of(cls, info: ShareInfo) -> ShareLinkItem:
        """The item of a share link."""
        return cls(
            link_id=info.public_id,
            study_uid=info.study_uid,
            patient_mrn=info.patient_mrn,
            label=info.label,
            created_by=info.created_by,
            created_at=info.created_at,
            expires_at=info.expires_at,
            revoked_at=info.revoked_at,
            last_used_at=info.last_used_at,
            use_count=info.use_count,
            active=info.active(),
        )


class ShareLinkCreated(ShareLinkItem):
    """A new share link with its token, shown this once."""

    token: str
    dicomweb_url: str
    download_url: str | None


def _audited(request: Request, info: ShareInfo) -> ShareInfo:
    """Tell the audit trail which study or patient the link opens."""
    request.state.audit = AuditContext(
        study_uids=[info.study_uid] if info.study_uid else [],
        patient_record_id=info.patient_record_id,
        detail={"share": info.public_id},
    )
    return info


@router.post(
    "/share-links",
    response_model=ShareLinkCreated,
    status_code=201,
    dependencies=WRITERS,
    responses={400: {"description": "Bad input."}, 404: {"description": "No such study."}},
)
def create_link(
    body: ShareLinkIn, request: Request, response: Response, hub: HubDep, user: CurrentUser
) -> ShareLinkCreated:
    """Make a share link; the answer carries its token, which is not shown again."""
    with bad_input():
        info, token = create_share_link(
            hub.db,
            created_by=user.username,
            expires_in=dt.timedelta(hours=body.expires_in_hours),
            study_uid=body.study_uid,
            patient_mrn=body.patient_mrn,
            label=body.label,
        )
    _audited(request, info)
    response.headers["Cache-Control"] = "no-store"
    return ShareLinkCreated(
        **ShareLinkItem.of(info).model_dump(),
        token=token,
        dicomweb_url="/dicomweb",
        download_url=f"/api/studies/{info.study_uid}/download" if info.study_uid else None,
    )


@router.get("/share-links", response_model=list[ShareLinkItem])
def list_links(
    hub: HubDep,
    user: CurrentUser,
    study_uid: Annotated[str | None, Query(max_length=64)] = None,
) -> list[ShareLinkItem]:
    """My share links (an admin sees everyone's), newest first."""
    mine = None if user.role == Role.ADMIN else user.username
    return [
        ShareLinkItem.of(i) for i in list_share_links(hub.db, created_by=mine, study_uid=study_uid)
    ]


@router.delete(
    "/share-links/{link_id}",
    response_model=ShareLinkItem,
    dependencies=WRITERS,
    responses={404: {"description": "No such link (of mine)."}},
)
def revoke_link(link_id: str, request: Request, hub: HubDep, user: CurrentUser) -> ShareLinkItem:
    """Revoke a share link at once (mine; an admin may revoke any)."""
    mine = None if user.role == Role.ADMIN else user.username
    info = revoke_share_link(hub.db, link_id, actor=user.username, created_by=mine)
    return ShareLinkItem.of(_audited(request, info))


class ShareScope(BaseModel):
    """What the share link in use opens."""

    link_id: str
    expires_at: dt.datetime
    study_uids: list[str]
    label: str | None


@router.get("/share/me", response_model=ShareScope)
def share_me(principal: CurrentPrincipal, hub: HubDep, session: ReadSession) -> ShareScope:
    """For a share link's holder: the studies it opens and until when."""
    if principal.share is None:
        raise PermissionDenied("this route is for share links")
    info = get_share_link(hub.db, principal.share.public_id)
    return ShareScope(
        link_id=info.public_id,
        expires_at=info.expires_at,
        study_uids=scope_study_uids(session, info),
        label=info.label,
    )

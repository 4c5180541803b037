"""``GET /api/admin/users``: the user accounts, for admins."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from imaging_hub.auth import Role, Specialty, UserInfo, list_users
from viewer_api.auth import require_role
from viewer_api.deps import HubDep

__all__ = ["UserItem", "router"]

router = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[Depends(require_role(Role.ADMIN))]
)


class UserItem(BaseModel):
    """A user account as the API shows it (never the password hash)."""

    username: str
    role: Role
    specialty: Specialty | None
    disabled: bool
    created_at: dt.datetime
    last_login_at: dt.datetime | None
    locked_until: dt.datetime | None

    @classmethod
    def of(cls, user: UserInfo) -> UserItem:
        """The item for a user."""
        return cls(
            username=user.username,
            role=user.role,
            specialty=user.specialty,
            disabled=user.disabled,
            created_at=user.created_at,
            last_login_at=user.last_login_at,
            locked_until=user.locked_until,
        )


@router.get("/users", response_model=list[UserItem])
def admin_list_users(hub: HubDep) -> list[UserItem]:
    """Every user account, by username."""
    return [UserItem.of(user) for user in list_users(hub.db)]

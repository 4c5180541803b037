"""``/api/admin/users``: the user accounts, for admins: list, add, disable, enable, reset."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from imaging_hub.auth import (
    LoginPolicy,
    Role,
    Specialty,
    UserInfo,
    create_user,
    list_users,
    reset_password,
    set_disabled,
)
from imaging_hub.auth.users import normalize_username
from viewer_api.auth import CurrentUser, require_role
from viewer_api.deps import HubDep
from viewer_api.rest.schemas import bad_input

__all__ = ["UserItem", "router"]

router = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[Depends(require_role(Role.ADMIN))]
)
_ERRORS = {
    400: {"description": "Bad input (e.g. a short password)."},
    404: {"description": "No such user."},
    409: {"description": "The username is taken."},
}


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


class UserIn(BaseModel):
    """A new account."""

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    role: Role
    specialty: Specialty | None = None


class PasswordIn(BaseModel):
    """A new password."""

    password: str = Field(min_length=1, max_length=1024)


@router.get("/users", response_model=list[UserItem])
def admin_list_users(hub: HubDep) -> list[UserItem]:
    """Every user account, by username."""
    return [UserItem.of(user) for user in list_users(hub.db)]


@router.post("/users", response_model=UserItem, status_code=201, responses=_ERRORS)
def admin_add_user(body: UserIn, hub: HubDep, admin: CurrentUser) -> UserItem:
    """Create an account with a role (and specialty)."""
    with bad_input():
        user = create_user(
            hub.db,
            body.username,
            body.password,
            role=body.role,
            specialty=body.specialty,
            policy=LoginPolicy.from_settings(hub.settings),
            actor=admin.username,
        )
    return UserItem.of(user)


@router.post("/users/{username}/disable", response_model=UserItem, responses=_ERRORS)
def admin_disable_user(username: str, hub: HubDep, admin: CurrentUser) -> UserItem:
    """Disable an account: its sign-ins and tokens stop working at once (not one's own)."""
    with bad_input():
        if normalize_username(username) == admin.username:
            raise ValueError("an admin may not disable their own account")
        return UserItem.of(set_disabled(hub.db, username, True, actor=admin.username))


@router.post("/users/{username}/enable", response_model=UserItem, responses=_ERRORS)
def admin_enable_user(username: str, hub: HubDep, admin: CurrentUser) -> UserItem:
    """Enable a disabled account again."""
    with bad_input():
        return UserItem.of(set_disabled(hub.db, username, False, actor=admin.username))


@router.post("/users/{username}/password", response_model=UserItem, responses=_ERRORS)
def admin_reset_password(
    username: str, body: PasswordIn, hub: HubDep, admin: CurrentUser
) -> UserItem:
    """Set a new password; the tokens issued before stop working."""
    with bad_input():
        user = reset_password(
            hub.db,
            username,
            body.password,
            policy=LoginPolicy.from_settings(hub.settings),
            actor=admin.username,
        )
    return UserItem.of(user)

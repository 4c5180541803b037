"""Domain errors raised by the core; each front end maps them to its own status codes once."""

from __future__ import annotations

__all__ = [
    "AccountDisabled",
    "AccountLocked",
    "AlreadyExists",
    "AuthenticationFailed",
    "ConfigError",
    "DuplicateRejected",
    "HubError",
    "InvalidDicom",
    "InvalidUid",
    "NotFound",
    "PermissionDenied",
    "SopClassMismatch",
    "StorageFull",
    "TooLarge",
]


class HubError(Exception):
    """Base class of every error the core raises on purpose."""


class ConfigError(HubError):
    """The settings are invalid; the message names the bad setting."""


class InvalidDicom(HubError):
    """The input is not a usable DICOM instance (undecodable, missing or mismatched UIDs)."""


class InvalidUid(InvalidDicom):
    """A UID does not follow PS3.5 9.1 (digits and dots, at most 64 characters)."""


class SopClassMismatch(InvalidDicom):
    """The dataset's SOP Class is not the one the sender announced or negotiated."""


class DuplicateRejected(HubError):
    """Same SOP Instance UID, different bytes, and the duplicate policy refuses it."""


class StorageFull(HubError):
    """Free space is below the configured floor; nothing was written."""


class TooLarge(HubError):
    """The input exceeds the configured size limit."""


class NotFound(HubError):
    """The requested object does not exist in the index."""


class AlreadyExists(HubError):
    """An object with the same unique name already exists."""


class AuthenticationFailed(HubError):
    """Credentials or a token were missing, wrong, expired or revoked; the message says which."""


class AccountLocked(AuthenticationFailed):
    """Too many failed logins: the account refuses logins until ``retry_after`` seconds pass."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AccountDisabled(HubError):
    """The account exists but an admin has disabled it."""


class PermissionDenied(HubError):
    """The authenticated user's role may not do this."""

"""Domain errors raised by the core; each front end maps them to its own status codes once."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DuplicateRejected",
    "HubError",
    "InvalidDicom",
    "InvalidUid",
    "NotFound",
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


class DuplicateRejected(HubError):
    """Same SOP Instance UID, different bytes, and the duplicate policy refuses it."""


class StorageFull(HubError):
    """Free space is below the configured floor; nothing was written."""


class TooLarge(HubError):
    """The input exceeds the configured size limit."""


class NotFound(HubError):
    """The requested object does not exist in the index."""

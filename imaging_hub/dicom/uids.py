"""UID validation (PS3.5 9.1)."""

from __future__ import annotations

import re

from imaging_hub.errors import InvalidUid

__all__ = ["is_valid_uid", "validate_uid"]

# Leading zeros in a component are not allowed by PS3.5 but do occur in archived data; they are
# harmless for paths and SQL, so only the character set and the shape are enforced.
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def is_valid_uid(value: object) -> bool:
    """Tell whether value is a UID per PS3.5 9.1: dot-separated numbers, at most 64 characters."""
    return isinstance(value, str) and 0 < len(value) <= 64 and bool(_UID_RE.fullmatch(value))


def validate_uid(value: object, *, what: str = "UID") -> str:
    """Return value when it is a valid UID, else raise InvalidUid naming what it was."""
    if isinstance(value, str):
        value = value.strip("\x00 ")
    if not is_valid_uid(value):
        shown = repr(value)[:80]
        raise InvalidUid(f"{what} {shown} is not a valid UID (PS3.5 9.1)")
    return str(value)

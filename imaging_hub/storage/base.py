"""The storage seam: what every backend (local files today) promises."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from imaging_hub.dicom.uids import validate_uid

__all__ = ["ObjectStore", "StoredObject", "object_key"]


@dataclass(frozen=True, slots=True)
class StoredObject:
    """What a durable write produced."""

    key: str
    size: int
    sha256: str
    created: bool


def object_key(study_uid: str, series_uid: str, sop_uid: str, sha256: str) -> str:
    """Derive the storage key of an instance from validated UIDs and its content hash.

    The hash is part of the key, so two different versions of one SOP Instance UID never
    overwrite each other and a repeated identical write is recognised.
    """
    validate_uid(study_uid, what="StudyInstanceUID")
    validate_uid(series_uid, what="SeriesInstanceUID")
    validate_uid(sop_uid, what="SOPInstanceUID")
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("sha256 must be 64 lowercase hex digits")
    return f"{study_uid}/{series_uid}/{sop_uid}.{sha256[:16]}.dcm"


class ObjectStore(Protocol):
    """A store of immutable objects addressed by derived keys."""

    def put_file(
        self, key: str, source: Path, *, expected_sha256: str, link: bool = False
    ) -> StoredObject:
        """Copy a local file durably under key; a no-op when key already holds the same bytes.

        link: the source is the hub's own file, never written again, with expected_sha256 just
        computed from it; a backend may take it over (e.g. hard-link it) instead of copying.
        """
        ...

    def open(self, key: str) -> BinaryIO:
        """Open a stored object for reading."""
        ...

    def exists(self, key: str) -> bool:
        """Tell whether key holds an object."""
        ...

    def local_path(self, key: str) -> Path:
        """A filesystem path for key (local backends only)."""
        ...

    def iter_keys(self) -> Iterator[str]:
        """Every key in the store."""
        ...

    def free_bytes(self) -> int:
        """Free space where new objects go."""
        ...

"""Core errors -> C-STORE, C-FIND, C-MOVE and C-GET failure statuses (PS3.4 B.2.3, C.4)."""

from __future__ import annotations

from pydicom.dataset import Dataset

from imaging_hub.errors import (
    DuplicateRejected,
    InvalidDicom,
    InvalidUid,
    SopClassMismatch,
    StorageFull,
    TooLarge,
)
from imaging_hub.qr import IdentifierMismatch
from imaging_hub.retrieve_dimse import TooManyMatches

__all__ = [
    "CANCEL",
    "FIND_STATUS",
    "MOVE_DESTINATION_UNKNOWN",
    "NOT_AUTHORIZED",
    "PENDING",
    "RETRIEVE_STATUS",
    "STORE_STATUS",
    "SUBOPERATIONS_FAILED",
    "SUBOPERATIONS_WARNING",
    "SUCCESS",
    "TOO_MANY_MATCHES",
    "UNABLE_TO_PROCESS",
    "find_failure",
    "retrieve_failure",
    "status_dataset",
    "store_failure",
]

SUCCESS = 0x0000
#: Refused: Out of Resources.
OUT_OF_RESOURCES = 0xA700
#: Error: Data Set does not match SOP Class.
DATASET_MISMATCH = 0xA900
#: Error: Cannot understand.
CANNOT_UNDERSTAND = 0xC000
#: Failure: Processing failure (an unexpected error in the hub).
UNABLE_TO_PROCESS = 0x0110

#: Checked in order; the first class the error is an instance of decides the status.
STORE_STATUS: list[tuple[type[Exception], int]] = [
    (StorageFull, OUT_OF_RESOURCES),
    (TooLarge, OUT_OF_RESOURCES),
    (DuplicateRejected, DATASET_MISMATCH),
    (SopClassMismatch, DATASET_MISMATCH),
    (InvalidDicom, CANNOT_UNDERSTAND),
]


def status_dataset(status: int, comment: str | None = None) -> Dataset:
    """A status dataset with an Error Comment (LO: at most 64 characters)."""
    ds = Dataset()
    ds.Status = status
    if comment:
        ds.ErrorComment = comment.replace("\\", "/")[:64]
    return ds


def store_failure(error: Exception) -> Dataset:
    """The C-STORE response status for an error raised while storing an instance."""
    for kind, status in STORE_STATUS:
        if isinstance(error, kind):
            return status_dataset(status, str(error))
    return status_dataset(UNABLE_TO_PROCESS, "internal error while storing")


#: Refused: Not Authorized (PS3.7 C.5.x general status): the peer may not use this service.
NOT_AUTHORIZED = 0x0124
#: C-FIND: Pending, a match follows.
PENDING = 0xFF00
#: C-FIND: Matching terminated due to Cancel.
CANCEL = 0xFE00
#: C-FIND: Failed, unable to process (a malformed matching value).
FIND_UNABLE_TO_PROCESS = 0xC000
#: C-FIND: an unexpected error in the hub.
FIND_INTERNAL_ERROR = 0xC001

#: Checked in order; the first class the error is an instance of decides the C-FIND status.
FIND_STATUS: list[tuple[type[Exception], int]] = [
    (IdentifierMismatch, DATASET_MISMATCH),
    (ValueError, FIND_UNABLE_TO_PROCESS),
    (InvalidUid, FIND_UNABLE_TO_PROCESS),
]


def find_failure(error: Exception) -> Dataset:
    """The C-FIND failure status for an error raised while reading or running a query."""
    for kind, status in FIND_STATUS:
        if isinstance(error, kind):
            return status_dataset(status, str(error))
    return status_dataset(FIND_INTERNAL_ERROR, "internal error while searching")


#: C-MOVE/C-GET: Warning, sub-operations complete, one or more failures or warnings.
SUBOPERATIONS_WARNING = 0xB000
#: C-MOVE/C-GET: Failure, unable to perform sub-operations (all of them failed).
SUBOPERATIONS_FAILED = 0xA702
#: C-MOVE/C-GET: Refused, out of resources, unable to calculate the number of matches.
TOO_MANY_MATCHES = 0xA701
#: C-MOVE: Refused, Move Destination unknown.
MOVE_DESTINATION_UNKNOWN = 0xA801
#: C-MOVE/C-GET: an unexpected error in the hub.
RETRIEVE_INTERNAL_ERROR = 0xC001

#: Checked in order; the first class the error is an instance of decides the retrieve status.
RETRIEVE_STATUS: list[tuple[type[Exception], int]] = [
    (TooManyMatches, TOO_MANY_MATCHES),
    (IdentifierMismatch, DATASET_MISMATCH),
    (ValueError, FIND_UNABLE_TO_PROCESS),
    (InvalidUid, FIND_UNABLE_TO_PROCESS),
]


def retrieve_failure(error: Exception) -> tuple[int, str]:
    """The C-MOVE/C-GET status and Error Comment for an error raised while resolving a retrieve."""
    for kind, status in RETRIEVE_STATUS:
        if isinstance(error, kind):
            return status, str(error)
    return RETRIEVE_INTERNAL_ERROR, "internal error while retrieving"

"""Core errors -> C-STORE failure statuses (PS3.4 B.2.3 and Annex C), in one table."""

from __future__ import annotations

from pydicom.dataset import Dataset

from imaging_hub.errors import DuplicateRejected, InvalidDicom, StorageFull, TooLarge

__all__ = ["STORE_STATUS", "SUCCESS", "UNABLE_TO_PROCESS", "status_dataset", "store_failure"]

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

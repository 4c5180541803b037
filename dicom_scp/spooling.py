"""Received C-STORE datasets spool to disk; when the disk runs short, they are not written.

pynetdicom writes a C-STORE dataset's fragments to a spool file as they arrive; a write that
fails for lack of space would kill the association's reader thread and leave the file behind.
Before each P-DATA PDU is read, guard_space checks the spool's free space against the storage
floor (HUB_STORAGE_MIN_FREE_BYTES); when it would fall below, the spool file is emptied and the
rest of the dataset is read and dropped, and the C-STORE is answered 0xA700 Out of Resources.
"""

from __future__ import annotations

import os
from typing import Any

import structlog

__all__ = ["DiscardedSpool", "guard_space", "is_discarded"]

log = structlog.get_logger(__name__)

#: Room kept beyond the floor for file system blocks and metadata.
RESERVE_BYTES = 64 * 1024


class DiscardedSpool:
    """Stands in for a spool file whose dataset is being dropped: writes go nowhere."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.file = self  # pynetdicom flushes ``spool.file`` after each write

    def write(self, data: bytes) -> int:
        """Drop data."""
        return len(data)

    def flush(self) -> None:
        """Nothing to flush."""

    def close(self) -> None:
        """Nothing to close (the emptied file is removed by pynetdicom or the receiver)."""


def is_discarded(spool: object) -> bool:
    """Tell whether a request's spool file was dropped for lack of space."""
    return isinstance(spool, DiscardedSpool)


def guard_space(message: Any, incoming: int, floor: int) -> None:
    """Drop the message's spooled dataset when writing incoming more bytes would pass the floor."""
    spool = getattr(message, "_data_set_file", None)
    if spool is None or is_discarded(spool):
        return
    stat = os.statvfs(os.path.dirname(spool.name))
    if stat.f_bavail * stat.f_frsize - incoming >= floor + RESERVE_BYTES:
        return
    spool.close()
    os.truncate(spool.name, 0)  # give back what was written so far
    message._data_set_file = DiscardedSpool(spool.name)
    log.warning("spool_out_of_space", incoming=incoming, floor=floor)

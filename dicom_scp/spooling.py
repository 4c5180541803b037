"""Received C-STORE datasets spool to disk; when the disk runs short, they are not written.

pynetdicom writes a C-STORE dataset's fragments to a spool file as they arrive; a write that
fails for lack of space would kill the association's reader thread and leave the file behind.
Before each P-DATA PDU is read, guard_space checks the spool's free space against the storage
floor (HUB_STORAGE_MIN_FREE_BYTES); when it would fall below, the spool file is emptied and the
rest of the dataset is read and dropped, and the C-STORE is answered 0xA700 Out of Resources.

The bytes spooled so far are also handed to the disk then (start_writeback), so that the
fsync before the C-STORE's acknowledgement waits only for the last part of the dataset.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import structlog

__all__ = ["DiscardedSpool", "guard_space", "is_discarded", "start_writeback"]

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


def start_writeback(message: Any) -> None:
    """Start writing the message's spooled bytes to disk, without waiting (Linux only)."""
    spool = getattr(message, "_data_set_file", None)
    if spool is None or is_discarded(spool) or not hasattr(os, "sync_file_range"):
        return
    # Only an early start: the fsync before the answer is what makes the bytes durable.
    with contextlib.suppress(OSError, ValueError):
        os.sync_file_range(spool.fileno(), 0, 0, os.SYNC_FILE_RANGE_WRITE)

"""Received C-STORE datasets spool to disk; too large, or with the disk short, they are not.

pynetdicom writes a C-STORE dataset's fragments to a spool file as they arrive; a write that
fails for lack of space would kill the association's reader thread and leave the file behind.
Before each P-DATA PDU is read, guard_spool checks that the dataset stays within the size
limit (HUB_INGEST_MAX_BYTES) and the spool's free space above the storage floor
(HUB_STORAGE_MIN_FREE_BYTES). When either would be passed, the spool file is emptied, the rest
of the dataset is read and dropped, and the C-STORE is answered 0xA700 Out of Resources.

The bytes spooled so far are also handed to the disk then (start_writeback), so that the
fsync before the C-STORE's acknowledgement waits only for the last part of the dataset.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import structlog

__all__ = ["DiscardedSpool", "guard_spool", "is_discarded", "start_writeback"]

log = structlog.get_logger(__name__)

#: Room kept beyond the floor for file system blocks and metadata.
RESERVE_BYTES = 64 * 1024
#: A P-DATA-TF PDU's bytes around one PDV's data: item length (4), context ID, control header.
PDV_OVERHEAD = 6


class DiscardedSpool:
    """Stands in for a spool file whose dataset is being dropped: writes go nowhere.

    too_large: dropped for passing the size limit (else for lack of disk space).
    """

    def __init__(self, name: str, *, too_large: bool = False) -> None:
        self.name = name
        self.too_large = too_large
        self.file = self  # pynetdicom flushes ``spool.file`` after each write

    def write(self, data: bytes) -> int:
        """Drop data."""
        return len(data)

    def flush(self) -> None:
        """Nothing to flush."""

    def close(self) -> None:
        """Nothing to close (the emptied file is removed by pynetdicom or the receiver)."""


def is_discarded(spool: object) -> bool:
    """Tell whether a request's spool file was dropped (too large, or short of space)."""
    return isinstance(spool, DiscardedSpool)


def guard_spool(message: Any, incoming: int, floor: int, max_bytes: int) -> None:
    """Drop the message's spooled dataset if a PDU of incoming bytes would pass a limit.

    The spool holds the file as it will be stored (preamble, file meta, dataset so far), so
    its size plus the PDU's data is the size of the file once that PDU is written.
    """
    spool = getattr(message, "_data_set_file", None)
    if spool is None or is_discarded(spool):
        return
    if spool.tell() + incoming - PDV_OVERHEAD > max_bytes:
        _discard(message, spool, too_large=True)
        log.warning("spool_too_large", max_bytes=max_bytes)
        return
    stat = os.statvfs(os.path.dirname(spool.name))
    if stat.f_bavail * stat.f_frsize - incoming >= floor + RESERVE_BYTES:
        return
    _discard(message, spool, too_large=False)
    log.warning("spool_out_of_space", incoming=incoming, floor=floor)


def _discard(message: Any, spool: Any, *, too_large: bool) -> None:
    spool.close()
    os.truncate(spool.name, 0)  # give back what was written so far
    message._data_set_file = DiscardedSpool(spool.name, too_large=too_large)


def start_writeback(message: Any) -> None:
    """Start writing the message's spooled bytes to disk, without waiting (Linux only)."""
    spool = getattr(message, "_data_set_file", None)
    if spool is None or is_discarded(spool) or not hasattr(os, "sync_file_range"):
        return
    # Only an early start: the fsync before the answer is what makes the bytes durable.
    with contextlib.suppress(OSError, ValueError):
        os.sync_file_range(spool.fileno(), 0, 0, os.SYNC_FILE_RANGE_WRITE)

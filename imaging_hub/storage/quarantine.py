"""Quarantine: rejected input is kept, with the reason, for someone to inspect."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

from imaging_hub.db.models import utcnow
from imaging_hub.storage.local import write_durably

__all__ = ["quarantine_file"]


def quarantine_file(
    quarantine_dir: Path, source: Path | None, *, reason: str, detail: dict[str, str | None]
) -> Path:
    """Copy a rejected file (if given) into the quarantine folder next to a JSON reason file.

    Both are written durably: a kept copy may be the only one of what a sender was told is
    handled (the duplicate policy ``keep-first``).
    """
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    now = utcnow()
    stem = f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"
    kept: Path | None = None
    if source is not None and source.exists():
        kept = quarantine_dir / f"{stem}.dcm"
        with source.open("rb") as fh:
            write_durably(kept, fh, root=quarantine_dir)
    note = quarantine_dir / f"{stem}.json"
    record = {"at": now.isoformat(), "reason": reason, "file": kept.name if kept else None}
    record.update(detail)
    write_durably(note, io.BytesIO(json.dumps(record, indent=2).encode()), root=quarantine_dir)
    return note

"""Quarantine: rejected input is kept, with the reason, for someone to inspect."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from imaging_hub.db.models import utcnow
from imaging_hub.storage.local import fsync_dir

__all__ = ["quarantine_file"]


def quarantine_file(
    quarantine_dir: Path, source: Path | None, *, reason: str, detail: dict[str, str | None]
) -> Path:
    """Copy a rejected file (if given) into the quarantine folder next to a JSON reason file."""
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    now = utcnow()
    stem = f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"
    kept: Path | None = None
    if source is not None and source.exists():
        kept = quarantine_dir / f"{stem}.dcm"
        shutil.copyfile(source, kept)
    note = quarantine_dir / f"{stem}.json"
    record = {"at": now.isoformat(), "reason": reason, "file": kept.name if kept else None}
    record.update(detail)
    note.write_text(json.dumps(record, indent=2), encoding="utf-8")
    fsync_dir(quarantine_dir)
    return note

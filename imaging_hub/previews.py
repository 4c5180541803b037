"""Thumbnails and previews: made by workers after indexing, kept beside (never in) the originals.

Per instance: a thumbnail (longest side 256 px) and a preview (longest side
``previews_size``, 1024 by default), JPEG. A series is represented by its middle image's
thumbnail; a study by its series' thumbnails in order. Instances without pixel data (PDF, SR,
presentation states) get the state ``icon``: the API shows a generic icon for them.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from pydicom import dcmread
from sqlalchemy import select

from imaging_hub.db.models import Instance, PreviewState, Series, StoredFile, Study
from imaging_hub.dicom.uids import validate_uid
from imaging_hub.hub import Hub
from imaging_hub.jobs import PermanentError
from imaging_hub.render import RenderOptions, render_frame

__all__ = ["THUMBNAIL_SIZE", "PreviewFiles", "preview_files", "render_job", "render_previews"]

THUMBNAIL_SIZE = 256
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
JPEG_QUALITY = 90


@dataclass(frozen=True, slots=True)
class PreviewFiles:
    """Where an instance's derived images live."""

    thumbnail: Path
    preview: Path


def preview_files(hub: Hub, study_uid: str, series_uid: str, sop_uid: str) -> PreviewFiles:
    """The derived image paths of an instance, made from validated UIDs only."""
    parts = [
        validate_uid(study_uid, what="StudyInstanceUID"),
        validate_uid(series_uid, what="SeriesInstanceUID"),
        validate_uid(sop_uid, what="SOPInstanceUID"),
    ]
    folder = hub.settings.data_dir.joinpath("previews", *parts)
    return PreviewFiles(thumbnail=folder / "thumbnail.jpg", preview=folder / "preview.jpg")


def _save(image: Image.Image, longest_side: int, target: Path) -> None:
    """Scale image to fit longest_side and write it as JPEG by an atomic rename."""
    copy = image.copy()
    copy.thumbnail((longest_side, longest_side), Image.Resampling.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            copy.save(out, format="JPEG", quality=JPEG_QUALITY)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def render_previews(hub: Hub, path: Path, files: PreviewFiles) -> PreviewState:
    """Render the representative frame of a stored file into a thumbnail and a preview."""
    # Large values are deferred: this learns whether pixels exist without reading them.
    header = dcmread(path, defer_size=1024, specific_tags=[*PIXEL_KEYWORDS, "NumberOfFrames"])
    if not any(keyword in header for keyword in PIXEL_KEYWORDS):
        return PreviewState.ICON
    frames = int(header.get("NumberOfFrames", 1) or 1)
    image = render_frame(path, RenderOptions(frame=frames // 2))
    _save(image, THUMBNAIL_SIZE, files.thumbnail)
    _save(image, hub.settings.previews_size, files.preview)
    return PreviewState.READY


def _locate(hub: Hub, sop_uid: str) -> tuple[Path, PreviewFiles] | None:
    """The current stored file of an instance and its preview paths; None if not indexed."""
    with hub.db.read() as s:
        row = s.execute(
            select(StoredFile.path, Series.series_uid, Study.study_uid)
            .select_from(Instance)
            .join(StoredFile, StoredFile.id == Instance.stored_file_id)
            .join(Series, Series.id == Instance.series_pk)
            .join(Study, Study.id == Series.study_pk)
            .where(Instance.sop_instance_uid == sop_uid)
        ).one_or_none()
    if row is None:
        return None
    files = preview_files(hub, row.study_uid, row.series_uid, sop_uid)
    return hub.store.local_path(row.path), files


def _set_state(hub: Hub, sop_uid: str, state: PreviewState) -> None:
    with hub.db.write() as s:
        instance = s.execute(
            select(Instance).where(Instance.sop_instance_uid == sop_uid)
        ).scalar_one_or_none()
        if instance is not None:
            instance.preview_state = state


def render_job(hub: Hub, payload: dict[str, Any]) -> None:
    """Job handler for kind 'render': previews of one instance's current version."""
    sop_uid = str(payload["sop_instance_uid"])
    located = _locate(hub, sop_uid)
    if located is None:
        return  # the instance was re-indexed elsewhere or removed: nothing to render
    path, files = located
    try:
        state = render_previews(hub, path, files)
    except (ValueError, RuntimeError, NotImplementedError) as exc:
        _set_state(hub, sop_uid, PreviewState.FAILED)
        raise PermanentError(f"cannot render the pixel data: {exc}") from exc
    _set_state(hub, sop_uid, state)

"""Thumbnails and previews: made by workers after indexing, kept beside (never in) the originals.

Per instance: a thumbnail (longest side ``previews_thumbnail_size``, 256 by default) and a
preview (longest side ``previews_size``, 1024 by default), JPEG, of the middle frame. PNG
versions are made on request from the original and kept next to the JPEGs. JPEG 2000 frames
are decoded only at the resolution level these sizes need (``render.reduced``). A series is
represented by its middle image's thumbnail; a study by its series' thumbnails in order.
Instances without pixel data (PDF, SR, presentation states) get the state ``icon``: the API
shows a generic icon for them. Every file is written under a temporary name and renamed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydicom import dcmread
from sqlalchemy import select

from imaging_hub.db.models import Instance, PreviewState, Series, StoredFile, Study
from imaging_hub.dicom.uids import validate_uid
from imaging_hub.hub import Hub
from imaging_hub.jobs import PermanentError
from imaging_hub.render import (
    ImageFormat,
    RenderOptions,
    encode,
    fit,
    frame_count,
    render_frame,
    write_atomic,
)
from imaging_hub.render.frame import PIXEL_KEYWORDS

__all__ = [
    "THUMBNAIL_SIZE",
    "PreviewFiles",
    "PreviewKind",
    "derived_image",
    "has_pixels",
    "locate",
    "preview_files",
    "render_job",
    "render_previews",
]

THUMBNAIL_SIZE = 256


class PreviewKind(StrEnum):
    """The two derived images of an instance."""

    THUMBNAIL = "thumbnail"
    PREVIEW = "preview"


@dataclass(frozen=True, slots=True)
class PreviewFiles:
    """Where an instance's derived images live."""

    folder: Path

    @property
    def thumbnail(self) -> Path:
        """The JPEG thumbnail."""
        return self.path(PreviewKind.THUMBNAIL)

    @property
    def preview(self) -> Path:
        """The JPEG preview."""
        return self.path(PreviewKind.PREVIEW)

    def path(self, kind: PreviewKind, fmt: ImageFormat = ImageFormat.JPEG) -> Path:
        """The file of one kind in one format."""
        return self.folder / f"{kind.value}{fmt.suffix}"


def preview_files(hub: Hub, study_uid: str, series_uid: str, sop_uid: str) -> PreviewFiles:
    """The derived image paths of an instance, made from validated UIDs only."""
    parts = [
        validate_uid(study_uid, what="StudyInstanceUID"),
        validate_uid(series_uid, what="SeriesInstanceUID"),
        validate_uid(sop_uid, what="SOPInstanceUID"),
    ]
    return PreviewFiles(folder=hub.settings.data_dir.joinpath("previews", *parts))


def _size(hub: Hub, kind: PreviewKind) -> int:
    if kind is PreviewKind.THUMBNAIL:
        return hub.settings.previews_thumbnail_size
    return hub.settings.previews_size


def _decode_size(hub: Hub) -> int:
    """The longest side a frame must keep when decoded for the derived images (the larger)."""
    return max(hub.settings.previews_size, hub.settings.previews_thumbnail_size)


def has_pixels(path: Path) -> tuple[bool, int]:
    """Whether a stored file has pixel data (without reading it), and its number of frames."""
    # Large values are deferred: this learns whether pixels exist without reading them.
    header = dcmread(path, defer_size=1024, specific_tags=[*PIXEL_KEYWORDS, "NumberOfFrames"])
    return any(keyword in header for keyword in PIXEL_KEYWORDS), frame_count(header)


def render_previews(hub: Hub, path: Path, files: PreviewFiles) -> PreviewState:
    """Render the representative (middle) frame of a stored file into a thumbnail and a preview."""
    pixels, frames = has_pixels(path)
    if not pixels:
        return PreviewState.ICON
    image = render_frame(path, RenderOptions(frame=frames // 2, target_size=_decode_size(hub)))
    quality = hub.settings.previews_quality
    preview = fit(image, hub.settings.previews_size, hub.settings.previews_size)
    size = hub.settings.previews_thumbnail_size
    write_atomic(files.thumbnail, encode(fit(preview, size, size), ImageFormat.JPEG, quality))
    write_atomic(files.preview, encode(preview, ImageFormat.JPEG, quality))
    return PreviewState.READY


def derived_image(
    hub: Hub, path: Path, files: PreviewFiles, kind: PreviewKind, fmt: ImageFormat
) -> Path:
    """The derived image of kind in fmt; made from the original (and kept) if not there yet."""
    target = files.path(kind, fmt)
    if target.exists():
        return target
    _, frames = has_pixels(path)
    # Decoded as render_previews decodes it: the same picture in every format.
    image = render_frame(path, RenderOptions(frame=frames // 2, target_size=_decode_size(hub)))
    size = _size(hub, kind)
    write_atomic(target, encode(fit(image, size, size), fmt, hub.settings.previews_quality))
    return target


def locate(hub: Hub, sop_uid: str) -> tuple[Path, PreviewFiles] | None:
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
    located = locate(hub, sop_uid)
    if located is None:
        return  # the instance was re-indexed elsewhere or removed: nothing to render
    path, files = located
    for stale in ImageFormat:  # a new version replaces every derived image of the old one
        if stale is not ImageFormat.JPEG:
            for kind in PreviewKind:
                files.path(kind, stale).unlink(missing_ok=True)
    try:
        state = render_previews(hub, path, files)
    except (ValueError, RuntimeError, NotImplementedError, KeyError, TypeError) as exc:
        _set_state(hub, sop_uid, PreviewState.FAILED)
        raise PermanentError(f"cannot render the pixel data: {exc}") from exc
    _set_state(hub, sop_uid, state)

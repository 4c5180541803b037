"""Previews made by the render job: images, icons for non-images, visible failures."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.encaps import encapsulate
from sqlalchemy import select

from imaging_hub.db.models import Instance, Job, JobState, PreviewState
from imaging_hub.hub import Hub
from imaging_hub.ingest import store_instance
from imaging_hub.jobs import claim_for_publish
from imaging_hub.previews import THUMBNAIL_SIZE, preview_files
from imaging_hub.render import RenderOptions, render_frame
from imaging_hub.work import JobOutcome, run_job
from tests.support import testdata


def _drain(hub: Hub) -> list[str]:
    """Run jobs until none is due (index jobs queue render jobs, and identity checks)."""
    outcomes: list[str] = []
    while batch := claim_for_publish(hub.db):
        outcomes += [run_job(hub, job_id, owner="test") for job_id, _ in batch]
    return outcomes


def _state(hub: Hub, sop_uid: str) -> PreviewState:
    with hub.db.read() as s:
        return s.execute(
            select(Instance.preview_state).where(Instance.sop_instance_uid == sop_uid)
        ).scalar_one()


@pytest.mark.parametrize("name", ["CT_small.dcm", "SC_rgb_rle.dcm", "MR_small_jp2klossless.dcm"])
def test_thumbnail_and_preview_follow_indexing(hub: Hub, name: str) -> None:
    result = store_instance(hub, testdata(name), source="test")
    assert _drain(hub) == [JobOutcome.DONE] * 3  # index, identity, render
    files = preview_files(hub, result.study_uid, result.series_uid, result.sop_instance_uid)
    thumb, preview = Image.open(files.thumbnail), Image.open(files.preview)
    assert thumb.format == "JPEG" and max(thumb.size) <= THUMBNAIL_SIZE
    header = dcmread(testdata(name), stop_before_pixels=True)
    assert preview.size == (header.Columns, header.Rows)  # small images are never upscaled
    assert _state(hub, result.sop_instance_uid) == PreviewState.READY


def test_a_non_image_gets_an_icon_not_an_error(hub: Hub, tmp_path: Path) -> None:
    ds = dcmread(testdata("CT_small.dcm"))
    del ds.PixelData
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"  # Encapsulated PDF, here without a document
    path = tmp_path / "no-pixels.dcm"
    ds.save_as(path)
    result = store_instance(hub, path, source="test")
    assert _drain(hub) == [JobOutcome.DONE] * 3  # index, identity, render
    assert _state(hub, result.sop_instance_uid) == PreviewState.ICON


def test_a_poison_instance_fails_visibly_and_alone(hub: Hub, tmp_path: Path) -> None:
    ds = dcmread(testdata("JPEG2000.dcm"))
    ds.PixelData = encapsulate([b"\xff\x4f" + b"\x00" * 200 + b"\xff\xd9"])  # undecodable
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.4242"
    path = tmp_path / "poison.dcm"
    ds.save_as(path)
    poison = store_instance(hub, path, source="test")
    good = store_instance(hub, testdata("CT_small.dcm"), source="test")
    _drain(hub)
    assert _state(hub, poison.sop_instance_uid) == PreviewState.FAILED
    assert _state(hub, good.sop_instance_uid) == PreviewState.READY
    with hub.db.read() as s:
        failed = s.execute(select(Job).where(Job.state == JobState.FAILED)).scalars().all()
    assert [(j.kind, j.study_uid) for j in failed] == [("render", poison.study_uid)]
    assert "cannot render" in (failed[0].last_error or "")


def test_sizes_are_configurable_and_multi_frame_shows_its_middle_frame(
    hub: Hub, tmp_path: Path
) -> None:
    hub.settings.previews_thumbnail_size = 64
    hub.settings.previews_size = 300
    big = dcmread(testdata("SC_rgb_rle_2frame.dcm"))
    result = store_instance(hub, testdata("SC_rgb_rle_2frame.dcm"), source="test")
    assert _drain(hub) == [JobOutcome.DONE] * 3  # index, identity, render
    files = preview_files(hub, result.study_uid, result.series_uid, result.sop_instance_uid)
    thumb = Image.open(files.thumbnail)
    assert max(thumb.size) == 64
    preview = np.asarray(Image.open(files.preview).convert("RGB"), dtype=float)
    frames = [
        np.asarray(render_frame(testdata("SC_rgb_rle_2frame.dcm"), RenderOptions(frame=i)))
        for i in range(int(big.NumberOfFrames))
    ]
    errors = [np.abs(preview - frame).mean() for frame in frames]
    assert errors[1] < errors[0]  # the middle (second of two) frame, not the first

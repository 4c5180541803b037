"""JPEG 2000 previews decoded at reduced resolution: the same picture, less decoding."""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import HTJ2KLossless, JPEG2000Lossless, generate_uid
from structlog.testing import capture_logs

from imaging_hub import previews
from imaging_hub.db.models import PreviewState
from imaging_hub.render import Frame, ImageFormat, RenderOptions, fit, read_frame, render_frame
from imaging_hub.render import frame as frame_module
from imaging_hub.render.reduced import PLUGIN_LABEL, codestream_levels, reduction_for
from imaging_hub.render.request import RenderRequest, render_request

#: Bundled greyscale JPEG 2000 files: (name, a target size that lets levels be discarded).
GREYSCALE = [
    ("JPEG2000.dcm", 512),  # 1024 x 256, signed 16-bit, lossy: 1 level
    ("JPEG2000.dcm", 348),
    ("JPEG2000.dcm", 256),  # 2 levels
    ("693_J2KI.dcm", 256),  # 512 x 512, signed 14-bit, lossy: 1 level
    ("693_J2KI.dcm", 174),
]
#: Small or colour images with detail at the scale of a pixel, where the wavelet's low-pass
#: (what a discarded level leaves) differs more from Lanczos scaling: (name, target, bound).
DETAILED = [
    ("MR_small_jp2klossless.dcm", 32, 8.0),  # 64 x 64, signed 16-bit, lossless: 7.0
    ("MR_small_jp2klossless.dcm", 21, 6.0),  # 5.3
    ("693_J2KI.dcm", 128, 8.0),  # 2 levels: 7.0
    ("examples_jpeg2k.dcm", 320, 7.5),  # 640 x 480, YBR_RCT colour, lossless: 6.6
    ("examples_jpeg2k.dcm", 217, 5.0),  # 4.2
    ("SC_rgb_gdcm_KY.dcm", 34, 4.5),  # 100 x 100 RGB: 3.8
]


def _bundled(name: str) -> Path:
    found = get_testdata_file(name)
    if found is None:
        pytest.skip(f"{name} is not bundled with this pydicom")
    return Path(str(found))


def _mae(reduced: Image.Image, full: Image.Image) -> float:
    """Mean absolute difference in grey levels (a reduced side may be one pixel longer)."""
    assert reduced.mode == full.mode
    assert abs(reduced.width - full.width) <= 1 and abs(reduced.height - full.height) <= 1
    reduced = reduced.resize(full.size, Image.Resampling.LANCZOS)
    return float(np.abs(np.asarray(reduced, dtype=float) - np.asarray(full, dtype=float)).mean())


def _preview_mae(path: Path, target: int, frame: int = 0) -> float:
    """The reduced render fitted to target against the full render fitted to target."""
    reduced = render_frame(path, RenderOptions(frame=frame, target_size=target))
    full = render_frame(path, RenderOptions(frame=frame))
    return _mae(fit(reduced, target, target), fit(full, target, target))


@pytest.mark.parametrize(("name", "target"), GREYSCALE)
def test_a_reduced_preview_looks_like_the_full_decode_scaled_down(name: str, target: int) -> None:
    path = _bundled(name)
    assert read_frame(path, target=target).reduction >= 1
    assert _preview_mae(path, target) <= 3.0


@pytest.mark.parametrize(("name", "target", "bound"), DETAILED)
def test_small_detailed_and_colour_images_stay_close(name: str, target: int, bound: float) -> None:
    path = _bundled(name)
    frame = read_frame(path, target=target)
    assert frame.reduction >= 1
    assert frame.pixels.dtype == read_frame(path).pixels.dtype
    assert _preview_mae(path, target) <= bound


@pytest.mark.parametrize("name", ["J2K_pixelrep_mismatch.dcm", "GDCMJ2K_TextGBR.dcm"])
def test_frames_that_cannot_be_reduced_are_decoded_in_full(name: str) -> None:
    # Unsigned code stream for signed pixels (levels would average wrapped values); a JP2
    # file Pillow cannot decode: both fall back to the full decode, same pixels.
    path = _bundled(name)
    frame = read_frame(path, target=64)
    assert frame.reduction == 0
    np.testing.assert_array_equal(frame.pixels, read_frame(path).pixels)


def test_an_expected_refusal_leaves_no_decoder_traceback(caplog: pytest.LogCaptureFixture) -> None:
    path = _bundled("J2K_pixelrep_mismatch.dcm")
    with caplog.at_level(logging.INFO):
        assert read_frame(path, target=64).reduction == 0
    assert not [r for r in caplog.records if r.name.startswith("pydicom") and r.exc_info]


def _instance(pixels: NDArray[Any], *, signed: bool = False, mono1: bool = False) -> Dataset:
    """A secondary capture instance of pixels (12 of 16 bits), native, to be compressed."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if mono1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 1 if signed else 0
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.PixelData = pixels.tobytes()
    return ds


def _j2k(
    tmp_path: Path, pixels: NDArray[Any], *, signed: bool = False, mono1: bool = False
) -> Path:
    """A generated JPEG 2000 lossless instance (pydicom + pylibjpeg-openjpeg's encoder)."""
    ds = _instance(pixels, signed=signed, mono1=mono1)
    ds.compress(JPEG2000Lossless, pixels, encoding_plugin="pylibjpeg")
    path = tmp_path / "j2k.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _radiograph(rows: int, columns: int, low: int = 0) -> NDArray[np.uint16]:
    """Smooth 12-bit content with noise and a collimated border (one value)."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:rows, 0:columns].astype(np.float32)
    img = 1800 + 1200 * np.sin(x / 90) * np.cos(y / 130) + rng.normal(0, 40, (rows, columns))
    img[:, : columns // 16] = 100
    return np.clip(img + low, low, low + 4095).astype(np.int16 if low < 0 else np.uint16)


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _j2k(tmp_path_factory.mktemp("j2k"), _radiograph(2048, 2048))


def test_a_large_frame_is_decoded_at_the_level_the_preview_needs(large: Path) -> None:
    assert read_frame(large).pixels.shape == (2048, 2048)
    preview = read_frame(large, target=1024)
    assert (preview.reduction, preview.pixels.shape) == (1, (1024, 1024))
    assert preview.pixels.dtype == np.uint16
    thumbnail = read_frame(large, target=256)
    assert (thumbnail.reduction, thumbnail.pixels.shape) == (3, (256, 256))
    # Stored values, each about the mean of the 2 x 2 values it stands for.
    full = read_frame(large).pixels.astype(float)
    means = full.reshape(1024, 2, 1024, 2).mean(axis=(1, 3))
    assert np.abs(preview.pixels.astype(float) - means).mean() < 40
    assert _preview_mae(large, 1024) <= 3.0
    assert _preview_mae(large, 700) <= 3.0


def test_full_size_rendering_decodes_in_full(large: Path) -> None:
    assert render_frame(large).size == (2048, 2048)
    encoded = render_request(large, RenderRequest())
    assert Image.open(io.BytesIO(encoded)).size == (2048, 2048)


def test_workers_previews_decode_at_the_preview_size(
    large: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Frame] = []
    original = previews.render_frame

    def spy(path: Path, options: RenderOptions) -> Image.Image:
        seen.append(read_frame(path, options.frame, target=options.target_size))
        return original(path, options)

    monkeypatch.setattr(previews, "render_frame", spy)
    settings = SimpleNamespace(previews_size=1024, previews_thumbnail_size=256, previews_quality=90)
    files = previews.PreviewFiles(folder=tmp_path / "previews")
    hub: Any = SimpleNamespace(settings=settings)
    assert previews.render_previews(hub, large, files) is PreviewState.READY
    assert (seen[0].reduction, seen[0].pixels.shape) == (1, (1024, 1024))
    assert Image.open(files.preview).size == (1024, 1024)
    assert Image.open(files.thumbnail).size == (256, 256)
    previews.derived_image(hub, large, files, previews.PreviewKind.THUMBNAIL, ImageFormat.PNG)
    assert seen[1].reduction == 1  # the same decode as the JPEGs': the same picture


def test_signed_monochrome1_and_multi_frame(tmp_path: Path) -> None:
    pixels = np.stack([_radiograph(1024, 768, low=-2048) for _ in range(3)])
    pixels[1] = pixels[1] // 2  # frames differ
    path = _j2k(tmp_path, pixels, signed=True, mono1=True)
    frame = read_frame(path, 1, target=384)
    assert (frame.reduction, frame.pixels.shape, frame.pixels.dtype) == (1, (512, 384), np.int16)
    means = pixels[1].astype(float).reshape(512, 2, 384, 2).mean(axis=(1, 3))
    assert np.abs(frame.pixels.astype(float) - means).mean() < 40
    assert frame.pixels.min() < 0
    assert _preview_mae(path, 384, frame=1) <= 3.0


def test_a_failed_reduced_decode_falls_back_and_logs_no_patient_data(
    large: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = frame_module.pixel_array

    def failing(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("decoding_plugin") == PLUGIN_LABEL:
            raise RuntimeError("decoder broke")
        return original(*args, **kwargs)

    monkeypatch.setattr(frame_module, "pixel_array", failing)
    with capture_logs() as logs:
        frame = read_frame(large, target=1024)
    assert (frame.reduction, frame.pixels.shape) == (0, (2048, 2048))
    assert [e["event"] for e in logs] == ["reduced_decode_failed"]
    assert set(logs[0]) == {"event", "log_level", "transfer_syntax", "reduction", "error"}


def test_reduction_and_code_stream_levels() -> None:
    assert reduction_for(3000, 2500, 1024) == 1
    assert reduction_for(3000, 2500, 256) == 3
    assert reduction_for(64, 64, 256) == 0
    assert reduction_for(2501, 2501, 600) == 1  # 2 would round differently in Pillow
    path = _bundled("MR_small_jp2klossless.dcm")
    src = next(generate_frames(dcmread(path).PixelData))
    assert codestream_levels(src) == 5
    assert codestream_levels(b"not a code stream") is None


#: A 48 x 64 HTJ2K lossless code stream (OpenJPH 0.26, through imagecodecs) of _tiny().
HTJ2K_STREAM = base64.b64decode(
    "/0//UQApQAAAAAAwAAAAQAAAAAAAAAAAAAAAMAAAAEAAAAAAAAAAAAABDwEB/1AACAACAAAACv9SAAwAAgABAAUEBE"
    "AB/1wAEyCIkJCQkJCQkJCQkJCQiIiI/2QAFwABT3BlbkpQSCBWZXIgMC4yNi4zLv+QAAoAAAAABLcAAf+TwAArAIn3"
    "xPzR81D2AoG0AMAAE8AAFTAABOB8x+oCi3QAAcGYKF4Ao5QAFVH5Agt0AMAAFsQAAWrAABWANIyRPOwBKVJNsG0Pe0"
    "CK9AH/DiIAfZgAm85k8v8dAGcSKP7Y/gGTNGCA+rgA0ekJNwH4AwrCC3YAwAAXfQAAXZQAAVyOp7OIH/7/P/hgwABv"
    "aO2Qw/9//3CDAQN0iZdDD/9//0MPBgzIGgRBOML/f/9wgwEDE6EM6A86A5AsOBmdAEKE8P9//18QIfz/f/9/QoTw/3"
    "//fwuIEcLPBx8ffHzw8cHHAQCAAAKPXBPXBOGUMr8Au+12AXvgfACu/v0LeADAABfV0AAF7xAABarFOh6UQOT/f/9/"
    "gwMLi5M0Qh/qODg4OPj/f39wYGGRgeNzgxqHw+Hw/3//YIGFxeaRO+PM4XA4/P9/PziwsGh9fWiwORwOh/9//wcOLC"
    "yeUA1xyONwOBz+/38fHFhYBOZJBOHI4XA4/P9/PziwsBhaIW3ClYODg4P/f/8HDiws/nGdr9euA+dr9euA+dr9euAf"
    "O1+vXAfO1+vXAfO1+vXFOdr9euA4xLGoxjQZngL8/3//f/96/3//f/9X/3//f/8//f9//3//df9//3//L/9//3//f/"
    "r/f/9//wtUB+YDnAOZA5kDmQOZA5kDmQOZA5kDmXAhAAgiEACCIIAKPr1+vX169ev16+vXr1+vX169ev16+vXr1+vX"
    "169ev16+vVGNRjUxtAMEQgghJFiV+H/4CCu/v7+/v7+LfQDAAC/WCAAF9vQAAtqVacn/f/9//wEBAKAZdQhAAAIQgP"
    "9//38/EAAAStD9AAQgAAH4/3//fwMBAKDzsgMIIIAA/v9//39AAACoueEAAggggP9//38/EAAA2q02gAACCOD/f/9/"
    "DwQAgGJ7DSCAAAL4/3//fwMBAKDXYgMIIIAA/v9//39AAACott0AAggggP9//38/EAAAGq45gAACCOD/f/9/DwQAgL"
    "I7DyCAAAL4/3//fwMBAKD7JQgggAAC+P9//38DAQCgDs0IQAACEID/f/9/PxAAAFpSmQAEIAAB+P9//38DAQCgQH0K"
    "QAACEID/f/9/PxAAAPp1uQAEIAAB+P9//38DAQDgCcAAAAITzgAAABCecAAAAITzgAAABCecAAAAIR5wAAAAhPOAAA"
    "AEJ5wAAAAhPOAAAAEJ5wAAAAhPOAAAAEJ5wAAAAhPOAAAAEJ5wAAAAgPOAAAAEJxBYqVKlSpUqVKmBMnMG/3//f/9/"
    "/3//f/9//3//f/9//3//f/9//3//f/9//3//f/9//3//f/9//3//f/9//3//f/9//3//f/9//3//f/9//3//f/9//3"
    "//f/9//3//f/9//3//fxHQBxgBRoARYAQYAUaAEWAEGAFGgBFgBBgBRoARYAQYAUaAEWAEGIIQAIIhAAgiEACCIQAI"
    "IhAAgiiSHgAAAAaAAAAAaAAAAAaAAAAAaAAAAAaAAAAAaAAAAAaAAAAAaAAAAAaAAAAAaAAAAAaAAAAAaAAAAAaAAA"
    "AAaFSpUqVKlSpUrb8FAAAAAFD8f/9ABBHChQoUKFChQoUKFChR5AH/2Q=="
)


def _tiny() -> NDArray[np.uint16]:
    """Smooth gradients (12 bits) and a 4-column border of one value."""
    y, x = np.mgrid[0:64, 0:48]
    img = (1000 + 20 * x + 10 * y + (x - 24) ** 2 + (y - 32) ** 2).astype(np.uint16)
    img[:, :4] = 50
    return img


def test_htj2k_frames_are_reduced_too(tmp_path: Path) -> None:
    ds = _instance(_tiny())
    ds.file_meta.TransferSyntaxUID = HTJ2KLossless
    ds.PixelData = encapsulate([HTJ2K_STREAM])
    ds["PixelData"].VR = "OB"
    path = tmp_path / "htj2k.dcm"
    ds.save_as(path, enforce_file_format=True)
    np.testing.assert_array_equal(read_frame(path).pixels, _tiny())
    frame = read_frame(path, target=32)
    assert (frame.reduction, frame.pixels.shape) == (1, (32, 24))
    # Both lossless with the reversible 5/3 wavelet: one level less is the same integers
    # whichever block coder (HT or the Part 1 one) holds the coefficients.
    part1 = read_frame(_j2k(tmp_path, _tiny()), target=32)
    assert part1.reduction == 1
    np.testing.assert_array_equal(frame.pixels, part1.pixels)

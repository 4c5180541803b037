"""The grayscale pipeline on synthetic images: windows, LUT functions, inversion, frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from imaging_hub.render import AutoWindow, RenderOptions, Window, render_frame


def _image(tmp_path: Path, pixels: np.ndarray, **attributes: object) -> Path:
    """Write a 16-bit unsigned grayscale Secondary Capture with the given pixels."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    for key, value in attributes.items():
        setattr(ds, key, value)
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


RAMP = np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16)


def _px(path: Path, **options: object) -> np.ndarray:
    return np.asarray(render_frame(path, RenderOptions(**options)), dtype=int)


def test_linear_window_maps_the_window_onto_black_to_white(tmp_path: Path) -> None:
    out = _px(_image(tmp_path, RAMP, WindowCenter=2048, WindowWidth=1024))
    assert out[RAMP <= 1536].max() == 0
    assert out[RAMP >= 2560].min() == 255
    mid = out[(RAMP > 1536) & (RAMP < 2560)]
    assert np.all(np.diff(mid) >= 0) and 100 < mid.mean() < 155


def test_multi_valued_window_is_selectable(tmp_path: Path) -> None:
    path = _image(tmp_path, RAMP, WindowCenter=[500, 3500], WindowWidth=[200, 200])
    first, second = _px(path, voi_index=0), _px(path, voi_index=1)
    assert first[RAMP >= 700].min() == 255 and first[RAMP <= 300].max() == 0
    assert second[RAMP <= 3300].max() == 0 and second[RAMP >= 3700].min() == 255


def test_rescale_is_applied_before_the_window(tmp_path: Path) -> None:
    path = _image(
        tmp_path, RAMP, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=0, WindowWidth=400
    )
    out = _px(path)
    hu = RAMP.astype(int) - 1024
    assert out[hu <= -200].max() == 0 and out[hu >= 200].min() == 255


def test_monochrome1_and_inverse_presentation_invert(tmp_path: Path) -> None:
    normal = _px(_image(tmp_path, RAMP, WindowCenter=2048, WindowWidth=4096))
    mono1 = _px(
        _image(
            tmp_path,
            RAMP,
            WindowCenter=2048,
            WindowWidth=4096,
            PhotometricInterpretation="MONOCHROME1",
        )
    )
    inverse = _px(
        _image(tmp_path, RAMP, WindowCenter=2048, WindowWidth=4096, PresentationLUTShape="INVERSE")
    )
    assert np.array_equal(mono1, 255 - normal) and np.array_equal(inverse, 255 - normal)


@pytest.mark.parametrize("function", ["SIGMOID", "LINEAR_EXACT"])
def test_voi_lut_functions(tmp_path: Path, function: str) -> None:
    path = _image(tmp_path, RAMP, WindowCenter=2048, WindowWidth=1024, VOILUTFunction=function)
    out = _px(path)
    centre = out[RAMP == 2048][0]
    assert 120 <= centre <= 135
    assert np.all(np.diff(out.ravel()) >= 0)
    if function == "SIGMOID":  # PS3.3 C.11.2.1.3.1: 255 / (1 + e^2) at the window's edges
        assert 28 <= out[RAMP == 1536][0] <= 33 and 222 <= out[RAMP == 2560][0] <= 227


def test_auto_window_ignores_padding_and_outliers(tmp_path: Path) -> None:
    pixels = np.full((64, 64), 1000, dtype=np.uint16)
    pixels[16:48, 16:48] = np.linspace(1000, 1400, 32 * 32).reshape(32, 32)
    pixels[0, :8] = 4095  # a few hot pixels
    pixels[63, :] = 0  # padding
    path = _image(tmp_path, pixels, PixelPaddingValue=0)
    auto = _px(path)
    naive = _px(path, auto=AutoWindow.MINMAX)
    inside = auto[16:48, 16:48]
    assert inside.max() - inside.min() > naive[16:48, 16:48].max() - naive[16:48, 16:48].min()
    assert inside.max() >= 250  # the anatomy uses the full grey range


def test_explicit_window_and_frames(tmp_path: Path) -> None:
    frames = np.stack([RAMP, RAMP[::-1]])
    path = _image(tmp_path, frames)
    explicit = Window(center=2048, width=4096)
    assert np.array_equal(_px(path, frame=1, window=explicit), _px(path, window=explicit)[::-1])
    with pytest.raises(ValueError, match="frame 2 does not exist"):
        _px(path, frame=2)

"""Rendering one frame of a stored instance to an 8-bit image, as a viewer would show it.

The grayscale pipeline follows PS3.4 N.2: stored values -> Modality LUT (rescale or Modality
LUT Sequence) -> VOI LUT (window, or VOI LUT Sequence) -> Presentation LUT (MONOCHROME1 and
Presentation LUT Shape INVERSE invert). Colour images are converted to RGB (YBR and palette
colour included) and scaled to 8 bits. Only the requested frame is decoded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi
from pydicom.pixels.utils import pixel_array
from pydicom.uid import DeflatedExplicitVRLittleEndian

__all__ = ["AutoWindow", "RenderOptions", "Window", "choose_window", "render_frame"]

FloatArray = NDArray[np.float64]


class AutoWindow(StrEnum):
    """How to choose a window when the instance stores none."""

    #: 0.5th to 99.5th percentile, ignoring padding: robust for radiographs and MRI.
    PERCENTILE = "percentile"
    #: The full range of values (as dcmtk's ``+Wm``).
    MINMAX = "minmax"


@dataclass(frozen=True, slots=True)
class Window:
    """A VOI window (PS3.3 C.11.2.1.2) in modality units, with its function."""

    center: float
    width: float
    function: str = "LINEAR"


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """What to render: which frame, which stored window (or an explicit one), the fallback."""

    frame: int = 0
    window: Window | None = None
    voi_index: int = 0
    auto: AutoWindow = AutoWindow.PERCENTILE


def _values(ds: Dataset, keyword: str) -> list[float]:
    """A numeric attribute as a list of floats (one or many values)."""
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [float(v) for v in value]
    return [float(value)]


def _stored_window(ds: Dataset, index: int) -> Window | None:
    """The index-th stored window (multi-valued Window Center/Width), if the instance has one."""
    centers, widths = _values(ds, "WindowCenter"), _values(ds, "WindowWidth")
    if not centers or not widths:
        return None
    i = min(index, len(centers) - 1, len(widths) - 1)
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    return Window(centers[i], widths[i], function)


def _auto_window(values: FloatArray, ds: Dataset, mode: AutoWindow) -> Window:
    """A window from the data itself, ignoring Pixel Padding Value."""
    data = values.ravel()
    padding = ds.get("PixelPaddingValue")
    if padding is not None and "RescaleSlope" not in ds:
        data = data[data != float(padding)]
    if data.size == 0:
        data = values.ravel()
    if mode == AutoWindow.PERCENTILE:
        low, high = (float(v) for v in np.percentile(data, [0.5, 99.5]))
    else:
        low, high = float(data.min()), float(data.max())
    if high <= low:
        high = low + 1
    # LINEAR with width w maps [c - w/2, c + w/2 - 1] onto the full output range.
    return Window(center=(low + high + 1) / 2, width=high - low + 1)


def choose_window(values: FloatArray, ds: Dataset, options: RenderOptions) -> Window | None:
    """The window to apply: explicit, stored, or automatic; None means a VOI LUT applies."""
    if options.window is not None:
        return options.window
    if "VOILUTSequence" in ds and _stored_window(ds, options.voi_index) is None:
        return None
    return _stored_window(ds, options.voi_index) or _auto_window(values, ds, options.auto)


def _apply_window(values: FloatArray, window: Window) -> FloatArray:
    """Map modality values to 0..255 with a VOI window function (PS3.3 C.11.2.1.2-3)."""
    c, w = window.center, max(window.width, 1.0)
    if window.function == "SIGMOID":
        out = 255.0 / (1.0 + np.exp(-4.0 * (values - c) / w))
    elif window.function == "LINEAR_EXACT":
        out = ((values - c) / w + 0.5) * 255.0
    else:
        out = ((values - (c - 0.5)) / (w - 1.0 if w > 1 else 1.0) + 0.5) * 255.0
    return np.clip(out, 0.0, 255.0)


def _voi_lut(raw: NDArray[np.generic], ds: Dataset, index: int) -> FloatArray:
    """Apply the stored VOI LUT Sequence item and scale its output to 0..255."""
    item = ds.VOILUTSequence[min(index, len(ds.VOILUTSequence) - 1)]
    out = apply_voi(raw, ds, index=min(index, len(ds.VOILUTSequence) - 1)).astype(np.float64)
    bits = int(item.LUTDescriptor[2]) or 16
    return np.asarray(np.clip(out / (2**bits - 1) * 255.0, 0.0, 255.0), dtype=np.float64)


def _grayscale(raw: NDArray[np.generic], ds: Dataset, options: RenderOptions) -> NDArray[np.uint8]:
    values = np.asarray(apply_modality_lut(raw, ds), dtype=np.float64)
    window = choose_window(values, ds, options)
    if window is None:
        out = _voi_lut(np.asarray(apply_modality_lut(raw, ds)), ds, options.voi_index)
    else:
        out = _apply_window(values, window)
    inverse = str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1"
    if str(ds.get("PresentationLUTShape", "")).upper() == "INVERSE":
        inverse = not inverse
    if inverse:
        out = 255.0 - out
    return np.rint(out).astype(np.uint8)


def _color(raw: NDArray[np.generic], ds: Dataset) -> NDArray[np.uint8]:
    if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        rgb = np.asarray(apply_color_lut(raw, ds), dtype=np.float64)
        top = float(2 ** int(ds.RedPaletteColorLookupTableDescriptor[2]) - 1)
    else:
        rgb = np.asarray(raw, dtype=np.float64)
        top = float(2 ** int(ds.get("BitsStored", 8)) - 1)
    return np.rint(np.clip(rgb / top * 255.0, 0, 255)).astype(np.uint8)


def render_frame(path: Path, options: RenderOptions | None = None) -> Image.Image:
    """Render one frame of a Part 10 file as an 8-bit greyscale ('L') or 'RGB' image."""
    options = options or RenderOptions()
    header = dcmread(path, stop_before_pixels=True)
    frames = int(header.get("NumberOfFrames", 1) or 1)
    if not 0 <= options.frame < frames:
        raise ValueError(f"frame {options.frame} does not exist (the instance has {frames})")
    index = options.frame if frames > 1 else None
    if header.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        # A deflated dataset can only be read whole; pydicom cannot seek to one frame in it.
        raw = pixel_array(dcmread(path), index=index)
    else:
        raw = pixel_array(path, index=index)
    photometric = str(header.get("PhotometricInterpretation", ""))
    if photometric == "PALETTE COLOR" or int(header.get("SamplesPerPixel", 1)) == 3:
        return Image.fromarray(_color(raw, header), mode="RGB")
    if raw.ndim != 2:
        raise ValueError(f"cannot render pixel data of shape {raw.shape}")
    if math.prod(raw.shape) == 0:
        raise ValueError("the frame has no pixels")
    return Image.fromarray(_grayscale(raw, header, options), mode="L")

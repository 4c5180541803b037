"""One frame of a stored instance to an 8-bit image, as a viewer would show it.

The grayscale pipeline follows PS3.4 N.2 with pydicom's transforms: stored values -> Modality
LUT (rescale, or Modality LUT Sequence) -> VOI LUT (a window with LINEAR, LINEAR_EXACT or
SIGMOID, or a VOI LUT Sequence item) -> Presentation LUT (Shape or Sequence; MONOCHROME1 is
shown inverted). Colour (RGB, YBR_* already converted by the decoder, PALETTE COLOR with 8 or
16-bit tables) is scaled to 8 bits per channel. 1-bit and fractional segmentations map their
range onto black..white; float pixel data gets an automatic window.

Integer greyscale frames go through the pipeline once per value of their range (a table), then
every pixel is looked up in it: the same result with no frame-sized floating point arrays, which
keeps a 3000 x 3000 radiograph at about 60 MB of working memory and ~50 ms of CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels.processing import (
    apply_color_lut,
    apply_modality_lut,
    apply_presentation_lut,
    apply_voi,
    apply_windowing,
)
from pydicom.valuerep import DSfloat

from imaging_hub.render.frame import read_frame
from imaging_hub.render.window import (
    AUTO_SAMPLES,
    RenderOptions,
    Window,
    auto_window,
    not_padding,
    stored_window,
)

__all__ = ["LUT_MAX_ENTRIES", "choose_window", "render_frame", "render_pixels", "to_display"]

FloatArray = NDArray[np.float64]
#: Integer frames whose values span at most this many values go through a table of that range.
LUT_MAX_ENTRIES = 1 << 20
#: Rows mapped through the table at a time (bounds the temporary index arrays).
_LUT_ROWS = 256


def choose_window(
    values: FloatArray, raw: NDArray[np.generic], ds: Dataset, options: RenderOptions
) -> Window | None:
    """The window to apply: explicit, stored, or automatic; None means the VOI LUT Sequence."""
    if options.window is not None:
        return options.window
    window = stored_window(ds, options.voi_index)
    if window is None and ds.get("VOILUTSequence"):
        return None
    return window or auto_window(values, not_padding(raw, ds), options.auto)


def _window(values: FloatArray, window: Window) -> FloatArray:
    """Apply a VOI window onto 0..255 with pydicom's windowing (PS3.3 C.11.2.1.2-3)."""
    voi = Dataset()
    voi.PhotometricInterpretation = "MONOCHROME2"
    voi.BitsStored, voi.PixelRepresentation = 8, 0  # the output range: 8-bit unsigned
    voi.WindowCenter = DSfloat(window.center, auto_format=True)
    voi.WindowWidth = DSfloat(window.width, auto_format=True)
    voi.VOILUTFunction = window.function
    return np.asarray(apply_windowing(values, voi), dtype=np.float64)


def _voi_lut(modality: NDArray[np.generic], ds: Dataset, index: int) -> FloatArray:
    """Apply a stored VOI LUT Sequence item and scale its output onto 0..255."""
    i = min(index, len(ds.VOILUTSequence) - 1)
    out = np.asarray(apply_voi(modality, ds, index=i), dtype=np.float64)
    bits = int(ds.VOILUTSequence[i].LUTDescriptor[2]) or 16
    # Some writers declare 16 bits but fill fewer: scale by the bits the table really uses.
    used = max(8, int(out.max()).bit_length()) if out.size else bits
    top = float(2 ** min(bits, used) - 1)
    return np.clip(out / top * 255.0, 0.0, 255.0)


def _presentation(out: FloatArray, ds: Dataset) -> FloatArray:
    """Presentation LUT (PS3.3 C.11.6): MONOCHROME1 and Shape INVERSE invert; a Sequence maps."""
    if ds.get("PresentationLUTSequence"):
        # pydicom scales its input from min..max: pin those to 0 and 255, then drop them.
        pinned = np.append(out.ravel(), [0.0, 255.0])
        mapped = np.asarray(apply_presentation_lut(pinned, ds), dtype=np.float64)[:-2]
        bits = int(ds.PresentationLUTSequence[0].LUTDescriptor[2])
        return mapped.reshape(out.shape) / float(2**bits - 1) * 255.0
    shape = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    # A DX MONOCHROME1 image says INVERSE for the same single inversion (PS3.3 C.8.11.1.1).
    if shape == "INVERSE" or str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        return 255.0 - out
    return out


def _is_segmentation(ds: Dataset) -> bool:
    """Whether ds is a binary or fractional segmentation (or 1-bit pixel data)."""
    kind = str(ds.get("SegmentationType", "") or "").upper()
    return int(ds.get("BitsAllocated", 0) or 0) == 1 or kind in ("BINARY", "FRACTIONAL")


def _segmentation(raw: NDArray[Any], ds: Dataset) -> FloatArray | None:
    """Binary and fractional segmentations (PS3.3 C.8.20.2) onto 0..255; None otherwise."""
    kind = str(ds.get("SegmentationType", "") or "").upper()
    if int(ds.get("BitsAllocated", 0) or 0) == 1 or kind == "BINARY":
        return np.where(raw > 0, 255.0, 0.0)
    if kind == "FRACTIONAL":
        top = float(ds.get("MaximumFractionalValue", 255) or 255)
        return np.clip(raw.astype(np.float64) / top * 255.0, 0.0, 255.0)
    return None


def _grayscale(raw: NDArray[np.generic], ds: Dataset, options: RenderOptions) -> FloatArray:
    """Modality, VOI and Presentation LUTs of one greyscale frame, as 0..255 floats."""
    segment = _segmentation(raw, ds) if options.window is None else None
    if segment is not None:
        return segment
    if raw.dtype.kind == "f":
        modality = np.nan_to_num(raw.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    else:
        modality = np.asarray(apply_modality_lut(raw, ds))
    values = np.asarray(modality, dtype=np.float64)
    window = choose_window(values, raw, ds, options)
    out = _voi_lut(modality, ds, options.voi_index) if window is None else _window(values, window)
    return _presentation(out, ds)


def _color(raw: NDArray[np.generic], ds: Dataset) -> FloatArray:
    """RGB (converted from YBR by the decoder) or palette colour, as 0..255 floats."""
    if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        rgb = np.asarray(apply_color_lut(raw, ds), dtype=np.float64)
        top = float(2 ** int(ds.RedPaletteColorLookupTableDescriptor[2]) - 1)
    else:
        rgb = np.asarray(raw, dtype=np.float64)
        top = float(2 ** int(ds.get("BitsStored", 8) or 8) - 1)
    return np.clip(rgb / top * 255.0, 0.0, 255.0)


def to_display(raw: NDArray[np.generic], ds: Dataset, options: RenderOptions) -> FloatArray:
    """Display values 0..255 of one decoded frame (greyscale 2-D or RGB 3-D), not yet rounded."""
    if raw.size == 0:
        raise ValueError("the frame has no pixels")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric == "PALETTE COLOR" or raw.ndim == 3:
        if raw.ndim == 3 and raw.shape[-1] != 3:
            raise ValueError(f"cannot render pixel data of shape {raw.shape}")
        return _color(raw, ds)
    if raw.ndim != 2:
        raise ValueError(f"cannot render pixel data of shape {raw.shape}")
    return _grayscale(raw, ds, options)


def _offsets(raw: NDArray[Any], low: int) -> NDArray[Any]:
    """raw - low as unsigned integers of raw's size (exact: the frame's range fits them)."""
    unsigned = np.dtype(f"u{raw.dtype.itemsize}")
    return np.asarray(raw.view(unsigned) - np.asarray(low, dtype=raw.dtype).view(unsigned))


def _voi_lut_table(
    modality: NDArray[Any], raw: NDArray[Any], low: int, ds: Dataset, index: int
) -> FloatArray:
    """_voi_lut over the table's domain, scaled by the bits the frame's own values use."""
    i = min(index, len(ds.VOILUTSequence) - 1)
    out = np.asarray(apply_voi(modality, ds, index=i), dtype=np.float64)
    present = np.zeros(out.size, dtype=bool)
    for start in range(0, raw.shape[0], _LUT_ROWS):
        present[_offsets(raw[start : start + _LUT_ROWS], low)] = True
    bits = int(ds.VOILUTSequence[i].LUTDescriptor[2]) or 16
    used = max(8, int(out[present].max()).bit_length())
    top = float(2 ** min(bits, used) - 1)
    return np.clip(out / top * 255.0, 0.0, 255.0)


def _grayscale_table(
    raw: NDArray[np.generic], ds: Dataset, options: RenderOptions
) -> NDArray[np.uint8] | None:
    """The 8-bit greyscale frame through a table of its stored value range; None if unsuited.

    Every step of the pipeline maps each stored value on its own, so computing it once per
    value in the frame's range gives the same pixels as computing it per pixel, in a fraction
    of the time and without frame-sized floating point copies (PS3.4 N.2 as a single LUT).
    The automatic window looks at the same strided sample as ``auto_window`` would.
    """
    if raw.dtype.kind not in "iu" or raw.ndim != 2 or raw.size == 0:
        return None
    if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        return None
    if options.window is None and _is_segmentation(ds):
        return None
    if not raw.dtype.isnative:
        raw = raw.astype(raw.dtype.newbyteorder("="))
    low, high = int(raw.min()), int(raw.max())
    if high - low + 1 > min(LUT_MAX_ENTRIES, max(raw.size, 1 << 16)):
        return None
    domain = np.arange(low, high + 1).astype(raw.dtype)
    modality = np.asarray(apply_modality_lut(domain, ds))
    step = max(1, raw.size // AUTO_SAMPLES)
    sample = raw.ravel()[::step]
    values = np.asarray(apply_modality_lut(sample, ds), dtype=np.float64)
    window = choose_window(values, sample, ds, options)
    if window is None:
        out = _voi_lut_table(modality, raw, low, ds, options.voi_index)
    else:
        out = _window(np.asarray(modality, dtype=np.float64), window)
    table = np.rint(_presentation(out, ds)).astype(np.uint8)
    image = np.empty(raw.shape, dtype=np.uint8)
    for start in range(0, raw.shape[0], _LUT_ROWS):
        image[start : start + _LUT_ROWS] = table[_offsets(raw[start : start + _LUT_ROWS], low)]
    return image


def render_pixels(raw: NDArray[np.generic], ds: Dataset, options: RenderOptions) -> Image.Image:
    """One decoded frame as an 8-bit 'L' or 'RGB' image."""
    out = _grayscale_table(raw, ds, options)
    if out is None:
        out = np.rint(to_display(raw, ds, options)).astype(np.uint8)
    return Image.fromarray(out, mode="RGB" if out.ndim == 3 else "L")


def render_frame(path: Path, options: RenderOptions | None = None) -> Image.Image:
    """Render one frame of a Part 10 file as an 8-bit greyscale ('L') or 'RGB' image."""
    options = options or RenderOptions()
    frame = read_frame(path, options.frame, target=options.target_size)
    return render_pixels(frame.pixels, frame.attributes, options)

"""Which VOI window a render uses: explicit, stored (PS3.3 C.11.2), or found in the data."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

__all__ = [
    "AUTO_SAMPLES",
    "AutoWindow",
    "RenderOptions",
    "Window",
    "auto_window",
    "not_padding",
    "stored_window",
]

FloatArray = NDArray[np.float64]
#: At most this many pixels are looked at to find an automatic window (a strided sample).
AUTO_SAMPLES = 1 << 20
#: A single extreme value holding more than this share of the pixels may be padding ...
SPIKE_SHARE = 0.02
#: ... and stands apart from the rest by more than this share of their range.
GAP_SHARE = 0.05
#: Share of values that may lie beyond, or just inside, a padding value (ringing) and be ignored.
TAIL_SHARE = 0.005
#: Values looked at to find those shares' boundaries (a strided sample).
NTH_SAMPLES = 1 << 16
FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


class AutoWindow(StrEnum):
    """How to choose a window when the instance stores none."""

    #: 0.5th to 99.5th percentile, ignoring padding and background spikes: radiographs, MRI.
    PERCENTILE = "percentile"
    #: The full range of values (as dcmtk's ``+Wm``).
    MINMAX = "minmax"


@dataclass(frozen=True, slots=True)
class Window:
    """A VOI window (PS3.3 C.11.2.1.2) in modality units, with its function."""

    center: float
    width: float
    function: str = "LINEAR"

    def __post_init__(self) -> None:
        if self.function not in FUNCTIONS:
            raise ValueError(f"VOI LUT Function {self.function!r} is not one of {FUNCTIONS}")
        if not np.isfinite(self.center) or not np.isfinite(self.width):
            raise ValueError("window center and width must be finite numbers")
        minimum = 1.0 if self.function == "LINEAR" else 0.0
        if self.width < minimum or self.width == 0:
            raise ValueError(f"a {self.function} window needs a width above {minimum}")


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """What to render: which frame, which stored window (or an explicit one), the fallback."""

    frame: int = 0
    window: Window | None = None
    voi_index: int = 0
    auto: AutoWindow = AutoWindow.PERCENTILE
    #: The longest side the image will be scaled down to, if known: JPEG 2000 may then be
    #: decoded at a reduced resolution at least this large. None: decode at full resolution.
    target_size: int | None = None


def _values(ds: Dataset, keyword: str) -> list[float]:
    """A numeric attribute as a list of floats (one or many values)."""
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [float(v) for v in value]
    return [float(value)]


def stored_window(ds: Dataset, index: int) -> Window | None:
    """The index-th stored window (multi-valued Window Center/Width); None if absent or invalid."""
    centers, widths = _values(ds, "WindowCenter"), _values(ds, "WindowWidth")
    if not centers or not widths:
        return None
    i = min(index, len(centers) - 1, len(widths) - 1)
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    try:
        return Window(centers[i], widths[i], function if function in FUNCTIONS else "LINEAR")
    except ValueError:
        return None  # e.g. width 0: the stored window cannot be used, the data decides


def not_padding(raw: NDArray[Any], ds: Dataset) -> NDArray[np.bool_] | None:
    """Which stored values are not Pixel Padding (PS3.3 C.7.5.1.1.2); None when none is set."""
    padding = ds.get("PixelPaddingValue")
    if padding is None or isinstance(padding, bytes):
        return None
    limit = ds.get("PixelPaddingRangeLimit")
    if limit is None or isinstance(limit, bytes):
        return np.asarray(raw != padding)
    low, high = sorted((int(padding), int(limit)))
    return np.asarray((raw < low) | (raw > high))


def _sample(values: FloatArray, mask: NDArray[np.bool_] | None) -> FloatArray:
    """Finite, non-padding values, strided down to about AUTO_SAMPLES of them."""
    flat = values.ravel()
    step = max(1, flat.size // AUTO_SAMPLES)
    data = flat[::step]
    if mask is not None:
        kept = data[mask.ravel()[::step]]
        data = kept if kept.size else data
    finite = data[np.isfinite(data)]
    return finite if finite.size else np.zeros(1)


def _without_padding_spikes(data: FloatArray) -> FloatArray:
    """Drop the lowest or highest value where it fills a large share and stands apart.

    Undeclared padding (outside a CT's field of view, collimated borders) is one value far
    from the rest; a background that merely is the darkest tissue or air is kept. A frame
    decoded at reduced resolution (``reduced``) rings at the padding's edge: up to TAIL_SHARE
    of the values may lie beyond the padding value, and up to SPIKE_SHARE between it and the
    rest; the gap is measured past them.
    """
    kept = data
    for low_side in (True, False):
        if kept.size == 0:
            break
        value = _nth(kept, TAIL_SHARE, low_side)
        if np.count_nonzero(kept == value) <= SPIKE_SHARE * data.size:
            continue
        rest = kept[kept > value] if low_side else kept[kept < value]
        if rest.size < 0.05 * data.size:
            continue
        low, high = np.percentile(rest, [0.5, 99.5])
        gap = abs(_nth(rest, SPIKE_SHARE, low_side) - float(value))
        if gap > GAP_SHARE * max(float(high - low), 1e-9):
            kept = rest
    return kept


def _nth(values: FloatArray, share: float, low_side: bool) -> float:
    """About the value with share of values below it (low_side) or above it (strided sample)."""
    sample = values[:: max(1, values.size // NTH_SAMPLES)]
    k = min(sample.size - 1, int(share * sample.size))
    k = k if low_side else sample.size - 1 - k
    return float(np.partition(sample, k)[k])


def auto_window(values: FloatArray, mask: NDArray[np.bool_] | None, mode: AutoWindow) -> Window:
    """A window from the modality values, ignoring padding (and padding spikes: PERCENTILE)."""
    data = _sample(values, mask)
    if mode == AutoWindow.PERCENTILE:
        low, high = (float(v) for v in np.percentile(_without_padding_spikes(data), [0.5, 99.5]))
    else:
        low, high = float(data.min()), float(data.max())
    if high <= low:
        high = low + 1
    # LINEAR_EXACT maps [c - w/2, c + w/2] onto black..white: low and high exactly.
    return Window(center=(low + high) / 2, width=high - low, function="LINEAR_EXACT")

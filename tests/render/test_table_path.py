"""The table path of the greyscale pipeline: the per-pixel pipeline's pixels, in bounded memory."""

from __future__ import annotations

import tracemalloc
import warnings
from pathlib import Path

import numpy as np
from pydicom.data import get_testdata_files

from imaging_hub.render import AutoWindow, RenderOptions, Window, read_frame, render_pixels
from imaging_hub.render.frame import frame_count, read_header
from imaging_hub.render.pipeline import to_display
from tests.render.test_pipeline import _image

OPTIONS = [
    RenderOptions(),
    RenderOptions(auto=AutoWindow.MINMAX),
    RenderOptions(voi_index=1),
    RenderOptions(window=Window(100, 300, "SIGMOID")),
]


def _per_pixel(pixels: np.ndarray, attributes: object, options: RenderOptions) -> np.ndarray:
    return np.rint(to_display(pixels, attributes, options)).astype(np.uint8)  # type: ignore[arg-type]


def test_every_bundled_greyscale_frame_renders_as_the_per_pixel_pipeline() -> None:
    compared = 0
    for name in sorted(set(get_testdata_files("*.dcm"))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                count = frame_count(read_header(Path(name)))
                frames = [read_frame(Path(name), i) for i in sorted({0, count - 1})]
            except Exception:  # undecodable here or not an image: the reference suite covers it
                continue
        for frame in frames:
            if frame.pixels.ndim != 2 or frame.pixels.dtype.kind not in "iu":
                continue
            for options in OPTIONS:
                try:
                    expected = _per_pixel(frame.pixels, frame.attributes, options)
                except ValueError:
                    continue
                got = np.asarray(render_pixels(frame.pixels, frame.attributes, options))
                assert np.array_equal(got, expected), (name, frame.index, options)
                compared += 1
    assert compared > 100


def test_a_large_radiograph_renders_without_frame_sized_float_arrays(tmp_path: Path) -> None:
    pixels = np.random.default_rng(3).integers(0, 16384, (3000, 3000), dtype=np.uint16)
    path = _image(
        tmp_path, pixels, BitsStored=14, HighBit=13, PhotometricInterpretation="MONOCHROME1"
    )
    frame = read_frame(path)
    tracemalloc.start()
    try:
        image = render_pixels(frame.pixels, frame.attributes, RenderOptions())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One float64 copy of the frame alone would be 72 MB (the per-pixel path peaks at 240 MB);
    # here: the 9 MB output and the automatic window's sample of about a million values.
    assert peak < 60e6, peak
    assert np.array_equal(
        np.asarray(image), _per_pixel(frame.pixels, frame.attributes, RenderOptions())
    )

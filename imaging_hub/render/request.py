"""A rendering request as the HTTP front ends ask it (DICOMweb rendered, WADO-URI), answered here.

Frame, window, size and region are checked by the front end; this renders the frame with the
core pipeline, crops and scales it, and encodes it, so every front end renders the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from imaging_hub.render.output import (
    DEFAULT_QUALITY,
    ImageFormat,
    Viewport,
    apply_viewport,
    encode,
    fit,
)
from imaging_hub.render.pipeline import render_frame
from imaging_hub.render.window import RenderOptions, Window

__all__ = ["RenderRequest", "generic_icon", "render_request"]


@dataclass(frozen=True, slots=True)
class RenderRequest:
    """What to render (0-based frame, window) and how to deliver it (size, region, format)."""

    fmt: ImageFormat = ImageFormat.JPEG
    frame: int = 0
    window: Window | None = None
    viewport: Viewport | None = None
    #: Largest width and height (WADO-URI columns/rows, a thumbnail's size); never enlarged.
    max_size: tuple[int, int] | None = None
    #: WADO-URI region: x1, y1, x2, y2 as fractions of the image (PS3.18 9.1.2.3.12).
    region: tuple[float, float, float, float] | None = None
    quality: int = DEFAULT_QUALITY


def _crop(image: Image.Image, region: tuple[float, float, float, float]) -> Image.Image:
    x1, y1, x2, y2 = region
    box = (
        int(x1 * image.width),
        int(y1 * image.height),
        max(int(x1 * image.width) + 1, round(x2 * image.width)),
        max(int(y1 * image.height) + 1, round(y2 * image.height)),
    )
    return image.crop(box)


def render_request(path: Path, request: RenderRequest) -> bytes:
    """One frame of a stored file rendered, cropped, scaled and encoded as the request asks."""
    image = render_frame(path, RenderOptions(frame=request.frame, window=request.window))
    if request.region is not None:
        image = _crop(image, request.region)
    if request.viewport is not None:
        image = apply_viewport(image, request.viewport)
    if request.max_size is not None:
        image = fit(image, *request.max_size)
    return encode(image, request.fmt, request.quality)


def generic_icon(size: int, fmt: ImageFormat) -> bytes:
    """A generic document icon (for PDF, SR and other objects without pixels), encoded."""
    image = Image.new("RGB", (size, size), (34, 34, 34))
    draw = ImageDraw.Draw(image)
    s = size / 24
    draw.polygon(
        [(6 * s, 2 * s), (15 * s, 2 * s), (20 * s, 7 * s), (20 * s, 22 * s), (6 * s, 22 * s)],
        fill=(187, 187, 187),
    )
    draw.polygon([(15 * s, 2 * s), (15 * s, 7 * s), (20 * s, 7 * s)], fill=(136, 136, 136))
    for y, end in ((12, 17), (15, 17), (18, 14)):
        draw.line([(8 * s, y * s), (end * s, y * s)], fill=(68, 68, 68), width=max(1, round(s)))
    return encode(image, fmt)

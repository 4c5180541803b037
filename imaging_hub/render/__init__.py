"""Rendering stored frames to 8-bit images: the one pipeline for workers and on-demand requests.

``render_frame`` decodes one frame (pydicom's decoder plugins, see ``codecs``), applies the
PS3.4 N.2 greyscale or colour pipeline (``pipeline``) with a stored, explicit or automatic
window (``window``), and ``output`` scales and encodes the result as JPEG or PNG.
"""

from imaging_hub.render.codecs import register_decoders
from imaging_hub.render.frame import Frame, frame_count, read_frame
from imaging_hub.render.output import (
    ImageFormat,
    Viewport,
    apply_viewport,
    encode,
    fit,
    write_atomic,
)
from imaging_hub.render.pipeline import choose_window, render_frame, render_pixels, to_display
from imaging_hub.render.request import RenderRequest, generic_icon, render_request
from imaging_hub.render.window import AutoWindow, RenderOptions, Window

__all__ = [
    "AutoWindow",
    "Frame",
    "ImageFormat",
    "RenderOptions",
    "RenderRequest",
    "Viewport",
    "Window",
    "apply_viewport",
    "choose_window",
    "encode",
    "fit",
    "frame_count",
    "generic_icon",
    "read_frame",
    "register_decoders",
    "render_frame",
    "render_pixels",
    "render_request",
    "to_display",
    "write_atomic",
]

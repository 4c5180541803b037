"""Scaling, cropping and encoding rendered frames (JPEG or PNG), and atomic writes of the result."""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from PIL import Image

__all__ = [
    "DEFAULT_QUALITY",
    "ImageFormat",
    "Viewport",
    "apply_viewport",
    "encode",
    "fit",
    "write_atomic",
]

DEFAULT_QUALITY = 90


class ImageFormat(StrEnum):
    """Encoded image formats the hub produces."""

    JPEG = "jpeg"
    PNG = "png"

    @property
    def media_type(self) -> str:
        """The IANA media type (image/jpeg, image/png)."""
        return f"image/{self.value}"

    @property
    def suffix(self) -> str:
        """The file name suffix for stored derived images."""
        return ".jpg" if self is ImageFormat.JPEG else ".png"

    @classmethod
    def from_media_type(cls, media_type: str) -> ImageFormat:
        """The format for image/jpeg or image/png (ValueError otherwise)."""
        for member in cls:
            if media_type.strip().lower() == member.media_type:
                return member
        raise ValueError(f"{media_type} is not a rendered media type the hub offers")


@dataclass(frozen=True, slots=True)
class Viewport:
    """A DICOMweb viewport (PS3.18 8.3.5.1.3): output size, optionally a source rectangle."""

    width: int
    height: int
    source: tuple[int, int, int, int] | None = None  # sx, sy, sw, sh (negative sw/sh flip)


def fit(image: Image.Image, width: int, height: int, *, upscale: bool = False) -> Image.Image:
    """image scaled to fit width x height, aspect ratio kept (never enlarged unless upscale)."""
    scale = min(width / image.width, height / image.height)
    if scale >= 1 and not upscale:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def apply_viewport(image: Image.Image, viewport: Viewport) -> Image.Image:
    """Crop to the viewport's source rectangle (flipping for negative extents), then fit it."""
    if viewport.source is not None:
        sx, sy, sw, sh = viewport.source
        left, right = sorted((sx, sx + sw))
        top, bottom = sorted((sy, sy + sh))
        box = (max(0, left), max(0, top), min(image.width, right), min(image.height, bottom))
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError("the viewport's source rectangle lies outside the image")
        image = image.crop(box)
        if sw < 0:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if sh < 0:
            image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return fit(image, viewport.width, viewport.height, upscale=True)


def encode(image: Image.Image, fmt: ImageFormat, quality: int = DEFAULT_QUALITY) -> bytes:
    """The image encoded as JPEG (at quality, 1-100) or PNG."""
    out = io.BytesIO()
    if fmt is ImageFormat.JPEG:
        image.save(out, format="JPEG", quality=max(1, min(100, quality)))
    else:
        image.save(out, format="PNG", compress_level=6)
    return out.getvalue()


def write_atomic(target: Path, data: bytes) -> None:
    """Write data to target through a temporary name and a rename: readers never see a part."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise

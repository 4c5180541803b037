"""Frames of stored pixel data for WADO-RS (PS3.18 10.4.1.1.4, 8.7.3.3), one frame at a time.

Where a stored file's Pixel Data starts is found by parsing its header only; native frames are
then read by offset and encapsulated ones through pydicom's fragment parser, so a frame of a
large multi-frame instance is served without reading the rest. Frames are returned as stored
(compressed ones in their image media type) or decoded to native little endian bytes. Files
this cannot address directly (deflated, big endian, 1-bit, float pixel data) are decoded in
full, still one instance at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels.utils import pack_bits, pixel_array
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)

from imaging_hub.errors import NotFound
from imaging_hub.retrieve import NotAcceptable, is_decodable

__all__ = [
    "FRAME_MEDIA_TYPES",
    "PixelLayout",
    "check_frames",
    "frame_media_type",
    "is_lossy",
    "native_frames",
    "pixel_layout",
    "stored_frames",
]

#: Media types of compressed frames by transfer syntax (PS3.18 Table 8.7.3-5).
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
#: Syntaxes whose pixel data may have lost information (PS3.5 Table A-1, lossy or "may be").
_LOSSY = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.93",
        "1.2.840.10008.1.2.4.203",
    }
)
_PIXEL_DATA = b"\xe0\x7f\x10\x00"
_UNDEFINED = 0xFFFFFFFF


def frame_media_type(syntax: str) -> str:
    """The media type of a frame stored in syntax: its image type, or octet-stream when native."""
    return FRAME_MEDIA_TYPES.get(syntax, "application/octet-stream")


def is_lossy(syntax: str) -> bool:
    """Tell whether a transfer syntax may hold lossy compressed pixel data."""
    return syntax in _LOSSY


@dataclass(frozen=True, slots=True)
class PixelLayout:
    """Where a stored file's pixel data is and how its frames are laid out.

    ``offset`` is the file position of the value (native) or of the Basic Offset Table item
    (encapsulated); ``direct`` is False when frames must be decoded from the whole dataset.
    """

    syntax: str
    frames: int
    encapsulated: bool
    offset: int
    length: int
    frame_size: int
    direct: bool
    bits_allocated: int = 8
    extended_offsets: tuple[bytes, bytes] | None = None


def _frame_size(ds: Dataset) -> int:
    """Bytes in one native frame (0 when BitsAllocated is not a whole number of bytes)."""
    bits = int(ds.get("BitsAllocated", 0) or 0)
    if bits % 8:
        return 0
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    return int(ds.Rows) * int(ds.Columns) * samples * bits // 8


def _value_header(fh: BinaryIO, syntax: str) -> tuple[bool, int] | None:
    """Read Pixel Data's element header at the file position: (explicit VR?, length)."""
    head = fh.read(8)
    if len(head) < 8 or head[:4] != _PIXEL_DATA:
        return None
    if syntax == "1.2.840.10008.1.2":  # Implicit VR Little Endian
        return False, int.from_bytes(head[4:8], "little")
    extra = fh.read(4)
    return True, int.from_bytes(extra, "little")


def pixel_layout(path: Path, syntax: str) -> PixelLayout:
    """Locate the pixel data of a stored file (NotFound when it has none)."""
    with path.open("rb") as fh:
        ds = dcmread(fh, stop_before_pixels=True)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        bits = int(ds.get("BitsAllocated", 8) or 8)
        if "Rows" not in ds:
            raise NotFound("the instance has no pixel data")
        awkward = syntax in (str(DeflatedExplicitVRLittleEndian), str(ExplicitVRBigEndian))
        header = None if awkward else _value_header(fh, syntax)
        if header is None:
            if awkward and "PixelData" in dcmread(path, force=True):
                encapsulated = UID(syntax).is_encapsulated
                return PixelLayout(syntax, frames, encapsulated, 0, 0, 0, False, bits)
            raise NotFound("the instance has no pixel data")
        _, length = header
        encapsulated = length == _UNDEFINED
        size = _frame_size(ds)
        extended = None
        if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
            extended = (bytes(ds.ExtendedOffsetTable), bytes(ds.ExtendedOffsetTableLengths))
        direct = encapsulated or (size > 0 and size * frames <= length)
        return PixelLayout(
            syntax, frames, encapsulated, fh.tell(), length, size, direct, bits, extended
        )


def check_frames(layout: PixelLayout, numbers: list[int]) -> None:
    """Every frame number (1-based) must exist in the layout (NotFound otherwise)."""
    for number in numbers:
        if not 1 <= number <= layout.frames:
            raise NotFound(f"frame {number} does not exist: the instance has {layout.frames}")


def stored_frames(path: Path, layout: PixelLayout, numbers: list[int]) -> Iterator[bytes]:
    """Each requested frame (1-based) as stored, one bytes object per frame."""
    check_frames(layout, numbers)
    if not layout.direct:
        yield from native_frames(path, layout, numbers)
        return
    with path.open("rb") as fh:
        for number in numbers:
            if layout.encapsulated:
                fh.seek(layout.offset)
                yield get_frame(
                    fh,
                    number - 1,
                    number_of_frames=layout.frames,
                    extended_offsets=layout.extended_offsets,
                )
            else:
                fh.seek(layout.offset + (number - 1) * layout.frame_size)
                yield fh.read(layout.frame_size)


def native_frames(path: Path, layout: PixelLayout, numbers: list[int]) -> Iterator[bytes]:
    """Each requested frame (1-based) decoded to native little endian bytes (PS3.18 8.7.3.3.1).

    Colour frames are given as RGB (planar configuration 0), as in a decompressed instance.
    NotAcceptable when no installed decoder handles the stored syntax.
    """
    check_frames(layout, numbers)
    if UID(layout.syntax).is_compressed and not is_decodable(layout.syntax):
        raise NotAcceptable(
            f"frames stored as {UID(layout.syntax).name} cannot be decoded here; "
            "ask for transfer-syntax=* to get them as stored"
        )
    if layout.direct and not layout.encapsulated:
        yield from stored_frames(path, layout, numbers)
        return
    for number in numbers:
        frame = pixel_array(path, index=number - 1)
        if layout.bits_allocated == 1:
            yield pack_bits(frame)
        else:
            yield frame.astype(frame.dtype.newbyteorder("<"), copy=False).tobytes()

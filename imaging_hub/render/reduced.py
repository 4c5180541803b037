"""JPEG 2000 frames decoded at reduced resolution, for images shown smaller than stored.

A JPEG 2000 code stream holds its image as wavelet resolution levels (ISO 15444-1 B.5, PS3.5
A.4.4); discarding the finest ``r`` levels gives the image at 1/2^r of its size (each value
about the mean of the 2^r x 2^r stored values it stands for) for a fraction of the decoding
work. A preview or thumbnail only needs the level whose longest side is still at least its own.

``register_plugin`` adds a pydicom decoder plugin that decodes through Pillow's OpenJPEG with
``reduce`` set: pydicom still reads only the requested frame and applies its sign and bit
corrections, so the reduced frame holds stored values like a full decode does. Any failure
(too few levels, a decoder without JPEG 2000) is left to the caller, which decodes in full.
"""

from __future__ import annotations

import logging
import struct
from io import BytesIO
from typing import Any

import numpy as np
from pydicom import uid

__all__ = [
    "DECODER_DEPENDENCIES",
    "PLUGIN_LABEL",
    "REDUCE_OPTION",
    "SYNTAXES",
    "CannotReduce",
    "codestream_levels",
    "is_available",
    "quiet_refusals",
    "reduced_length",
    "reduction_for",
]

#: Transfer syntaxes whose frames are single JPEG 2000 code streams (Part 1 or Part 15, HTJ2K).
SYNTAXES = (
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.HTJ2KLossless,
    uid.HTJ2KLosslessRPCL,
    uid.HTJ2K,
)
#: The plugin interface pydicom asks of a decoder module (``is_available`` and this table).
DECODER_DEPENDENCIES = {syntax: ("numpy", "pillow>=10.0") for syntax in SYNTAXES}
PLUGIN_LABEL = "hub-j2k-reduced"
#: The decoding option (pydicom runner option) that carries the number of levels to discard.
REDUCE_OPTION = "hub_j2k_reduce"
#: Never discard more levels than this (OpenJPEG's default code stream has 5).
MAX_REDUCTION = 5
_SOC, _SIZ, _COD, _COC, _SOT = 0xFF4F, 0xFF51, 0xFF52, 0xFF53, 0xFF90


class CannotReduce(ValueError):
    """This frame cannot be decoded at the asked reduction; it is decoded in full instead."""


class _RefusalFilter(logging.Filter):
    """Drop pydicom's error record (with traceback) for a refusal the caller expects."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], CannotReduce))


def quiet_refusals() -> None:
    """Keep pydicom from logging a traceback each time a frame cannot be reduced (once)."""
    target = logging.getLogger("pydicom.pixels.decoders.base")
    if not any(isinstance(f, _RefusalFilter) for f in target.filters):
        target.addFilter(_RefusalFilter())


def is_available(syntax: str) -> bool:
    """Whether Pillow with OpenJPEG is here to decode syntax at reduced resolution."""
    if syntax not in DECODER_DEPENDENCIES:
        return False
    try:
        from PIL import features
    except ImportError:
        return False
    return bool(features.check_codec("jpg_2000"))


def reduced_length(length: int, reduction: int) -> int:
    """A side of length samples after discarding reduction levels, as OpenJPEG makes it."""
    return -(-length // (1 << reduction))


def _pillow_length(length: int, reduction: int) -> int:
    """The side Pillow allocates for the same reduction (rounded, not always OpenJPEG's)."""
    power = 1 << reduction
    return (length + (power >> 1)) // power


def reduction_for(rows: int, columns: int, target: int) -> int:
    """The most levels to discard so that the longest side stays >= target (0: decode in full).

    Only reductions for which Pillow's and OpenJPEG's sizes agree are chosen (they round odd
    sizes differently), so the decoded frame always fills the image Pillow allocates.
    """
    if target <= 0:
        return 0
    longest = max(rows, columns)
    best = 0
    for reduction in range(1, MAX_REDUCTION + 1):
        if reduced_length(longest, reduction) < target:
            break
        if all(
            reduced_length(n, reduction) == _pillow_length(n, reduction) for n in (rows, columns)
        ):
            best = reduction
    return best


def codestream_levels(src: bytes) -> int | None:
    """The fewest wavelet decomposition levels in a code stream's main header (COD and COC).

    ``src`` is a J2K code stream (ISO 15444-1 A.4-A.6), possibly inside a JP2 file; None when
    no COD marker segment is found before the first tile.
    """
    start = src.find(struct.pack(">HH", _SOC, _SIZ), 0, 4096)
    if start < 0:
        return None
    pos, components, levels = start + 2, 0, []
    while pos + 4 <= len(src):
        marker, length = struct.unpack_from(">HH", src, pos)
        if marker == _SOT or marker >> 8 != 0xFF or length < 2:
            break
        body = pos + 4
        if marker == _SIZ and length >= 38:
            components = struct.unpack_from(">H", src, body + 34)[0]
        elif marker == _COD and length >= 8:
            levels.append(src[body + 5])
        elif marker == _COC and length >= 5:
            skip = 2 if components >= 257 else 1
            levels.append(src[body + skip + 1])
        pos += 2 + length
    return min(levels) if levels else None


def _decode_frame(src: bytes, runner: Any) -> bytes:
    """Decode one JPEG 2000 frame at 1/2^reduce of its size (pydicom decoder plugin signature).

    The runner's rows and columns are the reduced ones; the stored values are returned as
    pydicom's own Pillow plugin returns them (see ``pydicom.pixels.decoders.pillow``).
    """
    from PIL import Image

    reduction = int(runner.get_option(REDUCE_OPTION, 0))
    levels = codestream_levels(src)
    if reduction and (levels is None or reduction > levels):
        raise CannotReduce(f"the code stream has {levels} wavelet levels, {reduction} asked")
    stream_signed = bool(runner.get_option("j2k_is_signed", runner.pixel_representation))
    if reduction and stream_signed != bool(runner.pixel_representation):
        # Signed values stored as unsigned (or the reverse) wrap around: averaging mixes them.
        raise CannotReduce("the code stream's signedness differs from Pixel Representation")
    precision = int(runner.get_option("j2k_precision", runner.bits_stored))
    if not 0 < precision <= 16:
        raise CannotReduce(f"cannot reduce {precision}-bit samples")
    if precision > 8 and runner.samples_per_pixel > 1:
        raise CannotReduce(f"Pillow cannot decode {precision}-bit multi-sample data")
    runner.set_option("bits_allocated", 8 if precision <= 8 else 16)
    image = Image.open(BytesIO(src), formats=("JPEG2000",))
    image.reduce = reduction  # type: ignore[method-assign,assignment]
    image.load()
    if image.size != (runner.columns, runner.rows):
        raise ValueError(f"decoded {image.size}, expected {(runner.columns, runner.rows)}")
    buffer = bytearray(image.tobytes())
    dtype = runner.pixel_dtype
    arr = np.frombuffer(buffer, dtype=f"u{dtype.itemsize}")
    signed = runner.pixel_representation
    if runner.get_option("apply_j2k_sign_correction", False):
        signed = runner.get_option("j2k_is_signed", signed)
    if signed and runner.pixel_representation == 1:
        # Pillow offsets signed samples into the unsigned range: view as signed and shift back.
        arr = arr.view(dtype)
        arr -= np.int32(1 << (runner.bits_allocated - 1))
    if shift := runner.bits_allocated - precision:
        np.right_shift(arr, shift, out=arr)  # Pillow scales N-bit samples up to 8 or 16 bits
    if runner.photometric_interpretation in ("YBR_ICT", "YBR_RCT"):
        runner.set_option("photometric_interpretation", "RGB")  # OpenJPEG undid the MCT
    return bytes(arr.tobytes())

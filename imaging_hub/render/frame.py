"""One decoded frame of a stored file and the attributes that say how to display it.

Only the requested frame is decoded (pydicom's ``pixel_array(path, index=…)`` reads that
frame's bytes alone). A deflated file is inflated to a temporary file first, as a stream, so
memory stays at one frame there too. Enhanced multi-frame objects keep rescale and window per
frame in functional groups (PS3.3 C.7.6.16); those are copied onto the frame's attributes.
Given a target size, a JPEG 2000 frame is decoded at the smallest resolution level still at
least that large (see ``reduced``), and in full if that fails.
"""

from __future__ import annotations

import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import structlog
from numpy.typing import NDArray
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_file_meta_info
from pydicom.pixels.utils import pixel_array
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEGExtended12Bit,
)

from imaging_hub.render import reduced
from imaging_hub.render.codecs import PLUGIN_LABEL, register_decoders

__all__ = ["PIXEL_KEYWORDS", "Frame", "frame_count", "read_frame", "read_header"]

log = structlog.get_logger(__name__)

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: Functional group macros whose attributes govern display: (sequence, attributes).
_GROUPS = (
    ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept", "RescaleType")),
    ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth", "VOILUTFunction")),
)
_CHUNK = 1 << 20
#: Display attributes outside group 0028 (which pydicom always returns with the pixels).
_DISPLAY_TAGS = [
    0x20500010,  # Presentation LUT Sequence
    0x20500020,  # Presentation LUT Shape
    0x00620001,  # Segmentation Type
    0x0062000E,  # Maximum Fractional Value
    0x52009229,  # Shared Functional Groups Sequence
    0x52009230,  # Per-frame Functional Groups Sequence
    0x00080016,  # SOP Class UID
]


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame: stored values (RGB for colour) and its display attributes."""

    pixels: NDArray[np.generic]
    attributes: Dataset
    index: int
    count: int
    #: Wavelet levels discarded in decoding: the pixels are 1/2^reduction of Rows x Columns.
    reduction: int = 0


def read_header(path: Path) -> Dataset:
    """The attributes of a stored file without its pixel data."""
    return dcmread(path, stop_before_pixels=True)


def frame_count(ds: Dataset) -> int:
    """Number of Frames, 1 for single-frame objects (PS3.3 C.7.6.6)."""
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _copy_functional_groups(ds: Dataset, index: int) -> None:
    """Put the shared, then the frame's own, display attributes at the top level of ds."""
    sources = []
    for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = ds.get(keyword)
        if groups:
            item = (
                groups[0] if keyword.startswith("Shared") else groups[min(index, len(groups) - 1)]
            )
            sources.append(item)
    for group in sources:
        for sequence, keywords in _GROUPS:
            if sequence in group and group[sequence].value:
                macro = group[sequence][0]
                for keyword in keywords:
                    if keyword in macro:
                        ds[keyword] = macro[keyword]


def _dataset_offset(source: BinaryIO) -> int | None:
    """Where the dataset starts after the preamble and File Meta group; None if not knowable."""
    source.seek(128)
    if source.read(4) != b"DICM":
        return None
    head = source.read(12)
    if head[:6] != b"\x02\x00\x00\x00UL":
        return None  # no File Meta Information Group Length
    return 144 + int.from_bytes(head[8:12], "little")


@contextmanager
def _inflated(path: Path, header: Dataset) -> Iterator[Path | None]:
    """A deflated file (PS3.5 A.5) as Explicit VR Little Endian in a temporary file, streamed."""
    with path.open("rb") as source, tempfile.TemporaryDirectory(prefix="hub-inflate-") as tmp:
        offset = _dataset_offset(source)
        if offset is None:
            yield None
            return
        source.seek(offset)
        target = Path(tmp) / "inflated.dcm"
        with target.open("wb") as out:
            out.write(b"\x00" * 128 + b"DICM")
            meta = FileMetaDataset(header.file_meta)
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            write_file_meta_info(DicomFileLike(out), meta, enforce_standard=False)
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            while chunk := source.read(_CHUNK):
                out.write(inflater.decompress(chunk))
            out.write(inflater.flush())
        yield target


def _plugin(header: Dataset) -> str:
    """The decoder plugin to insist on, where pydicom's default order would only log errors."""
    syntax = header.file_meta.get("TransferSyntaxUID")
    if syntax == JPEGExtended12Bit and int(header.get("BitsStored", 8) or 8) > 8:
        return PLUGIN_LABEL
    return ""


def _decode(path: Path, index: int | None, attributes: Dataset, plugin: str) -> NDArray[np.generic]:
    register_decoders()
    return np.asarray(
        pixel_array(
            path,
            ds_out=attributes,
            specific_tags=_DISPLAY_TAGS,
            index=index,
            decoding_plugin=plugin,
        )
    )


def _decode_reduced(
    path: Path, index: int | None, header: Dataset, target: int | None
) -> tuple[NDArray[np.generic], Dataset, int] | None:
    """A JPEG 2000 frame decoded at reduced resolution for target; None to decode in full."""
    syntax = header.file_meta.get("TransferSyntaxUID")
    if not target or syntax not in reduced.SYNTAXES:
        return None
    rows, columns = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
    reduction = reduced.reduction_for(rows, columns, target)
    if reduction == 0:
        return None
    register_decoders()
    attributes = Dataset()
    options: dict[str, Any] = {
        "rows": reduced.reduced_length(rows, reduction),
        "columns": reduced.reduced_length(columns, reduction),
        reduced.REDUCE_OPTION: reduction,
    }
    try:
        pixels = pixel_array(
            path,
            ds_out=attributes,
            specific_tags=_DISPLAY_TAGS,
            index=index,
            decoding_plugin=reduced.PLUGIN_LABEL,
            **options,
        )
    except Exception as exc:  # any failure: the full decode follows
        log.warning(
            "reduced_decode_failed",
            transfer_syntax=str(syntax),
            reduction=reduction,
            error=type(exc).__name__,
        )
        return None
    return np.asarray(pixels), attributes, reduction


def read_frame(path: Path, index: int = 0, *, target: int | None = None) -> Frame:
    """Decode frame index (0-based) of a Part 10 file; ValueError when there is no such frame.

    With a target (the longest side it will be shown at), a JPEG 2000 frame may be decoded at
    a reduced resolution whose longest side is still at least target.
    """
    header = read_header(path)
    if not any(keyword in header for keyword in PIXEL_KEYWORDS) and "Rows" not in header:
        raise ValueError("the instance has no pixel data")
    count = frame_count(header)
    if not 0 <= index < count:
        raise ValueError(f"frame {index} does not exist (the instance has {count})")
    attributes = Dataset()
    frame_index = index if count > 1 else None
    reduction = 0
    if found := _decode_reduced(path, frame_index, header, target):
        pixels, attributes, reduction = found
    elif header.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        with _inflated(path, header) as inflated:
            if inflated is None:  # unusual meta: read the whole dataset instead
                register_decoders()
                whole = dcmread(path)
                pixels = np.asarray(
                    pixel_array(whole, index=frame_index, decoding_plugin=_plugin(header))
                )
                attributes = read_header(path)
            else:
                pixels = _decode(inflated, frame_index, attributes, _plugin(header))
    else:
        pixels = _decode(path, frame_index, attributes, _plugin(header))
    _copy_functional_groups(attributes, index)
    return Frame(
        pixels=pixels, attributes=attributes, index=index, count=count, reduction=reduction
    )

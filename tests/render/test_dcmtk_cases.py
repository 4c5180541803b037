"""Pipeline stages the bundled files do not exercise, each checked against dcmtk's dcmj2pnm.

Synthetic images with signed data and rescale, high bits set above Bits Stored, MONOCHROME1 with
and without Presentation LUT Shape, every VOI LUT Function, a second stored window, VOI and
Modality LUT Sequences, 16-bit palettes, planar configuration and 1-bit pixels.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.utils import pack_bits
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from imaging_hub.render import AutoWindow, RenderOptions, render_frame

pytestmark = pytest.mark.dcmtk

MAX_MAE = 2.0
ROWS, COLUMNS = 48, 64


def _base(bits_stored: int = 12, signed: bool = False) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    return ds


def _ramp(low: int, high: int) -> np.ndarray:
    """A smooth 2-D gradient from low to high."""
    y, x = np.mgrid[0:ROWS, 0:COLUMNS]
    return np.rint(low + (high - low) * (x + y) / (ROWS + COLUMNS - 2)).astype(np.int64)


def _grey(ds: Dataset, pixels: np.ndarray) -> Dataset:
    dtype = np.int16 if ds.PixelRepresentation else np.uint16
    ds.PixelData = pixels.astype(dtype).tobytes()
    return ds


def signed_ct() -> Dataset:
    ds = _grey(_base(16, signed=True), _ramp(-2000, 2500))
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.WindowCenter, ds.WindowWidth = 40, 400
    return ds


def high_bits_set() -> Dataset:
    pixels = _ramp(0, 4095) | 0xF000  # garbage above Bits Stored (overlay bits of old files)
    ds = _grey(_base(12), pixels)
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    return ds


def monochrome1() -> Dataset:
    ds = _grey(_base(12), _ramp(0, 4095))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.WindowCenter, ds.WindowWidth = 1500, 2000
    return ds


def dx_monochrome1_inverse() -> Dataset:
    ds = monochrome1()
    ds.PresentationLUTShape = "INVERSE"  # the DX IOD's way of saying MONOCHROME1 once
    return ds


def monochrome2_inverse() -> Dataset:
    ds = _grey(_base(12), _ramp(0, 4095))
    ds.WindowCenter, ds.WindowWidth = 2048, 3000
    ds.PresentationLUTShape = "INVERSE"
    return ds


def _function(name: str) -> Callable[[], Dataset]:
    def make() -> Dataset:
        ds = _grey(_base(12), _ramp(0, 4095))
        ds.WindowCenter, ds.WindowWidth = 2000, 1500
        ds.VOILUTFunction = name
        return ds

    make.__name__ = name.lower()
    return make


def second_window() -> Dataset:
    ds = _grey(_base(12), _ramp(0, 4095))
    ds.WindowCenter, ds.WindowWidth = [600, 3000], [800, 1200]
    return ds


def _lut_item(first: int, entries: np.ndarray, bits: int) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [len(entries), first, bits]
    item.add_new(0x00283006, "US", [int(v) for v in entries])  # LUT Data as US values
    return item


def voi_lut_sequence() -> Dataset:
    ds = _grey(_base(12), _ramp(0, 4095))
    curve = np.rint(65535 * (np.linspace(0, 1, 3000) ** 0.5)).astype(np.uint16)
    ds.VOILUTSequence = Sequence([_lut_item(500, curve, 16)])
    return ds


def modality_lut_sequence() -> Dataset:
    ds = _grey(_base(12), _ramp(0, 4095))
    table = np.rint(np.linspace(0, 4095, 4096) ** 1.2 / 4095**0.2).astype(np.uint16)
    ds.ModalityLUTSequence = Sequence([_lut_item(0, table, 16)])
    ds.ModalityLUTSequence[0].ModalityLUTType = "OD"
    ds.WindowCenter, ds.WindowWidth = 1800, 2400
    return ds


def palette_16bit() -> Dataset:
    ds = _base(8)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.PixelData = (_ramp(0, 255).astype(np.uint8)).tobytes()
    ramp = np.linspace(0, 65535, 256)
    for colour, curve in zip(
        ("Red", "Green", "Blue"), (ramp, ramp[::-1], ramp**2 / 65535), strict=True
    ):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        data = np.rint(curve).astype("<u2").tobytes()
        setattr(ds, f"{colour}PaletteColorLookupTableData", data)
    return ds


def rgb_planar() -> Dataset:
    ds = _base(8)
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 1
    ds.PhotometricInterpretation = "RGB"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    planes = [_ramp(0, 255), _ramp(255, 0), np.full((ROWS, COLUMNS), 90)]
    ds.PixelData = np.stack(planes).astype(np.uint8).tobytes()
    return ds


def one_bit() -> Dataset:
    ds = _base(1)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    mask = np.zeros((ROWS, COLUMNS), dtype=np.uint8)
    mask[10:30, 20:50] = 1
    ds.PixelData = pack_bits(mask)
    return ds


CASES = [
    signed_ct,
    high_bits_set,
    monochrome1,
    dx_monochrome1_inverse,
    monochrome2_inverse,
    _function("LINEAR_EXACT"),
    _function("SIGMOID"),
    voi_lut_sequence,
    modality_lut_sequence,
    palette_16bit,
    rgb_planar,
    one_bit,
]


def _dcmtk(path: Path, flags: list[str]) -> np.ndarray:
    out = path.with_suffix(".png")
    subprocess.run(["dcmj2pnm", "+on", *flags, str(path), str(out)], check=True)
    return np.asarray(Image.open(out), dtype=float)


def _flags(ds: Dataset) -> list[str]:
    if "WindowCenter" in ds:
        return ["+Wi", "1"]
    if "VOILUTSequence" in ds:
        return ["+Wl", "1"]
    return ["+Wm"]


@pytest.mark.parametrize("make", CASES, ids=lambda make: make.__name__)
def test_stage_matches_dcmtk(tmp_path: Path, make: Callable[[], Dataset]) -> None:
    ds = make()
    path = tmp_path / f"{make.__name__}.dcm"
    ds.save_as(path, enforce_file_format=True)
    reference = _dcmtk(path, _flags(ds))
    mine = np.asarray(render_frame(path, RenderOptions(auto=AutoWindow.MINMAX)), dtype=float)
    assert mine.shape == reference.shape
    mae = float(np.abs(mine - reference).mean())
    assert mae <= MAX_MAE, f"{make.__name__}: MAE {mae:.2f}"
    assert reference.std() > 10  # the case has contrast to get wrong


def test_second_window_matches_dcmtk(tmp_path: Path) -> None:
    path = tmp_path / "windows.dcm"
    second_window().save_as(path, enforce_file_format=True)
    for index in (0, 1):
        reference = _dcmtk(path, ["+Wi", str(index + 1)])
        mine = np.asarray(render_frame(path, RenderOptions(voi_index=index)), dtype=float)
        assert float(np.abs(mine - reference).mean()) <= MAX_MAE

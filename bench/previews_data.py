"""The files of ``bench/previews.py``: generated deterministically, the same in every run.

A 30-slice MR series (256 x 256, 12 of 16 bits, stored window), DX radiographs (2500 x 3000,
14 of 16 bits, every fourth MONOCHROME1, half with a stored window, collimated borders), the
radiographs as JPEG 2000 (lossless and lossy, pydicom + OpenJPEG), JPEG baseline (8 bit) and
JPEG extended (12 bit, both dcmtk's dcmcjpeg), a 3000 x 3000 radiograph and a multi-frame
instance of 256 x 256 frames, native and RLE.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

__all__ = ["MR_SERIES", "generate", "uid"]

MR_SERIES = "MR 256x256 (30-slice series)"
DX, MR = "1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.4"


def uid(*parts: object) -> str:
    """A UID derived from parts: the same files in every run."""
    return generate_uid(entropy_srcs=["bench-previews", *map(str, parts)])


def base(sop_class: str, study: str, series: str, sop: str, rows: int, cols: int) -> Dataset:
    """A minimal image dataset (one patient), 16 bits allocated, native little endian."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientID, ds.PatientName, ds.PatientBirthDate = "BENCH-7", "Bench^Previews", "19700101"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20261201", "101500", "A7", "1"
    ds.Modality = "MR" if sop_class == MR else "DX"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, 1
    ds.BitsAllocated, ds.PixelRepresentation = 16, 0
    return ds


def save(ds: Dataset, pixels: np.ndarray, bits: int, path: Path) -> Path:
    """Set the pixel data (bits stored of 16 or 8 allocated) and write a Part 10 file."""
    ds.BitsAllocated = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsStored, ds.HighBit = bits, bits - 1
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def make_mr(out: Path, slices: int = 30) -> list[Path]:
    """An MR series: a head-sized ellipse growing and shrinking over the slices, 12-bit noise."""
    rng = np.random.default_rng(7)
    study, series = uid("mr-study"), uid("mr-series")
    yy, xx = np.mgrid[-128:128, -128:128].astype(np.float32)
    paths = []
    for i in range(slices):
        r = 60 + 50 * np.sin(np.pi * (i + 1) / (slices + 1))
        tissue = 1500 * ((xx / r) ** 2 + (yy / (r * 1.2)) ** 2 < 1) + 400 * np.cos(xx / 9) ** 2
        img = np.clip(tissue + rng.normal(300, 60, tissue.shape), 0, 4095).astype(np.uint16)
        ds = base(MR, study, series, uid("mr", i), 256, 256)
        ds.PhotometricInterpretation, ds.InstanceNumber, ds.SeriesNumber = "MONOCHROME2", i + 1, 1
        ds.WindowCenter, ds.WindowWidth = 1000, 2000
        paths.append(save(ds, img, 16, out / f"mr-{i:02d}.dcm"))
    return paths


def radiograph(rng: np.random.Generator, rows: int, cols: int, shift: int) -> np.ndarray:
    """A 14-bit radiograph-like image: soft tissue, a bony column, noise, collimated borders."""
    y = np.linspace(-1, 1, rows, dtype=np.float32)[:, None]
    x = np.linspace(-1, 1, cols, dtype=np.float32)[None, :]
    body = 6000 * np.exp(-((x / 0.55) ** 2)) + 900 * (1 + np.sin(18 * y))
    spine = 3500 * np.exp(-(((x - 0.02 * np.sin(4 * y)) / 0.08) ** 2)) * (np.cos(40 * y) > -0.6)
    img = 1500 + np.roll(body + spine, shift, axis=1) + rng.normal(0, 150, (rows, cols))
    img = img.astype(np.float32)
    img[:, : cols // 20] = img[:, -cols // 20 :] = 200  # collimator: one value, far below
    return np.clip(img, 0, 16383).astype(np.uint16)


def make_dx(out: Path, count: int, rows: int = 3000, cols: int = 2500) -> list[Path]:
    """count DX radiographs, every fourth MONOCHROME1 (inverted values); half store a window."""
    rng = np.random.default_rng(7)
    study, series = uid("dx-study", rows, cols), uid("dx-series", rows, cols)
    paths = []
    for i in range(count):
        img = radiograph(rng, rows, cols, shift=(i * 37) % 200 - 100)
        ds = base(DX, study, series, uid("dx", rows, cols, i), rows, cols)
        ds.InstanceNumber, ds.SeriesNumber = i + 1, 2
        ds.PhotometricInterpretation = "MONOCHROME1" if i % 4 == 3 else "MONOCHROME2"
        if i % 4 == 3:
            img = (16383 - img).astype(np.uint16)
        if i % 2:
            ds.WindowCenter, ds.WindowWidth = 8000, 12000
        paths.append(save(ds, img, 14, out / f"dx-{rows}-{i:02d}.dcm"))
    return paths


def make_variants(out: Path, sources: list[Path], per_kind: int) -> dict[str, list[Path]]:
    """Radiographs as JPEG 2000 lossless and lossy, JPEG baseline (8 bit) and extended (12)."""
    made: dict[str, list[Path]] = {}
    out.mkdir(parents=True, exist_ok=True)
    for kind in ("j2k-lossless", "j2k-lossy", "jpeg-baseline", "jpeg-12bit"):
        for i, src in enumerate(sources[:per_kind]):
            ds = dcmread(src)
            ds.SeriesInstanceUID, ds.SeriesNumber = uid("series", kind), 3
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid(kind, i)
            path = out / f"{kind}-{i:02d}.dcm"
            pixels = ds.pixel_array
            if kind.startswith("j2k"):
                extra = {"j2k_cr": [20]} if kind == "j2k-lossy" else {}
                ds.compress(JPEG2000 if extra else JPEG2000Lossless, pixels, **extra)
                ds.save_as(path, enforce_file_format=True)
            else:
                bits, shift = (8, 6) if kind == "jpeg-baseline" else (12, 2)
                low = (pixels >> shift).astype(np.uint8 if bits == 8 else np.uint16)
                if "WindowCenter" in ds:
                    ds.WindowCenter, ds.WindowWidth = 8000 >> shift, 12000 >> shift
                raw = save(ds, low, bits, out / f"{kind}-{i:02d}-raw.dcm")
                option = "+eb" if bits == 8 else "+ee"
                subprocess.run(["dcmcjpeg", option, str(raw), str(path)], check=True)
                raw.unlink()
            made.setdefault(kind, []).append(path)
    return made


def make_multiframe(path: Path, frames: int, *, rle: bool = False) -> Path:
    """One instance of frames 256 x 256 16-bit frames (a cine), native or RLE Lossless."""
    rng = np.random.default_rng(7)
    name = "mf-rle" if rle else "mf"
    ds = base(MR, uid("mf-study"), uid(name, "series"), uid(name), 256, 256)
    ds.PhotometricInterpretation, ds.NumberOfFrames = "MONOCHROME2", frames
    pixels = rng.integers(0, 4096, (frames, 256, 256), dtype=np.uint16)
    if not rle:
        return save(ds, pixels, 12, path)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.compress(RLELossless, pixels, encoding_plugin="pylibjpeg")
    ds.save_as(path, enforce_file_format=True)
    return path


def generate(work: Path, args: argparse.Namespace) -> dict[str, list[Path]]:
    """Every input file, by group (the same for the hub and Orthanc)."""
    mr = make_mr(work / "in" / "mr")
    dx = make_dx(work / "in" / "dx", args.dx)
    groups = {
        MR_SERIES: mr,
        "DX 2500x3000 MONOCHROME2": [p for i, p in enumerate(dx) if i % 4 != 3],
        "DX 2500x3000 MONOCHROME1": [p for i, p in enumerate(dx) if i % 4 == 3],
    }
    variants = make_variants(work / "in" / "variants", dx, args.per_kind)
    groups.update({f"DX 2500x3000 {kind}": paths for kind, paths in variants.items()})
    groups["warm-up"] = make_dx(work / "warm", 1, 256, 256)
    groups["3000x3000"] = make_dx(work / "mem", 1, 3000, 3000)
    groups["multi-frame"] = [
        make_multiframe(work / "mem" / "multiframe.dcm", args.frames),
        make_multiframe(work / "mem" / "multiframe-rle.dcm", args.frames, rle=True),
    ]
    return groups

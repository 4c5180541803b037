"""Reference check: the hub's 8-bit renders against dcmtk, over every image in pydicom's test files.

Each file is rendered at full size, every frame, and compared with dcmtk's render of the same
frame: ``dcmj2pnm`` (``dcml2pnm`` for JPEG-LS) with the first stored window (``+Wi 1``), the
first VOI LUT (``+Wl 1``), or min-max (``+Wm``) where the file stores neither — matched by
rendering the hub with its min-max fallback. Mean absolute error must be at most 2 grey levels
(per channel for colour). Where dcmtk cannot decode a file (JPEG 2000), the reference is
dcmtk's render of an uncompressed twin: the same pixels in another file of the set, or else the
file transcoded to Explicit VR Little Endian by GDCM (no pydicom code involved). Damaged files
must fail with an error. The table of every file is printed (``pytest -s`` shows it).
"""

from __future__ import annotations

import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import JPEGLSTransferSyntaxes

from imaging_hub.render import AutoWindow, RenderOptions, frame_count, render_frame
from imaging_hub.render.window import stored_window

pytestmark = pytest.mark.dcmtk

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
MAX_MAE = 2.0

#: Files whose reference is rendered from a twin with the same pixels in another encoding:
#: dcmtk here misreads 32-bit big endian RT dose.
TWINS = {
    "MR_small_jp2klossless.dcm": "MR_small.dcm",
    "rtdose_expb.dcm": "rtdose.dcm",
    "rtdose_expb_1frame.dcm": "rtdose_1frame.dcm",
}
#: Damaged files: the hub must refuse them with an error (never crash a worker), and why.
DAMAGED = {
    "JPEG2000-embedded-sequence-delimiter.dcm": "the JPEG 2000 code stream is cut short",
    "MR_truncated.dcm": "Pixel Data is shorter than Rows x Columns",
    "SC_rgb_jpeg.dcm": "the encapsulated Pixel Data has no Basic Offset Table item",
    "badVR.dcm": "an attribute has an invalid value for its VR",
}


@dataclass
class Row:
    """One line of the printed table."""

    name: str
    frames: int
    mae: float | None
    note: str

    def __str__(self) -> str:
        mae = "-" if self.mae is None else f"{self.mae:.2f}"
        return f"{self.name:<44}{self.frames:>4}{mae:>8}  {self.note}"


def _image_header(path: Path) -> Dataset | None:
    """The header of a file with top-level pixel data, else None."""
    try:
        header = dcmread(path, stop_before_pixels=True)
        has_pixels = "PixelData" in dcmread(path, specific_tags=["PixelData"])
    except Exception:
        return None if path.name not in DAMAGED else Dataset()
    return header if has_pixels and "Rows" in header else None


def _window_flag(header: Dataset) -> list[str]:
    """dcmtk's option for the window the hub would choose."""
    if stored_window(header, 0) is not None:
        return ["+Wi", "1"]
    if header.get("VOILUTSequence"):
        return ["+Wl", "1"]
    return ["+Wm"]


def _dcmtk(path: Path, out: Path, frames: int) -> list[np.ndarray] | None:
    """dcmtk's 8-bit render of every frame of path, or None when dcmtk cannot render it."""
    header = dcmread(path, stop_before_pixels=True)
    syntax = header.file_meta.get("TransferSyntaxUID")
    tool = "dcml2pnm" if syntax in JPEGLSTransferSyntaxes else "dcmj2pnm"
    out.mkdir(parents=True, exist_ok=True)
    target = out / "frame.png"
    command = [tool, "+on", *_window_flag(header), "+Fa", str(path), str(target)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        return None
    names = [target] if frames == 1 else [out / f"frame.png.{i}.png" for i in range(frames)]
    if frames == 1 and not target.exists():
        names = [out / "frame.png.0.png"]
    if not all(name.exists() for name in names):
        return None
    return [np.asarray(Image.open(name)) for name in names]


def _gdcm_twin(path: Path, out: Path) -> Path | None:
    """path transcoded to Explicit VR Little Endian by GDCM, or None when GDCM cannot."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    if not reader.Read():
        return None
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.ExplicitVRLittleEndian))
    change.SetInput(reader.GetImage())
    if not change.Change():
        return None
    writer = gdcm.ImageWriter()
    twin = out / "gdcm-twin.dcm"
    writer.SetFileName(str(twin))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    return twin if writer.Write() else None


def _reference(path: Path, tmp: Path, frames: int) -> tuple[list[np.ndarray] | None, str]:
    """dcmtk's renders of path's frames (or of its twin's), and a note saying which."""
    if path.name in TWINS:
        twin = TEST_FILES / TWINS[path.name]
        return _dcmtk(twin, tmp / "twin", frames), f"twin {twin.name}"
    direct = _dcmtk(path, tmp / "direct", frames)
    if direct is not None:
        return direct, ""
    twin_path = _gdcm_twin(path, tmp)
    if twin_path is None:
        return None, "no dcmtk render, no twin"
    return _dcmtk(twin_path, tmp / "gdcm", frames), "GDCM-transcoded twin"


def _compare(path: Path, header: Dataset, tmp: Path) -> Row:
    frames = frame_count(header)
    references, note = _reference(path, tmp / path.stem, frames)
    if references is None:
        return Row(path.name, frames, None, note or "no dcmtk render")
    errors = []
    for index, reference in enumerate(references):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = render_frame(path, RenderOptions(frame=index, auto=AutoWindow.MINMAX))
        mine = np.asarray(image.convert("RGB" if reference.ndim == 3 else "L"), dtype=float)
        if mine.shape != reference.shape:
            return Row(path.name, frames, float("inf"), f"shape {mine.shape} vs {reference.shape}")
        errors.append(float(np.abs(mine - reference.astype(float)).mean()))
    return Row(path.name, frames, max(errors), note)


def test_renders_match_dcmtk(tmp_path: Path) -> None:
    rows: list[Row] = []
    for path in sorted(TEST_FILES.glob("*.dcm")):
        header = _image_header(path)
        if header is None:
            continue
        if path.name in DAMAGED:
            with pytest.raises((RuntimeError, ValueError)), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                render_frame(path)
            rows.append(Row(path.name, 1, None, "refused as damaged: " + DAMAGED[path.name]))
            continue
        rows.append(_compare(path, header, tmp_path))
    print(f"\n{'file':<44}{'frm':>4}{'MAE':>8}  reference\n" + "\n".join(map(str, rows)))
    failures = [r.name for r in rows if r.mae is not None and r.mae > MAX_MAE]
    unchecked = [r.name for r in rows if r.mae is None and r.name not in DAMAGED]
    assert failures == []
    assert unchecked == []  # every image in the set has a reference
    assert len(rows) >= 60  # the set is the whole of pydicom's bundled images

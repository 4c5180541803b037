"""Reference check: the hub's 8-bit renders against dcmtk's dcmj2pnm, over pydicom's test files.

First stored window (``+Wi 1``), or min-max (``+Wm``) where the file stores none, matched by
rendering the hub with the min-max fallback. Mean absolute error must be at most 2 grey levels
(per channel for colour). Files dcmtk cannot decode are compared against the dcmtk render of an
uncompressed twin where one exists. The table of every file is printed (pytest -s shows it).
"""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
from PIL import Image
from pydicom import dcmread

from imaging_hub.render import AutoWindow, RenderOptions, render_frame

pytestmark = pytest.mark.dcmtk

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
MAX_MAE = 2.0

#: Files whose reference is rendered from a twin with the same pixels in another encoding:
#: dcmtk here has no JPEG 2000 / JPEG-LS codec, and misreads 32-bit big endian RT dose.
TWINS = {
    "MR_small_jp2klossless.dcm": "MR_small.dcm",
    "MR_small_jpeg_ls_lossless.dcm": "MR_small.dcm",
    "rtdose_expb.dcm": "rtdose.dcm",
    "rtdose_expb_1frame.dcm": "rtdose_1frame.dcm",
}
#: Files the hub cannot render, and why (they must fail with an error, never crash a worker).
UNSUPPORTED = {
    "JPEG-lossy.dcm": "12-bit JPEG Extended needs a decoder with a non-permissive licence",
    "JPGExtended.dcm": "12-bit JPEG Extended needs a decoder with a non-permissive licence",
    "badVR.dcm": "invalid Value Representation in the header",
}


def _has_pixels(path: Path) -> bool:
    try:
        return "PixelData" in dcmread(path, specific_tags=["PixelData"])
    except Exception:
        return False


def _dcmtk(path: Path, out: Path) -> np.ndarray | None:
    """dcmj2pnm's 8-bit PNG render of path, or None when dcmtk cannot render it."""
    header = dcmread(path, stop_before_pixels=True)
    window = ["+Wi", "1"] if "WindowCenter" in header and "WindowWidth" in header else ["+Wm"]
    result = subprocess.run(
        ["dcmj2pnm", "+on", *window, str(path), str(out)], capture_output=True, text=True
    )
    if result.returncode != 0 or not out.exists():
        return None
    return np.asarray(Image.open(out))


def _compare(path: Path, tmp: Path) -> tuple[str, float | None]:
    reference_file = TEST_FILES / TWINS.get(path.name, path.name)
    reference = _dcmtk(reference_file, tmp / f"{path.stem}.png")
    if reference is None:
        return "no dcmtk render, no twin", None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = render_frame(path, RenderOptions(auto=AutoWindow.MINMAX))
    mine = np.asarray(image.convert("RGB" if reference.ndim == 3 else "L"), dtype=float)
    if mine.shape != reference.shape:
        return f"shape {mine.shape} vs {reference.shape}", float("inf")
    return "twin " + reference_file.name if path.name in TWINS else "", float(
        np.abs(mine - reference.astype(float)).mean()
    )


def test_renders_match_dcmtk(tmp_path: Path) -> None:
    files = [p for p in sorted(TEST_FILES.glob("*.dcm")) if _has_pixels(p)]
    rows, failures, compared = [], [], 0
    for path in files:
        if path.name in UNSUPPORTED:
            with pytest.raises((RuntimeError, ValueError)), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                render_frame(path)
            rows.append((path.name, "-", "unsupported: " + UNSUPPORTED[path.name]))
            continue
        note, mae = _compare(path, tmp_path)
        rows.append((path.name, "-" if mae is None else f"{mae:.2f}", note))
        if mae is not None:
            compared += 1
            if mae > MAX_MAE:
                failures.append(path.name)
    print("\n" + "\n".join(f"{name:<44}{mae:>8}  {note}" for name, mae, note in rows))
    assert failures == []
    assert compared >= 40  # the check must cover the bulk of the files

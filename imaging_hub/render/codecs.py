"""Pixel decoders beyond pydicom's defaults, added to its decoder registry, and a report of them.

pydicom's GDCM plugin refuses 12-bit JPEG Extended (process 4) although GDCM decodes it; the
only other plugin for it (pylibjpeg-libjpeg) is GPL. ``register_decoders`` adds a plugin that
hands those frames to GDCM, so every transfer syntax decodes with permissively licensed code.
It also adds ``reduced``'s plugin, which decodes JPEG 2000 at reduced resolution on request.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from pydicom import uid
from pydicom.pixels.decoders.base import get_decoder

from imaging_hub.render import reduced

__all__ = ["DECODER_DEPENDENCIES", "is_available", "register_decoders"]

#: The plugin interface pydicom asks of a decoder module (``is_available`` and this table).
DECODER_DEPENDENCIES = {uid.JPEGExtended12Bit: ("gdcm>=3.0.10",)}
PLUGIN_LABEL = "gdcm-12bit"
_lock = threading.Lock()
_registered = False


def is_available(syntax: str) -> bool:
    """Whether this module can decode syntax here (GDCM importable)."""
    from pydicom.pixels.decoders import gdcm as pydicom_gdcm

    return syntax in DECODER_DEPENDENCIES and pydicom_gdcm.is_available(syntax)


def _decode_frame(src: bytes, runner: Any) -> bytes:
    """Decode one 12-bit JPEG Extended frame with GDCM (pydicom decoder plugin signature)."""
    import gdcm  # type: ignore[import-untyped]

    fragment = gdcm.Fragment()
    fragment.SetByteStringValue(src)
    fragments = gdcm.SequenceOfFragments.New()
    fragments.AddFragment(fragment)
    element = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    element.SetValue(fragments.__ref__())
    image = gdcm.Image()
    image.SetNumberOfDimensions(2)
    image.SetDimensions((runner.columns, runner.rows, 1))
    image.SetDataElement(element)
    pi = gdcm.PhotometricInterpretation.GetPIType(runner.photometric_interpretation)
    image.SetPhotometricInterpretation(gdcm.PhotometricInterpretation(pi))
    if runner.samples_per_pixel > 1:
        image.SetPlanarConfiguration(runner.planar_configuration)
    syntax = gdcm.TransferSyntax.GetTSType(str.__str__(runner.transfer_syntax))
    image.SetTransferSyntax(gdcm.TransferSyntax(syntax))
    bits = runner.bits_stored
    image.SetPixelFormat(
        gdcm.PixelFormat(
            runner.samples_per_pixel,
            runner.bits_allocated,
            bits,
            bits - 1,
            runner.pixel_representation,
        )
    )
    buffer = image.GetBuffer()
    if not buffer:
        raise ValueError("GDCM could not decode the JPEG Extended frame")
    return bytes(buffer.encode("utf-8", "surrogateescape"))


def register_decoders() -> None:
    """Add the hub's decoder plugins to pydicom's registry (once per process)."""
    global _registered
    with _lock:
        if _registered:
            return
        try:
            import gdcm

            gdcm.Trace.WarningOff()  # GDCM prints a warning per 12-bit frame it retries
        except ImportError:
            pass
        with contextlib.suppress(ValueError):  # already there: registered by another import
            get_decoder(uid.JPEGExtended12Bit).add_plugin(PLUGIN_LABEL, (__name__, "_decode_frame"))
        reduced.quiet_refusals()
        for syntax in reduced.SYNTAXES:  # JPEG 2000 at reduced resolution, for previews
            with contextlib.suppress(ValueError, NotImplementedError):
                get_decoder(syntax).add_plugin(
                    reduced.PLUGIN_LABEL, (reduced.__name__, "_decode_frame")
                )
        _registered = True

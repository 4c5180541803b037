"""Retrieval of indexed instances (WADO-RS, WADO-URI): what to serve, and in which transfer syntax.

Only instances whose current stored file is indexed are served. Stored originals are never
modified: a transcoded copy is built in memory, one instance at a time (PS3.18 8.7.3).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from io import BytesIO
from pathlib import Path
from typing import Any

import structlog
from pydicom import Dataset, dcmread
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from imaging_hub.db.models import Instance, Series, StoredFile, StoredFileState, Study
from imaging_hub.dicom.json import bulk_uris
from imaging_hub.dicom.uids import validate_uid
from imaging_hub.errors import HubError, NotFound
from imaging_hub.render.codecs import register_decoders

log = structlog.get_logger(__name__)

__all__ = [
    "ANY_SYNTAX",
    "DEFAULT_SYNTAX",
    "Delivery",
    "InstanceRef",
    "NotAcceptable",
    "find_instances",
    "instance_metadata",
    "is_decodable",
    "plan_delivery",
    "read_bulk_element",
    "read_chunks",
    "transcode",
]

#: The transfer syntax WADO-RS and WADO-URI deliver when none is asked for (PS3.18 8.7.3.5.2).
DEFAULT_SYNTAX = str(ExplicitVRLittleEndian)
#: ``transfer-syntax=*``: the stored bytes as they are (PS3.18 8.7.3.5.2).
ANY_SYNTAX = "*"
#: Read size when streaming stored files.
CHUNK = 1024 * 1024
#: Syntaxes that are re-encoded without touching pixel data (the dataset is read and written).
_REENCODED = frozenset(
    {str(ImplicitVRLittleEndian), str(ExplicitVRLittleEndian), str(DeflatedExplicitVRLittleEndian)}
)
_PLACEHOLDER = "bulkdata/"
_AVAILABLE_SYNTAX = "00083002"
_HEX8 = re.compile(r"[0-9A-Fa-f]{8}")


class NotAcceptable(HubError):
    """No representation the client accepts can be produced (HTTP 406)."""


class Delivery(StrEnum):
    """How one stored file is delivered."""

    AS_STORED = "as-stored"
    TRANSCODE = "transcode"


@dataclass(frozen=True, slots=True)
class InstanceRef:
    """One indexed instance and the stored file that represents it."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    key: str
    #: Whether the instance has rows and columns (an image that can be rendered).
    is_image: bool = False
    #: Bytes of the stored file.
    size: int = 0


def _query(
    study_uid: str, series_uid: str | None, sop_uid: str | None
) -> Select[Instance, str, str, int, str]:
    """The indexed instances of a study, series or single instance, in a stable order."""
    query = (
        select(
            Instance,
            StoredFile.path,
            StoredFile.transfer_syntax_uid,
            StoredFile.size,
            Series.series_uid,
        )
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
        .join(StoredFile, Instance.stored_file_id == StoredFile.id)
        .where(Study.study_uid == validate_uid(study_uid, what="StudyInstanceUID"))
        .where(StoredFile.state == StoredFileState.INDEXED)
    )
    if series_uid is not None:
        query = query.where(Series.series_uid == validate_uid(series_uid, what="SeriesInstanceUID"))
    if sop_uid is not None:
        query = query.where(
            Instance.sop_instance_uid == validate_uid(sop_uid, what="SOPInstanceUID")
        )
    return query.order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)


def _not_found(series_uid: str | None, sop_uid: str | None) -> NotFound:
    """The NotFound error naming the level that was asked for."""
    level = "instance" if sop_uid else "series" if series_uid else "study"
    return NotFound(f"no such {level} in the index")


def find_instances(
    session: Session, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
) -> list[InstanceRef]:
    """The indexed instances of a study, series or instance (NotFound when there is none)."""
    # Columns only: loading Instance objects would decode every instance's header JSON.
    query = _query(study_uid, series_uid, sop_uid).with_only_columns(
        Instance.sop_instance_uid,
        Instance.sop_class_uid,
        Instance.rows,
        StoredFile.path,
        StoredFile.transfer_syntax_uid,
        StoredFile.size,
        Series.series_uid,
    )
    refs = [
        InstanceRef(
            study_uid=study_uid,
            series_uid=row.series_uid,
            sop_instance_uid=row.sop_instance_uid,
            sop_class_uid=row.sop_class_uid,
            transfer_syntax_uid=row.transfer_syntax_uid,
            key=row.path,
            is_image=row.rows is not None,
            size=row.size,
        )
        for row in session.execute(query)
    ]
    if not refs:
        raise _not_found(series_uid, sop_uid)
    return refs


def _pixel_data_element(instance: Instance, syntax: str) -> dict[str, Any]:
    """The Pixel Data element of an image's metadata: its VR and a BulkDataURI placeholder."""
    bits = (instance.dicom_json.get("00280100") or {}).get("Value") or [16]
    wide = not UID(syntax).is_encapsulated and int(bits[0] or 16) > 8
    return {"vr": "OW" if wide else "OB", "BulkDataURI": f"{_PLACEHOLDER}7FE00010"}


def instance_metadata(
    session: Session,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    *,
    url_prefix: str = "",
) -> list[dict[str, Any]]:
    """DICOM JSON (PS3.18 F.2) of each indexed instance, BulkDataURIs under its instance URL."""
    rows = session.execute(_query(study_uid, series_uid, sop_uid)).all()
    if not rows:
        raise _not_found(series_uid, sop_uid)
    result = []
    for row in rows:
        instance: Instance = row.Instance
        base = (
            f"{url_prefix}/studies/{study_uid}/series/{row.series_uid}"
            f"/instances/{instance.sop_instance_uid}"
        )
        dicom_json = dict(instance.dicom_json)
        dicom_json[_AVAILABLE_SYNTAX] = {"vr": "UI", "Value": [row.transfer_syntax_uid]}
        if instance.rows is not None:
            dicom_json["7FE00010"] = _pixel_data_element(instance, row.transfer_syntax_uid)
        result.append(bulk_uris(dict(sorted(dicom_json.items())), base))
    return result


def is_decodable(syntax: str) -> bool:
    """Tell whether pydicom can decode pixel data of a transfer syntax here."""
    register_decoders()
    try:
        return bool(get_decoder(UID(syntax)).is_available)
    except (NotImplementedError, ValueError):
        return False


def plan_delivery(stored_syntax: str, requested: str) -> Delivery:
    """How to deliver a file stored in stored_syntax as requested (PS3.18 8.7.3.5).

    requested is a transfer syntax UID or ``*``; NotAcceptable when it cannot be produced.
    """
    if requested in (ANY_SYNTAX, stored_syntax):
        return Delivery.AS_STORED
    if requested != DEFAULT_SYNTAX:
        raise NotAcceptable(
            f"transfer syntax {requested} is not offered; ask for {DEFAULT_SYNTAX}, "
            "the stored syntax, or transfer-syntax=*"
        )
    if stored_syntax in _REENCODED:
        return Delivery.TRANSCODE
    uid = UID(stored_syntax)
    if uid.is_compressed and is_decodable(stored_syntax):
        return Delivery.TRANSCODE
    raise NotAcceptable(
        f"an instance stored as {uid.name} cannot be converted to {DEFAULT_SYNTAX} here; "
        "ask for transfer-syntax=* to get it as stored"
    )


def _decompressed(path: Path, ds: Dataset) -> Dataset:
    """ds decompressed, trying each installed decoder plugin in turn (some fail on some data).

    NotAcceptable when none can; the SOP Instance UID stays (PS3.18 8.7.3).
    """
    register_decoders()  # the hub's own plugins (12-bit JPEG Extended through GDCM)
    decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
    plugins = ["", *sorted(decoder.available_plugins)]
    for plugin in plugins:
        try:
            ds.decompress(generate_instance_uid=False, decoding_plugin=plugin)
            return ds
        except Exception as exc:  # the decoders raise many kinds of errors
            log.info("decompress_failed", plugin=plugin or "default", error=type(exc).__name__)
            ds = dcmread(path)
    raise NotAcceptable(
        f"the pixel data stored as {ds.file_meta.TransferSyntaxUID.name} cannot be decoded "
        "here; ask for transfer-syntax=* to get it as stored"
    )


def transcode(path: Path) -> bytes:
    """A Part 10 copy of a stored file in Explicit VR Little Endian (the file is not changed)."""
    ds: Dataset = dcmread(path)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds = _decompressed(path, ds)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def read_chunks(path: Path, chunk: int = CHUNK) -> Iterator[bytes]:
    """The bytes of a file, chunk by chunk."""
    with path.open("rb") as fh:
        while data := fh.read(chunk):
            yield data


def _element_at(ds: Dataset, path: str) -> Any:
    """The element a bulk data path names: ``TAG`` or ``SEQTAG/ITEM/TAG/…`` (None if absent)."""
    steps = path.strip("/").split("/")
    if len(steps) % 2 != 1 or not all(_HEX8.fullmatch(t) for t in steps[::2]):
        raise NotFound("bulk data paths are TAG or SEQUENCE/ITEM/TAG, with 8-hex-digit tags")
    current: Any = ds
    for i, step in enumerate(steps):
        if i % 2 == 0:
            current = current.get(int(step, 16)) if isinstance(current, Dataset) else None
            if current is None:
                return None
            if i + 1 < len(steps):
                current = current.value
        else:
            if not step.isdigit() or int(step) >= len(current):
                return None
            current = current[int(step)]
    return current


def read_bulk_element(path: Path, element_path: str) -> bytes:
    """The value bytes of a binary element of a stored file, at any depth (NotFound otherwise).

    ``element_path`` is as in a BulkDataURI (see ``imaging_hub.dicom.json.bulk_uris``).
    """
    ds = dcmread(path, stop_before_pixels=True)
    element = _element_at(ds, element_path)
    if element is None or not isinstance(element.value, bytes | bytearray):
        raise NotFound(f"the instance has no bulk data element {element_path.upper()}")
    return bytes(element.value)

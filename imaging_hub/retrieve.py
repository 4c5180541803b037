"""Retrieval of indexed instances (WADO-RS, WADO-URI): what to serve, and in which transfer syntax.

Only instances whose current stored file is indexed are served. Stored originals are never
modified: a transcoded copy is built in memory, one instance at a time (PS3.18 8.7.3).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread
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
from imaging_hub.dicom.uids import validate_uid
from imaging_hub.errors import HubError, NotFound

__all__ = [
    "ANY_SYNTAX",
    "DEFAULT_SYNTAX",
    "Delivery",
    "InstanceRef",
    "NotAcceptable",
    "find_instances",
    "instance_metadata",
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


def _query(
    study_uid: str, series_uid: str | None, sop_uid: str | None
) -> Select[Instance, str, str, str]:
    """The indexed instances of a study, series or single instance, in a stable order."""
    query = (
        select(Instance, StoredFile.path, StoredFile.transfer_syntax_uid, Series.series_uid)
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
    refs = [
        InstanceRef(
            study_uid=study_uid,
            series_uid=row.series_uid,
            sop_instance_uid=row.Instance.sop_instance_uid,
            sop_class_uid=row.Instance.sop_class_uid,
            transfer_syntax_uid=row.transfer_syntax_uid,
            key=row.path,
        )
        for row in session.execute(_query(study_uid, series_uid, sop_uid))
    ]
    if not refs:
        raise _not_found(series_uid, sop_uid)
    return refs


def _rewrite_bulk(dicom_json: dict[str, Any], base_url: str) -> dict[str, Any]:
    """Make top-level bulk data placeholders absolute; drop those inside sequences."""
    out: dict[str, Any] = {}
    for tag, element in dicom_json.items():
        uri = element.get("BulkDataURI") if isinstance(element, dict) else None
        if isinstance(uri, str) and uri.startswith(_PLACEHOLDER):
            element = {**element, "BulkDataURI": f"{base_url}/{uri}"}
        elif isinstance(element, dict) and element.get("vr") == "SQ":
            items = [_drop_nested_bulk(item) for item in element.get("Value", [])]
            element = {**element, "Value": items} if items else element
        out[tag] = element
    return out


def _drop_nested_bulk(item: Any) -> Any:
    """A sequence item without bulk data references (only top-level bulk data is served)."""
    if not isinstance(item, dict):
        return item
    out: dict[str, Any] = {}
    for tag, element in item.items():
        if isinstance(element, dict) and "BulkDataURI" in element:
            element = {k: v for k, v in element.items() if k != "BulkDataURI"}
        elif isinstance(element, dict) and element.get("vr") == "SQ":
            element = {**element, "Value": [_drop_nested_bulk(i) for i in element.get("Value", [])]}
        out[tag] = element
    return out


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
        result.append(_rewrite_bulk(instance.dicom_json, base))
    return result


def _decodable(syntax: str) -> bool:
    """Tell whether pydicom can decode pixel data of a transfer syntax here."""
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
    if uid.is_compressed and _decodable(stored_syntax):
        return Delivery.TRANSCODE
    raise NotAcceptable(
        f"an instance stored as {uid.name} cannot be converted to {DEFAULT_SYNTAX} here; "
        "ask for transfer-syntax=* to get it as stored"
    )


def transcode(path: Path) -> bytes:
    """A Part 10 copy of a stored file in Explicit VR Little Endian (the file is not changed)."""
    ds = dcmread(path)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress(generate_instance_uid=False)  # PS3.18 8.7.3: the SOP Instance UID stays
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def read_chunks(path: Path, chunk: int = CHUNK) -> Iterator[bytes]:
    """The bytes of a file, chunk by chunk."""
    with path.open("rb") as fh:
        while data := fh.read(chunk):
            yield data


def read_bulk_element(path: Path, tag: str) -> bytes:
    """The value bytes of a top-level binary element of a stored file (NotFound otherwise)."""
    if len(tag) != 8 or any(c not in "0123456789ABCDEFabcdef" for c in tag):
        raise NotFound("bulk data tags are 8 hexadecimal digits")
    ds = dcmread(path)
    element = ds.get(int(tag, 16))
    if element is None or not isinstance(element.value, bytes | bytearray):
        raise NotFound(f"the instance has no bulk data element {tag.upper()}")
    return bytes(element.value)

"""C-MOVE and C-GET over the index: the stored files a retrieve identifier names, how to send each.

A retrieve identifier (PS3.4 C.4.2.2.1, C.4.3.2.1) holds the Query/Retrieve Level and the unique
keys of that level and the levels above it: PatientID (Patient Root), StudyInstanceUID,
SeriesInstanceUID, SOPInstanceUID (a UID list is allowed at the retrieve level). It is read and
matched by the same code as C-FIND (``imaging_hub.qr``), against the index only; no stored file
is opened to find matches. Other keys are ignored (they never restrict a retrieve).

Each match is sent as stored, byte for byte, when the peer accepts its stored transfer syntax.
A file stored in a native syntax (or a compressed one that can be decoded here) may instead go
out as Explicit or Implicit VR Little Endian, built in memory; the stored file never changes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging_hub.db.models import (
    Instance,
    Series,
    SourceIdentity,
    StoredFile,
    StoredFileState,
    Study,
)
from imaging_hub.errors import HubError
from imaging_hub.qr import (
    UNIQUE_KEYS,
    FindQuery,
    IdentifierMismatch,
    Level,
    Model,
    parse_identifier,
)
from imaging_hub.retrieve import Delivery, is_decodable, transcode

__all__ = [
    "FALLBACK_SYNTAXES",
    "MAX_CONTEXTS",
    "MAX_SUBOPERATIONS",
    "RetrieveItem",
    "RetrieveSet",
    "TooManyMatches",
    "can_fall_back",
    "choose_delivery",
    "fallback_dataset",
    "parse_retrieve_identifier",
    "proposed_contexts",
    "resolve",
]

#: Sub-operation counts are US (PS3.7 C.4.2.1.6): a retrieve names at most this many instances.
MAX_SUBOPERATIONS = 65535
#: The most presentation contexts one association may propose (PS3.8 9.3.2.2: odd IDs 1-255).
MAX_CONTEXTS = 128
#: What a native or decodable instance may be sent as when its stored syntax is not accepted.
FALLBACK_SYNTAXES = (str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian))


class TooManyMatches(HubError):
    """A retrieve names more instances than one operation can count (0xA701)."""


@dataclass(frozen=True, slots=True)
class RetrieveItem:
    """One instance to send: its UIDs, and the stored file (key, transfer syntax) that holds it."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    key: str
    study_uid: str
    size: int


@dataclass(frozen=True, slots=True)
class RetrieveSet:
    """What a retrieve identifier names: its level and the instances, in a stable order."""

    level: Level
    items: tuple[RetrieveItem, ...]

    @property
    def study_uids(self) -> list[str]:
        """The studies of the instances, each once, in order."""
        return list(dict.fromkeys(item.study_uid for item in self.items))


def parse_retrieve_identifier(identifier: Dataset, model: Model) -> FindQuery:
    """Read a C-MOVE/C-GET identifier (PS3.4 C.4.2.2.1); IdentifierMismatch or ValueError if bad.

    The unique key of the retrieve level is required, without wild cards; the returned query
    matches on the unique keys only.
    """
    unique = Dataset()  # other keys are ignored, never matched (nor refused when malformed)
    for keyword in ("QueryRetrieveLevel", *UNIQUE_KEYS.values()):
        if keyword in identifier:
            unique[keyword] = identifier[keyword]
            if keyword != "QueryRetrieveLevel" and _wild(unique[keyword].value):
                raise IdentifierMismatch(f"{keyword}: a retrieve takes no wild cards")
    query = parse_identifier(unique, model)  # checks the level and the keys above it
    key = UNIQUE_KEYS[query.level]
    wanted = query.values.get(key, "").strip(" ")
    if not wanted or "*" in wanted or "?" in wanted:
        raise IdentifierMismatch(
            f"{key} is required, without wild cards, for a {query.level.value} level retrieve"
        )
    return query


def _wild(value: object) -> bool:
    """Tell whether a unique key's value holds a wild card (not allowed in a retrieve)."""
    values = list(value) if isinstance(value, Iterable) and not isinstance(value, str) else [value]
    return any(c in str(v) for v in values for c in "*?")


def resolve(session: Session, query: FindQuery, *, limit: int = MAX_SUBOPERATIONS) -> RetrieveSet:
    """The indexed instances a retrieve query names (TooManyMatches past limit)."""
    statement = (
        select(
            Instance.sop_instance_uid,
            Instance.sop_class_uid,
            StoredFile.transfer_syntax_uid,
            StoredFile.path,
            StoredFile.size,
            Study.study_uid,
        )
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
        .join(SourceIdentity, Study.source_identity_id == SourceIdentity.id)
        .join(StoredFile, Instance.stored_file_id == StoredFile.id)
        .where(StoredFile.state == StoredFileState.INDEXED, *query.conditions())
        .order_by(Study.id, Series.series_number, Series.id, Instance.instance_number, Instance.id)
        .limit(limit + 1)
    )
    items = tuple(
        RetrieveItem(
            sop_instance_uid=row.sop_instance_uid,
            sop_class_uid=row.sop_class_uid,
            transfer_syntax_uid=row.transfer_syntax_uid,
            key=row.path,
            study_uid=row.study_uid,
            size=row.size,
        )
        for row in session.execute(statement)
    )
    if len(items) > limit:
        raise TooManyMatches(f"the retrieve names more than {limit} instances")
    return RetrieveSet(query.level, items)


def can_fall_back(stored_syntax: str) -> bool:
    """Tell whether an instance stored in stored_syntax may be sent as Explicit/Implicit VR LE."""
    uid = UID(stored_syntax)
    if not uid.is_encapsulated:
        return True  # native (or deflated): the dataset is re-encoded, pixel data untouched
    return is_decodable(stored_syntax)


def proposed_contexts(items: Iterable[RetrieveItem]) -> list[tuple[str, list[str]]]:
    """The presentation contexts to propose for items: (SOP class, [syntaxes]), at most 128.

    Each stored syntax gets a context of its own, so that the peer cannot pick another syntax
    when it accepts the stored one; a fallback context (Explicit and Implicit VR Little
    Endian) follows for each SOP class with an instance that may fall back.
    """
    stored: dict[tuple[str, str], None] = {}
    fallback: dict[str, None] = {}
    for item in items:
        stored[(item.sop_class_uid, item.transfer_syntax_uid)] = None
        if can_fall_back(item.transfer_syntax_uid):
            fallback[item.sop_class_uid] = None
    contexts = [(sop_class, [syntax]) for sop_class, syntax in stored]
    contexts += [(sop_class, list(FALLBACK_SYNTAXES)) for sop_class in fallback]
    return contexts[:MAX_CONTEXTS]


def choose_delivery(stored_syntax: str, accepted: Collection[str]) -> Delivery | None:
    """How to send an instance when the peer accepted these syntaxes for its SOP class.

    As stored when the stored syntax is accepted; transcoded to Little Endian when that is
    accepted and allowed (see ``can_fall_back``); None when the instance cannot be sent.
    """
    if stored_syntax in accepted:
        return Delivery.AS_STORED
    if any(s in accepted for s in FALLBACK_SYNTAXES) and can_fall_back(stored_syntax):
        return Delivery.TRANSCODE
    return None


def fallback_dataset(path: Path) -> Dataset:
    """A stored file's dataset in Explicit VR Little Endian, decoded in memory (NotAcceptable)."""
    return dcmread(BytesIO(transcode(path)))

"""Study search over the index, and the DICOM JSON (PS3.18 F.2) of each study found.

Matching follows PS3.4 C.2.2.2 (see ``imaging_hub.dicom.matching``); the filters hold the raw
query values as a client sent them, so QIDO-RS, C-FIND and the REST API share one search.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, fields
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from imaging_hub.db.models import SourceIdentity, Study
from imaging_hub.dicom.matching import (
    date_condition,
    multi_value_condition,
    pn_condition,
    string_condition,
    text_condition,
    uid_list_condition,
)

__all__ = [
    "ALL_FIELDS",
    "STUDY_DEFAULT_TAGS",
    "StudyFilters",
    "StudyRow",
    "search_studies",
    "study_dicom_json",
    "tag_of",
]

#: ``includefield`` value asking for every attribute the index holds.
ALL_FIELDS = "all"


def tag_of(keyword: str) -> str:
    """The 8-hex-digit tag (as used in DICOM JSON) of a DICOM keyword."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return f"{tag:08X}"


#: Study-level attributes every result carries (PS3.18 Table 10.6.3-3), RetrieveURL aside.
STUDY_DEFAULT_TAGS = frozenset(
    tag_of(k)
    for k in (
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "InstanceAvailability",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "TimezoneOffsetFromUTC",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    )
)

#: Tags whose value the index computes instead of copying from a file.
_MODALITIES = tag_of("ModalitiesInStudy")
_NUM_SERIES = tag_of("NumberOfStudyRelatedSeries")
_NUM_INSTANCES = tag_of("NumberOfStudyRelatedInstances")
_AVAILABILITY = tag_of("InstanceAvailability")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
#: Never returned: DICOM JSON is always UTF-8 (PS3.18 F.2.1), the received charset is moot.
_CHARSET = tag_of("SpecificCharacterSet")


@dataclass(frozen=True, slots=True)
class StudyFilters:
    """Study-level matching keys, each the raw value as sent (PS3.4 C.2.2.2 syntax), None = any.

    ``study_uids`` is a comma- or backslash-separated UID list, ``study_date`` and
    ``patient_birth_date`` are DA values or ranges, ``modalities_in_study`` is one or more codes.
    """

    patient_id: str | None = None
    issuer_of_patient_id: str | None = None
    patient_name: str | None = None
    patient_birth_date: str | None = None
    study_uids: str | None = None
    study_date: str | None = None
    accession_number: str | None = None
    study_id: str | None = None
    study_description: str | None = None
    referring_physician_name: str | None = None
    modalities_in_study: str | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        """The SQL conditions these filters stand for; raises ValueError or InvalidUid."""
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and _CONTROL_RE.search(value):
                raise ValueError(f"{f.name}: control characters are not allowed in a query")
        built = [
            string_condition(SourceIdentity.patient_id, self.patient_id),
            string_condition(SourceIdentity.issuer, self.issuer_of_patient_id),
            pn_condition(SourceIdentity.name_norm, self.patient_name),
            date_condition(
                SourceIdentity.birth_date, self.patient_birth_date, what="PatientBirthDate"
            ),
            uid_list_condition(Study.study_uid, self.study_uids, what="StudyInstanceUID"),
            date_condition(Study.study_date, self.study_date, what="StudyDate"),
            string_condition(Study.accession_number, self.accession_number),
            string_condition(Study.study_id, self.study_id),
            text_condition(Study.study_description_norm, self.study_description),
            pn_condition(Study.referring_physician_norm, self.referring_physician_name),
            multi_value_condition(
                Study.modalities_in_study, self.modalities_in_study, what="ModalitiesInStudy"
            ),
        ]
        return [c for c in built if c is not None]

    def is_empty(self) -> bool:
        """Tell whether no filter is set."""
        return all(getattr(self, f.name) is None for f in fields(self))


@dataclass(frozen=True, slots=True)
class StudyRow:
    """One study found, with its source identity's demographics and its stored DICOM JSON."""

    study_uid: str
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str | None
    birth_date: dt.date | None
    sex: str | None
    study_date: dt.date | None
    study_time: str | None
    accession_number: str | None
    study_id: str | None
    description: str | None
    referring_physician_name: str | None
    modalities: tuple[str, ...]
    num_series: int
    num_instances: int
    patient_json: dict[str, Any]
    study_json: dict[str, Any]


def _row(study: Study, identity: SourceIdentity) -> StudyRow:
    """Copy what a result needs out of the ORM objects."""
    return StudyRow(
        study_uid=study.study_uid,
        patient_id=identity.patient_id,
        issuer_of_patient_id=identity.issuer,
        patient_name=identity.name,
        birth_date=identity.birth_date,
        sex=identity.sex,
        study_date=study.study_date,
        study_time=study.study_time,
        accession_number=study.accession_number,
        study_id=study.study_id,
        description=study.study_description,
        referring_physician_name=study.referring_physician_name,
        modalities=tuple(m for m in study.modalities_in_study.split("\\") if m),
        num_series=study.num_series,
        num_instances=study.num_instances,
        patient_json=dict(identity.dicom_json or {}),
        study_json=dict(study.dicom_json or {}),
    )


def search_studies(
    session: Session, *, filters: StudyFilters, limit: int = 100, offset: int = 0
) -> list[StudyRow]:
    """Studies matching filters, newest StudyDate first (then StudyTime, then index order).

    Ask for ``limit + 1`` rows to learn whether more results exist. Raises ValueError or
    InvalidUid when a filter value is malformed.
    """
    if limit < 0 or offset < 0:
        raise ValueError("limit and offset must not be negative")
    query = (
        select(Study, SourceIdentity)
        .join(SourceIdentity, Study.source_identity_id == SourceIdentity.id)
        .where(*filters.conditions())
        .order_by(
            Study.study_date.desc().nulls_last(),
            Study.study_time.desc().nulls_last(),
            Study.id,
        )
        .limit(limit)
        .offset(offset)
    )
    return [_row(study, identity) for study, identity in session.execute(query)]


def _empty(tag: str) -> dict[str, Any]:
    """A DICOM JSON attribute with no value (a zero-length type 2 attribute)."""
    try:
        return {"vr": dictionary_VR(int(tag, 16))}
    except KeyError:
        return {"vr": "UN"}


def study_dicom_json(row: StudyRow, include: set[str] | None = None) -> dict[str, Any]:
    """The DICOM JSON (PS3.18 F.2) of a study result: the default attributes plus ``include``.

    ``include`` holds extra tags (``"0020000D"``) or ``ALL_FIELDS`` for every stored attribute.
    """
    wanted = set(STUDY_DEFAULT_TAGS) | (include or set())
    everything = ALL_FIELDS in wanted
    stored = {**row.study_json, **row.patient_json}
    computed: dict[str, Any] = {
        _MODALITIES: {"vr": "CS", "Value": list(row.modalities)} if row.modalities else None,
        _NUM_SERIES: {"vr": "IS", "Value": [row.num_series]},
        _NUM_INSTANCES: {"vr": "IS", "Value": [row.num_instances]},
        _AVAILABILITY: {"vr": "CS", "Value": ["ONLINE"]},
    }
    keys = (wanted | set(stored)) if everything else wanted
    result: dict[str, Any] = {}
    for tag in sorted(keys - {ALL_FIELDS, _CHARSET}):
        value = computed[tag] if tag in computed else stored.get(tag)
        result[tag] = value if value is not None else _empty(tag)
    return result

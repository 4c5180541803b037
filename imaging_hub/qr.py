"""C-FIND over the index: the Patient Root and Study Root query models (PS3.4 C.6.1, C.6.2).

A request identifier becomes a ``FindQuery``; ``find`` runs it against the index (never the
stored files) and yields one response identifier per match, streamed from the database.

Matching (PS3.4 C.2.2.2): single value, universal, wild card (``*``, ``?``), DA and TM ranges,
UID lists, and case-insensitive PN and description matching through the ``*_norm`` columns.
Supported keys of the query level and of the levels above it restrict the result; any other key
is optional matching (PS3.4 C.2.2.1): it never restricts, and it is returned with the value the
index holds for it (from the stored header JSON) or with zero length. Unique keys of the levels
above the query level must be given, without wild cards (PS3.4 C.4.1.2.1, baseline hierarchical
search; a UID list is tolerated). A single TM value matches the normalised time exactly; a TM
range's open end covers the whole partial value (``-12`` ends at 12:59:59.999999). A patient is a
source identity (PatientID + issuer + demographics as received), as in QIDO-RS.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session

from imaging_hub.db.models import Instance, Series, SourceIdentity, Study
from imaging_hub.dicom.keys import normalize_time
from imaging_hub.dicom.matching import (
    date_condition,
    is_universal,
    multi_value_condition,
    pn_condition,
    string_condition,
    text_condition,
    uid_list_condition,
)

__all__ = [
    "MAX_MATCHES",
    "RESPONSE_CHARSET",
    "FindQuery",
    "IdentifierMismatch",
    "Level",
    "Model",
    "find",
    "int_condition",
    "parse_identifier",
    "time_condition",
]

#: The most matches one C-FIND returns.
MAX_MATCHES = 5000
#: Every response is UTF-8 (PS3.5 6.1.2.5.3, ISO_IR 192).
RESPONSE_CHARSET = "ISO_IR 192"

Condition = ColumnElement[bool]
_TM_RE = re.compile(r"(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?")
Matcher = Callable[[str], Condition | None]


class IdentifierMismatch(ValueError):
    """The identifier does not fit the information model (C-FIND status 0xA900)."""


class Model(StrEnum):
    """Query/Retrieve information model."""

    PATIENT_ROOT = "patient"
    STUDY_ROOT = "study"


class Level(StrEnum):
    """Query/Retrieve level (0008,0052)."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


_ORDER = [Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE]
#: The unique key of each level (PS3.4 C.6.1.1, C.6.2.1).
UNIQUE_KEYS = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}


@dataclass(frozen=True, slots=True)
class Match:
    """One row found: the ORM objects of its level and above, and patient-level counts."""

    identity: SourceIdentity
    study: Study | None = None
    series: Series | None = None
    instance: Instance | None = None
    counts: tuple[int, int, int] = (0, 0, 0)


def _date(value: Any) -> str | None:
    return value.strftime("%Y%m%d") if value is not None else None


def int_condition(column: Any, value: str | None) -> Condition | None:
    """Single value matching of an IS attribute held in an integer column (PS3.4 C.2.2.2.1)."""
    if is_universal(value):
        return None
    assert value is not None
    text = value.strip(" ")
    try:
        number = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None
    condition: Condition = column == number
    return condition


def _end_of(text: str) -> str:
    """The last instant a partial TM value stands for, normalised (``12`` -> ``125959.999999``)."""
    found = _TM_RE.fullmatch(text.replace(":", ""))
    assert found is not None  # checked by normalize_time first
    hh, mm, ss, frac = found.groups()
    return f"{hh}{mm or '59'}{ss or '59'}{frac or '.999999'}"


def time_condition(column: Any, value: str | None, *, what: str = "time") -> Condition | None:
    """Match a TM value or range (PS3.4 C.2.2.2.5) against a column normalised by normalize_time."""
    if is_universal(value):
        return None
    assert value is not None
    text = value.strip(" ")
    parts = text.split("-")
    if len(parts) > 2 or text == "-":
        raise ValueError(f"{what}: {text!r} is not a time or a time range")
    normal = [normalize_time(p) if p else None for p in parts]
    for raw, done in zip(parts, normal, strict=True):
        if raw and done is None:
            raise ValueError(f"{what}: {raw!r} is not a time in the form HHMMSS")
    if len(parts) == 1:
        exact: Condition = column == normal[0]
        return exact
    start, end = normal
    conditions: list[Condition] = []
    if start is not None:
        conditions.append(column >= start)
    if end is not None:
        conditions.append(column <= _end_of(parts[1]))
    return and_(*conditions)


@dataclass(frozen=True, slots=True)
class Key:
    """A supported key: its level, how it matches, and where its value comes from."""

    level: Level
    match: Matcher | None
    value: Callable[[Match], Any]


def _s(m: Match) -> Study:
    assert m.study is not None
    return m.study


def _on(column: Any, kind: Callable[..., Condition | None], **kw: str) -> Matcher:
    """A matcher applying one of the matching functions to column."""
    return lambda value: kind(column, value, **kw)


def _get(holder: str, name: str) -> Callable[[Match], Any]:
    """A value getter reading attribute name of the match's holder (identity, study, ...)."""
    return lambda m: getattr(getattr(m, holder), name)


def _modalities(m: Match) -> list[str] | None:
    """ModalitiesInStudy as a list, from the ``\\CT\\MR\\`` column."""
    return [x for x in _s(m).modalities_in_study.split("\\") if x] or None


P, ST, SE, IM = Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE
SI, STU, SER, INS = SourceIdentity, Study, Series, Instance
KEYS: dict[str, Key] = {
    "PatientName": Key(P, _on(SI.name_norm, pn_condition), _get("identity", "name")),
    "PatientID": Key(P, _on(SI.patient_id, string_condition), _get("identity", "patient_id")),
    "IssuerOfPatientID": Key(
        P, _on(SI.issuer, string_condition), lambda m: m.identity.issuer or None
    ),
    "PatientBirthDate": Key(
        P,
        _on(SI.birth_date, date_condition, what="PatientBirthDate"),
        lambda m: _date(m.identity.birth_date),
    ),
    "PatientSex": Key(P, _on(SI.sex, string_condition), _get("identity", "sex")),
    "NumberOfPatientRelatedStudies": Key(P, None, lambda m: m.counts[0]),
    "NumberOfPatientRelatedSeries": Key(P, None, lambda m: m.counts[1]),
    "NumberOfPatientRelatedInstances": Key(P, None, lambda m: m.counts[2]),
    "StudyInstanceUID": Key(
        ST,
        _on(STU.study_uid, uid_list_condition, what="StudyInstanceUID"),
        _get("study", "study_uid"),
    ),
    "StudyDate": Key(
        ST,
        _on(STU.study_date, date_condition, what="StudyDate"),
        lambda m: _date(_s(m).study_date),
    ),
    "StudyTime": Key(
        ST, _on(STU.study_time, time_condition, what="StudyTime"), _get("study", "study_time")
    ),
    "AccessionNumber": Key(
        ST, _on(STU.accession_number, string_condition), _get("study", "accession_number")
    ),
    "StudyID": Key(ST, _on(STU.study_id, string_condition), _get("study", "study_id")),
    "StudyDescription": Key(
        ST, _on(STU.study_description_norm, text_condition), _get("study", "study_description")
    ),
    "ReferringPhysicianName": Key(
        ST,
        _on(STU.referring_physician_norm, pn_condition),
        _get("study", "referring_physician_name"),
    ),
    "ModalitiesInStudy": Key(
        ST,
        _on(STU.modalities_in_study, multi_value_condition, what="ModalitiesInStudy"),
        _modalities,
    ),
    "NumberOfStudyRelatedSeries": Key(ST, None, _get("study", "num_series")),
    "NumberOfStudyRelatedInstances": Key(ST, None, _get("study", "num_instances")),
    "SeriesInstanceUID": Key(
        SE,
        _on(SER.series_uid, uid_list_condition, what="SeriesInstanceUID"),
        _get("series", "series_uid"),
    ),
    "Modality": Key(SE, _on(SER.modality, string_condition), _get("series", "modality")),
    "SeriesNumber": Key(SE, _on(SER.series_number, int_condition), _get("series", "series_number")),
    "SeriesDescription": Key(
        SE, _on(SER.series_description, string_condition), _get("series", "series_description")
    ),
    "BodyPartExamined": Key(
        SE, _on(SER.body_part_examined, string_condition), _get("series", "body_part_examined")
    ),
    "NumberOfSeriesRelatedInstances": Key(SE, None, _get("series", "num_instances")),
    "SOPInstanceUID": Key(
        IM,
        _on(INS.sop_instance_uid, uid_list_condition, what="SOPInstanceUID"),
        _get("instance", "sop_instance_uid"),
    ),
    "SOPClassUID": Key(
        IM,
        _on(INS.sop_class_uid, uid_list_condition, what="SOPClassUID"),
        _get("instance", "sop_class_uid"),
    ),
    "InstanceNumber": Key(
        IM, _on(INS.instance_number, int_condition), _get("instance", "instance_number")
    ),
}

#: Never matched nor copied from the request: handled by the response itself.
_CONTROL_KEYWORDS = {"QueryRetrieveLevel", "SpecificCharacterSet"}


@dataclass(frozen=True, slots=True)
class FindQuery:
    """A parsed C-FIND identifier: level, matching values, and the return keys in order."""

    model: Model
    level: Level
    values: dict[str, str]
    returned: tuple[DataElement, ...]
    retrieve_aet: str | None = None

    def conditions(self) -> list[Condition]:
        """SQL conditions of the supported keys at or above the level; raises ValueError."""
        top = _ORDER.index(self.level)
        built = []
        for keyword, raw in self.values.items():
            key = KEYS.get(keyword)
            if key is None or key.match is None or _ORDER.index(key.level) > top:
                continue
            if "\x00" in raw or any(ord(c) < 32 and c != "\x1b" for c in raw):
                raise ValueError(f"{keyword}: control characters are not allowed in a query")
            condition = key.match(raw)
            if condition is not None:
                built.append(condition)
        return built


def _raw(element: DataElement) -> str:
    """The matching value of an identifier element as text (multiple values joined by ``\\``)."""
    value = element.value
    if value is None:
        return ""
    if isinstance(value, list | tuple | MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value)


def _level(identifier: Dataset, model: Model) -> Level:
    """The query level of an identifier, checked against the model (PS3.4 C.6.1.1, C.6.2.1)."""
    text = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    try:
        level = Level(text)
    except ValueError:
        raise IdentifierMismatch(f"QueryRetrieveLevel {text!r} is not supported") from None
    if model == Model.STUDY_ROOT and level == Level.PATIENT:
        raise IdentifierMismatch("the Study Root model has no PATIENT level")
    return level


def _check_unique_keys(model: Model, level: Level, values: dict[str, str]) -> None:
    """Require a non-wildcard unique key for each level above the query level (PS3.4 C.4.1.2.1)."""
    first = 0 if model == Model.PATIENT_ROOT else 1
    for upper in _ORDER[first : _ORDER.index(level)]:
        keyword = UNIQUE_KEYS[upper]
        value = values.get(keyword, "").strip(" ")
        if not value or "*" in value or "?" in value:
            raise IdentifierMismatch(f"{keyword} is required for a {level.value} level query")


def parse_identifier(
    identifier: Dataset, model: Model, *, retrieve_aet: str | None = None
) -> FindQuery:
    """Read a C-FIND request identifier; raises IdentifierMismatch or ValueError when bad."""
    level = _level(identifier, model)
    values: dict[str, str] = {}
    returned: list[DataElement] = []
    for element in identifier:
        if element.tag.element == 0 or element.tag.is_private:
            continue
        keyword = element.keyword or keyword_for_tag(element.tag)
        if keyword in _CONTROL_KEYWORDS:
            continue
        returned.append(element)
        if keyword and element.VR != "SQ":
            values[keyword] = _raw(element)
    _check_unique_keys(model, level, values)
    query = FindQuery(model, level, values, tuple(returned), retrieve_aet)
    query.conditions()  # refuse bad values before anything is sent
    return query


def _statement(query: FindQuery) -> Any:
    """The SELECT of one query level, joined up to the patient, in a stable order."""
    identity_of_study = Study.source_identity_id == SourceIdentity.id
    if query.level == Level.PATIENT:
        counts = [
            func.count(Study.id),
            func.coalesce(func.sum(Study.num_series), 0),
            func.coalesce(func.sum(Study.num_instances), 0),
        ]
        subqueries = [select(c).where(identity_of_study).scalar_subquery() for c in counts]
        joined: Any = select(SourceIdentity, *subqueries).order_by(SourceIdentity.id)
    elif query.level == Level.STUDY:
        joined = select(Study, SourceIdentity).join(SourceIdentity, identity_of_study)
        joined = joined.order_by(Study.id)
    elif query.level == Level.SERIES:
        joined = (
            select(Series, Study, SourceIdentity)
            .join(Study, Series.study_pk == Study.id)
            .join(SourceIdentity, identity_of_study)
            .order_by(Series.id)
        )
    else:
        joined = (
            select(Instance, Series, Study, SourceIdentity)
            .join(Series, Instance.series_pk == Series.id)
            .join(Study, Series.study_pk == Study.id)
            .join(SourceIdentity, identity_of_study)
            .order_by(Instance.id)
        )
    return joined.where(*query.conditions())


def _match(level: Level, row: Any) -> Match:
    """A Match out of one result row of ``_statement``."""
    if level == Level.PATIENT:
        identity, studies, series, instances = row
        return Match(identity, counts=(int(studies), int(series or 0), int(instances or 0)))
    if level == Level.STUDY:
        return Match(row[1], study=row[0])
    if level == Level.SERIES:
        return Match(row[2], study=row[1], series=row[0])
    return Match(row[3], study=row[2], series=row[1], instance=row[0])


def _stored(match: Match, tag: str) -> Any:
    """An attribute's DICOM JSON as the index stored it for the match's levels, or None."""
    for holder in (match.instance, match.series, match.study, match.identity):
        if holder is not None and tag in (holder.dicom_json or {}):
            return holder.dicom_json[tag]
    return None


def _optional(match: Match, element: DataElement) -> DataElement:
    """The response element of a key that is not matched on: the stored value, or zero length."""
    tag = f"{int(element.tag):08X}"
    stored = _stored(match, tag)
    if stored is not None and "BulkDataURI" not in stored:
        try:
            return Dataset.from_json({tag: stored})[element.tag]
        except Exception:  # a stored value pydicom cannot rebuild: answer without a value
            pass
    return DataElement(element.tag, element.VR, [] if element.VR == "SQ" else None)


def response(query: FindQuery, match: Match) -> Dataset:
    """The response identifier of one match: the requested keys only, in UTF-8."""
    top = _ORDER.index(query.level)
    ds = Dataset()
    ds.SpecificCharacterSet = RESPONSE_CHARSET
    ds.QueryRetrieveLevel = query.level.value
    for element in query.returned:
        key = KEYS.get(element.keyword)
        if key is not None and _ORDER.index(key.level) <= top:
            value = key.value(match)
            ds.add_new(element.tag, element.VR, value if value not in (None, "") else None)
        elif element.keyword == "RetrieveAETitle" and query.retrieve_aet:
            ds.add_new(element.tag, "AE", query.retrieve_aet)
        elif element.keyword == "InstanceAvailability":
            ds.add_new(element.tag, "CS", "ONLINE")
        elif key is not None:  # a key of a lower level than the query's: zero length
            ds.add_new(element.tag, element.VR, None)
        else:
            ds[element.tag] = _optional(match, element)
    return ds


def find(session: Session, query: FindQuery, *, limit: int = MAX_MATCHES) -> Iterator[Dataset]:
    """Yield the response identifier of each match, streamed from the index, at most limit."""
    statement = _statement(query).limit(limit).execution_options(yield_per=200)
    for row in session.execute(statement):
        yield response(query, _match(query.level, row))

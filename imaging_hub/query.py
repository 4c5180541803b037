"""Search of the index at study, series and instance level, and the DICOM JSON of each result.

Matching follows PS3.4 C.2.2.2 (see ``imaging_hub.dicom.matching``); queries hold the raw values
as a client sent them, so QIDO-RS and the REST API share one search. Results come newest study
first (StudyDate, then StudyTime, then the most recently indexed), series by SeriesNumber and
instances by InstanceNumber within them. Studies and series without instances are not found.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

import msgspec
from pydicom.datadict import dictionary_VR, tag_for_keyword
from sqlalchemy import ColumnElement, Select, Text, cast, select
from sqlalchemy.orm import Session

from imaging_hub.db.models import Instance, Series, SourceIdentity, Study
from imaging_hub.dicom.json import bulk_uris
from imaging_hub.dicom.keys import normalize_text
from imaging_hub.dicom.matching import (
    date_condition,
    fuzzy_pn_condition,
    has_wildcards,
    int_condition,
    multi_value_condition,
    pn_condition,
    sort_key_date_condition,
    string_condition,
    text_condition,
    time_condition,
    uid_list_condition,
)
from imaging_hub.dicom.uids import validate_uid

__all__ = [
    "ALL_FIELDS",
    "INSTANCE_DEFAULT_TAGS",
    "MATCH_KEYS",
    "SERIES_DEFAULT_TAGS",
    "STUDY_DEFAULT_TAGS",
    "Found",
    "InstanceRow",
    "Level",
    "MatchKey",
    "Scope",
    "Search",
    "SeriesRow",
    "StudyFilters",
    "StudyRow",
    "has_result_at",
    "iter_search",
    "result_json",
    "search",
    "search_studies",
    "study_dicom_json",
    "tag_of",
]

#: ``includefield`` value asking for every attribute the index holds.
ALL_FIELDS = "all"

Condition = ColumnElement[bool]


def tag_of(keyword: str) -> str:
    """The 8-hex-digit tag (as used in DICOM JSON) of a DICOM keyword."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return f"{tag:08X}"


def _tags(*keywords: str) -> frozenset[str]:
    return frozenset(tag_of(k) for k in keywords)


class Level(StrEnum):
    """What a search returns (PS3.18 10.6.1: study, series or instance resources)."""

    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


_DEPTH = {Level.STUDY: 0, Level.SERIES: 1, Level.INSTANCE: 2}

#: Study-level attributes every study result carries (PS3.18 Table 10.6.3-3).
STUDY_DEFAULT_TAGS = _tags(
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "InstanceAvailability",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "TimezoneOffsetFromUTC",
    "RetrieveURL",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
#: Series-level attributes every series result carries (PS3.18 Table 10.6.3-4), with the
#: StudyInstanceUID and SeriesDate/Time that viewers use.
SERIES_DEFAULT_TAGS = _tags(
    "StudyInstanceUID",
    "Modality",
    "TimezoneOffsetFromUTC",
    "SeriesDescription",
    "RetrieveURL",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDate",
    "SeriesTime",
    "NumberOfSeriesRelatedInstances",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "RequestAttributesSequence",
)
#: Instance-level attributes every instance result carries (PS3.18 Table 10.6.3-5), with the
#: UIDs of the instance's study and series.
INSTANCE_DEFAULT_TAGS = _tags(
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceAvailability",
    "TimezoneOffsetFromUTC",
    "RetrieveURL",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
)

_MODALITIES = tag_of("ModalitiesInStudy")
_NUM_SERIES = tag_of("NumberOfStudyRelatedSeries")
_NUM_INSTANCES = tag_of("NumberOfStudyRelatedInstances")
_NUM_SERIES_INSTANCES = tag_of("NumberOfSeriesRelatedInstances")
_AVAILABILITY = tag_of("InstanceAvailability")
_RETRIEVE_URL = tag_of("RetrieveURL")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
#: Never returned: DICOM JSON is always UTF-8 (PS3.18 F.2.1), the received charset is moot.
_CHARSET = tag_of("SpecificCharacterSet")

Builder = Callable[[str, bool], Condition | None]


@dataclass(frozen=True, slots=True)
class MatchKey:
    """An attribute searches can match on: the level it belongs to and its SQL condition.

    ``build(value, fuzzy)`` returns the condition of a raw query value (None: matches
    anything) or raises ValueError / InvalidUid naming what is wrong.
    """

    level: Level
    build: Builder


def _plain(kind: Callable[..., Condition | None], column: Any, **kw: Any) -> Builder:
    """A builder applying one matching function to column, ignoring fuzzy matching."""
    return lambda value, _fuzzy: kind(column, value, **kw)


def _text(kind: Callable[..., Condition | None], column: Any) -> Builder:
    """String matching whose wild cards may use an index (see ``wildcard_condition``)."""
    return _plain(kind, column, indexed=True)


def _code(column: Any) -> Builder:
    """Single value or wild card matching of a code string, in upper case (PS3.5 6.2 CS)."""
    return lambda value, _fuzzy: string_condition(column, value.upper(), indexed=True)


def _person(norm_column: Any) -> Builder:
    """Person name matching, literal or fuzzy (PS3.18 8.3.4.2)."""
    return lambda value, fuzzy: (
        fuzzy_pn_condition(norm_column, value)
        if fuzzy
        else pn_condition(norm_column, value, indexed=True)
    )


ST, SE, IN = Level.STUDY, Level.SERIES, Level.INSTANCE
SI = SourceIdentity
#: Every matching key, by keyword (PS3.18 Tables 10.6.1-5 and 10.6.1-6, plus common extras).
MATCH_KEYS: dict[str, MatchKey] = {
    "PatientID": MatchKey(ST, _text(string_condition, SI.patient_id)),
    "IssuerOfPatientID": MatchKey(ST, _text(string_condition, SI.issuer)),
    "PatientName": MatchKey(ST, _person(SI.name_norm)),
    "PatientBirthDate": MatchKey(
        ST, _plain(date_condition, SI.birth_date, what="PatientBirthDate")
    ),
    "PatientSex": MatchKey(ST, _code(SI.sex)),
    "StudyInstanceUID": MatchKey(
        ST, _plain(uid_list_condition, Study.study_uid, what="StudyInstanceUID")
    ),
    "StudyDate": MatchKey(ST, _plain(sort_key_date_condition, Study.sort_key, what="StudyDate")),
    "StudyTime": MatchKey(ST, _plain(time_condition, Study.study_time, what="StudyTime")),
    "AccessionNumber": MatchKey(ST, _text(string_condition, Study.accession_number)),
    "StudyID": MatchKey(ST, _text(string_condition, Study.study_id)),
    "StudyDescription": MatchKey(ST, _text(text_condition, Study.study_description_norm)),
    "ReferringPhysicianName": MatchKey(ST, _person(Study.referring_physician_norm)),
    "ModalitiesInStudy": MatchKey(
        ST, _plain(multi_value_condition, Study.modalities_in_study, what="ModalitiesInStudy")
    ),
    "SeriesInstanceUID": MatchKey(
        SE, _plain(uid_list_condition, Series.series_uid, what="SeriesInstanceUID")
    ),
    "Modality": MatchKey(SE, _code(Series.modality)),
    "SeriesNumber": MatchKey(SE, _plain(int_condition, Series.series_number, what="SeriesNumber")),
    "SeriesDescription": MatchKey(SE, _text(string_condition, Series.series_description)),
    "BodyPartExamined": MatchKey(SE, _code(Series.body_part_examined)),
    "PerformedProcedureStepStartDate": MatchKey(
        SE,
        _plain(date_condition, Series.performed_date, what="PerformedProcedureStepStartDate"),
    ),
    "PerformedProcedureStepStartTime": MatchKey(
        SE,
        _plain(time_condition, Series.performed_time, what="PerformedProcedureStepStartTime"),
    ),
    "SOPInstanceUID": MatchKey(
        IN, _plain(uid_list_condition, Instance.sop_instance_uid, what="SOPInstanceUID")
    ),
    "SOPClassUID": MatchKey(
        IN, _plain(uid_list_condition, Instance.sop_class_uid, what="SOPClassUID")
    ),
    "InstanceNumber": MatchKey(
        IN, _plain(int_condition, Instance.instance_number, what="InstanceNumber")
    ),
}


@dataclass(frozen=True, slots=True)
class Scope:
    """The study (and series) a search is limited to, from the resource path (PS3.18 10.6.1)."""

    study_uid: str | None = None
    series_uid: str | None = None


@dataclass(frozen=True, slots=True)
class Search:
    """One search: the level of its results, matching values by keyword, scope, fuzziness."""

    level: Level
    matches: Mapping[str, str] = field(default_factory=dict)
    scope: Scope = Scope()
    fuzzy: bool = False

    def conditions(self) -> list[Condition]:
        """The SQL conditions of this search; raises ValueError or InvalidUid with the reason.

        Conditions on the patient (source identity) select the identities in a subquery, so
        that the database starts from the identities' indexes, unless the only one is a
        broad name pattern (see ``_broad_name``).
        """
        built: list[Condition | None] = []
        identity: list[Condition | None] = []
        for keyword, value in self.matches.items():
            key = MATCH_KEYS.get(keyword)
            if key is None or _DEPTH[key.level] > _DEPTH[self.level]:
                raise ValueError(
                    f"matching on {keyword} is not supported for {self.level} searches"
                )
            if _CONTROL_RE.search(value):
                raise ValueError(f"{keyword}: control characters are not allowed in a query")
            (identity if keyword in _IDENTITY_KEYS else built).append(key.build(value, self.fuzzy))
        identity_conditions = [c for c in identity if c is not None]
        if identity_conditions and self._broad_name():
            built += identity_conditions
        elif identity_conditions:
            ids = select(SI.id).where(*identity_conditions)
            built.append(Study.source_identity_id.in_(ids))
        if self.scope.study_uid is not None:
            uid = validate_uid(self.scope.study_uid, what="StudyInstanceUID")
            built.append(Study.study_uid == uid)
        if self.scope.series_uid is not None:
            uid = validate_uid(self.scope.series_uid, what="SeriesInstanceUID")
            built.append(Series.series_uid == uid)
        return [c for c in built if c is not None]

    def _broad_name(self) -> bool:
        """Tell whether the patient is matched only by a name pattern with a 1-2 letter prefix.

        Such a pattern (``S*``) matches many patients: walking the studies in result order
        until the page is full is then faster than gathering every match first.
        """
        keys = [k for k in self.matches if k in _IDENTITY_KEYS]
        if keys != ["PatientName"] or self.fuzzy:
            return False
        value = normalize_text(self.matches["PatientName"]) or ""
        prefix = re.split(r"[*?]", value, maxsplit=1)[0]
        return has_wildcards(value) and 0 < len(prefix) < 3

    def joins_identity(self) -> bool:
        """Tell whether conditions() refers to the source identity table itself."""
        return any(k in _IDENTITY_KEYS for k in self.matches) and self._broad_name()


#: Keys matched on the source identity (the patient as received).
_IDENTITY_KEYS = frozenset(
    {"PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex"}
)


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

    def matches(self) -> dict[str, str]:
        """The filters that are set, by DICOM keyword."""
        return {
            _FILTER_KEYWORDS[f.name]: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) is not None
        }

    def conditions(self) -> list[Condition]:
        """The SQL conditions these filters stand for; raises ValueError or InvalidUid."""
        return Search(Level.STUDY, self.matches()).conditions()

    def is_empty(self) -> bool:
        """Tell whether no filter is set."""
        return all(getattr(self, f.name) is None for f in fields(self))


_FILTER_KEYWORDS = {
    "patient_id": "PatientID",
    "issuer_of_patient_id": "IssuerOfPatientID",
    "patient_name": "PatientName",
    "patient_birth_date": "PatientBirthDate",
    "study_uids": "StudyInstanceUID",
    "study_date": "StudyDate",
    "accession_number": "AccessionNumber",
    "study_id": "StudyID",
    "study_description": "StudyDescription",
    "referring_physician_name": "ReferringPhysicianName",
    "modalities_in_study": "ModalitiesInStudy",
}


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


@dataclass(frozen=True, slots=True)
class SeriesRow:
    """One series found, with its stored DICOM JSON."""

    series_uid: str
    num_instances: int
    series_json: dict[str, Any]


@dataclass(frozen=True, slots=True)
class InstanceRow:
    """One instance found, with the DICOM JSON of its header (bulk data as placeholders)."""

    sop_instance_uid: str
    instance_json: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Found:
    """One search result: its study, and its series and instance at those levels."""

    study: StudyRow
    series: SeriesRow | None = None
    instance: InstanceRow | None = None


#: Stored DICOM JSON is read as text and decoded here: several times faster than the JSON type.
_decode_json = msgspec.json.Decoder(dict[str, Any]).decode


def _as_text(column: Any, name: str) -> Any:
    """A JSON column selected as its text."""
    return cast(column, Text).label(name)


def _json(text: str | None) -> dict[str, Any]:
    """Stored DICOM JSON text as a dict ({} when empty)."""
    return _decode_json(text) if text else {}


_STUDY_COLUMNS = (
    Study.study_uid,
    SI.patient_id,
    SI.issuer,
    SI.name,
    SI.birth_date,
    SI.sex,
    Study.study_date,
    Study.study_time,
    Study.accession_number,
    Study.study_id,
    Study.study_description,
    Study.referring_physician_name,
    Study.modalities_in_study,
    Study.num_series,
    Study.num_instances,
    _as_text(SI.dicom_json, "patient_json"),
    _as_text(Study.dicom_json, "study_json"),
)
_SERIES_COLUMNS = (
    Series.series_uid,
    Series.num_instances,
    _as_text(Series.dicom_json, "series_json"),
)
_INSTANCE_COLUMNS = (Instance.sop_instance_uid, _as_text(Instance.dicom_json, "instance_json"))


def _study_row(values: tuple[Any, ...]) -> StudyRow:
    """A StudyRow out of the values of _STUDY_COLUMNS."""
    (uid, pid, issuer, name, birth, sex, date, time, accession, sid, description, referring,
     modalities, num_series, num_instances, patient_json, study_json) = values  # fmt: skip
    return StudyRow(
        study_uid=uid,
        patient_id=pid,
        issuer_of_patient_id=issuer,
        patient_name=name,
        birth_date=birth,
        sex=sex,
        study_date=date,
        study_time=time,
        accession_number=accession,
        study_id=sid,
        description=description,
        referring_physician_name=referring,
        modalities=tuple(m for m in modalities.split("\\") if m),
        num_series=num_series,
        num_instances=num_instances,
        patient_json=_json(patient_json),
        study_json=_json(study_json),
    )


def _found(level: Level, row: tuple[Any, ...]) -> Found:
    """A Found out of one result row of _statement."""
    n = len(_STUDY_COLUMNS)
    study = _study_row(tuple(row[:n]))
    if level == Level.STUDY:
        return Found(study)
    uid, count, series_json = row[n : n + 3]
    series = SeriesRow(series_uid=uid, num_instances=count, series_json=_json(series_json))
    if level == Level.SERIES:
        return Found(study, series)
    sop_uid, instance_json = row[n + 3 : n + 5]
    return Found(study, series, InstanceRow(sop_uid, _json(instance_json)))


_STUDY_ORDER = (Study.sort_key.desc(), Study.id.desc())


def _study_page(query: Search, limit: int, offset: int) -> Select[Any]:
    """The keys of one page of matching studies, in result order (from the sort index alone
    when no condition needs the study row)."""
    page = select(Study.id).where(Study.num_instances > 0, *query.conditions())
    if query.joins_identity():
        page = page.join(SI, Study.source_identity_id == SI.id)
    return page.order_by(*_STUDY_ORDER).limit(limit).offset(offset)


def _statement(query: Search, limit: int, offset: int) -> Select[Any]:
    """The SELECT of one page of a search, joined up to the source identity, in result order."""
    statement = (
        select(*_STUDY_COLUMNS).select_from(Study).join(SI, Study.source_identity_id == SI.id)
    )
    if query.level == Level.STUDY:
        # The page is chosen first, so that the rows skipped by offset are never read.
        page = _study_page(query, limit, offset)
        return statement.where(Study.id.in_(page)).order_by(*_STUDY_ORDER)
    statement = statement.add_columns(*_SERIES_COLUMNS).join(Series, Series.study_pk == Study.id)
    statement = statement.where(
        Study.num_instances > 0, Series.num_instances > 0, *query.conditions()
    )
    order: list[Any] = [*_STUDY_ORDER, Series.series_number.asc().nulls_last(), Series.id]
    if query.level == Level.INSTANCE:
        statement = statement.add_columns(*_INSTANCE_COLUMNS)
        statement = statement.join(Instance, Instance.series_pk == Series.id)
        order += [Instance.instance_number.asc().nulls_last(), Instance.id]
    return statement.order_by(*order).limit(limit).offset(offset)


def search(session: Session, query: Search, *, limit: int = 100, offset: int = 0) -> list[Found]:
    """The results of a search, at most limit after skipping offset.

    Ask for ``limit + 1`` rows to learn whether more results exist. Raises ValueError or
    InvalidUid when a matching value is malformed.
    """
    return list(iter_search(session, query, limit=limit, offset=offset))


def iter_search(
    session: Session, query: Search, *, limit: int = 100, offset: int = 0, batch: int = 200
) -> Iterator[Found]:
    """The results of a search as they are read, batch rows at a time (bounded memory)."""
    if limit < 0 or offset < 0:
        raise ValueError("limit and offset must not be negative")
    rows = session.execute(_statement(query, limit, offset).execution_options(yield_per=batch))
    return (_found(query.level, tuple(row)) for row in rows)


def has_result_at(session: Session, query: Search, position: int) -> bool:
    """Tell whether a search has more than position results (a result at that 0-based index)."""
    if query.level == Level.STUDY:
        statement = _study_page(query, 1, position)
    else:
        statement = _statement(query, 1, position).with_only_columns(Study.id).order_by(None)
    return session.execute(statement).first() is not None


def search_studies(
    session: Session, *, filters: StudyFilters, limit: int = 100, offset: int = 0
) -> list[StudyRow]:
    """Studies matching filters, newest first (see ``search``)."""
    found = search(session, Search(Level.STUDY, filters.matches()), limit=limit, offset=offset)
    return [f.study for f in found]


def _empty(tag: str) -> dict[str, Any]:
    """A DICOM JSON attribute with no value (a zero-length type 2 attribute)."""
    try:
        return {"vr": dictionary_VR(int(tag, 16))}
    except KeyError:
        return {"vr": "UN"}


def _study_computed(row: StudyRow) -> dict[str, Any]:
    """The study attributes the index computes instead of copying from a file."""
    return {
        _MODALITIES: {"vr": "CS", "Value": list(row.modalities)} if row.modalities else None,
        _NUM_SERIES: {"vr": "IS", "Value": [row.num_series]},
        _NUM_INSTANCES: {"vr": "IS", "Value": [row.num_instances]},
        _AVAILABILITY: {"vr": "CS", "Value": ["ONLINE"]},
    }


def _url(found: Found, level: Level, base_url: str) -> str:
    """The WADO-RS URL of the result's study, series or instance."""
    url = f"{base_url}/studies/{found.study.study_uid}"
    if level != Level.STUDY and found.series is not None:
        url += f"/series/{found.series.series_uid}"
    if level == Level.INSTANCE and found.instance is not None:
        url += f"/instances/{found.instance.sop_instance_uid}"
    return url


def result_json(
    found: Found,
    level: Level,
    include: set[str] | None = None,
    *,
    base_url: str | None = None,
    with_study: bool = False,
    with_series: bool = False,
) -> dict[str, Any]:
    """The DICOM JSON (PS3.18 F.2) of a search result: its level's defaults plus ``include``.

    ``include`` holds extra tags (``"00081030"``) or ``ALL_FIELDS`` for every attribute the index
    holds at the level. ``with_study`` / ``with_series`` add the default attributes of those
    levels (searches across studies or series, PS3.18 10.6.3.3). RetrieveURL is given when
    base_url is; BulkDataURIs then point under the instance's URL.
    """
    wanted = set(include or ())
    everything = ALL_FIELDS in wanted
    study, series, instance = found.study, found.series, found.instance
    computed = _study_computed(study)
    stored = {**study.study_json, **study.patient_json}
    everything_of = dict(stored)
    if level == Level.STUDY or with_study:
        wanted |= STUDY_DEFAULT_TAGS
    if series is not None:
        computed[_NUM_SERIES_INSTANCES] = {"vr": "IS", "Value": [series.num_instances]}
        stored = {**series.series_json, **stored}
        everything_of = {**series.series_json, **(everything_of if with_study else {})}
        if level == Level.SERIES or with_series:
            wanted |= SERIES_DEFAULT_TAGS
    if instance is not None:
        stored = {**instance.instance_json, **stored}
        everything_of = {**instance.instance_json, **(everything_of if with_series else {})}
        wanted |= INSTANCE_DEFAULT_TAGS
    if base_url is not None:
        url = _url(found, level, base_url)
        computed[_RETRIEVE_URL] = {"vr": "UR", "Value": [url]}
        if instance is not None:
            stored = bulk_uris(stored, url)
    keys = (wanted | set(everything_of)) if everything else wanted
    result: dict[str, Any] = {}
    for tag in sorted(keys - {ALL_FIELDS, _CHARSET}):
        value = computed[tag] if tag in computed else stored.get(tag)
        if value is None and tag == _RETRIEVE_URL:
            continue
        result[tag] = value if value is not None else _empty(tag)
    return result


def study_dicom_json(
    row: StudyRow, include: set[str] | None = None, *, base_url: str | None = None
) -> dict[str, Any]:
    """The DICOM JSON (PS3.18 F.2) of a study result: the default attributes plus ``include``."""
    return result_json(Found(row), Level.STUDY, include, base_url=base_url)

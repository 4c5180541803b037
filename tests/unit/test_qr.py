"""The C-FIND query model: identifiers to SQL conditions, and matches to response identifiers."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import column, select
from sqlalchemy.dialects import sqlite

from imaging_hub.db.models import Instance, Series, SourceIdentity, Study
from imaging_hub.errors import InvalidUid
from imaging_hub.qr import (
    FindQuery,
    IdentifierMismatch,
    Level,
    Match,
    Model,
    int_condition,
    parse_identifier,
    response,
    time_condition,
)


def identifier(level: str | None, **keys: Any) -> Dataset:
    ds = Dataset()
    if level is not None:
        ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def sql(query: FindQuery) -> str:
    """The WHERE clause the query's conditions compile to, with literal values."""
    statement = select(column("x")).where(*query.conditions())
    return str(statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))


def test_universal_and_empty_keys_do_not_restrict() -> None:
    query = parse_identifier(
        identifier("STUDY", PatientName="", StudyDate="", AccessionNumber="*"), Model.STUDY_ROOT
    )
    assert query.conditions() == []
    assert [e.keyword for e in query.returned] == ["StudyDate", "AccessionNumber", "PatientName"]


def test_pn_matches_the_normalised_column_case_insensitively() -> None:
    query = parse_identifier(identifier("STUDY", PatientName="doe^j*"), Model.STUDY_ROOT)
    assert "source_identity.name_norm LIKE 'DOE^J%' ESCAPE '!'" in sql(query)


@pytest.mark.parametrize(
    ("keys", "fragment"),
    [
        ({"StudyDate": "20240101-20240131"}, "study.study_date >= '2024-01-01'"),
        ({"StudyDate": "-20240131"}, "study.study_date <= '2024-01-31'"),
        ({"StudyInstanceUID": ["1.2.3", "1.2.4"]}, "study.study_uid IN ('1.2.3', '1.2.4')"),
        ({"AccessionNumber": "A?C"}, "study.accession_number LIKE 'A_C' ESCAPE '!'"),
        ({"AccessionNumber": "100%"}, "study.accession_number = '100%'"),
        ({"StudyDescription": "*lumbar*"}, "study.study_description_norm LIKE '%LUMBAR%'"),
        ({"ModalitiesInStudy": "MR"}, "study.modalities_in_study LIKE '%\\MR\\%'"),
        ({"StudyTime": "1000-1130"}, "study.study_time <= '113059.999999'"),
        ({"PatientBirthDate": "19700101"}, "source_identity.birth_date = '1970-01-01'"),
    ],
)
def test_study_matching_translation(keys: dict[str, Any], fragment: str) -> None:
    assert fragment in sql(parse_identifier(identifier("STUDY", **keys), Model.STUDY_ROOT))


def test_keys_below_the_level_are_returned_but_never_match() -> None:
    query = parse_identifier(
        identifier("STUDY", Modality="MR", SOPInstanceUID="1.2"), Model.STUDY_ROOT
    )
    assert query.conditions() == []


def test_unsupported_keys_are_optional_matching() -> None:
    query = parse_identifier(identifier("STUDY", InstitutionName="Nowhere"), Model.STUDY_ROOT)
    assert query.conditions() == []
    assert [e.keyword for e in query.returned] == ["InstitutionName"]


@pytest.mark.parametrize(
    ("model", "ds"),
    [
        (Model.STUDY_ROOT, identifier(None, StudyInstanceUID="")),
        (Model.STUDY_ROOT, identifier("PATIENT", PatientID="")),
        (Model.STUDY_ROOT, identifier("SERIES", SeriesInstanceUID="")),
        (Model.STUDY_ROOT, identifier("IMAGE", StudyInstanceUID="1.2", SeriesInstanceUID="")),
        (Model.STUDY_ROOT, identifier("SERIES", StudyInstanceUID="1.2*")),
        (Model.PATIENT_ROOT, identifier("STUDY", StudyInstanceUID="")),
        (Model.PATIENT_ROOT, identifier("SERIES", PatientID="P1", SeriesInstanceUID="")),
    ],
)
def test_hierarchical_search_needs_the_unique_keys_above(model: Model, ds: Dataset) -> None:
    with pytest.raises(IdentifierMismatch):
        parse_identifier(ds, model)


def test_unique_keys_above_are_enough() -> None:
    ds = identifier("IMAGE", PatientID="P1", StudyInstanceUID="1.2", SeriesInstanceUID="1.3")
    assert parse_identifier(ds, Model.PATIENT_ROOT).level == Level.IMAGE


@pytest.mark.parametrize(
    ("keys", "error"),
    [
        ({"StudyDate": "2024-01-01-02"}, ValueError),
        ({"StudyDate": "20241301"}, ValueError),
        ({"StudyTime": "25x"}, ValueError),
        ({"StudyInstanceUID": "1.2.abc"}, InvalidUid),
        ({"ModalitiesInStudy": "M*"}, ValueError),
    ],
)
def test_malformed_values_are_refused(keys: dict[str, str], error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_identifier(identifier("STUDY", **keys), Model.STUDY_ROOT)


def test_int_condition() -> None:
    assert int_condition(Series.series_number, "") is None
    assert int_condition(Series.series_number, " 3 ") is not None
    with pytest.raises(ValueError):
        int_condition(Series.series_number, "three")


def test_time_condition_single_and_open_ranges() -> None:
    assert time_condition(Study.study_time, None) is None
    assert time_condition(Study.study_time, "10:15") is not None
    with pytest.raises(ValueError):
        time_condition(Study.study_time, "1-2-3")


def _match() -> Match:
    identity = SourceIdentity(
        patient_id="P1", issuer="", name="Müller^Jörg", birth_date=dt.date(1980, 2, 2), sex="M",
        dicom_json={"00101010": {"vr": "AS", "Value": ["044Y"]}},
    )  # fmt: skip
    study = Study(
        study_uid="1.2.3", study_date=dt.date(2024, 6, 1), study_time="080000",
        modalities_in_study="\\CT\\MR\\", num_series=2, num_instances=5, dicom_json={},
    )  # fmt: skip
    series = Series(series_uid="1.2.3.4", modality="CT", num_instances=3, dicom_json={})
    instance = Instance(sop_instance_uid="1.2.3.4.5", sop_class_uid="1.2.840", dicom_json={})
    return Match(identity, study=study, series=series, instance=instance, counts=(1, 2, 5))


def test_response_holds_the_requested_keys_only() -> None:
    ds = identifier(
        "STUDY", PatientName="", PatientBirthDate="", StudyDate="", ModalitiesInStudy="",
        NumberOfStudyRelatedInstances="", PatientAge="", InstitutionName="", Modality="",
    )  # fmt: skip
    query = parse_identifier(ds, Model.STUDY_ROOT, retrieve_aet="HUB")
    out = response(query, _match())
    assert out.SpecificCharacterSet == "ISO_IR 192"
    assert out.QueryRetrieveLevel == "STUDY"
    assert str(out.PatientName) == "Müller^Jörg"
    assert out.PatientBirthDate == "19800202"
    assert out.StudyDate == "20240601"
    assert list(out.ModalitiesInStudy) == ["CT", "MR"]
    assert out.NumberOfStudyRelatedInstances == 5
    assert out.PatientAge == "044Y"  # optional key: the stored value, no matching
    assert out.InstitutionName in (None, "")  # not stored: zero length
    assert out.Modality in (None, "")  # a series key at study level: zero length
    assert "StudyInstanceUID" not in out
    assert len(out) == 2 + len(ds) - 1
    encoded = json.loads(out.to_json())  # the whole response encodes
    assert encoded["00100010"]["Value"] == [{"Alphabetic": "Müller^Jörg"}]

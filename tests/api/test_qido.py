"""QIDO-RS study search (PS3.18 10.6) on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydicom import Dataset

from tests.api.helpers import ORDER
from viewer_api.dicomweb import qido

STUDY_UID = "0020000D"


def found(client: TestClient, corpus: dict[str, str], params: Any) -> list[str]:
    """Search and return the letters of the studies found, in answer order."""
    response = client.get("/dicomweb/studies", params=params)
    assert response.status_code == 200, response.text
    letters = {uid: letter for letter, uid in corpus.items()}
    return [letters[item[STUDY_UID]["Value"][0]] for item in response.json()]


def bad_request(client: TestClient, params: Any) -> str:
    """Search expecting 400 and return the reason."""
    response = client.get("/dicomweb/studies", params=params)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    return detail


def test_no_filter_returns_every_study_newest_first(client, corpus):
    response = client.get("/dicomweb/studies")
    assert response.headers["content-type"] == "application/dicom+json"
    assert "warning" not in response.headers
    assert found(client, corpus, {}) == ORDER


def test_empty_result_is_200_with_an_empty_array(client, corpus):
    response = client.get("/dicomweb/studies", params={"PatientID": "NOBODY"})
    assert response.status_code == 200
    assert response.json() == []


STRING_CASES = [
    ({"PatientID": "P1"}, ["A", "B"]),
    ({"00100020": "P2"}, ["C"]),
    ({"PatientID": "p1"}, []),  # PatientID matching is case-sensitive
    ({"PatientID": "P*"}, ORDER),
    ({"IssuerOfPatientID": "CLINIC-B"}, ["C"]),
    ({"PatientID": "P1", "IssuerOfPatientID": "CLINIC-B"}, []),
    ({"StudyID": "S4"}, ["D"]),
    ({"AccessionNumber": "ACC1"}, ["A"]),
    ({"ReferringPhysicianName": "house*"}, ["A"]),
    ({"00080090": "WILSON^JAMES"}, ["B"]),
    ({"StudyDescription": "*SPINE*"}, ["C", "A"]),
    ({"StudyDescription": "cervical ct"}, ["B"]),
]


def test_string_attribute_matching(client, corpus):
    for params, expected in STRING_CASES:
        assert found(client, corpus, params) == expected, params


NAME_CASES = [
    ("Doe^Jane", ["A", "B"]),
    ("DOE^JANE", ["A", "B"]),
    ("doe*", ["A", "B", "D"]),
    ("?oe^*", ["A", "B"]),
    ("Doe", []),  # single value matching is exact, not a prefix
    ("muller*", ["C"]),
    ("Müller^Jürgen", ["C"]),
    ("*^MAX", ["D"]),
    ("*", ORDER),
    ("", ORDER),
]


def test_patient_name_matching_is_case_and_accent_insensitive(client, corpus):
    for name, expected in NAME_CASES:
        assert found(client, corpus, {"PatientName": name}) == expected, name


ACCESSION_CASES = [
    ("ACC_3%", ["C"]),  # literal: % and _ are not LIKE wildcards
    ("ACC_*", ["C"]),  # the escaped _ does not match the X of ACCX3
    ("*%*", ["C"]),
    ("ACC?3", ["D"]),
    ("ACC*", ORDER),
]


def test_wildcards_escape_sql_like_characters(client, corpus):
    for value, expected in ACCESSION_CASES:
        assert found(client, corpus, {"AccessionNumber": value}) == expected, value


MODALITY_CASES = [
    ("MR", ["A"]),
    ("CT", ["C", "A", "B"]),
    ("DX", ["D"]),
    ("ct", ["C", "A", "B"]),
    ("MR,DX", ["A", "D"]),
    ("M", []),  # whole codes only
]


def test_modalities_in_study(client, corpus):
    for value, expected in MODALITY_CASES:
        assert found(client, corpus, {"ModalitiesInStudy": value}) == expected, value


DATE_CASES = [
    ("20240310", ["A"]),
    ("20230101-20231231", ["B"]),
    ("20230105-20240310", ["A", "B"]),
    ("-20230105", ["B", "D"]),
    ("20240301-", ["C", "A"]),
    ("19990101", []),
]


def test_study_date_ranges(client, corpus):
    for value, expected in DATE_CASES:
        assert found(client, corpus, {"StudyDate": value}) == expected, value


def test_patient_birth_date_single_and_range(client, corpus):
    assert found(client, corpus, {"PatientBirthDate": "19800115"}) == ["A", "B"]
    assert found(client, corpus, {"PatientBirthDate": "19700101-19791231"}) == ["C"]
    assert found(client, corpus, {"00100030": "19850101-"}) == ["D"]


def test_study_instance_uid_lists(client, corpus):
    a, b, c = corpus["A"], corpus["B"], corpus["C"]
    assert found(client, corpus, {"StudyInstanceUID": b}) == ["B"]
    assert found(client, corpus, {"StudyInstanceUID": f"{a},{c}"}) == ["C", "A"]
    assert found(client, corpus, {"0020000D": f"{a}\\{b}"}) == ["A", "B"]
    assert found(client, corpus, [("StudyInstanceUID", a), ("StudyInstanceUID", c)]) == ["C", "A"]
    assert found(client, corpus, {"StudyInstanceUID": "1.2.3"}) == []


def test_filters_combine_with_and(client, corpus):
    params = {"PatientName": "doe*", "ModalitiesInStudy": "CT", "StudyDate": "20230101-"}
    assert found(client, corpus, params) == ["A", "B"]


def test_dicom_json_shape(client, corpus):
    response = client.get("/dicomweb/studies", params={"StudyInstanceUID": corpus["A"]})
    (item,) = response.json()
    assert item["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}
    assert item["00100020"] == {"vr": "LO", "Value": ["P1"]}
    assert item["00080061"] == {"vr": "CS", "Value": ["CT", "MR"]}
    assert item["00201206"] == {"vr": "IS", "Value": [2]}
    assert item["00201208"] == {"vr": "IS", "Value": [4]}
    assert item["00080020"] == {"vr": "DA", "Value": ["20240310"]}
    assert item["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}
    assert "00080005" not in item  # DICOM JSON is UTF-8; no SpecificCharacterSet
    assert "00081030" not in item  # StudyDescription is not a default return key
    assert list(item) == sorted(item)
    ds = Dataset.from_json(item)
    assert ds.PatientName.family_name == "Doe"
    assert ds.NumberOfStudyRelatedInstances == 4


def test_non_ascii_names_survive_as_unicode(client, corpus):
    response = client.get("/dicomweb/studies", params={"PatientID": "P2"})
    assert response.json()[0]["00100010"]["Value"] == [{"Alphabetic": "Müller^Jürgen"}]


def test_missing_type2_attributes_are_returned_empty(client, corpus):
    (item,) = client.get("/dicomweb/studies", params={"PatientID": "P2"}).json()
    assert item["00080090"] == {"vr": "PN"}  # no referring physician in this study


INCLUDE_CASES = [
    {"includefield": "StudyDescription"},
    {"includefield": "00081030"},
    {"includefield": "PatientAge,StudyDescription"},
    {"includefield": "all"},
    {"StudyDescription": "*"},  # matching keys are returned too
]


def test_includefield_adds_attributes(client, corpus):
    for params in INCLUDE_CASES:
        response = client.get("/dicomweb/studies", params={"PatientID": "P2", **params})
        assert response.status_code == 200, response.text
        description = response.json()[0]["00081030"]
        assert description == {"vr": "LO", "Value": ["Whole spine 50% dose"]}, params


def test_includefield_is_repeatable(client, corpus):
    params = [
        ("PatientID", "P1"),
        ("includefield", "StudyDescription"),
        ("includefield", "StudyID"),
    ]
    items = client.get("/dicomweb/studies", params=params).json()
    assert [i["00081030"]["Value"][0] for i in items] == ["Lumbar spine MRI", "Cervical CT"]


def test_includefield_all_returns_every_stored_attribute(client, corpus):
    (item,) = client.get(
        "/dicomweb/studies", params={"PatientID": "P2", "includefield": "all"}
    ).json()
    assert item["00100021"] == {"vr": "LO", "Value": ["CLINIC-B"]}  # IssuerOfPatientID
    assert item["00201208"] == {"vr": "IS", "Value": [1]}


def test_limit_and_offset_page_through_results(client, corpus):
    first = client.get("/dicomweb/studies", params={"limit": 2})
    assert first.status_code == 200
    warning = first.headers["warning"]
    assert warning.startswith("299 ")
    assert "Additional results can be requested" in warning
    assert found(client, corpus, {"limit": 2}) == ["C", "A"]
    second = client.get("/dicomweb/studies", params={"limit": 2, "offset": 2})
    assert "warning" not in second.headers
    assert found(client, corpus, {"limit": 2, "offset": 2}) == ["B", "D"]
    assert found(client, corpus, {"offset": 4}) == []
    assert found(client, corpus, {"limit": 3, "offset": 1}) == ["A", "B", "D"]


def test_limit_is_capped_by_the_server(client, corpus, monkeypatch):
    monkeypatch.setattr(qido, "MAX_LIMIT", 3)
    response = client.get("/dicomweb/studies", params={"limit": 5000})
    assert len(response.json()) == 3
    assert "exceeded the maximum" in response.headers["warning"]


def test_fuzzymatching_is_accepted_and_reported(client, corpus):
    plain = client.get("/dicomweb/studies", params={"fuzzymatching": "false", "PatientID": "P3"})
    assert plain.status_code == 200
    assert "warning" not in plain.headers
    fuzzy = client.get("/dicomweb/studies", params={"fuzzymatching": "true", "PatientID": "P3"})
    assert fuzzy.status_code == 200
    assert len(fuzzy.json()) == 1
    assert "fuzzymatching parameter is not supported" in fuzzy.headers["warning"]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"StudyDate": "2024-03-10"}, "StudyDate"),
        ({"StudyDate": "20240230"}, "not a valid calendar date"),
        ({"StudyDate": "20240301-20240101"}, "ends before it starts"),
        ({"StudyDate": "2024*"}, "YYYYMMDD"),
        ({"PatientBirthDate": "1980011"}, "PatientBirthDate"),
        ({"Foo": "1"}, "'Foo'"),
        ({"99999999": "1"}, "unknown attribute tag"),
        ({"PatientSex": "F"}, "not supported"),
        ({"StudyInstanceUID": "1.2.abc"}, "not a valid UID"),
        ({"StudyInstanceUID": "1.2.*"}, "not a valid UID"),
        ({"ModalitiesInStudy": "M*"}, "ModalitiesInStudy"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": "1.5"}, "offset"),
        ({"offset": "99999999999999999999999"}, "offset must be at most"),
        ({"limit": "²"}, "limit"),
        ({"PatientID": "P1\x00"}, "control characters"),
        ({"StudyDescription": "a\nb"}, "control characters"),
        ({"fuzzymatching": "maybe"}, "fuzzymatching"),
        ({"includefield": "Bogus"}, "Bogus"),
        ([("PatientID", "P1"), ("PatientID", "P2")], "more than once"),
    ],
)
def test_bad_queries_answer_400_with_a_reason(client, params, reason):
    assert reason in bad_request(client, params)


def test_service_keeps_serving_after_bad_queries(client, corpus):
    bad_request(client, {"StudyDate": "garbage"})
    assert found(client, corpus, {"PatientID": "P3"}) == ["D"]

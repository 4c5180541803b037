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


FUZZY_CASES = [
    ("jane doe", ["A", "B"]),  # component order does not matter
    ("Doe^Jane", ["A", "B"]),
    ("doe", ["A", "B", "D"]),  # a word prefix: Doe and Doering
    ("JURGEN", ["C"]),  # accents and case are ignored
    ("jürg mül", ["C"]),
    ("ma* doer", ["D"]),
    ("jane max", []),  # every word must match
]


def test_fuzzymatching_matches_person_names_by_words_in_any_order(client, corpus):
    for name, expected in FUZZY_CASES:
        params = {"fuzzymatching": "true", "PatientName": name}
        assert found(client, corpus, params) == expected, name
    plain = client.get("/dicomweb/studies", params={"fuzzymatching": "false", "PatientName": "doe"})
    assert plain.json() == []  # literal matching is exact
    assert "warning" not in plain.headers


def test_fuzzymatching_applies_to_referring_physician_names(client, corpus):
    params = {"fuzzymatching": "true", "ReferringPhysicianName": "gregory"}
    assert found(client, corpus, params) == ["A"]


def test_unsupported_matching_flags_are_reported(client, corpus):
    response = client.get(
        "/dicomweb/studies", params={"emptyvaluematching": "true", "PatientID": "P3"}
    )
    assert response.status_code == 200
    assert len(response.json()) == 1
    assert "emptyvaluematching parameter is not supported" in response.headers["warning"]
    quiet = client.get("/dicomweb/studies", params={"multiplevaluematching": "false"})
    assert "warning" not in quiet.headers


def test_patient_sex_and_study_time(client, corpus):
    assert found(client, corpus, {"PatientSex": "M"}) == ["C", "D"]
    assert found(client, corpus, {"PatientSex": "f"}) == ["A", "B"]
    assert found(client, corpus, {"StudyTime": "101500"}) == ["A"]
    assert found(client, corpus, {"StudyTime": "1000-1030"}) == ["A"]
    assert found(client, corpus, {"StudyTime": "-0800"}) == ["C", "B", "D"]  # 07:27:30


def test_values_are_percent_decoded(client, corpus):
    # Starlette decodes the query string once; nothing is decoded twice.
    assert found(client, corpus, "PatientName=M%C3%BCller%5EJ%C3%BCrgen") == ["C"]
    assert found(client, corpus, "StudyDescription=Whole%20spine%2050%25%20dose") == ["C"]
    assert found(client, corpus, "AccessionNumber=ACC_3%25") == ["C"]
    assert found(client, corpus, "AccessionNumber=ACC%5F3%2525") == []  # a literal "%25"
    assert found(client, corpus, "PatientName=doe%2A&ModalitiesInStudy=MR%2CDX") == ["A", "D"]


def test_includefield_may_be_comma_separated_literally_or_percent_encoded(client, corpus):
    for query in ("includefield=00081030,00080060", "includefield=00081030%2C00080060"):
        response = client.get(f"/dicomweb/studies?PatientID=P2&{query}")
        assert response.status_code == 200, response.text
        (item,) = response.json()
        assert item["00081030"]["Value"] == ["Whole spine 50% dose"], query
        assert "00080060" in item  # Modality is a series attribute: empty at study level


def test_every_study_result_has_a_retrieve_url(client, corpus):
    (item,) = client.get("/dicomweb/studies", params={"PatientID": "P3"}).json()
    assert item["00081190"] == {
        "vr": "UR",
        "Value": [f"http://testserver/dicomweb/studies/{corpus['D']}"],
    }


def test_answers_are_dicom_json_only(client, corpus):
    for accept in ("application/dicom+json", "application/json", "*/*"):
        response = client.get("/dicomweb/studies", headers={"Accept": accept})
        assert response.status_code == 200, accept
    refused = client.get("/dicomweb/studies", headers={"Accept": "application/dicom+xml"})
    assert refused.status_code == 406
    assert "application/dicom+json" in refused.json()["detail"]


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
        ({"InstitutionName": "X"}, "matching on InstitutionName is not supported"),
        ({"Modality": "CT"}, "not supported for study searches"),
        ({"RequestAttributesSequence.RequestedProcedureID": "1"}, "inside sequences"),
        ({"StudyTime": "25"}, "StudyTime"),
        ({"StudyTime": "12-10"}, "ends before it starts"),
        ({"emptyvaluematching": "yes"}, "emptyvaluematching"),
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


# --- series and instance searches -------------------------------------------------------------

SERIES_UID = "0020000E"
SOP_UID = "00080018"


def search(client: TestClient, path: str, params: Any = None) -> list[dict[str, Any]]:
    """GET a QIDO-RS resource expecting 200 and return its JSON."""
    response = client.get(f"/dicomweb{path}", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom+json"
    return response.json()


def values(items: list[dict[str, Any]], tag: str) -> list[Any]:
    """The first value of tag in each item."""
    return [item[tag]["Value"][0] for item in items]


def test_series_of_a_study(client, corpus):
    items = search(client, f"/studies/{corpus['A']}/series")
    assert sorted(values(items, "00080060")) == ["CT", "MR"]
    for item in items:
        assert item["0020000D"]["Value"] == [corpus["A"]]
        assert item["00201209"] == {"vr": "IS", "Value": [2]}  # NumberOfSeriesRelatedInstances
        assert item["00200011"] == {"vr": "IS", "Value": [1]}  # SeriesNumber as a number
        series_url = f"http://testserver/dicomweb/studies/{corpus['A']}/series/"
        assert item["00081190"]["Value"][0] == series_url + item[SERIES_UID]["Value"][0]
        assert "00100010" not in item  # study attributes only when searching all series
        assert "00080005" not in item
    (mr,) = search(client, f"/studies/{corpus['A']}/series", {"Modality": "mr"})
    assert mr["00080060"]["Value"] == ["MR"]
    assert search(client, f"/studies/{corpus['B']}/series", {"Modality": "MR"}) == []
    assert search(client, "/studies/1.2.3.4/series") == []


def test_series_in_all_studies_carry_the_study_attributes(client, corpus):
    items = search(client, "/series", {"Modality": "CT"})
    letters = {uid: letter for letter, uid in corpus.items()}
    assert [letters[v] for v in values(items, "0020000D")] == ["C", "A", "B"]
    assert items[0]["00100010"]["Value"] == [{"Alphabetic": "Müller^Jürgen"}]
    assert items[0]["00201206"] == {"vr": "IS", "Value": [1]}
    filtered = search(client, "/series", {"PatientID": "P1", "Modality": "MR"})
    assert values(filtered, "0020000D") == [corpus["A"]]
    assert search(client, "/series", {"SeriesNumber": "2"}) == []
    assert len(search(client, "/series", {"SeriesNumber": "1"})) == 5


def test_instances_of_a_series(client, corpus):
    (mr,) = search(client, f"/studies/{corpus['A']}/series", {"Modality": "MR"})
    series_uid = mr[SERIES_UID]["Value"][0]
    items = search(client, f"/studies/{corpus['A']}/series/{series_uid}/instances")
    assert values(items, "00200013") == [1, 2]  # InstanceNumber, in order
    first = items[0]
    assert first["00080016"] == {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.4"]}
    assert first["00280010"] == {"vr": "US", "Value": [64]}
    assert first["00280100"] == {"vr": "US", "Value": [16]}
    assert first["00280008"] == {"vr": "IS"}  # NumberOfFrames: empty for a single frame
    assert first["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}
    assert first[SERIES_UID]["Value"] == [series_uid]
    url = first["00081190"]["Value"][0]
    assert url.endswith(f"/series/{series_uid}/instances/{first[SOP_UID]['Value'][0]}")
    assert "00080060" not in first  # series attributes only when searching a whole study
    one = search(
        client, f"/studies/{corpus['A']}/series/{series_uid}/instances", {"InstanceNumber": "2"}
    )
    assert values(one, "00200013") == [2]
    wrong_study = search(client, f"/studies/{corpus['B']}/series/{series_uid}/instances")
    assert wrong_study == []


def test_instances_of_a_study_carry_the_series_attributes(client, corpus):
    items = search(client, f"/studies/{corpus['A']}/instances")
    assert len(items) == 4
    assert sorted(values(items, "00080060")) == ["CT", "CT", "MR", "MR"]
    assert "00100020" not in items[0]
    ct = search(client, f"/studies/{corpus['A']}/instances", {"Modality": "CT"})
    assert len(ct) == 2
    mr_class = "1.2.840.10008.5.1.4.1.1.4"
    mr = search(client, f"/studies/{corpus['A']}/instances", {"SOPClassUID": mr_class})
    assert values(mr, "00080060") == ["MR", "MR"]


def test_instances_in_all_studies_carry_study_and_series_attributes(client, corpus):
    items = search(client, "/instances", {"PatientID": "P1"})
    assert len(items) == 5
    assert values(items, "00100020") == ["P1"] * 5
    assert "00080060" in items[0] and "00201206" in items[0]
    sop_uid = items[-1][SOP_UID]["Value"][0]
    (one,) = search(client, "/instances", {"SOPInstanceUID": sop_uid})
    assert one["0020000D"]["Value"] == [corpus["B"]]
    listed = search(client, "/instances", [("SOPInstanceUID", sop_uid), ("SOPInstanceUID", "1.2")])
    assert len(listed) == 1


def test_paging_at_every_level(client, corpus):
    first = client.get("/dicomweb/instances", params={"limit": 3})
    assert len(first.json()) == 3
    assert "Additional results" in first.headers["warning"]
    middle = client.get("/dicomweb/instances", params={"limit": 3, "offset": 3})
    assert "Additional results" in middle.headers["warning"]
    rest = client.get("/dicomweb/instances", params={"limit": 3, "offset": 6})
    assert len(rest.json()) == 1
    assert "warning" not in rest.headers
    pages = first.json() + middle.json() + rest.json()
    assert len({i[SOP_UID]["Value"][0] for i in pages}) == 7
    assert len(search(client, f"/studies/{corpus['A']}/instances", {"offset": 3})) == 1
    assert len(search(client, f"/studies/{corpus['A']}/series", {"limit": 1})) == 1


def test_scoped_searches_return_every_result_by_default(client, hub, tmp_path):
    from tests.api.helpers import ingest_study

    study = ingest_study(hub, tmp_path / "big", 120)
    response = client.get(f"/dicomweb/studies/{study}/instances")
    assert len(response.json()) == 120
    assert "warning" not in response.headers
    assert len(client.get("/dicomweb/instances").json()) == 100  # unscoped: default limit


@pytest.mark.parametrize(
    ("path", "params", "reason"),
    [
        ("/studies/1.2.x/series", {}, "StudyInstanceUID"),
        ("/studies/1.2/series/1.2.x/instances", {}, "SeriesInstanceUID"),
        ("/series", {"SOPClassUID": "1.2"}, "not supported for series searches"),
        ("/series", {"SeriesNumber": "one"}, "SeriesNumber"),
        ("/instances", {"InstanceNumber": "1.5"}, "InstanceNumber"),
        ("/instances", {"SOPInstanceUID": "1.*"}, "not a valid UID"),
        ("/series", {"PerformedProcedureStepStartDate": "2024"}, "PerformedProcedureStepStartDate"),
    ],
)
def test_bad_series_and_instance_queries(client, path, params, reason):
    response = client.get(f"/dicomweb{path}", params=params)
    assert response.status_code == 400, response.text
    assert reason in response.json()["detail"]


def test_performed_procedure_step_start_matching(client, hub, tmp_path):
    from tests.api.helpers import ingest_study

    study = ingest_study(
        hub,
        tmp_path / "pps",
        PerformedProcedureStepStartDate="20240510",
        PerformedProcedureStepStartTime="093000",
    )
    params = {"PerformedProcedureStepStartDate": "20240501-20240531"}
    assert values(search(client, "/series", params), "0020000D") == [study]
    assert search(client, "/series", {"PerformedProcedureStepStartTime": "10-"}) == []
    (item,) = search(client, "/series", {"PerformedProcedureStepStartTime": "09-10"})
    assert item["00400244"] == {"vr": "DA", "Value": ["20240510"]}


def test_migration_fills_the_search_columns_of_studies_indexed_before_it(hub, tmp_path):
    from alembic import command
    from sqlalchemy import select

    from imaging_hub.db.migrate import alembic_config, upgrade
    from imaging_hub.db.models import Series, Study
    from tests.api.helpers import ingest_study

    uid = ingest_study(
        hub,
        tmp_path / "old",
        StudyDate="20240310",
        StudyTime="1015",
        PerformedProcedureStepStartDate="20240310",
        PerformedProcedureStepStartTime="1016",
    )
    url = hub.settings.resolved_database_url
    hub.db.dispose()
    command.downgrade(alembic_config(url), "0006")
    upgrade(url, "0007")
    with hub.db.read() as s:
        study = s.execute(select(Study).where(Study.study_uid == uid)).scalar_one()
        series = s.execute(select(Series).where(Series.study_pk == study.id)).scalar_one()
    assert study.sort_key == "20240310101500"
    assert (str(series.performed_date), series.performed_time) == ("2024-03-10", "101600")


def test_large_scoped_results_are_streamed_and_still_report_truncation(client, corpus, monkeypatch):
    monkeypatch.setattr(qido, "MAX_LIMIT", 1)  # every scoped search now takes the streamed path
    monkeypatch.setattr(qido, "MAX_SCOPED_LIMIT", 3)
    monkeypatch.setattr(qido, "BATCH", 2)
    probes = []
    real_probe = qido.has_result_at
    monkeypatch.setattr(qido, "has_result_at", lambda *a: probes.append(a) or real_probe(*a))
    response = client.get(f"/dicomweb/studies/{corpus['A']}/instances")
    assert len(probes) == 1  # the streamed path asks the index first whether more exist
    assert len(response.json()) == 3
    assert "Additional results" in response.headers["warning"]
    rest = client.get(f"/dicomweb/studies/{corpus['A']}/instances", params={"offset": 2})
    assert len(rest.json()) == 2
    assert "warning" not in rest.headers


PLAN_CASES = [
    ({"PatientName": "DOE*"}, "ix_source_identity_name_norm (name_norm>? AND name_norm<?)"),
    ({"PatientID": "P1"}, "ix_source_identity_patient_id (patient_id=?)"),
    ({"StudyDate": "20240101-20240131"}, "COVERING INDEX ix_study_sort_key_id (sort_key>? AND"),
    ({}, "SCAN study USING COVERING INDEX ix_study_sort_key_id"),  # paging reads no study rows
    ({"PatientName": "jane doe"}, "COVERING INDEX ix_study_identity_sort"),
]


@pytest.mark.parametrize(("matches", "expected"), PLAN_CASES)
def test_study_searches_use_the_indexes_on_sqlite(hub, matches, expected):
    """The query plans the 100,000-study benchmark depends on (docs/benchmarks.md)."""
    if not hub.db.is_sqlite:
        pytest.skip("SQLite's planner only")
    from sqlalchemy.dialects import sqlite

    from imaging_hub.query import Level, Search, _statement

    fuzzy = " " in matches.get("PatientName", "")
    statement = _statement(Search(Level.STUDY, matches, fuzzy=fuzzy), 101, 5000)
    sql = str(statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    with hub.db.engine.connect() as conn:
        plan = " | ".join(row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
    assert expected in plan, plan


def test_dicom_json_of_every_kind_of_value(client, hub, tmp_path):
    """PS3.18 F.2: PN groups, AT, IS/DS numbers, sequences, InlineBinary and BulkDataURI."""
    from pydicom import dcmread
    from pydicom.dataset import Dataset as Ds

    from imaging_hub.ingest import store_instance
    from tests.api.helpers import run_pending_jobs
    from tests.support import make_study

    (path,) = make_study(tmp_path / "vr", PatientName="Yamada^Tarou=山田^太郎=やまだ^たろう")
    ds = dcmread(path)
    ds.FrameIncrementPointer = [0x00181063, 0x00181065]  # AT
    ds.PixelSpacing = ["0.5", "0.25"]  # DS
    ds.SliceThickness = "2.50"
    ds.add_new(0x00091010, "LO", "private creator")  # private group 9
    item = Ds()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    ds.ReferencedImageSequence = [item]
    ds.add_new(0x00189601, "OB", b"\x01\x02\x03\x04")  # small binary: inline
    ds.add_new(0x00420011, "OB", b"\x05" * 4096)  # large binary: bulk data
    ds.save_as(path, enforce_file_format=True)
    store_instance(hub, path, source="test")
    run_pending_jobs(hub)
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    (item_json,) = client.get(
        f"/dicomweb/studies/{study}/series/{series}/instances",
        params={"includefield": "all"},
    ).json()
    assert item_json["00100010"] == {
        "vr": "PN",
        "Value": [
            {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
        ],
    }
    assert item_json["00280009"] == {"vr": "AT", "Value": ["00181063", "00181065"]}
    assert item_json["00280030"] == {"vr": "DS", "Value": [0.5, 0.25]}
    assert item_json["00180050"] == {"vr": "DS", "Value": [2.5]}
    assert item_json["00200013"] == {"vr": "IS", "Value": [1]}
    assert item_json["00081140"]["vr"] == "SQ"
    assert item_json["00081140"]["Value"][0]["00081155"] == {"vr": "UI", "Value": ["1.2.3.4"]}
    assert item_json["00189601"] == {"vr": "OB", "InlineBinary": "AQIDBA=="}
    instance_url = f"http://testserver/dicomweb/studies/{study}/series/{series}/instances/{sop}"
    assert item_json["00420011"] == {"vr": "OB", "BulkDataURI": instance_url + "/bulkdata/00420011"}
    assert item_json["00081190"] == {"vr": "UR", "Value": [instance_url]}
    back = Ds.from_json(item_json)
    for keyword in ("PatientName", "FrameIncrementPointer", "PixelSpacing", "Rows"):
        assert back[keyword].value == ds[keyword].value, keyword
    assert back.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.3.4"

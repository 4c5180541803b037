"""The matching primitives (PS3.4 C.2.2.2) that QIDO-RS and C-FIND share."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import column
from sqlalchemy.dialects import sqlite

from imaging_hub.dicom.matching import (
    date_condition,
    is_universal,
    like_pattern,
    multi_value_condition,
    parse_date_range,
    pn_condition,
    string_condition,
    uid_list_condition,
)
from imaging_hub.errors import InvalidUid


def sql(condition) -> str:
    """A condition rendered with its values inlined."""
    return str(condition.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))


def test_universal_values():
    assert all(is_universal(v) for v in (None, "", "  ", "*"))
    assert not is_universal("**x")
    col = column("c")
    assert string_condition(col, "*") is None
    assert pn_condition(col, "") is None
    assert date_condition(col, None) is None
    assert uid_list_condition(col, "") is None
    assert multi_value_condition(col, "*", what="ModalitiesInStudy") is None


def test_like_pattern_escapes_sql_wildcards():
    assert like_pattern("A*B?") == "A%B_"
    assert like_pattern("50%_!x*") == "50!%!_!!x%"


def test_string_conditions():
    col = column("c")
    assert sql(string_condition(col, "ABC ")) == "c = 'ABC'"
    assert sql(string_condition(col, "A_*")) == "c LIKE 'A!_%' ESCAPE '!'"
    assert sql(pn_condition(col, "doe^jöhn^^")) == "c = 'DOE^JOHN'"
    assert sql(pn_condition(col, "doe*")) == "c LIKE 'DOE%' ESCAPE '!'"


@pytest.mark.parametrize(
    ("value", "bounds"),
    [
        ("20240310", (dt.date(2024, 3, 10), dt.date(2024, 3, 10))),
        ("20240101-20241231", (dt.date(2024, 1, 1), dt.date(2024, 12, 31))),
        ("-20240101", (None, dt.date(2024, 1, 1))),
        ("20240101-", (dt.date(2024, 1, 1), None)),
        ("", None),
    ],
)
def test_date_ranges(value, bounds):
    assert parse_date_range(value) == bounds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2024031", "StudyDate: '2024031' is not a date in the form YYYYMMDD"),
        ("20241301", "StudyDate: '20241301' is not a valid calendar date"),
        ("20240102-20240101", "StudyDate: the range '20240102-20240101' ends before it starts"),
        ("-", "StudyDate: '-' is not a date or a date range"),
        ("2024-01-01", "StudyDate: '2024-01-01' is not a date or a date range"),
    ],
)
def test_bad_dates_raise_precise_errors(value, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        date_condition(column("d"), value, what="StudyDate")


def test_uid_lists():
    col = column("u")
    assert sql(uid_list_condition(col, "1.2.3")) == "u = '1.2.3'"
    assert sql(uid_list_condition(col, "1.2.3, 1.2.4\\1.5")) == "u IN ('1.2.3', '1.2.4', '1.5')"
    with pytest.raises(InvalidUid, match="StudyInstanceUID"):
        uid_list_condition(col, "1.2.3,1.2.x", what="StudyInstanceUID")
    with pytest.raises(InvalidUid):
        uid_list_condition(col, "1.2.3,,1.4")


def test_multi_value_codes():
    col = column("m")
    assert sql(multi_value_condition(col, "MR", what="M")) == "m LIKE '%\\MR\\%' ESCAPE '!'"
    both = sql(multi_value_condition(col, "CT,RT_X", what="M"))
    assert both == "m LIKE '%\\CT\\%' ESCAPE '!' OR m LIKE '%\\RT!_X\\%' ESCAPE '!'"
    with pytest.raises(ValueError, match="code string"):
        multi_value_condition(col, "M?", what="M")


def pg_sql(condition) -> str:
    """A condition rendered for PostgreSQL with its values inlined."""
    from sqlalchemy.dialects import postgresql

    compiled = condition.compile(
        dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
    )
    return str(compiled).replace("%%", "%")


def test_indexed_wildcards_are_an_index_range_plus_glob_on_sqlite():
    from imaging_hub.dicom.matching import wildcard_condition

    col = column("c")
    assert sql(wildcard_condition(col, "DOE*")) == "(c >= 'DOE' AND c < 'DOF' AND c GLOB 'DOE*')"
    assert sql(wildcard_condition(col, "*OE[1]?")) == "c GLOB '*OE[[]1]?'"
    assert pg_sql(wildcard_condition(col, "A_B*")) == "c LIKE 'A!_B%' ESCAPE '!'"
    assert sql(pn_condition(col, "doe^j*", indexed=True)).endswith("c GLOB 'DOE^J*')")


def test_fuzzy_person_names_match_word_prefixes_in_any_order():
    from imaging_hub.dicom.matching import fuzzy_pn_condition

    col = column("n")
    words = "(' ' || replace(n, '^', ' '))"
    assert sql(fuzzy_pn_condition(col, "Jöhn doe")) == (
        f"{words} LIKE '% JOHN%' ESCAPE '!' AND {words} LIKE '% DOE%' ESCAPE '!'"
    )
    assert fuzzy_pn_condition(col, " * ") is None


def test_dates_match_the_study_sort_key():
    from imaging_hub.dicom.matching import sort_key_date_condition

    col = column("k")
    assert sql(sort_key_date_condition(col, "20240131")) == "k >= '20240131' AND k < '20240201'"
    assert sql(sort_key_date_condition(col, "-20241231")) == "k > '' AND k < '20250101'"
    assert sql(sort_key_date_condition(col, "99991231-")) == "k >= '99991231'"


def test_times_and_integers():
    from imaging_hub.dicom.matching import int_condition, time_condition

    col = column("t")
    assert sql(time_condition(col, "1015")) == "t = '101500'"
    assert sql(time_condition(col, "10-1130")) == "t >= '100000' AND t <= '113059.999999'"
    for bad in ("2400", "1260", "10-09", "a", "1-2-3"):
        with pytest.raises(ValueError, match="StudyTime"):
            time_condition(col, bad, what="StudyTime")
    assert sql(int_condition(col, " 7 ")) == "t = 7"
    for bad in ("1.0", "x", "99999999999"):
        with pytest.raises(ValueError, match="SeriesNumber"):
            int_condition(col, bad, what="SeriesNumber")

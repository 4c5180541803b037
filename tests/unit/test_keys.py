"""Index keys: UID validation and value normalisation."""

import datetime as dt

import pytest
from pydicom import dcmread

from imaging_hub.dicom.keys import extract_keys, normalize_pn, normalize_time, parse_da
from imaging_hub.dicom.uids import is_valid_uid, validate_uid
from imaging_hub.errors import InvalidUid
from tests.support import testdata


@pytest.mark.parametrize(
    "uid", ["1.2.840.10008.1.2", "1.2.3", "2.25.123456789012345678901234567890", "1"]
)
def test_valid_uids(uid: str) -> None:
    assert is_valid_uid(uid)


@pytest.mark.parametrize(
    "uid",
    ["", "1..2", "1.2.", ".1", "1.2.a", "../etc/passwd", "1.2.3/4", "1.2.3\n", "1" * 65, None, 12],
)
def test_invalid_uids(uid: object) -> None:
    assert not is_valid_uid(uid)
    with pytest.raises(InvalidUid):
        validate_uid(uid)


def test_validate_strips_dicom_padding() -> None:
    assert validate_uid("1.2.3\x00") == "1.2.3"


def test_normalize_pn() -> None:
    assert normalize_pn("Doe^John^^^") == "DOE^JOHN"
    assert normalize_pn("Müller^José") == "MULLER^JOSE"
    assert normalize_pn("Yamada^Tarou=山田^太郎") == "YAMADA^TAROU"
    assert normalize_pn("") is None


def test_dates_and_times() -> None:
    assert parse_da("20040119") == dt.date(2004, 1, 19)
    assert parse_da("2004.01.19") == dt.date(2004, 1, 19)
    assert parse_da("20041319") is None
    assert parse_da("garbage") is None
    assert normalize_time("0727") == "072700"
    assert normalize_time("07:27:30.5") == "072730.5"
    assert normalize_time("7") is None


def test_extract_keys_from_ct_small() -> None:
    keys = extract_keys(dcmread(testdata("CT_small.dcm"), stop_before_pixels=True))
    assert keys.study.study_uid == "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
    assert keys.series.modality == "CT"
    assert keys.patient.name_norm == "CompressedSamples^CT1".upper()
    assert keys.study.study_date == dt.date(2004, 1, 19)
    assert keys.instance.rows == 128
    assert "7FE00010" not in keys.instance.dicom_json
    assert keys.patient.dicom_json["00100010"]["Value"][0]["Alphabetic"] == "CompressedSamples^CT1"
    assert "0020000D" in keys.study.dicom_json and "00100010" not in keys.study.dicom_json
    assert keys.series.dicom_json["00080060"]["Value"] == ["CT"]

"""Index keys: the typed values the index stores for matching, read from a dataset header."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from imaging_hub.dicom.json import level_json
from imaging_hub.dicom.uids import validate_uid
from imaging_hub.errors import InvalidDicom

__all__ = [
    "IndexKeys",
    "InstanceKeys",
    "PatientKeys",
    "SeriesKeys",
    "StudyKeys",
    "extract_keys",
    "normalize_pn",
    "normalize_text",
    "normalize_time",
    "parse_da",
    "sort_key",
]


#: The longest normalised value the index keeps (the size of its *_norm columns).
MAX_NORM = 256


def normalize_text(value: object) -> str | None:
    """Upper-case, accent-free, whitespace-folded text for case-insensitive matching."""
    if value is None:
        return None
    text = unicodedata.normalize("NFKD", str(value))
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = " ".join(text.upper().split())[:MAX_NORM]
    return text or None


def normalize_pn(value: object) -> str | None:
    """Normalise a person name (PS3.5 6.2 PN) to its alphabetic group for matching.

    Components stay separated by ``^``; trailing empty components are dropped, so that
    ``Doe^John^^^`` and ``DOE^JOHN`` normalise the same.
    """
    if value is None:
        return None
    alphabetic = str(value).split("=", 1)[0]
    parts = [normalize_text(p) or "" for p in alphabetic.split("^")]
    while parts and not parts[-1]:
        parts.pop()
    return "^".join(parts)[:MAX_NORM] or None


def parse_da(value: object) -> dt.date | None:
    """Parse a DICOM DA value (YYYYMMDD, or the old YYYY.MM.DD); None when absent or invalid."""
    if not value:
        return None
    text = str(value).strip().replace(".", "")
    if not re.fullmatch(r"\d{8}", text):
        return None
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def normalize_time(value: object) -> str | None:
    """Normalise a DICOM TM value to HHMMSS[.ffffff] so that string order is time order."""
    if not value:
        return None
    text = str(value).strip().replace(":", "")
    match = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?", text)
    if not match:
        return None
    hh, mm, ss, frac = match.groups()
    return f"{hh}{mm or '00'}{ss or '00'}{frac or ''}"


def sort_key(study_date: dt.date | None, study_time: str | None) -> str:
    """A study's place in time as one string (YYYYMMDD + normalised TM; '' without a date)."""
    if study_date is None:
        return ""
    return study_date.strftime("%Y%m%d") + (study_time or "")


INT32 = 2**31 - 1


def _int_or_none(value: object) -> int | None:
    """An IS value as an int for a 32-bit column; None when absent, invalid or out of range."""
    try:
        number = int(str(value).strip()) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and -INT32 <= number <= INT32 else None


def _str_or_none(value: object, limit: int = 64) -> str | None:
    """A value as text for a column of limit characters: NUL-free, trimmed, None when empty.

    PostgreSQL refuses NUL characters and over-long values; the full value stays in the file.
    """
    if value is None:
        return None
    text = str(value).replace("\x00", "").strip()[:limit]
    return text or None


@dataclass(frozen=True, slots=True)
class PatientKeys:
    """Patient identity as received."""

    patient_id: str
    issuer: str
    name: str | None
    name_norm: str | None
    birth_date: dt.date | None
    sex: str | None
    dicom_json: dict[str, Any]

    @property
    def identity_key(self) -> str:
        """A digest of the received demographics: same ID + other demographics = other identity."""
        raw = "|".join([self.name_norm or "", str(self.birth_date or ""), self.sex or ""])
        return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StudyKeys:
    """Study-level keys."""

    study_uid: str
    study_date: dt.date | None
    study_time: str | None
    accession_number: str | None
    study_id: str | None
    description: str | None
    referring_physician_name: str | None
    dicom_json: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SeriesKeys:
    """Series-level keys."""

    series_uid: str
    modality: str | None
    series_number: int | None
    description: str | None
    body_part_examined: str | None
    dicom_json: dict[str, Any]
    performed_date: dt.date | None = None
    performed_time: str | None = None


@dataclass(frozen=True, slots=True)
class InstanceKeys:
    """Instance-level keys."""

    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None
    number_of_frames: int | None
    rows: int | None
    columns: int | None
    dicom_json: dict[str, Any]


@dataclass(frozen=True, slots=True)
class IndexKeys:
    """Everything the index stores about one instance."""

    patient: PatientKeys
    study: StudyKeys
    series: SeriesKeys
    instance: InstanceKeys


def extract_keys(ds: Dataset) -> IndexKeys:
    """Read the index keys of a dataset header; raises InvalidDicom for missing or bad UIDs."""
    try:
        study_uid = validate_uid(ds.get("StudyInstanceUID"), what="StudyInstanceUID")
        series_uid = validate_uid(ds.get("SeriesInstanceUID"), what="SeriesInstanceUID")
        sop_uid = validate_uid(ds.get("SOPInstanceUID"), what="SOPInstanceUID")
        sop_class = validate_uid(ds.get("SOPClassUID"), what="SOPClassUID")
    except InvalidDicom:
        raise
    except Exception as exc:  # a value pydicom cannot even decode
        raise InvalidDicom(f"cannot read the instance's UIDs: {exc}") from exc
    levels = level_json(ds)
    name = _str_or_none(ds.get("PatientName"), 324)
    patient = PatientKeys(
        patient_id=_str_or_none(ds.get("PatientID")) or "",
        issuer=_str_or_none(ds.get("IssuerOfPatientID")) or "",
        name=name,
        name_norm=normalize_pn(name),
        birth_date=parse_da(ds.get("PatientBirthDate")),
        sex=_str_or_none(ds.get("PatientSex"), 16),
        dicom_json=levels.patient,
    )
    referring = _str_or_none(ds.get("ReferringPhysicianName"), 324)
    study = StudyKeys(
        study_uid=study_uid,
        study_date=parse_da(ds.get("StudyDate")),
        study_time=normalize_time(ds.get("StudyTime")),
        accession_number=_str_or_none(ds.get("AccessionNumber")),
        study_id=_str_or_none(ds.get("StudyID")),
        description=_str_or_none(ds.get("StudyDescription"), 256),
        referring_physician_name=referring,
        dicom_json=levels.study,
    )
    series = SeriesKeys(
        series_uid=series_uid,
        modality=_str_or_none(ds.get("Modality"), 16),
        series_number=_int_or_none(ds.get("SeriesNumber")),
        description=_str_or_none(ds.get("SeriesDescription"), 256),
        body_part_examined=_str_or_none(ds.get("BodyPartExamined")),
        dicom_json=levels.series,
        performed_date=parse_da(ds.get("PerformedProcedureStepStartDate")),
        performed_time=normalize_time(ds.get("PerformedProcedureStepStartTime")),
    )
    instance = InstanceKeys(
        sop_instance_uid=sop_uid,
        sop_class_uid=sop_class,
        instance_number=_int_or_none(ds.get("InstanceNumber")),
        number_of_frames=_int_or_none(ds.get("NumberOfFrames")),
        rows=_int_or_none(ds.get("Rows")),
        columns=_int_or_none(ds.get("Columns")),
        dicom_json=levels.instance,
    )
    return IndexKeys(patient=patient, study=study, series=series, instance=instance)

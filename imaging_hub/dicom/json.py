"""DICOM JSON (PS3.18 F.2) of a dataset header, split by query/retrieve level, without bulk data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

__all__ = [
    "BULK_THRESHOLD",
    "PATIENT_TAGS",
    "SERIES_TAGS",
    "STUDY_TAGS",
    "Levels",
    "bulk_uris",
    "level_json",
]

#: Binary values longer than this are not kept in the index; they are served from the file.
BULK_THRESHOLD = 1024


def _tags(*keywords: str) -> frozenset[str]:
    tags = []
    for kw in keywords:
        tag = tag_for_keyword(kw)
        if tag is None:
            raise KeyError(kw)
        tags.append(f"{tag:08X}")
    return frozenset(tags)


#: Patient-level attributes (PS3.4 C.6.1.1.2 plus common extras).
PATIENT_TAGS = _tags(
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "EthnicGroup",
    "PatientComments",
)

#: Study-level attributes (PS3.4 C.6.1.1.3 and the study-level QIDO-RS return keys).
STUDY_TAGS = _tags(
    "SpecificCharacterSet",
    "TimezoneOffsetFromUTC",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyID",
    "StudyDescription",
    "ReferringPhysicianName",
    "ReferringPhysicianIdentificationSequence",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "ProcedureCodeSequence",
    "AdmittingDiagnosesDescription",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "Occupation",
    "AdditionalPatientHistory",
)

#: Series-level attributes (PS3.4 C.6.1.1.4 and the series-level QIDO-RS return keys).
SERIES_TAGS = _tags(
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "SeriesDate",
    "SeriesTime",
    "BodyPartExamined",
    "Laterality",
    "ProtocolName",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "RequestAttributesSequence",
    "Manufacturer",
    "ManufacturerModelName",
    "InstitutionName",
    "StationName",
    "OperatorsName",
    "PerformingPhysicianName",
)


@dataclass(frozen=True, slots=True)
class Levels:
    """DICOM JSON of one instance split into patient, study, series and full-instance parts."""

    patient: dict[str, Any]
    study: dict[str, Any]
    series: dict[str, Any]
    instance: dict[str, Any]


def _bulk_uri(element: DataElement) -> str:
    """Name a bulk value that was left out of the index (the retrieve layer resolves it)."""
    return f"bulkdata/{element.tag:08X}"


def _without_nul(value: Any) -> Any:
    """A copy of a JSON value with NUL characters removed from every string (JSONB refuses them)."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {k: _without_nul(v) for k, v in value.items()}
    return value


def level_json(ds: Dataset) -> Levels:
    """DICOM JSON of a header without large binary values, split by level."""
    full = _without_nul(
        ds.to_json_dict(
            bulk_data_threshold=BULK_THRESHOLD,
            bulk_data_element_handler=_bulk_uri,
            suppress_invalid_tags=True,
        )
    )
    patient = {k: v for k, v in full.items() if k in PATIENT_TAGS}
    study = {k: v for k, v in full.items() if k in STUDY_TAGS}
    series = {k: v for k, v in full.items() if k in SERIES_TAGS}
    return Levels(patient=patient, study=study, series=series, instance=full)


def bulk_uris(dicom_json: dict[str, Any], instance_url: str, path: str = "") -> dict[str, Any]:
    """A copy of DICOM JSON whose BulkDataURIs (PS3.18 F.2.6) are absolute, by element path.

    A top-level element's URI is ``{instance_url}/bulkdata/{tag}``; one inside a sequence
    names the sequence, the item index (from 0) and the element in turn, e.g.
    ``bulkdata/00540016/0/00181072``.
    """
    out: dict[str, Any] = {}
    for tag, element in dicom_json.items():
        if isinstance(element, dict) and "BulkDataURI" in element:
            element = {**element, "BulkDataURI": f"{instance_url}/bulkdata/{path}{tag}"}
        elif isinstance(element, dict) and element.get("vr") == "SQ" and element.get("Value"):
            items = [
                bulk_uris(item, instance_url, f"{path}{tag}/{i}/")
                if isinstance(item, dict)
                else item
                for i, item in enumerate(element["Value"])
            ]
            element = {**element, "Value": items}
        out[tag] = element
    return out

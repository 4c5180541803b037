"""QIDO-RS study search (PS3.18 10.6): ``GET /dicomweb/studies``.

Query parameters (PS3.18 8.3.4): ``{attributeID}={value}`` with a keyword (``PatientID``) or a
tag (``00100020``), ``includefield`` (repeatable, comma-separated, or ``all``), ``limit``,
``offset`` and ``fuzzymatching``. ``limit`` defaults to 100 and is capped at 1000 (0 means the
cap); a truncated result carries a ``Warning: 299`` header (PS3.18 8.3.4.4). Unknown
attributes, unsupported matching keys and malformed values answer 400 with the reason; no
match answers 200 with ``[]``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydicom.datadict import keyword_for_tag, tag_for_keyword

from imaging_hub.query import ALL_FIELDS, StudyFilters, search_studies, study_dicom_json, tag_of
from viewer_api.deps import ReadSession

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "router"]

router = APIRouter(tags=["dicomweb"])

DICOM_JSON = "application/dicom+json"
DEFAULT_LIMIT = 100
#: The most results one response carries; a larger ``limit`` is reduced to this.
MAX_LIMIT = 1000
#: Larger limit or offset values are refused (they would overflow the database's integers).
MAX_OFFSET = 10**9
WARN_AGENT = "imaging-hub"
TRUNCATED = "The number of results exceeded the maximum supported by the server. " + (
    "Additional results can be requested."
)
NO_FUZZY = "The fuzzymatching parameter is not supported. Only literal matching has been performed."

#: Study-level matching keys (keyword -> StudyFilters field).
STUDY_KEYS: dict[str, str] = {
    "PatientID": "patient_id",
    "IssuerOfPatientID": "issuer_of_patient_id",
    "PatientName": "patient_name",
    "PatientBirthDate": "patient_birth_date",
    "StudyInstanceUID": "study_uids",
    "StudyDate": "study_date",
    "AccessionNumber": "accession_number",
    "StudyID": "study_id",
    "StudyDescription": "study_description",
    "ReferringPhysicianName": "referring_physician_name",
    "ModalitiesInStudy": "modalities_in_study",
}
#: Keys whose repeated parameters add to one list instead of being refused.
LIST_KEYS = frozenset({"StudyInstanceUID", "ModalitiesInStudy"})

_TAG_RE = re.compile(r"[0-9A-Fa-f]{8}")


@dataclass
class QidoQuery:
    """A parsed QIDO-RS query string."""

    filters: dict[str, str] = field(default_factory=dict)
    include: set[str] = field(default_factory=set)
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    fuzzy: bool = False


def attribute_keyword(key: str) -> str:
    """The DICOM keyword a query parameter names, by keyword or by tag (PS3.18 8.3.4.1)."""
    if _TAG_RE.fullmatch(key):
        keyword = keyword_for_tag(int(key, 16))
        if not keyword:
            raise ValueError(f"unknown attribute tag {key}")
        return keyword
    if tag_for_keyword(key) is None:
        raise ValueError(f"unknown query parameter or attribute {key!r}")
    return key


def _non_negative(name: str, value: str) -> int:
    """Parse a non-negative integer parameter."""
    if not (value.isascii() and value.isdigit()):
        raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
    number = int(value)
    if number > MAX_OFFSET:
        raise ValueError(f"{name} must be at most {MAX_OFFSET}")
    return number


def _add_includefield(query: QidoQuery, value: str) -> None:
    """Add the attributes of one includefield parameter (PS3.18 8.3.4.3)."""
    for item in (part.strip() for part in value.split(",")):
        if item == ALL_FIELDS:
            query.include.add(ALL_FIELDS)
        elif item:
            query.include.add(tag_of(attribute_keyword(item)))


def _add_match(query: QidoQuery, key: str, value: str) -> None:
    """Add one attribute matching parameter (PS3.18 8.3.4.1)."""
    keyword = attribute_keyword(key)
    if keyword not in STUDY_KEYS:
        raise ValueError(f"matching on {keyword} is not supported for studies")
    name = STUDY_KEYS[keyword]
    if name in query.filters:
        if keyword not in LIST_KEYS:
            raise ValueError(f"{keyword} is given more than once")
        value = f"{query.filters[name]},{value}"
    query.filters[name] = value
    query.include.add(tag_of(keyword))


def parse_query(items: list[tuple[str, str]]) -> QidoQuery:
    """Parse the query string of a study search; raises ValueError with the reason."""
    query = QidoQuery()
    for key, value in items:
        if key == "limit":
            query.limit = _non_negative("limit", value) or MAX_LIMIT
        elif key == "offset":
            query.offset = _non_negative("offset", value)
        elif key == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise ValueError(f"fuzzymatching must be true or false, not {value!r}")
            query.fuzzy = value.lower() == "true"
        elif key == "includefield":
            _add_includefield(query, value)
        else:
            _add_match(query, key, value)
    query.limit = min(query.limit, MAX_LIMIT)
    return query


def _warning(text: str) -> str:
    """A Warning header value (RFC 7234 5.5) with the code QIDO-RS uses (PS3.18 8.3.4.4)."""
    return f'299 {WARN_AGENT} "{text}"'


@router.get("/studies", response_class=Response)
def search_for_studies(request: Request, session: ReadSession) -> Response:
    """Search for studies (QIDO-RS, PS3.18 10.6) and answer their DICOM JSON."""
    try:
        query = parse_query(request.query_params.multi_items())
        filters = StudyFilters(**query.filters)
        rows = search_studies(session, filters=filters, limit=query.limit + 1, offset=query.offset)
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    truncated = len(rows) > query.limit
    body: list[dict[str, Any]] = [
        study_dicom_json(row, query.include) for row in rows[: query.limit]
    ]
    response = Response(content=json.dumps(body), media_type=DICOM_JSON)
    if truncated:
        response.headers.append("Warning", _warning(TRUNCATED))
    if query.fuzzy:
        response.headers.append("Warning", _warning(NO_FUZZY))
    return response

"""QIDO-RS (PS3.18 10.6): search for studies, series and instances at every level.

Resources: ``/studies``, ``/studies/{study}/series``, ``/studies/{study}/series/{series}/
instances``, ``/studies/{study}/instances``, ``/series`` and ``/instances``.

Query parameters (PS3.18 8.3.4): ``{attributeID}={value}`` with a keyword (``PatientID``) or a
tag (``00100020``), ``includefield`` (repeatable, comma-separated, or ``all``), ``limit``,
``offset``, ``fuzzymatching`` (person names), ``emptyvaluematching`` and
``multiplevaluematching`` (accepted; ``true`` is answered with a Warning, PS3.18 8.3.4.5-6).
Searches over all studies return at most 1000 results (``limit`` defaults to 100); searches in
one study or series at most 10,000 (and by default all of them, up to that). A truncated result
carries ``Warning: 299`` (PS3.18 8.3.4.4). Unknown attributes, unsupported matching keys and
malformed values answer 400 with the reason; no match answers 200 with ``[]``. The JSON array
is streamed, a batch of results at a time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import StreamingResponse
from pydicom.datadict import keyword_for_tag, tag_for_keyword

from imaging_hub.errors import InvalidUid
from imaging_hub.hub import Hub
from imaging_hub.query import (
    ALL_FIELDS,
    Level,
    Scope,
    Search,
    has_result_at,
    iter_search,
    result_json,
    tag_of,
)
from imaging_hub.query import search as search_index
from imaging_hub.retrieve import NotAcceptable
from viewer_api.deps import HubDep
from viewer_api.dicomweb.urls import dicomweb_base
from viewer_api.multipart import media_type

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "MAX_SCOPED_LIMIT", "parse_query", "router"]

router = APIRouter(tags=["dicomweb"])

DICOM_JSON = "application/dicom+json"
#: What a search over all studies, series or instances returns when no limit is given.
DEFAULT_LIMIT = 100
#: The most results one response over all studies carries; a larger ``limit`` is reduced.
MAX_LIMIT = 1000
#: The most results of a search inside one study or series (also its default limit).
MAX_SCOPED_LIMIT = 10_000
#: Larger limit or offset values are refused (they would overflow the database's integers).
MAX_OFFSET = 10**9
#: Results serialised per chunk of the streamed answer.
BATCH = 100
_encode = msgspec.json.Encoder().encode
WARN_AGENT = "imaging-hub"
TRUNCATED = "The number of results exceeded the maximum supported by the server. " + (
    "Additional results can be requested."
)
NOT_SUPPORTED = "The {name} parameter is not supported. {what} has not been performed."
_UNSUPPORTED_FLAGS = {
    "emptyvaluematching": "Empty Value Matching",
    "multiplevaluematching": "Multiple Value Matching",
}
#: Keys whose repeated parameters add to one list (PS3.18 8.3.4.1) instead of being refused.
LIST_KEYS = frozenset(
    {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "ModalitiesInStudy"}
)
_ACCEPTED = frozenset({DICOM_JSON, "application/json", "application/*", "*/*"})
_TAG_RE = re.compile(r"[0-9A-Fa-f]{8}")


@dataclass
class QidoQuery:
    """A parsed QIDO-RS query string."""

    matches: dict[str, str] = field(default_factory=dict)
    include: set[str] = field(default_factory=set)
    limit: int | None = None
    offset: int = 0
    fuzzy: bool = False
    warnings: list[str] = field(default_factory=list)


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


def _boolean(name: str, value: str) -> bool:
    """Parse a true/false parameter."""
    if value.lower() not in ("true", "false"):
        raise ValueError(f"{name} must be true or false, not {value!r}")
    return value.lower() == "true"


def _add_includefield(query: QidoQuery, value: str) -> None:
    """Add the attributes of one includefield parameter (PS3.18 8.3.4.3).

    A path into a sequence (``RequestAttributesSequence.RequestedProcedureID``) includes the
    whole top-level sequence.
    """
    for item in (part.strip() for part in value.split(",")):
        if item == ALL_FIELDS:
            query.include.add(ALL_FIELDS)
        elif item:
            query.include.add(tag_of(attribute_keyword(item.split(".")[0])))


def _add_match(query: QidoQuery, key: str, value: str) -> None:
    """Add one attribute matching parameter (PS3.18 8.3.4.1)."""
    if "." in key:
        attribute_keyword(key.split(".")[0])
        raise ValueError(f"matching on attributes inside sequences ({key}) is not supported")
    keyword = attribute_keyword(key)
    if keyword in query.matches:
        if keyword not in LIST_KEYS:
            raise ValueError(f"{keyword} is given more than once")
        value = f"{query.matches[keyword]},{value}"
    query.matches[keyword] = value
    query.include.add(tag_of(keyword))


def parse_query(items: list[tuple[str, str]]) -> QidoQuery:
    """Parse the (percent-decoded) query string of a search; raises ValueError with the reason."""
    query = QidoQuery()
    for key, value in items:
        if key == "limit":
            query.limit = _non_negative("limit", value)
        elif key == "offset":
            query.offset = _non_negative("offset", value)
        elif key == "fuzzymatching":
            query.fuzzy = _boolean(key, value)
        elif key in _UNSUPPORTED_FLAGS:
            if _boolean(key, value):
                what = _UNSUPPORTED_FLAGS[key]
                query.warnings.append(NOT_SUPPORTED.format(name=key, what=what))
        elif key == "includefield":
            _add_includefield(query, value)
        else:
            _add_match(query, key, value)
    return query


def _warning(text: str) -> str:
    """A Warning header value (RFC 7234 5.5) with the code QIDO-RS uses (PS3.18 8.3.4.4)."""
    return f'299 {WARN_AGENT} "{text}"'


def _check_accept(accept: str | None) -> None:
    """Results are DICOM JSON only (PS3.18 10.6.1.2); an Accept that allows none is 406."""
    if not accept:
        return
    kinds = {media_type(item)[0] for item in accept.split(",") if item.strip()}
    if not kinds & _ACCEPTED:
        raise NotAcceptable(f"search results are offered as {DICOM_JSON} only")


def _parents(search: Search) -> dict[str, bool]:
    """Which upper levels' attributes the results of a search carry (PS3.18 10.6.3.3)."""
    return {
        "with_study": search.scope.study_uid is None,
        "with_series": search.scope.series_uid is None and search.level == Level.INSTANCE,
    }


def _body(hub: Hub, search: Search, query: QidoQuery, limit: int, base_url: str) -> Iterator[bytes]:
    """The JSON array of the results, BATCH results per chunk, from a session of its own."""
    parents = _parents(search)
    yield b"["
    with hub.db.read() as session:
        batch: list[bytes] = []
        first = True
        for found in iter_search(session, search, limit=limit, offset=query.offset, batch=BATCH):
            item = result_json(found, search.level, query.include, base_url=base_url, **parents)
            batch.append(_encode(item))
            if len(batch) == BATCH:
                yield (b"" if first else b",") + b",".join(batch)
                batch, first = [], False
        if batch:
            yield (b"" if first else b",") + b",".join(batch)
    yield b"]"


def _answer(
    hub: Hub, search: Search, query: QidoQuery, limit: int, base_url: str
) -> tuple[Response, bool]:
    """The response and whether it is truncated: built at once up to MAX_LIMIT, else streamed."""
    if limit > MAX_LIMIT:
        with hub.db.read() as session:
            truncated = has_result_at(session, search, query.offset + limit)
        body = _body(hub, search, query, limit, base_url)
        return StreamingResponse(body, media_type=DICOM_JSON), truncated
    with hub.db.read() as session:
        found = search_index(session, search, limit=limit + 1, offset=query.offset)
    parents = _parents(search)
    items = [
        _encode(result_json(f, search.level, query.include, base_url=base_url, **parents))
        for f in found[:limit]
    ]
    return Response(b"[" + b",".join(items) + b"]", media_type=DICOM_JSON), len(found) > limit


def _search(request: Request, hub: Hub, level: Level, scope: Scope) -> Response:
    """Run one QIDO-RS search and answer its DICOM JSON."""
    _check_accept(request.headers.get("accept"))
    base_url = dicomweb_base(request)
    try:
        query = parse_query(request.query_params.multi_items())
        search = Search(level, query.matches, scope, fuzzy=query.fuzzy)
        search.conditions()  # refuse malformed values before the answer starts
        cap = MAX_LIMIT if scope.study_uid is None else MAX_SCOPED_LIMIT
        default = DEFAULT_LIMIT if scope.study_uid is None else MAX_SCOPED_LIMIT
        limit = min(query.limit or default, cap) if query.limit != 0 else cap
        response, truncated = _answer(hub, search, query, limit, base_url)
    except (ValueError, InvalidUid) as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    if truncated:
        response.headers.append("Warning", _warning(TRUNCATED))
    for text in query.warnings:
        response.headers.append("Warning", _warning(text))
    return response


@router.get("/studies", response_class=Response)
def search_for_studies(request: Request, hub: HubDep) -> Response:
    """Search for studies (QIDO-RS, PS3.18 10.6)."""
    return _search(request, hub, Level.STUDY, Scope())


@router.get("/studies/{study}/series", response_class=Response)
def search_for_study_series(request: Request, hub: HubDep, study: str) -> Response:
    """Search for the series of a study (QIDO-RS, PS3.18 10.6)."""
    return _search(request, hub, Level.SERIES, Scope(study_uid=study))


@router.get("/series", response_class=Response)
def search_for_series(request: Request, hub: HubDep) -> Response:
    """Search for series in all studies (QIDO-RS, PS3.18 10.6)."""
    return _search(request, hub, Level.SERIES, Scope())


@router.get("/studies/{study}/series/{series}/instances", response_class=Response)
def search_for_series_instances(request: Request, hub: HubDep, study: str, series: str) -> Response:
    """Search for the instances of a series (QIDO-RS, PS3.18 10.6)."""
    return _search(request, hub, Level.INSTANCE, Scope(study_uid=study, series_uid=series))


@router.get("/studies/{study}/instances", response_class=Response)
def search_for_study_instances(request: Request, hub: HubDep, study: str) -> Response:
    """Search for the instances of a study (QIDO-RS, PS3.18 10.6)."""
    return _search(request, hub, Level.INSTANCE, Scope(study_uid=study))


@router.get("/instances", response_class=Response)
def search_for_instances(request: Request, hub: HubDep) -> Response:
    """Search for instances in all studies (QIDO-RS, PS3.18 10.6)."""
    return _search(request, hub, Level.INSTANCE, Scope())

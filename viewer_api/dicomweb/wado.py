"""WADO-RS (PS3.18 10.4): instances, metadata and bulk data of studies, series and instances.

Instances are answered as ``multipart/related; type="application/dicom"``, streamed file by
file. The transfer syntax follows the Accept header (PS3.18 8.7.3): Explicit VR Little Endian
by default (stored files in another syntax are transcoded when pydicom can decode them, else
406), the stored syntax itself, or ``transfer-syntax=*`` for the stored bytes unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from imaging_hub.hub import Hub
from imaging_hub.retrieve import (
    DEFAULT_SYNTAX,
    Delivery,
    InstanceRef,
    NotAcceptable,
    find_instances,
    instance_metadata,
    plan_delivery,
    read_bulk_element,
    read_chunks,
    transcode,
)
from viewer_api.deps import HubDep, ReadSession
from viewer_api.multipart import media_type, multipart_content_type, new_boundary, stream_parts

__all__ = ["accepted_syntax", "router"]

router = APIRouter(tags=["dicomweb"])

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
OCTET_STREAM = "application/octet-stream"
_MULTIPART = "multipart/related"
_STUDY = "/studies/{study}"
_SERIES = _STUDY + "/series/{series}"
_INSTANCE = _SERIES + "/instances/{instance}"


def _ranges(accept: str) -> list[tuple[float, str, dict[str, str]]]:
    """Accept header media ranges, highest quality first (RFC 9110 12.5.1)."""
    ranges = []
    for position, item in enumerate(accept.split(",")):
        if not item.strip():
            continue
        kind, params = media_type(item)
        try:
            quality = float(params.pop("q", "1"))
        except ValueError:
            quality = 1.0
        ranges.append((-quality, position, kind, params))
    ranges.sort()
    return [(-q, kind, params) for q, _, kind, params in ranges if q < 0]


def accepted_syntax(accept: str | None, part_type: str = DICOM) -> str:
    """The transfer syntax an Accept header asks for (a UID or ``*``), PS3.18 8.7.3.5.

    NotAcceptable when no media range allows a multipart of part_type.
    """
    if not accept:
        return DEFAULT_SYNTAX
    for _, kind, params in _ranges(accept):
        if kind in ("*/*", "multipart/*"):
            return DEFAULT_SYNTAX
        if kind == _MULTIPART and params.get("type", part_type).lower() == part_type:
            return params.get("transfer-syntax", DEFAULT_SYNTAX)
    raise NotAcceptable(f'only multipart/related; type="{part_type}" is offered here')


def _check_accept_json(accept: str | None) -> None:
    """Metadata is DICOM JSON only (PS3.18 8.7.3.3); anything else is 406."""
    if not accept:
        return
    kinds = {media_type(item)[0] for item in accept.split(",") if item.strip()}
    if not kinds & {DICOM_JSON, "application/json", "application/*", "*/*"}:
        raise NotAcceptable(f"metadata is offered as {DICOM_JSON} only")


def _instance_body(hub: Hub, ref: InstanceRef, delivery: Delivery) -> Iterator[bytes]:
    """The bytes of one instance as delivered: the stored file, or its transcoded copy."""
    path = hub.store.local_path(ref.key)
    if delivery == Delivery.AS_STORED:
        yield from read_chunks(path)
    else:
        yield transcode(path)


def _retrieve(hub: Hub, refs: list[InstanceRef], accept: str | None) -> StreamingResponse:
    """Stream instances as multipart/related, each in the transfer syntax asked for."""
    requested = accepted_syntax(accept)
    plans = [(ref, plan_delivery(ref.transfer_syntax_uid, requested)) for ref in refs]

    def parts() -> Iterator[tuple[str, Iterator[bytes]]]:
        for ref, delivery in plans:
            transcoded = delivery == Delivery.TRANSCODE
            syntax = DEFAULT_SYNTAX if transcoded else ref.transfer_syntax_uid
            yield f"{DICOM}; transfer-syntax={syntax}", _instance_body(hub, ref, delivery)

    boundary = new_boundary()
    return StreamingResponse(
        stream_parts(parts(), boundary), media_type=multipart_content_type(DICOM, boundary)
    )


@router.get(_STUDY, response_class=StreamingResponse)
def retrieve_study(request: Request, hub: HubDep, session: ReadSession, study: str) -> Response:
    """Retrieve every instance of a study (PS3.18 10.4.1)."""
    refs = find_instances(session, study)
    return _retrieve(hub, refs, request.headers.get("accept"))


@router.get(_SERIES, response_class=StreamingResponse)
def retrieve_series(
    request: Request, hub: HubDep, session: ReadSession, study: str, series: str
) -> Response:
    """Retrieve every instance of a series (PS3.18 10.4.1)."""
    refs = find_instances(session, study, series)
    return _retrieve(hub, refs, request.headers.get("accept"))


@router.get(_INSTANCE, response_class=StreamingResponse)
def retrieve_instance(
    request: Request, hub: HubDep, session: ReadSession, study: str, series: str, instance: str
) -> Response:
    """Retrieve one instance (PS3.18 10.4.1)."""
    refs = find_instances(session, study, series, instance)
    return _retrieve(hub, refs, request.headers.get("accept"))


def _metadata(request: Request, session: Session, study: str, *uids: str) -> Response:
    """Answer the DICOM JSON of the instances named by uids."""
    _check_accept_json(request.headers.get("accept"))
    prefix = request.scope.get("root_path", "") + "/dicomweb"
    body = instance_metadata(session, study, *uids, url_prefix=prefix)
    return Response(content=json.dumps(body), media_type=DICOM_JSON)


@router.get(_STUDY + "/metadata", response_class=Response)
def study_metadata(request: Request, session: ReadSession, study: str) -> Response:
    """The metadata of every instance of a study (PS3.18 10.4.1, DICOM JSON)."""
    return _metadata(request, session, study)


@router.get(_SERIES + "/metadata", response_class=Response)
def series_metadata(request: Request, session: ReadSession, study: str, series: str) -> Response:
    """The metadata of every instance of a series (PS3.18 10.4.1, DICOM JSON)."""
    return _metadata(request, session, study, series)


@router.get(_INSTANCE + "/metadata", response_class=Response)
def metadata(
    request: Request, session: ReadSession, study: str, series: str, instance: str
) -> Response:
    """The metadata of one instance (PS3.18 10.4.1, DICOM JSON)."""
    return _metadata(request, session, study, series, instance)


@router.get(_INSTANCE + "/bulkdata/{tag}", response_class=Response)
def bulkdata(
    request: Request,
    hub: HubDep,
    session: ReadSession,
    study: str,
    series: str,
    instance: str,
    tag: str,
) -> Response:
    """The value of a top-level bulk data element of an instance (PS3.18 10.4.1.1.5)."""
    accepted_syntax(request.headers.get("accept"), OCTET_STREAM)
    (ref,) = find_instances(session, study, series, instance)
    value = read_bulk_element(hub.store.local_path(ref.key), tag)
    boundary = new_boundary()
    body = b"".join(stream_parts([(OCTET_STREAM, [value])], boundary))
    return Response(content=body, media_type=multipart_content_type(OCTET_STREAM, boundary))

"""WADO-RS (PS3.18 10.4): instances, metadata, frames and bulk data.

Instances are answered as ``multipart/related; type="application/dicom"``, streamed file by
file. The transfer syntax follows the Accept header (PS3.18 8.7.3): Explicit VR Little Endian
by default (stored files in another syntax are transcoded when pydicom can decode them, else
406), the stored syntax itself, or ``transfer-syntax=*`` for the stored bytes unchanged.

Frames (and Pixel Data as bulk data) are native little endian ``application/octet-stream`` by
default, compressed frames as stored in their image media type when asked for (or when only a
lossy form exists), as multipart/related or, for one frame, as a single part; see
``frames_plan``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import StreamingResponse
from pydicom.uid import UID
from sqlalchemy.orm import Session

from imaging_hub.frames import (
    FRAME_MEDIA_TYPES,
    PixelLayout,
    check_frames,
    frame_media_type,
    is_lossy,
    native_frames,
    pixel_layout,
    stored_frames,
)
from imaging_hub.hub import Hub
from imaging_hub.retrieve import (
    DEFAULT_SYNTAX,
    Delivery,
    InstanceRef,
    NotAcceptable,
    find_instances,
    instance_metadata,
    is_decodable,
    plan_delivery,
    read_bulk_element,
    read_chunks,
    transcode,
)
from viewer_api.deps import HubDep, ReadSession
from viewer_api.dicomweb.urls import dicomweb_base
from viewer_api.multipart import (
    files_length,
    media_type,
    multipart_content_type,
    new_boundary,
    stream_files,
    stream_parts,
)

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


def _as_stored(hub: Hub, refs: list[InstanceRef]) -> StreamingResponse:
    """Stream stored files unchanged, with a Content-Length (sizes are in the index)."""
    parts = [(f"{DICOM}; transfer-syntax={ref.transfer_syntax_uid}", ref) for ref in refs]
    boundary = new_boundary()
    length = files_length(((kind, ref.size) for kind, ref in parts), boundary)
    files = [(kind, hub.store.local_path(ref.key), ref.size) for kind, ref in parts]
    return StreamingResponse(
        stream_files(files, boundary),
        media_type=multipart_content_type(DICOM, boundary),
        headers={"Content-Length": str(length)},
    )


def _retrieve(hub: Hub, refs: list[InstanceRef], accept: str | None) -> StreamingResponse:
    """Stream instances as multipart/related, each in the transfer syntax asked for."""
    requested = accepted_syntax(accept)
    plans = [(ref, plan_delivery(ref.transfer_syntax_uid, requested)) for ref in refs]
    if all(delivery == Delivery.AS_STORED for _, delivery in plans):
        return _as_stored(hub, refs)
    first: list[bytes] | None = None
    if len(plans) == 1 and plans[0][1] == Delivery.TRANSCODE:
        # One instance: decode it before answering, so that failure is a 406, not a cut stream.
        first = [transcode(hub.store.local_path(refs[0].key))]

    def parts() -> Iterator[tuple[str, Iterable[bytes]]]:
        for ref, delivery in plans:
            transcoded = delivery == Delivery.TRANSCODE
            syntax = DEFAULT_SYNTAX if transcoded else ref.transfer_syntax_uid
            body = first if first is not None else _instance_body(hub, ref, delivery)
            yield f"{DICOM}; transfer-syntax={syntax}", body

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
    prefix = dicomweb_base(request)
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


_PIXEL_DATA = "7FE00010"


@router.get(_INSTANCE + "/bulkdata/{path:path}", response_class=StreamingResponse)
def bulkdata(
    request: Request,
    hub: HubDep,
    session: ReadSession,
    study: str,
    series: str,
    instance: str,
    path: str,
) -> Response:
    """A bulk data value of an instance (PS3.18 10.4.1.1.5), by the path its BulkDataURI names.

    Pixel Data is answered like all of the instance's frames; any other value as stored in
    one ``application/octet-stream`` part.
    """
    (ref,) = find_instances(session, study, series, instance)
    file = hub.store.local_path(ref.key)
    accept = request.headers.get("accept")
    if path.upper() == _PIXEL_DATA:
        layout = pixel_layout(file, ref.transfer_syntax_uid)
        numbers = list(range(1, layout.frames + 1))
        return _frames_response(file, layout, numbers, accept, native_in_one_part=True)
    accepted_syntax(accept, OCTET_STREAM)
    value = read_bulk_element(file, path)
    boundary = new_boundary()
    parts = [(OCTET_STREAM, [value])]
    return StreamingResponse(
        stream_parts(parts, boundary), media_type=multipart_content_type(OCTET_STREAM, boundary)
    )


@dataclass(frozen=True, slots=True)
class FramePlan:
    """How frames are answered: decoded to native or as stored, in multipart or a single part."""

    native: bool
    multipart: bool
    media: str
    syntax: str


_IMAGE_ALIASES = {"image/x-jls": "image/jls", "image/x-dicom-rle": "image/dicom-rle"}


def _plans(stored: str) -> tuple[FramePlan | None, FramePlan]:
    """The native plan (None when it cannot be made) and the as-stored plan of a syntax."""
    native_stored = stored not in FRAME_MEDIA_TYPES
    can_decode = native_stored or is_decodable(stored)
    native = FramePlan(True, True, OCTET_STREAM, DEFAULT_SYNTAX) if can_decode else None
    syntax = DEFAULT_SYNTAX if native_stored else stored
    return native, FramePlan(native_stored, True, frame_media_type(stored), syntax)


def _frame_choice(
    kind: str, params: dict[str, str], stored: str, plans: tuple[FramePlan | None, FramePlan]
) -> FramePlan | None:
    """The plan one media range of the Accept header allows, if any (PS3.18 8.7.3.3)."""
    native, as_stored = plans
    compressed = stored in FRAME_MEDIA_TYPES
    default = as_stored if (not compressed or is_lossy(stored) or native is None) else native
    syntax = params.get("transfer-syntax")
    kind = _IMAGE_ALIASES.get(kind, kind)
    if kind == "*/*":
        return default
    if kind == OCTET_STREAM:
        if syntax == "*":
            return as_stored
        return native if syntax in (None, DEFAULT_SYNTAX) else None
    if kind == "image/*" and compressed:
        return as_stored if syntax in (None, "*", stored) else None
    if kind == as_stored.media and compressed:
        return as_stored if syntax in (None, "*", stored) else None
    return None


def frames_plan(accept: str | None, stored: str, count: int) -> FramePlan:
    """How to answer a frames request (PS3.18 8.7.3.3, 8.7.5); NotAcceptable when impossible.

    ``*/*`` and no Accept: native, unless only a lossy compressed form exists (then as
    stored). ``type="application/octet-stream"``: native (Explicit VR Little Endian), or as
    stored with ``transfer-syntax=*``. An image type matching the stored compression, or
    ``image/*``: as stored. Single-part media types only for a single frame.
    """
    if stored not in FRAME_MEDIA_TYPES and UID(stored).is_encapsulated:
        raise NotAcceptable(f"{UID(stored).name} is video: retrieve the instance instead")
    plans = _plans(stored)
    for _, kind, params in _ranges(accept or "*/*"):
        multipart = kind in (_MULTIPART, "multipart/*")
        if multipart:
            kind = params.get("type", "*/*").lower()
        elif count != 1 and kind != "*/*":
            continue  # a single part holds one frame only (PS3.18 10.4.4)
        plan = _frame_choice(kind, params, stored, plans)
        if plan is not None:
            return replace(plan, multipart=multipart or kind == "*/*" or count != 1)
    raise NotAcceptable(
        f"frames stored as {UID(stored).name} are offered as {OCTET_STREAM} "
        f"(transfer-syntax {DEFAULT_SYNTAX} or *) or {frame_media_type(stored)}"
    )


def _frame_numbers(text: str) -> list[int]:
    """The frame numbers of a frames resource, ``1,3,5`` (400 when malformed)."""
    numbers = []
    for item in text.split(","):
        item = item.strip()
        if not (item.isascii() and item.isdigit()) or int(item) < 1 or len(item) > 9:
            raise HTTPException(
                status_code=400, detail=f"frame numbers are positive integers, not {item!r}"
            )
        numbers.append(int(item))
    return numbers


def _frames_response(
    path: Path,
    layout: PixelLayout,
    numbers: list[int],
    accept: str | None,
    *,
    native_in_one_part: bool = False,
) -> Response:
    """Stream the frames of one instance as the Accept header asks (one frame per part).

    ``native_in_one_part``: native frames go in one part, as uncompressed Pixel Data bulk
    data is (PS3.18 8.7.3.3.1).
    """
    check_frames(layout, numbers)
    plan = frames_plan(accept, layout.syntax, len(numbers))
    frames = (native_frames if plan.native else stored_frames)(path, layout, numbers)
    content_type = f"{plan.media}; transfer-syntax={plan.syntax}"
    if not plan.multipart:
        return StreamingResponse(frames, media_type=content_type)
    boundary = new_boundary()
    parts: Iterator[tuple[str, Iterable[bytes]]] = (
        iter([(content_type, frames)])
        if plan.native and native_in_one_part
        else ((content_type, [frame]) for frame in frames)
    )
    return StreamingResponse(
        stream_parts(parts, boundary), media_type=multipart_content_type(plan.media, boundary)
    )


@router.get(_INSTANCE + "/frames/{frames}", response_class=StreamingResponse)
def retrieve_frames(
    request: Request,
    hub: HubDep,
    session: ReadSession,
    study: str,
    series: str,
    instance: str,
    frames: str,
) -> Response:
    """Frames of an instance (PS3.18 10.4.1.1.4), native or as stored."""
    numbers = _frame_numbers(frames)
    (ref,) = find_instances(session, study, series, instance)
    path = hub.store.local_path(ref.key)
    layout = pixel_layout(path, ref.transfer_syntax_uid)
    return _frames_response(path, layout, numbers, request.headers.get("accept"))

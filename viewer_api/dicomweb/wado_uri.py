"""WADO-URI (PS3.18 9): ``GET /wado?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…``.

``contentType=application/dicom`` answers the instance in Explicit VR Little Endian
(transcoded when stored otherwise and pydicom can decode it) or in the syntax named by
``transferSyntax`` (``*``: as stored). Rendered content types (image/jpeg, the default for
images, image/png, …) are answered by the renderer registered for them with
``register_renderer``; one that is not registered answers 406. ``contentType`` may list several
types (PS3.18 9.1.2.3.1): the first one offered wins. Rendering parameters (``frameNumber``,
``windowCenter``/``windowWidth``, ``rows``/``columns``, ``imageQuality``, ``region``) are
checked here and handed to the renderer; with application/dicom they answer 400, as do
``anonymize``, ``annotation`` and presentation states, which are not supported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import StreamingResponse

from imaging_hub.dicom.uids import validate_uid
from imaging_hub.hub import Hub
from imaging_hub.retrieve import (
    DEFAULT_SYNTAX,
    Delivery,
    InstanceRef,
    NotAcceptable,
    find_instances,
    plan_delivery,
    read_chunks,
    transcode,
)
from viewer_api.deps import HubDep, ReadSession
from viewer_api.multipart import media_type

__all__ = ["RENDERERS", "Renderer", "WadoUriRequest", "register_renderer", "router"]

router = APIRouter(tags=["wado-uri"])

DICOM = "application/dicom"
#: The default content type for images (PS3.18 9.1.2.3.1).
DEFAULT_IMAGE = "image/jpeg"
_UIDS = {"studyUID": "StudyInstanceUID", "seriesUID": "SeriesInstanceUID"}
_UIDS["objectUID"] = "SOPInstanceUID"
#: Parameters that change the content and cannot be honoured; refused rather than ignored.
_UNSUPPORTED = ("anonymize", "annotation", "presentationUID", "presentationSeriesUID")
#: Parameters that apply to rendered content types only (PS3.18 9.1.2.3).
_RENDERING = ("frameNumber", "windowCenter", "windowWidth", "rows", "columns", "imageQuality")
_RENDERING += ("region",)


@dataclass(frozen=True, slots=True)
class WadoUriRequest:
    """A checked WADO-URI request: what to render, and how (PS3.18 9.1.2.3)."""

    content_type: str
    frame_number: int | None = None
    window_center: float | None = None
    window_width: float | None = None
    rows: int | None = None
    columns: int | None = None
    image_quality: int | None = None
    region: tuple[float, float, float, float] | None = None


#: Answers a rendered content type for one indexed instance.
Renderer = Callable[[Hub, InstanceRef, WadoUriRequest], Response]
#: Renderers by content type, filled by the modules that render (image/jpeg, image/png, …).
RENDERERS: dict[str, Renderer] = {}


def register_renderer(content_type: str, renderer: Renderer) -> None:
    """Serve content_type (e.g. ``image/jpeg``) with renderer from now on."""
    RENDERERS[content_type.lower()] = renderer


def _param(request: Request, name: str) -> str | None:
    """The single value of a query parameter (400 when repeated)."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise HTTPException(status_code=400, detail=f"{name} is given more than once")
    return values[0] if values else None


def _uids(request: Request) -> tuple[str, str, str]:
    """Study, series and object UIDs of the request, validated (400 when missing or bad)."""
    found = []
    for name, what in _UIDS.items():
        value = _param(request, name)
        if value is None:
            raise HTTPException(status_code=400, detail=f"the {name} parameter is required")
        found.append(validate_uid(value, what=what))
    return found[0], found[1], found[2]


def _check_request(request: Request) -> None:
    """The request must be a WADO request without parameters the hub cannot honour."""
    if _param(request, "requestType") != "WADO":
        raise HTTPException(status_code=400, detail="requestType=WADO is required (PS3.18 9)")
    for name in _UNSUPPORTED:
        if name in request.query_params:
            raise HTTPException(status_code=400, detail=f"the {name} parameter is not supported")


def _content_type(value: str | None, is_image: bool) -> str:
    """The first listed content type that is offered (NotAcceptable when none is)."""
    default = DEFAULT_IMAGE if is_image else DICOM
    kinds = [media_type(item)[0] for item in (value or default).split(",") if item.strip()]
    for kind in kinds:
        if kind == DICOM or (kind in RENDERERS and is_image):
            return kind
    offered = ", ".join([DICOM, *sorted(RENDERERS)] if is_image else [DICOM])
    raise NotAcceptable(f"contentType {value or default} is not offered; offered: {offered}")


def _number(request: Request, name: str, kind: type[int] | type[float], low: float) -> float | None:
    """A numeric rendering parameter, at least low (400 when malformed)."""
    text = _param(request, name)
    if text is None:
        return None
    try:
        value = kind(text)
    except ValueError:
        detail = f"{name} must be a number, not {text!r}"
        raise HTTPException(status_code=400, detail=detail) from None
    if value < low or value != value:  # NaN
        raise HTTPException(status_code=400, detail=f"{name} must be at least {low}")
    return value


def _region(text: str | None) -> tuple[float, float, float, float] | None:
    """``region=x1,y1,x2,y2`` as fractions of the image (PS3.18 9.1.2.3.12)."""
    if text is None:
        return None
    try:
        x1, y1, x2, y2 = (float(v) for v in text.split(","))
    except ValueError:
        detail = "region is four numbers x1,y1,x2,y2"
        raise HTTPException(status_code=400, detail=detail) from None
    if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
        raise HTTPException(status_code=400, detail="region values are fractions, x1<x2, y1<y2")
    return x1, y1, x2, y2


def _rendering(request: Request, content_type: str) -> WadoUriRequest:
    """The rendering parameters of a request for content_type (400 when they do not apply)."""
    given = [name for name in _RENDERING if name in request.query_params]
    if content_type == DICOM:
        if given:
            raise HTTPException(
                status_code=400, detail=f"{given[0]} applies to rendered content types only"
            )
        return WadoUriRequest(DICOM)
    center = _number(request, "windowCenter", float, float("-inf"))
    width = _number(request, "windowWidth", float, 1)
    if (center is None) != (width is None):
        raise HTTPException(status_code=400, detail="windowCenter and windowWidth go together")
    quality = _number(request, "imageQuality", int, 1)
    if quality is not None and quality > 100:
        raise HTTPException(status_code=400, detail="imageQuality is 1 to 100")
    frame, rows, columns = (_number(request, n, int, 1) for n in ("frameNumber", "rows", "columns"))
    return WadoUriRequest(
        content_type,
        frame_number=None if frame is None else int(frame),
        window_center=center,
        window_width=width,
        rows=None if rows is None else int(rows),
        columns=None if columns is None else int(columns),
        image_quality=None if quality is None else int(quality),
        region=_region(_param(request, "region")),
    )


def _dicom(hub: Hub, ref: InstanceRef, requested: str) -> Response:
    """The instance as a Part 10 file in the transfer syntax asked for."""
    delivery = plan_delivery(ref.transfer_syntax_uid, requested)
    path = hub.store.local_path(ref.key)
    if delivery == Delivery.TRANSCODE:
        return Response(transcode(path), media_type=DICOM)  # decoded before answering

    def body() -> Iterator[bytes]:
        yield from read_chunks(path)

    return StreamingResponse(body(), media_type=DICOM)


@router.get("/wado", response_class=StreamingResponse)
def wado_uri(request: Request, hub: HubDep, session: ReadSession) -> Response:
    """Retrieve one instance by WADO-URI (PS3.18 9): the Part 10 file or a rendered image."""
    _check_request(request)
    study, series, instance = _uids(request)
    requested = _param(request, "transferSyntax") or DEFAULT_SYNTAX
    if requested != "*":
        requested = validate_uid(requested, what="transferSyntax")
    (ref,) = find_instances(session, study, series, instance)
    content_type = _content_type(_param(request, "contentType"), ref.is_image)
    rendering = _rendering(request, content_type)
    if content_type == DICOM:
        return _dicom(hub, ref, requested)
    return RENDERERS[content_type](hub, ref, rendering)

"""WADO-URI (PS3.18 9): ``GET /wado?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…``.

Only ``contentType=application/dicom`` is served: the instance in Explicit VR Little Endian
(transcoded when stored otherwise and pydicom can decode it), or in the syntax named by
``transferSyntax``. Rendered types (image/jpeg, the default for images) answer 406 until
rendering exists; missing or malformed parameters answer 400.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import StreamingResponse

from imaging_hub.dicom.uids import validate_uid
from imaging_hub.retrieve import (
    DEFAULT_SYNTAX,
    Delivery,
    NotAcceptable,
    find_instances,
    plan_delivery,
    read_chunks,
    transcode,
)
from viewer_api.deps import HubDep, ReadSession
from viewer_api.multipart import media_type

__all__ = ["router"]

router = APIRouter(tags=["wado-uri"])

DICOM = "application/dicom"
_UIDS = {"studyUID": "StudyInstanceUID", "seriesUID": "SeriesInstanceUID"}
_UIDS["objectUID"] = "SOPInstanceUID"
#: Parameters that change the content and cannot be honoured; refused rather than ignored.
_UNSUPPORTED = ("anonymize", "annotation", "region", "frameNumber", "presentationUID")


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


def _check_content_type(value: str | None) -> None:
    """Only application/dicom is offered (rendered images do not exist yet)."""
    kinds = [media_type(item)[0] for item in (value or "image/jpeg").split(",") if item.strip()]
    if DICOM not in kinds:
        raise NotAcceptable(
            f"only contentType={DICOM} is offered; rendered images are not available yet"
        )


@router.get("/wado", response_class=StreamingResponse)
def wado_uri(request: Request, hub: HubDep, session: ReadSession) -> Response:
    """Retrieve one instance by WADO-URI (PS3.18 9) as a Part 10 file."""
    _check_request(request)
    study, series, instance = _uids(request)
    _check_content_type(_param(request, "contentType"))
    requested = _param(request, "transferSyntax") or DEFAULT_SYNTAX
    if requested != "*":
        requested = validate_uid(requested, what="transferSyntax")
    (ref,) = find_instances(session, study, series, instance)
    delivery = plan_delivery(ref.transfer_syntax_uid, requested)
    path = hub.store.local_path(ref.key)

    def body() -> Iterator[bytes]:
        if delivery == Delivery.AS_STORED:
            yield from read_chunks(path)
        else:
            yield transcode(path)

    return StreamingResponse(body(), media_type=DICOM)

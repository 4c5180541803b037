"""STOW-RS (PS3.18 10.5): ``POST /dicomweb/studies`` and ``POST /dicomweb/studies/{study}``.

The body (``multipart/related; type="application/dicom"``) is streamed to temp files in the data
dir, then every part goes through the one way in, ``ingest.store_instance``, which makes it
durable before the answer. Answers (PS3.18 10.5.3): 200 all stored, 202 some failed, 409 all
failed, each with a DICOM JSON dataset of ReferencedSOPSequence / FailedSOPSequence; 400
malformed body or UID, 406 an Accept without DICOM JSON, 413 body over ``ingest_max_bytes``,
415 another media type. Only the
radiology and admin roles may store (403 otherwise).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydicom import Dataset, dcmread
from starlette.concurrency import run_in_threadpool

from imaging_hub.auth import Role, UserInfo
from imaging_hub.dicom.uids import validate_uid
from imaging_hub.errors import (
    DuplicateRejected,
    HubError,
    InvalidDicom,
    StorageFull,
    TooLarge,
)
from imaging_hub.hub import Hub
from imaging_hub.ingest import IngestResult, store_instance
from imaging_hub.retrieve import NotAcceptable
from viewer_api.auth import require_role
from viewer_api.deps import HubDep
from viewer_api.dicomweb.urls import dicomweb_base
from viewer_api.multipart import MalformedBody, ReceivedPart, RelatedReader, media_type

__all__ = ["FAILURE_REASON", "router"]

log = structlog.get_logger(__name__)

router = APIRouter(tags=["dicomweb"])

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
#: Failure reasons (0008,1197) by core error (PS3.18 10.5.3, PS3.4 Annex B statuses).
FAILURE_REASON: list[tuple[type[HubError], int]] = [
    (StorageFull, 0xA700),  # Refused: Out of Resources
    (TooLarge, 0xA700),
    (DuplicateRejected, 0xA900),  # Data Set does not match SOP Class (same UID, other data)
    (InvalidDicom, 0xC000),  # Cannot understand
]
#: Processing failure: an error the hub did not expect.
PROCESSING_FAILURE = 0x0110
#: The instance belongs to another study than the one in the request URL.
STUDY_MISMATCH = 0xC409

Storer = Annotated[UserInfo, Depends(require_role(Role.RADIOLOGY, Role.ADMIN))]


@dataclass
class StowOutcome:
    """The DICOM JSON items of stored and failed instances."""

    stored: list[Dataset] = field(default_factory=list)
    failed: list[Dataset] = field(default_factory=list)
    study_uids: set[str] = field(default_factory=set)


def _boundary(content_type: str | None) -> str:
    """The boundary of a multipart/related application/dicom body (415 or 400 otherwise)."""
    kind, params = media_type(content_type or "")
    if kind != "multipart/related" or params.get("type", "").lower() != DICOM:
        raise HTTPException(
            status_code=415,
            detail=f'STOW-RS accepts multipart/related; type="{DICOM}" only',
        )
    if not params.get("boundary"):
        raise HTTPException(status_code=400, detail="the Content-Type has no boundary parameter")
    return params["boundary"]


def _check_accept(accept: str | None) -> None:
    """The answer is DICOM JSON only (PS3.18 10.5.2); refuse before reading the body (406)."""
    if not accept:
        return
    kinds = {media_type(item)[0] for item in accept.split(",") if item.strip()}
    if not kinds & {DICOM_JSON, "application/json", "application/*", "*/*"}:
        raise NotAcceptable(f"the STOW-RS answer is offered as {DICOM_JSON} only")


def _check_length(value: str | None, limit: int) -> None:
    """Refuse a declared body length over the limit before reading it."""
    if value is None:
        return
    if not value.isdigit():
        raise HTTPException(status_code=400, detail="Content-Length is not a number")
    if int(value) > limit:
        raise TooLarge(f"the request body exceeds the limit of {limit} bytes")


def _failure(reason: int, sop_class: str | None, sop_uid: str | None) -> Dataset:
    """One FailedSOPSequence item."""
    item = Dataset()
    if sop_class:
        item.ReferencedSOPClassUID = sop_class
    if sop_uid:
        item.ReferencedSOPInstanceUID = sop_uid
    item.FailureReason = reason
    return item


def _peek(path: Path) -> tuple[str | None, str | None, str | None]:
    """SOP Class, SOP Instance and Study UIDs of a part, if it can be read (else Nones)."""
    try:
        ds = dcmread(path, stop_before_pixels=True)
        found = [ds.get(k) for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID")]
    except Exception:
        return None, None, None
    uids = [str(v) if v is not None and not isinstance(v, bytes) else None for v in found]
    return uids[0], uids[1], uids[2]


def _reason(exc: Exception) -> int:
    """The FailureReason of an error store_instance raised."""
    for cls, reason in FAILURE_REASON:
        if isinstance(exc, cls):
            return reason
    return PROCESSING_FAILURE


def _stored(result: IngestResult, base_url: str) -> Dataset:
    """One ReferencedSOPSequence item with the instance's RetrieveURL."""
    item = Dataset()
    item.ReferencedSOPClassUID = result.sop_class_uid
    item.ReferencedSOPInstanceUID = result.sop_instance_uid
    item.RetrieveURL = (
        f"{base_url}/studies/{result.study_uid}/series/{result.series_uid}"
        f"/instances/{result.sop_instance_uid}"
    )
    return item


def _store_part(
    hub: Hub, part: ReceivedPart, study: str | None, username: str
) -> Dataset | IngestResult:
    """Store one part; a FailedSOPSequence item when it is refused."""
    sop_class, sop_uid, part_study = _peek(part.path)
    if part.content_type != DICOM:
        return _failure(0xC000, sop_class, sop_uid)
    if study is not None and part_study is not None and part_study != study:
        return _failure(STUDY_MISMATCH, sop_class, sop_uid)
    try:
        return store_instance(hub, part.path, source="stow", source_detail=username)
    except HubError as exc:
        return _failure(_reason(exc), sop_class, sop_uid)
    except Exception as exc:  # one bad part must not cost the others their answer
        log.error("stow_part_failed", error=type(exc).__name__)
        return _failure(PROCESSING_FAILURE, sop_class, sop_uid)


def store_parts(
    hub: Hub, parts: list[ReceivedPart], study: str | None, username: str, base_url: str
) -> StowOutcome:
    """Store every received part through the one way in; collect the response items."""
    outcome = StowOutcome()
    for part in parts:
        result = _store_part(hub, part, study, username)
        if isinstance(result, Dataset):
            outcome.failed.append(result)
        else:
            outcome.stored.append(_stored(result, base_url))
            outcome.study_uids.add(result.study_uid)
    log.info("stow_done", stored=len(outcome.stored), failed=len(outcome.failed))
    return outcome


def _response(outcome: StowOutcome, study: str | None, base_url: str) -> Response:
    """The STOW-RS response dataset and status (PS3.18 10.5.3)."""
    ds = Dataset()
    single = study or (next(iter(outcome.study_uids)) if len(outcome.study_uids) == 1 else None)
    if single and outcome.stored:
        ds.RetrieveURL = f"{base_url}/studies/{single}"
    if outcome.failed:
        ds.FailedSOPSequence = outcome.failed
    if outcome.stored:
        ds.ReferencedSOPSequence = outcome.stored
    status = 409 if not outcome.stored else 202 if outcome.failed else 200
    return Response(
        content=json.dumps(ds.to_json_dict()), status_code=status, media_type=DICOM_JSON
    )


async def _receive(request: Request, hub: Hub, directory: Path) -> list[ReceivedPart]:
    """Stream the request body into part files under directory."""
    limit = hub.settings.ingest_max_bytes
    boundary = _boundary(request.headers.get("content-type"))
    _check_length(request.headers.get("content-length"), limit)
    reader = RelatedReader(boundary, directory, max_bytes=limit)
    try:
        async for chunk in request.stream():
            reader.feed(chunk)
        return reader.finish()
    finally:
        reader.close()


async def _stow(request: Request, hub: Hub, user: UserInfo, study: str | None) -> Response:
    """Receive, store and answer one STOW-RS request."""
    _check_accept(request.headers.get("accept"))
    if study is not None:
        study = validate_uid(study, what="StudyInstanceUID")
    incoming = hub.settings.data_dir / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="stow-", dir=incoming))
    base_url = dicomweb_base(request)
    try:
        try:
            parts = await _receive(request, hub, directory)
        except MalformedBody as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        outcome = await run_in_threadpool(store_parts, hub, parts, study, user.username, base_url)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return _response(outcome, study, base_url)


@router.post("/studies", response_class=Response)
async def store_instances(request: Request, hub: HubDep, user: Storer) -> Response:
    """Store instances of any studies (STOW-RS, PS3.18 10.5)."""
    return await _stow(request, hub, user, None)


@router.post("/studies/{study}", response_class=Response)
async def store_study_instances(
    request: Request, hub: HubDep, user: Storer, study: str
) -> Response:
    """Store instances of one study; instances of other studies fail (PS3.18 10.5)."""
    return await _stow(request, hub, user, study)

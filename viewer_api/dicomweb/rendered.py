"""DICOMweb rendered and thumbnail resources (PS3.18 10.4.1.1.3, 8.3.5), and WADO-URI images.

``…/rendered`` renders with the core pipeline on request: an instance shows its first frame,
``frames/{list}/rendered`` the frames named, a study or series each of its images (first
frame) as ``multipart/related``. Query parameters (PS3.18 8.3.5.1): ``viewport=vw,vh`` or
``vw,vh,sx,sy,sw,sh``; ``window=center,width[,linear|linear-exact|sigmoid]``; ``quality``
1-100; ``accept`` overrides the Accept header. Media types: image/jpeg (default) and image/png;
others answer 406. ``annotation`` and ICC profiles other than ``no`` answer 400.

``…/thumbnail`` answers the stored thumbnail of the representative instance (a study: its first
series; a series: its middle image; an instance: its middle frame) when it is ready and no
viewport asks for another size, else renders one on request. Objects without pixels get a
generic icon. WADO-URI's image/jpeg and image/png (PS3.18 9) are answered by the same code.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from imaging_hub.errors import NotFound
from imaging_hub.hub import Hub
from imaging_hub.previews import PreviewKind, has_pixels, preview_files
from imaging_hub.render import (
    ImageFormat,
    RenderRequest,
    Viewport,
    Window,
    frame_count,
    generic_icon,
    render_request,
)
from imaging_hub.render.frame import read_header
from imaging_hub.retrieve import InstanceRef, NotAcceptable, find_instances
from imaging_hub.status import series_thumbnails
from viewer_api.deps import HubDep, ReadSession
from viewer_api.dicomweb.wado_uri import Renderer, WadoUriRequest, register_renderer
from viewer_api.multipart import media_type, multipart_content_type, new_boundary, stream_parts
from viewer_api.rest.previews import serve_file

__all__ = ["parse_viewport", "parse_window", "router"]

router = APIRouter(tags=["dicomweb-rendered"])

_STUDY = "/studies/{study}"
_SERIES = _STUDY + "/series/{series}"
_INSTANCE = _SERIES + "/instances/{instance}"
_FUNCTIONS = {"linear": "LINEAR", "linear-exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}
_CACHE = {"Cache-Control": "private, max-age=300"}


def _bad(detail: str) -> HTTPException:
    return HTTPException(status_code=400, detail=detail)


def _numbers(text: str, name: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise _bad(f"{name} must be comma-separated numbers, not {text!r}") from None
    if not all(v == v and abs(v) != float("inf") for v in values):
        raise _bad(f"{name} must be finite numbers")
    return values


def parse_viewport(text: str | None) -> Viewport | None:
    """``viewport=vw,vh[,sx,sy,sw,sh]`` (PS3.18 8.3.5.1.3), 400 when malformed."""
    if text is None:
        return None
    values = _numbers(text, "viewport")
    if len(values) not in (2, 6) or not all(v == int(v) for v in values):
        raise _bad("viewport is vw,vh or vw,vh,sx,sy,sw,sh in whole pixels")
    width, height = int(values[0]), int(values[1])
    if not (1 <= width <= 8192 and 1 <= height <= 8192):
        raise _bad("viewport width and height are 1 to 8192")
    if len(values) == 2:
        return Viewport(width, height)
    sx, sy, sw, sh = (int(v) for v in values[2:])
    if sx < 0 or sy < 0 or sw == 0 or sh == 0:
        raise _bad("viewport source offsets are at least 0 and its extents are not 0")
    return Viewport(width, height, (sx, sy, sw, sh))


def parse_window(text: str | None) -> Window | None:
    """``window=center,width[,function]`` (PS3.18 8.3.5.1.4), 400 when malformed."""
    if text is None:
        return None
    center, _, rest = text.partition(",")
    width, _, function = rest.partition(",")
    name = _FUNCTIONS.get((function or "linear").strip().lower())
    if name is None:
        raise _bad(f"window function is one of {', '.join(_FUNCTIONS)}")
    values = _numbers(f"{center},{width}", "window")
    try:
        return Window(values[0], values[1], name)
    except ValueError as exc:
        raise _bad(f"window: {exc}") from None


def _quality(text: str | None) -> int:
    if text is None:
        return 90
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise _bad("quality is a whole number from 1 to 100")
    return int(text)


def _single(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise _bad(f"{name} is given more than once")
    return values[0] if values else None


def _format(request: Request) -> ImageFormat:
    """The first acceptable rendered media type, by q then order (NotAcceptable when none)."""
    accept = _single(request, "accept") or request.headers.get("accept") or "image/jpeg"
    ranked = []
    for position, item in enumerate(accept.split(",")):
        if not item.strip():
            continue
        kind, params = media_type(item)
        if kind == "multipart/related":
            kind = params.get("type", "image/jpeg").lower()
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            q = 1.0
        ranked.append((-q, position, kind))
    for q, _, kind in sorted(ranked):
        if q == 0:
            continue
        if kind in ("*/*", "image/*"):
            return ImageFormat.JPEG
        try:
            return ImageFormat.from_media_type(kind)
        except ValueError:
            continue
    raise NotAcceptable(f"{accept} is not offered; rendered resources are image/jpeg, image/png")


def _request(
    request: Request, *, frame: int = 0, max_size: tuple[int, int] | None = None
) -> RenderRequest:
    """The rendering parameters of a DICOMweb request, checked."""
    if "annotation" in request.query_params:
        raise _bad("the annotation parameter is not supported")
    if (_single(request, "iccprofile") or "no").lower() != "no":
        raise _bad("only iccprofile=no is supported")
    return RenderRequest(
        fmt=_format(request),
        window=parse_window(_single(request, "window")),
        viewport=parse_viewport(_single(request, "viewport")),
        quality=_quality(_single(request, "quality")),
        frame=frame,
        max_size=max_size,
    )


def _render(hub: Hub, ref: InstanceRef, wanted: RenderRequest) -> bytes:
    """One instance rendered; 404 when it has no pixels, 400 for a frame it lacks."""
    path = hub.store.local_path(ref.key)
    header = read_header(path)
    count = frame_count(header)
    if not ref.is_image:
        raise NotFound(f"instance {ref.sop_instance_uid} has no pixel data to render")
    if not 0 <= wanted.frame < count:
        raise NotFound(f"frame {wanted.frame + 1} does not exist: the instance has {count}")
    try:
        return render_request(path, wanted)
    except ValueError as exc:
        raise _bad(f"cannot render: {exc}") from None


def _image(data: bytes, fmt: ImageFormat) -> Response:
    return Response(data, media_type=fmt.media_type, headers=_CACHE)


def _multipart(hub: Hub, refs: list[InstanceRef], wanted: list[RenderRequest]) -> Response:
    """Several renders as multipart/related, each made as the body streams."""
    boundary = new_boundary()
    fmt = wanted[0].fmt

    def parts() -> Iterator[tuple[str, list[bytes]]]:
        for ref, one in zip(refs, wanted, strict=True):
            yield fmt.media_type, [_render(hub, ref, one)]

    content_type = multipart_content_type(fmt.media_type, boundary)
    return StreamingResponse(stream_parts(parts(), boundary), media_type=content_type)


def _images(refs: list[InstanceRef]) -> list[InstanceRef]:
    images = [ref for ref in refs if ref.is_image]
    if not images:
        raise NotFound("nothing here has pixel data to render")
    return images


@router.get(_STUDY + "/rendered", response_class=StreamingResponse)
def study_rendered(request: Request, hub: HubDep, session: ReadSession, study: str) -> Response:
    """Every image of a study rendered (first frame each), multipart/related."""
    refs = _images(find_instances(session, study))
    return _multipart(hub, refs, [_request(request)] * len(refs))


@router.get(_SERIES + "/rendered", response_class=StreamingResponse)
def series_rendered(
    request: Request, hub: HubDep, session: ReadSession, study: str, series: str
) -> Response:
    """Every image of a series rendered (first frame each), multipart/related."""
    refs = _images(find_instances(session, study, series))
    return _multipart(hub, refs, [_request(request)] * len(refs))


@router.get(_INSTANCE + "/rendered", response_model=None)
def instance_rendered(
    request: Request, hub: HubDep, session: ReadSession, study: str, series: str, instance: str
) -> Response:
    """An instance rendered (its first frame)."""
    (ref,) = find_instances(session, study, series, instance)
    wanted = _request(request)
    return _image(_render(hub, ref, wanted), wanted.fmt)


def _frame_list(text: str) -> list[int]:
    """Frame numbers ``1,3,5`` (1-based), 400 when malformed."""
    items = text.split(",")
    if not all(item.strip().isdigit() and int(item) >= 1 for item in items):
        raise _bad(f"frames are positive whole numbers separated by commas, not {text!r}")
    return [int(item) for item in items]


@router.get(_INSTANCE + "/frames/{frames}/rendered", response_model=None)
def frames_rendered(
    request: Request,
    hub: HubDep,
    session: ReadSession,
    study: str,
    series: str,
    instance: str,
    frames: str,
) -> Response:
    """Frames of an instance rendered: one image, or multipart/related for several."""
    numbers = _frame_list(frames)
    (ref,) = find_instances(session, study, series, instance)
    wanted = [_request(request, frame=n - 1) for n in numbers]
    if len(wanted) == 1:
        return _image(_render(hub, ref, wanted[0]), wanted[0].fmt)
    for one in wanted:  # check every frame exists before the first part is sent
        _render_check(hub, ref, one)
    return _multipart(hub, [ref] * len(wanted), wanted)


def _render_check(hub: Hub, ref: InstanceRef, wanted: RenderRequest) -> None:
    count = frame_count(read_header(hub.store.local_path(ref.key)))
    if not 0 <= wanted.frame < count:
        raise NotFound(f"frame {wanted.frame + 1} does not exist: the instance has {count}")


def _thumbnail(hub: Hub, request: Request, ref: InstanceRef, frame: int | None) -> Response:
    """A thumbnail: the stored one when it fits the request, else rendered now."""
    size = hub.settings.previews_thumbnail_size
    wanted = _request(request, max_size=(size, size))
    path = hub.store.local_path(ref.key)
    pixels, count = has_pixels(path)
    if not pixels:
        return _image(generic_icon(size, wanted.fmt), wanted.fmt)
    files = preview_files(hub, ref.study_uid, ref.series_uid, ref.sop_instance_uid)
    stored = files.path(PreviewKind.THUMBNAIL, wanted.fmt)
    plain = wanted.viewport is None and wanted.window is None
    if frame is None and plain and "quality" not in request.query_params and stored.exists():
        return serve_file(stored, wanted.fmt.media_type, request)
    index = count // 2 if frame is None else frame
    # A viewport sets the size itself; otherwise the thumbnail size bounds it.
    wanted = replace(wanted, frame=index, max_size=None if wanted.viewport else (size, size))
    return _image(_render(hub, ref, wanted), wanted.fmt)


def _representative(session: Session, study: str, series: str | None) -> InstanceRef:
    """The middle image of a series, or of a study's first series with images."""
    for row in series_thumbnails(session, study):
        if series is not None and row.series_uid != series:
            continue
        if row.sop_instance_uid is not None:
            (ref,) = find_instances(session, study, row.series_uid, row.sop_instance_uid)
            if ref.is_image or series is not None:
                return ref
    if series is not None:
        find_instances(session, study, series)  # 404 naming the series
    raise NotFound("nothing here has a thumbnail")


@router.get(_STUDY + "/thumbnail", response_model=None)
def study_thumbnail(request: Request, hub: HubDep, session: ReadSession, study: str) -> Response:
    """The thumbnail of a study: its first series' representative image."""
    return _thumbnail(hub, request, _representative(session, study, None), None)


@router.get(_SERIES + "/thumbnail", response_model=None)
def series_thumbnail(
    request: Request, hub: HubDep, session: ReadSession, study: str, series: str
) -> Response:
    """The thumbnail of a series: its middle image's."""
    return _thumbnail(hub, request, _representative(session, study, series), None)


@router.get(_INSTANCE + "/thumbnail", response_model=None)
def instance_thumbnail(
    request: Request, hub: HubDep, session: ReadSession, study: str, series: str, instance: str
) -> Response:
    """The thumbnail of an instance (its middle frame)."""
    (ref,) = find_instances(session, study, series, instance)
    return _thumbnail(hub, request, ref, None)


@router.get(_INSTANCE + "/frames/{frames}/thumbnail", response_model=None)
def frame_thumbnail(
    request: Request,
    hub: HubDep,
    session: ReadSession,
    study: str,
    series: str,
    instance: str,
    frames: str,
) -> Response:
    """The thumbnail of one frame."""
    numbers = _frame_list(frames)
    if len(numbers) != 1:
        raise _bad("a frame thumbnail names one frame")
    (ref,) = find_instances(session, study, series, instance)
    return _thumbnail(hub, request, ref, numbers[0] - 1)


def _wado_uri(fmt: ImageFormat) -> Renderer:
    """The WADO-URI renderer for one format (PS3.18 9.1.2.3)."""

    def render(hub: Hub, ref: InstanceRef, asked: WadoUriRequest) -> Response:
        window = None
        if asked.window_center is not None and asked.window_width is not None:
            try:
                window = Window(asked.window_center, asked.window_width)
            except ValueError as exc:
                raise _bad(f"window: {exc}") from None
        size = None
        if asked.rows is not None or asked.columns is not None:
            size = (asked.columns or 1 << 16, asked.rows or 1 << 16)
        wanted = RenderRequest(
            fmt=fmt,
            frame=(asked.frame_number or 1) - 1,
            window=window,
            max_size=size,
            region=asked.region,
            quality=asked.image_quality or 90,
        )
        return _image(_render(hub, ref, wanted), fmt)

    return render


for _fmt in ImageFormat:
    register_renderer(_fmt.media_type, _wado_uri(_fmt))

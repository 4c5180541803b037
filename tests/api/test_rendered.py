"""DICOMweb rendered and thumbnail resources, and WADO-URI image content types, over HTTP."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image
from pydicom import dcmread

from imaging_hub.hub import Hub
from imaging_hub.ingest import store_instance
from imaging_hub.jobs import claim_for_publish
from imaging_hub.render import RenderOptions, Window, render_frame
from imaging_hub.work import run_job
from tests.support import testdata


def _drain(hub: Hub) -> None:
    while batch := claim_for_publish(hub.db):
        for job_id, _ in batch:
            run_job(hub, job_id, owner="test")


def _store(hub: Hub, name: str) -> tuple[str, str, str]:
    result = store_instance(hub, testdata(name), source="test")
    _drain(hub)
    return result.study_uid, result.series_uid, result.sop_instance_uid


def _url(uids: tuple[str, str, str]) -> str:
    study, series, instance = uids
    return f"/dicomweb/studies/{study}/series/{series}/instances/{instance}"


def _png(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)), dtype=float)


def test_instance_rendered_as_png_matches_the_core_render(client: TestClient, hub: Hub) -> None:
    uids = _store(hub, "CT_small.dcm")
    response = client.get(_url(uids) + "/rendered", headers={"Accept": "image/png"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    expected = np.asarray(render_frame(testdata("CT_small.dcm")), dtype=float)
    assert np.array_equal(_png(response.content), expected)  # PNG is lossless: exactly the core's


def test_default_is_jpeg_and_window_changes_the_image(client: TestClient, hub: Hub) -> None:
    uids = _store(hub, "CT_small.dcm")
    default = client.get(_url(uids) + "/rendered")
    assert default.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(default.content)).format == "JPEG"
    windowed = client.get(_url(uids) + "/rendered", params={"window": "100,50,linear"})
    mine = np.asarray(Image.open(io.BytesIO(windowed.content)), dtype=float)
    path = testdata("CT_small.dcm")
    core = np.asarray(render_frame(path, RenderOptions(window=Window(100, 50))), dtype=float)
    assert np.abs(mine - core).mean() < 3  # JPEG of the same windowed render
    stored = np.asarray(Image.open(io.BytesIO(default.content)), dtype=float)
    assert np.abs(mine - stored).mean() > 10


def test_viewport_and_quality(client: TestClient, hub: Hub) -> None:
    uids = _store(hub, "MR_small.dcm")  # 64 x 64
    small = client.get(_url(uids) + "/rendered", params={"viewport": "32,16"})
    assert Image.open(io.BytesIO(small.content)).size == (16, 16)
    big = client.get(
        _url(uids) + "/rendered", params={"viewport": "128,128", "accept": "image/png"}
    )
    assert Image.open(io.BytesIO(big.content)).size == (128, 128)
    crop = client.get(
        _url(uids) + "/rendered", params={"viewport": "32,32,0,0,32,32", "accept": "image/png"}
    )
    full = _png(client.get(_url(uids) + "/rendered", params={"accept": "image/png"}).content)
    assert np.array_equal(_png(crop.content), full[:32, :32])
    low = client.get(_url(uids) + "/rendered", params={"quality": "5"})
    high = client.get(_url(uids) + "/rendered", params={"quality": "100"})
    assert len(low.content) < len(high.content)


def test_frames_rendered_and_multipart_series(client: TestClient, hub: Hub) -> None:
    uids = _store(hub, "SC_rgb_rle_2frame.dcm")
    one = client.get(_url(uids) + "/frames/2/rendered", params={"accept": "image/png"})
    expected = np.asarray(render_frame(testdata("SC_rgb_rle_2frame.dcm"), RenderOptions(frame=1)))
    assert np.array_equal(_png(one.content), expected.astype(float))
    both = client.get(_url(uids) + "/frames/1,2/rendered")
    assert both.status_code == 200
    assert both.headers["content-type"].startswith("multipart/related")
    assert 'type="image/jpeg"' in both.headers["content-type"]
    assert both.content.count(b"Content-Type: image/jpeg") == 2
    assert client.get(_url(uids) + "/frames/3/rendered").status_code == 404
    assert client.get(_url(uids) + "/frames/0/rendered").status_code == 400
    study, series, _ = uids
    whole = client.get(f"/dicomweb/studies/{study}/series/{series}/rendered")
    assert whole.status_code == 200 and whole.content.count(b"Content-Type: image/jpeg") == 1
    assert client.get(f"/dicomweb/studies/{study}/rendered").status_code == 200


def test_bad_parameters_and_media_types(client: TestClient, hub: Hub) -> None:
    url = _url(_store(hub, "CT_small.dcm")) + "/rendered"
    for params in (
        {"viewport": "10"},
        {"viewport": "a,b"},
        {"window": "40"},
        {"window": "40,0"},
        {"window": "40,400,cubic"},
        {"quality": "0"},
        {"annotation": "patient"},
        {"iccprofile": "srgb"},
    ):
        response = client.get(url, params=params)
        assert response.status_code == 400, params
        assert response.json()["detail"]
    assert client.get(url, headers={"Accept": "image/gif"}).status_code == 406
    assert client.get(url, headers={"Accept": "image/gif, image/png;q=0.5"}).status_code == 200
    assert client.get(url, headers={"Accept": "*/*"}).headers["content-type"] == "image/jpeg"
    assert client.get(url.replace("/rendered", "x/rendered")).status_code in (400, 404)


def test_thumbnails_at_every_level(client: TestClient, hub: Hub, tmp_path: Path) -> None:
    uids = _store(hub, "CT_small.dcm")
    study, series, _ = uids
    for url in (
        f"/dicomweb/studies/{study}/thumbnail",
        f"/dicomweb/studies/{study}/series/{series}/thumbnail",
        _url(uids) + "/thumbnail",
        _url(uids) + "/frames/1/thumbnail",
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        image = Image.open(io.BytesIO(response.content))
        assert image.format == "JPEG" and max(image.size) <= 256
    stored = client.get(_url(uids) + "/thumbnail")
    assert "etag" in stored.headers  # the ready thumbnail file, revalidatable
    again = client.get(_url(uids) + "/thumbnail", headers={"If-None-Match": stored.headers["etag"]})
    assert again.status_code == 304
    sized = client.get(_url(uids) + "/thumbnail", params={"viewport": "64,64"})
    assert Image.open(io.BytesIO(sized.content)).size == (64, 64)
    ds = dcmread(testdata("CT_small.dcm"))
    del ds.PixelData
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".9"
    for keyword in ("Rows", "Columns"):
        delattr(ds, keyword)
    path = tmp_path / "sr.dcm"
    ds.save_as(path)
    sr = store_instance(hub, path, source="test")
    _drain(hub)
    icon = client.get(_url((sr.study_uid, sr.series_uid, sr.sop_instance_uid)) + "/thumbnail")
    assert icon.status_code == 200 and Image.open(io.BytesIO(icon.content)).format == "JPEG"
    rendered = client.get(_url((sr.study_uid, sr.series_uid, sr.sop_instance_uid)) + "/rendered")
    assert rendered.status_code == 404


def test_rendered_needs_a_token(anonymous: TestClient, hub: Hub) -> None:
    uids = _store(hub, "CT_small.dcm")
    assert anonymous.get(_url(uids) + "/rendered").status_code == 401
    assert anonymous.get(_url(uids) + "/thumbnail").status_code == 401


def test_wado_uri_jpeg_and_png_with_window_and_frame(client: TestClient, hub: Hub) -> None:
    study, series, instance = _store(hub, "SC_rgb_rle_2frame.dcm")
    base = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": instance}
    jpeg = client.get("/wado", params=base)
    assert jpeg.status_code == 200 and jpeg.headers["content-type"] == "image/jpeg"
    png = client.get("/wado", params={**base, "contentType": "image/png", "frameNumber": "2"})
    expected = render_frame(testdata("SC_rgb_rle_2frame.dcm"), RenderOptions(frame=1))
    assert np.array_equal(_png(png.content), np.asarray(expected, dtype=float))
    small = client.get("/wado", params={**base, "contentType": "image/png", "columns": "50"})
    assert Image.open(io.BytesIO(small.content)).width == 50
    assert client.get("/wado", params={**base, "frameNumber": "3"}).status_code == 404
    ct_study, ct_series, ct_instance = _store(hub, "CT_small.dcm")
    ct = {"requestType": "WADO", "studyUID": ct_study, "seriesUID": ct_series}
    ct |= {"objectUID": ct_instance, "contentType": "image/png"}
    windowed = client.get("/wado", params={**ct, "windowCenter": "100", "windowWidth": "50"})
    core = render_frame(testdata("CT_small.dcm"), RenderOptions(window=Window(100, 50)))
    assert np.array_equal(_png(windowed.content), np.asarray(core, dtype=float))

"""WADO-URI (PS3.18 9): the stored instance as application/dicom, rendered types by plug-in."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tests.api.test_wado import ingest, stored_state, uids
from viewer_api.dicomweb import wado_uri


def params(path: Path, **extra: str) -> dict[str, str]:
    """The WADO-URI parameters naming a file's instance."""
    study, series, sop = uids(path)
    query = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop}
    return {**query, "contentType": "application/dicom", **extra}


def test_wado_uri_returns_the_stored_file(hub, client, tmp_path):
    (path,) = ingest(hub, tmp_path / "ct")
    response = client.get("/wado", params=params(path))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom"
    assert response.content == path.read_bytes()


def test_wado_uri_transcodes_implicit_vr_unless_asked_for_it(hub, client, tmp_path):
    (path,) = ingest(hub, tmp_path / "mr", template="MR_small_implicit.dcm")
    before = stored_state(hub)
    response = client.get("/wado", params=params(path))
    served = dcmread(BytesIO(response.content))
    assert served.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(served.pixel_array, dcmread(path).pixel_array)
    as_stored = client.get("/wado", params=params(path, transferSyntax=ImplicitVRLittleEndian))
    assert as_stored.content == path.read_bytes()
    assert stored_state(hub) == before


@pytest.mark.parametrize("content_type", ["image/jpeg", "image/png", None])
def test_rendered_content_types_are_not_acceptable(
    hub, client, tmp_path, content_type, monkeypatch
):
    """Without a renderer registered for a rendered type, it is not offered."""
    monkeypatch.setattr(wado_uri, "RENDERERS", {})
    (path,) = ingest(hub, tmp_path / "ct")
    query = params(path)
    if content_type is None:
        del query["contentType"]  # the default is image/jpeg (PS3.18 9.1.2.1)
    else:
        query["contentType"] = content_type
    response = client.get("/wado", params=query)
    assert response.status_code == 406, response.text
    assert "application/dicom" in response.json()["detail"]  # what is offered


def test_rendering_parameters_do_not_apply_to_application_dicom(hub, client, tmp_path):
    (path,) = ingest(hub, tmp_path / "ct")
    for extra in ({"frameNumber": "1"}, {"windowCenter": "40", "windowWidth": "400"}):
        response = client.get("/wado", params=params(path, **extra))
        assert response.status_code == 400, response.text
        assert "rendered content types only" in response.json()["detail"]


def test_a_list_of_content_types_picks_the_first_offered(hub, client, tmp_path):
    (path,) = ingest(hub, tmp_path / "ct")
    response = client.get("/wado", params=params(path, contentType="image/gif,application/dicom"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom"
    assert response.content == path.read_bytes()
    rendered = client.get("/wado", params=params(path, contentType="image/jpeg,application/dicom"))
    assert rendered.status_code == 200, rendered.text
    assert rendered.headers["content-type"] == "image/jpeg"


@pytest.fixture
def fake_jpeg(monkeypatch):
    """A renderer for image/jpeg that records what it was asked (the seam renderers plug into)."""
    from fastapi import Response

    calls = []

    def render(hub, ref, request):
        calls.append((ref, request))
        return Response(b"\xff\xd8fake\xff\xd9", media_type="image/jpeg")

    monkeypatch.setattr(wado_uri, "RENDERERS", {})
    wado_uri.register_renderer("image/jpeg", render)
    return calls


def test_rendered_types_go_to_their_registered_renderer(hub, client, tmp_path, fake_jpeg):
    (path,) = ingest(hub, tmp_path / "ct")
    query = params(path, windowCenter="40", windowWidth="400", frameNumber="1", rows="64")
    del query["contentType"]  # images default to image/jpeg
    response = client.get("/wado", params={**query, "imageQuality": "80", "region": "0,0,0.5,1"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    ((ref, request),) = fake_jpeg
    assert ref.sop_instance_uid == uids(path)[2] and ref.is_image
    assert request == wado_uri.WadoUriRequest(
        "image/jpeg", 1, 40.0, 400.0, 64, None, 80, (0.0, 0.0, 0.5, 1.0)
    )
    png = client.get("/wado", params={**params(path), "contentType": "image/png"})
    assert png.status_code == 406
    assert "image/jpeg" in png.json()["detail"]  # what is offered


@pytest.mark.parametrize(
    "extra",
    [
        {"windowCenter": "40"},
        {"windowCenter": "x", "windowWidth": "1"},
        {"windowCenter": "40", "windowWidth": "0"},
        {"frameNumber": "0"},
        {"imageQuality": "101"},
        {"rows": "ten"},
        {"region": "0,0,2,1"},
        {"region": "1,2"},
    ],
)
def test_bad_rendering_parameters_are_400(hub, client, tmp_path, fake_jpeg, extra):
    (path,) = ingest(hub, tmp_path / "ct")
    response = client.get("/wado", params={**params(path), "contentType": "image/jpeg", **extra})
    assert response.status_code == 400, response.text
    assert fake_jpeg == []


def test_bad_or_missing_parameters_are_400(hub, client, tmp_path):
    (path,) = ingest(hub, tmp_path / "ct")
    good = params(path)
    cases = [
        {k: v for k, v in good.items() if k != "objectUID"},
        {k: v for k, v in good.items() if k != "requestType"},
        {**good, "requestType": "WADO-RS"},
        {**good, "studyUID": "1.2.x"},
        {**good, "seriesUID": "'; DROP TABLE study;--"},
        {**good, "transferSyntax": "jpeg"},
        {**good, "anonymize": "yes"},
    ]
    for query in cases:
        response = client.get("/wado", params=query)
        assert response.status_code == 400, (query, response.text)
        assert response.json()["detail"]
    repeated = client.get("/wado", params=[*good.items(), ("objectUID", "1.2.3")])
    assert repeated.status_code == 400


def test_unknown_or_mismatched_uids_are_404(hub, client, tmp_path):
    (path,) = ingest(hub, tmp_path / "ct")
    for name in ("studyUID", "seriesUID", "objectUID"):
        response = client.get("/wado", params={**params(path), name: "1.2.3"})
        assert response.status_code == 404, (name, response.text)


def test_wado_uri_needs_a_token(hub, anonymous, tmp_path):
    (path,) = ingest(hub, tmp_path / "ct")
    assert anonymous.get("/wado", params=params(path)).status_code == 401

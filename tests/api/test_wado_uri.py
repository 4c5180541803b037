"""WADO-URI (PS3.18 9): ``GET /wado`` answers the stored instance as application/dicom."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tests.api.test_wado import ingest, stored_state, uids


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
def test_rendered_content_types_are_not_acceptable(hub, client, tmp_path, content_type):
    (path,) = ingest(hub, tmp_path / "ct")
    query = params(path)
    if content_type is None:
        del query["contentType"]  # the default is image/jpeg (PS3.18 9.1.2.1)
    else:
        query["contentType"] = content_type
    response = client.get("/wado", params=query)
    assert response.status_code == 406, response.text
    assert "application/dicom" in response.json()["detail"]


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

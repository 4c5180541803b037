"""A real uvicorn server on 127.0.0.1, searched with dicomweb-client as a viewer would."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn
from dicomweb_client import DICOMwebClient
from pydicom import Dataset
from requests import HTTPError

from imaging_hub.config import Settings
from tests.support import free_port
from viewer_api.app import create_app


@contextmanager
def running_server(settings: Settings) -> Iterator[str]:
    """Serve the app on a free port in a background thread; yield its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "the server stopped during startup"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive(), "the server did not stop"


def test_dicomweb_client_searches_for_studies(hub, corpus, token):
    with running_server(hub.settings) as base_url:
        anonymous = DICOMwebClient(url=f"{base_url}/dicomweb")
        with pytest.raises(HTTPError) as refused:
            anonymous.search_for_studies()
        client = DICOMwebClient(
            url=f"{base_url}/dicomweb", headers={"Authorization": f"Bearer {token}"}
        )
        jane = client.search_for_studies(search_filters={"PatientID": "P1"})
        recent_ct = client.search_for_studies(
            search_filters={"ModalitiesInStudy": "CT", "StudyDate": "20240101-"},
            fields=["StudyDescription"],
        )
        paged = client.search_for_studies(limit=1, offset=1, fuzzymatching=False)
        everything = client.search_for_studies(limit=1, get_remaining=True)
    assert refused.value.response.status_code == 401
    assert [Dataset.from_json(d).StudyInstanceUID for d in jane] == [corpus["A"], corpus["B"]]
    descriptions = [Dataset.from_json(d).StudyDescription for d in recent_ct]
    assert descriptions == ["Whole spine 50% dose", "Lumbar spine MRI"]
    assert [Dataset.from_json(d).StudyInstanceUID for d in paged] == [corpus["A"]]
    assert len(everything) == 4

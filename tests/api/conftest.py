"""Fixtures of the HTTP API tests: the app on the parametrized hub, and an indexed corpus."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from imaging_hub.hub import Hub
from tests.api.helpers import build_corpus
from viewer_api.app import create_app


@pytest.fixture
def client(hub: Hub) -> Iterator[TestClient]:
    """A test client of the app built on the hub's settings (startup and shutdown run)."""
    with TestClient(create_app(hub.settings)) as test_client:
        yield test_client


@pytest.fixture
def corpus(hub: Hub, tmp_path: Path) -> dict[str, str]:
    """Four indexed studies (see build_corpus), by letter."""
    return build_corpus(hub, tmp_path / "corpus")

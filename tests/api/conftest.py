"""Fixtures of the HTTP API tests: the app on the parametrized hub, a signed-in user, a corpus."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from imaging_hub.auth import TokenIssuer, UserInfo, create_user
from imaging_hub.hub import Hub
from tests.api.helpers import PASSWORD, build_corpus
from viewer_api.app import create_app


@pytest.fixture
def user(hub: Hub) -> UserInfo:
    """A clinician account (password PASSWORD)."""
    return create_user(hub.db, "dr.grey", PASSWORD, role="clinician", specialty="neurosurgery")


@pytest.fixture
def token(hub: Hub, user: UserInfo) -> str:
    """A valid access token of user, signed with the hub's secret."""
    return TokenIssuer.from_settings(hub.settings).issue(user).access_token


@pytest.fixture
def anonymous(hub: Hub) -> Iterator[TestClient]:
    """A test client of the app that sends no token (startup and shutdown run)."""
    with TestClient(create_app(hub.settings)) as test_client:
        yield test_client


@pytest.fixture
def client(anonymous: TestClient, token: str) -> TestClient:
    """The test client, signed in as user: every request carries the bearer token."""
    anonymous.headers["Authorization"] = f"Bearer {token}"
    return anonymous


@pytest.fixture
def corpus(hub: Hub, tmp_path: Path) -> dict[str, str]:
    """Four indexed studies (see build_corpus), by letter."""
    return build_corpus(hub, tmp_path / "corpus")

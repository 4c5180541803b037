"""Shared fixtures: settings in a temp data dir, an index on SQLite or PostgreSQL, a hub."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pydicom import config as pydicom_config

from imaging_hub.config import Settings
from imaging_hub.db.migrate import upgrade
from imaging_hub.hub import Hub

pytest_plugins = ["tests.processes"]

PG_ADMIN_DSN = os.environ.get("HUB_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No HUB_* variable of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("HUB_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _pydicom_validation_modes() -> Iterator[None]:
    """Restore pydicom's global validation modes after each test.

    dicomweb-client switches them to RAISE around its calls and does not switch them back when
    the call raises, which would make later tests read invalid values strictly.
    """
    settings = pydicom_config.settings
    saved = settings.reading_validation_mode, settings.writing_validation_mode
    yield
    settings.reading_validation_mode, settings.writing_validation_mode = saved


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    name = f"hubtest_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The index database URL, once for SQLite and once for PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.sqlite'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    """Settings for a hub in a temp data dir on the parametrized database."""
    return Settings(data_dir=tmp_path / "hub-data", database_url=db_url, storage_min_free_bytes=0)


@pytest.fixture
def hub(settings: Settings) -> Iterator[Hub]:
    """A migrated hub on the parametrized database."""
    upgrade(settings.resolved_database_url)
    opened = Hub.open(settings)
    try:
        yield opened
    finally:
        opened.close()

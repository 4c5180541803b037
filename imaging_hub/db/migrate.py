"""Schema migrations through Alembic, configured in code (no alembic.ini needed)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from imaging_hub.db.engine import make_engine
from imaging_hub.errors import ConfigError

__all__ = ["alembic_config", "current_revision", "require_current", "upgrade"]

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    """An Alembic configuration pointing at the hub's migrations and the given database."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database schema up to the given revision (default: the newest)."""
    command.upgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    """The schema revision the database is at (None for an empty database)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def require_current(url: str) -> None:
    """Raise ConfigError unless the database schema is at the newest revision."""
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    found = current_revision(url)
    if found != head:
        raise ConfigError(
            f"the index database is at revision {found or 'none'}, not {head}: "
            "run `imaging-hub db upgrade` first"
        )

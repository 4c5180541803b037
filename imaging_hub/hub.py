"""The hub's runtime context: settings, index database and object store, built once per process."""

from __future__ import annotations

from dataclasses import dataclass

from imaging_hub.config import Settings
from imaging_hub.db.engine import Database
from imaging_hub.db.migrate import require_current
from imaging_hub.storage.local import LocalStore

__all__ = ["Hub"]


@dataclass
class Hub:
    """What every front end needs to work: settings, the index and the store."""

    settings: Settings
    db: Database
    store: LocalStore

    @classmethod
    def open(cls, settings: Settings, *, check_schema: bool = False) -> Hub:
        """Open the data dir, the index database and the store described by settings.

        With check_schema, refuse (ConfigError) an index that is not migrated to the newest
        revision, so that a long-running process fails at start rather than on every request.
        """
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if check_schema:
            require_current(settings.resolved_database_url)
        return cls(
            settings=settings,
            db=Database(settings.resolved_database_url),
            store=LocalStore(settings.storage_dir),
        )

    def close(self) -> None:
        """Release database connections."""
        self.db.dispose()

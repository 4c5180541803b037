"""The index database: engine settings and migrations that match the models."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from imaging_hub.db.engine import Database
from imaging_hub.db.migrate import current_revision, require_current, upgrade
from imaging_hub.db.models import Base
from imaging_hub.errors import ConfigError
from imaging_hub.hub import Hub


def test_migrations_produce_exactly_the_models(hub: Hub) -> None:
    """Alembic's autogenerate finds nothing to change after `db upgrade` (schema via Alembic)."""
    with hub.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_schema_check_refuses_an_unmigrated_database(db_url: str) -> None:
    with pytest.raises(ConfigError, match="db upgrade"):
        require_current(db_url)
    upgrade(db_url)
    require_current(db_url)
    assert current_revision(db_url) is not None


def test_sqlite_is_durable_and_concurrent(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.sqlite'}")
    with db.engine.connect() as conn:
        pragmas = {
            name: conn.execute(text(f"PRAGMA {name}")).scalar()
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        }
    db.dispose()
    # WAL for concurrent readers; FULL (2) so that a commit survives power loss; never OFF (0).
    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": 2,
        "foreign_keys": 1,
        "busy_timeout": 30000,
    }


def test_a_sqlite_writer_gets_the_lock_as_soon_as_it_is_free(tmp_path) -> None:
    """A waiting write transaction starts within milliseconds of the lock's release.

    SQLite's own busy handler sleeps up to 100 ms between tries (50 ms late on average once
    a writer has waited 0.3 s); the hub tries again every half millisecond.
    """
    import statistics
    import threading
    import time

    db = Database(f"sqlite:///{tmp_path / 'x.sqlite'}")
    with db.write() as s:
        s.execute(text("CREATE TABLE t (x INTEGER)"))
    waits = []
    for _ in range(5):
        holding, released = threading.Event(), [0.0]

        def hold_the_lock(holding=holding, released=released) -> None:
            with db.write() as s:
                s.execute(text("INSERT INTO t VALUES (1)"))
                holding.set()
                time.sleep(0.4)
                released[0] = time.monotonic()

        holder = threading.Thread(target=hold_the_lock)
        holder.start()
        assert holding.wait(5)
        with db.write() as s:
            s.execute(text("INSERT INTO t VALUES (2)"))  # the transaction begins here
            waits.append(time.monotonic() - released[0])
        holder.join()
    assert statistics.median(waits) < 0.015, waits
    with db.write() as s:  # the normal busy timeout is back after the wait
        assert s.execute(text("PRAGMA busy_timeout")).scalar() == 30_000
    db.dispose()

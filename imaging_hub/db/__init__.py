"""Index database: engine, sessions, models and migrations."""

from imaging_hub.db.engine import Database, make_engine

__all__ = ["Database", "make_engine"]

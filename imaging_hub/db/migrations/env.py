"""Alembic environment: runs migrations on the URL set by imaging_hub.db.migrate."""

from alembic import context

from imaging_hub.db.engine import make_engine
from imaging_hub.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    """Run the migrations inside one transaction (SQLite: BEGIN IMMEDIATE)."""
    url = config.get_main_option("sqlalchemy.url")
    assert url, "imaging_hub.db.migrate sets sqlalchemy.url"
    engine = make_engine(url, immediate=True)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()

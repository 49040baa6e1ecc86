"""Alembic environment of the catalog database.

Normally run through :func:`pod_resources.catalog.migrate`, which passes an open connection
in ``config.attributes["connection"]``. For hand use, a Config whose ``sqlalchemy.url`` is
set works too (online, or offline to print SQL).
"""

from __future__ import annotations

from alembic import context

from pod_resources.catalog.engine import VERSION_TABLE, create_catalog_engine
from pod_resources.catalog.models import Base

config = context.config
target_metadata = Base.metadata
version_table = config.get_main_option("version_table") or VERSION_TABLE


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        version_table=version_table,
        render_as_batch=True,  # SQLite cannot ALTER most things: later revisions rebuild tables
        compare_type=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url or pass a connection in config.attributes")
    engine = create_catalog_engine(url)
    try:
        with engine.connect() as conn:
            _configure(connection=conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

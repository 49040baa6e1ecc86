"""A catalog as an older release left it: migrated up to a given Alembic revision only, so
that a test can write the rows of that release and then open it with today's ``Catalog``
(which migrates it the rest of the way)."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from pod_resources.catalog.engine import (
    MIGRATIONS_DIR,
    VERSION_TABLE,
    create_catalog_engine,
    write_engine,
)


def write_at_revision(url: str, revision: str, statements: Sequence[str], **params: object) -> None:
    """Upgrade the catalog at ``url`` to ``revision`` only and run ``statements`` (SQL, with
    ``params`` bound) in the same transaction, as that release would have written its rows;
    the engine is let go of afterwards."""
    engine = create_catalog_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("version_table", VERSION_TABLE)
    with write_engine(engine).connect() as conn, conn.begin():
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        for statement in statements:
            conn.execute(sa.text(statement), params)
    engine.dispose()

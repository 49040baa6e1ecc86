"""Episode versions: ``version``, ``version_of``, ``superseded_by`` and the status ``superseded``.

Different bytes under the name of an existing episode become a new episode row (version n of
the first one) instead of overwriting it; publishing a version supersedes the one that was
published before it. Existing rows are version 1 of themselves.

On SQLite the ``episodes`` table is rebuilt (batch mode) to change its status CHECK
constraint; :func:`pod_resources.catalog.engine.migrate` turns foreign keys off on that
connection while it runs, so dropping the old table does not cascade into the history and
uploads that point at it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_STATUSES = ("uploaded", "processing", "processed", "published", "error")
_NEW_STATUSES = ("uploaded", "processing", "processed", "published", "superseded", "error")
_CHECK = "ck_episodes_status"


def _status_check(statuses: tuple[str, ...]) -> sa.ColumnElement[bool]:
    return sa.column("status").in_(statuses)


def upgrade() -> None:
    with op.batch_alter_table("episodes") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("version_of", sa.String(200), nullable=True))
        batch.add_column(sa.Column("superseded_by", sa.String(200), nullable=True))
        batch.drop_constraint(_CHECK, type_="check")
        batch.create_check_constraint(_CHECK, _status_check(_NEW_STATUSES))
        batch.create_index("ix_episodes_version_of", ["version_of"])


def downgrade() -> None:
    op.execute("UPDATE episodes SET status = 'published' WHERE status = 'superseded'")
    with op.batch_alter_table("episodes") as batch:
        batch.drop_index("ix_episodes_version_of")
        batch.drop_constraint(_CHECK, type_="check")
        batch.create_check_constraint(_CHECK, _status_check(_OLD_STATUSES))
        batch.drop_column("superseded_by")
        batch.drop_column("version_of")
        batch.drop_column("version")

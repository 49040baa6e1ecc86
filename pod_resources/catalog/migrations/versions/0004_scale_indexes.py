"""Indexes for work that must not cost what the history costs (docs/scale.md).

* ``ix_episodes_purge_order`` (raw_purged_at, status_changed_at, status): the purge's eligible
  episodes in retention order, their count, and the kept episodes by status, read from the
  index alone instead of every row;
* ``ix_episodes_created`` (created_at, episode_id): ``pod status`` pages (keyset, oldest first).

Only indexes are added: an existing catalog is upgraded in place, every row kept.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_episodes_purge_order", "episodes", ["raw_purged_at", "status_changed_at", "status"]
    )
    op.create_index("ix_episodes_created", "episodes", ["created_at", "episode_id"])


def downgrade() -> None:
    op.drop_index("ix_episodes_created", table_name="episodes")
    op.drop_index("ix_episodes_purge_order", table_name="episodes")

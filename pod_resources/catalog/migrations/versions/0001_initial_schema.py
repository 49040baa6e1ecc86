"""Initial catalog schema: episodes, their status history, uploads.

Revision ID: 0001
Revises:
Create Date: 2026-11-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUSES = ("uploaded", "processing", "processed", "published", "error")


def _when(name: str, *, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "episodes",
        sa.Column("episode_id", sa.String(200), primary_key=True),
        sa.Column("source_name", sa.Text(), nullable=False),
        sa.Column("source_generation", sa.BigInteger(), nullable=False),
        sa.Column("content_hash", sa.String(128), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _when("created_at"),
        _when("updated_at"),
        _when("status_changed_at"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("error_step", sa.String(200), nullable=True),
        sa.Column("processing_run_id", sa.String(64), nullable=True),
        sa.Column("raw_key", sa.Text(), nullable=True),
        _when("raw_purged_at", nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("artifacts", sa.JSON(), nullable=False),
        sa.CheckConstraint(sa.column("status").in_(_STATUSES), name="ck_episodes_status"),
        sa.UniqueConstraint("content_hash", name="uq_episodes_content_hash"),
    )
    op.create_index("ix_episodes_status", "episodes", ["status"])

    op.create_table(
        "episode_status_history",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column(
            "episode_id",
            sa.String(200),
            sa.ForeignKey("episodes.episode_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("from_status", sa.String(16), nullable=True),
        sa.Column("to_status", sa.String(16), nullable=False),
        _when("at"),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
    )
    op.create_index(
        "ix_episode_status_history_episode_id", "episode_status_history", ["episode_id", "id"]
    )

    op.create_table(
        "uploads",
        sa.Column("object_name", sa.Text(), primary_key=True),
        sa.Column("generation", sa.BigInteger(), primary_key=True),
        sa.Column("content_hash", sa.String(128), nullable=False),
        sa.Column(
            "episode_id",
            sa.String(200),
            sa.ForeignKey("episodes.episode_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "duplicate_of",
            sa.String(200),
            sa.ForeignKey("episodes.episode_id", ondelete="CASCADE"),
            nullable=True,
        ),
        _when("seen_at"),
    )
    op.create_index("ix_uploads_episode_id", "uploads", ["episode_id"])


def downgrade() -> None:
    op.drop_table("uploads")
    op.drop_table("episode_status_history")
    op.drop_table("episodes")

"""ORM models of the catalog database.

These classes never leave the catalog's units of work (:mod:`pod_resources.catalog.repository`
and the modules it runs): every :class:`Catalog` method converts rows to frozen dataclasses
(:mod:`pod_resources.catalog.records`) before its session closes (seed bug 3).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class EpisodeStatus(StrEnum):
    """Lifecycle of an episode. Allowed moves are in :data:`ALLOWED_TRANSITIONS`."""

    UPLOADED = "uploaded"
    PROCESSING = "processing"
    PROCESSED = "processed"
    PUBLISHED = "published"
    SUPERSEDED = "superseded"
    """Was published; a newer version of the same upload name was published after it."""
    ERROR = "error"


ALLOWED_TRANSITIONS: dict[EpisodeStatus, frozenset[EpisodeStatus]] = {
    EpisodeStatus.UPLOADED: frozenset({EpisodeStatus.PROCESSING, EpisodeStatus.ERROR}),
    EpisodeStatus.PROCESSING: frozenset(
        {EpisodeStatus.PROCESSING, EpisodeStatus.PROCESSED, EpisodeStatus.ERROR}
    ),
    EpisodeStatus.PROCESSED: frozenset(
        {EpisodeStatus.PUBLISHED, EpisodeStatus.PROCESSING, EpisodeStatus.ERROR}
    ),
    EpisodeStatus.PUBLISHED: frozenset(
        {EpisodeStatus.SUPERSEDED, EpisodeStatus.PROCESSING, EpisodeStatus.PROCESSED, EpisodeStatus.ERROR}
    ),
    EpisodeStatus.SUPERSEDED: frozenset({EpisodeStatus.PROCESSING, EpisodeStatus.ERROR}),
    EpisodeStatus.ERROR: frozenset({EpisodeStatus.PROCESSING, EpisodeStatus.ERROR}),
}
"""``from -> {to}``. A new run may take over a ``processing`` episode; anything may fail.
``published -> superseded`` happens only in :meth:`Catalog.publish`, when another version of
the same upload name is published. ``published -> processed``: unpublished by the operator
(``pod unpublish``)."""

FINISHED_STATUSES: frozenset[EpisodeStatus] = frozenset(
    {EpisodeStatus.PROCESSED, EpisodeStatus.PUBLISHED, EpisodeStatus.SUPERSEDED}
)
"""Statuses whose raw media the retention purge may delete once they are old enough."""


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that only accepts and only returns tz-aware UTC datetimes.

    SQLite has no time zone type: values are stored as UTC text and given their tzinfo back
    on the way out, so both backends hand out the same kind of object.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: catalog times must be tz-aware")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: sa.JSON(),
    }


class EpisodeRow(Base):
    __tablename__ = "episodes"
    __table_args__ = (
        sa.CheckConstraint(
            sa.column("status").in_([status.value for status in EpisodeStatus]),
            name="ck_episodes_status",
        ),
        sa.UniqueConstraint("content_hash", name="uq_episodes_content_hash"),
        sa.Index("ix_episodes_status", "status"),
        sa.Index("ix_episodes_version_of", "version_of"),
        # Migration 0004: the purge's retention order and counts, pod status pages.
        sa.Index("ix_episodes_purge_order", "raw_purged_at", "status_changed_at", "status"),
        sa.Index("ix_episodes_created", "created_at", "episode_id"),
    )

    episode_id: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    source_name: Mapped[str] = mapped_column(sa.Text)
    source_generation: Mapped[int] = mapped_column(sa.BigInteger)
    content_hash: Mapped[str] = mapped_column(sa.String(128))
    title: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    status_changed_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    error_step: Mapped[str | None] = mapped_column(sa.String(200))
    processing_run_id: Mapped[str | None] = mapped_column(sa.String(64))
    raw_key: Mapped[str | None] = mapped_column(sa.Text)
    raw_purged_at: Mapped[datetime | None]
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    artifacts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    version: Mapped[int] = mapped_column(sa.Integer, default=1, server_default="1")
    """1 for the first upload under a name; n for the n-th different bytes under it."""
    version_of: Mapped[str | None] = mapped_column(sa.String(200))
    """The first version's episode id (the name's own id); ``None`` for version 1."""
    superseded_by: Mapped[str | None] = mapped_column(sa.String(200))
    """The version whose publication superseded this one."""


class StatusHistoryRow(Base):
    __tablename__ = "episode_status_history"
    __table_args__ = (sa.Index("ix_episode_status_history_episode_id", "episode_id", "id"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    episode_id: Mapped[str] = mapped_column(
        sa.String(200), sa.ForeignKey("episodes.episode_id", ondelete="CASCADE")
    )
    from_status: Mapped[str | None] = mapped_column(sa.String(16))
    to_status: Mapped[str] = mapped_column(sa.String(16))
    at: Mapped[datetime]
    run_id: Mapped[str | None] = mapped_column(sa.String(64))
    message: Mapped[str | None] = mapped_column(sa.Text)


class UploadRow(Base):
    __tablename__ = "uploads"
    __table_args__ = (sa.Index("ix_uploads_episode_id", "episode_id"),)

    object_name: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    generation: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    content_hash: Mapped[str] = mapped_column(sa.String(128))
    episode_id: Mapped[str] = mapped_column(
        sa.String(200), sa.ForeignKey("episodes.episode_id", ondelete="CASCADE")
    )
    duplicate_of: Mapped[str | None] = mapped_column(
        sa.String(200), sa.ForeignKey("episodes.episode_id", ondelete="CASCADE")
    )
    seen_at: Mapped[datetime]


class RunClaimRow(Base):
    """A claim: who launches the run of a run key, or resumes a dead run.

    The first insert of ``claim_key`` wins (primary key, on SQLite and Postgres alike); the
    owner changes only by a compare-and-set from a known owner (see ``Catalog.claim``).
    """

    __tablename__ = "run_claims"

    claim_key: Mapped[str] = mapped_column(sa.String(300), primary_key=True)
    owner: Mapped[str] = mapped_column(sa.String(200))
    claimed_at: Mapped[datetime]

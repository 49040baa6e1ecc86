"""What a purge did: one :class:`PurgeReport`, whose parts are the episodes deleted (or, in a
dry run, that would be), kept and failed.

An episode appears as a :class:`DeletedEpisode`, a :class:`KeptEpisode` (kept by the plan, or
skipped by a race: eligible when selected, changed before its raw media went, nothing of it
deleted) or a :class:`FailedEpisode` (its raw media could not be deleted; it stays unpurged and
the next purge retries). A deleted episode can also carry a failure: its ``raw_audio``
artifact could not be cleared (the next purge clears it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pod_resources.catalog import EpisodeStatus


@dataclass(frozen=True)
class DeletedEpisode:
    episode_id: str
    status: EpisodeStatus
    objects: tuple[str, ...]
    """Keys deleted (in a dry run: that would be deleted)."""
    bytes: int
    purged_at: datetime


@dataclass(frozen=True)
class KeptEpisode:
    episode_id: str
    reason: str
    """``status=processing``, ``within retention``, ``new version awaiting processing``…;
    for one skipped by a race, what changed."""


@dataclass(frozen=True)
class FailedEpisode:
    episode_id: str
    error: str
    key: str | None = None


PurgeEntry = DeletedEpisode | KeptEpisode | FailedEpisode
"""What purging one episode came to; an episode can leave more than one (deleted, and its
artifact not cleared)."""


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


@dataclass(frozen=True)
class PurgeReport:
    now: datetime
    retention: timedelta
    dry_run: bool
    eligible: int
    """Episodes selected as eligible (before ``max_deletions``)."""
    deleted: tuple[DeletedEpisode, ...] = ()
    kept: tuple[KeptEpisode, ...] = ()
    skipped_by_race: tuple[KeptEpisode, ...] = ()
    failed: tuple[FailedEpisode, ...] = ()
    kept_counts: Mapping[str, int] = field(default_factory=dict)
    """Episodes keeping their raw media, by reason; ``kept`` is a bounded sample of them."""

    @staticmethod
    def parts(
        entries: Iterable[PurgeEntry],
    ) -> tuple[tuple[DeletedEpisode, ...], tuple[KeptEpisode, ...], tuple[FailedEpisode, ...]]:
        """The entries of a purge, in order, as ``(deleted, skipped_by_race, failed)``."""
        entries = tuple(entries)
        return (
            tuple(e for e in entries if isinstance(e, DeletedEpisode)),
            tuple(e for e in entries if isinstance(e, KeptEpisode)),
            tuple(e for e in entries if isinstance(e, FailedEpisode)),
        )

    @property
    def kept_total(self) -> int:
        """Episodes kept, counted (not only the sample), with those skipped by a race."""
        return sum(self.kept_counts.values()) + len(self.skipped_by_race)

    @property
    def bytes_freed(self) -> int:
        return 0 if self.dry_run else sum(entry.bytes for entry in self.deleted)

    @property
    def objects_deleted(self) -> int:
        return 0 if self.dry_run else sum(len(entry.objects) for entry in self.deleted)

    def to_lines(self) -> list[str]:
        """What ``pod purge`` prints: a line per episode listed, then the counts."""
        verb = "would delete" if self.dry_run else "deleted"
        lines = [
            *(
                f"{verb} {e.episode_id}: {len(e.objects)} objects, {e.bytes} bytes"
                for e in self.deleted
            ),
            *(f"kept {e.episode_id}: {e.reason}" for e in (*self.kept, *self.skipped_by_race)),
            *(
                f"failed {e.episode_id}{f' ({e.key})' if e.key else ''}: {e.error}"
                for e in self.failed
            ),
        ]
        if (listed := len(self.kept) + len(self.skipped_by_race)) < self.kept_total:
            lines.append(f"kept {self.kept_total - listed} more episodes (counted, not listed)")
        lines.append(
            f"purge{' (dry run)' if self.dry_run else ''}: {self.eligible} eligible, "
            f"{len(self.deleted)} {verb}, {self.kept_total} kept, "
            f"{len(self.failed)} failed, {self.bytes_freed} bytes freed"
        )
        return lines

    def to_json(self) -> dict[str, Any]:
        """The shape ``pod purge --json`` prints. ``kept`` is a bounded sample (at most
        ``KEPT_SAMPLE`` per kind); ``kept_total`` and ``kept_by_reason`` count them all.
        Episodes skipped by a race are also listed under ``kept`` (their reason says what
        changed)."""
        return {
            "dry_run": self.dry_run,
            "now": self.now.isoformat(),
            "retention_hours": self.retention.total_seconds() / 3600,
            "eligible": self.eligible,
            "bytes_freed": self.bytes_freed,
            "deleted": [
                {
                    "episode_id": entry.episode_id,
                    "status": str(entry.status),
                    "objects": list(entry.objects),
                    "bytes": entry.bytes,
                }
                for entry in self.deleted
            ],
            "kept": [
                {"episode_id": entry.episode_id, "reason": entry.reason}
                for entry in (*self.kept, *self.skipped_by_race)
            ],
            "kept_total": self.kept_total,
            "kept_by_reason": dict(sorted(self.kept_counts.items())),
            "skipped_by_race": [entry.episode_id for entry in self.skipped_by_race],
            "failed": [
                {"episode_id": entry.episode_id, "key": entry.key, "error": entry.error}
                for entry in self.failed
            ],
        }

"""``pod catalog rebuild``: the catalog restored from the object store.

One listing of ``episodes/`` finds every stored episode. Each one missing from the catalog
is described by what the store holds, and inserted
(:func:`pod_resources.catalog.restore.restore_episode`):

- **with a manifest** (``episodes/<ep>/episode.json``, written on every change that matters,
  see :mod:`pod_resources.catalog.manifest`): source name and generation, content hash,
  title, status and its time, last error, metrics, raw key, purge mark, versions;
- **without one** (stored before manifests existed): ``processed`` when ``episode.mp3`` is
  there, else ``error``; the source name from the ``raw_audio`` materialization in the
  Dagster instance, else ``<ep>.<ext>``; no metrics. Its manifest is written afterwards.

In both cases the artifacts are the episode's objects as listed now (raw media, transcript,
cut list, cleaned audio and transcript, final episode), and two states are settled:

- ``processing``: that run cannot finish against a catalog that lost it, so the episode
  becomes ``error`` ("run it again");
- finished (``processed``/``published``/…) with no raw media left and no purge mark: it is
  marked purged at the rebuild's time, so a reprocess says why it cannot run.

Invariants: an episode already in the catalog is never changed, so a second rebuild adds
nothing, and one on a catalog that lost some episodes adds exactly those. Every stored
episode in the catalog gets its dynamic partition back, so the UI shows it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from pod_assets import layout
from pod_assets.partitions import episode_partitions
from pod_resources.catalog import FINISHED_STATUSES, Catalog, Episode, EpisodeStatus
from pod_resources.catalog.manifest import (
    MANIFEST_NAME,
    episode_from_manifest,
    manifest_key,
    read_manifest,
    write_manifest,
)
from pod_resources.catalog.records import FrozenMap
from pod_resources.catalog.restore import restore_episode
from pod_resources.storage import ObjectInfo, ObjectStore

RAW_PREFIX = "raw."
INTERRUPTED_ERROR = (
    "the episode was processing when the catalog was lost; its run cannot finish: run it again"
)
UNFINISHED_ERROR = (
    "rebuilt from the store without a manifest: no final episode was found; run it again"
)


@dataclass(frozen=True)
class RebuiltEpisode:
    episode_id: str
    status: EpisodeStatus
    source: str
    """``manifest`` or ``objects``."""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class FailedRebuild:
    episode_id: str
    error: str


@dataclass(frozen=True)
class RebuildReport:
    added: tuple[RebuiltEpisode, ...]
    present: tuple[str, ...]
    """Stored episodes that were in the catalog already (left as they are)."""
    failed: tuple[FailedRebuild, ...]
    partitions_added: tuple[str, ...]
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "added": [
                {"episode_id": e.episode_id, "status": str(e.status), "from": e.source,
                 "notes": list(e.notes)}
                for e in self.added
            ],
            "present": list(self.present),
            "failed": [{"episode_id": f.episode_id, "error": f.error} for f in self.failed],
            "partitions_added": list(self.partitions_added),
        }


def stored_episodes(store: ObjectStore) -> dict[str, list[ObjectInfo]]:
    """The objects under ``episodes/``, grouped by episode id (one listing)."""
    grouped: dict[str, list[ObjectInfo]] = {}
    for info in store.list(layout.EPISODES_PREFIX):
        episode_id, slash, _ = info.key.removeprefix(layout.EPISODES_PREFIX).partition("/")
        if slash:
            grouped.setdefault(episode_id, []).append(info)
    return grouped


def _name(info: ObjectInfo) -> str:
    return info.key.rsplit("/", 1)[-1]


def _raw_object(objects: Iterable[ObjectInfo], raw_key: str | None) -> ObjectInfo | None:
    raws = [info for info in objects if _name(info).startswith(RAW_PREFIX)]
    preferred = [info for info in raws if info.key == raw_key]
    return (preferred or raws or [None])[0]


def artifacts_of(
    store: ObjectStore, objects: list[ObjectInfo], raw_key: str | None
) -> dict[str, str]:
    """``stage -> URI`` of the episode's stored artifacts (as the pipeline records them)."""
    by_name = {_name(info): info for info in objects}
    artifacts: dict[str, str] = {}
    raw = _raw_object(objects, raw_key)
    if raw is not None:
        artifacts["raw_audio"] = store.uri(raw.key)
    for stage, filename in layout.ARTIFACT_FILES.items():
        if filename in by_name:
            artifacts[stage] = store.uri(by_name[filename].key)
    return artifacts


def _source_name_from_instance(
    instance: dg.DagsterInstance | None, episode_id: str
) -> str | None:
    """The upload name ``raw_audio`` recorded for the partition, when the instance has it."""
    if instance is None:
        return None
    try:
        records_filter = dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("raw_audio"), asset_partitions=[episode_id]
        )
        result = instance.fetch_materializations(records_filter, limit=1)
    except Exception:
        return None
    for record in result.records:
        materialization = record.asset_materialization
        value = materialization.metadata.get("source_name") if materialization else None
        if value is not None and isinstance(value.value, str):
            return value.value
    return None


def _episode_from_objects(
    store: ObjectStore,
    episode_id: str,
    objects: list[ObjectInfo],
    *,
    instance: dg.DagsterInstance | None,
) -> tuple[Episode, list[str]]:
    """An episode stored before manifests existed, described by its objects alone."""
    raw = _raw_object(objects, None)
    ext = _name(raw).removeprefix(RAW_PREFIX) if raw is not None else "bin"
    notes = ["no manifest: status inferred from the objects, metrics not recovered"]
    source_name = _source_name_from_instance(instance, episode_id)
    if source_name is None:
        source_name = f"{episode_id}.{ext}"
        notes.append(f"source name unknown, recorded as {source_name!r}")
    finished = any(_name(info) == layout.FINAL_EPISODE for info in objects)
    times = sorted(info.updated for info in objects)
    content_hash = (raw.md5_hex if raw is not None else None) or f"unknown:{episode_id}"
    episode = Episode(
        episode_id=episode_id,
        source_name=source_name,
        source_generation=0,
        content_hash=content_hash,
        title=layout.display_title(source_name),
        status=EpisodeStatus.PROCESSED if finished else EpisodeStatus.ERROR,
        created_at=times[0],
        updated_at=times[-1],
        status_changed_at=times[-1],
        last_error=None if finished else UNFINISHED_ERROR,
        error_step=None if finished else "rebuild",
        processing_run_id=None,
        raw_key=None if raw is None else raw.key,
        raw_purged_at=None,
        metrics=FrozenMap(),
        artifacts=FrozenMap(artifacts_of(store, objects, None)),
    )
    return episode, notes


def _settled(
    episode: Episode, objects: list[ObjectInfo], *, now: datetime
) -> tuple[Episode, list[str]]:
    """``episode`` with the states a rebuild cannot keep settled (see the module docstring)."""
    notes: list[str] = []
    changes: dict[str, Any] = {}
    raw = _raw_object(objects, episode.raw_key)
    if episode.raw_key is None and raw is not None:
        changes["raw_key"] = raw.key
    if episode.status is EpisodeStatus.PROCESSING:
        changes.update(
            status=EpisodeStatus.ERROR, last_error=INTERRUPTED_ERROR, error_step="rebuild"
        )
        notes.append("was processing: now error")
    if episode.status in FINISHED_STATUSES and episode.raw_purged_at is None and raw is None:
        changes["raw_purged_at"] = now
        notes.append("raw media gone without a purge mark: marked purged now")
    return (dataclasses.replace(episode, **changes) if changes else episode), notes


def describe_stored_episode(
    store: ObjectStore,
    episode_id: str,
    objects: list[ObjectInfo],
    *,
    now: datetime,
    instance: dg.DagsterInstance | None = None,
) -> tuple[Episode, str, list[str]]:
    """The episode as the store describes it, where that came from, and notes."""
    document = read_manifest(store, episode_id)
    if document is None:
        episode, notes = _episode_from_objects(store, episode_id, objects, instance=instance)
        source = "objects"
    else:
        raw_key = (document.get("episode") or {}).get("raw_key")
        artifacts = artifacts_of(store, objects, raw_key)
        episode, notes = episode_from_manifest(document, artifacts=artifacts), []
        source = "manifest"
    episode, settled = _settled(episode, objects, now=now)
    return episode, source, [*notes, *settled]


def _add_partitions(instance: dg.DagsterInstance, episode_ids: Iterable[str]) -> tuple[str, ...]:
    known = set(instance.get_dynamic_partitions(episode_partitions.name))
    missing = sorted(set(episode_ids) - known)
    if missing:
        instance.add_dynamic_partitions(episode_partitions.name, missing)
    return tuple(missing)


def rebuild_catalog(
    catalog: Catalog,
    store: ObjectStore,
    *,
    instance: dg.DagsterInstance | None = None,
    now: datetime | None = None,
    dry_run: bool = False,
) -> RebuildReport:
    """Add every episode the store holds and the catalog lacks (see the module docstring).

    A dry run reads only and reports what it would add.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    added: list[RebuiltEpisode] = []
    present: list[str] = []
    failed: list[FailedRebuild] = []
    for episode_id, objects in sorted(stored_episodes(store).items()):
        if catalog.get_episode(episode_id) is not None:
            present.append(episode_id)
            continue
        try:
            episode, source, notes = describe_stored_episode(
                store, episode_id, objects, now=now, instance=instance
            )
            note = f"rebuilt from the store ({_note_source(episode_id, source)})"
            if not dry_run and not restore_episode(catalog, episode, note=note):
                present.append(episode_id)
                continue
            if not dry_run and source == "objects":
                write_manifest(store, episode)
        except Exception as exc:  # one unreadable episode must not stop the others
            failed.append(FailedRebuild(episode_id, f"{type(exc).__name__}: {exc}"[:500]))
            continue
        added.append(RebuiltEpisode(episode_id, episode.status, source, tuple(notes)))
    partitions: tuple[str, ...] = ()
    if instance is not None and not dry_run:
        partitions = _add_partitions(instance, [*present, *(e.episode_id for e in added)])
    return RebuildReport(
        added=tuple(added),
        present=tuple(present),
        failed=tuple(failed),
        partitions_added=partitions,
        dry_run=dry_run,
    )


def _note_source(episode_id: str, source: str) -> str:
    return manifest_key(episode_id) if source == "manifest" else f"objects, no {MANIFEST_NAME}"

"""Episodes put in a given state through the same catalog and store calls the assets make:
uploaded, started (``raw_audio`` took the upload), finished, failed; and what raw media an
episode still has. Shared by the purge, publishing and statistics tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg

from pod_assets import layout
from pod_assets.episodes.raw_audio import take_upload
from pod_assets.partitions import episode_partitions
from pod_resources.catalog import Catalog, EpisodeStatus
from pod_resources.storage import ObjectStore

S = EpisodeStatus
DAY = timedelta(hours=24)
ARTIFACTS = (
    layout.TRANSCRIPT,
    layout.CUT_LIST,
    layout.CLEANED_AUDIO,
    layout.CLEANED_TRANSCRIPT,
    layout.FINAL_EPISODE,
)


def start_of_hour() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def upload(
    store: ObjectStore,
    catalog: Catalog,
    name: str,
    data: bytes | None = None,
    *,
    instance: dg.DagsterInstance | None = None,
) -> str:
    """Write ``uploads/<name>`` and register it as the upload sensor does; the episode id."""
    from pod_sensors.uploads import content_md5

    data = data if data is not None else f"{name}:{uuid.uuid4().hex}".encode() * 50
    info = store.write_bytes(layout.upload_key(name), data)
    registration = catalog.register_upload(
        object_name=name,
        generation=info.generation,
        content_hash=content_md5(store, info),
        episode_id=layout.episode_id_for(name),
        title=layout.display_title(name),
    )
    episode_id = registration.episode.episode_id
    if instance is not None and not instance.has_dynamic_partition(
        episode_partitions.name, episode_id
    ):
        instance.add_dynamic_partitions(episode_partitions.name, [episode_id])
    return episode_id


def start(store: ObjectStore, catalog: Catalog, episode_id: str, *, at: datetime) -> str:
    """A run begins (``episode_step``'s entry) and ``raw_audio`` takes the upload."""
    run_id = uuid.uuid4().hex
    episode = catalog.get_episode(episode_id)
    assert catalog.set_status(
        episode_id, expected=episode.status, new=S.PROCESSING, run_id=run_id, at=at
    )
    raw_key = take_upload(store, catalog.get_episode(episode_id))
    catalog.set_raw_key(episode_id, raw_key)
    return run_id


def succeed(store: ObjectStore, catalog: Catalog, episode_id: str, *, at: datetime) -> None:
    for name in ARTIFACTS:
        store.write_bytes(layout.episode_key(episode_id, name), f"{name} of {episode_id}".encode())
    assert catalog.set_status(episode_id, expected=S.PROCESSING, new=S.PROCESSED, at=at)


def fail(catalog: Catalog, episode_id: str, *, at: datetime) -> None:
    assert catalog.set_status(
        episode_id, expected=S.PROCESSING, new=S.ERROR, error="boom", step="transcript", at=at
    )


def finished(
    store: ObjectStore, catalog: Catalog, name: str, *, at: datetime, instance=None
) -> str:
    episode_id = upload(store, catalog, name, instance=instance)
    start(store, catalog, episode_id, at=at)
    succeed(store, catalog, episode_id, at=at)
    return episode_id


def raw_objects(store: ObjectStore, episode_id: str) -> list[str]:
    return [
        info.key
        for info in store.list(layout.episode_prefix(episode_id))
        if info.key.rsplit("/", 1)[-1].startswith("raw.")
    ]


def has_raw_media(store: ObjectStore, catalog: Catalog, episode_id: str) -> bool:
    """Raw media of the episode anywhere: ``episodes/<ep>/raw.*`` or its upload."""
    episode = catalog.get_episode(episode_id)
    return bool(raw_objects(store, episode_id)) or store.exists(
        layout.upload_key(episode.source_name)
    )


def snapshot(store: ObjectStore) -> dict[str, int]:
    return {info.key: info.generation for info in store.list("")}

"""``raw_audio``: takes an episode's upload into the store and validates it."""


import tempfile
from pathlib import Path

import dagster as dg

from pod_assets import layout
from pod_assets.episode_asset import episode_asset, record_metrics, step_name
from pod_assets.status import EpisodeInputError, episode_step
from pod_audio.io import AudioInfo, iter_blocks, probe
from pod_audio.silence import ActivityReport, check_audible, measure_activity
from pod_resources.catalog import CatalogResource, Episode
from pod_resources.media_links import links_metadata
from pod_resources.show import ShowResource
from pod_resources.storage import ObjectInfo, ObjectStore
from pod_resources.storage.base import file_md5_hex

DEFAULT_MAX_DURATION_S = 4 * 3600.0


class RawAudioConfig(dg.Config):
    max_duration_s: float = DEFAULT_MAX_DURATION_S
    """Longer uploads are refused with a clear error (the bytes are kept)."""


def take_upload(store: ObjectStore, episode: Episode) -> str:
    """Move the episode's current upload to ``episodes/<ep>/raw.<ext>``; return that key.

    The upload is copied first and deleted only if it is still the generation the catalog
    registered, so a newer upload under the same name is never lost (the upload sensor
    registers it as a new version, with its own episode and run). With no upload left, the
    raw copy from an earlier run is used.

    Raw media is never overwritten with other bytes: each version of an upload name has its
    own episode and so its own ``raw.<ext>``; the copy is pinned to the generation it
    replaces (or to none), and raw media that exists with other bytes is refused.
    """
    raw_key = layout.raw_key(episode.episode_id, episode.source_name)
    upload_key = layout.upload_key(episode.source_name)
    upload = store.stat(upload_key)
    if upload is not None and upload.generation == episode.source_generation:
        existing = store.stat(raw_key)
        if existing is not None and not _same_bytes(store, existing, upload):
            raise EpisodeInputError(
                f"{raw_key} already holds other bytes than {upload_key} (generation "
                f"{upload.generation}); refusing to overwrite raw media"
            )
        store.copy(upload_key, raw_key, if_generation_match=existing.generation if existing else 0)
        store.delete(upload_key, if_generation_match=upload.generation)
        return raw_key
    if episode.raw_purged_at is not None:
        raise EpisodeInputError(
            f"raw audio for {episode.episode_id} was purged at "
            f"{episode.raw_purged_at.isoformat(timespec='seconds')}"
        )
    if store.exists(raw_key):
        return raw_key
    raise EpisodeInputError(
        f"raw audio for {episode.episode_id} is missing: neither {upload_key} "
        f"(generation {episode.source_generation}) nor {raw_key} exists"
    )


def read_raw(store: ObjectStore, episode: Episode, scratch: Path) -> Path:
    """The episode's raw media read into folder ``scratch``; the path of the copy."""
    raw_key = episode.raw_key or layout.raw_key(episode.episode_id, episode.source_name)
    path = scratch / Path(raw_key).name
    store.read_to_path(raw_key, path)
    return path


def _same_bytes(store: ObjectStore, a: ObjectInfo, b: ObjectInfo) -> bool:
    """Whether two objects hold the same bytes (MD5; streamed where the store has none)."""
    return a.size == b.size and _md5(store, a) == _md5(store, b)


def _md5(store: ObjectStore, info: ObjectInfo) -> str:
    if info.md5_hex:
        return info.md5_hex
    with tempfile.TemporaryDirectory(prefix="pod-md5-") as scratch:
        local = Path(scratch) / "object"
        store.read_to_path(info.key, local)
        return file_md5_hex(local)


@episode_asset(kinds={"audio", "gcs"}, pool="io")
def raw_audio(
    context: dg.AssetExecutionContext,
    config: RawAudioConfig,
    store: ObjectStore,
    catalog: CatalogResource,
    show: ShowResource,
) -> dg.MaterializeResult:
    """The original upload, moved to ``episodes/<ep>/raw.<ext>`` and probed.

    Validates that it holds a decodable audio stream with a duration above zero and below
    the configured maximum, and that something in it can be heard: digital silence and
    steady noise with nothing standing out fail here, before any speech recognition or
    cleaning is spent on them. A WAV header announcing less than the file holds is
    repaired (all the audio is used; the note is in the metadata). Bad input fails with a
    message naming the problem, the episode becomes ``error``, and the bytes stay in the
    store.
    """
    cat = catalog.get_catalog()
    with episode_step(context, cat, step=step_name(context)) as step:
        raw_key = take_upload(store, step.episode)
        cat.set_raw_key(step.episode_id, raw_key)
        cat.record_artifacts(step.episode_id, {"raw_audio": store.uri(raw_key)})
        stored, info, activity = _probe(store, raw_key, max_duration_s=config.max_duration_s)
        metadata = record_metrics(cat, step.episode_id, {
            "duration_s": round(info.duration_s, 3),
            "sample_rate": info.sample_rate,
            "channels": info.channels,
            "raw_bytes": stored.size,
            "peak_dbfs": round(max(activity.peak_dbfs, -200.0), 1),
        }, shown_as={"raw_bytes": "bytes"})
        check_audible(activity)
        for note in info.notes:
            context.log.warning(f"{step.episode_id}: {note}")
        return dg.MaterializeResult(
            metadata={
                **metadata,
                "codec": dg.MetadataValue.text(info.codec),
                "container": dg.MetadataValue.text(info.container),
                "standing_out_s": dg.MetadataValue.float(round(activity.standing_out_s, 2)),
                "notes": dg.MetadataValue.text("; ".join(info.notes) or "none"),
                "source_name": dg.MetadataValue.text(layout.printable(step.episode.source_name)),
                "uri": dg.MetadataValue.url(store.uri(raw_key)),
                **links_metadata(store, show.media_links(), {"raw_audio": raw_key}),
            }
        )


def _probe(
    store: ObjectStore, raw_key: str, *, max_duration_s: float
) -> tuple[ObjectInfo, AudioInfo, ActivityReport]:
    """Read the raw media: what was read, its stream, and whether anything stands out.

    Raises:
        EpisodeInputError: it is longer than ``max_duration_s``.
    """
    with tempfile.TemporaryDirectory(prefix="pod-raw-") as scratch:
        local = Path(scratch) / Path(raw_key).name
        stored = store.read_to_path(raw_key, local)
        info = probe(local)
        if info.duration_s > max_duration_s:
            raise EpisodeInputError(
                f"audio is {info.duration_s / 3600:.1f} h long; the limit is "
                f"{max_duration_s / 3600:.1f} h (raw_audio config max_duration_s)"
            )
        # Before any speech recognition or cleaning is spent on it: is there anything
        # to hear? Silence and steady noise fail here, with the bytes kept.
        activity = measure_activity(
            iter_blocks(local, sample_rate=info.sample_rate), sample_rate=info.sample_rate
        )
    return stored, info, activity

"""``raw_audio``: takes an episode's upload into the store and validates it."""


import hashlib
import tempfile
from pathlib import Path

import dagster as dg

from pod_assets import layout
from pod_assets.partitions import episode_partitions
from pod_assets.status import TRANSIENT_RETRY_POLICY, EpisodeInputError, episode_step
from pod_audio.io import iter_blocks, probe
from pod_audio.silence import check_audible, measure_activity
from pod_resources.catalog import CatalogResource, Episode
from pod_resources.storage import ObjectInfo, ObjectStore

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


def _same_bytes(store: ObjectStore, a: ObjectInfo, b: ObjectInfo) -> bool:
    """Whether two objects hold the same bytes (MD5; streamed where the store has none)."""
    return a.size == b.size and _md5(store, a) == _md5(store, b)


def _md5(store: ObjectStore, info: ObjectInfo) -> str:
    if info.md5_hex:
        return info.md5_hex
    digest = hashlib.md5(usedforsecurity=False)
    with tempfile.TemporaryDirectory(prefix="pod-md5-") as scratch:
        local = Path(scratch) / "object"
        store.read_to_path(info.key, local)
        with local.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


@dg.asset(
    partitions_def=episode_partitions,
    group_name="episodes",
    kinds={"audio", "gcs"},
    retry_policy=TRANSIENT_RETRY_POLICY,
    pool="io",
)
def raw_audio(
    context: dg.AssetExecutionContext,
    config: RawAudioConfig,
    store: ObjectStore,
    catalog: CatalogResource,
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
    with episode_step(context, cat, step="raw_audio") as step:
        raw_key = take_upload(store, step.episode)
        cat.set_raw_key(step.episode_id, raw_key)
        cat.record_artifacts(step.episode_id, {"raw_audio": store.uri(raw_key)})
        with tempfile.TemporaryDirectory(prefix="pod-raw-") as scratch:
            local = Path(scratch) / Path(raw_key).name
            stored = store.read_to_path(raw_key, local)
            info = probe(local)
            if info.duration_s > config.max_duration_s:
                raise EpisodeInputError(
                    f"audio is {info.duration_s / 3600:.1f} h long; the limit is "
                    f"{config.max_duration_s / 3600:.1f} h (raw_audio config max_duration_s)"
                )
            # Before any speech recognition or cleaning is spent on it: is there anything
            # to hear? Silence and steady noise fail here, with the bytes kept.
            activity = measure_activity(
                iter_blocks(local, sample_rate=info.sample_rate), sample_rate=info.sample_rate
            )
        cat.record_metrics(
            step.episode_id,
            {
                "duration_s": round(info.duration_s, 3),
                "sample_rate": info.sample_rate,
                "channels": info.channels,
                "raw_bytes": stored.size,
                "peak_dbfs": round(max(activity.peak_dbfs, -200.0), 1),
            },
        )
        check_audible(activity)
        for note in info.notes:
            context.log.warning(f"{step.episode_id}: {note}")
        return dg.MaterializeResult(
            metadata={
                "duration_s": dg.MetadataValue.float(round(info.duration_s, 3)),
                "sample_rate": dg.MetadataValue.int(info.sample_rate),
                "channels": dg.MetadataValue.int(info.channels),
                "codec": dg.MetadataValue.text(info.codec),
                "container": dg.MetadataValue.text(info.container),
                "bytes": dg.MetadataValue.int(stored.size),
                "peak_dbfs": dg.MetadataValue.float(round(max(activity.peak_dbfs, -200.0), 1)),
                "standing_out_s": dg.MetadataValue.float(round(activity.standing_out_s, 2)),
                "notes": dg.MetadataValue.text("; ".join(info.notes) or "none"),
                "source_name": dg.MetadataValue.text(layout.printable(step.episode.source_name)),
                "uri": dg.MetadataValue.url(store.uri(raw_key)),
            }
        )

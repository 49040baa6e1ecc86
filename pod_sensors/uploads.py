"""``upload_sensor``: new objects under ``uploads/`` become episodes and runs.

One tick lists ``uploads/`` once and returns one :class:`dg.SensorResult`:

* each upload not seen before (name and generation) is registered in the catalog;
* new episodes get their dynamic partition;
* each new upload gets one run, keyed ``<episode>@<generation>`` so the same bytes are
  never processed twice by accident;
* different bytes under the name of an existing episode are a new version: a new episode
  ``<episode>-v<n>`` with its own partition and run, processed beside the earlier versions,
  which are not touched (a published one stays published until the new version is
  published; see docs/catalog.md);
* the same bytes under a second name are recorded as a duplicate of the first episode,
  with no run.

The cursor is the set of ``{name: generation}`` already handled *that are still listed*:
it needs no ordering of keys, so it survives uploads being moved away by ``raw_audio`` or
deleted by hand, and it stays as small as the landing zone. At most
``max_runs_per_tick`` runs are requested per tick; the rest wait for the next tick.
A name that cannot be handled (hostile or unreadable) is logged and skipped; the tick
goes on with the others.
"""


import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from pod_assets import layout
from pod_assets.jobs import process_episode_job
from pod_assets.partitions import episode_partitions
from pod_assets.publish import version_note
from pod_resources.catalog import (
    Catalog,
    CatalogResource,
    Registration,
    RegistrationKind,
)
from pod_resources.storage import ObjectInfo, ObjectStore

DEFAULT_MAX_RUNS_PER_TICK = 20
DEFAULT_SENSOR_INTERVAL_S = 30
_HASH_CHUNK = 1 << 20


def upload_run_key(episode_id: str, generation: int) -> str:
    return f"{episode_id}@{generation}"


def content_md5(store: ObjectStore, info: ObjectInfo) -> str:
    """MD5 of an object: from the listing where the store has it, else by streaming."""
    if info.md5_hex:
        return info.md5_hex
    digest = hashlib.md5(usedforsecurity=False)
    with tempfile.TemporaryDirectory(prefix="pod-hash-") as scratch:
        local = Path(scratch) / "object"
        store.read_to_path(info.key, local)
        with local.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass
class UploadScan:
    """What one tick decided; :func:`scan_uploads` is the sensor without Dagster."""

    run_requests: list[dg.RunRequest] = field(default_factory=list)
    new_partitions: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    deferred: int = 0
    cursor: dict[str, int] = field(default_factory=dict)
    new_versions: list[str] = field(default_factory=list)
    """One readable line per upload that became a new version of an existing episode."""


def new_version_line(catalog: Catalog, registration: Registration) -> str:
    """What a new version means for the versions before it, in one line."""
    episode = registration.episode
    return version_note(catalog, episode) or (
        f"{episode.episode_id} is version {episode.version} of episode {episode.root_id}: "
        "processed beside the earlier versions, which are kept"
    )


def scan_uploads(
    *,
    store: ObjectStore,
    catalog: Catalog,
    cursor: dict[str, int],
    has_partition,
    max_runs: int,
    log,
) -> UploadScan:
    scan = UploadScan()
    listed: dict[str, int] = {}
    handled = dict(cursor)
    for info in store.list(layout.UPLOADS_PREFIX):
        name = info.key.removeprefix(layout.UPLOADS_PREFIX)
        listed[name] = info.generation
        if handled.get(name) == info.generation:
            continue
        if len(scan.run_requests) >= max_runs:
            scan.deferred += 1
            continue
        shown = layout.printable(name)
        try:
            episode_id = layout.episode_id_for(name)
            registration = catalog.register_upload(
                object_name=name,
                generation=info.generation,
                content_hash=content_md5(store, info),
                episode_id=episode_id,
                title=info.metadata.get("title") or layout.display_title(name),
            )
        except Exception as exc:  # one bad upload must not stop the others
            log.error(f"upload {shown!r} skipped this tick: {type(exc).__name__}: {exc}")
            scan.failed.append(shown)
            continue
        handled[name] = info.generation
        if registration.kind == RegistrationKind.DUPLICATE:
            log.info(
                f"upload {shown!r} has the same bytes as episode "
                f"{registration.upload.duplicate_of}; recorded as a duplicate, no run"
            )
            scan.duplicates.append(shown)
            continue
        episode_id = registration.episode.episode_id
        if registration.episode.source_generation != info.generation:
            # An older generation re-listed after a newer one was registered: nothing to do.
            continue
        tags = {
            "pod/episode": episode_id,
            "pod/source_generation": str(info.generation),
            "pod/trigger": "upload",
        }
        if registration.kind == RegistrationKind.NEW_VERSION:
            line = new_version_line(catalog, registration)
            log.info(line)
            scan.new_versions.append(line)
            tags["pod/version_of"] = registration.episode.root_id
        if not has_partition(episode_id) and episode_id not in scan.new_partitions:
            scan.new_partitions.append(episode_id)
        scan.run_requests.append(
            dg.RunRequest(
                run_key=upload_run_key(episode_id, info.generation),
                partition_key=episode_id,
                tags=tags,
            )
        )
    scan.cursor = {name: gen for name, gen in handled.items() if listed.get(name) == gen}
    return scan


def build_upload_sensor(
    *,
    max_runs_per_tick: int = DEFAULT_MAX_RUNS_PER_TICK,
    minimum_interval_seconds: int = DEFAULT_SENSOR_INTERVAL_S,
) -> dg.SensorDefinition:
    @dg.sensor(
        name="upload_sensor",
        job=process_episode_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def upload_sensor(
        context: dg.SensorEvaluationContext, store: ObjectStore, catalog: CatalogResource
    ) -> dg.SensorResult:
        """Registers new uploads as episodes and starts one run per new upload or version."""
        cursor = {str(k): int(v) for k, v in json.loads(context.cursor or "{}").items()}
        scan = scan_uploads(
            store=store,
            catalog=catalog.get_catalog(),
            cursor=cursor,
            has_partition=lambda key: context.instance.has_dynamic_partition(
                episode_partitions.name, key
            ),
            max_runs=max_runs_per_tick,
            log=context.log,
        )
        if scan.deferred:
            context.log.info(f"{scan.deferred} uploads wait for the next tick (cap {max_runs_per_tick})")
        return dg.SensorResult(
            run_requests=scan.run_requests,
            dynamic_partitions_requests=(
                [episode_partitions.build_add_request(scan.new_partitions)]
                if scan.new_partitions
                else []
            ),
            cursor=json.dumps(scan.cursor, sort_keys=True),
            skip_reason=None if scan.run_requests else "no new uploads",
        )

    return upload_sensor

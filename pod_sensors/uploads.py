"""``upload_sensor``: new objects under ``uploads/`` become episodes and runs.

The catalog, not the cursor, remembers what was seen. One tick:

1. lists ``uploads/`` page by page (the store's own paging on GCS) and asks the catalog, a
   page at a time, which ``(name, generation)`` it has recorded; only the others are new;
2. registers at most ``max_registrations_per_tick`` new uploads (hashing only those), adds
   the partitions of the new episodes: a big drop is registered within a few ticks whatever
   the run cap;
   * different bytes under the name of an existing episode are a new version: a new episode
     ``<episode>-v<n>``, processed beside the earlier versions, which are not touched (see
     docs/catalog.md);
   * the same bytes under a second name are recorded as a duplicate of the first episode,
     with no run;
3. requests at most ``max_runs_per_tick`` runs, in registration order, for registered
   uploads whose run has not started (:func:`pod_resources.catalog.queries.pending_runs`)
   and whose run key no run in the instance carries yet; each run is keyed
   ``<episode>@<generation>`` so the same bytes are never processed twice by accident.

The cursor is only a bookmark: the position of the last pending upload handled, so the
daemon's next tick starts after it instead of re-reading runs already queued. It is a few
hundred bytes at any N. A tick without it (``pod run`` evaluates the sensor without the
daemon's cursor) reads the pending uploads from the start and skips those whose runs exist:
runs queued or failed before never hold back a new upload. Every
:data:`FULL_PASS_S` the bookmark is dropped once, so an upload registered by a concurrent
process behind the bookmark is still found. A name that cannot be handled (hostile or
unreadable) is logged and skipped; the tick goes on with the others.
"""

import json
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

import dagster as dg

from pod_assets import defaults, layout
from pod_assets.jobs import process_episode_job
from pod_assets.partitions import episode_partitions
from pod_assets.publish.publishing import version_note
from pod_assets.tags import RUN_KEY_TAG, TRIGGER_TAG
from pod_resources.catalog import (
    Catalog,
    CatalogResource,
    Registration,
    RegistrationKind,
    queries,
)
from pod_resources.storage import ObjectInfo, ObjectStore
from pod_resources.storage.base import file_md5_hex

FULL_PASS_S = 600
"""How often the bookmark is dropped for one tick (seconds)."""
LIST_PAGE = 500
"""Listed objects checked against the catalog per query."""


def upload_run_key(episode_id: str, generation: int) -> str:
    return f"{episode_id}@{generation}"


def content_md5(store: ObjectStore, info: ObjectInfo) -> str:
    """MD5 of an object: from the listing where the store has it, else by streaming."""
    if info.md5_hex:
        return info.md5_hex
    with tempfile.TemporaryDirectory(prefix="pod-hash-") as scratch:
        local = Path(scratch) / "object"
        store.read_to_path(info.key, local)
        return file_md5_hex(local)


@dataclass(frozen=True)
class UploadCursor:
    """The sensor's bookmark: where the pending uploads it handled end, and since when it
    has kept one (see :data:`FULL_PASS_S`)."""

    mark: tuple[str, str, int] | None = None
    since: str | None = None

    @classmethod
    def parse(cls, text: str | None) -> "UploadCursor":
        try:
            data = json.loads(text or "{}")
            mark = data.get("mark")
            return cls(None if mark is None else (str(mark[0]), str(mark[1]), int(mark[2])),
                       data.get("since"))
        except (ValueError, TypeError, AttributeError, IndexError):
            return cls()  # an older cursor format: start from the catalog

    def dump(self) -> str:
        return json.dumps({"mark": self.mark, "since": self.since}, ensure_ascii=False)

    def for_tick(self, now: datetime) -> "UploadCursor":
        """The bookmark to start from; none once every :data:`FULL_PASS_S`."""
        if self.since is None or now - datetime.fromisoformat(self.since) > timedelta(
            seconds=FULL_PASS_S
        ):
            return UploadCursor(since=now.isoformat())
        return self


@dataclass
class UploadScan:
    """What one tick decided; :func:`scan_uploads` is the sensor without Dagster."""

    run_requests: list[dg.RunRequest] = field(default_factory=list)
    new_partitions: list[str] = field(default_factory=list)
    registered: int = 0
    duplicates: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    unregistered: int = 0
    """New uploads left for the next tick by ``max_registrations_per_tick``."""
    deferred: bool = False
    """More pending runs than ``max_runs_per_tick``: they wait for the next tick."""
    cursor: UploadCursor = field(default_factory=UploadCursor)
    new_versions: list[str] = field(default_factory=list)
    """One readable line per upload that became a new version of an existing episode."""


def new_version_line(catalog: Catalog, registration: Registration) -> str:
    """What a new version means for the versions before it, in one line."""
    episode = registration.episode
    return version_note(catalog, episode) or (
        f"{episode.episode_id} is version {episode.version} of episode {episode.root_id}: "
        "processed beside the earlier versions, which are kept"
    )


def _pages(items: Iterable[ObjectInfo], size: int) -> Iterator[list[ObjectInfo]]:
    iterator = iter(items)
    while page := list(islice(iterator, size)):
        yield page


def unregistered_uploads(
    store: ObjectStore, catalog: Catalog, *, limit: int
) -> tuple[list[ObjectInfo], int]:
    """Listed uploads the catalog has not recorded: the first ``limit``, and how many more.

    Memory: one listing page plus the ``limit`` kept, whatever the landing zone holds.
    """
    found: list[ObjectInfo] = []
    more = 0
    listing = (
        info for info in store.list(layout.UPLOADS_PREFIX)
        if not layout.is_chapter_sidecar(info.key.removeprefix(layout.UPLOADS_PREFIX))
    )  # chapter marks beside an upload are read by the chapters step
    for page in _pages(listing, LIST_PAGE):
        names = [info.key.removeprefix(layout.UPLOADS_PREFIX) for info in page]
        seen = queries.registered_generations(catalog, names)
        for name, info in zip(names, page, strict=True):
            if (name, info.generation) in seen:
                continue
            if len(found) < limit:
                found.append(info)
            else:
                more += 1
    return found, more


def _register(scan: UploadScan, store: ObjectStore, catalog: Catalog, info: ObjectInfo,
              has_partition: Callable[[str], bool], log) -> None:
    name = info.key.removeprefix(layout.UPLOADS_PREFIX)
    shown = layout.printable(name)
    try:
        registration = catalog.register_upload(
            object_name=name,
            generation=info.generation,
            content_hash=content_md5(store, info),
            episode_id=layout.episode_id_for(name),
            title=info.metadata.get("title") or layout.display_title(name),
        )
    except Exception as exc:  # one bad upload must not stop the others
        log.error(f"upload {shown!r} skipped this tick: {type(exc).__name__}: {exc}")
        scan.failed.append(shown)
        return
    scan.registered += 1
    if registration.kind == RegistrationKind.DUPLICATE:
        log.info(
            f"upload {shown!r} has the same bytes as episode "
            f"{registration.upload.duplicate_of}; recorded as a duplicate, no run"
        )
        scan.duplicates.append(shown)
        return
    episode_id = registration.episode.episode_id
    if registration.kind == RegistrationKind.NEW_VERSION:
        line = new_version_line(catalog, registration)
        log.info(line)
        scan.new_versions.append(line)
    if episode_id not in scan.new_partitions and not has_partition(episode_id):
        scan.new_partitions.append(episode_id)


def _run_request(pending: queries.PendingRun) -> dg.RunRequest:
    tags = {
        "pod/episode": pending.episode_id,
        "pod/source_generation": str(pending.generation),
        TRIGGER_TAG: "upload",
    }
    if pending.version_of:
        tags["pod/version_of"] = pending.version_of
    return dg.RunRequest(
        run_key=upload_run_key(pending.episode_id, pending.generation),
        partition_key=pending.episode_id,
        tags=tags,
    )


def _request_runs(
    scan: UploadScan,
    catalog: Catalog,
    cursor: UploadCursor,
    *,
    launched: Callable[[list[str]], set[str]],
    max_runs: int,
) -> None:
    """Up to ``max_runs`` pending uploads after the bookmark whose run key is unused."""
    mark = cursor.mark
    while len(scan.run_requests) < max_runs:
        after = None if mark is None else (datetime.fromisoformat(mark[0]), mark[1], mark[2])
        page = queries.pending_runs(catalog, after=after, limit=max(max_runs, 100))
        if not page:
            break
        keys = [upload_run_key(p.episode_id, p.generation) for p in page]
        used = launched(keys)
        for pending, key in zip(page, keys, strict=True):
            if len(scan.run_requests) >= max_runs:
                scan.deferred = True
                break
            mark = pending.position
            if key not in used:
                scan.run_requests.append(_run_request(pending))
    scan.cursor = UploadCursor(mark=mark, since=cursor.since)


def scan_uploads(
    *,
    store: ObjectStore,
    catalog: Catalog,
    cursor: UploadCursor,
    has_partition: Callable[[str], bool],
    launched: Callable[[list[str]], set[str]],
    max_runs: int,
    max_registrations: int = defaults.MAX_REGISTRATIONS_PER_TICK,
    log,
) -> UploadScan:
    scan = UploadScan()
    new, scan.unregistered = unregistered_uploads(store, catalog, limit=max_registrations)
    for info in new:
        _register(scan, store, catalog, info, has_partition, log)
    _request_runs(scan, catalog, cursor, launched=launched, max_runs=max_runs)
    for request in scan.run_requests:  # registered by `pod import` cut short, or restored
        key = request.partition_key
        if key not in scan.new_partitions and not has_partition(key):
            scan.new_partitions.append(key)
    return scan


def launched_run_keys(instance: dg.DagsterInstance) -> Callable[[list[str]], set[str]]:
    """Which of some run keys a run in ``instance`` already carries (one query)."""

    def launched(keys: list[str]) -> set[str]:
        records = instance.get_run_records(filters=dg.RunsFilter(tags={RUN_KEY_TAG: keys}))
        return {record.dagster_run.tags.get(RUN_KEY_TAG, "") for record in records}

    return launched


def build_upload_sensor(
    *,
    max_runs_per_tick: int = defaults.MAX_RUNS_PER_TICK,
    max_registrations_per_tick: int = defaults.MAX_REGISTRATIONS_PER_TICK,
    minimum_interval_seconds: int = defaults.SENSOR_INTERVAL_S,
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
        cursor = UploadCursor.parse(context.cursor).for_tick(datetime.now(UTC))
        scan = scan_uploads(
            store=store,
            catalog=catalog.get_catalog(),
            cursor=cursor,
            has_partition=lambda key: context.instance.has_dynamic_partition(
                episode_partitions.name, key
            ),
            launched=launched_run_keys(context.instance),
            max_runs=max_runs_per_tick,
            max_registrations=max_registrations_per_tick,
            log=context.log,
        )
        if scan.unregistered:
            context.log.info(f"{scan.unregistered} new uploads wait for the next tick "
                             f"(registration cap {max_registrations_per_tick})")
        if scan.deferred:
            context.log.info(f"more runs wait for the next tick (cap {max_runs_per_tick})")
        return dg.SensorResult(
            run_requests=scan.run_requests,
            dynamic_partitions_requests=(
                [episode_partitions.build_add_request(scan.new_partitions)]
                if scan.new_partitions
                else []
            ),
            cursor=scan.cursor.dump(),
            skip_reason=None if scan.run_requests else "no new uploads",
        )

    return upload_sensor

"""The production setup end to end, driven by the daemon only.

``deploy/serve.py`` runs the webserver and the daemon on Postgres storage (see
``tests/plugins/dagster_services.py``); episodes live in the GCS emulator. Nothing here runs
a step itself: ten uploads land in ``uploads/`` (most of them at once), the daemon's
``upload_sensor`` ticks, its run queue starts the runs within the run limit and the pool
limits, and the test only watches. Then an asset backfill, launched through the webserver's
GraphQL API with other cleaning settings, reprocesses five episodes and leaves the other
five alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from pod_assets import cleaned_audio, final_episode, layout, raw_audio, transcript
from pod_audio.cuts import CutList
from pod_audio.io import iter_blocks
from pod_resources.catalog import Catalog, EpisodeStatus, dispose_engines
from tests import audio_factory as af
from tests.plugins.dagster_services import TEST_LIMITS, TEST_POOLS, DagsterServices

EPISODE_ASSETS = (raw_audio, transcript, cleaned_audio, final_episode)
STEP_POOLS = {asset.op.name: asset.op.pool for asset in EPISODE_ASSETS}
RATE = 44100
FIRST_BATCH = 6
UPLOADS = 10
BACKFILLED = 5
BACKFILL_CLEANING = {"max_pause_ms": 1500.0, "margin_ms": 200.0, "crossfade_ms": 10.0, "remove_fillers": False}
PROCESS_TIMEOUT_S = 420.0
BACKFILL_TIMEOUT_S = 240.0

_STEP_BEGIN = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_RESTARTED}
_STEP_END = {
    dg.DagsterEventType.STEP_SUCCESS,
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.STEP_UP_FOR_RETRY,
}

LAUNCH_BACKFILL = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on UnauthorizedError { message }
  }
}
"""
BACKFILL_STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { id status }
    ... on PythonError { message }
  }
}
"""
AUTOMATION = """
query Automation($selector: RepositorySelector!) {
  repositoryOrError(repositorySelector: $selector) {
    __typename
    ... on Repository {
      schedules { name scheduleState { status } }
      sensors { name sensorState { status ticks(limit: 1) { status } } }
    }
  }
}
"""


# --------------------------------------------------------------------------- uploads


def _speech(path: Path) -> np.ndarray:
    return np.concatenate(list(iter_blocks(path, sample_rate=RATE, channels=2)))


def _clip(speech: np.ndarray, index: int) -> np.ndarray:
    """About 3.5 s: two pieces of real speech around a pause longer than the default limit."""
    start_s = 0.3 + 0.6 * index
    first = speech[int(start_s * RATE) : int((start_s + 1.1) * RATE)]
    second = speech[int((start_s + 2.5) * RATE) : int((start_s + 3.6) * RATE)]
    pause = af.silence(duration_s=1.2 + 0.03 * index, sample_rate=RATE, channels=2)
    return af.concat(first, pause, second)


def _write_uploads(tmp_path: Path, jfk_path: Path) -> list[Path]:
    speech = _speech(jfk_path)
    paths = []
    for index in range(UPLOADS):
        suffix = ".wav" if index % 3 == 2 else ".flac"
        name = f"daemon e2e {index:02d}{suffix}"
        paths.append(af.write_audio(tmp_path / name, _clip(speech, index), sample_rate=RATE))
    return paths


def _upload_all(services: DagsterServices, paths: Iterable[Path]) -> None:
    """Several uploads at once, as a studio's sync client does."""
    paths = list(paths)
    with ThreadPoolExecutor(max_workers=len(paths)) as pool:
        list(pool.map(lambda p: services.store.write_file(layout.upload_key(p.name), p), paths))


# --------------------------------------------------------------------------- runs and steps


@dataclass(frozen=True)
class Interval:
    what: str
    start: float
    end: float


def max_overlap(intervals: Iterable[Interval]) -> int:
    """Most intervals open at one instant (an interval ending when another starts does not count)."""
    edges = sorted(
        [(i.start, 1) for i in intervals] + [(i.end, -1) for i in intervals],
        key=lambda edge: (edge[0], edge[1]),
    )
    open_now = peak = 0
    for _, delta in edges:
        open_now += delta
        peak = max(peak, open_now)
    return peak


def _step_intervals(instance: dg.DagsterInstance, run: dg.RunRecord, now: float) -> list[Interval]:
    """The steps of one run; a step still going in a run still going (the feed sensor's
    ``show_statistics`` run may start as the last episode finishes) is open until ``now``."""
    run_id = run.dagster_run.run_id
    records = instance.get_records_for_run(
        run_id, of_type={*_STEP_BEGIN, *_STEP_END}
    ).records
    started: dict[str, float] = {}
    intervals = []
    for record in records:
        event = record.event_log_entry.dagster_event
        if event.event_type in _STEP_BEGIN:
            started[event.step_key] = record.timestamp
        elif event.step_key in started:
            intervals.append(Interval(event.step_key, started.pop(event.step_key), record.timestamp))
    if run.dagster_run.is_finished:
        assert not started, f"run {run_id} ended with steps started and never ended: {started}"
    intervals.extend(Interval(step, start, now) for step, start in started.items())
    return intervals


def _runs(instance: dg.DagsterInstance, tags: dict[str, str]) -> list[dg.RunRecord]:
    return list(instance.get_run_records(filters=dg.RunsFilter(tags=tags)))


def _episode_runs_done(
    services: DagsterServices, instance: dg.DagsterInstance, episode_ids: set[str]
) -> dict[str, dg.RunRecord] | None:
    """The successful upload run of every episode; fails at once on a failed run."""
    done = {}
    for record in _runs(instance, {"dagster/sensor_name": "upload_sensor"}):
        run = record.dagster_run
        episode_id = run.tags.get("dagster/partition")
        if episode_id not in episode_ids:
            continue
        if run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
            services.fail(f"run {run.run_id} of {episode_id} ended {run.status.value}")
        if run.status == dg.DagsterRunStatus.SUCCESS:
            done[episode_id] = record
    return done if set(done) == episode_ids else None


def _latest_materialization(instance: dg.DagsterInstance, asset: str, episode_id: str) -> dg.EventLogRecord:
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[episode_id]),
        limit=1,
        ascending=False,
    )
    assert result.records, f"{asset}[{episode_id}] was never materialized"
    return result.records[0]


@dataclass(frozen=True)
class EpisodeSnapshot:
    cleaned_storage_id: int
    final_storage_id: int
    generations: tuple[int, ...]
    cleaned_duration_s: float


def _snapshot(services: DagsterServices, instance: dg.DagsterInstance, catalog: Catalog, episode_id: str):
    keys = [layout.episode_key(episode_id, name) for name in (layout.CLEANED_AUDIO, layout.CUT_LIST, layout.FINAL_EPISODE)]
    generations = []
    for key in keys:
        info = services.store.stat(key)
        assert info is not None, f"{key} is missing"
        generations.append(info.generation)
    return EpisodeSnapshot(
        cleaned_storage_id=_latest_materialization(instance, "cleaned_audio", episode_id).storage_id,
        final_storage_id=_latest_materialization(instance, "final_episode", episode_id).storage_id,
        generations=tuple(generations),
        cleaned_duration_s=catalog.get_episode(episode_id).metrics["cleaned_duration_s"],
    )


# --------------------------------------------------------------------------- the test


@pytest.fixture
def catalog(dagster_services: DagsterServices):
    catalog = Catalog(dagster_services.catalog_url)
    yield catalog
    dispose_engines(dagster_services.catalog_url)


@pytest.fixture
def instance(dagster_services: DagsterServices):
    with dagster_services.instance() as instance:
        yield instance


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.gcs
def test_uploads_are_processed_by_the_daemon_within_limits_then_backfilled(
    dagster_services: DagsterServices,
    instance: dg.DagsterInstance,
    catalog: Catalog,
    gcs_emulator_env,
    jfk_path,
    tmp_path,
):
    services = dagster_services
    paths = _write_uploads(tmp_path, jfk_path)
    episode_ids = {layout.episode_id_for(p.name) for p in paths}
    assert len(episode_ids) == UPLOADS

    # -- ten uploads: six at once, four more while the first runs are going
    _upload_all(services, paths[:FIRST_BATCH])
    services.wait_until(
        "the first sensor-launched run",
        lambda: _any_run_started(instance),
        timeout_s=120,
    )
    _upload_all(services, paths[FIRST_BATCH:])
    done = services.wait_until(
        f"{UPLOADS} episodes processed by the daemon",
        lambda: _episode_runs_done(services, instance, episode_ids),
        timeout_s=PROCESS_TIMEOUT_S,
        interval_s=2.0,
    )

    for episode_id in episode_ids:
        episode = catalog.get_episode(episode_id)
        assert episode.status == EpisodeStatus.PROCESSED, (episode_id, episode.last_error)
        assert episode.artifacts["final_episode"].startswith("gs://"), episode.artifacts
        assert services.store.stat(layout.upload_key(episode.source_name)) is None  # taken in

    # -- the run queue and the pools held their limits
    for record in done.values():
        run_id = record.dagster_run.run_id
        assert instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED
        ).records, f"run {run_id} did not go through the queue"
    now = time.time()
    all_runs = list(instance.get_run_records())
    run_intervals = [
        Interval(r.dagster_run.run_id, r.start_time, r.end_time)
        for r in all_runs
        if r.start_time is not None and r.end_time is not None
    ]
    steps = [step for r in all_runs for step in _step_intervals(instance, r, now)]
    assert max_overlap(run_intervals) <= TEST_LIMITS["max_concurrent_runs"]
    for pool, limit in TEST_POOLS.items():
        in_pool = [s for s in steps if STEP_POOLS.get(s.what) == pool]
        assert in_pool, f"no step ran in pool {pool}"
        assert max_overlap(in_pool) <= limit, f"pool {pool} ran {max_overlap(in_pool)} steps at once (limit {limit})"
    assert max_overlap(run_intervals) == TEST_LIMITS["max_concurrent_runs"], "runs never ran side by side"

    # -- a backfill through the webserver's GraphQL API, with other cleaning settings
    chosen = sorted(episode_ids)[:BACKFILLED]
    untouched = sorted(episode_ids - set(chosen))
    before = {ep: _snapshot(services, instance, catalog, ep) for ep in sorted(episode_ids)}
    launched = services.graphql(
        LAUNCH_BACKFILL,
        {
            "params": {
                "partitionNames": chosen,
                "assetSelection": [{"path": ["cleaned_audio"]}, {"path": ["final_episode"]}],
                "runConfigData": {"ops": {"cleaned_audio": {"config": BACKFILL_CLEANING}}},
                "tags": [{"key": "pod/trigger", "value": "backfill"}],
                "title": "Keep pauses up to 1.5 s",
            }
        },
    )["launchPartitionBackfill"]
    if launched["__typename"] != "LaunchBackfillSuccess":
        services.fail(f"backfill not launched: {launched}")
    backfill_id = launched["backfillId"]

    def backfill_runs_done() -> list[dg.RunRecord] | None:
        status = services.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"].get("status")
        if status in ("FAILED", "FAILING", "CANCELED", "CANCELING", "COMPLETED_FAILED"):
            services.fail(f"backfill {backfill_id} is {status}")
        runs = _runs(instance, {"dagster/backfill": backfill_id})
        if failed := [r.dagster_run.run_id for r in runs if r.dagster_run.status == dg.DagsterRunStatus.FAILURE]:
            services.fail(f"backfill runs failed: {failed}")
        finished = [r for r in runs if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS]
        covered = {r.dagster_run.tags.get("dagster/partition") for r in finished}
        if covered != set(chosen) or len(finished) != len(runs):
            return None
        run_ids = {r.dagster_run.run_id for r in finished}
        if not all(_latest_materialization(instance, "final_episode", ep).run_id in run_ids for ep in chosen):
            return None  # the backfill still has final_episode to request
        return finished

    # The backfill's own status turns COMPLETED one daemon iteration (30 s) after its last
    # run; its runs are what the operator waits for.
    backfill_runs = services.wait_until(
        f"the runs of backfill {backfill_id}", backfill_runs_done, timeout_s=BACKFILL_TIMEOUT_S, interval_s=2.0
    )
    backfill_run_ids = {r.dagster_run.run_id for r in backfill_runs}
    for episode_id in chosen:
        old, new = before[episode_id], _snapshot(services, instance, catalog, episode_id)
        assert new.cleaned_storage_id > old.cleaned_storage_id and new.final_storage_id > old.final_storage_id
        assert all(n != o for n, o in zip(new.generations, old.generations, strict=True)), episode_id
        record = _latest_materialization(instance, "cleaned_audio", episode_id)
        assert record.run_id in backfill_run_ids
        metadata = record.asset_materialization.metadata
        assert metadata["settings"].data["max_pause_ms"] == BACKFILL_CLEANING["max_pause_ms"]
        assert metadata["settings"].data["remove_fillers"] is False
        assert metadata["pauses_removed_s"].value == 0.0  # every pause is under 1.5 s
        assert new.cleaned_duration_s > old.cleaned_duration_s
        cut_list = CutList.from_json(services.store.read_bytes(layout.episode_key(episode_id, layout.CUT_LIST)))
        assert cut_list.settings["max_pause_ms"] == BACKFILL_CLEANING["max_pause_ms"]
        assert catalog.get_episode(episode_id).status == EpisodeStatus.PROCESSED
    for episode_id in untouched:
        assert _snapshot(services, instance, catalog, episode_id) == before[episode_id], episode_id

    # -- the purge schedule and every sensor are running, and the daemon has ticked the sensors
    repository = services.graphql(
        AUTOMATION,
        {"selector": {"repositoryLocationName": services.location_name, "repositoryName": "__repository__"}},
    )["repositoryOrError"]
    assert repository["__typename"] == "Repository", repository
    schedules = {s["name"]: s["scheduleState"]["status"] for s in repository["schedules"]}
    assert schedules.get("purge_schedule") == "RUNNING", schedules
    sensors = {s["name"]: s["sensorState"] for s in repository["sensors"]}
    for name in ("upload_sensor", "purge_sensor", "episode_run_failure_sensor", "episode_run_canceled_sensor"):
        assert name in sensors, sorted(sensors)
        assert sensors[name]["status"] == "RUNNING", (name, sensors[name])
        assert sensors[name]["ticks"], f"the daemon never ticked {name}"
    assert all(services.daemon_health().values()), services.daemon_health()


def _any_run_started(instance: dg.DagsterInstance) -> bool:
    return any(
        r.dagster_run.status not in (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED)
        for r in _runs(instance, {"dagster/sensor_name": "upload_sensor"})
    )


def test_max_overlap_counts_only_open_intervals():
    assert max_overlap([Interval("a", 0, 1), Interval("b", 1, 2)]) == 1
    assert max_overlap([Interval("a", 0, 2), Interval("b", 1, 3), Interval("c", 1.5, 1.6)]) == 3
    assert max_overlap([]) == 0

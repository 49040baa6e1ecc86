"""The retention-aware purge on a real local store, SQLite catalog and Dagster instance:
what it deletes and keeps, dry runs, failures, races, the job, the schedule, the sensor and
``pod purge``. Postgres and the GCS emulator: tests/assets/test_purge_postgres.py and the state
machine in tests/assets/test_purge_state_machine.py."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from pydantic import Field

from pod_assets import layout
from pod_assets.partitions import episode_partitions
from pod_assets.purge import (
    REASON_MAX_DELETIONS,
    REASON_WITHIN_RETENTION,
    execute_purge,
    plan_purge,
    purge,
)
from pod_assets.defaults import PURGE_CRON as DEFAULT_PURGE_CRON
from pod_assets.purge.job import PURGE_OP, purge_job, purge_run_config
from pod_assets.episodes.raw_audio import raw_audio
from pod_resources.catalog import Catalog, RawMediaPurgedError
from pod_resources.storage import LocalObjectStore, ObjectStoreError
from pod_sensors.purge import build_purge_schedule, build_purge_sensor, schedule_run_key
from tests.episode_states import (
    ARTIFACTS,
    DAY,
    S,
    fail,
    finished,
    has_raw_media,
    raw_objects,
    snapshot,
    start,
    start_of_hour,
    succeed,
    upload,
)

@pytest.fixture
def env(pipeline):
    """The pipeline fixture's store and catalog, and a clock at the start of this hour."""
    pipeline.t0 = start_of_hour()
    return pipeline


# -- what is deleted and what is kept -----------------------------------------------------


def test_purge_deletes_only_finished_raw_media_past_the_retention(env):
    store, catalog, t0 = env.store, env.catalog, env.t0
    old = t0 - 3 * DAY
    processed = finished(store, catalog, "processed.mp3", at=old, instance=env.instance)
    published = finished(store, catalog, "published.mp3", at=old, instance=env.instance)
    assert catalog.set_status(published, expected=S.PROCESSED, new=S.PUBLISHED, at=old)
    recent = finished(store, catalog, "recent.mp3", at=t0 - timedelta(hours=23))
    uploaded = upload(store, catalog, "uploaded.mp3", instance=env.instance)
    processing = upload(store, catalog, "processing.mp3")
    start(store, catalog, processing, at=old)
    errored = upload(store, catalog, "errored.mp3")
    start(store, catalog, errored, at=old)
    fail(catalog, errored, at=old)
    before = snapshot(store)

    report = purge(catalog, store, now=t0, retention=DAY)

    assert {e.episode_id for e in report.deleted} == {processed, published}
    assert report.eligible == 2 and not report.failed and not report.skipped_by_race
    kept = {k.episode_id: k.reason for k in report.kept}
    assert kept == {
        recent: REASON_WITHIN_RETENTION,
        uploaded: "status=uploaded",
        processing: "status=processing",
        errored: "status=error",
    }
    for episode_id in (processed, published):
        assert raw_objects(store, episode_id) == []
        assert catalog.get_episode(episode_id).raw_purged_at == t0
        for name in ARTIFACTS:  # transcripts, cleaned audio and final episodes stay
            assert store.exists(layout.episode_key(episode_id, name))
    for episode_id in (recent, uploaded, processing, errored):
        assert has_raw_media(store, catalog, episode_id)
        assert catalog.get_episode(episode_id).raw_purged_at is None
    gone = set(before) - set(snapshot(store))
    assert gone == {f"episodes/{e}/raw.mp3" for e in (processed, published)}
    assert report.bytes_freed == sum(e.bytes for e in report.deleted) > 0
    assert catalog.get_episode(published).status == S.PUBLISHED  # the purge changes no status

    again = purge(catalog, store, now=t0, retention=DAY)
    assert again.deleted == () and again.eligible == 0
    assert snapshot(store) == {k: v for k, v in before.items() if k not in gone}
    assert set(env.instance.get_dynamic_partitions(episode_partitions.name)) == {
        processed,
        published,
        uploaded,
    }


def test_dry_run_reports_and_deletes_nothing(env):
    store, catalog, t0 = env.store, env.catalog, env.t0
    episode_id = finished(store, catalog, "show.mp3", at=t0 - 2 * DAY)
    before = snapshot(store)

    report = purge(catalog, store, now=t0, retention=DAY, dry_run=True)

    assert report.dry_run and report.bytes_freed == 0
    [entry] = report.deleted
    assert entry.episode_id == episode_id
    assert entry.objects == (f"episodes/{episode_id}/raw.mp3",) and entry.bytes > 0
    assert snapshot(store) == before
    assert catalog.get_episode(episode_id).raw_purged_at is None
    assert report.to_json()["dry_run"] is True


def test_retention_is_measured_from_the_last_status_change(env):
    store, catalog, t0 = env.store, env.catalog, env.t0
    episode_id = finished(store, catalog, "show.mp3", at=t0 - 3 * DAY)
    # Published yesterday afternoon: its raw media is kept for another day.
    assert catalog.set_status(
        episode_id, expected=S.PROCESSED, new=S.PUBLISHED, at=t0 - timedelta(hours=20)
    )
    assert purge(catalog, store, now=t0, retention=DAY).deleted == ()
    assert [e.episode_id for e in purge(catalog, store, now=t0 + DAY, retention=DAY).deleted] == [
        episode_id
    ]


def test_leftover_upload_of_the_same_bytes_is_deleted_with_the_raw_media(env):
    store, catalog, t0 = env.store, env.catalog, env.t0
    episode_id = upload(store, catalog, "show.mp3")
    # raw_audio copied the upload, then died before deleting it.
    assert catalog.set_status(
        episode_id, expected=S.UPLOADED, new=S.PROCESSING, run_id="r", at=t0 - 2 * DAY
    )
    store.copy(layout.upload_key("show.mp3"), layout.raw_key(episode_id, "show.mp3"))
    catalog.set_raw_key(episode_id, layout.raw_key(episode_id, "show.mp3"))
    succeed(store, catalog, episode_id, at=t0 - 2 * DAY)
    # The same bytes under a second name are a duplicate of this episode.
    duplicate = store.read_bytes(layout.upload_key("show.mp3"))
    assert upload(store, catalog, "copy of show.mp3", duplicate) == episode_id
    # An upload with other bytes that no one registered yet is left alone.
    store.write_bytes(layout.upload_key("unrelated.mp3"), b"other bytes")

    [entry] = purge(catalog, store, now=t0, retention=DAY).deleted

    assert set(entry.objects) == {
        "uploads/show.mp3",
        "uploads/copy of show.mp3",
        f"episodes/{episode_id}/raw.mp3",
    }
    assert entry.objects[-1] == f"episodes/{episode_id}/raw.mp3"  # raw media goes last
    assert not has_raw_media(store, catalog, episode_id)
    assert store.exists(layout.upload_key("unrelated.mp3"))


def test_registered_new_version_is_its_own_episode_and_the_old_one_purges_alone(env):
    store, catalog, t0 = env.store, env.catalog, env.t0
    episode_id = finished(store, catalog, "show.mp3", at=t0 - 3 * DAY)
    version_id = upload(store, catalog, "show.mp3", b"version two" * 40)
    assert version_id == f"{episode_id}-v2"

    [entry] = purge(catalog, store, now=t0, retention=DAY).deleted

    # The old version's raw media goes; the new version's upload is not its to delete.
    assert entry.objects == (f"episodes/{episode_id}/raw.mp3",)
    assert {k.episode_id: k.reason for k in purge(catalog, store, now=t0, retention=DAY).kept} == {
        version_id: "status=uploaded"
    }
    assert store.read_bytes("uploads/show.mp3") == b"version two" * 40
    # Its run processes the new version; three days later that is purged in turn.
    start(store, catalog, version_id, at=t0)
    succeed(store, catalog, version_id, at=t0)
    assert store.read_bytes(layout.raw_key(version_id, "show.mp3")) == b"version two" * 40
    [entry] = purge(catalog, store, now=t0 + 3 * DAY, retention=DAY).deleted
    assert entry.episode_id == version_id and not has_raw_media(store, catalog, version_id)


def test_unregistered_new_version_is_not_deleted_and_is_processed_after_a_purge(env):
    store, catalog, t0 = env.store, env.catalog, env.t0
    episode_id = finished(store, catalog, "show.mp3", at=t0 - 3 * DAY)
    # New bytes land in uploads/ before the upload sensor saw them.
    store.write_bytes(layout.upload_key("show.mp3"), b"version two" * 40)

    [entry] = purge(catalog, store, now=t0, retention=DAY).deleted

    assert entry.objects == (f"episodes/{episode_id}/raw.mp3",)
    assert store.read_bytes("uploads/show.mp3") == b"version two" * 40
    with pytest.raises(RawMediaPurgedError):
        start(store, catalog, episode_id, at=t0)
    # The sensor registers the new bytes as a new version, processed on its own.
    version_id = upload(store, catalog, "show.mp3", b"version two" * 40)
    assert version_id == f"{episode_id}-v2"
    assert catalog.get_episode(episode_id).raw_purged_at is not None
    start(store, catalog, version_id, at=t0 + timedelta(hours=1))
    succeed(store, catalog, version_id, at=t0 + timedelta(hours=1))
    assert store.read_bytes(layout.raw_key(version_id, "show.mp3")) == b"version two" * 40


def test_max_deletions_defers_the_rest_to_the_next_run(env):
    store, catalog, t0 = env.store, env.catalog, env.t0
    ids = [finished(store, catalog, f"ep{i}.mp3", at=t0 - (5 - i) * DAY) for i in range(3)]

    first = purge(catalog, store, now=t0, retention=DAY, max_deletions=2)

    assert [e.episode_id for e in first.deleted] == ids[:2]  # oldest first
    assert first.eligible == 3
    assert {k.episode_id: k.reason for k in first.kept} == {ids[2]: REASON_MAX_DELETIONS}
    assert [e.episode_id for e in purge(catalog, store, now=t0, retention=DAY).deleted] == ids[2:]


class FailingDeletesStore(LocalObjectStore):
    """A real local store whose deletes of some keys fail, as an outage would."""

    failing_keys: list[str] = Field(default_factory=list)

    def delete(self, key: str, *, if_generation_match: int | None = None) -> None:
        if key in self.failing_keys:
            raise ObjectStoreError(f"delete {key} failed: 503 Service Unavailable")
        super().delete(key, if_generation_match=if_generation_match)


def test_a_failed_deletion_is_reported_and_retried_without_stopping_the_rest(env):
    catalog, t0 = env.catalog, env.t0
    ids = [finished(env.store, catalog, f"ep{i}.mp3", at=t0 - 2 * DAY) for i in range(3)]
    flaky_key = f"episodes/{ids[1]}/raw.mp3"
    flaky = FailingDeletesStore(root=env.store.root, failing_keys=[flaky_key])

    report = purge(catalog, flaky, now=t0, retention=DAY)

    assert [e.episode_id for e in report.deleted] == [ids[0], ids[2]]
    [failure] = report.failed
    assert (failure.episode_id, failure.key) == (ids[1], flaky_key)
    assert "503" in failure.error
    assert catalog.get_episode(ids[1]).raw_purged_at is None  # not marked purged
    assert env.store.exists(flaky_key)

    retry = purge(catalog, env.store, now=t0, retention=DAY)
    assert [e.episode_id for e in retry.deleted] == [ids[1]] and not retry.failed
    assert not env.store.exists(flaky_key)


# -- races ----------------------------------------------------------------------------------


def test_episode_reprocessed_between_selection_and_deletion_keeps_its_raw_media(env):
    store, catalog, t0 = env.store, env.catalog, env.t0
    racing = finished(store, catalog, "racing.mp3", at=t0 - 2 * DAY)
    other = finished(store, catalog, "other.mp3", at=t0 - 2 * DAY)
    plan = plan_purge(catalog, store, now=t0, retention=DAY)
    assert {p.episode_id for p in plan.eligible} == {racing, other}

    start(store, catalog, racing, at=t0)  # a backfill begins after the selection
    report = execute_purge(catalog, store, plan)

    assert [e.episode_id for e in report.deleted] == [other]
    [skipped] = report.skipped_by_race
    assert skipped.episode_id == racing and "processing" in skipped.reason
    assert raw_objects(store, racing) == [f"episodes/{racing}/raw.mp3"]
    episode = catalog.get_episode(racing)
    assert (episode.status, episode.raw_purged_at) == (S.PROCESSING, None)
    kept = {k["episode_id"]: k["reason"] for k in report.to_json()["kept"]}
    assert "processing" in kept[racing]


def test_raw_media_rewritten_after_planning_is_not_deleted(env):
    store, catalog, t0 = env.store, env.catalog, env.t0
    episode_id = finished(store, catalog, "show.mp3", at=t0 - 2 * DAY)
    plan = plan_purge(catalog, store, now=t0, retention=DAY)
    raw_key = layout.raw_key(episode_id, "show.mp3")
    store.write_bytes(raw_key, b"rewritten")

    report = execute_purge(catalog, store, plan)

    assert report.deleted == () and [s.episode_id for s in report.skipped_by_race] == [episode_id]
    assert store.read_bytes(raw_key) == b"rewritten"
    assert catalog.get_episode(episode_id).raw_purged_at is None  # the mark was taken back


def test_no_run_can_start_on_an_episode_marked_purged(env):
    store, catalog, t0 = env.store, env.catalog, env.t0
    episode_id = finished(store, catalog, "show.mp3", at=t0 - 2 * DAY)
    episode = catalog.get_episode(episode_id)
    assert catalog.mark_raw_purged(
        episode_id,
        expected_statuses=[S.PROCESSED],
        at=t0,
        only_if_status_changed_at=episode.status_changed_at,
        only_if_source_generation=episode.source_generation,
    )
    history = catalog.history(episode_id)

    with pytest.raises(RawMediaPurgedError, match=rf"raw audio for {episode_id} was purged at "):
        catalog.set_status(episode_id, expected=None, new=S.PROCESSING, run_id="late")

    after = catalog.get_episode(episode_id)
    assert (after.status, after.processing_run_id) == (S.PROCESSED, episode.processing_run_id)
    assert catalog.history(episode_id) == history
    assert catalog.unmark_raw_purged(episode_id, only_if_purged_at=t0)
    assert not catalog.unmark_raw_purged(episode_id, only_if_purged_at=t0)
    start(store, catalog, episode_id, at=t0)  # unmarked: processing is allowed again


def test_reprocessing_a_purged_episode_fails_at_once_and_marks_nothing(env):
    store, catalog, t0 = env.store, env.catalog, env.t0
    episode_id = finished(store, catalog, "show.mp3", at=t0 - 2 * DAY, instance=env.instance)
    assert catalog.set_status(episode_id, expected=S.PROCESSED, new=S.PUBLISHED, at=t0 - 2 * DAY)
    purge(catalog, store, now=t0, retention=DAY)
    before = catalog.get_episode(episode_id)
    history = catalog.history(episode_id)

    result = env.materialize([raw_audio], episode_id)

    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    message = failures[0].step_failure_data.error.message
    assert f"raw audio for {episode_id} was purged at {t0.isoformat(timespec='seconds')}" in message
    assert catalog.get_episode(episode_id) == before  # still published, no error recorded
    assert catalog.history(episode_id) == history


# -- a purge cut short between its mark and its deletes ---------------------------------------


def _purged_only_in_the_catalog(env, name: str, data: bytes) -> str:
    """A finished episode whose purge died right after its mark: bytes all still there."""
    store, catalog, t0 = env.store, env.catalog, env.t0
    episode_id = upload(store, catalog, name, data, instance=env.instance)
    start(store, catalog, episode_id, at=t0 - 2 * DAY)
    catalog.record_artifacts(episode_id, {"raw_audio": store.uri(layout.raw_key(episode_id, name))})
    succeed(store, catalog, episode_id, at=t0 - 2 * DAY)
    [planned] = plan_purge(catalog, store, now=t0, retention=DAY).eligible
    assert catalog.mark_raw_purged(
        episode_id,
        expected_statuses={S.PROCESSED},
        at=t0,
        only_if_status_changed_at=planned.status_changed_at,
        only_if_source_generation=planned.source_generation,
    )
    assert raw_objects(store, episode_id)
    return episode_id


def test_a_purge_cut_short_is_finished_by_the_next_one(env):
    store, catalog, t0 = env.store, env.catalog, env.t0
    episode_id = _purged_only_in_the_catalog(env, "show.mp3", b"show" * 500)
    raw_key = layout.raw_key(episode_id, "show.mp3")

    dry = purge(catalog, store, now=t0 + timedelta(hours=1), retention=DAY, dry_run=True)
    assert [(e.episode_id, e.objects) for e in dry.deleted] == [(episode_id, (raw_key,))]
    assert store.exists(raw_key)

    report = purge(catalog, store, now=t0 + timedelta(hours=1), retention=DAY)
    [entry] = report.deleted
    assert (entry.episode_id, entry.objects, entry.purged_at) == (episode_id, (raw_key,), t0)
    assert entry.bytes == 2000 and not report.failed
    assert raw_objects(store, episode_id) == []
    episode = catalog.get_episode(episode_id)
    assert episode.raw_purged_at == t0 and "raw_audio" not in episode.artifacts
    for name in ARTIFACTS:
        assert store.exists(layout.episode_key(episode_id, name))
    assert purge(catalog, store, now=t0 + timedelta(hours=2), retention=DAY).deleted == ()


def test_a_finished_purge_no_longer_lists_raw_media_among_the_artifacts(env):
    store, catalog, t0 = env.store, env.catalog, env.t0
    episode_id = upload(store, catalog, "show.mp3", instance=env.instance)
    start(store, catalog, episode_id, at=t0 - 2 * DAY)
    catalog.record_artifacts(episode_id, {"raw_audio": "file:///raw", "transcript": "file:///t"})
    succeed(store, catalog, episode_id, at=t0 - 2 * DAY)

    [entry] = purge(catalog, store, now=t0, retention=DAY).deleted
    assert entry.episode_id == episode_id
    assert dict(catalog.get_episode(episode_id).artifacts) == {"transcript": "file:///t"}


def test_a_purge_cut_short_never_deletes_what_a_new_upload_restored(env):
    store, catalog, t0 = env.store, env.catalog, env.t0
    data = b"show" * 500
    episode_id = _purged_only_in_the_catalog(env, "show.mp3", data)
    plan = plan_purge(catalog, store, now=t0 + timedelta(hours=1), retention=DAY)
    assert [p.episode_id for p in plan.unfinished] == [episode_id]

    # The same bytes uploaded again restore the episode after the plan listed its leftovers.
    assert upload(store, catalog, "show.mp3", data) == episode_id
    restored = catalog.get_episode(episode_id)
    assert restored.raw_purged_at is None
    before = snapshot(store)

    report = execute_purge(catalog, store, plan)

    assert report.deleted == ()
    assert [(s.episode_id, s.reason) for s in report.skipped_by_race] == [
        (episode_id, "restored by a new upload")
    ]
    assert snapshot(store) == before
    assert store.read_bytes(layout.upload_key("show.mp3")) == data


# -- the Dagster job, schedule and sensor -----------------------------------------------------


def _purge_job_run(env, **config):
    return purge_job.execute_in_process(
        run_config=purge_run_config(**config),
        resources={"store": env.store, "catalog": env.catalog_resource},
        instance=env.instance,
    )


def test_purge_job_observes_raw_audio_and_reports_counts(env):
    store, catalog, t0 = env.store, env.catalog, env.t0
    gone = finished(store, catalog, "gone.mp3", at=t0 - 2 * DAY, instance=env.instance)
    kept = finished(store, catalog, "kept.mp3", at=t0 - timedelta(hours=2), instance=env.instance)
    size = store.stat(layout.raw_key(gone, "gone.mp3")).size

    dry = _purge_job_run(env, now=t0, dry_run=True)
    assert dry.output_for_node(PURGE_OP).dry_run
    assert env.instance.fetch_observations(dg.AssetKey("raw_audio"), limit=10).records == []

    result = _purge_job_run(env, now=t0)

    report = result.output_for_node(PURGE_OP)
    assert [e.episode_id for e in report.deleted] == [gone]
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.event_specific_data.metadata
    assert {k: metadata[k].value for k in ("eligible", "deleted", "skipped_by_race", "failed")} == {
        "eligible": 1,
        "deleted": 1,
        "skipped_by_race": 0,
        "failed": 0,
    }
    assert metadata["bytes_freed"].value == size
    rows = [record.data for record in metadata["actions"].value.records]
    assert {(r["episode_id"], r["action"]) for r in rows} == {(gone, "deleted"), (kept, "kept")}

    [record] = env.instance.fetch_observations(dg.AssetKey("raw_audio"), limit=10).records
    observation = record.asset_observation
    assert observation.partition == gone
    assert observation.metadata["bytes_freed"].value == size
    assert observation.metadata["objects_deleted"].value == 1
    assert set(env.instance.get_dynamic_partitions(episode_partitions.name)) == {gone, kept}

    second = _purge_job_run(env, now=t0).output_for_node(PURGE_OP)
    assert second.deleted == ()


def _schedule_tick(env, schedule: dg.ScheduleDefinition, at: datetime):
    """``schedule``'s tick scheduled at ``at``, on ``env``'s instance and catalog."""
    with dg.build_schedule_context(
        instance=env.instance, scheduled_execution_time=at, resources=_tick_resources(env)
    ) as context:  # entered: CatalogResource nests its store
        return schedule.evaluate_tick(context)


def _sensor_tick(env, sensor: dg.SensorDefinition, cursor: str | None):
    """``sensor``'s tick from ``cursor``, on ``env``'s instance and catalog."""
    with dg.build_sensor_context(
        instance=env.instance, cursor=cursor, resources=_tick_resources(env)
    ) as context:  # entered: CatalogResource nests its store
        return sensor.evaluate_tick(context)


def _tick_resources(env) -> dict:
    return {"catalog": env.catalog_resource}


def test_schedule_requests_a_purge_only_when_something_is_eligible(env):
    store, catalog, t0 = env.store, env.catalog, env.t0
    schedule = build_purge_schedule()
    assert schedule.cron_schedule == DEFAULT_PURGE_CRON == "0 3 * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    tick = t0.replace(hour=3)

    finished(store, catalog, "recent.mp3", at=tick - timedelta(hours=2))
    nothing = _schedule_tick(env, schedule, tick)
    assert not nothing.run_requests and nothing.skip_message

    finished(store, catalog, "old.mp3", at=tick - 2 * DAY)
    [request] = _schedule_tick(env, schedule, tick).run_requests
    assert request.run_key == schedule_run_key(tick) == f"purge-schedule@{tick.isoformat()}"
    assert request.run_config == purge_run_config(now=tick)
    [again] = _schedule_tick(env, schedule, tick).run_requests
    assert again.run_key == request.run_key  # the same tick never launches a second purge
    [tomorrow] = _schedule_tick(env, schedule, tick + DAY).run_requests
    assert tomorrow.run_key != request.run_key

    assert build_purge_schedule(cron="30 1 * * 1").cron_schedule == "30 1 * * 1"


def test_schedule_also_runs_to_finish_a_purge_cut_short(env):
    schedule = build_purge_schedule()
    tick = env.t0.replace(hour=3) + DAY

    episode_id = _purged_only_in_the_catalog(env, "show.mp3", b"show" * 500)
    assert not env.catalog.purge_candidates(now=tick, retention=DAY)  # nothing newly eligible
    [request] = _schedule_tick(env, schedule, tick).run_requests
    assert request.tags["pod/unfinished"] == "1"
    purge(env.catalog, env.store, now=tick, retention=DAY)
    assert raw_objects(env.store, episode_id) == []
    assert _schedule_tick(env, schedule, tick).skip_message  # finished: nothing to do


def test_sensor_requests_a_purge_when_episodes_become_eligible(env):
    store, catalog, now = env.store, env.catalog, datetime.now(UTC)
    sensor = build_purge_sensor()
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING

    finished(store, catalog, "recent.mp3", at=now - timedelta(hours=1))
    empty = _sensor_tick(env, sensor, None)
    assert not empty.run_requests and empty.skip_message

    first = finished(store, catalog, "first.mp3", at=now - 3 * DAY)
    second = finished(store, catalog, "second.mp3", at=now - 2 * DAY)
    result = _sensor_tick(env, sensor, None)
    [request] = result.run_requests
    changed = catalog.get_episode(second).status_changed_at
    assert request.run_key == f"purge-eligible@{changed.isoformat()}"
    assert result.cursor == changed.isoformat()
    assert request.run_config["ops"][PURGE_OP]["config"]["retention_hours"] == 24.0
    [same] = _sensor_tick(env, sensor, None).run_requests
    assert same.run_key == request.run_key  # stable for the same eligible set

    caught_up = _sensor_tick(env, sensor, result.cursor)
    assert not caught_up.run_requests and caught_up.cursor == result.cursor

    third = finished(store, catalog, "third.mp3", at=now - timedelta(hours=30))
    [later] = _sensor_tick(env, sensor, result.cursor).run_requests
    third_changed = catalog.get_episode(third).status_changed_at
    assert later.run_key == f"purge-eligible@{third_changed.isoformat()}"

    # Once the purge ran, nothing new is eligible and the sensor stays quiet.
    purge(catalog, store, now=datetime.now(UTC), retention=DAY)
    assert not _sensor_tick(env, sensor, None).run_requests
    assert catalog.get_episode(first).raw_purged_at is not None


# -- pod purge -----------------------------------------------------------------------------


def test_pod_purge_json_dry_run_and_idempotence(tmp_path, monkeypatch, capsys):
    from pod_pipeline import cli
    from pod_pipeline.settings import load_settings

    home = tmp_path / "home"
    for name in list(os.environ):
        if name.startswith("POD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("POD_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    settings = load_settings()
    store = LocalObjectStore(root=str(home / "store"))
    catalog = Catalog(settings.database_url())
    t0 = start_of_hour()
    done = finished(store, catalog, "done.mp3", at=t0)
    waiting = upload(store, catalog, "waiting.mp3")
    later = (t0 + 2 * DAY).isoformat()

    def pod(*args: str) -> tuple[int, str]:
        code = cli.main(list(args))
        return code, capsys.readouterr().out

    code, out = pod("purge", "--dry-run", "--now", later, "--json")
    assert code == 0
    dry = json.loads(out)
    assert dry["dry_run"] is True and [d["episode_id"] for d in dry["deleted"]] == [done]
    assert raw_objects(store, done)

    code, out = pod("purge", "--now", later, "--retention-hours", "24", "--json")
    real = json.loads(out)
    assert code == 0 and real["dry_run"] is False and real["failed"] == []
    [deleted] = real["deleted"]
    assert deleted["episode_id"] == done
    assert deleted["objects"] == [f"episodes/{done}/raw.mp3"] and deleted["bytes"] > 0
    assert {k["episode_id"]: k["reason"] for k in real["kept"]} == {waiting: "status=uploaded"}
    assert not raw_objects(store, done)

    code, out = pod("purge", "--now", later, "--json")
    assert code == 0 and json.loads(out)["deleted"] == []

    code, out = pod("purge", "--now", later)
    assert code == 0 and "0 deleted" in out and f"kept {waiting}: status=uploaded" in out
    assert pod("purge", "--now", "yesterday-ish")[0] == 2


# -- a backlog drains; the kept list is bounded; settings ----------------------------------


def test_sensor_fires_again_after_a_purge_while_a_backlog_remains(env):
    """max_deletions leaves eligible episodes: once that purge ended, the sensor asks for the
    next batch (before, it stayed quiet until another episode became eligible)."""
    store, catalog, now = env.store, env.catalog, datetime.now(UTC)
    ids = [finished(store, catalog, f"old-{i}.mp3", at=now - 3 * DAY + timedelta(minutes=i))
           for i in range(3)]
    sensor = build_purge_sensor(max_deletions=1)
    resources = {"catalog": env.catalog_resource}

    def tick(cursor: str | None):
        with dg.build_sensor_context(
            instance=env.instance, cursor=cursor, resources=resources
        ) as context:
            return sensor.evaluate_tick(context)

    first = tick(None)
    [request] = first.run_requests
    assert request.run_config["ops"][PURGE_OP]["config"]["max_deletions"] == 1
    # The requested purge has not run yet: the same eligible set asks for nothing more.
    assert not tick(first.cursor).run_requests
    seen_keys = {request.run_key}
    for drained in range(1, 4):
        result = purge_job.execute_in_process(
            run_config=request.run_config, instance=env.instance,
            resources={"store": store, "catalog": env.catalog_resource},
        )
        assert result.success
        left = [e for e in ids if catalog.get_episode(e).raw_purged_at is None]
        assert len(left) == 3 - drained
        nxt = tick(first.cursor)
        if not left:
            assert not nxt.run_requests and nxt.skip_message
            break
        [request] = nxt.run_requests
        assert request.tags["pod/trigger"] == "sensor-backlog"
        assert request.run_key not in seen_keys  # a new batch, not the same request again
        seen_keys.add(request.run_key)
    assert all(catalog.get_episode(e).raw_purged_at is not None for e in ids)


def test_kept_list_is_a_count_and_a_bounded_sample(env):
    store, catalog, t0 = env.store, env.catalog, env.t0
    for i in range(5):
        finished(store, catalog, f"recent-{i}.mp3", at=t0 - timedelta(hours=1))
    for i in range(4):
        finished(store, catalog, f"old-{i}.mp3", at=t0 - 2 * DAY + timedelta(minutes=i))
    upload(store, catalog, "waiting.mp3")
    plan = plan_purge(catalog, store, now=t0, retention=DAY, max_deletions=1, kept_sample=2)
    assert len(plan.eligible) == 1 and plan.eligible_total == 4
    assert plan.kept_counts == {
        REASON_WITHIN_RETENTION: 5, "status=uploaded": 1, REASON_MAX_DELETIONS: 3,
    }
    reasons = [k.reason for k in plan.kept]  # at most 2 of each kind
    assert sorted(reasons) == sorted(
        [REASON_MAX_DELETIONS] * 2 + [REASON_WITHIN_RETENTION] * 2 + ["status=uploaded"]
    )
    report = execute_purge(catalog, store, plan, dry_run=True)
    assert report.kept_total == 9 and report.eligible == 4
    shown = report.to_json()
    assert shown["kept_total"] == 9 and len(shown["kept"]) == 5
    assert shown["kept_by_reason"][REASON_MAX_DELETIONS] == 3


def test_purge_settings_reach_the_sensor_schedule_and_launchpad(monkeypatch, tmp_path):
    from pod_pipeline.definitions import build_definitions
    from pod_pipeline.settings import load_settings

    monkeypatch.setenv("POD_HOME", str(tmp_path))
    monkeypatch.setenv("POD_PURGE_RETENTION_HOURS", "72")
    monkeypatch.setenv("POD_PURGE_MAX_DELETIONS", "50")
    settings = load_settings()
    assert (settings.purge_retention_hours, settings.purge_max_deletions) == (72.0, 50)
    job = build_definitions(settings).resolve_job_def("purge_job")
    launchpad = job.run_config_schema.config_type.fields["ops"].default_value
    config = launchpad[PURGE_OP]["config"]
    assert config["dry_run"] is True
    assert (config["retention_hours"], config["max_deletions"]) == (72.0, 50)
    monkeypatch.setenv("POD_PURGE_MAX_DELETIONS", "-1")
    with pytest.raises(ValueError, match="POD_PURGE_MAX_DELETIONS must not be negative"):
        load_settings()

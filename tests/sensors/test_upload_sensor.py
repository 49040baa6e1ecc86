"""The upload sensor on a real instance, store and catalog."""

from __future__ import annotations

import dagster as dg
import pytest

from pod_assets import layout
from pod_resources.catalog import CatalogResource, EpisodeStatus
from pod_sensors.uploads import build_upload_sensor, upload_run_key


def tick(pipeline, sensor=None, cursor=None) -> dg.SensorResult:
    sensor = sensor or build_upload_sensor()
    # Entered as a context manager: CatalogResource has a nested resource (its store).
    with dg.build_sensor_context(
        instance=pipeline.instance,
        cursor=cursor,
        resources={"store": pipeline.store, "catalog": pipeline.catalog_resource},
    ) as context:
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    for request in result.dynamic_partitions_requests or []:
        pipeline.instance.add_dynamic_partitions("episodes", list(request.partition_keys))
    return result


def test_new_upload_registers_episode_partition_and_run(pipeline):
    info = pipeline.upload("Show 1.mp3", b"first bytes")
    result = tick(pipeline)
    episode_id = layout.episode_id_for("Show 1.mp3")
    assert [r.partition_key for r in result.run_requests] == [episode_id]
    assert result.run_requests[0].run_key == upload_run_key(episode_id, info.generation)
    assert str(info.generation) in result.run_requests[0].run_key
    assert list(result.dynamic_partitions_requests[0].partition_keys) == [episode_id]
    episode = pipeline.catalog.get_episode(episode_id)
    assert episode.status == EpisodeStatus.UPLOADED
    assert episode.source_name == "Show 1.mp3"
    assert episode.source_generation == info.generation
    assert episode.title == "Show 1"

    again = tick(pipeline, cursor=result.cursor)
    assert not again.run_requests
    assert not again.dynamic_partitions_requests


def test_same_bytes_under_second_name_is_a_duplicate(pipeline):
    pipeline.upload("a.mp3", b"identical bytes")
    first = tick(pipeline)
    pipeline.upload("copy of a.mp3", b"identical bytes")
    second = tick(pipeline, cursor=first.cursor)
    assert not second.run_requests
    assert not second.dynamic_partitions_requests
    assert pipeline.catalog.get_episode(layout.episode_id_for("copy of a.mp3")) is None
    [dup] = [u for u in pipeline.catalog.uploads() if u.object_name == "copy of a.mp3"]
    assert dup.duplicate_of == layout.episode_id_for("a.mp3")
    # Handled once: the catalog remembers it, so the next tick registers nothing again.
    uploads = len(pipeline.catalog.uploads())
    third = tick(pipeline, cursor=second.cursor)
    assert not third.run_requests and len(pipeline.catalog.uploads()) == uploads


def test_new_bytes_under_same_name_are_a_new_version_beside_the_episode(pipeline):
    first_info = pipeline.upload("talk.wav", b"version one")
    first = tick(pipeline)
    second_info = pipeline.upload("talk.wav", b"version two, longer")
    assert second_info.generation != first_info.generation
    second = tick(pipeline, cursor=first.cursor)
    episode_id = layout.episode_id_for("talk.wav")
    version_id = layout.version_id("talk.wav", 2)
    assert version_id == f"{episode_id}-v2"
    [request] = second.run_requests
    assert request.partition_key == version_id
    assert request.run_key == upload_run_key(version_id, second_info.generation)
    assert request.tags["pod/version_of"] == episode_id
    assert list(second.dynamic_partitions_requests[0].partition_keys) == [version_id]
    # The first version is untouched: same generation, same status.
    episode = pipeline.catalog.get_episode(episode_id)
    assert (episode.source_generation, episode.status) == (
        first_info.generation,
        EpisodeStatus.UPLOADED,
    )
    version = pipeline.catalog.get_episode(version_id)
    assert (version.version, version.version_of) == (2, episode_id)


def test_cursor_survives_listed_objects_moving_away(pipeline):
    pipeline.upload("one.mp3", b"1")
    pipeline.upload("two.mp3", b"2")
    first = tick(pipeline)
    assert len(first.run_requests) == 2
    # raw_audio moves uploads away; a user deletes another.
    pipeline.store.delete(layout.upload_key("one.mp3"))
    pipeline.store.delete(layout.upload_key("two.mp3"))
    pipeline.upload("three.mp3", b"3")
    second = tick(pipeline, cursor=first.cursor)
    assert [r.partition_key for r in second.run_requests] == [layout.episode_id_for("three.mp3")]
    assert len(second.cursor) < 500  # a bookmark, not a list of names


def test_caps_requests_per_tick_and_catches_up(pipeline):
    for index in range(5):
        pipeline.upload(f"ep{index}.mp3", f"bytes {index}".encode())
    sensor = build_upload_sensor(max_runs_per_tick=2)
    seen: list[str] = []
    cursor = None
    for expected in (2, 2, 1, 0):
        result = tick(pipeline, sensor=sensor, cursor=cursor)
        assert len(result.run_requests) == expected
        seen += [r.partition_key for r in result.run_requests]
        cursor = result.cursor
    assert sorted(seen) == sorted(layout.episode_id_for(f"ep{i}.mp3") for i in range(5))


def test_lost_cursor_repeats_run_keys_not_episodes(pipeline):
    """With the cursor gone, the same run keys come back (the daemon dedupes them)."""
    pipeline.upload("x.mp3", b"x")
    first = tick(pipeline)
    again = tick(pipeline, cursor=None)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in first.run_requests]
    assert len(pipeline.catalog.list_episodes()) == 1


@pytest.mark.gcs
def test_hostile_names_on_gcs_never_crash_the_tick(gcs_store, tmp_path):
    """Names no local file system can hold, straight into a bucket."""
    names = [
        "../x.mp3",
        "a/../../b.wav",
        "x" * 300 + ".mp3",
        "\u202eevil\u202c.mp3",
        "episode 🎙️ 42.m4a",
        "spaces   in   name .flac",
    ]
    with dg.instance_for_test() as instance:
        from tests.plugins.pipeline import Pipeline

        pipeline = Pipeline(
            instance=instance,
            store=gcs_store,
            catalog_resource=CatalogResource(database_url=f"sqlite:///{tmp_path / 'c.db'}"),
        )
        client = gcs_store.get_client() if hasattr(gcs_store, "get_client") else None
        for index, name in enumerate(names):
            _raw_put(gcs_store, client, "uploads/" + name, f"bytes {index}".encode())
        result = tick(pipeline)
        keys = [r.partition_key for r in result.run_requests]
        assert len(keys) == len(names)
        for key in keys:
            assert layout.episode_prefix(key).startswith("episodes/")
            assert "/" not in key and ".." not in key
        for episode in pipeline.catalog.list_episodes():
            assert layout.raw_key(episode.episode_id, episode.source_name).startswith(
                f"episodes/{episode.episode_id}/raw."
            )


def _raw_put(store, client, name: str, data: bytes) -> None:
    """Write an object name as-is, bypassing the store's own key rules."""
    from google.cloud import storage

    client = client or storage.Client(project=store.project or "test")
    full = f"{store.prefix.strip('/')}/{name}" if store.prefix else name
    client.bucket(store.bucket).blob(full).upload_from_string(data)


# -- registration apart from the run cap; pod run's tick without the daemon's cursor --------


@dg.op
def _noop() -> None:
    pass


@dg.job
def _queued_elsewhere() -> None:
    _noop()


def test_a_tick_registers_every_new_upload_whatever_the_run_cap(pipeline):
    for index in range(12):
        pipeline.upload(f"drop-{index:02d}.mp3", f"drop {index}".encode())
    sensor = build_upload_sensor(max_runs_per_tick=2, max_registrations_per_tick=100)
    first = tick(pipeline, sensor=sensor)
    assert len(first.run_requests) == 2
    assert len(first.dynamic_partitions_requests[0].partition_keys) == 12
    assert len(pipeline.catalog.list_episodes()) == 12
    capped = build_upload_sensor(max_runs_per_tick=2, max_registrations_per_tick=5)
    pipeline.upload("late-a.mp3", b"late a")
    pipeline.upload("late-b.mp3", b"late b")
    second = tick(pipeline, sensor=capped, cursor=first.cursor)
    assert [r.partition_key for r in second.run_requests] == [
        layout.episode_id_for(f"drop-{index:02d}.mp3") for index in (2, 3)
    ]
    assert len(pipeline.catalog.list_episodes()) == 14


def test_pod_run_tick_without_the_cursor_is_not_starved_by_waiting_uploads(pipeline):
    """``pod run`` evaluates the sensor without the daemon's cursor. Twenty uploads that are
    registered but still wait in ``uploads/`` (their runs created, not started yet) sort
    before a new one.

    Before the catalog remembered pending runs, such a tick re-registered the twenty
    (``already seen``), requested their runs again, filled the cap of 20 with run keys
    ``pod run`` then skipped as launched, and never reached the new upload: checked against
    the code of that time, this test failed there with the new upload missing."""
    waiting = [f"a-waiting-{index:02d}.mp3" for index in range(20)]
    for name in waiting:
        pipeline.upload(name, name.encode())
    daemon_tick = tick(pipeline)  # the daemon's tick: registered, runs requested and queued
    assert len(daemon_tick.run_requests) == 20
    for request in daemon_tick.run_requests:
        pipeline.instance.create_run_for_job(
            _queued_elsewhere, status=dg.DagsterRunStatus.NOT_STARTED,
            tags={"dagster/run_key": request.run_key},
        )
    pipeline.upload("zz-new.mp3", b"new bytes")
    pod_run_tick = tick(pipeline, cursor=None)
    assert [r.partition_key for r in pod_run_tick.run_requests] == [
        layout.episode_id_for("zz-new.mp3")
    ]

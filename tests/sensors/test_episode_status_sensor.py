"""``episode_status_sensor``: each catalog status change becomes an observation on the
episode's partition of every episode asset, once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from pod_assets.partitions import episode_partitions
from pod_resources.catalog import EpisodeStatus as S
from pod_sensors.catalog_status import HOLD_S, OBSERVED_ASSETS, StatusCursor, episode_status_sensor

AUDIO = b"RIFF not really audio, the sensor never reads it"


def _tick(pipeline, cursor: str | None) -> dg.SensorResult:
    with dg.build_sensor_context(
        instance=pipeline.instance, cursor=cursor, resources={"catalog": pipeline.catalog_resource}
    ) as context:
        return episode_status_sensor(context)


def _statuses(result: dg.SensorResult) -> dict[tuple[str, str], str]:
    return {
        (event.asset_key.path[-1], event.partition): event.metadata["episode_status"].value
        for event in result.asset_events
    }


def test_status_changes_are_observed_once_per_asset(pipeline):
    episode_id = pipeline.register("status show.wav", AUDIO)
    first = _tick(pipeline, None)
    assert _statuses(first) == {(asset, episode_id): "uploaded" for asset in OBSERVED_ASSETS}
    metadata = first.asset_events[0].metadata
    assert metadata["title"].value == "status show"
    assert isinstance(metadata["uploaded_at"], dg.TimestampMetadataValue)
    assert "error" not in metadata

    assert _tick(pipeline, first.cursor).asset_events == []  # nothing new, nothing reported

    catalog = pipeline.catalog
    assert catalog.set_status(episode_id, expected=S.UPLOADED, new=S.PROCESSING, run_id="r1")
    assert catalog.set_status(episode_id, expected=S.PROCESSING, new=S.ERROR, error="not audio: text",
                              step="raw_audio", needs_raw=False)
    second = _tick(pipeline, first.cursor)
    assert set(_statuses(second).values()) == {"error"}
    assert second.asset_events[0].metadata["error"].value == "not audio: text"
    assert second.asset_events[0].metadata["error_step"].value == "raw_audio"


def test_a_change_committed_late_with_an_earlier_time_is_still_reported(pipeline):
    early = pipeline.register("early.wav", AUDIO + b"1")
    late = pipeline.register("late.wav", AUDIO + b"2")
    cursor = _tick(pipeline, None).cursor
    newest = StatusCursor.parse(cursor).newest
    # A transaction that took its timestamp before the last tick but committed after it.
    assert pipeline.catalog.set_status(early, expected=S.UPLOADED, new=S.PROCESSING, run_id="r",
                                       at=newest - timedelta(seconds=5))
    result = _tick(pipeline, cursor)
    assert set(_statuses(result)) == {(asset, early) for asset in OBSERVED_ASSETS}
    assert late not in {e.partition for e in result.asset_events}


def test_an_episode_without_its_partition_yet_is_reported_once_it_has_one(pipeline):
    from pod_assets import layout
    from pod_sensors.uploads import content_md5

    info = pipeline.upload("partitionless.wav", AUDIO + b"3")
    episode_id = layout.episode_id_for("partitionless.wav")
    pipeline.catalog.register_upload(object_name="partitionless.wav", generation=info.generation,
                                     content_hash=content_md5(pipeline.store, info),
                                     episode_id=episode_id, title="partitionless")
    first = _tick(pipeline, None)
    assert first.asset_events == []
    pipeline.instance.add_dynamic_partitions(episode_partitions.name, [episode_id])
    second = _tick(pipeline, first.cursor)
    assert {e.partition for e in second.asset_events} == {episode_id}


def test_a_run_end_is_reported_after_the_run_has_written_its_events(pipeline):
    episode_id = pipeline.register("held back.wav", AUDIO + b"4")
    cursor = _tick(pipeline, None).cursor
    catalog = pipeline.catalog
    run = _started_run(pipeline, episode_id)
    assert catalog.set_status(episode_id, expected=S.UPLOADED, new=S.PROCESSING, run_id=run.run_id)
    processing = _tick(pipeline, cursor)
    assert set(_statuses(processing).values()) == {"processing"}  # shown while the run goes
    # The last step marked the episode processed; its materialization is still to come.
    assert catalog.set_status(episode_id, expected=S.PROCESSING, new=S.PROCESSED, only_if_run_id=run.run_id)
    held = _tick(pipeline, processing.cursor)
    assert held.asset_events == []
    pipeline.instance.handle_run_event(
        run.run_id,
        dg.DagsterEvent(dg.DagsterEventType.RUN_SUCCESS.value, job_name=run.job_name, message="done"),
    )
    after = _tick(pipeline, held.cursor)
    assert set(_statuses(after).values()) == {"processed"}


def test_a_run_end_is_held_back_for_a_bounded_time_only(pipeline):
    # A run whose process died stays "started" until run monitoring ends it: the change is
    # reported anyway once it is older than HOLD_S, inside the lookback.
    episode_id = pipeline.register("held long.wav", AUDIO + b"5")
    cursor = _tick(pipeline, None).cursor
    run = _started_run(pipeline, episode_id)
    catalog = pipeline.catalog
    assert catalog.set_status(episode_id, expected=S.UPLOADED, new=S.PROCESSING, run_id=run.run_id)
    earlier = datetime.now(UTC) - timedelta(seconds=HOLD_S + 5)
    assert catalog.set_status(episode_id, expected=S.PROCESSING, new=S.PROCESSED,
                              only_if_run_id=run.run_id, at=earlier)
    assert set(_statuses(_tick(pipeline, cursor)).values()) == {"processed"}


def _started_run(pipeline, episode_id: str) -> dg.DagsterRun:
    """A run of the episode's partition that has started and not ended."""
    run = pipeline.instance.create_run_for_job(
        dg.Definitions(jobs=[_one_op_job]).get_job_def("held_back_job"),
        tags={"dagster/partition": episode_id},
    )
    pipeline.instance.handle_run_event(
        run.run_id,
        dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name=run.job_name, message="started"),
    )
    return run


@dg.op
def _noop() -> None:
    return None


@dg.job(name="held_back_job")
def _one_op_job() -> None:
    _noop()

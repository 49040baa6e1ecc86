"""Publishing: processed -> published by compare-and-set, everything else refused; the job,
``pod publish``/``unpublish``/``feed``, and reprocessing a published episode (it stays
published)."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest

from pod_assets.publish.publishing import (
    FIRST_PUBLISHED_METRIC,
    listed_episodes,
    publish_episodes,
    publish_job,
    republish_after_reprocess,
    unpublish_episodes,
)
from pod_assets.episodes.raw_audio import raw_audio
from pod_resources.catalog import Catalog, EpisodeStatus
from pod_resources.storage import LocalObjectStore
from tests import audio_factory as af
from tests.episode_states import fail, finished, start, start_of_hour, upload

S = EpisodeStatus
SAMPLE_SHOW = Path(__file__).resolve().parents[2] / "samples" / "show.toml"


@pytest.fixture
def studio(pipeline):
    """Episodes in every status, on the pipeline fixture's store and catalog."""
    store, catalog, t0 = pipeline.store, pipeline.catalog, start_of_hour()
    ids = {
        "processed": finished(store, catalog, "processed.mp3", at=t0),
        "published": finished(store, catalog, "published.mp3", at=t0),
        "uploaded": upload(store, catalog, "uploaded.mp3"),
        "processing": upload(store, catalog, "processing.mp3"),
        "error": upload(store, catalog, "error.mp3"),
    }
    assert catalog.set_status(ids["published"], expected=S.PROCESSED, new=S.PUBLISHED, at=t0)
    start(store, catalog, ids["processing"], at=t0)
    start(store, catalog, ids["error"], at=t0)
    fail(catalog, ids["error"], at=t0)
    pipeline.ids = ids
    return pipeline


def test_only_processed_episodes_are_published(studio):
    catalog, ids = studio.catalog, studio.ids
    at = start_of_hour() + timedelta(minutes=5)

    outcomes = publish_episodes(
        catalog,
        [*(ids[n] for n in ("uploaded", "processed", "processing", "error", "published")), "x-0"],
        at=at,
    )

    only = "only processed episodes can be published"
    assert {o.episode_id: (o.published, o.reason) for o in outcomes} == {
        ids["processed"]: (True, None),
        ids["uploaded"]: (False, f"status is uploaded; {only}"),
        ids["processing"]: (False, f"status is processing; {only}"),
        ids["error"]: (False, f"status is error; {only}"),
        ids["published"]: (False, "already published"),
        "x-0": (False, "not in the catalog"),
    }
    episode = catalog.get_episode(ids["processed"])
    assert (episode.status, episode.status_changed_at) == (S.PUBLISHED, at)
    assert catalog.history(ids["processed"])[-1].from_status == S.PROCESSED
    for name in ("uploaded", "processing", "error"):
        assert catalog.get_episode(ids[name]).status == S(name)


def _run(studio, episode_ids):
    return publish_job.execute_in_process(
        run_config={"ops": {"publish_episodes": {"config": {"episode_ids": episode_ids}}}},
        resources={"catalog": studio.catalog_resource},
        instance=studio.instance,
        raise_on_error=False,
    )


def test_publish_job_publishes_and_fails_clearly_on_refusals(studio):
    ids = studio.ids
    ok = _run(studio, [ids["processed"]])
    assert ok.success
    assert studio.catalog.get_episode(ids["processed"]).status == S.PUBLISHED

    refused = _run(studio, [ids["processing"], ids["published"]])
    assert not refused.success
    [failure] = [e for e in refused.all_events if e.event_type_value == "STEP_FAILURE"]
    description = failure.step_failure_data.user_failure_data.description
    assert f"{ids['processing']}: status is processing" in description
    assert f"{ids['published']}: already published" in description
    assert not [e for e in refused.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    [output] = [e for e in refused.all_events if e.event_type_value == "STEP_OUTPUT"]
    table = output.event_specific_data.metadata["episodes"].value
    assert {(r.data["episode_id"], r.data["result"]) for r in table.records} == {
        (ids["processing"], "refused"),
        (ids["published"], "refused"),
    }
    assert studio.catalog.get_episode(ids["processing"]).status == S.PROCESSING


def test_pod_publish(tmp_path, monkeypatch, capsys):
    from pod_pipeline import cli
    from pod_pipeline.settings import load_settings

    for name in list(os.environ):
        if name.startswith("POD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("POD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    monkeypatch.setenv("POD_SHOW_FILE", str(SAMPLE_SHOW))
    settings = load_settings()
    store = LocalObjectStore(root=str(tmp_path / "home" / "store"))
    catalog = Catalog(settings.database_url())
    done = finished(store, catalog, "done.mp3", at=start_of_hour())
    waiting = upload(store, catalog, "waiting.mp3")

    assert cli.main(["publish", done]) == 0
    assert capsys.readouterr().out.strip().splitlines() == [
        f"published {done}", "feed: 1 episodes -> http://127.0.0.1:3001/show/feed.xml"]
    assert catalog.get_episode(done).status == S.PUBLISHED

    assert cli.main(["publish", waiting, done]) == 1
    err = capsys.readouterr().err
    assert f"pod publish: {waiting} refused: status is uploaded" in err
    assert f"pod publish: {done} refused: already published" in err

    assert cli.main(["feed", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["url"] == "http://127.0.0.1:3001/show/feed.xml"
    assert [item["title"] for item in listing["items"]] == ["done"]

    assert cli.main(["unpublish", done, waiting]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"unpublished {done}", "feed: 0 episodes -> http://127.0.0.1:3001/show/feed.xml"]
    assert f"pod unpublish: {waiting} refused: status is uploaded" in captured.err
    assert catalog.get_episode(done).status == S.PROCESSED

    assert cli.main(["publish", "--all-processed"]) == 0  # what make run does
    assert capsys.readouterr().out.splitlines()[0] == f"published {done}"
    assert cli.main(["publish", "--all-processed"]) == 0
    assert capsys.readouterr().out.strip() == "pod publish: no processed episodes to publish"


def test_reprocessing_a_published_episode_goes_through_processing_to_processed(
    pipeline, tmp_path
):
    tone = af.tone(duration_s=2.0, sample_rate=16000)
    path = af.write_audio(tmp_path / "show.flac", tone, sample_rate=16000)
    episode_id = pipeline.register("show.flac", path)
    assert pipeline.materialize([raw_audio], episode_id, raise_on_error=True).success
    [outcome] = publish_episodes(pipeline.catalog, [episode_id])
    assert outcome.published

    first = pipeline.catalog.get_episode(episode_id).metrics[FIRST_PUBLISHED_METRIC]

    # A backfill of the published episode: its raw copy is still there. It stays published.
    backfill = pipeline.materialize([raw_audio], episode_id, raise_on_error=True)

    assert backfill.success
    assert [(h.from_status, h.to_status) for h in pipeline.catalog.history(episode_id)] == [
        (None, S.UPLOADED),
        (S.UPLOADED, S.PROCESSING),
        (S.PROCESSING, S.PROCESSED),
        (S.PROCESSED, S.PUBLISHED),
        (S.PUBLISHED, S.PROCESSING),
        (S.PROCESSING, S.PROCESSED),
        (S.PROCESSED, S.PUBLISHED),
    ]
    assert pipeline.catalog.get_episode(episode_id).metrics[FIRST_PUBLISHED_METRIC] == first

    # Unpublished by the operator: a reprocess then ends processed, out of the feed.
    assert unpublish_episodes(pipeline.catalog, [episode_id])[0].published
    assert pipeline.materialize([raw_audio], episode_id, raise_on_error=True).success
    assert pipeline.catalog.get_episode(episode_id).status == S.PROCESSED


def test_a_failed_reprocess_leaves_the_feed_until_a_reprocess_succeeds(studio):
    catalog, episode_id = studio.catalog, studio.ids["published"]
    assert [e.episode_id for e in listed_episodes(catalog)] == [episode_id]
    assert catalog.set_status(episode_id, expected=S.PUBLISHED, new=S.PROCESSING, run_id="r1")
    assert [e.episode_id for e in listed_episodes(catalog)] == [episode_id]  # keeps its place
    assert catalog.set_status(episode_id, expected=S.PROCESSING, new=S.ERROR, error="boom", step="x")
    assert listed_episodes(catalog) == []
    assert catalog.set_status(episode_id, expected=S.ERROR, new=S.PROCESSING, run_id="r2")
    assert catalog.set_status(episode_id, expected=S.PROCESSING, new=S.PROCESSED)
    assert republish_after_reprocess(catalog, episode_id)
    assert catalog.get_episode(episode_id).status == S.PUBLISHED
    assert unpublish_episodes(catalog, [episode_id, studio.ids["processing"]])[1].reason == (
        "it is being reprocessed; unpublish it when that finishes")

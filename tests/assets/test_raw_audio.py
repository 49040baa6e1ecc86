"""raw_audio on good and bad files: real decoding, real store, real catalog."""

from __future__ import annotations

import pytest

from pod_assets import layout
from pod_assets.episodes.raw_audio import raw_audio
from pod_resources.catalog import EpisodeStatus
from tests import audio_factory as af


def test_good_upload_is_moved_probed_and_recorded(pipeline, tmp_path):
    path = af.write_audio(
        tmp_path / "ep.m4a", af.speech_like(duration_s=3.0, sample_rate=48000, channels=2), sample_rate=48000
    )
    episode_id = pipeline.register("My Episode.m4a", path)
    result = pipeline.materialize([raw_audio], episode_id, raise_on_error=True)
    assert result.success

    [materialization] = result.asset_materializations_for_node("raw_audio")
    meta = materialization.metadata
    assert meta["duration_s"].value == pytest.approx(3.0, abs=0.1)
    assert meta["sample_rate"].value == 48000
    assert meta["channels"].value == 2
    assert meta["codec"].value == "aac"

    raw_key = f"episodes/{episode_id}/raw.m4a"
    assert pipeline.store.exists(raw_key)
    assert not pipeline.store.exists(layout.upload_key("My Episode.m4a"))  # landing zone cleared
    episode = pipeline.catalog.get_episode(episode_id)
    assert episode.status == EpisodeStatus.PROCESSED  # raw_audio was the whole run
    assert episode.metrics["duration_s"] == pytest.approx(3.0, abs=0.1)
    assert episode.artifacts["raw_audio"] == pipeline.store.uri(raw_key)
    assert [h.to_status for h in pipeline.catalog.history(episode_id)] == [
        "uploaded", "processing", "processed",
    ]

    # Re-materialising works from the stored raw copy (the upload is gone).
    again = pipeline.materialize([raw_audio], episode_id, raise_on_error=True)
    assert again.success


def _bad_files(tmp_path):
    mp3 = af.write_audio(tmp_path / "src.mp3", af.speech_like(duration_s=6.0, sample_rate=44100, channels=1), sample_rate=44100)
    return {
        "zero.mp3": (af.write_zero_byte(tmp_path / "zero.mp3"), "empty"),
        "text.mp3": (af.write_text_as_audio(tmp_path / "text.mp3"), "not an audio"),
        "cut.mp3": (af.write_truncated(tmp_path / "cut.mp3", source=mp3, keep_ratio=0.3), "truncated"),
        "silent-video.mp4": (af.write_video(tmp_path / "silent-video.mp4"), "no audio stream"),
    }


@pytest.mark.parametrize("name", ["zero.mp3", "text.mp3", "cut.mp3", "silent-video.mp4"])
def test_bad_input_fails_clearly_and_keeps_the_bytes(pipeline, tmp_path, name):
    path, expected = _bad_files(tmp_path)[name]
    episode_id = pipeline.register(name, path)
    result = pipeline.materialize([raw_audio], episode_id)
    assert not result.success

    episode = pipeline.catalog.get_episode(episode_id)
    assert episode.status == EpisodeStatus.ERROR
    assert episode.error_step == "raw_audio"
    assert expected in episode.last_error.lower(), episode.last_error
    raw_key = layout.raw_key(episode_id, name)
    assert pipeline.store.read_bytes(raw_key) == path.read_bytes()  # nothing lost
    # Bad input is permanent: reported once, not retried.
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


def test_too_long_is_refused_by_config(pipeline, tmp_path):
    path = af.write_audio(tmp_path / "long.flac", af.tone(duration_s=4.0, sample_rate=16000), sample_rate=16000)
    episode_id = pipeline.register("long.flac", path)
    result = pipeline.materialize(
        [raw_audio], episode_id, run_config={"ops": {"raw_audio": {"config": {"max_duration_s": 2.0}}}}
    )
    assert not result.success
    episode = pipeline.catalog.get_episode(episode_id)
    assert episode.status == EpisodeStatus.ERROR
    assert "limit" in episode.last_error


def test_missing_raw_fails_at_once_naming_the_key(pipeline):
    episode_id = pipeline.register("gone.mp3", b"bytes that will vanish")
    pipeline.store.delete(layout.upload_key("gone.mp3"))
    result = pipeline.materialize([raw_audio], episode_id)
    assert not result.success
    error = pipeline.catalog.get_episode(episode_id).last_error
    assert "uploads/gone.mp3" in error and f"episodes/{episode_id}/raw.mp3" in error

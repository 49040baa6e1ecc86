"""raw_audio -> transcript on real speech."""

from __future__ import annotations

import json

from pod_assets import layout
from pod_assets.raw_audio import raw_audio
from pod_assets.transcript import transcript
from pod_resources.catalog import EpisodeStatus


def test_transcript_of_real_speech(pipeline, jfk_path):
    episode_id = pipeline.register("jfk.flac", jfk_path)
    result = pipeline.materialize([raw_audio, transcript], episode_id, raise_on_error=True)
    assert result.success

    data = json.loads(pipeline.store.read_bytes(layout.episode_key(episode_id, layout.TRANSCRIPT)))
    assert data["engine"] == "pocketsphinx" and data["engine_version"]
    words = data["words"]
    assert len(words) >= 10
    duration = pipeline.catalog.get_episode(episode_id).metrics["duration_s"]
    starts = [w["start_s"] for w in words]
    assert starts == sorted(starts)
    for word in words:
        assert 0 <= word["start_s"] <= word["end_s"] <= duration + 0.05
        assert set(word) == {"text", "start_s", "end_s", "confidence", "is_filler"}
    text = " ".join(w["text"] for w in words)
    assert sum(w in text for w in ("country", "ask", "not", "what", "you", "can", "do")) >= 4

    [check] = result.get_asset_check_evaluations()
    assert check.passed
    [mat] = result.asset_materializations_for_node("transcript")
    assert mat.metadata["words"].value == len(words)
    assert "preview" in mat.metadata

    episode = pipeline.catalog.get_episode(episode_id)
    assert episode.status == EpisodeStatus.PROCESSED
    assert episode.artifacts["transcript"].endswith(f"episodes/{episode_id}/transcript.json")


def test_missing_raw_audio_fails_transcript_at_once(pipeline, jfk_path):
    episode_id = pipeline.register("jfk.flac", jfk_path)
    pipeline.materialize([raw_audio], episode_id, raise_on_error=True)
    raw_key = pipeline.catalog.get_episode(episode_id).raw_key
    pipeline.store.delete(raw_key)
    result = pipeline.materialize([transcript], episode_id)
    assert not result.success
    episode = pipeline.catalog.get_episode(episode_id)
    assert episode.status == EpisodeStatus.ERROR
    assert raw_key in episode.last_error

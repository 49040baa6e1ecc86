"""raw_audio -> transcript on real speech."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from pod_assets import layout
from pod_assets.episodes.raw_audio import raw_audio
from pod_assets.episodes.transcript import transcript
from pod_audio.whisper import TINY_EN_SHA256
from pod_resources.catalog import EpisodeStatus
from pod_resources.transcriber import WhisperTranscriberResource

JFK_WORDS = (
    "and so my fellow americans ask not what your country can do for you "
    "ask what you can do for your country"
).split()


def _plain(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalpha() or ch == "'")


def test_transcript_of_real_speech(pipeline, jfk_path):
    episode_id = pipeline.register("jfk.flac", jfk_path)
    result = pipeline.materialize([raw_audio, transcript], episode_id, raise_on_error=True)
    assert result.success

    data = json.loads(pipeline.store.read_bytes(layout.episode_key(episode_id, layout.TRANSCRIPT)))
    assert data["engine"] == "faster-whisper" and data["engine_version"]
    assert data["extra"]["model"] == "tiny.en"
    assert data["extra"]["model_sha256"] == TINY_EN_SHA256
    assert data["extra"]["aligner"].startswith("pocketsphinx")
    words = data["words"]
    assert [_plain(w["text"]) for w in words] == JFK_WORDS
    duration = pipeline.catalog.get_episode(episode_id).metrics["duration_s"]
    starts = [w["start_s"] for w in words]
    assert starts == sorted(starts)
    for word in words:
        assert 0 <= word["start_s"] <= word["end_s"] <= duration + 0.05
        assert set(word) == {"text", "start_s", "end_s", "confidence", "is_filler"}
    assert not any(w["is_filler"] for w in words)

    [check] = result.get_asset_check_evaluations()
    assert check.passed
    [mat] = result.asset_materializations_for_node("transcript")
    assert mat.metadata["words"].value == len(words)
    assert "preview" in mat.metadata
    assert mat.metadata["model_sha256"].value == TINY_EN_SHA256
    assert mat.metadata["chunks_resumed"].value == 0
    assert mat.metadata["second_opinion"].value.startswith("base heard 0 of the 1 chunks")

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


class _StopsAfterFirstChunk(WhisperTranscriberResource):
    """The real recogniser on short chunks, whose first attempt dies after one chunk (as a
    step killed or a store write failing late would)."""

    marker: str

    def transcribe(self, path: Path, *, cache=None, progress=None):
        marker = Path(self.marker)

        def stop_once(done_s: float, total_s: float) -> None:
            if not marker.exists():
                marker.write_text(f"stopped at {done_s:.1f} of {total_s:.1f} s")
                raise TimeoutError("connection lost after the first chunk")

        return super().transcribe(path, cache=cache, progress=stop_once)


def test_a_retried_transcript_resumes_from_the_stored_chunks(pipeline, jfk_path, tmp_path):
    episode_id = pipeline.register("jfk.flac", jfk_path)
    pipeline.materialize([raw_audio], episode_id, raise_on_error=True)
    transcriber = _StopsAfterFirstChunk(chunk_target_s=3.0, marker=str(tmp_path / "stopped"))
    result = dg.materialize(
        [transcript], partition_key=episode_id, instance=pipeline.instance,
        resources={**pipeline.resources, "transcriber": transcriber},
    )
    assert result.success
    assert (tmp_path / "stopped").exists()
    [mat] = result.asset_materializations_for_node("transcript")
    # The retry recognised only what the first attempt had not finished.
    assert mat.metadata["chunks_resumed"].value == 1
    data = json.loads(pipeline.store.read_bytes(layout.episode_key(episode_id, layout.TRANSCRIPT)))
    assert data["extra"]["chunks"] >= 3
    # Exactly what an uninterrupted transcription with the same settings gives.
    whole = WhisperTranscriberResource(chunk_target_s=3.0).transcribe(jfk_path)
    assert data["words"] == whole.to_dict()["words"]
    assert data["extra"] == whole.to_dict()["extra"]  # chunks_second_opinion counts reused chunks too
    # The chunks are gone once transcript.json is written.
    chunks = layout.episode_key(episode_id, "transcript-chunks/")
    assert list(pipeline.store.list(chunks)) == []

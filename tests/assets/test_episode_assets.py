"""The whole episode chain in process, on real speech: raw -> transcript -> cleaned -> final."""

from __future__ import annotations

from pathlib import Path

import pytest

from pod_assets import layout
from pod_assets.episodes.cleaned_audio import cleaned_audio
from pod_assets.episodes.final_episode import final_episode
from pod_assets.episodes.raw_audio import raw_audio
from pod_assets.episodes.transcript import transcript
from pod_audio.cuts import CutList
from pod_audio.io import probe
from pod_audio.loudness import measure
from pod_audio.tags import read_id3
from pod_audio.transcript import Transcript
from pod_resources.catalog import EpisodeStatus
from pod_resources.transcriber import WhisperTranscriberResource
from tests import audio_factory as af

REPO = Path(__file__).resolve().parents[2]
CHAT = REPO / "samples" / "studio-chat-with-fillers.mp3"
ALL = [raw_audio, transcript, cleaned_audio, final_episode]


def test_full_chain_on_speech_with_pauses_and_fillers(pipeline, tmp_path):
    episode_id = pipeline.register("studio chat.mp3", CHAT)
    result = pipeline.materialize(ALL, episode_id, raise_on_error=True)
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    assert len(result.get_asset_check_evaluations()) == 5

    store = pipeline.store
    cut_list = CutList.from_json(store.read_bytes(layout.episode_key(episode_id, layout.CUT_LIST)))
    cleaned = Transcript.from_json(store.read_bytes(layout.episode_key(episode_id, layout.CLEANED_TRANSCRIPT)))
    source = Transcript.from_json(store.read_bytes(layout.episode_key(episode_id, layout.TRANSCRIPT)))
    reasons = {s.reason for s in cut_list.removed_spans}
    assert "pause" in reasons  # the sample has pauses of 2.5 and 3 s
    assert cut_list.settings["max_pause_ms"] == 700

    episode = pipeline.catalog.get_episode(episode_id)
    assert episode.status == EpisodeStatus.PROCESSED
    m = episode.metrics
    assert m["cleaned_duration_s"] < m["duration_s"] - 3.0
    assert m["pauses_removed_s"] > 3.0
    assert abs(m["loudness_lufs"] - -16.0) <= 0.5  # stereo upload
    assert m["true_peak_dbtp"] <= -1.0
    # The sample's three hesitations (scripts/make_samples.py: an "um" after "pipeline.", an
    # "uh" after "recording.", an "um" after "time.") are cut, each on its own, and no word.
    fillers = [s for s in cut_list.removed_spans if s.reason == "filler"]
    assert [round((s.start_s + s.end_s) / 2) for s in fillers] == [7, 13, 26]
    assert m["fillers_removed"] == 3 == source.filler_count and cleaned.filler_count == 0
    assert [w.text for w in cleaned.words] == [w.text for w in source.words if not w.is_filler]
    for stage in ("raw_audio", "transcript", "cleaned_audio", "cut_list", "cleaned_transcript", "final_episode"):
        assert episode.artifacts[stage], stage

    mp3 = tmp_path / "episode.mp3"
    store.read_to_path(layout.episode_key(episode_id, layout.FINAL_EPISODE), mp3)
    info = probe(mp3)
    assert info.codec == "mp3" and info.sample_rate == 44100
    assert info.duration_s == pytest.approx(m["cleaned_duration_s"], abs=0.05)
    loud = measure(mp3)
    assert abs(loud.integrated_lufs + 16.0) <= 0.5 and loud.true_peak_dbtp <= -1.0
    tags = read_id3(mp3)
    assert tags.title == "studio chat" and tags.show == "Test Show"
    assert tags.duration_s == pytest.approx(info.duration_s, abs=0.1)


def test_backfill_settings_change_outputs(pipeline):
    episode_id = pipeline.register("chat.mp3", CHAT)
    pipeline.materialize(ALL[:3], episode_id, raise_on_error=True)
    first = pipeline.catalog.get_episode(episode_id).metrics["cleaned_duration_s"]
    pipeline.materialize(
        [cleaned_audio], episode_id, raise_on_error=True,
        run_config={"ops": {"cleaned_audio": {"config": {"max_pause_ms": 1500}}}},
    )
    episode = pipeline.catalog.get_episode(episode_id)
    assert episode.metrics["cleaned_duration_s"] > first + 1.0  # longer pauses kept
    cut_list = CutList.from_json(pipeline.store.read_bytes(layout.episode_key(episode_id, layout.CUT_LIST)))
    assert cut_list.settings["max_pause_ms"] == 1500
    assert episode.status == EpisodeStatus.PROCESSED


def test_intro_and_outro_are_crossfaded_on(pipeline, tmp_path):
    intro = af.write_audio(tmp_path / "intro.wav", af.tone(duration_s=2.0, sample_rate=48000, channels=2, amplitude=0.3), sample_rate=48000)
    outro = af.write_audio(tmp_path / "outro.flac", af.tone(duration_s=1.5, sample_rate=44100, freq_hz=440.0, amplitude=0.3), sample_rate=44100)
    pipeline.store.write_file("shows/test/intro.wav", intro)
    pipeline.store.write_file("shows/test/outro.flac", outro)
    episode_id = pipeline.register("jfk.flac", af.jfk_path())
    result = pipeline.materialize(
        ALL, episode_id, raise_on_error=True,
        run_config={"ops": {"final_episode": {"config": {
            "intro_key": "shows/test/intro.wav", "outro_key": "shows/test/outro.flac", "crossfade_ms": 400}}}},
    )
    assert result.success
    m = pipeline.catalog.get_episode(episode_id).metrics
    assert m["final_duration_s"] == pytest.approx(m["cleaned_duration_s"] + 2.0 + 1.5 - 0.8, abs=0.05)


def test_missing_intro_fails_with_its_key(pipeline):
    episode_id = pipeline.register("jfk.flac", af.jfk_path())
    result = pipeline.materialize(
        ALL, episode_id,
        run_config={"ops": {"final_episode": {"config": {"intro_key": "shows/none/intro.wav"}}}},
    )
    assert not result.success
    episode = pipeline.catalog.get_episode(episode_id)
    assert episode.status == EpisodeStatus.ERROR and episode.error_step == "final_episode"
    assert "shows/none/intro.wav" in episode.last_error


class _DriftingTranscriber(WhisperTranscriberResource):
    """The real recogniser with a timing bug: every word pushed past the end of the audio."""

    def transcribe(self, path, **kwargs):
        real = super().transcribe(path, **kwargs)
        words = tuple(w.shifted(real.duration_s) for w in real.words)
        return Transcript(words=words, duration_s=real.duration_s, engine=real.engine, engine_version=real.engine_version)


def test_failing_blocking_check_stops_the_episode(pipeline):
    episode_id = pipeline.register("jfk.flac", af.jfk_path())
    resources = {**pipeline.resources, "transcriber": _DriftingTranscriber()}
    import dagster as dg

    result = dg.materialize(ALL, partition_key=episode_id, resources=resources,
                            instance=pipeline.instance, raise_on_error=False)
    assert not result.success
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "transcript_timings_valid"]
    assert not check.passed
    episode = pipeline.catalog.get_episode(episode_id)
    assert episode.status == EpisodeStatus.ERROR
    assert "transcript_timings_valid" in episode.last_error and "outside the audio" in episode.last_error
    assert not pipeline.store.exists(layout.episode_key(episode_id, layout.CLEANED_AUDIO))
    assert not result.asset_materializations_for_node("cleaned_audio")


def test_final_episode_refuses_cleaned_audio_its_cut_list_does_not_describe(pipeline, tmp_path):
    """A cleaning run cut short between its writes leaves new audio beside an old cut list:
    nothing is mastered from that mix, and the message says what to run."""
    episode_id = pipeline.register("jfk.flac", af.jfk_path())
    pipeline.materialize([raw_audio, transcript, cleaned_audio], episode_id, raise_on_error=True)
    cleaned_key = layout.episode_key(episode_id, layout.CLEANED_AUDIO)
    other = af.write_audio(
        tmp_path / "other.flac", af.speech_like(duration_s=4.0, sample_rate=44100), sample_rate=44100
    )
    pipeline.store.write_file(cleaned_key, other)  # the cut short run got this far

    result = pipeline.materialize([final_episode], episode_id)

    assert not result.success
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    episode = pipeline.catalog.get_episode(episode_id)
    assert episode.status == EpisodeStatus.ERROR and episode.error_step == "final_episode"
    assert cleaned_key in episode.last_error and "different cleaning runs" in episode.last_error
    assert not pipeline.store.exists(layout.episode_key(episode_id, layout.FINAL_EPISODE))

"""Subtitles on the final timeline: cue limits, times through a cut list with known removed
spans, the blocking check reading the files back with webvtt-py and srt, and the asset."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import srt
import webvtt
from hypothesis import given, settings
from hypothesis import strategies as st

from pod_assets import layout
from pod_assets.publish.subtitles import SUBTITLES_CHECK, subtitle_problems, subtitles
from pod_audio.cuts import CutList, Span, remap_transcript
from pod_audio.subtitles import (
    SRT_LIMITS,
    VTT_LIMITS,
    build_cues,
    final_timeline_words,
    to_podcast_json,
    to_srt,
    to_webvtt,
)
from pod_audio.transcript import Transcript, Word
from pod_resources.catalog import EpisodeStatus

# Source: 0-4 s speech, 4-6 s a long pause (1.6 s of it removed), 6-7 a filler (removed),
# 7-12 speech. Crossfade 20 ms at each join.
CUT_LIST = CutList(
    spans=(
        Span(0.0, 4.2, "keep", "speech"),
        Span(4.2, 5.8, "remove", "pause"),
        Span(5.8, 6.1, "keep", "pause"),
        Span(6.1, 6.9, "remove", "filler", text="um"),
        Span(6.9, 12.0, "keep", "speech"),
    ),
    source_duration_s=12.0,
    crossfade_ms=20.0,
)
RAW = Transcript(
    words=(
        Word("Welcome", 0.5, 0.9), Word("to", 0.95, 1.05), Word("the", 1.1, 1.2),
        Word("show", 1.3, 1.7), Word("&", 2.0, 2.1), Word("<today>", 2.2, 3.0),
        Word("um", 6.2, 6.8, is_filler=True),
        Word("we", 7.5, 7.7), Word("talk", 7.8, 8.1), Word("about", 8.2, 8.5),
        Word("chapters", 8.6, 9.2), Word("🎙️", 9.3, 9.6), Word("مرحبا", 9.7, 10.2),
    ),
    duration_s=12.0,
    engine="test",
    engine_version="0",
)
OFFSET_S = 2.5  # a 3 s intro joined with a 0.5 s crossfade


def _texts(words):
    return (
        to_webvtt(build_cues(words, limits=VTT_LIMITS)),
        to_srt(build_cues(words, limits=SRT_LIMITS)),
        to_podcast_json(words),
    )


def test_word_times_follow_the_cut_list_and_the_intro():
    words = final_timeline_words(remap_transcript(RAW, CUT_LIST).words, offset_s=OFFSET_S)
    by_text = {w.text: w for w in words}
    assert "um" not in by_text  # the removed filler is gone
    assert by_text["Welcome"].start_s == 0.5 + OFFSET_S
    # After two joins: 1.6 s and 0.8 s removed, two crossfades of 20 ms overlapped.
    assert abs(by_text["we"].start_s - (7.5 - 1.6 - 0.8 - 0.04 + OFFSET_S)) < 1e-9

    vtt_text, srt_text, json_text = _texts(words)
    [first, *_] = webvtt.from_string(vtt_text)
    assert first.start == "00:00:03.000"
    segments = json.loads(json_text)["segments"]
    assert [s["body"] for s in segments] == [w.text for w in words]
    assert segments[6]["startTime"] == round(7.5 - 2.44 + OFFSET_S, 3)
    assert subtitle_problems(
        vtt_text=vtt_text, srt_text=srt_text, json_text=json_text,
        raw=RAW, cut_list=CUT_LIST, offset_s=OFFSET_S,
    ) == []


def test_the_check_catches_a_shifted_cue_a_lost_word_and_a_wrong_offset():
    words = final_timeline_words(remap_transcript(RAW, CUT_LIST).words, offset_s=OFFSET_S)
    vtt_text, srt_text, json_text = _texts(words)
    subs = list(srt.parse(srt_text))
    subs[1].start += srt.timedelta(milliseconds=40)
    shifted_srt = srt.compose(subs, reindex=False)
    data = json.loads(json_text)
    del data["segments"][3]

    problems = subtitle_problems(
        vtt_text=vtt_text, srt_text=shifted_srt, json_text=json.dumps(data),
        raw=RAW, cut_list=CUT_LIST, offset_s=OFFSET_S,
    )
    assert any(p.startswith("SRT cue 2:") and "the cut list gives" in p for p in problems)
    assert any("JSON transcript: 11 words, the cut list keeps 12" in p for p in problems)
    assert not any(p.startswith("WebVTT") for p in problems)

    wrong_offset = subtitle_problems(
        vtt_text=vtt_text, srt_text=srt_text, json_text=json_text,
        raw=RAW, cut_list=CUT_LIST, offset_s=0.0,
    )
    assert any(p.startswith("WebVTT cue 1:") for p in wrong_offset)
    assert subtitle_problems(
        vtt_text="not a vtt file", srt_text=srt_text, json_text=json_text,
        raw=RAW, cut_list=CUT_LIST, offset_s=OFFSET_S,
    )[0].startswith("subtitles do not parse")


_word_text = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=12),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz&<>", min_size=30, max_size=140),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_word_text, st.floats(0.0, 3.0), st.floats(0.0, 9.0)), min_size=1, max_size=60))
def test_cues_stay_within_their_limits_for_any_words(items):
    words, t = [], 0.0
    for text, gap_s, length_s in items:
        words.append(Word(text, t + gap_s, t + gap_s + length_s))
        t += gap_s + length_s
    for limits, render, parse in (
        (VTT_LIMITS, to_webvtt, lambda s: [(c.start, c.end, c.lines) for c in webvtt.from_string(s)]),
        (SRT_LIMITS, to_srt, lambda s: [(x.start, x.end, x.content.split("\n")) for x in srt.parse(s)]),
    ):
        cues = build_cues(words, limits=limits)
        assert len(parse(render(cues))) == len(cues)
        assert "".join(w.text for w in words).replace(" ", "") == "".join(
            "".join(c.lines).replace(" ", "") for c in cues
        )
        for before, cue in zip([None, *cues], cues, strict=False):
            assert 0 < cue.end_ms - cue.start_ms <= limits.max_cue_s * 1000
            assert len(cue.lines) <= limits.max_lines
            assert all(len(line) <= limits.max_line_chars for line in cue.lines)
            assert before is None or cue.start_ms >= before.end_ms


def _mastered_episode(pipeline, *, offset_s: float, cleaned: Transcript) -> str:
    """An episode whose cleaning and mastering are stored (objects as the steps write them)."""
    episode_id = pipeline.register("talk.flac", b"raw bytes of talk")
    catalog, store = pipeline.catalog, pipeline.store
    for name, text in (
        (layout.TRANSCRIPT, RAW.to_json()),
        (layout.CUT_LIST, CUT_LIST.to_json()),
        (layout.CLEANED_TRANSCRIPT, cleaned.to_json()),
    ):
        store.write_bytes(layout.episode_key(episode_id, name), text.encode())
    catalog.record_metrics(episode_id, {"intro_offset_s": offset_s})
    at = datetime.now(UTC)
    assert catalog.set_status(episode_id, expected=EpisodeStatus.UPLOADED, new=EpisodeStatus.PROCESSING, run_id="r", at=at)
    assert catalog.set_status(episode_id, expected=EpisodeStatus.PROCESSING, new=EpisodeStatus.PROCESSED, at=at)
    return episode_id


def test_subtitles_asset_writes_three_formats_and_passes_its_check(pipeline):
    episode_id = _mastered_episode(pipeline, offset_s=OFFSET_S, cleaned=remap_transcript(RAW, CUT_LIST))

    result = pipeline.materialize([subtitles], episode_id)

    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert (check.check_name, check.passed) == (SUBTITLES_CHECK, True)
    episode = pipeline.catalog.get_episode(episode_id)
    assert episode.status == EpisodeStatus.PROCESSED
    for name, filename in (("subtitles_vtt", "subtitles.vtt"), ("subtitles_srt", "subtitles.srt"),
                           ("transcript_json", "subtitles.json")):
        assert episode.artifacts[name] == pipeline.store.uri(layout.episode_key(episode_id, filename))
    vtt = pipeline.store.read_bytes(layout.episode_key(episode_id, layout.SUBTITLES_VTT)).decode()
    assert "&amp; &lt;today&gt;" in vtt


def test_subtitles_that_disagree_with_the_cut_list_fail_the_episode(pipeline):
    stale = remap_transcript(RAW, CUT_LIST)
    stale = Transcript(tuple(w.shifted(0.25) for w in stale.words), stale.duration_s, "test", "0")
    episode_id = _mastered_episode(pipeline, offset_s=OFFSET_S, cleaned=stale)

    result = pipeline.materialize([subtitles], episode_id)

    [check] = result.get_asset_check_evaluations()
    assert not check.passed
    episode = pipeline.catalog.get_episode(episode_id)
    assert episode.status == EpisodeStatus.ERROR
    assert f"check {SUBTITLES_CHECK} failed: WebVTT cue 1:" in episode.last_error


def test_the_recorded_intro_offset_is_where_the_cleaned_audio_plays_in_the_mp3(tmp_path):
    """The offset subtitles and chapters shift by, checked against the rendered audio: a
    click 1.0 s into the cleaned audio sounds at intro - crossfade + 1.0 s in the MP3."""
    import numpy as np

    from pod_assets.episodes.final_episode import _intro_offset_s
    from pod_audio.mastering import render_final
    from tests import audio_factory as af

    sr = 44100
    intro = af.write_audio(tmp_path / "intro.flac", af.tone(duration_s=2.3, sample_rate=sr, freq_hz=300, amplitude=0.3),
                           sample_rate=sr)
    main = af.concat(af.silence(duration_s=1.0, sample_rate=sr), af.noise(duration_s=0.02, sample_rate=sr, amplitude=0.9),
                     af.silence(duration_s=1.98, sample_rate=sr))
    main_path = af.write_audio(tmp_path / "cleaned.flac", main, sample_rate=sr)
    out = tmp_path / "episode.mp3"
    render_final(main_path=main_path, out_path=out, intro_path=intro, crossfade_ms=500.0, target_lufs=-16.0)

    offset_s = _intro_offset_s(intro, 3.0, 500.0)
    decoded = np.abs(af.read_audio(out, sample_rate=sr)[:, 0])
    window = decoded[int(2.0 * sr):int(3.5 * sr)]
    onset_s = 2.0 + int(np.argmax(window > 0.5 * window.max())) / sr
    assert offset_s == pytest.approx(1.8)
    assert abs(onset_s - (offset_s + 1.0)) < 0.005

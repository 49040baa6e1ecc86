"""Cut lists and the transcript remap: unit tests and Hypothesis properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pod_audio.cut_builder import build_cut_list
from pod_audio.cuts import (
    CutList,
    InvalidCutListError,
    Span,
    remap_time,
    remap_transcript,
    remap_words,
)
from pod_audio.render import plan_render, render_blocks
from pod_audio.silence import Interval
from pod_audio.transcript import Transcript, Word

EPS = 1e-9


def w(text: str, start: float, end: float, *, filler: bool = False) -> Word:
    return Word(text=text, start_s=start, end_s=end, is_filler=filler)


def kept_gap_after(words: list[Word], text: str) -> float:
    """Output pause between the word ``text`` and the next word."""
    for a, b in zip(words, words[1:], strict=False):
        if a.text == text:
            return b.start_s - a.end_s
    raise AssertionError(f"{text} not followed by a word")


# --------------------------------------------------------------------------- unit tests


def test_long_pause_is_shortened_to_max_pause_not_deleted() -> None:
    words = [w("one", 0.0, 0.5), w("two", 3.5, 4.0)]
    cut = build_cut_list(
        words=words, silences=[Interval(0.5, 3.5)], duration_s=4.0, max_pause_ms=700
    )
    out = remap_words(words, cut)
    assert [x.text for x in out] == ["one", "two"]
    assert kept_gap_after(out, "one") == pytest.approx(0.7, abs=1e-9)
    assert cut.removed_s_by_reason() == {"pause": pytest.approx(3.0 - 0.72)}
    # The margins next to the words stay, labelled as the kept part of a pause.
    assert [(s.action, s.reason) for s in cut.spans] == [
        ("keep", "speech"), ("keep", "pause"), ("remove", "pause"), ("keep", "pause"),
        ("keep", "speech"),
    ]
    assert cut.kept_duration_s == pytest.approx(0.5 + 0.7 + 0.5)


def test_short_pause_is_left_alone() -> None:
    words = [w("one", 0.0, 0.5), w("two", 1.1, 1.5)]
    cut = build_cut_list(words=words, silences=[Interval(0.5, 1.1)], duration_s=1.5)
    assert cut.removed_spans == ()
    assert remap_words(words, cut) == words


def test_filler_between_pauses_leaves_one_pause_not_two() -> None:
    words = [w("so", 0.0, 0.4), w("um", 0.7, 1.0, filler=True), w("yes", 1.4, 1.8)]
    silences = [Interval(0.4, 0.7), Interval(1.0, 1.4)]
    cut = build_cut_list(words=words, silences=silences, duration_s=1.8)
    out = remap_words(words, cut)
    assert [x.text for x in out] == ["so", "yes"]
    # The longest real pause (0.4 s) remains, not 0.3 + 0.4.
    assert kept_gap_after(out, "so") == pytest.approx(0.4, abs=1e-9)
    reasons = cut.removed_s_by_reason()
    assert reasons["filler"] == pytest.approx(0.3)
    assert set(reasons) <= {"filler", "pause"}


def test_filler_without_silence_around_it_is_cut_with_crossfade_guards() -> None:
    words = [w("so", 0.0, 0.4), w("uh", 0.4, 0.7, filler=True), w("yes", 0.7, 1.0)]
    cut = build_cut_list(words=words, silences=[], duration_s=1.0, crossfade_ms=20)
    out = remap_words(words, cut)
    assert [x.text for x in out] == ["so", "yes"]
    # A crossfade (+1 ms) of filler is kept on each side so the fade never touches a word.
    assert kept_gap_after(out, "so") == pytest.approx(2 * 0.021 - 0.02, abs=1e-9)
    assert cut.removed_s_by_reason() == {"filler": pytest.approx(0.3 - 0.042)}


def test_fillers_stay_when_not_removing_them() -> None:
    words = [w("so", 0.0, 0.4), w("um", 0.7, 1.0, filler=True), w("yes", 1.4, 1.8)]
    silences = [Interval(0.4, 0.7), Interval(1.0, 1.4)]
    cut = build_cut_list(words=words, silences=silences, duration_s=1.8, remove_fillers=False)
    assert cut.removed_spans == ()
    assert [x.text for x in remap_words(words, cut)] == ["so", "um", "yes"]


def test_leading_and_trailing_silence_trimmed_to_margin() -> None:
    words = [w("hello", 2.0, 2.5)]
    silences = [Interval(0.0, 2.0), Interval(2.5, 6.0)]
    cut = build_cut_list(words=words, silences=silences, duration_s=6.0, margin_ms=120)
    assert cut.spans[0] == Span(0.0, 1.88, "remove", "leading_silence")
    assert cut.spans[-1] == Span(2.62, 6.0, "remove", "trailing_silence")
    assert cut.joins == 0
    assert cut.kept_duration_s == pytest.approx(0.74)
    assert remap_words(words, cut)[0].start_s == pytest.approx(0.12)


def test_silence_overlapping_a_word_is_clipped_to_the_word() -> None:
    words = [w("a", 0.0, 0.3), w("tiny", 1.50, 1.55), w("b", 3.5, 3.8)]
    cut = build_cut_list(words=words, silences=[Interval(0.2, 3.6)], duration_s=3.8)
    for span in cut.removed_spans:
        for word in words:
            assert min(span.end_s, word.end_s) <= max(span.start_s, word.start_s)
    assert [x.text for x in remap_words(words, cut)] == ["a", "tiny", "b"]


def test_no_speech_at_all_keeps_a_margin() -> None:
    cut = build_cut_list(words=[], silences=[Interval(0.0, 10.0)], duration_s=10.0)
    assert cut.kept_duration_s == pytest.approx(0.12)
    assert cut.removed_s_by_reason() == {"trailing_silence": pytest.approx(9.88)}


def test_cut_smaller_than_min_cut_is_not_made() -> None:
    words = [w("one", 0.0, 0.5), w("two", 1.23, 1.5)]  # 0.73 s pause, 10 ms over the limit
    cut = build_cut_list(words=words, silences=[Interval(0.5, 1.23)], duration_s=1.5)
    assert cut.removed_spans == ()


def test_remap_time_inside_removed_span_is_none() -> None:
    words = [w("one", 0.0, 0.5), w("two", 3.5, 4.0)]
    cut = build_cut_list(words=words, silences=[Interval(0.5, 3.5)], duration_s=4.0)
    assert remap_time(2.0, cut) is None
    assert remap_time(-0.1, cut) is None
    assert remap_time(4.1, cut) is None
    assert remap_time(0.25, cut) == 0.25
    assert remap_time(3.75, cut) == pytest.approx(3.75 - (3.0 - 0.72) - 0.02)


def test_remap_transcript_has_rendered_duration() -> None:
    words = (w("one", 0.0, 0.5), w("um", 0.9, 1.2, filler=True), w("two", 3.5, 4.0))
    transcript = Transcript(words=words, duration_s=4.0, engine="test", engine_version="1")
    silences = [Interval(0.5, 0.9), Interval(1.2, 3.5)]
    cut = build_cut_list(words=words, silences=silences, duration_s=4.0)
    cleaned = remap_transcript(transcript, cut)
    assert cleaned.duration_s == cut.kept_duration_s
    assert cleaned.text == "one two"
    assert cleaned.engine == "test"


def test_json_round_trip_and_format() -> None:
    words = [w("one", 0.0, 0.5), w("two", 3.5, 4.0)]
    cut = build_cut_list(words=words, silences=[Interval(0.5, 3.5)], duration_s=4.0)
    data = cut.to_dict()
    assert data["version"] == 1
    assert data["kept_duration_s"] == cut.kept_duration_s
    assert data["spans"][0] == {"start_s": 0.0, "end_s": 0.5, "action": "keep", "reason": "speech"}
    assert CutList.from_json(cut.to_json()) == cut


@pytest.mark.parametrize(
    "spans",
    [
        [Span(0.0, 1.0, "keep", "speech"), Span(1.5, 2.0, "keep", "speech")],  # hole
        [Span(0.0, 1.0, "keep", "speech"), Span(0.9, 2.0, "remove", "pause")],  # overlap
        [Span(0.0, 1.0, "keep", "speech")],  # does not reach the end
        [Span(0.0, 2.0, "keep", "music")],  # unknown reason
        [Span(0.0, 2.0, "mute", "pause")],  # unknown action
        [Span(0.0, 0.0, "keep", "speech"), Span(0.0, 2.0, "keep", "speech")],  # empty
        # kept run of 10 ms between two joins with 20 ms crossfades
        [Span(0.0, 1.0, "keep", "speech"), Span(1.0, 1.2, "remove", "pause"),
         Span(1.2, 1.21, "keep", "speech"), Span(1.21, 1.5, "remove", "pause"),
         Span(1.5, 2.0, "keep", "speech")],
    ],
)
def test_invalid_cut_lists_are_rejected(spans: list[Span]) -> None:
    with pytest.raises(InvalidCutListError):
        CutList(spans=tuple(spans), source_duration_s=2.0, crossfade_ms=20.0)


def test_from_json_rejects_garbage() -> None:
    with pytest.raises(InvalidCutListError):
        CutList.from_json("{not json")
    with pytest.raises(InvalidCutListError):
        CutList.from_json('{"version": 99, "spans": []}')
    with pytest.raises(InvalidCutListError):
        CutList.from_json('{"spans": [{"start_s": 0}]}')


def test_bad_settings_raise() -> None:
    with pytest.raises(ValueError):
        build_cut_list(words=[], silences=[], duration_s=0.0)
    with pytest.raises(ValueError):
        build_cut_list(words=[], silences=[], duration_s=1.0, crossfade_ms=-1)


# --------------------------------------------------------------------------- properties


@st.composite
def timelines(draw: st.DrawFn) -> tuple[list[Word], list[Interval], float]:
    """Words one after another with pauses between, silences roughly over the pauses
    (edges jittered onto the words or short of them, as real detectors do)."""
    t = draw(st.floats(0.0, 2.0))
    words: list[Word] = []
    silences: list[Interval] = []
    jitter = st.floats(-0.04, 0.04)
    if t > 0 and draw(st.booleans()):
        silences.append(Interval(0.0, max(0.0, t + draw(jitter))))
    for i in range(draw(st.integers(0, 10))):
        length = draw(st.floats(0.0, 1.0))
        words.append(w(f"w{i}", t, t + length, filler=draw(st.booleans())))
        t += length
        pause = draw(st.floats(0.0, 2.5))
        if pause > 0 and draw(st.booleans()):
            start = max(0.0, t + draw(jitter))
            silences.append(Interval(start, max(start, t + pause + draw(jitter))))
        t += pause
    duration = t + draw(st.floats(0.01, 1.0))
    return words, silences, duration


@st.composite
def messy(draw: st.DrawFn) -> tuple[list[Word], list[Interval], float]:
    """Anything goes: overlapping words, silences across words, times past the end."""
    duration = draw(st.floats(0.05, 20.0))
    point = st.floats(0.0, duration * 1.05)
    words = []
    for i in range(draw(st.integers(0, 8))):
        a, b = sorted((draw(point), draw(point)))
        words.append(w(f"m{i}", a, b, filler=draw(st.booleans())))
    silences = []
    for _ in range(draw(st.integers(0, 8))):
        a, b = sorted((draw(point), draw(point)))
        silences.append(Interval(a, b))
    return words, silences, duration


options = st.fixed_dictionaries(
    {
        "max_pause_ms": st.sampled_from([0.0, 300.0, 700.0, 1500.0]),
        "margin_ms": st.sampled_from([0.0, 50.0, 120.0, 400.0]),
        "crossfade_ms": st.sampled_from([0.0, 5.0, 20.0, 50.0]),
        "remove_fillers": st.booleans(),
        "min_cut_ms": st.sampled_from([0.0, 50.0, 200.0]),
    }
)

PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def protected_words(words: list[Word], remove_fillers: bool) -> list[Word]:
    return [x for x in words if not (remove_fillers and x.is_filler)]


@PROPERTY_SETTINGS
@given(episode=st.one_of(timelines(), messy()), opts=options)
def test_cut_list_properties(episode: tuple[list[Word], list[Interval], float], opts: dict) -> None:
    words, silences, duration = episode
    cut = build_cut_list(words=words, silences=silences, duration_s=duration, **opts)
    cf = opts["crossfade_ms"] / 1000.0

    # The spans tile the source exactly.
    assert cut.spans[0].start_s == 0.0
    assert cut.spans[-1].end_s == duration
    for a, b in zip(cut.spans, cut.spans[1:], strict=False):
        assert a.end_s == b.start_s
    assert all(s.end_s > s.start_s for s in cut.spans)
    total = sum(s.duration_s for s in cut.spans)
    assert total == pytest.approx(duration, abs=1e-9)
    assert cut.kept_duration_s == pytest.approx(
        sum(s.duration_s for s in cut.kept_spans) - cut.joins * cf, abs=1e-9
    )
    assert 0.0 < cut.kept_duration_s <= duration + EPS

    # No cut enters a word that must stay, nor comes within a crossfade of it.
    keep_words = protected_words(words, opts["remove_fillers"])
    for span in cut.removed_spans:
        for word in keep_words:
            start, end = max(0.0, word.start_s), min(duration, word.end_s)
            if end < start:
                continue
            assert span.end_s <= start - cf + EPS or span.start_s >= end + cf - EPS, (span, word)

    # Kept words are shifted, never stretched; removed ones are only fillers.
    remapped = remap_words(words, cut)
    by_text = {x.text: x for x in remapped}
    for word in keep_words:
        if min(duration, word.end_s) < max(0.0, word.start_s):
            continue
        new = by_text[word.text]
        old_len = min(duration, word.end_s) - max(0.0, word.start_s)
        assert new.duration_s == pytest.approx(old_len, abs=1e-9)
    for word in words:
        if word.text not in by_text and word.start_s <= duration:
            assert word.is_filler and opts["remove_fillers"]
    for word in remapped:
        assert -EPS <= word.start_s <= word.end_s <= cut.kept_duration_s + EPS

    # The remap is monotonic and lands in the output.
    probes = sorted(
        [i * duration / 97 for i in range(98)]
        + [s.start_s for s in cut.spans]
        + [s.end_s for s in cut.spans]
        + [x.start_s for x in words]
        + [x.end_s for x in words]
    )
    mapped = [m for m in (remap_time(t, cut) for t in probes) if m is not None]
    assert all(b >= a - EPS for a, b in zip(mapped, mapped[1:], strict=False))
    assert all(-EPS <= m <= cut.kept_duration_s + EPS for m in mapped)

    # Cuts never lengthen the space between two kept words.
    ordered = sorted(
        (x for x in keep_words if x.end_s <= duration and x.start_s >= 0), key=lambda x: x.start_s
    )
    for a, b in zip(ordered, ordered[1:], strict=False):
        if b.start_s >= a.end_s:
            new_gap = by_text[b.text].start_s - by_text[a.text].end_s
            assert new_gap <= b.start_s - a.end_s + EPS

    assert CutList.from_json(cut.to_json()) == cut


@PROPERTY_SETTINGS
@given(episode=st.one_of(timelines(), messy()), opts=options)
def test_rendered_length_and_positions_match_remap(
    episode: tuple[list[Word], list[Interval], float], opts: dict
) -> None:
    """Rendering a ramp (sample value = source index) shows where each source sample went."""
    words, silences, duration = episode
    cut = build_cut_list(words=words, silences=silences, duration_s=duration, **opts)
    sample_rate = 8000
    frames = int(math.floor(duration * sample_rate + 0.5))
    ramp = np.arange(frames, dtype=np.float32)[:, np.newaxis]
    blocks = (ramp[i : i + 4096] for i in range(0, frames, 4096))
    chunks = render_blocks(blocks, cut_list=cut, sample_rate=sample_rate)
    out = np.concatenate([np.zeros((0, 1), np.float32), *chunks])
    assert out.shape[0] == plan_render(cut, sample_rate=sample_rate).total_frames
    assert abs(out.shape[0] / sample_rate - cut.kept_duration_s) <= 1.0 / sample_rate + EPS

    for word in protected_words(words, opts["remove_fillers"]):
        start, end = max(0.0, word.start_s), min(duration, word.end_s)
        if end - start < 0.01:
            continue
        mid = (start + end) / 2
        mapped = remap_time(mid, cut)
        assert mapped is not None
        index = int(math.floor(mapped * sample_rate + 0.5))
        if index >= out.shape[0]:
            continue  # the very last sample of a word ending at the end of the audio
        # Within half a sample (run anchoring), plus half a sample for rounding ``index``.
        assert abs(out[index, 0] - mid * sample_rate) <= 1.0 + 1e-6


@settings(max_examples=60, deadline=None)
@given(
    words=st.lists(st.tuples(st.floats(0.0, 5.0), st.floats(0.0, 2.0), st.booleans()), max_size=8),
    duration=st.floats(0.1, 20.0),
)
def test_nothing_removable_is_identity(words: list[tuple], duration: float) -> None:
    word_objs = [w(f"i{i}", a, a + b, filler=f) for i, (a, b, f) in enumerate(words)]
    cut = build_cut_list(words=word_objs, silences=[], duration_s=duration, remove_fillers=False)
    assert cut.spans == (Span(0.0, duration, "keep", "speech"),)
    assert cut.kept_duration_s == duration
    for t in np.linspace(0.0, duration, 41):
        assert remap_time(float(t), cut) == float(t)
    kept = [x for x in word_objs if x.start_s <= duration]
    assert remap_words(kept, cut) == [
        Word(x.text, x.start_s, min(x.end_s, duration), x.confidence, x.is_filler) for x in kept
    ]


@settings(max_examples=80, deadline=None)
@given(
    pause_s=st.floats(0.0, 6.0),
    max_pause_ms=st.sampled_from([300.0, 700.0, 1000.0]),
    crossfade_ms=st.sampled_from([0.0, 10.0, 20.0]),
)
def test_every_pause_ends_up_at_most_max_pause(
    pause_s: float, max_pause_ms: float, crossfade_ms: float
) -> None:
    words = [w("a", 0.0, 0.5), w("b", 0.5 + pause_s, 1.0 + pause_s)]
    cut = build_cut_list(
        words=words,
        silences=[Interval(0.5, 0.5 + pause_s)],
        duration_s=1.0 + pause_s,
        max_pause_ms=max_pause_ms,
        crossfade_ms=crossfade_ms,
        min_cut_ms=50.0,
    )
    out = remap_words(words, cut)
    gap = out[1].start_s - out[0].end_s
    max_pause = max_pause_ms / 1000.0
    if pause_s <= max_pause:
        assert gap == pytest.approx(pause_s, abs=1e-9)
    else:
        # Shortened to the limit, or left alone when the cut would be under min_cut_ms.
        assert gap == pytest.approx(max_pause, abs=1e-9) or (
            cut.removed_spans == () and pause_s < max_pause + crossfade_ms / 1000 + 0.05 + EPS
        )


def test_no_words_and_no_silence_keeps_everything() -> None:
    cut = build_cut_list(words=[], silences=[], duration_s=3.0)
    assert cut.spans == (Span(0.0, 3.0, "keep", "speech"),)


def test_removed_fillers_carry_their_words_and_confidence_for_review() -> None:
    from pod_audio.cut_builder import build_cut_list
    from pod_audio.cuts import CutList
    from pod_audio.transcript import Word

    words = [
        Word("so", 0.5, 0.9),
        Word("um", 1.2, 1.6, confidence=0.82, is_filler=True),
        Word("uh", 1.6, 1.9, confidence=0.64, is_filler=True),
        Word("yes", 2.3, 2.8),
    ]
    cut_list = build_cut_list(words=words, silences=[], duration_s=3.5)
    [filler] = [s for s in cut_list.spans if s.reason == "filler"]
    assert filler.text == "um uh" and filler.confidence == 0.64
    data = cut_list.to_dict()
    [stored] = [s for s in data["spans"] if s["reason"] == "filler"]
    assert stored["text"] == "um uh" and stored["confidence"] == 0.64
    assert all("text" not in s for s in data["spans"] if s["reason"] != "filler")
    assert CutList.from_dict(data) == cut_list

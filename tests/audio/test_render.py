"""Rendering cut lists: exact length, words where the remap says, no clicks, streaming."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pod_audio.cut_builder import build_cut_list
from pod_audio.cuts import CutList, Span, remap_time, remap_words
from pod_audio.io import iter_blocks, probe
from pod_audio.render import (
    SourceMismatchError,
    plan_render,
    render_blocks,
    render_cut_list,
)
from pod_audio.silence import detect_silences_in_file
from pod_audio.transcript import Word
from tests.audio_factory import concat, noise, silence, tone, write_audio

SR = 44100
NOISE_AMPLITUDE = 10 ** (-60 / 20)
WORD_AMPLITUDE = 0.5


def _ramped(burst: np.ndarray, ramp_s: float = 0.001) -> np.ndarray:
    """``burst`` with 1 ms raised-cosine edges, so the source has no clicks of its own."""
    n = int(ramp_s * SR)
    edge = (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32)[:, np.newaxis]
    out = burst.copy()
    out[:n] *= edge
    out[-n:] *= edge[::-1]
    return out


def synthetic_episode(channels: int = 2) -> tuple[np.ndarray, list[Word]]:
    """Tone bursts as words (and fillers) between pauses of every kind, over a -60 dBFS
    noise floor. Returns the signal and the words with their exact times."""
    layout: list[tuple[str, float, float, bool]] = [  # (text, pause before, length, filler)
        ("welcome", 1.5, 0.40, False),
        ("to", 0.25, 0.30, False),  # short pause: stays
        ("the", 2.00, 0.35, False),  # long pause: shortened
        ("um", 0.30, 0.35, True),  # filler between pauses
        ("show", 0.40, 0.45, False),
        ("uh", 0.00, 0.30, True),  # filler glued to the words around it
        ("today", 0.00, 0.50, False),
        ("bye", 1.20, 0.40, False),
    ]
    parts, words, t = [], [], 0.0
    for i, (text, pause, length, filler) in enumerate(layout):
        parts.append(silence(duration_s=pause, sample_rate=SR, channels=channels))
        t += pause
        freq = 250.0 + 70.0 * i
        parts.append(_ramped(tone(duration_s=length, sample_rate=SR, channels=channels,
                                  freq_hz=freq, amplitude=WORD_AMPLITUDE)))
        words.append(Word(text=text, start_s=t, end_s=t + length, is_filler=filler))
        t += length
    parts.append(silence(duration_s=2.0, sample_rate=SR, channels=channels))
    signal = concat(*parts)
    floor = noise(duration_s=signal.shape[0] / SR, sample_rate=SR, channels=channels,
                  amplitude=NOISE_AMPLITUDE, seed=7)
    return signal + floor[: signal.shape[0]], words


def decode(path: Path) -> np.ndarray:
    return np.concatenate(list(iter_blocks(path)))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("render")
    signal, words = synthetic_episode()
    source = write_audio(tmp / "source.flac", signal, sample_rate=SR, bits=24)
    silences = detect_silences_in_file(source).silences
    info = probe(source)
    cut = build_cut_list(words=words, silences=silences, duration_s=info.duration_s)
    out = tmp / "cleaned.flac"
    report = render_cut_list(source_path=source, cut_list=cut, out_path=out)
    return {
        "source": source, "signal": signal, "words": words, "cut": cut, "out": out,
        "report": report, "audio": decode(out),
    }


def test_rendered_duration_equals_kept_duration(rendered: dict) -> None:
    cut, report = rendered["cut"], rendered["report"]
    assert report.duration_s == pytest.approx(cut.kept_duration_s, abs=0.001)
    assert report.frames == rendered["audio"].shape[0]
    assert probe(rendered["out"]).duration_s == pytest.approx(cut.kept_duration_s, abs=0.001)
    assert report.cuts == cut.joins >= 3
    assert (report.sample_rate, report.channels) == (SR, 2)
    reasons = set(cut.removed_s_by_reason())
    assert reasons == {"leading_silence", "pause", "filler", "trailing_silence"}


def _onset(audio: np.ndarray, around_s: float, *, window_s: float = 0.03) -> float:
    lo = max(0, int((around_s - window_s) * SR))
    segment = np.abs(audio[lo : int((around_s + window_s) * SR), 0])
    return (lo + int(np.argmax(segment > 0.1))) / SR


def _offset(audio: np.ndarray, around_s: float, *, window_s: float = 0.03) -> float:
    lo = max(0, int((around_s - window_s) * SR))
    segment = np.abs(audio[lo : int((around_s + window_s) * SR), 0])
    return (lo + int(np.flatnonzero(segment > 0.1)[-1]) + 1) / SR


def test_remapped_words_start_on_their_audio(rendered: dict) -> None:
    audio, cut = rendered["audio"], rendered["cut"]
    remapped = remap_words(rendered["words"], cut)
    assert [x.text for x in remapped] == ["welcome", "to", "the", "show", "today", "bye"]
    for word in remapped:
        # The bursts' 1 ms edges delay the crossing of the detection level a little. Next
        # to the cut "uh" the kept crossfade guard is itself loud: no edge to find there.
        if word.text != "today":
            assert abs(_onset(audio, word.start_s) - word.start_s) < 0.003, word
        if word.text != "show":
            assert abs(_offset(audio, word.end_s) - word.end_s) < 0.003, word
    # The glued words still sit exactly where the remap says: their tone's phase matches.
    source, source_words = rendered["signal"], {x.text: x for x in rendered["words"]}
    for word in remapped:
        src_index = round((source_words[word.text].start_s + 0.1) * SR)
        out_index = round((word.start_s + 0.1) * SR)
        assert np.allclose(audio[out_index - 20 : out_index + 20],
                           source[src_index - 20 : src_index + 20], atol=1e-4), word


def test_fillers_are_gone_and_pauses_are_capped(rendered: dict) -> None:
    audio, cut = rendered["audio"], rendered["cut"]
    loud = np.abs(audio[:, 0]) > 0.1
    # Loud stretches (bridging a tone's zero crossings) are the kept words only.
    frames = loud[: loud.size // 441 * 441].reshape(-1, 441).any(axis=1)
    edges = np.diff(np.concatenate(([0], frames.astype(np.int8), [0])))
    assert (edges == 1).sum() == 5  # "show" and "today" are joined where "uh" was cut
    remapped = {x.text: x for x in remap_words(rendered["words"], cut)}
    assert remapped["the"].start_s - remapped["to"].end_s == pytest.approx(0.7, abs=1e-6)
    assert remapped["to"].start_s - remapped["welcome"].end_s == pytest.approx(0.25, abs=1e-6)
    assert remapped["show"].start_s - remapped["the"].end_s == pytest.approx(0.4, abs=1e-6)
    assert remapped["welcome"].start_s == pytest.approx(0.12, abs=1e-6)
    assert cut.kept_duration_s - remapped["bye"].end_s == pytest.approx(0.12, abs=1e-6)


def _max_jump(x: np.ndarray) -> float:
    return float(np.max(np.abs(np.diff(x, axis=0)))) if x.shape[0] > 1 else 0.0


def test_joins_do_not_click(rendered: dict) -> None:
    """At every join the biggest step between samples is no bigger than in the source:
    than in its quiet parts where the join is in a pause, than anywhere where it is in a
    filler glued to words."""
    audio, cut, signal = rendered["audio"], rendered["cut"], rendered["signal"]
    quiet = np.abs(signal[:, 0]) < 0.01
    quiet_jump, any_jump = _max_jump(signal[quiet]), _max_jump(signal)
    plan = plan_render(cut, sample_rate=SR)
    in_pause = 0
    for run in plan.runs[1:]:
        window = audio[run.out_start - 441 : run.out_start + run.fade_in + 441]
        if np.abs(window).max() < 0.01:
            in_pause += 1
            assert _max_jump(window) <= quiet_jump, run
        else:
            assert _max_jump(window) <= any_jump, run
    assert in_pause >= 2


def test_crossfade_smooths_a_cut_through_a_tone(tmp_path: Path) -> None:
    """A cut inside a tone, half a period long, puts opposite phases side by side: a hard
    cut steps by the full peak-to-peak; the crossfade keeps steps near the tone's own."""
    signal = tone(duration_s=2.0, sample_rate=SR, freq_hz=100.0, amplitude=0.5)
    source = write_audio(tmp_path / "tone.wav", signal, sample_rate=SR, bits="float")
    spans = (
        Span(0.0, 1.0025, "keep", "speech"),
        Span(1.0025, 1.0075, "remove", "pause"),
        Span(1.0075, 2.0, "keep", "speech"),
    )
    source_jump = _max_jump(signal)
    jumps = {}
    for crossfade_ms in (0.0, 20.0):
        cut = CutList(spans=spans, source_duration_s=2.0, crossfade_ms=crossfade_ms)
        out = tmp_path / f"out{crossfade_ms:g}.wav"
        report = render_cut_list(source_path=source, cut_list=cut, out_path=out, codec="wav")
        assert report.duration_s == pytest.approx(cut.kept_duration_s, abs=1 / SR)
        jumps[crossfade_ms] = _max_jump(decode(out))
    assert jumps[0.0] > 50 * source_jump
    assert jumps[20.0] < 2 * source_jump


def test_mp3_output_has_the_planned_length(rendered: dict, tmp_path: Path) -> None:
    out = tmp_path / "cleaned.mp3"
    report = render_cut_list(source_path=rendered["source"], cut_list=rendered["cut"],
                             out_path=out, codec="mp3")
    assert report.duration_s == pytest.approx(rendered["cut"].kept_duration_s, abs=0.001)
    assert probe(out).duration_s == pytest.approx(rendered["cut"].kept_duration_s, abs=0.03)


def test_render_streams_block_by_block() -> None:
    """Output comes out long before the input is used up; nothing is held but a tail."""
    sample_rate, block = 8000, 1000
    total_blocks = 200
    consumed = 0

    def source():
        nonlocal consumed
        for _ in range(total_blocks):
            consumed += 1
            yield np.ones((block, 2), np.float32)

    duration = total_blocks * block / sample_rate
    # Even seconds: keep 0.75 s, remove 0.25 s; odd seconds: remove.
    tiled = []
    for i in range(int(duration)):
        if i % 2 == 0:
            tiled.append(Span(float(i), i + 0.75, "keep", "speech"))
            tiled.append(Span(i + 0.75, float(i + 1), "remove", "pause"))
        else:
            tiled.append(Span(float(i), float(i + 1), "remove", "pause"))
    cut = CutList(spans=tuple(tiled), source_duration_s=duration, crossfade_ms=10.0)
    stream = render_blocks(source(), cut_list=cut, sample_rate=sample_rate)
    first = next(stream)
    assert first.shape[1] == 2
    assert consumed <= 2
    rest = list(stream)
    assert consumed == total_blocks
    total = first.shape[0] + sum(x.shape[0] for x in rest)
    assert total == plan_render(cut, sample_rate=sample_rate).total_frames
    assert total / sample_rate == pytest.approx(cut.kept_duration_s, abs=1 / sample_rate)
    assert max(x.shape[0] for x in [first, *rest]) <= block
    # Crossfades of a constant stay that constant: the gains sum to one.
    assert max(float(np.abs(x - 1.0).max()) for x in [first, *rest][1:-1]) <= 1e-6


def test_source_of_another_length_is_refused() -> None:
    cut = build_cut_list(words=[], silences=[], duration_s=10.0)
    blocks = [np.zeros((SR, 1), np.float32)]  # 1 s of audio for a 10 s cut list
    with pytest.raises(SourceMismatchError):
        list(render_blocks(blocks, cut_list=cut, sample_rate=SR))


def test_slightly_short_source_is_padded() -> None:
    cut = build_cut_list(words=[], silences=[], duration_s=1.0)
    blocks = [np.full((SR - 100, 1), 0.25, np.float32)]
    out = np.concatenate(list(render_blocks(blocks, cut_list=cut, sample_rate=SR)))
    assert out.shape[0] == SR
    assert np.all(out[-100:] == 0.0)


def test_remap_time_agrees_with_render_at_every_kept_sample() -> None:
    """A ramp through a cut list with many joins: each kept sample lands where remap_time
    says, within half a sample, also at a rate where the crossfade is not whole samples."""
    sample_rate = 11025
    words = [Word(f"w{i}", 0.5 + i * 1.3, 0.9 + i * 1.3) for i in range(12)]
    fillers = [Word(f"f{i}", 0.9 + i * 1.3, 1.6 + i * 1.3, is_filler=True) for i in range(11)]
    duration = 16.0
    # No silences: every cut goes through a filler glued to the words around it.
    cut = build_cut_list(words=words + fillers, silences=[], duration_s=duration, crossfade_ms=15.0)
    assert cut.joins == 11
    frames = int(duration * sample_rate)
    ramp = np.arange(frames, dtype=np.float32)[:, np.newaxis]
    out = np.concatenate(list(render_blocks([ramp], cut_list=cut, sample_rate=sample_rate)))
    assert abs(out.shape[0] / sample_rate - cut.kept_duration_s) <= 1 / sample_rate
    for word in words:
        # The word's samples: from its start to one sample before its end.
        for t in np.linspace(word.start_s, word.end_s - 1 / sample_rate, 9):
            mapped = remap_time(float(t), cut)
            index = round(mapped * sample_rate)
            assert abs(out[index, 0] - t * sample_rate) <= 1.0

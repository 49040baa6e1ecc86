"""Tests of :mod:`pod_audio.fillers`: acoustic filler detection and merging into transcripts."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import lfilter

from pod_audio import fillers
from pod_audio.asr import transcribe
from pod_audio.fillers import apply_fillers, canonical_filler, detect_fillers
from pod_audio.io import iter_blocks
from pod_audio.transcript import FILLER_WORDS, Word

SR = 16000
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")


# --------------------------------------------------------------------------- helpers


def _write_wav(path: Path, samples: np.ndarray) -> Path:
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SR)
        out.writeframes(pcm.tobytes())
    return path


def _espeak(text: str, *, voice: str, speed_wpm: int, tmp: Path) -> np.ndarray:
    out = tmp / "piece.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed_wpm), "-p", "50", "-w", str(out), text],
        check=True,
        capture_output=True,
    )
    samples = np.concatenate([b[:, 0] for b in iter_blocks(out, sample_rate=SR, channels=1)])
    n = len(samples) // 160
    level = 10 * np.log10(np.mean(samples[: n * 160].reshape(n, 160) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(level > -45)
    return samples[loud[0] * 160 : (loud[-1] + 1) * 160]


# Text, then fillers with pauses around them (s) or none: the fillers' spans are known
# to the sample because every piece is synthesized on its own.
_SCRIPT = (
    ("text", "so today we are talking about the history"),
    ("gap", 0.4), ("filler", "um"), ("gap", 0.4),
    ("text", "of the printing press"),
    ("gap", 0.02), ("filler", "uh"), ("gap", 0.3),
    ("text", "and the weather was terrible"),
    ("gap", 0.35), ("filler", "er"), ("gap", 0.35),
    ("text", "but the show went on anyway"),
    ("gap", 0.3), ("filler", "hmm"), ("gap", 0.03),
    ("text", "we will be back after a short break"),
)  # fmt: skip


def _speech_with_fillers(tmp: Path, voice: str) -> tuple[Path, list[tuple[float, float, str]]]:
    pieces = [np.zeros(int(0.3 * SR), dtype=np.float32)]
    position = len(pieces[0])
    truth = []
    for kind, value in _SCRIPT:
        if kind == "gap":
            piece = np.zeros(int(float(value) * SR), dtype=np.float32)
        else:
            speed = 100 if kind == "filler" else 155
            piece = _espeak(str(value), voice=voice, speed_wpm=speed, tmp=tmp)
        if kind == "filler":
            truth.append((position / SR, (position + len(piece)) / SR, str(value)))
        pieces.append(piece)
        position += len(piece)
    pieces.append(np.zeros(int(0.3 * SR), dtype=np.float32))
    audio = np.concatenate(pieces)
    audio += np.random.default_rng(0).normal(0, 3e-4, len(audio)).astype(np.float32)
    return _write_wav(tmp / f"{voice}.wav", audio), truth


def _vowel(seconds: float, formants_hz: tuple[float, float], *, f0_hz: float = 120.0) -> np.ndarray:
    """A synthetic vowel: a pulse train at ``f0_hz`` through two formant resonators."""
    n = int(seconds * SR)
    source = np.zeros(n)
    source[:: int(SR / f0_hz)] = 1.0
    out = source
    for formant in formants_hz:
        r = np.exp(-np.pi * 80.0 / SR)
        theta = 2 * np.pi * formant / SR
        out = lfilter([1.0], [1.0, -2 * r * np.cos(theta), r * r], out)
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def _babble(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Speech-like sound: 80 ms vowels whose formants jump every time."""
    pieces = [
        _vowel(0.08, (rng.uniform(300, 800), rng.uniform(900, 2400)), f0_hz=rng.uniform(100, 140))
        for _ in range(int(seconds / 0.08))
    ]
    return np.concatenate(pieces)


# --------------------------------------------------------------------------- end to end


@needs_espeak
def test_fillers_found_near_their_true_times(tmp_path: Path) -> None:
    hits = 0
    total = 0
    false_positives = 0
    for voice in ("en-us+m3", "en-gb+f3"):
        path, truth = _speech_with_fillers(tmp_path, voice)
        transcript = transcribe(path, workers=1)
        found = [w for w in transcript.words if w.is_filler]
        assert all(w.text in FILLER_WORDS for w in found)
        used: set[int] = set()
        for start_s, end_s, _ in truth:
            total += 1
            for i, word in enumerate(found):
                centre = (word.start_s + word.end_s) / 2
                if i not in used and start_s - 0.1 <= centre <= end_s + 0.1:
                    used.add(i)
                    hits += 1
                    break
        false_positives += len(found) - len(used)
    assert hits >= 6, f"found {hits} of {total} fillers"
    assert false_positives <= 2


@needs_espeak
def test_detect_fillers_output_is_well_formed(tmp_path: Path) -> None:
    path, truth = _speech_with_fillers(tmp_path, "en-us+m3")
    samples = np.concatenate([b[:, 0] for b in iter_blocks(path, sample_rate=SR, channels=1)])
    found = detect_fillers(samples)  # acoustic evidence alone, no recogniser segments
    duration_s = len(samples) / SR
    assert found == sorted(found, key=lambda w: w.start_s)
    for word, following in zip(found, found[1:]):
        assert word.end_s <= following.start_s
    for word in found:
        assert word.is_filler and word.text in {"um", "uh", "er", "ah", "hmm"}
        assert 0.0 <= word.start_s < word.end_s <= duration_s
        assert 0.0 <= word.confidence <= 1.0
    centres = [(w.start_s + w.end_s) / 2 for w in found]
    assert sum(any(s - 0.1 <= c <= e + 0.1 for c in centres) for s, e, _ in truth) >= 3


# --------------------------------------------------------------------------- acoustic analysis


def test_steady_vowel_is_steadier_than_babble_and_becomes_a_candidate() -> None:
    rng = np.random.default_rng(3)
    quiet = rng.normal(0, 1e-4, int(0.4 * SR)).astype(np.float32)
    steady = _vowel(0.45, (600.0, 1200.0))
    audio = np.concatenate([_babble(1.5, rng), quiet, steady, quiet, _babble(1.5, rng)])
    features = fillers.frame_features(audio)
    start = (int(1.5 / 0.08) * int(0.08 * SR) + len(quiet)) // 160
    stop = start + len(steady) // 160
    core = slice(start + 10, stop - 10)
    assert np.all(features.voicing[core] > 0.6)
    assert np.median(features.f0_hz[core]) == pytest.approx(120.0, rel=0.05)
    assert features.steadiness[core].max() < 0.5  # typical speech is 1.0 by definition
    candidates = fillers.find_candidates(features)
    assert any(c.start <= start + 5 and c.end >= stop - 5 for c in candidates)


@pytest.mark.parametrize(
    "samples",
    [np.zeros(0, dtype=np.int16), np.zeros(300, dtype=np.int16), np.zeros(3 * SR, dtype=np.int16)],
    ids=["empty", "short", "silence"],
)
def test_detect_fillers_on_no_speech(samples: np.ndarray) -> None:
    assert detect_fillers(samples) == []


def test_detect_fillers_rejects_other_rates() -> None:
    with pytest.raises(ValueError):
        detect_fillers(np.zeros(SR, dtype=np.int16), sample_rate=44100)


def test_fitted_weights_respect_their_signs() -> None:
    for name, weight in zip(fillers.FEATURE_NAMES, fillers._WEIGHTS):
        sign = fillers.FEATURE_SIGNS[name]
        assert sign == 0 or weight * sign >= 0, name
    assert set(fillers.FEATURE_SIGNS) == set(fillers.FEATURE_NAMES)


# --------------------------------------------------------------------------- text and merging


@pytest.mark.parametrize(
    ("text", "expected"),
    [("um", "um"), ("Umm", "um"), ("uh", "uh"), ("uhh", "uh"), ("er", "er"), ("erm", "um"),
     ("ah", "ah"), ("hm", "hmm"), ("HMM", "hmm"), ("mm", "hmm"), ("the", None), ("umbrella", None)],
)  # fmt: skip
def test_canonical_filler(text: str, expected: str | None) -> None:
    assert canonical_filler(text) == expected


def test_every_filler_word_has_a_canonical_spelling() -> None:
    assert {canonical_filler(w) for w in FILLER_WORDS} == {"um", "uh", "er", "ah", "hmm"}


def _w(text: str, start: float, end: float, **kw: object) -> Word:
    return Word(text, start, end, **kw)  # type: ignore[arg-type]


def test_apply_fillers_replaces_covered_words_and_trims_neighbours() -> None:
    words = [
        _w("so", 0.0, 0.3),
        _w("bomb", 0.5, 0.9),  # the recogniser's guess for the filler
        _w("the", 0.85, 1.2),  # overlaps the filler's end
        _w("press", 1.3, 1.8),
    ]
    found = [_w("um", 0.45, 0.95, confidence=0.9, is_filler=True)]
    merged = apply_fillers(words, found)
    assert [w.text for w in merged] == ["so", "um", "the", "press"]
    the = merged[2]
    assert the.start_s == pytest.approx(0.95) and the.end_s == pytest.approx(1.2)
    assert merged[1].is_filler and not any(w.is_filler for w in merged if w.text != "um")


def test_apply_fillers_keeps_confirmed_and_drops_unconfirmed_spelled_fillers() -> None:
    words = [_w("and", 0.0, 0.4), _w("ah", 0.4, 0.65), _w("my", 0.65, 0.9), _w("uh", 1.5, 1.9)]
    found = [_w("uh", 1.48, 1.92, confidence=0.8, is_filler=True)]
    merged = apply_fillers(words, found)
    # "ah" was not confirmed by the detector (it is "so" misheard): dropped, not cut as a filler.
    assert [(w.text, w.is_filler) for w in merged] == [("and", False), ("my", False), ("uh", True)]


def test_apply_fillers_without_fillers_keeps_lexical_words() -> None:
    words = [_w("ask", 0.0, 0.3), _w("not", 0.4, 0.7)]
    assert apply_fillers(words, []) == words

"""What is not speech stays out of the transcript and in the episode: music, hum and room
noise are neither words nor fillers.

Whisper writes "you" over a second of music or hum; a tune's notes are steady voiced
sounds, as a held "hmm" is; and speech under steady noise or next to music is harder to
align, so its words must not be heard twice.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from pod_audio.asr import transcribe
from pod_audio.dsp import as_int16, write_wav
from pod_audio.filler_checks import spoken
from pod_audio.fillers import (
    MAX_FILLER_S,
    MAX_FILLERS_PER_GAP,
    detect_fillers,
    fillers_between_words,
    join_touching_fillers,
)
from pod_audio.transcript import Word
from pod_audio.vad import speech_spans
from tests.audio_factory import jfk_16k, noise, tune

SR = 16000
JFK_WORDS = (
    "and so my fellow americans ask not what your country can do for you "
    "ask what you can do for your country"
).split()


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    return jfk_16k()


def _words(tmp_path: Path, name: str, samples: np.ndarray) -> list[Word]:
    return list(transcribe(write_wav(tmp_path / f"{name}.wav", samples)).words)


def _plain(words: list[Word]) -> list[str]:
    return [re.sub(r"[^a-z']", "", w.text.lower()) for w in words if not w.is_filler]


@pytest.mark.parametrize(
    "name, make",
    [
        ("tune", lambda: tune(duration_s=20, sample_rate=SR)[:, 0]),
        ("hum", lambda: 0.05 * np.sin(2 * np.pi * 60 * np.arange(20 * SR) / SR)
         + noise(duration_s=20, sample_rate=SR, amplitude=0.003)[:, 0]),
        ("room noise", lambda: noise(duration_s=20, sample_rate=SR, amplitude=0.06, seed=3)[:, 0]),
    ],
)
def test_music_hum_and_noise_alone_hold_no_words(tmp_path: Path, name: str, make) -> None:
    # Whisper tiny.en writes "you" (probability 0.03-0.06) on each of these; it is as sure
    # that the window holds no speech, and that is taken at its word.
    assert _words(tmp_path, name, make()) == []


def test_a_tune_between_two_sentences_is_not_cut_as_fillers(tmp_path: Path, jfk: np.ndarray) -> None:
    rest = np.zeros(int(0.3 * SR), dtype=np.float32)
    cut = int(5.3 * SR)  # in the pause after "ask not"
    for legato in (False, True):
        music = tune(duration_s=4, sample_rate=SR, legato=legato, chord=not legato)[:, 0]
        audio = np.concatenate([jfk[:cut], rest, music, rest, jfk[cut:]])
        words = _words(tmp_path, f"tune-{legato}", audio)
        assert _plain(words) == JFK_WORDS
        assert [w for w in words if w.is_filler] == [], legato
        # The voice activity detector alone keeps the tune: it hears no speech in it.
        speech = speech_spans(as_int16(audio))
        gap = next((a.end_s, b.start_s) for a, b in zip(words, words[1:]) if b.start_s - a.end_s > 3)
        assert not any(spoken(Word("hmm", t, t + 0.45, 1.0, True), speech) for t in np.arange(*gap, 0.25)[2:-2])
        # Without it, the two rules on steady sounds keep it: the acoustic detector finds
        # the notes, more than a pause holds (staccato) or joined into a run longer than a
        # hesitation lasts (legato).
        notes = detect_fillers(as_int16(audio), segments=words, within=[gap])
        if legato:
            assert join_touching_fillers(notes, words) == [] and notes[-1].end_s - notes[0].start_s > MAX_FILLER_S
        else:
            assert len(notes) > MAX_FILLERS_PER_GAP
            assert fillers_between_words(as_int16(audio), words) == []


def test_words_next_to_music_are_put_on_their_sound_and_heard_once(tmp_path: Path, jfk: np.ndarray) -> None:
    music = tune(duration_s=15, sample_rate=SR)[:, 0] * 0.5
    before = _words(tmp_path, "music-first", np.concatenate([music, jfk]))
    assert _plain(before) == JFK_WORDS
    # "And" is said at 15.3 s; the aligner used to put it on the music's first 2 s.
    assert 15.0 <= before[0].start_s < before[1].start_s
    assert [w for w in before if w.is_filler] == []
    after = _words(tmp_path, "music-after", np.concatenate([jfk, music]))
    assert _plain(after) == JFK_WORDS
    assert [w for w in after if w.is_filler] == []
    assert after[-1].end_s < len(jfk) / SR + 0.3


def test_speech_under_steady_noise_is_heard_once(tmp_path: Path, jfk: np.ndarray) -> None:
    # The aligner cannot place the last sentence under this noise; hearing that stretch
    # again used to add its words a second time ("can can do do for for your your").
    hiss = noise(duration_s=len(jfk) / SR, sample_rate=SR, amplitude=0.02, seed=0)[:, 0]
    words = _words(tmp_path, "noisy", jfk + hiss)
    plain = _plain(words)
    assert plain[-8:] == JFK_WORDS[-8:]
    assert len(plain) == len(JFK_WORDS)


def test_a_run_of_steady_sounds_longer_than_a_hesitation_is_not_a_filler() -> None:
    notes = [Word("hmm", 1.0 + 0.5 * i, 1.45 + 0.5 * i, 0.9, True) for i in range(4)]
    assert join_touching_fillers(notes, []) == []
    # One long "um" found as its vowel and its "m" is still one filler.
    um = [Word("uh", 1.0, 1.4, 0.8, True), Word("um", 1.45, 1.7, 0.7, True)]
    assert join_touching_fillers(um, []) == [Word("um", 1.0, 1.7, 0.7, True)]
    assert 1.7 - 1.0 < MAX_FILLER_S < 1.0 + 0.5 * 3 + 0.45 - 1.0


def test_a_candidate_is_spoken_when_more_than_half_of_it_lies_in_speech() -> None:
    speech = [(1.0, 2.0), (3.0, 4.0)]
    assert spoken(Word("um", 1.2, 1.6, 0.9, True), speech)
    assert spoken(Word("um", 1.8, 2.1, 0.9, True), speech)  # two thirds inside
    assert not spoken(Word("um", 1.9, 2.3, 0.9, True), speech)  # a quarter inside
    assert not spoken(Word("um", 2.2, 2.8, 0.9, True), speech)
    assert not spoken(Word("um", 2.2, 2.8, 0.9, True), [])


def _at(text: str, start_s: float) -> Word:
    return Word(text, start_s, start_s + 0.3, 0.9)


def test_a_stretch_heard_again_adds_only_words_the_recogniser_did_not_write_there() -> None:
    from pod_audio.filler_checks import _new_words

    written = [_at(t, 8.3 + 0.3 * i) for i, t in enumerate("Ask what you can do for your country.".split())]
    # The aligner could not place them; heard again, the same words and one misheard "and".
    again = [_at(t, 8.0 + 0.3 * i) for i, t in enumerate("and ask what you can do for your country".split())]
    assert _new_words(again, written) == []
    # Whisper dropped the sentence after "you."; heard again, all of it is new, filler too.
    dropped = [_at(t, 2.8 + 0.3 * i) for i, t in enumerate("Uh, next week the museum".split())]
    assert _new_words(dropped, [_at("see", 2.2), _at("you.", 2.4)]) == dropped
    # A stretch that repeats one written word among new ones: only the new ones.
    mixed = [_at(t, 2.4 + 0.3 * i) for i, t in enumerate("you next week the".split())]
    assert _new_words(mixed, [_at("you.", 2.4)]) == mixed[1:]

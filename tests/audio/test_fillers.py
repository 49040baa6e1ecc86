"""Tests of :mod:`pod_audio.fillers`: acoustic filler detection and merging into transcripts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.signal import lfilter

from pod_audio import filler_candidates, filler_frames
from pod_audio.asr import transcribe
from pod_audio.dsp import write_wav
from pod_audio.filler_checks import neighbours_look_right, part_of_a_word, set_apart
from pod_audio.filler_search import make_room
from pod_audio.fillers import (
    DEFAULT_THRESHOLD,
    apply_fillers,
    candidate_table,
    detect_fillers,
    filler_overlaps,
    fillers_between_words,
    flag_spelled_filler,
    join_touching_fillers,
    merge_fillers,
)
from pod_audio.io import iter_blocks
from pod_audio.transcript import FILLER_WORDS, Word, canonical_filler
from tests.audio_factory import jfk_16k
from tests.speech_factory import SR, espeak, has_espeak, render_script

needs_espeak = pytest.mark.skipif(not has_espeak(), reason="espeak-ng missing")
MAX_OVERLAP_S = 0.02


# --------------------------------------------------------------------------- helpers


def _espeak(text: str, *, voice: str, speed_wpm: int, tmp: Path) -> np.ndarray:
    return espeak(text, voice=voice, speed_wpm=speed_wpm)


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
    return write_wav(tmp / f"{voice}.wav", audio), truth


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
        transcript = transcribe(path)
        assert filler_overlaps(transcript.words) == []
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


# --------------------------------------------------------------------------- the hard rule

# Sentences ending in a word that is one held vowel before a pause ("show", "all", "so",
# "know", "too"; the last word of each is spoken slowly), with real fillers around them.
_HELD_VOWELS: list[tuple[str, object]] = [
    ("say", "welcome back to the"), ("slow", "show"), ("gap", 0.6),
    ("filler", "um"), ("gap", 0.3),
    ("say", "we tried them"), ("slow", "all"), ("gap", 0.7),
    ("say", "and it was good"), ("gap", 0.05), ("filler", "uh"), ("gap", 0.4),
    ("say", "it was honestly"), ("slow", "so"), ("gap", 0.8),
    ("say", "you already"), ("slow", "know"), ("gap", 0.5),
    ("filler", "hmm"), ("gap", 0.4),
    ("say", "me"), ("slow", "too"), ("gap", 0.6),
]  # fmt: skip


@needs_espeak
@pytest.mark.parametrize("voice", ["en-us+m3", "en-gb+f3", "en-us+m1"])
def test_a_filler_cut_never_takes_a_real_word(tmp_path: Path, voice: str) -> None:
    path, truth = render_script(_HELD_VOWELS, tmp_path / "held.wav", voice=voice, seed=11)
    transcript = transcribe(path)
    assert filler_overlaps(transcript.words) == []
    found = [w for w in transcript.words if w.is_filler]
    for filler in found:
        for piece in truth:
            if piece.kind != "word":
                continue
            overlap = min(filler.end_s, piece.end_s) - max(filler.start_s, piece.start_s)
            assert overlap <= MAX_OVERLAP_S, f"filler {filler} cut into {piece.text!r} {piece}"
    # Every cut is a filler's own audio: its centre lies on one of the real fillers.
    fillers_true = [p for p in truth if p.kind == "filler"]
    for filler in found:
        centre = (filler.start_s + filler.end_s) / 2
        assert any(p.start_s - 0.1 <= centre <= p.end_s + 0.1 for p in fillers_true), filler
    # The held words themselves were heard as words.
    heard = {w.text.lower().strip(".,!?") for w in transcript.words if not w.is_filler}
    assert len(heard & {"show", "all", "so", "know", "too"}) >= 3, heard


def _steady_vowel_between_words() -> tuple[np.ndarray, list[Word], tuple[float, float]]:
    """Babble "words", 0.4 s of near silence, a held vowel (a filler's sound), babble again.

    Returns the audio, the two words and the vowel's span (seconds)."""
    rng = np.random.default_rng(3)
    first, quiet = _babble(1.5, rng), rng.normal(0, 1e-4, int(0.4 * SR)).astype(np.float32)
    vowel, second = _vowel(0.45, (600.0, 1200.0)), _babble(1.5, rng)
    audio = np.concatenate([first, quiet, vowel, second])
    vowel_start = (len(first) + len(quiet)) / SR
    vowel_end = vowel_start + len(vowel) / SR
    words = [Word("before", 0.0, len(first) / SR), Word("after", vowel_end, len(audio) / SR)]
    return audio, words, (vowel_start, vowel_end)


def test_fillers_between_words_finds_a_held_vowel_in_a_gap() -> None:
    audio, words, (vowel_start, vowel_end) = _steady_vowel_between_words()
    found = fillers_between_words(audio, words)
    assert len(found) == 1 and found[0].is_filler
    assert vowel_start - 0.05 <= found[0].start_s and found[0].end_s <= vowel_end
    assert filler_overlaps([*words, *found]) == []


def test_the_same_sound_inside_a_word_is_never_a_filler() -> None:
    audio, (before, after), (vowel_start, vowel_end) = _steady_vowel_between_words()
    # The recogniser heard one long word over the vowel: there is no gap to search.
    long_word = Word("long", before.end_s, after.end_s)
    assert fillers_between_words(audio, [before, long_word]) == []
    # A word ending inside the vowel: what is left of it after the word is too little.
    stretched = Word("before", 0.0, vowel_end - 0.1)
    assert fillers_between_words(audio, [stretched, after]) == []


def _word_then_vowel(pause_s: float) -> tuple[np.ndarray, Word, Word]:
    """A babble "word" (0.6 s), ``pause_s`` of near silence, then a held vowel (0.4 s) and
    silence: the word, as the alignment with hesitations places it, and the vowel as a
    candidate in the gap after it."""
    rng = np.random.default_rng(5)
    word, vowel = _babble(0.6, rng), _vowel(0.4, (600.0, 1200.0))
    pause = rng.normal(0, 1e-4, int(pause_s * SR)).astype(np.float32)
    tail = rng.normal(0, 1e-4, int(0.5 * SR)).astype(np.float32)
    audio = np.concatenate([word, pause, vowel, tail])
    vowel_start = (len(word) + len(pause)) / SR
    return (
        (audio * 32767).astype(np.int16),
        Word("so", 0.0, len(word) / SR),
        Word("uh", vowel_start, vowel_start + len(vowel) / SR, is_filler=True),
    )


def test_a_hesitation_slot_counts_only_when_quiet_sets_it_apart_from_the_word() -> None:
    # A filler after a breath: 80 ms of quiet between the word and the vowel.
    audio, word, filler = _word_then_vowel(0.08)
    assert set_apart(audio, filler, [word])
    # The same vowel running on from the word (the held end of a drawn-out "sooo").
    audio, word, filler = _word_then_vowel(0.0)
    assert not set_apart(audio, filler, [word])
    # A word the alignment put on the candidate itself.
    assert not set_apart(audio, filler, [Word("so", 0.0, filler.end_s)])


def _laid_out(*pieces: np.ndarray | float) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Speech pieces and pauses (seconds) end to end over faint noise, 0.3 s of it first:
    16-bit audio and each piece's span (seconds)."""
    rng = np.random.default_rng(11)
    parts, spans, at = [rng.normal(0, 3e-4, int(0.3 * SR))], [], 0.3
    for piece in pieces:
        if isinstance(piece, float):
            parts.append(rng.normal(0, 3e-4, int(piece * SR)))
            at += int(piece * SR) / SR
        else:
            parts.append(piece)
            spans.append((at, at + len(piece) / SR))
            at += len(piece) / SR
    parts.append(rng.normal(0, 3e-4, int(0.5 * SR)))
    return (np.clip(np.concatenate(parts), -1, 1) * 32767).astype(np.int16), spans


@needs_espeak
def test_a_slow_the_left_in_a_gap_is_part_of_a_word() -> None:
    # A slowly said "the" (its "th" 0.15 s long), 110 ms of quiet, "answer": the aligner put
    # "the" on the start of "answer" and left its own sound in the gap.
    the, answer = espeak("the", speed_wpm=100), espeak("answer", speed_wpm=160)
    audio, (the_span, answer_span) = _laid_out(the, 0.11, answer)
    squeezed = [
        Word("The", answer_span[0], answer_span[0] + 0.22),
        Word("answer", answer_span[0] + 0.22, answer_span[1] - 0.17),
    ]
    candidate = Word("uh", the_span[0] - 0.02, the_span[1], is_filler=True)
    assert part_of_a_word(audio, candidate, squeezed)
    # A real "uh" in the same place starts on its vowel: a filler.
    uh = espeak("uh", speed_wpm=100)
    audio, (uh_span, answer_span) = _laid_out(uh, 0.11, answer)
    words = [Word("answer", *answer_span)]
    uh_candidate = Word("uh", uh_span[0] - 0.02, uh_span[1], is_filler=True)
    assert not part_of_a_word(audio, uh_candidate, words)
    # Nor a "hmm", whose "m" rises in a steady ramp, not on a shelf.
    hmm = espeak("hmm", speed_wpm=100)
    audio, (hmm_span, answer_span) = _laid_out(hmm, 0.11, answer)
    candidate = Word("hmm", hmm_span[0] - 0.02, hmm_span[1], is_filler=True)
    assert not part_of_a_word(audio, candidate, [Word("answer", *answer_span)])


@needs_espeak
def test_the_vowel_of_a_word_squeezed_onto_its_consonant_is_part_of_it() -> None:
    # A drawn-out "of" whose word the aligner put on its final "v" only: the vowel before
    # it, running into it with no quiet, is the word's.
    of, show = espeak("of", speed_wpm=100), espeak("show", speed_wpm=160)
    audio, (of_span, show_span) = _laid_out(0.3, of, 0.08, show)
    from pod_audio.align import frame_levels_db

    level_db = frame_levels_db(of[: len(of) // 160 * 160])
    loud = np.flatnonzero(level_db >= np.percentile(level_db, 75) - 10.0)
    split = of_span[0] + (int(loud[-1]) + 1) / 100  # where the vowel has faded into the "v"
    words = [Word("of", round(split, 2), of_span[1]), Word("show", *show_span)]
    assert part_of_a_word(audio, Word("uh", of_span[0], round(split, 2), is_filler=True), words)
    # An "uh" said straight into a whole word (no quiet between them) is not.
    uh = espeak("uh", speed_wpm=100)
    audio, (uh_span, show_span) = _laid_out(0.3, uh, show)
    tight = Word("uh", uh_span[0], uh_span[1], is_filler=True)
    assert not part_of_a_word(audio, tight, [Word("show", *show_span)])


def test_make_room_moves_the_word_a_filler_lay_on_and_never_takes_part_of_it() -> None:
    plain = [_w("so", 1.0, 1.7), _w("we", 2.0, 2.2), _w("did", 2.2, 2.5)]
    # The alignment with hesitations gave the held "uh" a slot after a shorter "so".
    loose = [_w("so", 1.0, 1.3), _w("we", 2.0, 2.2), _w("did", 2.2, 2.5)]
    filler = _w("uh", 1.35, 1.7, is_filler=True)
    assert make_room(plain, filler, loose) == loose
    # "we" stretched back over an "um": it moves onto its own sound.
    plain = [_w("so", 1.0, 1.3), _w("we", 1.4, 2.2), _w("did", 2.2, 2.5)]
    loose = [_w("so", 1.0, 1.3), _w("we", 1.95, 2.2), _w("did", 2.2, 2.5)]
    moved = make_room(plain, _w("um", 1.4, 1.9, is_filler=True), loose)
    assert moved == loose and filler_overlaps([*moved, _w("um", 1.4, 1.9, is_filler=True)]) == []
    # Where the other alignment has the word on the filler too, or on its neighbour: no room.
    assert make_room(plain, _w("um", 1.4, 1.9, is_filler=True), [*loose[:1], _w("we", 1.5, 2.2), *loose[2:]]) is None
    assert make_room(plain, _w("um", 1.4, 1.9, is_filler=True), [*loose[:1], _w("we", 1.95, 2.3), *loose[2:]]) is None
    # "we [uh] are talking": the plain alignment put "are" on the "uh" and squeezed
    # "talking" onto the end of its own sound; "are" moving back takes "talking" along.
    plain = [_w("we", 1.05, 1.25), _w("are", 1.5, 1.97), _w("talking", 2.37, 2.83), _w("about", 2.83, 3.06)]
    loose = [_w("we", 1.08, 1.25), _w("are", 2.27, 2.39), _w("talking", 2.44, 2.84), _w("about", 2.84, 3.16)]
    uh = _w("uh", 1.49, 1.95, is_filler=True)
    assert make_room(plain, uh, loose) == [plain[0], *loose[1:]]
    # ... but never a neighbour onto the filler, nor a filler the recogniser wrote.
    assert make_room(plain, uh, [*loose[:2], _w("talking", 1.9, 2.84), loose[3]]) is None
    assert make_room([*plain[:2], _w("um", 2.37, 2.83, is_filler=True), plain[3]], uh, loose) is None


def test_a_squeezed_word_a_pause_sets_apart_from_the_candidate_does_not_judge_it() -> None:
    """"pipeline. [pause] um [pause] The first": the aligner squeezed "The" onto the end of
    "pipeline"; across 0.6 s of quiet, that says nothing about the "um"."""
    rng = np.random.default_rng(7)

    def quiet(seconds: float) -> np.ndarray:
        return rng.normal(0, 1e-4, int(seconds * SR)).astype(np.float32)

    audio = np.concatenate([_babble(0.64, rng), quiet(0.56), _vowel(0.4, (600.0, 1200.0)), quiet(0.5),
                            _babble(0.64, rng), quiet(0.3)])  # fmt: skip
    pcm = (audio * 32767).astype(np.int16)
    heard = [_w("pipeline", 0.0, 0.6), _w("The", 1.2, 2.2), _w("first", 2.2, 2.74)]
    words = [_w("pipeline", 0.0, 0.6), _w("The", 0.6, 0.64), _w("first", 2.1, 2.74)]
    um = _w("um", 1.2, 1.6, is_filler=True)
    assert not neighbours_look_right(um, words, heard)  # "The" squeezed into 40 ms
    assert neighbours_look_right(um, words, heard, pcm)
    # The same vowel said straight after the squeezed word: it judges the candidate.
    audio = np.concatenate([_babble(0.64, rng), _vowel(0.4, (600.0, 1200.0)), quiet(0.5),
                            _babble(0.64, rng), quiet(0.3)])  # fmt: skip
    pcm = (audio * 32767).astype(np.int16)
    words = [_w("pipeline", 0.0, 0.6), _w("The", 0.6, 0.64), _w("first", 1.54, 2.18)]
    assert not neighbours_look_right(_w("um", 0.64, 1.04, is_filler=True), words, heard, pcm)


def test_gaps_next_to_unaligned_words_are_not_searched() -> None:
    audio, words, _ = _steady_vowel_between_words()
    assert fillers_between_words(audio, words, aligned=[True, False]) == []


def test_spelled_fillers_are_flagged_and_replaced_by_acoustic_spans() -> None:
    assert flag_spelled_filler(Word("Um,", 1.0, 1.3)) == Word("um", 1.0, 1.3, is_filler=True)
    assert flag_spelled_filler(Word("Umbrella", 1.0, 1.3)).is_filler is False
    words = [Word("so", 0.0, 0.4), Word("uh", 0.5, 0.7, is_filler=True), Word("yes", 1.2, 1.5)]
    found = [Word("uh", 0.45, 0.95, confidence=0.9, is_filler=True)]
    assert [(w.text, w.start_s) for w in merge_fillers(words, found)] == [("so", 0.0), ("uh", 0.45), ("yes", 1.2)]
    # Not confirmed by the sound: kept as a word, never cut.
    unconfirmed = merge_fillers(words, [])
    assert [(w.text, w.is_filler) for w in unconfirmed] == [("so", False), ("uh", False), ("yes", False)]


def test_a_hesitation_found_in_two_parts_is_cut_as_one() -> None:
    words = [_w("ask", 3.76, 4.19), _w("not", 5.67, 5.98)]
    vowel = _w("uh", 4.64, 5.04, is_filler=True, confidence=0.9)
    nasal = _w("um", 5.07, 5.34, is_filler=True, confidence=0.6)
    # The vowel and the "m" of one "um", 30 ms apart: one filler, no sliver left between.
    assert join_touching_fillers([nasal, vowel], words) == [
        _w("um", 4.64, 5.34, is_filler=True, confidence=0.6)
    ]
    # "er" running into "uh": spelled as its first part.
    er, uh = _w("er", 1.0, 1.3, is_filler=True), _w("uh", 1.35, 1.5, is_filler=True)
    assert join_touching_fillers([er, uh], []) == [_w("er", 1.0, 1.5, is_filler=True)]
    # Farther apart, or with a word between them: two fillers.
    apart = _w("um", 5.2, 5.34, is_filler=True)
    assert join_touching_fillers([vowel, apart], words) == [vowel, apart]
    assert join_touching_fillers([vowel, nasal], [*words, _w("a", 5.04, 5.07)]) == [vowel, nasal]


def test_filler_overlaps_reports_every_violation() -> None:
    words = [Word("so", 0.0, 0.5), Word("um", 0.47, 0.9, is_filler=True), Word("yes", 0.89, 1.2)]
    assert filler_overlaps(words) == [(words[1], words[0], pytest.approx(0.03))]


# --------------------------------------------------------------------------- acoustic analysis


def test_steady_vowel_is_steadier_than_babble_and_becomes_a_candidate() -> None:
    rng = np.random.default_rng(3)
    quiet = rng.normal(0, 1e-4, int(0.4 * SR)).astype(np.float32)
    steady = _vowel(0.45, (600.0, 1200.0))
    audio = np.concatenate([_babble(1.5, rng), quiet, steady, quiet, _babble(1.5, rng)])
    features = filler_frames.frame_features(audio)
    start = (int(1.5 / 0.08) * int(0.08 * SR) + len(quiet)) // 160
    stop = start + len(steady) // 160
    core = slice(start + 10, stop - 10)
    assert np.all(features.voicing[core] > 0.6)
    assert np.median(features.f0_hz[core]) == pytest.approx(120.0, rel=0.05)
    assert features.steadiness[core].max() < 0.5  # typical speech is 1.0 by definition
    candidates = filler_candidates.find_candidates(features)
    assert any(c.start <= start + 5 and c.end >= stop - 5 for c in candidates)


@needs_espeak
@pytest.mark.parametrize(("text", "speed_wpm"), [("um", 110), ("hmm", 110)])
def test_a_quick_um_in_a_pause_is_scored_on_the_pauses_around_all_of_its_sound(
    text: str, speed_wpm: int
) -> None:
    """The steady core of a quick "um" is its vowel (its "m" is a change of sound), and of a
    "hmm" its hum (not the "h"): the pauses are measured around the whole sound, as a
    detection is grown to it. Measured at the core alone, the pause on one side read 0: the
    feature the detector weighs most was lost on the fillers most often said."""
    speech = jfk_16k()
    filler = espeak(text, voice="en-gb+m3", speed_wpm=speed_wpm)
    filler *= 0.05 / float(np.sqrt(np.mean(filler**2)))
    pause = np.zeros(int(0.3 * SR), dtype=np.float32)
    split = int(2.2 * SR)
    audio = np.concatenate([speech[:split], pause, filler, pause, speech[split : int(4.5 * SR)]])
    audio += np.random.default_rng(1).normal(0, 3e-4, len(audio)).astype(np.float32)
    start_s = (split + len(pause)) / SR
    end_s = start_s + len(filler) / SR

    table = candidate_table(audio)
    on_filler = [
        (c, v) for c, v in zip(table.candidates, table.vectors) if c.start_s < end_s and c.end_s > start_s
    ]
    assert len(on_filler) == 1
    candidate, vector = on_filler[0]
    assert candidate.end_s < end_s - 0.05 or candidate.start_s > start_s + 0.05  # a core only
    shorter = filler_candidates.FEATURE_NAMES.index("pause_shorter_s")
    assert vector[shorter] > 0.2
    assert filler_candidates.score_features(vector)[0] >= DEFAULT_THRESHOLD

    # Said straight after a word ("well-um"), the side facing the word has no pause: growing
    # to a pause never reaches across a word.
    word = espeak("well", voice="en-gb+m3", speed_wpm=160)
    word *= 0.05 / float(np.sqrt(np.mean(word**2)))
    audio = np.concatenate([speech[:split], pause, word, filler, pause, speech[split : int(4.5 * SR)]])
    audio += np.random.default_rng(1).normal(0, 3e-4, len(audio)).astype(np.float32)
    start_s, end_s = start_s + len(word) / SR, end_s + len(word) / SR
    table = candidate_table(audio)
    on_filler = [v for c, v in zip(table.candidates, table.vectors) if start_s <= c.start_s < end_s]
    assert len(on_filler) == 1
    assert on_filler[0][shorter] == 0.0


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
    for name, weight in zip(filler_candidates.FEATURE_NAMES, filler_candidates._WEIGHTS):
        sign = filler_candidates.FEATURE_SIGNS[name]
        assert sign == 0 or weight * sign >= 0, name
    assert set(filler_candidates.FEATURE_SIGNS) == set(filler_candidates.FEATURE_NAMES)


# --------------------------------------------------------------------------- text and merging


@pytest.mark.parametrize(
    ("text", "expected"),
    [("um", "um"), ("Umm", "um"), ("uh", "uh"), ("uhh", "uh"), ("er", "er"), ("erm", "um"),
     ("ah", "ah"), ("hm", "hmm"), ("HMM", "hmm"), ("mm", "hmm"), ("the", None), ("umbrella", None),
     ("Ahhh", "ah"), ("Ummmm", "um"), ("hmmmm", "hmm"), ("errrr", "er"), ("err", None),
     ("Soooo", None), ("all", None)],
)  # fmt: skip
def test_canonical_filler(text: str, expected: str | None) -> None:
    assert canonical_filler(text) == expected


def test_an_answer_spelled_like_a_hum_is_a_word_not_a_filler() -> None:
    # "Did you go?" "Mhm." The answer is not a hesitation; cut, it would be gone.
    for answer in ("Mhm.", "mhm", "Mm-hmm.", "mm-hmm", "Uh-huh.", "Mhmm"):
        assert flag_spelled_filler(Word(answer, 1.0, 1.4)).is_filler is False, answer
    assert flag_spelled_filler(Word("Hmm.", 1.0, 1.4)) == Word("hmm", 1.0, 1.4, is_filler=True)


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


def test_a_hesitation_the_recogniser_wrote_itself_needs_no_alignment_to_vouch_for_it() -> None:
    """The checks on how the words were aligned around a candidate (the local re-alignment,
    quiet setting it apart) look for a word the aligner misplaced; where the recogniser
    itself wrote "uh" on the candidate, the gap is the hesitation it heard, and only the
    checks on the sound (and then the recognition again) judge it."""
    from pod_audio.filler_search import _passes

    audio, (first, second), (vowel_start, vowel_end) = _steady_vowel_between_words()
    pcm = (audio * 32767).astype(np.int16)
    speech = [(0.0, len(pcm) / SR)]  # the voice activity detector's verdict is not at issue here
    candidate = Word("uh", vowel_start, vowel_end, 0.9, is_filler=True)
    # Said to be "so" and "all" (words the babble is not), aligned again on their own the
    # aligner stretches one of them over the vowel: the candidate fails.
    before, after = Word("so", first.start_s, first.end_s), Word("all", second.start_s, second.end_s)
    assert not _passes(pcm, candidate, [before, after], [before, after], loose=[], speech=speech)
    spelled = Word("uh", vowel_start + 0.05, vowel_start + 0.2, 0.3, is_filler=True)
    words = [before, spelled, after]
    assert _passes(pcm, candidate, words, words, loose=[], speech=speech)
    # The sound checks still apply: a short candidate on the voiced edge of a word is kept.
    edge = Word("uh", vowel_end - 0.2, vowel_end, 0.9, is_filler=True)
    touching = [before, spelled, Word("oh", vowel_end + 0.01, after.end_s)]
    assert not _passes(pcm, edge, touching, touching, loose=[], speech=speech)

"""The checks a filler candidate passes before its audio is cut.

:func:`pod_audio.fillers.fillers_between_words` finds hesitations in the stretches between
the aligned words of a chunk. Each candidate then has to pass every check here, and when one
is unsure the audio stays:

- :func:`with_dropped_words`: speech the recogniser left out is recognised on its own first,
  so a dropped sentence is not searched for fillers;
- :func:`spoken`: the voice activity detector hears it as speech (not music or a hum);
- :func:`neighbours_look_right`: the words next to it are aligned plausibly (not squeezed, not
  displaced from where the recogniser heard them), unless a pause sets them apart from it;
- :func:`word_edge`: it is not the voiced edge (by the word's pronunciation) of the word it
  touches;
- :func:`part_of_a_word`: its sound does not begin on a consonant, and it is not the vowel
  of a word the aligner squeezed onto its consonant;
- :func:`fits_local_alignment`: it still lies between the words when the few words around
  it are aligned again on their own;
- :func:`missed_words`: asked again about the stretch around it (with a short context and,
  where it hears a word, with a longer one), the recogniser hears no word there that the
  transcript lacks, and cutting it out takes no word of the transcript.

Times are seconds from the chunk's first sample; audio is 16 kHz mono ``int16``.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from pod_audio import pronunciations
from pod_audio.align import (
    align_with_hesitations,
    align_words,
    dictionary_tokens,
    frame_levels_db,
    is_displaced,
    quiet_level_db,
)
from pod_audio.dsp import SAMPLE_RATE, runs
from pod_audio.fillers import MAX_WORD_OVERLAP_S
from pod_audio.intervals import intersect
from pod_audio.transcript import Word, canonical_filler
from pod_audio.vad import speech_spans

if TYPE_CHECKING:
    from pod_audio.asr import Recogniser

__all__ = [
    "cut_out",
    "cut_takes_a_word",
    "fits_local_alignment",
    "missed_words",
    "neighbours_look_right",
    "part_of_a_word",
    "set_apart",
    "sounds_in",
    "spoken",
    "uncovered_speech",
    "with_dropped_words",
    "word_between",
    "word_edge",
    "words_there",
]

FRAME_SAMPLES = 160
"""10 ms at 16 kHz: the frame of the level analysis."""
_FRAMES_PER_S = SAMPLE_RATE // FRAME_SAMPLES
_SILENCE_DBFS = -55.0
"""Below this RMS level a 10 ms frame holds no speech."""

_DROPPED_MIN_SPEECH_S = 0.8
"""Speech this long that no recognised word covers is recognised again on its own."""
_DROPPED_REACH_S = 0.3
"""A recognised word covers the speech this far on each side of its (rough) span."""
_SPEECH_ABOVE_FLOOR_DB = 12.0
_REHEARD_WINDOW_S = 1.0
"""The recogniser's words within this of a stretch heard again may be what it re-hears."""


def with_dropped_words(
    pcm: np.ndarray, heard: list[Word], placed: Sequence[Word], recogniser: Recogniser
) -> list[Word]:
    """``heard`` (the recogniser's words) plus the words of any stretch of speech it left
    out, judged by where the aligned words were ``placed``. A word the aligner could not
    place does not count: the recogniser's time for it is a guess (a misheard "first..."
    stretched over a pause and the words after it).

    Whisper now and then ends a window early and drops a whole sentence ("thanks for
    listening and see you" for a chunk that goes on for another six seconds). The words
    would be lost, and the speech left between the transcript's words would be searched
    for fillers. Each stretch farther than 0.3 s from every placed word that holds at
    least 0.8 s of speech (frames 12 dB above the chunk's noise floor) is recognised again
    on its own, and its words join the transcript in time order.

    Loud is not spoken: music after the last word is as loud as speech, and heard again
    on its own it gave "Thank you." So only the parts of a stretch that the voice activity
    detector (:func:`pod_audio.vad.speech_spans`) hears as speech, 0.8 s of it or more,
    are recognised again (from its first moment of speech to its last).

    A stretch is also left uncovered when the aligner could not place words the
    recogniser did write (speech under steady noise): heard again, it gives those words a
    second time ("can can do do for for"), and now and then one more misheard at its edge.
    So the words heard again are matched, in order, with the words the recogniser wrote
    there (their rough spans within 1 s of the stretch); a stretch at least half of whose
    words match is those words, unplaced, and adds nothing; otherwise its unmatched words
    are new (a filler "Uh," heard before a sentence the recogniser dropped among them).
    """
    stretches = uncovered_speech(pcm, placed)
    if not stretches:
        return heard
    stretches = _spoken_parts(stretches, speech_spans(pcm))
    if not stretches:
        return heard
    new: list[Word] = []
    for lo_s, hi_s in stretches:
        again = recogniser.recognise(pcm[_sample(lo_s) : _sample(hi_s)] / 32768.0)
        near = lo_s - _REHEARD_WINDOW_S, hi_s + _REHEARD_WINDOW_S
        written = [h for h in heard if h.end_s > near[0] and h.start_s < near[1]]
        new += _new_words([w.shifted(lo_s) for w in again], written)
    return sorted([*heard, *new], key=lambda w: w.start_s)


def _new_words(again: Sequence[Word], written: Sequence[Word]) -> list[Word]:
    """The words of ``again`` (a stretch heard a second time) that ``written`` (the
    recogniser's words there) lacks; none when at least half of them match."""
    matcher = difflib.SequenceMatcher(
        a=[tuple(dictionary_tokens(w.text)) for w in again],
        b=[tuple(dictionary_tokens(w.text)) for w in written],
        autojunk=False,
    )
    matched = {i for a, _b, size in matcher.get_matching_blocks() for i in range(a, a + size)}
    if 2 * len(matched) >= len(again):
        return []
    return [w for i, w in enumerate(again) if i not in matched]


def _spoken_parts(
    stretches: Sequence[tuple[float, float]], speech: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Each of ``stretches`` trimmed to its first and last moment of ``speech``, when at
    least :data:`_DROPPED_MIN_SPEECH_S` of it is speech (a stretch is heard whole: a
    sentence heard in pieces is heard worse)."""
    out: list[tuple[float, float]] = []
    for lo, hi in stretches:
        parts = intersect(speech, lo, hi)
        if sum(p_hi - p_lo for p_lo, p_hi in parts) >= _DROPPED_MIN_SPEECH_S:
            out.append((parts[0][0], parts[-1][1]))
    return out


def uncovered_speech(pcm: np.ndarray, words: Sequence[Word]) -> list[tuple[float, float]]:
    """Stretches ``(start_s, end_s)`` of speech that no word of ``words`` comes near: within
    each stretch of audio farther than 0.3 s from every word, the span from its first to its
    last speech frame, when it holds at least 0.8 s of speech."""
    n = len(pcm) // FRAME_SAMPLES
    if n == 0:
        return []
    level_db = frame_levels_db(pcm[: n * FRAME_SAMPLES].astype(np.float32) / 32768.0)
    floor_db = float(np.percentile(level_db, 10))
    speech = level_db > max(floor_db + _SPEECH_ABOVE_FLOOR_DB, _SILENCE_DBFS)
    covered = np.zeros(n, dtype=bool)
    reach = round(_DROPPED_REACH_S * _FRAMES_PER_S)
    for w in words:
        lo = max(0, round(w.start_s * _FRAMES_PER_S) - reach)
        covered[lo : round(w.end_s * _FRAMES_PER_S) + reach] = True
    stretches: list[tuple[float, float]] = []
    for lo, hi in zip(*(edge.tolist() for edge in runs(~covered))):
        spoken = np.flatnonzero(speech[lo:hi])
        if len(spoken) >= _DROPPED_MIN_SPEECH_S * _FRAMES_PER_S:
            first, last = lo + int(spoken[0]), lo + int(spoken[-1]) + 1
            stretches.append((max(lo, first - reach) / _FRAMES_PER_S, min(hi, last + reach) / _FRAMES_PER_S))
    return stretches


_LOCAL_WORDS = 3
"""Words on each side of a filler candidate that are aligned again around it."""
_MIN_WORD_S = 0.06
_MIN_PHONE_S = 0.03
"""An aligned word shorter than 60 ms, or than 30 ms per sound (up to six), was squeezed."""
_NEIGHBOURS = 1
"""Words on each side of a candidate whose alignment judges it: the one next to it."""
_APART_PAUSE_S = 0.3
"""A run of quiet frames this long between a neighbour and the candidate sets them apart."""


def _pause_between(quiet: np.ndarray, word: Word, filler: Word) -> bool:
    """Whether ``quiet`` (per 10 ms frame) holds a run of :data:`_APART_PAUSE_S` between
    ``word`` and ``filler``."""
    lo, hi = (word.end_s, filler.start_s) if word.end_s <= filler.start_s else (filler.end_s, word.start_s)
    between = quiet[round(lo * _FRAMES_PER_S) : round(hi * _FRAMES_PER_S)]
    return _has_run(between, round(_APART_PAUSE_S * _FRAMES_PER_S))


def _quiet_frames(pcm: np.ndarray) -> np.ndarray:
    """Per 10 ms frame of a chunk (at least one frame long), whether it holds only
    background: under :func:`pod_audio.align.quiet_level_db`."""
    n = len(pcm) // FRAME_SAMPLES
    level_db = frame_levels_db(pcm[: n * FRAME_SAMPLES].astype(np.float32) / 32768.0)
    return level_db < quiet_level_db(level_db)


_SPOKEN_FRACTION = 0.5


def spoken(filler: Word, speech: Sequence[tuple[float, float]]) -> bool:
    """Whether more than half of a candidate lies in ``speech`` (the chunk's stretches of
    speech by :func:`pod_audio.vad.speech_spans`, sorted and disjoint).

    A hesitation is said: every filler of the bench's sets, paused ones included, lies
    wholly inside the detector's speech. A tune's notes, a hum or a ringing phone are as
    steady as a held "hmm" and pass the acoustic checks, but are not speech; cut as fillers,
    a 4 s musical bridge between two sentences was taken out of the episode."""
    inside = sum(hi - lo for lo, hi in intersect(speech, filler.start_s, filler.end_s))
    return inside > _SPOKEN_FRACTION * filler.duration_s


def neighbours_look_right(
    filler: Word, words: Sequence[Word], heard: Sequence[Word], pcm: np.ndarray | None = None
) -> bool:
    """Whether the words next to a filler candidate sit where they plausibly should.

    A candidate next to a squeezed word (aligned to less than 60 ms, or 30 ms per sound
    it is said with, :func:`sounds_in`: "the" on 40 ms, "back" on 80) or next to a word
    aligned more than 0.6 s away from where the recogniser heard it lies where the
    alignment went wrong: the sound in the "gap" is most likely that word's. Only the
    words right before and after the candidate judge it: a squeezed word farther away
    left its sound in its own gap, not in this one. ``heard`` is the recogniser's own
    words and times, in the same order as ``words``.

    With the chunk's audio (``pcm``), a neighbour that a pause of 0.3 s or more sets apart
    from the candidate does not judge it: "pipeline. [pause] um [pause] The first", with
    "The" squeezed onto the end of "pipeline", says nothing about the "um" across the
    pause. Whether the candidate is itself a slowly said word is left to the checks on its
    sound and to the recogniser (:func:`part_of_a_word`, :func:`missed_words`).
    """
    index = next((i for i, w in enumerate(words) if w.start_s >= filler.end_s - 1e-6), len(words))
    quiet: np.ndarray | None = None  # read from the audio only when a neighbour looks wrong
    for i in range(max(0, index - _NEIGHBOURS), min(len(words), index + _NEIGHBOURS)):
        word, rough = words[i], heard[i]
        if word.is_filler:
            continue
        shortest_s = max(_MIN_WORD_S, _MIN_PHONE_S * sounds_in(word.text))
        # Rounded to the millisecond: a word aligned to exactly 60 ms is not under 60 ms.
        squeezed = round(word.duration_s, 3) < round(shortest_s, 3)
        if not (squeezed or is_displaced(word, rough)):
            continue
        if pcm is None or len(pcm) < FRAME_SAMPLES:
            return False
        if quiet is None:
            quiet = _quiet_frames(pcm)
        if not _pause_between(quiet, word, filler):
            return False
    return True


def sounds_in(text: str) -> int:
    """The fewest sounds the written word ``text`` is said with (its shortest variant in the
    dictionary, its letters where the dictionary lacks it), at most six."""
    count = 0
    for token in dictionary_tokens(text):
        variants = _pronunciations(token)
        count += min(map(len, variants)) if variants else sum(ch.isalpha() for ch in token)
    return min(count, 6)


def _pronunciations(token: str) -> list[list[str]]:
    """The phones of each of ``token``'s pronunciations in CMUdict (none if it lacks it)."""
    return [line.decode().split()[1:] for line in pronunciations.entries(token)]


_EDGE_TOUCH_S = 0.03
_EDGE_MAX_S = 0.25
"""A candidate shorter than this that touches a word is within the alignment's error of it."""
_VOICED_LETTERS = frozenset("aeiouylrmnw")
_VOICED_PHONES = frozenset(
    "AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW L R M N NG W Y".split()
)
"""CMUdict phones with no sharp onset or end: the vowels and the sonorant consonants."""


def word_edge(filler: Word, words: Sequence[Word]) -> bool:
    """Whether a short candidate is more likely the voiced edge of the word it touches.

    Aligned word boundaries are off by up to about 150 ms (95th percentile, measured), and
    most of all at a vowel or other voiced sound, which has no sharp onset: the "ur" of
    "urban" left outside the aligned word looks like a short "uh", the "n" of a drawn-out
    "know" like a "hmm". A candidate under 0.25 s that touches (within 30 ms) a word whose
    touching sound is voiced (a vowel, or l, m, n, ng, r, w, y) is kept as audio. The sound
    is the word's pronunciation in the dictionary, any of its variants ("know" starts on
    "n", "one" on "w", "hour" on a vowel); a word the dictionary lacks is judged by its
    letters.
    """
    if filler.duration_s >= _EDGE_MAX_S:
        return False
    for word in words:
        if word.is_filler:
            continue
        if abs(word.end_s - filler.start_s) <= _EDGE_TOUCH_S and _voiced_edge(word.text, last=True):
            return True
        if abs(filler.end_s - word.start_s) <= _EDGE_TOUCH_S and _voiced_edge(word.text, last=False):
            return True
    return False


def _voiced_edge(text: str, *, last: bool) -> bool:
    """Whether the first (or ``last``) sound of the written word ``text`` is voiced."""
    tokens = dictionary_tokens(text)
    if not tokens:
        return False
    token = tokens[-1] if last else tokens[0]
    variants = _pronunciations(token)
    if any(variants):
        return any(phones and phones[-1 if last else 0] in _VOICED_PHONES for phones in variants)
    letters = [ch for ch in token if ch.isalpha()]
    return bool(letters) and letters[-1 if last else 0] in _VOICED_LETTERS


def part_of_a_word(pcm: np.ndarray, filler: Word, words: Sequence[Word]) -> bool:
    """Whether the candidate's sound shows it to be part of a word the aligner misplaced.

    When the aligner puts a slowly said word on the start of the next one ("the" on the
    "a" of "answer"), or squeezes it onto its last consonant (the "v" of a drawn-out "of"),
    the word's vowel is left in a gap and looks like a filler. Its sound gives it away:

    - **a consonant onset**: a filler starts on its vowel, or rises through the "m" of
      "hmm" in a steady ramp; a sound that rises out of quiet onto a level shelf (within
      6 dB) at least 8 dB under its own body and holds it for 50 ms or more before the body
      (the "th" of a slow "the": 60-180 ms at 8-15 dB under its vowel) began with a
      consonant, so it is a word;
    - **a word without its vowel**: a word the candidate runs into with no quiet between
      them, whose aligned sound stays (median of its frames above the background) at least
      10 dB under the candidate's body, holds only a consonant of that word, and the
      candidate is its vowel.

    Either way the audio stays.
    """
    n = len(pcm) // FRAME_SAMPLES
    lo = round(filler.start_s * _FRAMES_PER_S)
    hi = min(n, round(filler.end_s * _FRAMES_PER_S))
    if hi - lo < 3:
        return False
    level_db = frame_levels_db(pcm[: n * FRAME_SAMPLES].astype(np.float32) / 32768.0)
    quiet_db = quiet_level_db(level_db)
    sound = np.flatnonzero(level_db[lo:hi] >= quiet_db)
    if len(sound) == 0:
        return False
    first = lo + int(sound[0])
    body_db = float(np.percentile(level_db[first:hi], 75))
    if first == 0 or level_db[first - 1] < quiet_db:
        shelf = first
        while shelf < hi and level_db[shelf] < body_db - _ONSET_BELOW_DB:
            shelf += 1
        # The first and the last frame hold the steps onto and off the shelf.
        held = level_db[first + 1 : shelf - 1]
        if shelf - first >= _ONSET_SHELF_FRAMES and float(np.ptp(held)) <= _SHELF_RANGE_DB:
            return True
    for word in words:
        if word.is_filler:
            continue
        start, end = round(word.start_s * _FRAMES_PER_S), round(word.end_s * _FRAMES_PER_S)
        if abs(word.start_s - filler.end_s) <= _EDGE_TOUCH_S:
            join = level_db[min(hi, start) : max(hi, start)]
        elif abs(filler.start_s - word.end_s) <= _EDGE_TOUCH_S:
            join = level_db[min(lo, end) : max(lo, end)]
        else:
            continue
        if np.any(join < quiet_db):
            continue  # quiet between them: a word of its own
        span = level_db[start:end]
        span = span[span >= quiet_db]
        if len(span) and float(np.median(span)) < body_db - _VOWEL_LESS_DB:
            return True
    return False


_ONSET_SHELF_FRAMES = 5
_ONSET_BELOW_DB = 8.0
_SHELF_RANGE_DB = 6.0
_VOWEL_LESS_DB = 10.0


def fits_local_alignment(
    pcm: np.ndarray, filler: Word, words: Sequence[Word], *, hesitations: bool = False
) -> bool:
    """Whether ``filler`` still lies between the words when only the few words around it
    are force-aligned again, on their own stretch of audio.

    Aligning a whole chunk can drift where the recogniser left something out (a filler
    it did not write, a word it dropped): a word is then squeezed and the rest of its
    sound left in a "gap". Re-aligned locally, the words settle on their own sound; a
    candidate that now overlaps one of them by more than 40 % of its length was that word.
    With ``hesitations`` (a candidate only the alignment with hesitations shows) the words
    are aligned again that way too. (A candidate on which the recogniser wrote a filler
    itself is not asked: :func:`pod_audio.filler_search._passes`.)
    """
    lexical = [w for w in words if not w.is_filler]
    before = [w for w in lexical if w.end_s <= filler.start_s + 1e-6][-_LOCAL_WORDS:]
    after = [w for w in lexical if w.start_s >= filler.end_s - 1e-6][:_LOCAL_WORDS]
    lo_s = before[0].start_s - 0.3 if before else 0.0
    hi_s = after[-1].end_s + 0.3 if after else len(pcm) / SAMPLE_RATE
    lo_s, hi_s = max(0.0, lo_s), min(len(pcm) / SAMPLE_RATE, hi_s)
    lo = int(lo_s * SAMPLE_RATE)
    text = [*before, *after]
    align = align_with_hesitations if hesitations else align_words
    local = align(pcm[lo : int(hi_s * SAMPLE_RATE)], [w.shifted(-lo_s) for w in text])
    if not local.fully_aligned:
        return False
    start, end = filler.start_s - lo_s, filler.end_s - lo_s
    covered = sum(max(0.0, min(end, w.end_s) - max(start, w.start_s)) for w in local.words)
    return covered <= 0.4 * (end - start)


_APART_FRAMES = 3
"""Quiet frames in a row (30 ms) that set a hesitation apart from the word next to it."""


def set_apart(pcm: np.ndarray, filler: Word, loose: Sequence[Word]) -> bool:
    """Whether quiet sets a candidate apart from the words next to it, as the alignment with
    hesitations (:func:`pod_audio.align.align_with_hesitations`) placed them (``loose``).

    That alignment's hesitation slots take a filler the plain alignment stretched a word
    over, and also the held end of a drawn-out word ("sooo", a slow "the"): voiced sound
    that runs on from the word without a break. So a candidate that only this alignment
    shows must have at least 30 ms of quiet (frames under the chunk's background level)
    between its middle and the sound of each word within 0.3 s of it; a filler after a
    breath or a pause has, a held vowel has not, and then the audio stays.
    """
    if len(pcm) // FRAME_SAMPLES < 3:
        return False
    quiet = _quiet_frames(pcm)
    centre = round((filler.start_s + filler.end_s) / 2 * _FRAMES_PER_S)
    for word in loose:
        if word.is_filler:
            continue
        if word.end_s <= filler.start_s + MAX_WORD_OVERLAP_S and word.end_s > filler.start_s - _NEAR_WORD_S:
            between = quiet[round(word.end_s * _FRAMES_PER_S) : centre]
        elif word.start_s >= filler.end_s - MAX_WORD_OVERLAP_S and word.start_s < filler.end_s + _NEAR_WORD_S:
            between = quiet[centre : round(word.start_s * _FRAMES_PER_S)]
        elif min(word.end_s, filler.end_s) - max(word.start_s, filler.start_s) > MAX_WORD_OVERLAP_S:
            return False  # the word lies on the candidate
        else:
            continue
        if not _has_run(between, _APART_FRAMES):
            return False
    return True


_NEAR_WORD_S = 0.3


def _has_run(flags: np.ndarray, length: int) -> bool:
    """Whether ``flags`` holds ``length`` true values in a row."""
    starts, ends = runs(np.asarray(flags, dtype=bool))
    return bool(np.any(np.asarray(ends) - np.asarray(starts) >= length))


_RECHECK_CONTEXTS_S = (1.5, 3.0)
"""Audio on each side of a filler candidate that is recognised again with it: the first,
and where a word is heard there, the second."""


_RECHECK_GAP_S = 1.5
"""Near-silence between two candidates' stretches when they are recognised together."""
_RECHECK_WINDOW_S = 29.0


def missed_words(
    pcm: np.ndarray,
    found: Sequence[Word],
    words: Sequence[Word],
    recogniser: Recogniser,
    *,
    spelled: Sequence[bool] | None = None,
) -> list[bool]:
    """For each filler candidate, whether the recogniser, asked again about the stretch
    around it, says a word is there: the candidate is then kept as audio. ``spelled``
    says, for each, whether the recogniser itself wrote a hesitation on it
    (:func:`words_there`).

    The recogniser is asked about the candidate with 1.5 s of context on each side
    (:func:`words_there`), and where it says a word is there, asked again with 3 s: a word
    is there when both say so. What tiny.en hears in a few seconds of speech varies with
    the context it is given ("and" heard as "end", "about" as "somehow", a word dropped at
    the stretch's edge), and a filler turned down by a mishearing of one stretch alone is
    a filler lost; a word really there is heard with either context. (The drawn-out
    function words a wider context alone lets through, their vowel cut, are caught before
    this check: :func:`part_of_a_word`, :func:`word_edge`.)
    """
    spelled = list(spelled) if spelled is not None else [False] * len(found)
    there = list(range(len(found)))
    for context_s in _RECHECK_CONTEXTS_S:
        if not there:
            break
        heard = words_there(
            pcm,
            [found[i] for i in there],
            words,
            recogniser,
            context_s=context_s,
            spelled=[spelled[i] for i in there],
        )
        there = [i for i, word_there in zip(there, heard) if word_there]
    return [i in there for i in range(len(found))]


def words_there(
    pcm: np.ndarray,
    found: Sequence[Word],
    words: Sequence[Word],
    recogniser: Recogniser,
    *,
    context_s: float = 1.5,
    spelled: Sequence[bool] | None = None,
) -> list[bool]:
    """For each filler candidate, whether the recogniser hears a word there in the stretch
    of the candidate with ``context_s`` of audio on each side.

    Each candidate's stretch is recognised twice, as it is and with the candidate cut out.
    A word is there when

    - the stretch as it is holds a lexical word, between the transcript's words before and
      after the candidate, that the transcript lacks (a recogniser sometimes drops a word,
      a drawn-out "too" at the end of a sentence, say, whose vowel then looks like a
      filler in the gap it leaves); or
    - cutting the candidate out takes away a word of the transcript that the stretch as it
      is was heard to hold: the cut would change the words, whatever the alignment said (a
      slow "the" that the aligner put on the end of the word before it, leaving its own
      sound in a "gap").

    Where the recogniser itself wrote a hesitation on the candidate (``spelled``), only the
    second counts. The first stands in for a word the transcript left out, and there the
    transcript did not leave the sound out: it wrote it as a hesitation. Heard in a few
    seconds alone, a hesitation comes back as a word as often as not ("you should always
    ah back up" heard as "you should go away and back up"), with the hesitation's sound
    cut out as well as with it; a word written as "uh" is still caught by the second,
    since cutting it changes what is heard.

    The stretches of one chunk are recognised together, laid end to end with 1.5 s of near
    silence between them, one recogniser window (30 s) at a time.
    """
    spelled = list(spelled) if spelled is not None else [False] * len(found)
    duration_s = len(pcm) / SAMPLE_RATE
    spans = [(max(0.0, f.start_s - context_s), min(duration_s, f.end_s + context_s)) for f in found]
    as_is = [pcm[_sample(lo) : _sample(hi)] for lo, hi in spans]
    without = [cut_out(pcm, f, span) for f, span in zip(found, spans)]
    # Separate passes: a window holding both versions of a stretch hears the same words
    # twice, and the recogniser drops or loops on repeated text.
    heard_as_is = _recognise_pieces(as_is, recogniser)
    heard_without = _recognise_pieces(without, recogniser)
    return [
        (not spelled[i] and word_between(filler, words, [t for t, _ in heard_as_is[i]], span))
        or cut_takes_a_word(
            heard_as_is[i],
            heard_without[i],
            cut_s=(filler.start_s - span[0], filler.end_s - span[0]),
            said=_tokens_within(words, span),
        )
        for i, (filler, span) in enumerate(zip(found, spans))
    ]


_CROSSFADE_S = 0.01
_NEAR_CUT_S = 0.75
"""Heard words centred this close to a candidate are compared with and without it."""


def _sample(t_s: float) -> int:
    return int(t_s * SAMPLE_RATE)


def cut_out(pcm: np.ndarray, filler: Word, span: tuple[float, float]) -> np.ndarray:
    """The stretch ``span`` of ``pcm`` with ``filler`` removed (a 10 ms crossfade at the join)."""
    head = pcm[_sample(span[0]) : _sample(filler.start_s)].astype(np.float32)
    tail = pcm[_sample(filler.end_s) : _sample(span[1])].astype(np.float32)
    fade = min(_sample(_CROSSFADE_S), len(head), len(tail))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        tail[:fade] = head[-fade:] * (1.0 - ramp) + tail[:fade] * ramp
        head = head[:-fade]
    return np.concatenate([head, tail])


Heard = list[tuple[str, float]]
"""Lexical tokens heard in a piece of audio, each with its word's centre (s from the start)."""


def cut_takes_a_word(
    as_is: Heard, without: Heard, *, cut_s: tuple[float, float], said: Sequence[str]
) -> bool:
    """Whether cutting ``cut_s`` (seconds within a stretch) out of the stretch changes the
    words the recogniser hears next to the cut.

    ``said`` is the transcript's tokens in the stretch, in order. Near the cut means a
    token centred within 0.75 s of it in the stretch as it is. The cut takes or garbles a
    word when, near the cut,

    - a word of the transcript heard in the stretch as it is is no longer heard once the
      candidate is cut out; or
    - any token heard as it is is deleted, or heard as something else, once the candidate
      is cut out: a short stretch heard alone is often misheard ("leh" for a slow "the"),
      and a misheard word that the cut deletes is still a word. The one exception is an
      edit that *mends* the hearing: the tokens heard instead match more words of the
      transcript than those they replace (tiny.en hears "why are you a country" in 3 s of
      audio and "what your country" once the filler is cut): the cut took nothing there.

    Edits farther from the cut are the recogniser's noise (a word at the stretch's edge,
    "what's" heard as "what"), not the cut's doing.
    """
    near_lo, near_hi = cut_s[0] - _NEAR_CUT_S, cut_s[1] + _NEAR_CUT_S

    def near(position: int) -> bool:
        return near_lo <= as_is[position][1] <= near_hi

    said_before = _said_positions(said, as_is)
    said_after = _said_positions(said, without)
    if any(near(p) for i, p in said_before.items() if i not in said_after):
        return True
    said_set = set(said)

    def in_transcript(heard: Heard, matched: dict[int, int]) -> set[int]:
        # Heard in the transcript's order, or as a near spelling of one of its words
        # ("ask" where Whisper wrote "as"): the same word, heard better.
        return set(matched.values()) | {
            p for p, (t, _) in enumerate(heard)
            if t not in said_set and any(_near_spelling(t, s) for s in said_set)
        }

    in_transcript_before = in_transcript(as_is, said_before)
    in_transcript_after = in_transcript(without, said_after)
    matcher = difflib.SequenceMatcher(
        a=[t for t, _ in as_is], b=[t for t, _ in without], autojunk=False
    )
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag not in ("delete", "replace") or not any(near(p) for p in range(a0, a1)):
            continue
        before = sum(p in in_transcript_before for p in range(a0, a1))
        after = sum(p in in_transcript_after for p in range(b0, b1))
        if tag == "replace" and after > before:
            continue  # the cut mended what the stretch alone was misheard as
        return True
    return False


def _near_spelling(a: str, b: str) -> bool:
    """Whether two different tokens are one word heard a little differently: one is the
    other with one letter added at its end ("as" and "ask"), both at least two letters
    long."""
    short, long_ = sorted((a, b), key=len)
    return len(short) >= 2 and long_.startswith(short) and len(long_) - len(short) == 1


def _said_positions(said: Sequence[str], heard: Heard) -> dict[int, int]:
    """Which of the ``said`` tokens the recogniser heard: said index -> position in
    ``heard`` (the equal blocks of the two token sequences)."""
    matcher = difflib.SequenceMatcher(a=list(said), b=[t for t, _ in heard], autojunk=False)
    return {
        a0 + k: b0 + k
        for tag, a0, a1, b0, _ in matcher.get_opcodes()
        if tag == "equal"
        for k in range(a1 - a0)
    }


def _tokens_within(words: Sequence[Word], span: tuple[float, float]) -> list[str]:
    """The transcript's lexical tokens of the words that overlap ``span``, in order."""
    return [
        token
        for w in words
        if not w.is_filler and w.end_s > span[0] and w.start_s < span[1]
        for token in dictionary_tokens(w.text)
    ]


def _recognise_pieces(pieces: Sequence[np.ndarray], recogniser: Recogniser) -> list[Heard]:
    """The lexical tokens the recogniser hears in each piece of 16 kHz ``int16`` audio,
    with their words' centres in seconds from the piece's start.

    Pieces are laid end to end with 1.5 s of near silence between them, up to one
    recogniser window (29 s) at a time; a word belongs to the piece its centre lies in
    (give or take 0.5 s).
    """
    heard: list[Heard] = [[] for _ in pieces]
    gap = np.random.default_rng(0).normal(0, 3.0, _sample(_RECHECK_GAP_S)).astype(np.float32)

    def recognise(batch: list[int]) -> None:
        audio, offsets, position = [], [], 0
        for i in batch:
            offsets.append((position / SAMPLE_RATE, (position + len(pieces[i])) / SAMPLE_RATE))
            audio += [pieces[i].astype(np.float32), gap]
            position += len(pieces[i]) + len(gap)
        for w in recogniser.recognise(np.concatenate(audio) / 32768.0):
            centre = (w.start_s + w.end_s) / 2
            for i, (lo_s, hi_s) in zip(batch, offsets):
                if lo_s - 0.5 <= centre <= hi_s + 0.5:
                    if canonical_filler(w.text.strip(".,!?;:")) is None:
                        heard[i] += [(t, centre - lo_s) for t in dictionary_tokens(w.text)]
                    break

    batch: list[int] = []
    length_s = 0.0
    for i, piece in enumerate(pieces):
        piece_s = len(piece) / SAMPLE_RATE
        if batch and length_s + piece_s > _RECHECK_WINDOW_S:
            recognise(batch)
            batch, length_s = [], 0.0
        batch.append(i)
        length_s += piece_s + _RECHECK_GAP_S
    if batch:
        recognise(batch)
    return heard


def word_between(
    filler: Word, words: Sequence[Word], heard: list[str], span: tuple[float, float]
) -> bool:
    lo_s, hi_s = span
    lexical = [w for w in words if not w.is_filler and w.end_s > lo_s and w.start_s < hi_s]
    before = [t for w in lexical if w.end_s <= filler.start_s for t in dictionary_tokens(w.text)]
    after = [t for w in lexical if w.start_s >= filler.end_s for t in dictionary_tokens(w.text)]
    # Heard tokens that fall between "before" and "after": inserted right at the boundary,
    # or more tokens than were replaced in an edit that touches it. (Edits away from the
    # boundary come from words cut at the stretch's edges.)
    boundary = len(before)
    matcher = difflib.SequenceMatcher(a=[*before, *after], b=heard, autojunk=False)
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag == "insert" and a0 == boundary:
            return True
        if tag == "replace" and a0 <= boundary <= a1 and (b1 - b0) > (a1 - a0):
            return True
    return False

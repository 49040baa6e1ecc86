"""Acoustic detection of hesitation fillers ("um", "uh", "er", "ah", "hmm").

Pocketsphinx's language model almost never emits a filler as a word: it spells it as a short
real word ("ah", "bomb", "the"), as ``[SPEECH]``, or merges it into a neighbour. What sets a
filler apart acoustically is that it is a *sustained* voiced sound: one vowel or nasal held for
a quarter to half a second with a steady spectrum, where words change their spectrum every
50-100 ms. :func:`detect_fillers` works on one chunk of 16 kHz mono audio:

1. Frame features every 10 ms (:func:`frame_features`): level, voicing and pitch (normalised
   cross-correlation), zero-crossing rate and a noise-robust spectral flux (cepstral distance
   over 20 ms of a log-mel spectrum floored at the noise level).
2. Steadiness: the flux averaged over 150 ms, divided by its median over the chunk's voiced
   speech.
3. Candidates (:func:`find_candidates`): runs of steady voiced sound grown over their onset
   and decay, plus the segments the recogniser labelled as a filler word or ``[SPEECH]``;
   only voiced stretches of 0.12-1.2 s within 20 dB of the speech level are kept.
4. Each candidate gets a feature vector (:data:`FEATURE_NAMES`: steadiness, voicing, pitch
   movement, fricative noise, pauses around it, what the recogniser and pocketsphinx's phone
   loop put there) and a logistic score; candidates scoring at least
   :data:`DEFAULT_THRESHOLD` are fillers (segments the recogniser spelled as a filler need
   :data:`CONFIRM_THRESHOLD`), the best of overlapping ones wins, and a found filler is
   widened to a pause less than 0.25 s away.
5. :func:`apply_fillers` puts them into the chunk's words.

The weights were fitted with ``bench/filler_eval.py --fit`` on the tuning sets (synthetic
speech, and real speech with synthetic fillers); ``docs/fillers.md`` has the method and the
precision and recall measured on held-out sets.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pod_audio.dsp import SAMPLE_RATE, as_int16
from pod_audio.filler_candidates import (
    FEATURE_NAMES,
    MIN_CANDIDATE_S,
    Candidate,
    candidate_features,
    find_candidates,
    grow_to_pauses,
    label_filler,
    overlap,
    phone_segments,
    phones_around,
    score_features,
    spelled_filler,
)
from pod_audio.filler_frames import HOP, WIN, FrameFeatures, frame_features
from pod_audio.transcript import Word, canonical_filler

__all__ = [
    "CONFIRM_THRESHOLD",
    "DEFAULT_THRESHOLD",
    "MAX_WORD_OVERLAP_S",
    "CandidateTable",
    "apply_fillers",
    "candidate_table",
    "detect_fillers",
    "fillers_between_words",
    "flag_spelled_filler",
    "join_touching_fillers",
    "merge_fillers",
]

DEFAULT_THRESHOLD = 0.5
"""Logistic score from which a candidate counts as a filler."""
CONFIRM_THRESHOLD = 0.15
"""Lower score that confirms a segment the recogniser itself spelled as a filler. Below it
the recogniser's "ah" is taken for a misheard short word (in clean speech it mostly is: the
"so" of "and so my fellow Americans", say) and dropped rather than cut from the audio."""


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class CandidateTable:
    """Everything :func:`detect_fillers` scores for one chunk.

    Attributes:
        candidates: the candidates, in the order of ``vectors``' rows.
        vectors: feature vectors, shape ``(len(candidates), len(FEATURE_NAMES))``.
        phones: the phone loop's segments for the chunk (empty when there is no candidate).
        features: the chunk's frame features (``None`` for audio too short to analyse).
    """

    candidates: tuple[Candidate, ...]
    vectors: np.ndarray
    phones: tuple[Word, ...]
    features: FrameFeatures | None


def candidate_table(
    samples: np.ndarray,
    *,
    segments: Sequence[Word] = (),
    within: Sequence[tuple[float, float]] | None = None,
) -> CandidateTable:
    """Find and describe the filler candidates of one chunk (16 kHz mono, ``int16`` or float).

    With ``within`` (``(start_s, end_s)`` stretches), only candidates overlapping one of them
    are kept, and the phone loop decodes only the audio around those candidates.
    """
    pcm = as_int16(samples)
    no_vectors = np.zeros((0, len(FEATURE_NAMES)))
    if len(pcm) < WIN + 2 * HOP:
        return CandidateTable((), no_vectors, (), None)
    features = frame_features(pcm.astype(np.float32) / 32768.0)
    candidates = find_candidates(features, segments)
    if within is not None:
        candidates = [
            c for c in candidates if any(overlap(lo, hi, c.start_s, c.end_s) > 0 for lo, hi in within)
        ]
    if not candidates:
        return CandidateTable((), no_vectors, (), features)
    phones = phone_segments(pcm) if within is None else phones_around(pcm, candidates)
    vectors = np.array([candidate_features(features, c, segments, phones) for c in candidates])
    return CandidateTable(tuple(candidates), vectors, tuple(phones), features)


def detect_fillers(
    samples: np.ndarray,
    *,
    segments: Sequence[Word] = (),
    sample_rate: int = SAMPLE_RATE,
    threshold: float = DEFAULT_THRESHOLD,
    within: Sequence[tuple[float, float]] | None = None,
) -> list[Word]:
    """Find fillers in one chunk of speech.

    Args:
        samples: 1-D 16 kHz mono audio, ``int16`` or floats in ``[-1, 1]``.
        segments: the recogniser's segments for the same samples (times in seconds from the
            first sample), ``"[SPEECH]"`` included. They add evidence; without them only
            the acoustic candidates are scored.
        sample_rate: must be 16000.
        threshold: score from which a candidate is a filler. Segments the recogniser spelled
            as a filler need only :data:`CONFIRM_THRESHOLD`.

    Returns:
        Filler words (``is_filler=True``, text one of "um", "uh", "er", "ah", "hmm",
        ``confidence`` the detector's score), sorted and not overlapping each other.
    """
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"sample_rate must be {SAMPLE_RATE}, got {sample_rate}")
    table = candidate_table(samples, segments=segments, within=within)
    if not table.candidates or table.features is None:
        return []
    scores = score_features(table.vectors)
    found: list[Word] = []
    for index in np.argsort(-scores, kind="stable"):
        cand = table.candidates[index]
        spelled = cand.source == "recogniser" and spelled_filler(cand, segments) is not None
        if scores[index] < (min(threshold, CONFIRM_THRESHOLD) if spelled else threshold):
            continue
        cand = grow_to_pauses(table.features, cand)
        if any(w.start_s < cand.end_s and cand.start_s < w.end_s for w in found):
            continue
        found.append(
            Word(
                label_filler(cand, table.features, table.phones),
                cand.start_s,
                cand.end_s,
                confidence=round(float(scores[index]), 3),
                is_filler=True,
            )
        )
    return sorted(found, key=lambda w: w.start_s)


MAX_WORD_OVERLAP_S = 0.02
"""A filler never overlaps a recognised non-filler word by more than this (the hard rule)."""
_MIN_KEPT_FRACTION = 0.6
"""A detection clipped to the gap between two words must keep this share of its length;
otherwise most of it lay on a word (a held vowel at a word's end) and it is dropped."""


def flag_spelled_filler(word: Word) -> Word:
    """``word`` with ``is_filler`` set and its text canonical ("Um," -> "um") when the
    recogniser spelled a filler; unchanged otherwise."""
    canonical = canonical_filler(word.text.strip(".,!?;:\"'…-"))
    if canonical is None:
        return word
    return Word(canonical, word.start_s, word.end_s, word.confidence, is_filler=True)


def fillers_between_words(
    samples: np.ndarray,
    words: Sequence[Word],
    *,
    aligned: Sequence[bool] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> list[Word]:
    """Fillers in the stretches between force-aligned words of one chunk.

    The acoustic detector (:func:`detect_fillers`) runs over the chunk with the words as the
    recogniser's segments; each detection is then clipped to the gap between the words
    around it. A detection that keeps less than 60 % of its length after clipping lay
    mostly on a word (a drawn-out "so" before a pause) and is dropped: when unsure, the
    audio stays. Gaps next to a word the aligner could not place are not searched, and a
    gap with more than :data:`MAX_FILLERS_PER_GAP` detections keeps them all (the notes
    of a tune between two sentences).

    Args:
        samples: 1-D 16 kHz mono audio, ``int16`` or floats in ``[-1, 1]``.
        words: the chunk's words in order, times in seconds from the first sample; words
            flagged ``is_filler`` are not protected.
        aligned: per word, whether its span is trustworthy (default: all).
        threshold: score from which a candidate is a filler.

    Returns:
        Filler words (``is_filler=True``, ``confidence`` the detector's score), sorted, each
        inside one gap: none overlaps a non-filler word.
    """
    pcm = as_int16(samples)
    flags = list(aligned) if aligned is not None else [True] * len(words)
    gaps = _gaps_between(words, flags, duration_s=len(pcm) / SAMPLE_RATE)
    if not gaps:
        return []
    # Fillers the recogniser spelled are candidates too (confirmed from a lower score).
    found = detect_fillers(pcm, segments=words, threshold=threshold, within=gaps)
    by_gap: dict[tuple[float, float], list[Word]] = {}
    for filler in found:
        best = max(gaps, key=lambda g: overlap(g[0], g[1], filler.start_s, filler.end_s))
        start, end = max(filler.start_s, best[0]), min(filler.end_s, best[1])
        if end - start < MIN_CANDIDATE_S or end - start < _MIN_KEPT_FRACTION * filler.duration_s:
            continue
        by_gap.setdefault(best, []).append(
            Word(filler.text, round(start, 3), round(end, 3), filler.confidence, True)
        )
    # A pause holds a hesitation or two ("um... uh"); a stretch between words with more
    # steady sounds than that is music, a sung line or a ringing phone, and stays whole.
    out = [f for in_gap in by_gap.values() if len(in_gap) <= MAX_FILLERS_PER_GAP for f in in_gap]
    return sorted(out, key=lambda w: w.start_s)


def _gaps_between(
    words: Sequence[Word], aligned: Sequence[bool], *, duration_s: float
) -> list[tuple[float, float]]:
    """Stretches between consecutive non-filler words (and the chunk's edges) whose words on
    both sides are aligned, at least a candidate long."""
    gaps: list[tuple[float, float]] = []
    previous_end, previous_ok = 0.0, True
    for word, ok in zip(words, aligned):
        if word.is_filler and ok:
            continue
        if ok and previous_ok and word.start_s - previous_end >= MIN_CANDIDATE_S:
            gaps.append((previous_end, word.start_s))
        previous_end, previous_ok = max(previous_end, word.end_s), ok
    if previous_ok and duration_s - previous_end >= MIN_CANDIDATE_S:
        gaps.append((previous_end, duration_s))
    return gaps


def join_touching_fillers(found: Sequence[Word], words: Sequence[Word]) -> list[Word]:
    """``found`` (fillers, sorted) with every two that nearly touch (at most 100 ms apart,
    no non-filler word of ``words`` between them) joined into one.

    One long hesitation is often found as two: the vowel of an "um" and its "m", or an "uh"
    running into an "er". Cut as two, the sliver between them would stay in the episode
    between two crossfades. Joined, the filler is spelled "um" when its second part is
    nasal ("um", "hmm") and the first is not, as the first part otherwise; its confidence
    is the lower of the two.

    A joined run longer than :data:`MAX_FILLER_S` is no hesitation but a train of steady
    sounds (the notes of a tune between two sentences, joined into one 3.5 s "hmm"): it
    is dropped, and its audio stays.
    """
    out: list[Word] = []
    parts: list[int] = []
    for filler in sorted(found, key=lambda w: w.start_s):
        if out and filler.start_s - out[-1].end_s <= _JOIN_GAP_S and not any(
            not w.is_filler and overlap(w.start_s, w.end_s, out[-1].end_s, filler.start_s) > 0
            for w in words
        ):
            first = out[-1]
            nasal_end = filler.text in _NASAL and first.text not in _NASAL
            out[-1] = Word(
                "um" if nasal_end else first.text, first.start_s, max(first.end_s, filler.end_s),
                min(first.confidence, filler.confidence), True,
            )
            parts[-1] += 1
        else:
            out.append(filler)
            parts.append(1)
    return [f for f, n in zip(out, parts) if n == 1 or f.duration_s <= MAX_FILLER_S]


_JOIN_GAP_S = 0.1
MAX_FILLER_S = 1.5
"""The longest hesitation: the detector's longest candidate (1.2 s) widened to its pauses."""
MAX_FILLERS_PER_GAP = 2
"""Most hesitations one stretch between two words holds ("um... uh")."""
_NASAL = frozenset({"um", "hmm"})


def merge_fillers(words: Sequence[Word], found: Sequence[Word]) -> list[Word]:
    """``words`` with the fillers ``found`` between them.

    A found filler overlapping a filler the recogniser spelled replaces it (the acoustic
    span is the better one). A spelled filler that no found filler confirms stays in the
    words as an ordinary word: it is not cut (the recogniser may have written "uh" for a
    real "a").
    """
    kept: list[Word] = []
    for w in words:
        if w.is_filler:
            if any(overlap(w.start_s, w.end_s, f.start_s, f.end_s) > 0 for f in found):
                continue
            w = Word(w.text, w.start_s, w.end_s, w.confidence, is_filler=False)
        kept.append(w)
    return sorted([*kept, *found], key=lambda w: (w.start_s, w.end_s))


def filler_overlaps(words: Sequence[Word]) -> list[tuple[Word, Word, float]]:
    """Every (filler, non-filler word, seconds of overlap) over :data:`MAX_WORD_OVERLAP_S`."""
    lexical = sorted((w for w in words if not w.is_filler), key=lambda w: w.start_s)
    starts = [w.start_s for w in lexical]
    problems: list[tuple[Word, Word, float]] = []
    for filler in (w for w in words if w.is_filler):
        index = max(0, bisect.bisect_left(starts, filler.start_s) - 1)
        for word in lexical[index:]:
            if word.start_s >= filler.end_s:
                break
            shared_s = overlap(word.start_s, word.end_s, filler.start_s, filler.end_s)
            if shared_s > MAX_WORD_OVERLAP_S:
                problems.append((filler, word, shared_s))
    return problems


def apply_fillers(words: Sequence[Word], found: Sequence[Word]) -> list[Word]:
    """Merge the fillers :func:`detect_fillers` found into a chunk's words.

    A found filler replaces every word whose centre lies inside it (the recogniser's guess for
    the filler: a short made-up word, or its own spelling of the filler) and trims words that
    only overlap it. A word the recogniser spelled as a filler that no found filler covers was
    not confirmed by the detector and is dropped. Returns the words sorted by start time.
    """
    out: list[Word] = []
    for word in words:
        centre = (word.start_s + word.end_s) / 2
        if any(f.start_s <= centre < f.end_s for f in found):
            continue
        if canonical_filler(word.text) is not None:
            continue
        start, end = word.start_s, word.end_s
        for f in found:
            if f.start_s < end and start < f.end_s:
                if f.start_s > start:
                    end = min(end, f.start_s)
                else:
                    start = max(start, f.end_s)
        if end > start:
            out.append(Word(word.text, start, end, word.confidence, word.is_filler))
    out.extend(found)
    return sorted(out, key=lambda w: (w.start_s, w.end_s))



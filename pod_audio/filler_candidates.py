"""Filler candidates of one chunk and how they are scored.

A candidate is a stretch worth scoring: a run of steady voiced sound grown over its onset
and decay, or a segment the recogniser spelled as a filler or ``[SPEECH]``
(:func:`find_candidates`). Each gets a feature vector (:data:`FEATURE_NAMES`) and a logistic
score (:func:`score_features`, weights fitted by ``bench/filler_eval.py --fit``); a found
filler is labelled "um", "uh", "er", "ah" or "hmm" from its sound and pocketsphinx's phone
loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter1d

from pod_audio import search_workers
from pod_audio.dsp import SAMPLE_RATE, runs
from pod_audio.filler_frames import _STEADY_WINDOW, _VOICED, FRAMES_PER_S, FrameFeatures
from pod_audio.phone_loop import phone_segments
from pod_audio.transcript import Word, canonical_filler

__all__ = [
    "FEATURE_NAMES",
    "FEATURE_SIGNS",
    "MIN_CANDIDATE_S",
    "Candidate",
    "candidate_features",
    "find_candidates",
    "grow_to_pauses",
    "label_filler",
    "overlap",
    "phone_segments",
    "phones_around",
    "score_features",
    "spelled_filler",
]

_SPEECH_NOISE = "[SPEECH]"

# Candidates.
_STEADY_SEED = 0.75
"""Relative steadiness below which a frame seeds a candidate (deliberately loose: the
classifier decides)."""
_MERGE_GAP = 10
"""Seed runs this many frames apart or closer are one candidate (the vowel and the "m" of
"um" are each steady, with a change between them)."""
_EDGE_FLUX = 1.5
"""A candidate grows over neighbouring frames whose flux is below this times the median."""
_MAX_EDGE = 20
_MAX_GROW = 25
"""A detected filler grows over at most this many frames of sound to reach a pause."""
_MIN_VOICED_FRACTION = 0.6
_MAX_BELOW_SPEECH_DB = 20.0
"""Candidates quieter than this below the speech level (90th percentile) are breaths."""
MIN_CANDIDATE_S = 0.12
_MAX_CANDIDATE_S = 1.2
_MAX_PAUSE_S = 0.5
_PAUSE_REACH = 12

@dataclass(frozen=True)
class Candidate:
    """A stretch of a chunk that may be a filler; frames ``[start, end)``."""

    start: int
    end: int
    source: str  # "steady", "recogniser"

    @property
    def start_s(self) -> float:
        return self.start / FRAMES_PER_S

    @property
    def end_s(self) -> float:
        return self.end / FRAMES_PER_S


def find_candidates(features: FrameFeatures, segments: Sequence[Word] = ()) -> list[Candidate]:
    """Stretches worth scoring: steady voiced runs and the recogniser's filler-like segments."""
    n = features.n_frames
    voiced_window = uniform_filter1d(
        ((features.voicing > _VOICED) & features.speech).astype(np.float32), _STEADY_WINDOW
    )
    seed = (features.steadiness < _STEADY_SEED) & (voiced_window > 0.7) & features.speech
    merged: list[list[int]] = []
    for start, end in zip(*(edge.tolist() for edge in runs(seed))):
        if merged and start - merged[-1][1] <= _MERGE_GAP:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    candidates: list[Candidate] = []
    for start, end in merged:
        lo, hi = _trim_to_sound(features, *_extend(features, start, end))
        if _plausible(features, lo, hi):
            candidates.append(Candidate(lo, hi, "steady"))
    for seg in segments:
        if seg.text == _SPEECH_NOISE or canonical_filler(seg.text) is not None:
            lo = max(0, int(round(seg.start_s * FRAMES_PER_S)))
            hi = min(n, int(round(seg.end_s * FRAMES_PER_S)))
            lo, hi = _trim_to_sound(features, lo, hi)
            if _plausible(features, lo, hi):
                candidates.append(Candidate(lo, hi, "recogniser"))
    return candidates


def _plausible(features: FrameFeatures, lo: int, hi: int) -> bool:
    """A filler is a voiced sound of filler length, about as loud as the speech around it
    (this keeps breaths and clicks out)."""
    if not MIN_CANDIDATE_S * FRAMES_PER_S <= hi - lo <= _MAX_CANDIDATE_S * FRAMES_PER_S:
        return False
    if float(np.mean(features.voicing[lo:hi] > _VOICED)) < _MIN_VOICED_FRACTION:
        return False
    speech_level = features.level_db[features.speech]
    if len(speech_level) == 0:
        return False
    reference_db = float(np.percentile(speech_level, 90))
    return float(np.percentile(features.level_db[lo:hi], 90)) >= reference_db - _MAX_BELOW_SPEECH_DB


def _extend(features: FrameFeatures, start: int, end: int) -> tuple[int, int]:
    """Grow a steady core ``[start, end)`` over the onset and decay of the same sound.

    Frames join while they are sound (above the pause level) and the spectrum changes no
    faster than :data:`_EDGE_FLUX` times the speech median; at most :data:`_MAX_EDGE` frames
    on each side.
    """
    limit = _EDGE_FLUX * features.reference_flux
    n = features.n_frames
    pause = features.pause
    lo = start
    while lo > 0 and start - lo < _MAX_EDGE and not pause[lo - 1] and features.flux[lo - 1] < limit:
        lo -= 1
    hi = end
    while hi < n and hi - end < _MAX_EDGE and not pause[hi] and features.flux[hi] < limit:
        hi += 1
    return lo, hi


def _trim_to_sound(features: FrameFeatures, lo: int, hi: int) -> tuple[int, int]:
    """Shrink ``[lo, hi)`` to its first and last frame above the pause level."""
    sound = np.flatnonzero(~features.pause[lo:hi])
    if len(sound) == 0:
        return lo, lo
    return lo + int(sound[0]), lo + int(sound[-1]) + 1


def grow_to_pauses(features: FrameFeatures, candidate: Candidate) -> Candidate:
    """Widen a detected filler to the pause next to it, when one is close.

    A candidate covers the steadiest part of a sound; an "um" often scores on its "m" alone.
    When the sound runs on for at most :data:`_MAX_GROW` frames of voiced sound into a pause,
    that stretch is the rest of the filler (a word would be longer, or pause-free).
    """
    pause = features.pause
    voiced = features.voicing > _VOICED
    n = features.n_frames
    lo, hi = candidate.start, candidate.end
    i = lo
    while i > 0 and not pause[i - 1] and lo - i < _MAX_GROW:
        i -= 1
    if i == 0 or pause[i - 1]:
        if i == lo or float(np.mean(voiced[i:lo])) >= _MIN_VOICED_FRACTION:
            lo = i
    j = hi
    while j < n and not pause[j] and j - hi < _MAX_GROW:
        j += 1
    if j == n or pause[j]:
        if j == hi or float(np.mean(voiced[hi:j])) >= _MIN_VOICED_FRACTION:
            hi = j
    return Candidate(lo, hi, candidate.source)


def spelled_filler(candidate: Candidate, segments: Sequence[Word]) -> str | None:
    """The filler the recogniser spelled over ``candidate``, if any."""
    for seg in segments:
        canonical = canonical_filler(seg.text)
        if canonical is None:
            continue
        if overlap(seg.start_s, seg.end_s, candidate.start_s, candidate.end_s) > 0:
            return canonical
    return None


# --------------------------------------------------------------------------- features

FEATURE_NAMES: tuple[str, ...] = (
    "log_min_steadiness",
    "log_mean_steadiness",
    "steady_s",
    "duration_s",
    "voiced_fraction",
    "pitch_range_st",
    "zcr",
    "pause_shorter_s",
    "pause_longer_s",
    "recogniser_speech",
    "recogniser_filler",
    "recogniser_words",
    "recogniser_confidence",
    "phone_spn_share",
    "phone_count",
)
FEATURE_SIGNS: dict[str, int] = {
    "log_min_steadiness": -1,
    "log_mean_steadiness": -1,
    "steady_s": +1,
    "duration_s": 0,
    "voiced_fraction": +1,
    "pitch_range_st": -1,
    "zcr": -1,
    "pause_shorter_s": +1,
    "pause_longer_s": +1,
    "recogniser_speech": +1,
    "recogniser_filler": +1,
    "recogniser_words": -1,
    "recogniser_confidence": -1,
    "phone_spn_share": +1,
    "phone_count": -1,
}
"""The direction each feature may push the score (0: either). The fit holds every weight to
its sign, so that a quirk of the tuning data cannot teach the detector that, say, a pause
around a sound makes it less of a filler."""


def candidate_features(
    features: FrameFeatures,
    candidate: Candidate,
    segments: Sequence[Word],
    phones: Sequence[Word],
) -> np.ndarray:
    """Feature vector of ``candidate`` (order: :data:`FEATURE_NAMES`)."""
    lo, hi = candidate.start, candidate.end
    steady = features.steadiness[lo:hi]
    voiced = features.voicing[lo:hi] > _VOICED
    finite = steady[np.isfinite(steady)]
    min_steady = float(finite.min()) if len(finite) else 5.0
    mean_steady = float(finite.mean()) if len(finite) else 5.0
    steady_s = float(np.sum((steady < _STEADY_SEED) & voiced)) / FRAMES_PER_S
    duration_s = (hi - lo) / FRAMES_PER_S
    f0 = features.f0_hz[lo:hi][voiced]
    if len(f0) >= 3:
        semitones = 12.0 * np.log2(f0 / np.median(f0))
        pitch_range = float(np.percentile(semitones, 90) - np.percentile(semitones, 10))
    else:
        pitch_range = 12.0
    # The pauses around the whole sound, as a detection would be grown to them: the core of
    # an "um" is often its vowel alone, and its "m" (or the "h" of "hmm", or a slow onset
    # out of a pause) would otherwise stand between the core and the pause.
    grown = grow_to_pauses(features, candidate)
    pauses = (_pause_s(features, grown.start, -1), _pause_s(features, grown.end - 1, +1))

    start_s, end_s = candidate.start_s, candidate.end_s
    overlapping = [
        s
        for s in segments
        if overlap(s.start_s, s.end_s, start_s, end_s)
        > 0.5 * min(s.end_s - s.start_s, end_s - start_s)
    ]
    speech_noise = any(s.text == _SPEECH_NOISE for s in overlapping)
    filler_word = any(canonical_filler(s.text) is not None for s in overlapping)
    lexical = [
        s
        for s in overlapping
        if s.text not in (_SPEECH_NOISE, "[NOISE]") and canonical_filler(s.text) is None
    ]
    confidence = max((s.confidence for s in lexical), default=0.0)

    inside = [p for p in phones if overlap(p.start_s, p.end_s, start_s, end_s) > 0]
    spn = sum(overlap(p.start_s, p.end_s, start_s, end_s) for p in inside if p.text == "+SPN+")
    phone_count = sum(
        1
        for p in inside
        if p.text not in ("SIL", "+NSN+")
        and overlap(p.start_s, p.end_s, start_s, end_s) >= 0.5 * (p.end_s - p.start_s)
    )
    return np.array(
        [
            float(np.log(max(min_steady, 1e-3))),
            float(np.log(max(mean_steady, 1e-3))),
            steady_s,
            duration_s,
            float(voiced.mean()) if len(voiced) else 0.0,
            pitch_range,
            float(features.zcr[lo:hi].mean()) if hi > lo else 0.0,
            min(pauses),
            max(pauses),
            float(speech_noise),
            float(filler_word),
            float(len(lexical)),
            confidence,
            spn / duration_s if duration_s > 0 else 0.0,
            float(phone_count),
        ],
        dtype=np.float64,
    )


def overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _pause_s(features: FrameFeatures, edge: int, direction: int) -> float:
    """Length of the pause next to frame ``edge`` going ``direction`` (capped at
    :data:`_MAX_PAUSE_S`; the audio's start or end counts as a long pause).

    The pause may begin up to :data:`_PAUSE_REACH` frames (120 ms) away: a candidate covers
    the steady part of a sound, not all of its onset and decay (a filler rising slowly out of
    a pause spends 100 ms or so doing it).
    """
    pause = features.pause
    n = len(pause)
    i = edge + direction
    reach = 0
    while 0 <= i < n and not pause[i] and reach < _PAUSE_REACH:
        i += direction
        reach += 1
    limit = int(_MAX_PAUSE_S * FRAMES_PER_S)
    count = 0
    while 0 <= i < n and pause[i] and count < limit:
        count += 1
        i += direction
    if not 0 <= i < n:
        return _MAX_PAUSE_S
    return count / FRAMES_PER_S


# --------------------------------------------------------------------------- scoring

# Logistic model over standardised features; the output of ``bench/filler_eval.py --fit``.
# fmt: off
_FEATURE_MEAN = np.array([
    -0.8753, -0.373, 0.1537, 0.277, 0.963, 2.895, 0.1142, 0.03779, 0.1889, 0.1141, 0.08317,
    0.8317, 0.3848, 0.1138, 1.356,
])
_FEATURE_SCALE = np.array([
    0.6469, 0.3571, 0.1456, 0.1255, 0.06035, 2.707, 0.03989, 0.1034, 0.2074, 0.318, 0.2761,
    0.4227, 0.3734, 0.3042, 0.6764,
])
_WEIGHTS = np.array([
    -1.253, -1.226, 0.8058, 0.06057, 0, -0.589, -1.009, 0.748, 0.4239, 0.3062, 0, 0, -0.1791,
    0.191, -1.139,
])
# fmt: on
_BIAS = -1.156
assert len(_FEATURE_MEAN) == len(_FEATURE_SCALE) == len(_WEIGHTS) == len(FEATURE_NAMES)


def score_features(vectors: np.ndarray) -> np.ndarray:
    """Filler probability of each row of ``vectors`` (shape ``(n, len(FEATURE_NAMES))``)."""
    z = (np.atleast_2d(vectors) - _FEATURE_MEAN) / _FEATURE_SCALE
    return 1.0 / (1.0 + np.exp(-(z @ _WEIGHTS + _BIAS)))


# --------------------------------------------------------------------------- labels


def label_filler(candidate: Candidate, features: FrameFeatures, phones: Sequence[Word]) -> str:
    """Spell a detected filler from its sound: a nasal end (power above 1 kHz falling by 5 dB
    or more) makes "um", a nasal throughout "hmm", the phone loop's "ER" "er", any other vowel
    "uh". The recogniser's own spelling is not used: it calls most fillers "ah"."""
    high_band = features.high_band_db[candidate.start : candidate.end]
    n = len(high_band)
    head_db = float(np.median(high_band[: max(1, int(0.4 * n))]))
    tail_db = float(np.median(high_band[-max(1, int(0.3 * n)) :]))
    if max(head_db, tail_db) < _NASAL_DB:
        return "hmm"
    if tail_db - head_db <= -_NASAL_DROP_DB:
        return "um"
    start_s, end_s = candidate.start_s, candidate.end_s
    rhotic_s = sum(
        overlap(p.start_s, p.end_s, start_s, end_s) for p in phones if p.text in ("ER", "R")
    )
    if rhotic_s > 0.3 * (end_s - start_s):
        return "er"
    return "uh"


_NASAL_DB = -15.0
_NASAL_DROP_DB = 5.0


# --------------------------------------------------------------------------- phone loop


_PHONE_CONTEXT_S = 0.5
"""Audio decoded by the phone loop on each side of a candidate."""


def phones_around(pcm: np.ndarray, candidates: Sequence[Candidate]) -> list[Word]:
    """The phone loop's segments over the stretches around ``candidates`` only (each
    candidate with 0.5 s on each side; overlapping stretches merged), times from the first
    sample of ``pcm``; a fresh decoder per stretch, in a search worker where one runs."""
    spans: list[list[float]] = []
    duration_s = len(pcm) / SAMPLE_RATE
    for c in sorted(candidates, key=lambda c: c.start):
        lo, hi = max(0.0, c.start_s - _PHONE_CONTEXT_S), min(duration_s, c.end_s + _PHONE_CONTEXT_S)
        if spans and lo <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], hi)
        else:
            spans.append([lo, hi])
    phones: list[Word] = []
    for lo, hi in spans:
        piece = pcm[int(lo * SAMPLE_RATE) : int(hi * SAMPLE_RATE)]
        phones += [p.shifted(lo) for p in search_workers.run(phone_segments, piece)]
    return phones

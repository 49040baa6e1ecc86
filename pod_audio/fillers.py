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
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.fft import dct, irfft, rfft
from scipy.ndimage import uniform_filter1d

from pod_audio.errors import TranscriptionError
from pod_audio.transcript import FILLER_WORDS, Word

__all__ = [
    "CANONICAL_FILLERS",
    "CONFIRM_THRESHOLD",
    "DEFAULT_THRESHOLD",
    "FEATURE_NAMES",
    "FEATURE_SIGNS",
    "Candidate",
    "CandidateTable",
    "FrameFeatures",
    "apply_fillers",
    "candidate_features",
    "candidate_table",
    "canonical_filler",
    "detect_fillers",
    "find_candidates",
    "frame_features",
    "phone_segments",
    "score_features",
]

SAMPLE_RATE = 16000
HOP = 160  # 10 ms
WIN = 400  # 25 ms
N_FFT = 512
N_MELS = 40
FRAMES_PER_S = SAMPLE_RATE // HOP

CANONICAL_FILLERS: dict[str, str] = {
    "um": "um", "umm": "um", "erm": "um",
    "uh": "uh", "uhh": "uh", "eh": "uh",
    "er": "er",
    "ah": "ah", "ahh": "ah",
    "hmm": "hmm", "hm": "hmm", "mm": "hmm", "mhm": "hmm",
}  # fmt: skip
"""Spellings of :data:`~pod_audio.transcript.FILLER_WORDS` -> the five we emit."""
assert set(CANONICAL_FILLERS) == set(FILLER_WORDS)

DEFAULT_THRESHOLD = 0.5
"""Logistic score from which a candidate counts as a filler."""
CONFIRM_THRESHOLD = 0.15
"""Lower score that confirms a segment the recogniser itself spelled as a filler. Below it
the recogniser's "ah" is taken for a misheard short word (in clean speech it mostly is: the
"so" of "and so my fellow Americans", say) and dropped rather than cut from the audio."""

_SPEECH_NOISE = "[SPEECH]"

# Frame analysis.
_NOISE_PERCENTILE = 10.0
_NOISE_FLOOR_GAIN = 3.0
"""The log-mel spectrum is taken of ``power + 3 * noise power`` per band: bands holding only
noise then stay flat instead of adding random flux."""
_N_CEPSTRA = 13
_VOICED = 0.6
"""Peak normalised cross-correlation (50-400 Hz) from which a frame counts as voiced."""
_SPEECH_DB = 10.0
"""A frame is speech when its level is this far above the noise floor (10th percentile)."""
_PAUSE_DB = 9.0
"""... and part of a pause when it is at most this far above it."""
_STEADY_WINDOW = 15
"""Frames (150 ms) the flux is averaged over."""

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
_MIN_CANDIDATE_S = 0.12
_MAX_CANDIDATE_S = 1.2
_MAX_PAUSE_S = 0.5
_PAUSE_REACH = 8


@dataclass(frozen=True)
class FrameFeatures:
    """Per-frame analysis of a chunk; every array has shape ``(frames,)``, 10 ms per frame.

    Attributes:
        level_db: RMS level in dBFS.
        voicing: peak of the normalised cross-correlation between 2.5 and 20 ms lag.
        f0_hz: pitch at that peak (meaningless where ``voicing`` is low).
        zcr: zero crossings per sample.
        flux: cepstral distance between the frames 10 ms before and after.
        steadiness: ``flux`` averaged over 150 ms over its median in voiced speech (1.0 =
            typical speech; sustained sounds are well below).
        high_band_db: share of the frame's power above 1 kHz, in dB (nasal murmurs such as
            the "m" of "um" sit around -25 dB, vowels around -10 dB).
        reference_flux: the median the steadiness is relative to.
        noise_db: the chunk's noise floor in dBFS.
    """

    level_db: np.ndarray
    voicing: np.ndarray
    f0_hz: np.ndarray
    zcr: np.ndarray
    flux: np.ndarray
    steadiness: np.ndarray
    high_band_db: np.ndarray
    reference_flux: float
    noise_db: float

    @property
    def n_frames(self) -> int:
        return len(self.level_db)

    @property
    def speech(self) -> np.ndarray:
        return self.level_db > self.noise_db + _SPEECH_DB

    @property
    def pause(self) -> np.ndarray:
        return self.level_db <= self.noise_db + _PAUSE_DB


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


# --------------------------------------------------------------------------- public API


def canonical_filler(text: str) -> str | None:
    """The filler ``text`` spells ("Umm" -> "um", "hm" -> "hmm"), or ``None`` for other words."""
    return CANONICAL_FILLERS.get(text.strip().lower())


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
    pcm = _as_int16(samples)
    no_vectors = np.zeros((0, len(FEATURE_NAMES)))
    if len(pcm) < WIN + 2 * HOP:
        return CandidateTable((), no_vectors, (), None)
    features = frame_features(pcm.astype(np.float32) / 32768.0)
    candidates = find_candidates(features, segments)
    if within is not None:
        candidates = [
            c for c in candidates if any(_overlap(lo, hi, c.start_s, c.end_s) > 0 for lo, hi in within)
        ]
    if not candidates:
        return CandidateTable((), no_vectors, (), features)
    phones = phone_segments(pcm) if within is None else _phones_around(pcm, candidates)
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
        spelled = cand.source == "recogniser" and _spelled_filler(cand, segments) is not None
        if scores[index] < (min(threshold, CONFIRM_THRESHOLD) if spelled else threshold):
            continue
        cand = _grow_to_pauses(table.features, cand)
        if any(w.start_s < cand.end_s and cand.start_s < w.end_s for w in found):
            continue
        found.append(
            Word(
                _label(cand, table.features, table.phones),
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
    audio stays. Gaps next to a word the aligner could not place are not searched.

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
    pcm = _as_int16(samples)
    flags = list(aligned) if aligned is not None else [True] * len(words)
    gaps = _gaps_between(words, flags, duration_s=len(pcm) / SAMPLE_RATE)
    if not gaps:
        return []
    # Fillers the recogniser spelled are candidates too (confirmed from a lower score).
    found = detect_fillers(pcm, segments=words, threshold=threshold, within=gaps)
    out: list[Word] = []
    for filler in found:
        best = max(gaps, key=lambda g: _overlap(g[0], g[1], filler.start_s, filler.end_s))
        start, end = max(filler.start_s, best[0]), min(filler.end_s, best[1])
        if end - start < _MIN_CANDIDATE_S or end - start < _MIN_KEPT_FRACTION * filler.duration_s:
            continue
        out.append(Word(filler.text, round(start, 3), round(end, 3), filler.confidence, True))
    return out


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
        if ok and previous_ok and word.start_s - previous_end >= _MIN_CANDIDATE_S:
            gaps.append((previous_end, word.start_s))
        previous_end, previous_ok = max(previous_end, word.end_s), ok
    if previous_ok and duration_s - previous_end >= _MIN_CANDIDATE_S:
        gaps.append((previous_end, duration_s))
    return gaps


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
            if any(_overlap(w.start_s, w.end_s, f.start_s, f.end_s) > 0 for f in found):
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
            overlap = _overlap(word.start_s, word.end_s, filler.start_s, filler.end_s)
            if overlap > MAX_WORD_OVERLAP_S:
                problems.append((filler, word, overlap))
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


# --------------------------------------------------------------------------- frames


def _mel_filterbank() -> np.ndarray:
    def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)

    def mel_to_hz(mel: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)

    edges = mel_to_hz(np.linspace(hz_to_mel(60.0), hz_to_mel(7600.0), N_MELS + 2))
    bins = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
    bank = np.zeros((N_MELS, len(bins)), dtype=np.float32)
    for i in range(N_MELS):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        bank[i] = np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0, None)
    return bank


_MEL_BANK = _mel_filterbank()
_WINDOW = np.hanning(WIN).astype(np.float32)
_NCCF_LEN = 320  # 20 ms
_HIGH_BAND_BIN = 1000 * N_FFT // SAMPLE_RATE  # 1 kHz
_LAGS = np.arange(SAMPLE_RATE // 400, SAMPLE_RATE // 50 + 1)  # 2.5-20 ms: 50-400 Hz


def frame_features(samples: np.ndarray) -> FrameFeatures:
    """Analyse 16 kHz mono float samples in 25 ms frames every 10 ms.

    Frame ``i`` covers samples ``[160 i, 160 i + 400)``; its time is taken as ``i / 100`` s.
    """
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    n = max(0, 1 + (len(samples) - WIN) // HOP)
    if n == 0:
        empty = np.zeros(0, dtype=np.float32)
        return FrameFeatures(empty, empty, empty, empty, empty, empty, empty, 0.0, -120.0)
    index = np.arange(WIN)[None, :] + HOP * np.arange(n)[:, None]
    frames = samples[index]
    frames = frames - frames.mean(axis=1, keepdims=True)
    level_db = 10.0 * np.log10(np.mean(frames * frames, axis=1) + 1e-10)
    noise_db = float(np.percentile(level_db, _NOISE_PERCENTILE))

    power = np.abs(rfft(frames * _WINDOW, n=N_FFT, axis=1)) ** 2
    high = power[:, _HIGH_BAND_BIN:].sum(axis=1)
    high_band_db = 10.0 * np.log10((high + 1e-12) / (power.sum(axis=1) + 1e-12))
    mel = power @ _MEL_BANK.T
    noise = np.percentile(mel, _NOISE_PERCENTILE, axis=0)
    log_mel = uniform_filter1d(np.log(mel + _NOISE_FLOOR_GAIN * noise + 1e-10), 3, axis=0)
    cepstra = dct(log_mel, type=2, norm="ortho", axis=1)[:, 1:_N_CEPSTRA]
    flux = np.zeros(n, dtype=np.float32)
    if n > 2:
        flux[1:-1] = np.linalg.norm(cepstra[2:] - cepstra[:-2], axis=1) / 2.0

    voicing, f0_hz = _periodicity(samples, n)
    zcr = np.mean(np.abs(np.diff(np.signbit(frames), axis=1)), axis=1)

    smooth_flux = uniform_filter1d(flux, _STEADY_WINDOW)
    voiced_speech = (level_db > noise_db + _SPEECH_DB) & (voicing > _VOICED)
    reference = float(np.median(smooth_flux[voiced_speech])) if voiced_speech.any() else 0.0
    steadiness = smooth_flux / reference if reference > 0 else np.full(n, np.inf)
    return FrameFeatures(
        level_db=level_db.astype(np.float32),
        voicing=voicing.astype(np.float32),
        f0_hz=f0_hz.astype(np.float32),
        zcr=zcr.astype(np.float32),
        flux=flux,
        steadiness=steadiness.astype(np.float32),
        high_band_db=high_band_db.astype(np.float32),
        reference_flux=reference,
        noise_db=noise_db,
    )


def _periodicity(samples: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Voicing and pitch of ``n`` frames from the normalised cross-correlation (NCCF).

    For each frame, a 20 ms stretch starting at the frame's centre minus 10 ms is correlated
    with itself shifted by 2.5-20 ms (400-50 Hz); the peak correlation, in ``[-1, 1]``, is the
    voicing and its lag the pitch period.
    """
    start_offset = WIN // 2 - _NCCF_LEN // 2
    max_lag = int(_LAGS[-1])
    padded = np.pad(samples, (max(0, -start_offset), _NCCF_LEN + max_lag + WIN))
    base = max(0, start_offset)
    index = base + HOP * np.arange(n)[:, None] + np.arange(_NCCF_LEN + max_lag)[None, :]
    frames = padded[index]
    frames = frames - frames.mean(axis=1, keepdims=True)
    head = frames[:, :_NCCF_LEN]
    size = 1 << int(np.ceil(np.log2(2 * (_NCCF_LEN + max_lag))))
    spectrum = np.conj(rfft(head, n=size, axis=1)) * rfft(frames, n=size, axis=1)
    cross = irfft(spectrum, n=size, axis=1)
    cross = cross[:, _LAGS]
    energy = np.cumsum(np.pad(frames * frames, ((0, 0), (1, 0))), axis=1)
    head_energy = energy[:, _NCCF_LEN]
    lag_energy = energy[:, _LAGS + _NCCF_LEN] - energy[:, _LAGS]
    nccf = cross / np.sqrt(head_energy[:, None] * lag_energy + 1e-12)
    best = nccf.max(axis=1)
    # The shortest lag within 10 % of the best: multiples of the period score as high.
    period = np.argmax(nccf >= 0.9 * best[:, None], axis=1)
    return best, SAMPLE_RATE / _LAGS[period]


# --------------------------------------------------------------------------- candidates


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def find_candidates(features: FrameFeatures, segments: Sequence[Word] = ()) -> list[Candidate]:
    """Stretches worth scoring: steady voiced runs and the recogniser's filler-like segments."""
    n = features.n_frames
    voiced_window = uniform_filter1d(
        ((features.voicing > _VOICED) & features.speech).astype(np.float32), _STEADY_WINDOW
    )
    seed = (features.steadiness < _STEADY_SEED) & (voiced_window > 0.7) & features.speech
    runs = _runs(seed)
    merged: list[list[int]] = []
    for start, end in runs:
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
    if not _MIN_CANDIDATE_S * FRAMES_PER_S <= hi - lo <= _MAX_CANDIDATE_S * FRAMES_PER_S:
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


def _grow_to_pauses(features: FrameFeatures, candidate: Candidate) -> Candidate:
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


def _spelled_filler(candidate: Candidate, segments: Sequence[Word]) -> str | None:
    """The filler the recogniser spelled over ``candidate``, if any."""
    for seg in segments:
        canonical = canonical_filler(seg.text)
        if canonical is None:
            continue
        if _overlap(seg.start_s, seg.end_s, candidate.start_s, candidate.end_s) > 0:
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
    pauses = (_pause_s(features, lo, -1), _pause_s(features, hi - 1, +1))

    start_s, end_s = candidate.start_s, candidate.end_s
    overlapping = [
        s
        for s in segments
        if _overlap(s.start_s, s.end_s, start_s, end_s)
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

    inside = [p for p in phones if _overlap(p.start_s, p.end_s, start_s, end_s) > 0]
    spn = sum(_overlap(p.start_s, p.end_s, start_s, end_s) for p in inside if p.text == "+SPN+")
    phone_count = sum(
        1
        for p in inside
        if p.text not in ("SIL", "+NSN+")
        and _overlap(p.start_s, p.end_s, start_s, end_s) >= 0.5 * (p.end_s - p.start_s)
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


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _pause_s(features: FrameFeatures, edge: int, direction: int) -> float:
    """Length of the pause next to frame ``edge`` going ``direction`` (capped at
    :data:`_MAX_PAUSE_S`; the audio's start or end counts as a long pause).

    The pause may begin up to :data:`_PAUSE_REACH` frames away: a candidate covers the steady
    part of a sound, not all of its onset and decay.
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


def _label(candidate: Candidate, features: FrameFeatures, phones: Sequence[Word]) -> str:
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
        _overlap(p.start_s, p.end_s, start_s, end_s) for p in phones if p.text in ("ER", "R")
    )
    if rhotic_s > 0.3 * (end_s - start_s):
        return "er"
    return "uh"


_NASAL_DB = -15.0
_NASAL_DROP_DB = 5.0


# --------------------------------------------------------------------------- phone loop


def phone_segments(pcm: np.ndarray) -> list[Word]:
    """Decode 16 kHz ``int16`` samples with pocketsphinx's phone loop (no words).

    Returns one :class:`Word` per phone (text the phone, e.g. ``"AH"``, ``"+SPN+"``,
    ``"SIL"``), times in seconds from the first sample.
    """
    decoder = _phone_decoder()
    try:
        decoder.start_utt()
        decoder.process_raw(np.ascontiguousarray(pcm, dtype=np.int16).tobytes(), full_utt=True)
        decoder.end_utt()
        if decoder.hyp() is None:
            return []
        return [
            Word(seg.word, seg.start_frame / FRAMES_PER_S, (seg.end_frame + 1) / FRAMES_PER_S)
            for seg in decoder.seg()
        ]
    except RuntimeError as exc:
        raise TranscriptionError(f"pocketsphinx phone loop failed: {exc}") from exc


_PHONE_CONTEXT_S = 0.5
"""Audio decoded by the phone loop on each side of a candidate."""


def _phones_around(pcm: np.ndarray, candidates: Sequence[Candidate]) -> list[Word]:
    """The phone loop's segments over the stretches around ``candidates`` only (each
    candidate with 0.5 s on each side; overlapping stretches merged), times from the first
    sample of ``pcm``. One decoder, one utterance per stretch."""
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
        phones += [p.shifted(lo) for p in phone_segments(piece)]
    return phones


def _phone_decoder():  # noqa: ANN202 - pocketsphinx.Decoder
    """A fresh phone-loop decoder (a reused one carries state between utterances)."""
    try:
        from pocketsphinx import Decoder, get_model_path
    except ImportError as exc:  # pragma: no cover - dependency missing
        raise TranscriptionError("pocketsphinx is not installed") from exc
    phone_lm = os.path.join(get_model_path(), "en-us", "en-us-phone.lm.bin")
    try:
        return Decoder(loglevel="ERROR", lm=None, allphone=phone_lm)
    except (RuntimeError, ValueError) as exc:
        raise TranscriptionError(f"pocketsphinx cannot start its phone loop: {exc}") from exc


def _as_int16(samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.dtype == np.int16:
        return samples.reshape(-1)
    return np.round(np.clip(samples.reshape(-1), -1.0, 1.0) * 32767.0).astype(np.int16)

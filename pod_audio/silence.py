"""Silence detection relative to the episode's own noise floor.

A fixed threshold (say -40 dBFS) fails both ways: in a loud, noisy room recording the
background sits above it and nothing is "silent"; in a quiet studio recording soft speech
falls below it. This detector measures the level of every short frame, estimates the noise
floor as a low percentile of those levels, and calls a frame silent when it is within a
margin of that floor. It streams: only one float per frame is kept (100 per second of audio
at the default 10 ms frames), so an episode of hours needs a few megabytes.

Levels are RMS in dBFS over all channels of a frame (a full-scale square wave is 0 dBFS, a
full-scale sine -3 dBFS). Digital silence has a level of ``-inf`` dBFS.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypedDict, Unpack

import numpy as np

from pod_audio import io as audio_io
from pod_audio.dsp import power_to_db, runs
from pod_audio.errors import NoiseOnlyError, SilentAudioError

__all__ = [
    "ActivityReport",
    "Interval",
    "SilenceReport",
    "SilenceSettings",
    "check_audible",
    "detect_silences",
    "detect_silences_in_file",
    "frame_levels_dbfs",
    "measure_activity",
    "measure_activity_in_file",
]

MIN_THRESHOLD_DBFS = -70.0
"""Lowest silence threshold: below it, even a floor of dither or digital silence counts as
silence only where the signal is really that quiet."""
MAX_THRESHOLD_DBFS = -20.0
"""Highest silence threshold: a recording whose noise floor is this loud has no usable
silence; nothing louder than -20 dBFS is ever called silent."""


@dataclass(frozen=True, slots=True)
class Interval:
    """A time range ``[start_s, end_s]`` in seconds from the start of the audio."""

    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        if not (self.end_s >= self.start_s):
            raise ValueError(f"interval ends before it starts: {self.start_s} .. {self.end_s}")

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True, slots=True)
class SilenceReport:
    """What :func:`detect_silences` found.

    Attributes:
        silences: silent ranges, sorted, disjoint, each at least ``min_silence_ms`` long.
        noise_floor_dbfs: the estimated noise floor (a low percentile of the frame levels);
            ``-inf`` when at least that share of the audio is digital silence.
        threshold_dbfs: frames below this level are silent (noise floor plus margin,
            clamped to [:data:`MIN_THRESHOLD_DBFS`, :data:`MAX_THRESHOLD_DBFS`]).
        duration_s: duration of the analysed audio in seconds.
    """

    silences: list[Interval]
    noise_floor_dbfs: float
    threshold_dbfs: float
    duration_s: float

    @property
    def silent_s(self) -> float:
        """Total seconds of silence."""
        return sum(s.duration_s for s in self.silences)


def _frame_len(sample_rate: int, frame_ms: float) -> int:
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if not frame_ms > 0:
        raise ValueError(f"frame_ms must be positive, got {frame_ms}")
    return max(1, int(round(sample_rate * frame_ms / 1000.0)))


def _frame_mean_square(blocks: Iterable[np.ndarray], frame_len: int) -> tuple[np.ndarray, int]:
    """Mean square of every frame of ``frame_len`` samples over all channels.

    Returns ``(power, total_frames)``: a float64 array with one value per frame (the last
    frame may be shorter), and the number of sample frames read. Blocks may have any length;
    a frame that straddles two blocks is assembled from both without copying the blocks.
    """
    parts: list[np.ndarray] = []
    channels: int | None = None
    total = 0
    carry_sum = 0.0  # sum of squares of a frame begun in an earlier block
    carry_len = 0  # its sample frames so far
    for raw in blocks:
        block = np.asarray(raw)
        if block.ndim == 1:
            block = block[:, np.newaxis]
        if block.ndim != 2:
            raise ValueError(f"blocks must have shape (frames, channels), got {block.shape}")
        if channels is None:
            channels = block.shape[1]
        elif block.shape[1] != channels:
            raise ValueError(f"channel count changed from {channels} to {block.shape[1]}")
        if not np.issubdtype(block.dtype, np.floating):
            raise ValueError(f"blocks must hold float samples, got {block.dtype}")
        n = block.shape[0]
        total += n
        start = 0
        if carry_len:
            head = block[: frame_len - carry_len]
            carry_sum += float(np.vdot(head, head))
            carry_len += head.shape[0]
            start = head.shape[0]
            if carry_len < frame_len:
                continue
            parts.append(np.array([carry_sum / (frame_len * channels)]))
            carry_sum, carry_len = 0.0, 0
        whole = (n - start) // frame_len
        if whole:
            body = np.ascontiguousarray(block[start : start + whole * frame_len])
            body = body.reshape(whole, frame_len * channels)
            sums = np.einsum("ij,ij->i", body, body)
            parts.append(sums.astype(np.float64) / (frame_len * channels))
        rest = block[start + whole * frame_len :]
        if rest.shape[0]:
            carry_sum = float(np.vdot(rest, rest))
            carry_len = rest.shape[0]
    if carry_len and channels:
        parts.append(np.array([carry_sum / (carry_len * channels)]))
    power = np.concatenate(parts) if parts else np.zeros(0)
    return power, total


def frame_levels_dbfs(
    blocks: Iterable[np.ndarray], *, sample_rate: int, frame_ms: float = 10.0
) -> np.ndarray:
    """RMS level in dBFS of every ``frame_ms`` frame of the audio, shape ``(n_frames,)``.

    Digital silence gives ``-inf``. The last frame may be shorter than ``frame_ms``.
    """
    power, _ = _frame_mean_square(blocks, _frame_len(sample_rate, frame_ms))
    return power_to_db(power)


def _hysteresis(levels_db: np.ndarray, *, low_db: float, high_db: float) -> np.ndarray:
    """Silent/not-silent state per frame with two thresholds.

    A frame below ``low_db`` is silent, one at or above ``high_db`` is not; a frame in
    between keeps the state of the frame before it (not silent at the very start).
    """
    quiet = levels_db < low_db
    decided = quiet | (levels_db >= high_db)
    index = np.where(decided, np.arange(levels_db.shape[0]), -1)
    np.maximum.accumulate(index, out=index)
    return np.where(index >= 0, quiet[np.maximum(index, 0)], False)


def detect_silences(
    blocks: Iterable[np.ndarray],
    *,
    sample_rate: int,
    min_silence_ms: float = 300.0,
    frame_ms: float = 10.0,
    threshold_db_above_floor: float = 12.0,
    floor_percentile: float = 10.0,
    hysteresis_db: float = 3.0,
    min_threshold_dbfs: float = MIN_THRESHOLD_DBFS,
    max_threshold_dbfs: float = MAX_THRESHOLD_DBFS,
) -> SilenceReport:
    """Find the silent ranges of audio given as a stream of blocks.

    Args:
        blocks: float arrays of shape ``(frames, channels)`` (or ``(frames,)`` for mono),
            samples in [-1, 1], consecutive, of any lengths; consumed once.
        sample_rate: Hz.
        min_silence_ms: shortest silence reported, in milliseconds.
        frame_ms: analysis frame in milliseconds; times are multiples of it.
        threshold_db_above_floor: a frame is silent when its level is below the noise floor
            plus this many dB.
        floor_percentile: the noise floor is this percentile (0-100) of the frame levels.
        hysteresis_db: once silent, audio stays silent until a frame rises this many dB
            above the threshold, so levels hovering at the threshold do not flicker.
        min_threshold_dbfs, max_threshold_dbfs: bounds of the threshold in dBFS.

    Returns:
        A :class:`SilenceReport`. Audio that is all digital silence (or all stationary
        noise) is one silence covering everything.

    Raises:
        ValueError: bad arguments or blocks of changing channel count.
    """
    if min_silence_ms < 0:
        raise ValueError(f"min_silence_ms must not be negative, got {min_silence_ms}")
    if not 0.0 <= floor_percentile <= 100.0:
        raise ValueError(f"floor_percentile must be within 0..100, got {floor_percentile}")
    if hysteresis_db < 0:
        raise ValueError(f"hysteresis_db must not be negative, got {hysteresis_db}")
    if min_threshold_dbfs > max_threshold_dbfs:
        raise ValueError("min_threshold_dbfs is above max_threshold_dbfs")
    frame_len = _frame_len(sample_rate, frame_ms)
    power, total_frames = _frame_mean_square(blocks, frame_len)
    duration_s = total_frames / sample_rate
    if power.size == 0:
        return SilenceReport(
            silences=[], noise_floor_dbfs=-math.inf, threshold_dbfs=min_threshold_dbfs,
            duration_s=0.0,
        )

    # Percentile of the power (not of dB) so digital silence (power 0) needs no -inf maths.
    floor_dbfs = float(power_to_db(float(np.percentile(power, floor_percentile))))
    threshold_dbfs = min(
        max_threshold_dbfs, max(min_threshold_dbfs, floor_dbfs + threshold_db_above_floor)
    )
    silent = _hysteresis(
        power_to_db(power), low_db=threshold_dbfs, high_db=threshold_dbfs + hysteresis_db
    )

    starts, ends = runs(silent)
    min_frames = math.ceil(min_silence_ms / 1000.0 * sample_rate / frame_len - 1e-9)
    keep = (ends - starts) >= max(1, min_frames)
    # The last frame may be short; a run ending there ends at the end of the audio.
    silences = [
        Interval(start * frame_len / sample_rate, min(end * frame_len, total_frames) / sample_rate)
        for start, end in zip(starts[keep].tolist(), ends[keep].tolist(), strict=True)
    ]
    if silences and silences[-1].duration_s * 1000.0 < min_silence_ms - 1e-9:
        silences.pop()  # a run that only reached the minimum through the short last frame
    return SilenceReport(
        silences=silences,
        noise_floor_dbfs=floor_dbfs,
        threshold_dbfs=threshold_dbfs,
        duration_s=duration_s,
    )


class SilenceSettings(TypedDict, total=False):
    """The tuning of :func:`detect_silences` (its keyword arguments and their meaning),
    for the functions that pass it on."""

    min_silence_ms: float
    frame_ms: float
    threshold_db_above_floor: float
    floor_percentile: float
    hysteresis_db: float
    min_threshold_dbfs: float
    max_threshold_dbfs: float


def detect_silences_in_file(
    path: str | os.PathLike[str],
    *,
    block_frames: int = 65536,
    **settings: Unpack[SilenceSettings],
) -> SilenceReport:
    """:func:`detect_silences` on a file, decoded block by block at its own sample rate,
    with :func:`detect_silences`'s ``settings`` and defaults.

    Raises:
        The input errors of :func:`pod_audio.io.iter_blocks`
        (:class:`~pod_audio.errors.AudioInputError` and subclasses).
    """
    info = audio_io.probe(path, decode_check=False)
    blocks: Iterator[np.ndarray] = audio_io.iter_blocks(
        path, sample_rate=info.sample_rate, block_frames=block_frames
    )
    return detect_silences(blocks, sample_rate=info.sample_rate, **settings)


# --------------------------------------------------------------------------- activity

AUDIBLE_DBFS = MIN_THRESHOLD_DBFS
"""A recording whose loudest 10 ms stays below this RMS level is silent for every purpose
here (digital silence, dither, an unplugged input)."""
STANDS_OUT_DB = 12.0
"""A frame stands out when it is this far above the noise floor (as for silences)."""
MIN_STANDING_OUT_S = 1.0
"""Less than this much audio standing out from the floor means nothing does."""
NOISE_FLATNESS = 0.5
"""Spectral flatness (0 for a pure tone, 1 for white noise) above which a signal that never
rises above its own floor counts as noise. Measured on the long-term spectrum in the band
of :data:`_FLATNESS_BAND_HZ`."""
_FLATNESS_BAND_HZ = (100.0, 7000.0)
_SPECTRUM_EVERY_S = 0.5
"""One spectrum window per this many seconds of audio: enough for a long-term average."""


@dataclass(frozen=True, slots=True)
class ActivityReport:
    """Whether anything can be heard in a recording, from the levels of its 10 ms frames.

    Attributes:
        duration_s: seconds analysed.
        peak_dbfs: RMS level of the loudest frame (``-inf`` for digital silence).
        noise_floor_dbfs: the 10th percentile of the frame levels.
        standing_out_s: seconds of frames at least :data:`STANDS_OUT_DB` above the floor.
        spread_db: the 99th percentile of the frame levels minus the floor: near 0 for a
            steady signal, tens of dB for speech with pauses.
        flatness: spectral flatness of the long-term spectrum, 0 (one tone) .. 1 (white
            noise); ``nan`` when the audio is too short or silent to tell.
    """

    duration_s: float
    peak_dbfs: float
    noise_floor_dbfs: float
    standing_out_s: float
    spread_db: float
    flatness: float

    @property
    def silent(self) -> bool:
        return self.peak_dbfs < AUDIBLE_DBFS

    @property
    def noise_only(self) -> bool:
        """Steady broadband noise throughout: nothing stands out, and the spectrum is flat."""
        return (
            not self.silent
            and self.standing_out_s < MIN_STANDING_OUT_S
            and bool(self.flatness > NOISE_FLATNESS)
        )


class _LongTermSpectrum:
    """Average power spectrum of the mono mix, from one Hann window every
    :data:`_SPECTRUM_EVERY_S` seconds (so a long file costs a few FFTs per second of audio)."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.size = 1 << max(8, int(math.ceil(math.log2(sample_rate / 20.0))))  # ~20 Hz bins
        self.every = max(self.size, int(sample_rate * _SPECTRUM_EVERY_S))
        self.window = np.hanning(self.size).astype(np.float32)
        self.power = np.zeros(self.size // 2 + 1)
        self.count = 0
        self._next = 0  # sample index (in the stream) of the next window
        self._seen = 0

    def add(self, block: np.ndarray) -> None:
        n = block.shape[0]
        while self._next + self.size <= self._seen + n:
            start = self._next - self._seen
            if start < 0:  # a window straddling two blocks: skip to this block
                self._next = self._seen
                continue
            segment = block[start : start + self.size]
            mono = segment.mean(axis=1) if segment.ndim == 2 else segment
            spectrum = np.fft.rfft(mono * self.window)
            self.power += spectrum.real**2 + spectrum.imag**2
            self.count += 1
            self._next += self.every
        self._seen += n

    def flatness(self) -> float:
        if not self.count:
            return math.nan
        freqs = np.fft.rfftfreq(self.size, 1.0 / self.sample_rate)
        low, high = _FLATNESS_BAND_HZ
        band = self.power[(freqs >= low) & (freqs <= min(high, 0.45 * self.sample_rate))]
        if band.size == 0 or not np.all(band > 0):
            return math.nan
        return float(np.exp(np.mean(np.log(band))) / np.mean(band))


def measure_activity(
    blocks: Iterable[np.ndarray], *, sample_rate: int, frame_ms: float = 10.0
) -> ActivityReport:
    """Levels and spectrum of audio given as a stream of blocks; see :class:`ActivityReport`.

    Streams like :func:`detect_silences`: one float per frame and one spectrum are kept.
    """
    spectrum = _LongTermSpectrum(sample_rate)

    def tapped() -> Iterator[np.ndarray]:
        for block in blocks:
            spectrum.add(np.asarray(block))
            yield block

    power, total_frames = _frame_mean_square(tapped(), _frame_len(sample_rate, frame_ms))
    if power.size == 0:
        return ActivityReport(0.0, -math.inf, -math.inf, 0.0, 0.0, math.nan)
    floor_power, top_power = np.percentile(power, [10.0, 99.0])
    floor_dbfs = float(power_to_db(float(floor_power)))
    standing_out = power >= floor_power * 10.0 ** (STANDS_OUT_DB / 10.0)
    if floor_power <= 0.0:  # a floor of digital silence: anything audible stands out
        standing_out = power_to_db(power) >= AUDIBLE_DBFS
    return ActivityReport(
        duration_s=total_frames / sample_rate,
        peak_dbfs=float(power_to_db(float(power.max()))),
        noise_floor_dbfs=floor_dbfs,
        standing_out_s=float(np.count_nonzero(standing_out)) * frame_ms / 1000.0,
        spread_db=float(power_to_db(float(top_power)) - floor_dbfs) if floor_power > 0 else math.inf,
        flatness=spectrum.flatness(),
    )


def measure_activity_in_file(path: str | os.PathLike[str]) -> ActivityReport:
    """:func:`measure_activity` on a file, decoded block by block at its own rate.

    Raises:
        The input errors of :func:`pod_audio.io.iter_blocks`.
    """
    info = audio_io.probe(path, decode_check=False)
    return measure_activity(
        audio_io.iter_blocks(path, sample_rate=info.sample_rate), sample_rate=info.sample_rate
    )


def check_audible(report: ActivityReport) -> None:
    """Raise if there is nothing in the recording to transcribe, clean or master.

    Raises:
        SilentAudioError: nothing reaches :data:`AUDIBLE_DBFS` (digital silence).
        NoiseOnlyError: steady broadband noise throughout (hiss, white noise, a dead
            channel's static): no speech or other sound stands out from it.
    """
    if report.silent:
        loudest = "no sound at all" if report.peak_dbfs == -math.inf else (
            f"its loudest moment is at {report.peak_dbfs:.0f} dBFS"
        )
        raise SilentAudioError(
            f"the audio is silent ({loudest} in {report.duration_s:.1f} s); "
            "was the microphone muted or the wrong track exported?"
        )
    if report.noise_only:
        raise NoiseOnlyError(
            f"the audio is only steady noise at {report.noise_floor_dbfs:.0f} dBFS for "
            f"{report.duration_s / 60:.1f} min: no speech or other sound stands out from it "
            "(a dead or unplugged input, or the wrong file?)"
        )

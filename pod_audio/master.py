"""Mastering: intro/outro crossfades, loudness normalisation, true-peak limiting, MP3 render.

:func:`render_final` is the whole final step of an episode. Every pass streams the
programme (intro, main, outro, crossfaded) from the source files, so memory stays at a few
blocks of audio whatever the length:

1. measure the programme's integrated loudness and true peak; the gain is the target
   minus the loudness;
2. if that gain would push peaks over the limiter's ceiling, the limiter will take some
   loudness away: find the gain that compensates with a few limit-and-measure passes
   (no encoding);
3. apply the gain, limit true peaks with a look-ahead limiter (ceiling 0.5 dB under the
   limit, room for MP3 coding overshoot), encode MP3 with a LAME/Xing header (decoders
   trim the encoder's delay and padding, so the duration is exact);
4. decode the MP3 and measure it; if loudness or true peak still miss, render again with
   a corrected gain or a lower ceiling.

MP3 coding itself shifts the level slightly (LAME at 128 kbit/s loses ~0.4 dB); this is
measured on a short excerpt before step 2 and compensated.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.ndimage import maximum_filter1d

from pod_audio.errors import SilentAudioError
from pod_audio.io import DEFAULT_BLOCK_FRAMES, iter_blocks, open_writer, probe
from pod_audio.loudness import (
    Interpolator,
    LoudnessMeter,
    TruePeakMeter,
    candidate_runs,
    interpolator,
    max_abs_over_channels,
    measure,
    oversampling_factor,
)
from pod_audio.tags import EpisodeTags, write_id3

__all__ = [
    "DEFAULT_TARGET_LUFS_MONO",
    "DEFAULT_TARGET_LUFS_STEREO",
    "MasterReport",
    "PeakLimiter",
    "crossfade",
    "default_target_lufs",
    "program_blocks",
    "render_final",
]

DEFAULT_TARGET_LUFS_STEREO = -16.0
DEFAULT_TARGET_LUFS_MONO = -19.0
_CORRECT_ABOVE_LU = 0.2
"""Re-render with a corrected gain when the measured loudness misses the target by more."""
_CEILING_MARGIN_DB = 0.5
"""The limiter's ceiling sits this far below the true-peak limit, for MP3 coding overshoot."""
_MAX_RENDERS = 4


def default_target_lufs(channels: int) -> float:
    """-19 LUFS for mono, -16 LUFS for stereo and more (AES TD1004 podcast targets)."""
    return DEFAULT_TARGET_LUFS_MONO if channels == 1 else DEFAULT_TARGET_LUFS_STEREO


# --------------------------------------------------------------------------- limiter


class PeakLimiter:
    """Look-ahead true-peak limiter, block by block, with a fixed latency.

    The detector follows the 4x-oversampled signal (all channels linked), so peaks between
    samples are limited too. The gain reduction needed at each point is held for the
    look-ahead window, released exponentially, and smoothed by a moving average over the
    look-ahead window; the audio is delayed by the same amount, so the gain has ramped down
    fully when a peak arrives (attack = ``lookahead_ms``). No sample leaves above the
    ceiling.

    Args:
        sample_rate: Hz.
        channels: channel count of the blocks.
        ceiling_dbtp: largest true peak let through, dBTP.
        lookahead_ms: look-ahead and attack time.
        release_ms: time constant of the recovery after a peak.
        taps_per_phase: length of the oversampling filter's branches; the default matches
            :class:`pod_audio.loudness.TruePeakMeter`, so what one lets through the other
            measures the same way.

    Use :meth:`process` on every block, then :meth:`flush` once; together they return
    exactly as many frames as went in. :attr:`max_reduction_db` tells how hard it worked.
    """

    def __init__(
        self,
        *,
        sample_rate: int,
        channels: int,
        ceiling_dbtp: float = -1.5,
        lookahead_ms: float = 5.0,
        release_ms: float = 150.0,
        taps_per_phase: int = 32,
    ) -> None:
        if lookahead_ms <= 0 or release_ms <= 0:
            raise ValueError("lookahead_ms and release_ms must be positive")
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.ceiling_dbtp = float(ceiling_dbtp)
        self._ceiling = 10.0 ** (ceiling_dbtp / 20.0)
        self._interp: Interpolator = interpolator(
            oversampling_factor(self.sample_rate), taps_per_phase
        )
        self._window = max(2, int(round(lookahead_ms * self.sample_rate / 1000.0)))
        # Detector value d[m] covers the interval between x[m - D] and x[m - D + 1].
        self._detector_delay = self._interp.per_phase // 2
        self.latency_frames = self._window - 1 + self._detector_delay
        self._release_coef = math.exp(-1.0 / (release_ms * self.sample_rate / 1000.0))

        self._x_history = np.zeros((self._interp.per_phase - 1, self.channels), dtype=np.float32)
        self._r_history = np.zeros(self._window)  # last L required reductions (dB)
        self._q_last = 0.0  # last released reduction (dB)
        self._q_history = np.zeros(self._window - 1)  # for the moving average
        self._audio_delay = np.zeros((self.latency_frames, self.channels), dtype=np.float32)
        self._skip_frames = self.latency_frames  # the delay line's initial zeros
        self.max_reduction_db = 0.0
        self.frames_in = 0
        self._flushed = False

    def _required_reduction_db(self, extended: np.ndarray) -> np.ndarray:
        """Gain reduction (dB >= 0) each detector point needs, shape ``(frames,)``.

        ``extended`` is the block after the last ``per_phase - 1`` input frames. Detector
        point ``m`` covers the samples ``x[m - D]`` and ``x[m - D + 1]`` and the oversampled
        points between them. Only stretches whose samples could reach the ceiling after
        interpolation are interpolated; elsewhere no reduction is needed.
        """
        per_phase = self._interp.per_phase
        frames = extended.shape[0] - (per_phase - 1)
        required = np.zeros(frames)
        magnitude = max_abs_over_channels(extended)
        offset = per_phase - 1 - self._detector_delay  # extended index of x[m - D] is m + offset
        for start, stop in candidate_runs(
            magnitude, frames=frames, interp=self._interp, threshold=self._ceiling
        ):
            detector = np.maximum(
                magnitude[start + offset : stop + offset],
                magnitude[start + offset + 1 : stop + offset + 1],
            )
            np.maximum(
                detector, self._interp.peaks(extended[start : stop + per_phase - 1]), out=detector
            )
            with np.errstate(divide="ignore"):
                level_db = 20.0 * np.log10(detector.astype(np.float64) / self._ceiling)
            required[start:stop] = np.maximum(level_db, 0.0)
        return required

    def _release(self, held: np.ndarray) -> np.ndarray:
        """``q[m] = max(held[m], a * q[m-1])`` for the whole block, vectorised."""
        out = np.empty_like(held)
        a = self._release_coef
        q_last = self._q_last
        step = 8192  # keeps a**-k well inside float range
        for start in range(0, held.shape[0], step):
            part = held[start : start + step]
            k = np.arange(part.shape[0])
            log_a = math.log(a)
            scaled = part * np.exp(-k * log_a)  # held[k] / a**k
            running = np.maximum.accumulate(np.maximum(scaled, q_last * a))
            out[start : start + part.shape[0]] = running * np.exp(k * log_a)
            q_last = float(out[start + part.shape[0] - 1])
        self._q_last = q_last
        return out

    def process(self, block: np.ndarray) -> np.ndarray:
        """Limit ``block`` (``(frames, channels)``).

        Returns the limited audio up to :attr:`latency_frames` behind the input: as many
        frames as went in, minus the latency on the first calls.
        """
        if self._flushed:
            raise RuntimeError("the limiter has been flushed")
        data = np.asarray(block, dtype=np.float32)
        if data.ndim != 2 or data.shape[1] != self.channels:
            raise ValueError(f"block must have shape (frames, {self.channels}), got {data.shape}")
        n = data.shape[0]
        if n == 0:
            return np.zeros((0, self.channels), dtype=np.float32)
        self.frames_in += n
        extended = np.concatenate((self._x_history, data))
        required = self._required_reduction_db(extended)
        self._x_history = extended[extended.shape[0] - self._x_history.shape[0] :].copy()

        # Hold: max over the last L + 1 required reductions (trailing window).
        window = self._window
        r_ext = np.concatenate((self._r_history, required))
        size = window + 1
        centred = maximum_filter1d(r_ext, size=size, mode="nearest")
        idx = np.arange(window, window + n) - window + size // 2
        held = centred[idx]
        self._r_history = r_ext[-window:].copy()

        released = self._release(held)

        # Attack: moving average over L values (trailing window).
        q_ext = np.concatenate((self._q_history, released))
        cumulative = np.concatenate(([0.0], np.cumsum(q_ext)))
        smoothed = (cumulative[window:] - cumulative[:-window]) / window  # length n
        self._q_history = q_ext[-(window - 1) :].copy()
        if smoothed.size:
            self.max_reduction_db = max(self.max_reduction_db, float(np.max(smoothed)))

        delayed = np.concatenate((self._audio_delay, data))
        out = delayed[:n]
        self._audio_delay = delayed[n:].copy()
        limiting = np.flatnonzero(smoothed > 0.0)
        if limiting.size:
            first, last = int(limiting[0]), int(limiting[-1]) + 1
            gain = np.exp(smoothed[first:last] * (-math.log(10.0) / 20.0)).astype(np.float32)
            out[first:last] *= gain[:, np.newaxis]
        np.clip(out, -self._ceiling, self._ceiling, out=out)
        if self._skip_frames:
            skip = min(self._skip_frames, out.shape[0])
            out = out[skip:]
            self._skip_frames -= skip
        return out.astype(np.float32, copy=False)

    def flush(self) -> np.ndarray:
        """Return the frames still in the delay line (the last :attr:`latency_frames`, or all
        if fewer went in)."""
        out = self.process(np.zeros((self.latency_frames, self.channels)))
        self._flushed = True
        return out


# --------------------------------------------------------------------------- programme


def crossfade(tail: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Equal-power crossfade of two ``(frames, channels)`` arrays of the same shape."""
    frames = tail.shape[0]
    t = (np.arange(frames, dtype=np.float64) + 0.5) / max(frames, 1)
    fade_in = np.sin(0.5 * np.pi * t)[:, np.newaxis]
    fade_out = np.cos(0.5 * np.pi * t)[:, np.newaxis]
    return (tail * fade_out + head * fade_in).astype(np.float32)


class _HoldTail:
    """Pass blocks through, holding back the last ``tail_frames`` frames in :attr:`tail`."""

    def __init__(self, blocks: Iterable[np.ndarray], *, tail_frames: int, channels: int) -> None:
        self._blocks = blocks
        self._tail_frames = tail_frames
        self.tail = np.zeros((0, channels), dtype=np.float32)

    def __iter__(self) -> Iterator[np.ndarray]:
        held = self.tail
        for block in self._blocks:
            held = np.concatenate((held, block)) if held.shape[0] else block
            excess = held.shape[0] - self._tail_frames
            if excess > 0:
                yield held[:excess]
                held = held[excess:].copy()
        self.tail = held


def _take_head(
    blocks: Iterator[np.ndarray], *, frames: int, channels: int
) -> tuple[np.ndarray, Iterator[np.ndarray]]:
    """Read the first ``frames`` frames (fewer if the stream is shorter) off ``blocks``."""
    parts: list[np.ndarray] = []
    have = 0
    leftover: np.ndarray | None = None
    for block in blocks:
        need = frames - have
        if block.shape[0] > need:
            parts.append(block[:need])
            leftover = block[need:]
            have = frames
            break
        parts.append(block)
        have += block.shape[0]
        if have == frames:
            break
    head = np.concatenate(parts) if parts else np.zeros((0, channels), dtype=np.float32)

    def rest() -> Iterator[np.ndarray]:
        if leftover is not None and leftover.shape[0]:
            yield leftover
        yield from blocks

    return head, rest()


def program_blocks(
    *,
    main_path: str | os.PathLike[str],
    intro_path: str | os.PathLike[str] | None = None,
    outro_path: str | os.PathLike[str] | None = None,
    crossfade_ms: float = 500.0,
    sample_rate: int,
    channels: int,
    block_frames: int = DEFAULT_BLOCK_FRAMES,
) -> Generator[np.ndarray, None, None]:
    """Decode intro, main and outro as one stream with equal-power crossfades between them.

    Every part is resampled to ``sample_rate`` Hz and mixed to ``channels`` channels. A
    crossfade is shortened to the length of a part shorter than it. The total length is
    ``intro + main + outro - crossfades``.

    Yields:
        ``float32`` blocks of shape ``(frames, channels)`` (of varying length).
    """
    xfade_frames = max(0, int(round(crossfade_ms * sample_rate / 1000.0)))
    parts = [p for p in (intro_path, main_path, outro_path) if p is not None]
    tail: np.ndarray | None = None
    for number, path in enumerate(parts):
        blocks: Iterator[np.ndarray] = iter(
            iter_blocks(path, sample_rate=sample_rate, channels=channels, block_frames=block_frames)
        )
        if tail is not None:
            head, blocks = _take_head(blocks, frames=xfade_frames, channels=channels)
            overlap = min(tail.shape[0], head.shape[0])
            if tail.shape[0] > overlap:
                yield tail[: tail.shape[0] - overlap]
            if overlap:
                yield crossfade(tail[tail.shape[0] - overlap :], head[:overlap])
            if head.shape[0] > overlap:
                yield head[overlap:]
        if number == len(parts) - 1:
            yield from blocks
        else:
            holder = _HoldTail(blocks, tail_frames=xfade_frames, channels=channels)
            yield from holder
            tail = holder.tail


# --------------------------------------------------------------------------- render


@dataclass(frozen=True)
class MasterReport:
    """Outcome of :func:`render_final`, measured on the decoded MP3.

    Attributes:
        duration_s: duration of the episode, seconds.
        lufs_in: integrated loudness of the programme before gain, LUFS.
        lufs_out: integrated loudness of the MP3, LUFS.
        true_peak_dbtp: true peak of the MP3, dBTP.
        size_bytes: size of the MP3 file, tags included.
        gain_db: gain applied before the limiter, dB.
        target_lufs: the loudness aimed at, LUFS.
        limiter_max_db: largest gain reduction of the limiter, dB.
        renders: encoding passes it took (1 unless a correction was needed).
    """

    duration_s: float
    lufs_in: float
    lufs_out: float
    true_peak_dbtp: float
    size_bytes: int
    gain_db: float
    target_lufs: float = DEFAULT_TARGET_LUFS_STEREO
    limiter_max_db: float = 0.0
    renders: int = 1


def render_final(
    *,
    main_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    intro_path: str | os.PathLike[str] | None = None,
    outro_path: str | os.PathLike[str] | None = None,
    crossfade_ms: float = 500.0,
    target_lufs: float | None = None,
    true_peak_dbtp: float = -1.0,
    bitrate_kbps: int = 128,
    sample_rate: int = 44100,
    tags: EpisodeTags | None = None,
    block_frames: int = DEFAULT_BLOCK_FRAMES,
) -> MasterReport:
    """Render the finished episode MP3: intro + main + outro, loudness-normalised, limited.

    Args:
        main_path: the episode's (cleaned) audio, any readable format.
        out_path: MP3 to write; replaced atomically when the render is complete.
        intro_path, outro_path: optional jingles, any format, rate or channel count; they
            are converted to the main audio's channel count.
        crossfade_ms: equal-power crossfade between intro/main and main/outro.
        target_lufs: integrated loudness to reach; default -16 LUFS for stereo, -19 LUFS
            for mono main audio. Reached within 0.2 LU, unless the corrections run out
            (the report has the measured values for a check to gate on).
        true_peak_dbtp: largest true peak allowed in the decoded MP3, dBTP.
        bitrate_kbps: MP3 bit rate (CBR).
        sample_rate: output rate in Hz (44100 for podcasts).
        tags: ID3v2.4 tags to write; ``duration_s`` is set from the render.
        block_frames: frames per decoded block.

    Returns:
        A :class:`MasterReport` of the MP3 as decoded.

    Raises:
        SilentAudioError: the programme has no audible sound, so it cannot be normalised.
        The errors of :func:`pod_audio.io.probe` / :func:`pod_audio.io.iter_blocks` for
        unreadable inputs.
    """
    out_path = Path(out_path)
    main_info = probe(main_path, decode_check=False)
    channels = min(main_info.channels, 2)
    target = default_target_lufs(channels) if target_lufs is None else float(target_lufs)

    def program() -> Generator[np.ndarray, None, None]:
        return program_blocks(
            main_path=main_path,
            intro_path=intro_path,
            outro_path=outro_path,
            crossfade_ms=crossfade_ms,
            sample_rate=sample_rate,
            channels=channels,
            block_frames=block_frames,
        )

    # Pass 1: loudness and true peak of the programme as it will be rendered.
    meter = LoudnessMeter(sample_rate=sample_rate, channels=channels)
    peak_meter = TruePeakMeter(sample_rate=sample_rate, channels=channels)
    for block in program():
        meter.add(block)
        peak_meter.add(block)
    lufs_in = meter.integrated_lufs()
    if not math.isfinite(lufs_in):
        raise SilentAudioError("the episode is silent: there is nothing to make louder")
    solver = _LevelSolver(
        program=program,
        sample_rate=sample_rate,
        channels=channels,
        lufs_in=lufs_in,
        true_peak_in_dbtp=peak_meter.true_peak_dbtp(),
    )

    ceiling_dbtp = true_peak_dbtp - _CEILING_MARGIN_DB
    # MP3 coding changes the level a little (LAME at 128 kbit/s loses ~0.4 dB): measure
    # it on an excerpt and aim the uncoded loudness that much higher.
    codec_offset_db = _codec_offset_db(
        program(),
        gain_db=target - lufs_in,
        ceiling_dbtp=ceiling_dbtp,
        sample_rate=sample_rate,
        channels=channels,
        bitrate_kbps=bitrate_kbps,
        scratch_dir=out_path.parent,
    )
    aim_lufs = target - codec_offset_db
    partial = out_path.with_name(f".{out_path.name}.{uuid.uuid4().hex[:8]}.partial.mp3")
    try:
        for render in range(1, _MAX_RENDERS + 1):
            gain_db = solver.gain_for(aim_lufs, ceiling_dbtp=ceiling_dbtp)
            limiter_max_db = _render_pass(
                program(),
                partial,
                gain_db=gain_db,
                ceiling_dbtp=ceiling_dbtp,
                sample_rate=sample_rate,
                channels=channels,
                bitrate_kbps=bitrate_kbps,
            )
            result = measure(partial, block_frames=block_frames)
            loud_miss = target - result.integrated_lufs
            peak_over = result.true_peak_dbtp - true_peak_dbtp
            if (abs(loud_miss) <= _CORRECT_ABOVE_LU and peak_over <= 0) or render == _MAX_RENDERS:
                break
            if abs(loud_miss) > _CORRECT_ABOVE_LU:
                aim_lufs += loud_miss
            if peak_over > 0:
                ceiling_dbtp -= peak_over + 0.1
        duration_s = result.duration_s  # decoded length, encoder delay/padding trimmed
        if tags is not None:
            write_id3(partial, replace(tags, duration_s=duration_s))
        os.replace(partial, out_path)
    finally:
        partial.unlink(missing_ok=True)

    return MasterReport(
        duration_s=duration_s,
        lufs_in=lufs_in,
        lufs_out=result.integrated_lufs,
        true_peak_dbtp=result.true_peak_dbtp,
        size_bytes=out_path.stat().st_size,
        gain_db=gain_db,
        target_lufs=target,
        limiter_max_db=limiter_max_db,
        renders=render,
    )


class _LevelSolver:
    """Finds the gain that gives a wanted loudness after the limiter (before coding).

    Without limiting, loudness after gain is ``lufs_in + gain``. When the gained programme
    would exceed the limiter's ceiling, the limiter takes some loudness away, more the
    harder it works; then the gain is found by a few secant steps, each a decode + limit +
    measure pass (no encoding).
    """

    _TOLERANCE_LU = 0.15
    _MAX_STEPS = 6

    def __init__(
        self,
        *,
        program: Callable[[], Iterator[np.ndarray]],
        sample_rate: int,
        channels: int,
        lufs_in: float,
        true_peak_in_dbtp: float,
    ) -> None:
        self._program = program
        self._sample_rate = sample_rate
        self._channels = channels
        self._lufs_in = lufs_in
        self._true_peak_in_dbtp = true_peak_in_dbtp

    def limited_lufs(self, gain_db: float, *, ceiling_dbtp: float) -> float:
        """Loudness of the programme after ``gain_db`` and the limiter, LUFS."""
        if self._true_peak_in_dbtp + gain_db <= ceiling_dbtp:
            return self._lufs_in + gain_db
        gain = 10.0 ** (gain_db / 20.0)
        limiter = PeakLimiter(
            sample_rate=self._sample_rate, channels=self._channels, ceiling_dbtp=ceiling_dbtp
        )
        meter = LoudnessMeter(sample_rate=self._sample_rate, channels=self._channels)
        for block in self._program():
            meter.add(limiter.process(block * gain))
        meter.add(limiter.flush())
        return meter.integrated_lufs()

    def gain_for(self, aim_lufs: float, *, ceiling_dbtp: float) -> float:
        """Gain in dB that brings the limited programme to ``aim_lufs`` (within 0.15 LU)."""
        gain = aim_lufs - self._lufs_in
        level = self.limited_lufs(gain, ceiling_dbtp=ceiling_dbtp)
        previous: tuple[float, float] | None = None
        for _ in range(self._MAX_STEPS):
            miss = aim_lufs - level
            if abs(miss) <= self._TOLERANCE_LU:
                break
            slope = 1.0
            if previous is not None and gain != previous[0]:
                slope = (level - previous[1]) / (gain - previous[0])
                slope = min(1.0, max(0.2, slope))
            previous = (gain, level)
            gain += miss / slope
            level = self.limited_lufs(gain, ceiling_dbtp=ceiling_dbtp)
        return gain


def _codec_offset_db(
    blocks: Generator[np.ndarray, None, None],
    *,
    gain_db: float,
    ceiling_dbtp: float,
    sample_rate: int,
    channels: int,
    bitrate_kbps: int,
    scratch_dir: Path,
    excerpt_s: float = 30.0,
) -> float:
    """Loudness change (dB, decoded minus input) of MP3 coding, measured on the first
    ``excerpt_s`` seconds of the gained and limited programme. 0 if that excerpt is silent."""
    gain = 10.0 ** (gain_db / 20.0)
    limiter = PeakLimiter(sample_rate=sample_rate, channels=channels, ceiling_dbtp=ceiling_dbtp)
    meter = LoudnessMeter(sample_rate=sample_rate, channels=channels)
    excerpt_frames = int(excerpt_s * sample_rate)
    path = scratch_dir / f".codec-check-{uuid.uuid4().hex[:8]}.mp3"
    try:
        with open_writer(
            path, sample_rate=sample_rate, channels=channels, codec="mp3", bitrate_kbps=bitrate_kbps
        ) as writer, closing(blocks):
            for block in blocks:
                limited = limiter.process(block * gain)
                meter.add(limited)
                writer.write(limited)
                if writer.frames_written >= excerpt_frames:
                    break
            else:
                tail = limiter.flush()
                meter.add(tail)
                writer.write(tail)
        before = meter.integrated_lufs()
        after = measure(path).integrated_lufs
    finally:
        path.unlink(missing_ok=True)
    if not (math.isfinite(before) and math.isfinite(after)):
        return 0.0
    return after - before


def _render_pass(
    blocks: Iterable[np.ndarray],
    path: Path,
    *,
    gain_db: float,
    ceiling_dbtp: float,
    sample_rate: int,
    channels: int,
    bitrate_kbps: int,
) -> float:
    """Gain, limit and encode ``blocks`` to MP3 at ``path``; returns the limiter's largest
    gain reduction in dB."""
    gain = 10.0 ** (gain_db / 20.0)
    limiter = PeakLimiter(sample_rate=sample_rate, channels=channels, ceiling_dbtp=ceiling_dbtp)
    with open_writer(
        path, sample_rate=sample_rate, channels=channels, codec="mp3", bitrate_kbps=bitrate_kbps
    ) as writer:
        for block in blocks:
            writer.write(limiter.process(block * gain))
        writer.write(limiter.flush())
    return limiter.max_reduction_db


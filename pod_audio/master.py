"""Mastering: intro/outro crossfades, loudness normalisation, true-peak limiting, MP3 render.

:func:`render_final` is the whole final step of an episode. Every pass streams the
programme (intro, main, outro, crossfaded) from the source files, so memory stays at a few
blocks of audio whatever the length:

1. measure the programme's integrated loudness and true peak; the gain is the target
   minus the loudness;
2. if that gain would push peaks over the limiter's ceiling, the limiter will take some
   loudness away: find the gain that compensates with a few limit-and-measure passes
   (no encoding). When pass 1's 100 ms peak profile shows that only a few peaks reach the
   ceiling, the first render measures the limited loudness itself instead, and the solver
   goes on from that measurement only if it misses;
3. apply the gain, limit true peaks with a look-ahead limiter (ceiling 0.5 dB under the
   limit, room for MP3 coding overshoot), encode MP3 with a LAME/Xing header (decoders
   trim the encoder's delay and padding, so the duration is exact); the encoder, a child
   process, is fed from a thread of its own so it runs on the second core while the next
   blocks are decoded and limited;
4. decode the MP3 and measure it, on a thread while the encoder writes it (checked
   against the LAME tag of the finished file; if that cannot be confirmed, the file is
   decoded again afterwards); if loudness or true peak still miss, render again with a
   corrected gain or a lower ceiling.

MP3 coding itself shifts the level slightly (LAME at 128 kbit/s loses ~0.4 dB); this is
measured on a short excerpt before step 2 and compensated.
"""

from __future__ import annotations

import itertools
import math
import os
import queue
import threading
import uuid
from array import array
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

import av
import numpy as np
from scipy.ndimage import maximum_filter1d

from pod_audio.errors import SilentAudioError
from pod_audio.io import DEFAULT_BLOCK_FRAMES, iter_blocks, open_writer, probe
from pod_audio.loudness import (
    ABSOLUTE_GATE_LUFS,
    Interpolator,
    LoudnessMeter,
    LoudnessReport,
    TruePeakMeter,
    candidate_spans,
    concat_ranges,
    feed_concurrently,
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
_MEASURE_BLOCK_FRAMES = 65536
"""Blocks in which the codec excerpt's MP3 is measured (:func:`measure`'s default)."""


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
        starts, stops = candidate_spans(
            magnitude, frames=frames, interp=self._interp, threshold=self._ceiling
        )
        if starts.size == 0:
            return required
        points = concat_ranges(starts, stops - starts)
        detector = np.maximum(magnitude[points + offset], magnitude[points + offset + 1])
        np.maximum(detector, self._interp.run_peaks(extended, starts, stops), out=detector)
        with np.errstate(divide="ignore"):
            level_db = 20.0 * np.log10(detector.astype(np.float64) / self._ceiling)
        required[points] = np.maximum(level_db, 0.0)
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

    # Pass 1: loudness and true peak of the programme as it will be rendered, and the
    # peak and energy of every 100 ms (for the estimate of what the limiter takes away).
    meter = LoudnessMeter(sample_rate=sample_rate, channels=channels)
    peak_meter = TruePeakMeter(sample_rate=sample_rate, channels=channels)
    profile = _PeakProfile(sample_rate=sample_rate)

    def loudness_and_profile(block: np.ndarray) -> None:
        meter.add(block)
        profile.add(block)

    feed_concurrently(program(), [loudness_and_profile, peak_meter.add])
    lufs_in = meter.integrated_lufs()
    if not math.isfinite(lufs_in):
        raise SilentAudioError("the episode is silent: there is nothing to make louder")
    solver = _LevelSolver(
        program=program,
        sample_rate=sample_rate,
        channels=channels,
        lufs_in=lufs_in,
        true_peak_in_dbtp=peak_meter.true_peak_dbtp(),
        profile=profile,
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
            # When the limiter can only take a little loudness away, the first render
            # measures what it let through instead of a limit-and-measure pass before it;
            # on a miss the solver continues from that measurement and renders again.
            deferred = render == 1 and solver.can_defer(aim_lufs, ceiling_dbtp=ceiling_dbtp)
            gain_db = solver.gain_for(aim_lufs, ceiling_dbtp=ceiling_dbtp, defer=deferred)
            limiter_max_db, limited_lufs, streamed = _render_pass(
                program(),
                partial,
                gain_db=gain_db,
                ceiling_dbtp=ceiling_dbtp,
                sample_rate=sample_rate,
                channels=channels,
                bitrate_kbps=bitrate_kbps,
                measure_limited=deferred,
                block_frames=block_frames,
            )
            if deferred:
                solver.record(gain_db, limited_lufs, ceiling_dbtp=ceiling_dbtp)
                if not solver.reached(aim_lufs, limited_lufs) and render < _MAX_RENDERS:
                    continue
            # The MP3 as decoded, measured while it was written (or now, if that could not
            # be confirmed against the finished file).
            result = streamed or measure(partial, block_frames=block_frames)
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


class _PeakProfile:
    """Sample peak and mean square of every 100 ms of the programme (8 bytes per 100 ms),
    for :meth:`limiter_loss_lu`."""

    _RELEASE_SPAN = 3
    """100 ms steps after a peak during which the estimate keeps its full reduction
    (the limiter releases with a 150 ms time constant)."""

    def __init__(self, *, sample_rate: int) -> None:
        self._step = max(1, sample_rate // 10)
        self._held: np.ndarray | None = None  # frames of the 100 ms not yet complete
        self._peaks = array("f")
        self._powers = array("f")

    def add(self, block: np.ndarray) -> None:
        """Take in the next ``(frames, channels)`` block of the programme."""
        data = np.asarray(block, dtype=np.float32)
        if self._held is not None and self._held.shape[0]:
            data = np.concatenate((self._held, data))
        whole = data.shape[0] - data.shape[0] % self._step
        if whole:
            # Every 100 ms as one row of all its samples: the peak and mean square of a
            # row are those over its frames and channels.
            rows = np.ascontiguousarray(data[:whole]).reshape(whole // self._step, -1)
            peaks = np.maximum(rows.max(axis=1), -rows.min(axis=1))
            powers = np.einsum("ij,ij->i", rows, rows) / rows.shape[1]
            self._peaks.extend(peaks.tolist())
            self._powers.extend(powers.tolist())
        self._held = data[whole:].copy()

    def limiter_loss_lu(self, gain_db: float, *, ceiling_dbtp: float) -> float:
        """Estimated loudness the limiter takes away at ``gain_db``, LU (an overestimate
        for isolated peaks: every 100 ms with a peak over the ceiling, and the next
        ``_RELEASE_SPAN``, lose the peak's whole excess for their whole length).

        Only 100 ms over the absolute gate count. The true peak can exceed the sample
        peak, so the estimate decides only whether a full solve is worth its pass.
        """
        peaks = np.frombuffer(self._peaks, dtype=np.float32).astype(np.float64)
        powers = np.frombuffer(self._powers, dtype=np.float32).astype(np.float64)
        if peaks.size == 0:
            return 0.0
        with np.errstate(divide="ignore"):
            excess = np.maximum(20.0 * np.log10(peaks) + gain_db - ceiling_dbtp, 0.0)
        if not np.any(excess > 0):
            return 0.0
        # A peak's reduction reaches back into the 100 ms before it (look-ahead) and on
        # over the next _RELEASE_SPAN.
        reduction = maximum_filter1d(
            excess,
            size=self._RELEASE_SPAN + 2,
            origin=self._RELEASE_SPAN - (self._RELEASE_SPAN + 2) // 2,
            mode="constant",
        )
        audible = powers * 10.0 ** (gain_db / 10.0) > 10.0 ** (ABSOLUTE_GATE_LUFS / 10.0)
        total = float(np.sum(powers[audible]))
        if total <= 0.0:
            return 0.0
        kept = float(np.sum(powers[audible] * 10.0 ** (-reduction[audible] / 10.0)))
        return -10.0 * math.log10(max(kept / total, 1e-12))


class _LevelSolver:
    """Finds the gain that gives a wanted loudness after the limiter (before coding).

    Without limiting, loudness after gain is ``lufs_in + gain``. When the gained programme
    would exceed the limiter's ceiling, the limiter takes some loudness away, more the
    harder it works; then the gain is found by a few secant steps, each a decode + limit +
    measure pass (no encoding).
    """

    _TOLERANCE_LU = 0.15
    _MAX_STEPS = 6

    _DEFER_BELOW_LU = 0.3
    """Estimated loss under which the first limit-and-measure is left to the render."""

    def __init__(
        self,
        *,
        program: Callable[[], Iterator[np.ndarray]],
        sample_rate: int,
        channels: int,
        lufs_in: float,
        true_peak_in_dbtp: float,
        profile: _PeakProfile | None = None,
    ) -> None:
        self._program = program
        self._sample_rate = sample_rate
        self._channels = channels
        self._lufs_in = lufs_in
        self._true_peak_in_dbtp = true_peak_in_dbtp
        self._profile = profile
        self.passes = 0
        """Limit-and-measure passes run so far."""
        self._known: dict[tuple[float, float], float] = {}  # (gain, ceiling) -> LUFS

    def limited_lufs(self, gain_db: float, *, ceiling_dbtp: float) -> float:
        """Loudness of the programme after ``gain_db`` and the limiter, LUFS."""
        if self._true_peak_in_dbtp + gain_db <= ceiling_dbtp:
            return self._lufs_in + gain_db
        known = self._known.get((gain_db, ceiling_dbtp))
        if known is not None:
            return known
        self.passes += 1
        gain = 10.0 ** (gain_db / 20.0)
        limiter = PeakLimiter(
            sample_rate=self._sample_rate, channels=self._channels, ceiling_dbtp=ceiling_dbtp
        )
        meter = LoudnessMeter(sample_rate=self._sample_rate, channels=self._channels)
        for block in self._program():
            meter.add(limiter.process(block * gain))
        meter.add(limiter.flush())
        return meter.integrated_lufs()

    def can_defer(self, aim_lufs: float, *, ceiling_dbtp: float) -> bool:
        """Whether the limiter, at the unlimited gain for ``aim_lufs``, is estimated to take
        away so little (under 0.3 LU) that the render can measure it instead of a pass."""
        gain = aim_lufs - self._lufs_in
        if self._true_peak_in_dbtp + gain <= ceiling_dbtp:
            return False  # nothing to measure: no limiting
        if self._profile is None:
            return False
        return self._profile.limiter_loss_lu(gain, ceiling_dbtp=ceiling_dbtp) <= self._DEFER_BELOW_LU

    def record(self, gain_db: float, lufs: float, *, ceiling_dbtp: float) -> None:
        """Remember the limited loudness at ``gain_db`` measured elsewhere (by a render)."""
        self._known[(gain_db, ceiling_dbtp)] = lufs

    def reached(self, aim_lufs: float, lufs: float) -> bool:
        """Whether ``lufs`` is within the solver's tolerance of ``aim_lufs``."""
        return abs(aim_lufs - lufs) <= self._TOLERANCE_LU

    def gain_for(self, aim_lufs: float, *, ceiling_dbtp: float, defer: bool = False) -> float:
        """Gain in dB that brings the limited programme to ``aim_lufs`` (within 0.15 LU).

        With ``defer``, the first guess (the unlimited gain) is returned unmeasured: the
        caller measures it and hands the result to :meth:`record`, and the next call goes on
        from there as if it had measured it itself.
        """
        gain = aim_lufs - self._lufs_in
        if defer:
            return gain
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
    follower: _FollowingMeter | None = None
    try:
        # As in the render: the encoder is fed from a thread of its own and the MP3 is
        # measured while it is written (or afterwards, if that cannot be confirmed).
        with open_writer(
            path, sample_rate=sample_rate, channels=channels, codec="mp3", bitrate_kbps=bitrate_kbps
        ) as writer, closing(blocks), _BackgroundWrites(writer.write) as write:
            follower = _FollowingMeter(path, channels=channels, block_frames=_MEASURE_BLOCK_FRAMES)
            written = 0
            for block in blocks:
                limited = limiter.process(block * gain)
                meter.add(limited)
                write(limited)
                written += limited.shape[0]
                if written >= excerpt_frames:
                    break
            else:
                tail = limiter.flush()
                meter.add(tail)
                write(tail)
    except BaseException:
        if follower is not None:
            follower.abandon()
        path.unlink(missing_ok=True)
        raise
    try:
        streamed = follower.finish()
        before = meter.integrated_lufs()
        after = (streamed or measure(path, block_frames=_MEASURE_BLOCK_FRAMES)).integrated_lufs
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
    measure_limited: bool = False,
    block_frames: int = DEFAULT_BLOCK_FRAMES,
) -> tuple[float, float, LoudnessReport | None]:
    """Gain, limit and encode ``blocks`` to MP3 at ``path``.

    Returns:
        The limiter's largest gain reduction in dB; with ``measure_limited`` the
        integrated loudness of the limited audio before coding (else NaN); the
        measurement of the decoded MP3 taken while it was written, as
        :func:`pod_audio.loudness.measure` with ``block_frames`` gives it, or ``None``
        when it could not be confirmed (see :class:`_FollowingMeter`).
    """
    gain = 10.0 ** (gain_db / 20.0)
    limiter = PeakLimiter(sample_rate=sample_rate, channels=channels, ceiling_dbtp=ceiling_dbtp)
    meter = LoudnessMeter(sample_rate=sample_rate, channels=channels) if measure_limited else None
    follower: _FollowingMeter | None = None
    path.unlink(missing_ok=True)  # the follower must see only the file this render writes
    try:
        with open_writer(
            path, sample_rate=sample_rate, channels=channels, codec="mp3", bitrate_kbps=bitrate_kbps
        ) as writer, _BackgroundWrites(writer.write) as write:
            follower = _FollowingMeter(path, channels=channels, block_frames=block_frames)
            for block in itertools.chain(blocks, [None]):
                limited = limiter.flush() if block is None else limiter.process(block * gain)
                write(limited)
                if meter is not None:
                    meter.add(limited)
    except BaseException:
        if follower is not None:
            follower.abandon()
        raise
    streamed = follower.finish()
    lufs = meter.integrated_lufs() if meter is not None else float("nan")
    return limiter.max_reduction_db, lufs, streamed


class _BackgroundWrites:
    """Call ``write`` on a thread of its own, a few blocks behind the caller.

    The MP3 encoder is a child process fed through a pipe: written from the caller's
    thread, decoding and limiting the next block would wait while the encoder empties
    the pipe, and the encoder would wait for that block. With a queue of ``depth`` blocks
    between them both cores work. Leaving the ``with`` block waits for the writes; an
    error of ``write`` is raised there (or by the next call).
    """

    def __init__(self, write: Callable[[np.ndarray], None], *, depth: int = 4) -> None:
        self._write = write
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mp3-writer", daemon=True)

    def _run(self) -> None:
        while (block := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._write(block)
                except BaseException as exc:  # handed to the caller's thread
                    self._error = exc

    def __call__(self, block: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(block)

    def __enter__(self) -> _BackgroundWrites:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        self._queue.put(None)
        self._thread.join()
        if exc_type is None and self._error is not None:
            raise self._error



# --------------------------------------------------------------------------- measuring the MP3

_MP3_BITRATES_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MP3_RATES_HZ = (44100, 48000, 32000)
_MP3_FRAME_SAMPLES = 1152
_LAME_DELAY = 576
"""Encoder delay LAME writes into the LAME tag (MPEG-1 Layer III)."""
_DECODER_DELAY = 529
"""Samples the decoder adds before the encoder delay (FFmpeg trims delay + 529)."""
_HOLD_FRAMES = 8192
"""Decoded frames held back until the end, which the encoder's padding is cut from."""


class _FollowingMeter:
    """Decode and measure an MP3 while its encoder writes it, on a thread of its own.

    Every complete MPEG-1 Layer III frame after the Xing/Info frame is decoded with a fresh
    decoder as it lands in the file; the first ``576 + 529`` samples (LAME's delay and the
    decoder's) are dropped and the rest is fed to the meters in blocks of ``block_frames``,
    the samples and blocks :func:`pod_audio.loudness.measure` sees when it reads the
    finished file. When the encoder is done, the LAME tag it wrote last gives the real
    delay, padding and frame count: if any of them disagrees with what was assumed or
    decoded, or the stream is anything else, :meth:`finish` returns ``None`` and the caller
    measures the file after all. So the result is always a measurement of the file.
    """

    def __init__(self, path: Path, *, channels: int, block_frames: int) -> None:
        self._path = path
        self._channels = channels
        self._block_frames = block_frames
        self._written = threading.Event()
        self._abandoned = False
        self._result: LoudnessReport | None = None
        self._thread = threading.Thread(target=self._run, name="mp3-meter", daemon=True)
        self._thread.start()

    def finish(self) -> LoudnessReport | None:
        """Call once the file is complete: the measurement, or ``None`` (measure the file)."""
        self._written.set()
        self._thread.join()
        return self._result

    def abandon(self) -> None:
        """Stop without a result (the render failed or will be repeated)."""
        self._abandoned = True
        self._written.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            self._result = self._follow()
        except Exception:  # anything unexpected: the caller measures the file instead
            self._result = None

    def _follow(self) -> LoudnessReport | None:
        while not self._path.exists():
            if self._written.wait(0.02):
                if self._abandoned or not self._path.exists():
                    return None
        decoder = av.CodecContext.create("mp3float", "r")
        pending = np.zeros((0, self._channels), dtype=np.float32)  # decoded, not yet fed
        skip = _LAME_DELAY + _DECODER_DELAY
        decoded = 0
        audio_frames = 0
        sample_rate = 0
        info_at = -1  # file offset of the Xing/Info frame
        meters: tuple[LoudnessMeter, TruePeakMeter] | None = None
        buf = bytearray()
        base = 0  # file offset of buf[0]
        pos = 0  # parse position in buf
        with open(self._path, "rb") as fh:
            while True:
                complete = self._written.is_set()
                if self._abandoned:
                    return None
                chunk = fh.read(1 << 20)
                buf += chunk
                frames: list[bytes] = []
                while True:
                    if info_at < 0:
                        if len(buf) - pos < 10:
                            break
                        if buf[pos : pos + 3] == b"ID3":  # the muxer's own tag
                            size = 10 + ((buf[pos + 6] & 0x7F) << 21 | (buf[pos + 7] & 0x7F) << 14
                                         | (buf[pos + 8] & 0x7F) << 7 | (buf[pos + 9] & 0x7F))
                            if buf[pos + 5] & 0x10:
                                size += 10
                            if len(buf) - pos < size:
                                break
                            pos += size
                            continue
                    if len(buf) - pos < 4:
                        break
                    header = buf[pos : pos + 4]
                    if header[0] != 0xFF or header[1] & 0xFE != 0xFA:  # MPEG-1 Layer III
                        return None
                    rate_index = (header[2] >> 2) & 3
                    bitrate = _MP3_BITRATES_KBPS[header[2] >> 4] if header[2] >> 4 < 15 else 0
                    if rate_index == 3 or bitrate == 0:
                        return None
                    length = 144000 * bitrate // _MP3_RATES_HZ[rate_index] + ((header[2] >> 1) & 1)
                    if len(buf) - pos < length:
                        break
                    if info_at < 0:
                        if bytes(buf[pos + 36 : pos + 40]) not in (b"Xing", b"Info"):
                            return None
                        info_at = base + pos
                        sample_rate = _MP3_RATES_HZ[rate_index]
                    else:
                        frames.append(bytes(buf[pos : pos + length]))
                    pos += length
                if pos > (1 << 20):
                    del buf[:pos]
                    base += pos
                    pos = 0
                parts = [pending]
                for data in frames:
                    audio_frames += 1
                    for frame in decoder.decode(av.Packet(data)):
                        parts.append(frame.to_ndarray().T)
                if len(parts) > 1:
                    pending = np.concatenate(parts)
                    if skip:
                        drop = min(skip, pending.shape[0])
                        pending = pending[drop:]
                        skip -= drop
                        decoded += drop
                if meters is None and sample_rate:
                    meters = (
                        LoudnessMeter(sample_rate=sample_rate, channels=self._channels),
                        TruePeakMeter(sample_rate=sample_rate, channels=self._channels),
                    )
                if meters is not None:
                    pending, fed = _feed_whole_blocks(pending, meters, self._block_frames,
                                                      hold=_HOLD_FRAMES)
                    decoded += fed
                if complete and not chunk:
                    break
                if not chunk:
                    self._written.wait(0.02)
            for frame in decoder.decode(None):
                pending = np.concatenate((pending, frame.to_ndarray().T))
            if meters is None or info_at < 0:
                return None
            fh.seek(info_at)
            info = fh.read(1 << 12)
        delay, padding, counted = _lame_tag(info)
        if delay != _LAME_DELAY or counted != audio_frames:
            return None
        decoded += pending.shape[0]
        if decoded != audio_frames * _MP3_FRAME_SAMPLES:
            return None
        keep = pending.shape[0] - (padding - _DECODER_DELAY)
        if keep < 0 or padding < _DECODER_DELAY:
            return None
        tail = pending[:keep]
        for start in range(0, tail.shape[0], self._block_frames):
            for meter in meters:
                meter.add(tail[start : start + self._block_frames])
        loudness, peaks = meters
        return LoudnessReport(
            integrated_lufs=loudness.integrated_lufs(),
            true_peak_dbtp=peaks.true_peak_dbtp(),
            sample_peak_dbfs=peaks.sample_peak_dbfs(),
            duration_s=loudness.duration_s,
        )


def _feed_whole_blocks(
    pending: np.ndarray, meters: Iterable[LoudnessMeter | TruePeakMeter], block_frames: int,
    *, hold: int,
) -> tuple[np.ndarray, int]:
    """Feed the whole ``block_frames`` blocks of ``pending`` that leave at least ``hold``
    frames behind; returns what is left and how many frames were fed."""
    blocks = max(0, (pending.shape[0] - hold) // block_frames)
    if blocks == 0:
        return pending, 0
    fed = blocks * block_frames
    for start in range(0, fed, block_frames):
        block = pending[start : start + block_frames]
        for meter in meters:
            meter.add(block)
    return pending[fed:].copy(), fed


def _lame_tag(info_frame: bytes) -> tuple[int, int, int]:
    """(encoder delay, padding, audio frames) from a Xing/Info frame with a LAME tag;
    ``(-1, -1, -1)`` when it has none of them."""
    at = info_frame.find(b"Info")
    at = info_frame.find(b"Xing") if at < 0 else at
    if at < 0:
        return -1, -1, -1
    flags = int.from_bytes(info_frame[at + 4 : at + 8], "big")
    if not flags & 1:
        return -1, -1, -1
    frames = int.from_bytes(info_frame[at + 8 : at + 12], "big")
    tag = at + 8 + 4 * bool(flags & 1) + 4 * bool(flags & 2) + 100 * bool(flags & 4) + 4 * bool(flags & 8)
    # LAME extension: 9-byte encoder string, then 12 bytes of fields, then delay/padding.
    packed = int.from_bytes(info_frame[tag + 21 : tag + 24], "big")
    return packed >> 12, packed & 0xFFF, frames

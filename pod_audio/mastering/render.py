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
import uuid
from collections.abc import Callable, Generator, Iterable
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pod_audio.errors import SilentAudioError
from pod_audio.io import DEFAULT_BLOCK_FRAMES, probe
from pod_audio.loudness import (
    LoudnessMeter,
    LoudnessReport,
    TruePeakMeter,
    feed_concurrently,
    measure,
)
from pod_audio.mastering.encoder import BackgroundWrites
from pod_audio.mastering.follow import FollowingMeter
from pod_audio.mastering.level import LevelSolver, PeakProfile
from pod_audio.mastering.limiter import PeakLimiter
from pod_audio.mastering.programme import Programme
from pod_audio.tags import EpisodeTags, write_id3
from pod_audio.writer import open_writer

__all__ = [
    "DEFAULT_TARGET_LUFS_MONO",
    "DEFAULT_TARGET_LUFS_STEREO",
    "MasterReport",
    "default_target_lufs",
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
    progress: Callable[[str], None] | None = None,
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
        progress: called with one line about every 25 % of each pass over the programme
            ("rendering (pass 2): 50 % of 3612 s").

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
    total_s = sum(
        probe(path, decode_check=False).duration_s for path in (intro_path, outro_path) if path
    ) + main_info.duration_s
    programme = Programme(
        main_path=main_path,
        intro_path=intro_path,
        outro_path=outro_path,
        crossfade_ms=crossfade_ms,
        sample_rate=sample_rate,
        channels=channels,
        block_frames=block_frames,
        total_s=total_s,
        progress=progress,
    )
    lufs_in, solver = _measure_programme(programme)

    ceiling_dbtp = true_peak_dbtp - _CEILING_MARGIN_DB
    # MP3 coding changes the level a little (LAME at 128 kbit/s loses ~0.4 dB): measure
    # it on an excerpt and aim the uncoded loudness that much higher.
    codec_offset_db = _codec_offset_db(
        programme(),
        gain_db=target - lufs_in,
        ceiling_dbtp=ceiling_dbtp,
        sample_rate=sample_rate,
        channels=channels,
        bitrate_kbps=bitrate_kbps,
        scratch_dir=out_path.parent,
    )
    partial = out_path.with_name(f".{out_path.name}.{uuid.uuid4().hex[:8]}.partial.mp3")
    try:
        rendered = _render_on_target(
            programme, solver, partial,
            target_lufs=target,
            aim_lufs=target - codec_offset_db,
            true_peak_dbtp=true_peak_dbtp,
            ceiling_dbtp=ceiling_dbtp,
            bitrate_kbps=bitrate_kbps,
        )
        duration_s = rendered.result.duration_s  # decoded length, encoder delay/padding trimmed
        if tags is not None:
            write_id3(partial, replace(tags, duration_s=duration_s))
        os.replace(partial, out_path)
    finally:
        partial.unlink(missing_ok=True)

    return MasterReport(
        duration_s=duration_s,
        lufs_in=lufs_in,
        lufs_out=rendered.result.integrated_lufs,
        true_peak_dbtp=rendered.result.true_peak_dbtp,
        size_bytes=out_path.stat().st_size,
        gain_db=rendered.gain_db,
        target_lufs=target,
        limiter_max_db=rendered.limiter_max_db,
        renders=rendered.renders,
    )


def _measure_programme(programme: Programme) -> tuple[float, LevelSolver]:
    """Pass 1: loudness and true peak of the programme as it will be rendered, and the
    peak and energy of every 100 ms (for the estimate of what the limiter takes away).

    Returns the integrated loudness (LUFS) and the level solver that starts from it.

    Raises:
        SilentAudioError: the programme has no audible sound.
    """
    meter = LoudnessMeter(sample_rate=programme.sample_rate, channels=programme.channels)
    peak_meter = TruePeakMeter(sample_rate=programme.sample_rate, channels=programme.channels)
    profile = PeakProfile(sample_rate=programme.sample_rate)

    def loudness_and_profile(block: np.ndarray) -> None:
        meter.add(block)
        profile.add(block)

    feed_concurrently(programme("measuring loudness"), [loudness_and_profile, peak_meter.add])
    lufs_in = meter.integrated_lufs()
    if not math.isfinite(lufs_in):
        raise SilentAudioError("the episode is silent: there is nothing to make louder")
    solver = LevelSolver(
        program=programme,
        sample_rate=programme.sample_rate,
        channels=programme.channels,
        lufs_in=lufs_in,
        true_peak_in_dbtp=peak_meter.true_peak_dbtp(),
        profile=profile,
    )
    return lufs_in, solver


@dataclass(frozen=True)
class _Rendered:
    """The last render of :func:`_render_on_target`: its MP3 as decoded, and how."""

    result: LoudnessReport
    gain_db: float
    limiter_max_db: float
    renders: int


def _render_on_target(
    programme: Programme,
    solver: LevelSolver,
    partial: Path,
    *,
    target_lufs: float,
    aim_lufs: float,
    true_peak_dbtp: float,
    ceiling_dbtp: float,
    bitrate_kbps: int,
) -> _Rendered:
    """Render the MP3 to ``partial`` until it meets the loudness target (within 0.2 LU) and
    the true-peak limit, or the renders run out: a loudness miss moves the aim by the miss,
    a peak over the limit lowers the ceiling."""
    for render in range(1, _MAX_RENDERS + 1):
        # When the limiter can only take a little loudness away, the first render
        # measures what it let through instead of a limit-and-measure pass before it;
        # on a miss the solver continues from that measurement and renders again.
        deferred = render == 1 and solver.can_defer(aim_lufs, ceiling_dbtp=ceiling_dbtp)
        gain_db = solver.gain_for(aim_lufs, ceiling_dbtp=ceiling_dbtp, defer=deferred)
        limiter_max_db, limited_lufs, streamed = _render_pass(
            programme(f"rendering (pass {render})"),
            partial,
            gain_db=gain_db,
            ceiling_dbtp=ceiling_dbtp,
            sample_rate=programme.sample_rate,
            channels=programme.channels,
            bitrate_kbps=bitrate_kbps,
            measure_limited=deferred,
            block_frames=programme.block_frames,
        )
        if deferred:
            solver.record(gain_db, limited_lufs, ceiling_dbtp=ceiling_dbtp)
            if not solver.reached(aim_lufs, limited_lufs) and render < _MAX_RENDERS:
                continue
        # The MP3 as decoded, measured while it was written (or now, if that could not
        # be confirmed against the finished file).
        result = streamed or measure(partial, block_frames=programme.block_frames)
        loud_miss = target_lufs - result.integrated_lufs
        peak_over = result.true_peak_dbtp - true_peak_dbtp
        if (abs(loud_miss) <= _CORRECT_ABOVE_LU and peak_over <= 0) or render == _MAX_RENDERS:
            break
        if abs(loud_miss) > _CORRECT_ABOVE_LU:
            aim_lufs += loud_miss
        if peak_over > 0:
            ceiling_dbtp -= peak_over + 0.1
    return _Rendered(result, gain_db, limiter_max_db, render)


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
    follower: FollowingMeter | None = None
    try:
        # As in the render: the encoder is fed from a thread of its own and the MP3 is
        # measured while it is written (or afterwards, if that cannot be confirmed).
        with open_writer(
            path, sample_rate=sample_rate, channels=channels, codec="mp3", bitrate_kbps=bitrate_kbps
        ) as writer, closing(blocks), BackgroundWrites(writer.write) as write:
            follower = FollowingMeter(path, channels=channels, block_frames=_MEASURE_BLOCK_FRAMES)
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
        when it could not be confirmed (see :class:`FollowingMeter`).
    """
    gain = 10.0 ** (gain_db / 20.0)
    limiter = PeakLimiter(sample_rate=sample_rate, channels=channels, ceiling_dbtp=ceiling_dbtp)
    meter = LoudnessMeter(sample_rate=sample_rate, channels=channels) if measure_limited else None
    follower: FollowingMeter | None = None
    path.unlink(missing_ok=True)  # the follower must see only the file this render writes
    try:
        with open_writer(
            path, sample_rate=sample_rate, channels=channels, codec="mp3", bitrate_kbps=bitrate_kbps
        ) as writer, BackgroundWrites(writer.write) as write:
            follower = FollowingMeter(path, channels=channels, block_frames=block_frames)
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

"""Render a cut list: play the kept spans of the source, crossfaded at every join.

Rendering streams: the source is decoded block by block, kept audio is written as it
arrives, and only the fade-out tail of the current kept run (one crossfade) is held back
until the next run starts. Memory does not grow with the episode.

Sample positions follow :mod:`pod_audio.cuts` exactly. Kept run ``i`` starts at source
sample ``round(start_i * sr)`` and plays shifted by ``round((out_start_i - start_i) * sr)``
samples, with ``start_i`` and ``out_start_i`` from :attr:`CutList.kept_runs_s`. Every run is
anchored on its own, so rounding never accumulates: audio at source time ``t`` of a kept
word plays at :func:`~pod_audio.cuts.remap_time` ``(t)`` within half a sample, however many
cuts precede it. The crossfade of a join is the overlap of the two runs, exactly
``round(crossfade_ms * sr / 1000)`` samples, with linear gains that sum to one.

Where the source's first or last span is removed, the output fades in or out over one
crossfade, so it never starts or ends on a step.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from pod_audio import io as audio_io
from pod_audio.cuts import CutList
from pod_audio.errors import AudioError
from pod_audio.writer import WriterCodec, open_writer

__all__ = [
    "RenderPlan",
    "RenderReport",
    "RunPlan",
    "SourceMismatchError",
    "plan_render",
    "render_blocks",
    "render_cut_list",
]

SOURCE_DURATION_TOLERANCE_S = 0.1
"""The decoded source may differ from the cut list's ``source_duration_s`` by this much; a
shortfall up to it is padded with silence so the output keeps its planned length."""


class SourceMismatchError(AudioError):
    """The source audio does not have the duration the cut list was made for."""


@dataclass(frozen=True, slots=True)
class RunPlan:
    """One kept run in samples.

    Attributes:
        src_start, src_end: source sample range ``[src_start, src_end)``.
        out_start: first output sample of the run.
        fade_in, fade_out: frames of fade at the run's start and end.
        overlaps_previous: whether the fade-in is mixed with the previous run's fade-out
            (a join) rather than with silence (the start of the output).
    """

    src_start: int
    src_end: int
    out_start: int
    fade_in: int
    fade_out: int
    overlaps_previous: bool

    @property
    def frames(self) -> int:
        return self.src_end - self.src_start


@dataclass(frozen=True, slots=True)
class RenderPlan:
    """Sample-level plan of a render: the kept runs and the output length in frames."""

    sample_rate: int
    runs: tuple[RunPlan, ...]
    total_frames: int
    source_frames: int  # frames the cut list's source duration stands for


@dataclass(frozen=True, slots=True)
class RenderReport:
    """What :func:`render_cut_list` wrote.

    Attributes:
        duration_s: duration of the output in seconds (``frames / sample_rate``).
        frames: output frames (per channel).
        cuts: crossfaded joins in the output.
        sample_rate: Hz of the output (the source's).
        channels: channels of the output (the source's).
    """

    duration_s: float
    frames: int
    cuts: int
    sample_rate: int
    channels: int


def _to_frames(t_s: float, sample_rate: int) -> int:
    return int(math.floor(t_s * sample_rate + 0.5))


def plan_render(cut_list: CutList, *, sample_rate: int) -> RenderPlan:
    """Turn ``cut_list`` into sample positions at ``sample_rate`` Hz.

    Each kept run gets one integer offset between its source and output sample indices,
    the rounded offset of :func:`~pod_audio.cuts.remap_time`, so every kept sample plays
    within half a sample of its remapped time. A run's last source sample is then chosen so
    that consecutive runs overlap by exactly one crossfade (rounded to samples).
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    crossfade = _to_frames(cut_list.crossfade_s, sample_rate)
    runs_s = cut_list.kept_runs_s
    source_frames = _to_frames(cut_list.source_duration_s, sample_rate)
    if not runs_s:
        return RenderPlan(
            sample_rate=sample_rate, runs=(), total_frames=0, source_frames=source_frames
        )
    spans = cut_list.spans
    fade_in_at_start = spans[0].action == "remove"
    fade_out_at_end = spans[-1].action == "remove"

    starts = [_to_frames(src_start_s, sample_rate) for src_start_s, _, _ in runs_s]
    offsets = [-starts[0]] + [
        _to_frames(out_start_s - src_start_s, sample_rate)
        for src_start_s, _, out_start_s in runs_s[1:]
    ]
    ends = []
    for i in range(len(runs_s)):
        if i + 1 < len(runs_s):
            # End in the output one crossfade after the next run starts there.
            end = starts[i + 1] + offsets[i + 1] + crossfade - offsets[i]
            end = min(end, starts[i + 1])
        else:
            end = _to_frames(runs_s[i][1], sample_rate)
        ends.append(max(starts[i], end))
    frames = [end - start for start, end in zip(starts, ends, strict=True)]

    outs = [0]
    fade_ins = [min(crossfade, frames[0]) if fade_in_at_start else 0]
    fade_outs = []
    for i in range(1, len(runs_s)):
        wanted = starts[i] + offsets[i]
        overlap = outs[-1] + frames[i - 1] - wanted
        overlap = max(0, min(overlap, frames[i - 1] - fade_ins[-1], frames[i]))
        fade_outs.append(overlap)
        outs.append(outs[-1] + frames[i - 1] - overlap)
        fade_ins.append(overlap)
    fade_outs.append(min(crossfade, frames[-1] - fade_ins[-1]) if fade_out_at_end else 0)

    runs = tuple(
        RunPlan(
            src_start=starts[i],
            src_end=ends[i],
            out_start=outs[i],
            fade_in=fade_ins[i],
            fade_out=fade_outs[i],
            overlaps_previous=i > 0,
        )
        for i in range(len(runs_s))
    )
    return RenderPlan(
        sample_rate=sample_rate,
        runs=runs,
        total_frames=runs[-1].out_start + runs[-1].frames,
        source_frames=source_frames,
    )


def _gains(frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear fade-in and fade-out gains of ``frames`` samples, shape ``(frames, 1)``.

    The two gains sum to one at every sample, so a crossfade never leaves the range of
    its inputs: two copies of the same sound (a cut through a filler glued to a word)
    cannot add up to a louder peak, as they would with equal-power gains.
    """
    fade_in = (np.arange(frames, dtype=np.float64) + 0.5) / max(frames, 1)
    return (
        fade_in.astype(np.float32)[:, np.newaxis],
        (1.0 - fade_in).astype(np.float32)[:, np.newaxis],
    )


class _Mixer:
    """Consumes each kept run's samples in order and yields the output blocks."""

    def __init__(self, runs: tuple[RunPlan, ...]) -> None:
        self._runs = runs
        self._index = 0
        self._done = 0  # frames of the current run consumed
        self._tail: np.ndarray | None = None  # faded-out end of the previous run
        self._tail_fill = 0
        self._gain_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def finished(self) -> bool:
        return self._index >= len(self._runs)

    @property
    def current(self) -> RunPlan:
        return self._runs[self._index]

    @property
    def index(self) -> int:
        """Index of the current run."""
        return self._index

    @property
    def done(self) -> int:
        """Frames of the current run consumed so far."""
        return self._done

    def _gains(self, frames: int) -> tuple[np.ndarray, np.ndarray]:
        if frames not in self._gain_cache:
            self._gain_cache[frames] = _gains(frames)
        return self._gain_cache[frames]

    def feed(self, chunk: np.ndarray) -> Iterator[np.ndarray]:
        """Take the next ``chunk`` of the current run (it must not go past the run's end)."""
        run = self.current
        k0, k1 = self._done, self._done + chunk.shape[0]
        body_end = run.frames - run.fade_out
        # Fade-in region [0, fade_in).
        if k0 < run.fade_in:
            a, b = k0, min(k1, run.fade_in)
            fade_in, _ = self._gains(run.fade_in)
            mixed = chunk[a - k0 : b - k0] * fade_in[a:b]
            if run.overlaps_previous and self._tail is not None:
                mixed = mixed + self._tail[a:b]
            yield mixed
        # Plain region [fade_in, frames - fade_out).
        a, b = max(k0, run.fade_in), min(k1, body_end)
        if b > a:
            yield chunk[a - k0 : b - k0]
        # Fade-out region [frames - fade_out, frames): held back for the next run.
        a, b = max(k0, body_end, run.fade_in), k1
        if b > a:
            if a == body_end:  # the previous tail has been mixed in by now
                self._tail = np.empty((run.fade_out, chunk.shape[1]), dtype=np.float32)
            assert self._tail is not None
            _, fade_out = self._gains(run.fade_out)
            off = body_end
            self._tail[a - off : b - off] = chunk[a - k0 : b - k0] * fade_out[a - off : b - off]
            self._tail_fill = b - off
        self._done = k1
        if self._done >= run.frames:
            self._index += 1
            self._done = 0
            if self.finished and run.fade_out and self._tail is not None:
                yield self._tail[: self._tail_fill]  # the fade at the very end
            elif run.fade_out == 0:
                self._tail = None
            self._tail_fill = 0


def render_blocks(
    blocks: Iterable[np.ndarray], *, cut_list: CutList, sample_rate: int
) -> Iterator[np.ndarray]:
    """Stream the rendered audio of ``cut_list`` from the source ``blocks``.

    Args:
        blocks: the source as float arrays of shape ``(frames, channels)``, consecutive.
        cut_list: what to keep.
        sample_rate: Hz of the source.

    Yields:
        ``float32`` arrays of shape ``(n, channels)``, no longer than the input blocks;
        together :func:`plan_render` ``(cut_list, sample_rate=...).total_frames`` frames.
        Outside crossfades they are views of the input blocks: use each before asking for
        the next if the source reuses its buffers.

    Raises:
        SourceMismatchError: the source is shorter or longer than ``source_duration_s``
            by more than :data:`SOURCE_DURATION_TOLERANCE_S`.
    """
    plan = plan_render(cut_list, sample_rate=sample_rate)
    mixer = _Mixer(plan.runs)
    tolerance = _to_frames(SOURCE_DURATION_TOLERANCE_S, sample_rate)
    pos = 0
    channels: int | None = None
    for raw in blocks:
        block = np.asarray(raw, dtype=np.float32)
        if block.ndim == 1:
            block = block[:, np.newaxis]
        channels = block.shape[1] if channels is None else channels
        b0, b1 = pos, pos + block.shape[0]
        pos = b1
        while not mixer.finished:
            run, index = mixer.current, mixer.index
            lo = max(run.src_start + mixer.done, b0)
            hi = min(run.src_end, b1)
            if hi <= lo and run.frames > 0:
                break  # the run starts in a later block
            yield from mixer.feed(block[lo - b0 : max(lo, hi) - b0])
            if mixer.index == index:
                break  # the run continues in the next block
    if abs(pos - plan.source_frames) > tolerance:
        raise SourceMismatchError(
            f"the source has {pos / sample_rate:.3f} s of audio, the cut list was made for "
            f"{cut_list.source_duration_s:.3f} s"
        )
    # A source a little shorter than planned: the missing end is silence.
    while not mixer.finished:
        run = mixer.current
        missing = run.frames - mixer.done
        yield from mixer.feed(np.zeros((missing, channels or 1), dtype=np.float32))


def render_cut_list(
    *,
    source_path: str | os.PathLike[str],
    cut_list: CutList,
    out_path: str | os.PathLike[str],
    codec: WriterCodec = "flac",
    bitrate_kbps: int = 128,
    block_frames: int = audio_io.DEFAULT_BLOCK_FRAMES,
) -> RenderReport:
    """Write the kept audio of ``source_path`` to ``out_path``, crossfaded at every cut.

    The output has the source's sample rate and channels and
    ``cut_list.kept_duration_s`` of audio (to the sample). On failure no partial output
    is left behind.

    Raises:
        SourceMismatchError: the source does not match ``cut_list.source_duration_s``.
        The input errors of :func:`pod_audio.io.iter_blocks`.
    """
    info = audio_io.probe(source_path, decode_check=False)
    blocks = audio_io.iter_blocks(
        source_path,
        sample_rate=info.sample_rate,
        channels=info.channels,
        block_frames=block_frames,
    )
    with open_writer(
        out_path,
        sample_rate=info.sample_rate,
        channels=info.channels,
        codec=codec,
        bitrate_kbps=bitrate_kbps,
    ) as writer:
        for chunk in render_blocks(blocks, cut_list=cut_list, sample_rate=info.sample_rate):
            writer.write(chunk)
        frames = writer.frames_written
    return RenderReport(
        duration_s=frames / info.sample_rate,
        frames=frames,
        cuts=cut_list.joins,
        sample_rate=info.sample_rate,
        channels=info.channels,
    )

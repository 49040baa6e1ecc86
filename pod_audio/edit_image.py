"""The edit as a picture: the raw waveform with every removed span coloured by its reason,
and the loudness before and after, as a small PNG (matplotlib, Agg backend).

Two steps, so that the picture can be drawn again after the raw audio is gone:

- :func:`sketch_audio` reduces a file to an :class:`AudioSketch`: the peak level per
  picture column and the momentary loudness (BS.1770 400 ms blocks, every 100 ms, thinned
  to one point per column). A sketch is a few tens of kB of JSON.
- :func:`draw_edit_image` draws a raw sketch, the cut list and, once there is one, the
  final episode's sketch mapped back onto the raw timeline.

Sketches are made at :data:`SKETCH_SAMPLE_RATE` Hz mono: the loudness curve is a picture,
not a measurement (the step's own meters give the numbers printed on it).
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pod_audio.cuts import CutList
from pod_audio.io import iter_blocks, probe
from pod_audio.loudness import LoudnessMeter

__all__ = [
    "AudioSketch",
    "REASON_COLOURS",
    "SKETCH_SAMPLE_RATE",
    "draw_edit_image",
    "map_to_source_s",
    "sketch_audio",
]

SKETCH_SAMPLE_RATE = 16_000
DEFAULT_COLUMNS = 1000
IMAGE_SIZE_PX = (1000, 300)
REASON_COLOURS: dict[str, str] = {
    "filler": "#d62728",
    "pause": "#ff7f0e",
    "leading_silence": "#1f77b4",
    "trailing_silence": "#9467bd",
}
_FLOOR_LUFS = -60.0


@dataclass(frozen=True)
class AudioSketch:
    """A file reduced for drawing. ``peaks`` is the largest absolute sample (full scale 1.0)
    in each of ``len(peaks)`` equal columns of ``duration_s``; ``loudness_lufs`` is the
    momentary loudness at ``loudness_times_s`` (block centres, seconds)."""

    duration_s: float
    peaks: tuple[float, ...]
    loudness_times_s: tuple[float, ...]
    loudness_lufs: tuple[float, ...]

    def to_json(self) -> str:
        return json.dumps({
            "duration_s": round(self.duration_s, 4),
            "peaks": [round(p, 4) for p in self.peaks],
            "loudness_times_s": [round(t, 3) for t in self.loudness_times_s],
            "loudness_lufs": [round(v, 2) for v in self.loudness_lufs],
        })

    @classmethod
    def from_json(cls, text: str | bytes) -> AudioSketch:
        data = json.loads(text)
        return cls(
            duration_s=float(data["duration_s"]),
            peaks=tuple(float(p) for p in data["peaks"]),
            loudness_times_s=tuple(float(t) for t in data["loudness_times_s"]),
            loudness_lufs=tuple(float(v) for v in data["loudness_lufs"]),
        )


def sketch_audio(path: str | os.PathLike[str], *, columns: int = DEFAULT_COLUMNS) -> AudioSketch:
    """Peaks per column and the momentary loudness of ``path``, decoded once, streaming."""
    duration_s = max(probe(path, decode_check=False).duration_s, 1e-6)
    peaks = np.zeros(columns)
    meter = LoudnessMeter(sample_rate=SKETCH_SAMPLE_RATE, channels=1)
    frames_per_column = duration_s * SKETCH_SAMPLE_RATE / columns
    position = 0
    for block in iter_blocks(path, sample_rate=SKETCH_SAMPLE_RATE, channels=1):
        meter.add(block)
        level = np.abs(block[:, 0])
        index = np.minimum(((np.arange(len(level)) + position) / frames_per_column).astype(int),
                           columns - 1)
        np.maximum.at(peaks, index, level)
        position += len(level)
    lufs = meter.block_loudness_lufs()
    times = 0.2 + 0.1 * np.arange(len(lufs))
    step = max(1, math.ceil(len(lufs) / columns))
    return AudioSketch(
        duration_s=position / SKETCH_SAMPLE_RATE if position else duration_s,
        peaks=tuple(float(p) for p in peaks),
        loudness_times_s=tuple(float(t) for t in times[::step]),
        loudness_lufs=tuple(float(max(v, _FLOOR_LUFS)) for v in lufs[::step]),
    )


def map_to_source_s(times_s: Sequence[float], cut_list: CutList, *, offset_s: float = 0.0) -> np.ndarray:
    """Source (raw) times of output times: ``times_s`` on a timeline where the cleaned audio
    starts at ``offset_s`` (the final episode's intro); NaN for times outside the cleaned
    audio (intro, outro). Inside a crossfade the later run wins."""
    cleaned = np.asarray(times_s, dtype=float) - offset_s
    out = np.full(cleaned.shape, np.nan)
    for src_start_s, src_end_s, out_start_s in cut_list.kept_runs_s:
        inside = (cleaned >= out_start_s) & (cleaned <= out_start_s + (src_end_s - src_start_s))
        out[inside] = src_start_s + (cleaned[inside] - out_start_s)
    return out


def _removed_legend(cut_list: CutList) -> dict[str, str]:
    counts: dict[str, int] = {}
    for span in cut_list.removed_spans:
        counts[span.reason] = counts.get(span.reason, 0) + 1
    seconds = cut_list.removed_s_by_reason()
    return {
        reason: f"{reason.replace('_', ' ')}: {counts[reason]} cut{'s' if counts[reason] > 1 else ''}, "
                  f"{seconds[reason]:.1f} s"
        for reason in REASON_COLOURS if reason in counts
    }


def _draw_waveform(axis, raw: AudioSketch, cut_list: CutList) -> None:
    peaks = np.asarray(raw.peaks)
    x = (np.arange(len(peaks)) + 0.5) * raw.duration_s / len(peaks)
    axis.fill_between(x, -peaks, peaks, color="#555555", linewidth=0)
    labels = _removed_legend(cut_list)
    shown: set[str] = set()
    for span in cut_list.removed_spans:
        colour = REASON_COLOURS.get(span.reason, "#7f7f7f")
        label = labels.get(span.reason) if span.reason not in shown else None
        shown.add(span.reason)
        axis.axvspan(span.start_s, span.end_s, color=colour, alpha=0.45, linewidth=0, label=label)
    axis.set_xlim(0, raw.duration_s)
    axis.set_ylim(-1.05, 1.05)
    axis.set_yticks([])
    if labels:
        axis.legend(loc="upper right", fontsize=7, ncol=len(labels), framealpha=0.8)


def _break_gaps(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NaN between points further apart than three typical steps: no line across a cut."""
    if len(x) < 3:
        return x, y
    steps = np.diff(x)
    gaps = np.flatnonzero(steps > 3 * max(float(np.median(steps)), 1e-6)) + 1
    return np.insert(x, gaps, np.nan), np.insert(y, gaps, np.nan)


def _draw_loudness(axis, raw: AudioSketch, cut_list: CutList, final: AudioSketch | None,
                   final_offset_s: float, numbers: str) -> None:
    axis.plot(raw.loudness_times_s, raw.loudness_lufs, color="#888888", linewidth=0.8,
              label="before (raw)")
    if final is not None:
        mapped = map_to_source_s(final.loudness_times_s, cut_list, offset_s=final_offset_s)
        values = np.asarray(final.loudness_lufs, dtype=float)
        keep = ~np.isnan(mapped)
        order = np.argsort(mapped[keep])
        x, y = _break_gaps(mapped[keep][order], values[keep][order])
        axis.plot(x, y, color="#2ca02c", linewidth=0.9, label="after (final episode)")
    axis.set_xlim(0, raw.duration_s)
    axis.set_ylim(_FLOOR_LUFS, 0)
    axis.set_ylabel("LUFS", fontsize=7)
    axis.set_xlabel("raw timeline (s)", fontsize=7)
    axis.tick_params(labelsize=7)
    axis.legend(loc="lower right", fontsize=7, ncol=2, framealpha=0.8)
    if numbers:
        axis.text(0.005, 0.06, numbers, transform=axis.transAxes, fontsize=7)


def draw_edit_image(
    *,
    raw: AudioSketch,
    cut_list: CutList,
    title: str,
    final: AudioSketch | None = None,
    final_offset_s: float = 0.0,
    numbers: str = "",
) -> bytes:
    """A ``IMAGE_SIZE_PX`` PNG: the raw waveform with removed spans coloured by reason
    (:data:`REASON_COLOURS`), and below it the momentary loudness before (raw) and, when
    ``final`` is given, after (the final episode, mapped onto the raw timeline through
    ``cut_list``; ``final_offset_s`` is where the cleaned audio starts in it). ``numbers``
    is printed under the loudness curves (e.g. integrated loudness in and out)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    dpi = 100
    figure = Figure(figsize=(IMAGE_SIZE_PX[0] / dpi, IMAGE_SIZE_PX[1] / dpi), dpi=dpi)
    wave, loudness = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    figure.subplots_adjust(left=0.05, right=0.995, top=0.91, bottom=0.14, hspace=0.08)
    wave.set_title(" ".join(title.split())[:150], fontsize=8)
    _draw_waveform(wave, raw, cut_list)
    _draw_loudness(loudness, raw, cut_list, final, final_offset_s, numbers)
    return _small_png(figure, dpi=dpi)


def _small_png(figure, *, dpi: int) -> bytes:
    """The figure as a PNG of at most 64 colours (adaptive palette): a third of the
    full-colour size, so the picture stays well under 150 kB in event metadata."""
    from PIL import Image

    raw = io.BytesIO()
    figure.savefig(raw, format="png", dpi=dpi)
    image = Image.open(io.BytesIO(raw.getvalue())).convert("RGB").quantize(colors=64)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()

"""The programme: intro, main and outro decoded as one stream with equal-power crossfades.

Every pass over the programme decodes it again from the source files (:class:`Programme`
starts one), so memory stays at a few blocks whatever the length; the total length is
``intro + main + outro - crossfades``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from pod_audio.io import DEFAULT_BLOCK_FRAMES, iter_blocks

__all__ = ["Programme", "crossfade", "program_blocks"]

_PROGRESS_STEPS = 4
"""Lines per pass over the programme (every 25 %)."""


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


@dataclass(frozen=True)
class Programme:
    """The programme's sources and output format; calling it starts a new pass over it.

    With a ``label`` and a ``progress`` callback, the pass says how far it got every 25 %
    of ``total_s`` ("rendering (pass 2): 50 % of 3612 s").
    """

    main_path: str | os.PathLike[str]
    intro_path: str | os.PathLike[str] | None
    outro_path: str | os.PathLike[str] | None
    crossfade_ms: float
    sample_rate: int
    channels: int
    block_frames: int
    total_s: float
    progress: Callable[[str], None] | None = None

    def __call__(self, label: str | None = None) -> Generator[np.ndarray, None, None]:
        blocks = program_blocks(
            main_path=self.main_path,
            intro_path=self.intro_path,
            outro_path=self.outro_path,
            crossfade_ms=self.crossfade_ms,
            sample_rate=self.sample_rate,
            channels=self.channels,
            block_frames=self.block_frames,
        )
        if self.progress is None or label is None:
            return blocks
        return _reporting(
            blocks, label=label, total_s=self.total_s, sample_rate=self.sample_rate,
            say=self.progress,
        )


def _reporting(
    blocks: Iterator[np.ndarray], *, label: str, total_s: float, sample_rate: int,
    say: Callable[[str], None],
) -> Generator[np.ndarray, None, None]:
    """``blocks`` unchanged, saying how far through the programme they are every 25 %."""
    done = 0
    said = 0
    for block in blocks:
        done += len(block)
        quarter = min(_PROGRESS_STEPS, int(_PROGRESS_STEPS * done / max(1.0, total_s * sample_rate)))
        if quarter > said:
            said = quarter
            say(f"{label}: {100 * quarter // _PROGRESS_STEPS} % of {total_s:.0f} s")
        yield block

"""Signal primitives every audio module shares: one home for each.

Samples are floats with full scale 1.0 (``[-1, 1]``); as 16-bit integers full scale is
32767 (:func:`as_int16`, :func:`write_wav`), so +1.0 and -1.0 map to the same magnitude.
Decibels: amplitude ratios are ``20 log10``, power ratios (mean squares) ``10 log10``;
0 gives ``-inf``, never an error or a warning.
"""

from __future__ import annotations

import math
import os
import wave
from pathlib import Path
from typing import overload

import numpy as np

__all__ = [
    "SAMPLE_RATE",
    "amplitude_to_db",
    "as_int16",
    "channel_layout_name",
    "power_to_db",
    "runs",
    "write_wav",
]

SAMPLE_RATE = 16000
"""Rate of the speech analysis (recogniser, aligner, filler detector), Hz."""

_INT16_FULL_SCALE = 32767.0


def as_int16(samples: np.ndarray) -> np.ndarray:
    """``samples`` as 1-D ``int16``: floats clipped to ``[-1, 1]`` and scaled by 32767,
    ``int16`` passed through (flattened)."""
    samples = np.asarray(samples)
    if samples.dtype == np.int16:
        return samples.reshape(-1)
    scaled = np.clip(samples.reshape(-1).astype(np.float32), -1.0, 1.0) * _INT16_FULL_SCALE
    return np.round(scaled).astype(np.int16)


@overload
def amplitude_to_db(value: float) -> float: ...
@overload
def amplitude_to_db(value: np.ndarray) -> np.ndarray: ...
def amplitude_to_db(value: float | np.ndarray) -> float | np.ndarray:
    """``20 log10(value)``, ``-inf`` for 0 (amplitude ratio to dB), of a number or, element
    by element, of an array."""
    if isinstance(value, np.ndarray):
        with np.errstate(divide="ignore"):
            return 20.0 * np.log10(value)
    return 20.0 * math.log10(value) if value > 0 else float("-inf")


def power_to_db(power: np.ndarray | float) -> np.ndarray:
    """``10 log10(power)`` element by element, ``-inf`` for 0 (power ratio to dB)."""
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(power)


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) indices of the runs of ``True`` in a 1-D boolean mask."""
    edges = np.diff(np.concatenate(([0], np.asarray(mask).astype(np.int8), [0])))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def channel_layout_name(channels: int) -> str:
    """FFmpeg's name of the default layout of ``channels`` channels (``mono``, ``stereo``,
    ``3c``...)."""
    if channels == 1:
        return "mono"
    if channels == 2:
        return "stereo"
    return f"{channels}c"


def write_wav(
    path: str | os.PathLike[str], samples: np.ndarray, *, sample_rate: int = SAMPLE_RATE
) -> Path:
    """Mono 16-bit WAV of float samples in ``[-1, 1]`` (clipped), at ``sample_rate`` Hz.

    Scaled as :func:`as_int16`, but rounded in the samples' own precision (float64 stays
    float64), so a WAV written from float64 samples holds their nearest integers.
    """
    path = Path(path)
    pcm = np.round(np.clip(samples, -1.0, 1.0) * _INT16_FULL_SCALE).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    return path

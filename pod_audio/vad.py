"""Where a chunk holds speech, by the Silero voice activity detector that faster-whisper ships
(``faster_whisper/assets/silero_vad_v6.onnx``, run with onnxruntime; no download).

Loudness alone cannot tell speech from music, a hum or a laugh track: every one of them
stands well above a chunk's noise floor. Silero's network was trained to tell them apart, and
it reads 16 kHz audio at several hundred times realtime on one core.
"""

from __future__ import annotations

import numpy as np

from pod_audio.dsp import SAMPLE_RATE
from pod_audio.intervals import Interval, union

__all__ = ["speech_spans"]

_PAD_MS = 200
"""Each span is widened by this on both sides (a word's soft onset and decay)."""
_MIN_SILENCE_MS = 300
"""Speech less than this apart is one span."""


def speech_spans(pcm: np.ndarray) -> list[Interval]:
    """The stretches ``(start_s, end_s)`` of ``pcm`` (16 kHz mono ``int16``) that hold speech:
    sorted and disjoint, as :mod:`pod_audio.intervals` takes them."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    audio = np.asarray(pcm, dtype=np.float32).reshape(-1) / 32768.0
    if len(audio) == 0:
        return []
    options = VadOptions(min_silence_duration_ms=_MIN_SILENCE_MS, speech_pad_ms=_PAD_MS)
    return union(
        (span["start"] / SAMPLE_RATE, span["end"] / SAMPLE_RATE)
        for span in get_speech_timestamps(audio, options, sampling_rate=SAMPLE_RATE)
    )

"""CMU pocketsphinx as a recogniser: the baseline the benchmarks compare the product against.

It needs no model download and places words on its own 10 ms frames, but gets most
conversational words wrong (see docs/fillers.md).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from typing import Any

import numpy as np

from pod_audio import fillers
from pod_audio.dsp import SAMPLE_RATE, as_int16
from pod_audio.errors import TranscriptionError
from pod_audio.transcript import Word, canonical_filler

__all__ = ["PocketsphinxRecogniser", "decode_segments"]

_FRAMES_PER_S = 100
"""pocketsphinx's frames are 10 ms."""
_MIN_DECODE_S = 0.1
"""Audio shorter than this holds no word: it is not decoded."""


@dataclass(frozen=True)
class PocketsphinxRecogniser:
    """CMU pocketsphinx with its en-US language model, and the acoustic filler detector of
    :mod:`pod_audio.fillers` run over the whole chunk.

    Kept as the baseline the benchmarks compare against: it needs no model download and
    places words on its own 10 ms frames, but gets most conversational words wrong.
    """

    name: str = "pocketsphinx"
    needs_alignment: bool = False
    finds_fillers: bool = True
    detect_fillers: bool = True

    def version(self) -> str:
        try:
            return importlib.metadata.version("pocketsphinx")
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            return "unknown"

    def describe(self) -> dict[str, Any]:
        return {"model": "en-us (pocketsphinx)", "model_sha256": None}

    def recognise(self, samples: np.ndarray) -> list[Word]:
        pcm = as_int16(samples)
        segments = decode_segments(pcm)
        words = [_as_word(seg) for seg in segments if seg.text not in _NON_WORDS]
        if self.detect_fillers:
            found = fillers.detect_fillers(pcm, segments=segments, sample_rate=SAMPLE_RATE)
            words = fillers.apply_fillers(words, found)
        return [w for w in words if w.text != _SPEECH_NOISE]

    def recognise_chunk(self, samples: np.ndarray) -> tuple[list[Word], bool]:
        """As :meth:`recognise`: no second model."""
        return self.recognise(samples), False


_NON_WORDS = frozenset({"<s>", "</s>", "<sil>", "[NOISE]"})
_SPEECH_NOISE = "[SPEECH]"


def decode_segments(pcm: np.ndarray) -> list[Word]:
    """Decode 16 kHz mono ``int16`` samples with pocketsphinx's language model, as one
    utterance.

    Returns every segment of the best path except sentence marks and silences: dictionary
    words (pronunciation variants ``"(2)"`` stripped), ``"[SPEECH]"`` and ``"[NOISE]"``, with
    times in seconds from the first sample and ``confidence`` the segment's posterior
    probability.
    """
    if len(pcm) < _MIN_DECODE_S * SAMPLE_RATE:
        return []
    try:
        from pocketsphinx import Decoder
    except ImportError as exc:  # pragma: no cover - dependency missing
        raise TranscriptionError("pocketsphinx is not installed") from exc
    try:
        # A fresh decoder per utterance: a reused one keeps phone-loop state from the last.
        decoder = Decoder(loglevel="ERROR")
        decoder.start_utt()
        decoder.process_raw(np.ascontiguousarray(pcm, dtype=np.int16).tobytes(), full_utt=True)
        decoder.end_utt()
        if decoder.hyp() is None:
            return []
        segments = list(decoder.seg())
    except (RuntimeError, ValueError) as exc:
        raise TranscriptionError(f"pocketsphinx failed: {exc}") from exc
    out: list[Word] = []
    for seg in segments:
        text = seg.word[: seg.word.rindex("(")] if seg.word.endswith(")") else seg.word
        if text in ("<s>", "</s>", "<sil>"):
            continue
        prob = float(seg.prob) if np.isfinite(seg.prob) else 0.0
        out.append(
            Word(text, seg.start_frame / _FRAMES_PER_S, (seg.end_frame + 1) / _FRAMES_PER_S,
                 confidence=min(1.0, max(0.0, prob)))
        )
    return out


def _as_word(seg: Word) -> Word:
    if seg.text == _SPEECH_NOISE:
        return seg
    text = seg.text.lower()
    canonical = canonical_filler(text)
    if canonical is not None:
        return Word(canonical, seg.start_s, seg.end_s, seg.confidence, is_filler=True)
    return Word(text, seg.start_s, seg.end_s, seg.confidence)

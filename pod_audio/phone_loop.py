"""Pocketsphinx's phone loop: which phones a stretch of audio holds, with no words.

Kept apart from :mod:`pod_audio.filler_candidates` so that a search worker
(:mod:`pod_audio.search_workers`) that runs it imports numpy and pocketsphinx only.
"""

from __future__ import annotations

import os

import numpy as np

from pod_audio.errors import TranscriptionError
from pod_audio.pronunciations import dictionary_for
from pod_audio.transcript import Word

__all__ = ["phone_segments"]

FRAMES_PER_S = 100


def phone_segments(pcm: np.ndarray) -> list[Word]:
    """Decode 16 kHz ``int16`` samples with pocketsphinx's phone loop (no words).

    Returns one :class:`Word` per phone (text the phone, e.g. ``"AH"``, ``"+SPN+"``,
    ``"SIL"``), times in seconds from the first sample.
    """
    decoder = _phone_decoder()
    try:
        decoder.start_utt()
        decoder.process_raw(np.ascontiguousarray(pcm, dtype=np.int16).tobytes(), full_utt=True)
        decoder.end_utt()
        if decoder.hyp() is None:
            return []
        return [
            Word(seg.word, seg.start_frame / FRAMES_PER_S, (seg.end_frame + 1) / FRAMES_PER_S)
            for seg in decoder.seg()
        ]
    except RuntimeError as exc:
        raise TranscriptionError(f"pocketsphinx phone loop failed: {exc}") from exc


def _phone_decoder():  # noqa: ANN202 - pocketsphinx.Decoder
    """A fresh phone-loop decoder (a reused one carries state between utterances)."""
    try:
        from pocketsphinx import Decoder, get_model_path
    except ImportError as exc:  # pragma: no cover - dependency missing
        raise TranscriptionError("pocketsphinx is not installed") from exc
    phone_lm = os.path.join(get_model_path(), "en-us", "en-us-phone.lm.bin")
    try:
        # The phone loop spells no words: a one-word dictionary spares reading all of CMUdict.
        with dictionary_for(["uh"]) as dictionary:
            return Decoder(loglevel="ERROR", lm=None, allphone=phone_lm, dict=dictionary)
    except (RuntimeError, ValueError) as exc:
        raise TranscriptionError(f"pocketsphinx cannot start its phone loop: {exc}") from exc

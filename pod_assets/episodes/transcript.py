"""``transcript``: words with timings, fillers flagged."""


import logging
import tempfile
from pathlib import Path

import dagster as dg

from pod_assets import layout
from pod_assets.episode_asset import episode_asset, record_metrics, step_name
from pod_assets.episodes.raw_audio import raw_audio, read_raw
from pod_assets.status import EpisodeStep, episode_step
from pod_audio.asr import FinishedChunk, chunk_from_json, chunk_to_json
from pod_audio.transcript import Transcript
from pod_resources.catalog import CatalogResource
from pod_resources.media_links import links_metadata
from pod_resources.show import ShowResource
from pod_resources.storage import ObjectNotFoundError, ObjectStore
from pod_resources.transcriber import TranscriberResource

TIMINGS_CHECK = "transcript_timings_valid"
_TOLERANCE_S = 0.05
_PREVIEW_WORDS = 80


def timing_problems(transcript: Transcript, *, audio_duration_s: float) -> list[str]:
    """Words out of order, with negative length, or outside the audio."""
    problems: list[str] = []
    previous_start = 0.0
    for index, word in enumerate(transcript.words):
        if word.end_s < word.start_s:
            problems.append(f"word {index} {word.text!r} ends before it starts")
        if word.start_s < previous_start - 1e-9:
            problems.append(f"word {index} {word.text!r} starts before the word before it")
        if word.start_s < 0 or word.end_s > audio_duration_s + _TOLERANCE_S:
            problems.append(
                f"word {index} {word.text!r} at {word.start_s:.2f}-{word.end_s:.2f} s lies "
                f"outside the audio (0-{audio_duration_s:.2f} s)"
            )
        previous_start = word.start_s
        if len(problems) >= 5:
            break
    return problems


class StoredChunks:
    """Finished transcription chunks kept in the object store, beside the episode.

    ``episodes/<ep>/transcript-chunks/<key>.json``; a key names the recogniser, its
    settings and the chunk's sample range, and the episode's raw bytes are immutable, so a
    stored chunk is reused only for exactly the audio and engine that made it. An
    interrupted or retried step loses at most the chunk it was working on. The chunks are
    deleted once ``transcript.json`` is written.
    """

    def __init__(self, store: ObjectStore, episode_id: str):
        self.store = store
        self.prefix = layout.episode_key(episode_id, "transcript-chunks/")
        self.reused = 0

    def _key(self, key: str) -> str:
        return f"{self.prefix}{key}.json"

    def get(self, key: str) -> FinishedChunk | None:
        try:
            chunk = chunk_from_json(self.store.read_bytes(self._key(key)))
        except ObjectNotFoundError:
            return None
        self.reused += 1
        return chunk

    def put(self, key: str, chunk: FinishedChunk) -> None:
        self.store.write_bytes(self._key(key), chunk_to_json(chunk), content_type="application/json")

    def clear(self) -> None:
        for info in list(self.store.list(self.prefix)):
            self.store.delete(info.key)


def _progress_logger(log: logging.Logger | dg.DagsterLogManager, episode_id: str):
    """Logs transcription progress about every 10 % (and at the end)."""
    last = [-1]

    def report(done_s: float, total_s: float) -> None:
        tenth = int(10 * done_s / total_s) if total_s > 0 else 10
        if tenth > last[0]:
            last[0] = tenth
            log.info(f"transcript {episode_id}: {done_s:.0f} of {total_s:.0f} s recognised")

    return report


def transcript_preview(transcript: Transcript) -> str:
    shown = [f"**{w.text}**" if w.is_filler else w.text for w in transcript.words[:_PREVIEW_WORDS]]
    more = " …" if len(transcript.words) > _PREVIEW_WORDS else ""
    return (" ".join(shown) + more) or "_(no speech recognised)_"


@episode_asset(
    deps=[raw_audio],
    kinds={"audio", "json"},
    pool="asr",
    checks={TIMINGS_CHECK: "Word times are monotonic and inside the audio."},
)
def transcript(
    context: dg.AssetExecutionContext,
    store: ObjectStore,
    catalog: CatalogResource,
    transcriber: TranscriberResource,
    show: ShowResource,
) -> dg.MaterializeResult:
    """Words with start and end times, confidence and ``is_filler``, from the raw audio.

    Whisper writes the words; forced alignment puts each on its own span; fillers are found
    only between words. Written to ``episodes/<ep>/transcript.json`` with the engine, model
    and model checksum. Finished chunks are kept in the store while the step runs, so a
    retry or a resumed run goes on from the first unfinished chunk.
    """
    cat = catalog.get_catalog()
    with episode_step(context, cat, step=step_name(context)) as step:
        chunks = StoredChunks(store, step.episode_id)
        with tempfile.TemporaryDirectory(prefix="pod-transcript-") as scratch:
            local = read_raw(store, step.episode, Path(scratch))
            result = transcriber.transcribe(
                local, cache=chunks, progress=_progress_logger(context.log, step.episode_id)
            )
        key = layout.episode_key(step.episode_id, layout.TRANSCRIPT)
        store.write_bytes(key, result.to_json().encode(), content_type="application/json")
        chunks.clear()
        cat.record_artifacts(step.episode_id, {"transcript": store.uri(key)})
        metadata = record_metrics(cat, step.episode_id, {
            "words": len(result.words),
            "speech_s": round(result.speech_s, 3),
            "fillers_detected": result.filler_count,
        }, shown_as={"fillers_detected": "fillers"})
        return dg.MaterializeResult(
            metadata={
                **metadata,
                **_engine_metadata(result),
                "chunks_resumed": dg.MetadataValue.int(chunks.reused),
                "preview": dg.MetadataValue.md(transcript_preview(result)),
                "uri": dg.MetadataValue.url(store.uri(key)),
                **links_metadata(store, show.media_links(), {"transcript": key}),
            },
            check_results=[_timings_check(step, result)],
        )


def _engine_metadata(result: Transcript) -> dict[str, dg.MetadataValue]:
    """Which recogniser, model and aligner wrote the words."""
    return {
        "engine": dg.MetadataValue.text(f"{result.engine} {result.engine_version}"),
        "model": dg.MetadataValue.text(str(result.extra.get("model", "n/a"))),
        "model_sha256": dg.MetadataValue.text(str(result.extra.get("model_sha256") or "n/a")),
        "aligner": dg.MetadataValue.text(str(result.extra.get("aligner") or "none")),
        "second_opinion": dg.MetadataValue.text(_second_opinion(result.extra)),
    }


def _second_opinion(extra: dict) -> str:
    """Which model heard the chunks the first was unsure of, and how many it heard."""
    model = extra.get("second_opinion")
    if not model:
        return "none"
    return (
        f"{model} heard {extra.get('chunks_second_opinion', 0)} of the "
        f"{extra.get('chunks', 0)} chunks (those whose words' mean probability was below "
        f"{extra.get('second_opinion_below')})"
    )


def _timings_check(step: EpisodeStep, result: Transcript) -> dg.AssetCheckResult:
    audio_duration_s = step.episode.metrics.get("duration_s", result.duration_s)
    problems = timing_problems(result, audio_duration_s=audio_duration_s)
    return step.check(
        TIMINGS_CHECK,
        passed=not problems,
        description="; ".join(problems) or f"{len(result.words)} words in order",
        metadata={"words": len(result.words)},
    )

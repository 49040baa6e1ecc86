"""``transcript``: words with timings, fillers flagged."""


import tempfile
from pathlib import Path

import dagster as dg

from pod_assets import layout
from pod_assets.partitions import episode_partitions
from pod_assets.raw_audio import raw_audio
from pod_assets.status import TRANSIENT_RETRY_POLICY, episode_step
from pod_audio.transcript import Transcript
from pod_resources.catalog import CatalogResource
from pod_resources.storage import ObjectStore
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


def transcript_preview(transcript: Transcript) -> str:
    shown = [f"**{w.text}**" if w.is_filler else w.text for w in transcript.words[:_PREVIEW_WORDS]]
    more = " …" if len(transcript.words) > _PREVIEW_WORDS else ""
    return (" ".join(shown) + more) or "_(no speech recognised)_"


@dg.asset(
    partitions_def=episode_partitions,
    deps=[raw_audio],
    group_name="episodes",
    kinds={"audio", "json"},
    retry_policy=TRANSIENT_RETRY_POLICY,
    pool="asr",
    check_specs=[
        dg.AssetCheckSpec(
            TIMINGS_CHECK,
            asset="transcript",
            blocking=True,
            description="Word times are monotonic and inside the audio.",
        )
    ],
)
def transcript(
    context: dg.AssetExecutionContext,
    store: ObjectStore,
    catalog: CatalogResource,
    transcriber: TranscriberResource,
) -> dg.MaterializeResult:
    """Words with start and end times, confidence and ``is_filler``, from the raw audio.

    Written to ``episodes/<ep>/transcript.json`` together with the engine's name and
    version. Long audio is split at silences and recognised on all cores.
    """
    cat = catalog.get_catalog()
    with episode_step(context, cat, step="transcript") as step:
        raw_key = step.episode.raw_key or layout.raw_key(step.episode_id, step.episode.source_name)
        with tempfile.TemporaryDirectory(prefix="pod-transcript-") as scratch:
            local = Path(scratch) / Path(raw_key).name
            store.read_to_path(raw_key, local)
            result = transcriber.transcribe(local)
        key = layout.episode_key(step.episode_id, layout.TRANSCRIPT)
        store.write_bytes(key, result.to_json().encode(), content_type="application/json")
        cat.record_artifacts(step.episode_id, {"transcript": store.uri(key)})
        cat.record_metrics(
            step.episode_id,
            {"words": len(result.words), "speech_s": round(result.speech_s, 3),
             "fillers_detected": result.filler_count},
        )
        audio_duration_s = step.episode.metrics.get("duration_s", result.duration_s)
        problems = timing_problems(result, audio_duration_s=audio_duration_s)
        check = step.check(
            TIMINGS_CHECK,
            passed=not problems,
            description="; ".join(problems) or f"{len(result.words)} words in order",
            metadata={"words": len(result.words)},
        )
        return dg.MaterializeResult(
            metadata={
                "words": dg.MetadataValue.int(len(result.words)),
                "speech_s": dg.MetadataValue.float(float(round(result.speech_s, 2))),
                "fillers": dg.MetadataValue.int(result.filler_count),
                "engine": dg.MetadataValue.text(f"{result.engine} {result.engine_version}"),
                "preview": dg.MetadataValue.md(transcript_preview(result)),
                "uri": dg.MetadataValue.url(store.uri(key)),
            },
            check_results=[check],
        )

"""``cleaned_audio``: fillers removed, long pauses shortened, timings remapped."""

import tempfile
from pathlib import Path

import dagster as dg

from pod_assets import layout
from pod_assets.partitions import episode_partitions
from pod_assets.status import TRANSIENT_RETRY_POLICY, episode_step
from pod_assets.transcript import transcript
from pod_audio.cuts import CutList, build_cut_list, remap_transcript
from pod_audio.render import render_cut_list
from pod_audio.silence import detect_silences_in_file
from pod_audio.transcript import Transcript
from pod_resources.catalog import CatalogResource
from pod_resources.storage import ObjectStore

CONSISTENT_CHECK = "cleaned_transcript_matches_cut_list"
NOT_LONGER_CHECK = "cleaned_not_longer_than_raw"
_TABLE_ROWS = 200
_TIME_TOLERANCE_S = 0.002


class CleaningConfig(dg.Config):
    """Per run, so a backfill can reprocess episodes with other settings."""

    max_pause_ms: float = 700.0
    """Pauses longer than this are shortened to it (not deleted)."""
    margin_ms: float = 120.0
    """Silence kept next to speech at every cut."""
    crossfade_ms: float = 20.0
    """Crossfade at every cut, so no click."""
    remove_fillers: bool = True
    """Cut the words the transcript flags as fillers (um, uh, er, ah, hmm)."""
    min_silence_ms: float = 300.0
    """Shortest stretch counted as a pause."""


def consistency_problems(
    *, source: Transcript, cleaned: Transcript, cut_list: CutList, rendered_s: float
) -> list[str]:
    """Does the stored cleaned transcript follow from the stored transcript and cut list?"""
    problems: list[str] = []
    expected = remap_transcript(source, cut_list)
    if len(expected.words) != len(cleaned.words):
        problems.append(
            f"cleaned transcript has {len(cleaned.words)} words, the cut list keeps {len(expected.words)}"
        )
    for index, (want, got) in enumerate(zip(expected.words, cleaned.words, strict=False)):
        if want.text != got.text or abs(want.start_s - got.start_s) > _TIME_TOLERANCE_S:
            problems.append(
                f"word {index} {got.text!r} at {got.start_s:.3f} s, expected {want.text!r} at {want.start_s:.3f} s"
            )
            break
    if abs(cut_list.kept_duration_s - rendered_s) > 0.01:
        problems.append(
            f"rendered audio is {rendered_s:.3f} s, the cut list keeps {cut_list.kept_duration_s:.3f} s"
        )
    if cleaned.words and cleaned.words[-1].end_s > rendered_s + 0.05:
        problems.append(f"last word ends at {cleaned.words[-1].end_s:.2f} s, after the audio")
    return problems


def cut_table(cut_list: CutList) -> dg.TableMetadataValue:
    spans = cut_list.spans[:_TABLE_ROWS]
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                {"start_s": round(s.start_s, 3), "end_s": round(s.end_s, 3),
                 "action": s.action, "reason": s.reason}
            )
            for s in spans
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("start_s", "float"),
                dg.TableColumn("end_s", "float"),
                dg.TableColumn("action", "string"),
                dg.TableColumn("reason", "string"),
            ]
        ),
    )


@dg.asset(
    partitions_def=episode_partitions,
    deps=[transcript],
    group_name="episodes",
    kinds={"audio", "flac"},
    retry_policy=TRANSIENT_RETRY_POLICY,
    pool="cpu",
    check_specs=[
        dg.AssetCheckSpec(CONSISTENT_CHECK, asset="cleaned_audio", blocking=True,
                          description="The cleaned transcript is the transcript remapped through the cut list."),
        dg.AssetCheckSpec(NOT_LONGER_CHECK, asset="cleaned_audio", blocking=True,
                          description="Cleaning never makes an episode longer."),
    ],
)
def cleaned_audio(
    context: dg.AssetExecutionContext,
    config: CleaningConfig,
    store: ObjectStore,
    catalog: CatalogResource,
) -> dg.MaterializeResult:
    """The episode with filler words removed and long pauses shortened, crossfaded at
    every cut. Writes ``cleaned.flac``, ``cut_list.json`` (every kept and removed span with
    its reason) and ``cleaned_transcript.json`` (word times remapped) in this one step, so
    whatever runs next finds all three."""
    cat = catalog.get_catalog()
    with episode_step(context, cat, step="cleaned_audio") as step:
        episode = step.episode
        raw_key = episode.raw_key or layout.raw_key(episode.episode_id, episode.source_name)
        keys = {
            "cleaned_audio": layout.episode_key(episode.episode_id, layout.CLEANED_AUDIO),
            "cut_list": layout.episode_key(episode.episode_id, layout.CUT_LIST),
            "cleaned_transcript": layout.episode_key(episode.episode_id, layout.CLEANED_TRANSCRIPT),
        }
        source = Transcript.from_json(
            store.read_bytes(layout.episode_key(episode.episode_id, layout.TRANSCRIPT))
        )
        with tempfile.TemporaryDirectory(prefix="pod-clean-") as scratch:
            raw_path = Path(scratch) / Path(raw_key).name
            store.read_to_path(raw_key, raw_path)
            silence = detect_silences_in_file(raw_path, min_silence_ms=config.min_silence_ms)
            cut_list = build_cut_list(
                words=source.words,
                silences=silence.silences,
                duration_s=silence.duration_s,
                max_pause_ms=config.max_pause_ms,
                margin_ms=config.margin_ms,
                crossfade_ms=config.crossfade_ms,
                remove_fillers=config.remove_fillers,
            )
            cleaned_path = Path(scratch) / layout.CLEANED_AUDIO
            rendered = render_cut_list(source_path=raw_path, cut_list=cut_list, out_path=cleaned_path)
            cleaned = remap_transcript(source, cut_list)
            store.write_file(keys["cleaned_audio"], cleaned_path, content_type="audio/flac")
        store.write_bytes(keys["cut_list"], cut_list.to_json().encode(), content_type="application/json")
        store.write_bytes(keys["cleaned_transcript"], cleaned.to_json().encode(), content_type="application/json")

        removed = cut_list.removed_s_by_reason()
        fillers_removed = source.filler_count - cleaned.filler_count
        metrics = {
            "cleaned_duration_s": round(rendered.duration_s, 3),
            "pauses_removed_s": round(removed.get("pause", 0.0), 3),
            "silence_trimmed_s": round(removed.get("leading_silence", 0.0) + removed.get("trailing_silence", 0.0), 3),
            "fillers_removed": fillers_removed,
            "cuts": rendered.cuts,
            "noise_floor_dbfs": round(max(silence.noise_floor_dbfs, -200.0), 1),
        }
        cat.record_metrics(episode.episode_id, metrics)
        cat.record_artifacts(episode.episode_id, {stage: store.uri(key) for stage, key in keys.items()})

        # Checks read back what was stored: they judge the durable outputs.
        stored_cut_list = CutList.from_json(store.read_bytes(keys["cut_list"]))
        stored_cleaned = Transcript.from_json(store.read_bytes(keys["cleaned_transcript"]))
        problems = consistency_problems(
            source=source, cleaned=stored_cleaned, cut_list=stored_cut_list, rendered_s=rendered.duration_s
        )
        raw_duration_s = silence.duration_s
        checks = [
            step.check(CONSISTENT_CHECK, passed=not problems,
                       description="; ".join(problems) or f"{len(stored_cleaned.words)} words remapped exactly"),
            step.check(NOT_LONGER_CHECK, passed=rendered.duration_s <= raw_duration_s + 0.001,
                       description=f"cleaned {rendered.duration_s:.2f} s, raw {raw_duration_s:.2f} s",
                       metadata={"cleaned_s": rendered.duration_s, "raw_s": raw_duration_s}),
        ]
        return dg.MaterializeResult(
            metadata={
                "cleaned_duration_s": dg.MetadataValue.float(metrics["cleaned_duration_s"]),
                "raw_duration_s": dg.MetadataValue.float(round(raw_duration_s, 3)),
                "pauses_removed_s": dg.MetadataValue.float(metrics["pauses_removed_s"]),
                "silence_trimmed_s": dg.MetadataValue.float(metrics["silence_trimmed_s"]),
                "fillers_removed": dg.MetadataValue.int(fillers_removed),
                "cuts": dg.MetadataValue.int(rendered.cuts),
                "noise_floor_dbfs": dg.MetadataValue.float(metrics["noise_floor_dbfs"]),
                "settings": dg.MetadataValue.json(config.model_dump()),
                "cut_list": cut_table(cut_list),
                "uri": dg.MetadataValue.url(store.uri(keys["cleaned_audio"])),
            },
            check_results=checks,
        )

"""``cleaned_audio``: fillers removed, long pauses shortened, timings remapped."""

import tempfile
from pathlib import Path

import dagster as dg

from pod_assets import layout
from pod_assets.episode_asset import episode_asset, record_metrics, step_name
from pod_assets.episodes.cleaned_set import CleanedSet, write_cleaned_set
from pod_assets.episodes.edit_review import write_edit_review
from pod_assets.episodes.raw_audio import read_raw
from pod_assets.episodes.transcript import transcript
from pod_assets.status import EpisodeStep, episode_step
from pod_audio.cleaning import Cleaning, clean_recording
from pod_audio.cuts import CutList, remap_transcript
from pod_audio.io import probe
from pod_audio.transcript import Transcript
from pod_resources.catalog import CatalogResource, Episode
from pod_resources.media_links import links_metadata
from pod_resources.show import ShowResource
from pod_resources.storage import ObjectInfo, ObjectStore

CONSISTENT_CHECK = "cleaned_transcript_matches_cut_list"
NOT_LONGER_CHECK = "cleaned_not_longer_than_raw"
CHECKS = {
    CONSISTENT_CHECK: "The cleaned transcript is the transcript remapped through the cut list.",
    NOT_LONGER_CHECK: "Cleaning never makes an episode longer.",
}
_TIME_TOLERANCE_S = 0.002
OUTPUTS: dict[str, str] = {
    "cleaned_audio": layout.CLEANED_AUDIO,
    "cut_list": layout.CUT_LIST,
    "cleaned_transcript": layout.CLEANED_TRANSCRIPT,
}
"""Artifact name -> file name under ``episodes/<ep>/``: the set one cleaning writes whole."""


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


@episode_asset(deps=[transcript], kinds={"audio", "flac"}, pool="cpu", checks=CHECKS)
def cleaned_audio(
    context: dg.AssetExecutionContext, config: CleaningConfig, store: ObjectStore,
    catalog: CatalogResource, show: ShowResource,
) -> dg.MaterializeResult:
    """The episode with filler words removed and long pauses shortened, crossfaded at
    every cut. Writes ``cleaned.flac``, ``cut_list.json`` (every kept and removed span with
    its reason) and ``cleaned_transcript.json`` (word times remapped) in this one step, then
    ``cleaned_set.json`` naming the three as written, so whatever runs next finds all three
    of one run (:mod:`pod_assets.episodes.cleaned_set`)."""
    cat = catalog.get_catalog()
    with episode_step(context, cat, step=step_name(context)) as step:
        episode = step.episode
        source = Transcript.from_json(
            store.read_bytes(layout.episode_key(episode.episode_id, layout.TRANSCRIPT))
        )
        with tempfile.TemporaryDirectory(prefix="pod-clean-") as scratch:
            raw_path = read_raw(store, episode, Path(scratch))
            cleaned_path = Path(scratch) / layout.CLEANED_AUDIO
            cleaning = clean_recording(raw_path, source, out_path=cleaned_path, **config.model_dump())
            audio = store.write_file(_key(episode, "cleaned_audio"), cleaned_path, content_type="audio/flac")
            review = write_edit_review(
                store, episode_id=episode.episode_id, title=episode.title, raw_path=raw_path,
                raw_name=raw_path.name, channels=probe(raw_path, decode_check=False).channels,
                cut_list=cleaning.cut_list, transcript=source, links=show.media_links(),
            )
        cleaned_set = _write_rest_and_set(store, episode, cleaning, audio)
        metadata = record_metrics(cat, episode.episode_id, _metrics(cleaning, source))
        keys = {name: key for name, (key, _) in cleaned_set.objects.items()}
        uris = {name: store.uri(key) for name, key in {**keys, **review.keys}.items()}
        cat.record_artifacts(episode.episode_id, uris)
        return dg.MaterializeResult(
            metadata={
                **metadata,
                "raw_duration_s": dg.MetadataValue.float(round(cleaning.silence.duration_s, 3)),
                "settings": dg.MetadataValue.json(config.model_dump()),
                **review.metadata,
                **links_metadata(store, show.media_links(), keys),
                "uri": dg.MetadataValue.url(store.uri(keys["cleaned_audio"])),
            },
            check_results=_checks(step, store, cleaned_set, source=source, cleaning=cleaning),
        )


def _key(episode: Episode, output: str) -> str:
    return layout.episode_key(episode.episode_id, OUTPUTS[output])


def _write_rest_and_set(
    store: ObjectStore, episode: Episode, cleaning: Cleaning, audio: ObjectInfo
) -> CleanedSet:
    """Store the cut list and the cleaned transcript after the audio, then the set of the three."""
    json_type = "application/json"
    written = {
        "cleaned_audio": audio,
        "cut_list": store.write_bytes(
            _key(episode, "cut_list"), cleaning.cut_list.to_json().encode(), content_type=json_type
        ),
        "cleaned_transcript": store.write_bytes(
            _key(episode, "cleaned_transcript"), cleaning.cleaned.to_json().encode(), content_type=json_type
        ),
    }
    return write_cleaned_set(store, episode.episode_id, written)


def _metrics(cleaning: Cleaning, source: Transcript) -> dict[str, float | int]:
    removed = cleaning.cut_list.removed_s_by_reason()
    return {
        "cleaned_duration_s": round(cleaning.rendered.duration_s, 3),
        "pauses_removed_s": round(removed.get("pause", 0.0), 3),
        "silence_trimmed_s": round(removed.get("leading_silence", 0.0) + removed.get("trailing_silence", 0.0), 3),
        "fillers_removed": source.filler_count - cleaning.cleaned.filler_count,
        "cuts": cleaning.rendered.cuts,
        "noise_floor_dbfs": round(max(cleaning.silence.noise_floor_dbfs, -200.0), 1),
    }


def _checks(
    step: EpisodeStep, store: ObjectStore, cleaned_set: CleanedSet, *, source: Transcript, cleaning: Cleaning
) -> list[dg.AssetCheckResult]:
    """Both blocking checks; they read back what was stored: they judge the durable outputs."""
    stored_cut_list = CutList.from_json(store.read_bytes(cleaned_set.objects["cut_list"][0]))
    stored_cleaned = Transcript.from_json(store.read_bytes(cleaned_set.objects["cleaned_transcript"][0]))
    rendered_s, raw_s = cleaning.rendered.duration_s, cleaning.silence.duration_s
    problems = consistency_problems(
        source=source, cleaned=stored_cleaned, cut_list=stored_cut_list, rendered_s=rendered_s
    )
    return [
        step.check(CONSISTENT_CHECK, passed=not problems,
                   description="; ".join(problems) or f"{len(stored_cleaned.words)} words remapped exactly"),
        step.check(NOT_LONGER_CHECK, passed=rendered_s <= raw_s + 0.001,
                   description=f"cleaned {rendered_s:.2f} s, raw {raw_s:.2f} s",
                   metadata={"cleaned_s": rendered_s, "raw_s": raw_s}),
    ]

"""``subtitles``: WebVTT, SRT and the Podcasting 2.0 JSON transcript on the final timeline,
with a blocking check that reads them back with real parsers (webvtt-py, srt, json).

The files are written from the stored cleaned transcript; the check recomputes what they
must say from the *raw* transcript through the stored cut list (:func:`remap_transcript`)
and the intro offset ``final_episode`` recorded, so a subtitle that drifted from the audio,
a cue over 7 s or a line over its limit fails the episode.
"""


import html
import json

import dagster as dg
import srt
import webvtt

from pod_assets import layout
from pod_assets.episode_asset import episode_asset, step_name
from pod_assets.episodes.final_episode import final_episode
from pod_assets.status import EpisodeInputError, episode_step
from pod_audio.cuts import CutList, remap_transcript
from pod_audio.subtitles import (
    SRT_LIMITS,
    VTT_LIMITS,
    Cue,
    CueLimits,
    build_cues,
    final_timeline_words,
    to_podcast_json,
    to_srt,
    to_webvtt,
)
from pod_audio.transcript import Transcript, Word
from pod_resources.catalog import CatalogResource, Episode
from pod_resources.storage import ObjectStore

SUBTITLES_CHECK = "subtitles_match_cut_list"
FORMATS: dict[str, tuple[str, str]] = {
    "subtitles_vtt": (layout.SUBTITLES_VTT, "text/vtt"),
    "subtitles_srt": (layout.SUBTITLES_SRT, "application/x-subrip"),
    "transcript_json": (layout.TRANSCRIPT_JSON, "application/json"),
}
"""Artifact name -> (file name, MIME type), as the feed's ``podcast:transcript`` lists them."""
_TOLERANCE_MS = 1


def intro_offset_s(episode: Episode) -> float:
    """Where the cleaned audio starts in the final MP3, as ``final_episode`` recorded it."""
    offset = episode.metrics.get("intro_offset_s")
    if offset is None:
        raise EpisodeInputError(
            f"{episode.episode_id} was mastered before final_episode recorded its intro offset; "
            "materialise final_episode again"
        )
    return float(offset)


def _clock_ms(text: str) -> int:
    hours, minutes, rest = text.split(":")
    seconds, _, millis = rest.partition(".")
    return ((int(hours) * 60 + int(minutes)) * 60 + int(seconds)) * 1000 + int(millis or 0)


def _parsed_vtt(text: str) -> list[Cue]:
    return [
        Cue(_clock_ms(c.start), _clock_ms(c.end), tuple(html.unescape(line) for line in c.lines))
        for c in webvtt.from_string(text)
    ]


def _parsed_srt(text: str) -> list[Cue]:
    return [
        Cue(round(s.start.total_seconds() * 1000), round(s.end.total_seconds() * 1000),
            tuple(s.content.split("\n")))
        for s in srt.parse(text)
    ]


def _cue_problems(name: str, parsed: list[Cue], expected: list[Cue], limits: CueLimits) -> list[str]:
    problems = []
    if len(parsed) != len(expected):
        problems.append(f"{name}: {len(parsed)} cues, expected {len(expected)}")
    for i, (got, want) in enumerate(zip(parsed, expected, strict=False), start=1):
        if abs(got.start_ms - want.start_ms) > _TOLERANCE_MS or abs(got.end_ms - want.end_ms) > _TOLERANCE_MS:
            problems.append(f"{name} cue {i}: {got.start_ms}..{got.end_ms} ms, the cut list gives "
                            f"{want.start_ms}..{want.end_ms} ms")
        if got.words != want.words:
            problems.append(f"{name} cue {i}: text differs from the transcript")
        if got.end_ms - got.start_ms > limits.max_cue_s * 1000:
            problems.append(f"{name} cue {i} lasts {got.end_ms - got.start_ms} ms (max {limits.max_cue_s:g} s)")
        if len(got.lines) > limits.max_lines or any(len(line) > limits.max_line_chars for line in got.lines):
            problems.append(f"{name} cue {i}: more than {limits.max_lines} lines of {limits.max_line_chars}")
    return problems[:20]


def _json_problems(text: str, expected: list[Word]) -> list[str]:
    segments = json.loads(text)["segments"]
    if len(segments) != len(expected):
        return [f"JSON transcript: {len(segments)} words, the cut list keeps {len(expected)}"]
    problems = []
    for i, (seg, word) in enumerate(zip(segments, expected, strict=True), start=1):
        off_ms = max(abs(seg["startTime"] - word.start_s), abs(seg["endTime"] - word.end_s)) * 1000
        if off_ms > _TOLERANCE_MS or seg["body"] != word.text:
            problems.append(f"JSON word {i} {seg['body']!r} is {off_ms:.0f} ms from the cut list's mapping")
    return problems[:20]


def subtitle_problems(
    *, vtt_text: str, srt_text: str, json_text: str, raw: Transcript, cut_list: CutList, offset_s: float
) -> list[str]:
    """What is wrong with the stored subtitles against the raw transcript through the cut
    list, shifted by ``offset_s``; empty when they agree to the millisecond."""
    words = final_timeline_words(remap_transcript(raw, cut_list).words, offset_s=offset_s)
    try:
        return [
            *_cue_problems("WebVTT", _parsed_vtt(vtt_text), build_cues(words, limits=VTT_LIMITS), VTT_LIMITS),
            *_cue_problems("SRT", _parsed_srt(srt_text), build_cues(words, limits=SRT_LIMITS), SRT_LIMITS),
            *_json_problems(json_text, words),
        ]
    except (webvtt.errors.MalformedFileError, srt.SRTParseError, ValueError, KeyError, TypeError) as exc:
        return [f"subtitles do not parse: {type(exc).__name__}: {exc}"]


def _write(store: ObjectStore, episode_id: str, words: list[Word]) -> dict[str, str]:
    texts = {
        "subtitles_vtt": to_webvtt(build_cues(words, limits=VTT_LIMITS)),
        "subtitles_srt": to_srt(build_cues(words, limits=SRT_LIMITS)),
        "transcript_json": to_podcast_json(words),
    }
    for name, text in texts.items():
        filename, content_type = FORMATS[name]
        store.write_bytes(layout.episode_key(episode_id, filename), text.encode("utf-8"),
                          content_type=f"{content_type}; charset=utf-8")
    return texts


@episode_asset(
    deps=[final_episode],
    kinds={"text"},
    checks={
        SUBTITLES_CHECK: "WebVTT, SRT and JSON parse, and every cue and word time equals the raw "
                         "transcript through the cut list plus the intro offset (±1 ms); cues ≤ 7 s, "
                         "VTT lines ≤ 65 characters, SRT ≤ 2 lines of 32.",
    },
)
def subtitles(
    context: dg.AssetExecutionContext, store: ObjectStore, catalog: CatalogResource
) -> dg.MaterializeResult:
    """Subtitles on the final timeline: ``subtitles.vtt`` (WebVTT), ``subtitles.srt`` and
    ``subtitles.json`` (Podcasting 2.0 transcript, one segment per word), from the cleaned
    transcript shifted by the intro minus its crossfade."""
    cat = catalog.get_catalog()
    with episode_step(context, cat, step=step_name(context)) as step:
        episode_id = step.episode_id
        offset_s = intro_offset_s(step.episode)
        cleaned = Transcript.from_json(store.read_bytes(layout.episode_key(episode_id, layout.CLEANED_TRANSCRIPT)))
        words = final_timeline_words(cleaned.words, offset_s=offset_s)
        texts = _write(store, episode_id, words)
        uris = {name: store.uri(layout.episode_key(episode_id, FORMATS[name][0])) for name in FORMATS}
        cat.record_artifacts(episode_id, uris)
        stored = {name: store.read_bytes(layout.episode_key(episode_id, FORMATS[name][0])).decode("utf-8")
                  for name in texts}
        problems = subtitle_problems(
            vtt_text=stored["subtitles_vtt"], srt_text=stored["subtitles_srt"],
            json_text=stored["transcript_json"],
            raw=Transcript.from_json(store.read_bytes(layout.episode_key(episode_id, layout.TRANSCRIPT))),
            cut_list=CutList.from_json(store.read_bytes(layout.episode_key(episode_id, layout.CUT_LIST))),
            offset_s=offset_s,
        )
        check = step.check(
            SUBTITLES_CHECK,
            passed=not problems,
            description="; ".join(problems) or f"{len(words)} words agree with the cut list (±1 ms)",
        )
        return dg.MaterializeResult(
            metadata={
                "words": dg.MetadataValue.int(len(words)),
                "vtt_cues": dg.MetadataValue.int(stored["subtitles_vtt"].count(" --> ")),
                "srt_cues": dg.MetadataValue.int(stored["subtitles_srt"].count(" --> ")),
                "offset_s": dg.MetadataValue.float(round(offset_s, 3)),
                "preview": dg.MetadataValue.md("```\n" + stored["subtitles_vtt"][:600] + "\n```"),
                **{name: dg.MetadataValue.url(uri) for name, uri in uris.items()},
            },
            check_results=[check],
        )

"""Reviewing the edit: removed spans with their words, the Audacity labels, the EDL, the
picture, and all of them written by the episode steps."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
import pycmx
import pytest
from PIL import Image

from pod_assets import layout
from pod_assets.episodes import edit_review
from pod_assets.episodes.cleaned_audio import cleaned_audio
from pod_assets.episodes.final_episode import final_episode
from pod_assets.episodes.raw_audio import raw_audio
from pod_assets.episodes.transcript import transcript
from pod_audio.cut_exports import (
    EdlError,
    audacity_labels,
    cmx3600_edl,
    review_removed_spans,
    timecode,
)
from pod_audio.cut_builder import build_cut_list
from pod_audio.cuts import CutList, Span, remap_words
from pod_audio.edit_image import (
    IMAGE_SIZE_PX,
    REASON_COLOURS,
    AudioSketch,
    draw_edit_image,
    map_to_source_s,
    sketch_audio,
)
from pod_audio.transcript import Word
from tests import audio_factory as af

MAX_PNG_BYTES = 150_000


@dataclass(frozen=True)
class Interval:
    start_s: float
    end_s: float


WORDS = [
    Word("so", 0.6, 1.0, 0.9),
    Word("um", 1.3, 1.6, 0.55, True),
    Word("yes", 2.0, 2.4, 0.95),
    Word("then", 4.6, 5.0, 0.8),
]
SILENCES = [Interval(0, 0.6), Interval(1.0, 1.3), Interval(1.6, 2.0), Interval(2.4, 4.6), Interval(5.0, 6.5)]


@pytest.fixture(scope="module")
def cut_list() -> CutList:
    return build_cut_list(words=WORDS, silences=SILENCES, duration_s=6.5)


def test_each_removed_span_shows_its_words_confidence_and_neighbours(cut_list):
    reviews = review_removed_spans(cut_list, WORDS)
    assert [r.reason for r in reviews] == [s.reason for s in cut_list.removed_spans]
    [filler] = [r for r in reviews if r.reason == "filler"]
    assert (filler.words, filler.confidence, filler.before, filler.after) == ("um", 0.55, "so", "yes")
    assert filler.label == 'filler "um" (conf 0.55)'
    long_pause = max((r for r in reviews if r.reason == "pause"), key=lambda r: r.duration_s)
    assert (long_pause.words, long_pause.confidence) == ("", None)
    assert (long_pause.before, long_pause.after) == ("yes", "then")
    assert reviews[0].reason == "leading_silence" and reviews[0].before == "" and reviews[0].after == "so"
    assert reviews[-1].reason == "trailing_silence" and reviews[-1].after == ""


def test_cut_points_land_between_the_remapped_words(cut_list):
    reviews = review_removed_spans(cut_list, WORDS)
    cleaned = {w.text: w for w in remap_words(WORDS, cut_list)}
    for review in reviews:
        if review.before in cleaned and review.after in cleaned:
            assert cleaned[review.before].end_s <= review.cleaned_at_s <= cleaned[review.after].start_s
    assert reviews[0].cleaned_at_s == 0.0
    assert reviews[-1].cleaned_at_s == pytest.approx(cut_list.kept_duration_s)


def test_words_a_pause_span_overlaps_are_named():
    cut = CutList(
        spans=(Span(0, 1, "keep", "speech"), Span(1, 2, "remove", "pause"), Span(2, 3, "keep", "speech")),
        source_duration_s=3.0, crossfade_ms=0,
    )
    [review] = review_removed_spans(cut, [Word("ghost", 1.2, 1.5, 0.3), Word("a", 0.1, 0.5)])
    assert (review.words, review.confidence, review.before) == ("ghost", 0.3, "a")


def test_audacity_labels_are_the_removed_spans_on_the_raw_timeline(cut_list):
    reviews = review_removed_spans(cut_list, WORDS)
    lines = audacity_labels(reviews).splitlines()
    assert len(lines) == len(cut_list.removed_spans)
    for line, span in zip(lines, cut_list.removed_spans, strict=True):
        start, end, label = line.split("\t")
        assert float(start) == pytest.approx(span.start_s, abs=1e-6)
        assert float(end) == pytest.approx(span.end_s, abs=1e-6)
        assert span.reason.replace("_", " ") in label
    assert any('filler "um"' in line for line in lines)


def test_labels_never_break_a_line_or_a_field():
    cut = CutList(
        spans=(Span(0, 1, "keep", "speech"), Span(1, 2, "remove", "filler", "uh\tum\nah", 0.5),
               Span(2, 3, "keep", "speech")),
        source_duration_s=3.0, crossfade_ms=0,
    )
    [line] = audacity_labels(review_removed_spans(cut, [])).splitlines()
    assert line.count("\t") == 2 and 'filler "uh um ah"' in line


@pytest.mark.parametrize("fps", [24, 25, 30])
def test_edl_reads_back_as_the_cleaned_timeline(cut_list, fps):
    text = cmx3600_edl(cut_list, title="ep-1 cleaned", clip_name="raw.flac", fps=fps)
    edits = [edit for event in pycmx.parse_cmx3600(io.StringIO(text)).events for edit in event.edits]
    runs = cut_list.kept_runs_s
    assert len(edits) == len(runs)

    def frames(tc: str) -> int:
        hh, mm, ss, ff = (int(x) for x in tc.split(":"))
        return ((hh * 60 + mm) * 60 + ss) * fps + ff

    half_s = cut_list.crossfade_s / 2
    for i, (edit, (src_start_s, _, _)) in enumerate(zip(edits, runs, strict=True)):
        assert edit.clip_name == "raw.flac"
        assert frames(edit.record_out) - frames(edit.record_in) == frames(edit.source_out) - frames(edit.source_in)
        expected_in_s = src_start_s + (half_s if i else 0.0)
        assert abs(frames(edit.source_in) / fps - expected_in_s) <= 0.5 / fps + 1e-9
        if i:
            assert edit.record_in == edits[i - 1].record_out  # straight cuts, no gap, no overlap
    assert frames(edits[0].record_in) == 0
    assert abs(frames(edits[-1].record_out) / fps - cut_list.kept_duration_s) <= 0.5 / fps + 1e-9


def test_edl_refuses_what_it_cannot_hold(cut_list):
    with pytest.raises(EdlError):
        cmx3600_edl(cut_list, title="t", clip_name="c", fps=29)
    spans = []
    for i in range(1001):
        spans += [Span(2 * i, 2 * i + 1, "keep", "speech"), Span(2 * i + 1, 2 * i + 2, "remove", "pause")]
    many = CutList(spans=tuple(spans), source_duration_s=2002.0, crossfade_ms=0)
    with pytest.raises(EdlError, match="999"):
        cmx3600_edl(many, title="t", clip_name="c")


def test_timecode():
    assert timecode(int(3661.5 * 30), fps=30) == "01:01:01:15"


# -- the picture -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def speech_with_pause(tmp_path_factory):
    sr = 16000
    clip = af.concat(
        af.speech_like(duration_s=1.5, sample_rate=sr, seed=1),
        af.silence(duration_s=1.5, sample_rate=sr),
        af.speech_like(duration_s=1.5, sample_rate=sr, seed=2),
    )
    return af.write_audio(tmp_path_factory.mktemp("edit") / "clip.flac", clip, sample_rate=sr)


def test_sketch_sees_the_pause_and_round_trips(speech_with_pause):
    sketch = sketch_audio(speech_with_pause, columns=450)
    assert sketch.duration_s == pytest.approx(4.5, abs=0.01)
    peaks = np.asarray(sketch.peaks)
    assert peaks[:140].max() > 0.1 and peaks[160:290].max() < 0.01 and peaks[310:].max() > 0.1
    times, lufs = np.asarray(sketch.loudness_times_s), np.asarray(sketch.loudness_lufs)
    assert lufs[(times > 2.0) & (times < 2.5)].max() < lufs[times < 1.3].min() - 20
    assert AudioSketch.from_json(sketch.to_json()).peaks == pytest.approx(sketch.peaks, abs=1e-4)


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)


def test_picture_is_small_and_colours_each_removed_span_by_reason(cut_list):
    sketch = AudioSketch(
        duration_s=6.5, peaks=tuple([0.5] * 1200),
        loudness_times_s=tuple(np.arange(0.2, 6.4, 0.1)), loudness_lufs=tuple([-20.0] * 62),
    )
    png = draw_edit_image(raw=sketch, cut_list=cut_list, title="ep", final=sketch, numbers="in/out")
    assert len(png) <= MAX_PNG_BYTES
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float)
    assert image.shape[:2] == (IMAGE_SIZE_PX[1], IMAGE_SIZE_PX[0])
    # Axes span x from 5 % to 99.5 % of the width; look just above the waveform top.
    left, right = 0.05 * image.shape[1], 0.995 * image.shape[1]
    row = image[int(image.shape[0] * 0.2)]
    for span in cut_list.removed_spans:
        if span.duration_s < 0.1:
            continue
        x = int(left + (span.start_s + span.end_s) / 2 / 6.5 * (right - left))
        blended = 255 - 0.45 * (255 - _rgb(REASON_COLOURS[span.reason]))
        assert np.abs(row[x] - blended).max() < 12, (span.reason, row[x], blended)


def test_picture_of_a_long_busy_edit_stays_small():
    rng = np.random.default_rng(7)
    spans, t_s = [], 0.0
    while t_s < 3590:  # an hour with 1000+ cuts
        cut_at_s = round(t_s + rng.uniform(1.0, 4.0), 3)
        end_s = round(cut_at_s + rng.uniform(0.05, 1.0), 3)
        spans += [Span(t_s, cut_at_s, "keep", "speech"),
                  Span(cut_at_s, end_s, "remove", str(rng.choice(["filler", "pause"])))]
        t_s = end_s
    spans.append(Span(t_s, 3600.0, "keep", "speech"))
    cut = CutList(spans=tuple(spans), source_duration_s=3600.0, crossfade_ms=0)
    noisy = AudioSketch(
        duration_s=3600.0, peaks=tuple(rng.uniform(0, 1, 1000)),
        loudness_times_s=tuple(np.linspace(0.2, 3599, 1000)), loudness_lufs=tuple(rng.uniform(-40, -10, 1000)),
    )
    assert len(cut.removed_spans) > 1000
    assert len(draw_edit_image(raw=noisy, cut_list=cut, title="busy", final=noisy)) <= MAX_PNG_BYTES


def test_final_loudness_maps_back_onto_the_raw_timeline(cut_list):
    runs = cut_list.kept_runs_s
    src_start_s, _, out_start_s = runs[1]
    mapped = map_to_source_s([0.0, 0.5 + out_start_s + 0.05], cut_list, offset_s=0.5)
    assert np.isnan(mapped[0])  # in the intro
    assert mapped[1] == pytest.approx(src_start_s + 0.05)


# -- written by the episode steps --------------------------------------------------------


@pytest.mark.slow
def test_episode_steps_store_review_files_and_show_the_picture(pipeline, short_speech):
    episode_id = pipeline.register("review me.wav", short_speech)
    result = pipeline.materialize([raw_audio, transcript, cleaned_audio, final_episode], episode_id,
                                  raise_on_error=True)
    store = pipeline.store
    artifacts = pipeline.catalog.get_episode(episode_id).artifacts
    for name in ("edit_image", "cut_labels", "cut_edl"):
        assert artifacts[name] == store.uri(layout.episode_key(episode_id, edit_review.REVIEW_ARTIFACTS[name]))

    cut_list = CutList.from_json(store.read_bytes(layout.episode_key(episode_id, layout.CUT_LIST)))
    labels = store.read_bytes(layout.episode_key(episode_id, edit_review.CUT_LABELS)).decode()
    assert len(labels.splitlines()) == len(cut_list.removed_spans) > 0
    edl = store.read_bytes(layout.episode_key(episode_id, edit_review.CUT_EDL)).decode()
    assert len(list(pycmx.parse_cmx3600(io.StringIO(edl)).events)) == len(cut_list.kept_runs_s)

    metadata = {
        m.asset_key.path[-1]: m.metadata
        for node in ("raw_audio", "transcript", "cleaned_audio", "final_episode")
        for m in result.asset_materializations_for_node(node)
    }
    png = store.read_bytes(layout.episode_key(episode_id, edit_review.EDIT_IMAGE))
    assert len(png) <= MAX_PNG_BYTES
    markdown = metadata["final_episode"]["edit_image"].value
    assert markdown.startswith("![") and "(data:image/png;base64," in markdown
    assert base64.b64decode(markdown.split("base64,", 1)[1].rstrip(")")) == png
    cleaned_md = metadata["cleaned_audio"]["edit_image"].value
    assert "data:image/png;base64," in cleaned_md and cleaned_md != markdown  # redrawn with the final
    table = metadata["cleaned_audio"]["cut_list"].value
    assert [r.data["reason"] for r in table.records] == [s.reason for s in cut_list.removed_spans]
    assert "words" in {c.name for c in table.schema.columns}
    key = layout.episode_key(episode_id, layout.FINAL_EPISODE)
    assert metadata["final_episode"]["final_episode_link"].value == f"http://127.0.0.1:3001/{key}"
    assert metadata["cleaned_audio"]["cut_labels_link"].value.endswith(f"/{episode_id}/cut_labels.txt")
    raw_key = pipeline.catalog.get_episode(episode_id).raw_key
    assert metadata["raw_audio"]["raw_audio_link"].value == f"http://127.0.0.1:3001/{raw_key}"
    transcript_key = layout.episode_key(episode_id, layout.TRANSCRIPT)
    assert metadata["transcript"]["transcript_link"].value == f"http://127.0.0.1:3001/{transcript_key}"

"""Chapters: marks parsed with line-naming errors, carried through a cut list with known
removed spans, written as chapters.json and ID3 CHAP/CTOC (read back with mutagen), the
sidecar picked up, and a malformed marks file failing the step without losing anything."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from mutagen.id3 import ID3

from pod_assets import layout
from pod_assets.publish.chapters import CHAPTERS_CHECK, chapters, ingest_marks
from pod_audio.chapters import Chapter, ChapterMarksError, carry_through_cuts, parse_marks
from pod_audio.cuts import CutList, Span
from pod_audio.tags import read_chapters
from pod_resources.catalog import EpisodeStatus
from tests import audio_factory as af

# Source 0-60 s: 10-14 s removed (pause), 30-31 s removed (filler), 58-60 trailing silence.
CUT_LIST = CutList(
    spans=(
        Span(0.0, 10.0, "keep", "speech"),
        Span(10.0, 14.0, "remove", "pause"),
        Span(14.0, 30.0, "keep", "speech"),
        Span(30.0, 31.0, "remove", "filler", text="um"),
        Span(31.0, 58.0, "keep", "speech"),
        Span(58.0, 60.0, "remove", "trailing_silence"),
    ),
    source_duration_s=60.0,
    crossfade_ms=20.0,
)
LABELS = (
    "0.000000\t0.000000\tCold open\n"
    "\\\t1000.0\t2000.0\n"  # Audacity's spectral-selection line
    "12.000000\t12.000000\tInside the pause\n"
    "20.5\t25.0\tInterview & <questions> 🎙️\n"
    "\n"
    "30.5\t30.5\tOn the filler\n"
    "59.0\t59.0\tIn the trailing silence\n"
)


def test_marks_carried_through_known_cuts_and_the_intro():
    marks = parse_marks(LABELS.encode(), fmt="txt", source_duration_s=60.0)
    carried = carry_through_cuts(marks, CUT_LIST, offset_s=3.0)
    xf = 0.02
    assert carried == [
        Chapter(0.0, "Cold open"),  # the first chapter covers the intro
        # 12 s is inside the removed 10-14 s: it moves to 14 s, the end of the span, which
        # plays at the join's cut point (the centre of its crossfade): 10 - xf + xf / 2.
        Chapter(round(10.0 - xf / 2 + 3.0, 3), "Inside the pause"),
        Chapter(round(20.5 - 4.0 - xf + 3.0, 3), "Interview & <questions> 🎙️"),
        Chapter(round(31.0 - 5.0 - 2 * xf + xf / 2 + 3.0, 3), "On the filler"),
    ]  # the mark in the trailing silence has no audio after it: dropped


def test_json_marks_and_the_same_landing_point():
    text = json.dumps({"version": "1.2.0", "chapters": [
        {"startTime": 11, "title": "early in the pause"}, {"startTime": 13.5, "title": "late in the pause"},
        {"startTime": 2, "title": "Start"},
    ]}, indent=1)
    carried = carry_through_cuts(parse_marks(text.encode(), fmt="json"), CUT_LIST, offset_s=0.0)
    assert [c.title for c in carried] == ["Start", "late in the pause"]
    assert carried[0].start_s == 0.0


@pytest.mark.parametrize(
    ("data", "fmt", "message"),
    [
        (b"0\t0\tIntro\n12,5\t13\tBad\n", "txt", "line 2: start '12,5' is not a number"),
        (b"0\t0\tIntro\n5 Intro without tabs\n", "txt", "line 2: expected start<TAB>end<TAB>title"),
        (b"0\t0\tIntro\n\n90\t90\tToo late\n", "txt", "line 3: start 90.000 s is past the end of the recording (60.000 s)"),
        (b"0\t0\t" + b"x" * 10_000 + b"\n", "txt", "line 1: the title is 10000 characters; at most 500"),
        (b"0\t0\tok\n1\t1\t\xff\xfe\n", "txt", "line 2: not UTF-8 text"),
        (b'{"version": "1.2.0",\n "chapters": [\n {"startTime": 0, "title": "a"},\n {"startTime": -4, "title": "b"}]}',
         "json", "chapter 2 (line 4): start -4.0 s is negative"),
        (b'{"chapters": [\n {"startTime": 0, "title": "a"},,\n]}', "json", "line 2: not JSON"),
    ],
)
def test_malformed_marks_name_the_line(data, fmt, message):
    with pytest.raises(ChapterMarksError) as info:
        parse_marks(data, fmt=fmt, source_duration_s=60.0)
    assert message in str(info.value)


def _mastered(pipeline, tmp_path, *, name: str = "talk.flac") -> str:
    """An episode with a stored cut list and a real 60 s MP3 as final_episode leaves them."""
    episode_id = pipeline.register(name, b"raw bytes of " + name.encode())
    store, catalog = pipeline.store, pipeline.catalog
    mp3 = af.write_audio(tmp_path / "episode.mp3", af.tone(duration_s=CUT_LIST.kept_duration_s + 3.0, sample_rate=22050),
                         sample_rate=22050)
    store.write_file(layout.episode_key(episode_id, layout.FINAL_EPISODE), mp3)
    store.write_bytes(layout.episode_key(episode_id, layout.CUT_LIST), CUT_LIST.to_json().encode())
    catalog.record_metrics(episode_id, {"intro_offset_s": 3.0})
    at = datetime.now(UTC)
    assert catalog.set_status(episode_id, expected=EpisodeStatus.UPLOADED, new=EpisodeStatus.PROCESSING, run_id="r", at=at)
    assert catalog.set_status(episode_id, expected=EpisodeStatus.PROCESSING, new=EpisodeStatus.PROCESSED, at=at)
    return episode_id


def test_chapters_asset_takes_the_sidecar_and_writes_json_and_id3(pipeline, tmp_path):
    episode_id = _mastered(pipeline, tmp_path)
    marks = tmp_path / "marks.txt"
    marks.write_text(LABELS)
    sidecar = ingest_marks(pipeline.store, "talk.flac", marks)

    result = pipeline.materialize([chapters], episode_id)

    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert (check.check_name, check.passed) == (CHAPTERS_CHECK, True)
    store = pipeline.store
    assert not store.exists(sidecar)  # moved beside the episode
    assert store.read_bytes(layout.episode_key(episode_id, "chapter_marks.txt")) == LABELS.encode()
    doc = json.loads(store.read_bytes(layout.episode_key(episode_id, layout.CHAPTERS)))
    assert doc["version"] == "1.2.0"
    local = tmp_path / "back.mp3"
    store.read_to_path(layout.episode_key(episode_id, layout.FINAL_EPISODE), local)
    id3 = read_chapters(local)
    assert [(c.start_ms, c.title) for c in id3] == [
        (round(item["startTime"] * 1000), item["title"]) for item in doc["chapters"]
    ]
    assert [f.element_id for f in ID3(local).getall("CTOC")] == ["toc"]
    assert id3[-1].end_ms == pytest.approx(CUT_LIST.kept_duration_s * 1000 + 3000, abs=60)
    assert pipeline.catalog.get_episode(episode_id).artifacts["chapters"] == store.uri(
        layout.episode_key(episode_id, layout.CHAPTERS))


def test_a_malformed_sidecar_fails_the_chapters_and_loses_nothing(pipeline, tmp_path):
    episode_id = _mastered(pipeline, tmp_path, name="bad.flac")
    store = pipeline.store
    before = {info.key: info.generation for info in store.list("")}
    bad = b"0\t0\tIntro\n75\t75\tPast the end\n"
    store.write_bytes(layout.upload_key("bad.flac.chapters.txt"), bad)

    result = pipeline.materialize([chapters], episode_id)

    assert not result.success
    episode = pipeline.catalog.get_episode(episode_id)
    assert episode.status == EpisodeStatus.ERROR
    assert "line 2: start 75.000 s is past the end of the recording (60.000 s)" in episode.last_error
    assert store.read_bytes(layout.episode_key(episode_id, "chapter_marks.txt")) == bad
    for key, generation in before.items():
        assert store.stat(key).generation == generation, key


def test_pod_ingest_chapters_stores_the_sidecar_or_refuses_a_bad_file(tmp_path, monkeypatch, capsys):
    from pod_pipeline import cli
    from pod_resources.storage import LocalObjectStore

    monkeypatch.setenv("POD_HOME", str(tmp_path / "home"))
    for name in ("POD_STORAGE_URL", "POD_DATABASE_URL", "DAGSTER_HOME", "POD_SHOW_FILE"):
        monkeypatch.delenv(name, raising=False)
    audio = af.write_audio(tmp_path / "talk.flac", af.tone(duration_s=1.0, sample_rate=16000), sample_rate=16000)
    good, bad = tmp_path / "marks.txt", tmp_path / "broken.json"
    good.write_text(LABELS)
    bad.write_text('{"chapters": [{"startTime": "soon", "title": "x"}]}')
    store = LocalObjectStore(root=str(tmp_path / "home" / "store"))

    assert cli.main(["ingest", str(audio), "--chapters", str(bad)]) == 2
    assert "chapter 1 (line 1): start 'soon' is not a number" in capsys.readouterr().err
    assert not store.exists(layout.upload_key("talk.flac"))

    assert cli.main(["ingest", str(audio), "--chapters", str(good)]) == 0
    assert store.read_bytes(layout.upload_key("talk.flac.chapters.txt")) == LABELS.encode()
    assert store.exists(layout.upload_key("talk.flac"))

    # A file that is not audio is refused, and its marks are not stored either.
    notes = tmp_path / "notes.mp3"
    notes.write_text("meeting notes, not audio\n" * 50)
    assert cli.main(["ingest", str(notes), "--chapters", str(good)]) == 1
    assert "not audio" in capsys.readouterr().err
    assert not store.exists(layout.upload_key("notes.mp3"))
    assert not store.exists(layout.upload_key("notes.mp3.chapters.txt"))


def test_late_marks_start_the_chapters_step_of_a_finished_episode_only(pipeline, tmp_path):
    import dagster as dg

    from pod_sensors.chapters import chapter_marks_sensor

    done = _mastered(pipeline, tmp_path, name="done.flac")
    waiting = pipeline.register("waiting.flac", b"raw bytes of waiting")
    for name in ("done.chapters.txt", "waiting.flac.chapters.txt"):
        pipeline.store.write_bytes(layout.upload_key(name), LABELS.encode())

    def tick(cursor=None):
        with dg.build_sensor_context(instance=pipeline.instance, cursor=cursor,
                                     resources={"store": pipeline.store, "catalog": pipeline.catalog_resource}) as ctx:
            return chapter_marks_sensor(ctx)

    first = tick()
    [request] = first.run_requests
    assert (request.partition_key, request.asset_selection) == (done, [dg.AssetKey("chapters")])
    assert tick(first.cursor).run_requests == []  # seen at this generation
    assert waiting  # its own run takes its marks: no request for it


def test_re_cleaning_or_re_mastering_brings_subtitles_and_chapters_along() -> None:
    import dagster as dg

    from pod_assets.status import with_follow_ups
    from pod_sensors.follow_ups import missing_follow_ups

    assert with_follow_ups(["final_episode"]) == ("final_episode", "subtitles", "chapters")
    assert with_follow_ups(["chapters", "final_episode", "cleaned_audio"]) == (
        "cleaned_audio", "final_episode", "subtitles", "chapters",
    )
    # Cleaning alone leaves the final episode (and what follows it) as it was.
    assert with_follow_ups(["cleaned_audio"]) == ("cleaned_audio",)
    assert with_follow_ups(["transcript"]) == ("transcript",)

    def run(selection, job="process_episode_job"):
        return dg.DagsterRun(
            job_name=job, run_id="0" * 32, tags={"dagster/partition": "ep-1"},
            asset_selection=None if selection is None else frozenset(dg.AssetKey(s) for s in selection),
        )

    # The documented launchpad reprocess: cleaned_audio and final_episode only.
    assert missing_follow_ups(run(["cleaned_audio", "final_episode"])) == ("subtitles", "chapters")
    assert missing_follow_ups(run(["final_episode", "subtitles"])) == ("chapters",)
    assert missing_follow_ups(run(["final_episode", "subtitles", "chapters"])) == ()
    assert missing_follow_ups(run(None)) == ()  # the whole job
    assert missing_follow_ups(run(["transcript"])) == ()
    assert missing_follow_ups(run(["final_episode"], job="show_job")) == ()

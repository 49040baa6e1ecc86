"""The feed: the podnews guid vector, Apple's required tags, hostile titles, a feedparser
round trip, enclosure sizes and URLs checked, publish/unpublish/reprocess, and the purge
leaving every published file alone."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import pytest

from pod_assets import layout
from pod_assets.publish.feed import FEED_CHECK, FEED_KEY, feed
from pod_assets.publish.feed_xml import ITUNES, Channel, Item, build_feed, episode_guid, feed_problems, podcast_guid
from pod_assets.publish.publishing import publish_episodes, unpublish_episodes
from pod_assets.purge.job import purge_job, purge_run_config
from pod_resources.catalog import EpisodeStatus
from pod_resources.show import ShowResource
from tests.episode_states import finished

S = EpisodeStatus
BASE = "https://cdn.example.com/pod/"
ARTWORK = Path(__file__).resolve().parents[2] / "samples" / "artwork.png"
HOSTILE = [
    "Q&A: <script>alert(1)</script> & more",
    "line one\nline two & three",
    "Emoji 🎙️🔥 and 中文",
    "\u200fمرحبا\u200f right-to-left",
    "control \x00\x07\x1b chars",
    "x" * 10_000,
]


def test_podcast_guid_matches_the_podnews_vector():
    assert podcast_guid("https://podnews.net/rss") == "9b024349-ccf0-5f69-a609-6b82873eab3c"
    assert podcast_guid("http://podnews.net/rss/") == "9b024349-ccf0-5f69-a609-6b82873eab3c"
    guid = podcast_guid(BASE + "show/feed.xml")
    assert episode_guid(guid, "ep-1") == episode_guid(guid, "ep-1") != episode_guid(guid, "ep-2")


def _channel(**kw) -> Channel:
    values = dict(
        title="Show & <Tell>", description="About things", language="en", link=BASE,
        author="Ann", owner_name="Ann", owner_email="ann@example.com",
        image_url=BASE + "show/artwork.png", categories=("Technology", "Society & Culture/Documentary"),
        explicit=False, feed_url=BASE + "show/feed.xml", guid=podcast_guid(BASE + "show/feed.xml"),
    )
    return Channel(**{**values, **kw})


def _items() -> list[Item]:
    t0 = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    return [
        Item(guid=f"guid-{i}", title=title, description=title, published_at=t0 + timedelta(days=i),
             enclosure_url=f"{BASE}episodes/ep-{i}/episode.mp3", enclosure_bytes=1000 + i, duration_s=61.4,
             transcripts=((f"{BASE}episodes/ep-{i}/subtitles.vtt", "text/vtt"),),
             chapters_url=f"{BASE}episodes/ep-{i}/chapters.json")
        for i, title in enumerate(HOSTILE)
    ]


def test_hostile_titles_give_a_well_formed_feed_that_feedparser_reads_back():
    items = _items()
    xml = build_feed(_channel(), items)

    ET.fromstring(xml)  # well-formed
    parsed = feedparser.parse(xml)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.feed.title == "Show & <Tell>"
    assert parsed.feed.podcast_guid == podcast_guid(BASE + "show/feed.xml")
    by_guid = {entry.id: entry for entry in parsed.entries}
    for item in items:
        entry = by_guid[item.guid]
        expected = " ".join(item.title.replace("\x00", "").replace("\x07", "").replace("\x1b", "").split())
        assert entry.title == expected
        [enclosure] = entry.enclosures
        assert (enclosure.href, int(enclosure.length), enclosure.type) == (item.enclosure_url, item.enclosure_bytes, "audio/mpeg")
        assert entry.published_parsed[:5] == item.published_at.utctimetuple()[:5]
        assert entry.itunes_duration == "61"
    assert [e.id for e in parsed.entries] == [f"guid-{i}" for i in reversed(range(len(items)))]  # newest first
    sizes = {i.enclosure_url: i.enclosure_bytes for i in items}
    assert feed_problems(xml, base_url=BASE, sizes=sizes) == []


def test_apple_required_tags_sizes_and_urls_are_checked():
    items = _items()[:2]
    sizes = {i.enclosure_url: i.enclosure_bytes for i in items}
    root = ET.fromstring(build_feed(_channel(), items))
    channel = root.find("channel")
    assert channel.findtext(f"{{{ITUNES}}}explicit") == "false"
    assert [c.get("text") for c in channel.iter(f"{{{ITUNES}}}category")] == [
        "Technology", "Society & Culture", "Documentary"]
    for tag in ("title", "description", "language", f"{{{ITUNES}}}image", f"{{{ITUNES}}}owner", f"{{{ITUNES}}}author"):
        trimmed = ET.fromstring(ET.tostring(root))
        ch = trimmed.find("channel")
        ch.remove(ch.find(tag))
        assert feed_problems(ET.tostring(trimmed), base_url=BASE, sizes=sizes), tag

    wrong = {**sizes, items[0].enclosure_url: 999}
    assert any("enclosure length 1000 but the object" in p for p in feed_problems(build_feed(_channel(), items), base_url=BASE, sizes=wrong))
    elsewhere = build_feed(_channel(image_url="http://elsewhere.example/a.png"), items)
    assert feed_problems(elsewhere, base_url=BASE, sizes=sizes) == [f"'http://elsewhere.example/a.png' is not under {BASE}"]
    assert feed_problems(b"<rss><channel>&</rss>", base_url=BASE, sizes=sizes)[0].startswith("feed.xml is not well-formed")


def _show(**kw) -> ShowResource:
    return ShowResource(name="Test Show", description="A show", author="Ann", owner_email="ann@example.com",
                        artwork_path=str(ARTWORK), media_base_url=BASE, **kw)


def _materialize_feed(pipeline, show=None):
    import dagster as dg

    result = dg.materialize([feed], resources={**pipeline.resources, "show": show or _show()},
                            instance=pipeline.instance, raise_on_error=False)
    return result, pipeline.store.read_bytes(FEED_KEY) if pipeline.store.exists(FEED_KEY) else b""


def test_feed_lists_published_episodes_with_stable_guids_and_dates(pipeline):
    store, catalog = pipeline.store, pipeline.catalog
    t0 = datetime.now(UTC) - timedelta(days=3)
    a = finished(store, catalog, "A & <b>.mp3", at=t0)
    b = finished(store, catalog, "second.mp3", at=t0)
    hidden = finished(store, catalog, "draft.mp3", at=t0)
    publish_episodes(catalog, [a, b], at=t0 + timedelta(hours=1))

    result, xml = _materialize_feed(pipeline)

    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert (check.check_name, check.passed) == (FEED_CHECK, True), check.description
    parsed = feedparser.parse(xml)
    assert {e.id for e in parsed.entries} == {episode_guid(parsed.feed.podcast_guid, x) for x in (a, b)}
    assert hidden not in xml.decode()
    [entry] = [e for e in parsed.entries if e.id == episode_guid(parsed.feed.podcast_guid, a)]
    assert int(entry.enclosures[0].length) == store.stat(layout.episode_key(a, layout.FINAL_EPISODE)).size
    assert entry.enclosures[0].href.startswith(BASE + "episodes/")
    assert parsed.feed.image.href == BASE + "show/artwork.png"
    assert store.read_bytes("show/artwork.png") == ARTWORK.read_bytes()

    # Unpublished, published again, or reprocessed: same guid and pubDate.
    assert unpublish_episodes(catalog, [a])[0].published
    _, without = _materialize_feed(pipeline)
    assert len(feedparser.parse(without).entries) == 1
    publish_episodes(catalog, [a], at=t0 + timedelta(days=2))
    _, again = _materialize_feed(pipeline)
    assert again == xml


def test_a_broken_enclosure_fails_the_feed_check(pipeline):
    store, catalog = pipeline.store, pipeline.catalog
    a = finished(store, catalog, "a.mp3", at=datetime.now(UTC))
    publish_episodes(catalog, [a])
    result, _ = _materialize_feed(pipeline, _show(categories=["Technology"]))
    assert result.success
    result, _ = _materialize_feed(pipeline, ShowResource(name="No art", media_base_url=BASE))
    assert not result.success  # no artwork: the feed is not written without one


def test_purge_leaves_final_audio_subtitles_chapters_and_the_feed(pipeline):
    store, catalog = pipeline.store, pipeline.catalog
    t0 = datetime.now(UTC) - timedelta(days=3)
    episode_id = finished(store, catalog, "old.mp3", at=t0)
    for name in (layout.SUBTITLES_VTT, layout.SUBTITLES_SRT, layout.TRANSCRIPT_JSON, layout.CHAPTERS, "chapter_marks.txt"):
        store.write_bytes(layout.episode_key(episode_id, name), f"{name} of {episode_id}".encode())
    publish_episodes(catalog, [episode_id], at=t0)
    _materialize_feed(pipeline)
    kept = {info.key: info.generation for info in store.list("") if "/raw." not in info.key and not info.key.startswith("uploads/")}

    result = purge_job.execute_in_process(
        run_config=purge_run_config(now=datetime.now(UTC), retention_hours=1),
        resources={"store": store, "catalog": pipeline.catalog_resource}, instance=pipeline.instance,
    )

    assert result.success
    assert catalog.get_episode(episode_id).raw_purged_at is not None
    assert not [k for k in (i.key for i in store.list(layout.episode_prefix(episode_id))) if "/raw." in k]
    after = {info.key: info.generation for info in store.list("")}
    for key in (FEED_KEY, *(layout.episode_key(episode_id, n) for n in (
            layout.FINAL_EPISODE, layout.SUBTITLES_VTT, layout.SUBTITLES_SRT, layout.TRANSCRIPT_JSON, layout.CHAPTERS))):
        assert key in kept
    assert {k: g for k, g in after.items() if k in kept} == kept


def test_the_show_refreshes_after_episode_and_publish_runs_but_not_its_own():
    import dagster as dg

    from pod_sensors.feed import wants_refresh

    def run(job, **tags):
        return dg.DagsterRun(job_name=job, run_id="r" * 32, tags=tags)

    assert wants_refresh(run("process_episode_job", **{"dagster/partition": "ep-1"}))
    assert wants_refresh(run("__ASSET_JOB", **{"dagster/partition": "ep-1"}))
    assert wants_refresh(run("publish_job")) and wants_refresh(run("unpublish_job"))
    assert not wants_refresh(run("publish_job", **{"pod/trigger": "cli"}))
    assert not wants_refresh(run("show_job"))
    assert not wants_refresh(run("purge_job"))


def test_the_show_file_is_validated_with_a_clear_line(tmp_path):
    import subprocess

    from pod_resources.show import ShowSettingsError, load_show_file

    sample = (ARTWORK.parent / "show.toml").read_text()
    show = load_show_file(ARTWORK.parent / "show.toml")
    assert (show.name, show.explicit, show.artwork_path) == ("Pod Pipeline Samples", False, str(ARTWORK))
    wide = tmp_path / "wide.jpg"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=red:s=1600x1400", "-frames:v", "1", str(wide)],
                   check=True)
    (tmp_path / "artwork.png").write_bytes(ARTWORK.read_bytes())
    cases = {
        'owner_email = "not-an-address"': "owner_email 'not-an-address' is not an e-mail address",
        'colour = "blue"': "unknown show setting(s): colour",
        'target_lufs = -2': "target_lufs must be a number between -40 and -5",
    }
    for line, message in cases.items():
        path = tmp_path / "show.toml"
        path.write_text(sample.replace('owner_email = "podcast@example.com"', line))
        with pytest.raises(ShowSettingsError, match=re.escape(message)):
            load_show_file(path)
    path.write_text(sample.replace('artwork = "artwork.png"', f'artwork = "{wide}"'))
    with pytest.raises(ShowSettingsError, match="is 1600x1400 px; it must be square, 1400 to 3000 px a side"):
        load_show_file(path)


def test_show_refresh_sensor_requests_the_show_job_after_a_publish_run(pipeline):
    import dagster as dg

    from pod_assets.publish.publishing import publish_job
    from pod_sensors.feed import show_refresh_sensor

    episode_id = finished(pipeline.store, pipeline.catalog, "a.mp3", at=datetime.now(UTC))
    result = publish_job.execute_in_process(
        run_config={"ops": {"publish_episodes": {"config": {"episode_ids": [episode_id]}}}},
        resources={"catalog": pipeline.catalog_resource}, instance=pipeline.instance,
    )
    [entry] = pipeline.instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)
    event = entry.dagster_event
    run = pipeline.instance.get_run_by_id(result.run_id)

    def request(show):
        context = dg.build_run_status_sensor_context(
            sensor_name="show_refresh_sensor", dagster_event=event, dagster_instance=pipeline.instance,
            dagster_run=run, resources={"show": show},
        )
        return show_refresh_sensor(context)

    full = request(_show())
    assert (full.run_key, full.asset_selection) == (f"show:{run.run_id}", None)
    bare = request(ShowResource(name="No artwork yet"))
    assert bare.asset_selection == [dg.AssetKey("show_statistics")]  # statistics only, no feed

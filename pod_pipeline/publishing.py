"""The ``pod`` commands around publishing: ``pod ingest --chapters``, ``pod publish``,
``pod unpublish`` and ``pod feed``. ``pod_pipeline.cli`` only registers them."""

from __future__ import annotations

import sys
from pathlib import Path


def ingest_chapters(store, *, files: list[str], marks: str | None) -> int | None:
    """Store ``marks`` as the chapter-marks sidecar of the one upload in ``files``, before the
    audio (so the run the upload starts finds them); an exit code when it must stop the
    ingest, ``None`` to go on."""
    from pod_assets.publish.chapters import ingest_marks
    from pod_audio.chapters import ChapterMarksError

    if marks is None:
        return None
    if len(files) != 1:
        print("pod ingest: --chapters goes with exactly one FILE", file=sys.stderr)
        return 2
    marks_path = Path(marks)
    if not marks_path.is_file():
        print(f"pod ingest: --chapters {marks}: no such file", file=sys.stderr)
        return 2
    try:
        key = ingest_marks(store, Path(files[0]).name, marks_path)
    except ChapterMarksError as exc:
        print(f"pod ingest: --chapters {marks_path.name}: {exc}; nothing ingested", file=sys.stderr)
        return 2
    print(f"chapter marks {marks_path.name} -> {store.uri(key)}")
    return None


def _execute(settings, job: str, op: str | None, episode_ids: list[str], asset_selection=None):
    from pod_pipeline.cli import _execute_job

    config = {"ops": {op: {"config": {"episode_ids": episode_ids}}}} if op else {}
    return _execute_job(settings, job, config, "cli", asset_selection=asset_selection)


def refresh_show(settings) -> list[str]:
    """Run ``show_job`` (feed and statistics; the statistics only for a show without
    artwork, which cannot have a feed); one line saying what it wrote."""
    import dagster as dg

    from pod_assets.publish.feed import has_artwork
    from pod_pipeline.console import failure_reason
    from pod_resources import build_defs

    if not has_artwork(build_defs(settings).resources["show"]):
        _execute(settings, "show_job", None, [], asset_selection=[dg.AssetKey("show_statistics")])
        return ["feed: none: the show has no artwork (set POD_SHOW_FILE, docs/publishing.md)"]
    result = _execute(settings, "show_job", None, [])
    if not result.success:
        checks = [e.asset_check_evaluation_data for e in result.all_events
                  if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        why = "; ".join(c.description or "" for c in checks if not c.passed) or next(
            (failure_reason(e) for e in result.all_events if e.is_step_failure),
            "the show run failed",
        )
        return [f"feed: NOT refreshed: {why}"]
    meta = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_MATERIALIZATION":
            materialization = event.event_specific_data.materialization
            meta[materialization.asset_key.to_user_string()] = materialization.metadata
    feed = meta.get("feed", {})
    return [f"feed: {feed['episodes'].value} episodes -> {feed['feed_url'].value}"] if feed else []


def _guard_known(settings, episode_ids: list[str]) -> None:
    from pod_pipeline.cli import _guarded_catalog
    from pod_pipeline.console import PodError

    catalog = _guarded_catalog(settings)
    if unknown := [e for e in episode_ids if catalog.get_episode(e) is None]:
        raise PodError(f"no such episode: {', '.join(unknown)} (`pod status` lists them)")


def _processed_ids(settings) -> list[str]:
    from pod_pipeline.cli import _guarded_catalog
    from pod_resources.catalog import EpisodeStatus

    catalog = _guarded_catalog(settings)
    return [e.episode_id for e in catalog.list_episodes(statuses=[EpisodeStatus.PROCESSED])]


def cmd_publish(args, settings) -> int:
    """``pod publish ID…``: publish (``publish_job``), then refresh the feed (``show_job``)."""
    from pod_assets.publish.publishing import describe_outcome
    from pod_pipeline.console import PodError

    episode_ids = list(args.episode_ids)
    if args.all_processed:
        episode_ids += _processed_ids(settings)
        if not episode_ids:
            print("pod publish: no processed episodes to publish")
            return 0
    if not episode_ids:
        raise PodError("name the episodes to publish, or --all-processed")
    _guard_known(settings, episode_ids)
    result = _execute(settings, "publish_job", "publish_episodes", episode_ids)
    return _report(settings, "publish", result.output_for_node("publish_episodes"), describe_outcome)


def cmd_unpublish(args, settings) -> int:
    """``pod unpublish ID…``: take episodes out (``unpublish_job``), then refresh the feed."""
    _guard_known(settings, list(args.episode_ids))
    result = _execute(settings, "unpublish_job", "unpublish_episodes", list(args.episode_ids))
    return _report(
        settings, "unpublish", result.output_for_node("unpublish_episodes"),
        lambda outcome: f"unpublished {outcome.episode_id}",
    )


def _report(settings, command: str, outcomes, done_line) -> int:
    """One line per episode (done, or refused with the reason), then the feed refreshed if
    anything changed; the exit status (1 when an episode was refused)."""
    for outcome in outcomes:
        if outcome.published:
            print(done_line(outcome))
        else:
            print(f"pod {command}: {outcome.episode_id} refused: {outcome.reason}", file=sys.stderr)
    if any(o.published for o in outcomes):
        for line in refresh_show(settings):
            print(line)
    return 0 if all(outcome.published for outcome in outcomes) else 1


def feed_listing(xml_bytes: bytes) -> list[dict]:
    """The items of a stored feed, as ``pod feed --json`` prints them."""
    import xml.etree.ElementTree as ET

    from pod_assets.publish.feed_xml import ITUNES, PODCAST

    items = []
    for item in ET.fromstring(xml_bytes).iter("item"):
        enclosure = item.find("enclosure")
        items.append({
            "title": item.findtext("title"),
            "guid": item.findtext("guid"),
            "pub_date": item.findtext("pubDate"),
            "duration_s": int(item.findtext(f"{{{ITUNES}}}duration") or 0),
            "enclosure_url": enclosure.get("url") if enclosure is not None else None,
            "enclosure_bytes": int(enclosure.get("length")) if enclosure is not None else None,
            "transcripts": [t.get("url") for t in item.iter(f"{{{PODCAST}}}transcript")],
            "chapters": next((c.get("url") for c in item.iter(f"{{{PODCAST}}}chapters")), None),
        })
    return items


def cmd_feed(args, settings) -> int:
    """``pod feed [--json]``: where the feed is and what it lists."""
    import json

    from pod_assets.publish.feed import FEED_KEY, feed_url
    from pod_pipeline.cli import _store
    from pod_resources import build_defs

    store = _store(settings)
    show = build_defs(settings).resources["show"]
    if not store.exists(FEED_KEY):
        print("pod feed: no feed yet; `pod publish EPISODE_ID…` writes it", file=sys.stderr)
        return 1
    items = feed_listing(store.read_bytes(FEED_KEY))
    if args.json:
        print(json.dumps({"uri": store.uri(FEED_KEY), "url": feed_url(show), "items": items},
                         indent=2, ensure_ascii=False))
        return 0
    print(f"feed {feed_url(show)} ({store.uri(FEED_KEY)}): {len(items)} episodes")
    for item in items:
        print(f"  {item['pub_date']}  {item['duration_s']:>6} s  {item['title']}")
    return 0


def add_parsers(sub) -> None:
    """``pod unpublish`` and ``pod feed`` (``pod publish`` is registered by the CLI)."""
    unpublish = sub.add_parser("unpublish", help="take published episodes out of the feed")
    unpublish.add_argument("episode_ids", nargs="+", metavar="EPISODE_ID")
    unpublish.set_defaults(func=cmd_unpublish)
    feed = sub.add_parser("feed", help="the feed's URL and the episodes it lists")
    feed.add_argument("--json", action="store_true")
    feed.set_defaults(func=cmd_feed)

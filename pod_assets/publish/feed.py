"""``feed``: the show's podcast feed, ``show/feed.xml`` in the store, with a blocking check.

Not partitioned: one feed per show, rewritten whole from the catalog each time (the same
catalog and objects give the same bytes). It lists :func:`listed_episodes` (published ones,
and published ones being reprocessed); each item points at objects under the show's public
base URL: ``episode.mp3`` (enclosure, its size read from the store), the three subtitle
formats (``podcast:transcript``) and ``chapters.json`` (``podcast:chapters``) when present.
``show_job`` refreshes it with the show statistics: ``pod publish``/``pod unpublish``/
``pod run`` run it, and ``show_refresh_sensor`` does when any episode run succeeds.
"""

from pathlib import Path
from urllib.parse import unquote

import dagster as dg

from pod_assets import layout
from pod_assets.publish.feed_xml import Channel, Item, build_feed, episode_guid, feed_problems, podcast_guid
from pod_assets.publish.publishing import first_published_at, listed_episodes
from pod_assets.publish.subtitles import FORMATS
from pod_resources.catalog import Catalog, CatalogResource, Episode
from pod_resources.media_links import media_url
from pod_resources.show import ARTWORK_KEY_PREFIX, ShowResource
from pod_resources.storage import ObjectStore

FEED_KEY = "show/feed.xml"
FEED_CHECK = "feed_valid"


class ShowArtworkError(ValueError):
    """The show has no artwork, or the artwork named cannot be found."""


def has_artwork(show: ShowResource) -> bool:
    """Whether the show can have a feed at all (Apple requires artwork). Without one,
    ``show_job`` is run for the statistics only."""
    return bool(show.artwork_path or show.artwork_key)


def feed_url(show: ShowResource) -> str:
    return media_url(FEED_KEY, base_url=show.public_base_url())


def _artwork_key(store: ObjectStore, show: ShowResource) -> str:
    """The artwork's key in the store; a local ``artwork`` file is copied there first
    (only when its bytes changed)."""
    if show.artwork_path:
        path = Path(show.artwork_path)
        key = ARTWORK_KEY_PREFIX + path.suffix.lower()
        data = path.read_bytes()
        info = store.stat(key)
        if info is None or info.size != len(data) or store.read_bytes(key) != data:
            store.write_bytes(key, data)
        return key
    if show.artwork_key and store.exists(show.artwork_key):
        return show.artwork_key
    raise ShowArtworkError(
        "the show needs artwork: set artwork (a file) or artwork_key (in the store) in the show file (POD_SHOW_FILE)"
    )


def _item(store: ObjectStore, catalog: Catalog, show: ShowResource, guid: str, episode: Episode) -> Item | None:
    base = show.public_base_url()
    mp3 = store.stat(layout.episode_key(episode.episode_id, layout.FINAL_EPISODE))
    if mp3 is None:
        return None
    present = {info.key for info in store.list(layout.episode_prefix(episode.episode_id))}

    def url(filename: str) -> str | None:
        key = layout.episode_key(episode.episode_id, filename)
        return media_url(key, base_url=base) if key in present else None

    transcripts = [(u, mime) for filename, mime in FORMATS.values() if (u := url(filename))]
    return Item(
        guid=episode_guid(guid, episode.episode_id),
        title=episode.title,
        description=episode.title,
        published_at=first_published_at(catalog, episode),
        enclosure_url=media_url(mp3.key, base_url=base),
        enclosure_bytes=mp3.size,
        duration_s=float(episode.metrics.get("final_duration_s") or 0.0),
        transcripts=tuple(transcripts),
        chapters_url=url(layout.CHAPTERS),
    )


def _channel(show: ShowResource, image_url: str) -> Channel:
    url = feed_url(show)
    return Channel(
        title=show.name, description=show.description, language=show.language,
        link=show.public_base_url(), author=show.author, owner_name=show.owner_name,
        owner_email=show.owner_email, image_url=image_url, categories=tuple(show.categories),
        explicit=show.explicit, feed_url=url, guid=show.guid or podcast_guid(url),
    )


@dg.asset(
    group_name="show",
    kinds={"xml"},
    check_specs=[
        dg.AssetCheckSpec(
            FEED_CHECK, asset="feed", blocking=True,
            description="Well-formed RSS 2.0 with every tag Apple requires and the podcast: "
                        "namespace; enclosure lengths equal the objects' sizes; every URL under "
                        "the public base URL.",
        )
    ],
)
def feed(store: ObjectStore, catalog: CatalogResource, show: ShowResource) -> dg.MaterializeResult:
    """The podcast feed (``show/feed.xml``): RSS 2.0 + ``itunes:`` + ``podcast:`` tags, one
    item per published episode, newest first, pubDate = first publication."""
    cat = catalog.get_catalog()
    channel = _channel(show, media_url(_artwork_key(store, show), base_url=show.public_base_url()))
    items = [i for e in listed_episodes(cat) if (i := _item(store, cat, show, channel.guid, e))]
    store.write_bytes(FEED_KEY, build_feed(channel, items), content_type="application/rss+xml; charset=utf-8")
    stored = store.read_bytes(FEED_KEY)
    problems = feed_problems(stored, base_url=show.public_base_url(),
                             sizes={i.enclosure_url: _size(store, i, show) for i in items})
    return dg.MaterializeResult(
        metadata={
            "episodes": dg.MetadataValue.int(len(items)),
            "feed_url": dg.MetadataValue.url(channel.feed_url),
            "podcast_guid": dg.MetadataValue.text(channel.guid),
            "uri": dg.MetadataValue.url(store.uri(FEED_KEY)),
            "bytes": dg.MetadataValue.int(len(stored)),
            "items": dg.MetadataValue.md("\n".join(
                f"- {i.published_at:%Y-%m-%d} {layout.printable(i.title)[:80]}" for i in items) or "none"),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=FEED_CHECK, passed=not problems, severity=dg.AssetCheckSeverity.ERROR,
                description="; ".join(problems) or f"{len(items)} items; every required tag; sizes and URLs agree",
            )
        ],
    )


def _size(store: ObjectStore, item: Item, show: ShowResource) -> int | None:
    """The size of the object an enclosure URL names, read again from the store."""
    key = item.enclosure_url.removeprefix(show.public_base_url())
    info = store.stat(unquote(key))
    return info.size if info else None


show_job = dg.define_asset_job(
    "show_job",
    selection=dg.AssetSelection.groups("show"),
    description="Refreshes the show's feed and statistics.",
    tags={"pod/job": "show"},
)

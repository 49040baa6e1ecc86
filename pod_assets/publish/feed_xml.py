"""The podcast feed as XML: RSS 2.0 with Apple's ``itunes:`` tags and the Podcasting 2.0
``podcast:`` namespace, and the rules the feed check holds it to. No Dagster here.

Invariants of :func:`build_feed`:

- the output is well-formed UTF-8 XML whatever the titles hold (``&``, ``<``, newlines,
  emoji, right-to-left marks): text goes through ElementTree's escaping, and characters XML
  1.0 cannot carry at all (C0 controls but tab/newline, lone surrogates, U+FFFE/U+FFFF) are
  dropped first;
- the same channel and items give the same bytes (no build time in the feed);
- ``podcast:guid`` is :func:`podcast_guid` of the feed URL unless the show pins one.
"""

from __future__ import annotations

import email.utils
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

ITUNES = "http://www.itunes.com/dtds/podcast-1.0.dtd"
PODCAST = "https://podcastindex.org/namespace/1.0"
ATOM = "http://www.w3.org/2005/Atom"
PODCAST_GUID_NAMESPACE = uuid.UUID("ead4c236-bf58-58c6-a2c6-a6b28d128cb6")
"""Podcasting 2.0's namespace for ``podcast:guid`` (UUIDv5 of the feed URL)."""
for _prefix, _uri in (("itunes", ITUNES), ("podcast", PODCAST), ("atom", ATOM)):
    ET.register_namespace(_prefix, _uri)

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
REQUIRED_CHANNEL = ("title", "description", "language", "link", f"{{{ITUNES}}}author",
                    f"{{{ITUNES}}}explicit", f"{{{PODCAST}}}guid")
REQUIRED_ITEM = ("title", "guid", "pubDate", f"{{{ITUNES}}}duration")


def podcast_guid(feed_url: str) -> str:
    """UUIDv5 of ``feed_url`` without its scheme and trailing slashes (``podnews.net/rss``
    gives ``9b024349-ccf0-5f69-a609-6b82873eab3c``)."""
    bare = re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://", "", feed_url).rstrip("/")
    return str(uuid.uuid5(PODCAST_GUID_NAMESPACE, bare))


def episode_guid(show_guid: str, episode_id: str) -> str:
    """The item guid of an episode: UUIDv5 of its id in the show's guid. It never changes
    for the episode: not on reprocessing, not when it is published again."""
    return str(uuid.uuid5(uuid.UUID(show_guid), episode_id))


def xml_text(text: str, *, one_line: bool = False) -> str:
    """``text`` with what XML 1.0 cannot hold removed (and, ``one_line``, whitespace runs
    made one space)."""
    cleaned = _NOT_XML.sub("", text)
    return " ".join(cleaned.split()) if one_line else cleaned


@dataclass(frozen=True)
class Channel:
    title: str
    description: str
    language: str
    link: str
    author: str
    owner_name: str
    owner_email: str
    image_url: str
    categories: Sequence[str]
    explicit: bool
    feed_url: str
    guid: str


@dataclass(frozen=True)
class Item:
    guid: str
    title: str
    description: str
    published_at: datetime
    enclosure_url: str
    enclosure_bytes: int
    duration_s: float
    transcripts: Sequence[tuple[str, str]] = field(default_factory=tuple)
    """``(url, MIME type)`` per subtitle format."""
    chapters_url: str | None = None


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    element = ET.SubElement(parent, tag, {k: xml_text(v) for k, v in attrib.items()})
    if text is not None:
        element.text = xml_text(text)
    return element


def _categories(channel_el: ET.Element, categories: Sequence[str]) -> None:
    for category in categories:
        parent, _, sub = category.partition("/")
        element = ET.SubElement(channel_el, f"{{{ITUNES}}}category", {"text": xml_text(parent.strip())})
        if sub.strip():
            ET.SubElement(element, f"{{{ITUNES}}}category", {"text": xml_text(sub.strip())})


def _channel(rss: ET.Element, channel: Channel) -> ET.Element:
    el = _sub(rss, "channel")
    _sub(el, f"{{{ATOM}}}link", href=channel.feed_url, rel="self", type="application/rss+xml")
    _sub(el, "title", xml_text(channel.title, one_line=True))
    _sub(el, "link", channel.link)
    _sub(el, "description", channel.description or channel.title)
    _sub(el, "language", channel.language)
    _sub(el, f"{{{ITUNES}}}author", channel.author or channel.title)
    owner = _sub(el, f"{{{ITUNES}}}owner")
    _sub(owner, f"{{{ITUNES}}}name", channel.owner_name or channel.author or channel.title)
    _sub(owner, f"{{{ITUNES}}}email", channel.owner_email)
    _sub(el, f"{{{ITUNES}}}image", href=channel.image_url)
    _categories(el, channel.categories)
    _sub(el, f"{{{ITUNES}}}explicit", "true" if channel.explicit else "false")
    _sub(el, f"{{{ITUNES}}}type", "episodic")
    _sub(el, f"{{{PODCAST}}}guid", channel.guid)
    return el


def _item(channel_el: ET.Element, item: Item) -> None:
    el = _sub(channel_el, "item")
    _sub(el, "title", xml_text(item.title, one_line=True))
    _sub(el, "description", item.description or item.title)
    _sub(el, "enclosure", url=item.enclosure_url, length=str(item.enclosure_bytes), type="audio/mpeg")
    _sub(el, "guid", item.guid, isPermaLink="false")
    _sub(el, "pubDate", email.utils.format_datetime(item.published_at))
    _sub(el, f"{{{ITUNES}}}duration", str(max(1, round(item.duration_s))))
    _sub(el, f"{{{ITUNES}}}episodeType", "full")
    for url, mime in item.transcripts:
        attrib = {"url": url, "type": mime}
        if mime in ("text/vtt", "application/x-subrip"):
            attrib["rel"] = "captions"
        _sub(el, f"{{{PODCAST}}}transcript", **attrib)
    if item.chapters_url:
        _sub(el, f"{{{PODCAST}}}chapters", url=item.chapters_url, type="application/json+chapters")


def build_feed(channel: Channel, items: Sequence[Item]) -> bytes:
    """The feed document, newest item first."""
    rss = ET.Element("rss", {"version": "2.0"})
    channel_el = _channel(rss, channel)
    for item in sorted(items, key=lambda i: (i.published_at, i.guid), reverse=True):
        _item(channel_el, item)
    ET.indent(rss)
    return ET.tostring(rss, encoding="utf-8", xml_declaration=True) + b"\n"


def _urls(root: ET.Element) -> list[str]:
    urls = [el.get("href", "") for el in root.iter(f"{{{ITUNES}}}image")]
    urls += [el.get("href", "") for el in root.iter(f"{{{ATOM}}}link")]
    for tag in ("enclosure", f"{{{PODCAST}}}transcript", f"{{{PODCAST}}}chapters"):
        urls += [el.get("url", "") for el in root.iter(tag)]
    return urls


def _item_problems(number: int, item: ET.Element, sizes: Mapping[str, int]) -> list[str]:
    where = f"item {number}"
    problems = [f"{where}: no {tag}" for tag in REQUIRED_ITEM if not (item.findtext(tag) or "").strip()]
    enclosure = item.find("enclosure")
    if enclosure is None or enclosure.get("type") != "audio/mpeg":
        return [*problems, f"{where}: no audio/mpeg enclosure"]
    url, length = enclosure.get("url", ""), enclosure.get("length", "")
    if sizes.get(url) is None or length != str(sizes[url]):
        problems.append(f"{where}: enclosure length {length} but the object {url} is {sizes.get(url)} bytes")
    try:
        email.utils.parsedate_to_datetime(item.findtext("pubDate") or "")
    except (TypeError, ValueError):
        problems.append(f"{where}: pubDate {item.findtext('pubDate')!r} is not RFC 2822")
    return problems


def feed_problems(xml_bytes: bytes, *, base_url: str, sizes: Mapping[str, int]) -> list[str]:
    """What keeps the feed from what Apple and Podcasting 2.0 apps need: well-formed XML,
    every required tag, each enclosure's length equal to its object's size (``sizes``:
    URL -> bytes), every URL under ``base_url``. Empty when it is fine."""
    try:
        root = ET.fromstring(xml_bytes)
    except ET.ParseError as exc:
        return [f"feed.xml is not well-formed XML: {exc}"]
    channel = root.find("channel")
    if root.tag != "rss" or root.get("version") != "2.0" or channel is None:
        return ["feed.xml is not an RSS 2.0 document"]
    problems = [f"channel: no {tag}" for tag in REQUIRED_CHANNEL if not (channel.findtext(tag) or "").strip()]
    if channel.findtext(f"{{{ITUNES}}}explicit") not in ("true", "false"):
        problems.append("channel: itunes:explicit must be true or false")
    if not channel.findall(f"{{{ITUNES}}}category"):
        problems.append("channel: no itunes:category")
    image = channel.find(f"{{{ITUNES}}}image")
    if image is None or not image.get("href"):
        problems.append("channel: no itunes:image")
    if not (channel.findtext(f"{{{ITUNES}}}owner/{{{ITUNES}}}email") or "").strip():
        problems.append("channel: no itunes:owner e-mail")
    for number, item in enumerate(channel.findall("item"), start=1):
        problems += _item_problems(number, item, sizes)
    problems += [f"{url!r} is not under {base_url}" for url in _urls(root) if not url.startswith(base_url)]
    return problems[:30]

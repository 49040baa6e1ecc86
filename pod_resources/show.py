"""The show: what a listener's app shows about it, where its objects are served, and how its
episodes are mastered. One show per deployment, described by one file (``show.toml``)::

    title = "Pod Pipeline Samples"
    description = "…"
    author = "…"
    owner_name = "…"
    owner_email = "…"
    language = "en"
    categories = ["Technology", "Society & Culture/Documentary"]   # "Parent/Sub"
    explicit = false
    artwork = "artwork.png"        # a file beside show.toml, copied to the store, or
    # artwork_key = "show/artwork.png"   an object already in the store
    public_base_url = "https://cdn.example.com/pod/"   # where the store's root is served
    guid = "…"                      # optional; default UUIDv5 of the feed URL
    intro_key = "shows/main/intro.flac"
    outro_key = "shows/main/outro.flac"
    target_lufs = -16.0

Everything but ``title`` has a default. :class:`ShowResource` is the show as the assets see
it; :func:`load_show_file` reads the file, :func:`show_from_mapping` validates a mapping.
Kept one object so that several shows can follow (one resource per show).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from pod_resources.media_links import DEFAULT_MEDIA_BASE_URL, MediaLinks

ARTWORK_KEY_PREFIX = "show/artwork"
"""Where the artwork named by ``artwork`` is copied in the store (``show/artwork.png``)."""
MIN_ARTWORK_PX, MAX_ARTWORK_PX = 1400, 3000
MAX_TEXT_CHARS = {"title": 255, "author": 255, "owner_name": 255, "description": 4000}
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


class ShowSettingsError(ValueError):
    """The show file is missing, not TOML, or holds a value out of range."""


class ShowResource(dg.ConfigurableResource):
    """The show an episode belongs to.

    ``intro_key`` and ``outro_key`` are object-store keys (``shows/main/intro.flac``) of
    jingles crossfaded onto every episode; leave them unset for none. ``media_base_url``
    (``public_base_url`` in the show file) is the URL at which the store's root is served:
    an object's URL is it plus the percent-encoded key (:mod:`pod_resources.media_links`);
    ``None`` means the store's default (the local media server, ``pod serve-media``, for a
    local store). ``signed_url_lifetime_s``: for GCS without a base URL, browser links are
    V4 signed URLs valid this long (0: none).
    ``artwork_path`` is a local image copied to the store as ``show/artwork.<ext>`` when the
    feed is written; ``artwork_key`` names an image already in the store.
    """

    name: str = "Podcast"
    description: str = ""
    author: str = ""
    owner_name: str = ""
    owner_email: str = ""
    language: str = "en"
    categories: list[str] = ["Technology"]
    explicit: bool = False
    artwork_path: str | None = None
    artwork_key: str | None = None
    media_base_url: str | None = None
    signed_url_lifetime_s: int = 0
    guid: str | None = None
    intro_key: str | None = None
    outro_key: str | None = None
    target_lufs: float | None = None

    def media_links(self) -> MediaLinks:
        """How this show's objects are linked (browser links and feed URLs)."""
        return MediaLinks(base_url=self.media_base_url, signed_url_lifetime_s=self.signed_url_lifetime_s)

    def public_base_url(self) -> str:
        """The URL the store's root is served at, ending in ``/``."""
        return (self.media_base_url or DEFAULT_MEDIA_BASE_URL).rstrip("/") + "/"


def _text(data: Mapping[str, Any], name: str, default: str = "") -> str:
    value = data.get(name, default)
    if not isinstance(value, str):
        raise ShowSettingsError(f"{name} must be text, got {type(value).__name__}")
    limit = MAX_TEXT_CHARS.get(name)
    if limit is not None and len(value) > limit:
        raise ShowSettingsError(f"{name} is {len(value)} characters; at most {limit}")
    return value


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` in pixels of a PNG or JPEG image, ``None`` for anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 9 < len(data) and data[pos] == 0xFF:
        marker, length = data[pos + 1], int.from_bytes(data[pos + 2:pos + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            return int.from_bytes(data[pos + 7:pos + 9], "big"), int.from_bytes(data[pos + 5:pos + 7], "big")
        pos += 2 + length
    return None


def check_artwork(path: Path) -> None:
    """Apple's rule: a square PNG or JPEG of 1400 to 3000 pixels a side."""
    size = image_size(path.read_bytes()[:65536])
    if size is None:
        raise ShowSettingsError(f"artwork {path} is not a PNG or JPEG image")
    width, height = size
    if width != height or not MIN_ARTWORK_PX <= width <= MAX_ARTWORK_PX:
        raise ShowSettingsError(
            f"artwork {path} is {width}x{height} px; it must be square, {MIN_ARTWORK_PX} to {MAX_ARTWORK_PX} px a side"
        )


def _categories(data: Mapping[str, Any]) -> list[str]:
    value = data.get("categories", ["Technology"])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(c, str) and c for c in value):
        raise ShowSettingsError("categories must be a non-empty list of names like 'Technology'")
    return value


def show_from_mapping(data: Mapping[str, Any], *, base_dir: Path | None = None) -> ShowResource:
    """A validated :class:`ShowResource` from the show file's table.

    Raises:
        ShowSettingsError: unknown key, wrong type, a malformed e-mail or language code,
            or an ``artwork`` file that does not exist.
    """
    known = {
        "title", "description", "author", "owner_name", "owner_email", "language",
        "categories", "explicit", "artwork", "artwork_key", "public_base_url", "guid",
        "intro_key", "outro_key", "target_lufs",
    }
    unknown = sorted(set(data) - known)
    if unknown:
        raise ShowSettingsError(f"unknown show setting(s): {', '.join(unknown)}")
    title = _text(data, "title")
    if not title.strip():
        raise ShowSettingsError("title is required")
    email = _text(data, "owner_email")
    if email and not _EMAIL_RE.match(email):
        raise ShowSettingsError(f"owner_email {email!r} is not an e-mail address")
    language = _text(data, "language", "en")
    if not _LANGUAGE_RE.match(language):
        raise ShowSettingsError(f"language {language!r} is not a code like 'en' or 'en-US'")
    explicit = data.get("explicit", False)
    if not isinstance(explicit, bool):
        raise ShowSettingsError("explicit must be true or false")
    base_url = _text(data, "public_base_url")
    if base_url and not re.match(r"^https?://", base_url):
        raise ShowSettingsError(f"public_base_url {base_url!r} must start with http:// or https://")
    artwork_path = None
    if data.get("artwork"):
        path = Path(_text(data, "artwork"))
        path = path if path.is_absolute() else (base_dir or Path.cwd()) / path
        if not path.is_file():
            raise ShowSettingsError(f"artwork {path} does not exist")
        check_artwork(path)
        artwork_path = str(path.resolve())
    target = data.get("target_lufs")
    if target is not None and (not isinstance(target, int | float) or not -40 <= target <= -5):
        raise ShowSettingsError(f"target_lufs must be a number between -40 and -5, got {target!r}")
    return ShowResource(
        name=title,
        description=_text(data, "description"),
        author=_text(data, "author"),
        owner_name=_text(data, "owner_name"),
        owner_email=email,
        language=language,
        categories=_categories(data),
        explicit=explicit,
        artwork_path=artwork_path,
        artwork_key=_text(data, "artwork_key") or None,
        media_base_url=base_url or None,
        guid=_text(data, "guid") or None,
        intro_key=_text(data, "intro_key") or None,
        outro_key=_text(data, "outro_key") or None,
        target_lufs=None if target is None else float(target),
    )


def load_show_file(path: str | Path) -> ShowResource:
    """The show described by the TOML file at ``path`` (relative ``artwork`` paths are
    relative to the file)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ShowSettingsError(f"show file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ShowSettingsError(f"show file {path} is not valid TOML: {exc}") from None
    try:
        return show_from_mapping(data, base_dir=path.parent)
    except ShowSettingsError as exc:
        raise ShowSettingsError(f"show file {path}: {exc}") from None

"""Links a browser opens, for objects of the store.

- A local store is served read-only by ``pod serve-media`` (:mod:`pod_pipeline.media_server`)
  on ``127.0.0.1:3001`` by default: the link of ``episodes/<ep>/episode.mp3`` is
  ``http://127.0.0.1:3001/episodes/<ep>/episode.mp3``.
- A GCS store is linked through the show's public base URL when one is set (a public bucket
  or a CDN in front of it; the URL maps to the store's root, prefix included), else through a
  V4 signed URL with a limited lifetime, else not at all (``None``).

The URL of a key is ``<base URL>/<key>`` with every segment percent-encoded and ``/`` kept as
the separator, so a URL never carries an encoded slash and the media server can refuse them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from collections.abc import Mapping
from urllib.parse import quote, unquote

import dagster as dg

from pod_resources.storage import GCSObjectStore, ObjectStore, validate_key

DEFAULT_MEDIA_PORT = 3001
DEFAULT_MEDIA_HOST = "127.0.0.1"
DEFAULT_MEDIA_BASE_URL = f"http://{DEFAULT_MEDIA_HOST}:{DEFAULT_MEDIA_PORT}/"
#: A signed URL's lifetime when links of a GCS store are signed: 7 days, the V4 maximum.
MAX_SIGNED_URL_LIFETIME_S = 7 * 24 * 3600


class MediaLinkError(ValueError):
    """A media link setting is out of range."""


def media_url(key: str, *, base_url: str = DEFAULT_MEDIA_BASE_URL) -> str:
    """The URL of object ``key`` under ``base_url``: ``<base_url>/<percent-encoded key>``.

    ``key`` must be a valid store key (:func:`pod_resources.storage.validate_key`); each
    segment is percent-encoded on its own, so ``/`` only ever separates segments.
    """
    validate_key(key)
    return base_url.rstrip("/") + "/" + quote(key, safe="/")


@dataclass(frozen=True)
class MediaLinks:
    """How the objects of one store are linked.

    ``base_url``: where the store's root is served; ``None`` means the default of the store
    (:data:`DEFAULT_MEDIA_BASE_URL` for a local store, nothing for GCS).
    ``signed_url_lifetime_s``: for a GCS store without a base URL, sign links valid this long
    (0: no signed links). Signing needs credentials that can sign (a service account key, or
    the IAM ``signBlob`` permission).
    """

    base_url: str | None = None
    signed_url_lifetime_s: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.signed_url_lifetime_s <= MAX_SIGNED_URL_LIFETIME_S:
            raise MediaLinkError(
                f"signed URL lifetime must be 0..{MAX_SIGNED_URL_LIFETIME_S} s, "
                f"not {self.signed_url_lifetime_s}"
            )
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise MediaLinkError(f"media base URL must be http(s)://…, not {self.base_url!r}")

    def link(self, store: ObjectStore, key: str) -> str | None:
        """A URL a browser opens for ``key`` of ``store``, or ``None`` when nothing serves it."""
        if self.base_url:
            return media_url(key, base_url=self.base_url)
        if not isinstance(store, GCSObjectStore):
            return media_url(key)
        if self.signed_url_lifetime_s:
            return _signed_url(store, key, lifetime_s=self.signed_url_lifetime_s)
        return None

    def artifact_links(
        self, store: ObjectStore, artifacts: Mapping[str, str | None]
    ) -> dict[str, str | None]:
        """The same keys as ``artifacts`` (name → ``file://``/``gs://`` URI of ``store``), as
        links; ``None`` for an absent artifact, a URI of another store, or no link."""
        links: dict[str, str | None] = {}
        for name, uri in artifacts.items():
            key = key_of_uri(store, uri) if uri else None
            links[name] = self.link(store, key) if key else None
        return links


def links_metadata(
    store: ObjectStore, links: MediaLinks, keys: Mapping[str, str]
) -> dict[str, dg.MetadataValue]:
    """``<name>_link`` → a URL metadata entry for each ``name → key`` that has a link."""
    out: dict[str, dg.MetadataValue] = {}
    for name, key in keys.items():
        if url := links.link(store, key):
            out[f"{name}_link"] = dg.MetadataValue.url(url)
    return out


def key_of_uri(store: ObjectStore, uri: str) -> str | None:
    """The key whose ``store.uri(key)`` is ``uri``, or ``None`` when ``uri`` is not one of
    ``store``'s (another root or bucket, or not a valid key)."""
    root_uri = store.uri("k")[:-1]
    if not uri.startswith(root_uri):
        return None
    rest = uri[len(root_uri):]
    key = unquote(rest) if root_uri.startswith("file:") else rest
    try:
        return validate_key(key)
    except ValueError:
        return None


def _signed_url(store: GCSObjectStore, key: str, *, lifetime_s: int) -> str:
    prefix = store.prefix.strip("/")
    name = f"{prefix}/{validate_key(key)}" if prefix else validate_key(key)
    blob = store.get_client().bucket(store.bucket).blob(name)
    return blob.generate_signed_url(
        version="v4", expiration=dt.timedelta(seconds=lifetime_s), method="GET"
    )

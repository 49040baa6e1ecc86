"""The one reader of store URLs (``POD_STORAGE_URL``): ``file:///abs/dir`` or ``gs://bucket/prefix``.

A URL names exactly one store: a local directory (an absolute path, percent-decoded, on this
host) or a bucket with an optional prefix that is itself a valid key. Anything else (another
scheme, a relative path, a remote host, a query or fragment, no bucket) is refused with
:class:`ValueError` before any store is built.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from pod_resources.storage.base import ObjectStore
from pod_resources.storage.gcs import GCSObjectStore
from pod_resources.storage.keys import validate_key
from pod_resources.storage.local import LocalObjectStore


def _local_root(url: str, netloc: str, path: str) -> str:
    if netloc not in ("", "localhost"):
        raise ValueError(f"object store URL {url!r} names a remote host")
    root = unquote(path)
    if not root.startswith("/"):
        raise ValueError(f"object store URL {url!r} needs an absolute path (file:///dir)")
    return root


def _gcs_prefix(url: str, bucket: str, path: str) -> str:
    if not bucket:
        raise ValueError(f"object store URL {url!r} has no bucket")
    prefix = path.strip("/")
    if prefix:
        validate_key(prefix)
    return prefix


def store_from_url(url: str, *, project: str | None = None, **kw: Any) -> ObjectStore:
    """Build a store from ``file:///abs/dir`` or ``gs://bucket/prefix``.

    ``project`` is the GCP project of a GCS store's client (a local store has none); other
    keyword arguments go to the store's constructor (``timeout_s=`` …).
    """
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ValueError(f"object store URL {url!r} must not have a query or fragment")
    if parts.scheme == "file":
        return LocalObjectStore(root=_local_root(url, parts.netloc, parts.path), **kw)
    if parts.scheme == "gs":
        prefix = _gcs_prefix(url, parts.netloc, parts.path)
        return GCSObjectStore(bucket=parts.netloc, prefix=prefix, project=project, **kw)
    raise ValueError(
        f"unsupported object store URL {url!r}: expected file:///abs/dir or gs://bucket/prefix"
    )

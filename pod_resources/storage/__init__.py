"""The object store: every durable artifact of the pipeline lives behind this interface.

Assets annotate ``store: ObjectStore`` and never learn which implementation they got:

- :class:`LocalObjectStore` (:mod:`.local`) keeps objects as files under a directory
  (embedded default).
- :class:`GCSObjectStore` (:mod:`.gcs`) keeps them in a Google Cloud Storage bucket, under an
  optional prefix.

The interface, its guarantees and its errors are in :mod:`.base`; the rules for keys in
:mod:`.keys`; :func:`store_from_url` (:mod:`.url`) is the one reader of ``POD_STORAGE_URL``.
"""

from pod_resources.storage.base import (
    InvalidKeyError,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    ObjectStoreError,
    PreconditionFailedError,
)
from pod_resources.storage.gcs import GCSObjectStore
from pod_resources.storage.keys import validate_key, validate_object_name
from pod_resources.storage.local import LocalObjectStore
from pod_resources.storage.url import store_from_url

__all__ = [
    "GCSObjectStore",
    "InvalidKeyError",
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectNotFoundError",
    "ObjectStore",
    "ObjectStoreError",
    "PreconditionFailedError",
    "store_from_url",
    "validate_key",
    "validate_object_name",
]

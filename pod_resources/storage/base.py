"""The object store interface, what it hands out and what it raises.

Assets annotate ``store: ObjectStore`` and never learn which implementation they got
(:mod:`~pod_resources.storage.local` or :mod:`~pod_resources.storage.gcs`).

Guarantees on every implementation:

- Writes are atomic: a reader sees the old object or the new one, never a part.
- Writes, deletes and copies take an optional generation precondition
  (``if_generation_match``: ``None`` = unconditional, ``0`` = create only, ``n`` = only if the
  current generation is ``n``); a failed precondition raises :class:`PreconditionFailedError`.
- A missing object raises :class:`ObjectNotFoundError` at once: one request, no polling.
- Files are streamed in both directions; an object is never held in memory whole, except by
  the ``*_bytes`` / ``*_json`` conveniences.

``write_file`` and ``write_bytes`` are written once, here: each wraps its input in a
:class:`Payload`, its options in :class:`WriteOptions`, and hands both to the
implementation's ``_write_payload``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import mimetypes
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

import dagster as dg

from pod_audio.errors import PermanentError

#: Bytes read or written at a time when a store streams a file.
CHUNK_BYTES = 1 << 20
#: Content type of an object whose key's extension says nothing.
DEFAULT_CONTENT_TYPE = "application/octet-stream"

log = dg.get_dagster_logger("pod_resources.storage")


@dataclass(frozen=True)
class ObjectInfo:
    """What the store knows about one object."""

    key: str
    """Key relative to the store root, ``/``-separated (``uploads/a.mp3``)."""
    size: int
    """Size in bytes."""
    generation: int
    """Positive; changes on every write of the key (GCS generation, local mtime in ns)."""
    updated: datetime
    """Time of the last write, timezone-aware UTC."""
    md5_hex: str | None = None
    """Hex MD5 of the content when known without reading it, else ``None``."""
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Custom metadata given at write time (read-only)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))


class ObjectStoreError(Exception):
    """Base class of every error raised by the object store."""


class ObjectNotFoundError(ObjectStoreError, PermanentError):
    """The key holds no object. Permanent: an input either exists or the step fails at once."""

    def __init__(self, key: str, uri: str) -> None:
        super().__init__(f"object not found: {key} ({uri})")
        self.key = key
        self.uri = uri

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.uri))


class PreconditionFailedError(ObjectStoreError):
    """The object's generation was not the one the caller required.

    ``actual`` is the generation found (0: no object), or ``None`` when only the server knew it.
    """

    def __init__(self, key: str, uri: str, expected: int, actual: int | None = None) -> None:
        wanted = "no object" if expected == 0 else f"generation {expected}"
        if actual is None:
            found = "the object changed concurrently"
        elif actual == 0:
            found = "found no object"
        else:
            found = f"found generation {actual}"
        super().__init__(f"precondition failed for {key} ({uri}): expected {wanted}, {found}")
        self.key = key
        self.uri = uri
        self.expected = expected
        self.actual = actual

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.uri, self.expected, self.actual))


class InvalidKeyError(ObjectStoreError, ValueError):
    """The key is not a safe, relative, ``/``-separated object key."""


def checked_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Custom metadata as a plain dict, refused unless it maps non-empty names to strings."""
    if not metadata:
        return {}
    for name, value in metadata.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"object metadata must map str to str, got {name!r}: {value!r}")
        if not name:
            raise ValueError("object metadata names must not be empty")
    return dict(metadata)


def content_type_for(key: str, content_type: str | None) -> str:
    """The content type given, else one guessed from the key's extension."""
    return content_type or mimetypes.guess_type(key)[0] or DEFAULT_CONTENT_TYPE


def file_md5_hex(path: str | os.PathLike[str]) -> str:
    """Hex MD5 of the file at ``path``, read in chunks."""
    with open(path, "rb") as source:
        return hashlib.file_digest(source, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path next to ``path``; it replaces ``path`` only if the block succeeds."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name[:100]}.{uuid.uuid4().hex}.part")
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@dataclass(frozen=True)
class Payload:
    """The bytes of one write: a file on disk (``path``, streamed) or ``data`` in memory."""

    path: str | None = None
    data: bytes = b""

    def open(self) -> IO[bytes]:
        """The bytes as a binary stream, read from the start."""
        if self.path is not None:
            return open(self.path, "rb")  # noqa: SIM115 - the caller closes it
        return io.BytesIO(self.data)

    def md5_hex(self) -> str:
        """Hex MD5 of the bytes (the file is read again)."""
        if self.path is not None:
            return file_md5_hex(self.path)
        return hashlib.md5(self.data, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class WriteOptions:
    """How one write may land, as its caller asked (see :meth:`ObjectStore.write_file`)."""

    if_generation_match: int | None = None
    """``None``: unconditional; ``0``: create only; ``n``: replace generation ``n`` only."""
    metadata: Mapping[str, str] | None = None
    """Custom metadata stored with the object."""
    content_type: str | None = None
    """``None``: guessed from the key's extension."""


class ObjectStore(dg.ConfigurableResource, ABC):
    """Durable object storage for the pipeline: a local directory or a GCS bucket.

    See the module docstring for the guarantees every implementation gives.
    """

    @abstractmethod
    def uri(self, key: str) -> str:
        """Where ``key`` lives: ``file:///abs/path/key`` or ``gs://bucket/prefix/key``."""

    @abstractmethod
    def _write_payload(self, key: str, payload: Payload, options: WriteOptions) -> ObjectInfo:
        """Store ``payload`` under ``key``: what :meth:`write_file` promises."""

    def write_file(
        self,
        key: str,
        path: str | os.PathLike[str],
        *,
        if_generation_match: int | None = None,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> ObjectInfo:
        """Store the file at ``path`` under ``key``, streaming; atomic.

        ``if_generation_match``: ``None`` overwrites unconditionally, ``0`` creates only,
        ``n`` replaces generation ``n`` only; otherwise :class:`PreconditionFailedError`.
        ``content_type`` defaults to a guess from the key's extension.
        """
        options = WriteOptions(if_generation_match, metadata, content_type)
        return self._write_payload(key, Payload(path=os.fspath(path)), options)

    def write_bytes(
        self,
        key: str,
        data: bytes,
        *,
        if_generation_match: int | None = None,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> ObjectInfo:
        """Store ``data`` under ``key``; same semantics as :meth:`write_file`."""
        options = WriteOptions(if_generation_match, metadata, content_type)
        return self._write_payload(key, Payload(data=data), options)

    def write_json(
        self,
        key: str,
        obj: Any,
        *,
        if_generation_match: int | None = None,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = "application/json",
    ) -> ObjectInfo:
        """Store ``obj`` as UTF-8 JSON under ``key``; same semantics as :meth:`write_file`."""
        data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        return self.write_bytes(
            key,
            data,
            if_generation_match=if_generation_match,
            metadata=metadata,
            content_type=content_type,
        )

    @abstractmethod
    def read_to_path(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        """Stream the object into ``path`` (replaced atomically) and describe what was read.

        Raises :class:`ObjectNotFoundError` after one request if the key holds no object.
        """

    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """The whole object in memory; for small objects. :class:`ObjectNotFoundError` if absent."""

    def read_json(self, key: str) -> Any:
        """The object parsed as UTF-8 JSON. :class:`ObjectNotFoundError` if absent."""
        return json.loads(self.read_bytes(key).decode("utf-8"))

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """Describe the object, or ``None`` if the key holds none."""

    def exists(self, key: str) -> bool:
        """Whether the key holds an object."""
        return self.stat(key) is not None

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (``"uploads/"``), sorted by key.

        Objects whose names are not valid keys (written by other tools) are skipped with a
        warning: the store never hands out a key it could not read back.
        """

    @abstractmethod
    def delete(self, key: str, *, if_generation_match: int | None = None) -> None:
        """Delete the object.

        :class:`ObjectNotFoundError` if absent; :class:`PreconditionFailedError` if
        ``if_generation_match`` is given and differs from the current generation.
        """

    @abstractmethod
    def copy(
        self, src_key: str, dst_key: str, *, if_generation_match: int | None = None
    ) -> ObjectInfo:
        """Copy an object with its metadata; atomic. The precondition applies to ``dst_key``."""

"""The object store: every durable artifact of the pipeline lives behind this interface.

Assets annotate ``store: ObjectStore`` and never learn which implementation they got:

- :class:`LocalObjectStore` keeps objects as files under a directory (embedded default).
- :class:`GCSObjectStore` keeps them in a Google Cloud Storage bucket, under an optional prefix.

Keys are ``/``-separated and relative to the store root (``episodes/<ep>/raw.flac``). They are
checked by :func:`validate_key` before they touch a path or an object name, because upload names
are hostile input.

Guarantees on both implementations:

- Writes are atomic: a reader sees the old object or the new one, never a part.
- Writes, deletes and copies take an optional generation precondition
  (``if_generation_match``: ``None`` = unconditional, ``0`` = create only, ``n`` = only if the
  current generation is ``n``); a failed precondition raises :class:`PreconditionFailedError`.
- A missing object raises :class:`ObjectNotFoundError` at once: one request, no polling.
- Files are streamed in both directions; an object is never held in memory whole, except by
  the ``*_bytes`` / ``*_json`` conveniences.

On GCS, transient failures (503, 429, dropped connections, timeouts) are retried with backoff
within a deadline, a retried write happens once, and a stalled server ends in
:class:`ObjectStoreError`, never a hang (see :class:`GCSObjectStore`).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import hashlib
import io
import json
import mimetypes
import os
import stat as stat_mode
import threading
import time
import unicodedata
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import dagster as dg
import requests
from google.api_core import exceptions as google_exceptions
from google.auth import exceptions as google_auth_exceptions
from google.cloud.storage import exceptions as storage_exceptions
from google.cloud.storage.retry import DEFAULT_RETRY
from pydantic import Field, PrivateAttr

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

#: Longest key, in UTF-8 bytes (the GCS limit for a whole object name).
MAX_KEY_BYTES = 1024
#: Longest key segment, in UTF-8 bytes: a file name (255) minus the sidecar's ".json".
MAX_SEGMENT_BYTES = 250
#: Key segments starting with this are reserved for the store's own files.
RESERVED_SEGMENT_PREFIX = ".pod-"

_TMP_PREFIX = ".pod-tmp-"
_META_DIR = ".pod-meta"
_LOCK_FILE = ".pod-lock"
_CHUNK_BYTES = 1 << 20
#: Resumable-upload chunk (uploads over 8 MiB): bounds the memory one upload holds.
_UPLOAD_CHUNK_BYTES = 8 << 20
_MAX_ATTEMPTS = 5
_DEFAULT_CONTENT_TYPE = "application/octet-stream"

_log = dg.get_dagster_logger(__name__)


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


class ObjectNotFoundError(ObjectStoreError):
    """The key holds no object."""

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


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a safe object key, else raise :class:`InvalidKeyError`.

    Rejected: non-strings, the empty key, a leading ``/``, empty segments (``a//b``, a trailing
    ``/``), ``.`` and ``..`` segments, backslashes, NUL and other control characters, lone
    surrogates, segments starting with ``.pod-`` (the store's own files), segments over
    ``MAX_SEGMENT_BYTES`` and keys over ``MAX_KEY_BYTES`` UTF-8 bytes. Unicode and spaces are
    fine.
    """
    if not isinstance(key, str):
        raise InvalidKeyError(f"object key must be a str, not {type(key).__name__}")
    shown = repr(key if len(key) <= 120 else key[:120] + "…")
    if not key:
        raise InvalidKeyError("object key is empty")
    if key.startswith("/"):
        raise InvalidKeyError(f"object key {shown} is absolute (leading '/')")
    if "\\" in key:
        raise InvalidKeyError(f"object key {shown} contains a backslash")
    for char in key:
        category = unicodedata.category(char)
        if category == "Cc":
            raise InvalidKeyError(f"object key {shown} contains control character {char!r}")
        if category == "Cs":
            raise InvalidKeyError(f"object key {shown} is not valid unicode (lone surrogate)")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"object key {shown} is longer than {MAX_KEY_BYTES} bytes")
    for segment in key.split("/"):
        if not segment:
            raise InvalidKeyError(f"object key {shown} has an empty segment")
        if segment in (".", ".."):
            raise InvalidKeyError(f"object key {shown} has a {segment!r} segment")
        if segment.startswith(RESERVED_SEGMENT_PREFIX):
            raise InvalidKeyError(
                f"object key {shown}: segments starting with "
                f"{RESERVED_SEGMENT_PREFIX!r} are reserved for the store"
            )
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidKeyError(
                f"object key {shown} has a segment longer than {MAX_SEGMENT_BYTES} bytes"
            )
    return key


def validate_object_name(key: str) -> str:
    """The looser rule for keys that only ever name a GCS object, never a local path.

    A bucket can hold names no file system can (``uploads/../x.mp3``, a 300-character
    segment): they are legal GCS names that a producer may upload, so the GCS store reads,
    lists, copies and deletes them. Still refused: non-strings, the empty key, a leading
    ``/``, control characters (GCS forbids CR and LF), lone surrogates, and names over
    ``MAX_KEY_BYTES``. Everything the pipeline *writes* is built from episode ids and fixed
    file names, so it also passes :func:`validate_key`.
    """
    if not isinstance(key, str):
        raise InvalidKeyError(f"object key must be a str, not {type(key).__name__}")
    shown = repr(key if len(key) <= 120 else key[:120] + "…")
    if not key or key.startswith("/"):
        raise InvalidKeyError(f"object name {shown} is empty or absolute")
    for char in key:
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise InvalidKeyError(f"object name {shown} contains character {char!r}")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"object name {shown} is longer than {MAX_KEY_BYTES} bytes")
    return key


def _validate_prefix(prefix: str) -> str:
    """A listing prefix is empty, a key, or a key followed by one ``/``."""
    if prefix:
        validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def _checked_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if not metadata:
        return {}
    for name, value in metadata.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"object metadata must map str to str, got {name!r}: {value!r}")
        if not name:
            raise ValueError("object metadata names must not be empty")
    return dict(metadata)


def _content_type_for(key: str, content_type: str | None) -> str:
    return content_type or mimetypes.guess_type(key)[0] or _DEFAULT_CONTENT_TYPE


def _utc_from_ns(ns: int) -> datetime:
    seconds, rest_ns = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest_ns // 1000)


@contextlib.contextmanager
def _atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
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


class ObjectStore(dg.ConfigurableResource, ABC):
    """Durable object storage for the pipeline: a local directory or a GCS bucket.

    See the module docstring for the guarantees every implementation gives.
    """

    @abstractmethod
    def uri(self, key: str) -> str:
        """Where ``key`` lives: ``file:///abs/path/key`` or ``gs://bucket/prefix/key``."""

    @abstractmethod
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

    @abstractmethod
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


class LocalObjectStore(ObjectStore):
    """Objects as files under a local directory.

    Writes go to a hidden temp file in the target's folder, are fsynced and renamed into place.
    Generation checks, renames and deletes happen under an exclusive ``flock`` on
    ``<root>/.pod-lock``, so preconditions hold across threads and processes on one host.
    Custom metadata, content type and MD5 live in sidecars under ``<root>/.pod-meta/``; a
    sidecar counts only while its recorded generation matches the file's, so a file changed by
    another program simply has no metadata. The generation is the file's mtime in ns, made
    strictly increasing by the store. Keys that would resolve outside the root (symlinks) are
    refused.
    """

    root: str = Field(description="Directory holding the objects; created on first use.")

    # -- paths -----------------------------------------------------------------------------

    def _root_dir(self) -> Path:
        root = Path(self.root).expanduser()
        root.mkdir(parents=True, exist_ok=True)
        return root.resolve()

    def _path(self, root: Path, key: str) -> Path:
        path = root.joinpath(*validate_key(key).split("/"))
        self._ensure_inside(root, path, key)
        return path

    @staticmethod
    def _ensure_inside(root: Path, path: Path, key: str) -> None:
        real = os.path.realpath(path)
        if real != str(root) and not real.startswith(str(root) + os.sep):
            raise InvalidKeyError(f"object key {key!r} resolves outside the store root {root}")

    def _sidecar_path(self, root: Path, key: str) -> Path:
        path = root.joinpath(_META_DIR, *key.split("/"))
        path = path.with_name(path.name + ".json")
        self._ensure_inside(root, path, key)
        return path

    def uri(self, key: str) -> str:
        return self._path(self._root_dir(), key).as_uri()

    # -- locking and sidecars --------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, root: Path, *, exclusive: bool) -> Iterator[None]:
        fd = os.open(root / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def _read_sidecar(self, root: Path, key: str, generation: int) -> dict[str, Any]:
        try:
            sidecar = json.loads(self._sidecar_path(root, key).read_bytes())
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return {}
        if not isinstance(sidecar, dict) or sidecar.get("generation") != generation:
            return {}
        return sidecar

    def _write_sidecar(self, root: Path, key: str, sidecar: dict[str, Any]) -> None:
        path = self._sidecar_path(root, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            with open(tmp, "xb") as out:
                out.write(json.dumps(sidecar, ensure_ascii=False).encode("utf-8"))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _info(
        self, root: Path, key: str, st: os.stat_result, sidecar: dict[str, Any] | None = None
    ) -> ObjectInfo:
        if sidecar is None:
            sidecar = self._read_sidecar(root, key, st.st_mtime_ns)
        return ObjectInfo(
            key=key,
            size=st.st_size,
            generation=st.st_mtime_ns,
            updated=_utc_from_ns(st.st_mtime_ns),
            md5_hex=sidecar.get("md5"),
            metadata=sidecar.get("metadata") or {},
        )

    @staticmethod
    def _current_generation(path: Path, key: str) -> int:
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return 0
        if stat_mode.S_ISDIR(st.st_mode):
            raise ObjectStoreError(f"cannot write {key}: it is a folder of other objects")
        return st.st_mtime_ns

    @staticmethod
    def _stamp(tmp: Path, *, after: int) -> int:
        """Give ``tmp`` an mtime above ``after`` and return it: the new generation."""
        for step_ns in (1, 1_000, 1_000_000_000):  # ns, µs or s timestamp resolution
            target = max(time.time_ns(), after + step_ns)
            os.utime(tmp, ns=(target, target))
            generation = os.stat(tmp).st_mtime_ns
            if generation > after:
                return generation
        raise ObjectStoreError(f"the filesystem of {tmp.parent} cannot store distinct mtimes")

    # -- writes ----------------------------------------------------------------------------

    def _write_stream(
        self,
        key: str,
        source: IO[bytes],
        *,
        if_generation_match: int | None,
        metadata: Mapping[str, str] | None,
        content_type: str | None,
    ) -> ObjectInfo:
        root = self._root_dir()
        path = self._path(root, key)
        sidecar: dict[str, Any] = {
            "metadata": _checked_metadata(metadata),
            "content_type": _content_type_for(key, content_type),
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as e:
            raise ObjectStoreError(f"cannot write {key}: a parent of it is an object") from e
        tmp = path.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            digest = hashlib.md5(usedforsecurity=False)
            with open(tmp, "xb") as out:
                while chunk := source.read(_CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            sidecar["md5"] = digest.hexdigest()
            with self._locked(root, exclusive=True):
                current = self._current_generation(path, key)
                if if_generation_match is not None and if_generation_match != current:
                    raise PreconditionFailedError(key, self.uri(key), if_generation_match, current)
                sidecar["generation"] = self._stamp(tmp, after=current)
                # Sidecar first: a crash between the two renames leaves a sidecar whose
                # generation matches no file, which readers ignore.
                self._write_sidecar(root, key, sidecar)
                os.replace(tmp, path)
                _fsync_dir(path.parent)
                info = self._info(root, key, os.stat(path))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return info

    def write_file(
        self,
        key: str,
        path: str | os.PathLike[str],
        *,
        if_generation_match: int | None = None,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> ObjectInfo:
        with open(path, "rb") as source:
            return self._write_stream(
                key,
                source,
                if_generation_match=if_generation_match,
                metadata=metadata,
                content_type=content_type,
            )

    def write_bytes(
        self,
        key: str,
        data: bytes,
        *,
        if_generation_match: int | None = None,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> ObjectInfo:
        return self._write_stream(
            key,
            io.BytesIO(data),
            if_generation_match=if_generation_match,
            metadata=metadata,
            content_type=content_type,
        )

    # -- reads -----------------------------------------------------------------------------

    def _open(self, key: str) -> tuple[IO[bytes], ObjectInfo, dict[str, Any]]:
        """Open the object and describe it consistently (file, info, sidecar)."""
        root = self._root_dir()
        path = self._path(root, key)
        with self._locked(root, exclusive=False):
            try:
                source = open(path, "rb")  # noqa: SIM115 - handed to the caller
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                raise ObjectNotFoundError(key, path.as_uri()) from None
            try:
                st = os.fstat(source.fileno())
                sidecar = self._read_sidecar(root, key, st.st_mtime_ns)
                info = self._info(root, key, st, sidecar)
            except BaseException:
                source.close()
                raise
        return source, info, sidecar

    def read_to_path(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        source, info, _ = self._open(key)
        with source, _atomic_output(path) as tmp, open(tmp, "xb") as out:
            while chunk := source.read(_CHUNK_BYTES):
                out.write(chunk)
        return info

    def read_bytes(self, key: str) -> bytes:
        source, _, _ = self._open(key)
        with source:
            return source.read()

    def stat(self, key: str) -> ObjectInfo | None:
        root = self._root_dir()
        path = self._path(root, key)
        with self._locked(root, exclusive=False):
            try:
                st = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                return None
            if not stat_mode.S_ISREG(st.st_mode):
                return None
            return self._info(root, key, st)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        _validate_prefix(prefix)
        root = self._root_dir()
        folder_key = prefix.rpartition("/")[0]
        folder = root.joinpath(*folder_key.split("/")) if folder_key else root
        self._ensure_inside(root, folder, prefix)
        return self._walk(root, folder, folder_key, prefix)

    def _walk(self, root: Path, folder: Path, folder_key: str, prefix: str) -> Iterator[ObjectInfo]:
        """Yield the objects under ``folder`` in key order without sorting the whole tree.

        Sorting a folder's entries with ``/`` appended to sub-folder names orders them exactly
        as their keys sort, so each folder is read, sorted and walked on its own.
        """
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        files: list[str] = []
        subfolders: list[str] = []
        for entry in entries:
            if entry.name.startswith(RESERVED_SEGMENT_PREFIX):
                continue  # temp files, sidecars and the lock file
            key = f"{folder_key}/{entry.name}" if folder_key else entry.name
            if entry.is_dir(follow_symlinks=False):
                if (key + "/").startswith(prefix) or prefix.startswith(key + "/"):
                    subfolders.append(key)
            elif entry.is_file(follow_symlinks=False) and key.startswith(prefix):
                files.append(key)
        infos: dict[str, ObjectInfo] = {}
        with self._locked(root, exclusive=False):
            for key in files:
                try:
                    validate_key(key)
                    st = os.stat(root.joinpath(*key.split("/")), follow_symlinks=False)
                except InvalidKeyError as e:
                    _log.warning("object store: skipping %s: %s", root.as_uri(), e)
                    continue
                except FileNotFoundError:
                    continue  # deleted since the scan
                infos[key] = self._info(root, key, st)
        order = sorted([*infos, *(key + "/" for key in subfolders)])
        for name in order:
            if name.endswith("/"):
                key = name[:-1]
                try:
                    validate_key(key)
                except InvalidKeyError as e:
                    _log.warning("object store: skipping folder in %s: %s", root.as_uri(), e)
                    continue
                yield from self._walk(root, root.joinpath(*key.split("/")), key, prefix)
            else:
                yield infos[name]

    # -- delete and copy -------------------------------------------------------------------

    def delete(self, key: str, *, if_generation_match: int | None = None) -> None:
        root = self._root_dir()
        path = self._path(root, key)
        with self._locked(root, exclusive=True):
            try:
                st = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                st = None
            if st is None or not stat_mode.S_ISREG(st.st_mode):
                raise ObjectNotFoundError(key, path.as_uri())
            if if_generation_match is not None and if_generation_match != st.st_mtime_ns:
                raise PreconditionFailedError(
                    key, path.as_uri(), if_generation_match, st.st_mtime_ns
                )
            os.unlink(path)
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                os.unlink(self._sidecar_path(root, key))
            _fsync_dir(path.parent)

    def copy(
        self, src_key: str, dst_key: str, *, if_generation_match: int | None = None
    ) -> ObjectInfo:
        validate_key(dst_key)
        source, _, sidecar = self._open(src_key)
        with source:
            return self._write_stream(
                dst_key,
                source,
                if_generation_match=if_generation_match,
                metadata=sidecar.get("metadata"),
                content_type=sidecar.get("content_type"),
            )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_md5_hex(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


_GCS_TRANSPORT_ERRORS = (
    google_exceptions.GoogleAPIError,
    google_auth_exceptions.GoogleAuthError,
    storage_exceptions.InvalidResponse,
    storage_exceptions.DataCorruption,
    requests.RequestException,
)


class GCSObjectStore(ObjectStore):
    """Objects in a Google Cloud Storage bucket, under ``<prefix>/`` when a prefix is set.

    Every request carries ``timeout_s`` and the library's ``DEFAULT_RETRY``: 408, 429 and
    5xx answers, dropped connections and timeouts are retried with exponential backoff and
    jitter until ``retry_deadline_s``, then raise :class:`ObjectStoreError`. The retry is
    passed explicitly on every call, uploads, deletes and rewrites included, so one policy
    and one deadline hold everywhere, whatever the library's per-call defaults (a
    conditional policy for rewrites, 120 s for the rest). Every mutation is sent
    with ``if_generation_match``, so retrying it is safe: an unconditional write first reads
    the current generation and makes the upload conditional on it, going again if another
    writer slipped in between. Preconditions are also checked against that read before any
    bytes are sent, so a doomed upload fails at once.

    A write whose first attempt landed but whose answer was lost comes back refused by its
    own precondition (412), or, for a resumable upload, with its session closed (404). The
    store then reads the object: if it holds the same bytes (MD5), metadata and content type,
    that is the write, returned as is, so it is neither repeated nor reported as a lost race.
    Anything else there is a newer generation, which a conditional write never replaces.

    The client comes from ``dagster_gcp.GCSResource(project=...).get_client()`` (which honours
    ``STORAGE_EMULATOR_HOST``) and is created once per resource instance, on first use.
    """

    bucket: str = Field(description="GCS bucket name.")
    prefix: str = Field(default="", description="Keys are stored under '<prefix>/'.")
    project: str | None = Field(default=None, description="GCP project of the client.")
    timeout_s: float = Field(
        default=60.0, description="Timeout of each HTTP request (connect and read), in seconds."
    )
    retry_deadline_s: float = Field(
        default=120.0, description="Total time one call may spend retrying, in seconds."
    )
    list_page_size: int = Field(
        default=1000, ge=1, le=1000, description="Objects per listing request."
    )

    _client: Any = PrivateAttr(default=None)
    _client_lock: Any = PrivateAttr(default_factory=threading.Lock)

    # -- client and names ------------------------------------------------------------------

    def get_client(self) -> Any:
        """The ``google.cloud.storage.Client`` of this store, created on first use."""
        with self._client_lock:
            if self._client is None:
                from dagster_gcp import GCSResource

                self._client = GCSResource(project=self.project).get_client()
            return self._client

    def _bucket(self) -> Any:
        return self.get_client().bucket(self.bucket)

    def _name_prefix(self) -> str:
        prefix = self.prefix.strip("/")
        return f"{validate_key(prefix)}/" if prefix else ""

    def _name(self, key: str) -> str:
        name = self._name_prefix() + validate_object_name(key)
        if len(name.encode("utf-8")) > MAX_KEY_BYTES:
            raise InvalidKeyError(
                f"object name for key {key!r} is longer than {MAX_KEY_BYTES} bytes"
            )
        return name

    def _call_options(self) -> dict[str, Any]:
        return {
            "retry": DEFAULT_RETRY.with_timeout(self.retry_deadline_s),
            "timeout": self.timeout_s,
        }

    def uri(self, key: str) -> str:
        return f"gs://{self.bucket}/{self._name(key)}"

    @contextlib.contextmanager
    def _errors(self, action: str, key: str, *, uri: str | None = None) -> Iterator[None]:
        """Turn transport and server failures into :class:`ObjectStoreError`.

        404 and 412 pass through: each caller decides what they mean.
        """
        try:
            yield
        except (google_exceptions.NotFound, google_exceptions.PreconditionFailed):
            raise
        except _GCS_TRANSPORT_ERRORS as e:
            where = uri or self.uri(key)
            raise ObjectStoreError(f"{action} {key} ({where}) failed: {e}") from e

    def _info(self, key: str, blob: Any) -> ObjectInfo:
        md5_hex = base64.b64decode(blob.md5_hash).hex() if blob.md5_hash else None
        return ObjectInfo(
            key=key,
            size=int(blob.size),
            generation=int(blob.generation),
            updated=blob.updated,
            md5_hex=md5_hex,
            metadata=blob.metadata or {},
        )

    def _get_blob(self, key: str) -> Any:
        """The blob with its properties loaded (one request), or ``None``."""
        with self._errors("stat", key):
            return self._bucket().get_blob(self._name(key), **self._call_options())

    # -- writes ----------------------------------------------------------------------------

    def _landed(
        self, key: str, md5_hex: Callable[[], str], metadata: Mapping[str, str], content_type: str
    ) -> tuple[Any, bool]:
        """After a write refused by its precondition (412) or by a closed upload session
        (404): the object now under ``key`` (or ``None``), and whether it is that write.

        The client retries a request whose answer was lost (reset, 503, timeout); when the
        first attempt had landed, the retry's own ``if_generation_match`` refuses it. An
        object with the same bytes (MD5), metadata and content type is that write, so it is
        not written a second time and the caller is not told it lost a race it won.
        """
        current = self._get_blob(key)
        if current is None or not current.md5_hash:
            return current, False
        same = (
            base64.b64decode(current.md5_hash).hex() == md5_hex()
            and dict(current.metadata or {}) == dict(metadata)
            and (current.content_type or _DEFAULT_CONTENT_TYPE) == content_type
        )
        return current, same

    def _write(
        self,
        key: str,
        upload: Callable[[Any, int, str], None],
        *,
        md5_hex: Callable[[], str],
        if_generation_match: int | None,
        metadata: Mapping[str, str] | None,
        content_type: str | None,
    ) -> ObjectInfo:
        name = self._name(key)
        custom = _checked_metadata(metadata)
        resolved_type = _content_type_for(key, content_type)
        for _ in range(_MAX_ATTEMPTS):
            current = self._get_blob(key)
            generation = current.generation if current is not None else 0
            if if_generation_match is not None and if_generation_match != generation:
                raise PreconditionFailedError(key, self.uri(key), if_generation_match, generation)
            blob = self._bucket().blob(name, chunk_size=_UPLOAD_CHUNK_BYTES)
            blob.metadata = custom or None
            try:
                with self._errors("write", key):
                    upload(blob, generation, resolved_type)
            except google_exceptions.PreconditionFailed:
                # Another writer got in first, or an earlier attempt of this upload landed
                # and only its answer was lost: look at what is there now.
                landed, ours = self._landed(key, md5_hex, custom, resolved_type)
                if ours:
                    return self._info(key, landed)
                if if_generation_match is not None:
                    actual = landed.generation if landed is not None else 0
                    raise PreconditionFailedError(
                        key, self.uri(key), if_generation_match, actual
                    ) from None
                continue  # unconditional: decide again on the newer generation
            except google_exceptions.NotFound as e:
                # A resumable upload whose last answer was lost: its retry finds the session
                # closed because the object was made. Otherwise the bucket is missing.
                landed, ours = self._landed(key, md5_hex, custom, resolved_type)
                if ours:
                    return self._info(key, landed)
                raise ObjectStoreError(f"write {key} ({self.uri(key)}) failed: {e}") from e
            return self._info(key, blob)
        raise ObjectStoreError(
            f"write {key} ({self.uri(key)}) gave up: changed concurrently {_MAX_ATTEMPTS} times"
        )

    def write_file(
        self,
        key: str,
        path: str | os.PathLike[str],
        *,
        if_generation_match: int | None = None,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> ObjectInfo:
        filename = os.fspath(path)
        if not os.path.isfile(filename):
            raise FileNotFoundError(f"no file to upload at {filename}")

        def upload(blob: Any, generation: int, resolved_type: str) -> None:
            blob.upload_from_filename(
                filename,
                content_type=resolved_type,
                if_generation_match=generation,
                **self._call_options(),
            )

        return self._write(
            key,
            upload,
            md5_hex=functools.cache(lambda: _file_md5_hex(filename)),
            if_generation_match=if_generation_match,
            metadata=metadata,
            content_type=content_type,
        )

    def write_bytes(
        self,
        key: str,
        data: bytes,
        *,
        if_generation_match: int | None = None,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> ObjectInfo:
        def upload(blob: Any, generation: int, resolved_type: str) -> None:
            blob.upload_from_string(
                data,
                content_type=resolved_type,
                if_generation_match=generation,
                **self._call_options(),
            )

        return self._write(
            key,
            upload,
            md5_hex=lambda: hashlib.md5(data, usedforsecurity=False).hexdigest(),
            if_generation_match=if_generation_match,
            metadata=metadata,
            content_type=content_type,
        )

    # -- reads -----------------------------------------------------------------------------

    def read_to_path(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        for _ in range(_MAX_ATTEMPTS):
            blob = self._get_blob(key)
            if blob is None:
                raise ObjectNotFoundError(key, self.uri(key))
            try:
                with self._errors("read", key), _atomic_output(path) as tmp:
                    # Pinned to the generation just described, so bytes and info agree.
                    blob.download_to_filename(
                        tmp, if_generation_match=blob.generation, **self._call_options()
                    )
            except google_exceptions.NotFound:
                raise ObjectNotFoundError(key, self.uri(key)) from None
            except google_exceptions.PreconditionFailed:
                continue  # replaced while we looked: describe the new one and read again
            return self._info(key, blob)
        raise ObjectStoreError(
            f"read {key} ({self.uri(key)}) gave up: changed concurrently {_MAX_ATTEMPTS} times"
        )

    def read_bytes(self, key: str) -> bytes:
        blob = self._bucket().blob(self._name(key))
        try:
            with self._errors("read", key):
                return blob.download_as_bytes(**self._call_options())
        except google_exceptions.NotFound:
            raise ObjectNotFoundError(key, self.uri(key)) from None
        except google_exceptions.PreconditionFailed as e:
            raise ObjectStoreError(f"read {key} ({self.uri(key)}) failed: {e}") from e

    def stat(self, key: str) -> ObjectInfo | None:
        blob = self._get_blob(key)
        return None if blob is None else self._info(key, blob)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        _validate_prefix(prefix)
        return self._iter_list(self._name_prefix(), prefix)

    def _iter_list(self, name_prefix: str, prefix: str) -> Iterator[ObjectInfo]:
        blobs = self.get_client().list_blobs(
            self.bucket,
            prefix=name_prefix + prefix,
            page_size=self.list_page_size,
            **self._call_options(),
        )
        where = f"gs://{self.bucket}/{name_prefix}{prefix}"
        with self._errors("list", prefix, uri=where):
            for blob in blobs:
                key = blob.name[len(name_prefix) :]
                if not key or key.endswith("/"):  # "folder/" placeholders are not objects
                    continue
                try:
                    validate_object_name(key)
                except InvalidKeyError as e:
                    if not key.endswith("/"):  # "folder/" placeholders are expected noise
                        _log.warning(
                            "object store: skipping gs://%s/%s: %s", self.bucket, blob.name, e
                        )
                    continue
                yield self._info(key, blob)

    # -- delete and copy -------------------------------------------------------------------

    def delete(self, key: str, *, if_generation_match: int | None = None) -> None:
        for _ in range(_MAX_ATTEMPTS):
            blob = self._get_blob(key)
            if blob is None:
                raise ObjectNotFoundError(key, self.uri(key))
            # Compared here as well as sent: some emulators ignore the delete precondition.
            if if_generation_match is not None and if_generation_match != blob.generation:
                raise PreconditionFailedError(
                    key, self.uri(key), if_generation_match, blob.generation
                )
            try:
                with self._errors("delete", key):
                    blob.delete(if_generation_match=blob.generation, **self._call_options())
            except google_exceptions.NotFound:
                return  # that generation is gone already (a retried request, or a peer)
            except google_exceptions.PreconditionFailed:
                continue  # replaced while we looked: decide again on the new generation
            return
        raise ObjectStoreError(
            f"delete {key} ({self.uri(key)}) gave up: changed concurrently {_MAX_ATTEMPTS} times"
        )

    def copy(
        self, src_key: str, dst_key: str, *, if_generation_match: int | None = None
    ) -> ObjectInfo:
        dst_name = self._name(dst_key)
        for _ in range(_MAX_ATTEMPTS):
            source = self._get_blob(src_key)
            if source is None:
                raise ObjectNotFoundError(src_key, self.uri(src_key))
            current = self._get_blob(dst_key)
            generation = current.generation if current is not None else 0
            if if_generation_match is not None and if_generation_match != generation:
                raise PreconditionFailedError(
                    dst_key, self.uri(dst_key), if_generation_match, generation
                )
            target = self._bucket().blob(dst_name)
            try:
                with self._errors("copy to", dst_key):
                    token = None
                    while True:  # rewrite is server-side; large objects take several calls
                        token, _, _ = target.rewrite(
                            source,
                            token=token,
                            if_generation_match=generation,
                            if_source_generation_match=source.generation,
                            **self._call_options(),
                        )
                        if token is None:
                            break
            except google_exceptions.NotFound:
                raise ObjectNotFoundError(src_key, self.uri(src_key)) from None
            except google_exceptions.PreconditionFailed:
                # Source or target changed while we looked, or a retried rewrite whose
                # first attempt landed: the copy is done if the target holds the source.
                landed, ours = self._landed(
                    dst_key,
                    lambda: base64.b64decode(source.md5_hash or "").hex(),
                    source.metadata or {},
                    source.content_type or _DEFAULT_CONTENT_TYPE,
                )
                if ours and source.md5_hash:
                    return self._info(dst_key, landed)
                continue  # decide again on the new generations
            return self._info(dst_key, target)
        raise ObjectStoreError(
            f"copy to {dst_key} ({self.uri(dst_key)}) gave up: changed concurrently "
            f"{_MAX_ATTEMPTS} times"
        )


def store_from_url(url: str, **kw: Any) -> ObjectStore:
    """Build a store from ``file:///abs/dir`` or ``gs://bucket/prefix``.

    Extra keyword arguments go to the store's constructor (``project=``, ``timeout_s=`` …).
    """
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ValueError(f"object store URL {url!r} must not have a query or fragment")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"object store URL {url!r} names a remote host")
        root = unquote(parts.path)
        if not root.startswith("/"):
            raise ValueError(f"object store URL {url!r} needs an absolute path (file:///dir)")
        return LocalObjectStore(root=root, **kw)
    if parts.scheme == "gs":
        if not parts.netloc:
            raise ValueError(f"object store URL {url!r} has no bucket")
        prefix = parts.path.strip("/")
        if prefix:
            validate_key(prefix)
        return GCSObjectStore(bucket=parts.netloc, prefix=prefix, **kw)
    raise ValueError(
        f"unsupported object store URL {url!r}: expected file:///abs/dir or gs://bucket/prefix"
    )

"""The local object store: objects as files under one directory (the embedded default).

Invariants on disk, under ``root``:

- An object ``a/b.mp3`` is the regular file ``<root>/a/b.mp3``; ``a`` and ``a/b`` cannot
  both exist. Names starting with ``.pod-`` are the store's own: temp files
  (``.pod-tmp-*``), sidecars (``.pod-meta/``) and the lock file (``.pod-lock``).
- A write lands in a temp file in the target's folder, is fsynced, stamped with its new
  generation (mtime in ns, strictly increasing) and renamed into place under the exclusive
  lock; a reader sees the old file or the new one.
- A sidecar ``.pod-meta/<key>.json`` holds metadata, content type and MD5 and counts only
  while its generation is the file's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import stat as stat_mode
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pydantic import Field

from pod_resources.storage.base import (
    CHUNK_BYTES, InvalidKeyError, ObjectInfo, ObjectNotFoundError, ObjectStore, ObjectStoreError,
    Payload, PreconditionFailedError, WriteOptions, atomic_output, checked_metadata,
    content_type_for, log,
)
from pod_resources.storage.keys import RESERVED_SEGMENT_PREFIX, validate_key, validate_prefix

_TMP_PREFIX = ".pod-tmp-"
_META_DIR = ".pod-meta"
_LOCK_FILE = ".pod-lock"
_LIST_BATCH = 500
"""Objects of a local folder read (stat and sidecar) per shared lock while listing."""


def _utc_from_ns(ns: int) -> datetime:
    seconds, rest_ns = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest_ns // 1000)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _regular_file_stat(path: Path) -> os.stat_result | None:
    """The stat of the regular file at ``path``, or ``None`` when there is none."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st if stat_mode.S_ISREG(st.st_mode) else None


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

    def _write_stream(self, key: str, source: IO[bytes], options: WriteOptions) -> ObjectInfo:
        root = self._root_dir()
        path = self._path(root, key)
        sidecar: dict[str, Any] = {
            "metadata": checked_metadata(options.metadata),
            "content_type": content_type_for(key, options.content_type),
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as e:
            raise ObjectStoreError(f"cannot write {key}: a parent of it is an object") from e
        tmp = path.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            digest = hashlib.md5(usedforsecurity=False)
            with open(tmp, "xb") as out:
                while chunk := source.read(CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            sidecar["md5"] = digest.hexdigest()
            with self._locked(root, exclusive=True):
                current = self._current_generation(path, key)
                expected = options.if_generation_match
                if expected is not None and expected != current:
                    raise PreconditionFailedError(key, self.uri(key), expected, current)
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

    def _write_payload(self, key: str, payload: Payload, options: WriteOptions) -> ObjectInfo:
        with payload.open() as source:
            return self._write_stream(key, source, options)

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
        with source, atomic_output(path) as tmp, open(tmp, "xb") as out:
            while chunk := source.read(CHUNK_BYTES):
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
            st = _regular_file_stat(path)
            return None if st is None else self._info(root, key, st)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
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
        order = sorted([*files, *(key + "/" for key in subfolders)])
        for start in range(0, len(order), _LIST_BATCH):
            batch = order[start : start + _LIST_BATCH]
            # Each batch is read under the shared lock and handed out after it: the lock
            # is never held while the caller works, and memory holds one batch of infos
            # (plus the folder's names), not one per object of a folder of 100,000.
            infos = self._infos(root, [name for name in batch if not name.endswith("/")])
            for name in batch:
                if name.endswith("/"):
                    key = name[:-1]
                    try:
                        validate_key(key)
                    except InvalidKeyError as e:
                        log.warning("object store: skipping folder in %s: %s", root.as_uri(), e)
                        continue
                    yield from self._walk(root, root.joinpath(*key.split("/")), key, prefix)
                elif name in infos:
                    yield infos[name]

    def _infos(self, root: Path, keys: list[str]) -> dict[str, ObjectInfo]:
        infos: dict[str, ObjectInfo] = {}
        with self._locked(root, exclusive=False):
            for key in keys:
                try:
                    validate_key(key)
                    st = os.stat(root.joinpath(*key.split("/")), follow_symlinks=False)
                except InvalidKeyError as e:
                    log.warning("object store: skipping %s: %s", root.as_uri(), e)
                    continue
                except FileNotFoundError:
                    continue  # deleted since the scan
                infos[key] = self._info(root, key, st)
        return infos

    # -- delete and copy -------------------------------------------------------------------

    def delete(self, key: str, *, if_generation_match: int | None = None) -> None:
        root = self._root_dir()
        path = self._path(root, key)
        with self._locked(root, exclusive=True):
            st = _regular_file_stat(path)
            if st is None:
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
            options = WriteOptions(
                if_generation_match, sidecar.get("metadata"), sidecar.get("content_type")
            )
            return self._write_stream(dst_key, source, options)

"""The GCS object store: objects in a Google Cloud Storage bucket, under an optional prefix.

Transient failures (503, 429, dropped connections, timeouts) are retried with backoff within
a deadline, a retried write happens once, and a stalled server ends in
:class:`~pod_resources.storage.base.ObjectStoreError`, never a hang (see
:class:`GCSObjectStore`).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import requests
from google.api_core import exceptions as google_exceptions
from google.auth import exceptions as google_auth_exceptions
from google.cloud.storage import exceptions as storage_exceptions
from google.cloud.storage.retry import DEFAULT_RETRY
from pydantic import Field, PrivateAttr

from pod_resources.storage.base import (
    DEFAULT_CONTENT_TYPE, InvalidKeyError, ObjectInfo, ObjectNotFoundError, ObjectStore,
    ObjectStoreError, Payload, PreconditionFailedError, WriteOptions, atomic_output,
    checked_metadata, content_type_for, log,
)
from pod_resources.storage.keys import (
    MAX_KEY_BYTES,
    validate_key,
    validate_object_name,
    validate_prefix,
)

#: Resumable-upload chunk (uploads over 8 MiB): bounds the memory one upload holds.
_UPLOAD_CHUNK_BYTES = 8 << 20
_MAX_ATTEMPTS = 5

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

                client = GCSResource(project=self.project).get_client()
                # The client keeps a bucket-metadata cache that only labels OpenTelemetry
                # spans, and it fills it from background threads: a bucket GET on first use,
                # and an existence check after every 404 (whatever
                # DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA says). Every library path
                # that uses it checks it for None first; without it, each store call makes
                # exactly the requests the store asks for.
                if hasattr(client, "_bucket_metadata_cache"):
                    client._bucket_metadata_cache = None
                self._client = client
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
            and (current.content_type or DEFAULT_CONTENT_TYPE) == content_type
        )
        return current, same

    def _checked_generation(self, key: str, if_generation_match: int | None) -> int:
        """The generation under ``key`` now (0: none), refused unless the caller allows it."""
        current = self._get_blob(key)
        generation = current.generation if current is not None else 0
        if if_generation_match is not None and if_generation_match != generation:
            raise PreconditionFailedError(key, self.uri(key), if_generation_match, generation)
        return generation

    def _gave_up(self, action: str, key: str) -> ObjectStoreError:
        return ObjectStoreError(
            f"{action} {key} ({self.uri(key)}) gave up: changed concurrently "
            f"{_MAX_ATTEMPTS} times"
        )

    def _upload(self, blob: Any, payload: Payload, generation: int, content_type: str) -> None:
        """One upload of ``payload``, conditional on ``generation`` (0: create only)."""
        arguments = {
            "content_type": content_type,
            "if_generation_match": generation,
            **self._call_options(),
        }
        if payload.path is not None:
            blob.upload_from_filename(payload.path, **arguments)
        else:
            blob.upload_from_string(payload.data, **arguments)

    def _write_payload(self, key: str, payload: Payload, options: WriteOptions) -> ObjectInfo:
        if payload.path is not None and not os.path.isfile(payload.path):
            raise FileNotFoundError(f"no file to upload at {payload.path}")
        name = self._name(key)
        if_generation_match = options.if_generation_match
        custom = checked_metadata(options.metadata)
        resolved_type = content_type_for(key, options.content_type)
        md5_hex = functools.cache(payload.md5_hex)
        for _ in range(_MAX_ATTEMPTS):
            generation = self._checked_generation(key, if_generation_match)
            blob = self._bucket().blob(name, chunk_size=_UPLOAD_CHUNK_BYTES)
            blob.metadata = custom or None
            try:
                with self._errors("write", key):
                    self._upload(blob, payload, generation, resolved_type)
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
        raise self._gave_up("write", key)

    # -- reads -----------------------------------------------------------------------------

    def read_to_path(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        for _ in range(_MAX_ATTEMPTS):
            blob = self._get_blob(key)
            if blob is None:
                raise ObjectNotFoundError(key, self.uri(key))
            try:
                with self._errors("read", key), atomic_output(path) as tmp:
                    # Pinned to the generation just described, so bytes and info agree.
                    blob.download_to_filename(
                        tmp, if_generation_match=blob.generation, **self._call_options()
                    )
            except google_exceptions.NotFound:
                raise ObjectNotFoundError(key, self.uri(key)) from None
            except google_exceptions.PreconditionFailed:
                continue  # replaced while we looked: describe the new one and read again
            return self._info(key, blob)
        raise self._gave_up("read", key)

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
        validate_prefix(prefix)
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
                        log.warning(
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
        raise self._gave_up("delete", key)

    def _rewrite(self, target: Any, source: Any, generation: int) -> None:
        """Copy blob ``source`` onto ``target`` server-side, if ``target`` is at
        ``generation`` and ``source`` unchanged; large objects take several calls."""
        token = None
        while True:
            token, _, _ = target.rewrite(
                source,
                token=token,
                if_generation_match=generation,
                if_source_generation_match=source.generation,
                **self._call_options(),
            )
            if token is None:
                return

    def copy(
        self, src_key: str, dst_key: str, *, if_generation_match: int | None = None
    ) -> ObjectInfo:
        dst_name = self._name(dst_key)
        for _ in range(_MAX_ATTEMPTS):
            source = self._get_blob(src_key)
            if source is None:
                raise ObjectNotFoundError(src_key, self.uri(src_key))
            generation = self._checked_generation(dst_key, if_generation_match)
            target = self._bucket().blob(dst_name)
            try:
                with self._errors("copy to", dst_key):
                    self._rewrite(target, source, generation)
            except google_exceptions.NotFound:
                raise ObjectNotFoundError(src_key, self.uri(src_key)) from None
            except google_exceptions.PreconditionFailed:
                # Source or target changed while we looked, or a retried rewrite whose
                # first attempt landed: the copy is done if the target holds the source.
                landed, ours = self._landed(
                    dst_key,
                    lambda: base64.b64decode(source.md5_hash or "").hex(),
                    source.metadata or {},
                    source.content_type or DEFAULT_CONTENT_TYPE,
                )
                if ours and source.md5_hash:
                    return self._info(dst_key, landed)
                continue  # decide again on the new generations
            return self._info(dst_key, target)
        raise self._gave_up("copy to", dst_key)

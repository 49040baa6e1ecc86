"""Object keys: which names the store accepts, before they touch a path or an object name.

Keys are ``/``-separated and relative to the store root (``episodes/<ep>/raw.flac``). Upload
names are hostile input, so every key is checked here first:

- :func:`validate_key` is the rule for everything the pipeline writes and for every local
  path: no way out of the store root, no name a file system cannot hold, no clash with the
  store's own files.
- :func:`validate_object_name` is the looser rule for names that only ever name a GCS
  object (a bucket can hold names no file system can).
"""

from __future__ import annotations

import unicodedata

from pod_resources.storage.base import InvalidKeyError

#: Longest key, in UTF-8 bytes (the GCS limit for a whole object name).
MAX_KEY_BYTES = 1024
#: Longest key segment, in UTF-8 bytes: a file name (255) minus the sidecar's ".json".
MAX_SEGMENT_BYTES = 250
#: Key segments starting with this are reserved for the store's own files.
RESERVED_SEGMENT_PREFIX = ".pod-"


def _shown(key: str) -> str:
    """``key`` as it appears in an error message: quoted, cut after 120 characters."""
    return repr(key if len(key) <= 120 else key[:120] + "…")


def _check_characters(key: str, shown: str) -> None:
    for char in key:
        category = unicodedata.category(char)
        if category == "Cc":
            raise InvalidKeyError(f"object key {shown} contains control character {char!r}")
        if category == "Cs":
            raise InvalidKeyError(f"object key {shown} is not valid unicode (lone surrogate)")


def _check_segment(segment: str, shown: str) -> None:
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
    shown = _shown(key)
    if not key:
        raise InvalidKeyError("object key is empty")
    if key.startswith("/"):
        raise InvalidKeyError(f"object key {shown} is absolute (leading '/')")
    if "\\" in key:
        raise InvalidKeyError(f"object key {shown} contains a backslash")
    _check_characters(key, shown)
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"object key {shown} is longer than {MAX_KEY_BYTES} bytes")
    for segment in key.split("/"):
        _check_segment(segment, shown)
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
    shown = _shown(key)
    if not key or key.startswith("/"):
        raise InvalidKeyError(f"object name {shown} is empty or absolute")
    for char in key:
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise InvalidKeyError(f"object name {shown} contains character {char!r}")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"object name {shown} is longer than {MAX_KEY_BYTES} bytes")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix is empty, a key, or a key followed by one ``/``."""
    if prefix:
        validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix

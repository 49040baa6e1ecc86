"""What the catalog hands out: frozen dataclasses, never ORM rows.

Invariants:

- Every record is immutable, hashable and picklable (dict fields are :class:`FrozenMap`), so
  it can be kept, compared and sent to another process after its session closed.
- A record is converted from its row *inside* the session (:func:`to_episode`,
  :func:`to_change`, :func:`to_upload`); a field takes the row's attribute of the same name,
  so a column added to a row and to its record needs no other change here.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from pod_resources.catalog.models import EpisodeRow, EpisodeStatus, StatusHistoryRow, UploadRow

_R = TypeVar("_R")


class FrozenMap(Mapping[str, Any]):
    """A read-only, hashable, picklable mapping: the dict fields of the frozen dataclasses."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data = dict(data or {})

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"

    def __reduce__(self) -> tuple[type[FrozenMap], tuple[dict[str, Any]]]:
        return (FrozenMap, (self._data,))


@dataclass(frozen=True)
class Episode:
    episode_id: str
    source_name: str
    source_generation: int
    content_hash: str
    title: str
    status: EpisodeStatus
    created_at: datetime
    updated_at: datetime
    status_changed_at: datetime
    last_error: str | None
    error_step: str | None
    processing_run_id: str | None
    raw_key: str | None
    raw_purged_at: datetime | None
    metrics: Mapping[str, float]
    artifacts: Mapping[str, str]
    version: int = 1
    """1 for the first upload under a name; n for the n-th different bytes under it."""
    version_of: str | None = None
    """Version 1's episode id (the upload name's own id); ``None`` for version 1 itself."""
    superseded_by: str | None = None
    """The version whose publication superseded this one (status ``superseded``)."""

    @property
    def root_id(self) -> str:
        """The episode id shared by every version of this upload name (version 1's)."""
        return self.version_of or self.episode_id


def version_episode_id(root_id: str, version: int) -> str:
    """Episode id of ``version`` of the upload name whose first version is ``root_id``:
    ``root_id`` itself for version 1, ``<root_id>-v<n>`` after it. An upload name's own id
    ends in a hash of ten hex digits, never in ``v<n>``, so the two kinds cannot collide."""
    if version < 1:
        raise ValueError(f"versions start at 1, got {version}")
    return root_id if version == 1 else f"{root_id}-v{version}"


@dataclass(frozen=True)
class Publication:
    """What :meth:`Catalog.publish` did."""

    episode_id: str
    published: bool
    status: EpisodeStatus | None
    """The episode's status after the call (``None``: not in the catalog)."""
    superseded: tuple[str, ...] = ()
    """Other versions of the same upload name that were published and are now superseded."""


@dataclass(frozen=True)
class StatusChange:
    episode_id: str
    from_status: EpisodeStatus | None
    to_status: EpisodeStatus
    at: datetime
    run_id: str | None
    message: str | None


@dataclass(frozen=True)
class UploadRecord:
    """One object generation seen in the landing zone.

    For a duplicate, ``episode_id`` and ``duplicate_of`` both name the episode that already
    has these bytes; no episode is created for it.
    """

    object_name: str
    generation: int
    content_hash: str
    episode_id: str
    duplicate_of: str | None
    seen_at: datetime


class RegistrationKind(StrEnum):
    NEW = "new"
    """A new episode, status ``uploaded``."""
    NEW_VERSION = "new_version"
    """New bytes under the name of an existing episode: a new episode, version n of it,
    status ``uploaded``, processed beside the earlier versions, which stay as they are."""
    RESTORED = "restored"
    """An episode's own bytes again, under its own name, after the purge took its raw media:
    the episode may be processed again (``raw_purged_at`` cleared)."""
    DUPLICATE = "duplicate"
    """Bytes some episode already has (``upload.duplicate_of``). Nothing to process."""
    ALREADY_SEEN = "already_seen"
    """This object generation was registered before. Nothing changed."""


@dataclass(frozen=True)
class Registration:
    kind: RegistrationKind
    episode: Episode
    upload: UploadRecord


@functools.cache
def _field_names(record_type: type) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(record_type))


def _record_of(record_type: type[_R], row: object, **converted: Any) -> _R:
    """A ``record_type`` from the attributes of ``row`` named like its fields; ``converted``
    holds the fields that need more than a copy."""
    copied = {
        name: getattr(row, name) for name in _field_names(record_type) if name not in converted
    }
    return record_type(**copied, **converted)


def to_episode(row: EpisodeRow) -> Episode:
    return _record_of(
        Episode,
        row,
        status=EpisodeStatus(row.status),
        metrics=FrozenMap(row.metrics),
        artifacts=FrozenMap(row.artifacts),
    )


def to_change(row: StatusHistoryRow) -> StatusChange:
    from_status = None if row.from_status is None else EpisodeStatus(row.from_status)
    return _record_of(
        StatusChange, row, from_status=from_status, to_status=EpisodeStatus(row.to_status)
    )


def to_upload(row: UploadRow) -> UploadRecord:
    return _record_of(UploadRecord, row)

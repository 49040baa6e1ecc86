"""Each episode's manifest in the object store: a durable copy of its catalog row, beside
its objects, so a lost catalog can be rebuilt (``pod catalog rebuild``)::

    episodes/<ep>/episode.json   {"manifest_format": 1, "written_at": …, "episode": {…}}

``episode`` holds every field of :class:`Episode` (times as ISO 8601 UTC, the status as its
value) except ``artifacts`` and ``processing_run_id``: the artifacts are the episode's objects
themselves, listed again on rebuild, and a run's ownership does not outlive the catalog.

Invariants:

- :class:`ManifestCatalog` writes the manifest *after* each change that matters has been
  committed (registration, status change, metrics, purge mark and unmark, publication), from the row
  as read back then; a manifest never shows a state the catalog did not hold.
- The catalog stays the system of record while it exists; manifests are only read to
  rebuild it.
- Last writer wins: each write carries the whole row as read after its own change.
- A manifest that cannot be written is logged, never raised: the change it copies is
  committed already, and the next change of the episode writes it again.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import dagster as dg

from pod_resources.catalog.engine import DEFAULT_APPLICATION_NAME, CatalogError
from pod_resources.catalog.records import Episode, FrozenMap, Registration
from pod_resources.catalog.repository import Catalog
from pod_resources.storage import ObjectInfo, ObjectStore

MANIFEST_FORMAT = 1
EPISODES_PREFIX = "episodes/"
"""Where episodes live in the store; the same as ``pod_assets.layout.EPISODES_PREFIX``
(this package cannot import the assets' layout; ``tests/pipeline/test_catalog_rebuild.py`` checks)."""
MANIFEST_NAME = "episode.json"
NOT_IN_MANIFEST: frozenset[str] = frozenset({"artifacts", "processing_run_id"})
_UNCHANGED_REGISTRATIONS = frozenset({"duplicate", "already_seen"})

_log = dg.get_dagster_logger(__name__)


class ManifestError(CatalogError, ValueError):
    """A manifest that cannot be read back into an episode."""


def manifest_key(episode_id: str) -> str:
    return f"{EPISODES_PREFIX}{episode_id}/{MANIFEST_NAME}"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return dict(value)
    return value


def episode_to_manifest(episode: Episode, *, written_at: datetime) -> dict[str, Any]:
    """The manifest document of ``episode`` (JSON-ready)."""
    fields = {
        field.name: _plain(getattr(episode, field.name))
        for field in dataclasses.fields(episode)
        if field.name not in NOT_IN_MANIFEST
    }
    return {
        "manifest_format": MANIFEST_FORMAT,
        "written_at": written_at.astimezone(UTC).isoformat(),
        "episode": fields,
    }


def _types_of_episode() -> dict[str, Any]:
    return typing.get_type_hints(Episode)


def _parse_field(name: str, hint: Any, value: Any) -> Any:
    """``value`` from JSON turned into what the dataclass field ``name: hint`` holds."""
    args = typing.get_args(hint)
    optional = isinstance(hint, types.UnionType) and type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    if value is None:
        if optional:
            return None
        raise ManifestError(f"manifest field {name!r} must not be null")
    if base is datetime:
        when = datetime.fromisoformat(value)
        if when.tzinfo is None:
            raise ManifestError(f"manifest field {name!r} is a naive time: {value!r}")
        return when.astimezone(UTC)
    if isinstance(base, type) and issubclass(base, Enum):
        return base(value)
    if typing.get_origin(base) is Mapping or base is Mapping:
        return FrozenMap(value)
    return value


def episode_from_manifest(
    document: Mapping[str, Any], *, artifacts: Mapping[str, str]
) -> Episode:
    """The episode a manifest describes, with ``artifacts`` (what the store holds now).

    Fields the manifest does not have take the dataclass default (a manifest written before
    a field was added); a required field missing raises :class:`ManifestError`.
    """
    if document.get("manifest_format") != MANIFEST_FORMAT:
        raise ManifestError(f"unknown manifest format {document.get('manifest_format')!r}")
    data = document.get("episode")
    if not isinstance(data, Mapping):
        raise ManifestError("manifest has no episode")
    hints = _types_of_episode()
    values: dict[str, Any] = {"artifacts": FrozenMap(artifacts), "processing_run_id": None}
    try:
        for field in dataclasses.fields(Episode):
            if field.name in values or field.name not in data:
                continue
            values[field.name] = _parse_field(field.name, hints[field.name], data[field.name])
        return Episode(**values)
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"manifest of {data.get('episode_id')!r}: {exc}") from exc


def write_manifest(store: ObjectStore, episode: Episode) -> ObjectInfo:
    """Write (overwrite) the manifest of ``episode``."""
    document = episode_to_manifest(episode, written_at=datetime.now(UTC))
    return store.write_json(manifest_key(episode.episode_id), document)


def read_manifest(store: ObjectStore, episode_id: str) -> Mapping[str, Any] | None:
    """The stored manifest document of ``episode_id``, or ``None`` when it has none."""
    info = store.stat(manifest_key(episode_id))
    if info is None:
        return None
    document = store.read_json(info.key)
    if not isinstance(document, Mapping):
        raise ManifestError(f"{manifest_key(episode_id)} is not a JSON object")
    return document


class ManifestCatalog(Catalog):
    """A :class:`Catalog` that writes an episode's manifest to ``store`` after each of its
    changes that matters has been committed (see the module docstring).

    Every other verb is the catalog's own; arguments are passed through unchanged.
    """

    def __init__(
        self, url: str, *, store: ObjectStore, application_name: str = DEFAULT_APPLICATION_NAME
    ) -> None:
        super().__init__(url, application_name=application_name)
        self._store = store

    @property
    def store(self) -> ObjectStore:
        return self._store

    def write_manifest_of(self, episode_id: str) -> None:
        """Copy the episode's committed row to its manifest; log, never raise, on failure."""
        try:
            episode = self.get_episode(episode_id)
            if episode is not None:
                write_manifest(self._store, episode)
        except Exception as exc:
            _log.warning(
                f"manifest of episode {episode_id} not written ({type(exc).__name__}: {exc}); "
                "the next change of the episode writes it again"
            )

    def register_upload(self, **kwargs: Any) -> Registration:
        registration = super().register_upload(**kwargs)
        if str(registration.kind) not in _UNCHANGED_REGISTRATIONS:
            self.write_manifest_of(registration.episode.episode_id)
        return registration

    def set_status(self, episode_id: str, **kwargs: Any) -> bool:
        changed = super().set_status(episode_id, **kwargs)
        if changed:
            self.write_manifest_of(episode_id)
        return changed

    def mark_raw_purged(self, episode_id: str, **kwargs: Any) -> bool:
        marked = super().mark_raw_purged(episode_id, **kwargs)
        if marked:
            self.write_manifest_of(episode_id)
        return marked

    def unmark_raw_purged(self, episode_id: str, **kwargs: Any) -> bool:
        cleared = super().unmark_raw_purged(episode_id, **kwargs)
        if cleared:
            self.write_manifest_of(episode_id)
        return cleared

    def record_metrics(self, episode_id: str, metrics: Mapping[str, float | int]) -> None:
        """The catalog's ``record_metrics``, then the manifest: a metric recorded after the
        episode's last status change (its first publication, say) survives a rebuild too."""
        super().record_metrics(episode_id, metrics)
        self.write_manifest_of(episode_id)

    def publish(self, episode_id: str, **kwargs: Any) -> Any:
        """The catalog's ``publish`` (episode versions), then the manifests of every
        episode it changed: the published one and those it superseded."""
        publication = super().publish(episode_id, **kwargs)  # type: ignore[misc]
        for changed in (episode_id, *getattr(publication, "superseded", ())):
            self.write_manifest_of(changed)
        return publication

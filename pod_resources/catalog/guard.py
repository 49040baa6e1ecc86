"""The catalog is never silently empty.

A catalog database that was deleted and created again (a removed SQLite file, a fresh
Postgres database) migrates to an empty schema without complaint. If the object store still
holds episodes, using that catalog would make them vanish: ``pod status`` would show none, the
purge could never take their raw media, and nothing would say what happened.
:func:`refuse_silently_empty` refuses such a catalog with a message naming the fix.

Invariants:

- refused: the catalog has no episode row **and** the store has at least one object under
  ``episodes/``; anything else passes (an empty store with an empty catalog is a first start);
- cheap: one ``SELECT … LIMIT 1`` and one listing of ``episodes/`` that stops at its first
  object (one-object pages on GCS); only a refusal counts the stored episodes;
- callers check once per process (``CatalogResource.get_catalog`` caches a catalog that
  passed); a refusal is not cached, so a rebuild from another process is seen at once.
"""

from __future__ import annotations

import sqlalchemy as sa

from pod_resources.catalog.engine import CatalogError
from pod_resources.catalog.manifest import EPISODES_PREFIX
from pod_resources.catalog.models import EpisodeRow
from pod_resources.catalog.repository import Catalog
from pod_resources.storage import ObjectInfo, ObjectStore

REBUILD_COMMAND = "pod catalog rebuild"
COUNT_LIMIT_OBJECTS = 100_000
"""A refusal counts episodes over at most this many listed objects."""


class EmptyCatalogError(CatalogError):
    """The catalog is empty while the store holds episodes (see the module docstring)."""


def catalog_has_episodes(catalog: Catalog) -> bool:
    """Whether the catalog has at least one episode row (one ``LIMIT 1`` query)."""
    with catalog.engine.connect() as conn, conn.begin():
        return conn.execute(sa.select(EpisodeRow.episode_id).limit(1)).first() is not None


def _one_object_pages(store: ObjectStore) -> ObjectStore:
    """The same store listing one object per request (GCS); other stores as they are."""
    if "list_page_size" in type(store).model_fields:
        return store.model_copy(update={"list_page_size": 1})
    return store


def first_episode_object(store: ObjectStore) -> ObjectInfo | None:
    """The first object under ``episodes/``, or ``None``: one small listing request."""
    return next(iter(_one_object_pages(store).list(EPISODES_PREFIX)), None)


def stored_episode_ids(store: ObjectStore, *, limit_objects: int | None = None) -> list[str]:
    """Ids of the episodes that have objects under ``episodes/<ep>/``, sorted."""
    ids: set[str] = set()
    for count, info in enumerate(store.list(EPISODES_PREFIX), start=1):
        episode_id, slash, _ = info.key.removeprefix(EPISODES_PREFIX).partition("/")
        if slash:
            ids.add(episode_id)
        if limit_objects is not None and count >= limit_objects:
            break
    return sorted(ids)


def store_location(store: ObjectStore) -> str:
    """``file:///…/store`` or ``gs://bucket/prefix``: where the store's keys start."""
    return store.uri(EPISODES_PREFIX.rstrip("/")).removesuffix("/" + EPISODES_PREFIX.rstrip("/"))


def refuse_silently_empty(catalog: Catalog, store: ObjectStore) -> None:
    """Raise :class:`EmptyCatalogError` when ``catalog`` is empty but ``store`` is not."""
    if catalog_has_episodes(catalog) or first_episode_object(store) is None:
        return
    count = len(stored_episode_ids(store, limit_objects=COUNT_LIMIT_OBJECTS))
    episodes = f"{count} episode{'s' if count != 1 else ''}"
    raise EmptyCatalogError(
        f"the catalog at {catalog.redacted_url} is empty but the store "
        f"{store_location(store)} holds {episodes}; run `{REBUILD_COMMAND}` "
        "(or set POD_DATABASE_URL to the right database)"
    )

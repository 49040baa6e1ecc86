"""Dagster resource giving assets, checks and sensors the catalog."""

from __future__ import annotations

import os
import threading

import dagster as dg
from pydantic import Field

from pod_resources.catalog.engine import DEFAULT_APPLICATION_NAME, CatalogError
from pod_resources.catalog.guard import refuse_silently_empty, store_location
from pod_resources.catalog.manifest import ManifestCatalog
from pod_resources.catalog.repository import Catalog
from pod_resources.storage import ObjectStore

_catalogs: dict[tuple[str, str, int, str | None], Catalog] = {}
_catalogs_lock = threading.Lock()


class CatalogResource(dg.ConfigurableResource):
    """The episode catalog (SQLite or Postgres).

    Bind ``database_url`` with ``dg.EnvVar(...)`` whenever it holds a password, so the secret
    is resolved at run time and never stored in run config.
    """

    database_url: str = Field(
        description="sqlite:///path/to/catalog.db or postgresql+psycopg://user:pass@host/db"
    )
    application_name: str = Field(
        default=DEFAULT_APPLICATION_NAME,
        description="Postgres application_name of this process's connections",
    )
    store: ObjectStore | None = Field(
        default=None,
        description="The object store holding the episodes. When set, the catalog writes "
        "each episode's manifest there and refuses to open empty while the store holds "
        "episodes (see pod_resources.catalog.guard).",
    )

    def get_catalog(self) -> Catalog:
        """The catalog, one per (URL, application name, store) per process.

        With a ``store``, the first call of the process refuses a catalog that is empty while
        the store holds episodes (:class:`EmptyCatalogError`, not cached, so a rebuild is
        seen at once), and the catalog returned writes episode manifests to that store.

        Works on the resource as bound in the definitions too (a CLI or a test using it
        outside a run), where ``database_url`` may still be the unresolved ``dg.EnvVar``.
        """
        url = self._resolved_url()
        store = self.store
        location = None if store is None else store_location(store)
        key = (url, self.application_name, os.getpid(), location)
        with _catalogs_lock:
            catalog = _catalogs.get(key)
            if catalog is None:
                if store is None:
                    catalog = Catalog(url, application_name=self.application_name)
                else:
                    catalog = ManifestCatalog(
                        url, store=store, application_name=self.application_name
                    )
                    refuse_silently_empty(catalog, store)
                _catalogs[key] = catalog
            return catalog

    def _resolved_url(self) -> str:
        url = self.database_url
        if isinstance(url, dg.EnvVar):
            value = url.get_value()
            if not value:
                raise CatalogError(f"environment variable {url.env_var_name} (the catalog URL) is not set")
            return value
        return url

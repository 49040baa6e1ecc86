"""Dagster resource giving assets, checks and sensors the catalog."""

from __future__ import annotations

import os
import threading

import dagster as dg
from pydantic import Field

from pod_resources.catalog.engine import DEFAULT_APPLICATION_NAME, CatalogError
from pod_resources.catalog.repository import Catalog

_catalogs: dict[tuple[str, str, int], Catalog] = {}
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

    def get_catalog(self) -> Catalog:
        """The catalog, one per (URL, application name) per process.

        Works on the resource as bound in the definitions too (a CLI or a test using it
        outside a run), where ``database_url`` may still be the unresolved ``dg.EnvVar``.
        """
        url = self._resolved_url()
        key = (url, self.application_name, os.getpid())
        with _catalogs_lock:
            catalog = _catalogs.get(key)
            if catalog is None:
                catalog = Catalog(url, application_name=self.application_name)
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

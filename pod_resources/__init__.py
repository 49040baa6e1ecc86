"""Resources: object storage, the episode catalog, speech recognition."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from pod_resources.catalog import Catalog, CatalogResource
from pod_resources.show import ShowResource, load_show_file
from pod_resources.storage import GCSObjectStore, LocalObjectStore, ObjectStore, store_from_url
from pod_resources.transcriber import TranscriberResource, WhisperTranscriberResource

if TYPE_CHECKING:
    from pod_pipeline.settings import Settings

__all__ = [
    "Catalog",
    "CatalogResource",
    "GCSObjectStore",
    "LocalObjectStore",
    "ObjectStore",
    "ShowResource",
    "TranscriberResource",
    "WhisperTranscriberResource",
    "build_defs",
]


def _build_store(settings: Settings) -> ObjectStore:
    """The store ``POD_STORAGE_URL`` names (:func:`~pod_resources.storage.store_from_url`)."""
    try:
        return store_from_url(settings.storage_url, project=settings.gcp_project)
    except ValueError as e:
        raise ValueError(f"POD_STORAGE_URL: {e}") from e


def _build_catalog(settings: Settings, store: ObjectStore) -> CatalogResource:
    """The catalog, writing episode manifests to ``store`` and refusing to open empty while
    ``store`` holds episodes (``pod catalog rebuild`` restores it)."""
    if settings.database_url_from_env:
        # The URL may carry a password: Dagster resolves it at run time, never stores it.
        return CatalogResource(database_url=dg.EnvVar("POD_DATABASE_URL"), store=store)
    return CatalogResource(database_url=settings.default_database_url, store=store)


def _build_show(settings: Settings) -> ShowResource:
    """The show file when ``POD_SHOW_FILE`` names one, else a show from the single settings."""
    if settings.show_file is not None:
        return load_show_file(settings.show_file)
    return ShowResource(
        name=settings.show_name, intro_key=settings.intro_key, outro_key=settings.outro_key
    )


def build_defs(settings: Settings) -> dg.Definitions:
    """The resources every asset, check and sensor of the project uses."""
    store = _build_store(settings)
    return dg.Definitions(
        resources={
            "store": store,
            "catalog": _build_catalog(settings, store),
            "transcriber": WhisperTranscriberResource(
                model=settings.whisper_model,
                device=settings.whisper_device,
                compute_type=settings.whisper_compute_type,
                cpu_threads=settings.whisper_threads,
                second_opinion=settings.whisper_second_opinion,
            ),
            "show": _build_show(settings),
        }
    )

"""Fixtures for asset, sensor and CLI tests: a Dagster instance, a store, a catalog."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from pod_assets import layout
from pod_assets.partitions import episode_partitions
from pod_resources.catalog import Catalog, CatalogResource
from pod_resources.catalog.engine import dispose_engines
from pod_resources.show import ShowResource
from pod_resources.storage import GCSObjectStore, LocalObjectStore, ObjectStore
from pod_resources.transcriber import WhisperTranscriberResource
from tests.audio_factory import jfk_path as _jfk_path
from tests.plugins.gcs import GCSEmulator, make_gcs_store
from tests.pod_env import gcs_postgres_env



@pytest.fixture(scope="session")
def jfk_path() -> Path:
    return _jfk_path()


@dataclass
class Pipeline:
    """Everything an in-process pipeline test needs, on real components."""

    instance: dg.DagsterInstance
    store: ObjectStore
    catalog_resource: CatalogResource

    @property
    def catalog(self) -> Catalog:
        return self.catalog_resource.get_catalog()

    @property
    def resources(self) -> dict:
        return {
            "store": self.store,
            "catalog": self.catalog_resource,
            "transcriber": WhisperTranscriberResource(),
            "show": ShowResource(name="Test Show"),
        }

    def upload(self, name: str, data: bytes | Path, **kw):
        key = layout.upload_key(name)
        if isinstance(data, Path):
            return self.store.write_file(key, data, **kw)
        return self.store.write_bytes(key, data, **kw)

    def register(self, name: str, data: bytes | Path) -> str:
        """Upload and register one file as the upload sensor would; return the episode id."""
        from pod_sensors.uploads import content_md5

        info = self.upload(name, data)
        episode_id = layout.episode_id_for(name)
        self.catalog.register_upload(
            object_name=name,
            generation=info.generation,
            content_hash=content_md5(self.store, info),
            episode_id=episode_id,
            title=layout.display_title(name),
        )
        self.instance.add_dynamic_partitions(episode_partitions.name, [episode_id])
        return episode_id

    def materialize(self, assets, episode_id: str, *, run_config=None, raise_on_error=False):
        return dg.materialize(
            assets,
            partition_key=episode_id,
            resources=self.resources,
            instance=self.instance,
            run_config=run_config,
            raise_on_error=raise_on_error,
        )


@pytest.fixture
def pipeline(tmp_path) -> Pipeline:
    with dg.instance_for_test() as instance:
        yield Pipeline(
            instance=instance,
            store=LocalObjectStore(root=str(tmp_path / "store")),
            catalog_resource=CatalogResource(database_url=f"sqlite:///{tmp_path / 'catalog.db'}"),
        )


@dataclass(frozen=True)
class GCSPostgresHome:
    """A POD_HOME whose ``pod`` processes run on a fresh GCS emulator bucket (prefix ``pod``)
    and a fresh Postgres database."""

    home: Path
    env: dict[str, str]
    """The environment of a ``pod`` process on this home."""
    store: GCSObjectStore
    database_url: str


@pytest.fixture
def gcs_postgres_home(
    tmp_path: Path, gcs_emulator_env: GCSEmulator, postgres_url: str
) -> Iterator[GCSPostgresHome]:
    """``tmp_path/home`` on the GCS emulator and Postgres; the test process's engines on the
    database are let go of afterwards."""
    home = tmp_path / "home"
    store = make_gcs_store(gcs_emulator_env, prefix="pod")
    env = gcs_postgres_env(home, store, gcs_emulator_env.endpoint, postgres_url)
    yield GCSPostgresHome(home=home, env=env, store=store, database_url=postgres_url)
    dispose_engines(postgres_url)

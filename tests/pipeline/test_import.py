"""``pod import``: a back catalog registered in bulk, idempotent, resumable after a kill, with
the upload sensor's dedup rules; the sensor then runs it at its run cap."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from pod_assets import layout
from pod_assets.partitions import episode_partitions
from pod_pipeline.importer import ImportSourceError, import_back_catalog, open_source
from pod_resources.catalog import Catalog, CatalogResource
from pod_resources.storage import LocalObjectStore
from pod_sensors.uploads import build_upload_sensor

FILES = 24


@pytest.fixture
def back_catalog(tmp_path: Path) -> Path:
    folder = tmp_path / "archive"
    folder.mkdir()
    for index in range(FILES):
        (folder / f"episode {index:03d}.mp3").write_bytes(f"bytes of {index}".encode() * 40)
    (folder / "zz copy of 000.mp3").write_bytes(b"bytes of 0" * 40)  # same bytes: a duplicate
    return folder


@pytest.fixture
def target(tmp_path: Path):
    store = LocalObjectStore(root=str(tmp_path / "store"))
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    with dg.instance_for_test() as instance:
        yield store, Catalog(url), CatalogResource(database_url=url), instance


def _import(folder, store, catalog, instance, **hooks):
    return import_back_catalog(
        open_source(str(folder)), store=store, catalog=catalog,
        add_partitions=lambda keys: instance.add_dynamic_partitions(episode_partitions.name, keys),
        **hooks,
    )


def test_import_registers_all_and_twice_changes_nothing(back_catalog, target):
    store, catalog, _, instance = target
    report = _import(back_catalog, store, catalog, instance)
    assert report.registered == {"new": FILES, "duplicate": 1} and not report.failed
    assert len(instance.get_dynamic_partitions(episode_partitions.name)) == FILES
    [copy] = [u for u in catalog.uploads() if u.object_name == "zz copy of 000.mp3"]
    assert copy.duplicate_of == layout.episode_id_for("episode 000.mp3")
    objects = {info.key: info.generation for info in store.list("uploads/")}

    again = _import(back_catalog, store, catalog, instance)
    assert again.already_imported == FILES + 1 and not again.registered
    assert {info.key: info.generation for info in store.list("uploads/")} == objects
    assert len(catalog.uploads()) == FILES + 1


def test_import_resumes_after_a_kill_between_copy_and_registration(back_catalog, target):
    store, catalog, _, instance = target
    landed = []

    def killed_at_the_tenth(info) -> None:
        landed.append(info.key)
        if len(landed) == 10:
            raise KeyboardInterrupt  # the process dies here: copied, not registered

    with pytest.raises(KeyboardInterrupt):
        _import(back_catalog, store, catalog, instance, before_register=killed_at_the_tenth)
    assert len(catalog.list_episodes()) == 9
    report = _import(back_catalog, store, catalog, instance)
    assert report.resumed == 1 and report.already_imported == 9
    assert report.registered == {"new": FILES - 9, "duplicate": 1}
    assert len(catalog.list_episodes()) == FILES
    assert len({(u.object_name, u.generation) for u in catalog.uploads()}) == FILES + 1


def test_the_sensor_runs_an_import_at_its_cap_without_registering_again(back_catalog, target):
    store, catalog, resource, instance = target
    _import(back_catalog, store, catalog, instance)
    uploads = len(catalog.uploads())
    sensor = build_upload_sensor(max_runs_per_tick=10)
    cursor, seen = None, []
    for expected in (10, 10, FILES - 20, 0):
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"store": store, "catalog": resource}
        ) as context:
            result = sensor(context)
        assert len(result.run_requests) == expected
        assert not result.dynamic_partitions_requests  # the import added them
        seen += [r.partition_key for r in result.run_requests]
        cursor = result.cursor
    assert seen == [layout.episode_id_for(f"episode {i:03d}.mp3") for i in range(FILES)]
    assert len(catalog.uploads()) == uploads


def test_pod_import_command(back_catalog, tmp_path):
    env = {**os.environ, "POD_HOME": str(tmp_path / "home")}
    for name in ("POD_STORAGE_URL", "POD_DATABASE_URL", "DAGSTER_HOME"):
        env.pop(name, None)
    pod = [sys.executable, "-m", "pod_pipeline.cli", "import"]
    first = subprocess.run([*pod, str(back_catalog)], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert f"registered {FILES + 1} (1 duplicate, {FILES} new)" in first.stdout
    # Twice: tests above, in-process. A wrong source is one clear line, before any work.
    with pytest.raises(ImportSourceError, match="not a directory"):
        open_source(str(tmp_path / "nope"))
    with pytest.raises(ImportSourceError, match="no bucket"):
        open_source("gs://")


@pytest.mark.gcs
def test_import_from_a_bucket_prefix_registers_its_objects_and_leaves_the_source(
    back_catalog, target, gcs_emulator_env
):
    from tests.plugins.gcs import make_gcs_store

    archive = make_gcs_store(gcs_emulator_env, prefix="archive/2019")
    for path in sorted(back_catalog.iterdir()):
        archive.write_file(path.name, path)
    archive.write_bytes("deeper/not-this-one.mp3", b"a folder below the prefix")
    source = {info.key: info.generation for info in archive.list("")}
    store, catalog, _, instance = target

    url = f"gs://{archive.bucket}/archive/2019"
    report = import_back_catalog(
        open_source(url, gcp_project="test"), store=store, catalog=catalog,
        add_partitions=lambda keys: instance.add_dynamic_partitions(episode_partitions.name, keys),
    )
    assert report.registered == {"new": FILES, "duplicate": 1} and not report.failed
    # Only objects directly under the prefix, byte for byte; the bucket is left as it was.
    assert sorted(i.key for i in store.list("uploads/")) == sorted(
        layout.upload_key(p.name) for p in back_catalog.iterdir()
    )
    assert store.read_bytes(layout.upload_key("episode 007.mp3")) == (back_catalog / "episode 007.mp3").read_bytes()
    assert {info.key: info.generation for info in archive.list("")} == source

    again = import_back_catalog(
        open_source(url, gcp_project="test"), store=store, catalog=catalog,
        add_partitions=lambda keys: instance.add_dynamic_partitions(episode_partitions.name, keys),
    )
    assert again.already_imported == FILES + 1 and not again.registered

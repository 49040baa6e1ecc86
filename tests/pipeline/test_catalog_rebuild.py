"""The catalog is never silently empty, and a lost catalog is rebuilt from the store.

End to end with the real ``pod`` command in fresh processes, on the embedded default (local
store, SQLite) and on the GCS emulator with Postgres: two short episodes and one bad upload
are processed; one episode is published, one purged. Then the catalog database is lost
(the SQLite file removed with the Dagster home; the Postgres database dropped and created
again). ``pod status`` and ``pod run`` refuse it, naming the fix; ``pod catalog rebuild``
restores every episode as it was (status, times, error, artifacts, metrics, purge mark) and
its partition; a second rebuild changes nothing; and the purge then deletes exactly the raw
media it should.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from pod_assets import layout
from pod_assets.partitions import episode_partitions
from pod_assets.publish.publishing import publish_episodes
from pod_assets.purge import purge
from pod_pipeline.rebuild import INTERRUPTED_ERROR, rebuild_catalog
from pod_resources.catalog import Catalog, CatalogResource, Episode, EpisodeStatus
from pod_resources.catalog.engine import dispose_engines
from pod_resources.catalog.guard import EmptyCatalogError
from pod_resources.catalog.manifest import EPISODES_PREFIX, manifest_key
from pod_resources.catalog.models import EpisodeRow
from pod_resources.storage import LocalObjectStore, ObjectStore
from tests import audio_factory as af
from tests.plugins.pipeline import GCSPostgresHome
from tests.plugins.postgres import POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, terminate_backends
from tests.pod_env import pod_env, run_pod

REFUSAL = "is empty but the store"
NOT_COMPARED = frozenset({"updated_at", "processing_run_id"})
"""Fields a rebuild does not restore: the time of the last write, a dead run's ownership."""


@dataclass
class Deployment:
    """A POD_HOME whose ``pod`` commands run in fresh processes, and how to lose its catalog."""

    home: Path
    env: dict[str, str]
    store: ObjectStore
    database_url: str
    lose_catalog: Callable[[], None]

    def pod(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_pod(self.env, *args, check=check)

    def episodes(self) -> dict[str, Episode]:
        """Every episode in the catalog, read in this process, which then lets go of it."""
        try:
            return {e.episode_id: e for e in Catalog(self.database_url).list_episodes()}
        finally:
            dispose_engines(self.database_url)

    def partitions(self) -> set[str]:
        with dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"]) as instance:
            return set(instance.get_dynamic_partitions(episode_partitions.name))




@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Deployment]:
    """The embedded default; losing the catalog removes the SQLite file and the Dagster home."""
    home = tmp_path / "home"
    url = f"sqlite:///{home / 'catalog.db'}"

    def lose() -> None:
        dispose_engines(url)
        for leftover in home.glob("catalog.db*"):
            leftover.unlink()
        shutil.rmtree(home / "dagster")
        (home / "dagster").mkdir()

    yield Deployment(home, pod_env(home), LocalObjectStore(root=str(home / "store")), url, lose)
    dispose_engines(url)


def _recreate_database(url: str) -> None:
    """Drop the Postgres database of ``url`` and create it again, empty."""
    name = urlsplit(url.replace("postgresql+psycopg", "postgresql")).path.lstrip("/")
    dispose_engines(url)
    terminate_backends(database=name)
    conninfo = f"host={POSTGRES_HOST} port={POSTGRES_PORT} user={POSTGRES_USER} dbname=postgres"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


@pytest.fixture
def gcs_postgres(gcs_postgres_home: GCSPostgresHome) -> Deployment:
    """GCS emulator and Postgres; losing the catalog drops and recreates the database."""
    pod = gcs_postgres_home
    url = pod.database_url
    return Deployment(pod.home, pod.env, pod.store, url, lambda: _recreate_database(url))


@pytest.fixture(scope="module")
def uploads(short_speech: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two short speech files with different bytes, and a text file named ``.mp3``."""
    folder = tmp_path_factory.mktemp("uploads")
    files: dict[str, Path] = {}
    # Named so that `pod run` finishes them in this order: "purged" is the oldest.
    for name, seconds in (("1-purged", "3.9"), ("2-published", "3.8")):
        out = folder / f"rebuild-{name}.wav"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-nostdin", "-i", str(short_speech), "-t", seconds, str(out)],
            check=True,
        )
        files[name.partition("-")[2]] = out
    files["bad"] = af.write_text_as_audio(folder / "rebuild-3-notes.mp3")
    return files


def _comparable(episode: Episode) -> dict:
    return {
        field.name: getattr(episode, field.name)
        for field in dataclasses.fields(episode)
        if field.name not in NOT_COMPARED
    }


def _raw_keys(store: ObjectStore, episode_id: str) -> list[str]:
    return [
        info.key
        for info in store.list(layout.episode_prefix(episode_id))
        if info.key.rsplit("/", 1)[-1].startswith("raw.")
    ]


@pytest.mark.parametrize(
    "where",
    ["embedded", pytest.param("gcs_postgres", marks=[pytest.mark.gcs, pytest.mark.postgres])],
)
def test_lost_catalog_is_refused_then_rebuilt_from_the_store_and_purged_right(
    where: str, request: pytest.FixtureRequest, uploads: dict[str, Path]
) -> None:
    deployment: Deployment = request.getfixturevalue(where)
    ids = {role: layout.episode_id_for(path.name) for role, path in uploads.items()}

    # Process everything; the text file ends `error`, the bytes kept.
    for path in uploads.values():
        deployment.store.write_file(layout.upload_key(path.name), path)
    run = deployment.pod("run", check=False)
    assert run.returncode == 1, run.stdout + run.stderr
    # Publish one and purge another, through the catalog the definitions bind (with its
    # store, so it writes manifests), as publish_job and purge_job do.
    catalog = CatalogResource(database_url=deployment.database_url, store=deployment.store)
    [published] = publish_episodes(catalog.get_catalog(), [ids["published"]])
    assert published.published, published
    first_purge = datetime.now(UTC) + timedelta(minutes=1)
    report = purge(
        catalog.get_catalog(), deployment.store, now=first_purge, retention=timedelta(0),
        max_deletions=1,
    )
    assert [entry.episode_id for entry in report.deleted] == [ids["purged"]], report
    dispose_engines(deployment.database_url)

    before = deployment.episodes()
    assert {e: before[e].status for e in ids.values()} == {
        ids["purged"]: EpisodeStatus.PROCESSED,
        ids["published"]: EpisodeStatus.PUBLISHED,
        ids["bad"]: EpisodeStatus.ERROR,
    }
    assert before[ids["purged"]].raw_purged_at == first_purge
    assert "raw_audio" not in before[ids["purged"]].artifacts
    assert before[ids["bad"]].artifacts["raw_audio"]  # the bad bytes are kept
    for episode_id in ids.values():
        assert deployment.store.exists(manifest_key(episode_id)), episode_id

    # The catalog is lost: every command that reads it refuses, naming the fix.
    deployment.lose_catalog()
    for command in (("status",), ("run",)):
        refused = deployment.pod(*command, check=False)
        assert refused.returncode == 3, refused.stdout + refused.stderr
        message = refused.stderr.strip()
        assert REFUSAL in message and "holds 3 episodes" in message, message
        assert "pod catalog rebuild" in message and "POD_DATABASE_URL" in message, message
        assert len(message.splitlines()) == 1, message
    assert deployment.episodes() == {}  # the refusals wrote nothing

    # Rebuilt: the same episodes, field by field, and their partitions.
    rebuild = deployment.pod("catalog", "rebuild")
    assert "3 added" in rebuild.stdout, rebuild.stdout
    after = deployment.episodes()
    assert sorted(after) == sorted(before)
    for episode_id, episode in before.items():
        assert _comparable(after[episode_id]) == _comparable(episode), episode_id
    assert deployment.partitions() >= set(ids.values())

    # Idempotent: a second rebuild adds nothing and changes nothing.
    again = deployment.pod("catalog", "rebuild")
    assert "nothing to add (3 stored episodes already in the catalog)" in again.stdout, again.stdout
    assert deployment.episodes() == after

    # The purge on the rebuilt catalog: the finished episode's raw media, nothing else.
    later = first_purge + timedelta(days=30)
    report = json.loads(deployment.pod("purge", "--json", "--now", later.isoformat()).stdout)
    deleted = {entry["episode_id"]: entry["objects"] for entry in report["deleted"]}
    assert list(deleted) == [ids["published"]], report
    kept = {entry["episode_id"]: entry["reason"] for entry in report["kept"]}
    assert kept == {ids["bad"]: "status=error"}, report
    assert report["failed"] == []
    for role in ("purged", "published"):
        assert _raw_keys(deployment.store, ids[role]) == [], role
    bad_raw = layout.raw_key(ids["bad"], uploads["bad"].name)
    assert _raw_keys(deployment.store, ids["bad"]) == [bad_raw]
    final = deployment.episodes()
    assert final[ids["purged"]].raw_purged_at == before[ids["purged"]].raw_purged_at
    assert final[ids["published"]].raw_purged_at == later


def test_layout_and_manifest_agree_on_where_episodes_live() -> None:
    assert EPISODES_PREFIX == layout.EPISODES_PREFIX
    assert manifest_key("ep-1").startswith(layout.episode_prefix("ep-1"))


@pytest.mark.parametrize("store_kind", ["local", pytest.param("gcs", marks=pytest.mark.gcs)])
def test_the_resource_refuses_an_empty_catalog_only_while_the_store_holds_episodes(
    store_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store: ObjectStore = request.getfixturevalue(f"{store_kind}_store")
    url = f"sqlite:///{tmp_path / f'catalog-{uuid.uuid4().hex[:6]}.db'}"
    resource = CatalogResource(database_url=url, store=store)
    try:
        assert resource.get_catalog().list_episodes() == []  # empty store: a first start
        store.write_bytes(layout.episode_key("ep-lost", "episode.mp3"), b"bytes")
        assert resource.get_catalog() is resource.get_catalog()  # checked once per process

        fresh = CatalogResource(database_url=f"sqlite:///{tmp_path / 'other.db'}", store=store)
        with pytest.raises(EmptyCatalogError, match="holds 1 episode; run `pod catalog rebuild`"):
            fresh.get_catalog()
        # A definitions' resource refuses too, inside a run.
        @dg.asset
        def reads_catalog(catalog: CatalogResource) -> None:
            catalog.get_catalog()

        result = dg.materialize([reads_catalog], resources={"catalog": fresh}, raise_on_error=False)
        assert not result.success
        error = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
        messages = []
        while error is not None:
            messages.append(error.message)
            error = error.cause
        assert any(REFUSAL in message for message in messages), messages
    finally:
        dispose_engines(url)
        dispose_engines(f"sqlite:///{tmp_path / 'other.db'}")


def test_rebuild_adds_only_what_is_missing_settles_runs_and_reads_episodes_without_manifests(
    tmp_path: Path,
) -> None:
    """In process, on SQLite and a local store: one episode finished, one cut off while
    processing (both with manifests), one stored before manifests existed (objects only)."""
    store = LocalObjectStore(root=str(tmp_path / "store"))
    source_url = f"sqlite:///{tmp_path / 'source.db'}"
    rebuilt_url = f"sqlite:///{tmp_path / 'rebuilt.db'}"
    source = CatalogResource(database_url=source_url, store=store).get_catalog()
    for name in ("done.mp3", "cut-off.mp3"):
        episode_id = layout.episode_id_for(name)
        info = store.write_bytes(layout.raw_key(episode_id, name), name.encode())
        source.register_upload(
            object_name=name, generation=info.generation, content_hash=info.md5_hex,
            episode_id=episode_id, title=name,
        )
        source.set_raw_key(episode_id, layout.raw_key(episode_id, name))
        source.set_status(episode_id, expected=None, new=EpisodeStatus.PROCESSING, run_id="r1")
    done, cut_off = layout.episode_id_for("done.mp3"), layout.episode_id_for("cut-off.mp3")
    source.record_metrics(done, {"duration_s": 3.5})
    final = store.write_bytes(layout.episode_key(done, layout.FINAL_EPISODE), b"mp3")
    raw = layout.raw_key(done, "done.mp3")
    source.record_artifacts(
        done, {"raw_audio": store.uri(raw), "final_episode": store.uri(final.key)}
    )
    source.set_status(done, expected=EpisodeStatus.PROCESSING, new=EpisodeStatus.PROCESSED)
    legacy = "old-episode-0123456789"
    store.write_bytes(layout.episode_key(legacy, "raw.wav"), b"old raw")
    store.write_bytes(layout.episode_key(legacy, layout.FINAL_EPISODE), b"old mp3")

    try:
        rebuilt = Catalog(rebuilt_url)
        with dg.instance_for_test() as instance:
            first = rebuild_catalog(rebuilt, store, instance=instance)
            assert sorted(e.episode_id for e in first.added) == sorted([done, cut_off, legacy])
            assert set(first.partitions_added) == {done, cut_off, legacy}
            assert _comparable(rebuilt.get_episode(done)) == _comparable(source.get_episode(done))
            interrupted = rebuilt.get_episode(cut_off)
            assert interrupted.status is EpisodeStatus.ERROR
            assert interrupted.last_error == INTERRUPTED_ERROR
            old = rebuilt.get_episode(legacy)
            assert (old.status, old.source_name) == (EpisodeStatus.PROCESSED, f"{legacy}.wav")
            assert set(old.artifacts) == {"raw_audio", "final_episode"}
            assert store.exists(manifest_key(legacy))  # exact from now on

            # A catalog that lost one episode gets exactly that one back.
            with rebuilt.engine.begin() as conn:
                conn.execute(sa.delete(EpisodeRow).where(EpisodeRow.episode_id == done))
            second = rebuild_catalog(rebuilt, store, instance=instance)
            assert [e.episode_id for e in second.added] == [done]
            assert sorted(second.present) == sorted([cut_off, legacy])
            assert second.partitions_added == ()
            assert _comparable(rebuilt.get_episode(done)) == _comparable(source.get_episode(done))
            assert rebuild_catalog(rebuilt, store, instance=instance).added == ()
    finally:
        dispose_engines(source_url)
        dispose_engines(rebuilt_url)

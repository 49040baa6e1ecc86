"""Versions, not overwrites; remastering after the purge.

* Different bytes under the name of a published episode become a new version, processed
  beside it: the published episode's objects stay byte for byte and it stays published,
  until the new version is published and supersedes it. Driven through the real ``pod``
  command in fresh processes, on the embedded default and on GCS + Postgres.
* The superseded version's raw media stays until its own retention; the purge then takes it
  (and nothing else of it).
* After the purge, ``final_episode`` runs again from the stored cleaned audio and gives a
  valid MP3; the steps that read raw media are still refused with "was purged".
* The catalog migration to versions keeps every row, and publishing keeps at most one
  version of a name published.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pod_assets import layout
from pod_assets.episodes.cleaned_audio import cleaned_audio
from pod_assets.episodes.final_episode import final_episode
from pod_assets.publish.publishing import publish_episodes
from pod_assets.purge import purge
from pod_assets.episodes.raw_audio import raw_audio, take_upload
from pod_assets.status import EpisodeInputError
from pod_assets.episodes.transcript import transcript
from pod_audio.io import probe
from pod_resources.catalog import Catalog, EpisodeStatus
from pod_resources.catalog.engine import dispose_engines
from pod_resources.storage import LocalObjectStore, ObjectStore
from tests.catalog_revisions import write_at_revision
from tests.plugins.pipeline import GCSPostgresHome
from tests.pod_env import pod_env, run_pod

S = EpisodeStatus
EPISODE_ASSETS = [raw_audio, transcript, cleaned_audio, final_episode]


# -- deployments: `pod` in fresh processes ------------------------------------------------


@dataclass
class Deployment:
    env: dict[str, str]
    store: ObjectStore
    catalog: Catalog
    """The same catalog the ``pod`` processes use, read from the test process."""

    def pod(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_pod(self.env, *args, check=check)

    def checksums(self, episode_id: str) -> dict[str, str]:
        """MD5 of every object under ``episodes/<ep>/``, read back byte for byte."""
        return {
            info.key: hashlib.md5(self.store.read_bytes(info.key)).hexdigest()
            for info in self.store.list(layout.episode_prefix(episode_id))
        }




@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Deployment]:
    home = tmp_path / "home"
    url = f"sqlite:///{home / 'catalog.db'}"
    store = LocalObjectStore(root=str(home / "store"))
    yield Deployment(env=pod_env(home), store=store, catalog=Catalog(url))
    dispose_engines(url)


@pytest.fixture
def gcs_postgres(gcs_postgres_home: GCSPostgresHome) -> Deployment:
    pod = gcs_postgres_home
    catalog = Catalog(pod.database_url, application_name=f"pod-test-{uuid.uuid4().hex[:8]}")
    return Deployment(env=pod.env, store=pod.store, catalog=catalog)


@pytest.fixture(params=["embedded", "gcs_postgres"])
def deployment(request: pytest.FixtureRequest) -> Deployment:
    return request.getfixturevalue(request.param)


def _second_take(short_speech: Path, out: Path) -> None:
    """The same talk, 3 dB quieter: other bytes, still good speech."""
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg
    subprocess.run(
        [ffmpeg, "-v", "error", "-nostdin", "-y", "-i", str(short_speech), "-af", "volume=-3dB",
         str(out)],
        check=True,
    )


CATALOG_RECORD = "episode.json"
"""The catalog's own record of an episode in the store, if the catalog writes one: it follows
the status (``superseded``, purged), unlike the episode's media."""


def _media(checksums: dict[str, str]) -> dict[str, str]:
    return {key: md5 for key, md5 in checksums.items() if not key.endswith("/" + CATALOG_RECORD)}


def _in(*, hours: float) -> datetime:
    return datetime.now(UTC) + timedelta(hours=hours)


# -- the published episode survives a new version, byte for byte ---------------------------


@pytest.mark.slow
def test_new_version_of_a_published_episode_never_touches_it_and_takes_over_when_published(
    deployment: Deployment, short_speech: Path, tmp_path: Path
) -> None:
    upload = tmp_path / "upload" / "show.wav"
    upload.parent.mkdir()
    shutil.copy(short_speech, upload)
    deployment.pod("ingest", str(upload))
    deployment.pod("run")
    episode_id = layout.episode_id_for("show.wav")
    [published] = publish_episodes(deployment.catalog, [episode_id])
    assert published.published
    before = deployment.checksums(episode_id)
    assert {key.rsplit("/", 1)[-1] for key in before} >= {"raw.wav", layout.FINAL_EPISODE}

    # Different bytes under the same name.
    _second_take(short_speech, upload)
    ingest = deployment.pod("ingest", str(upload))
    assert f"new version of published episode {episode_id}" in ingest.stdout, ingest.stdout
    run = deployment.pod("run")
    version_id = f"{episode_id}-v2"
    assert (
        f"{version_id} is version 2 of published episode {episode_id}: processed beside it"
        in run.stdout
    ), run.stdout
    assert f"2 of {episode_id}" in run.stdout  # the status table after the run

    rows = {r["episode_id"]: r for r in json.loads(deployment.pod("status", "--json").stdout)}
    assert rows[episode_id]["status"] == "published"
    assert (rows[episode_id]["version"], rows[episode_id]["superseded_by"]) == (1, None)
    assert rows[version_id]["status"] == "processed", rows[version_id]
    assert (rows[version_id]["version"], rows[version_id]["version_of"]) == (2, episode_id)
    assert deployment.checksums(episode_id) == before  # byte for byte
    new_raw = f"episodes/{version_id}/raw.wav"
    assert deployment.checksums(version_id)[new_raw] != before[f"episodes/{episode_id}/raw.wav"]

    # Publishing the new version takes over; the old one is superseded and keeps its bytes.
    took_over = deployment.pod("publish", version_id)
    assert f"published {version_id}; superseded {episode_id}" in took_over.stdout
    old, new = deployment.catalog.versions(episode_id)
    assert (old.status, old.superseded_by, new.status) == (S.SUPERSEDED, version_id, S.PUBLISHED)
    assert _media(deployment.checksums(episode_id)) == _media(before)

    # Its raw media stays within the retention; after it, the purge takes raw media only.
    soon = purge(
        deployment.catalog, deployment.store, now=_in(hours=1), retention=timedelta(hours=24)
    )
    assert soon.deleted == ()
    assert _media(deployment.checksums(episode_id)) == _media(before)
    past = json.loads(deployment.pod("purge", "--now", _in(hours=25).isoformat(), "--json").stdout)
    deleted = {entry["episode_id"]: entry["objects"] for entry in past["deleted"]}
    assert deleted == {episode_id: [f"episodes/{episode_id}/raw.wav"], version_id: [new_raw]}
    kept = {key: md5 for key, md5 in _media(before).items() if not key.endswith("/raw.wav")}
    assert _media(deployment.checksums(episode_id)) == kept
    old = deployment.catalog.get_episode(episode_id)
    assert old.status is S.SUPERSEDED and "raw_audio" not in old.artifacts

    # Remastering after the purge runs from the stored cleaned audio; raw_audio is refused.
    deployment.pod("run", "--episode", version_id, "--step", "final_episode")
    final = tmp_path / "episode.mp3"
    final.write_bytes(deployment.store.read_bytes(layout.episode_key(version_id, "episode.mp3")))
    info = probe(final)
    assert info.codec == "mp3" and info.duration_s > 2
    refused = deployment.pod("run", "--episode", version_id, "--step", "raw_audio", check=False)
    assert refused.returncode == 1
    assert f"raw audio for {version_id} was purged at" in refused.stdout + refused.stderr


# -- remastering after the purge, as a UI run of final_episode alone -----------------------


@pytest.mark.slow
def test_final_episode_alone_runs_from_cleaned_audio_after_the_purge(
    pipeline, short_speech: Path
) -> None:
    episode_id = pipeline.register("talk.wav", short_speech)
    assert pipeline.materialize(EPISODE_ASSETS, episode_id).success
    first_mp3 = pipeline.store.stat(layout.episode_key(episode_id, layout.FINAL_EPISODE))
    report = purge(
        pipeline.catalog,
        pipeline.store,
        now=datetime.now(UTC) + timedelta(days=2),
        retention=timedelta(hours=24),
    )
    assert [entry.episode_id for entry in report.deleted] == [episode_id]

    again = pipeline.materialize([final_episode], episode_id)

    assert again.success
    mp3 = pipeline.store.stat(layout.episode_key(episode_id, layout.FINAL_EPISODE))
    assert mp3.generation != first_mp3.generation
    episode = pipeline.catalog.get_episode(episode_id)
    assert episode.status is S.PROCESSED and episode.raw_purged_at is not None
    for step in (raw_audio, cleaned_audio):
        refused = pipeline.materialize([step], episode_id)
        assert not refused.success
        [failure] = [e for e in refused.all_events if e.is_step_failure]
        assert f"raw audio for {episode_id} was purged at" in (
            failure.step_failure_data.error.message
        )
    assert pipeline.catalog.get_episode(episode_id).status is S.PROCESSED


def test_raw_media_is_never_overwritten_with_other_bytes(pipeline) -> None:
    episode_id = pipeline.register("talk.wav", b"first bytes" * 100)
    episode = pipeline.catalog.get_episode(episode_id)
    raw_key = layout.raw_key(episode_id, "talk.wav")
    pipeline.store.write_bytes(raw_key, b"other bytes" * 100)

    with pytest.raises(EpisodeInputError, match="refusing to overwrite raw media"):
        take_upload(pipeline.store, episode)

    assert pipeline.store.read_bytes(raw_key) == b"other bytes" * 100
    assert pipeline.store.exists(layout.upload_key("talk.wav"))
    # The same bytes (a step retried after its copy landed) are taken as before.
    pipeline.store.write_bytes(raw_key, b"first bytes" * 100)
    assert take_upload(pipeline.store, episode) == raw_key
    assert not pipeline.store.exists(layout.upload_key("talk.wav"))


# -- catalog: the migration keeps every row; one published version per name ---------------


def test_migration_to_versions_keeps_every_row(catalog_url: str) -> None:
    """Rebuilding ``episodes`` on SQLite must not cascade into history and uploads."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    write_at_revision(
        catalog_url,
        "0001",
        [
            "INSERT INTO episodes VALUES ('ep-a', 'a.wav', 1, 'h1', 'A', 'published', "
            ":t, :t, :t, NULL, NULL, NULL, 'episodes/ep-a/raw.wav', NULL, '{}', '{}')",
            "INSERT INTO episode_status_history (episode_id, from_status, to_status, at) "
            "VALUES ('ep-a', NULL, 'uploaded', :t)",
            "INSERT INTO uploads VALUES ('a.wav', 1, 'h1', 'ep-a', NULL, :t)",
        ],
        t=t0,
    )

    catalog = Catalog(catalog_url, application_name=f"pod-test-{uuid.uuid4().hex[:8]}")
    try:
        episode = catalog.get_episode("ep-a")
        assert episode is not None and episode.status is S.PUBLISHED
        assert (episode.version, episode.version_of, episode.superseded_by) == (1, None, None)
        assert len(catalog.history("ep-a")) == 1
        assert [u.object_name for u in catalog.uploads("ep-a")] == ["a.wav"]
        version = catalog.register_upload(
            object_name="a.wav", generation=2, content_hash="h2", episode_id="ep-a", title="A"
        ).episode
        assert (version.episode_id, version.version_of) == ("ep-a-v2", "ep-a")
    finally:
        dispose_engines(catalog_url)


def test_publishing_versions_at_once_leaves_exactly_one_published(catalog: Catalog) -> None:
    ids = []
    for generation in (1, 2, 3):
        episode = catalog.register_upload(
            object_name="show.wav",
            generation=generation,
            content_hash=f"h{generation}",
            episode_id="ep-show",
            title="Show",
        ).episode
        catalog.set_status(episode.episode_id, expected=S.UPLOADED, new=S.PROCESSING, run_id="r")
        catalog.set_status(episode.episode_id, expected=S.PROCESSING, new=S.PROCESSED)
        ids.append(episode.episode_id)
    assert ids == ["ep-show", "ep-show-v2", "ep-show-v3"]

    results: list = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(catalog.publish(i))) for i in ids
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert all(result.published for result in results)
    versions = catalog.versions("ep-show")
    [live] = [e for e in versions if e.status is S.PUBLISHED]
    superseded = [e for e in versions if e.status is S.SUPERSEDED]
    assert len(superseded) == 2
    assert live.superseded_by is None
    assert all(e.superseded_by in ids and e.superseded_by != e.episode_id for e in superseded)
    assert not catalog.publish(live.episode_id).published  # already published

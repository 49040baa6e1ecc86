"""Processes die, restart and start empty: the pipeline keeps working from the store.

Every test here drives the real ``pod`` command in fresh processes, as a deployment would,
on the GCS emulator and Postgres (and the embedded default where it matters):

* each step of an episode in a fresh process with its own empty scratch directory, reading
  the previous steps' outputs from GCS (seed incident 1: transcripts lost on restart);
* the whole pipeline with the multiprocess executor under an ORM guard that fails any lazy
  load, refresh or detached access (seed incident 3: ``DetachedInstanceError``);
* the run worker killed with SIGKILL in the middle of ``cleaned_audio``: no half-written
  object is visible, and the next plain ``pod run`` resumes the partition by itself, with
  the same outputs and a consistent status.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from pod_assets import layout
from pod_assets.partitions import episode_partitions
from pod_assets.status import EPISODE_STEPS
from pod_audio.io import iter_blocks, probe
from pod_resources.catalog import Catalog, EpisodeStatus
from pod_resources.catalog.engine import dispose_engines
from pod_resources.storage import LocalObjectStore, ObjectStore
from tests import audio_factory as af
from tests.plugins.pipeline import GCSPostgresHome
from tests.pod_env import pod_env
from tests.waiting import wait_for

POD = Path(sys.executable).parent / "pod"
ORM_GUARD_DIR = Path(__file__).resolve().parents[1] / "orm_guard"
OUTPUTS = (layout.TRANSCRIPT, layout.CUT_LIST, layout.CLEANED_TRANSCRIPT, layout.CLEANED_AUDIO)


@dataclass
class Deployment:
    """A POD_HOME whose ``pod`` commands run in fresh processes on a given store and catalog."""

    home: Path
    env: dict[str, str]
    store: ObjectStore
    catalog: Catalog

    def command(self, *args: str, scratch: Path | None = None, **env: str) -> tuple[list[str], dict]:
        full_env = {**self.env, **env}
        if scratch is not None:
            scratch.mkdir(parents=True, exist_ok=True)
            full_env["TMPDIR"] = str(scratch)
        return [str(POD), *args], full_env

    def pod(self, *args: str, scratch: Path | None = None, check: bool = True, **env: str):
        argv, full_env = self.command(*args, scratch=scratch, **env)
        run = subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=600)
        if check:
            assert run.returncode == 0, f"pod {' '.join(args)}\n{run.stdout}\n{run.stderr[-3000:]}"
        return run

    def register(self, name: str, path: Path) -> str:
        """Upload ``path`` and register it, as one upload-sensor tick would; the episode id."""
        from pod_sensors.uploads import content_md5

        info = self.store.write_file(layout.upload_key(name), path)
        registration = self.catalog.register_upload(
            object_name=name,
            generation=info.generation,
            content_hash=content_md5(self.store, info),
            episode_id=layout.episode_id_for(name),
            title=layout.display_title(name),
        )
        episode_id = registration.episode.episode_id
        with dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"]) as instance:
            instance.add_dynamic_partitions(episode_partitions.name, [episode_id])
        return episode_id

    def outputs(self, episode_id: str) -> dict[str, str]:
        """MD5 of each stored output of the episode that is byte-for-byte reproducible."""
        return {
            name: hashlib.md5(self.store.read_bytes(layout.episode_key(episode_id, name))).hexdigest()
            for name in OUTPUTS
        }




@pytest.fixture
def gcs_postgres(gcs_postgres_home: GCSPostgresHome) -> Deployment:
    """``pod`` on a fresh GCS emulator bucket and a fresh Postgres database."""
    pod = gcs_postgres_home
    catalog = Catalog(pod.database_url, application_name=f"pod-test-{uuid.uuid4().hex[:8]}")
    return Deployment(home=pod.home, env=pod.env, store=pod.store, catalog=catalog)


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Deployment]:
    """``pod`` on the embedded default: local store and SQLite under POD_HOME."""
    home = tmp_path / "home"
    env = pod_env(home)
    url = f"sqlite:///{home / 'catalog.db'}"
    yield Deployment(
        home=home, env=env, store=LocalObjectStore(root=str(home / "store")), catalog=Catalog(url)
    )
    dispose_engines(url)


def _scratch_leftovers(scratch: Path) -> list[str]:
    return sorted(str(p.relative_to(scratch)) for p in scratch.rglob("*"))


def test_each_step_in_a_fresh_process_with_empty_scratch_completes_from_gcs(
    gcs_postgres: Deployment, jfk_path: Path, tmp_path: Path
) -> None:
    deployment = gcs_postgres
    episode_id = deployment.register("jfk.flac", jfk_path)

    for step in EPISODE_STEPS:
        scratch = tmp_path / "scratch" / step  # new, empty, and gone after the step
        deployment.pod("run", "--episode", episode_id, "--step", step, scratch=scratch)
        assert _scratch_leftovers(scratch) == [], f"{step} left files on local disk"
        for leftover in scratch.rglob("*"):
            leftover.unlink()
        scratch.rmdir()

        if step == "transcript":
            # Written by that process, readable by anyone else straight from GCS.
            fresh = make_gcs_store_like(deployment.store)
            words = fresh.read_json(layout.episode_key(episode_id, layout.TRANSCRIPT))["words"]
            assert words, "the stored transcript is empty"

    episode = deployment.catalog.get_episode(episode_id)
    assert episode.status == EpisodeStatus.PROCESSED, episode.last_error
    for stage in ("raw_audio", "transcript", "cleaned_audio", "cleaned_transcript", "final_episode"):
        assert episode.artifacts[stage].startswith(f"gs://{deployment.store.bucket}/pod/"), stage
    final = tmp_path / "final.mp3"
    deployment.store.read_to_path(layout.episode_key(episode_id, layout.FINAL_EPISODE), final)
    assert probe(final).duration_s > 5.0
    # One run per step, each of which moved the episode through processing.
    history = [(c.from_status, c.to_status) for c in deployment.catalog.history(episode_id)]
    assert history.count((EpisodeStatus.PROCESSED, EpisodeStatus.PROCESSING)) == len(EPISODE_STEPS) - 1
    assert history[-1] == (EpisodeStatus.PROCESSING, EpisodeStatus.PROCESSED)


def make_gcs_store_like(store: ObjectStore) -> ObjectStore:
    """A second store on the same bucket with its own client: nothing shared in memory."""
    return type(store)(**{name: getattr(store, name) for name in ("bucket", "prefix", "project")})


def _guard_records(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def test_orm_guard_sees_a_detached_access(tmp_path: Path) -> None:
    """The guard used below is real: it records a detached access even when it is caught."""
    log = tmp_path / "guard.jsonl"
    code = """
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
class Base(DeclarativeBase):
    pass
class Row(Base):
    __tablename__ = "row"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
engine = sa.create_engine("sqlite://")
Base.metadata.create_all(engine)
with Session(engine) as session:
    session.add(Row(id=1, title="t"))
    session.commit()
    row = session.get(Row, 1)
    session.expire(row)
try:
    row.title
except Exception as exc:
    print(type(exc).__name__)
"""
    env = {**os.environ, "PYTHONPATH": str(ORM_GUARD_DIR), "POD_ORM_GUARD_LOG": str(log)}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "DetachedInstanceError" in run.stdout, run.stderr[-2000:]
    assert [r["kind"] for r in _guard_records(log)] == ["detached"]


def test_whole_pipeline_multiprocess_under_the_orm_guard(
    gcs_postgres: Deployment, jfk_path: Path, tmp_path: Path
) -> None:
    deployment = gcs_postgres
    log = tmp_path / "guard.jsonl"
    deployment.pod("ingest", str(jfk_path))
    run = deployment.pod(
        "run",
        POD_EXECUTOR="multiprocess",
        PYTHONPATH=str(ORM_GUARD_DIR),
        POD_ORM_GUARD_LOG=str(log),
    )
    assert "FAILED" not in run.stdout, run.stdout

    records = _guard_records(log)
    violations = [r for r in records if r["kind"] != "active"]
    assert violations == []
    # The guard ran in the processes that did the work: the run's own plus one per step.
    active_pids = {r["pid"] for r in records if r["kind"] == "active"}
    assert len(active_pids) >= 1 + len(EPISODE_STEPS), records

    [episode] = deployment.catalog.list_episodes()
    assert episode.status == EpisodeStatus.PROCESSED, episode.last_error
    assert {stage for stage, uri in episode.artifacts.items() if uri} >= {
        "raw_audio", "transcript", "cleaned_audio", "cut_list", "cleaned_transcript", "final_episode",
    }


@pytest.fixture(scope="module")
def long_speech(tmp_path_factory: pytest.TempPathFactory, jfk_path: Path) -> Path:
    """JFK, a minute and a half of room tone, JFK: long enough to be caught mid-render."""
    info = probe(jfk_path)
    speech = np.concatenate(list(iter_blocks(jfk_path)))
    room = af.noise(
        duration_s=90.0, sample_rate=info.sample_rate, channels=info.channels, amplitude=0.0005
    )
    path = tmp_path_factory.mktemp("long") / "long-take.flac"
    return af.write_audio(path, af.concat(speech, room, speech), sample_rate=info.sample_rate)


def _rendering_started(scratch: Path) -> bool:
    return any(p.stat().st_size > 0 for p in scratch.glob(f"pod-run-*/pod-clean-*/{layout.CLEANED_AUDIO}"))


@pytest.mark.parametrize("where", ["embedded", "gcs_postgres"])
def test_worker_killed_mid_cleaning_then_rerun_gives_same_outputs(
    where: str, request: pytest.FixtureRequest, long_speech: Path, tmp_path: Path
) -> None:
    deployment: Deployment = request.getfixturevalue(where)
    episode_id = deployment.register("long-take.flac", long_speech)
    deployment.pod("run", "--episode", episode_id, scratch=tmp_path / "scratch-first")
    reference = deployment.outputs(episode_id)
    stored = {info.key.rsplit("/", 1)[-1] for info in deployment.store.list(layout.episode_prefix(episode_id))}
    assert {"raw.flac", *OUTPUTS, layout.FINAL_EPISODE} <= stored, stored
    steps = ("--step", "cleaned_audio", "--step", "final_episode")

    # Clean again (as a backfill with other settings would) and kill the worker mid-render.
    scratch = tmp_path / "scratch-killed"
    argv, env = deployment.command("run", "--episode", episode_id, *steps, scratch=scratch)
    worker = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_for(
            lambda: _rendering_started(scratch) or worker.poll() is not None,
            timeout_s=300,
            what="cleaned_audio to start rendering",
        )
        os.killpg(worker.pid, signal.SIGKILL)
    finally:
        worker.wait(30)
    assert worker.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not list(scratch.glob("pod-run-*/pod-master-*")), "killed after cleaned_audio, not in it"

    # Nothing half-written is visible: every output is the complete one of the first run.
    killed = deployment.catalog.get_episode(episode_id)
    assert killed.status == EpisodeStatus.PROCESSING
    assert deployment.outputs(episode_id) == reference
    final = layout.episode_key(episode_id, layout.FINAL_EPISODE)
    names = {info.key.rsplit("/", 1)[-1] for info in deployment.store.list(layout.episode_prefix(episode_id))}
    assert names == stored, names  # no temporary or partial object left behind

    # With no daemon, the next plain `pod run` finds the dead run, says so, and resumes it:
    # the same steps for the partition, which finish the episode with the same bytes.
    tick = deployment.pod("run", scratch=tmp_path / "scratch-tick")
    assert "its process" in tick.stdout and "is gone" in tick.stdout, tick.stdout
    assert f"resuming run {killed.processing_run_id[:8]}" in tick.stdout, tick.stdout
    with dg.DagsterInstance.from_config(deployment.env["DAGSTER_HOME"]) as instance:
        run = instance.get_run_by_id(killed.processing_run_id)
        assert run.status == dg.DagsterRunStatus.FAILURE
    reaped = [c for c in deployment.catalog.history(episode_id) if c.to_status == EpisodeStatus.ERROR]
    assert f"run {killed.processing_run_id} died" in reaped[-1].message
    done = deployment.catalog.get_episode(episode_id)
    assert done.status == EpisodeStatus.PROCESSED, done.last_error
    assert done.last_error is None
    assert deployment.outputs(episode_id) == reference
    local_final = tmp_path / "final.mp3"
    deployment.store.read_to_path(final, local_final)
    assert probe(local_final).duration_s > 20.0  # two JFK takes; the long pause is cut
    history = [(c.from_status, c.to_status) for c in deployment.catalog.history(episode_id)]
    assert history[-4:] == [
        (EpisodeStatus.PROCESSED, EpisodeStatus.PROCESSING),  # the killed run
        (EpisodeStatus.PROCESSING, EpisodeStatus.ERROR),  # found dead
        (EpisodeStatus.ERROR, EpisodeStatus.PROCESSING),  # the automatic resume
        (EpisodeStatus.PROCESSING, EpisodeStatus.PROCESSED),
    ]

"""A Hypothesis state machine over the episode lifecycle and the purge.

Rules: upload, process to success, fail, retry, publish, reprocess, advance the clock, purge
(dry and real). Status changes go through the catalog calls the assets make
(``set_status``, ``take_upload``, ``set_raw_key``) with the machine's clock; artifacts are
small objects written to the store (the audio path is tested elsewhere).

Invariants after every step:
- raw media of an episode that is not finished, or finished within the retention, is still
  there; so is the raw media of every episode the model has not purged;
- a finished episode past the retention has no raw media after a real purge, and is marked;
- a purge run twice deletes nothing the second time; a dry run deletes nothing;
- transcripts, cleaned audio and final episodes are never deleted; no partition disappears;
- the catalog's status is the model's, and reprocessing a purged episode is refused.

Runs on the local store with SQLite, and (fewer examples) on the GCS emulator with Postgres.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from psycopg import sql

from pod_assets import layout
from pod_assets.partitions import episode_partitions
from pod_assets.publish.publishing import publish_episodes
from pod_assets.purge import purge
from pod_resources.catalog import (
    FINISHED_STATUSES,
    Catalog,
    EpisodeStatus,
    RawMediaPurgedError,
    dispose_engines,
)
from pod_resources.storage import LocalObjectStore, ObjectStore
from tests.plugins.gcs import make_gcs_store
from tests.episode_states import fail, raw_objects, start, start_of_hour, upload

S = EpisodeStatus
RETENTION = timedelta(hours=24)
MAX_EPISODES = 4
PRODUCTS = (layout.TRANSCRIPT, layout.CLEANED_AUDIO, layout.FINAL_EPISODE)


@dataclass
class Model:
    name: str
    status: S
    changed_at: datetime
    purged: bool = False
    succeeded_once: bool = False


@dataclass
class Env:
    store: ObjectStore
    catalog: Catalog
    close: Callable[[], None]


def build_machine(
    new_env: Callable[[], Env], instance: dg.DagsterInstance
) -> type[RuleBasedStateMachine]:
    class PurgeMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.env = new_env()
            self.store, self.catalog = self.env.store, self.env.catalog
            self.clock = start_of_hour()
            self.tag = uuid.uuid4().hex[:6]
            self.model: dict[str, Model] = {}

        def teardown(self) -> None:
            self.env.close()

        # -- helpers -----------------------------------------------------------------------

        def _raw_media(self, episode_id: str) -> bool:
            name = self.model[episode_id].name
            return bool(raw_objects(self.store, episode_id)) or self.store.exists(
                layout.upload_key(name)
            )

        def _succeed(self, episode_id: str) -> None:
            """The run's last step: products written, the episode ``processed``."""
            for name in PRODUCTS:
                self.store.write_bytes(layout.episode_key(episode_id, name), name.encode())
            assert self.catalog.set_status(
                episode_id, expected=S.PROCESSING, new=S.PROCESSED, at=self.clock
            )
            m = self.model[episode_id]
            m.status, m.changed_at, m.succeeded_once = S.PROCESSED, self.clock, True

        def _eligible(self) -> set[str]:
            cutoff = self.clock - RETENTION
            return {
                episode_id
                for episode_id, m in self.model.items()
                if m.status in FINISHED_STATUSES and m.changed_at < cutoff and not m.purged
            }

        def _begin(self, episode_id: str) -> None:
            m = self.model[episode_id]
            if m.purged:
                event("reprocessing a purged episode refused")
                with pytest.raises(RawMediaPurgedError, match="was purged at"):
                    start(self.store, self.catalog, episode_id, at=self.clock)
                return
            start(self.store, self.catalog, episode_id, at=self.clock)
            m.status, m.changed_at = S.PROCESSING, self.clock

        def _with(self, *statuses: S) -> list[str]:
            return [e for e, m in self.model.items() if m.status in statuses]

        def _pick(self, data: st.DataObject, *statuses: S) -> str:
            return data.draw(st.sampled_from(self._with(*statuses)), label="episode")

        def _upload(self) -> str:
            name = f"{self.tag} show {len(self.model)}.mp3"
            episode_id = upload(self.store, self.catalog, name, instance=instance)
            self.model[episode_id] = Model(name, S.UPLOADED, self.clock)
            return episode_id

        # -- rules -------------------------------------------------------------------------

        @initialize(
            uploaded=st.integers(0, 1), processing=st.integers(0, 1), done=st.integers(1, 2)
        )
        def studio(self, uploaded: int, processing: int, done: int) -> None:
            """A few episodes to start from: uploaded, in a run, processed."""
            for _ in range(uploaded):
                self._upload()
            for _ in range(processing + done):
                self._begin(self._upload())
            for episode_id in self._with(S.PROCESSING)[:done]:
                self._succeed(episode_id)

        @precondition(lambda self: len(self.model) < MAX_EPISODES)
        @rule()
        def upload_episode(self) -> None:
            self._upload()

        @precondition(lambda self: self._with(S.UPLOADED))
        @rule(data=st.data())
        def start_processing(self, data: st.DataObject) -> None:
            self._begin(self._pick(data, S.UPLOADED))

        @precondition(lambda self: self._with(S.PROCESSING))
        @rule(data=st.data())
        def process_to_success(self, data: st.DataObject) -> None:
            self._succeed(self._pick(data, S.PROCESSING))

        @precondition(lambda self: self._with(S.PROCESSING))
        @rule(data=st.data())
        def process_to_failure(self, data: st.DataObject) -> None:
            m = self.model[episode_id := self._pick(data, S.PROCESSING)]
            fail(self.catalog, episode_id, at=self.clock)
            m.status, m.changed_at = S.ERROR, self.clock

        @precondition(lambda self: self._with(S.ERROR))
        @rule(data=st.data())
        def retry(self, data: st.DataObject) -> None:
            self._begin(self._pick(data, S.ERROR))

        @precondition(lambda self: self._with(*FINISHED_STATUSES))
        @rule(data=st.data())
        def reprocess(self, data: st.DataObject) -> None:
            self._begin(self._pick(data, *FINISHED_STATUSES))

        @precondition(lambda self: self.model)
        @rule(data=st.data())
        def publish(self, data: st.DataObject) -> None:
            m = self.model[episode_id := self._pick(data, *S)]
            [outcome] = publish_episodes(self.catalog, [episode_id], at=self.clock)
            assert outcome.published == (m.status == S.PROCESSED), outcome
            if outcome.published:
                m.status, m.changed_at = S.PUBLISHED, self.clock

        # The first value of sampled_from is the one Hypothesis tries most: the interesting one.
        @rule(
            hours=st.sampled_from([25, 1, 48, 23, 12]),
            then=st.sampled_from(["purge", None, "dry purge"]),
        )
        def advance_clock(self, hours: int, then: str | None) -> None:
            """Time passes; then maybe the daily purge runs."""
            self.clock += timedelta(hours=hours)
            if then is not None:
                self._purge(dry_run=then == "dry purge")

        @precondition(lambda self: self.model)
        @rule(dry_run=st.booleans())
        def run_purge(self, dry_run: bool) -> None:
            self._purge(dry_run=dry_run)

        def _purge(self, *, dry_run: bool) -> None:
            expected = self._eligible()
            before = {info.key for info in self.store.list("")}
            report = purge(
                self.catalog, self.store, now=self.clock, retention=RETENTION, dry_run=dry_run
            )
            assert not report.failed and not report.skipped_by_race
            assert {e.episode_id for e in report.deleted} == expected
            kind = "dry" if dry_run else "real"
            event(f"{kind} purge, {'some' if expected else 'nothing'} eligible")
            if dry_run:
                assert {info.key for info in self.store.list("")} == before
                return
            for episode_id in expected:
                self.model[episode_id].purged = True
                assert not self._raw_media(episode_id)
                assert self.catalog.get_episode(episode_id).raw_purged_at == self.clock
            again = purge(self.catalog, self.store, now=self.clock, retention=RETENTION)
            assert again.deleted == () and again.eligible == 0

        # -- invariants --------------------------------------------------------------------

        @invariant()
        def store_catalog_and_partitions_agree_with_the_model(self) -> None:
            keys = {info.key for info in self.store.list("")}
            episodes = {e.episode_id: e for e in self.catalog.list_episodes()}
            partitions = set(instance.get_dynamic_partitions(episode_partitions.name))
            assert set(self.model) <= partitions  # no partition disappears
            for episode_id, m in self.model.items():
                prefix = layout.episode_prefix(episode_id)
                raw_media = layout.upload_key(m.name) in keys or any(
                    key.startswith(prefix + "raw.") for key in keys
                )
                # Raw media stays until the purge takes it, and only then is it gone.
                assert raw_media != m.purged, (episode_id, m)
                if m.succeeded_once:  # products are never purged
                    assert {layout.episode_key(episode_id, n) for n in PRODUCTS} <= keys
                episode = episodes[episode_id]
                assert episode.status == m.status, (episode_id, m)
                assert (episode.raw_purged_at is not None) == m.purged, (episode_id, m)

    return PurgeMachine


def _run(machine: type[RuleBasedStateMachine], *, examples: int, steps: int) -> None:
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


@pytest.fixture
def scratch_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on tmpfs when there is one (many small fsyncs), else ``tmp_path``."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="pod-purge-sm-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_purge_state_machine_local_store_sqlite(scratch_dir: Path) -> None:
    tmp_path = scratch_dir
    counter = iter(range(10**6))

    def new_env() -> Env:
        n = next(counter)
        url = f"sqlite:///{tmp_path / f'catalog-{n}.db'}"
        return Env(
            store=LocalObjectStore(root=str(tmp_path / f"store-{n}")),
            catalog=Catalog(url),
            close=lambda: dispose_engines(url),
        )

    with dg.instance_for_test() as instance:
        _run(build_machine(new_env, instance), examples=30, steps=25)


@contextmanager
def _postgres_databases(server_url: str) -> Iterator[Callable[[], str]]:
    """Fresh databases on the local server, all dropped at the end."""
    names: list[str] = []
    admin = psycopg.connect(
        server_url.replace("postgresql+psycopg://", "postgresql://") + "/postgres",
        autocommit=True,
    )

    def create() -> str:
        name = f"pod_test_sm_{uuid.uuid4().hex[:8]}"
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        names.append(name)
        return f"{server_url}/{name}"

    try:
        yield create
    finally:
        for name in names:
            dispose_engines(f"{server_url}/{name}")
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        admin.close()


@pytest.mark.postgres
@pytest.mark.gcs
def test_purge_state_machine_gcs_postgres(postgres_server_url, gcs_emulator_env):
    bucket = make_gcs_store(gcs_emulator_env).bucket
    with (
        _postgres_databases(postgres_server_url) as new_database,
        dg.instance_for_test() as instance,
    ):

        def new_env() -> Env:
            url = new_database()
            return Env(
                store=make_gcs_store(gcs_emulator_env, bucket, prefix=uuid.uuid4().hex[:12]),
                catalog=Catalog(url),
                close=lambda: dispose_engines(url),
            )

        _run(build_machine(new_env, instance), examples=5, steps=15)

"""The catalog under faults, end to end: whole episode runs on real Postgres while connections
die, plus the idle-checkout guard that the whole suite runs with.

The episode runs (raw_audio -> transcript -> cleaned_audio -> final_episode, real speech, real
the recogniser) connect as their own LOGIN role (``app_database`` in tests/plugins/postgres.py),
and a transcriber that first spends 5 s "processing" makes the long step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy import event

from pod_assets.episodes.cleaned_audio import cleaned_audio
from pod_assets.episodes.final_episode import final_episode
from pod_assets.episodes.raw_audio import raw_audio
from pod_assets.episodes.transcript import transcript
from pod_audio.transcript import Transcript
from pod_resources.catalog import (
    Catalog,
    CatalogResource,
    EpisodeStatus,
    LeakedTransactionError,
    get_engine,
)
from pod_resources.catalog.engine import (
    _assert_idle_on_checkout,
    create_catalog_engine,
    global_idle_checkout_guard_installed,
    open_transaction_state,
)
from pod_resources.storage import LocalObjectStore
from pod_resources.transcriber import WhisperTranscriberResource, TranscriberResource
from tests.plugins.pipeline import Pipeline
from tests.plugins.postgres import AppDatabase, terminate_backend, terminate_backends

S = EpisodeStatus
ALL = [raw_audio, transcript, cleaned_audio, final_episode]
RETRY_LOGGER = "pod_resources.catalog.repository"
SLOW_STEP_S = 5.0
IDLE_IN_TRANSACTION_TIMEOUT = "2s"
ARTIFACT_STAGES = (
    "raw_audio", "transcript", "cleaned_audio", "cut_list", "cleaned_transcript", "final_episode",
)

_slow_step_started = threading.Event()


class SlowTranscriber(TranscriberResource):
    """The real recogniser, after ``delay_s`` of processing that touches nothing else."""

    delay_s: float = SLOW_STEP_S

    def transcribe(self, path: Path, **kwargs) -> Transcript:
        _slow_step_started.set()
        time.sleep(self.delay_s)
        return WhisperTranscriberResource().transcribe(path, **kwargs)


@dataclass
class PostgresPipeline:
    pipeline: Pipeline
    database: AppDatabase
    application_name: str

    @property
    def catalog(self) -> Catalog:
        return self.pipeline.catalog

    def materialize(self, episode_id: str) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            ALL,
            partition_key=episode_id,
            resources={**self.pipeline.resources, "transcriber": SlowTranscriber()},
            instance=self.pipeline.instance,
            raise_on_error=False,
        )

    def admin(self) -> psycopg.Connection:
        """Superuser connection to the catalog database (autocommit)."""
        return psycopg.connect(self.database.conninfo(as_owner=False), autocommit=True)


@pytest.fixture
def pg_pipeline(
    app_database: AppDatabase, catalog_application_name: str, tmp_path: Path
) -> Iterator[PostgresPipeline]:
    """An in-process pipeline whose catalog is on Postgres, as the app's own role."""
    _slow_step_started.clear()
    with dg.instance_for_test() as instance:
        yield PostgresPipeline(
            pipeline=Pipeline(
                instance=instance,
                store=LocalObjectStore(root=str(tmp_path / "store")),
                catalog_resource=CatalogResource(
                    database_url=app_database.url, application_name=catalog_application_name
                ),
            ),
            database=app_database,
            application_name=catalog_application_name,
        )


def _run_in_thread(target) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = target()
        except BaseException as exc:  # surfaced by the test
            box["error"] = exc

    thread = threading.Thread(target=run, name="episode-run", daemon=True)
    thread.start()
    return thread, box


def _wait_for_slow_step(thread: threading.Thread, box: dict) -> None:
    while not _slow_step_started.wait(0.1):
        assert thread.is_alive(), f"run ended before the slow step: {box}"


def _finished(thread: threading.Thread, box: dict) -> dg.ExecuteInProcessResult:
    thread.join(timeout=600)
    assert not thread.is_alive(), "the run did not finish"
    if "error" in box:
        raise box["error"]
    return box["result"]


def _assert_processed_once(
    pg: PostgresPipeline, episode_id: str, result: dg.ExecuteInProcessResult
) -> None:
    """The run succeeded, the episode is ``processed`` in exactly one row, and its history is
    one unbroken chain with each transition of the run written once."""
    failures = [e.message for e in result.all_events if e.is_step_failure]
    assert result.success, failures
    episode = pg.catalog.get_episode(episode_id)
    assert episode is not None
    assert episode.status is S.PROCESSED and episode.last_error is None
    assert episode.processing_run_id == result.run_id
    for stage in ARTIFACT_STAGES:
        assert episode.artifacts.get(stage), stage
    with pg.admin() as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM episodes), "
            "(SELECT count(*) FROM episodes WHERE episode_id = %s), (SELECT count(*) FROM uploads)",
            [episode_id],
        ).fetchone()
    assert counts == (1, 1, 1)
    history = pg.catalog.history(episode_id)
    assert [(c.from_status, c.to_status) for c in history] == [
        (None, S.UPLOADED),
        (S.UPLOADED, S.PROCESSING),
        (S.PROCESSING, S.PROCESSED),
    ]
    assert [c.run_id for c in history[1:]] == [result.run_id, result.run_id]
    assert all(a.at <= b.at for a, b in zip(history, history[1:], strict=False))


# -- 4a: no transaction spans processing ---------------------------------------------------


@pytest.mark.postgres
def test_long_step_under_idle_in_transaction_timeout_completes(
    pg_pipeline: PostgresPipeline, short_speech: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pg = pg_pipeline
    with pg.admin() as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} SET idle_in_transaction_session_timeout = {}").format(
                sql.Identifier(pg.database.role), sql.Literal(IDLE_IN_TRANSACTION_TIMEOUT)
            )
        )
    episode_id = pg.pipeline.register("long step.wav", short_speech)
    with pg.catalog.engine.connect() as conn:  # the role's setting reaches the app's sessions
        timeout = conn.execute(sa.text("SHOW idle_in_transaction_session_timeout")).scalar()
    assert timeout == IDLE_IN_TRANSACTION_TIMEOUT

    with caplog.at_level(logging.WARNING, logger=RETRY_LOGGER):
        thread, box = _run_in_thread(lambda: pg.materialize(episode_id))
        _wait_for_slow_step(thread, box)
        # While the step computes, none of the app's backends sits inside a transaction.
        with pg.admin() as conn:
            states = conn.execute(
                "SELECT state FROM pg_stat_activity WHERE application_name = %s",
                [pg.application_name],
            ).fetchall()
        result = _finished(thread, box)

    assert states, "the app's pool keeps its connections between units"
    assert all(not (state or "").startswith("idle in transaction") for (state,) in states), states
    _assert_processed_once(pg, episode_id, result)
    # No unit lost its connection to the timeout: nothing was retried, no step restarted.
    assert "retrying" not in caplog.text
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_RESTARTED]
    transcript_step = [
        e for e in result.all_events
        if e.event_type == dg.DagsterEventType.STEP_SUCCESS and e.step_key == "transcript"
    ]
    assert transcript_step and transcript_step[0].event_specific_data.duration_ms >= (
        SLOW_STEP_S * 1000
    )


# -- 4b: every backend of the app killed while the episode is processing --------------------


@pytest.mark.postgres
def test_backends_killed_during_processing_episode_still_completes_once(
    pg_pipeline: PostgresPipeline, short_speech: Path
) -> None:
    pg = pg_pipeline
    episode_id = pg.pipeline.register("killed backends.wav", short_speech)
    thread, box = _run_in_thread(lambda: pg.materialize(episode_id))
    _wait_for_slow_step(thread, box)
    first = terminate_backends(application_name=pg.application_name)
    kills = [first]
    # Then keep killing them, idle or mid-transaction, until the run is over.
    while thread.is_alive():
        kills.append(terminate_backends(application_name=pg.application_name))
        thread.join(timeout=0.25)
    result = _finished(thread, box)

    assert first >= 1, "the pool held the connections of the steps before"
    assert sum(kills) > first, "the later steps' connections were killed too"
    _assert_processed_once(pg, episode_id, result)


# -- 4c: the first status write of a run loses its backend mid-transaction -------------------


@pytest.mark.postgres
def test_status_write_killed_by_trigger_is_retried_whole_and_recorded_once(
    pg_pipeline: PostgresPipeline, short_speech: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pg = pg_pipeline
    episode_id = pg.pipeline.register("killed status write.wav", short_speech)
    # A sequence, not a flag row: nextval() survives the rollback of the killed transaction,
    # so the trigger fires its kill exactly once.
    with psycopg.connect(pg.database.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE fault_status_writes")
        conn.execute(
            """
            CREATE FUNCTION fault_kill_first_status_write() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                IF nextval('fault_status_writes') = 1 THEN
                    PERFORM pg_terminate_backend(pg_backend_pid());
                END IF;
                RETURN NEW;
            END $$
            """
        )
        conn.execute(
            "CREATE TRIGGER fault_kill_first_status_write BEFORE UPDATE OF status ON episodes"
            " FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)"
            " EXECUTE FUNCTION fault_kill_first_status_write()"
        )

    with caplog.at_level(logging.WARNING, logger=RETRY_LOGGER):
        result = pg.materialize(episode_id)

    _assert_processed_once(pg, episode_id, result)
    with pg.admin() as conn:
        writes = conn.execute("SELECT last_value FROM fault_status_writes").fetchone()[0]
    # uploaded -> processing killed, the same write again, processing -> processed.
    assert writes == 3
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 1 and "compare_and_set" in retries[0].getMessage()
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_RESTARTED]


# -- 5: leaked transactions fail loudly, everywhere -----------------------------------------


def _leak_on_checkin(dbapi_conn, _record) -> None:
    """Run after the pool's reset: the connection goes back to the pool in a transaction."""
    if isinstance(dbapi_conn, psycopg.Connection):
        dbapi_conn.execute("SELECT 1")
    else:
        dbapi_conn.execute("BEGIN")


def _leak_once_then_check(engine: sa.Engine) -> None:
    engine.dispose()  # start from an empty pool: the next connection is the leaked one
    event.listen(engine, "checkin", _leak_on_checkin)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    finally:
        event.remove(engine, "checkin", _leak_on_checkin)
    with pytest.raises(LeakedTransactionError, match="INTRANS"):
        with engine.connect():
            pass
    with engine.connect() as conn:  # the pool dropped the leaked connection
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1


def test_the_suite_runs_with_the_guard_on_every_pool(catalog_url: str) -> None:
    """A plain SQLAlchemy engine, which nothing in the project configured, is guarded too."""
    assert global_idle_checkout_guard_installed()
    url = sa.make_url(catalog_url)
    if url.get_backend_name() == "sqlite":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    try:
        _leak_once_then_check(engine)
    finally:
        engine.dispose()


def test_catalog_engines_carry_the_guard_themselves(catalog_url: str) -> None:
    engine = create_catalog_engine(catalog_url, application_name="pod-test-leak")
    try:
        assert event.contains(engine, "checkout", _assert_idle_on_checkout)
        _leak_once_then_check(engine)
    finally:
        engine.dispose()


def test_transaction_state_is_read_from_the_driver(catalog_url: str) -> None:
    engine = create_catalog_engine(catalog_url)
    try:
        with engine.connect() as conn:
            dbapi_conn = conn.connection.dbapi_connection
            assert open_transaction_state(dbapi_conn) is None
            conn.execute(sa.text("SELECT 1"))  # autobegin
            assert open_transaction_state(dbapi_conn) == "INTRANS"
            conn.rollback()
            assert open_transaction_state(dbapi_conn) is None
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_pool_pre_ping_is_on_for_postgres_engines(
    postgres_url: str, catalog_application_name: str
) -> None:
    engine = get_engine(postgres_url, application_name=catalog_application_name)
    assert engine.pool._pre_ping is True
    fresh = create_catalog_engine(postgres_url, application_name=catalog_application_name)
    try:
        assert fresh.pool._pre_ping is True
        with fresh.connect() as conn:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        assert terminate_backend(pid)
        # The dead connection in the pool is noticed at checkout and replaced.
        with fresh.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar() != pid
    finally:
        fresh.dispose()

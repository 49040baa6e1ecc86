"""The catalog database, on SQLite and on real Postgres (fixtures in tests/plugins/postgres.py)."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import pickle
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event

from pod_resources.catalog import (
    Catalog,
    CatalogConnectionError,
    CatalogError,
    CatalogResource,
    Episode,
    EpisodeNotFoundError,
    EpisodeStatus,
    InvalidTransitionError,
    LeakedTransactionError,
    Registration,
    RegistrationKind,
    StatusChange,
    UploadRecord,
    install_idle_checkout_guard,
    migrate,
    redact_url,
)
from pod_resources.catalog.engine import MIGRATIONS_DIR, VERSION_TABLE, create_catalog_engine
from pod_resources.catalog.models import Base
from tests.plugins.postgres import terminate_backend, terminate_backends

S = EpisodeStatus
RETRY_LOGGER = "pod_resources.catalog.repository"
T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


def _register(
    catalog: Catalog, name: str = "show.wav", *, generation: int = 1, content: str = "h1"
) -> Registration:
    return catalog.register_upload(
        object_name=name,
        generation=generation,
        content_hash=content,
        episode_id=f"ep-{name.partition('.')[0]}",
        title=name.partition(".")[0].title(),
    )


def _episode(catalog: Catalog, episode_id: str) -> Episode:
    episode = catalog.get_episode(episode_id)
    assert episode is not None
    return episode


def _transitions(catalog: Catalog, episode_id: str) -> list[tuple[str | None, str]]:
    return [(change.from_status, change.to_status) for change in catalog.history(episode_id)]


def _in_threads(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls at the same moment, one thread each; their results, in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=item) for item in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results


# -- schema ------------------------------------------------------------------------------


def test_migration_creates_schema_and_is_idempotent(catalog_url: str) -> None:
    engine = create_catalog_engine(catalog_url)
    try:
        migrate(engine)
        migrate(engine)
        inspector = sa.inspect(engine)
        tables = set(inspector.get_table_names())
        assert {"episodes", "episode_status_history", "uploads", VERSION_TABLE} <= tables
        with engine.connect() as conn:
            versions = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
            head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
            assert versions == [(head,)]
            # The models and the migrations describe the same schema.
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
            )
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_concurrent_first_use_migrates_once(catalog_url: str) -> None:
    engines = [create_catalog_engine(catalog_url) for _ in range(3)]
    try:
        _in_threads(*(lambda engine=engine: migrate(engine) for engine in engines))
        with engines[0].connect() as conn:
            count = conn.execute(sa.text(f"SELECT count(*) FROM {VERSION_TABLE}")).scalar_one()
        assert count == 1
    finally:
        for engine in engines:
            engine.dispose()


def test_sqlite_connection_settings(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'dir' / 'catalog.db'}"
    engine = create_catalog_engine(url)
    try:
        assert (tmp_path / "nested" / "dir").is_dir()
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 30_000
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_connection_settings(postgres_url: str) -> None:
    catalog = Catalog(postgres_url, application_name="pod-settings-test")
    assert catalog.engine.url.drivername == "postgresql+psycopg"
    with catalog.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW application_name").scalar_one() == "pod-settings-test"
        info = conn.connection.dbapi_connection.info  # type: ignore[union-attr]
        params = info.get_parameters()
        assert params["keepalives"] == "1"
        assert params["keepalives_idle"] == "30"
        assert params["connect_timeout"] == "10"


# -- registration ------------------------------------------------------------------------


def test_register_new_episode(catalog: Catalog) -> None:
    registration = _register(catalog)
    assert registration.kind is RegistrationKind.NEW
    episode = registration.episode
    assert episode == _episode(catalog, "ep-show")
    assert (episode.status, episode.source_name, episode.source_generation) == (
        S.UPLOADED,
        "show.wav",
        1,
    )
    assert (episode.title, episode.content_hash, episode.processing_run_id) == ("Show", "h1", None)
    assert episode.created_at.tzinfo is UTC and episode.created_at == episode.status_changed_at
    assert episode.metrics == {} and episode.artifacts == {}
    assert registration.upload == UploadRecord(
        "show.wav", 1, "h1", "ep-show", None, episode.created_at
    )
    assert _transitions(catalog, "ep-show") == [(None, S.UPLOADED)]


def test_register_same_generation_again_is_already_seen(catalog: Catalog) -> None:
    first = _register(catalog)
    again = _register(catalog)
    assert again.kind is RegistrationKind.ALREADY_SEEN
    assert (again.episode, again.upload) == (first.episode, first.upload)
    assert len(catalog.uploads()) == 1
    assert len(catalog.history("ep-show")) == 1


def test_register_same_bytes_under_another_name_is_duplicate(catalog: Catalog) -> None:
    original = _register(catalog, "show.wav", content="same")
    duplicate = _register(catalog, "copy of show.wav", content="same")
    assert duplicate.kind is RegistrationKind.DUPLICATE
    assert duplicate.episode == original.episode == _episode(catalog, "ep-show")
    assert duplicate.upload.duplicate_of == "ep-show"
    assert catalog.get_episode("ep-copy of show") is None
    assert [e.episode_id for e in catalog.list_episodes()] == ["ep-show"]
    assert [u.object_name for u in catalog.uploads("ep-show")] == ["show.wav", "copy of show.wav"]


def test_register_same_bytes_under_same_name_again_is_duplicate(catalog: Catalog) -> None:
    original = _register(catalog, generation=1, content="same")
    again = _register(catalog, generation=2, content="same")
    assert again.kind is RegistrationKind.DUPLICATE
    assert again.upload.duplicate_of == "ep-show"
    assert _episode(catalog, "ep-show") == original.episode


def test_register_new_bytes_under_same_name_is_new_version(catalog: Catalog) -> None:
    _register(catalog, generation=1, content="v1")
    assert catalog.set_status("ep-show", expected=S.UPLOADED, new=S.PROCESSING, run_id="r1")
    assert catalog.set_status("ep-show", expected=S.PROCESSING, new=S.PROCESSED, run_id="r1")
    before = _episode(catalog, "ep-show")
    version = _register(catalog, generation=7, content="v2")
    assert version.kind is RegistrationKind.NEW_VERSION
    # A new episode beside the first, which is left exactly as it was.
    assert _episode(catalog, "ep-show") == before
    episode = _episode(catalog, "ep-show-v2")
    assert episode == version.episode
    assert (episode.source_generation, episode.content_hash) == (7, "v2")
    assert (episode.version, episode.version_of, episode.status) == (2, "ep-show", S.UPLOADED)
    assert len(catalog.history("ep-show")) == 3
    assert [u.generation for u in catalog.uploads("ep-show")] == [1]
    assert [(u.generation, u.duplicate_of) for u in catalog.uploads("ep-show-v2")] == [(7, None)]
    assert _register(catalog, generation=9, content="v3").episode.episode_id == "ep-show-v3"
    assert [e.episode_id for e in catalog.versions("ep-show")] == [
        "ep-show",
        "ep-show-v2",
        "ep-show-v3",
    ]


def test_register_refuses_an_episode_id_of_another_upload(catalog: Catalog) -> None:
    _register(catalog, "a.wav")
    with pytest.raises(CatalogError, match="belongs to upload 'a.wav'"):
        catalog.register_upload(
            object_name="b.wav", generation=1, content_hash="other", episode_id="ep-a", title="B"
        )


def test_concurrent_registrations_of_same_bytes_make_one_episode(catalog: Catalog) -> None:
    kinds = _in_threads(
        lambda: _register(catalog, "one.wav", content="same").kind,
        lambda: _register(catalog, "two.wav", content="same").kind,
    )
    assert sorted(kinds) == [RegistrationKind.DUPLICATE, RegistrationKind.NEW]
    assert len(catalog.list_episodes()) == 1
    assert len(catalog.uploads()) == 2


# -- what the repository returns ---------------------------------------------------------


def test_returns_frozen_dataclasses_not_orm_objects(catalog: Catalog) -> None:
    registration = _register(catalog)
    catalog.record_metrics("ep-show", {"duration_s": 12.5})
    returned: list[Any] = [
        registration,
        registration.episode,
        registration.upload,
        _episode(catalog, "ep-show"),
        *catalog.list_episodes(),
        *catalog.history("ep-show"),
        *catalog.uploads(),
    ]
    for value in returned:
        assert dataclasses.is_dataclass(value)
        assert not hasattr(value, "_sa_instance_state")
        with pytest.raises(dataclasses.FrozenInstanceError):
            value.episode_id = "other"  # type: ignore[misc]
    episode = _episode(catalog, "ep-show")
    assert isinstance(catalog.history("ep-show")[0], StatusChange)
    with pytest.raises(TypeError):
        episode.metrics["duration_s"] = 0.0  # type: ignore[index]
    assert pickle.loads(pickle.dumps(episode)) == episode
    assert hash(episode) == hash(_episode(catalog, "ep-show"))


# -- status changes ----------------------------------------------------------------------


def test_lifecycle_and_history(catalog: Catalog) -> None:
    _register(catalog)
    steps = [
        dict(expected=S.UPLOADED, new=S.PROCESSING, run_id="r1"),
        dict(expected=S.PROCESSING, new=S.ERROR, run_id="r1", error="bad codec", step="raw_audio"),
        dict(expected=S.ERROR, new=S.PROCESSING, run_id="r2"),
        dict(expected=S.PROCESSING, new=S.PROCESSED, run_id="r2", only_if_run_id="r2"),
        dict(expected=S.PROCESSED, new=S.PUBLISHED),
        dict(expected=[S.PROCESSED, S.PUBLISHED], new=S.PROCESSING, run_id="r3"),
    ]
    for minutes, step in enumerate(steps, start=1):
        assert catalog.set_status("ep-show", at=T0 + timedelta(minutes=minutes), **step)
        if step["new"] is S.ERROR:
            failed = _episode(catalog, "ep-show")
            assert (failed.last_error, failed.error_step) == ("bad codec", "raw_audio")
    episode = _episode(catalog, "ep-show")
    assert episode.status is S.PROCESSING and episode.processing_run_id == "r3"
    assert (episode.last_error, episode.error_step) == (None, None)
    assert episode.status_changed_at == episode.updated_at == T0 + timedelta(minutes=6)
    history = catalog.history("ep-show")
    assert [(h.from_status, h.to_status) for h in history] == [
        (None, S.UPLOADED),
        (S.UPLOADED, S.PROCESSING),
        (S.PROCESSING, S.ERROR),
        (S.ERROR, S.PROCESSING),
        (S.PROCESSING, S.PROCESSED),
        (S.PROCESSED, S.PUBLISHED),
        (S.PUBLISHED, S.PROCESSING),
    ]
    assert history[2].message == "bad codec" and history[2].run_id == "r1"
    assert [h.at for h in history[1:]] == [T0 + timedelta(minutes=m) for m in range(1, 7)]


def test_times_are_utc_whatever_zone_they_came_in(catalog: Catalog) -> None:
    _register(catalog)
    local = datetime(2026, 11, 2, 11, 0, tzinfo=timezone(timedelta(hours=2)))
    assert catalog.set_status("ep-show", expected=S.UPLOADED, new=S.PROCESSING, at=local)
    changed = _episode(catalog, "ep-show").status_changed_at
    assert changed == local and changed.tzinfo is UTC and changed.hour == 9
    with pytest.raises(ValueError, match="naive"):
        catalog.set_status("ep-show", expected=S.PROCESSING, new=S.ERROR, at=datetime(2026, 1, 1))


def test_compare_and_set_loses_without_writing(catalog: Catalog) -> None:
    _register(catalog)
    assert catalog.set_status("ep-show", expected=S.UPLOADED, new=S.PROCESSING, run_id="r1")
    before = _episode(catalog, "ep-show")
    assert not catalog.set_status("ep-show", expected=S.UPLOADED, new=S.PROCESSING, run_id="r2")
    # A new run takes over; the old run can no longer finish the episode.
    assert catalog.set_status("ep-show", expected=S.PROCESSING, new=S.PROCESSING, run_id="r2")
    assert not catalog.set_status(
        "ep-show", expected=S.PROCESSING, new=S.PROCESSED, only_if_run_id="r1"
    )
    assert _episode(catalog, "ep-show").processing_run_id == "r2"
    assert catalog.set_status(
        "ep-show", expected=S.PROCESSING, new=S.PROCESSED, only_if_run_id="r2"
    )
    assert _transitions(catalog, "ep-show") == [
        (None, S.UPLOADED),
        (S.UPLOADED, S.PROCESSING),
        (S.PROCESSING, S.PROCESSING),
        (S.PROCESSING, S.PROCESSED),
    ]
    assert before.processing_run_id == "r1"


@pytest.mark.parametrize(
    ("current", "expected", "new"),
    [
        (S.UPLOADED, S.UPLOADED, S.PROCESSED),
        (S.UPLOADED, S.UPLOADED, S.PUBLISHED),
        (S.UPLOADED, [S.UPLOADED, S.PROCESSED], S.PUBLISHED),
        (S.PROCESSING, S.PROCESSING, S.PUBLISHED),
        (S.PROCESSING, S.PROCESSING, S.UPLOADED),
        (S.UPLOADED, None, S.PUBLISHED),  # no expectation: checked against the stored status
        (S.UPLOADED, None, S.UPLOADED),
    ],
)
def test_invalid_transitions_raise_and_do_not_write(
    catalog: Catalog, current: EpisodeStatus, expected: Any, new: EpisodeStatus
) -> None:
    _register(catalog)
    if current is S.PROCESSING:
        assert catalog.set_status("ep-show", expected=S.UPLOADED, new=S.PROCESSING, run_id="r1")
    before = _episode(catalog, "ep-show")
    with pytest.raises(InvalidTransitionError):
        catalog.set_status("ep-show", expected=expected, new=new)
    assert _episode(catalog, "ep-show") == before


def test_set_status_without_expectation_and_on_missing_episode(catalog: Catalog) -> None:
    _register(catalog)
    assert catalog.set_status("ep-show", expected=None, new=S.ERROR, error="disk full", step="x")
    assert catalog.set_status("ep-show", expected=None, new=S.PROCESSING, run_id="r9")
    assert _episode(catalog, "ep-show").last_error is None
    with pytest.raises(EpisodeNotFoundError):
        catalog.set_status("ep-nope", expected=S.UPLOADED, new=S.PROCESSING)


def test_racing_runs_exactly_one_wins(catalog: Catalog) -> None:
    _register(catalog)

    def start(run_id: str) -> Callable[[], bool]:
        seen = _episode(catalog, "ep-show").status  # both read "uploaded" first

        def attempt() -> bool:
            return catalog.set_status("ep-show", expected=seen, new=S.PROCESSING, run_id=run_id)

        return attempt

    won = _in_threads(start("run-a"), start("run-b"))
    assert sorted(won) == [False, True]
    winner = "run-a" if won[0] else "run-b"
    assert _episode(catalog, "ep-show").processing_run_id == winner
    changes = [h for h in catalog.history("ep-show") if h.to_status is S.PROCESSING]
    assert [(h.from_status, h.run_id) for h in changes] == [(S.UPLOADED, winner)]


# -- metrics, artifacts, raw media -------------------------------------------------------


def test_metrics_and_artifacts_merge(catalog: Catalog) -> None:
    _register(catalog)
    catalog.record_metrics("ep-show", {"duration_s": 61, "lufs": -16.2})
    catalog.record_metrics("ep-show", {"lufs": -16.0, "fillers_removed": 3})
    catalog.record_artifacts("ep-show", {"raw_audio": "file:///r.wav", "transcript": "file:///t"})
    catalog.record_artifacts("ep-show", {"transcript": None, "final_episode": "gs://b/e.mp3"})
    episode = _episode(catalog, "ep-show")
    assert episode.metrics == {"duration_s": 61.0, "lufs": -16.0, "fillers_removed": 3.0}
    assert all(type(value) is float for value in episode.metrics.values())
    assert episode.artifacts == {"raw_audio": "file:///r.wav", "final_episode": "gs://b/e.mp3"}
    with pytest.raises(ValueError, match="finite"):
        catalog.record_metrics("ep-show", {"lufs": float("nan")})
    with pytest.raises(TypeError):
        catalog.record_metrics("ep-show", {"flag": True})
    with pytest.raises(EpisodeNotFoundError):
        catalog.record_artifacts("ep-nope", {"x": "y"})
    assert _episode(catalog, "ep-show").metrics == episode.metrics


def test_mark_raw_purged_is_compare_and_set(catalog: Catalog) -> None:
    _register(catalog)
    catalog.set_raw_key("ep-show", "episodes/ep-show/raw.wav")
    catalog.set_status("ep-show", expected=S.UPLOADED, new=S.PROCESSING, run_id="r1", at=T0)
    finished = T0 + timedelta(minutes=5)
    catalog.set_status("ep-show", expected=S.PROCESSING, new=S.PROCESSED, at=finished)
    done = [S.PROCESSED, S.PUBLISHED]
    purge_at = T0 + timedelta(days=31)

    assert not catalog.mark_raw_purged(
        "ep-show", expected_statuses=done, at=purge_at, only_if_status_changed_at=T0
    )
    assert not catalog.mark_raw_purged(
        "ep-show", expected_statuses=[S.ERROR], at=purge_at, only_if_status_changed_at=finished
    )
    assert catalog.mark_raw_purged(
        "ep-show", expected_statuses=done, at=purge_at, only_if_status_changed_at=finished
    )
    assert not catalog.mark_raw_purged(
        "ep-show", expected_statuses=done, at=purge_at, only_if_status_changed_at=finished
    )
    episode = _episode(catalog, "ep-show")
    assert (episode.raw_key, episode.raw_purged_at) == ("episodes/ep-show/raw.wav", purge_at)
    catalog.set_raw_key("ep-show", "episodes/ep-show/raw.flac")
    assert _episode(catalog, "ep-show").raw_purged_at is None


def test_same_bytes_reuploaded_after_purge_restore_the_episode(catalog: Catalog) -> None:
    _register(catalog)
    catalog.set_status("ep-show", expected=S.UPLOADED, new=S.PROCESSING, run_id="r1", at=T0)
    catalog.set_status("ep-show", expected=S.PROCESSING, new=S.PROCESSED, at=T0)
    assert catalog.mark_raw_purged(
        "ep-show", expected_statuses=[S.PROCESSED], at=T0 + timedelta(days=2),
        only_if_status_changed_at=T0,
    )
    again = _register(catalog, generation=2)  # same name, same bytes
    assert again.kind == RegistrationKind.RESTORED
    assert again.episode.raw_purged_at is None
    assert again.episode.source_generation == 2
    # Without a purge, the same bytes again stay a duplicate.
    assert _register(catalog, generation=3).kind == RegistrationKind.DUPLICATE


def test_list_episodes_by_status(catalog: Catalog) -> None:
    for name in ("a.wav", "b.wav", "c.wav"):
        _register(catalog, name, content=name)
    catalog.set_status("ep-b", expected=S.UPLOADED, new=S.PROCESSING, run_id="r")
    assert [e.episode_id for e in catalog.list_episodes()] == ["ep-a", "ep-b", "ep-c"]
    assert [e.episode_id for e in catalog.list_episodes(statuses=[S.UPLOADED])] == ["ep-a", "ep-c"]
    assert catalog.list_episodes(statuses=[S.PUBLISHED, S.ERROR]) == []


# -- processes and resources -------------------------------------------------------------


def _child_takes_over(url: str, application_name: str) -> None:
    catalog = Catalog(url, application_name=application_name)
    if not catalog.set_status("ep-show", expected=S.PROCESSING, new=S.PROCESSING, run_id="child"):
        raise SystemExit(3)


def test_forked_process_gets_its_own_engine(catalog: Catalog, catalog_url: str) -> None:
    _register(catalog)
    assert catalog.set_status("ep-show", expected=S.UPLOADED, new=S.PROCESSING, run_id="parent")
    child = multiprocessing.get_context("fork").Process(
        target=_child_takes_over, args=(catalog_url, catalog.application_name)
    )
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    # The parent's pooled connection was not touched by the child.
    assert _episode(catalog, "ep-show").processing_run_id == "child"
    assert catalog.set_status("ep-show", expected=S.PROCESSING, new=S.PROCESSED)


def test_resource_hands_out_one_catalog_per_process(catalog_url: str) -> None:
    first = CatalogResource(database_url=catalog_url).get_catalog()
    second = CatalogResource(database_url=catalog_url).get_catalog()
    other_name = CatalogResource(database_url=catalog_url, application_name="x").get_catalog()
    assert first is second and other_name is not first
    assert first.list_episodes() == []


# -- dropped connections (Postgres) --------------------------------------------------------


def _show_on_postgres(url: str, *, application_name: str) -> Catalog:
    """A catalog on ``url`` holding the uploaded ``ep-show``, its connections named
    ``application_name`` (so that a test can find and kill them)."""
    catalog = Catalog(url, application_name=application_name)
    _register(catalog)
    return catalog


@pytest.mark.postgres
def test_connections_killed_between_writes_are_replaced_by_pre_ping(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    catalog = _show_on_postgres(postgres_url, application_name="pod-kill-idle")
    assert terminate_backends(application_name="pod-kill-idle") >= 1
    with caplog.at_level(logging.WARNING, logger=RETRY_LOGGER):
        assert catalog.set_status("ep-show", expected=S.UPLOADED, new=S.PROCESSING, run_id="r1")
    assert not caplog.records  # pre-ping replaced the dead connection; nothing was retried
    assert _transitions(catalog, "ep-show")[-1] == (S.UPLOADED, S.PROCESSING)


@pytest.mark.postgres
def test_backend_killed_mid_transaction_retries_the_whole_unit(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    catalog = _show_on_postgres(postgres_url, application_name="pod-kill-mid")
    killed: list[int] = []

    def kill_before_history_insert(conn, _cursor, statement, *_args) -> None:
        if statement.startswith("INSERT INTO episode_status_history") and not killed:
            pid = conn.connection.dbapi_connection.info.backend_pid
            assert terminate_backend(pid)
            killed.append(pid)

    event.listen(catalog.engine, "before_cursor_execute", kill_before_history_insert)
    try:
        with caplog.at_level(logging.WARNING, logger=RETRY_LOGGER):
            assert catalog.set_status(
                "ep-show", expected=S.UPLOADED, new=S.PROCESSING, run_id="r1"
            )
    finally:
        event.remove(catalog.engine, "before_cursor_execute", kill_before_history_insert)
    assert killed and "retrying" in caplog.text
    assert _transitions(catalog, "ep-show") == [(None, S.UPLOADED), (S.UPLOADED, S.PROCESSING)]
    assert _episode(catalog, "ep-show").processing_run_id == "r1"


@pytest.mark.postgres
def test_commit_whose_acknowledgement_is_lost_is_not_written_twice(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = Catalog(postgres_url, application_name="pod-lost-ack")
    dialect = catalog.engine.dialect
    real_commit = dialect.do_commit
    armed: list[bool] = []

    def commit_then_lose_connection(dbapi_conn) -> None:
        real_commit(dbapi_conn)
        if armed:
            armed.clear()
            terminate_backend(dbapi_conn.dbapi_connection.info.backend_pid)
            raise psycopg.OperationalError(
                "consuming input failed: server closed the connection unexpectedly"
            )

    monkeypatch.setattr(dialect, "do_commit", commit_then_lose_connection)
    armed.append(True)
    assert _register(catalog).kind is RegistrationKind.NEW
    armed.append(True)
    assert catalog.set_status("ep-show", expected=S.UPLOADED, new=S.PROCESSING, run_id="r1")
    assert not armed
    assert _transitions(catalog, "ep-show") == [(None, S.UPLOADED), (S.UPLOADED, S.PROCESSING)]
    assert len(catalog.uploads()) == 1


@pytest.mark.postgres
def test_idle_checkout_guard_fails_a_leaked_transaction_loudly(postgres_url: str) -> None:
    catalog = Catalog(postgres_url, application_name="pod-leak")
    engine = catalog.engine
    install_idle_checkout_guard(engine)
    engine.dispose()  # start from an empty pool: the next connection is the leaked one

    def leak_transaction(dbapi_conn, _record) -> None:
        dbapi_conn.execute("SELECT 1")  # after the pool's reset: back in the pool INTRANS

    event.listen(engine, "checkin", leak_transaction)
    try:
        catalog.list_episodes()
    finally:
        event.remove(engine, "checkin", leak_transaction)
    with pytest.raises(LeakedTransactionError, match="INTRANS"):
        catalog.list_episodes()
    assert catalog.list_episodes() == []  # the pool dropped the leaked connection


@pytest.mark.postgres
def test_idle_checkout_guard_also_covers_fresh_connections(postgres_url: str) -> None:
    catalog = Catalog(postgres_url, application_name="pod-leak-fresh")
    engine = catalog.engine
    install_idle_checkout_guard(engine)
    install_idle_checkout_guard(engine)  # idempotent
    engine.dispose()

    def leak_on_connect(dbapi_conn, _record) -> None:
        dbapi_conn.execute("SET search_path TO public")  # opens a transaction, never ends it

    event.listen(engine, "connect", leak_on_connect)
    try:
        with pytest.raises(LeakedTransactionError, match="INTRANS"):
            catalog.list_episodes()
    finally:
        event.remove(engine, "connect", leak_on_connect)
    assert catalog.list_episodes() == []


# -- secrets -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        (
            "postgresql+psycopg://pod:s3cr3t@db.internal:5432/catalog",
            "postgresql+psycopg://pod:***@db.internal:5432/catalog",
        ),
        (
            "postgresql+psycopg://pod@db/catalog?password=s3cr3t&sslmode=require",
            "postgresql+psycopg://pod@db/catalog?password=***&sslmode=require",
        ),
        (
            "postgresql+psycopg://pod:p%40ss%2Fw0rd@db/catalog",
            "postgresql+psycopg://pod:***@db/catalog",
        ),
        ("sqlite:////var/pod/catalog.db", "sqlite:////var/pod/catalog.db"),
        ("not a url://user:s3cr3t@host/x", "not a url://user:***@host/x"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_errors_and_reprs_never_show_the_password() -> None:
    url = "postgresql+psycopg://pod:s3cr3t-pw@127.0.0.1:1/catalog"  # nothing listens on port 1
    catalog = Catalog(url)
    assert "s3cr3t-pw" not in repr(catalog) and "***" in repr(catalog)
    with pytest.raises(CatalogConnectionError) as raised:
        catalog.get_episode("x")
    assert "pod:***@127.0.0.1:1/catalog" in str(raised.value)
    chain: BaseException | None = raised.value
    while chain is not None:
        assert "s3cr3t-pw" not in str(chain)
        chain = chain.__cause__ or chain.__context__
    with pytest.raises(CatalogError) as wrong_scheme:
        Catalog("postgresql://pod:s3cr3t-pw@db/catalog").get_episode("x")
    assert "s3cr3t-pw" not in str(wrong_scheme.value)


@pytest.mark.postgres
def test_error_from_a_real_server_never_shows_the_password(postgres_server_url: str) -> None:
    url = postgres_server_url.replace("postgres@", "postgres:s3cr3t-pw@") + "/pod_no_such_db"
    with pytest.raises(CatalogConnectionError, match="does not exist") as raised:
        Catalog(url).list_episodes()
    assert "s3cr3t-pw" not in str(raised.value) and "postgres:***@" in str(raised.value)

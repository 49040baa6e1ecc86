"""Engines for the catalog database: one per URL per process, migrated on first use.

Postgres (``postgresql+psycopg://``) gets ``pool_pre_ping`` (a connection killed while idle in
the pool is replaced before use), ``pool_recycle``, TCP keepalives and an ``application_name``
so its backends can be found in ``pg_stat_activity``. SQLite gets WAL, a 30 s busy timeout and
foreign keys, and write transactions that take the write lock up front (``BEGIN IMMEDIATE``).
Both get the idle-checkout guard: a connection that comes out of the pool inside a
transaction fails loudly (:func:`install_idle_checkout_guard`). :func:`is_transient` says
which driver errors a unit of work may be run again after.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    OperationalError,
    PendingRollbackError,
)
from sqlalchemy.pool import Pool, StaticPool

DEFAULT_APPLICATION_NAME = "pod-pipeline"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "pod_catalog_alembic_version"
"""Own Alembic version table, so the catalog can share a database with Dagster's storage."""

POOL_RECYCLE_S = 300
SQLITE_BUSY_TIMEOUT_MS = 30_000
_PG_CONNECT_ARGS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "connect_timeout": 10,
}
_SQLITE_PRAGMAS = (
    "PRAGMA busy_timeout = 30000",
    "PRAGMA foreign_keys = ON",
)
_SQLITE_FILE_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
)
def _execute_pragma(cursor: Any, pragma: str) -> None:
    """Run a connection pragma, waiting out a writer that holds the file.

    Switching the journal mode needs the database to itself, and SQLite answers "database
    is locked" at once instead of calling the busy handler; so wait here, within the busy
    timeout.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute(pragma)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


_MIGRATION_LOCK_KEY = 0x706F645F636174  # "pod_cat": one advisory lock id for the catalog schema
_BEGIN_OPTION = "pod_sqlite_begin"
"""Execution option read by the SQLite ``begin`` hook: ``"IMMEDIATE"`` for write units."""


class CatalogError(Exception):
    """Base class of the catalog's own errors. Messages never contain a password."""


class CatalogConnectionError(CatalogError):
    """The catalog database cannot be reached or migrated."""


_SECRET_IN_NETLOC = re.compile(r"(?P<head>://[^/@:]*:)[^/@]*@")
_SECRET_IN_QUERY = re.compile(r"(?P<head>[?&;](?:password|passwd|pwd)=)[^&;]*", re.IGNORECASE)


def redact_url(url: str | URL) -> str:
    """``url`` with any password replaced by ``***``: safe for logs and error messages."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        text = _SECRET_IN_NETLOC.sub(r"\g<head>***@", str(url))
        return _SECRET_IN_QUERY.sub(r"\g<head>***", text)
    placeholder = "POD0REDACTED0"  # survives URL quoting unchanged, unlike "***"
    query = {
        key: (placeholder if key.lower() in {"password", "passwd", "pwd"} else value)
        for key, value in parsed.query.items()
    }
    rendered = parsed.update_query_dict(query).render_as_string(hide_password=True)
    return rendered.replace(placeholder, "***")


def _scrub(text: str, url: str | URL) -> str:
    """``text`` with the password of ``url`` (if any) replaced by ``***``."""
    try:
        password = make_url(url).password
    except (ArgumentError, ValueError):
        return text
    if password:
        text = text.replace(str(password), "***")
    return text


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def create_catalog_engine(
    url: str | URL, *, application_name: str = DEFAULT_APPLICATION_NAME
) -> Engine:
    """A new engine for ``url``, configured as described in the module docstring.

    Most code wants :func:`get_engine`, which caches and migrates.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername != "postgresql+psycopg":
            raise CatalogError(
                f"catalog URL {redact_url(parsed)} must use the postgresql+psycopg:// scheme"
            )
        engine = sa.create_engine(
            parsed,
            pool_pre_ping=True,
            pool_recycle=POOL_RECYCLE_S,
            connect_args={**_PG_CONNECT_ARGS, "application_name": application_name},
        )
    elif backend == "sqlite":
        engine = _create_sqlite_engine(parsed)
    else:
        raise CatalogError(
            f"unsupported catalog database {redact_url(parsed)}: use SQLite or Postgres"
        )
    install_idle_checkout_guard(engine)
    return engine


def _create_sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    in_memory = database in {"", ":memory:"} or database.startswith("file::memory:")
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if in_memory:
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs.update(
            pool_recycle=POOL_RECYCLE_S,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )
    engine = sa.create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            for pragma in _SQLITE_PRAGMAS if in_memory else _SQLITE_PRAGMAS + _SQLITE_FILE_PRAGMAS:
                _execute_pragma(cursor, pragma)
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN")

    return engine


def is_transient(exc: BaseException) -> bool:
    """True for errors after which running the whole unit again can succeed."""
    if isinstance(exc, PendingRollbackError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError):
        return False
    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError):
        message = str(orig).lower()
        return "locked" in message or "busy" in message
    # psycopg: connection failures, serialization failures, deadlocks, admin shutdown.
    return type(orig).__module__.startswith("psycopg")


def write_engine(engine: Engine) -> Engine:
    """``engine`` for units of work that write: on SQLite they take the write lock at BEGIN,
    so two writers never both read, then collide on the upgrade to a write lock."""
    return engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})


class LeakedTransactionError(CatalogError):
    """A pooled connection was found inside a transaction: some code returned it to the pool
    without commit or rollback (seed bug 5). Fix that code; do not turn pre-ping off."""


def install_idle_checkout_guard(engine: Engine) -> None:
    """Fail any checkout of a connection that is not idle (seed bug 5).

    A connection that went back to the pool inside a transaction (raw DBAPI use, SQL run in a
    pool event) is a leak. With psycopg 3 it used to surface as ``can't change 'autocommit'
    now: connection in transaction status INTRANS`` from the pre-ping, in whatever code
    checked the connection out next, and "fixing" that by disabling pre-ping only hides it;
    on SQLite a leaked write transaction holds the database lock until every other writer
    times out. The guard turns it into a :class:`LeakedTransactionError` at checkout, for
    fresh connections (a ``checkout`` listener) and pinged ones (a ``handle_error`` listener
    on the pre-ping). The pool discards the failed connection, so only that checkout fails.

    Every catalog engine has it (:func:`create_catalog_engine`); installing it twice is
    harmless. :func:`install_global_idle_checkout_guard` puts it on every pool of the process.
    """
    if not event.contains(engine, "checkout", _assert_idle_on_checkout):
        event.listen(engine, "checkout", _assert_idle_on_checkout)
    if not event.contains(engine, "handle_error", _explain_intrans_pre_ping):
        event.listen(engine, "handle_error", _explain_intrans_pre_ping)


def _leak_error(status_name: str) -> LeakedTransactionError:
    return LeakedTransactionError(
        f"pooled connection checked out in transaction state {status_name}: some code "
        "returned it to the pool without commit or rollback"
    )


def open_transaction_state(dbapi_conn: Any) -> str | None:
    """The state of the transaction ``dbapi_conn`` is in, ``None`` when it is idle.

    Known for psycopg 3 (``INTRANS``, ``INERROR``, ``ACTIVE``, ``UNKNOWN``) and sqlite3
    (``INTRANS``); ``None`` for drivers that cannot tell.
    """
    if isinstance(dbapi_conn, sqlite3.Connection):
        return "INTRANS" if dbapi_conn.in_transaction else None
    status = getattr(getattr(dbapi_conn, "info", None), "transaction_status", None)
    if status is None or type(dbapi_conn).__module__.split(".")[0] != "psycopg":
        return None
    import psycopg

    status = psycopg.pq.TransactionStatus(status)
    return None if status == psycopg.pq.TransactionStatus.IDLE else status.name


def _assert_idle_on_checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    state = open_transaction_state(dbapi_conn)
    if state is not None:
        raise _leak_error(state)


def _explain_intrans_pre_ping(context: sa.engine.ExceptionContext) -> None:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return

    original = context.original_exception
    if (
        context.is_pre_ping
        and isinstance(original, psycopg.ProgrammingError)
        and "connection in transaction status" in str(original)
    ):
        status = str(original).rsplit(" ", 1)[-1]
        raise _leak_error(status)


def install_global_idle_checkout_guard() -> None:
    """The idle-checkout guard on every pool and engine of this process, present and future
    (not only the catalog's): the test suite runs with it, so a leak anywhere fails loudly."""
    for target, identifier, listener in _global_guard():
        if not event.contains(target, identifier, listener):
            event.listen(target, identifier, listener)


def remove_global_idle_checkout_guard() -> None:
    """Undo :func:`install_global_idle_checkout_guard` (the per-engine guards stay)."""
    for target, identifier, listener in _global_guard():
        if event.contains(target, identifier, listener):
            event.remove(target, identifier, listener)


def global_idle_checkout_guard_installed() -> bool:
    return all(event.contains(*entry) for entry in _global_guard())


def _global_guard() -> tuple[tuple[Any, str, Any], ...]:
    return (
        (Pool, "checkout", _assert_idle_on_checkout),
        (Engine, "handle_error", _explain_intrans_pre_ping),
    )


def migrate(engine: Engine) -> None:
    """Bring the catalog schema to the newest Alembic revision (``upgrade head``).

    Safe to call from several processes at once: on Postgres the upgrade runs under a
    transaction-scoped advisory lock, on SQLite under the database write lock
    (``BEGIN IMMEDIATE``), so the second process waits, then finds the schema current.

    On SQLite, foreign keys are off on the migrating connection: a revision that rebuilds a
    table (batch mode) drops the old one, and with foreign keys on that drop would cascade
    into every row pointing at it. They are checked before the commit and back on after.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("version_table", VERSION_TABLE)
    with write_engine(engine).connect() as conn:
        sqlite = engine.dialect.name == "sqlite"
        if sqlite:
            _set_sqlite_foreign_keys(conn, on=False)
        try:
            with conn.begin():
                if is_postgres(engine):
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise CatalogError(f"catalog migration broke foreign keys: {broken[:5]}")
        finally:
            if sqlite:
                _set_sqlite_foreign_keys(conn, on=True)


def _set_sqlite_foreign_keys(conn: sa.Connection, *, on: bool) -> None:
    """Outside any transaction (SQLite ignores the pragma inside one): on the raw connection,
    whose ``isolation_level`` is ``None``, so nothing begins implicitly."""
    dbapi_conn = conn.connection.dbapi_connection
    assert dbapi_conn is not None
    dbapi_conn.execute(f"PRAGMA foreign_keys = {'ON' if on else 'OFF'}")


_engines: dict[tuple[str, str], Engine] = {}
_engines_pid = os.getpid()
_engines_lock = threading.Lock()


def get_engine(url: str | URL, *, application_name: str = DEFAULT_APPLICATION_NAME) -> Engine:
    """The process's engine for ``url``, created and migrated on first use.

    Cached per process: a forked child never reuses its parent's pooled connections (the
    inherited engines are dropped without closing the parent's sockets).
    """
    global _engines_pid
    key = (make_url(url).render_as_string(hide_password=False), application_name)
    with _engines_lock:
        if _engines_pid != os.getpid():
            for inherited in _engines.values():
                inherited.dispose(close=False)
            _engines.clear()
            _engines_pid = os.getpid()
        engine = _engines.get(key)
        if engine is None:
            engine = create_catalog_engine(url, application_name=application_name)
            try:
                migrate(engine)
            except sa.exc.DBAPIError as exc:
                engine.dispose()
                detail = str(exc.orig or exc).strip()
                message = _scrub(detail, url)
                error = CatalogConnectionError(
                    f"cannot open catalog database {redact_url(url)}: {message}"
                )
                # Chain the driver's error only when it holds no secret.
                raise error from (exc if message == detail else None)
            except BaseException:
                engine.dispose()
                raise
            _engines[key] = engine
        return engine


def dispose_engines(url: str | URL | None = None) -> None:
    """Close and forget the cached engines for ``url`` (all of them when ``None``)."""
    wanted = None if url is None else make_url(url).render_as_string(hide_password=False)
    with _engines_lock:
        for key in [key for key in _engines if wanted is None or key[0] == wanted]:
            _engines.pop(key).dispose()

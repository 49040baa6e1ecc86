"""Fixtures for tests against the catalog database: a throwaway Postgres database per test,
and a ``catalog`` fixture that runs each test on SQLite and on Postgres.

Postgres is expected on 127.0.0.1:5432 (user ``postgres``, trust auth). When it is not
reachable, its tests are skipped, or fail when ``POD_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pod_resources.catalog import Catalog, dispose_engines, install_idle_checkout_guard

POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432
POSTGRES_USER = "postgres"
TEST_DATABASE_PREFIX = "pod_test_"
TEST_ROLE_PREFIX = "pod_app_"


def _admin_conninfo() -> str:
    return f"host={POSTGRES_HOST} port={POSTGRES_PORT} user={POSTGRES_USER} dbname=postgres"


def _admin_connection() -> psycopg.Connection:
    return psycopg.connect(_admin_conninfo(), autocommit=True, connect_timeout=5)


def terminate_backends(*, database: str | None = None, application_name: str | None = None) -> int:
    """Kill the Postgres backends of ``database`` and/or ``application_name``; how many."""
    conditions = [sql.SQL("pid <> pg_backend_pid()")]
    params: list[str] = []
    if database is not None:
        conditions.append(sql.SQL("datname = %s"))
        params.append(database)
    if application_name is not None:
        conditions.append(sql.SQL("application_name = %s"))
        params.append(application_name)
    query = sql.SQL(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))"
        " FROM pg_stat_activity WHERE {}"
    ).format(sql.SQL(" AND ").join(conditions))
    with _admin_connection() as conn:
        row = conn.execute(query, params).fetchone()
    return int(row[0]) if row else 0


def terminate_backend(pid: int) -> bool:
    """Kill one Postgres backend and wait (up to 5 s) until it is gone."""
    with _admin_connection() as conn:
        row = conn.execute("SELECT pg_terminate_backend(%s, 5000)", [pid]).fetchone()
    return bool(row and row[0])


def _drop_database(url: str, name: str) -> None:
    """Let go of ``url``'s pooled connections, end every session on ``name`` and drop it."""
    dispose_engines(url)
    terminate_backends(database=name)
    with _admin_connection() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """SQLAlchemy URL of the local Postgres server (no database part)."""
    try:
        with socket.create_connection((POSTGRES_HOST, POSTGRES_PORT), timeout=2):
            pass
    except OSError as exc:
        message = f"PostgreSQL not reachable on {POSTGRES_HOST}:{POSTGRES_PORT}: {exc}"
        if os.environ.get("POD_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return f"postgresql+psycopg://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}"


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty database for this test, dropped afterwards."""
    name = f"{TEST_DATABASE_PREFIX}{uuid.uuid4().hex[:8]}"
    with _admin_connection() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = f"{postgres_server_url}/{name}"
    try:
        yield url
    finally:
        _drop_database(url, name)


@dataclass(frozen=True)
class AppDatabase:
    """A database owned by its own LOGIN role, which the app connects as (no superuser)."""

    url: str
    """SQLAlchemy URL connecting as ``role``."""
    database: str
    role: str

    def conninfo(self, *, as_owner: bool = True) -> str:
        """libpq conninfo for this database, as ``role`` or as the superuser."""
        user = self.role if as_owner else POSTGRES_USER
        return f"host={POSTGRES_HOST} port={POSTGRES_PORT} user={user} dbname={self.database}"

    def url_with_password(self, password: str) -> str:
        """``url`` carrying ``password`` (trust auth accepts any)."""
        return self.url.replace(f"//{self.role}@", f"//{self.role}:{password}@", 1)


@pytest.fixture
def app_database(postgres_server_url: str) -> Iterator[AppDatabase]:
    """A fresh database and a fresh role that owns it, both dropped afterwards.

    As in production, the catalog connects as an ordinary role, so per-role settings
    (``ALTER ROLE … SET``) apply to its sessions only.
    """
    suffix = uuid.uuid4().hex[:8]
    role, name = f"{TEST_ROLE_PREFIX}{suffix}", f"{TEST_DATABASE_PREFIX}{suffix}"
    with _admin_connection() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(role)
            )
        )
    url = f"postgresql+psycopg://{role}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
    try:
        yield AppDatabase(url=url, database=name, role=role)
    finally:
        _drop_database(url, name)
        with _admin_connection() as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh catalog database URL: SQLite file, then real Postgres."""
    if request.param == "postgres":
        yield request.getfixturevalue("postgres_url")
        return
    url = f"sqlite:///{tmp_path / 'catalog' / 'catalog.db'}"
    yield url
    dispose_engines(url)


@pytest.fixture
def catalog_application_name() -> str:
    """A per-test application_name, so a test can find (and kill) its own backends."""
    return f"pod-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def catalog(catalog_url: str, catalog_application_name: str) -> Catalog:
    """A migrated catalog on ``catalog_url``, its pool guarded against leaked transactions."""
    catalog = Catalog(catalog_url, application_name=catalog_application_name)
    install_idle_checkout_guard(catalog.engine)
    return catalog

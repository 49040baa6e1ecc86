"""The production setup, running: ``deploy/serve.py`` (webserver + daemon) on Postgres storage,
with the episodes in the GCS emulator.

``dagster_services`` starts it once per session, the way ``make serve`` does, on a free port
with a fresh ``DAGSTER_HOME``, two fresh Postgres databases (Dagster storage, catalog) and a
fresh emulator bucket. The instance config is ``deploy/dagster.yaml`` itself with only its
limits made smaller (:data:`TEST_LIMITS`), so a handful of short uploads already compete
for run slots and pool slots on a small machine.

Teardown sends SIGTERM to the launcher (as Ctrl-C would), then kills whatever is left of
every process that carries this session's ``DAGSTER_HOME`` (webserver, daemon, code
servers, run and step workers) and fails the session if anything had to be killed that
way. A service that does not come up fails the test with the webserver and daemon logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import dagster as dg
import psycopg
import pytest
import yaml
from psycopg import sql
from sqlalchemy.engine import make_url

from pod_pipeline.worker import processes_with_env
from pod_resources.storage import GCSObjectStore
from tests.plugins.gcs import GCSEmulator, make_gcs_store
from tests.plugins.postgres import terminate_backends

REPO = Path(__file__).resolve().parents[2]
SERVE = REPO / "deploy" / "serve.py"
INSTANCE_CONFIG = REPO / "deploy" / "dagster.yaml"

TEST_LIMITS = {"max_concurrent_runs": 2, "backfill_runs": 2, "default_pool_limit": 1}
"""Run and pool limits of the test instance (production: deploy/dagster.yaml)."""
TEST_POOLS = {"asr": 1, "cpu": 1, "io": 2}
"""Per-pool limits of the test instance (production: deploy/pools.yaml)."""
REQUIRED_DAEMONS = {"SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR", "BACKFILL", "MONITORING"}

_START_TIMEOUT_S = 240.0
_STOP_TIMEOUT_S = 60.0
_LOG_TAIL_CHARS = 6000
T = TypeVar("T")


PUBLIC_GCS_HOST = "storage.googleapis.com"
"""The emulator answers path-style public URLs addressed to this host."""


def public_gcs_url(bucket: str) -> str:
    """The public URL of ``bucket``'s root, as GCS spells it (``http``: the emulator's)."""
    return f"http://{PUBLIC_GCS_HOST}/{bucket}/"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def instance_config_for_tests() -> dict[str, Any]:
    """``deploy/dagster.yaml`` with the test's smaller limits and shorter intervals."""
    config = yaml.safe_load(INSTANCE_CONFIG.read_text())
    runs = config["concurrency"]["runs"]
    runs["max_concurrent_runs"] = TEST_LIMITS["max_concurrent_runs"]
    for limit in runs["tag_concurrency_limits"]:
        if limit["key"] == "dagster/backfill":
            limit["limit"] = TEST_LIMITS["backfill_runs"]
    config["concurrency"]["pools"]["default_limit"] = TEST_LIMITS["default_pool_limit"]
    config["run_coordinator"]["config"]["dequeue_interval_seconds"] = 1
    config["run_monitoring"]["poll_interval_seconds"] = 5
    return config


def _create_database(admin_conninfo: str, name: str) -> None:
    with psycopg.connect(admin_conninfo, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _drop_database(admin_conninfo: str, name: str) -> None:
    terminate_backends(database=name)
    with psycopg.connect(admin_conninfo, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@dataclass
class DagsterServices:
    """A running webserver + daemon and what they work on."""

    url: str
    """``http://127.0.0.1:PORT`` of the webserver."""
    dagster_home: Path
    log_dir: Path
    env: dict[str, str]
    """The environment the services run with (Postgres settings, storage URL, emulator)."""
    store: GCSObjectStore
    """The episodes' object store (the emulator bucket behind ``POD_STORAGE_URL``)."""
    catalog_url: str
    location_name: str = "pod_pipeline"
    process: subprocess.Popen | None = field(default=None, repr=False)

    # ---------------------------------------------------------------- diagnostics
    def logs(self) -> str:
        """The last lines of the launcher, webserver and daemon logs."""
        parts = []
        for name in ("serve", "webserver", "daemon"):
            path = self.log_dir / f"{name}.log"
            text = path.read_text(errors="replace") if path.exists() else "(no log)"
            parts.append(f"----- {name}.log (last {_LOG_TAIL_CHARS} chars) -----\n{text[-_LOG_TAIL_CHARS:]}")
        return "\n".join(parts)

    def fail(self, message: str) -> NoReturn:
        pytest.fail(f"{message}\n{self.logs()}", pytrace=False)

    def wait_until(
        self, what: str, probe: Callable[[], T | None], *, timeout_s: float, interval_s: float = 1.0
    ) -> T:
        """Call ``probe`` until it returns something truthy; fail with the logs on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process is not None and self.process.poll() is not None:
                self.fail(f"the services exited ({self.process.returncode}) while waiting for {what}")
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                self.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
            time.sleep(interval_s)

    # ---------------------------------------------------------------- APIs
    def graphql(self, query: str, variables: dict[str, Any] | None = None, *, timeout_s: float = 60) -> dict:
        """POST to the webserver's GraphQL API; the ``data`` of the answer."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                answer = json.loads(response.read())
        except (urllib.error.URLError, OSError) as exc:
            self.fail(f"GraphQL request to {self.url} failed: {exc}")
        if answer.get("errors"):
            self.fail(f"GraphQL errors: {answer['errors']}")
        return answer["data"]

    @contextlib.contextmanager
    def instance(self) -> Iterator[dg.DagsterInstance]:
        """The services' Dagster instance (same Postgres storage), opened in this process."""
        with pytest.MonkeyPatch.context() as mp:
            for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB",
                         "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD"):
                mp.setenv(name, self.env[name])
            instance = dg.DagsterInstance.from_config(str(self.dagster_home))
            try:
                yield instance
            finally:
                instance.dispose()

    def daemon_health(self) -> dict[str, bool]:
        data = self.graphql(
            "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"
        )
        return {
            s["daemonType"]: bool(s["healthy"])
            for s in data["instance"]["daemonHealth"]["allDaemonStatuses"]
            if s["required"]
        }

    def location_loaded(self) -> bool:
        data = self.graphql(
            "{ workspaceOrError { __typename ... on Workspace { locationEntries {"
            " name loadStatus locationOrLoadError { __typename } } } } }"
        )
        entries = data["workspaceOrError"].get("locationEntries") or []
        for entry in entries:
            if entry["name"] == self.location_name and entry["loadStatus"] == "LOADED":
                if entry["locationOrLoadError"]["__typename"] != "RepositoryLocation":
                    self.fail(f"code location failed to load: {entry}")
                return True
        return False


def http_ok(url: str) -> bool:
    """Whether GET ``url`` answers 200 within 3 s."""
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen, dagster_home: str) -> list[int]:
    """Stop the launcher as Ctrl-C would; kill leftovers. Returns the pids killed by force."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    leftovers = processes_with_env("DAGSTER_HOME", dagster_home)
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while processes_with_env("DAGSTER_HOME", dagster_home) and time.monotonic() < deadline:
        time.sleep(0.2)
    return leftovers


@pytest.fixture(scope="session")
def dagster_services(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server_url: str,
    gcs_emulator: GCSEmulator,
) -> Iterator[DagsterServices]:
    """Webserver + daemon from ``deploy/serve.py`` on Postgres and the GCS emulator."""
    root = tmp_path_factory.mktemp("dagster-services")
    dagster_home = root / "dagster-home"
    log_dir = root / "logs"
    log_dir.mkdir()
    config_path = root / "dagster.yaml"
    config_path.write_text(yaml.safe_dump(instance_config_for_tests(), sort_keys=False))
    pools_path = root / "pools.yaml"
    pools_path.write_text(yaml.safe_dump(TEST_POOLS))

    server = make_url(postgres_server_url)
    admin = f"host={server.host} port={server.port} user={server.username} dbname=postgres"
    suffix = uuid.uuid4().hex[:8]
    dagster_db, catalog_db = f"pod_test_{suffix}_dagster", f"pod_test_{suffix}_catalog"
    bucket = f"serve-{suffix}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)
        store = make_gcs_store(gcs_emulator, bucket=bucket, prefix="prod")

    catalog_url = server.set(database=catalog_db).render_as_string(hide_password=False)
    # Links go to the bucket's public URL, as on GCS; a browser maps that host to the emulator.
    show_file = root / "show.toml"
    show_file.write_text(f'title = "Browser Check"\npublic_base_url = "{public_gcs_url(bucket)}prod/"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POD_", "DAGSTER_"))}
    env.update(
        {
            "POD_HOME": str(root / "pod-home"),
            "POD_STORAGE_URL": f"gs://{bucket}/prod",
            "POD_DATABASE_URL": catalog_url,
            "POD_GCP_PROJECT": "test",
            "POD_SHOW_FILE": str(show_file),
            "POD_SENSOR_INTERVAL_S": "1",
            "POD_WHISPER_THREADS": "1",
            "STORAGE_EMULATOR_HOST": gcs_emulator.endpoint,
            "DAGSTER_PG_HOST": str(server.host),
            "DAGSTER_PG_PORT": str(server.port or 5432),
            "DAGSTER_PG_USERNAME": str(server.username),
            "DAGSTER_PG_PASSWORD": server.password or "",
            "DAGSTER_PG_DB": dagster_db,
            "PYTHONUNBUFFERED": "1",
        }
    )
    port = _free_port()
    services = DagsterServices(
        url=f"http://127.0.0.1:{port}",
        dagster_home=dagster_home,
        log_dir=log_dir,
        env=env,
        store=store,
        catalog_url=catalog_url,
    )
    _create_database(admin, dagster_db)
    _create_database(admin, catalog_db)
    killed: list[int] = []
    try:
        with open(log_dir / "serve.log", "wb") as serve_log:
            services.process = subprocess.Popen(
                [
                    sys.executable, str(SERVE),
                    "--port", str(port),
                    "--dagster-home", str(dagster_home),
                    "--instance-config", str(config_path),
                    "--pools", str(pools_path),
                    "--log-dir", str(log_dir),
                    "--stop-timeout", "30",
                ],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=serve_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            services.wait_until(
                "the webserver", lambda: http_ok(f"{services.url}/server_info"), timeout_s=_START_TIMEOUT_S
            )
            services.wait_until("the code location", services.location_loaded, timeout_s=_START_TIMEOUT_S)
            services.wait_until(
                f"healthy daemons {sorted(REQUIRED_DAEMONS)}",
                lambda: REQUIRED_DAEMONS <= {k for k, ok in services.daemon_health().items() if ok},
                timeout_s=_START_TIMEOUT_S,
            )
            yield services
        finally:
            killed = _stop(services.process, str(dagster_home))
    finally:
        with contextlib.suppress(Exception):
            _drop_database(admin, dagster_db)
        with contextlib.suppress(Exception):
            _drop_database(admin, catalog_db)
    if services.process.returncode != 0 or killed:
        pytest.fail(
            f"the services did not stop cleanly (launcher exit {services.process.returncode}, "
            f"killed leftovers {killed})\n{services.logs()}",
            pytrace=False,
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the running services go last and together: the services start once, late,
    and stop with the session instead of idling through the rest of the suite."""
    on_services = [item for item in items if "dagster_services" in getattr(item, "fixturenames", ())]
    if on_services:
        others = [item for item in items if "dagster_services" not in getattr(item, "fixturenames", ())]
        items[:] = others + on_services

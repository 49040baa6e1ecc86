"""``make serve``: the Dagster webserver and daemon on the production instance config.

    python deploy/serve.py [--host 127.0.0.1] [--port 3000] [--dagster-home DIR]
                           [--instance-config deploy/dagster.yaml] [--pools deploy/pools.yaml]
                           [--log-dir DIR] [--stop-timeout 30] [--media-port 3001]

What it does, in order:

1. Fills in the local server for every connection setting left unset: ``DAGSTER_PG_HOST``
   (127.0.0.1), ``DAGSTER_PG_PORT`` (5432), ``DAGSTER_PG_USERNAME`` (postgres),
   ``DAGSTER_PG_PASSWORD`` (empty), ``DAGSTER_PG_DB`` (``pod_dagster``) and the catalog,
   ``POD_DATABASE_URL`` (database ``pod_catalog`` on the same server).
2. Creates those Postgres databases when they are missing.
3. Copies the instance config into ``DAGSTER_HOME`` (default ``$POD_HOME/dagster-serve``),
   creates or migrates Dagster's tables and sets the per-pool limits of ``--pools``.
4. Starts ``dagster-webserver`` and ``dagster-daemon``, each in its own process group with
   the default signal handlers restored (a process started in the background otherwise
   inherits an ignored SIGINT).
   With a local store (``POD_STORAGE_URL`` unset or ``file://``) it also starts the
   read-only media server, ``pod serve-media`` on 127.0.0.1:``--media-port`` (0: not),
   which the UI's and ``pod status``'s links point at. It is not essential: if it stops
   (its port taken), the webserver and daemon go on.
5. On Ctrl-C, SIGTERM or SIGHUP, or when either process exits, stops both: SIGTERM to each
   process group (the code servers and run workers they started are in it), then SIGKILL
   to whatever is left after ``--stop-timeout`` seconds. Runs cut short this way fail; unless
   a step itself failed, they count as crashed and are retried once the daemon runs again.

While it runs, the settings the webserver and daemon use (every ``POD_*`` and ``DAGSTER_*``
variable, and the GCS client's) are in ``$POD_HOME/serve.env``, mode 0600, removed when it
stops: a ``pod`` command run from the project folder with none of ``POD_STORAGE_URL``,
``POD_DATABASE_URL``, ``DAGSTER_HOME`` set reads it and works on the same catalog, store and
instance (see ``pod_pipeline/settings.py``). It is the only file that may hold a password
(a password in ``POD_DATABASE_URL`` or ``DAGSTER_PG_PASSWORD``), readable by this user only,
like a ``.pgpass``; nothing secret is printed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOCAL_PG_DEFAULTS = {
    "DAGSTER_PG_HOST": "127.0.0.1",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_USERNAME": "postgres",
    "DAGSTER_PG_PASSWORD": "",
    "DAGSTER_PG_DB": "pod_dagster",
}
CATALOG_DB = "pod_catalog"
SERVE_ENV_FILE = "serve.env"
SERVE_OWNER_KEY = "POD_SERVE_PROCESS"
_SHARED_PREFIXES = ("POD_", "DAGSTER_")
_SHARED_NAMES = ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT")
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _log(message: str) -> None:
    print(f"serve: {message}", file=sys.stderr, flush=True)


def apply_local_defaults(env: MutableMapping[str, str]) -> None:
    """Local Postgres for every connection setting that is not set."""
    for name, value in LOCAL_PG_DEFAULTS.items():
        env.setdefault(name, value)
    if not env.get("POD_DATABASE_URL"):
        user = quote(env["DAGSTER_PG_USERNAME"], safe="")
        password = env["DAGSTER_PG_PASSWORD"]
        userinfo = f"{user}:{quote(password, safe='')}" if password else user
        env["POD_DATABASE_URL"] = (
            f"postgresql+psycopg://{userinfo}@{env['DAGSTER_PG_HOST']}:{env['DAGSTER_PG_PORT']}"
            f"/{CATALOG_DB}"
        )


def _ensure_database(
    *, host: str, port: int, user: str, password: str | None, dbname: str
) -> bool:
    """Create ``dbname`` on the server when it does not exist; whether it was created."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=host,
        port=port,
        user=user,
        password=password or None,
        dbname="postgres",
        autocommit=True,
        connect_timeout=10,
        application_name="pod-serve",
    ) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname]).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        return True


def ensure_databases(env: Mapping[str, str]) -> None:
    """The Dagster storage database and, when on Postgres, the catalog database."""
    from sqlalchemy.engine import make_url

    targets = [
        (
            "Dagster storage",
            {
                "host": env["DAGSTER_PG_HOST"],
                "port": int(env["DAGSTER_PG_PORT"]),
                "user": env["DAGSTER_PG_USERNAME"],
                "password": env["DAGSTER_PG_PASSWORD"],
                "dbname": env["DAGSTER_PG_DB"],
            },
        )
    ]
    catalog = make_url(env["POD_DATABASE_URL"])
    if catalog.get_backend_name() == "postgresql" and catalog.database:
        targets.append(
            (
                "catalog",
                {
                    "host": catalog.host or "127.0.0.1",
                    "port": catalog.port or 5432,
                    "user": catalog.username or "postgres",
                    "password": catalog.password,
                    "dbname": catalog.database,
                },
            )
        )
    import psycopg

    for what, params in targets:
        try:
            created = _ensure_database(**params)
        except psycopg.OperationalError as exc:
            raise SystemExit(
                f"serve: cannot reach Postgres for the {what} database at {params['host']}:"
                f"{params['port']} as {params['user']!r}: {str(exc).strip()}"
            ) from None
        if created:
            _log(f"created the {what} database {params['dbname']!r} on {params['host']}")


def _read_pools(path: Path) -> dict[str, int]:
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in data.items()
    ):
        raise SystemExit(f"serve: {path}: expected a mapping of pool name to a limit >= 0")
    return data


def prepare_instance(dagster_home: Path, instance_config: Path, pools: Path | None) -> None:
    """The instance config in ``dagster_home``, Dagster's tables, and the pool limits."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(instance_config, dagster_home / "dagster.yaml")
    import dagster as dg

    limits = _read_pools(pools) if pools else {}
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        for pool, limit in limits.items():
            instance.event_log_storage.set_concurrency_slots(pool, limit)
    finally:
        instance.dispose()
    if limits:
        _log("pool limits: " + ", ".join(f"{k}={v}" for k, v in sorted(limits.items())))


def _own_process_tag() -> str:
    """``<pid>-<start ticks>`` of this process (the ``pod`` command checks it is alive)."""
    stat = Path(f"/proc/{os.getpid()}/stat").read_text()
    return f"{os.getpid()}-{stat.rsplit(')', 1)[1].split()[19]}"


def write_serve_env(path: Path, env: Mapping[str, str]) -> None:
    """The settings the webserver and daemon get, for ``pod`` commands beside them
    (mode 0600 from the start: it may hold a database password)."""
    names = sorted(n for n in env if n.startswith(_SHARED_PREFIXES) or n in _SHARED_NAMES)
    lines = [
        "# written by `make serve` while it runs; `pod` reads it (pod_pipeline/settings.py)",
        f"{SERVE_OWNER_KEY}={_own_process_tag()}",
        *(f"{name}={shlex.quote(env[name])}" for name in names if name != SERVE_OWNER_KEY),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(partial, path)


def remove_serve_env(path: Path) -> None:
    """Remove ``path`` if this process wrote it."""
    try:
        if f"{SERVE_OWNER_KEY}={_own_process_tag()}" in path.read_text().splitlines():
            path.unlink()
    except OSError:
        pass


class Services:
    """The webserver and the daemon, each leading its own process group."""

    def __init__(self) -> None:
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], *, env: Mapping[str, str], log_dir: Path | None) -> None:
        command = ["env", "--default-signal=INT,TERM,QUIT", *argv]
        output = None
        if log_dir is not None:
            output = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        try:
            self.processes[name] = subprocess.Popen(
                command,
                cwd=REPO,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
                start_new_session=True,
            )
        finally:
            if output is not None:
                output.close()

    def exited(self) -> list[str]:
        return [name for name, p in self.processes.items() if p.poll() is not None]

    def _signal_groups(self, sig: int) -> None:
        for process in self.processes.values():
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass

    def _groups_alive(self) -> bool:
        alive = False
        for process in self.processes.values():
            process.poll()
            try:
                os.killpg(process.pid, 0)
                alive = True
            except ProcessLookupError:
                pass
        return alive

    def stop(self, timeout_s: float) -> None:
        """SIGTERM to every group, SIGKILL after ``timeout_s``; returns when all are gone."""
        self._signal_groups(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self._groups_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        if self._groups_alive():
            _log(f"still running after {timeout_s:.0f} s: killing")
            self._signal_groups(signal.SIGKILL)
            deadline = time.monotonic() + 10
            while self._groups_alive() and time.monotonic() < deadline:
                time.sleep(0.1)
        for process in self.processes.values():
            try:
                process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="webserver address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=3000, help="webserver port (default 3000)")
    parser.add_argument("--dagster-home", type=Path, help="default: $POD_HOME/dagster-serve")
    parser.add_argument("--instance-config", type=Path, default=REPO / "deploy" / "dagster.yaml")
    parser.add_argument("--pools", type=Path, default=REPO / "deploy" / "pools.yaml")
    parser.add_argument("--workspace", type=Path, default=REPO / "workspace.yaml")
    parser.add_argument("--log-dir", type=Path, help="write webserver.log and daemon.log here")
    parser.add_argument("--stop-timeout", type=float, default=30.0, help="seconds before SIGKILL")
    parser.add_argument(
        "--media-port", type=int, default=3001,
        help="media server port for a local store (default 3001; 0: no media server)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stop_requested: list[int] = []

    def _request_stop(signum, _frame) -> None:
        stop_requested.append(signum)

    for sig in _STOP_SIGNALS:
        signal.signal(sig, _request_stop)

    env = dict(os.environ)
    home = Path(env.get("POD_HOME") or ".pod").expanduser().resolve()
    dagster_home = (args.dagster_home or home / "dagster-serve").resolve()
    env["POD_HOME"] = str(home)
    env["DAGSTER_HOME"] = str(dagster_home)
    apply_local_defaults(env)
    os.environ.update(env)  # for the instance opened below

    ensure_databases(env)
    prepare_instance(dagster_home, args.instance_config, args.pools)
    if args.log_dir is not None:
        args.log_dir.mkdir(parents=True, exist_ok=True)

    services = Services()
    media = Services()
    workspace = str(args.workspace.resolve())
    serve_env = home / SERVE_ENV_FILE
    exit_code = 0
    try:
        if stop_requested:
            return 0
        write_serve_env(serve_env, env)
        services.start(
            "webserver",
            [str(BIN / "dagster-webserver"), "-h", args.host, "-p", str(args.port), "-w", workspace],
            env=env,
            log_dir=args.log_dir,
        )
        services.start(
            "daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace], env=env, log_dir=args.log_dir
        )
        if args.media_port and env.get("POD_STORAGE_URL", "file://").startswith("file://"):
            media.start("media", [str(BIN / "pod"), "serve-media", "--port", str(args.media_port)],
                        env=env, log_dir=args.log_dir)
            _log(f"media server on http://127.0.0.1:{args.media_port}")
        _log(
            f"webserver on http://{args.host}:{args.port}, daemon running "
            f"(DAGSTER_HOME={dagster_home}); Ctrl-C stops both"
        )
        while not stop_requested:
            if dead := services.exited():
                _log(f"{', '.join(dead)} exited unexpectedly; stopping")
                exit_code = 1
                break
            time.sleep(0.5)
    finally:
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        services.stop(args.stop_timeout)
        media.stop(args.stop_timeout)
        remove_serve_env(serve_env)
        _log("stopped")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())

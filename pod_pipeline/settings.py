"""Settings, read from the environment in exactly one place: :func:`load_settings`.

============================  ==========================================================
``POD_HOME``                  base directory of the embedded default (default ``./.pod``)
``POD_STORAGE_URL``           ``file:///abs/dir`` or ``gs://bucket/prefix``
                              (default ``file://$POD_HOME/store``)
``POD_DATABASE_URL``          ``sqlite:///…`` or ``postgresql+psycopg://…``
                              (default ``sqlite:///$POD_HOME/catalog.db``); may hold a
                              password, so it is bound through ``dg.EnvVar`` and never
                              read into definitions as a literal
``POD_GCP_PROJECT``           project for the GCS client (optional)
``POD_MAX_RUNS_PER_TICK``     cap of runs the upload sensor requests per tick (default 20)
``POD_SENSOR_INTERVAL_S``     seconds between two upload-sensor ticks (default 30)
``POD_PURGE_CRON``            when the purge schedule runs, UTC (default ``0 3 * * *``)
``POD_WHISPER_MODEL``         ``tiny.en`` (default, shipped), a CTranslate2 model directory,
                              or a name faster-whisper downloads (``small.en``, ``large-v3``)
``POD_WHISPER_DEVICE``        ``cpu`` (default), ``cuda`` or ``auto``
``POD_WHISPER_COMPUTE_TYPE``  ``default`` (int8 on CPU, float16 on GPU) or a CTranslate2 type
``POD_WHISPER_THREADS``       CPU threads for recognition (default 0 = all cores)
``POD_SHOW_NAME``             show name for ID3 tags (default ``Podcast``)
``POD_INTRO_KEY``             object key of the show's intro (optional)
``POD_OUTRO_KEY``             object key of the show's outro (optional)
``POD_EXECUTOR``              ``in_process`` (default: a run's steps share one process) or
                              ``multiprocess`` (each step in a fresh process)
============================  ==========================================================

While ``make serve`` runs, it writes the settings its webserver and daemon use to
``$POD_HOME/serve.env`` (mode 0600; removed when it stops). A ``pod`` command whose
environment sets none of ``POD_STORAGE_URL``, ``POD_DATABASE_URL`` and ``DAGSTER_HOME``
takes them from there (:func:`adopt_served_settings`), so it works on the same catalog,
store and Dagster instance as the daemon. A file whose ``make serve`` is gone is ignored.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

DATABASE_URL_ENV = "POD_DATABASE_URL"
SERVE_ENV_FILE = "serve.env"
SERVE_OWNER_KEY = "POD_SERVE_PROCESS"
"""In ``serve.env``: ``<pid>-<start ticks>`` of the ``make serve`` process that wrote it."""
_EXPLICIT = ("POD_STORAGE_URL", DATABASE_URL_ENV, "DAGSTER_HOME")
EXECUTORS = ("in_process", "multiprocess")


@dataclass(frozen=True)
class Settings:
    home: Path
    storage_url: str
    database_url_from_env: bool
    default_database_url: str
    gcp_project: str | None
    max_runs_per_tick: int
    whisper_model: str = "tiny.en"
    whisper_device: str = "cpu"
    whisper_compute_type: str = "default"
    whisper_threads: int = 0
    sensor_interval_s: int = 30
    purge_cron: str = "0 3 * * *"
    show_name: str = "Podcast"
    intro_key: str | None = None
    outro_key: str | None = None
    executor: str = "in_process"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    def database_url(self, environ: Mapping[str, str] | None = None) -> str:
        """The catalog URL itself, for the CLI, which talks to the catalog directly."""
        env = os.environ if environ is None else environ
        if self.database_url_from_env:
            return env[DATABASE_URL_ENV]
        return self.default_database_url


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    home = Path(env.get("POD_HOME") or ".pod").expanduser().resolve()
    storage_url = env.get("POD_STORAGE_URL") or (home / "store").as_uri()
    return Settings(
        home=home,
        storage_url=storage_url,
        database_url_from_env=bool(env.get(DATABASE_URL_ENV)),
        default_database_url=f"sqlite:///{home / 'catalog.db'}",
        gcp_project=env.get("POD_GCP_PROJECT") or None,
        max_runs_per_tick=int(env.get("POD_MAX_RUNS_PER_TICK") or 20),
        whisper_model=env.get("POD_WHISPER_MODEL") or "tiny.en",
        whisper_device=env.get("POD_WHISPER_DEVICE") or "cpu",
        whisper_compute_type=env.get("POD_WHISPER_COMPUTE_TYPE") or "default",
        whisper_threads=int(env.get("POD_WHISPER_THREADS") or 0),
        sensor_interval_s=int(env.get("POD_SENSOR_INTERVAL_S") or 30),
        purge_cron=env.get("POD_PURGE_CRON") or "0 3 * * *",
        show_name=env.get("POD_SHOW_NAME") or "Podcast",
        intro_key=env.get("POD_INTRO_KEY") or None,
        outro_key=env.get("POD_OUTRO_KEY") or None,
        executor=_executor(env.get("POD_EXECUTOR") or "in_process"),
    )


def _executor(name: str) -> str:
    if name not in EXECUTORS:
        raise ValueError(f"POD_EXECUTOR must be one of {', '.join(EXECUTORS)}, not {name!r}")
    return name


def serve_env_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where ``make serve`` writes its settings: ``$POD_HOME/serve.env``."""
    env = os.environ if environ is None else environ
    return Path(env.get("POD_HOME") or ".pod").expanduser().resolve() / SERVE_ENV_FILE


def read_serve_env(path: Path) -> dict[str, str] | None:
    """The settings in a ``serve.env`` whose ``make serve`` is still running, else ``None``."""
    from pod_pipeline.worker import owner_alive

    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    values: dict[str, str] = {}
    for line in lines:
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = "".join(shlex.split(value))
    if not owner_alive(values.pop(SERVE_OWNER_KEY, "")):
        return None
    return values


def adopt_served_settings(environ: MutableMapping[str, str]) -> Path | None:
    """Take the settings of a running ``make serve`` into ``environ`` unless it sets its own
    (any of ``POD_STORAGE_URL``, ``POD_DATABASE_URL``, ``DAGSTER_HOME``); the file read, or
    ``None``. Called once, first thing, by the ``pod`` command."""
    if any(environ.get(name) for name in _EXPLICIT):
        return None
    path = serve_env_path(environ)
    values = read_serve_env(path)
    if values is None:
        return None
    environ.update(values)
    return path

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
``POD_PURGE_RETENTION_HOURS`` raw media of episodes finished longer ago is purged (default 24)
``POD_PURGE_MAX_DELETIONS``   episodes one purge run deletes at most (default 1000)
``POD_MAX_REGISTRATIONS_PER_TICK``
                              uploads the upload sensor registers per tick (default 2000)
``POD_WHISPER_MODEL``         ``tiny.en`` (default, shipped), ``base`` (shipped), a CTranslate2
                              model directory, or a name faster-whisper downloads
                              (``small.en``, ``large-v3``)
``POD_MODEL_CACHE``           where ``base`` is put together on first use
                              (default ``~/.cache/pod-pipeline``)
``POD_WHISPER_DEVICE``        ``cpu`` (default), ``cuda`` or ``auto``
``POD_WHISPER_COMPUTE_TYPE``  ``default`` (int8 on CPU, float16 on GPU) or a CTranslate2 type
``POD_WHISPER_THREADS``       CPU threads for recognition (default 0 = all cores)
``POD_WHISPER_SECOND_OPINION``
                              the model that hears again a chunk the first is unsure of:
                              ``auto`` (default: ``base`` for ``tiny.en``, else none),
                              ``none``, or a model as for ``POD_WHISPER_MODEL``
``POD_SHOW_NAME``             show name for ID3 tags (default ``Podcast``)
``POD_INTRO_KEY``             object key of the show's intro (optional)
``POD_OUTRO_KEY``             object key of the show's outro (optional)
``POD_SHOW_FILE``             the show file (``show.toml``: feed fields, artwork, public
                              base URL, intro/outro, loudness); replaces the three above
``POD_EXECUTOR``              ``in_process`` (default: a run's steps share one process) or
                              ``multiprocess`` (each step in a fresh process)
``POD_SIGNED_URL_LIFETIME_S`` GCS store without the show's ``public_base_url``: ``pod
                              status`` links are V4 signed URLs valid this long (default 0:
                              none)
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

from pod_assets import defaults

DATABASE_URL_ENV = "POD_DATABASE_URL"
SERVE_ENV_FILE = "serve.env"
SERVE_OWNER_KEY = "POD_SERVE_PROCESS"
"""In ``serve.env``: ``<pid>-<start ticks>`` of the ``make serve`` process that wrote it."""
_EXPLICIT = ("POD_STORAGE_URL", DATABASE_URL_ENV, "DAGSTER_HOME")
EXECUTORS = ("in_process", "multiprocess")


@dataclass(frozen=True)
class Settings:
    """The settings; a field's default is the value used when its variable is unset (those
    the definitions' builders share come from :mod:`pod_assets.defaults`)."""

    home: Path
    storage_url: str
    database_url_from_env: bool
    default_database_url: str
    gcp_project: str | None
    max_runs_per_tick: int = defaults.MAX_RUNS_PER_TICK
    whisper_model: str = "tiny.en"
    whisper_device: str = "cpu"
    whisper_compute_type: str = "default"
    whisper_threads: int = 0
    whisper_second_opinion: str = "auto"
    sensor_interval_s: int = defaults.SENSOR_INTERVAL_S
    purge_cron: str = defaults.PURGE_CRON
    show_name: str = "Podcast"
    intro_key: str | None = None
    outro_key: str | None = None
    executor: str = "in_process"
    purge_retention_hours: float = defaults.PURGE_RETENTION_HOURS
    purge_max_deletions: int = defaults.PURGE_MAX_DELETIONS
    max_registrations_per_tick: int = defaults.MAX_REGISTRATIONS_PER_TICK
    show_file: Path | None = None
    signed_url_lifetime_s: int = 0

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
        max_runs_per_tick=int(env.get("POD_MAX_RUNS_PER_TICK") or Settings.max_runs_per_tick),
        whisper_model=env.get("POD_WHISPER_MODEL") or Settings.whisper_model,
        whisper_device=env.get("POD_WHISPER_DEVICE") or Settings.whisper_device,
        whisper_compute_type=env.get("POD_WHISPER_COMPUTE_TYPE") or Settings.whisper_compute_type,
        whisper_threads=int(env.get("POD_WHISPER_THREADS") or Settings.whisper_threads),
        whisper_second_opinion=(
            env.get("POD_WHISPER_SECOND_OPINION") or Settings.whisper_second_opinion
        ),
        sensor_interval_s=int(env.get("POD_SENSOR_INTERVAL_S") or Settings.sensor_interval_s),
        purge_cron=env.get("POD_PURGE_CRON") or Settings.purge_cron,
        show_name=env.get("POD_SHOW_NAME") or Settings.show_name,
        intro_key=env.get("POD_INTRO_KEY") or None,
        outro_key=env.get("POD_OUTRO_KEY") or None,
        executor=_executor(env.get("POD_EXECUTOR") or Settings.executor),
        purge_retention_hours=_non_negative(
            env, "POD_PURGE_RETENTION_HOURS", float, Settings.purge_retention_hours
        ),
        purge_max_deletions=_non_negative(
            env, "POD_PURGE_MAX_DELETIONS", int, Settings.purge_max_deletions
        ),
        max_registrations_per_tick=_non_negative(
            env, "POD_MAX_REGISTRATIONS_PER_TICK", int, Settings.max_registrations_per_tick
        ),
        show_file=Path(env["POD_SHOW_FILE"]).expanduser().resolve() if env.get("POD_SHOW_FILE") else None,
        signed_url_lifetime_s=int(
            env.get("POD_SIGNED_URL_LIFETIME_S") or Settings.signed_url_lifetime_s
        ),
    )


def _non_negative(env: Mapping[str, str], name: str, kind: type, default: float | int):
    text = env.get(name)
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {text!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {text}")
    return value


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

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
``POD_TRANSCRIBE_WORKERS``    processes for transcription (default 0 = all cores)
``POD_SHOW_NAME``             show name for ID3 tags (default ``Podcast``)
``POD_INTRO_KEY``             object key of the show's intro (optional)
``POD_OUTRO_KEY``             object key of the show's outro (optional)
``POD_EXECUTOR``              ``in_process`` (default: a run's steps share one process) or
                              ``multiprocess`` (each step in a fresh process)
============================  ==========================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DATABASE_URL_ENV = "POD_DATABASE_URL"
EXECUTORS = ("in_process", "multiprocess")


@dataclass(frozen=True)
class Settings:
    home: Path
    storage_url: str
    database_url_from_env: bool
    default_database_url: str
    gcp_project: str | None
    max_runs_per_tick: int
    transcribe_workers: int
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
        transcribe_workers=int(env.get("POD_TRANSCRIBE_WORKERS") or 0),
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

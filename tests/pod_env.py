"""The environment of a real ``pod`` process started by a test: its own home, nothing
inherited from the test's own ``POD_*``/``DAGSTER_*`` settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pod_resources.storage import GCSObjectStore


POD = Path(sys.executable).parent / "pod"
"""The ``pod`` command of the environment the tests run in."""


def run_pod(
    env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``pod ARGS`` in ``env``; with ``check``, fail the test on a non-zero exit."""
    run = subprocess.run([str(POD), *args], env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert run.returncode == 0, f"pod {' '.join(args)}\n{run.stdout}\n{run.stderr[-3000:]}"
    return run


def pod_env(home: Path) -> dict[str, str]:
    """The embedded default under ``home`` (store, SQLite catalog, Dagster home)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POD_", "DAGSTER_"))}
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    env.update(POD_HOME=str(home), DAGSTER_HOME=str(home / "dagster"), POD_WHISPER_THREADS="2")
    return env


def gcs_postgres_env(home: Path, store: GCSObjectStore, emulator_endpoint: str, postgres_url: str) -> dict[str, str]:
    """``pod`` on ``store``'s bucket (prefix ``pod``) in the GCS emulator and on Postgres."""
    env = pod_env(home)
    env.update(
        POD_STORAGE_URL=f"gs://{store.bucket}/pod",
        POD_DATABASE_URL=postgres_url,
        POD_GCP_PROJECT="test",
        STORAGE_EMULATOR_HOST=emulator_endpoint,
    )
    return env

"""Secrets never show: the catalog password in ``POD_DATABASE_URL`` and an API key bound with
``dg.EnvVar`` are set to known values, the pipeline runs (a good episode, a bad upload, a
catalog that cannot be opened), and every place a secret could surface is scanned for them:
the Dagster instance (every event of every run, run config and tags, all its files, captured
compute logs), the terminal (stdout, stderr, logging), ``pod status``, the store's objects and
their metadata, and every column of the catalog.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from dagster._core.instance.ref import InstanceRef
from dagster._serdes import serialize_value

import pod_resources
from pod_pipeline.runner import run_once
from pod_pipeline.settings import load_settings
from pod_resources.catalog import CatalogConnectionError, dispose_engines
from pod_resources.storage import LocalObjectStore
from pod_resources.transcriber import WhisperTranscriberResource, TranscriberResource
from tests.plugins.postgres import AppDatabase

POD = Path(sys.executable).parent / "pod"
API_KEY_ENV = "POD_TEST_ASR_API_KEY"

_api_keys_used: list[str] = []


class KeyedTranscriber(TranscriberResource):
    """A transcriber with an API key, as a hosted ASR engine would have (the real recogniser
    inside). It records a digest of the key it got, never the key."""

    api_key: str

    def transcribe(self, path: Path, **kwargs):
        _api_keys_used.append(hashlib.sha256(self.api_key.encode()).hexdigest())
        return WhisperTranscriberResource().transcribe(path, **kwargs)


@pytest.fixture
def secrets() -> dict[str, str]:
    token = uuid.uuid4().hex
    return {"password": f"s3cr3t-{token}", "api_key": f"sk-live-{token[::-1]}"}


@pytest.fixture
def pod_env(
    app_database: AppDatabase, secrets: dict[str, str], tmp_path: Path
) -> Iterator[dict[str, str]]:
    """Environment of a fresh POD_HOME whose catalog is on Postgres, with a password."""
    url = app_database.url_with_password(secrets["password"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POD_", "DAGSTER_"))}
    env.update(
        POD_HOME=str(tmp_path / "home"),
        POD_DATABASE_URL=url,
        POD_WHISPER_THREADS="2",
        **{API_KEY_ENV: secrets["api_key"]},
    )
    yield env
    dispose_engines(url)


def _missing_database_url(app_database: AppDatabase, password: str) -> str:
    return app_database.url_with_password(password).replace(
        f"/{app_database.database}", "/pod_no_such_database"
    )


def _pod(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(POD), *args], env=env, capture_output=True, text=True, timeout=600
    )


def _bad_upload(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "not really audio.mp3"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is a text file, not an MP3\n" * 20)
    return path


def _good_upload(tmp_path: Path, speech: Path) -> Path:
    path = tmp_path / "in" / "a short talk.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(speech.read_bytes())
    return path


class SecretScan:
    """Collects every text a secret must not be in; says where one was found."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self._secrets = secrets
        self.places: list[str] = []
        self.leaks: list[str] = []

    def text(self, where: str, text: str | bytes | None) -> None:
        if text is None:
            return
        data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
        self.places.append(where)
        for name, secret in self._secrets.items():
            if secret.encode() in data:
                self.leaks.append(f"{name} in {where}")

    def files(self, root: Path) -> None:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            self.text(str(path.relative_to(root)), path.read_bytes())

    def instance(self, instance: dg.DagsterInstance) -> list[dg.EventLogEntry]:
        """Every run's config, tags and events; returns the events."""
        events: list[dg.EventLogEntry] = []
        for run in instance.get_runs():
            self.text(f"run {run.run_id} config", json.dumps(run.run_config, default=str))
            self.text(f"run {run.run_id} tags", json.dumps(dict(run.tags)))
            for entry in instance.all_logs(run.run_id):
                events.append(entry)
                self.text(f"run {run.run_id} event", serialize_value(entry))
        return events

    def store(self, store: LocalObjectStore) -> int:
        count = 0
        for info in store.list(""):
            count += 1
            self.text(f"object {info.key} metadata", json.dumps(dict(info.metadata)))
        return count

    def catalog(self, app_database: AppDatabase) -> dict[str, tuple]:
        """Every column of every catalog table, as text; returns the episodes by name."""
        with psycopg.connect(app_database.conninfo(as_owner=False)) as conn:
            for table in ("episodes", "episode_status_history", "uploads"):
                for row in conn.execute(f"SELECT row_to_json(t)::text FROM {table} t"):
                    self.text(f"catalog {table}", row[0])
            return {
                name: (status, error)
                for name, status, error in conn.execute(
                    "SELECT source_name, status, last_error FROM episodes"
                )
            }

    def assert_clean(self) -> None:
        assert self.places
        assert not self.leaks, self.leaks


def _open_instance(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home / "dagster")))


@pytest.mark.postgres
@pytest.mark.slow
def test_pod_cli_with_failures_never_shows_the_password(
    app_database: AppDatabase,
    pod_env: dict[str, str],
    secrets: dict[str, str],
    short_speech: Path,
    tmp_path: Path,
) -> None:
    scan = SecretScan(secrets)
    outputs: list[subprocess.CompletedProcess] = []
    bad = _bad_upload(tmp_path)
    for args in (
        ("ingest", str(_good_upload(tmp_path, short_speech)), str(bad)),
        ("run",),
        ("status",),
        ("status", "--json"),
    ):
        outputs.append(_pod(*args, env=pod_env))
        if args[0] == "ingest":  # `pod ingest` refuses it; an uploader to the store does not
            LocalObjectStore(root=str(Path(pod_env["POD_HOME"]) / "store")).write_file(
                f"uploads/{bad.name}", bad
            )
    ingest, run, status, status_json = outputs
    assert ingest.returncode == 1, ingest.stderr  # the bad upload was refused, with its reason
    assert "not audio" in ingest.stderr
    assert run.returncode == 1, run.stdout + run.stderr  # the bad upload failed
    assert "FAILED" in run.stdout
    rows = {row["source_name"]: row for row in json.loads(status_json.stdout)}
    assert rows["a short talk.wav"]["status"] == "processed", rows
    assert rows["not really audio.mp3"]["status"] == "error"
    assert rows["not really audio.mp3"]["error"]

    # The catalog cannot be opened: a database that does not exist, a host nobody listens on.
    missing = _missing_database_url(app_database, secrets["password"])
    unreachable = f"postgresql+psycopg://pod:{secrets['password']}@127.0.0.1:1/pod"
    for url, args in (
        (missing, ("status",)),
        (missing, ("run",)),
        (unreachable, ("status", "--json")),
    ):
        failed = _pod(*args, env={**pod_env, "POD_DATABASE_URL": url})
        assert failed.returncode != 0, (args, failed.stdout)
        assert "***" in failed.stderr, failed.stderr  # the URL is named, redacted
        outputs.append(failed)
    assert any("does not exist" in out.stderr for out in outputs)
    assert any("refused" in out.stderr for out in outputs)

    for index, out in enumerate(outputs):
        scan.text(f"pod {' '.join(out.args[1:])} stdout #{index}", out.stdout)
        scan.text(f"pod {' '.join(out.args[1:])} stderr #{index}", out.stderr)
    home = Path(pod_env["POD_HOME"])
    with _open_instance(home) as instance:
        events = scan.instance(instance)
    assert any(e.dagster_event and e.dagster_event.is_step_failure for e in events)
    scan.files(home)  # instance databases, compute logs, the store and its sidecars
    assert scan.store(LocalObjectStore(root=str(home / "store"))) >= 4
    episodes = scan.catalog(app_database)
    assert episodes["not really audio.mp3"][0] == "error"
    scan.assert_clean()


@pytest.mark.postgres
@pytest.mark.slow
def test_run_once_with_an_env_var_api_key_never_shows_the_secrets(
    app_database: AppDatabase,
    pod_env: dict[str, str],
    secrets: dict[str, str],
    short_speech: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name in [k for k in os.environ if k.startswith(("POD_", "DAGSTER_"))]:
        monkeypatch.delenv(name)
    for name, value in pod_env.items():
        if name.startswith("POD_"):
            monkeypatch.setenv(name, value)
    real_build_defs = pod_resources.build_defs

    def build_defs_with_keyed_transcriber(settings) -> dg.Definitions:
        resources = dict(real_build_defs(settings).resources)
        resources["transcriber"] = KeyedTranscriber(api_key=dg.EnvVar(API_KEY_ENV))
        return dg.Definitions(resources=resources)

    monkeypatch.setattr(pod_resources, "build_defs", build_defs_with_keyed_transcriber)
    home = Path(pod_env["POD_HOME"])
    settings = load_settings()
    assert settings.database_url_from_env
    store = LocalObjectStore(root=str(home / "store"))
    for upload in (_good_upload(tmp_path, short_speech), _bad_upload(tmp_path)):
        store.write_file(f"uploads/{upload.name}", upload)
    _api_keys_used.clear()
    scan = SecretScan(secrets)

    caplog.set_level(logging.DEBUG)
    (home / "dagster").mkdir(parents=True)
    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
        outcome = run_once(settings, instance=instance, log_level="DEBUG")
        assert outcome.launched == 2 and outcome.failed == 1, outcome.messages
        scan.text("run_once messages", "\n".join(outcome.messages))

        # A step that cannot open the catalog: the driver's error reaches the event log.
        monkeypatch.setenv(
            "POD_DATABASE_URL", _missing_database_url(app_database, secrets["password"])
        )
        broken_defs = pod_resources.build_defs(load_settings())
        episode_id = next(iter(instance.get_dynamic_partitions("episodes")))
        job = dg.define_asset_job("raw_only", selection=["raw_audio"])
        from pod_assets.episodes.raw_audio import raw_audio

        defs = dg.Definitions(assets=[raw_audio], jobs=[job], resources=broken_defs.resources)
        failed = defs.resolve_job_def("raw_only").execute_in_process(
            instance=instance, partition_key=episode_id, raise_on_error=False
        )
        assert not failed.success
        failure = next(e for e in failed.all_events if e.is_step_failure)
        error = failure.step_failure_data.error
        assert "does not exist" in str(error.to_string()) and "***" in error.to_string()
        # A new upload, and the catalog cannot be opened to register it: the sensor says
        # why, with the URL redacted.
        store.write_bytes("uploads/another talk.wav", short_speech.read_bytes()[:-2])
        caplog.clear()
        early = capfd.readouterr()
        try:
            shown = "\n".join(run_once(load_settings(), instance=instance).messages)
        except CatalogConnectionError as exc:
            shown = "\n".join(traceback.format_exception(exc))
        late = capfd.readouterr()
        shown += "\n".join(["", caplog.text, late.out, late.err])
        assert "does not exist" in shown and "***" in shown, shown
        scan.text("run_once on a missing database", shown)

        events = scan.instance(instance)
    assert _api_keys_used == [hashlib.sha256(secrets["api_key"].encode()).hexdigest()]
    assert sum(1 for e in events if e.dagster_event and e.dagster_event.is_step_failure) >= 2

    captured = capfd.readouterr()
    for where, out in (("before", early), ("missing database", late), ("after", captured)):
        scan.text(f"stdout {where}", out.out)
        scan.text(f"stderr {where}", out.err)
    scan.text("logging", "\n".join(record.getMessage() for record in caplog.records))
    scan.text("logging (formatted)", caplog.text)
    scan.files(home)
    assert scan.store(store) >= 4
    episodes = scan.catalog(app_database)
    assert episodes["a short talk.wav"] == ("processed", None)
    assert episodes["not really audio.mp3"][0] == "error"
    scan.assert_clean()

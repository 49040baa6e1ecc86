"""The Definitions root loads and every asset, job, sensor and schedule resolves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from pod_pipeline.definitions import build_definitions
from pod_pipeline.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture
def defs(tmp_path) -> dg.Definitions:
    return build_definitions(load_settings({"POD_HOME": str(tmp_path)}))


def test_everything_resolves(defs):
    repo = defs.get_repository_def()
    names = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert {"raw_audio", "transcript"} <= names
    for job in repo.get_all_jobs():
        assert job.name
    for sensor in repo.sensor_defs:
        defs.resolve_sensor_def(sensor.name)
    for schedule in repo.schedule_defs:
        defs.resolve_schedule_def(schedule.name)
    assert {"upload_sensor", "episode_run_failure_sensor"} <= {s.name for s in repo.sensor_defs}
    job = defs.resolve_job_def("process_episode_job")
    assert job.partitions_def is not None and job.partitions_def.name == "episodes"


def test_assets_are_described_partitioned_and_grouped(defs):
    for spec in defs.resolve_all_asset_specs():
        assert spec.description, spec.key
        if spec.group_name == "show":  # one per show: the feed and its statistics
            assert spec.partitions_def is None, spec.key
            continue
        assert spec.group_name == "episodes"
        assert spec.partitions_def is not None and spec.partitions_def.name == "episodes"


def test_settings_are_read_when_built_not_at_import(monkeypatch, tmp_path):
    monkeypatch.setenv("POD_HOME", str(tmp_path / "a"))
    first = build_definitions()
    monkeypatch.setenv("POD_HOME", str(tmp_path / "b"))
    second = build_definitions()
    assert str(tmp_path / "a") in first.resources["store"].root
    assert str(tmp_path / "b") in second.resources["store"].root


def test_database_url_is_bound_through_envvar(monkeypatch, tmp_path):
    secret_url = "postgresql+psycopg://pod:s3cr3t-pass@127.0.0.1:5432/pod"
    monkeypatch.setenv("POD_DATABASE_URL", secret_url)
    defs = build_definitions()
    catalog = defs.resources["catalog"]
    # The definition holds a reference to the variable, not its value.
    assert "s3cr3t-pass" not in repr(catalog)


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        ["dagster", "definitions", "validate", "-w", "workspace.yaml"],
        ["dg", "check", "defs"],
    ],
)
def test_cli_validators_pass(command, tmp_path):
    env = {**os.environ, "POD_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    run = subprocess.run(
        [str(BIN / command[0]), *command[1:]], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("name", ["in_process", "multiprocess"])
def test_executor_follows_pod_executor(tmp_path, name):
    defs = build_definitions(load_settings({"POD_HOME": str(tmp_path), "POD_EXECUTOR": name}))
    assert defs.resolve_job_def("process_episode_job").executor_def.name == name


def test_unknown_executor_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="in_process, multiprocess"):
        load_settings({"POD_EXECUTOR": "threads"})


def test_runner_refuses_settings_other_than_the_environment(tmp_path, monkeypatch):
    from pod_pipeline.runner import run_once

    monkeypatch.setenv("POD_HOME", str(tmp_path / "a"))
    with pytest.raises(ValueError, match="from the environment"):
        run_once(load_settings({"POD_HOME": str(tmp_path / "b")}))


def test_reaping_finds_dead_runs_including_one_whose_pid_came_round_again(tmp_path):
    """A restarted container hands out the same small pids: a STARTED run tagged with this
    very process's pid cannot be running (this process has started none), so it is reaped;
    one tagged with a live process's pid is left alone."""
    import os
    import socket
    import subprocess

    from dagster._core.test_utils import create_run_for_test

    from pod_pipeline.runner import HOST_TAG, PID_TAG, reap_dead_runs
    from pod_resources.catalog import Catalog

    host = socket.gethostname()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        with dg.instance_for_test() as instance:
            started = dg.DagsterRunStatus.STARTED
            runs = {
                name: create_run_for_test(
                    instance, status=started, tags={HOST_TAG: host, PID_TAG: str(pid)}
                ).run_id
                for name, pid in (("own", os.getpid()), ("live", live.pid), ("gone", gone.pid))
            }
            other_host = create_run_for_test(
                instance, status=started, tags={HOST_TAG: "elsewhere", PID_TAG: str(gone.pid)}
            ).run_id
            messages = reap_dead_runs(instance, Catalog(f"sqlite:///{tmp_path / 'c.db'}"))

            status = {name: instance.get_run_by_id(run_id).status for name, run_id in runs.items()}
            assert status == {"own": dg.DagsterRunStatus.FAILURE, "live": started,
                              "gone": dg.DagsterRunStatus.FAILURE}
            assert instance.get_run_by_id(other_host).status == started
            assert len(messages) == 2
    finally:
        live.kill()
        live.wait()

"""deploy/: the production instance config, its launcher, the Helm values and the image.

The instance config is loaded by Dagster itself (``dg.DagsterInstance.from_config``), so a
misspelt or unknown key fails here and not on a server. The Helm values are checked against
the keys of Dagster's chart (1.13) and against deploy/dagster.yaml, whose settings they mirror.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from sqlalchemy.engine import make_url

from pod_pipeline.definitions import build_definitions
from pod_pipeline.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
INSTANCE_YAML = DEPLOY / "dagster.yaml"
POOLS_YAML = DEPLOY / "pools.yaml"
VALUES_YAML = DEPLOY / "k8s" / "values.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
K8S_REQUIREMENTS = DEPLOY / "k8s" / "requirements.txt"
CREDENTIALS_IN_URL = re.compile(r"://[^\s/:@]+:[^\s/@]+@")
PG_ENV = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD")


def _yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _load_serve():
    spec = importlib.util.spec_from_file_location("pod_deploy_serve", DEPLOY / "serve.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


serve = _load_serve()


def _instance_from(config: dict[str, Any], home: Path) -> dg.DagsterInstance:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return dg.DagsterInstance.from_config(str(home))


def _offline(config: dict[str, Any], home: Path) -> dict[str, Any]:
    """The config with SQLite storage in ``home``: every other key is checked without a server."""
    config = copy.deepcopy(config)
    for key in ("storage", "run_storage", "event_log_storage", "schedule_storage"):
        config.pop(key, None)
    config["storage"] = {"sqlite": {"base_dir": str(home / "storage")}}
    return config


def _set_pg_env(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    parsed = make_url(url)
    monkeypatch.setenv("DAGSTER_PG_HOST", parsed.host or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(parsed.port or 5432))
    monkeypatch.setenv("DAGSTER_PG_DB", parsed.database or "")
    monkeypatch.setenv("DAGSTER_PG_USERNAME", parsed.username or "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", parsed.password or "")


def _pools_in_code() -> set[str]:
    repository = build_definitions(load_settings({"POD_HOME": "/nonexistent"})).get_repository_def()
    pools = set()
    for job in repository.get_all_jobs():
        for node_def in job.graph.node_defs:
            if getattr(node_def, "pool", None):
                pools.add(node_def.pool)
    return pools


# --------------------------------------------------------------------------- deploy/dagster.yaml


def test_instance_config_names_only_real_keys(tmp_path):
    config = _yaml(INSTANCE_YAML)
    instance = _instance_from(_offline(config, tmp_path), tmp_path / "home")
    try:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.pool_granularity.value == "op"
        assert concurrency.pool_config.default_pool_limit == config["concurrency"]["pools"]["default_limit"]
        queue = concurrency.run_queue_config
        assert queue.max_concurrent_runs == config["concurrency"]["runs"]["max_concurrent_runs"]
        assert {"key": "dagster/backfill", "limit": 2} in queue.tag_concurrency_limits
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0
        assert instance.run_retries_enabled and instance.run_retries_max_retries >= 1
        assert instance.run_retries_retry_on_asset_or_op_failure is False
        retention = instance.get_settings("retention")
        assert set(retention) == {"sensor", "schedule"}
    finally:
        instance.dispose()


def test_instance_config_rejects_an_unknown_key(tmp_path):
    config = _offline(_yaml(INSTANCE_YAML), tmp_path)
    config["run_monitoring"]["free_slots_after_run_end_second"] = 60  # one letter off
    with pytest.raises(dg.DagsterInvalidConfigError, match="free_slots_after_run_end_second"):
        _instance_from(config, tmp_path / "home")


def test_instance_secrets_come_from_the_environment():
    config = _yaml(INSTANCE_YAML)
    db = config["storage"]["postgres"]["postgres_db"]
    assert db["scheme"] == "postgresql+psycopg2"
    for key in ("hostname", "port", "db_name", "username", "password"):
        assert set(db[key]) == {"env"} and db[key]["env"] in PG_ENV, key
    assert "postgres_url" not in config["storage"]["postgres"]
    text = INSTANCE_YAML.read_text()
    assert not CREDENTIALS_IN_URL.search(text), "a URL with a password"


@pytest.mark.postgres
def test_instance_runs_on_postgres_with_the_pool_limits(monkeypatch, postgres_url, tmp_path):
    _set_pg_env(monkeypatch, postgres_url)
    home = tmp_path / "home"
    serve.prepare_instance(home, INSTANCE_YAML, POOLS_YAML)
    assert (home / "dagster.yaml").read_text() == INSTANCE_YAML.read_text()
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert instance.event_log_storage.supports_global_concurrency_limits
        for pool, limit in _yaml(POOLS_YAML).items():
            assert instance.event_log_storage.get_concurrency_info(pool).slot_count == limit, pool
    finally:
        instance.dispose()


def test_pools_file_covers_every_pool_in_the_code():
    pools = _yaml(POOLS_YAML)
    assert set(pools) == _pools_in_code()
    assert all(isinstance(limit, int) and limit >= 1 for limit in pools.values())
    assert pools["asr"] == 1, "transcription already uses every core"


# --------------------------------------------------------------------------- deploy/serve.py


def test_launcher_fills_in_only_what_is_unset():
    env = {"DAGSTER_PG_HOST": "db.internal", "DAGSTER_PG_PASSWORD": "p@ss/word"}
    serve.apply_local_defaults(env)
    assert env["DAGSTER_PG_HOST"] == "db.internal"
    assert env["DAGSTER_PG_PORT"] == "5432" and env["DAGSTER_PG_DB"] == "pod_dagster"
    url = make_url(env["POD_DATABASE_URL"])
    assert url.drivername == "postgresql+psycopg" and url.database == serve.CATALOG_DB
    assert url.password == "p@ss/word" and url.host == "db.internal"

    mine = {"POD_DATABASE_URL": "sqlite:////tmp/catalog.db", "DAGSTER_PG_DB": "mine"}
    serve.apply_local_defaults(mine)
    assert mine["POD_DATABASE_URL"] == "sqlite:////tmp/catalog.db" and mine["DAGSTER_PG_DB"] == "mine"


def test_launcher_binds_to_localhost_by_default():
    args = serve.build_parser().parse_args([])
    assert args.host == "127.0.0.1" and args.port == 3000
    assert args.instance_config == INSTANCE_YAML and args.pools == POOLS_YAML


def test_launcher_refuses_a_bad_pools_file(tmp_path):
    bad = tmp_path / "pools.yaml"
    bad.write_text("asr: many\n")
    with pytest.raises(SystemExit, match="pool name to a limit"):
        serve._read_pools(bad)


# --------------------------------------------------------------------------- deploy/k8s/values.yaml

_IMAGE = {"repository": None, "tag": None, "pullPolicy": None}
_K8S = None  # a Kubernetes object (resources, volumes, env…): the chart passes it through
HELM_KEYS: dict[str, Any] = {
    # Keys of Dagster's Helm chart 1.13 (helm/dagster/schema) for the sections used here.
    "global": {"postgresqlSecretName": None, "dagsterHome": None, "serviceAccountName": None,
               "celeryConfigSecretName": None, "dagsterInstanceConfigMap": None},
    "generatePostgresqlPasswordSecret": None,
    "postgresql": {"enabled": None, "image": _IMAGE, "postgresqlHost": None, "postgresqlUsername": None,
                   "postgresqlPassword": None, "postgresqlDatabase": None, "postgresqlParams": _K8S,
                   "postgresqlScheme": None, "service": {"port": None}},
    "dagsterWebserver": {"image": _IMAGE, "replicaCount": None, "env": _K8S, "envConfigMaps": _K8S,
                         "envSecrets": _K8S, "volumes": _K8S, "volumeMounts": _K8S, "resources": _K8S,
                         "nodeSelector": _K8S, "tolerations": _K8S, "affinity": _K8S, "labels": _K8S,
                         "annotations": _K8S, "service": _K8S, "pathPrefix": None, "logLevel": None,
                         "enableReadOnly": None, "dbStatementTimeout": None, "dbPoolRecycle": None},
    "dagster-user-deployments": {
        "enabled": None, "enableSubchart": None, "imagePullSecrets": _K8S,
        "deployments": [{"name": None, "image": _IMAGE, "dagsterApiGrpcArgs": None, "codeServerArgs": None,
                         "port": None, "includeConfigInLaunchedRuns": {"enabled": None}, "env": _K8S,
                         "envConfigMaps": _K8S, "envSecrets": _K8S, "volumes": _K8S, "volumeMounts": _K8S,
                         "resources": _K8S, "nodeSelector": _K8S, "tolerations": _K8S, "affinity": _K8S,
                         "labels": _K8S, "annotations": _K8S, "readinessProbe": _K8S, "livenessProbe": _K8S,
                         "startupProbe": _K8S, "schedulerName": None}],
    },
    "runLauncher": {
        "type": None,
        "config": {"k8sRunLauncher": {
            "image": _IMAGE, "imagePullPolicy": None, "jobNamespace": None, "loadInclusterConfig": None,
            "kubeconfigFile": None, "envConfigMaps": _K8S, "envSecrets": _K8S, "envVars": _K8S,
            "volumeMounts": _K8S, "volumes": _K8S, "labels": _K8S, "failPodOnRunFailure": None,
            "resources": _K8S, "schedulerName": None, "securityContext": _K8S,
            "runK8sConfig": {"containerConfig": _K8S, "podSpecConfig": _K8S, "podTemplateSpecMetadata": _K8S,
                             "jobSpecConfig": _K8S, "jobMetadata": _K8S},
        }},
    },
    "dagsterDaemon": {
        "enabled": None, "image": _IMAGE, "heartbeatTolerance": None,
        "runCoordinator": {"enabled": None, "type": None, "config": {"queuedRunCoordinator": {
            "maxConcurrentRuns": None, "tagConcurrencyLimits": _K8S, "dequeueIntervalSeconds": None,
            "dequeueNumWorkers": None, "dequeueUseThreads": None, "blockOpConcurrencyLimitedRuns": _K8S}}},
        "runMonitoring": {"enabled": None, "startTimeoutSeconds": None, "cancelTimeoutSeconds": None,
                          "maxResumeRunAttempts": None, "pollIntervalSeconds": None,
                          "freeSlotsAfterRunEndSeconds": None},
        "runRetries": {"enabled": None, "maxRetries": None, "retryOnAssetOrOpFailure": None},
        "sensors": {"useThreads": None, "numWorkers": None, "numSubmitWorkers": None},
        "schedules": {"useThreads": None, "numWorkers": None, "numSubmitWorkers": None},
        "backfills": {"useThreads": None, "numWorkers": None, "numSubmitWorkers": None},
        "env": _K8S, "envConfigMaps": _K8S, "envSecrets": _K8S, "volumes": _K8S, "volumeMounts": _K8S,
        "resources": _K8S, "nodeSelector": _K8S, "tolerations": _K8S, "affinity": _K8S, "labels": _K8S,
        "annotations": _K8S,
    },
    "concurrency": {"enabled": None, "pools": {"defaultLimit": None, "granularity": None,
                                               "opGranularityRunBuffer": None},
                    "runs": {"maxConcurrentRuns": None, "tagConcurrencyLimits": _K8S}},
    "computeLogManager": {"type": None, "config": {"gcsComputeLogManager": {
        "bucket": None, "prefix": None, "localDir": None, "jsonCredentialsEnvvar": None, "uploadInterval": None}}},
    "retention": {"enabled": None,
                  "sensor": {"purgeAfterDays": {"skipped": None, "success": None, "failure": None, "started": None}},
                  "schedule": {"purgeAfterDays": {"skipped": None, "success": None, "failure": None, "started": None}}},
    "telemetry": {"enabled": None},
}


def _unknown_keys(values: Any, schema: Any, path: str = "") -> list[str]:
    if schema is None:
        return []
    if isinstance(schema, list):
        return [bad for i, item in enumerate(values) for bad in _unknown_keys(item, schema[0], f"{path}[{i}]")]
    if not isinstance(values, dict):
        return []  # e.g. purgeAfterDays given as one number
    problems = []
    for key, value in values.items():
        where = f"{path}.{key}" if path else key
        if key not in schema:
            problems.append(where)
        else:
            problems.extend(_unknown_keys(value, schema[key], where))
    return problems


def test_helm_values_use_only_chart_keys():
    assert _unknown_keys(_yaml(VALUES_YAML), HELM_KEYS) == []


def test_helm_values_check_catches_a_misspelt_key():
    values = _yaml(VALUES_YAML)
    values["dagsterDaemon"]["runMonitoring"]["freeSlotsAfterRunEndSecond"] = 60
    assert _unknown_keys(values, HELM_KEYS) == ["dagsterDaemon.runMonitoring.freeSlotsAfterRunEndSecond"]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def rendered_instance_config(values: dict[str, Any]) -> dict[str, Any]:
    """The instance sections the chart's configmap-instance.yaml renders from ``values``."""
    daemon = values["dagsterDaemon"]
    pg = values["postgresql"]
    storage = {"postgres_db": {
        "username": pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"],
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg["postgresqlParams"],
        "scheme": pg["postgresqlScheme"],
    }}
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    concurrency = values["concurrency"]
    gcs_logs = values["computeLogManager"]["config"]["gcsComputeLogManager"]
    return {
        "run_storage": {"module": "dagster_postgres.run_storage", "class": "PostgresRunStorage", "config": storage},
        "event_log_storage": {"module": "dagster_postgres.event_log", "class": "PostgresEventLogStorage", "config": storage},
        "schedule_storage": {"module": "dagster_postgres.schedule_storage", "class": "PostgresScheduleStorage", "config": storage},
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": {
            "image_pull_policy": launcher["imagePullPolicy"],
            "load_incluster_config": launcher["loadInclusterConfig"],
            "env_secrets": [secret["name"] for secret in launcher["envSecrets"]],
            "resources": launcher["resources"],
            "fail_pod_on_run_failure": launcher["failPodOnRunFailure"],
        }},
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator", "config": {
            _snake(k): v for k, v in daemon["runCoordinator"]["config"]["queuedRunCoordinator"].items()}},
        "compute_logs": {"module": "dagster_gcp.gcs.compute_log_manager", "class": "GCSComputeLogManager",
                         "config": {_snake(k): v for k, v in gcs_logs.items()}},
        "concurrency": {
            "pools": {_snake(k): v for k, v in concurrency["pools"].items()},
            "runs": {
                "max_concurrent_runs": concurrency["runs"]["maxConcurrentRuns"],
                "tag_concurrency_limits": concurrency["runs"]["tagConcurrencyLimits"],
            },
        },
        "run_monitoring": {_snake(k): v for k, v in daemon["runMonitoring"].items()},
        "run_retries": {_snake(k): v for k, v in daemon["runRetries"].items()},
        "sensors": {_snake(k): v for k, v in daemon["sensors"].items()},
        "schedules": {_snake(k): v for k, v in daemon["schedules"].items()},
        "retention": {kind: {"purge_after_days": values["retention"][kind]["purgeAfterDays"]}
                      for kind in ("sensor", "schedule")},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }


def test_helm_instance_is_valid_for_dagster(tmp_path):
    """What the chart renders from the values passes Dagster's instance schema."""
    config = rendered_instance_config(_yaml(VALUES_YAML))
    config.pop("compute_logs")  # checked against the emulator below
    instance = _instance_from(_offline(config, tmp_path), tmp_path / "home")
    try:
        assert instance.run_retries_retry_on_asset_or_op_failure is False
        assert instance.get_concurrency_config().pool_config.pool_granularity.value == "op"
    finally:
        instance.dispose()


@pytest.mark.gcs
def test_helm_compute_logs_go_to_gcs(gcs_emulator_env, tmp_path):
    from tests.plugins.gcs import make_gcs_store

    config = rendered_instance_config(_yaml(VALUES_YAML))
    bucket = config["compute_logs"]["config"]["bucket"]
    make_gcs_store(gcs_emulator_env, bucket=bucket)
    offline = _offline({"compute_logs": config["compute_logs"]}, tmp_path)
    instance = _instance_from(offline, tmp_path / "home")
    try:
        assert type(instance.compute_log_manager).__name__ == "GCSComputeLogManager"
    finally:
        instance.dispose()


def test_helm_values_mirror_the_instance_config():
    local, values = _yaml(INSTANCE_YAML), _yaml(VALUES_YAML)
    helm = rendered_instance_config(values)
    for section in ("run_retries", "retention", "sensors", "schedules", "telemetry"):
        assert helm[section] == local[section], section
    for key, value in local["run_monitoring"].items():
        if key != "max_runtime_seconds":  # not rendered by the chart
            assert helm["run_monitoring"][key] == value, key
    assert helm["concurrency"]["pools"]["granularity"] == local["concurrency"]["pools"]["granularity"]
    assert [limit["key"] for limit in helm["concurrency"]["runs"]["tag_concurrency_limits"]] == [
        limit["key"] for limit in local["concurrency"]["runs"]["tag_concurrency_limits"]
    ]
    db = helm["run_storage"]["config"]["postgres_db"]
    assert db["scheme"] == local["storage"]["postgres"]["postgres_db"]["scheme"]
    assert db["params"] == local["storage"]["postgres"]["postgres_db"]["params"]


def test_helm_values_hold_no_secret_and_launch_runs_on_kubernetes():
    values = _yaml(VALUES_YAML)
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["postgresql"]["postgresqlPassword"] == ""
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    queue = values["dagsterDaemon"]["runCoordinator"]
    assert queue["type"] == "QueuedRunCoordinator"
    # The chart refuses run limits both here and under `concurrency`.
    assert not {"maxConcurrentRuns", "tagConcurrencyLimits"} & set(queue["config"]["queuedRunCoordinator"])
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "pod_pipeline.definitions"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    assert {"name": "pod-secrets"} in deployment["envSecrets"]
    assert deployment["env"]["POD_STORAGE_URL"].startswith("gs://")
    assert "POD_DATABASE_URL" not in deployment["env"]  # it carries a password: pod-secrets
    images = {values[part]["image"]["repository"] for part in ("dagsterWebserver", "dagsterDaemon")}
    assert images == {deployment["image"]["repository"]}, "one image, one Dagster version"
    text = VALUES_YAML.read_text()
    assert not CREDENTIALS_IN_URL.search(text), "a URL with a password"


# --------------------------------------------------------------------------- deploy/Dockerfile


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"{path.name}: {line!r} is not pinned"
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_image_installs_from_the_lock_files_only():
    text = DOCKERFILE.read_text()
    install = next(line for line in text.splitlines() if "pip install -c constraints.txt" in line)
    assert "-r deploy/k8s/requirements.txt" in install
    assert "pip install --no-deps ." in text and "pip check" in text

    lock = _pins(REPO / "constraints.txt")
    extra = _pins(K8S_REQUIREMENTS)
    assert not set(extra) & set(lock), "a package pinned twice"
    assert extra["dagster-k8s"] == lock["dagster-postgres"] == lock["dagster-gcp"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in lock, f"{name} is not in constraints.txt"

    python = re.search(r"^FROM python:(\d+\.\d+)", text, re.M)
    assert python and python.group(1) == "3.11"
    for line in text.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), source
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored



def test_the_image_puts_whisper_base_together_before_it_drops_to_the_run_user():
    """The transcript step checks the second opinion's weights (``base``) when it starts;
    run pods run as a user who cannot write the image, so the weights are put together at
    build time, where POD_MODEL_CACHE points."""
    text = DOCKERFILE.read_text()
    cache = re.search(r"POD_MODEL_CACHE=(\S+)", text)
    assert cache and cache.group(1).startswith("/opt/pod/")
    build = text.index("resolve_model('base')")
    assert text.index("pip install --no-deps .") < build < text.index("USER 10001")

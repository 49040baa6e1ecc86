"""Per-run settings of ``pod run --episode``: ``--set ASSET.KEY=VALUE`` and ``--config FILE``.

They become the run config the launchpad in the UI takes, ``{"ops": {asset: {"config":
{key: value}}}}``, and are checked before any run starts: an unknown step or key, a value of
the wrong type, or a setting of a step the run does not execute is one line naming it (and
what is allowed), never a failed run.

``--config FILE`` holds YAML (or JSON) in the launchpad's form (``ops:`` at the top); each
``--set`` then overrides one key of it. A value is read as YAML: ``500`` is a number,
``false`` a boolean, ``null`` clears an optional setting, anything else is text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from pod_pipeline.console import PodError
from pod_pipeline.settings import Settings

RunConfig = dict[str, Any]


def _fields(job: dg.JobDefinition) -> dict[str, list[str]]:
    """The settings of each step of ``job`` that has any: ``{asset: [key, …]}``."""
    fields: dict[str, list[str]] = {}
    for node in job.graph.nodes:
        schema = node.definition.config_schema
        config_type = schema.config_type if schema is not None else None
        if config_type is not None and getattr(config_type, "fields", None):
            fields[node.name] = sorted(config_type.fields)
    return fields


def parse_assignment(text: str) -> tuple[str, str, Any]:
    """``"cleaned_audio.max_pause_ms=500"`` -> ``("cleaned_audio", "max_pause_ms", 500)``."""
    name, equals, raw = text.partition("=")
    step, dot, key = name.strip().partition(".")
    if not equals or not dot or not step or not key:
        raise PodError(f"--set {text}: expected STEP.KEY=VALUE, e.g. cleaned_audio.max_pause_ms=500")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise PodError(f"--set {text}: the value is not readable: {exc}") from exc
    return step, key, value


def read_config_file(path: Path) -> RunConfig:
    """The run config in ``path`` (launchpad form: ``ops:`` at the top)."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise PodError(f"--config {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise PodError(f"--config {path}: not YAML: {str(exc).splitlines()[0]}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict) or set(loaded) - {"ops"}:
        raise PodError(f"--config {path}: expected the launchpad's form, `ops:` at the top "
                       "(e.g. ops: {cleaned_audio: {config: {max_pause_ms: 500}}})")
    return loaded


def _merge(config: RunConfig, assignments: Sequence[tuple[str, str, Any]]) -> RunConfig:
    ops = {step: dict(body or {}) for step, body in (config.get("ops") or {}).items()}
    for step, key, value in assignments:
        ops.setdefault(step, {}).setdefault("config", {})
        ops[step]["config"] = {**(ops[step]["config"] or {}), key: value}
    return {"ops": ops} if ops else {}


def _check_names(config: RunConfig, fields: Mapping[str, list[str]], steps: Sequence[str] | None) -> None:
    for step, body in (config.get("ops") or {}).items():
        if step not in fields:
            raise PodError(f"unknown step {step!r} in the settings; steps with settings: "
                           f"{', '.join(sorted(fields))}")
        if steps and step not in steps:
            raise PodError(f"settings for {step}, but the run executes only {', '.join(steps)}")
        if not isinstance(body, dict) or set(body) - {"config"}:
            raise PodError(f"ops.{step}: expected `config:` and the settings under it")
        unknown = sorted(set(body.get("config") or {}) - set(fields[step]))
        if unknown:
            raise PodError(f"unknown setting {step}.{unknown[0]}; {step} takes "
                           f"{', '.join(fields[step])}")


def _check_values(job: dg.JobDefinition, config: RunConfig) -> None:
    try:
        dg.validate_run_config(job, config)
    except dg.DagsterInvalidConfigError as exc:
        error = exc.errors[0]
        where = ".".join(
            part for part in _path(error.stack) if part not in ("ops", "config")
        )
        # "Invalid scalar at path root:ops:…. Value "abc" … is not valid for expected type …"
        head, _, detail = error.message.partition(". ")
        raise PodError(f"setting {where}: {detail if ' at path ' in head else error.message}") from exc


def _path(stack: object) -> list[str]:
    parts: list[str] = []
    entry = stack
    while entry is not None:
        name = getattr(entry, "field_name", None)
        if name is not None:
            parts.append(str(name))
        entry = getattr(entry, "parent", None)
    return list(reversed(parts))


def build_run_config(
    job: dg.JobDefinition,
    *,
    assignments: Sequence[str] = (),
    config_file: Path | None = None,
    steps: Sequence[str] | None = None,
) -> RunConfig:
    """The checked run config of ``--config FILE`` and ``--set`` assignments for ``job``
    (empty when none is given). Raises :class:`PodError` with one line naming the problem."""
    config = read_config_file(config_file) if config_file else {}
    config = _merge(config, [parse_assignment(text) for text in assignments])
    if not config:
        return {}
    _check_names(config, _fields(job), steps)
    _check_values(job, config)
    return config


def episode_run_config(
    settings: Settings,
    assignments: Sequence[str],
    config_file: Path | None,
    steps: Sequence[str] | None,
) -> RunConfig:
    """:func:`build_run_config` for the episode job of the definitions of ``settings``."""
    if not assignments and config_file is None:
        return {}
    from pod_pipeline.definitions import build_definitions
    from pod_pipeline.runner import EPISODE_JOB

    job = build_definitions(settings).resolve_job_def(EPISODE_JOB)
    return build_run_config(job, assignments=assignments, config_file=config_file, steps=steps)

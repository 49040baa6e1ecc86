"""What every episode asset shares: how it is defined, the name of its step, and how its
numbers are kept.

- :func:`episode_asset` defines a step of an episode: one partition per episode, in the
  ``episodes`` group, retried on transient errors (:data:`pod_assets.status.TRANSIENT_RETRY_POLICY`),
  its checks blocking.
- :func:`step_name` is the asset's key (``raw_audio``, ``final_episode``…): the name
  :func:`pod_assets.status.episode_step` records an error under is the asset's own.
- :func:`record_metrics` records a step's numbers in the catalog and returns the same
  numbers as the materialization's metadata, so the UI and ``pod status`` never disagree.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Mapping

import dagster as dg

from pod_assets.partitions import episode_partitions
from pod_assets.status import TRANSIENT_RETRY_POLICY
from pod_resources.catalog import Catalog

Metric = float | int
"""A finite number, as the catalog stores an episode's metrics."""


def episode_asset(
    *,
    kinds: set[str],
    deps: Iterable[dg.AssetsDefinition] = (),
    pool: str | None = None,
    checks: Mapping[str, str] | None = None,
) -> Callable[[Callable[..., dg.MaterializeResult]], dg.AssetsDefinition]:
    """``dg.asset`` for one step of an episode; ``checks`` maps each blocking check's name to
    its description."""

    def define(body: Callable[..., dg.MaterializeResult]) -> dg.AssetsDefinition:
        return dg.asset(
            name=body.__name__,
            partitions_def=episode_partitions,
            deps=list(deps),
            group_name="episodes",
            kinds=kinds,
            retry_policy=TRANSIENT_RETRY_POLICY,
            pool=pool,
            check_specs=[
                dg.AssetCheckSpec(name, asset=body.__name__, blocking=True, description=description)
                for name, description in (checks or {}).items()
            ],
        )(body)

    return define


def step_name(context: dg.AssetExecutionContext) -> str:
    """The episode step ``context`` runs: its asset's key."""
    return context.asset_key.to_user_string()


def record_metrics(
    catalog: Catalog,
    episode_id: str,
    metrics: Mapping[str, Metric],
    *,
    shown_as: Mapping[str, str] | None = None,
) -> dict[str, dg.MetadataValue]:
    """Record ``metrics`` as the episode's and return them as metadata entries: the same
    values under the same names, but where ``shown_as`` gives the name the UI shows a
    metric under."""
    catalog.record_metrics(episode_id, metrics)
    names = shown_as or {}
    return {names.get(name, name): _metadata_value(value) for name, value in metrics.items()}


def _metadata_value(value: Metric) -> dg.MetadataValue:
    if isinstance(value, numbers.Integral):
        return dg.MetadataValue.int(int(value))
    return dg.MetadataValue.float(float(value))

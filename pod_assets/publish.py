"""Publishing: ``processed`` episodes become ``published``; anything else is refused.

:func:`publish_episodes` is the rule (no Dagster); ``publish_job`` runs it from the UI
with the episode ids as config, and ``pod publish EPISODE_ID…`` runs that job.
Reprocessing a published episode (a backfill) moves it back to ``processing`` and then
``processed``, like any other reprocessing.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import dagster as dg
from pydantic import Field

from pod_resources.catalog import Catalog, CatalogResource, EpisodeStatus


@dataclass(frozen=True)
class PublishOutcome:
    episode_id: str
    published: bool
    reason: str | None = None
    """Why it was refused; ``None`` when published."""


def _refusal(catalog: Catalog, episode_id: str) -> str | None:
    episode = catalog.get_episode(episode_id)
    if episode is None:
        return "not in the catalog"
    if episode.status is EpisodeStatus.PUBLISHED:
        return "already published"
    if episode.status is not EpisodeStatus.PROCESSED:
        return f"status is {episode.status}; only processed episodes can be published"
    return None


def publish_episodes(
    catalog: Catalog, episode_ids: Iterable[str], *, at: datetime | None = None
) -> list[PublishOutcome]:
    """Move each episode from ``processed`` to ``published`` (compare-and-set), in order.

    Each id is handled on its own: one refusal does not stop the others. ``at`` is the
    time recorded for the change (default: now).
    """
    outcomes: list[PublishOutcome] = []
    for episode_id in dict.fromkeys(episode_ids):
        reason = _refusal(catalog, episode_id)
        if reason is None:
            if catalog.set_status(
                episode_id, expected=EpisodeStatus.PROCESSED, new=EpisodeStatus.PUBLISHED, at=at
            ):
                outcomes.append(PublishOutcome(episode_id, published=True))
                continue
            now = _refusal(catalog, episode_id)
            reason = "changed while publishing" + (f": {now}" if now else "")
        outcomes.append(PublishOutcome(episode_id, published=False, reason=reason))
    return outcomes


class PublishConfig(dg.Config):
    episode_ids: list[str] = Field(description="Episodes to publish; each must be processed.")


def _outcome_table(outcomes: list[PublishOutcome]) -> dg.TableMetadataValue:
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                {
                    "episode_id": o.episode_id,
                    "result": "published" if o.published else "refused",
                    "reason": o.reason or "",
                }
            )
            for o in outcomes
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("episode_id"),
                dg.TableColumn("result"),
                dg.TableColumn("reason"),
            ]
        ),
    )


@dg.op(
    name="publish_episodes",
    out=dg.Out(list[PublishOutcome], description="One outcome per requested episode."),
)
def publish_episodes_op(
    context: dg.OpExecutionContext, config: PublishConfig, catalog: CatalogResource
):
    """Publishes processed episodes. The run fails, after publishing the others, when any
    requested episode is not ``processed``."""
    outcomes = publish_episodes(catalog.get_catalog(), config.episode_ids)
    refused = [o for o in outcomes if not o.published]
    for outcome in outcomes:
        if outcome.published:
            context.log.info(f"published {outcome.episode_id}")
        else:
            context.log.error(f"refused to publish {outcome.episode_id}: {outcome.reason}")
    yield dg.Output(
        outcomes,
        metadata={
            "published": dg.MetadataValue.int(len(outcomes) - len(refused)),
            "refused": dg.MetadataValue.int(len(refused)),
            "episodes": _outcome_table(outcomes),
        },
    )
    if refused:
        raise dg.Failure(
            description="; ".join(f"{o.episode_id}: {o.reason}" for o in refused),
            allow_retries=False,
        )


@dg.job(
    name="publish_job",
    description="Moves processed episodes to published (config: episode_ids).",
    tags={"pod/job": "publish"},
)
def publish_job() -> None:
    publish_episodes_op()

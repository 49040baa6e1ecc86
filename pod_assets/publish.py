"""Publishing: ``processed`` episodes become ``published``; anything else is refused.

:func:`publish_episodes` is the rule (no Dagster); ``publish_job`` runs it from the UI
with the episode ids as config, and ``pod publish EPISODE_ID…`` runs that job.
Reprocessing a published episode (a backfill) moves it back to ``processing`` and then
``processed``, like any other reprocessing.

Versions: different bytes under the name of an existing episode are a new episode, version
n of it (``<id>-v<n>``). Publishing a version takes over: in the same transaction the version
of that name that was published becomes ``superseded`` (``superseded_by`` names the new one)
and keeps its objects; its raw media goes with the retention like any finished episode's.
At most one version of a name is ever ``published``.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import dagster as dg
from pydantic import Field

from pod_assets import layout
from pod_resources.catalog import Catalog, CatalogResource, Episode, EpisodeStatus


@dataclass(frozen=True)
class PublishOutcome:
    episode_id: str
    published: bool
    reason: str | None = None
    """Why it was refused; ``None`` when published."""
    superseded: tuple[str, ...] = ()
    """The version of the same upload name that was published before and is now superseded."""


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
            publication = catalog.publish(episode_id, at=at)
            if publication.published:
                outcomes.append(
                    PublishOutcome(episode_id, published=True, superseded=publication.superseded)
                )
                continue
            now = _refusal(catalog, episode_id)
            reason = "changed while publishing" + (f": {now}" if now else "")
        outcomes.append(PublishOutcome(episode_id, published=False, reason=reason))
    return outcomes


def describe_outcome(outcome: PublishOutcome) -> str:
    """One line for the terminal and the run log."""
    if not outcome.published:
        return f"refused to publish {outcome.episode_id}: {outcome.reason}"
    if outcome.superseded:
        return f"published {outcome.episode_id}; superseded {', '.join(outcome.superseded)}"
    return f"published {outcome.episode_id}"


def version_note(catalog: Catalog, episode: Episode) -> str | None:
    """For an episode that is a later version of an upload name: one line saying what it
    means for the published version, if there is one; ``None`` otherwise."""
    if episode.version == 1:
        return None
    live = [
        e.episode_id
        for e in catalog.versions(episode.root_id)
        if e.status is EpisodeStatus.PUBLISHED and e.episode_id != episode.episode_id
    ]
    if not live:
        return None
    return (
        f"{episode.episode_id} is version {episode.version} of published episode {live[0]}: "
        f"processed beside it; {live[0]} stays published until `pod publish {episode.episode_id}`"
    )


def ingest_note(catalog: Catalog, object_name: str, content_md5: str | None) -> str | None:
    """Before the upload sensor sees it: one line when an upload under ``object_name`` with
    these bytes will be a new version of a published episode; ``None`` otherwise."""
    root_id = layout.episode_id_for(object_name)
    chain = catalog.versions(root_id)
    if not chain or content_md5 is None or catalog.episode_with_content(content_md5):
        return None  # a new episode, or a duplicate: no version
    live = [e.episode_id for e in chain if e.status is EpisodeStatus.PUBLISHED]
    if not live:
        return None
    return (
        f"{layout.printable(object_name)} is a new version of published episode {live[0]}: "
        f"`pod run` processes it beside {live[0]}, which stays published until the new "
        "version is published"
    )


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
                    "superseded": ", ".join(o.superseded),
                }
            )
            for o in outcomes
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("episode_id"),
                dg.TableColumn("result"),
                dg.TableColumn("reason"),
                dg.TableColumn("superseded"),
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
            context.log.info(describe_outcome(outcome))
        else:
            context.log.error(describe_outcome(outcome))
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

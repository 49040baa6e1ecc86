"""Publishing: ``processed`` episodes become ``published``; anything else is refused.

:func:`publish_episodes` is the rule (no Dagster); ``publish_job`` runs it from the UI
with the episode ids as config, and ``pod publish EPISODE_ID…`` runs that job.
Reprocessing a published episode (a backfill, ``pod run --episode``) moves it to
``processing`` and, when its last step succeeds, back to ``published``
(:func:`republish_after_reprocess`): its files are rewritten in place and the feed refreshed,
with the same guid and first publication date. It stays in the feed while it is reprocessed
(:func:`listed_episodes`). ``pod unpublish`` (``unpublish_job``) takes a published episode
out (``published -> processed``); a reprocess then ends ``processed``. A reprocess that
fails leaves the episode in ``error``, out of the feed, until a reprocess succeeds.

Versions: different bytes under the name of an existing episode are a new episode, version
n of it (``<id>-v<n>``). Publishing a version takes over: in the same transaction the version
of that name that was published becomes ``superseded`` (``superseded_by`` names the new one)
and keeps its objects; its raw media goes with the retention like any finished episode's.
At most one version of a name is ever ``published``.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from pod_assets import layout
from pod_resources.catalog import Catalog, CatalogResource, Episode, EpisodeStatus, queries


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


FIRST_PUBLISHED_METRIC = "first_published_unix_s"
"""When an episode was first published (seconds since the epoch; the feed's pubDate). Kept
in the episode's metrics, so it survives reprocessing and a catalog rebuild."""


def first_published_at(catalog: Catalog, episode: Episode) -> datetime:
    """The episode's first publication: the recorded metric, else its history, else the
    time of its status."""
    stamp = episode.metrics.get(FIRST_PUBLISHED_METRIC)
    if stamp is not None:
        return datetime.fromtimestamp(float(stamp), tz=UTC)
    published = [h.at for h in catalog.history(episode.episode_id) if h.to_status == EpisodeStatus.PUBLISHED]
    return min(published) if published else episode.status_changed_at


def _began_published(history: list) -> bool:
    """Whether the stretch of processing (failed attempts included) that ``history`` ends
    with began from ``published``."""
    for change in reversed(history):
        if change.from_status in (EpisodeStatus.PROCESSING, EpisodeStatus.ERROR):
            continue
        return change.from_status == EpisodeStatus.PUBLISHED
    return False


def republish_after_reprocess(catalog: Catalog, episode_id: str) -> bool:
    """A ``processed`` episode whose reprocessing began from ``published`` is published
    again, unless another version of its name was published meanwhile; whether it was."""
    episode = catalog.get_episode(episode_id)
    if episode is None or episode.status is not EpisodeStatus.PROCESSED:
        return False
    history = catalog.history(episode_id)
    if not history or history[-1].from_status != EpisodeStatus.PROCESSING:
        return False
    if not _began_published(history[:-1]):
        return False
    if any(e.status is EpisodeStatus.PUBLISHED for e in catalog.versions(episode.root_id)):
        return False
    return catalog.publish(episode_id).published


def listed_episodes(catalog: Catalog) -> list[Episode]:
    """The episodes the feed lists: ``published`` ones, and ones being reprocessed after
    their publication (they keep their place while their files are rewritten)."""
    listed = queries.EpisodeFilter(
        statuses=frozenset({EpisodeStatus.PUBLISHED, EpisodeStatus.PROCESSING})
    )
    return [
        e for e in queries.iter_episodes(catalog, listed, limit=None)  # a page at a time
        if e.status is EpisodeStatus.PUBLISHED
        or (e.status is EpisodeStatus.PROCESSING and _began_published(catalog.history(e.episode_id)))
    ]


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
                _remember_first_publication(catalog, episode_id)
                outcomes.append(
                    PublishOutcome(episode_id, published=True, superseded=publication.superseded)
                )
                continue
            now = _refusal(catalog, episode_id)
            reason = "changed while publishing" + (f": {now}" if now else "")
        outcomes.append(PublishOutcome(episode_id, published=False, reason=reason))
    return outcomes


def _remember_first_publication(catalog: Catalog, episode_id: str) -> None:
    episode = catalog.get_episode(episode_id)
    if episode is not None and FIRST_PUBLISHED_METRIC not in episode.metrics:
        when = first_published_at(catalog, episode)
        catalog.record_metrics(episode_id, {FIRST_PUBLISHED_METRIC: when.timestamp()})


def unpublish_episodes(catalog: Catalog, episode_ids: Iterable[str]) -> list[PublishOutcome]:
    """Take each ``published`` episode out of the feed (``published -> processed``, compare-
    and-set); ``published`` in an outcome means it was taken out. Its objects, guid and first
    publication date stay: publishing it again puts it back as it was."""
    outcomes = []
    for episode_id in dict.fromkeys(episode_ids):
        episode = catalog.get_episode(episode_id)
        if episode is None:
            reason = "not in the catalog"
        elif episode.status is EpisodeStatus.PROCESSING:
            reason = "it is being reprocessed; unpublish it when that finishes"
        elif episode.status is not EpisodeStatus.PUBLISHED:
            reason = f"status is {episode.status}; only published episodes can be unpublished"
        elif catalog.set_status(episode_id, expected=EpisodeStatus.PUBLISHED, new=EpisodeStatus.PROCESSED):
            outcomes.append(PublishOutcome(episode_id, published=True))
            continue
        else:
            reason = "changed while unpublishing"
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


def _one_op_job(op: dg.OpDefinition, *, name: str, description: str, tag: str) -> dg.JobDefinition:
    """A job that runs ``op`` once, tagged ``pod/job=<tag>``."""
    return dg.GraphDefinition(name=name, node_defs=[op], description=description).to_job(
        tags={"pod/job": tag}
    )


publish_job = _one_op_job(
    publish_episodes_op,
    name="publish_job",
    description="Moves processed episodes to published (config: episode_ids).",
    tag="publish",
)


class UnpublishConfig(dg.Config):
    episode_ids: list[str] = Field(description="Episodes to take out of the feed; each must be published.")


@dg.op(
    name="unpublish_episodes",
    out=dg.Out(list[PublishOutcome], description="One outcome per requested episode."),
)
def unpublish_episodes_op(
    context: dg.OpExecutionContext, config: UnpublishConfig, catalog: CatalogResource
):
    """Takes published episodes out of the feed (``published -> processed``). The run fails,
    after the others, when any requested episode is not ``published``."""
    outcomes = unpublish_episodes(catalog.get_catalog(), config.episode_ids)
    refused = [o for o in outcomes if not o.published]
    for outcome in outcomes:
        if outcome.published:
            context.log.info(f"unpublished {outcome.episode_id}")
        else:
            context.log.error(f"refused to unpublish {outcome.episode_id}: {outcome.reason}")
    yield dg.Output(
        outcomes,
        metadata={
            "unpublished": dg.MetadataValue.int(len(outcomes) - len(refused)),
            "refused": dg.MetadataValue.int(len(refused)),
        },
    )
    if refused:
        raise dg.Failure(
            description="; ".join(f"{o.episode_id}: {o.reason}" for o in refused), allow_retries=False
        )


unpublish_job = _one_op_job(
    unpublish_episodes_op,
    name="unpublish_job",
    description="Takes published episodes out of the feed (config: episode_ids).",
    tag="unpublish",
)

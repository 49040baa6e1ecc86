"""``chapter_marks_sensor``: chapter marks dropped after their episode was processed.

A producer may drop ``uploads/<name>.chapters.txt|.json`` after ``<name>`` went through the
pipeline. For each sidecar it has not seen at this generation whose upload is a finished
episode (``processed`` or ``published``; the latest version of the name), it requests one
run of the ``chapters`` step of that episode (run key ``chapters:<ep>@<generation>``). A
sidecar whose episode is still on its way waits: that episode's own run takes it.
"""

import json

import dagster as dg

from pod_assets import layout
from pod_assets.jobs import process_episode_job
from pod_assets.tags import TRIGGER_TAG
from pod_resources.catalog import Catalog, CatalogResource, Episode, EpisodeStatus
from pod_resources.storage import ObjectStore

_FINISHED = frozenset({EpisodeStatus.PROCESSED, EpisodeStatus.PUBLISHED})


def episode_for_sidecar(catalog: Catalog, sidecar_name: str) -> Episode | None:
    """The latest version of the upload a sidecar belongs to (by full name, else by stem)."""
    base = sidecar_name.rsplit(".chapters.", 1)[0]
    versions = catalog.versions(layout.episode_id_for(base))
    if not versions:
        versions = [
            e for e in catalog.list_episodes()
            if e.source_name.rsplit(".", 1)[0] == base and e.version == 1
        ][:1]
        versions = catalog.versions(versions[0].episode_id) if versions else []
    return max(versions, key=lambda e: e.version) if versions else None


@dg.sensor(
    name="chapter_marks_sensor",
    job=process_episode_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def chapter_marks_sensor(
    context: dg.SensorEvaluationContext, store: ObjectStore, catalog: CatalogResource
) -> dg.SensorResult:
    """Runs the chapters step of a finished episode when its chapter marks arrive late."""
    seen = json.loads(context.cursor or "{}")
    cat = catalog.get_catalog()
    requests = []
    for info in store.list(layout.UPLOADS_PREFIX):
        name = info.key.removeprefix(layout.UPLOADS_PREFIX)
        if not layout.is_chapter_sidecar(name) or seen.get(name) == info.generation:
            continue
        episode = episode_for_sidecar(cat, name)
        if episode is None or episode.status not in _FINISHED:
            continue  # no episode yet, or its own run will take the marks
        seen[name] = info.generation
        requests.append(
            dg.RunRequest(
                run_key=f"chapters:{episode.episode_id}@{info.generation}",
                partition_key=episode.episode_id,
                asset_selection=[dg.AssetKey("chapters")],
                tags={TRIGGER_TAG: "chapter_marks"},
            )
        )
    return dg.SensorResult(
        run_requests=requests,
        cursor=json.dumps(seen, sort_keys=True),
        skip_reason=None if requests else "no new chapter marks for finished episodes",
    )

"""``purge_job``: the retention-aware purge of raw media, as a Dagster job.

The decisions live in :mod:`pod_assets.purge.plan` and :mod:`pod_assets.purge.execute`; this
op adds what the UI shows: an
``AssetObservation`` on ``raw_audio`` for every purged partition (bytes freed, objects
deleted) and, on the op's output, the counts and a table of what the run did.
The schedule and the sensor that launch it are in :mod:`pod_sensors.purge`.
"""

from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from pod_assets import defaults
from pod_assets.purge.execute import purge
from pod_assets.purge.plan import parse_time, retention_from_hours
from pod_assets.purge.report import DeletedEpisode, PurgeReport
from pod_resources.catalog import CatalogResource
from pod_resources.storage import ObjectStore

PURGE_OP = "purge_raw_media"
_TABLE_ROWS = 200


class PurgeConfig(dg.Config):
    retention_hours: float = Field(
        default=defaults.PURGE_RETENTION_HOURS,
        ge=0,
        description="Raw media of episodes finished longer ago than this is deleted.",
    )
    dry_run: bool = Field(
        default=True,
        description="Report what would go; delete nothing. True by default so that a run "
        "launched by hand deletes only when asked; the schedule and the sensor pass false.",
    )
    max_deletions: int | None = Field(
        default=defaults.PURGE_MAX_DELETIONS,
        ge=0,
        description="At most this many episodes lose their raw media per run (null: no cap).",
    )
    now: str | None = Field(
        default=None,
        description="ISO 8601 time the retention is measured from (default: the run's start).",
    )


def purge_run_config(
    *,
    now: datetime | None = None,
    retention_hours: float = defaults.PURGE_RETENTION_HOURS,
    dry_run: bool = False,
    max_deletions: int | None = defaults.PURGE_MAX_DELETIONS,
) -> dict:
    """Run config of ``purge_job`` (used by the schedule, the sensor and ``pod purge``).

    Every field is given, ``dry_run`` false unless asked: the job's own default (the
    launchpad's) is a dry run."""
    config = {
        "retention_hours": float(retention_hours),
        "dry_run": dry_run,
        "max_deletions": max_deletions,
        "now": None if now is None else now.astimezone(UTC).isoformat(),
    }
    return {"ops": {PURGE_OP: {"config": config}}}


def _observation(entry: DeletedEpisode, *, retention_hours: float) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key="raw_audio",
        partition=entry.episode_id,
        description="raw media deleted by the retention purge",
        metadata={
            "purged": dg.MetadataValue.bool(True),
            "bytes_freed": dg.MetadataValue.int(entry.bytes),
            "objects_deleted": dg.MetadataValue.int(len(entry.objects)),
            "objects": dg.MetadataValue.json(list(entry.objects)),
            "purged_at": dg.MetadataValue.timestamp(entry.purged_at),
            "status": dg.MetadataValue.text(str(entry.status)),
            "retention_hours": dg.MetadataValue.float(float(retention_hours)),
        },
    )


def _row(episode_id: str, action: str, detail: str, *, objects: int = 0, size: int = 0) -> dict:
    return {
        "episode_id": episode_id,
        "action": action,
        "objects": objects,
        "bytes": size,
        "detail": detail,
    }


def _action_rows(report: PurgeReport) -> list[dict]:
    deleted = "would delete" if report.dry_run else "deleted"
    return [
        *(
            _row(e.episode_id, deleted, ", ".join(e.objects), objects=len(e.objects), size=e.bytes)
            for e in report.deleted
        ),
        *(
            _row(f.episode_id, "failed", f"{f.key}: {f.error}" if f.key else f.error)
            for f in report.failed
        ),
        *(_row(s.episode_id, "skipped by race", s.reason) for s in report.skipped_by_race),
        *(_row(k.episode_id, "kept", k.reason) for k in report.kept),
    ]


def report_metadata(report: PurgeReport) -> dict[str, dg.MetadataValue]:
    """Counts and a table of what the run did, for the op's output."""
    rows = _action_rows(report)
    table = dg.MetadataValue.table(
        records=[dg.TableRecord(row) for row in rows[:_TABLE_ROWS]],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("episode_id"),
                dg.TableColumn("action"),
                dg.TableColumn("objects", "int"),
                dg.TableColumn("bytes", "int"),
                dg.TableColumn("detail"),
            ]
        ),
    )
    return {
        "dry_run": dg.MetadataValue.bool(report.dry_run),
        "now": dg.MetadataValue.timestamp(report.now),
        "retention_hours": dg.MetadataValue.float(report.retention.total_seconds() / 3600),
        "eligible": dg.MetadataValue.int(report.eligible),
        "deleted": dg.MetadataValue.int(0 if report.dry_run else len(report.deleted)),
        "would_delete": dg.MetadataValue.int(len(report.deleted) if report.dry_run else 0),
        "skipped_by_race": dg.MetadataValue.int(len(report.skipped_by_race)),
        "failed": dg.MetadataValue.int(len(report.failed)),
        "kept": dg.MetadataValue.int(report.kept_total),
        "kept_by_reason": dg.MetadataValue.json(dict(sorted(report.kept_counts.items()))),
        "bytes_freed": dg.MetadataValue.int(report.bytes_freed),
        "objects_deleted": dg.MetadataValue.int(report.objects_deleted),
        "actions": table,
    }


@dg.op(
    name=PURGE_OP,
    out=dg.Out(PurgeReport, description="What the purge deleted, kept, skipped and failed."),
    tags={"pod/purge": "raw_media"},
)
def purge_raw_media(
    context: dg.OpExecutionContext,
    config: PurgeConfig,
    store: ObjectStore,
    catalog: CatalogResource,
):
    """Deletes the raw media of episodes finished longer ago than the retention.

    Only ``processed`` and ``published`` episodes; never transcripts, cleaned audio, final
    episodes or partitions. A failed deletion is logged and retried by the next run; it
    does not fail this one.
    """
    now = parse_time(config.now) if config.now else datetime.now(UTC)
    retention = retention_from_hours(config.retention_hours)

    def observe(entry: DeletedEpisode) -> None:
        context.log_event(_observation(entry, retention_hours=config.retention_hours))

    report = purge(
        catalog.get_catalog(),
        store,
        now=now,
        retention=retention,
        dry_run=config.dry_run,
        max_deletions=config.max_deletions,
        on_deleted=observe,
    )
    for failure in report.failed:
        where = f" ({failure.key})" if failure.key else ""
        context.log.error(
            f"raw media of {failure.episode_id} not purged{where}: {failure.error}; "
            "the next purge tries again"
        )
    for skipped in report.skipped_by_race:
        context.log.warning(f"raw media of {skipped.episode_id} kept: {skipped.reason}")
    verb = "would delete" if report.dry_run else "deleted"
    context.log.info(
        f"purge at {report.now.isoformat()} (retention {config.retention_hours} h): "
        f"{report.eligible} eligible, {verb} {len(report.deleted)}, "
        f"{len(report.skipped_by_race)} skipped by race, {len(report.failed)} failed, "
        f"{report.bytes_freed} bytes freed"
    )
    return dg.Output(report, metadata=report_metadata(report))


def build_purge_job(
    *,
    retention_hours: float = defaults.PURGE_RETENTION_HOURS,
    max_deletions: int | None = defaults.PURGE_MAX_DELETIONS,
) -> dg.JobDefinition:
    """``purge_job`` whose launchpad starts from the configured retention and cap, as a dry
    run (the schedule, the sensor and ``pod purge`` pass their own full config)."""

    @dg.job(
        name="purge_job",
        description=(
            "Deletes raw media of processed/published episodes older than the retention "
            "(config: retention_hours, dry_run, max_deletions, now; the launchpad starts "
            "as a dry run)."
        ),
        tags={"pod/job": "purge"},
        config=purge_run_config(
            retention_hours=retention_hours, max_deletions=max_deletions, dry_run=True
        ),
    )
    def purge_job() -> None:
        purge_raw_media()

    return purge_job


purge_job = build_purge_job()

"""``pod``: the headless way to run the pipeline.

    pod ingest FILE… [--title T]   copy files into uploads/ of the configured store
    pod run                        one upload-sensor tick, then every requested run
    pod run --episode ID… [--step S…]
                                   run known episodes again (all steps, or only S)
    pod status [--json]            one line (or JSON object) per episode
    pod publish EPISODE_ID…        processed episodes become published (publish_job)
    pod purge [--dry-run] [--now ISO8601] [--retention-hours H] [--json]
                                   delete raw media past the retention (purge_job)
    pod catalog rebuild [--dry-run] [--json]
                                   restore missing episodes from the store's objects
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pod_pipeline.settings import Settings, adopt_served_settings, load_settings

ARTIFACT_STAGES = (
    "raw_audio",
    "transcript",
    "cleaned_audio",
    "cut_list",
    "cleaned_transcript",
    "final_episode",
)


def _prepare_dagster_home(settings: Settings) -> None:
    """Embedded default: a Dagster home with SQLite storage under ``POD_HOME``."""
    if not os.environ.get("DAGSTER_HOME"):
        settings.dagster_home.mkdir(parents=True, exist_ok=True)
        os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    else:
        Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)


def _catalog(settings: Settings):
    """The catalog itself, unguarded (``main`` runs the guard first for the commands that
    need it; ``pod catalog rebuild`` must open an empty one)."""
    from pod_resources.catalog import Catalog

    return Catalog(settings.database_url())


def _guarded_catalog(settings: Settings):
    """The catalog as the definitions bind it: refused when it is empty while the store
    holds episodes (checked once per process), writing episode manifests."""
    from pod_resources import build_defs

    return build_defs(settings).resources["catalog"].get_catalog()


def _store(settings: Settings):
    from pod_resources import build_defs

    return build_defs(settings).resources["store"]


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from pod_assets import layout

    store = _store(settings)
    for raw in args.files:
        path = Path(raw)
        if not path.is_file():
            print(f"pod ingest: {raw}: no such file", file=sys.stderr)
            return 2
        metadata = {"title": args.title} if args.title else None
        info = store.write_file(layout.upload_key(path.name), path, metadata=metadata)
        print(f"ingested {path.name} -> {store.uri(info.key)} (generation {info.generation})")
        _print_ingest_note(settings, path.name, info.md5_hex)
    return 0


def _print_ingest_note(settings: Settings, name: str, md5_hex: str | None) -> None:
    """Say when the upload will be a new version of a published episode (best effort)."""
    from pod_assets.publish import ingest_note

    try:
        note = ingest_note(_catalog(settings), name, md5_hex)
    except Exception:  # the catalog is the sensor's business; ingest works without it
        return
    if note:
        print(note)


def _episode_json(episode) -> dict[str, Any]:
    from pod_assets import layout

    return {
        "episode_id": episode.episode_id,
        "status": str(episode.status),
        "source_name": layout.printable(episode.source_name),
        "title": episode.title,
        "error": episode.last_error,
        "error_step": episode.error_step,
        "updated_at": episode.updated_at.isoformat(),
        "version": episode.version,
        "version_of": episode.version_of,
        "superseded_by": episode.superseded_by,
        "artifacts": {stage: episode.artifacts.get(stage) for stage in ARTIFACT_STAGES},
        "metrics": dict(episode.metrics),
    }


def _print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no episodes")
        return
    headers = ["episode_id", "status", "version", "duration_s", "error"]
    table = [
        [
            r["episode_id"],
            r["status"],
            _version_cell(r),
            f"{r['metrics'].get('duration_s', 0):.1f}",
            (r["error"] or "")[:70],
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def _version_cell(row: dict[str, Any]) -> str:
    """``1``, ``2 of ROOT``, plus ``, superseded by ID`` once another version took over."""
    cell = str(row["version"]) + (f" of {row['version_of']}" if row["version_of"] else "")
    return cell + (f", superseded by {row['superseded_by']}" if row["superseded_by"] else "")


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    rows = [_episode_json(e) for e in _guarded_catalog(settings).list_episodes()]
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        _print_table(rows)
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from pod_pipeline.runner import rerun_episodes, run_once

    if args.step and not args.episode:
        print("pod run: --step needs --episode", file=sys.stderr)
        return 2
    _prepare_dagster_home(settings)
    catalog = _catalog(settings)
    known = {episode.episode_id for episode in catalog.list_episodes()}
    if args.episode:
        try:
            outcome = rerun_episodes(
                settings, args.episode, steps=args.step or None, log_level=args.log_level
            )
        except ValueError as exc:
            print(f"pod run: {exc}", file=sys.stderr)
            return 2
    else:
        outcome = run_once(settings, log_level=args.log_level)
    for line in outcome.messages:
        print(line)
    _print_version_notes(catalog, known)
    cmd_status(argparse.Namespace(json=False), settings)
    return outcome.exit_code


def _print_version_notes(catalog, known: set[str]) -> None:
    """One line per episode new since ``known`` that is a new version of a published one."""
    from pod_assets.publish import version_note

    for episode in catalog.list_episodes():
        if episode.episode_id not in known and (note := version_note(catalog, episode)):
            print(note)


def _execute_job(settings: Settings, name: str, run_config: dict, trigger: str):
    """Run one job of the definitions in this process, on the configured instance."""
    import dagster as dg

    from pod_pipeline.definitions import build_definitions

    _prepare_dagster_home(settings)
    with dg.DagsterInstance.get() as instance:
        job = build_definitions(settings).resolve_job_def(name)
        return job.execute_in_process(
            run_config=run_config,
            instance=instance,
            tags={"pod/trigger": trigger},
            raise_on_error=False,
        )


def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    from pod_assets.publish import describe_outcome

    result = _execute_job(
        settings,
        "publish_job",
        {"ops": {"publish_episodes": {"config": {"episode_ids": list(args.episode_ids)}}}},
        "cli",
    )
    outcomes = result.output_for_node("publish_episodes")
    for outcome in outcomes:
        if outcome.published:
            print(describe_outcome(outcome))
        else:
            print(f"pod publish: {outcome.episode_id} refused: {outcome.reason}", file=sys.stderr)
    return 0 if all(outcome.published for outcome in outcomes) else 1


def _print_purge(report) -> None:
    verb = "would delete" if report.dry_run else "deleted"
    for entry in report.deleted:
        print(f"{verb} {entry.episode_id}: {len(entry.objects)} objects, {entry.bytes} bytes")
    for entry in (*report.kept, *report.skipped_by_race):
        print(f"kept {entry.episode_id}: {entry.reason}")
    for entry in report.failed:
        where = f" ({entry.key})" if entry.key else ""
        print(f"failed {entry.episode_id}{where}: {entry.error}")
    print(
        f"purge{' (dry run)' if report.dry_run else ''}: {report.eligible} eligible, "
        f"{len(report.deleted)} {verb}, {len(report.kept) + len(report.skipped_by_race)} kept, "
        f"{len(report.failed)} failed, {report.bytes_freed} bytes freed"
    )


def cmd_purge(args: argparse.Namespace, settings: Settings) -> int:
    from pod_assets.purge import PurgeError, parse_time
    from pod_assets.purge_job import PURGE_OP, purge_run_config

    try:
        now = parse_time(args.now) if args.now else None
    except PurgeError as exc:
        print(f"pod purge: --now: {exc}", file=sys.stderr)
        return 2
    if args.retention_hours < 0:
        print("pod purge: --retention-hours must not be negative", file=sys.stderr)
        return 2
    run_config = purge_run_config(
        now=now,
        retention_hours=args.retention_hours,
        dry_run=args.dry_run,
        max_deletions=args.max_deletions,
    )
    result = _execute_job(settings, "purge_job", run_config, "cli")
    if not result.success:
        message = next(
            (e.message for e in result.all_events if e.is_step_failure), "the purge run failed"
        )
        print(f"pod purge: {message}", file=sys.stderr)
        return 1
    report = result.output_for_node(PURGE_OP)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        _print_purge(report)
    return 1 if report.failed else 0


def cmd_catalog_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    import dagster as dg

    from pod_pipeline.rebuild import rebuild_catalog

    _prepare_dagster_home(settings)
    with dg.DagsterInstance.get() as instance:
        report = rebuild_catalog(
            _catalog(settings), _store(settings), instance=instance, dry_run=args.dry_run
        )
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        _print_rebuild(report)
    return 1 if report.failed else 0


def _print_rebuild(report) -> None:
    verb = "would add" if report.dry_run else "added"
    for entry in report.added:
        notes = f" ({'; '.join(entry.notes)})" if entry.notes else ""
        print(f"{verb} {entry.episode_id}: {entry.status}, from its {entry.source}{notes}")
    for entry in report.failed:
        print(f"failed {entry.episode_id}: {entry.error}", file=sys.stderr)
    if not report.added and not report.failed:
        print(f"catalog rebuild: nothing to add ({len(report.present)} stored episodes "
              "already in the catalog)")
        return
    print(
        f"catalog rebuild{' (dry run)' if report.dry_run else ''}: {len(report.added)} {verb}, "
        f"{len(report.present)} already in the catalog, {len(report.failed)} failed, "
        f"{len(report.partitions_added)} partitions added"
    )


_GUARDED_COMMANDS = frozenset({"run", "status", "publish", "purge"})
"""Commands refused while the catalog is empty but the store holds episodes."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pod", description="Podcast production pipeline.")
    sub = parser.add_subparsers(dest="command", required=True)
    ingest = sub.add_parser("ingest", help="copy audio files into uploads/")
    ingest.add_argument("files", nargs="+")
    ingest.add_argument("--title", help="episode title (default: from the file name)")
    ingest.set_defaults(func=cmd_ingest)
    run = sub.add_parser("run", help="one upload-sensor tick, then every requested run")
    run.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="Dagster events shown while running (default WARNING; all are kept in the instance)",
    )
    run.add_argument(
        "--episode", action="append", metavar="ID",
        help="run this known episode again instead of looking for uploads (repeatable)",
    )
    run.add_argument(
        "--step", action="append", metavar="STEP",
        help="with --episode: run only this step, one of raw_audio, transcript, cleaned_audio, "
        "final_episode (repeatable; its inputs come from the store)",
    )
    run.set_defaults(func=cmd_run)
    status = sub.add_parser("status", help="episodes and their status")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    publish = sub.add_parser("publish", help="move processed episodes to published")
    publish.add_argument("episode_ids", nargs="+", metavar="EPISODE_ID")
    publish.set_defaults(func=cmd_publish)
    purge = sub.add_parser("purge", help="delete raw media of episodes past the retention")
    purge.add_argument("--dry-run", action="store_true", help="report, delete nothing")
    purge.add_argument("--now", metavar="ISO8601", help="measure the retention from this time")
    purge.add_argument(
        "--retention-hours", type=float, default=24.0, metavar="H", help="default 24"
    )
    purge.add_argument(
        "--max-deletions", type=int, default=1000, metavar="N",
        help="at most N episodes per run (default 1000)",
    )
    purge.add_argument("--json", action="store_true")
    purge.set_defaults(func=cmd_purge)
    catalog = sub.add_parser("catalog", help="catalog maintenance")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)
    rebuild = catalog_sub.add_parser(
        "rebuild", help="restore episodes missing from the catalog from the store's objects"
    )
    rebuild.add_argument("--dry-run", action="store_true", help="report, write nothing")
    rebuild.add_argument("--json", action="store_true")
    rebuild.set_defaults(func=cmd_catalog_rebuild)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from pod_resources.catalog.guard import EmptyCatalogError

    args = build_parser().parse_args(argv)
    if served := adopt_served_settings(os.environ):
        print(f"pod: using the settings of the running `make serve` ({served})", file=sys.stderr)
    settings = load_settings()
    try:
        if args.command in _GUARDED_COMMANDS:
            _guarded_catalog(settings)
        return args.func(args, settings)
    except EmptyCatalogError as exc:
        print(f"pod {args.command}: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())

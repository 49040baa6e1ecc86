"""``pod``: the headless way to run the pipeline.

    pod ingest FILE… [--title T]   copy files into uploads/ of the configured store
    pod run                        one upload-sensor tick, then every requested run
    pod run --episode ID… [--step S…]
                                   run known episodes again (all steps, or only S)
    pod status [ID…] [--status S] [--since T] [--limit N] [--wide] [--json|--jsonl]
                                   episodes, filtered and paged (default 50, total said)
    pod publish EPISODE_ID…|--all-processed
                                   processed episodes become published (publish_job), feed refreshed
    pod unpublish EPISODE_ID…      published episodes leave the feed (unpublish_job)
    pod feed [--json]              the feed's URL and the episodes it lists
    pod import DIR|gs://B/P        register a back catalog in bulk (idempotent, resumable)
    pod purge [--dry-run] [--now ISO8601] [--retention-hours H] [--json]
                                   delete raw media past the retention (purge_job)
    pod catalog rebuild [--dry-run] [--json]
                                   restore missing episodes from the store's objects
    pod serve-media [--port 3001]  serve the local store's media to browsers, read-only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pod_pipeline.settings import Settings, adopt_served_settings, load_settings


def _prepare_dagster_home(settings: Settings) -> None:
    """Embedded default: a Dagster home with SQLite storage under ``POD_HOME``; being the
    project's own, it gets a ``dagster.yaml`` with telemetry off on first use."""
    from pod_pipeline.console import own_instance_config

    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    if home.resolve() == settings.dagster_home.resolve():
        own_instance_config(home)


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
    from pod_pipeline.console import plainly_not_audio
    from pod_pipeline.publishing import ingest_chapters

    store = _store(settings)
    accepted: list[Path] = []
    for raw in args.files:
        path = Path(raw)
        if not path.is_file():
            print(f"pod ingest: {raw}: no such file", file=sys.stderr)
            return 2
        if reason := plainly_not_audio(path):
            print(f"pod ingest: {path.name}: not ingested, not audio: {reason}", file=sys.stderr)
            continue
        accepted.append(path)
    if not accepted:
        return 1
    # Chapter marks go in before the audio, so that the run the upload starts finds them;
    # only once the audio is known to be accepted, so a refused file leaves nothing behind.
    if (code := ingest_chapters(store, files=args.files, marks=args.chapters)) is not None:
        return code
    for path in accepted:
        metadata = {"title": args.title} if args.title else None
        info = store.write_file(layout.upload_key(path.name), path, metadata=metadata)
        print(f"ingested {path.name} -> {store.uri(info.key)} (generation {info.generation})")
        _print_ingest_note(settings, path.name, info.md5_hex)
    return 1 if len(accepted) < len(args.files) else 0


def _print_ingest_note(settings: Settings, name: str, md5_hex: str | None) -> None:
    """Say when the upload will be a new version of a published episode (best effort)."""
    from pod_assets.publish.publishing import ingest_note

    try:
        note = ingest_note(_catalog(settings), name, md5_hex)
    except Exception:  # the catalog is the sensor's business; ingest works without it
        return
    if note:
        print(note)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from pod_pipeline.status import cmd_status as status

    return status(args, _guarded_catalog(settings))


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from pod_pipeline.runner import rerun_episodes, run_once

    from pod_pipeline.console import PodError
    from pod_pipeline.run_settings import episode_run_config

    if (args.step or args.set or args.config) and not args.episode:
        raise PodError("--step, --set and --config need --episode")
    _prepare_dagster_home(settings)
    catalog = _catalog(settings)
    log_level = args.log_level or ("WARNING" if args.verbose else "CRITICAL")
    verbose = args.verbose or args.log_level is not None  # Dagster's lines on the terminal
    if args.episode:
        run_config = episode_run_config(settings, args.set or (), args.config, args.step)
        try:
            outcome = rerun_episodes(
                settings, args.episode, steps=args.step or None, log_level=log_level,
                run_config=run_config, verbose=verbose,
            )
        except ValueError as exc:
            raise PodError(str(exc)) from exc
    else:
        outcome = run_once(settings, log_level=log_level, verbose=verbose)
    for line in outcome.messages:
        print(line)
    if outcome.stopped_by:
        # Stopped by a signal: no new work (the show is refreshed by the next run).
        return outcome.exit_code
    if outcome.launched:
        from pod_pipeline.publishing import refresh_show

        print("\n".join(refresh_show(settings)))
    _print_version_notes(catalog, outcome.episodes)
    from pod_pipeline.status import print_run_summary

    print_run_summary(catalog, outcome.episodes)
    return outcome.exit_code


def _print_version_notes(catalog, ran: Sequence[str]) -> None:
    """One line per episode ``pod run`` ran that is a new version of a published one."""
    from pod_assets.publish.publishing import version_note

    for episode_id in dict.fromkeys(ran):
        episode = catalog.get_episode(episode_id)
        if episode is not None and episode.version > 1 and (note := version_note(catalog, episode)):
            print(note)


def _execute_job(settings: Settings, name: str, run_config: dict, trigger: str, asset_selection=None):
    """Run one job of the definitions in this process, on the configured instance (only
    ``asset_selection``, a list of asset keys, when given)."""
    import dagster as dg

    from pod_assets.tags import TRIGGER_TAG
    from pod_pipeline.definitions import build_definitions

    _prepare_dagster_home(settings)
    with dg.DagsterInstance.get() as instance:
        job = build_definitions(settings).resolve_job_def(name)
        return job.execute_in_process(
            # Dagster's console logger stays quiet: the commands print their own lines.
            run_config={**run_config, "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
            instance=instance,
            tags={TRIGGER_TAG: trigger},
            raise_on_error=False,
            asset_selection=asset_selection,
        )


def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    from pod_pipeline.publishing import cmd_publish as publish

    return publish(args, settings)


def cmd_purge(args: argparse.Namespace, settings: Settings) -> int:
    from pod_assets.purge.job import PURGE_OP, purge_run_config
    from pod_assets.purge.plan import PurgeError, parse_time

    try:
        now = parse_time(args.now) if args.now else None
    except PurgeError as exc:
        print(f"pod purge: --now: {exc}", file=sys.stderr)
        return 2
    retention_hours = settings.purge_retention_hours  # the flags override the settings
    if args.retention_hours is not None:
        retention_hours = args.retention_hours
    max_deletions = settings.purge_max_deletions
    if args.max_deletions is not None:
        max_deletions = args.max_deletions
    if retention_hours < 0 or max_deletions < 0:
        print("pod purge: --retention-hours and --max-deletions must not be negative",
              file=sys.stderr)
        return 2
    run_config = purge_run_config(
        now=now, retention_hours=retention_hours, dry_run=args.dry_run, max_deletions=max_deletions
    )
    result = _execute_job(settings, "purge_job", run_config, "cli")
    if not result.success:
        from pod_pipeline.console import failure_reason

        message = next(
            (failure_reason(e) for e in result.all_events if e.is_step_failure),
            "the purge run failed",
        )
        print(f"pod purge: {message}", file=sys.stderr)
        return 1
    report = result.output_for_node(PURGE_OP)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        print("\n".join(report.to_lines()))
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


_GUARDED_COMMANDS = frozenset({"run", "status", "publish", "unpublish", "purge", "import"})
"""Commands refused while the catalog is empty but the store holds episodes."""


def _add_ingest_parser(sub: argparse._SubParsersAction) -> None:
    ingest = sub.add_parser("ingest", help="copy audio files into uploads/")
    ingest.add_argument("files", nargs="+")
    ingest.add_argument("--title", help="episode title (default: from the file name)")
    ingest.add_argument(
        "--chapters", metavar="MARKS",
        help="chapter marks of the one FILE: Audacity labels (.txt) or Podcasting 2.0 JSON, raw timeline",
    )
    ingest.set_defaults(func=cmd_ingest)


def _add_run_parser(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="one upload-sensor tick, then every requested run")
    run.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="Dagster's own events shown too, from this level (default: none, WARNING with "
        "--verbose; all are kept in the instance)",
    )
    run.add_argument(
        "--verbose", "-v", action="store_true",
        help="stack traces of failed steps and Dagster's warnings on the terminal",
    )
    run.add_argument(
        "--set", action="append", metavar="STEP.KEY=VALUE",
        help="with --episode: a setting of this run, as in the launchpad, e.g. "
        "cleaned_audio.max_pause_ms=500 (repeatable)",
    )
    run.add_argument(
        "--config", type=Path, metavar="FILE",
        help="with --episode: run config in the launchpad's YAML form (ops: …); --set overrides it",
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


def _add_publish_parser(sub: argparse._SubParsersAction) -> None:
    publish = sub.add_parser("publish", help="move processed episodes to published")
    publish.add_argument("episode_ids", nargs="*", metavar="EPISODE_ID")
    publish.add_argument("--all-processed", action="store_true", help="every processed episode")
    publish.set_defaults(func=cmd_publish)


def _add_purge_parser(sub: argparse._SubParsersAction) -> None:
    """``pod purge``; its help states the defaults :class:`Settings` falls back to."""
    purge = sub.add_parser("purge", help="delete raw media of episodes past the retention")
    purge.add_argument("--dry-run", action="store_true", help="report, delete nothing")
    purge.add_argument("--now", metavar="ISO8601", help="measure the retention from this time")
    purge.add_argument(
        "--retention-hours", type=float, metavar="H",
        help=f"default POD_PURGE_RETENTION_HOURS ({Settings.purge_retention_hours:g})",
    )
    purge.add_argument(
        "--max-deletions", type=int, metavar="N",
        help=f"at most N episodes per run (default POD_PURGE_MAX_DELETIONS, "
        f"{Settings.purge_max_deletions})",
    )
    purge.add_argument("--json", action="store_true")
    purge.set_defaults(func=cmd_purge)


def _add_catalog_parser(sub: argparse._SubParsersAction) -> None:
    catalog = sub.add_parser("catalog", help="catalog maintenance")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)
    rebuild = catalog_sub.add_parser(
        "rebuild", help="restore episodes missing from the catalog from the store's objects"
    )
    rebuild.add_argument("--dry-run", action="store_true", help="report, write nothing")
    rebuild.add_argument("--json", action="store_true")
    rebuild.set_defaults(func=cmd_catalog_rebuild)


def build_parser() -> argparse.ArgumentParser:
    """``pod`` and its commands, in the order ``pod --help`` lists them."""
    from pod_pipeline.importer import add_import_parser
    from pod_pipeline.media_server import add_serve_media_parser
    from pod_pipeline.publishing import add_parsers as add_publishing_parsers
    from pod_pipeline.status import add_status_parser

    parser = argparse.ArgumentParser(prog="pod", description="Podcast production pipeline.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_ingest_parser(sub)
    _add_run_parser(sub)
    add_status_parser(sub).set_defaults(func=cmd_status)
    _add_publish_parser(sub)
    add_publishing_parsers(sub)  # unpublish, feed
    add_import_parser(sub)
    _add_purge_parser(sub)
    _add_catalog_parser(sub)
    add_serve_media_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from pod_pipeline.console import PodError, quiet_dagster
    from pod_resources.catalog.guard import EmptyCatalogError

    args = build_parser().parse_args(argv)
    if not getattr(args, "verbose", False):
        quiet_dagster()
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
    except PodError as exc:
        print(f"pod {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C outside a supervised run (`pod run` handles its own): stop quietly.
        # A second one while pod winds down must not raise KeyboardInterrupt where nothing
        # catches it (Python then ends the process killed by SIGINT, not with 130).
        from pod_pipeline.worker import exit_on_the_next_stop_signal

        exit_on_the_next_stop_signal(130)
        print(f"pod {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

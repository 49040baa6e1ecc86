"""``pod``: the headless way to run the pipeline.

    pod ingest FILE… [--title T]   copy files into uploads/ of the configured store
    pod run                        one upload-sensor tick, then every requested run, in process
    pod status [--json]            one line (or JSON object) per episode
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pod_pipeline.settings import Settings, load_settings

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
    from pod_resources.catalog import Catalog

    return Catalog(settings.database_url())


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
    return 0


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
        "artifacts": {stage: episode.artifacts.get(stage) for stage in ARTIFACT_STAGES},
        "metrics": dict(episode.metrics),
    }


def _print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no episodes")
        return
    headers = ["episode_id", "status", "duration_s", "error"]
    table = [
        [
            r["episode_id"],
            r["status"],
            f"{r['metrics'].get('duration_s', 0):.1f}",
            (r["error"] or "")[:70],
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    rows = [_episode_json(e) for e in _catalog(settings).list_episodes()]
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        _print_table(rows)
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from pod_pipeline.runner import run_once

    _prepare_dagster_home(settings)
    outcome = run_once(settings)
    for line in outcome.messages:
        print(line)
    cmd_status(argparse.Namespace(json=False), settings)
    return 1 if outcome.failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pod", description="Podcast production pipeline.")
    sub = parser.add_subparsers(dest="command", required=True)
    ingest = sub.add_parser("ingest", help="copy audio files into uploads/")
    ingest.add_argument("files", nargs="+")
    ingest.add_argument("--title", help="episode title (default: from the file name)")
    ingest.set_defaults(func=cmd_ingest)
    run = sub.add_parser("run", help="one upload-sensor tick, then every requested run")
    run.set_defaults(func=cmd_run)
    status = sub.add_parser("status", help="episodes and their status")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args, load_settings())


if __name__ == "__main__":
    sys.exit(main())

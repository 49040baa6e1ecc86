"""``pod status``: what the catalog says, filtered and paged, in constant memory.

    pod status [EPISODE_ID…] [--status S…] [--since ISO8601] [--limit N] [--wide]
               [--json | --jsonl]

Episodes come oldest first, at most ``--limit`` (default :data:`DEFAULT_LIMIT`; 0: all),
read from the catalog a page at a time (:func:`pod_resources.catalog.queries.iter_episodes`)
and written as they come: ``--json`` is one JSON array, ``--jsonl`` one JSON object per
line; neither holds more than a page in memory, whatever the catalog holds. The total that
matches the filters is always said: after the table, or on stderr with ``--json``/``--jsonl``
when the limit cut the list. The table shows failure reasons whole: wrapped under the row,
or on one line with ``--wide``.

``pod run`` ends with :func:`print_run_summary`: the episodes it ran, not the whole catalog.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from pod_resources.catalog import Episode

DEFAULT_LIMIT = 50
REASON_WIDTH = 70
_HEADERS = ("episode_id", "status", "version", "duration_s", "error")


def add_status_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    status = sub.add_parser("status", help="episodes and their status (filtered, paged)")
    status.add_argument("episode_ids", nargs="*", metavar="EPISODE_ID", help="only these")
    status.add_argument(
        "--status", action="append", metavar="S",
        help="only episodes in this status (repeatable, or comma-separated)",
    )
    status.add_argument("--since", metavar="ISO8601", help="only episodes updated since then")
    status.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, metavar="N",
        help=f"at most N episodes, oldest first (default {DEFAULT_LIMIT}; 0: all)",
    )
    status.add_argument("--wide", action="store_true", help="failure reasons on one line")
    shape = status.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="one JSON array")
    shape.add_argument("--jsonl", action="store_true", help="one JSON object per line")
    return status


def episode_filter(args: argparse.Namespace):
    """The filters of the command line; ``ValueError`` with a clear message when wrong."""
    from pod_assets.purge import PurgeError, parse_time
    from pod_resources.catalog import queries

    names = [part.strip() for value in args.status or () for part in value.split(",")]
    try:
        since = parse_time(args.since) if args.since else None
    except PurgeError as exc:
        raise ValueError(f"--since: {exc}") from None
    if args.limit < 0:
        raise ValueError("--limit must not be negative")
    return queries.EpisodeFilter(
        statuses=queries.statuses_of([n for n in names if n]),
        since=since,
        episode_ids=frozenset(args.episode_ids or ()),
    )


def write_json_array(rows: Iterable[dict[str, Any]], out: TextIO) -> int:
    """Stream ``rows`` as one JSON array (the shape ``pod status --json`` always had)."""
    count = 0
    out.write("[")
    for row in rows:
        out.write(",\n  " if count else "\n  ")
        out.write(json.dumps(row, ensure_ascii=False))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


def write_json_lines(rows: Iterable[dict[str, Any]], out: TextIO) -> int:
    count = 0
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
        count += 1
    return count


def _cells(row: dict[str, Any]) -> list[str]:

    return [
        row["episode_id"],
        row["status"],
        _version_cell(row),
        f"{row['metrics'].get('duration_s', 0):.1f}",
        row["error"] or "",
    ]


def write_table(rows: Sequence[dict[str, Any]], out: TextIO, *, wide: bool) -> None:
    """Aligned columns; a failure reason longer than :data:`REASON_WIDTH` wraps under its
    column (``wide``: stays on one line). Never cut."""
    table = [_cells(row) for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(_HEADERS[:-1])]
    indent = sum(widths) + 2 * len(widths)
    out.write("  ".join(h.ljust(w) for h, w in zip(_HEADERS, [*widths, 0])).rstrip() + "\n")
    for cells in table:
        lead = "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False))
        reason = cells[-1]
        lines = [reason] if wide or not reason else textwrap.wrap(reason, REASON_WIDTH)
        out.write(f"{lead}  {lines[0]}".rstrip() + "\n")
        for more in lines[1:]:
            out.write(" " * indent + more + "\n")


def _rows(catalog, selected, limit: int | None) -> Iterator[dict[str, Any]]:
    from pod_resources.catalog import queries

    for episode in queries.iter_episodes(catalog, selected, limit=limit):
        yield _episode_json(episode)


def cmd_status(args: argparse.Namespace, catalog, *, out: TextIO = sys.stdout) -> int:
    from pod_resources.catalog import queries

    try:
        selected = episode_filter(args)
    except ValueError as exc:
        print(f"pod status: {exc}", file=sys.stderr)
        return 2
    limit = args.limit or None
    rows = _rows(catalog, selected, limit)
    if args.json or args.jsonl:
        shown = (write_json_array if args.json else write_json_lines)(rows, out)
        if limit is not None and shown == limit:
            total = queries.count_episodes(catalog, selected)
            if total > shown:
                print(f"pod status: {shown} of {total} episodes (--limit {limit}; 0 for all)",
                      file=sys.stderr)
        return 0
    page = list(rows)
    if not page:
        out.write("no episodes\n")
        return 0
    write_table(page, out, wide=args.wide)
    total = len(page) if limit is None or len(page) < limit else queries.count_episodes(
        catalog, selected
    )
    more = f" (--limit {limit}; 0 for all)" if total > len(page) else ""
    out.write(f"{len(page)} of {total} episodes{more}\n")
    return 0


def print_run_summary(catalog, episode_ids: Sequence[str], *, out: TextIO = sys.stdout) -> None:
    """The end of ``pod run``: the episodes it ran, and how to see the others."""
    from pod_resources.catalog import queries

    ran = list(dict.fromkeys(episode_ids))
    selected = queries.EpisodeFilter(episode_ids=frozenset(ran))
    rows = [_episode_json(e) for e in queries.iter_episodes(catalog, selected, limit=len(ran))]
    if rows:
        write_table(rows, out, wide=False)
    others = queries.count_episodes(catalog) - len(rows)
    if others > 0:
        out.write(f"{others} other episodes in the catalog: `pod status` lists them\n")
    elif not rows:
        out.write("no episodes\n")


def _episode_json(episode: Episode) -> dict[str, Any]:
    """One episode as ``pod status --json`` writes it."""
    from pod_assets import layout
    from pod_pipeline.media_server import status_links

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
        "artifacts": {stage: episode.artifacts.get(stage) for stage in layout.ARTIFACT_STAGES},
        "links": status_links(
            {stage: episode.artifacts.get(stage) for stage in layout.ARTIFACT_STAGES}
        ),
        "metrics": dict(episode.metrics),
    }


def _version_cell(row: dict[str, Any]) -> str:
    """``1``, ``2 of ROOT``, plus ``, superseded by ID`` once another version took over."""
    cell = str(row["version"]) + (f" of {row['version_of']}" if row["version_of"] else "")
    return cell + (f", superseded by {row['superseded_by']}" if row["superseded_by"] else "")

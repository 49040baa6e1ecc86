"""``show_statistics``: one row per episode of the show, as a pandas table.

Written as ``show/statistics.csv`` and shown in the UI as a table
(``dg.MetadataValue.table``) with a markdown summary: episodes, hours published, hours saved
by cleaning. Rebuilt whole from the catalog each time (``show_job``, with the feed).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import dagster as dg

from pod_assets.publish.publishing import first_published_at
from pod_resources.catalog import Catalog, CatalogResource, Episode, EpisodeStatus, queries

if TYPE_CHECKING:  # pandas (and pyarrow with it) is imported by the step that builds the table
    import pandas as pd
from pod_resources.storage import ObjectStore

STATISTICS_KEY = "show/statistics.csv"
COLUMNS: dict[str, str] = {
    "episode_id": "string",
    "title": "string",
    "status": "string",
    "raw_duration_s": "float",
    "cleaned_duration_s": "float",
    "final_duration_s": "float",
    "time_saved_s": "float",
    "fillers_removed": "int",
    "pauses_removed_s": "float",
    "loudness_in_lufs": "float",
    "loudness_out_lufs": "float",
    "true_peak_dbtp": "float",
    "published_at": "string",
}
_EVER_PUBLISHED = frozenset({EpisodeStatus.PUBLISHED, EpisodeStatus.SUPERSEDED})


def _row(catalog: Catalog, episode: Episode) -> dict:
    m = episode.metrics
    raw, cleaned = m.get("duration_s"), m.get("cleaned_duration_s")
    published = first_published_at(catalog, episode) if episode.status in _EVER_PUBLISHED else None
    return {
        "episode_id": episode.episode_id,
        "title": episode.title,
        "status": str(episode.status),
        "raw_duration_s": raw,
        "cleaned_duration_s": cleaned,
        "final_duration_s": m.get("final_duration_s"),
        "time_saved_s": raw - cleaned if raw is not None and cleaned is not None else None,
        "fillers_removed": m.get("fillers_removed"),
        "pauses_removed_s": m.get("pauses_removed_s"),
        "loudness_in_lufs": m.get("loudness_in_lufs"),
        "loudness_out_lufs": m.get("loudness_lufs"),
        "true_peak_dbtp": m.get("true_peak_dbtp"),
        "published_at": published.isoformat(timespec="seconds") if published else None,
    }


def statistics_frame(catalog: Catalog) -> pd.DataFrame:
    """One row per episode (``COLUMNS``), oldest first; absent metrics are NaN."""
    import pandas as pd

    # A page of episodes at a time (oldest first): memory holds the rows, not the catalog.
    rows = [_row(catalog, e) for e in queries.iter_episodes(catalog, limit=None)]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    numeric = [c for c, kind in COLUMNS.items() if kind in ("float", "int")]
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce")
    return frame


def summary_markdown(frame: pd.DataFrame) -> str:
    published = frame[frame["status"] == str(EpisodeStatus.PUBLISHED)]
    hours_published = published["final_duration_s"].sum() / 3600
    hours_saved = frame["time_saved_s"].sum() / 3600
    by_status = ", ".join(f"{n} {s}" for s, n in frame["status"].value_counts().sort_index().items())
    return (
        f"**{len(frame)} episodes** ({by_status or 'none'})  \n"
        f"**{hours_published:.2f} hours published** ({hours_published * 60:.1f} min) in {len(published)} episodes  \n"
        f"**{hours_saved:.2f} hours saved** ({hours_saved * 60:.1f} min) by cleaning "
        f"({frame['fillers_removed'].sum():.0f} fillers, {frame['pauses_removed_s'].sum() / 60:.1f} min of pauses)"
    )


def _cell(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return round(value, 2) if isinstance(value, float) else value


def _table(frame: pd.DataFrame) -> dg.TableMetadataValue:
    return dg.MetadataValue.table(
        records=[dg.TableRecord({c: _cell(v) for c, v in row.items()}) for row in frame.to_dict("records")],
        schema=dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in COLUMNS.items()]),
    )


@dg.asset(group_name="show", kinds={"pandas", "csv"})
def show_statistics(store: ObjectStore, catalog: CatalogResource) -> dg.MaterializeResult:
    """Show statistics: per episode its status, raw/cleaned/final duration, time saved,
    fillers and pauses removed, loudness in and out, true peak and first publication
    (``show/statistics.csv``), with a summary of hours published and saved."""
    frame = statistics_frame(catalog.get_catalog())
    store.write_bytes(STATISTICS_KEY, frame.to_csv(index=False).encode("utf-8"), content_type="text/csv")
    return dg.MaterializeResult(
        metadata={
            "summary": dg.MetadataValue.md(summary_markdown(frame)),
            "episodes": _table(frame),
            "rows": dg.MetadataValue.int(len(frame)),
            "uri": dg.MetadataValue.url(store.uri(STATISTICS_KEY)),
        }
    )
